//! A real client library against ringkv: the `redis` crate, sync and async
//! (tokio multiplexed), pipelines, RESP3, AUTH and database selection by URL.

mod common;

use redis::{AsyncCommands, AsyncConnectionConfig, Commands, Value};

use common::{Resp, Server};

#[test]
fn sync_connection_basics() {
    let server = Server::start(&[]);
    let mut con = server.conn();
    let () = con.set("k", "v").expect("SET");
    let got: String = con.get("k").expect("GET");
    assert_eq!(got, "v");
    let missing: Option<String> = con.get("missing").expect("GET missing");
    assert_eq!(missing, None);
    let () = con.mset(&[("a", 1), ("b", 2), ("c", 3)]).expect("MSET");
    let values: Vec<Option<i64>> = con.mget(&["a", "b", "nope", "c"]).expect("MGET");
    assert_eq!(values, vec![Some(1), Some(2), None, Some(3)]);
    let n: i64 = con.incr("a", 41).expect("INCRBY");
    assert_eq!(n, 42);
    let exists: bool = con.exists("b").expect("EXISTS");
    assert!(exists);
    let deleted: i64 = con.del(&["b", "c", "nope"]).expect("DEL");
    assert_eq!(deleted, 2);
    let () = con.set_ex("t", "v", 100).expect("SETEX");
    let ttl: i64 = con.ttl("t").expect("TTL");
    assert!((99..=100).contains(&ttl), "TTL {ttl}");
    let bytes: Vec<u8> = vec![0, 255, 13, 10, 0];
    let () = con.set(&bytes[..], &bytes[..]).expect("binary SET");
    let back: Vec<u8> = con.get(&bytes[..]).expect("binary GET");
    assert_eq!(back, bytes);
}

#[test]
fn sync_errors_are_reported() {
    let server = Server::start(&[]);
    let mut con = server.conn();
    let () = con.set("s", "abc").expect("SET");
    let err = con.incr::<_, _, i64>("s", 1).expect_err("INCR of a non-integer");
    assert_eq!(err.code(), Some("ERR"), "{err}");
    assert!(
        err.to_string().contains("value is not an integer or out of range"),
        "{err}"
    );
    let err = redis::cmd("NOSUCHCMD")
        .query::<Value>(&mut con)
        .expect_err("unknown command");
    assert!(err.to_string().contains("unknown command"), "{err}");
    // The connection is still usable.
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");
}

#[test]
fn sync_pipeline_of_1000_commands() {
    let server = Server::start(&[]);
    let mut con = server.conn();
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.set(format!("p:{i}"), i).ignore();
        pipe.get(format!("p:{i}"));
    }
    let values: Vec<i64> = pipe.query(&mut con).expect("pipeline");
    assert_eq!(values, (0..500).collect::<Vec<i64>>());
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    assert_eq!(size, 500);
}

#[tokio::test]
async fn async_multiplexed_connection() {
    let server = Server::start(&[]);
    let client = server.client();
    // The crate's default 500 ms response timeout is too tight for a debug
    // build on a busy 2-core machine; use the harness's reply timeout.
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(common::REPLY_TIMEOUT));
    let mut con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("async connect");
    let () = con.set("k", "v").await.expect("SET");
    let got: String = con.get("k").await.expect("GET");
    assert_eq!(got, "v");
    let missing: Option<String> = con.get("missing").await.expect("GET");
    assert_eq!(missing, None);

    // Many tasks sharing one multiplexed connection.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let mut con = con.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    let _: i64 = con.incr("counter", 1).await.expect("INCR");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let total: i64 = con.get("counter").await.expect("GET counter");
    assert_eq!(total, 1000);

    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("SET").arg(format!("a:{i}")).arg(i).ignore();
    }
    pipe.cmd("DBSIZE");
    let (size,): (i64,) = pipe.query_async(&mut con).await.expect("pipeline");
    assert_eq!(size, 1002);
    let sample: Vec<i64> = con.mget(&["a:0", "a:500", "a:999"]).await.expect("MGET");
    assert_eq!(sample, vec![0, 500, 999]);
}

#[test]
fn resp3_connection() {
    let server = Server::start(&[]);
    let url = format!("redis://{}/?protocol=resp3", server.addr());
    let client = redis::Client::open(url).expect("resp3 url");
    let mut con = client.get_connection().expect("resp3 connect");
    let info: Value = redis::cmd("CLIENT").arg("INFO").query(&mut con).expect("CLIENT INFO");
    let text = match info {
        Value::VerbatimString { text, .. } => text,
        other => panic!("CLIENT INFO in RESP3 gave {other:?}"),
    };
    assert!(text.contains(" resp=3 "), "{text}");
    let missing: Value = redis::cmd("GET").arg("missing").query(&mut con).expect("GET");
    assert_eq!(missing, Value::Nil);
    let config: Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("timeout")
        .query(&mut con)
        .expect("CONFIG GET");
    assert_eq!(
        config,
        Value::Map(vec![(
            Value::BulkString(b"timeout".to_vec()),
            Value::BulkString(b"0".to_vec())
        )])
    );
    let () = con.set("k", "v").expect("SET");
    let got: String = con.get("k").expect("GET");
    assert_eq!(got, "v");
}

#[test]
fn password_and_database_in_the_url() {
    let server = Server::start(&["--requirepass", "secret"]);
    // server.client() puts the password in the URL.
    let mut con = server.conn();
    let () = con.set("k", "db0").expect("SET");
    let db3 = redis::Client::open(format!("redis://:secret@{}/3", server.addr())).expect("url");
    let mut con3 = db3.get_connection().expect("connect to db 3");
    let () = con3.set("k", "db3").expect("SET in db 3");
    let got: String = con.get("k").expect("GET");
    assert_eq!(got, "db0");
    let mut raw = server.raw();
    raw.expect(&["AUTH", "secret"], Resp::ok());
    raw.expect(&["SELECT", "3"], Resp::ok());
    raw.expect(&["GET", "k"], Resp::bulk("db3"));

    let wrong = redis::Client::open(format!("redis://:wrong@{}/", server.addr())).expect("url");
    let err = wrong.get_connection().err().expect("a wrong password must not connect");
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");
}
