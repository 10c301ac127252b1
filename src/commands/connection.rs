//! Connection commands: PING, QUIT, RESET, HELLO, AUTH, SELECT, CLIENT.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{command_name, is, parse_i64, Ctx};
use crate::clock::now_ms;
use crate::cluster::coordinator::Scope;
use crate::error::{CommandError, CommandResult};
use crate::server::clients::ClientHandle;
use crate::server::reply::Reply;

/// The Redis version whose behaviour ringkv follows (clients read it).
pub const REDIS_VERSION: &str = "7.0.15";

/// PING [message]
pub fn ping(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    match argv.len() {
        1 => Ok(Reply::Status("PONG")),
        2 => Ok(Reply::Bulk(argv[1].clone())),
        _ => {
            let _ = ctx;
            Err(CommandError::WrongArity("ping".into()))
        }
    }
}

/// QUIT: +OK, then close.
pub fn quit(ctx: &mut Ctx<'_>) -> CommandResult<Reply> {
    ctx.session.closing = true;
    Ok(Reply::Ok)
}

/// RESET: back to a fresh connection's state.
pub fn reset(ctx: &mut Ctx<'_>) -> CommandResult<Reply> {
    let session = &mut *ctx.session;
    session.db = 0;
    session.resp = 2;
    session.authenticated = ctx.node.settings.read().requirepass.is_empty();
    session.handle.db.store(0, Ordering::Relaxed);
    session.handle.resp.store(2, Ordering::Relaxed);
    session.handle.names.lock().name.clear();
    Ok(Reply::Status("RESET"))
}

/// Checks a password for `user`; only the `default` user exists.
fn check_password(ctx: &mut Ctx<'_>, user: &[u8], password: &[u8]) -> CommandResult<()> {
    let required = ctx.node.settings.read().requirepass.clone();
    let ok = user == b"default" && (required.is_empty() || constant_time_eq(required.as_bytes(), password));
    if !ok {
        return Err(CommandError::WrongPass);
    }
    ctx.session.authenticated = true;
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// AUTH [username] password
pub fn auth(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    match argv.len() {
        2 => {
            if ctx.node.settings.read().requirepass.is_empty() {
                return Err(CommandError::AuthNotConfigured);
            }
            check_password(ctx, b"default", &argv[1])?;
        }
        3 => check_password(ctx, &argv[1], &argv[2])?,
        _ => return Err(CommandError::Syntax),
    }
    Ok(Reply::Ok)
}

/// HELLO [protover [AUTH username password] [SETNAME clientname]]
pub fn hello(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let mut resp = ctx.session.resp;
    if let Some(version) = argv.get(1) {
        let version = parse_i64(version)
            .map_err(|_| CommandError::Other("Protocol version is not an integer or out of range".into()))?;
        if !(2..=3).contains(&version) {
            return Err(CommandError::NoProto);
        }
        resp = version as u8;
    }
    let mut name = None;
    let mut i = 2;
    while i < argv.len() {
        if is(&argv[i], "auth") && i + 2 < argv.len() {
            check_password(ctx, &argv[i + 1], &argv[i + 2])?;
            i += 3;
        } else if is(&argv[i], "setname") && i + 1 < argv.len() {
            name = Some(valid_name(&argv[i + 1])?);
            i += 2;
        } else {
            return Err(CommandError::Other(format!(
                "Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&argv[i])
            )));
        }
    }
    if !ctx.session.authenticated {
        return Err(CommandError::HelloNoAuth);
    }
    if let Some(name) = name {
        ctx.session.handle.names.lock().name = name;
    }
    ctx.session.resp = resp;
    ctx.session.handle.resp.store(resp, Ordering::Relaxed);
    let field = |k: &'static [u8], v: Reply| (Reply::bulk_static(k), v);
    Ok(Reply::Map(vec![
        field(b"server", Reply::bulk_static(b"redis")),
        field(b"version", Reply::bulk_static(REDIS_VERSION.as_bytes())),
        field(b"proto", Reply::Int(i64::from(resp))),
        field(b"id", Reply::Int(ctx.session.handle.id as i64)),
        field(b"mode", Reply::bulk_static(b"standalone")),
        field(b"role", Reply::bulk_static(b"master")),
        field(b"modules", Reply::Array(Vec::new())),
    ]))
}

/// SELECT index
pub fn select(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let db = parse_i64(&argv[1])?;
    if db < 0 || db >= i64::from(ctx.node.databases()) {
        return Err(CommandError::DbOutOfRange);
    }
    ctx.session.db = db as u8;
    ctx.session.handle.db.store(db as u8, Ordering::Relaxed);
    Ok(Reply::Ok)
}

/// Client names may not contain spaces, newlines or other special characters.
fn valid_name(name: &[u8]) -> CommandResult<String> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(CommandError::Other(
            "Client names cannot contain spaces, newlines or special characters.".into(),
        ));
    }
    Ok(String::from_utf8_lossy(name).into_owned())
}

/// One CLIENT LIST / CLIENT INFO line, in Redis's field order.
fn client_line(client: &ClientHandle, defaults: (usize, usize), out: &mut String) {
    let effective = |over: u8, default: usize| if over == 0 { default } else { usize::from(over) };
    let now = now_ms();
    let names = client.names.lock().clone();
    let cmd = command_name(client.last_cmd.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags=N db={} sub=0 psub=0 ssub=0 multi=-1 \
         qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r \
         cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={} read-quorum={} write-quorum={}",
        client.id,
        client.addr,
        client.laddr,
        names.name,
        now.saturating_sub(client.created_ms) / 1000,
        now.saturating_sub(client.last_ms.load(Ordering::Relaxed)) / 1000,
        client.db.load(Ordering::Relaxed),
        cmd,
        client.resp.load(Ordering::Relaxed),
        names.lib_name,
        names.lib_ver,
        effective(client.read_quorum.load(Ordering::Relaxed), defaults.0),
        effective(client.write_quorum.load(Ordering::Relaxed), defaults.1),
    );
}

const CLIENT_HELP: &[&str] = &[
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "INFO",
    "    Return information about the current client connection.",
    "LIST [TYPE NORMAL] [ID <id> [<id> ...]]",
    "    Return information about client connections.",
    "SETINFO <LIB-NAME|LIB-VER> <value>",
    "    Set client library name or version.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "HELP",
    "    Print this help.",
];

/// Lines of help text as a RESP array of status replies.
pub fn help(lines: &'static [&'static str]) -> Reply {
    Reply::Array(lines.iter().map(|line| Reply::Status(line)).collect())
}

/// CLIENT ID | SETNAME | GETNAME | SETINFO | INFO | LIST | HELP
pub fn client(ctx: &mut Ctx<'_>, argv: &[Bytes]) -> CommandResult<Reply> {
    let sub = String::from_utf8_lossy(&argv[1]).to_lowercase();
    let arity = |n: usize| {
        if argv.len() == n {
            Ok(())
        } else {
            Err(CommandError::WrongArity(format!("client|{sub}")))
        }
    };
    let handle = &ctx.session.handle;
    let defaults = ctx.node.coordinator.quorums(Scope::default());
    match sub.as_str() {
        "id" => {
            arity(2)?;
            Ok(Reply::Int(handle.id as i64))
        }
        "setname" => {
            arity(3)?;
            handle.names.lock().name = valid_name(&argv[2])?;
            Ok(Reply::Ok)
        }
        "getname" => {
            arity(2)?;
            let name = handle.names.lock().name.clone();
            Ok(if name.is_empty() {
                Reply::Nil
            } else {
                Reply::bulk_string(name)
            })
        }
        "setinfo" => {
            arity(4)?;
            let value = valid_name(&argv[3]).map_err(|_| {
                CommandError::Other(format!(
                    "{} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(&argv[2]).to_lowercase()
                ))
            })?;
            let mut names = handle.names.lock();
            if is(&argv[2], "lib-name") {
                names.lib_name = value;
            } else if is(&argv[2], "lib-ver") {
                names.lib_ver = value;
            } else {
                return Err(CommandError::Other(format!(
                    "Unrecognized option '{}'",
                    String::from_utf8_lossy(&argv[2])
                )));
            }
            Ok(Reply::Ok)
        }
        "info" => {
            arity(2)?;
            let mut line = String::new();
            client_line(handle, defaults, &mut line);
            Ok(Reply::Verbatim(line))
        }
        "list" => {
            let mut ids: Option<Vec<u64>> = None;
            // Every client is a normal one: no replicas, no pub/sub here.
            let mut normal = true;
            let mut i = 2;
            while i < argv.len() {
                if is(&argv[i], "type") && i + 1 < argv.len() {
                    let kind = &argv[i + 1];
                    if !["normal", "master", "replica", "slave", "pubsub"]
                        .iter()
                        .any(|t| is(kind, t))
                    {
                        return Err(CommandError::Other(format!(
                            "Unknown client type '{}'",
                            String::from_utf8_lossy(kind)
                        )));
                    }
                    normal = is(kind, "normal");
                    i += 2;
                } else if is(&argv[i], "id") && i + 1 < argv.len() {
                    let list = argv[i + 1..]
                        .iter()
                        .map(|a| parse_i64(a).ok().filter(|&n| n > 0).map(|n| n as u64))
                        .collect::<Option<Vec<u64>>>()
                        .ok_or_else(|| CommandError::Other("Invalid client ID".into()))?;
                    ids = Some(list);
                    i = argv.len();
                } else {
                    return Err(CommandError::Syntax);
                }
            }
            let mut text = String::new();
            for client in ctx.node.clients.all() {
                if normal && ids.as_ref().is_none_or(|ids| ids.contains(&client.id)) {
                    client_line(&client, defaults, &mut text);
                }
            }
            Ok(Reply::Verbatim(text))
        }
        "help" => Ok(help(CLIENT_HELP)),
        _ => Err(CommandError::UnknownSubcommand {
            sub: String::from_utf8_lossy(&argv[1]).into_owned(),
            command: "CLIENT".into(),
        }),
    }
}
