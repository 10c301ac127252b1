//! The command table and dispatch: name → arity, flags, key positions and the
//! handler, checked in the same order as Redis (unknown command, auth, arity).
//! Handlers live in one file per command family.

mod cluster;
mod connection;
mod keyspace;
mod lcs;
mod route;
mod server;
mod strings;

pub use route::forwarded;

use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;

use crate::cluster::coordinator::Scope;
use crate::cluster::messages::Forwarded;
use crate::cluster::ring::MemberIndex;
use crate::error::{CommandError, CommandResult};
use crate::node::{Node, Stats};
use crate::replica::KeyAt;
use crate::server::clients::ClientHandle;
use crate::server::connection::Session;
use crate::server::reply::Reply;

/// Command flags, as COMMAND reports them.
pub mod flag {
    /// Changes data.
    pub const WRITE: u16 = 1;
    /// Only reads data.
    pub const READONLY: u16 = 1 << 1;
    /// O(1) or O(log N).
    pub const FAST: u16 = 1 << 2;
    /// Allowed before AUTH.
    pub const NO_AUTH: u16 = 1 << 3;
    /// May grow memory.
    pub const DENYOOM: u16 = 1 << 4;
    /// Administrative.
    pub const ADMIN: u16 = 1 << 5;
    /// Allowed while loading and on stale replicas.
    pub const STALE: u16 = 1 << 6;

    /// Names in COMMAND's order.
    pub const NAMES: [(u16, &str); 7] = [
        (WRITE, "write"),
        (READONLY, "readonly"),
        (DENYOOM, "denyoom"),
        (ADMIN, "admin"),
        (NO_AUTH, "no_auth"),
        (STALE, "stale"),
        (FAST, "fast"),
    ];
}

/// Which handler runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Cmd {
    // connection
    Ping,
    Echo,
    Quit,
    Reset,
    Hello,
    Auth,
    Select,
    Client,
    // server
    Command,
    Info,
    Config,
    Dbsize,
    Flushdb,
    Flushall,
    Time,
    Shutdown,
    // strings
    Get,
    Set,
    Setnx,
    Setex,
    Psetex,
    Getset,
    Getdel,
    Getex,
    Mget,
    Mset,
    Msetnx,
    Append,
    Strlen,
    Getrange,
    Lcs,
    Setrange,
    Incr,
    Decr,
    Incrby,
    Decrby,
    Incrbyfloat,
    // keyspace
    Del,
    Unlink,
    Exists,
    Touch,
    Type,
    Keys,
    Scan,
    Randomkey,
    Rename,
    Renamenx,
    Expire,
    Pexpire,
    Expireat,
    Pexpireat,
    Expiretime,
    Pexpiretime,
    Ttl,
    Pttl,
    Persist,
    // versions and cluster
    Vget,
    Vset,
    Consistency,
    Cluster,
    Readonly,
    Readwrite,
    Debug,
}

/// One row of the command table.
#[derive(Debug)]
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis arity: exact if positive, at least `-arity` if negative (name included).
    pub arity: i32,
    /// [`flag`] bits.
    pub flags: u16,
    /// First key, last key (negative counts from the end), step; 0 if no keys.
    pub keys: (i32, i32, i32),
    /// COMMAND DOCS group.
    pub group: &'static str,
    /// COMMAND DOCS summary.
    pub summary: &'static str,
    /// Redis version that introduced it.
    pub since: &'static str,
    /// Handler.
    pub cmd: Cmd,
}

use flag::*;

macro_rules! spec {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $group:literal, $since:literal, $cmd:ident, $summary:literal) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            keys: $keys,
            group: $group,
            summary: $summary,
            since: $since,
            cmd: Cmd::$cmd,
        }
    };
}

const NOKEY: (i32, i32, i32) = (0, 0, 0);
const KEY1: (i32, i32, i32) = (1, 1, 1);
const ALLKEYS: (i32, i32, i32) = (1, -1, 1);

/// Every command ringkv answers. Anything else gets the unknown-command error.
#[rustfmt::skip]
pub static COMMANDS: &[Spec] = &[
    spec!("ping", -1, FAST | STALE, NOKEY, "connection", "1.0.0", Ping, "Returns the server's liveliness response."),
    spec!("echo", 2, FAST, NOKEY, "connection", "1.0.0", Echo, "Returns the given string."),
    spec!("quit", -1, FAST | NO_AUTH | STALE, NOKEY, "connection", "1.0.0", Quit, "Closes the connection."),
    spec!("reset", 1, FAST | NO_AUTH | STALE, NOKEY, "connection", "6.2.0", Reset, "Resets the connection."),
    spec!("hello", -1, FAST | NO_AUTH | STALE, NOKEY, "connection", "6.0.0", Hello, "Handshakes with the Redis server."),
    spec!("auth", -2, FAST | NO_AUTH | STALE, NOKEY, "connection", "1.0.0", Auth, "Authenticates the connection."),
    spec!("select", 2, FAST | STALE, NOKEY, "connection", "1.0.0", Select, "Changes the selected database."),
    spec!("client", -2, STALE, NOKEY, "connection", "2.4.0", Client, "A container for client connection commands."),
    spec!("command", -1, STALE, NOKEY, "server", "2.8.13", Command, "Returns detailed information about all commands."),
    spec!("info", -1, STALE, NOKEY, "server", "1.0.0", Info, "Returns information and statistics about the server."),
    spec!("config", -2, ADMIN | STALE, NOKEY, "server", "2.0.0", Config, "A container for server configuration commands."),
    spec!("dbsize", 1, READONLY, NOKEY, "server", "1.0.0", Dbsize, "Returns the number of keys in the database."),
    spec!("flushdb", -1, WRITE, NOKEY, "server", "1.0.0", Flushdb, "Removes all keys from the current database."),
    spec!("flushall", -1, WRITE, NOKEY, "server", "1.0.0", Flushall, "Removes all keys from all databases."),
    spec!("time", 1, FAST | STALE, NOKEY, "server", "2.6.0", Time, "Returns the server time."),
    spec!("shutdown", -1, ADMIN | STALE, NOKEY, "server", "1.0.0", Shutdown, "Synchronously saves the database(s) to disk and shuts down the server."),
    spec!("get", 2, READONLY | FAST, KEY1, "string", "1.0.0", Get, "Returns the string value of a key."),
    spec!("set", -3, WRITE | DENYOOM, KEY1, "string", "1.0.0", Set, "Sets the string value of a key, ignoring its type."),
    spec!("setnx", 3, WRITE | DENYOOM | FAST, KEY1, "string", "1.0.0", Setnx, "Set the string value of a key only when the key doesn't exist."),
    spec!("setex", 4, WRITE | DENYOOM, KEY1, "string", "2.0.0", Setex, "Sets the string value and expiration time of a key."),
    spec!("psetex", 4, WRITE | DENYOOM, KEY1, "string", "2.6.0", Psetex, "Sets both string value and expiration time in milliseconds of a key."),
    spec!("getset", 3, WRITE | DENYOOM | FAST, KEY1, "string", "1.0.0", Getset, "Returns the previous string value of a key after setting it to a new value."),
    spec!("getdel", 2, WRITE | FAST, KEY1, "string", "6.2.0", Getdel, "Returns the string value of a key after deleting the key."),
    spec!("getex", -2, WRITE | FAST, KEY1, "string", "6.2.0", Getex, "Returns the string value of a key after setting its expiration time."),
    spec!("mget", -2, READONLY | FAST, ALLKEYS, "string", "1.0.0", Mget, "Atomically returns the string values of one or more keys."),
    spec!("mset", -3, WRITE | DENYOOM, (1, -1, 2), "string", "1.0.1", Mset, "Atomically creates or modifies the string values of one or more keys."),
    spec!("msetnx", -3, WRITE | DENYOOM, (1, -1, 2), "string", "1.0.1", Msetnx, "Atomically modifies the string values of one or more keys only when all keys don't exist."),
    spec!("append", 3, WRITE | DENYOOM | FAST, KEY1, "string", "2.0.0", Append, "Appends a string to the value of a key. Creates the key if it doesn't exist."),
    spec!("strlen", 2, READONLY | FAST, KEY1, "string", "2.2.0", Strlen, "Returns the length of a string value."),
    spec!("getrange", 4, READONLY, KEY1, "string", "2.4.0", Getrange, "Returns a substring of the string stored at a key."),
    spec!("substr", 4, READONLY, KEY1, "string", "1.0.0", Getrange, "Returns a substring from a string value."),
    spec!("lcs", -3, READONLY, (1, 2, 1), "string", "7.0.0", Lcs, "Finds the longest common substring."),
    spec!("setrange", 4, WRITE | DENYOOM, KEY1, "string", "2.2.0", Setrange, "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist."),
    spec!("incr", 2, WRITE | DENYOOM | FAST, KEY1, "string", "1.0.0", Incr, "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist."),
    spec!("decr", 2, WRITE | DENYOOM | FAST, KEY1, "string", "1.0.0", Decr, "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist."),
    spec!("incrby", 3, WRITE | DENYOOM | FAST, KEY1, "string", "1.0.0", Incrby, "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist."),
    spec!("decrby", 3, WRITE | DENYOOM | FAST, KEY1, "string", "1.0.0", Decrby, "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist."),
    spec!("incrbyfloat", 3, WRITE | DENYOOM | FAST, KEY1, "string", "2.6.0", Incrbyfloat, "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist."),
    spec!("del", -2, WRITE, ALLKEYS, "generic", "1.0.0", Del, "Deletes one or more keys."),
    spec!("unlink", -2, WRITE | FAST, ALLKEYS, "generic", "4.0.0", Unlink, "Asynchronously deletes one or more keys."),
    spec!("exists", -2, READONLY | FAST, ALLKEYS, "generic", "1.0.0", Exists, "Determines whether one or more keys exist."),
    spec!("touch", -2, READONLY | FAST, ALLKEYS, "generic", "3.2.1", Touch, "Returns the number of existing keys out of those specified after updating the time they were last accessed."),
    spec!("type", 2, READONLY | FAST, KEY1, "generic", "1.0.0", Type, "Determines the type of value stored at a key."),
    spec!("keys", 2, READONLY, NOKEY, "generic", "1.0.0", Keys, "Returns all key names that match a pattern."),
    spec!("scan", -2, READONLY, NOKEY, "generic", "2.8.0", Scan, "Iterates over the key names in the database."),
    spec!("randomkey", 1, READONLY, NOKEY, "generic", "1.0.0", Randomkey, "Returns a random key name from the database."),
    spec!("rename", 3, WRITE, (1, 2, 1), "generic", "1.0.0", Rename, "Renames a key and overwrites the destination."),
    spec!("renamenx", 3, WRITE | FAST, (1, 2, 1), "generic", "1.0.0", Renamenx, "Renames a key only when the target key name doesn't exist."),
    spec!("expire", -3, WRITE | FAST, KEY1, "generic", "1.0.0", Expire, "Sets the expiration time of a key in seconds."),
    spec!("pexpire", -3, WRITE | FAST, KEY1, "generic", "2.6.0", Pexpire, "Sets the expiration time of a key in milliseconds."),
    spec!("expireat", -3, WRITE | FAST, KEY1, "generic", "1.2.0", Expireat, "Sets the expiration time of a key to a Unix timestamp."),
    spec!("pexpireat", -3, WRITE | FAST, KEY1, "generic", "2.6.0", Pexpireat, "Sets the expiration time of a key to a Unix milliseconds timestamp."),
    spec!("expiretime", 2, READONLY | FAST, KEY1, "generic", "7.0.0", Expiretime, "Returns the expiration time of a key as a Unix timestamp."),
    spec!("pexpiretime", 2, READONLY | FAST, KEY1, "generic", "7.0.0", Pexpiretime, "Returns the expiration time of a key as a Unix milliseconds timestamp."),
    spec!("ttl", 2, READONLY | FAST, KEY1, "generic", "1.0.0", Ttl, "Returns the expiration time in seconds of a key."),
    spec!("pttl", 2, READONLY | FAST, KEY1, "generic", "2.6.0", Pttl, "Returns the expiration time in milliseconds of a key."),
    spec!("persist", 2, WRITE | FAST, KEY1, "generic", "2.2.0", Persist, "Removes the expiration time of a key."),
    spec!("vget", 2, READONLY | FAST, KEY1, "string", "0.1.0", Vget, "Returns a key's causal context token and all its concurrent values."),
    spec!("vset", -4, WRITE | DENYOOM, KEY1, "string", "0.1.0", Vset, "Sets a value superseding exactly the versions a VGET context token covers."),
    spec!("consistency", -1, FAST | STALE, NOKEY, "connection", "0.1.0", Consistency, "Shows or sets this connection's read and write quorums."),
    spec!("cluster", -2, STALE, NOKEY, "cluster", "3.0.0", Cluster, "A container for Redis Cluster commands."),
    spec!("readonly", 1, FAST | STALE, NOKEY, "cluster", "3.0.0", Readonly, "Enables read-only queries for a connection to a Redis Cluster replica node."),
    spec!("readwrite", 1, FAST | STALE, NOKEY, "cluster", "3.0.0", Readwrite, "Enables read-write queries for a connection to a Redis Cluster replica node."),
    spec!("debug", -2, ADMIN | STALE, NOKEY, "server", "1.0.0", Debug, "Debugging commands: ISOLATE and HEAL cut and mend links to peers."),
];

/// Subcommands of container commands, as CLIENT LIST's `cmd=` shows them.
/// A client's last command is an index into COMMANDS, or past its end into this.
static SUBCOMMANDS: &[&str] = &[
    "client|id",
    "client|setname",
    "client|getname",
    "client|setinfo",
    "client|info",
    "client|list",
    "client|help",
    "config|get",
    "config|set",
    "config|resetstat",
    "config|help",
    "command|count",
    "command|list",
    "command|info",
    "command|docs",
    "command|help",
    "cluster|info",
    "cluster|myid",
    "cluster|nodes",
    "cluster|slots",
    "cluster|shards",
    "cluster|keyslot",
    "cluster|countkeysinslot",
    "cluster|getkeysinslot",
    "cluster|ring",
    "cluster|preflist",
    "cluster|help",
];

/// The last-command index for `spec`'s subcommand `sub`, if it has one.
fn subcommand(spec: &Spec, sub: &[u8]) -> Option<usize> {
    if !matches!(spec.cmd, Cmd::Client | Cmd::Config | Cmd::Command | Cmd::Cluster) {
        return None;
    }
    SUBCOMMANDS
        .iter()
        .position(|full| full.split_once('|').is_some_and(|(c, s)| c == spec.name && is(sub, s)))
        .map(|i| COMMANDS.len() + i)
}

/// The name CLIENT LIST shows for a last-command index.
pub fn command_name(index: usize) -> &'static str {
    match COMMANDS.get(index) {
        Some(spec) => spec.name,
        None => SUBCOMMANDS.get(index - COMMANDS.len()).copied().unwrap_or("NULL"),
    }
}

/// Longest command name, for the case-folding buffer.
const MAX_NAME: usize = 16;

fn table() -> &'static AHashMap<&'static [u8], usize> {
    static TABLE: std::sync::OnceLock<AHashMap<&'static [u8], usize>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        COMMANDS
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_bytes(), i))
            .collect()
    })
}

/// Finds a command by name in any case; returns its table index.
pub fn lookup(name: &[u8]) -> Option<usize> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut lower = [0u8; MAX_NAME];
    for (dst, src) in lower.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    table().get(&lower[..name.len()]).copied()
}

/// What a handler gets: the node and this connection's session.
pub struct Ctx<'a> {
    /// Shared node state.
    pub node: &'a Arc<Node>,
    /// This connection.
    pub session: &'a mut Session,
    /// The slot of `argv[1]`, if a pipeline's grouping has hashed it.
    pub key_slot: Option<u16>,
}

impl Ctx<'_> {
    /// The database and quorums key operations of this connection use.
    pub fn scope(&self) -> Scope {
        self.session.scope()
    }

    /// `argv[1]` in this connection's database: the key of a single-key command, with its slot.
    pub fn first_key<'k>(&self, argv: &'k [Bytes]) -> KeyAt<'k> {
        match self.key_slot {
            Some(slot) => KeyAt::in_slot(self.session.db, slot, &argv[1]),
            None => KeyAt::new(self.session.db, &argv[1]),
        }
    }
}

/// Where a request goes, as [`prepare`] finds it.
pub enum Prepared {
    /// Answered already: unknown command, wrong arity, not authenticated, out of memory, or unroutable.
    Answered(Reply),
    /// A keyed write whose keys this member coordinates.
    Forward(MemberIndex, &'static Spec, Vec<Bytes>),
    /// A multi-key write whose keys have several coordinators: one command per key.
    Split(&'static Spec, Vec<Bytes>),
    /// Runs here; the slot of `argv[1]` if it is known already.
    Run(&'static Spec, Vec<Bytes>, Option<u16>),
}

impl Prepared {
    /// The key of a single-key read that runs here, with its slot if known: its quorum read can be made ahead,
    /// with others.
    pub fn read_key(&self) -> Option<(&Bytes, Option<u16>)> {
        match self {
            Prepared::Run(spec, argv, slot) if spec.flags & (READONLY | WRITE) == READONLY && spec.keys == KEY1 => {
                Some((argv.get(1)?, *slot))
            }
            _ => None,
        }
    }
}

/// Runs one request. `None` means send nothing (SHUTDOWN closes silently).
pub async fn execute(node: &Arc<Node>, session: &mut Session, argv: Vec<Bytes>) -> Option<Reply> {
    let prepared = prepare(node, session, argv);
    perform(node, session, prepared).await
}

/// Checks a request and says where it runs, counting it as Redis does; a pipeline gathers the forwards of its
/// commands into one message per coordinator before it [`perform`]s the rest.
pub fn prepare(node: &Arc<Node>, session: &mut Session, argv: Vec<Bytes>) -> Prepared {
    let Some(index) = lookup(&argv[0]) else {
        return Prepared::Answered(CommandError::unknown_command(&argv[0], &argv[1..]).into());
    };
    prepare_found(node, session, index, argv, None)
}

/// [`prepare`] of a request whose command was looked up already: the command table's entry `index`. `slot` is the
/// slot of `argv[1]` if the caller has hashed it (a pipeline's grouping does), so that no later step hashes it again.
pub fn prepare_found(
    node: &Arc<Node>,
    session: &mut Session,
    index: usize,
    argv: Vec<Bytes>,
    slot: Option<u16>,
) -> Prepared {
    let spec = &COMMANDS[index];
    session
        .handle
        .ran(argv.get(1).and_then(|sub| subcommand(spec, sub)).unwrap_or(index));
    Stats::bump(&node.stats.commands);
    // Redis 7.0's order: unknown command, arity, then authentication.
    let argc = argv.len() as i32;
    if (spec.arity > 0 && argc != spec.arity) || argc < -spec.arity {
        return Prepared::Answered(CommandError::WrongArity(spec.name.to_string()).into());
    }
    if !session.authenticated && spec.flags & NO_AUTH == 0 {
        return Prepared::Answered(CommandError::NoAuth.into());
    }
    if spec.flags & DENYOOM != 0 && node.over_maxmemory() {
        return Prepared::Answered(CommandError::OutOfMemory.into());
    }
    if spec.flags & WRITE != 0 {
        session.wrote = true;
        if !session.forwarded && spec.keys != NOKEY && node.coordinator.is_clustered() {
            match route::plan(node, spec, &argv, slot) {
                Ok(route::Plan::Here) => {}
                Ok(route::Plan::Forward(to)) => return Prepared::Forward(to, spec, argv),
                Ok(route::Plan::Split) => return Prepared::Split(spec, argv),
                Err(e) => return Prepared::Answered(e.into()),
            }
        }
    }
    Prepared::Run(spec, argv, slot)
}

/// Runs a request [`prepare`]d with this session.
pub async fn perform(node: &Arc<Node>, session: &mut Session, prepared: Prepared) -> Option<Reply> {
    let result = match prepared {
        Prepared::Answered(reply) => return Some(reply),
        Prepared::Forward(to, spec, argv) => {
            let keys = route::key_positions(spec, argv.len());
            route::forward(node, session, to, argv, keys).await
        }
        Prepared::Split(spec, argv) => route::split(node, session, spec.cmd, &argv).await,
        Prepared::Run(spec, argv, slot) => {
            let mut ctx = Ctx {
                node,
                session,
                key_slot: slot,
            };
            return match run(spec.cmd, &mut ctx, &argv).await {
                Ok(reply) => reply,
                Err(e) => Some(e.into()),
            };
        }
    };
    Some(result.unwrap_or_else(Reply::from))
}

/// The key of a data command on exactly one key (GET, SET, INCR, ...), which
/// may run concurrently with commands on other keys, and the command's table
/// index (for [`prepare_found`]); `None` for anything else.
pub fn single_key(argv: &[Bytes]) -> Option<(usize, &Bytes)> {
    let index = lookup(argv.first()?)?;
    let spec = &COMMANDS[index];
    let data = spec.flags & (READONLY | WRITE) != 0;
    (data && spec.keys == KEY1 && argv.len() >= 2).then(|| (index, &argv[1]))
}

/// Runs a command a peer forwarded to this node as its keys' coordinator.
/// Only keyed writes are forwarded; anything else is refused.
pub async fn execute_forwarded(node: &Arc<Node>, command: Forwarded) -> Reply {
    let keyed_write = command
        .argv
        .first()
        .and_then(|name| lookup(name))
        .filter(|&i| COMMANDS[i].flags & WRITE != 0 && COMMANDS[i].keys != NOKEY);
    let Some(index) = keyed_write else {
        return Reply::Error("ERR only keyed writes can be forwarded".into());
    };
    let mut session = Session::new(ClientHandle::detached(), true);
    session.db = command.db;
    session.resp = command.resp;
    session.read_quorum = command.read_quorum;
    session.write_quorum = command.write_quorum;
    session.forwarded = true;
    let prepared = prepare_found(node, &mut session, index, command.argv, None);
    perform(node, &mut session, prepared).await.unwrap_or(Reply::Nil)
}

async fn run(cmd: Cmd, ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Option<Reply>> {
    let reply = match cmd {
        Cmd::Ping => connection::ping(ctx, argv),
        Cmd::Echo => Ok(Reply::Bulk(argv[1].clone())),
        Cmd::Quit => connection::quit(ctx),
        Cmd::Reset => connection::reset(ctx),
        Cmd::Hello => connection::hello(ctx, argv),
        Cmd::Auth => connection::auth(ctx, argv),
        Cmd::Select => connection::select(ctx, argv),
        Cmd::Client => connection::client(ctx, argv),
        Cmd::Command => server::command(ctx, argv),
        Cmd::Info => server::info(ctx, argv).await,
        Cmd::Config => server::config(ctx, argv),
        Cmd::Dbsize => server::dbsize(ctx).await,
        Cmd::Flushdb => server::flush(ctx, argv, false).await,
        Cmd::Flushall => server::flush(ctx, argv, true).await,
        Cmd::Time => server::time(),
        Cmd::Shutdown => return server::shutdown(ctx, argv),
        Cmd::Get => strings::get(ctx, argv).await,
        Cmd::Set => strings::set(ctx, argv).await,
        Cmd::Setnx => strings::setnx(ctx, argv).await,
        Cmd::Setex => strings::setex(ctx, argv, 1000).await,
        Cmd::Psetex => strings::setex(ctx, argv, 1).await,
        Cmd::Getset => strings::getset(ctx, argv).await,
        Cmd::Getdel => strings::getdel(ctx, argv).await,
        Cmd::Getex => strings::getex(ctx, argv).await,
        Cmd::Mget => strings::mget(ctx, argv).await,
        Cmd::Mset => strings::mset(ctx, argv, false).await,
        Cmd::Msetnx => strings::mset(ctx, argv, true).await,
        Cmd::Append => strings::append(ctx, argv).await,
        Cmd::Strlen => strings::strlen(ctx, argv).await,
        Cmd::Getrange => strings::getrange(ctx, argv).await,
        Cmd::Lcs => lcs::lcs(ctx, argv).await,
        Cmd::Setrange => strings::setrange(ctx, argv).await,
        Cmd::Incr => strings::incr_by(ctx, &argv[1], 1).await,
        Cmd::Decr => strings::incr_by(ctx, &argv[1], -1).await,
        Cmd::Incrby => strings::incr_by(ctx, &argv[1], parse_i64(&argv[2])?).await,
        Cmd::Decrby => {
            let by = parse_i64(&argv[2])?
                .checked_neg()
                .ok_or_else(|| CommandError::Other("decrement would overflow".into()))?;
            strings::incr_by(ctx, &argv[1], by).await
        }
        Cmd::Incrbyfloat => strings::incrbyfloat(ctx, argv).await,
        Cmd::Del | Cmd::Unlink => keyspace::del(ctx, argv).await,
        Cmd::Exists | Cmd::Touch => keyspace::exists(ctx, argv).await,
        Cmd::Type => keyspace::type_of(ctx, argv).await,
        Cmd::Keys => keyspace::keys(ctx, argv).await,
        Cmd::Scan => keyspace::scan(ctx, argv).await,
        Cmd::Randomkey => keyspace::randomkey(ctx).await,
        Cmd::Rename => keyspace::rename(ctx, argv, false).await,
        Cmd::Renamenx => keyspace::rename(ctx, argv, true).await,
        Cmd::Expire => keyspace::expire(ctx, argv, "expire", 1000, false).await,
        Cmd::Pexpire => keyspace::expire(ctx, argv, "pexpire", 1, false).await,
        Cmd::Expireat => keyspace::expire(ctx, argv, "expireat", 1000, true).await,
        Cmd::Pexpireat => keyspace::expire(ctx, argv, "pexpireat", 1, true).await,
        Cmd::Expiretime => keyspace::ttl(ctx, argv, keyspace::TtlKind::ExpireTime { unit: 1000 }).await,
        Cmd::Pexpiretime => keyspace::ttl(ctx, argv, keyspace::TtlKind::ExpireTime { unit: 1 }).await,
        Cmd::Ttl => keyspace::ttl(ctx, argv, keyspace::TtlKind::Remaining { unit: 1000 }).await,
        Cmd::Pttl => keyspace::ttl(ctx, argv, keyspace::TtlKind::Remaining { unit: 1 }).await,
        Cmd::Persist => keyspace::persist(ctx, argv).await,
        Cmd::Vget => strings::vget(ctx, argv).await,
        Cmd::Vset => strings::vset(ctx, argv).await,
        Cmd::Consistency => cluster::consistency(ctx, argv),
        Cmd::Cluster => cluster::cluster(ctx, argv).await,
        Cmd::Readonly | Cmd::Readwrite => cluster::readonly(ctx),
        Cmd::Debug => cluster::debug(ctx, argv),
    };
    reply.map(Some)
}

/// Parses a 64-bit integer exactly as Redis's `string2ll`: optional `-`, no
/// `+`, no spaces, no leading zeros.
pub fn parse_i64(arg: &[u8]) -> CommandResult<i64> {
    let digits = arg.strip_prefix(b"-").unwrap_or(arg);
    let canonical = !digits.is_empty()
        && digits.len() <= 20
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || arg == b"0");
    if !canonical {
        return Err(CommandError::NotInteger);
    }
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(CommandError::NotInteger)
}

/// Parses a float as Redis's `string2ld`: no spaces, no NaN.
pub fn parse_f64(arg: &[u8]) -> CommandResult<f64> {
    let text = std::str::from_utf8(arg).map_err(|_| CommandError::NotFloat)?;
    if text.is_empty() || text.starts_with(|c: char| c.is_whitespace()) || text.ends_with(|c: char| c.is_whitespace()) {
        return Err(CommandError::NotFloat);
    }
    let value: f64 = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => text.parse().map_err(|_| CommandError::NotFloat)?,
    };
    if value.is_nan() {
        return Err(CommandError::NotFloat);
    }
    Ok(value)
}

/// Case-insensitive comparison of an argument with an option name.
pub fn is(arg: &[u8], option: &str) -> bool {
    arg.eq_ignore_ascii_case(option.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for spec in COMMANDS {
            assert!(spec.name.len() <= MAX_NAME, "{} too long", spec.name);
            assert_eq!(spec.name, spec.name.to_lowercase());
            assert_eq!(
                lookup(spec.name.to_uppercase().as_bytes()).map(|i| COMMANDS[i].name),
                Some(spec.name)
            );
        }
        assert_eq!(table().len(), COMMANDS.len(), "duplicate names");
        assert_eq!(lookup(b"nosuchcommand"), None);
    }

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_i64(b"0").ok(), Some(0));
        assert_eq!(parse_i64(b"-42").ok(), Some(-42));
        assert_eq!(parse_i64(b"9223372036854775807").ok(), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808").ok(), Some(i64::MIN));
        for bad in [
            &b"+1"[..],
            b"01",
            b" 1",
            b"1 ",
            b"",
            b"-",
            b"9223372036854775808",
            b"1.0",
            b"-0",
        ] {
            assert!(parse_i64(bad).is_err(), "{:?}", bad);
        }
        assert!(parse_f64(b"1.5e3").is_ok_and(|f| f == 1500.0));
        assert!(parse_f64(b"nan").is_err());
        assert!(parse_f64(b" 1").is_err());
    }
}
