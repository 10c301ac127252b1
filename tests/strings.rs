//! String commands, with the replies and error texts of Redis 7.

mod common;

use std::thread;
use std::time::Duration;

use common::{assert_pttl, assert_ttl, invalid_expire, wait_until, wrong_arity, Raw, Resp, Server};

const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const OVERFLOW: &str = "ERR increment or decrement would overflow";

#[test]
fn get_and_set() {
    let (_server, mut raw) = common::start();
    raw.expect(&["GET", "k"], Resp::Nil);
    raw.expect(&["SET", "k", "v"], Resp::ok());
    raw.expect(&["GET", "k"], Resp::bulk("v"));
    raw.expect(&["SET", "k", "other"], Resp::ok());
    raw.expect(&["GET", "k"], Resp::bulk("other"));
    raw.expect(&["SET", "empty", ""], Resp::ok());
    raw.expect(&["GET", "empty"], Resp::bulk(""));
    // Command names are case-insensitive.
    raw.expect(&["get", "k"], Resp::bulk("other"));
    raw.expect(&["gEt", "k"], Resp::bulk("other"));
    raw.expect(&["GET"], wrong_arity("get"));
    raw.expect(&["GET", "a", "b"], wrong_arity("get"));
    raw.expect(&["SET", "k"], wrong_arity("set"));
    raw.expect(&["SET"], wrong_arity("set"));
}

#[test]
fn set_with_relative_expiry() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "ex", "v", "EX", "100"], Resp::ok());
    assert_ttl(&mut raw, "ex", 100);
    assert_pttl(&mut raw, "ex", 98_000, 100_000);
    raw.expect(&["SET", "px", "v", "PX", "50000"], Resp::ok());
    assert_pttl(&mut raw, "px", 48_000, 50_000);
    raw.expect(&["SET", "lower", "v", "ex", "100", "nx"], Resp::ok());
    assert_ttl(&mut raw, "lower", 100);
    // A plain SET removes the expiry.
    raw.expect(&["SET", "ex", "v2"], Resp::ok());
    raw.expect(&["TTL", "ex"], Resp::int(-1));
}

#[test]
fn set_with_absolute_expiry() {
    let (_server, mut raw) = common::start();
    let at_s = common::unix_ms() / 1000 + 1000;
    raw.expect(&["SET", "k", "v", "EXAT", &at_s.to_string()], Resp::ok());
    raw.expect(&["EXPIRETIME", "k"], Resp::int(at_s));
    let at_ms = common::unix_ms() + 500_000;
    raw.expect(&["SET", "k", "v", "PXAT", &at_ms.to_string()], Resp::ok());
    raw.expect(&["PEXPIRETIME", "k"], Resp::int(at_ms));
    raw.expect(&["SET", "far", "v", "PXAT", "99999999999999"], Resp::ok());
    raw.expect(&["PEXPIRETIME", "far"], Resp::int(99_999_999_999_999));
    // A time in the past is accepted and the key is gone at once.
    raw.expect(&["SET", "past", "v", "EXAT", "1"], Resp::ok());
    raw.expect(&["GET", "past"], Resp::Nil);
    raw.expect(&["EXISTS", "past"], Resp::int(0));
}

#[test]
fn set_nx_and_xx() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "k", "v", "XX"], Resp::Nil);
    raw.expect(&["EXISTS", "k"], Resp::int(0));
    raw.expect(&["SET", "k", "v", "NX"], Resp::ok());
    raw.expect(&["SET", "k", "w", "NX"], Resp::Nil);
    raw.expect(&["GET", "k"], Resp::bulk("v"));
    raw.expect(&["SET", "k", "w", "XX"], Resp::ok());
    raw.expect(&["GET", "k"], Resp::bulk("w"));
    raw.expect(&["SET", "k", "x", "nx", "ex", "100"], Resp::Nil);
    raw.expect(&["TTL", "k"], Resp::int(-1));
}

#[test]
fn set_get_returns_the_old_value() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "k", "v", "GET"], Resp::Nil);
    raw.expect(&["SET", "k", "w", "GET"], Resp::bulk("v"));
    raw.expect(&["GET", "k"], Resp::bulk("w"));
    // NX GET on an existing key: not set, old value returned.
    raw.expect(&["SET", "k", "x", "NX", "GET"], Resp::bulk("w"));
    raw.expect(&["GET", "k"], Resp::bulk("w"));
    // XX GET on a missing key: not set, nil.
    raw.expect(&["SET", "nokey", "x", "XX", "GET"], Resp::Nil);
    raw.expect(&["EXISTS", "nokey"], Resp::int(0));
    raw.expect(&["SET", "k", "y", "px", "100000", "xx", "get"], Resp::bulk("w"));
    assert_pttl(&mut raw, "k", 98_000, 100_000);
}

#[test]
fn set_keepttl() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "k", "v", "EX", "1000"], Resp::ok());
    raw.expect(&["SET", "k", "v2", "KEEPTTL"], Resp::ok());
    raw.expect(&["GET", "k"], Resp::bulk("v2"));
    assert_ttl(&mut raw, "k", 1000);
    raw.expect(&["SET", "k", "v3"], Resp::ok());
    raw.expect(&["TTL", "k"], Resp::int(-1));
    raw.expect(&["SET", "new", "v", "KEEPTTL"], Resp::ok());
    raw.expect(&["TTL", "new"], Resp::int(-1));
}

#[test]
fn set_option_errors() {
    let (_server, mut raw) = common::start();
    for args in [
        &["SET", "k", "v", "NX", "XX"][..],
        &["SET", "k", "v", "XX", "NX"],
        &["SET", "k", "v", "EX", "10", "PX", "100"],
        &["SET", "k", "v", "EX", "10", "KEEPTTL"],
        &["SET", "k", "v", "KEEPTTL", "EX", "10"],
        &["SET", "k", "v", "PXAT", "10", "EXAT", "10"],
        &["SET", "k", "v", "EX"],
        &["SET", "k", "v", "FOO"],
        &["SET", "k", "v", "GET", "GETX"],
    ] {
        raw.expect(args, Resp::err(SYNTAX));
    }
    raw.expect(&["SET", "k", "v", "EX", "0"], invalid_expire("set"));
    raw.expect(&["SET", "k", "v", "EX", "-1"], invalid_expire("set"));
    raw.expect(&["SET", "k", "v", "PX", "0"], invalid_expire("set"));
    raw.expect(&["SET", "k", "v", "EXAT", "0"], invalid_expire("set"));
    raw.expect(&["SET", "k", "v", "EX", "9223372036854775807"], invalid_expire("set"));
    raw.expect(&["SET", "k", "v", "PX", "9223372036854775807"], invalid_expire("set"));
    raw.expect(&["SET", "k", "v", "EXAT", "9223372036854775807"], invalid_expire("set"));
    raw.expect(&["SET", "k", "v", "EX", "abc"], Resp::err(NOT_INTEGER));
    raw.expect(&["SET", "k", "v", "PX", "1.5"], Resp::err(NOT_INTEGER));
    // None of the failed SETs wrote anything.
    raw.expect(&["EXISTS", "k"], Resp::int(0));
}

#[test]
fn setnx() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SETNX", "k", "1"], Resp::int(1));
    raw.expect(&["SETNX", "k", "2"], Resp::int(0));
    raw.expect(&["GET", "k"], Resp::bulk("1"));
    raw.expect(&["SETNX", "k"], wrong_arity("setnx"));
    raw.expect(&["SETNX", "k", "1", "2"], wrong_arity("setnx"));
}

#[test]
fn setex_and_psetex() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SETEX", "k", "10", "v"], Resp::ok());
    raw.expect(&["GET", "k"], Resp::bulk("v"));
    assert_ttl(&mut raw, "k", 10);
    raw.expect(&["PSETEX", "p", "100000", "v"], Resp::ok());
    assert_pttl(&mut raw, "p", 98_000, 100_000);
    raw.expect(&["SETEX", "k", "0", "v"], invalid_expire("setex"));
    raw.expect(&["SETEX", "k", "-1", "v"], invalid_expire("setex"));
    raw.expect(&["SETEX", "k", "x", "v"], Resp::err(NOT_INTEGER));
    raw.expect(&["PSETEX", "p", "0", "v"], invalid_expire("psetex"));
    raw.expect(&["PSETEX", "p", "abc", "v"], Resp::err(NOT_INTEGER));
    raw.expect(&["SETEX", "k", "10"], wrong_arity("setex"));
    raw.expect(&["PSETEX", "k", "10"], wrong_arity("psetex"));
    // Failed calls leave the key alone.
    assert_ttl(&mut raw, "k", 10);
}

#[test]
fn getset() {
    let (_server, mut raw) = common::start();
    raw.expect(&["GETSET", "k", "1"], Resp::Nil);
    raw.expect(&["GETSET", "k", "2"], Resp::bulk("1"));
    raw.expect(&["GET", "k"], Resp::bulk("2"));
    // GETSET clears the expiry, like SET.
    raw.expect(&["SET", "t", "v", "EX", "100"], Resp::ok());
    raw.expect(&["GETSET", "t", "w"], Resp::bulk("v"));
    raw.expect(&["TTL", "t"], Resp::int(-1));
    raw.expect(&["GETSET", "k"], wrong_arity("getset"));
}

#[test]
fn getdel() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "k", "v"], Resp::ok());
    raw.expect(&["GETDEL", "k"], Resp::bulk("v"));
    raw.expect(&["GETDEL", "k"], Resp::Nil);
    raw.expect(&["EXISTS", "k"], Resp::int(0));
    raw.expect(&["GETDEL"], wrong_arity("getdel"));
    raw.expect(&["GETDEL", "a", "b"], wrong_arity("getdel"));
}

#[test]
fn getex() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "k", "v"], Resp::ok());
    raw.expect(&["GETEX", "k"], Resp::bulk("v"));
    raw.expect(&["TTL", "k"], Resp::int(-1));
    raw.expect(&["GETEX", "k", "EX", "100"], Resp::bulk("v"));
    assert_ttl(&mut raw, "k", 100);
    raw.expect(&["GETEX", "k", "PX", "50000"], Resp::bulk("v"));
    assert_pttl(&mut raw, "k", 48_000, 50_000);
    raw.expect(&["GETEX", "k", "EXAT", "99999999999"], Resp::bulk("v"));
    raw.expect(&["EXPIRETIME", "k"], Resp::int(99_999_999_999));
    raw.expect(&["GETEX", "k", "PXAT", "99999999999123"], Resp::bulk("v"));
    raw.expect(&["PEXPIRETIME", "k"], Resp::int(99_999_999_999_123));
    raw.expect(&["GETEX", "k", "PERSIST"], Resp::bulk("v"));
    raw.expect(&["TTL", "k"], Resp::int(-1));
    raw.expect(&["GETEX", "nokey", "EX", "10"], Resp::Nil);
    raw.expect(&["GETEX", "nokey"], Resp::Nil);
    raw.expect(&["EXISTS", "nokey"], Resp::int(0));
}

#[test]
fn getex_errors() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "k", "v"], Resp::ok());
    raw.expect(&["GETEX", "k", "EX", "0"], invalid_expire("getex"));
    raw.expect(&["GETEX", "k", "EX", "-1"], invalid_expire("getex"));
    raw.expect(&["GETEX", "k", "PX", "0"], invalid_expire("getex"));
    raw.expect(&["GETEX", "k", "EX", "9223372036854775807"], invalid_expire("getex"));
    raw.expect(&["GETEX", "k", "EX", "abc"], Resp::err(NOT_INTEGER));
    raw.expect(&["GETEX", "k", "FOO"], Resp::err(SYNTAX));
    raw.expect(&["GETEX", "k", "EX"], Resp::err(SYNTAX));
    raw.expect(&["GETEX", "k", "EX", "10", "PX", "10"], Resp::err(SYNTAX));
    raw.expect(&["GETEX", "k", "PERSIST", "EX", "10"], Resp::err(SYNTAX));
    raw.expect(&["GETEX"], wrong_arity("getex"));
    raw.expect(&["TTL", "k"], Resp::int(-1));
}

#[test]
fn mget_and_mset() {
    let (_server, mut raw) = common::start();
    raw.expect(&["MSET", "a", "1", "b", "2", "c", "3"], Resp::ok());
    raw.expect(
        &["MGET", "a", "b", "c", "d"],
        Resp::Array(vec![Resp::bulk("1"), Resp::bulk("2"), Resp::bulk("3"), Resp::Nil]),
    );
    // A key named twice takes the last value.
    raw.expect(&["MSET", "k", "first", "k", "last"], Resp::ok());
    raw.expect(&["GET", "k"], Resp::bulk("last"));
    // MSET clears expiries.
    raw.expect(&["SET", "t", "v", "EX", "100"], Resp::ok());
    raw.expect(&["MSET", "t", "w"], Resp::ok());
    raw.expect(&["TTL", "t"], Resp::int(-1));
    raw.expect(&["MSET", "a", "1", "b"], wrong_arity("mset"));
    raw.expect(&["MSET", "a"], wrong_arity("mset"));
    raw.expect(&["MGET"], wrong_arity("mget"));
    raw.expect(&["GET", "a"], Resp::bulk("1"));
}

#[test]
fn msetnx() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "a", "old"], Resp::ok());
    raw.expect(&["MSETNX", "a", "1", "x", "2"], Resp::int(0));
    raw.expect(&["MGET", "a", "x"], Resp::Array(vec![Resp::bulk("old"), Resp::Nil]));
    raw.expect(&["MSETNX", "x", "1", "y", "2"], Resp::int(1));
    raw.expect(&["MGET", "x", "y"], Resp::bulks(&["1", "2"]));
    raw.expect(&["MSETNX", "x"], wrong_arity("msetnx"));
    raw.expect(&["MSETNX", "x", "1", "y"], wrong_arity("msetnx"));
}

#[test]
fn append_and_strlen() {
    let (_server, mut raw) = common::start();
    raw.expect(&["APPEND", "s", "hello"], Resp::int(5));
    raw.expect(&["APPEND", "s", " world"], Resp::int(11));
    raw.expect(&["GET", "s"], Resp::bulk("hello world"));
    raw.expect(&["STRLEN", "s"], Resp::int(11));
    raw.expect(&["STRLEN", "nokey"], Resp::int(0));
    raw.expect(&["APPEND", "s", ""], Resp::int(11));
    // APPEND keeps the expiry.
    raw.expect(&["SET", "t", "a", "EX", "100"], Resp::ok());
    raw.expect(&["APPEND", "t", "b"], Resp::int(2));
    assert_ttl(&mut raw, "t", 100);
    raw.expect(&["APPEND", "s"], wrong_arity("append"));
    raw.expect(&["STRLEN"], wrong_arity("strlen"));
    raw.expect(&["STRLEN", "a", "b"], wrong_arity("strlen"));
}

/// One LCS run as Redis lists it: `[[a_start, a_end], [b_start, b_end]]` and, with WITHMATCHLEN, its length.
fn run(a: (i64, i64), b: (i64, i64), len: Option<i64>) -> Resp {
    let mut entry = vec![
        Resp::Array(vec![Resp::int(a.0), Resp::int(a.1)]),
        Resp::Array(vec![Resp::int(b.0), Resp::int(b.1)]),
    ];
    entry.extend(len.map(Resp::int));
    Resp::Array(entry)
}

#[test]
fn lcs_as_redis_7() {
    let (_server, mut raw) = common::start();
    raw.expect(&["MSET", "k1", "ohmytext", "k2", "mynewtext"], Resp::ok());
    raw.expect(&["LCS", "k1", "k2"], Resp::bulk("mytext"));
    raw.expect(&["LCS", "k1", "k2", "LEN"], Resp::int(6));
    let matches = vec![run((4, 7), (5, 8), None), run((2, 3), (0, 1), None)];
    raw.expect(
        &["LCS", "k1", "k2", "IDX"],
        Resp::Array(vec![
            Resp::bulk("matches"),
            Resp::Array(matches),
            Resp::bulk("len"),
            Resp::int(6),
        ]),
    );
    raw.expect(
        &["LCS", "k1", "k2", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"],
        Resp::Array(vec![
            Resp::bulk("matches"),
            Resp::Array(vec![run((4, 7), (5, 8), Some(4))]),
            Resp::bulk("len"),
            Resp::int(6),
        ]),
    );
    raw.expect(&["LCS", "k1", "nokey"], Resp::bulk(""));
    raw.expect(
        &["LCS", "k1", "k2", "LEN", "IDX"],
        Resp::err("ERR If you want both the length and indexes, please just use IDX."),
    );
    raw.expect(&["LCS", "k1", "k2", "MINMATCHLEN"], Resp::err("ERR syntax error"));
    raw.expect(&["LCS", "k1", "k2", "MINMATCHLEN", "x"], Resp::err(NOT_INTEGER));
    raw.expect(&["LCS", "k1"], wrong_arity("lcs"));
    raw.expect(&["SUBSTR", "k1", "0", "2"], Resp::bulk("ohm"));
    raw.expect(&["SUBSTR", "k1"], wrong_arity("substr"));
    // RESP3 answers IDX with a map.
    let _ = raw.cmd(&["HELLO", "3"]);
    raw.expect(
        &["LCS", "k1", "k2", "IDX", "MINMATCHLEN", "3"],
        Resp::Map(vec![
            (Resp::bulk("matches"), Resp::Array(vec![run((4, 7), (5, 8), None)])),
            (Resp::bulk("len"), Resp::int(6)),
        ]),
    );
}

#[test]
fn lcs_refuses_a_table_larger_than_proto_max_bulk_len() {
    // Two 1,000-byte strings need a table of 1,001 x 1,001 four-byte cells: 4,008,004 bytes.
    let (one_short, fits) = ("4008003", "4008004");
    let a = "a".repeat(1000);
    let small = Server::start(&["--proto-max-bulk-len", one_short]);
    let mut raw = small.raw();
    raw.expect(&["MSET", "x", &a, "y", &a], Resp::ok());
    raw.expect(
        &["LCS", "x", "y", "LEN"],
        Resp::err("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len"),
    );
    let enough = Server::start(&["--proto-max-bulk-len", fits]);
    let mut raw = enough.raw();
    raw.expect(&["MSET", "x", &a, "y", &a], Resp::ok());
    raw.expect(&["LCS", "x", "y", "LEN"], Resp::int(1000));
}

#[test]
fn getrange() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "s", "This is a string"], Resp::ok());
    for (start, end, want) in [
        ("0", "3", "This"),
        ("-3", "-1", "ing"),
        ("0", "-1", "This is a string"),
        ("10", "100", "string"),
        ("5", "3", ""),
        ("-100", "-50", "T"),
        ("-1", "-5", ""),
        ("100", "200", ""),
        ("-100", "2", "Thi"),
        ("0", "-100", "T"),
        ("-5", "-100", ""),
    ] {
        raw.expect(&["GETRANGE", "s", start, end], Resp::bulk(want));
    }
    raw.expect(&["GETRANGE", "nokey", "0", "1"], Resp::bulk(""));
    raw.expect(&["SET", "e", ""], Resp::ok());
    raw.expect(&["GETRANGE", "e", "0", "-1"], Resp::bulk(""));
    raw.expect(&["GETRANGE", "s", "a", "1"], Resp::err(NOT_INTEGER));
    raw.expect(&["GETRANGE", "s", "0"], wrong_arity("getrange"));
}

#[test]
fn setrange() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SETRANGE", "k", "5", "hello"], Resp::int(10));
    raw.expect(&["GET", "k"], Resp::bulk(b"\0\0\0\0\0hello"));
    raw.expect(&["SETRANGE", "k", "0", "X"], Resp::int(10));
    raw.expect(&["GET", "k"], Resp::bulk(b"X\0\0\0\0hello"));
    raw.expect(&["SETRANGE", "k", "8", "LOWORLD"], Resp::int(15));
    raw.expect(&["GET", "k"], Resp::bulk(b"X\0\0\0\0helLOWORLD"));
    // An empty patch changes nothing and creates nothing.
    raw.expect(&["SETRANGE", "k", "0", ""], Resp::int(15));
    raw.expect(&["SETRANGE", "nk", "10", ""], Resp::int(0));
    raw.expect(&["EXISTS", "nk"], Resp::int(0));
    // SETRANGE keeps the expiry.
    raw.expect(&["SET", "t", "abc", "EX", "100"], Resp::ok());
    raw.expect(&["SETRANGE", "t", "1", "X"], Resp::int(3));
    raw.expect(&["GET", "t"], Resp::bulk("aXc"));
    assert_ttl(&mut raw, "t", 100);
    raw.expect(&["SETRANGE", "k", "-1", "x"], Resp::err("ERR offset is out of range"));
    raw.expect(&["SETRANGE", "k", "abc", "x"], Resp::err(NOT_INTEGER));
    raw.expect(
        &["SETRANGE", "k", "536870912", "x"],
        Resp::err("ERR string exceeds maximum allowed size (proto-max-bulk-len)"),
    );
    raw.expect(&["SETRANGE", "k", "1"], wrong_arity("setrange"));
    raw.expect(&["STRLEN", "k"], Resp::int(15));
}

#[test]
fn incr_and_decr() {
    let (_server, mut raw) = common::start();
    raw.expect(&["INCR", "n"], Resp::int(1));
    raw.expect(&["INCR", "n"], Resp::int(2));
    raw.expect(&["DECR", "n"], Resp::int(1));
    raw.expect(&["INCRBY", "n", "10"], Resp::int(11));
    raw.expect(&["DECRBY", "n", "5"], Resp::int(6));
    raw.expect(&["INCRBY", "n", "-10"], Resp::int(-4));
    raw.expect(&["DECRBY", "n", "-4"], Resp::int(0));
    raw.expect(&["DECR", "fresh"], Resp::int(-1));
    // The result is stored as a string.
    raw.expect(&["GET", "n"], Resp::bulk("0"));
    raw.expect(&["SET", "s", "-15"], Resp::ok());
    raw.expect(&["INCR", "s"], Resp::int(-14));
    // INCR keeps the expiry.
    raw.expect(&["SET", "t", "1", "EX", "100"], Resp::ok());
    raw.expect(&["INCR", "t"], Resp::int(2));
    assert_ttl(&mut raw, "t", 100);
}

#[test]
fn incr_overflow() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "n", "9223372036854775807"], Resp::ok());
    raw.expect(&["INCR", "n"], Resp::err(OVERFLOW));
    raw.expect(&["INCRBY", "n", "1"], Resp::err(OVERFLOW));
    raw.expect(&["GET", "n"], Resp::bulk("9223372036854775807"));
    raw.expect(&["SET", "n", "-9223372036854775808"], Resp::ok());
    raw.expect(&["DECR", "n"], Resp::err(OVERFLOW));
    raw.expect(&["DECRBY", "n", "1"], Resp::err(OVERFLOW));
    raw.expect(&["GET", "n"], Resp::bulk("-9223372036854775808"));
    raw.expect(&["SET", "z", "0"], Resp::ok());
    raw.expect(&["INCRBY", "z", "-9223372036854775808"], Resp::int(i64::MIN));
}

#[test]
fn decrby_of_i64_min_has_its_own_error() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "z", "0"], Resp::ok());
    raw.expect(
        &["DECRBY", "z", "-9223372036854775808"],
        Resp::err("ERR decrement would overflow"),
    );
}

#[test]
fn incr_of_non_integers() {
    let (_server, mut raw) = common::start();
    for value in ["abc", " 1", "1 ", "01", "1.0", "+1", "", "99999999999999999999"] {
        raw.expect(&["SET", "s", value], Resp::ok());
        raw.expect(&["INCR", "s"], Resp::err(NOT_INTEGER));
        raw.expect(&["GET", "s"], Resp::bulk(value));
    }
    raw.expect(&["INCRBY", "n", "abc"], Resp::err(NOT_INTEGER));
    raw.expect(&["INCRBY", "n", "1.5"], Resp::err(NOT_INTEGER));
    raw.expect(&["INCRBY", "n", "+1"], Resp::err(NOT_INTEGER));
    raw.expect(&["DECRBY", "n", ""], Resp::err(NOT_INTEGER));
    raw.expect(&["EXISTS", "n"], Resp::int(0));
    raw.expect(&["INCR"], wrong_arity("incr"));
    raw.expect(&["DECR", "a", "b"], wrong_arity("decr"));
    raw.expect(&["INCRBY", "n"], wrong_arity("incrby"));
    raw.expect(&["DECRBY", "n"], wrong_arity("decrby"));
}

#[test]
fn incrbyfloat() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "f", "10.5"], Resp::ok());
    raw.expect(&["INCRBYFLOAT", "f", "0.1"], Resp::bulk("10.6"));
    raw.expect(&["INCRBYFLOAT", "f", "-5"], Resp::bulk("5.6"));
    raw.expect(&["GET", "f"], Resp::bulk("5.6"));
    raw.expect(&["INCRBYFLOAT", "g", "3"], Resp::bulk("3"));
    raw.expect(&["GET", "g"], Resp::bulk("3"));
    raw.expect(&["SET", "h", "5.0e3"], Resp::ok());
    raw.expect(&["INCRBYFLOAT", "h", "200"], Resp::bulk("5200"));
    raw.expect(&["INCRBYFLOAT", "i", "1.5e-3"], Resp::bulk("0.0015"));
    raw.expect(&["INCRBYFLOAT", "i", "0.0000001"], Resp::bulk("0.0015001"));
    raw.expect(&["INCRBYFLOAT", "j", "0.00001"], Resp::bulk("0.00001"));
    raw.expect(&["SET", "x", "1"], Resp::ok());
    raw.expect(&["INCRBYFLOAT", "x", "1."], Resp::bulk("2"));
    raw.expect(&["INCRBYFLOAT", "x", ".5"], Resp::bulk("2.5"));
    raw.expect(&["INCRBYFLOAT", "x", "-0.0"], Resp::bulk("2.5"));
    // INCRBYFLOAT keeps the expiry.
    raw.expect(&["SET", "t", "1", "EX", "100"], Resp::ok());
    raw.expect(&["INCRBYFLOAT", "t", "1.5"], Resp::bulk("2.5"));
    assert_ttl(&mut raw, "t", 100);
}

#[test]
fn incrbyfloat_errors() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "f", "1"], Resp::ok());
    for bad in ["abc", "nan", "", " 1", "1 "] {
        raw.expect(&["INCRBYFLOAT", "f", bad], Resp::err(NOT_FLOAT));
    }
    raw.expect(
        &["INCRBYFLOAT", "f", "inf"],
        Resp::err("ERR increment would produce NaN or Infinity"),
    );
    raw.expect(
        &["INCRBYFLOAT", "f", "-inf"],
        Resp::err("ERR increment would produce NaN or Infinity"),
    );
    for value in ["abc", " 1.5", "nan"] {
        raw.expect(&["SET", "s", value], Resp::ok());
        raw.expect(&["INCRBYFLOAT", "s", "1"], Resp::err(NOT_FLOAT));
    }
    raw.expect(&["GET", "f"], Resp::bulk("1"));
    raw.expect(&["INCRBYFLOAT", "f"], wrong_arity("incrbyfloat"));
}

#[test]
fn incrbyfloat_never_uses_exponent_notation() {
    let (_server, mut raw) = common::start();
    raw.expect(&["INCRBYFLOAT", "big", "1e20"], Resp::bulk("100000000000000000000"));
    raw.expect(&["GET", "big"], Resp::bulk("100000000000000000000"));
    raw.expect(&["INCRBYFLOAT", "tiny", "1e-20"], Resp::bulk("0"));
}

#[test]
fn disk_engine_key_length_limit() {
    // Documented: the disk engine limits keys to 65,525 bytes.
    let (_server, mut raw) = common::start();
    let longest = "k".repeat(65_525);
    raw.expect(&["SET", longest.as_str(), "v"], Resp::ok());
    raw.expect(&["STRLEN", longest.as_str()], Resp::int(1));
    let too_long = "k".repeat(65_526);
    let err = raw.cmd(&["SET", too_long.as_str(), "v"]);
    assert!(
        err.as_error().starts_with("ERR ") && err.as_error().contains("65525"),
        "{err:?}"
    );
    raw.expect(&["DBSIZE"], Resp::int(1));
    // The memory engine has no such limit.
    let memory = common::Server::start(&["--engine", "memory"]);
    let mut raw = memory.raw();
    let huge = "k".repeat(100_000);
    raw.expect(&["SET", huge.as_str(), "v"], Resp::ok());
    raw.expect(&["GET", huge.as_str()], Resp::bulk("v"));
}

#[test]
fn expired_string_is_gone_for_every_read() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "k", "v", "PX", "50"], Resp::ok());
    raw.expect(&["PSETEX", "p", "50", "v"], Resp::ok());
    wait_until(Duration::from_secs(5), "k and p to expire", || {
        raw.cmd(&["GET", "k"]) == Resp::Nil && raw.cmd(&["GET", "p"]) == Resp::Nil
    });
    raw.expect(&["STRLEN", "k"], Resp::int(0));
    raw.expect(&["GETRANGE", "k", "0", "-1"], Resp::bulk(""));
    raw.expect(&["APPEND", "k", "new"], Resp::int(3));
    raw.expect(&["TTL", "k"], Resp::int(-1));
    raw.expect(&["INCR", "p"], Resp::int(1));
}

/// Runs `work(connection, thread index)` on `threads` parallel connections.
fn in_parallel(server: &common::Server, threads: usize, work: fn(&mut Raw, usize)) {
    let addr = server.addr();
    let handles: Vec<_> = (0..threads)
        .map(|t| thread::spawn(move || work(&mut Raw::connect(addr), t)))
        .collect();
    for handle in handles {
        handle.join().expect("worker thread");
    }
}

#[test]
fn concurrent_read_modify_writes_are_atomic() {
    let (server, mut raw) = common::start();
    in_parallel(&server, 8, |raw, _| {
        for _ in 0..250 {
            let _ = raw.cmd(&["INCR", "counter"]).as_int();
            let _ = raw.cmd(&["INCRBYFLOAT", "float", "0.5"]).text();
            let _ = raw.cmd(&["APPEND", "log", "x"]).as_int();
        }
    });
    raw.expect(&["GET", "counter"], Resp::bulk("2000"));
    raw.expect(&["GET", "float"], Resp::bulk("1000"));
    raw.expect(&["STRLEN", "log"], Resp::int(2000));
}

#[test]
fn concurrent_sets_of_one_key_leave_one_value() {
    let (server, mut raw) = common::start();
    in_parallel(&server, 8, |raw, t| {
        for i in 0..200 {
            raw.expect(&["SET", "contended", &format!("{t}:{i}")], Resp::ok());
        }
    });
    // Last writer wins: a single value, not a set of concurrent ones.
    let value = raw.cmd(&["GET", "contended"]).text();
    let (t, i) = value.split_once(':').expect("t:i");
    assert!(t.parse::<usize>().unwrap() < 8 && i == "199", "GET gave {value}");
    raw.expect(&["STRLEN", "contended"], Resp::int(value.len() as i64));
    raw.expect(&["INCR", "contended"], Resp::err(NOT_INTEGER));
}
