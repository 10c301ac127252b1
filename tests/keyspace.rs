//! Generic key commands: existence, deletion, patterns, SCAN, renaming and
//! expiry (the commands and expiry really happening, lazily and actively).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{assert_pttl, assert_ttl, info_field, invalid_expire, wait_until, wrong_arity, Raw, Resp, Server};

/// The keys of a KEYS-style reply, as a sorted set of strings.
fn key_set(reply: &Resp) -> BTreeSet<String> {
    reply.as_array().iter().map(Resp::text).collect()
}

fn strings(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The `expired_keys` counter of INFO stats.
fn expired_keys(raw: &mut Raw) -> i64 {
    let info = raw.cmd(&["INFO", "stats"]).text();
    info_field(&info, "expired_keys")
        .unwrap_or_else(|| panic!("no expired_keys in {info}"))
        .parse()
        .expect("number")
}

#[test]
fn del_and_unlink() {
    let (_server, mut raw) = common::start();
    raw.expect(&["MSET", "a", "1", "b", "2", "c", "3"], Resp::ok());
    raw.expect(&["DEL", "a", "b", "x"], Resp::int(2));
    raw.expect(&["DEL", "a"], Resp::int(0));
    raw.expect(&["UNLINK", "c", "c"], Resp::int(1));
    raw.expect(&["DBSIZE"], Resp::int(0));
    raw.expect(&["GET", "a"], Resp::Nil);
    raw.expect(&["DEL"], wrong_arity("del"));
    raw.expect(&["UNLINK"], wrong_arity("unlink"));
    // Deleted keys can be written again.
    raw.expect(&["SETNX", "a", "again"], Resp::int(1));
    raw.expect(&["GET", "a"], Resp::bulk("again"));
}

#[test]
fn exists_and_touch_count_repeated_keys() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "a", "1"], Resp::ok());
    raw.expect(&["EXISTS", "a"], Resp::int(1));
    raw.expect(&["EXISTS", "a", "a", "b"], Resp::int(2));
    raw.expect(&["EXISTS", "nokey"], Resp::int(0));
    raw.expect(&["TOUCH", "a", "a", "x"], Resp::int(2));
    raw.expect(&["EXISTS"], wrong_arity("exists"));
    raw.expect(&["TOUCH"], wrong_arity("touch"));
}

#[test]
fn type_of_keys() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "s", "v"], Resp::ok());
    raw.expect(&["SET", "n", "12"], Resp::ok());
    raw.expect(&["TYPE", "s"], Resp::simple("string"));
    raw.expect(&["TYPE", "n"], Resp::simple("string"));
    raw.expect(&["TYPE", "nokey"], Resp::simple("none"));
    raw.expect(&["TYPE"], wrong_arity("type"));
    raw.expect(&["TYPE", "a", "b"], wrong_arity("type"));
}

#[test]
fn keys_with_glob_patterns() {
    let (_server, mut raw) = common::start();
    let all = [
        "hello", "hallo", "hxllo", "hllo", "heeeello", "h[a]llo", "h*", "h\\x", "h-llo",
    ];
    let mut mset = vec!["MSET"];
    for key in all {
        mset.extend([key, "1"]);
    }
    raw.expect(&mset, Resp::ok());
    for (pattern, want) in [
        ("*", &all[..]),
        ("h?llo", &["hello", "hallo", "hxllo", "h-llo"]),
        (
            "h*llo",
            &["hello", "hallo", "hxllo", "hllo", "heeeello", "h[a]llo", "h-llo"],
        ),
        ("h[ae]llo", &["hello", "hallo"]),
        ("h[^e]llo", &["hallo", "hxllo", "h-llo"]),
        ("h[a-b]llo", &["hallo"]),
        ("h[z-a]llo", &["hello", "hallo", "hxllo"]),
        ("h[!e]llo", &["hello"]),
        ("h\\*", &["h*"]),
        ("h\\[a\\]llo", &["h[a]llo"]),
        ("h\\\\x", &["h\\x"]),
        ("H*", &[]),
        ("nomatch*", &[]),
        ("h[", &[]),
    ] {
        assert_eq!(key_set(&raw.cmd(&["KEYS", pattern])), strings(want), "KEYS {pattern}");
    }
    raw.expect(&["KEYS"], wrong_arity("keys"));
    raw.expect(&["KEYS", "a", "b"], wrong_arity("keys"));
}

#[test]
fn keys_skips_expired_keys_and_other_databases() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "live", "1"], Resp::ok());
    raw.expect(&["SET", "gone", "1", "PXAT", "1"], Resp::ok());
    raw.expect(&["SELECT", "1"], Resp::ok());
    raw.expect(&["SET", "other", "1"], Resp::ok());
    raw.expect(&["SELECT", "0"], Resp::ok());
    raw.expect(&["KEYS", "*"], Resp::bulks(&["live"]));
}

/// Runs a full SCAN with `options`, returning every key with how often it came.
fn scan_all(raw: &mut Raw, options: &[&str]) -> (HashMap<String, usize>, usize) {
    let mut seen = HashMap::new();
    let mut cursor = "0".to_string();
    let mut calls = 0;
    loop {
        let mut args = vec!["SCAN", cursor.as_str()];
        args.extend(options);
        let reply = raw.cmd(&args);
        let parts = reply.as_array();
        assert_eq!(parts.len(), 2, "SCAN reply {reply:?}");
        let next = parts[0].text();
        for key in parts[1].as_array() {
            *seen.entry(key.text()).or_insert(0) += 1;
        }
        calls += 1;
        assert!(calls < 10_000, "SCAN does not terminate");
        if next == "0" {
            return (seen, calls);
        }
        cursor = next;
    }
}

#[test]
fn scan_returns_every_key_exactly_once() {
    let (_server, mut raw) = common::start();
    for batch in 0..10 {
        let mut mset = vec!["MSET".to_string()];
        for i in batch * 100..(batch + 1) * 100 {
            mset.push(format!("key:{i}"));
            mset.push(i.to_string());
        }
        raw.expect(&mset, Resp::ok());
    }
    raw.expect(&["DBSIZE"], Resp::int(1000));
    let (seen, calls) = scan_all(&mut raw, &["COUNT", "10"]);
    assert_eq!(seen.len(), 1000, "distinct keys returned");
    let repeated: Vec<_> = seen.iter().filter(|(_, &n)| n != 1).collect();
    assert!(repeated.is_empty(), "keys returned more than once: {repeated:?}");
    for i in 0..1000 {
        assert!(seen.contains_key(&format!("key:{i}")), "key:{i} missing");
    }
    assert!(calls > 10, "COUNT 10 over 1000 keys took only {calls} calls");

    let (matched, _) = scan_all(&mut raw, &["MATCH", "key:1?", "COUNT", "10"]);
    let want: BTreeSet<String> = (10..20).map(|i| format!("key:{i}")).collect();
    assert_eq!(matched.keys().cloned().collect::<BTreeSet<_>>(), want);

    let (strings, _) = scan_all(&mut raw, &["TYPE", "string", "COUNT", "100"]);
    assert_eq!(strings.len(), 1000);
    let (lists, _) = scan_all(&mut raw, &["TYPE", "list", "COUNT", "100"]);
    assert!(lists.is_empty(), "TYPE list returned {}", lists.len());
}

#[test]
fn scan_survives_writes_between_calls() {
    let (_server, mut raw) = common::start();
    let mut mset = vec!["MSET".to_string()];
    for i in 0..300 {
        mset.push(format!("stable:{i}"));
        mset.push("v".to_string());
    }
    raw.expect(&mset, Resp::ok());
    let mut seen = BTreeSet::new();
    let mut cursor = "0".to_string();
    let mut round = 0;
    loop {
        let reply = raw.cmd(&["SCAN", cursor.as_str(), "COUNT", "20"]);
        let parts = reply.as_array();
        for key in parts[1].as_array() {
            seen.insert(key.text());
        }
        // Keys come and go while the iteration runs.
        raw.expect(&["SET", &format!("new:{round}"), "v"], Resp::ok());
        if round % 2 == 1 {
            raw.expect(&["DEL", &format!("new:{}", round - 1)], Resp::int(1));
        }
        round += 1;
        assert!(round < 1000, "SCAN does not terminate");
        cursor = parts[0].text();
        if cursor == "0" {
            break;
        }
    }
    let missing: Vec<_> = (0..300)
        .map(|i| format!("stable:{i}"))
        .filter(|k| !seen.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys present throughout but not returned: {missing:?}"
    );
}

#[test]
fn scan_of_empty_database_and_errors() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SCAN", "0"], Resp::Array(vec![Resp::bulk("0"), Resp::Array(vec![])]));
    raw.expect(&["SET", "a", "1"], Resp::ok());
    raw.expect(
        &["SCAN", "0", "MATCH", "a*"],
        Resp::Array(vec![Resp::bulk("0"), Resp::bulks(&["a"])]),
    );
    raw.expect(
        &["SCAN", "0", "TYPE", "STRING"],
        Resp::Array(vec![Resp::bulk("0"), Resp::bulks(&["a"])]),
    );
    raw.expect(&["SCAN", "0", "COUNT", "0"], Resp::err("ERR syntax error"));
    raw.expect(&["SCAN", "0", "COUNT", "-1"], Resp::err("ERR syntax error"));
    raw.expect(
        &["SCAN", "0", "COUNT", "abc"],
        Resp::err("ERR value is not an integer or out of range"),
    );
    raw.expect(&["SCAN", "0", "MATCH"], Resp::err("ERR syntax error"));
    raw.expect(&["SCAN", "0", "FOO", "bar"], Resp::err("ERR syntax error"));
    raw.expect(&["SCAN", "abc"], Resp::err("ERR invalid cursor"));
    raw.expect(&["SCAN", "18446744073709551616"], Resp::err("ERR invalid cursor"));
    raw.expect(&["SCAN"], wrong_arity("scan"));
}

#[test]
fn randomkey() {
    let (_server, mut raw) = common::start();
    raw.expect(&["RANDOMKEY"], Resp::Nil);
    raw.expect(&["SET", "only", "1"], Resp::ok());
    raw.expect(&["RANDOMKEY"], Resp::bulk("only"));
    raw.expect(&["MSET", "a", "1", "b", "2"], Resp::ok());
    let keys = strings(&["only", "a", "b"]);
    for _ in 0..20 {
        let key = raw.cmd(&["RANDOMKEY"]).text();
        assert!(keys.contains(&key), "RANDOMKEY gave {key}");
    }
    raw.expect(&["DEL", "only", "a", "b"], Resp::int(3));
    raw.expect(&["RANDOMKEY"], Resp::Nil);
    raw.expect(&["RANDOMKEY", "x"], wrong_arity("randomkey"));
}

#[test]
fn rename() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "a", "1"], Resp::ok());
    raw.expect(&["EXPIRE", "a", "100"], Resp::int(1));
    raw.expect(&["RENAME", "a", "b"], Resp::ok());
    raw.expect(&["EXISTS", "a"], Resp::int(0));
    raw.expect(&["GET", "b"], Resp::bulk("1"));
    assert_ttl(&mut raw, "b", 100);
    // Overwriting takes the source's (absent) expiry, not the destination's.
    raw.expect(&["SET", "c", "2"], Resp::ok());
    raw.expect(&["RENAME", "c", "b"], Resp::ok());
    raw.expect(&["GET", "b"], Resp::bulk("2"));
    raw.expect(&["TTL", "b"], Resp::int(-1));
    raw.expect(&["RENAME", "b", "b"], Resp::ok());
    raw.expect(&["GET", "b"], Resp::bulk("2"));
    raw.expect(&["RENAME", "x", "y"], Resp::err("ERR no such key"));
    raw.expect(&["RENAME", "x", "x"], Resp::err("ERR no such key"));
    raw.expect(&["RENAME", "a"], wrong_arity("rename"));
}

#[test]
fn renamenx() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "a", "1", "EX", "100"], Resp::ok());
    raw.expect(&["SET", "c", "2"], Resp::ok());
    raw.expect(&["RENAMENX", "a", "c"], Resp::int(0));
    raw.expect(&["GET", "c"], Resp::bulk("2"));
    raw.expect(&["RENAMENX", "a", "d"], Resp::int(1));
    raw.expect(&["GET", "d"], Resp::bulk("1"));
    raw.expect(&["EXISTS", "a"], Resp::int(0));
    assert_ttl(&mut raw, "d", 100);
    raw.expect(&["RENAMENX", "d", "d"], Resp::int(0));
    raw.expect(&["RENAMENX", "x", "y"], Resp::err("ERR no such key"));
    raw.expect(&["RENAMENX", "a"], wrong_arity("renamenx"));
}

#[test]
fn expire_nx_xx_gt_lt() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "a", "1"], Resp::ok());
    raw.expect(&["EXPIRE", "a", "100", "NX"], Resp::int(1));
    raw.expect(&["EXPIRE", "a", "200", "NX"], Resp::int(0));
    assert_ttl(&mut raw, "a", 100);
    raw.expect(&["EXPIRE", "a", "50", "XX"], Resp::int(1));
    assert_ttl(&mut raw, "a", 50);
    raw.expect(&["EXPIRE", "a", "100", "GT"], Resp::int(1));
    raw.expect(&["EXPIRE", "a", "10", "GT"], Resp::int(0));
    assert_ttl(&mut raw, "a", 100);
    raw.expect(&["EXPIRE", "a", "10", "LT"], Resp::int(1));
    raw.expect(&["EXPIRE", "a", "20", "LT"], Resp::int(0));
    assert_ttl(&mut raw, "a", 10);
    raw.expect(&["EXPIRE", "a", "500", "xx", "gt"], Resp::int(1));
    assert_ttl(&mut raw, "a", 500);
    // No expiry counts as infinite: GT never applies, LT always does.
    raw.expect(&["SET", "b", "1"], Resp::ok());
    raw.expect(&["EXPIRE", "b", "10", "XX"], Resp::int(0));
    raw.expect(&["EXPIRE", "b", "10", "GT"], Resp::int(0));
    raw.expect(&["TTL", "b"], Resp::int(-1));
    raw.expect(&["EXPIRE", "b", "10", "LT"], Resp::int(1));
    assert_ttl(&mut raw, "b", 10);
    raw.expect(&["PEXPIRE", "b", "100000", "XX"], Resp::int(1));
    raw.expect(&["EXPIRE", "nokey", "10"], Resp::int(0));
    raw.expect(&["EXPIRE", "nokey", "10", "NX"], Resp::int(0));
}

#[test]
fn expire_option_errors() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "a", "1"], Resp::ok());
    let nx_and_others = "ERR NX and XX, GT or LT options at the same time are not compatible";
    raw.expect(&["EXPIRE", "a", "10", "NX", "XX"], Resp::err(nx_and_others));
    raw.expect(&["EXPIRE", "a", "10", "NX", "GT"], Resp::err(nx_and_others));
    raw.expect(&["PEXPIRE", "a", "10", "LT", "NX"], Resp::err(nx_and_others));
    raw.expect(
        &["EXPIREAT", "a", "10", "GT", "LT"],
        Resp::err("ERR GT and LT options at the same time are not compatible"),
    );
    raw.expect(&["EXPIRE", "a", "10", "FOO"], Resp::err("ERR Unsupported option FOO"));
    raw.expect(
        &["EXPIRE", "a", "abc"],
        Resp::err("ERR value is not an integer or out of range"),
    );
    raw.expect(&["EXPIRE", "a", "9223372036854775807"], invalid_expire("expire"));
    raw.expect(&["PEXPIRE", "a", "9223372036854775807"], invalid_expire("pexpire"));
    raw.expect(&["EXPIREAT", "a", "9223372036854775807"], invalid_expire("expireat"));
    raw.expect(&["EXPIRE", "a", "-9223372036854775808"], invalid_expire("expire"));
    raw.expect(&["EXPIRE", "a"], wrong_arity("expire"));
    raw.expect(&["PEXPIRE", "a"], wrong_arity("pexpire"));
    raw.expect(&["EXPIREAT", "a"], wrong_arity("expireat"));
    raw.expect(&["PEXPIREAT", "a"], wrong_arity("pexpireat"));
    // Nothing changed.
    raw.expect(&["TTL", "a"], Resp::int(-1));
}

#[test]
fn expire_in_the_past_deletes() {
    let (_server, mut raw) = common::start();
    for args in [
        &["EXPIRE", "a", "-1"][..],
        &["EXPIRE", "a", "0"],
        &["PEXPIRE", "a", "0"],
        &["PEXPIRE", "a", "-9223372036854775808"],
        &["EXPIREAT", "a", "1"],
        &["PEXPIREAT", "a", "1000"],
    ] {
        raw.expect(&["SET", "a", "1"], Resp::ok());
        raw.expect(args, Resp::int(1));
        raw.expect(&["EXISTS", "a"], Resp::int(0));
        raw.expect(&["GET", "a"], Resp::Nil);
        raw.expect(&["TTL", "a"], Resp::int(-2));
    }
}

#[test]
fn expiretime_ttl_and_persist() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "a", "1"], Resp::ok());
    raw.expect(&["EXPIREAT", "a", "99999999999"], Resp::int(1));
    raw.expect(&["EXPIRETIME", "a"], Resp::int(99_999_999_999));
    raw.expect(&["PEXPIRETIME", "a"], Resp::int(99_999_999_999_000));
    raw.expect(&["PEXPIREAT", "a", "99999999999123"], Resp::int(1));
    raw.expect(&["PEXPIRETIME", "a"], Resp::int(99_999_999_999_123));
    raw.expect(&["EXPIRETIME", "a"], Resp::int(99_999_999_999));
    let at = common::unix_ms() + 60_000;
    raw.expect(&["PEXPIREAT", "a", &at.to_string()], Resp::int(1));
    raw.expect(&["PEXPIRETIME", "a"], Resp::int(at));
    let pttl = raw.cmd(&["PTTL", "a"]).as_int();
    assert!((55_000..=60_000).contains(&pttl), "PTTL {pttl}");
    assert_ttl(&mut raw, "a", 60);

    raw.expect(&["SET", "b", "1"], Resp::ok());
    for cmd in ["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"] {
        raw.expect(&[cmd, "b"], Resp::int(-1));
        raw.expect(&[cmd, "nokey"], Resp::int(-2));
    }
    raw.expect(&["PERSIST", "b"], Resp::int(0));
    raw.expect(&["PERSIST", "a"], Resp::int(1));
    raw.expect(&["TTL", "a"], Resp::int(-1));
    raw.expect(&["PERSIST", "a"], Resp::int(0));
    raw.expect(&["PERSIST", "nokey"], Resp::int(0));
    raw.expect(&["GET", "a"], Resp::bulk("1"));
    raw.expect(&["TTL"], wrong_arity("ttl"));
    raw.expect(&["EXPIRETIME"], wrong_arity("expiretime"));
    raw.expect(&["PERSIST"], wrong_arity("persist"));
}

#[test]
fn lazy_expiry_hides_the_key_once_due() {
    let (_server, mut raw) = common::start();
    raw.expect(&["SET", "k", "v", "PX", "50"], Resp::ok());
    raw.expect(&["SET", "stays", "v"], Resp::ok());
    wait_until(Duration::from_secs(5), "k to expire", || {
        raw.cmd(&["GET", "k"]) == Resp::Nil
    });
    raw.expect(&["EXISTS", "k"], Resp::int(0));
    raw.expect(&["TTL", "k"], Resp::int(-2));
    raw.expect(&["TYPE", "k"], Resp::simple("none"));
    raw.expect(&["DEL", "k"], Resp::int(0));
    raw.expect(&["RENAME", "k", "j"], Resp::err("ERR no such key"));
    raw.expect(&["SET", "k", "new", "NX"], Resp::ok());
    raw.expect(&["GET", "stays"], Resp::bulk("v"));
}

#[test]
fn active_expiry_removes_keys_nobody_reads() {
    let server = Server::start(&["--expiry-sweep-ms", "10"]);
    let mut raw = server.raw();
    let before = expired_keys(&mut raw);
    let mut mset = vec!["MSET".to_string()];
    for i in 0..100 {
        mset.push(format!("temp:{i}"));
        mset.push("v".to_string());
    }
    raw.expect(&mset, Resp::ok());
    for i in 0..100 {
        raw.expect(&["PEXPIRE", &format!("temp:{i}"), "100"], Resp::int(1));
    }
    raw.expect(&["MSET", "keep:1", "v", "keep:2", "v"], Resp::ok());
    // Only INFO and DBSIZE from here: nothing reads the expiring keys.
    wait_until(Duration::from_secs(10), "the sweep to expire 100 keys", || {
        expired_keys(&mut raw) - before >= 100
    });
    assert_eq!(expired_keys(&mut raw) - before, 100);
    raw.expect(&["DBSIZE"], Resp::int(2));
    let keys = key_set(&raw.cmd(&["KEYS", "*"]));
    assert_eq!(keys, strings(&["keep:1", "keep:2"]));
}

#[test]
fn active_expiry_follows_later_changes_to_the_expiry() {
    let server = Server::start(&["--expiry-sweep-ms", "10"]);
    let mut raw = server.raw();
    let before = expired_keys(&mut raw);
    let survivors = ["extended", "persisted", "overwritten", "recreated", "renamed", "getex"];
    for key in survivors {
        raw.expect(&["SET", key, "old", "PX", "1000"], Resp::ok());
    }
    raw.expect(&["PEXPIRE", "extended", "100000"], Resp::int(1));
    raw.expect(&["PERSIST", "persisted"], Resp::int(1));
    raw.expect(&["SET", "overwritten", "new"], Resp::ok());
    raw.expect(&["DEL", "recreated"], Resp::int(1));
    raw.expect(&["SET", "recreated", "new"], Resp::ok());
    raw.expect(&["RENAME", "renamed", "moved"], Resp::ok());
    raw.expect(&["SET", "renamed", "new"], Resp::ok());
    raw.expect(&["GETEX", "getex", "PERSIST"], Resp::bulk("old"));
    // Controls due a little later, in two databases. The sweep goes in expiry
    // order, so once one control is swept the survivors' old expiries were
    // reached too. Counting `moved` and up to two purged tombstones (DEL and
    // RENAME leave them), 4 expiries mean at least one control.
    for (db, key) in [("0", "control:1"), ("0", "control:2"), ("5", "control:3")] {
        raw.expect(&["SELECT", db], Resp::ok());
        raw.expect(&["SET", key, "v", "PX", "1300"], Resp::ok());
    }
    raw.expect(&["SELECT", "0"], Resp::ok());
    wait_until(Duration::from_secs(10), "the sweep to reach the controls", || {
        expired_keys(&mut raw) - before >= 4
    });
    raw.expect(&["EXISTS", "moved"], Resp::int(0));
    for key in survivors {
        let want = if matches!(key, "extended" | "persisted" | "getex") {
            "old"
        } else {
            "new"
        };
        raw.expect(&["GET", key], Resp::bulk(want));
    }
    // Extended to 100 s a second or so ago.
    assert_pttl(&mut raw, "extended", 90_000, 100_000);
    for key in ["persisted", "overwritten", "recreated", "renamed", "getex"] {
        raw.expect(&["TTL", key], Resp::int(-1));
    }
}

#[test]
fn expired_keys_stat_counts_only_expired_keys() {
    let server = Server::start(&["--expiry-sweep-ms", "10"]);
    let mut raw = server.raw();
    let before = expired_keys(&mut raw);
    raw.expect(&["MSET", "a", "1", "b", "2", "c", "3", "d", "4"], Resp::ok());
    raw.expect(&["DEL", "a", "b"], Resp::int(2));
    raw.expect(&["GETDEL", "c"], Resp::bulk("3"));
    raw.expect(&["RENAME", "d", "e"], Resp::ok());
    raw.expect(&["SET", "t", "v", "PX", "50"], Resp::ok());
    // The sweep goes in expiry order: when `t` is counted, the deletes (due
    // earlier if they are due at all) have been seen.
    wait_until(Duration::from_secs(10), "t to be swept", || {
        expired_keys(&mut raw) - before >= 1
    });
    assert_eq!(
        expired_keys(&mut raw) - before,
        1,
        "expired_keys after 1 expiry and 4 deletes"
    );
}
