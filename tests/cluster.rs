//! A replicated cluster of real processes: routing through any node, quorums
//! with a node killed, read repair after its restart, siblings across a
//! partition, cluster-wide key listings, and a cluster-aware client.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{info_field, reachable, wait_until, Cluster, Raw, Resp};

const CONVERGE: Duration = Duration::from_secs(20);

fn keys(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

/// Every key name a full SCAN through `raw` returns, asserting none twice.
fn scan_all(raw: &mut Raw) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let reply = raw.cmd(&["SCAN", &cursor, "COUNT", "7"]);
        let parts = reply.as_array();
        cursor = parts[0].text();
        for key in parts[1].as_array() {
            assert!(seen.insert(key.text()), "SCAN returned {} twice", key.text());
        }
        if cursor == "0" {
            return seen;
        }
    }
}

#[test]
fn any_node_serves_any_key_and_listings_count_each_key_once() {
    let cluster = Cluster::start(3, &[]);
    let names = keys(60, "k");
    let mut first = cluster.node(0).raw();
    for (i, key) in names.iter().enumerate() {
        first.expect(&["SET", key, &format!("v{i}")], Resp::ok());
    }
    for node in &cluster.nodes[1..] {
        let mut raw = node.raw();
        for (i, key) in names.iter().enumerate() {
            raw.expect(&["GET", key], Resp::bulk(format!("v{i}")));
        }
        raw.expect(&["DBSIZE"], Resp::int(60));
        let listed: BTreeSet<String> = raw.cmd(&["KEYS", "k:*"]).as_array().iter().map(Resp::text).collect();
        assert_eq!(listed.len(), 60, "KEYS lists each key once");
        assert_eq!(scan_all(&mut raw), names.iter().cloned().collect::<BTreeSet<_>>());
    }
    // Multi-key commands fan out to the keys' coordinators.
    let mut raw = cluster.node(1).raw();
    raw.expect(&["MSET", "m:a", "1", "m:b", "2", "m:c", "3"], Resp::ok());
    assert_eq!(
        raw.cmd(&["MGET", "m:a", "m:b", "m:c", "nope"]),
        Resp::Array(vec![Resp::bulk("1"), Resp::bulk("2"), Resp::bulk("3"), Resp::Nil])
    );
    raw.expect(&["MSETNX", "m:c", "x", "m:d", "4"], Resp::int(0));
    raw.expect(&["EXISTS", "m:a", "m:b", "m:d"], Resp::int(2));
    raw.expect(&["DEL", "m:a", "m:b", "m:c", "m:d"], Resp::int(3));
    raw.expect(&["INCR", "counter"], Resp::int(1));
    cluster.node(2).raw().expect(&["INCR", "counter"], Resp::int(2));
    cluster.node(0).raw().expect(&["FLUSHALL"], Resp::ok());
    for node in &cluster.nodes {
        node.raw().expect(&["DBSIZE"], Resp::int(0));
    }
}

#[test]
fn a_pipeline_keeps_its_order_while_distinct_keys_run_concurrently() {
    let cluster = Cluster::start(3, &[]);
    let mut raw = cluster.node(1).raw();
    let commands: [&[&str]; 9] = [
        &["SET", "p", "1"],
        &["GET", "p"],
        &["SET", "p", "2"],
        &["GET", "p"],
        &["INCR", "c"],
        &["INCR", "c"],
        &["SELECT", "1"],
        &["GET", "p"],
        &["INCR", "c"],
    ];
    let mut bytes = Vec::new();
    for command in commands {
        bytes.extend(common::encode(command));
    }
    raw.send(&bytes);
    let replies: Vec<Resp> = (0..commands.len()).map(|_| raw.read_reply()).collect();
    assert_eq!(
        replies,
        [
            Resp::ok(),
            Resp::bulk("1"),
            Resp::ok(),
            Resp::bulk("2"),
            Resp::int(1),
            Resp::int(2),
            Resp::ok(),
            Resp::Nil,
            Resp::int(1),
        ]
    );
}

/// A counter of this node's CLUSTER INFO.
fn cluster_counter(raw: &mut Raw, name: &str) -> u64 {
    let info = raw.cmd(&["CLUSTER", "INFO"]).text();
    info_field(&info, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in CLUSTER INFO:\n{info}"))
}

#[test]
fn a_pipeline_forwards_its_writes_to_each_coordinator_in_few_messages() {
    let cluster = Cluster::start(3, &[]);
    let mut raw = cluster.node(1).raw();
    raw.expect(&["SET", "w:text", "abc"], Resp::ok());
    raw.expect(&["SET", "w:old", "old"], Resp::ok());
    let (forwarded, messages) = (
        cluster_counter(&mut raw, "ringkv_forwarded"),
        cluster_counter(&mut raw, "ringkv_forward_messages"),
    );
    // Big values fill more than one batch; errors and old values come back in their places.
    let big = "x".repeat(200 * 1024);
    let mut commands: Vec<Vec<String>> = (0..60)
        .map(|i| vec!["SET".into(), format!("w:{i}"), format!("v{i}")])
        .collect();
    for i in 0..3 {
        commands.push(vec!["SET".into(), format!("w:big{i}"), big.clone()]);
    }
    commands.push(vec!["INCR".into(), "w:text".into()]);
    commands.push(vec!["GETSET".into(), "w:old".into(), "new".into()]);
    commands.push(vec!["SETNX".into(), "w:60".into(), "fresh".into()]);
    let mut bytes = Vec::new();
    for command in &commands {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        bytes.extend(common::encode(&args));
    }
    raw.send(&bytes);
    let replies: Vec<Resp> = (0..commands.len()).map(|_| raw.read_reply()).collect();
    let mut want = vec![Resp::ok(); 63];
    want.push(Resp::Error("ERR value is not an integer or out of range".into()));
    want.push(Resp::bulk("old"));
    want.push(Resp::int(1));
    assert_eq!(replies, want);
    let sent = cluster_counter(&mut raw, "ringkv_forwarded") - forwarded;
    let carried_by = cluster_counter(&mut raw, "ringkv_forward_messages") - messages;
    assert!(sent >= 20, "two thirds of the keys are forwarded, not {sent}");
    assert!(carried_by * 4 <= sent, "{sent} forwards took {carried_by} messages");
    let mut other = cluster.node(2).raw();
    for i in 0..60 {
        other.expect(&["GET", &format!("w:{i}")], Resp::bulk(format!("v{i}")));
    }
    other.expect(&["GET", "w:big2"], Resp::bulk(big));
    other.expect(&["GET", "w:old"], Resp::bulk("new"));
    other.expect(&["GET", "w:60"], Resp::bulk("fresh"));
}

/// A counter summed over every node's CLUSTER INFO.
fn cluster_total(cluster: &Cluster, name: &str) -> u64 {
    cluster
        .nodes
        .iter()
        .map(|node| cluster_counter(&mut node.raw(), name))
        .sum()
}

#[test]
fn a_pipeline_replicates_its_writes_in_one_message_per_replica() {
    let cluster = Cluster::start(3, &[]);
    let (records, messages) = (
        cluster_total(&cluster, "ringkv_replicated"),
        cluster_total(&cluster, "ringkv_replication_messages"),
    );
    let mut raw = cluster.node(0).raw();
    let mut bytes = Vec::new();
    for i in 0..60 {
        bytes.extend(common::encode(&["SET", &format!("r:{i}"), &format!("v{i}")]));
    }
    // W = 3: each write waits for both other replicas, through the batches.
    bytes.extend(common::encode(&["CONSISTENCY", "WRITE", "ALL"]));
    for i in 0..60 {
        bytes.extend(common::encode(&["SET", &format!("r:{i}"), &format!("w{i}")]));
    }
    raw.send(&bytes);
    for _ in 0..121 {
        assert_eq!(raw.read_reply(), Resp::ok());
    }
    let records = cluster_total(&cluster, "ringkv_replicated") - records;
    let messages = cluster_total(&cluster, "ringkv_replication_messages") - messages;
    assert!(
        records >= 120,
        "every write reaches the replicas not handed it back: {records}"
    );
    assert!(
        messages * 4 <= records,
        "{records} records replicated in {messages} messages"
    );
    // Every replica holds every write, on its own (R = 1).
    for node in &cluster.nodes {
        let mut alone = node.raw();
        alone.expect(&["CONSISTENCY", "READ", "ONE"], Resp::ok());
        for i in 0..60 {
            let key = format!("r:{i}");
            wait_until(CONVERGE, &format!("{key} replicated"), || {
                alone.cmd(&["GET", &key]) == Resp::bulk(format!("w{i}"))
            });
        }
    }
}

/// A 3-node cluster whose node3 was killed with `kill -9`, once node1 has noticed.
fn cluster_with_node3_killed() -> Cluster {
    let mut cluster = Cluster::start(3, &[]);
    cluster.nodes[2].kill9();
    wait_until(CONVERGE, "node1 notices node3 is gone", || {
        reachable(cluster.node(0)) == 2
    });
    cluster
}

#[test]
fn a_pipeline_counts_each_write_short_of_a_dead_replica_alone() {
    let cluster = cluster_with_node3_killed();
    let mut raw = cluster.node(0).raw();
    let mut bytes = Vec::new();
    for i in 0..40 {
        bytes.extend(common::encode(&["SET", &format!("d:{i}"), "two"]));
    }
    bytes.extend(common::encode(&["CONSISTENCY", "WRITE", "ALL"]));
    for i in 0..40 {
        bytes.extend(common::encode(&["SET", &format!("d:{i}"), "all"]));
    }
    bytes.extend(common::encode(&["CONSISTENCY", "RESET"]));
    raw.send(&bytes);
    for i in 0..40 {
        assert_eq!(raw.read_reply(), Resp::ok(), "W=2 write {i}");
    }
    assert_eq!(raw.read_reply(), Resp::ok());
    for i in 0..40 {
        let reply = raw.read_reply();
        assert!(
            reply.as_error().starts_with("NOQUORUM write reached 2 of 3"),
            "W=3 write {i}: {reply:?}"
        );
    }
    assert_eq!(raw.read_reply(), Resp::ok());
    // The replicas that took a refused write keep it, so a quorum read sees it (DESIGN.md, Coordinator).
    let mut other = cluster.node(1).raw();
    for i in 0..40 {
        other.expect(&["GET", &format!("d:{i}")], Resp::bulk("all"));
    }
}

#[test]
fn cluster_commands_describe_the_ring() {
    let cluster = Cluster::start(3, &[]);
    let mut raw = cluster.node(0).raw();
    raw.expect(&["CLUSTER", "MYID"], Resp::bulk("node1"));
    raw.expect(&["CLUSTER", "KEYSLOT", "{user}:1"], Resp::int(5474));
    let slots = raw.cmd(&["CLUSTER", "SLOTS"]);
    let mut next = 0;
    for range in slots.as_array() {
        let parts = range.as_array();
        assert_eq!(parts[0].as_int(), next, "ranges are contiguous");
        next = parts[1].as_int() + 1;
        assert_eq!(parts.len(), 2 + 3, "N = 3 nodes per range");
    }
    assert_eq!(next, 16384);
    let preflist = raw.cmd(&["CLUSTER", "PREFLIST", "somekey"]);
    let roles: Vec<String> = preflist.as_array().iter().map(|m| m.as_array()[2].text()).collect();
    assert_eq!(roles, ["coordinator", "replica", "replica"]);
    let ring = raw.cmd(&["CLUSTER", "RING"]);
    let primaries: i64 = ring
        .as_array()
        .iter()
        .map(|row| row.get("primary_slots").expect("primary_slots").as_int())
        .sum();
    assert_eq!(primaries, 16384, "every slot has one coordinator");
    let nodes = raw.cmd(&["CLUSTER", "NODES"]).text();
    assert_eq!(nodes.lines().count(), 3);
    assert!(nodes.lines().any(|l| l.starts_with("node1 ") && l.contains("myself")));
    let info = raw.cmd(&["CLUSTER", "INFO"]).text();
    assert!(info.contains("cluster_state:ok"), "{info}");
    // Clients that pick their mode from INFO see a cluster node.
    let info = raw.cmd(&["INFO"]).text();
    assert_eq!(info_field(&info, "cluster_enabled"), Some("1".into()), "{info}");
    assert_eq!(info_field(&info, "redis_mode"), Some("cluster".into()), "{info}");
    // Replica reads: READONLY/READWRITE are accepted and change nothing.
    raw.expect(&["READONLY"], Resp::ok());
    raw.expect(&["SET", "ro:x", "1"], Resp::ok());
    raw.expect(&["GET", "ro:x"], Resp::bulk("1"));
    raw.expect(&["READWRITE"], Resp::ok());
    raw.expect(&["DEL", "ro:x"], Resp::int(1));
    raw.cmd(&["SET", "cnt:x", "1"]);
    raw.expect(&["CLUSTER", "COUNTKEYSINSLOT", &common_slot("cnt:x")], Resp::int(1));
    raw.expect(
        &["CLUSTER", "GETKEYSINSLOT", &common_slot("cnt:x"), "10"],
        Resp::bulks(&["cnt:x"]),
    );
}

fn common_slot(key: &str) -> String {
    // CRC16/XMODEM mod 16384, as Redis Cluster.
    let mut crc: u16 = 0;
    for &b in key.as_bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    (crc % 16384).to_string()
}

#[test]
fn a_cluster_aware_client_routes_by_cluster_slots() {
    let cluster = Cluster::start(3, &[]);
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let client = redis::cluster::ClusterClient::new(urls).expect("cluster client");
    let mut conn = client.get_connection().expect("cluster connection");
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("cc:{i}"))
            .arg(i)
            .query(&mut conn)
            .expect("SET");
    }
    for i in 0..100 {
        let v: i64 = redis::cmd("GET").arg(format!("cc:{i}")).query(&mut conn).expect("GET");
        assert_eq!(v, i);
    }
    // Every node sees every key the cluster client wrote.
    cluster.node(2).raw().expect(&["DBSIZE"], Resp::int(100));
}

#[test]
fn a_coordinator_that_missed_writes_counts_from_the_newest_value() {
    let mut cluster = cluster_with_node3_killed();
    // About a third of these are coordinated by node3, which misses their SET.
    let names = keys(30, "late");
    let mut raw = cluster.node(0).raw();
    for key in &names {
        raw.expect(&["SET", key, "10"], Resp::ok());
    }
    cluster.nodes[2].restart();
    cluster.wait_connected();
    // Sent to node3 itself, so its own keys run there without a forwarder's copy: the read before the write
    // (a replica's copy merged into its empty one) is what makes INCR count from 10.
    let mut late = cluster.node(2).raw();
    for key in &names {
        late.expect(&["INCR", key], Resp::int(11));
    }
}

#[test]
fn quorums_survive_a_killed_node_and_read_repair_heals_it() {
    let mut cluster = cluster_with_node3_killed();
    let names = keys(40, "kr");
    let mut raw = cluster.node(0).raw();
    for key in &names {
        raw.expect(&["SET", key, "fresh"], Resp::ok());
    }
    for key in &names {
        cluster.node(1).raw().expect(&["GET", key], Resp::bulk("fresh"));
    }
    // A pipeline's reads, asked of each replica in one message, make R=2 too, and fail alone at R=3.
    let mut other = cluster.node(1).raw();
    assert_eq!(
        pipelined_gets(&mut other, &names),
        vec![Resp::bulk("fresh"); names.len()]
    );
    other.expect(&["CONSISTENCY", "READ", "ALL"], Resp::ok());
    for reply in pipelined_gets(&mut other, &names) {
        assert!(
            reply.as_error().starts_with("NOQUORUM read reached 2 of 3"),
            "{reply:?}"
        );
    }
    raw.expect(&["CONSISTENCY", "WRITE", "ALL"], Resp::ok());
    let refused = raw.cmd(&["SET", "kr:refused", "again"]);
    assert!(
        refused.as_error().starts_with("NOQUORUM write reached 2 of 3"),
        "{refused:?}"
    );
    raw.expect(&["CONSISTENCY", "RESET"], Resp::ok());

    cluster.nodes[2].restart();
    cluster.wait_connected();
    let mut alone = cluster.node(2).raw();
    alone.expect(&["CONSISTENCY", "READ", "1"], Resp::ok());
    let missing = names
        .iter()
        .filter(|key| alone.cmd(&["GET", key.as_str()]) == Resp::Nil)
        .count();
    assert_eq!(missing, names.len(), "the restarted node missed every write");
    // Quorum reads through another node repair it in the background: one at a time, or a pipeline's together.
    let (single, piped) = names.split_at(names.len() / 2);
    for key in single {
        raw.expect(&["GET", key], Resp::bulk("fresh"));
    }
    assert_eq!(pipelined_gets(&mut raw, piped), vec![Resp::bulk("fresh"); piped.len()]);
    wait_until(CONVERGE, "read repair brings node3 up to date", || {
        names
            .iter()
            .all(|key| alone.cmd(&["GET", key.as_str()]) == Resp::bulk("fresh"))
    });
}

#[test]
fn a_restarted_node_takes_writes_at_w_all_as_soon_as_it_is_ready() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.nodes[2].kill9();
    cluster.nodes[2].restart();
    // Sent in one piece the moment the node says it is ready: keys of every coordinator, each needing all three.
    let names = keys(30, "rs");
    let mut bytes = common::encode(&["CONSISTENCY", "WRITE", "ALL"]);
    for key in &names {
        bytes.extend(common::encode(&["SET", key, "back"]));
    }
    let mut raw = cluster.node(2).raw();
    raw.send(&bytes);
    assert_eq!(raw.read_reply(), Resp::ok());
    for key in &names {
        assert_eq!(
            raw.read_reply(),
            Resp::ok(),
            "W=3 write of {key} right after the restart"
        );
    }
    let mut other = cluster.node(0).raw();
    other.expect(&["CONSISTENCY", "READ", "ALL"], Resp::ok());
    for key in &names {
        other.expect(&["GET", key], Resp::bulk("back"));
    }
}

#[test]
fn lcs_in_a_cluster_reads_both_keys() {
    let cluster = Cluster::start(3, &[]);
    cluster.node(0).raw().expect(&["SET", "lcs:a", "ohmytext"], Resp::ok());
    cluster.node(1).raw().expect(&["SET", "lcs:b", "mynewtext"], Resp::ok());
    let mut raw = cluster.node(2).raw();
    raw.expect(&["LCS", "lcs:a", "lcs:b"], Resp::bulk("mytext"));
    raw.expect(&["LCS", "lcs:b", "lcs:a", "LEN"], Resp::int(6));
}

/// GET of every key in one pipeline; the replies in order.
fn pipelined_gets(raw: &mut Raw, keys: &[String]) -> Vec<Resp> {
    let mut bytes = Vec::new();
    for key in keys {
        bytes.extend(common::encode(&["GET", key]));
    }
    raw.send(&bytes);
    keys.iter().map(|_| raw.read_reply()).collect()
}

#[test]
fn a_log_engine_node_keeps_what_it_acknowledged_through_kill_9() {
    let mut cluster = Cluster::start(3, &["--engine", "log"]);
    let names = keys(40, "lk");
    let mut raw = cluster.node(0).raw();
    // W=ALL: node3 acknowledged every write before the reply.
    raw.expect(&["CONSISTENCY", "WRITE", "ALL"], Resp::ok());
    for key in &names {
        raw.expect(&["SET", key, "kept"], Resp::ok());
    }
    cluster.nodes[2].kill9();
    cluster.nodes[2].restart();
    cluster.wait_connected();
    let mut alone = cluster.node(2).raw();
    alone.expect(&["CONSISTENCY", "READ", "1"], Resp::ok());
    for key in &names {
        alone.expect(&["GET", key], Resp::bulk("kept"));
    }
    // Writes after the restart supersede the reloaded ones rather than become siblings.
    alone.expect(&["SET", &names[0], "after"], Resp::ok());
    raw.expect(&["CONSISTENCY", "READ", "ALL"], Resp::ok());
    raw.expect(&["GET", &names[0]], Resp::bulk("after"));
}

#[test]
fn a_partition_makes_siblings_that_writes_resolve() {
    let cluster = Cluster::start(3, &[]);
    let (mut a, mut c) = (cluster.node(0).raw(), cluster.node(2).raw());
    c.expect(&["DEBUG", "ISOLATE", "node1", "node2"], Resp::ok());
    wait_until(CONVERGE, "node1 loses node3", || reachable(cluster.node(0)) == 2);
    wait_until(CONVERGE, "node3 loses both", || reachable(cluster.node(2)) == 1);
    a.expect(&["SET", "doc", "left"], Resp::ok());
    let refused = c.cmd(&["SET", "doc", "right"]);
    assert!(refused.as_error().starts_with("NOQUORUM"), "{refused:?}");
    c.expect(&["CONSISTENCY", "READ", "ONE", "WRITE", "ONE"], Resp::ok());
    c.expect(&["SET", "doc", "right"], Resp::ok());
    c.expect(&["DEBUG", "HEAL"], Resp::ok());
    cluster.wait_connected();

    a.expect(&["CONSISTENCY", "READ", "ALL"], Resp::ok());
    assert_eq!(values(a.cmd(&["GET", "doc"])), ["left", "right"]);
    let conflict = a.cmd(&["INCR", "doc"]);
    assert!(conflict.as_error().starts_with("CONFLICT key has 2"), "{conflict:?}");
    // A plain SET supersedes everything the coordinator has seen.
    a.expect(&["SET", "doc", "merged"], Resp::ok());
    a.expect(&["GET", "doc"], Resp::bulk("merged"));

    // VSET with the context VGET gave resolves exactly; with an old one, it adds a sibling.
    let got = a.cmd(&["VGET", "doc"]);
    let token = got.as_array()[0].as_bytes().to_vec();
    assert_eq!(got.as_array()[1], Resp::bulk("merged"));
    let vset =
        |raw: &mut Raw, context: &[u8], value: &str| raw.cmd(&[b"VSET".as_slice(), b"doc", context, value.as_bytes()]);
    assert_eq!(vset(&mut a, &token, "v1"), Resp::ok());
    a.expect(&["GET", "doc"], Resp::bulk("v1"));
    assert_eq!(vset(&mut c, &token, "stale"), Resp::ok());
    assert_eq!(values(a.cmd(&["GET", "doc"])), ["stale", "v1"]);
    let both = a.cmd(&["VGET", "doc"]).as_array()[0].as_bytes().to_vec();
    assert_eq!(vset(&mut a, &both, "resolved"), Resp::ok());
    a.expect(&["GET", "doc"], Resp::bulk("resolved"));
}

/// A forwarder that is itself a replica sends its copy with the command and
/// stores the written record from the reply before it answers, so a write
/// coordinated by a node that missed a version the forwarder holds still
/// supersedes that version, and the forwarder's own copy is current at once.
#[test]
fn a_forwarding_replica_hands_its_copy_over_and_takes_the_write_back() {
    let cluster = Cluster::start(3, &[]);
    let (mut a, mut b) = (cluster.node(0).raw(), cluster.node(1).raw());
    let key = (0..)
        .map(|i| format!("hb:{i}"))
        .find(|key| coordinator_of(&mut a, key) == "node2")
        .expect("some key is coordinated by node2");
    b.expect(&["DEBUG", "ISOLATE", "node1", "node3"], Resp::ok());
    wait_until(CONVERGE, "node1 loses node2", || reachable(cluster.node(0)) == 2);
    a.expect(&["SET", &key, "old"], Resp::ok());
    b.expect(&["DEBUG", "HEAL"], Resp::ok());
    cluster.wait_connected();

    let before = handed_back(&mut a);
    a.expect(&["SET", &key, "new"], Resp::ok());
    assert_eq!(handed_back(&mut a), before + 1, "node2 handed the record back");
    let mut local = cluster.node(0).raw();
    local.expect(&["CONSISTENCY", "READ", "ONE"], Resp::ok());
    local.expect(&["GET", &key], Resp::bulk("new"));
    a.expect(&["CONSISTENCY", "READ", "ALL"], Resp::ok());
    a.expect(&["GET", &key], Resp::bulk("new"));
}

/// A plain SET forwarded with the forwarder's copy is written without running the command table when the
/// coordinator and the forwarder make up W; it must still clear the TTL, reach the third replica, and wait for
/// every replica when the client asks W=ALL.
#[test]
fn a_forwarded_plain_set_clears_the_ttl_reaches_every_replica_and_keeps_w() {
    let cluster = Cluster::start(3, &[]);
    let mut a = cluster.node(0).raw();
    let key = (0..)
        .map(|i| format!("fwd:{i}"))
        .find(|key| coordinator_of(&mut a, key) == "node2")
        .expect("some key is coordinated by node2");
    a.expect(&["SET", &key, "timed", "EX", "1000"], Resp::ok());
    a.expect(&["SET", &key, "plain"], Resp::ok());
    for node in 0..3 {
        let mut alone = cluster.node(node).raw();
        alone.expect(&["CONSISTENCY", "READ", "ONE"], Resp::ok());
        wait_until(CONVERGE, "every replica holds the plain SET", || {
            alone.cmd(&["GET", &key]) == Resp::bulk("plain")
        });
        alone.expect(&["TTL", &key], Resp::int(-1));
    }

    let mut c = cluster.node(2).raw();
    c.expect(&["DEBUG", "ISOLATE", "node1", "node2"], Resp::ok());
    wait_until(CONVERGE, "node1 loses node3", || reachable(cluster.node(0)) == 2);
    a.expect(&["CONSISTENCY", "WRITE", "ALL"], Resp::ok());
    let refused = a.cmd(&["SET", &key, "all"]);
    assert!(refused.as_error().starts_with("NOQUORUM"), "{refused:?}");
    a.expect(&["CONSISTENCY", "WRITE", "QUORUM"], Resp::ok());
    a.expect(&["SET", &key, "two"], Resp::ok());
    a.expect(&["GET", &key], Resp::bulk("two"));
}

fn coordinator_of(raw: &mut Raw, key: &str) -> String {
    let rows = raw.cmd(&["CLUSTER", "PREFLIST", key]);
    let row = rows
        .as_array()
        .iter()
        .find(|row| row.as_array()[2].text() == "coordinator")
        .cloned();
    row.expect("a coordinator").as_array()[0].text()
}

fn handed_back(raw: &mut Raw) -> u64 {
    let info = raw.cmd(&["CLUSTER", "INFO"]).text();
    info_field(&info, "ringkv_handed_back")
        .and_then(|v| v.parse().ok())
        .expect("ringkv_handed_back in CLUSTER INFO")
}

/// The values of a siblings array, sorted (their order is by version, not by time).
fn values(reply: Resp) -> Vec<String> {
    let mut values: Vec<String> = reply.as_array().iter().map(Resp::text).collect();
    values.sort();
    values
}

#[test]
fn debug_and_consistency_are_checked() {
    let cluster = Cluster::start(3, &[]);
    let mut raw = cluster.node(0).raw();
    let bad = raw.cmd(&["CONSISTENCY", "READ", "4"]);
    assert!(bad.as_error().contains("between 1 and N=3"), "{bad:?}");
    raw.expect(&["CONSISTENCY", "READ", "QUORUM", "WRITE", "1"], Resp::ok());
    let info = raw.cmd(&["CLIENT", "INFO"]).text();
    assert!(info.contains("read-quorum=2 write-quorum=1"), "{info}");
    let unknown = raw.cmd(&["DEBUG", "ISOLATE", "node9"]);
    assert!(unknown.as_error().contains("unknown node node9"), "{unknown:?}");
    // Without enable_debug_command, DEBUG is refused.
    let single = common::Server::start(&[]);
    let refused = single.raw().cmd(&["DEBUG", "HEAL"]);
    assert!(
        refused.as_error().starts_with("ERR DEBUG command not allowed"),
        "{refused:?}"
    );
}

/// Runs the binary with `args` and returns its exit status and stderr.
fn refused_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["--port", "0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringkv");
    assert!(!out.status.success(), "{args:?} should not start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_quorums_are_refused_at_start() {
    assert!(refused_start(&["--replicas", "2", "--read-quorum", "3"]).contains("R = 3 is above N = 2"));
    assert!(refused_start(&["--write-quorum", "4"]).contains("W = 4 is above N = 3"));
    let conf = tempfile::NamedTempFile::new().expect("conf");
    std::fs::write(
        conf.path(),
        "[cluster]\nnode_id = \"a\"\nsecret = \"s\"\n[[cluster.members]]\nid = \"a\"\naddress = \"127.0.0.1:1\"\npeer = \"127.0.0.1:2\"\n",
    )
    .expect("write conf");
    let path = conf.path().display().to_string();
    assert!(refused_start(&["--config", &path]).contains("N = 3 is above the 1 members listed"));
}

#[test]
fn a_peer_with_the_wrong_secret_is_refused() {
    let cluster = Cluster::start(2, &[]);
    // A client speaking RESP to the peer port proves nothing and is dropped.
    let info = cluster.node(0).raw().cmd(&["CLUSTER", "NODES"]).text();
    let peer_port: u16 = info
        .lines()
        .find(|l| l.starts_with("node1 "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|addr| addr.split('@').nth(1))
        .and_then(|p| p.parse().ok())
        .expect("peer port in CLUSTER NODES");
    let mut stranger = Raw::connect(([127, 0, 0, 1], peer_port).into());
    stranger.send_cmd(&["PING"]);
    stranger.assert_closed();
    wait_until(CONVERGE, "the refusal is logged", || {
        cluster.node(0).log().contains("refused")
    });
    assert_eq!(reachable(cluster.node(0)), 2, "the members still reach each other");
}

#[test]
fn listings_of_an_empty_database_skip_the_others_quickly() {
    let cluster = Cluster::start(3, &[]);
    let mut raw = cluster.node(0).raw();
    let mut pipeline = Vec::new();
    for i in 0..5000 {
        pipeline.extend(common::encode(&["SET", &format!("bulk:{i}"), "x"]));
    }
    raw.send(&pipeline);
    for _ in 0..5000 {
        assert_eq!(raw.read_reply(), Resp::ok());
    }
    raw.expect(&["SELECT", "3"], Resp::ok());
    // Every member scans only its own slots of db 3, not all of db 0 once per slot run.
    raw.expect(&["DBSIZE"], Resp::int(0));
    raw.expect(&["KEYS", "*"], Resp::Array(Vec::new()));
    raw.expect(&["SELECT", "0"], Resp::ok());
    raw.expect(&["DBSIZE"], Resp::int(5000));
}

#[test]
fn flushdb_is_not_undone_by_replication_still_in_flight() {
    let cluster = Cluster::start(3, &[]);
    let mut raw = cluster.node(1).raw();
    for round in 0..500 {
        raw.expect(&["SET", "a", "1"], Resp::ok());
        raw.expect(&["INCR", "a"], Resp::int(2));
        raw.expect(&["FLUSHDB"], Resp::ok());
        assert_eq!(
            raw.cmd(&["GET", "a"]),
            Resp::Nil,
            "round {round}: a copy outlived FLUSHDB"
        );
    }
}
