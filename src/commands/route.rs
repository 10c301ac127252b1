//! Where a keyed write runs in a cluster: here, at its keys' coordinator
//! (forwarded in one hop), or, for DEL, UNLINK, MSET and MSETNX whose keys
//! have different coordinators, split into one command per key, run in
//! parallel. Reads never move: the node the client asked collects the quorum.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;

use super::{run, Cmd, Ctx, Spec};
use crate::cluster::coordinator::Route;
use crate::cluster::messages::Forwarded;
use crate::cluster::ring::MemberIndex;
use crate::error::{CommandError, CommandResult};
use crate::node::Node;
use crate::server::connection::Session;
use crate::server::reply::Reply;

/// What to do with a keyed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// This node coordinates every key.
    Here,
    /// One other member coordinates every key (or the first, for RENAME).
    Forward(MemberIndex),
    /// The keys have different coordinators: one command per key.
    Split,
}

/// Positions of the keys in `argv`, from the command table's (first, last, step).
pub fn key_positions(spec: &Spec, argc: usize) -> impl Iterator<Item = usize> {
    let (first, last, step) = spec.keys;
    let last = if last < 0 { argc as i32 + last } else { last };
    (first..=last.min(argc as i32 - 1))
        .step_by(step.max(1) as usize)
        .map(|i| i as usize)
}

/// Where `argv` (a keyed write) runs; `slot` is the slot of `argv[1]` if the caller has hashed it.
pub fn plan(node: &Node, spec: &Spec, argv: &[Bytes], slot: Option<u16>) -> CommandResult<Plan> {
    let coordinator = &node.coordinator;
    let mut positions = key_positions(spec, argv.len());
    let Some(first) = positions.next() else {
        return Ok(Plan::Here);
    };
    let route = match slot {
        Some(slot) if first == 1 => coordinator.route_slot(slot)?,
        _ => coordinator.route(&argv[first])?,
    };
    for i in positions {
        if coordinator.route(&argv[i])? != route {
            if matches!(spec.cmd, Cmd::Del | Cmd::Unlink | Cmd::Mset | Cmd::Msetnx) {
                return Ok(Plan::Split);
            }
            // RENAME and friends run at the first key's coordinator, which
            // refuses (CROSSSLOT) unless it is a replica of every key.
            break;
        }
    }
    Ok(match route {
        Route::Local => Plan::Here,
        Route::Remote(to) => Plan::Forward(to),
    })
}

/// Sends `argv`, whose keys are at `keys` (positions), to member `to` with this connection's settings.
pub async fn forward(
    node: &Node,
    session: &Session,
    to: MemberIndex,
    argv: Vec<Bytes>,
    keys: impl Iterator<Item = usize>,
) -> CommandResult<Reply> {
    node.coordinator.forward(to, forwarded(session, argv), keys).await
}

/// `argv` as it is forwarded, with the settings of the connection that sent it.
pub fn forwarded(session: &Session, argv: Vec<Bytes>) -> Forwarded {
    Forwarded {
        db: session.db,
        resp: session.resp,
        read_quorum: session.read_quorum,
        write_quorum: session.write_quorum,
        argv,
        copies: Vec::new(),
    }
}

/// Runs a single-key command where its key is coordinated.
async fn run_one(node: &Arc<Node>, template: &Session, cmd: Cmd, argv: Vec<Bytes>) -> Reply {
    let route = match node.coordinator.route(&argv[1]) {
        Ok(route) => route,
        Err(e) => return e.into(),
    };
    let result = match route {
        Route::Remote(to) => forward(node, template, to, argv, std::iter::once(1)).await,
        Route::Local => {
            let mut session = template.fork();
            session.forwarded = true;
            let mut ctx = Ctx {
                node,
                session: &mut session,
                key_slot: None,
            };
            run(cmd, &mut ctx, &argv).await.map(|reply| reply.unwrap_or(Reply::Nil))
        }
    };
    result.unwrap_or_else(Reply::from)
}

/// Runs DEL, UNLINK, MSET or MSETNX one key at a time, in parallel, and
/// combines the replies. Not atomic: each key is written on its own.
pub async fn split(node: &Arc<Node>, session: &Session, cmd: Cmd, argv: &[Bytes]) -> CommandResult<Reply> {
    let name = |text: &'static [u8]| Bytes::from_static(text);
    match cmd {
        Cmd::Del | Cmd::Unlink => {
            let runs = argv[1..]
                .iter()
                .map(|key| run_one(node, session, cmd, vec![argv[0].clone(), key.clone()]));
            let mut deleted = 0;
            for reply in join_all(runs).await {
                match reply {
                    Reply::Int(n) => deleted += n,
                    other => return Ok(other),
                }
            }
            Ok(Reply::Int(deleted))
        }
        Cmd::Mset | Cmd::Msetnx => {
            if argv.len().is_multiple_of(2) {
                let name = if cmd == Cmd::Msetnx { "msetnx" } else { "mset" };
                return Err(CommandError::WrongArity(name.to_string()));
            }
            // A key named twice gets its last value, as with Redis.
            let mut pairs: Vec<(&Bytes, &Bytes)> = Vec::new();
            for pair in argv[1..].chunks(2) {
                pairs.retain(|(key, _)| *key != &pair[0]);
                pairs.push((&pair[0], &pair[1]));
            }
            if cmd == Cmd::Msetnx {
                let now = crate::clock::now_ms();
                let keys: Vec<Bytes> = pairs.iter().map(|(key, _)| (*key).clone()).collect();
                for record in node.coordinator.read_many(session.scope(), &keys).await {
                    if record?.map(|found| found.has_live(now)).transpose()? == Some(true) {
                        return Ok(Reply::Int(0));
                    }
                }
            }
            let runs = pairs.iter().map(|(key, value)| {
                let set = vec![name(b"SET"), (*key).clone(), (*value).clone()];
                run_one(node, session, Cmd::Set, set)
            });
            for reply in join_all(runs).await {
                if reply != Reply::Ok {
                    return Ok(reply);
                }
            }
            Ok(if cmd == Cmd::Msetnx { Reply::Int(1) } else { Reply::Ok })
        }
        _ => Err(CommandError::Other("this command cannot be split per key".into())),
    }
}
