//! Connection commands: PING, ECHO, QUIT, RESET, AUTH/HELLO with a
//! password, SELECT, CLIENT, and the unknown-command error.

mod common;

use std::time::Duration;

use common::{wrong_arity, Resp, Server};

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const HELLO_NOAUTH_PREFIX: &str =
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO ";

/// The `field=value` pairs of one CLIENT INFO / CLIENT LIST line.
fn client_fields(line: &str) -> Vec<(String, String)> {
    line.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field(line: &str, name: &str) -> String {
    client_fields(line)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

#[test]
fn ping_and_echo() {
    let (_server, mut raw) = common::start();
    raw.expect(&["PING"], Resp::simple("PONG"));
    raw.expect(&["PING", "hello world"], Resp::bulk("hello world"));
    raw.expect(&["PING", "a", "b"], wrong_arity("ping"));
    raw.expect(&["ECHO", "hi"], Resp::bulk("hi"));
    raw.expect(&["ECHO", ""], Resp::bulk(""));
    raw.expect(&["ECHO"], wrong_arity("echo"));
    raw.expect(&["ECHO", "a", "b"], wrong_arity("echo"));
}

#[test]
fn quit_replies_ok_then_closes() {
    let (server, mut raw) = common::start();
    // Commands pipelined after QUIT are not run.
    let mut wire = common::encode(&["SET", "before", "1"]);
    wire.extend(common::encode(&["QUIT"]));
    wire.extend(common::encode(&["SET", "after", "1"]));
    raw.send(&wire);
    assert_eq!(raw.read_reply(), Resp::ok());
    assert_eq!(raw.read_reply(), Resp::ok());
    raw.assert_closed();
    let mut raw = server.raw();
    raw.expect(&["EXISTS", "before"], Resp::int(1));
    raw.expect(&["EXISTS", "after"], Resp::int(0));
}

#[test]
fn reset_restores_a_fresh_connection() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SELECT", "1"], Resp::ok());
    raw.expect(&["SET", "k", "in-db-1"], Resp::ok());
    raw.expect(&["CLIENT", "SETNAME", "before-reset"], Resp::ok());
    let _ = raw.cmd(&["HELLO", "3"]);
    raw.send_cmd(&["RESET"]);
    assert_eq!(raw.read_reply_bytes(), b"+RESET\r\n");
    // Database 0, no name, RESP2 again.
    raw.send_cmd(&["GET", "k"]);
    assert_eq!(raw.read_reply_bytes(), b"$-1\r\n");
    raw.expect(&["CLIENT", "GETNAME"], Resp::Nil);
    raw.expect(&["RESET", "x"], wrong_arity("reset"));
}

#[test]
fn password_is_required_before_other_commands() {
    let server = Server::start(&["--requirepass", "secret"]);
    let mut raw = server.raw();
    raw.expect(&["GET", "k"], Resp::err(NOAUTH));
    raw.expect(&["PING"], Resp::err(NOAUTH));
    raw.expect(&["CLIENT", "ID"], Resp::err(NOAUTH));
    raw.expect(&["SELECT", "1"], Resp::err(NOAUTH));
    raw.expect(&["AUTH", "wrong"], Resp::err(WRONGPASS));
    raw.expect(&["AUTH", "default", "wrong"], Resp::err(WRONGPASS));
    raw.expect(&["AUTH", "nobody", "secret"], Resp::err(WRONGPASS));
    raw.expect(&["GET", "k"], Resp::err(NOAUTH));
    raw.expect(&["AUTH", "a", "b", "c"], Resp::err("ERR syntax error"));
    raw.expect(&["AUTH"], wrong_arity("auth"));
    // Unknown commands are reported as such even before AUTH.
    raw.expect(
        &["foo", "a"],
        Resp::err("ERR unknown command 'foo', with args beginning with: 'a' "),
    );
    raw.expect(&["AUTH", "secret"], Resp::ok());
    raw.expect(&["SET", "k", "v"], Resp::ok());
    raw.expect(&["GET", "k"], Resp::bulk("v"));

    let mut other = server.raw();
    other.expect(&["GET", "k"], Resp::err(NOAUTH));
    other.expect(&["AUTH", "default", "secret"], Resp::ok());
    other.expect(&["GET", "k"], Resp::bulk("v"));
    // RESET logs the connection out again.
    other.send_cmd(&["RESET"]);
    assert_eq!(other.read_reply(), Resp::simple("RESET"));
    other.expect(&["GET", "k"], Resp::err(NOAUTH));
    // QUIT works without AUTH.
    other.expect(&["QUIT"], Resp::ok());
    other.assert_closed();
}

#[test]
fn hello_with_a_password() {
    let server = Server::start(&["--requirepass", "secret"]);
    let mut raw = server.raw();
    for args in [&["HELLO"][..], &["HELLO", "3"], &["HELLO", "2"]] {
        let err = raw.cmd(args);
        assert!(err.as_error().starts_with(HELLO_NOAUTH_PREFIX), "{args:?} gave {err:?}");
    }
    raw.expect(&["HELLO", "3", "AUTH", "default", "wrong"], Resp::err(WRONGPASS));
    raw.expect(&["GET", "k"], Resp::err(NOAUTH));
    let hello = raw.cmd(&["HELLO", "3", "AUTH", "default", "secret"]);
    assert!(matches!(hello, Resp::Map(_)), "{hello:?}");
    assert_eq!(hello.get("proto"), Some(Resp::int(3)));
    raw.send_cmd(&["GET", "k"]);
    assert_eq!(raw.read_reply_bytes(), b"_\r\n");
    // HELLO with AUTH and SETNAME at once.
    let mut named = server.raw();
    let hello = named.cmd(&["HELLO", "2", "AUTH", "default", "secret", "SETNAME", "myconn"]);
    assert_eq!(hello.get("proto"), Some(Resp::int(2)));
    named.expect(&["CLIENT", "GETNAME"], Resp::bulk("myconn"));
}

#[test]
fn hello_options() {
    let (_server, mut raw) = common::start();
    let hello = raw.cmd(&["HELLO", "3", "SETNAME", "myname"]);
    assert_eq!(hello.get("proto"), Some(Resp::int(3)));
    raw.expect(&["CLIENT", "GETNAME"], Resp::bulk("myname"));
    raw.expect(
        &["HELLO", "2", "AUTH"],
        Resp::err("ERR Syntax error in HELLO option 'AUTH'"),
    );
    raw.expect(
        &["HELLO", "2", "SETNAME"],
        Resp::err("ERR Syntax error in HELLO option 'SETNAME'"),
    );
    // Without a password, the default user takes any password.
    let hello = raw.cmd(&["HELLO", "2", "AUTH", "default", "whatever"]);
    assert_eq!(hello.get("proto"), Some(Resp::int(2)));
    // HELLO with no version keeps the current protocol.
    let hello = raw.cmd(&["HELLO"]);
    assert!(matches!(hello, Resp::Array(_)), "{hello:?}");
    assert_eq!(hello.get("proto"), Some(Resp::int(2)));
}

#[test]
fn auth_without_a_configured_password() {
    let (_server, mut raw) = common::start();
    raw.expect(
        &["AUTH", "x"],
        Resp::err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"),
    );
    raw.expect(&["AUTH", "default", "x"], Resp::ok());
    raw.expect(&["AUTH", "foo", "bar"], Resp::err(WRONGPASS));
    raw.expect(&["PING"], Resp::simple("PONG"));
}

#[test]
fn shutdown_needs_auth() {
    let mut server = Server::start(&["--requirepass", "secret"]);
    let mut raw = server.raw();
    for args in [&["SHUTDOWN"][..], &["SHUTDOWN", "NOSAVE"]] {
        raw.send_cmd(args);
        assert_eq!(
            raw.try_read_reply(),
            Some(Resp::err(NOAUTH)),
            "{args:?} before AUTH (None: the connection was closed)"
        );
    }
    assert!(server.is_running(), "an unauthenticated client stopped the server");
    let mut other = server.raw();
    other.expect(&["AUTH", "secret"], Resp::ok());
    other.expect(&["PING"], Resp::simple("PONG"));
}

#[test]
fn unauthenticated_requests_are_size_limited() {
    let server = Server::start(&["--requirepass", "secret"]);
    let mut raw = server.raw();
    raw.send(b"*11\r\n");
    assert_eq!(
        raw.read_reply(),
        Resp::err("ERR Protocol error: unauthenticated multibulk length")
    );
    raw.assert_closed();
    let mut raw = server.raw();
    raw.send(b"*2\r\n$4\r\nAUTH\r\n$20000\r\n");
    assert_eq!(
        raw.read_reply(),
        Resp::err("ERR Protocol error: unauthenticated bulk length")
    );
    raw.assert_closed();
}

#[test]
fn arity_is_checked_before_auth() {
    let server = Server::start(&["--requirepass", "secret"]);
    let mut raw = server.raw();
    raw.expect(&["GET"], wrong_arity("get"));
    raw.expect(&["GET", "a", "b"], wrong_arity("get"));
}

#[test]
fn select_namespaces_keys() {
    let (server, mut raw) = common::start();
    for db in 0..16 {
        raw.expect(&["SELECT", &db.to_string()], Resp::ok());
        raw.expect(&["SET", "shared", &format!("db{db}")], Resp::ok());
        raw.expect(&["SET", &format!("only-in-{db}"), "1"], Resp::ok());
    }
    for db in 0..16 {
        raw.expect(&["SELECT", &db.to_string()], Resp::ok());
        raw.expect(&["GET", "shared"], Resp::bulk(format!("db{db}")));
        raw.expect(&["DBSIZE"], Resp::int(2));
        let other = (db + 1) % 16;
        raw.expect(&["EXISTS", &format!("only-in-{other}")], Resp::int(0));
    }
    // Deleting in one database leaves the others alone.
    raw.expect(&["SELECT", "1"], Resp::ok());
    raw.expect(&["DEL", "shared"], Resp::int(1));
    raw.expect(&["SELECT", "0"], Resp::ok());
    raw.expect(&["GET", "shared"], Resp::bulk("db0"));
    // Each connection has its own selected database.
    let mut other = server.raw();
    other.expect(&["GET", "shared"], Resp::bulk("db0"));
}

#[test]
fn select_errors() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SELECT", "16"], Resp::err("ERR DB index is out of range"));
    raw.expect(&["SELECT", "-1"], Resp::err("ERR DB index is out of range"));
    raw.expect(
        &["SELECT", "abc"],
        Resp::err("ERR value is not an integer or out of range"),
    );
    raw.expect(&["SELECT"], wrong_arity("select"));
    raw.expect(&["SELECT", "0", "1"], wrong_arity("select"));
}

#[test]
fn databases_flag_sets_the_select_range() {
    let server = Server::start(&["--databases", "4"]);
    let mut raw = server.raw();
    raw.expect(&["SELECT", "3"], Resp::ok());
    raw.expect(&["SELECT", "4"], Resp::err("ERR DB index is out of range"));
    raw.expect(&["CONFIG", "GET", "databases"], Resp::bulks(&["databases", "4"]));
}

#[test]
fn client_id_and_names() {
    let (server, mut raw) = common::start();
    let id = raw.cmd(&["CLIENT", "ID"]).as_int();
    assert!(id > 0);
    raw.expect(&["CLIENT", "ID"], Resp::int(id));
    let other_id = server.raw().cmd(&["CLIENT", "ID"]).as_int();
    assert!(other_id > id, "ids increase: {id} then {other_id}");

    raw.expect(&["CLIENT", "GETNAME"], Resp::Nil);
    raw.expect(&["CLIENT", "SETNAME", "myname"], Resp::ok());
    raw.expect(&["CLIENT", "GETNAME"], Resp::bulk("myname"));
    raw.expect(
        &["CLIENT", "SETNAME", "a b"],
        Resp::err("ERR Client names cannot contain spaces, newlines or special characters."),
    );
    raw.expect(&["CLIENT", "GETNAME"], Resp::bulk("myname"));
    raw.expect(&["CLIENT", "SETNAME", ""], Resp::ok());
    raw.expect(&["CLIENT", "GETNAME"], Resp::Nil);
    raw.expect(&["client", "id", "x"], wrong_arity("client|id"));
    raw.expect(&["CLIENT", "GETNAME", "x"], wrong_arity("client|getname"));
    raw.expect(&["CLIENT", "SETNAME"], wrong_arity("client|setname"));
    raw.expect(&["CLIENT"], wrong_arity("client"));
    raw.expect(
        &["CLIENT", "FOO"],
        Resp::err("ERR unknown subcommand 'FOO'. Try CLIENT HELP."),
    );
}

#[test]
fn client_setinfo_and_info() {
    let (_server, mut raw) = common::start();
    let id = raw.cmd(&["CLIENT", "ID"]).as_int();
    raw.expect(&["CLIENT", "SETNAME", "infoconn"], Resp::ok());
    raw.expect(&["CLIENT", "SETINFO", "LIB-NAME", "mylib"], Resp::ok());
    raw.expect(&["CLIENT", "SETINFO", "lib-ver", "1.2.3"], Resp::ok());
    raw.expect(&["SELECT", "3"], Resp::ok());
    let info = raw.cmd(&["CLIENT", "INFO"]).text();
    assert_eq!(info.lines().count(), 1, "{info:?}");
    assert_eq!(field(&info, "id"), id.to_string());
    assert_eq!(field(&info, "name"), "infoconn");
    assert_eq!(field(&info, "db"), "3");
    assert_eq!(field(&info, "lib-name"), "mylib");
    assert_eq!(field(&info, "lib-ver"), "1.2.3");
    assert_eq!(field(&info, "resp"), "2");
    let addr = field(&info, "addr");
    assert_eq!(addr, raw.stream().local_addr().expect("local addr").to_string());
    assert!(
        raw.cmd(&["CLIENT", "SETINFO", "FOO", "x"])
            .as_error()
            .starts_with("ERR "),
        "unknown SETINFO attribute accepted"
    );
    raw.expect(&["CLIENT", "SETINFO", "LIB-NAME"], wrong_arity("client|setinfo"));
}

#[test]
fn client_info_names_the_subcommand() {
    let (_server, mut raw) = common::start();
    let info = raw.cmd(&["CLIENT", "INFO"]).text();
    assert_eq!(field(&info, "cmd"), "client|info");
}

#[test]
fn client_list_types() {
    let (_server, mut raw) = common::start();
    let normal = raw.cmd(&["CLIENT", "LIST", "TYPE", "normal"]).text();
    assert_eq!(normal.lines().count(), 1, "{normal:?}");
    for kind in ["master", "replica", "slave", "pubsub"] {
        raw.expect(&["CLIENT", "LIST", "TYPE", kind], Resp::bulk(""));
    }
    raw.expect(
        &["CLIENT", "LIST", "TYPE", "bogus"],
        Resp::err("ERR Unknown client type 'bogus'"),
    );
}

#[test]
fn client_list() {
    let (server, mut raw) = common::start();
    let id = raw.cmd(&["CLIENT", "ID"]).as_int();
    raw.expect(&["CLIENT", "SETNAME", "first"], Resp::ok());
    let mut second = server.raw();
    let second_id = second.cmd(&["CLIENT", "ID"]).as_int();
    second.expect(&["CLIENT", "SETNAME", "second"], Resp::ok());

    let list = raw.cmd(&["CLIENT", "LIST"]).text();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list:?}");
    assert_eq!(field(lines[0], "id"), id.to_string());
    assert_eq!(field(lines[0], "name"), "first");
    assert_eq!(field(lines[1], "id"), second_id.to_string());
    assert_eq!(field(lines[1], "name"), "second");

    let only = raw.cmd(&["CLIENT", "LIST", "ID", &second_id.to_string()]).text();
    assert_eq!(only.lines().count(), 1);
    assert_eq!(field(&only, "name"), "second");
    let typed = raw.cmd(&["CLIENT", "LIST", "TYPE", "normal"]).text();
    assert_eq!(typed.lines().count(), 2);
    raw.expect(&["CLIENT", "LIST", "ID", "999999"], Resp::bulk(""));

    // A closed connection leaves the list.
    drop(second);
    common::wait_until(Duration::from_secs(5), "the closed client to go", || {
        raw.cmd(&["CLIENT", "LIST"]).text().lines().count() == 1
    });
}

#[test]
fn client_list_idle_counts_from_the_last_request() {
    let (server, mut raw) = common::start();
    let mut quiet = server.raw();
    let quiet_id = quiet.cmd(&["CLIENT", "ID"]).as_int().to_string();
    let quiet_line = |raw: &mut common::Raw| raw.cmd(&["CLIENT", "LIST", "ID", &quiet_id]).text();
    common::wait_until(Duration::from_secs(5), "the quiet client to idle a second", || {
        field(&quiet_line(&mut raw), "idle") != "0"
    });
    quiet.expect(&["PING"], Resp::simple("PONG"));
    let line = quiet_line(&mut raw);
    assert_eq!(field(&line, "idle"), "0", "{line:?}");
    assert_eq!(field(&line, "cmd"), "ping", "{line:?}");
}

#[test]
fn unknown_command() {
    let (_server, mut raw) = common::start();
    raw.expect(
        &["foo", "a", "b"],
        Resp::err("ERR unknown command 'foo', with args beginning with: 'a' 'b' "),
    );
    raw.expect(
        &["foo"],
        Resp::err("ERR unknown command 'foo', with args beginning with: "),
    );
    raw.expect(
        &["NOSUCH", "x y"],
        Resp::err("ERR unknown command 'NOSUCH', with args beginning with: 'x y' "),
    );
    // Still usable afterwards.
    raw.expect(&["PING"], Resp::simple("PONG"));
}
