//! One client connection: read whatever arrived, run every complete request
//! in order, then send all their replies in one write (pipelining costs one
//! syscall per read, not per command).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::clients::ClientHandle;
use super::parse::RequestParser;
use super::reply::Reply;
use crate::cluster::coordinator::Scope;
use crate::cluster::messages::Forwarded;
use crate::cluster::preread;
use crate::cluster::ring::MemberIndex;
use crate::cluster::slot::key_slot;
use crate::commands::{self, Prepared};
use crate::join::join_in_order;
use crate::node::Node;
use crate::replica::KeyAt;
use futures_util::future::{join, join_all};
use smallvec::SmallVec;

/// Per-connection state that commands read and change.
pub struct Session {
    /// This client in the registry.
    pub handle: Arc<ClientHandle>,
    /// Selected database.
    pub db: u8,
    /// Protocol version, 2 or 3.
    pub resp: u8,
    /// Whether AUTH succeeded or no password is needed.
    pub authenticated: bool,
    /// Close after sending the pending replies (QUIT, SHUTDOWN, protocol error).
    pub closing: bool,
    /// A command of this batch wrote: its replies wait for the durability policy.
    pub wrote: bool,
    /// CONSISTENCY READ override (0: the configured R).
    pub read_quorum: u8,
    /// CONSISTENCY WRITE override (0: the configured W).
    pub write_quorum: u8,
    /// A peer forwarded this command to us as its keys' coordinator: run it
    /// here, never forward it again.
    pub forwarded: bool,
}

impl Session {
    /// The database and quorums this connection's key operations use.
    pub fn scope(&self) -> Scope {
        Scope {
            db: self.db,
            read: self.read_quorum,
            write: self.write_quorum,
        }
    }

    /// A copy for running one command of a pipeline concurrently with others.
    pub fn fork(&self) -> Session {
        Session {
            handle: self.handle.clone(),
            db: self.db,
            resp: self.resp,
            authenticated: self.authenticated,
            closing: false,
            wrote: false,
            read_quorum: self.read_quorum,
            write_quorum: self.write_quorum,
            forwarded: self.forwarded,
        }
    }

    /// A fresh session for a connection, authenticated if no password is set.
    pub fn new(handle: Arc<ClientHandle>, authenticated: bool) -> Session {
        Session {
            handle,
            db: 0,
            resp: 2,
            authenticated,
            closing: false,
            wrote: false,
            read_quorum: 0,
            write_quorum: 0,
            forwarded: false,
        }
    }
}

const READ_BUFFER: usize = 16 * 1024;

/// A buffer grown past this by one big request or reply is given back.
const KEEP_BUFFER: usize = 1024 * 1024;

/// A pipeline group's vector grown past this many commands is given back.
const KEEP_GROUP: usize = 1024;

/// Serves one client until it disconnects, errs, idles out or the node stops.
pub async fn serve(node: Arc<Node>, mut stream: TcpStream, handle: Arc<ClientHandle>) {
    let _ = stream.set_nodelay(true);
    let (limits, needs_auth) = {
        let settings = node.settings.read();
        (settings.limits, !settings.requirepass.is_empty())
    };
    let mut session = Session::new(handle, !needs_auth);
    let mut parser = RequestParser::new(limits, !needs_auth);
    let mut input = BytesMut::with_capacity(READ_BUFFER);
    let mut output = BytesMut::with_capacity(READ_BUFFER);
    let mut shutdown = node.shutdown_signal();
    // A pipeline's group of commands, kept across reads so that its vector is not grown anew for each.
    let mut group: Vec<Grouped> = Vec::new();
    while !session.closing {
        if input.capacity() - input.len() < READ_BUFFER / 4 {
            // Doubling keeps a large value's arrival linear, not quadratic.
            input.reserve(READ_BUFFER.max(input.len()));
        }
        let timeout = node.timeout.load(Ordering::Relaxed);
        let read = tokio::select! {
            read = stream.read_buf(&mut input) => read,
            _ = shutdown.changed() => break,
            _ = idle(timeout) => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => session.handle.heard_from(),
        }
        // In a cluster a key command waits for peers: the single-key commands
        // of a pipeline that touch distinct keys run concurrently, replies
        // still in order. Anything else runs alone, in order.
        let concurrent = node.coordinator.is_clustered() && session.authenticated;
        loop {
            let parsed = parser.next(&mut input);
            // For a groupable command: its command's index, its key's slot and whether the key is in the group.
            let groupable = match &parsed {
                Ok(Some(argv)) if concurrent => commands::single_key(argv).map(|(index, key)| {
                    let slot = key_slot(key);
                    let clash = group.iter().any(|other| other.slot == slot && other.argv[1] == *key);
                    (index, slot, clash)
                }),
                _ => None,
            };
            if let Some((index, slot, clash)) = groupable {
                if clash {
                    run_group(&node, &mut session, &mut group, &mut output).await;
                }
                if let Ok(Some(argv)) = parsed {
                    group.push(Grouped { index, slot, argv });
                }
                continue;
            }
            if !group.is_empty() {
                run_group(&node, &mut session, &mut group, &mut output).await;
            }
            match parsed {
                Ok(Some(argv)) if argv.is_empty() => {}
                Ok(Some(argv)) => {
                    let reply = commands::execute(&node, &mut session, argv).await;
                    parser.set_authenticated(session.authenticated);
                    if let Some(reply) = reply {
                        reply.encode(session.resp, &mut output);
                    }
                    if session.closing {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(client = session.handle.id, "protocol error: {e}");
                    Reply::Error(format!("ERR {e}")).encode(session.resp, &mut output);
                    session.closing = true;
                    break;
                }
            }
        }
        if session.wrote {
            session.wrote = false;
            if let Err(e) = node.coordinator.local().durability().before_reply().await {
                // The writes may not survive a crash: do not acknowledge them.
                tracing::error!("cannot persist writes: {e}");
                output.clear();
                Reply::Error(format!("ERR storage error: {e}")).encode(session.resp, &mut output);
                session.closing = true;
            }
        }
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                break;
            }
            output.clear();
            if output.capacity() > KEEP_BUFFER {
                output = BytesMut::with_capacity(READ_BUFFER);
            }
        }
        if input.is_empty() && input.capacity() > KEEP_BUFFER {
            input = BytesMut::with_capacity(READ_BUFFER);
        }
        if group.capacity() > KEEP_GROUP {
            group = Vec::new();
        }
    }
    let _ = stream.shutdown().await;
}

/// A command of a pipeline's group: its command table index, its key's slot (hashed once for every step on the
/// key's way; a new key is compared byte by byte only with those in its slot) and its arguments.
struct Grouped {
    index: usize,
    slot: u16,
    argv: Vec<Bytes>,
}

/// A coordinator's share of a group: the member, the positions of its commands in the group, and the commands with
/// their keys' slots.
type ForwardBatch = (MemberIndex, Vec<usize>, Vec<(Forwarded, u16)>);

/// Runs single-key commands on distinct keys concurrently and appends their
/// replies in order, leaving `group` empty. The writes other members
/// coordinate go to each in one message.
async fn run_group(node: &Arc<Node>, session: &mut Session, group: &mut Vec<Grouped>, output: &mut BytesMut) {
    if group.len() == 1 {
        if let Some(Grouped { index, slot, argv }) = group.pop() {
            let prepared = commands::prepare_found(node, session, index, argv, Some(slot));
            if let Some(reply) = commands::perform(node, session, prepared).await {
                reply.encode(session.resp, output);
            }
        }
        return;
    }
    // Every command of the group has its key at argv[1].
    let db = session.scope().db;
    node.coordinator.local().prefetch(
        group
            .iter()
            .map(|grouped| KeyAt::in_slot(db, grouped.slot, &grouped.argv[1])),
    );
    let mut forks: Vec<Session> = group.iter().map(|_| session.fork()).collect();
    let n = group.len();
    // What runs here, by position; the forwards leave a `None`.
    let mut local: Vec<Option<Prepared>> = Vec::with_capacity(n);
    let mut batches: Vec<ForwardBatch> = Vec::with_capacity(2);
    for (i, (fork, Grouped { index, slot, argv })) in forks.iter_mut().zip(group.drain(..)).enumerate() {
        match commands::prepare_found(node, fork, index, argv, Some(slot)) {
            Prepared::Forward(to, _, argv) => {
                let command = (commands::forwarded(fork, argv), slot);
                match batches.iter_mut().find(|(member, _, _)| *member == to) {
                    Some((_, at, commands)) => {
                        at.push(i);
                        commands.push(command);
                    }
                    None => {
                        let (mut at, mut commands) = (Vec::with_capacity(n), Vec::with_capacity(n));
                        at.push(i);
                        commands.push(command);
                        batches.push((to, at, commands));
                    }
                }
                local.push(None);
            }
            prepared => local.push(Some(prepared)),
        }
    }
    let coordinator = &node.coordinator;
    let scope = session.scope();
    // The reads to make ahead, with their slots: sized at the first (a filtered iterator's lower bound is 0, so
    // collecting grew the list), and a group without reads allocates nothing.
    let (mut reads, mut slots) = (Vec::new(), SmallVec::<[u16; 16]>::new());
    for (key, slot) in local.iter().flatten().filter_map(Prepared::read_key) {
        if reads.is_empty() {
            reads.reserve_exact(n);
        }
        reads.push(key.clone());
        slots.push(slot.unwrap_or_else(|| key_slot(key)));
    }
    let forwards = batches
        .into_iter()
        .map(|(to, at, commands)| async move { (at, coordinator.forward_batch(to, commands).await) });
    // One future per position, a forward's finished at once: join_in_order then sizes its list once instead of growing
    // it, and each growth moved every command's future (callgrind: 270 instructions per SET at -P 16).
    let runs = forks.iter_mut().zip(local).map(|(fork, prepared)| async move {
        match prepared {
            Some(prepared) => commands::perform(node, fork, prepared).await,
            None => None,
        }
    });
    let run_here = coordinator.batching(async {
        if reads.len() < 2 {
            return join_in_order(runs).await;
        }
        let answers = coordinator.read_many_in(scope, &reads, &slots).await;
        preread::scope(scope.db, reads, answers, join_in_order(runs)).await
    });
    let (mut replies, forwarded) = join(run_here, join_all(forwards)).await;
    for (at, answers) in forwarded {
        for (i, answer) in at.into_iter().zip(answers) {
            replies[i] = Some(answer.unwrap_or_else(Reply::from));
        }
    }
    for reply in replies.into_iter().flatten() {
        reply.encode(session.resp, output);
    }
    session.wrote |= forks.iter().any(|fork| fork.wrote);
}

/// Sleeps for the idle timeout, or forever when it is 0.
async fn idle(seconds: u64) {
    if seconds == 0 {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}
