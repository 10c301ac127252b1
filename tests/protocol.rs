//! RESP framing from raw bytes: pipelining, inline commands, RESP3, binary
//! safety, large values, protocol errors and the client limits.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{encode, wait_until, Raw, Resp, Server};

/// Sends `input` on a fresh connection, expects exactly `error` as the reply
/// followed by the server closing the connection, then checks that a new
/// connection is served.
fn assert_protocol_error(server: &Server, input: &[u8], error: &str) {
    let mut raw = server.raw();
    let started = Instant::now();
    raw.send(input);
    assert_eq!(
        raw.read_reply(),
        Resp::err(error),
        "reply to {:?}",
        String::from_utf8_lossy(&input[..input.len().min(80)])
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "protocol error took {:?}",
        started.elapsed()
    );
    raw.assert_closed();
    assert_alive(server);
}

/// A new connection still gets PONG.
fn assert_alive(server: &Server) {
    assert_eq!(server.raw().cmd(&["PING"]), Resp::simple("PONG"));
}

#[test]
fn pipelined_commands_in_one_write_reply_in_order() {
    let server = Server::start(&[]);
    let mut raw = server.raw();
    let mut wire = Vec::new();
    for i in 0..50 {
        wire.extend(encode(&["SET".to_string(), format!("key:{i}"), format!("value:{i}")]));
        wire.extend(encode(&["GET".to_string(), format!("key:{i}")]));
    }
    assert_eq!(wire.iter().filter(|&&b| b == b'*').count(), 100);
    raw.send(&wire);
    for i in 0..50 {
        assert_eq!(raw.read_reply(), Resp::ok(), "SET #{i}");
        assert_eq!(raw.read_reply(), Resp::bulk(format!("value:{i}")), "GET #{i}");
    }
    assert!(raw.is_quiet_for(Duration::from_millis(100)), "extra replies");
}

#[test]
fn pipelined_increments_apply_in_order_and_mix_with_inline() {
    let server = Server::start(&[]);
    let mut raw = server.raw();
    let mut wire = Vec::new();
    for i in 0..100 {
        if i % 2 == 0 {
            wire.extend(encode(&["INCR", "counter"]));
        } else {
            wire.extend(b"INCR counter\r\n");
        }
    }
    raw.send(&wire);
    for i in 1..=100 {
        assert_eq!(raw.read_reply(), Resp::int(i));
    }
}

#[test]
fn inline_commands() {
    let server = Server::start(&[]);
    let mut raw = server.raw();
    raw.send(b"PING\r\n");
    assert_eq!(raw.read_reply(), Resp::simple("PONG"));
    raw.send(b"set \"a b\" 'c'\r\n");
    assert_eq!(raw.read_reply(), Resp::ok());
    assert_eq!(raw.cmd(&["GET", "a b"]), Resp::bulk("c"));
    raw.send(b"get \"a b\"\r\n");
    assert_eq!(raw.read_reply(), Resp::bulk("c"));
    // Double quotes take escapes, single quotes take \' only.
    raw.send(b"set esc \"x\\x41\\n\\t\\\"\"\r\n");
    assert_eq!(raw.read_reply(), Resp::ok());
    assert_eq!(raw.cmd(&["GET", "esc"]), Resp::bulk("xA\n\t\""));
    raw.send(b"set single 'it\\'s'\r\n");
    assert_eq!(raw.read_reply(), Resp::ok());
    assert_eq!(raw.cmd(&["GET", "single"]), Resp::bulk("it's"));
    // A bare LF also ends an inline command; extra blanks separate nothing.
    raw.send(b"PING\nECHO   hello  \n");
    assert_eq!(raw.read_reply(), Resp::simple("PONG"));
    assert_eq!(raw.read_reply(), Resp::bulk("hello"));
}

#[test]
fn empty_lines_and_empty_multibulks_are_ignored() {
    let server = Server::start(&[]);
    let mut raw = server.raw();
    raw.send(b"\r\n\r\n\n   \r\n*0\r\n*-1\r\nPING\r\n");
    assert_eq!(raw.read_reply(), Resp::simple("PONG"));
    assert!(raw.is_quiet_for(Duration::from_millis(100)), "extra replies");
    assert_eq!(raw.cmd(&["PING"]), Resp::simple("PONG"));
}

#[test]
fn requests_split_byte_by_byte() {
    let server = Server::start(&[]);
    let mut raw = server.raw();
    let wire = encode(&["SET", "split", "v\r\nx"]);
    for byte in &wire {
        raw.send(std::slice::from_ref(byte));
    }
    assert_eq!(raw.read_reply(), Resp::ok());
    assert_eq!(raw.cmd(&["GET", "split"]), Resp::bulk("v\r\nx"));
}

#[test]
fn resp3_via_hello() {
    let server = Server::start(&[]);
    let mut raw = server.raw();
    raw.send_cmd(&["HELLO", "3"]);
    let bytes = raw.read_reply_bytes();
    assert!(bytes.starts_with(b"%7\r\n"), "{:?}", String::from_utf8_lossy(&bytes));
    let hello = common::parse(&bytes).unwrap().unwrap().0;
    assert_eq!(hello.get("server"), Some(Resp::bulk("redis")));
    assert!(hello.get("version").unwrap().text().starts_with("7."));
    assert_eq!(hello.get("proto"), Some(Resp::int(3)));
    assert!(hello.get("id").unwrap().as_int() > 0);
    assert_eq!(hello.get("mode"), Some(Resp::bulk("standalone")));
    assert_eq!(hello.get("role"), Some(Resp::bulk("master")));
    assert_eq!(hello.get("modules"), Some(Resp::Array(vec![])));

    raw.send_cmd(&["GET", "missing"]);
    assert_eq!(raw.read_reply_bytes(), b"_\r\n");
    raw.send_cmd(&["SET", "k", "v"]);
    assert_eq!(raw.read_reply_bytes(), b"+OK\r\n");
    raw.send_cmd(&["MGET", "k", "missing"]);
    assert_eq!(raw.read_reply_bytes(), b"*2\r\n$1\r\nv\r\n_\r\n");
    // CONFIG GET is a map in RESP3.
    raw.send_cmd(&["CONFIG", "GET", "timeout"]);
    assert_eq!(raw.read_reply_bytes(), b"%1\r\n$7\r\ntimeout\r\n$1\r\n0\r\n");

    // Back to RESP2: HELLO is a flat array, null is $-1.
    raw.send_cmd(&["HELLO", "2"]);
    let bytes = raw.read_reply_bytes();
    assert!(bytes.starts_with(b"*14\r\n"), "{:?}", String::from_utf8_lossy(&bytes));
    raw.send_cmd(&["GET", "missing"]);
    assert_eq!(raw.read_reply_bytes(), b"$-1\r\n");

    assert_eq!(
        raw.cmd(&["HELLO", "4"]),
        Resp::err("NOPROTO unsupported protocol version")
    );
    assert_eq!(
        raw.cmd(&["HELLO", "abc"]),
        Resp::err("ERR Protocol version is not an integer or out of range")
    );
}

#[test]
fn binary_safe_keys_and_values() {
    let server = Server::start(&[]);
    let mut raw = server.raw();
    let key: &[u8] = b"k\x00e\r\ny\xff\xfe*?[";
    let value: Vec<u8> = (0..=255u8).chain(*b"\r\n$-1\r\n\x00").collect();
    assert_eq!(raw.cmd(&args!["SET", key, value]), Resp::ok());
    assert_eq!(raw.cmd(&args!["GET", key]), Resp::bulk(&value));
    assert_eq!(raw.cmd(&args!["STRLEN", key]), Resp::int(value.len() as i64));
    assert_eq!(raw.cmd(&args!["EXISTS", key]), Resp::int(1));
    // A key differing only after the NUL is a different key.
    assert_eq!(raw.cmd(&args!["EXISTS", b"k\x00"]), Resp::int(0));
    assert_eq!(raw.cmd(&["KEYS", "*"]), Resp::bulks(&[key]));
    assert_eq!(
        raw.cmd(&args!["APPEND", key, b"\x00\xff"]),
        Resp::int(value.len() as i64 + 2)
    );
    assert_eq!(raw.cmd(&args!["GETRANGE", key, "-2", "-1"]), Resp::bulk(b"\x00\xff"));
    // Empty key and empty value are legal.
    assert_eq!(raw.cmd(&["SET", "", ""]), Resp::ok());
    assert_eq!(raw.cmd(&["GET", ""]), Resp::bulk(""));
}

/// Deterministic pseudo-random bytes (xorshift), every byte value included.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn one_megabyte_value_round_trip() {
    let server = Server::start(&[]);
    let mut raw = server.raw();
    let value = noise(1024 * 1024, 7);
    assert_eq!(raw.cmd(&args!["SET", "big", value]), Resp::ok());
    let got = raw.cmd(&["GET", "big"]);
    assert!(got == Resp::bulk(&value), "1 MB value differs: {got:?}");
    assert_eq!(raw.cmd(&["STRLEN", "big"]), Resp::int(1024 * 1024));
}

#[test]
fn four_megabyte_value_split_over_many_writes() {
    let server = Server::start(&[]);
    let mut raw = server.raw();
    let value = noise(4 * 1024 * 1024, 99);
    let wire = encode(&args!["SET", "huge", value]);
    // Odd-sized chunks, so boundaries fall inside the length lines and the CRLFs.
    for chunk in wire.chunks(65_521) {
        raw.stream().write_all(chunk).expect("write chunk");
        raw.stream().flush().expect("flush");
    }
    assert_eq!(raw.read_reply(), Resp::ok());
    let got = raw.cmd(&["GET", "huge"]);
    assert!(got == Resp::bulk(&value), "4 MB value differs: {got:?}");
    // And the big reply does not leave junk behind.
    assert_eq!(raw.cmd(&["PING"]), Resp::simple("PONG"));
}

#[test]
fn invalid_multibulk_length_closes_the_connection() {
    let server = Server::start(&[]);
    assert_protocol_error(&server, b"*abc\r\n", "ERR Protocol error: invalid multibulk length");
    assert_protocol_error(
        &server,
        b"*99999999999\r\n",
        "ERR Protocol error: invalid multibulk length",
    );
}

#[test]
fn invalid_bulk_length_closes_the_connection() {
    let server = Server::start(&[]);
    for input in [
        &b"*1\r\n$-5\r\n"[..],
        b"*1\r\n$-1\r\n",
        b"*1\r\n$abc\r\n",
        b"*2\r\n$3\r\nGET\r\n$1x\r\n",
    ] {
        assert_protocol_error(&server, input, "ERR Protocol error: invalid bulk length");
    }
}

#[test]
fn commands_before_a_protocol_error_are_answered() {
    let server = Server::start(&[]);
    let mut raw = server.raw();
    let mut wire = encode(&["SET", "k", "v"]);
    wire.extend(b"PING\r\n*abc\r\nSET k never\r\n");
    raw.send(&wire);
    assert_eq!(raw.read_reply(), Resp::ok());
    assert_eq!(raw.read_reply(), Resp::simple("PONG"));
    assert_eq!(
        raw.read_reply(),
        Resp::err("ERR Protocol error: invalid multibulk length")
    );
    raw.assert_closed();
    server.raw().expect(&["GET", "k"], Resp::bulk("v"));
}

#[test]
fn huge_bulk_length_is_refused_at_once() {
    let server = Server::start(&[]);
    // Nothing of the announced 93 GB follows: the reply must come without it.
    assert_protocol_error(
        &server,
        b"*1\r\n$99999999999\r\n",
        "ERR Protocol error: invalid bulk length",
    );
}

#[test]
fn non_bulk_element_closes_the_connection() {
    let server = Server::start(&[]);
    assert_protocol_error(&server, b"*1\r\n:5\r\n", "ERR Protocol error: expected '$', got ':'");
    assert_protocol_error(
        &server,
        b"*3\r\n$3\r\nSET\r\n+x\r\n",
        "ERR Protocol error: expected '$', got '+'",
    );
}

#[test]
fn unbalanced_quotes_close_the_connection() {
    let server = Server::start(&[]);
    assert_protocol_error(
        &server,
        b"set \"a b\r\n",
        "ERR Protocol error: unbalanced quotes in request",
    );
    assert_protocol_error(
        &server,
        b"get 'a'b\r\n",
        "ERR Protocol error: unbalanced quotes in request",
    );
}

#[test]
fn too_big_inline_request_closes_the_connection() {
    let server = Server::start(&[]);
    assert_protocol_error(
        &server,
        &vec![b'x'; 70_000],
        "ERR Protocol error: too big inline request",
    );
}

#[test]
fn too_big_length_lines_close_the_connection() {
    let server = Server::start(&[]);
    let mut count = b"*".to_vec();
    count.extend(vec![b'1'; 70_000]);
    assert_protocol_error(&server, &count, "ERR Protocol error: too big mbulk count string");
    let mut bulk = b"*1\r\n$".to_vec();
    bulk.extend(vec![b'1'; 70_000]);
    assert_protocol_error(&server, &bulk, "ERR Protocol error: too big bulk count string");
}

#[test]
fn negative_multibulk_count_is_an_empty_request() {
    let server = Server::start(&[]);
    let mut raw = server.raw();
    raw.send(b"*-5\r\nPING\r\n");
    assert_eq!(raw.read_reply(), Resp::simple("PONG"));
}

#[test]
fn client_that_vanishes_mid_request_does_not_hurt_the_server() {
    let server = Server::start(&[]);
    {
        let mut raw = server.raw();
        raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nonly part");
    }
    let mut raw = server.raw();
    assert_eq!(raw.cmd(&["GET", "k"]), Resp::Nil);
    assert_eq!(raw.cmd(&["DBSIZE"]), Resp::int(0));
}

#[test]
fn proto_max_bulk_len_limits_bulk_strings() {
    let server = Server::start(&["--proto-max-bulk-len", "2000"]);
    let mut raw = server.raw();
    // At the limit: fine.
    let value = vec![b'v'; 2000];
    assert_eq!(raw.cmd(&args!["SET", "k", value]), Resp::ok());
    assert_eq!(raw.cmd(&["STRLEN", "k"]), Resp::int(2000));
    // Past it: refused as soon as the length line arrives.
    assert_protocol_error(
        &server,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3000\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    assert_protocol_error(
        &server,
        b"*2\r\n$3\r\nGET\r\n$2001\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    // Strings grown past it by APPEND/SETRANGE are refused too.
    let mut raw = server.raw();
    assert_eq!(
        raw.cmd(&["APPEND", "k", "x"]),
        Resp::err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    );
    assert_eq!(
        raw.cmd(&["SETRANGE", "k", "2000", "x"]),
        Resp::err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    );
    assert_eq!(raw.cmd(&["STRLEN", "k"]), Resp::int(2000));
}

#[test]
fn max_multibulk_len_limits_arguments() {
    let server = Server::start(&["--max-multibulk-len", "4"]);
    let mut raw = server.raw();
    assert_eq!(
        raw.cmd(&["MSET", "a", "1", "b"]),
        Resp::err("ERR wrong number of arguments for 'mset' command")
    );
    assert_protocol_error(&server, b"*5\r\n", "ERR Protocol error: invalid multibulk length");
}

#[test]
fn maxclients_refuses_the_extra_connection() {
    let server = Server::start(&["--maxclients", "2"]);
    let mut first = server.raw();
    let mut second = server.raw();
    assert_eq!(first.cmd(&["PING"]), Resp::simple("PONG"));
    assert_eq!(second.cmd(&["PING"]), Resp::simple("PONG"));
    let mut third = server.raw();
    let got = third.read_until_closed(Duration::from_secs(10));
    assert_eq!(String::from_utf8_lossy(&got), "-ERR max number of clients reached\r\n");
    let stats = first.cmd(&["INFO", "stats"]).text();
    assert_eq!(common::info_field(&stats, "rejected_connections"), Some("1".into()));
    // The two accepted clients are unaffected.
    assert_eq!(first.cmd(&["PING"]), Resp::simple("PONG"));
    assert_eq!(second.cmd(&["PING"]), Resp::simple("PONG"));
    // Once one leaves, a new client gets in.
    drop(first);
    wait_until(Duration::from_secs(10), "a freed client slot", || {
        let mut raw = server.raw();
        raw.send_cmd(&["PING"]);
        raw.try_read_reply() == Some(Resp::simple("PONG"))
    });
}

#[test]
fn idle_clients_are_closed_after_timeout() {
    let server = Server::start(&["--timeout", "1"]);
    let mut idle = server.raw();
    assert_eq!(idle.cmd(&["PING"]), Resp::simple("PONG"));
    let since = Instant::now();
    idle.assert_closed();
    let after = since.elapsed();
    assert!(after >= Duration::from_millis(900), "closed after only {after:?}");
    assert_alive(&server);
}

#[test]
fn client_query_buffer_limit_closes_the_connection_with_an_error() {
    const LIMIT: usize = 1024 * 1024;
    let server = Server::start(&["--client-query-buffer-limit", &LIMIT.to_string()]);
    // Under the limit: a complete 900 KB request is served.
    let mut raw = server.raw();
    let value = vec![b'x'; 900 * 1024];
    assert_eq!(raw.cmd(&args!["SET", "k", value]), Resp::ok());
    // An incomplete 2 MB bulk: exactly LIMIT + 1 bytes sent, so the server has
    // read everything we wrote when it gives up.
    let mut wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n".to_vec();
    wire.resize(LIMIT + 1, b'y');
    let mut raw = server.raw();
    raw.send(&wire);
    let got = raw.read_until_closed(Duration::from_secs(10));
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: query buffer limit exceeded\r\n"
    );
    // Nothing was written and the server still serves.
    let mut raw = server.raw();
    assert_eq!(raw.cmd(&["STRLEN", "k"]), Resp::int(900 * 1024));
}

/// Makes sure `Raw` itself notices a closed connection (the harness test the
/// others rely on).
#[test]
fn harness_sees_quit_close_the_connection() {
    let server = Server::start(&[]);
    let mut raw: Raw = server.raw();
    assert_eq!(raw.cmd(&["QUIT"]), Resp::ok());
    raw.assert_closed();
}
