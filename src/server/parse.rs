//! Request framing: bytes from a client → argument vectors.
//!
//! Written by hand, not with redis-protocol's decoder (which the tests use as
//! a reference): a server only ever receives arrays of bulk strings, and for
//! those the generic nom decoder cost about 2,500 instructions per command,
//! a fifth of all the work of a GET or SET (callgrind). This one walks each
//! request once, keeps its place across reads (a large request is scanned
//! once, not once per read), hands out arguments as zero-copy slices, and
//! enforces Redis's limits while a request is still arriving, so
//! `$999999999999` is refused at once instead of waiting for data that never
//! comes. Inline commands (`PING`, `set "a b" 'c'`, as telnet and
//! redis-benchmark's PING_INLINE send them) follow Redis's quoting rules.

use bytes::{Bytes, BytesMut};

/// Longest inline request or length line, as Redis's PROTO_INLINE_MAX_SIZE.
const INLINE_MAX: usize = 64 * 1024;

/// A malformed or oversized request. The connection answers
/// `-ERR Protocol error: ...` and closes, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*` count not a number, negative beyond -1, or above the limit.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$` length not a number, negative, or above proto_max_bulk_len.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An element of a request array that is not a bulk string.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A `*` line longer than INLINE_MAX.
    #[error("Protocol error: too big mbulk count string")]
    TooBigCount,
    /// A `$` line longer than INLINE_MAX.
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An inline request longer than INLINE_MAX.
    #[error("Protocol error: too big inline request")]
    TooBigInline,
    /// Quotes that do not close, or a closing quote not followed by a space.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// More than 10 elements before AUTH.
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// A bulk string over 16 KB before AUTH.
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// More unparsed input than client_query_buffer_limit.
    #[error("Protocol error: query buffer limit exceeded")]
    QueryBufferLimit,
    /// What redis-protocol refused, in its words.
    #[error("Protocol error: {0}")]
    Malformed(String),
}

/// The limits a parser enforces, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string.
    pub max_bulk_len: u64,
    /// Largest element count.
    pub max_multibulk_len: u64,
    /// Largest unparsed input.
    pub query_buffer_limit: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_multibulk_len: 1024 * 1024,
            query_buffer_limit: 1024 * 1024 * 1024,
        }
    }
}

/// Where the scan of a partly received multibulk request stands.
#[derive(Debug, Clone, Copy, Default)]
struct Scan {
    /// Bytes of the request already checked.
    pos: usize,
    /// Bulk strings still to read; None until the `*` line was read.
    remaining: Option<u64>,
}

/// Limits for a client that has not authenticated yet, as in Redis: a
/// stranger cannot make the server buffer large requests.
const UNAUTHENTICATED: Limits = Limits {
    max_bulk_len: 16 * 1024,
    max_multibulk_len: 10,
    query_buffer_limit: 1024 * 1024,
};

/// Per-connection request parser.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    /// False until the client authenticated (when a password is required).
    authenticated: bool,
    /// Set while a multibulk request is incomplete.
    scan: Option<Scan>,
    /// (offset, length) of each argument of the request being scanned.
    spans: Vec<(usize, usize)>,
}

impl RequestParser {
    /// A parser enforcing `limits` (tighter ones until `set_authenticated(true)`).
    pub fn new(limits: Limits, authenticated: bool) -> RequestParser {
        RequestParser {
            limits,
            authenticated,
            scan: None,
            spans: Vec::new(),
        }
    }

    /// Whether the client has authenticated; lifts the tighter limits.
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.authenticated = authenticated;
    }

    /// The limits in force and the errors for exceeding them.
    fn limits(&self) -> (Limits, ProtocolError, ProtocolError) {
        if self.authenticated {
            let l = self.limits;
            (
                l,
                ProtocolError::InvalidMultibulkLength,
                ProtocolError::InvalidBulkLength,
            )
        } else {
            (
                UNAUTHENTICATED,
                ProtocolError::UnauthenticatedMultibulkLength,
                ProtocolError::UnauthenticatedBulkLength,
            )
        }
    }

    /// Takes the next complete request off the front of `buf`. `Ok(None)`:
    /// wait for more input. An empty vector is an empty request (ignored).
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first != b'*' {
            return self.inline(buf);
        }
        let Some(end) = self.scan_multibulk(buf)? else {
            if buf.len() as u64 > self.limits().0.query_buffer_limit {
                return Err(ProtocolError::QueryBufferLimit);
            }
            return Ok(None);
        };
        let request = buf.split_to(end).freeze();
        Ok(Some(
            self.spans
                .drain(..)
                .map(|(at, len)| request.slice(at..at + len))
                .collect(),
        ))
    }

    /// Continues checking the multibulk request at the front of `buf` from
    /// where the last read left it, noting where each argument is. Returns its
    /// length once all of it is buffered.
    fn scan_multibulk(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let (limits, too_many, too_long) = self.limits();
        let mut scan = self.scan.take().unwrap_or_default();
        let remaining = match scan.remaining {
            Some(remaining) => remaining,
            None => {
                let Some((count, next)) = length_line(buf, 0, ProtocolError::TooBigCount)? else {
                    return Ok(None);
                };
                self.spans.clear();
                if count <= 0 {
                    // `*0` and negative counts are empty requests, which Redis skips.
                    return Ok(Some(next));
                }
                if count > i64::from(i32::MAX) {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                if count as u64 > limits.max_multibulk_len {
                    return Err(too_many);
                }
                scan.pos = next;
                count as u64
            }
        };
        for left in (1..=remaining).rev() {
            let partial = |parser: &mut Self, scan: Scan| {
                parser.scan = Some(Scan {
                    remaining: Some(left),
                    ..scan
                });
                Ok(None)
            };
            let Some(&kind) = buf.get(scan.pos) else {
                return partial(self, scan);
            };
            if kind != b'$' {
                return Err(ProtocolError::ExpectedBulk(kind as char));
            }
            let Some((len, data)) = length_line(buf, scan.pos, ProtocolError::TooBigBulkCount)? else {
                return partial(self, scan);
            };
            if len < 0 {
                return Err(ProtocolError::InvalidBulkLength);
            }
            if len as u64 > limits.max_bulk_len {
                return Err(too_long);
            }
            let end = data + len as usize + 2;
            if buf.len() < end {
                return partial(self, scan);
            }
            self.spans.push((data, len as usize));
            scan.pos = end;
        }
        Ok(Some(scan.pos))
    }

    fn inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > INLINE_MAX {
                return Err(ProtocolError::TooBigInline);
            }
            return Ok(None);
        };
        if newline > INLINE_MAX {
            return Err(ProtocolError::TooBigInline);
        }
        let line = buf.split_to(newline + 1);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        split_inline(text).map(Some)
    }
}

/// Parses `<kind><integer>\r\n` at `at`: the integer and where the line ends.
/// `Ok(None)` if the line is not complete yet.
fn length_line(buf: &[u8], at: usize, too_long: ProtocolError) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = &buf[at + 1..];
    if let Some((number, len)) = short_length(rest) {
        return Ok(Some((number, at + 1 + len)));
    }
    any_length_line(buf, at, too_long)
}

/// [`length_line`] of any line: found by its `\r`, then judged.
fn any_length_line(buf: &[u8], at: usize, too_long: ProtocolError) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = &buf[at + 1..];
    let Some(cr) = rest.iter().position(|&b| b == b'\r') else {
        if rest.len() > INLINE_MAX {
            return Err(too_long);
        }
        return Ok(None);
    };
    if rest.len() < cr + 2 {
        return Ok(None);
    }
    let invalid = || match buf[at] {
        b'*' => ProtocolError::InvalidMultibulkLength,
        _ => ProtocolError::InvalidBulkLength,
    };
    let number = parse_length(&rest[..cr]).ok_or_else(invalid)?;
    Ok(Some((number, at + 1 + cr + 2)))
}

/// The common line, read in one pass: one to 18 digits, `\r` and one more byte (`length_line` skips it unread, as
/// Redis does): the number and the line's length. `None` for anything else, left to the general path (which waits
/// for the whole line before it judges it, as Redis does). Scanning for `\r` and then parsing took twice the
/// instructions (callgrind: four length lines per SET).
fn short_length(rest: &[u8]) -> Option<(i64, usize)> {
    let mut value: i64 = 0;
    for (i, &d) in rest.iter().enumerate().take(19) {
        if d.is_ascii_digit() && i < 18 {
            value = value * 10 + i64::from(d - b'0');
            continue;
        }
        return (d == b'\r' && i > 0 && i + 1 < rest.len()).then_some((value, i + 2));
    }
    None
}

/// A length as Redis reads it: an optional `-` and up to 18 digits.
fn parse_length(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(d - b'0');
    }
    Some(if negative { -value } else { value })
}

/// Splits an inline request into arguments like Redis's `sdssplitargs`:
/// whitespace separates, `"..."` takes `\n \r \t \b \a \\ \" \xHH` escapes,
/// `'...'` takes `\'`, and a closing quote must end the argument.
pub fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let Some(&first) = line.get(i) else {
            return Ok(args);
        };
        let mut arg = Vec::new();
        if first == b'"' || first == b'\'' {
            i = quoted(line, i + 1, first, &mut arg)?;
        } else {
            while let Some(&c) = line.get(i).filter(|c| !c.is_ascii_whitespace()) {
                arg.push(c);
                i += 1;
            }
        }
        args.push(Bytes::from(arg));
    }
}

/// Reads a quoted argument from just after its opening `quote` at `i`; returns
/// where it ends. Inside `"`, backslash escapes apply; inside `'`, only `\'`.
fn quoted(line: &[u8], mut i: usize, quote: u8, arg: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        let Some(&c) = line.get(i) else {
            return Err(ProtocolError::UnbalancedQuotes);
        };
        let next = line.get(i + 1).copied();
        if c == quote {
            i += 1;
            break;
        }
        if c == b'\\' && quote == b'"' && next.is_some() {
            if let Some(byte) = hex_pair(line.get(i + 2..i + 4)).filter(|_| next == Some(b'x')) {
                arg.push(byte);
                i += 4;
                continue;
            }
            arg.push(match next.unwrap_or(b'\\') {
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'b' => 8,
                b'a' => 7,
                other => other,
            });
            i += 2;
        } else if c == b'\\' && quote == b'\'' && next == Some(b'\'') {
            arg.push(b'\'');
            i += 2;
        } else {
            arg.push(c);
            i += 1;
        }
    }
    // A closing quote must end the argument.
    if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
        return Err(ProtocolError::UnbalancedQuotes);
    }
    Ok(i)
}

fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let pair = pair?;
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut parser = RequestParser::new(Limits::default(), true);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(argv) = parser.next(&mut buf)? {
            out.push(argv);
        }
        Ok(out)
    }

    fn strs(argv: &[Bytes]) -> Vec<&[u8]> {
        argv.iter().map(|b| &b[..]).collect()
    }

    #[test]
    fn pipelined_multibulk_and_inline() {
        let reqs = parse_all(b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n\r\n").expect("ok");
        assert_eq!(reqs.len(), 4);
        assert_eq!(strs(&reqs[1]), vec![&b"GET"[..], b"k"]);
        assert_eq!(strs(&reqs[2]), vec![&b"PING"[..]]);
        assert!(reqs[3].is_empty());
    }

    #[test]
    fn byte_at_a_time_gives_the_same_requests() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nk\x00y\r\n$5\r\nva\r\nl\r\n*0\r\n";
        let mut parser = RequestParser::new(Limits::default(), true);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            while let Some(argv) = parser.next(&mut buf).expect("ok") {
                out.push(argv);
            }
        }
        assert_eq!(out.len(), 2);
        assert_eq!(strs(&out[0]), vec![&b"SET"[..], b"k\x00y", b"va\r\nl"]);
    }

    #[test]
    fn redis_errors_for_bad_lengths() {
        assert_eq!(parse_all(b"*abc\r\n"), Err(ProtocolError::InvalidMultibulkLength));
        assert_eq!(parse_all(b"*1\r\n$-5\r\n"), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(
            parse_all(b"*1\r\n$99999999999\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(parse_all(b"*1\r\n:5\r\n"), Err(ProtocolError::ExpectedBulk(':')));
        assert_eq!(
            parse_all(b"*99999999999\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        let big = vec![b'a'; INLINE_MAX + 10];
        assert_eq!(parse_all(&big), Err(ProtocolError::TooBigInline));
    }

    #[test]
    fn empty_and_negative_counts_are_skipped() {
        let reqs = parse_all(b"*0\r\n*-5\r\n*1\r\n$4\r\nPING\r\n").expect("ok");
        assert_eq!(reqs.len(), 3);
        assert!(reqs[0].is_empty() && reqs[1].is_empty());
    }

    #[test]
    fn strangers_get_tight_limits_until_they_authenticate() {
        let mut parser = RequestParser::new(Limits::default(), false);
        let mut many = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            parser.next(&mut many),
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
        let mut big = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$20000\r\n"[..]);
        assert_eq!(parser.next(&mut big), Err(ProtocolError::UnauthenticatedBulkLength));
        parser.set_authenticated(true);
        let mut big = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$20000\r\n"[..]);
        assert_eq!(parser.next(&mut big), Ok(None));
    }

    #[test]
    fn inline_quoting_like_sdssplitargs() {
        let args = split_inline(br#"set "a b\x41\n" 'it\'s' plain"#).expect("ok");
        assert_eq!(strs(&args), vec![&b"set"[..], b"a bA\n", b"it's", b"plain"]);
        assert_eq!(split_inline(br#"get "abc"#), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(split_inline(br#"get "a"b"#), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(split_inline(b"   ").expect("ok").len(), 0);
    }

    #[test]
    fn common_length_lines_take_one_pass() {
        assert_eq!(short_length(b"3\r\n$3"), Some((3, 3)));
        assert_eq!(
            short_length(b"123456789012345678\r\n"),
            Some((123_456_789_012_345_678, 20))
        );
        // Left to the general path: no digit, a sign, 19 digits, a line not all here.
        for line in [&b"\r\n"[..], b"-1\r\n", b"1234567890123456789\r\n", b"12\r", b"12"] {
            assert_eq!(short_length(line), None, "{line:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The one-pass reading of a length line agrees with the general one wherever it answers.
        #[test]
        fn short_lengths_read_as_any_length_line_reads_them(
            line in proptest::collection::vec(prop::sample::select(b"0123456789\r\n-x".to_vec()), 0..24),
        ) {
            let mut buf = b"$".to_vec();
            buf.extend_from_slice(&line);
            if let Some((number, len)) = short_length(&line) {
                let general = any_length_line(&buf, 0, ProtocolError::TooBigBulkCount);
                prop_assert_eq!(general, Ok(Some((number, 1 + len))));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_all(&input);
        }

        #[test]
        fn arbitrary_resp_shaped_bytes_never_panic(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(b"*".to_vec()), Just(b"$".to_vec()), Just(b"\r\n".to_vec()),
                    Just(b"-1".to_vec()), Just(b"3".to_vec()), Just(b"abc".to_vec()),
                    Just(b":1".to_vec()), Just(b"\"".to_vec()),
                ],
                0..64,
            )
        ) {
            let _ = parse_all(&parts.concat());
        }

        /// redis-protocol's decoder is the reference: on any pipeline of
        /// requests, split anywhere, both must read the same arguments.
        #[test]
        fn agrees_with_redis_protocol(
            requests in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
                1..5,
            ),
            split in 0usize..2000,
        ) {
            use redis_protocol::resp2::decode::decode_bytes_mut;
            use redis_protocol::resp2::types::BytesFrame;
            let mut wire = Vec::new();
            for argv in &requests {
                wire.extend_from_slice(format!("*{}\r\n", argv.len()).as_bytes());
                for arg in argv {
                    wire.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                    wire.extend_from_slice(arg);
                    wire.extend_from_slice(b"\r\n");
                }
            }
            let mut reference = Vec::new();
            let mut buf = BytesMut::from(&wire[..]);
            while let Some((frame, _, _)) = decode_bytes_mut(&mut buf).expect("reference decodes") {
                let BytesFrame::Array(items) = frame else { panic!("not an array") };
                reference.push(items.into_iter().map(|item| match item {
                    BytesFrame::BulkString(b) => b.to_vec(),
                    other => panic!("not a bulk string: {other:?}"),
                }).collect::<Vec<_>>());
            }
            let split = split.min(wire.len());
            let mut parser = RequestParser::new(Limits::default(), true);
            let mut buf = BytesMut::from(&wire[..split]);
            let mut ours = Vec::new();
            while let Some(argv) = parser.next(&mut buf).expect("valid") {
                ours.push(argv.iter().map(|b| b.to_vec()).collect::<Vec<_>>());
            }
            buf.extend_from_slice(&wire[split..]);
            while let Some(argv) = parser.next(&mut buf).expect("valid") {
                ours.push(argv.iter().map(|b| b.to_vec()).collect::<Vec<_>>());
            }
            prop_assert_eq!(ours, reference);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn encoded_requests_round_trip(
            argv in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
            split in 0usize..400,
        ) {
            let mut wire = format!("*{}\r\n", argv.len()).into_bytes();
            for arg in &argv {
                wire.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                wire.extend_from_slice(arg);
                wire.extend_from_slice(b"\r\n");
            }
            let split = split.min(wire.len());
            let mut parser = RequestParser::new(Limits::default(), true);
            let mut buf = BytesMut::from(&wire[..split]);
            let first = parser.next(&mut buf).expect("valid prefix");
            buf.extend_from_slice(&wire[split..]);
            let got = match first {
                Some(argv) => argv,
                None => parser.next(&mut buf).expect("valid").expect("complete"),
            };
            prop_assert_eq!(got.iter().map(|b| b.to_vec()).collect::<Vec<_>>(), argv);
            prop_assert!(buf.is_empty());
        }
    }
}
