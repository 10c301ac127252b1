//! Server commands: COMMAND, INFO, CONFIG, DBSIZE, FLUSHDB, FLUSHALL, TIME,
//! SHUTDOWN.

use std::fmt::Write;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::connection::{help, REDIS_VERSION};
use super::{flag, is, parse_i64, Ctx, Spec, COMMANDS};
use crate::clock::{now_ms, now_us};
use crate::cluster::slot::SLOTS;
use crate::error::{CommandError, CommandResult};
use crate::glob;
use crate::server::reply::Reply;

fn command_info(spec: &Spec) -> Reply {
    let flags = flag::NAMES
        .iter()
        .filter(|(bit, _)| spec.flags & bit != 0)
        .map(|(_, name)| Reply::Status(name))
        .collect();
    let (first, last, step) = spec.keys;
    Reply::Array(vec![
        Reply::bulk_static(spec.name.as_bytes()),
        Reply::Int(i64::from(spec.arity)),
        Reply::Set(flags),
        Reply::Int(i64::from(first)),
        Reply::Int(i64::from(last)),
        Reply::Int(i64::from(step)),
        Reply::Set(vec![Reply::StatusOwned(format!("@{}", spec.group))]),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

fn command_docs(spec: &Spec) -> Reply {
    let field = |k: &'static [u8], v: &'static str| (Reply::bulk_static(k), Reply::bulk_static(v.as_bytes()));
    Reply::Map(vec![
        field(b"summary", spec.summary),
        field(b"since", spec.since),
        field(b"group", spec.group),
    ])
}

fn named_specs(names: &[Bytes]) -> impl Iterator<Item = Option<&'static Spec>> + '_ {
    names.iter().map(|name| super::lookup(name).map(|i| &COMMANDS[i]))
}

const COMMAND_HELP: &[&str] = &[
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about all commands.",
    "COUNT",
    "    Return the total number of commands in this server.",
    "LIST",
    "    Return a list of all commands in this server.",
    "INFO [<command-name> ...]",
    "    Return details about multiple commands.",
    "DOCS [<command-name> ...]",
    "    Return documentation details about multiple commands.",
    "HELP",
    "    Print this help.",
];

/// COMMAND [COUNT | LIST | INFO name... | DOCS name... | HELP]
pub fn command(_ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let Some(sub) = argv.get(1) else {
        return Ok(Reply::Array(COMMANDS.iter().map(command_info).collect()));
    };
    let rest = &argv[2..];
    match sub {
        s if is(s, "count") && rest.is_empty() => Ok(Reply::Int(COMMANDS.len() as i64)),
        s if is(s, "list") && rest.is_empty() => Ok(Reply::Array(
            COMMANDS.iter().map(|s| Reply::bulk_static(s.name.as_bytes())).collect(),
        )),
        s if is(s, "info") => Ok(Reply::Array(if rest.is_empty() {
            COMMANDS.iter().map(command_info).collect()
        } else {
            named_specs(rest)
                .map(|spec| spec.map_or(Reply::Nil, command_info))
                .collect()
        })),
        s if is(s, "docs") => {
            let specs: Vec<&Spec> = if rest.is_empty() {
                COMMANDS.iter().collect()
            } else {
                named_specs(rest).flatten().collect()
            };
            Ok(Reply::Map(
                specs
                    .into_iter()
                    .map(|spec| (Reply::bulk_static(spec.name.as_bytes()), command_docs(spec)))
                    .collect(),
            ))
        }
        s if is(s, "help") => Ok(help(COMMAND_HELP)),
        s if ["count", "list"].iter().any(|n| is(s, n)) => Err(CommandError::WrongArity(format!(
            "command|{}",
            String::from_utf8_lossy(s).to_lowercase()
        ))),
        s => Err(CommandError::UnknownSubcommand {
            sub: String::from_utf8_lossy(s).into_owned(),
            command: "COMMAND".into(),
        }),
    }
}

/// A memory amount as Redis's `memtoll` reads it: bytes, or with a unit
/// (k = 1000, kb = 1024, m, mb, g, gb), case-insensitive.
fn parse_memory(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?.to_ascii_lowercase();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit: u64 = match &text[digits.len()..] {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// Live keys and keys with an expiry, per database.
async fn keyspace_counts(ctx: &mut Ctx<'_>) -> CommandResult<Vec<(u8, u64, u64)>> {
    let now = now_ms();
    let mut out = Vec::new();
    for db in 0..ctx.node.databases() {
        let (mut keys, mut expires) = (0u64, 0u64);
        ctx.node
            .coordinator
            .scan_local(db, 0, &mut |_, _, record| {
                let mut live = record.live(now).peekable();
                if live.peek().is_some() {
                    keys += 1;
                    if live.any(|s| s.expire_at_ms.is_some()) {
                        expires += 1;
                    }
                }
                ControlFlow::Continue(())
            })
            .await?;
        if keys > 0 {
            out.push((db, keys, expires));
        }
    }
    Ok(out)
}

/// INFO [section ...]
pub async fn info(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let wanted: Vec<String> = argv[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| ["all", "everything", "default"].contains(&w.as_str()));
    let want = |section: &str| all || wanted.iter().any(|w| w == section);
    let node = ctx.node;
    let config = &node.config;
    let replica = node.coordinator.local();
    // A node with members is a cluster node, and says so as Redis Cluster
    // does (redis_mode:cluster, cluster_enabled:1): clients and tools that
    // pick their mode from INFO (redis-py's test suite, `redis-cli --cluster`)
    // then read CLUSTER SLOTS and send each key straight to its coordinator.
    // Nothing changes for plain clients: they do not read this, and ringkv
    // never answers MOVED or ASK, so one plain connection to any node still
    // reaches every key.
    let clustered = config.cluster.is_clustered();
    let mut text = String::new();
    if want("server") {
        let uptime = node.started.elapsed().as_secs();
        let _ = write!(
            text,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nringkv_version:{}\r\nredis_mode:{}\r\n\
             os:{} {}\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\n\
             uptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nexecutable:ringkv\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            if clustered { "cluster" } else { "standalone" },
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            node.identity.node_id,
            node.port,
            uptime / 86400,
        );
    }
    if want("clients") {
        let _ = write!(
            text,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\r\n",
            node.clients.len(),
            node.settings.read().maxclients
        );
    }
    if want("memory") {
        let rss = node.sample_memory();
        let max = node.maxmemory.load(Ordering::Relaxed);
        let _ = write!(
            text,
            "# Memory\r\nused_memory:{rss}\r\nused_memory_rss:{rss}\r\nmaxmemory:{max}\r\nmaxmemory_policy:noeviction\r\n\r\n"
        );
    }
    if want("persistence") {
        let engine = config.storage.engine;
        let _ = write!(
            text,
            "# Persistence\r\nloading:0\r\nringkv_engine:{}\r\nringkv_disk_bytes:{}\r\naof_enabled:{}\r\n\
             appendfsync:{}\r\nrdb_changes_since_last_save:0\r\nrdb_bgsave_in_progress:0\r\n\r\n",
            engine.as_str(),
            replica.engine().disk_bytes(),
            u8::from(engine.is_durable()),
            config.storage.fsync.as_str(),
        );
    }
    if want("stats") {
        let s = &node.stats;
        let _ = write!(
            text,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\nexpired_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\n\r\n",
            s.connections.load(Ordering::Relaxed),
            s.commands.load(Ordering::Relaxed),
            s.rejected.load(Ordering::Relaxed),
            s.expired.load(Ordering::Relaxed),
            s.hits.load(Ordering::Relaxed),
            s.misses.load(Ordering::Relaxed),
        );
    }
    if want("replication") {
        text.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    }
    if want("cluster") {
        let members = node.coordinator.membership().members().len();
        let (read, write) = node.coordinator.quorums(Default::default());
        let replicas = node.coordinator.membership().ring().replicas();
        let _ = write!(
            text,
            "# Cluster\r\ncluster_enabled:{}\r\nringkv_members:{members}\r\nringkv_replicas:{replicas}\r\n\
             ringkv_read_quorum:{read}\r\nringkv_write_quorum:{write}\r\n\r\n",
            u8::from(clustered),
        );
    }
    if want("keyspace") {
        text.push_str("# Keyspace\r\n");
        for (db, keys, expires) in keyspace_counts(ctx).await? {
            let _ = write!(text, "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
        text.push_str("\r\n");
    }
    // Sections end with a blank line except the last, as in Redis; none: empty.
    let text = text.trim_end();
    Ok(Reply::Verbatim(if text.is_empty() {
        String::new()
    } else {
        format!("{text}\r\n")
    }))
}

/// The CONFIG GET view of every parameter ringkv knows.
fn config_params(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let config = &ctx.node.config;
    let settings = ctx.node.settings.read();
    let durable = config.storage.engine.is_durable();
    vec![
        ("bind", config.server.bind.to_string()),
        ("port", ctx.node.port.to_string()),
        ("requirepass", settings.requirepass.clone()),
        ("maxclients", settings.maxclients.to_string()),
        ("timeout", ctx.node.timeout.load(Ordering::Relaxed).to_string()),
        ("databases", config.server.databases.to_string()),
        ("proto-max-bulk-len", settings.limits.max_bulk_len.to_string()),
        (
            "client-query-buffer-limit",
            settings.limits.query_buffer_limit.to_string(),
        ),
        ("dir", config.storage.data_dir.display().to_string()),
        ("save", settings.save.clone()),
        ("appendonly", if durable { "yes" } else { "no" }.to_string()),
        ("appendfsync", config.storage.fsync.as_str().to_string()),
        ("maxmemory", ctx.node.maxmemory.load(Ordering::Relaxed).to_string()),
        ("maxmemory-policy", "noeviction".to_string()),
        (
            "disable-thp",
            if config.server.disable_thp { "yes" } else { "no" }.to_string(),
        ),
    ]
}

const CONFIG_HELP: &[&str] = &[
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "HELP",
    "    Print this help.",
];

/// CONFIG GET pattern... | SET name value... | RESETSTAT | HELP
pub fn config(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let sub = String::from_utf8_lossy(&argv[1]).to_lowercase();
    let arity = || CommandError::WrongArity(format!("config|{sub}"));
    match sub.as_str() {
        "get" => {
            if argv.len() < 3 {
                return Err(arity());
            }
            let params = config_params(ctx);
            let pairs = params
                .into_iter()
                .filter(|(name, _)| argv[2..].iter().any(|p| glob::matches(p, name.as_bytes(), true)))
                .map(|(name, value)| (Reply::bulk_static(name.as_bytes()), Reply::bulk_string(value)))
                .collect();
            Ok(Reply::Map(pairs))
        }
        "set" => {
            if argv.len() < 4 || !argv.len().is_multiple_of(2) {
                return Err(arity());
            }
            // Validate every pair first: CONFIG SET is all or nothing.
            let mut settings = ctx.node.settings.read().clone();
            let mut maxmemory = None;
            let mut timeout = None;
            for pair in argv[2..].chunks(2) {
                let (name, value) = (&pair[0], &pair[1]);
                let bad = |reason: &str| {
                    CommandError::Other(format!(
                        "CONFIG SET failed (possibly related to argument '{}') - {reason}",
                        String::from_utf8_lossy(name)
                    ))
                };
                let number = |min: i64| {
                    let n = parse_i64(value).map_err(|_| bad("argument couldn't be parsed into an integer"))?;
                    if n < min || n > i64::from(i32::MAX) {
                        return Err(bad(&format!("argument must be between {min} and 2147483647 inclusive")));
                    }
                    Ok(n)
                };
                match name {
                    n if is(n, "requirepass") => settings.requirepass = String::from_utf8_lossy(value).into_owned(),
                    n if is(n, "maxclients") => settings.maxclients = number(1)? as usize,
                    n if is(n, "timeout") => timeout = Some(number(0)? as u64),
                    n if is(n, "save") => settings.save = String::from_utf8_lossy(value).into_owned(),
                    n if is(n, "maxmemory") => {
                        maxmemory = Some(parse_memory(value).ok_or_else(|| bad("argument must be a memory value"))?)
                    }
                    n if is(n, "appendonly") || is(n, "appendfsync") => {
                        return Err(bad("ringkv sets durability at start (storage.engine, storage.fsync)"))
                    }
                    _ => {
                        return Err(CommandError::Other(format!(
                            "Unknown option or number of arguments for CONFIG SET - '{}'",
                            String::from_utf8_lossy(name)
                        )))
                    }
                }
            }
            *ctx.node.settings.write() = settings;
            if let Some(seconds) = timeout {
                ctx.node.timeout.store(seconds, Ordering::Relaxed);
            }
            if let Some(bytes) = maxmemory {
                ctx.node.maxmemory.store(bytes, Ordering::Relaxed);
                ctx.node.sample_memory();
            }
            Ok(Reply::Ok)
        }
        "resetstat" => {
            let s = &ctx.node.stats;
            for counter in [&s.commands, &s.connections, &s.rejected, &s.hits, &s.misses, &s.expired] {
                counter.store(0, Ordering::Relaxed);
            }
            Ok(Reply::Ok)
        }
        "help" => Ok(help(CONFIG_HELP)),
        _ => Err(CommandError::UnknownSubcommand {
            sub: String::from_utf8_lossy(&argv[1]).into_owned(),
            command: "CONFIG".into(),
        }),
    }
}

/// DBSIZE: live keys in the selected database.
pub async fn dbsize(ctx: &mut Ctx<'_>) -> CommandResult<Reply> {
    let coordinator = &ctx.node.coordinator;
    let answer = coordinator.keys(ctx.session.db, 0..=SLOTS - 1, None, 0, true).await?;
    Ok(Reply::Int(answer.count as i64))
}

/// FLUSHDB / FLUSHALL [ASYNC | SYNC]
pub async fn flush(ctx: &mut Ctx<'_>, argv: &[Bytes], all: bool) -> CommandResult<Reply> {
    match argv.get(1) {
        None => {}
        Some(mode) if argv.len() == 2 && (is(mode, "async") || is(mode, "sync")) => {}
        Some(_) => return Err(CommandError::Syntax),
    }
    let db = if all { None } else { Some(ctx.session.db) };
    ctx.node.coordinator.flush(db).await?;
    Ok(Reply::Ok)
}

/// TIME: [unix seconds, microseconds].
pub fn time() -> CommandResult<Reply> {
    let us = now_us();
    Ok(Reply::Array(vec![
        Reply::bulk_string((us / 1_000_000).to_string()),
        Reply::bulk_string((us % 1_000_000).to_string()),
    ]))
}

/// SHUTDOWN [NOSAVE | SAVE] [NOW] [FORCE]: data is synced either way; the
/// connection closes without a reply, as with Redis.
pub fn shutdown(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Option<Reply>> {
    for arg in &argv[1..] {
        if is(arg, "abort") {
            return Err(CommandError::Other("No shutdown in progress.".into()));
        }
        if !["nosave", "save", "now", "force"].iter().any(|o| is(arg, o)) {
            return Err(CommandError::Syntax);
        }
    }
    tracing::info!("SHUTDOWN requested by client {}", ctx.session.handle.id);
    ctx.node.shut_down();
    ctx.session.closing = true;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::parse_memory;

    #[test]
    fn memory_values_read_like_redis() {
        assert_eq!(parse_memory(b"100"), Some(100));
        assert_eq!(parse_memory(b"1k"), Some(1000));
        assert_eq!(parse_memory(b"1KB"), Some(1024));
        assert_eq!(parse_memory(b"2mb"), Some(2 * 1024 * 1024));
        assert_eq!(parse_memory(b"1g"), Some(1_000_000_000));
        for bad in [&b""[..], b"mb", b"-1", b"1tb", b"1.5mb"] {
            assert_eq!(parse_memory(bad), None, "{:?}", bad);
        }
    }
}
