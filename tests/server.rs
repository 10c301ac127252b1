//! Server commands: INFO, CONFIG, COMMAND, DBSIZE, FLUSHDB/FLUSHALL, TIME,
//! SHUTDOWN.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{info_field, ready_addr, wrong_arity, Raw, Resp, Server};

/// CONFIG GET's reply as (name, value) strings, sorted by name.
fn config_pairs(reply: &Resp) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = reply.pairs().into_iter().map(|(k, v)| (k.text(), v.text())).collect();
    pairs.sort();
    pairs
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_string(), value.to_string())
}

#[test]
fn info_sections() {
    let (server, mut raw) = common::start();
    let info = raw.cmd(&["INFO"]).text();
    assert!(info.contains("# Server\r\n"), "{info}");
    assert!(info.contains("# Keyspace"), "{info}");
    let version = info_field(&info, "redis_version").expect("redis_version");
    assert!(version.starts_with("7."), "redis_version:{version}");
    let ringkv = info_field(&info, "ringkv_version").expect("ringkv_version");
    assert_eq!(ringkv, env!("CARGO_PKG_VERSION"));
    assert_eq!(info_field(&info, "tcp_port"), Some(server.port().to_string()));
    assert_eq!(info_field(&info, "connected_clients"), Some("1".into()));

    let only = raw.cmd(&["INFO", "keyspace"]).text();
    assert!(only.starts_with("# Keyspace"), "{only}");
    assert!(!only.contains("# Server"), "{only}");
    let server_only = raw.cmd(&["INFO", "server"]).text();
    assert!(server_only.contains("redis_version:"), "{server_only}");
    assert!(!server_only.contains("# Keyspace"), "{server_only}");
    let two = raw.cmd(&["INFO", "server", "clients"]).text();
    assert!(two.contains("# Server") && two.contains("# Clients"), "{two}");
    assert!(!two.contains("# Keyspace"), "{two}");

    // RESP3 sends INFO as a verbatim string.
    let _ = raw.cmd(&["HELLO", "3"]);
    match raw.cmd(&["INFO", "server"]) {
        Resp::Verbatim(format, text) => {
            assert_eq!(format, "txt");
            assert!(String::from_utf8_lossy(&text).contains("redis_version:"));
        }
        other => panic!("INFO in RESP3 gave {other:?}"),
    }
}

#[test]
fn info_keyspace_counts_keys_per_database() {
    let (_server, mut raw) = common::start();
    let keyspace = raw.cmd(&["INFO", "keyspace"]).text();
    assert!(!keyspace.contains("db0:"), "{keyspace}");
    raw.expect(&["MSET", "a", "1", "b", "2", "c", "3"], Resp::ok());
    raw.expect(&["EXPIRE", "a", "100"], Resp::int(1));
    raw.expect(&["SELECT", "5"], Resp::ok());
    raw.expect(&["SET", "x", "1"], Resp::ok());
    let keyspace = raw.cmd(&["INFO", "keyspace"]).text();
    let db0 = info_field(&keyspace, "db0").expect("db0 line");
    assert!(db0.starts_with("keys=3,expires=1,"), "db0:{db0}");
    let db5 = info_field(&keyspace, "db5").expect("db5 line");
    assert!(db5.starts_with("keys=1,expires=0,"), "db5:{db5}");
    assert!(info_field(&keyspace, "db1").is_none(), "{keyspace}");
}

#[test]
fn info_stats_count_hits_and_misses() {
    let (_server, mut raw) = common::start();
    raw.expect(&["CONFIG", "RESETSTAT"], Resp::ok());
    raw.expect(&["SET", "k", "v"], Resp::ok());
    raw.expect(&["GET", "k"], Resp::bulk("v"));
    raw.expect(&["GET", "k"], Resp::bulk("v"));
    raw.expect(&["GET", "nokey"], Resp::Nil);
    let stats = raw.cmd(&["INFO", "stats"]).text();
    assert_eq!(info_field(&stats, "keyspace_hits"), Some("2".into()));
    assert_eq!(info_field(&stats, "keyspace_misses"), Some("1".into()));
}

#[test]
fn info_of_unknown_section_is_empty() {
    let (_server, mut raw) = common::start();
    raw.expect(&["INFO", "nosuchsection"], Resp::bulk(""));
}

#[test]
fn config_get() {
    let (_server, mut raw) = common::start();
    raw.expect(&["CONFIG", "GET", "save"], Resp::bulks(&["save", ""]));
    raw.expect(&["CONFIG", "GET", "appendonly"], Resp::bulks(&["appendonly", "yes"]));
    raw.expect(&["CONFIG", "GET", "timeout"], Resp::bulks(&["timeout", "0"]));
    let max = config_pairs(&raw.cmd(&["CONFIG", "GET", "max*"]));
    assert!(max.contains(&pair("maxclients", "10000")), "{max:?}");
    assert!(max.contains(&pair("maxmemory", "0")), "{max:?}");
    assert!(max.iter().all(|(name, _)| name.starts_with("max")), "{max:?}");
    let two = config_pairs(&raw.cmd(&["CONFIG", "GET", "timeout", "databases"]));
    assert_eq!(two, vec![pair("databases", "16"), pair("timeout", "0")]);
    raw.expect(&["CONFIG", "GET", "nosuch"], Resp::Array(vec![]));
    raw.expect(&["CONFIG", "GET"], wrong_arity("config|get"));
    raw.expect(&["CONFIG"], wrong_arity("config"));
    raw.expect(
        &["CONFIG", "FOO"],
        Resp::err("ERR unknown subcommand 'FOO'. Try CONFIG HELP."),
    );
}

#[test]
fn config_get_reflects_the_command_line() {
    let server = Server::start(&["--maxclients", "50", "--engine", "memory", "--timeout", "7"]);
    let mut raw = server.raw();
    raw.expect(&["CONFIG", "GET", "maxclients"], Resp::bulks(&["maxclients", "50"]));
    raw.expect(&["CONFIG", "GET", "appendonly"], Resp::bulks(&["appendonly", "no"]));
    raw.expect(&["CONFIG", "GET", "timeout"], Resp::bulks(&["timeout", "7"]));
    let port = server.port().to_string();
    raw.expect(&["CONFIG", "GET", "port"], Resp::bulks(&["port", &port]));
}

/// Linux's numbers for the scheduling policies the tests look for.
#[cfg(target_os = "linux")]
const SCHED_OTHER: u32 = 0;
#[cfg(target_os = "linux")]
const SCHED_BATCH: u32 = 3;

/// The scheduling policy (field 41 of `/proc/PID/task/TID/stat`) of each thread of `pid`; a thread that ended
/// while they were listed is left out.
#[cfg(target_os = "linux")]
fn thread_policies(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list threads");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .map(|stat| {
            // Fields 3 onwards follow the command name's closing parenthesis.
            let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
            after_name
                .split(' ')
                .nth(41 - 3)
                .expect("policy field")
                .parse()
                .expect("number")
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn cpu_policy_batch_schedules_every_thread_as_batch() {
    let batch = Server::start(&["--cpu-policy", "batch"]);
    batch.raw().expect(&["SET", "k", "v"], Resp::ok());
    let policies = thread_policies(batch.pid());
    assert!(policies.len() > 1, "{policies:?}");
    assert!(policies.iter().all(|&p| p == SCHED_BATCH), "{policies:?}");
    let normal = Server::start(&[]);
    let policies = thread_policies(normal.pid());
    assert!(policies.iter().all(|&p| p == SCHED_OTHER), "{policies:?}");
}

/// The time slice of each thread of `pid`, in ns; a thread that ended while they were listed is left out.
#[cfg(target_os = "linux")]
fn thread_slices(pid: u32) -> Vec<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list threads");
    tasks
        .filter_map(|task| task.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(|tid| ringkv::sched::slice_ns(tid).ok())
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn cpu_slice_sets_every_threads_time_slice() {
    let short = Server::start(&["--cpu-policy", "batch", "--cpu-slice-us", "300"]);
    short.raw().expect(&["SET", "k", "v"], Resp::ok());
    if short.log().contains("server.cpu_slice_us not applied") {
        eprintln!("this kernel takes no time slice for a thread (Linux 6.12+ does): nothing to check");
        return;
    }
    let slices = thread_slices(short.pid());
    assert!(slices.len() > 1, "{slices:?}");
    assert!(slices.iter().all(|&ns| ns == 300_000), "{slices:?}");
    assert!(
        thread_policies(short.pid()).iter().all(|&p| p == SCHED_BATCH),
        "still SCHED_BATCH"
    );
    let default = Server::start(&[]);
    let slices = thread_slices(default.pid());
    assert!(slices.iter().all(|&ns| ns != 300_000), "{slices:?}");
}

/// Whether the kernel may give `pid` transparent huge pages (`THP_enabled` in `/proc/PID/status`, Linux 5.0+).
#[cfg(target_os = "linux")]
fn thp_enabled(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .expect("THP_enabled line");
    line.ends_with('1')
}

#[cfg(target_os = "linux")]
#[test]
fn disable_thp_turns_transparent_huge_pages_off() {
    if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
        eprintln!("this kernel has no transparent huge pages: nothing to turn off");
        return;
    }
    let (server, mut raw) = common::start();
    assert!(thp_enabled(server.pid()));
    raw.expect(&["CONFIG", "GET", "disable-thp"], Resp::bulks(&["disable-thp", "no"]));
    let disabled = Server::start(&["--disable-thp", "true"]);
    assert!(!thp_enabled(disabled.pid()));
    disabled
        .raw()
        .expect(&["CONFIG", "GET", "disable-thp"], Resp::bulks(&["disable-thp", "yes"]));
}

#[test]
fn config_set_timeout_takes_effect() {
    let (server, mut raw) = common::start();
    raw.expect(&["CONFIG", "SET", "timeout", "5"], Resp::ok());
    raw.expect(&["CONFIG", "GET", "timeout"], Resp::bulks(&["timeout", "5"]));
    raw.expect(&["CONFIG", "SET", "timeout", "1"], Resp::ok());
    let mut idle = server.raw();
    idle.expect(&["PING"], Resp::simple("PONG"));
    idle.assert_closed();
    // `raw` has been idle as long, so it is gone too; a new client resets it.
    raw.assert_closed();
    let mut raw = server.raw();
    raw.expect(&["CONFIG", "SET", "timeout", "0"], Resp::ok());
    raw.expect(&["CONFIG", "GET", "timeout"], Resp::bulks(&["timeout", "0"]));
}

#[test]
fn config_set_several_and_errors() {
    let (_server, mut raw) = common::start();
    raw.expect(&["CONFIG", "SET", "timeout", "30", "maxclients", "100"], Resp::ok());
    let got = config_pairs(&raw.cmd(&["CONFIG", "GET", "timeout", "maxclients"]));
    assert_eq!(got, vec![pair("maxclients", "100"), pair("timeout", "30")]);
    raw.expect(&["CONFIG", "SET", "save", ""], Resp::ok());
    raw.expect(
        &["CONFIG", "SET", "foo", "bar"],
        Resp::err("ERR Unknown option or number of arguments for CONFIG SET - 'foo'"),
    );
    raw.expect(
        &["CONFIG", "SET", "timeout", "abc"],
        Resp::err("ERR CONFIG SET failed (possibly related to argument 'timeout') - argument couldn't be parsed into an integer"),
    );
    // All or nothing: a bad pair leaves the good one unapplied.
    let _ = raw.cmd(&["CONFIG", "SET", "timeout", "99", "maxclients", "abc"]);
    raw.expect(&["CONFIG", "GET", "timeout"], Resp::bulks(&["timeout", "30"]));
    raw.expect(&["CONFIG", "SET", "timeout"], wrong_arity("config|set"));
}

#[test]
fn config_set_negative_timeout_error_text() {
    let (_server, mut raw) = common::start();
    raw.expect(
        &["CONFIG", "SET", "timeout", "-1"],
        Resp::err("ERR CONFIG SET failed (possibly related to argument 'timeout') - argument must be between 0 and 2147483647 inclusive"),
    );
}

#[test]
fn config_set_maxclients_takes_effect() {
    let (server, mut raw) = common::start();
    raw.expect(&["CONFIG", "SET", "maxclients", "1"], Resp::ok());
    let mut extra = server.raw();
    let got = extra.read_until_closed(Duration::from_secs(10));
    assert_eq!(String::from_utf8_lossy(&got), "-ERR max number of clients reached\r\n");
    raw.expect(&["CONFIG", "SET", "maxclients", "10"], Resp::ok());
    server.raw().expect(&["PING"], Resp::simple("PONG"));
}

#[test]
fn command_count_list_and_info() {
    let (_server, mut raw) = common::start();
    let count = raw.cmd(&["COMMAND", "COUNT"]).as_int();
    assert!(count >= 55, "COMMAND COUNT {count}");
    let list = raw.cmd(&["COMMAND", "LIST"]);
    assert_eq!(list.as_array().len() as i64, count);
    let names: Vec<String> = list.as_array().iter().map(Resp::text).collect();
    for name in ["get", "set", "scan", "hello", "command", "incrbyfloat"] {
        assert!(names.iter().any(|n| n == name), "{name} not listed");
    }
    let all = raw.cmd(&["COMMAND"]);
    assert_eq!(all.as_array().len() as i64, count);

    let info = raw.cmd(&["COMMAND", "INFO", "get", "SET", "mset"]);
    let [get, set, mset] = info.as_array() else {
        panic!("COMMAND INFO get SET mset gave {info:?}");
    };
    let head = |entry: &Resp| {
        let f = entry.as_array();
        (
            f[0].text(),
            f[1].as_int(),
            f[2].as_array()
                .iter()
                .map(|flag| match flag {
                    Resp::Simple(s) => s.clone(),
                    other => panic!("flag {other:?}"),
                })
                .collect::<Vec<_>>(),
            f[3].as_int(),
            f[4].as_int(),
            f[5].as_int(),
        )
    };
    assert_eq!(
        head(get),
        ("get".into(), 2, vec!["readonly".into(), "fast".into()], 1, 1, 1)
    );
    let (name, arity, flags, first, last, step) = head(set);
    assert_eq!((name.as_str(), arity, first, last, step), ("set", -3, 1, 1, 1));
    assert!(flags.contains(&"write".to_string()), "{flags:?}");
    assert!(flags.contains(&"denyoom".to_string()), "{flags:?}");
    let (_, arity, _, first, last, step) = head(mset);
    assert_eq!((arity, first, last, step), (-3, 1, -1, 2));
    raw.expect(
        &["COMMAND", "FOO"],
        Resp::err("ERR unknown subcommand 'FOO'. Try COMMAND HELP."),
    );
    raw.expect(&["COMMAND", "COUNT", "x"], wrong_arity("command|count"));
}

#[test]
fn command_info_of_unknown_command_is_null_bulk() {
    let (_server, mut raw) = common::start();
    raw.send_cmd(&["COMMAND", "INFO", "nosuch"]);
    let got = raw.read_reply_bytes();
    assert_eq!(String::from_utf8_lossy(&got), "*1\r\n$-1\r\n");
}

#[test]
fn command_docs() {
    let (_server, mut raw) = common::start();
    let docs = raw.cmd(&["COMMAND", "DOCS", "get"]);
    let get = docs.get("get").expect("docs for get");
    let summary = get.get("summary").expect("summary").text();
    assert!(!summary.is_empty());
    assert_eq!(get.get("since"), Some(Resp::bulk("1.0.0")));
    assert_eq!(get.get("group"), Some(Resp::bulk("string")));
    let both = raw.cmd(&["COMMAND", "DOCS", "get", "nosuch", "expire"]);
    let names: Vec<String> = both.pairs().iter().map(|(k, _)| k.text()).collect();
    assert_eq!(names, vec!["get", "expire"]);
    raw.expect(&["COMMAND", "DOCS", "nosuch"], Resp::Array(vec![]));
    // RESP3: a real map.
    let _ = raw.cmd(&["HELLO", "3"]);
    assert!(matches!(raw.cmd(&["COMMAND", "DOCS", "get"]), Resp::Map(_)));
}

#[test]
fn dbsize() {
    let (_server, mut raw) = common::start();
    raw.expect(&["DBSIZE"], Resp::int(0));
    raw.expect(&["MSET", "a", "1", "b", "2"], Resp::ok());
    raw.expect(&["DBSIZE"], Resp::int(2));
    raw.expect(&["SET", "a", "again"], Resp::ok());
    raw.expect(&["DBSIZE"], Resp::int(2));
    raw.expect(&["DEL", "a"], Resp::int(1));
    raw.expect(&["DBSIZE"], Resp::int(1));
    raw.expect(&["SELECT", "1"], Resp::ok());
    raw.expect(&["DBSIZE"], Resp::int(0));
    raw.expect(&["DBSIZE", "x"], wrong_arity("dbsize"));
}

#[test]
fn flushdb_clears_only_the_selected_database() {
    let (_server, mut raw) = common::start();
    raw.expect(&["MSET", "a", "1", "b", "2"], Resp::ok());
    raw.expect(&["SELECT", "1"], Resp::ok());
    raw.expect(&["MSET", "a", "1", "c", "3"], Resp::ok());
    raw.expect(&["FLUSHDB"], Resp::ok());
    raw.expect(&["DBSIZE"], Resp::int(0));
    raw.expect(&["GET", "a"], Resp::Nil);
    raw.expect(&["SELECT", "0"], Resp::ok());
    raw.expect(&["DBSIZE"], Resp::int(2));
    raw.expect(&["GET", "a"], Resp::bulk("1"));
    raw.expect(&["FLUSHDB", "ASYNC"], Resp::ok());
    raw.expect(&["DBSIZE"], Resp::int(0));
    raw.expect(&["SET", "x", "1"], Resp::ok());
    raw.expect(&["FLUSHDB", "sync"], Resp::ok());
    raw.expect(&["DBSIZE"], Resp::int(0));
    raw.expect(&["FLUSHDB", "foo"], Resp::err("ERR syntax error"));
    raw.expect(&["FLUSHDB", "ASYNC", "x"], Resp::err("ERR syntax error"));
    // Flushed keys can be written again.
    raw.expect(&["SETNX", "a", "new"], Resp::int(1));
    raw.expect(&["GET", "a"], Resp::bulk("new"));
}

#[test]
fn flushall_clears_every_database() {
    let (_server, mut raw) = common::start();
    for db in ["0", "1", "15"] {
        raw.expect(&["SELECT", db], Resp::ok());
        raw.expect(&["MSET", "a", "1", "b", "2"], Resp::ok());
        raw.expect(&["EXPIRE", "b", "100"], Resp::int(1));
    }
    raw.expect(&["FLUSHALL"], Resp::ok());
    for db in ["0", "1", "15"] {
        raw.expect(&["SELECT", db], Resp::ok());
        raw.expect(&["DBSIZE"], Resp::int(0));
        raw.expect(&["KEYS", "*"], Resp::Array(vec![]));
    }
    let keyspace = raw.cmd(&["INFO", "keyspace"]).text();
    assert!(!keyspace.contains("keys="), "{keyspace}");
    raw.expect(&["FLUSHALL", "x"], Resp::err("ERR syntax error"));
    raw.expect(&["FLUSHALL", "ASYNC"], Resp::ok());
}

#[test]
fn time() {
    let (_server, mut raw) = common::start();
    let reply = raw.cmd(&["TIME"]);
    let [secs, micros] = reply.as_array() else {
        panic!("TIME gave {reply:?}");
    };
    let secs: u64 = secs.text().parse().expect("seconds");
    let micros: u64 = micros.text().parse().expect("microseconds");
    assert!(micros < 1_000_000, "microseconds {micros}");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    assert!(secs.abs_diff(now) <= 5, "TIME {secs} vs {now}");
    raw.expect(&["TIME", "x"], wrong_arity("time"));
}

#[test]
fn shutdown_exits_cleanly_and_keeps_the_data() {
    let mut server = Server::start(&[]);
    let mut raw = server.raw();
    raw.expect(&["SET", "k", "v"], Resp::ok());
    raw.expect(&["SELECT", "2"], Resp::ok());
    raw.expect(&["SET", "k2", "v2"], Resp::ok());
    raw.expect(&["SHUTDOWN", "FOO"], Resp::err("ERR syntax error"));
    raw.expect(&["SHUTDOWN", "ABORT"], Resp::err("ERR No shutdown in progress."));
    assert!(server.is_running());
    server.shutdown();
    server.restart();
    let mut raw = server.raw();
    raw.expect(&["GET", "k"], Resp::bulk("v"));
    raw.expect(&["SELECT", "2"], Resp::ok());
    raw.expect(&["GET", "k2"], Resp::bulk("v2"));
}

#[test]
fn shutdown_nosave_still_exits_cleanly() {
    let mut server = Server::start(&[]);
    let mut raw = server.raw();
    raw.expect(&["SET", "k", "v"], Resp::ok());
    raw.send_cmd(&["SHUTDOWN", "NOSAVE"]);
    raw.assert_closed();
    let status = server.wait_exit(common::EXIT_TIMEOUT);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn shutdown_does_not_wait_for_idle_clients() {
    let mut server = Server::start(&[]);
    let mut idle = server.raw();
    idle.expect(&["PING"], Resp::simple("PONG"));
    let started = Instant::now();
    server.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SHUTDOWN with an idle client took {:?}",
        started.elapsed()
    );
    idle.assert_closed();
}

#[test]
fn a_node_whose_log_reader_is_gone_keeps_serving_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp data dir");
    let mut child = common::spawn_child(dir.path(), &[]);
    let mut log = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            log.read_line(&mut line).expect("read log") > 0,
            "exited before it was ready"
        );
        if let Some(addr) = ready_addr(&line) {
            break addr;
        }
    };
    // Whoever read the log is gone: every later log line fails to be written.
    drop(log);
    let mut raw = Raw::connect(addr);
    raw.expect(&["SET", "k", "v"], Resp::ok());
    raw.expect(&["GET", "k"], Resp::bulk("v"));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill")
        .success());
    let deadline = Instant::now() + common::EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("SIGTERM did not stop a node whose stderr is a closed pipe");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn info_has_the_cluster_section_clients_read() {
    let (_server, mut raw) = common::start();
    let info = raw.cmd(&["INFO"]).text();
    assert_eq!(info_field(&info, "cluster_enabled"), Some("0".into()), "{info}");
    assert_eq!(info_field(&info, "redis_mode"), Some("standalone".into()), "{info}");
    // as a Redis without cluster support answers
    let disabled = Resp::err("ERR This instance has cluster support disabled");
    raw.expect(&["READONLY"], disabled.clone());
    raw.expect(&["READWRITE"], disabled);
}

#[test]
fn maxmemory_refuses_growth_but_not_reads_or_deletes() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "k", "v"], Resp::ok());
    raw.expect(&["CONFIG", "SET", "maxmemory", "1mb"], Resp::ok());
    raw.expect(&["CONFIG", "GET", "maxmemory"], Resp::bulks(&["maxmemory", "1048576"]));
    let oom = Resp::err("OOM command not allowed when used memory > 'maxmemory'.");
    raw.expect(&["SET", "k2", "v"], oom.clone());
    raw.expect(&["APPEND", "k", "more"], oom);
    raw.expect(&["GET", "k"], Resp::bulk("v"));
    raw.expect(&["DEL", "k"], Resp::int(1));
    raw.expect(&["CONFIG", "SET", "maxmemory", "0"], Resp::ok());
    raw.expect(&["SET", "k2", "v"], Resp::ok());
    raw.expect(
        &["CONFIG", "SET", "maxmemory", "lots"],
        Resp::err("ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value"),
    );
}
