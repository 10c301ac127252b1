//! Replies and their RESP2/RESP3 encoding.
//!
//! Written by hand rather than through redis-protocol's encoder: replies go
//! straight into the connection's output buffer without building frames, and
//! the few places where RESP2 and RESP3 differ (null, maps, sets, verbatim
//! strings) are decided here, in one place.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::CommandError;

/// A command's answer, independent of the protocol version.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Ok,
    /// A simple string known at compile time (`+PONG`, `+string`).
    Status(&'static str),
    /// A simple string built at run time.
    StatusOwned(String),
    /// An error line, prefix included (`ERR ...`).
    Error(String),
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(Bytes),
    /// The null bulk string (`$-1` / `_`).
    Nil,
    /// The null array (`*-1` / `_`).
    NilArray,
    /// An array.
    Array(Vec<Reply>),
    /// A map: a flat array of pairs in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A set: an array in RESP2.
    Set(Vec<Reply>),
    /// Text for humans (INFO, CLIENT INFO): verbatim `txt` in RESP3.
    Verbatim(String),
}

impl From<CommandError> for Reply {
    fn from(err: CommandError) -> Self {
        Reply::Error(err.to_string())
    }
}

impl Reply {
    /// A bulk string from static bytes.
    pub fn bulk_static(bytes: &'static [u8]) -> Reply {
        Reply::Bulk(Bytes::from_static(bytes))
    }

    /// A bulk string from text.
    pub fn bulk_string(text: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(text.into()))
    }

    /// A bulk string or nil.
    pub fn bulk_or_nil(value: Option<Bytes>) -> Reply {
        value.map_or(Reply::Nil, Reply::Bulk)
    }

    /// Appends the encoding of `self` for protocol version `resp` (2 or 3).
    pub fn encode(&self, resp: u8, out: &mut BytesMut) {
        match self {
            Reply::Ok => out.put_slice(b"+OK\r\n"),
            Reply::Status(s) => line(out, b'+', s.as_bytes()),
            Reply::StatusOwned(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(e) => {
                // An error line must not contain CR/LF.
                out.put_u8(b'-');
                out.extend(e.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
                out.put_slice(b"\r\n");
            }
            Reply::Int(n) => line(out, b':', itoa::Buffer::new().format(*n).as_bytes()),
            Reply::Bulk(b) => bulk(out, b),
            Reply::Nil if resp >= 3 => out.put_slice(b"_\r\n"),
            Reply::Nil => out.put_slice(b"$-1\r\n"),
            Reply::NilArray if resp >= 3 => out.put_slice(b"_\r\n"),
            Reply::NilArray => out.put_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                header(out, b'*', items.len());
                items.iter().for_each(|item| item.encode(resp, out));
            }
            Reply::Set(items) => {
                header(out, if resp >= 3 { b'~' } else { b'*' }, items.len());
                items.iter().for_each(|item| item.encode(resp, out));
            }
            Reply::Map(pairs) => {
                if resp >= 3 {
                    header(out, b'%', pairs.len());
                } else {
                    header(out, b'*', pairs.len() * 2);
                }
                for (key, value) in pairs {
                    key.encode(resp, out);
                    value.encode(resp, out);
                }
            }
            Reply::Verbatim(text) => {
                if resp >= 3 {
                    header(out, b'=', text.len() + 4);
                    out.put_slice(b"txt:");
                    out.put_slice(text.as_bytes());
                    out.put_slice(b"\r\n");
                } else {
                    bulk(out, text.as_bytes());
                }
            }
        }
    }
}

/// Formats a double as Redis does for INCRBYFLOAT: the
/// shortest form that reads back the same, never in exponent notation,
/// integers without a fraction, `inf`/`-inf`.
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d.is_nan() {
        return "nan".into();
    }
    // Rust's Display is the shortest round-trip form and never uses exponents;
    // Redis prints at most 17 decimals (`%.17Lf`), trailing zeros trimmed.
    let text = d.to_string();
    match text.split_once('.') {
        Some((_, fraction)) if fraction.len() > 17 => {
            let rounded = format!("{d:.17}");
            rounded.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        _ => text,
    }
}

fn line(out: &mut BytesMut, kind: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(kind);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

fn header(out: &mut BytesMut, kind: u8, len: usize) {
    line(out, kind, itoa::Buffer::new().format(len).as_bytes());
}

fn bulk(out: &mut BytesMut, bytes: &[u8]) {
    header(out, b'$', bytes.len());
    out.reserve(bytes.len() + 2);
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(reply: Reply, resp: u8) -> Vec<u8> {
        let mut out = BytesMut::new();
        reply.encode(resp, &mut out);
        out.to_vec()
    }

    #[test]
    fn resp2_and_resp3_differ_where_redis_does() {
        assert_eq!(enc(Reply::Nil, 2), b"$-1\r\n");
        assert_eq!(enc(Reply::Nil, 3), b"_\r\n");
        assert_eq!(enc(Reply::NilArray, 2), b"*-1\r\n");
        let map = Reply::Map(vec![(Reply::bulk_static(b"a"), Reply::Int(1))]);
        assert_eq!(enc(map.clone(), 2), b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(map, 3), b"%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(Reply::Verbatim("hi".into()), 3), b"=6\r\ntxt:hi\r\n");
        assert_eq!(enc(Reply::Error("ERR a\r\nb".into()), 2), b"-ERR a  b\r\n");
    }

    #[test]
    fn doubles_format_like_redis() {
        assert_eq!(format_double(3.0), "3");
        assert_eq!(format_double(10.5), "10.5");
        assert_eq!(format_double(f64::INFINITY), "inf");
        assert_eq!(format_double(5.0e3), "5000");
        assert_eq!(format_double(1e20), "100000000000000000000");
        assert_eq!(format_double(10.5 + 0.1), "10.6");
        assert_eq!(format_double(-0.25), "-0.25");
        assert_eq!(format_double(1e-20), "0");
        assert_eq!(format_double(1.5e-10), "0.00000000015");
    }
}
