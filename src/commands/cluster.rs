//! Cluster commands: CLUSTER (Redis Cluster's views, computed from the ring,
//! so cluster-aware clients route straight to a key's coordinator), ours
//! (CLUSTER RING, CLUSTER PREFLIST), CONSISTENCY (a connection's R and W) and
//! DEBUG ISOLATE/HEAL (deterministic partitions for tests).

use std::fmt::Write;

use bytes::Bytes;

use super::connection::help;
use super::{is, parse_i64, Ctx};
use crate::cluster::ring::MemberIndex;
use crate::cluster::slot::{key_slot, SLOTS};
use crate::error::{CommandError, CommandResult};
use crate::server::reply::Reply;

const CLUSTER_HELP: &[&str] = &[
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "INFO",
    "    Return information about the cluster.",
    "MYID",
    "    Return the node id.",
    "NODES",
    "    Return cluster configuration seen by node, one line per member.",
    "SLOTS",
    "    Return each slot range's preference list, coordinator first.",
    "SHARDS",
    "    Return the slot ranges grouped by preference list.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "COUNTKEYSINSLOT <slot>",
    "    Return the number of keys in <slot> across the cluster.",
    "GETKEYSINSLOT <slot> <count>",
    "    Return key names stored in <slot>, at most <count>.",
    "RING",
    "    Return each member's tokens and share of the ring.",
    "PREFLIST <key>",
    "    Return the preference list of <key>: coordinator, replicas, unreachable.",
    "HELP",
    "    Print this help.",
];

/// CLUSTER <subcommand> ...
pub async fn cluster(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let sub = String::from_utf8_lossy(&argv[1]).to_lowercase();
    let want = |n: usize| {
        if argv.len() == n {
            Ok(())
        } else {
            Err(CommandError::Other(format!(
                "wrong number of arguments for 'cluster|{sub}' command"
            )))
        }
    };
    match sub.as_str() {
        "info" => want(2).map(|()| Reply::Verbatim(info(ctx))),
        "myid" => want(2).map(|()| Reply::bulk_string(ctx.node.identity.node_id.clone())),
        "nodes" => want(2).map(|()| Reply::Verbatim(nodes(ctx))),
        "slots" => want(2).map(|()| slots(ctx)),
        "shards" => want(2).map(|()| shards(ctx)),
        "keyslot" => want(3).map(|()| Reply::Int(i64::from(key_slot(&argv[2])))),
        "countkeysinslot" => {
            want(3)?;
            let slot = parse_slot(&argv[2])?;
            let coordinator = &ctx.node.coordinator;
            let answer = coordinator.keys(ctx.session.db, slot..=slot, None, 0, true).await?;
            Ok(Reply::Int(answer.count as i64))
        }
        "getkeysinslot" => {
            want(4)?;
            let slot = parse_slot(&argv[2])?;
            let count = usize::try_from(parse_i64(&argv[3])?)
                .map_err(|_| CommandError::Other("Invalid number of keys".into()))?;
            if count == 0 {
                return Ok(Reply::Array(Vec::new()));
            }
            let coordinator = &ctx.node.coordinator;
            let answer = coordinator
                .keys(ctx.session.db, slot..=slot, None, count, false)
                .await?;
            Ok(Reply::Array(
                answer
                    .keys
                    .into_iter()
                    .take(count)
                    .map(|(_, key)| Reply::Bulk(key))
                    .collect(),
            ))
        }
        "ring" => want(2).map(|()| ring(ctx)),
        "preflist" => want(3).map(|()| preflist(ctx, &argv[2])),
        "help" => Ok(help(CLUSTER_HELP)),
        _ => Err(CommandError::UnknownSubcommand {
            sub: String::from_utf8_lossy(&argv[1]).into_owned(),
            command: "CLUSTER".into(),
        }),
    }
}

fn parse_slot(arg: &[u8]) -> CommandResult<u16> {
    parse_i64(arg)
        .ok()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n < SLOTS)
        .ok_or_else(|| CommandError::Other("Invalid or out of range slot".into()))
}

/// A slot's preference list with reachable members first, so the first is
/// the coordinator a write would go to.
fn live_order(ctx: &Ctx<'_>, list: &[MemberIndex]) -> Vec<MemberIndex> {
    let coordinator = &ctx.node.coordinator;
    let (mut up, down): (Vec<MemberIndex>, Vec<MemberIndex>) = list.iter().partition(|&&m| coordinator.is_reachable(m));
    up.extend(down);
    up
}

/// Maximal runs of slots with the same (reachability-ordered) preference list.
fn ranges(ctx: &Ctx<'_>) -> Vec<(u16, u16, Vec<MemberIndex>)> {
    let ring = ctx.node.coordinator.membership().ring();
    let mut out: Vec<(u16, u16, Vec<MemberIndex>)> = Vec::new();
    for (first, last, list) in ring.slot_ranges() {
        let list = live_order(ctx, list);
        match out.last_mut() {
            Some(prev) if prev.2 == list && prev.1 + 1 == first => prev.1 = last,
            _ => out.push((first, last, list)),
        }
    }
    out
}

fn node_entry(ctx: &Ctx<'_>, member: MemberIndex) -> Reply {
    let m = ctx.node.coordinator.membership().member(member);
    Reply::Array(vec![
        Reply::bulk_string(m.address.ip().to_string()),
        Reply::Int(i64::from(m.address.port())),
        Reply::bulk_string(m.id.clone()),
        Reply::Map(Vec::new()),
    ])
}

/// CLUSTER SLOTS: `[first, last, coordinator, replica...]` per range.
fn slots(ctx: &Ctx<'_>) -> Reply {
    let ranges = ranges(ctx);
    Reply::Array(
        ranges
            .into_iter()
            .map(|(first, last, list)| {
                let mut entry = vec![Reply::Int(i64::from(first)), Reply::Int(i64::from(last))];
                entry.extend(list.iter().map(|&m| node_entry(ctx, m)));
                Reply::Array(entry)
            })
            .collect(),
    )
}

/// CLUSTER SHARDS: slot ranges grouped by preference list; the coordinator is the master.
fn shards(ctx: &Ctx<'_>) -> Reply {
    let mut groups: Vec<(Vec<MemberIndex>, Vec<Reply>)> = Vec::new();
    for (first, last, list) in ranges(ctx) {
        let slots = [Reply::Int(i64::from(first)), Reply::Int(i64::from(last))];
        match groups.iter_mut().find(|(l, _)| *l == list) {
            Some((_, ranges)) => ranges.extend(slots),
            None => groups.push((list, slots.into())),
        }
    }
    let coordinator = &ctx.node.coordinator;
    let shard = |(list, slots): (Vec<MemberIndex>, Vec<Reply>)| {
        let nodes = list
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                let member = coordinator.membership().member(m);
                let field = |name: &'static [u8], value: Reply| (Reply::bulk_static(name), value);
                Reply::Map(vec![
                    field(b"id", Reply::bulk_string(member.id.clone())),
                    field(b"port", Reply::Int(i64::from(member.address.port()))),
                    field(b"ip", Reply::bulk_string(member.address.ip().to_string())),
                    field(b"endpoint", Reply::bulk_string(member.address.ip().to_string())),
                    field(b"role", Reply::bulk_static(if i == 0 { b"master" } else { b"replica" })),
                    field(b"replication-offset", Reply::Int(0)),
                    field(
                        b"health",
                        Reply::bulk_static(if coordinator.is_reachable(m) {
                            b"online"
                        } else {
                            b"failed"
                        }),
                    ),
                ])
            })
            .collect();
        Reply::Map(vec![
            (Reply::bulk_static(b"slots"), Reply::Array(slots)),
            (Reply::bulk_static(b"nodes"), Reply::Array(nodes)),
        ])
    };
    Reply::Array(groups.into_iter().map(shard).collect())
}

fn info(ctx: &Ctx<'_>) -> String {
    let coordinator = &ctx.node.coordinator;
    let membership = coordinator.membership();
    let ring = membership.ring();
    let ok = (0..SLOTS).filter(|&s| coordinator.coordinator_of(s).is_some()).count();
    let members = membership.members().len();
    let reachable = (0..members as MemberIndex)
        .filter(|&m| coordinator.is_reachable(m))
        .count();
    let (read, write) = coordinator.quorums(Default::default());
    let stats = &coordinator.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    format!(
        "cluster_state:{}\r\ncluster_slots_assigned:{SLOTS}\r\ncluster_slots_ok:{ok}\r\ncluster_slots_pfail:0\r\n\
         cluster_slots_fail:{}\r\ncluster_known_nodes:{members}\r\ncluster_size:{members}\r\n\
         cluster_current_epoch:1\r\ncluster_my_epoch:1\r\nringkv_reachable_nodes:{reachable}\r\n\
         ringkv_replicas:{}\r\nringkv_read_quorum:{read}\r\nringkv_write_quorum:{write}\r\n\
         ringkv_forwarded:{}\r\nringkv_forward_messages:{}\r\nringkv_handed_back:{}\r\nringkv_replicated:{}\r\n\
         ringkv_replication_messages:{}\r\nringkv_read_repairs:{}\r\nringkv_quorum_failures:{}\r\n",
        if ok == usize::from(SLOTS) { "ok" } else { "fail" },
        usize::from(SLOTS) - ok,
        ring.replicas(),
        load(&stats.forwarded),
        load(&stats.forward_messages),
        load(&stats.handed_back),
        load(&stats.replicated),
        load(&stats.replication_messages),
        load(&stats.read_repairs),
        load(&stats.quorum_failures),
    )
}

/// CLUSTER NODES in Redis's format; each member shows the slots it coordinates.
fn nodes(ctx: &Ctx<'_>) -> String {
    let coordinator = &ctx.node.coordinator;
    let membership = coordinator.membership();
    let ring = membership.ring();
    let mut text = String::new();
    for (index, member) in membership.members().iter().enumerate() {
        let index = index as MemberIndex;
        let myself = index == membership.me();
        let up = coordinator.is_reachable(index);
        let flags = match (myself, up) {
            (true, _) => "myself,master",
            (false, true) => "master",
            (false, false) => "master,fail",
        };
        let _ = write!(
            text,
            "{} {}@{} {flags} - 0 0 1 {}",
            member.id,
            member.address,
            member.peer.port(),
            if up { "connected" } else { "disconnected" }
        );
        for (first, last, list) in ring.slot_ranges() {
            if list.first() == Some(&index) {
                if first == last {
                    let _ = write!(text, " {first}");
                } else {
                    let _ = write!(text, " {first}-{last}");
                }
            }
        }
        text.push('\n');
    }
    text
}

/// CLUSTER RING: per member, its tokens and its share of the slots.
fn ring(ctx: &Ctx<'_>) -> Reply {
    let membership = ctx.node.coordinator.membership();
    let ring = membership.ring();
    let rows = membership
        .members()
        .iter()
        .enumerate()
        .map(|(index, member)| {
            let index = index as MemberIndex;
            let primary = ring.primary_slots(index);
            let tokens: Vec<Reply> = ring
                .tokens()
                .iter()
                .filter(|(_, m)| *m == index)
                .map(|(token, _)| Reply::bulk_string(format!("{token:016x}")))
                .collect();
            let field = |name: &'static [u8], value: Reply| (Reply::bulk_static(name), value);
            Reply::Map(vec![
                field(b"id", Reply::bulk_string(member.id.clone())),
                field(b"zone", Reply::bulk_string(member.zone.clone())),
                field(b"primary_slots", Reply::Int(primary as i64)),
                field(
                    b"share",
                    Reply::bulk_string(format!("{:.2}%", primary as f64 * 100.0 / f64::from(SLOTS))),
                ),
                field(b"replica_slots", Reply::Int(ring.replica_slots(index) as i64)),
                field(b"tokens", Reply::Array(tokens)),
            ])
        })
        .collect();
    Reply::Array(rows)
}

/// CLUSTER PREFLIST key: `[id, address, role]` per replica, in ring order.
fn preflist(ctx: &Ctx<'_>, key: &[u8]) -> Reply {
    let coordinator = &ctx.node.coordinator;
    let ring = coordinator.membership().ring();
    let slot = key_slot(key);
    let chosen = coordinator.coordinator_of(slot);
    let rows = ring
        .preference_list(slot)
        .iter()
        .map(|&m| {
            let member = coordinator.membership().member(m);
            let role: &'static [u8] = if Some(m) == chosen {
                b"coordinator"
            } else if coordinator.is_reachable(m) {
                b"replica"
            } else {
                b"unreachable"
            };
            Reply::Array(vec![
                Reply::bulk_string(member.id.clone()),
                Reply::bulk_string(member.address.to_string()),
                Reply::bulk_static(role),
            ])
        })
        .collect();
    Reply::Array(rows)
}

/// READONLY and READWRITE: accepted by a cluster node and change nothing.
///
/// Redis Cluster clients that read from replicas (redis-py's
/// `read_from_replicas`, Lettuce's `ReadFrom.REPLICA`, ...) send READONLY on
/// every connection to a node CLUSTER SLOTS lists as a replica, and drop the
/// connection if it fails. A ringkv node serves reads of every key anyway,
/// at the connection's read quorum, so nothing is stale and there is no mode
/// to switch. A single node answers as a Redis without cluster support does.
pub fn readonly(ctx: &Ctx<'_>) -> CommandResult<Reply> {
    if ctx.node.coordinator.is_clustered() {
        Ok(Reply::Ok)
    } else {
        Err(CommandError::Other("This instance has cluster support disabled".into()))
    }
}

/// CONSISTENCY [READ n|ONE|QUORUM|ALL] [WRITE n|ONE|QUORUM|ALL] | RESET:
/// this connection's R and W; without arguments, shows them.
pub fn consistency(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let replicas = ctx.node.coordinator.membership().ring().replicas();
    if argv.len() == 2 && is(&argv[1], "reset") {
        ctx.session.read_quorum = 0;
        ctx.session.write_quorum = 0;
    } else if argv.len() > 1 {
        if argv.len().is_multiple_of(2) {
            return Err(CommandError::Syntax);
        }
        let (mut read, mut write) = (ctx.session.read_quorum, ctx.session.write_quorum);
        for pair in argv[1..].chunks(2) {
            let level = parse_level(&pair[1], replicas)?;
            if is(&pair[0], "read") {
                read = level;
            } else if is(&pair[0], "write") {
                write = level;
            } else {
                return Err(CommandError::Syntax);
            }
        }
        (ctx.session.read_quorum, ctx.session.write_quorum) = (read, write);
    } else {
        let (read, write) = ctx.node.coordinator.quorums(ctx.scope());
        let field = |name: &'static [u8], n: usize| (Reply::bulk_static(name), Reply::Int(n as i64));
        return Ok(Reply::Map(vec![
            field(b"read", read),
            field(b"write", write),
            field(b"replicas", replicas),
        ]));
    }
    let handle = &ctx.session.handle;
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    handle.read_quorum.store(ctx.session.read_quorum, relaxed);
    handle.write_quorum.store(ctx.session.write_quorum, relaxed);
    Ok(Reply::Ok)
}

/// A quorum level: a number of replicas 1..=N, ONE, QUORUM (a majority) or ALL.
fn parse_level(arg: &[u8], replicas: usize) -> CommandResult<u8> {
    let n = if is(arg, "one") {
        1
    } else if is(arg, "quorum") {
        replicas / 2 + 1
    } else if is(arg, "all") {
        replicas
    } else {
        usize::try_from(parse_i64(arg)?).map_err(|_| CommandError::NotInteger)?
    };
    if n == 0 || n > replicas {
        return Err(CommandError::Other(format!(
            "consistency level must be between 1 and N={replicas} (or ONE, QUORUM, ALL)"
        )));
    }
    Ok(n as u8)
}

/// DEBUG ISOLATE <node-id ...> | HEAL: cut this node off from the named
/// members (both ways) and mend it, when `enable_debug_command` allows.
pub fn debug(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    if !ctx.node.config.server.enable_debug_command {
        return Err(CommandError::Other(
            "DEBUG command not allowed. If the enable-debug-command option is set to \"no\", you need to set it \
             in the configuration file (server.enable_debug_command = true), and then restart the server."
                .into(),
        ));
    }
    let coordinator = &ctx.node.coordinator;
    let Some(bus) = coordinator.bus() else {
        return Err(CommandError::Other(
            "DEBUG ISOLATE and HEAL need cluster members".into(),
        ));
    };
    if is(&argv[1], "heal") && argv.len() == 2 {
        bus.heal();
        return Ok(Reply::Ok);
    }
    if !is(&argv[1], "isolate") || argv.len() < 3 {
        return Err(CommandError::UnknownSubcommand {
            sub: String::from_utf8_lossy(&argv[1]).into_owned(),
            command: "DEBUG".into(),
        });
    }
    let membership = coordinator.membership();
    let mut peers = Vec::new();
    for name in &argv[2..] {
        let index = membership
            .members()
            .iter()
            .position(|m| m.id.as_bytes() == name.as_ref())
            .ok_or_else(|| CommandError::Other(format!("unknown node {}", String::from_utf8_lossy(name))))?;
        peers.push(index as MemberIndex);
    }
    bus.isolate(&peers);
    Ok(Reply::Ok)
}
