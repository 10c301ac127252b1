//! Redis's glob patterns for KEYS, SCAN MATCH and CONFIG GET: `*`, `?`,
//! `[abc]`, `[^a-z]` and `\x`, on raw bytes. Written by hand because path
//! globbing crates treat `/` specially and work on UTF-8 text, while Redis keys
//! are arbitrary bytes.

/// True when `text` matches `pattern` (case-sensitive unless `nocase`).
pub fn matches(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    // Iterative matcher with one backtrack point for the last `*`: linear in
    // practice, never exponential like the naive recursive version.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, t));
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((hit, next)) = class(pattern, p, text[t], nocase) {
                        if hit {
                            p = next;
                            t += 1;
                            continue;
                        }
                    }
                }
                c => {
                    let (c, next) = if c == b'\\' && p + 1 < pattern.len() {
                        (pattern[p + 1], p + 2)
                    } else {
                        (c, p + 1)
                    };
                    if same(c, text[t], nocase) {
                        p = next;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

fn same(a: u8, b: u8, nocase: bool) -> bool {
    a == b || (nocase && a.eq_ignore_ascii_case(&b))
}

/// Matches `c` against the class starting at `pattern[start] == b'['`;
/// returns (matched, index after the class). An unclosed class runs to the end.
fn class(pattern: &[u8], start: usize, c: u8, nocase: bool) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            hit |= same(pattern[i + 1], c, nocase);
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (mut lo, mut hi) = (pattern[i], pattern[i + 2]);
            if lo > hi {
                std::mem::swap(&mut lo, &mut hi);
            }
            let (lo_c, hi_c, cc) = if nocase {
                (lo.to_ascii_lowercase(), hi.to_ascii_lowercase(), c.to_ascii_lowercase())
            } else {
                (lo, hi, c)
            };
            hit |= cc >= lo_c && cc <= hi_c;
            i += 3;
        } else {
            hit |= same(pattern[i], c, nocase);
            i += 1;
        }
    }
    let next = if i < pattern.len() { i + 1 } else { i };
    Some((hit != negate, next))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_glob_cases() {
        let yes: &[(&[u8], &[u8])] = &[
            (b"*", b""),
            (b"*", b"anything"),
            (b"h?llo", b"hello"),
            (b"h*llo", b"heeeello"),
            (b"h[ae]llo", b"hallo"),
            (b"h[^e]llo", b"hallo"),
            (b"h[a-b]llo", b"hbllo"),
            (b"key:*:x", b"key:1:2:x"),
            (b"a\\*b", b"a*b"),
            (b"*\x00*", b"bin\x00ary"),
        ];
        for (p, t) in yes {
            assert!(matches(p, t, false), "{:?} should match {:?}", p, t);
        }
        let no: &[(&[u8], &[u8])] = &[
            (b"h?llo", b"hllo"),
            (b"h[ae]llo", b"hillo"),
            (b"h[^e]llo", b"hello"),
            (b"a\\*b", b"axb"),
            (b"abc", b"abcd"),
            (b"*a", b"bbb"),
        ];
        for (p, t) in no {
            assert!(!matches(p, t, false), "{:?} should not match {:?}", p, t);
        }
        assert!(matches(b"SAVE", b"save", true));
    }

    #[test]
    fn pathological_patterns_finish() {
        let text = vec![b'a'; 10_000];
        assert!(!matches(b"*a*a*a*a*a*a*a*b", &text, false));
    }
}
