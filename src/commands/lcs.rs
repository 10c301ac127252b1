//! LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]: the longest common subsequence of two strings, as
//! Redis 7 computes it, so that the matched ranges come out in the same order and split the same way. Written here:
//! the crates that compute an LCS return the subsequence, not Redis's ranges.

use bytes::Bytes;

use super::strings::single_value;
use super::{is, parse_i64, Ctx};
use crate::error::{CommandError, CommandResult};
use crate::server::reply::Reply;

/// Tables with more cells than this are filled off the async worker, so peer messages keep flowing meanwhile.
const BLOCKING_CELLS: usize = 1 << 22;

/// What LCS was asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Options {
    len: bool,
    idx: bool,
    min_match_len: usize,
    with_match_len: bool,
}

impl Options {
    fn parse(args: &[Bytes]) -> CommandResult<Options> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if is(arg, "LEN") {
                options.len = true;
            } else if is(arg, "IDX") {
                options.idx = true;
            } else if is(arg, "WITHMATCHLEN") {
                options.with_match_len = true;
            } else if is(arg, "MINMATCHLEN") {
                let min = parse_i64(args.next().ok_or(CommandError::Syntax)?)?;
                options.min_match_len = usize::try_from(min).unwrap_or(0);
            } else {
                return Err(CommandError::Syntax);
            }
        }
        if options.len && options.idx {
            return Err(CommandError::Other(
                "If you want both the length and indexes, please just use IDX.".into(),
            ));
        }
        Ok(options)
    }
}

/// One run of consecutive matched bytes: inclusive ranges in the first and the second string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Match {
    a: (usize, usize),
    b: (usize, usize),
}

impl Match {
    fn len(&self) -> usize {
        self.a.1 - self.a.0 + 1
    }
}

/// The answer: its length, and the subsequence itself and its runs when asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Common {
    len: usize,
    text: Vec<u8>,
    /// From the end of the strings towards their start, as Redis lists them.
    matches: Vec<Match>,
}

/// `(a.len() + 1) * (b.len() + 1)` lengths of common subsequences of prefixes, row by row.
fn prefix_table(a: &[u8], b: &[u8]) -> Vec<u32> {
    let width = b.len() + 1;
    let mut table = vec![0u32; (a.len() + 1) * width];
    for (i, &x) in a.iter().enumerate() {
        let (done, rest) = table.split_at_mut((i + 1) * width);
        let above = &done[i * width..];
        let row = &mut rest[..width];
        for (j, &y) in b.iter().enumerate() {
            row[j + 1] = if x == y { above[j] + 1 } else { above[j + 1].max(row[j]) };
        }
    }
    table
}

/// Walks the table back from its last cell, preferring the first string's shorter prefix only when that keeps a
/// strictly longer subsequence (Redis's tie-break, which decides where runs split).
fn common(a: &[u8], b: &[u8], options: &Options) -> Common {
    let table = prefix_table(a, b);
    let width = b.len() + 1;
    let at = |i: usize, j: usize| table[i * width + j] as usize;
    let len = at(a.len(), b.len());
    let mut found = Common {
        len,
        ..Common::default()
    };
    // `Options::parse` refuses LEN with IDX.
    if options.len {
        return found;
    }
    found.text.reserve(len);
    let (mut i, mut j) = (a.len(), b.len());
    let mut run: Option<Match> = None;
    let close = |run: &mut Option<Match>, matches: &mut Vec<Match>| {
        if let Some(done) = run.take() {
            if done.len() >= options.min_match_len {
                matches.push(done);
            }
        }
    };
    while i > 0 && j > 0 {
        if a[i - 1] == b[j - 1] {
            found.text.push(a[i - 1]);
            run = Some(match run {
                Some(open) => Match {
                    a: (i - 1, open.a.1),
                    b: (j - 1, open.b.1),
                },
                None => Match {
                    a: (i - 1, i - 1),
                    b: (j - 1, j - 1),
                },
            });
            i -= 1;
            j -= 1;
            if i == 0 || j == 0 {
                close(&mut run, &mut found.matches);
            }
        } else {
            if at(i - 1, j) > at(i, j - 1) {
                i -= 1;
            } else {
                j -= 1;
            }
            close(&mut run, &mut found.matches);
        }
    }
    found.text.reverse();
    found
}

/// The reply Redis gives for `options`.
fn reply(found: Common, options: &Options) -> Reply {
    if options.idx {
        let matches = found
            .matches
            .iter()
            .map(|m| {
                let pair =
                    |(start, end): (usize, usize)| Reply::Array(vec![Reply::Int(start as i64), Reply::Int(end as i64)]);
                let mut entry = vec![pair(m.a), pair(m.b)];
                if options.with_match_len {
                    entry.push(Reply::Int(m.len() as i64));
                }
                Reply::Array(entry)
            })
            .collect();
        Reply::Map(vec![
            (Reply::bulk_static(b"matches"), Reply::Array(matches)),
            (Reply::bulk_static(b"len"), Reply::Int(found.len as i64)),
        ])
    } else if options.len {
        Reply::Int(found.len as i64)
    } else {
        Reply::Bulk(Bytes::from(found.text))
    }
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]; a missing key is an empty string.
pub async fn lcs(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let options = Options::parse(&argv[3..])?;
    let a = single_value(ctx, &argv[1]).await?.unwrap_or_default();
    let b = single_value(ctx, &argv[2]).await?.unwrap_or_default();
    let cells = (a.len() + 1).saturating_mul(b.len() + 1);
    let table_bytes = cells.saturating_mul(std::mem::size_of::<u32>());
    if table_bytes as u64 > ctx.node.settings.read().limits.max_bulk_len {
        return Err(CommandError::Other(
            "Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len".into(),
        ));
    }
    let found = if cells > BLOCKING_CELLS {
        tokio::task::block_in_place(|| common(&a, &b, &options))
    } else {
        common(&a, &b, &options)
    };
    Ok(reply(found, &options))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn idx(min_match_len: usize) -> Options {
        Options {
            idx: true,
            min_match_len,
            ..Options::default()
        }
    }

    fn m(a: (usize, usize), b: (usize, usize)) -> Match {
        Match { a, b }
    }

    #[test]
    fn redis_documentation_example() {
        let found = common(b"ohmytext", b"mynewtext", &idx(0));
        assert_eq!(found.len, 6);
        assert_eq!(found.text, b"mytext");
        assert_eq!(found.matches, vec![m((4, 7), (5, 8)), m((2, 3), (0, 1))]);
        let long = common(b"ohmytext", b"mynewtext", &idx(4));
        assert_eq!(long.matches, vec![m((4, 7), (5, 8))]);
    }

    #[test]
    fn empty_and_disjoint_strings() {
        assert_eq!(common(b"", b"abc", &idx(0)), Common::default());
        let none = common(b"abc", b"xyz", &Options::default());
        assert_eq!((none.len, none.text.len(), none.matches.len()), (0, 0, 0));
    }

    #[test]
    fn options_parse_as_redis() {
        let args = |list: &[&str]| list.iter().map(|s| Bytes::from(s.to_string())).collect::<Vec<_>>();
        assert_eq!(Options::parse(&args(&["idx", "MinMatchLen", "-3"])).ok(), Some(idx(0)));
        assert!(matches!(
            Options::parse(&args(&["minmatchlen"])),
            Err(CommandError::Syntax)
        ));
        assert!(matches!(
            Options::parse(&args(&["minmatchlen", "x"])),
            Err(CommandError::NotInteger)
        ));
        assert!(matches!(Options::parse(&args(&["foo"])), Err(CommandError::Syntax)));
        let both = Options::parse(&args(&["len", "idx"])).err().map(|e| e.to_string());
        assert_eq!(
            both.as_deref(),
            Some("ERR If you want both the length and indexes, please just use IDX.")
        );
    }

    /// Whether `needle` can be had from `hay` by dropping bytes.
    fn is_subsequence(needle: &[u8], hay: &[u8]) -> bool {
        let mut hay = hay.iter();
        needle.iter().all(|x| hay.any(|y| y == x))
    }

    /// The longest common subsequence's length found another way: by recursion over suffixes.
    fn longest_by_suffixes(a: &[u8], b: &[u8]) -> usize {
        fn go(a: &[u8], b: &[u8], memo: &mut std::collections::HashMap<(usize, usize), usize>) -> usize {
            let (Some((x, rest_a)), Some((y, rest_b))) = (a.split_first(), b.split_first()) else {
                return 0;
            };
            if let Some(&known) = memo.get(&(a.len(), b.len())) {
                return known;
            }
            let best = if x == y {
                1 + go(rest_a, rest_b, memo)
            } else {
                go(rest_a, b, memo).max(go(a, rest_b, memo))
            };
            memo.insert((a.len(), b.len()), best);
            best
        }
        go(a, b, &mut std::collections::HashMap::new())
    }

    proptest! {
        /// The subsequence is common to both, as long as claimed, and its runs are equal bytes in both strings that,
        /// read from the start, spell it.
        #[test]
        fn the_subsequence_and_its_runs_agree(
            a in prop::collection::vec(0u8..4, 0..40),
            b in prop::collection::vec(0u8..4, 0..40),
        ) {
            let found = common(&a, &b, &idx(0));
            prop_assert_eq!(found.text.len(), found.len);
            prop_assert!(is_subsequence(&found.text, &a) && is_subsequence(&found.text, &b));
            let mut spelled = Vec::new();
            for run in found.matches.iter().rev() {
                prop_assert_eq!(&a[run.a.0..=run.a.1], &b[run.b.0..=run.b.1]);
                spelled.extend_from_slice(&a[run.a.0..=run.a.1]);
            }
            prop_assert_eq!(&spelled, &found.text);
            prop_assert_eq!(found.len, longest_by_suffixes(&a, &b));
        }
    }
}
