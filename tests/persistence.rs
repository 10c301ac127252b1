//! Durability: what survives a clean stop, a SIGTERM and a `kill -9`, with
//! each durable engine (disk and log); and the memory engine forgetting
//! everything (as documented).

mod common;

use std::thread;
use std::time::Duration;

use common::{wait_until, Raw, Resp, Server};

/// Writes a small data set over several databases, with binary keys and values.
fn write_sample(raw: &mut Raw) {
    raw.expect(&["MSET", "a", "1", "b", "2", "c", "3"], Resp::ok());
    raw.expect(&args!["SET", b"bin\x00\xff\r\n", b"\x00\x01\x02\xfe\xff"], Resp::ok());
    raw.expect(&["SELECT", "7"], Resp::ok());
    raw.expect(&["SET", "a", "in-db-7"], Resp::ok());
    raw.expect(&["SELECT", "0"], Resp::ok());
}

/// Checks the data set of [`write_sample`].
#[track_caller]
fn assert_sample(raw: &mut Raw) {
    raw.expect(&["MGET", "a", "b", "c"], Resp::bulks(&["1", "2", "3"]));
    raw.expect(&args!["GET", b"bin\x00\xff\r\n"], Resp::bulk(b"\x00\x01\x02\xfe\xff"));
    raw.expect(&["DBSIZE"], Resp::int(4));
    raw.expect(&["SELECT", "7"], Resp::ok());
    raw.expect(&["GET", "a"], Resp::bulk("in-db-7"));
    raw.expect(&["DBSIZE"], Resp::int(1));
    raw.expect(&["SELECT", "0"], Resp::ok());
}

/// The engines whose data survives a restart.
const DURABLE: [&str; 2] = ["disk", "log"];

/// Writes the sample, stops the server with `stop`, restarts it, checks the
/// sample; with each durable engine.
fn survives(stop: impl Fn(&mut Server)) {
    for engine in DURABLE {
        let mut server = Server::start(&["--engine", engine]);
        write_sample(&mut server.raw());
        stop(&mut server);
        server.restart();
        assert_sample(&mut server.raw());
    }
}

#[test]
fn data_survives_shutdown() {
    survives(Server::shutdown);
}

#[test]
fn data_survives_sigterm() {
    survives(Server::terminate);
}

#[test]
fn data_survives_sigint() {
    survives(Server::interrupt);
}

#[test]
fn ttls_survive_restart() {
    for engine in DURABLE {
        ttls_survive_restart_with(engine);
    }
}

fn ttls_survive_restart_with(engine: &str) {
    let mut server = Server::start(&["--engine", engine]);
    let mut raw = server.raw();
    raw.expect(&["SET", "long", "v", "EX", "1000"], Resp::ok());
    raw.expect(&["SET", "short", "v", "PX", "400"], Resp::ok());
    raw.expect(&["SET", "persisted", "v", "EX", "1000"], Resp::ok());
    raw.expect(&["PERSIST", "persisted"], Resp::int(1));
    let long_at = raw.cmd(&["PEXPIRETIME", "long"]).as_int();
    let short_at = raw.cmd(&["PEXPIRETIME", "short"]).as_int();
    drop(raw);
    server.stop();
    server.restart();
    let mut raw = server.raw();
    raw.expect(&["PEXPIRETIME", "long"], Resp::int(long_at));
    let ttl = raw.cmd(&["TTL", "long"]).as_int();
    assert!((900..=1000).contains(&ttl), "TTL long = {ttl}");
    raw.expect(&["TTL", "persisted"], Resp::int(-1));
    // The short key expires at the same absolute time, restart or not.
    wait_until(Duration::from_secs(10), "short to expire", || {
        raw.cmd(&["EXISTS", "short"]) == Resp::int(0)
    });
    assert!(common::unix_ms() >= short_at, "short expired before its time");
    raw.expect(&["GET", "long"], Resp::bulk("v"));
}

/// SETs `count` keys `prefix:i` = `i` over `connections` parallel
/// connections, one acknowledged SET at a time.
fn write_acknowledged(server: &Server, prefix: &str, count: usize, connections: usize) {
    let addr = server.addr();
    let per = count / connections;
    let writers: Vec<_> = (0..connections)
        .map(|c| {
            let prefix = prefix.to_string();
            thread::spawn(move || {
                let mut raw = Raw::connect(addr);
                for i in c * per..(c + 1) * per {
                    let key = format!("{prefix}:{i}");
                    raw.expect(&["SET", key.as_str(), &i.to_string()], Resp::ok());
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer thread");
    }
}

/// Checks every key of [`write_acknowledged`] with MGET in batches.
#[track_caller]
fn assert_all_present(raw: &mut Raw, prefix: &str, count: usize) {
    for start in (0..count).step_by(500) {
        let end = (start + 500).min(count);
        let mut mget = vec!["MGET".to_string()];
        mget.extend((start..end).map(|i| format!("{prefix}:{i}")));
        let reply = raw.cmd(&mget);
        for (i, value) in (start..end).zip(reply.as_array()) {
            assert_eq!(*value, Resp::bulk(i.to_string()), "{prefix}:{i}");
        }
    }
    raw.expect(&["DBSIZE"], Resp::int(count as i64));
}

#[test]
fn fsync_always_keeps_every_acknowledged_write_through_kill_9() {
    for engine in DURABLE {
        let mut server = Server::start(&["--engine", engine, "--fsync", "always"]);
        write_acknowledged(&server, "key", 2000, 4);
        server.kill9();
        server.restart();
        assert_all_present(&mut server.raw(), "key", 2000);
    }
}

#[test]
fn fsync_everysec_and_no_survive_kill_9_of_the_process() {
    // Documented: in these modes every write reaches the OS before the reply,
    // so killing the process (not the machine) loses nothing.
    for engine in DURABLE {
        for mode in ["everysec", "no"] {
            let mut server = Server::start(&["--engine", engine, "--fsync", mode]);
            write_acknowledged(&server, mode, 400, 2);
            server.kill9();
            server.restart();
            assert_all_present(&mut server.raw(), mode, 400);
        }
    }
}

#[test]
fn memory_engine_forgets_everything_on_restart() {
    let mut server = Server::start(&["--engine", "memory"]);
    let mut raw = server.raw();
    write_sample(&mut raw);
    assert_sample(&mut raw);
    drop(raw);
    server.stop();
    server.restart();
    let mut raw = server.raw();
    raw.expect(&["DBSIZE"], Resp::int(0));
    raw.expect(&["GET", "a"], Resp::Nil);
    raw.expect(&["SELECT", "7"], Resp::ok());
    raw.expect(&["DBSIZE"], Resp::int(0));
}

#[test]
fn deletes_stay_deleted_after_restart() {
    for engine in DURABLE {
        deletes_stay_deleted_after_restart_with(engine);
    }
}

fn deletes_stay_deleted_after_restart_with(engine: &str) {
    let mut server = Server::start(&["--engine", engine]);
    let mut raw = server.raw();
    raw.expect(
        &["MSET", "gone", "1", "kept", "2", "renamed", "3", "expired", "4"],
        Resp::ok(),
    );
    raw.expect(&["DEL", "gone"], Resp::int(1));
    raw.expect(&["RENAME", "renamed", "target"], Resp::ok());
    raw.expect(&["PEXPIRE", "expired", "0"], Resp::int(1));
    raw.expect(&["SELECT", "3"], Resp::ok());
    raw.expect(&["SET", "flushed", "1"], Resp::ok());
    raw.expect(&["FLUSHDB"], Resp::ok());
    drop(raw);
    server.stop();
    server.restart();
    let mut raw = server.raw();
    raw.expect(&["EXISTS", "gone", "renamed", "expired"], Resp::int(0));
    raw.expect(&["MGET", "kept", "target"], Resp::bulks(&["2", "3"]));
    raw.expect(&["DBSIZE"], Resp::int(2));
    raw.expect(&["SELECT", "3"], Resp::ok());
    raw.expect(&["DBSIZE"], Resp::int(0));
    // And after a kill -9 as well.
    raw.expect(&["SELECT", "0"], Resp::ok());
    raw.expect(&["DEL", "kept"], Resp::int(1));
    drop(raw);
    server.kill9();
    server.restart();
    let mut raw = server.raw();
    raw.expect(&["EXISTS", "kept"], Resp::int(0));
    raw.expect(&["KEYS", "*"], Resp::bulks(&["target"]));
}

#[test]
fn writes_after_restart_supersede_older_values() {
    for engine in DURABLE {
        writes_after_restart_supersede_older_values_with(engine);
    }
}

fn writes_after_restart_supersede_older_values_with(engine: &str) {
    // Every restart must keep causality: a write after it replaces what was
    // written before, rather than becoming a concurrent sibling.
    let mut server = Server::start(&["--engine", engine]);
    let mut raw = server.raw();
    raw.expect(&["SET", "k", "before"], Resp::ok());
    raw.expect(&["SET", "n", "10"], Resp::ok());
    drop(raw);
    server.stop();
    server.restart();
    let mut raw = server.raw();
    raw.expect(&["SET", "k", "after-stop"], Resp::ok());
    raw.expect(&["GET", "k"], Resp::bulk("after-stop"));
    raw.expect(&["INCR", "n"], Resp::int(11));
    drop(raw);
    server.kill9();
    server.restart();
    let mut raw = server.raw();
    raw.expect(&["GET", "k"], Resp::bulk("after-stop"));
    raw.expect(&["SET", "k", "after-kill"], Resp::ok());
    raw.expect(&["GET", "k"], Resp::bulk("after-kill"));
    raw.expect(&["APPEND", "k", "!"], Resp::int(11));
    raw.expect(&["INCR", "n"], Resp::int(12));
    drop(raw);
    server.stop();
    server.restart();
    let mut raw = server.raw();
    raw.expect(&["GET", "k"], Resp::bulk("after-kill!"));
    raw.expect(&["GET", "n"], Resp::bulk("12"));
}

/// The journal files of the disk engine's write buffer still to be ingested.
fn buffer_journals(server: &Server) -> Vec<String> {
    let dir = server.data_dir().join("store").join("writes");
    let mut logs: Vec<String> = std::fs::read_dir(&dir)
        .expect("the write buffer's journal folder")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".log"))
        .collect();
    logs.sort();
    logs
}

#[test]
fn the_disk_engine_keeps_every_write_through_kill_9_while_it_ingests_its_buffer() {
    // A 1 MiB write buffer: the writes below (about 2.8 MiB of journal) are sealed and ingested into fjall twice
    // or more, overwrites and deletes landing in later buffers than the values they replace.
    let mut server = Server::start(&["--engine", "disk", "--fsync", "everysec", "--memtable-mb", "1"]);
    let keys: usize = 1500;
    let value = |round: usize, i: usize| format!("{round}:{i}:{}", "x".repeat(1000));
    let last_round = |i: usize| (0..3).rev().find(|&round| i.is_multiple_of(round + 1)).unwrap_or(0);
    let mut raw = server.raw();
    for round in 0..3 {
        for i in (0..keys).filter(|&i| i.is_multiple_of(round + 1)) {
            raw.expect(&["SET", &format!("k{i}"), &value(round, i)], Resp::ok());
        }
    }
    for i in (0..keys).step_by(7) {
        raw.expect(&["DEL", &format!("k{i}")], Resp::int(1));
    }
    wait_until(Duration::from_secs(30), "an ingestion", || {
        buffer_journals(&server)
            .first()
            .is_some_and(|first| first != &format!("{:020}.log", 1))
    });
    server.kill9();
    server.restart();
    let mut raw = server.raw();
    for i in 0..keys {
        let expected = match i % 7 {
            0 => Resp::Nil,
            _ => Resp::bulk(value(last_round(i), i)),
        };
        raw.expect(&["GET", &format!("k{i}")], expected);
    }
    raw.expect(&["DBSIZE"], Resp::int((keys - keys.div_ceil(7)) as i64));
}
