//! The peer bus: authenticated, multiplexed request/response messaging between cluster members.
//!
//! Every node dials every other member once, sends its own requests on the connection it dialed, and answers the
//! requests arriving on the connections it accepted. Each pair of nodes thus shares two TCP connections, and no
//! one has to decide which of two simultaneous dials wins.
//!
//! A new connection carries nothing until both ends have proved, by HMAC-SHA256 challenge and response, that they
//! hold the cluster secret (which never crosses the wire); strangers are refused and logged. After that the
//! connection carries length-delimited frames, each a postcard `(request id, body)`: ids let many requests be in
//! flight and be answered out of order. Frames themselves are not authenticated: the handshake keeps strangers
//! out, it does not defend against someone on the path.
//!
//! Each connection has a single writer task. It takes everything queued since its last write, encodes it straight
//! into one buffer and writes it with one `write_all`, so under load many messages share a syscall. On the
//! answering side it awaits [`Service::before_reply`] once per batch first, so the node can make a whole batch
//! durable with one fsync before acknowledging any of it. Each request is handled in its own task, so a slow one
//! holds up nobody.
//!
//! A lost connection fails its pending calls at once with [`BusError::Closed`], and the dialer reconnects with
//! jittered exponential backoff, cut short when the peer dials in (it is back); calls never wait for a reconnect.
//! A starting node waits for its dialers' first attempts ([`Bus::settle`]) before it takes commands.
//!
//! # Layout
//! - `mod.rs`: the public API and the per-peer state shared by both sides.
//! - `frame.rs`: frame encoding and the coalescing write loop.
//! - `outbox.rs`: the queue between message producers and a connection's writer.
//! - `handshake.rs`: the mutual authentication of a new connection.
//! - `client.rs`: the dialer per peer and the outbound connection, where calls wait by request id.
//! - `server.rs`: the accept loop and the inbound connection, which runs a task per request.
//! - `shared.rs`: byte fields decoded as slices of their frame, not copies.

mod client;
mod frame;
mod handshake;
mod outbox;
mod server;
pub mod shared;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use client::Link;

/// Identifies a member by its index in the cluster's member list, which is the same on every node, so ids can be
/// exchanged without translation.
pub type PeerId = u16;

/// How this node takes part in the bus; built by the node from the cluster configuration.
#[derive(Clone)]
pub struct BusConfig {
    /// This node's own index in `names` and `addresses`.
    pub me: PeerId,
    /// Member names by [`PeerId`], the same list on every node; the handshake authenticates these names.
    pub names: Vec<String>,
    /// Peer-bus address of each member by [`PeerId`]; `me`'s entry is where this node listens.
    pub addresses: Vec<SocketAddr>,
    /// The cluster secret (non-empty) that members prove they know before any message is accepted.
    pub secret: Vec<u8>,
    /// Largest frame (one encoded message) sent or accepted; a larger message fails alone, its connection lives on.
    pub max_frame: usize,
    /// Bounds both a dial and each handshake, so an unresponsive address or a silent stranger costs little.
    pub connect_timeout: Duration,
    /// How long a dialer waits before it redials a peer it could not reach.
    pub redial: Redial,
}

/// A dialer's pause after a failed dial or a lost connection: `first`, doubled after each failure up to `max`, each
/// pause drawn from its upper half so that peers restarted together do not redial in lockstep. A peer that dials in
/// ends the pause at once, so a restarted node is reached as soon as it is back rather than after the pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redial {
    /// The pause after a connection is lost or the first dial fails.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Default for Redial {
    fn default() -> Self {
        Redial {
            first: Duration::from_millis(50),
            max: Duration::from_secs(2),
        }
    }
}

impl fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written so the secret never reaches a log.
        f.debug_struct("BusConfig")
            .field("me", &self.me)
            .field("names", &self.names)
            .field("addresses", &self.addresses)
            .field("secret", &"<redacted>")
            .field("max_frame", &self.max_frame)
            .field("connect_timeout", &self.connect_timeout)
            .field("redial", &self.redial)
            .finish()
    }
}

/// A configuration the bus cannot run with; [`BusConfig::validate`] reports it so the node can fail at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `me` does not index `names`.
    #[error("own member index {me} is out of range for {members} members")]
    MeOutOfRange {
        /// The configured own index.
        me: PeerId,
        /// How many names there are.
        members: usize,
    },
    /// Every member needs exactly one address.
    #[error("{names} member names but {addresses} addresses")]
    AddressCount {
        /// How many names there are.
        names: usize,
        /// How many addresses there are.
        addresses: usize,
    },
    /// More members than a [`PeerId`] can number.
    #[error("{0} members exceed the limit of {max}", max = usize::from(PeerId::MAX) + 1)]
    TooManyMembers(usize),
    /// The handshake identifies members by name, so names must be unique and non-empty.
    #[error("member name {0:?} is empty or used twice")]
    BadName(String),
    /// An empty secret would let anyone in.
    #[error("the cluster secret is empty")]
    EmptySecret,
    /// No message would fit.
    #[error("max_frame must be positive")]
    ZeroMaxFrame,
}

impl BusConfig {
    /// Checks what [`Bus::start`] needs; the node should call it first to report a bad configuration at startup.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let members = self.names.len();
        if members > usize::from(PeerId::MAX) + 1 {
            return Err(ConfigError::TooManyMembers(members));
        }
        if usize::from(self.me) >= members {
            return Err(ConfigError::MeOutOfRange { me: self.me, members });
        }
        if self.addresses.len() != members {
            return Err(ConfigError::AddressCount {
                names: members,
                addresses: self.addresses.len(),
            });
        }
        for (i, name) in self.names.iter().enumerate() {
            if name.is_empty() || self.names[..i].contains(name) {
                return Err(ConfigError::BadName(name.clone()));
            }
        }
        if self.secret.is_empty() {
            return Err(ConfigError::EmptySecret);
        }
        if self.max_frame == 0 {
            return Err(ConfigError::ZeroMaxFrame);
        }
        Ok(())
    }
}

/// What the node does with the requests peers send it; the bus is generic over it so it knows no message types.
pub trait Service: Send + Sync + 'static {
    /// A request one member sends another.
    type Request: Serialize + DeserializeOwned + Send + 'static;
    /// The answer to a [`Service::Request`].
    type Response: Serialize + DeserializeOwned + Send + 'static;

    /// Decodes a request from `body`, a part of `frame`, where the service has a faster way than serde's (its byte
    /// strings slices of `frame`); `None` leaves it to postcard. The default leaves everything.
    fn decode_request(frame: &Bytes, body: &[u8]) -> Option<Self::Request> {
        let _ = (frame, body);
        None
    }

    /// [`Service::decode_request`] for a response (the body after its `Ok` tag).
    fn decode_response(frame: &Bytes, body: &[u8]) -> Option<Self::Response> {
        let _ = (frame, body);
        None
    }

    /// Appends `request` as postcard would, where the service has a faster way than serde's; false (with nothing
    /// appended) leaves it to postcard. The default leaves everything.
    fn encode_request(request: &Self::Request, out: &mut BytesMut) -> bool {
        let _ = (request, out);
        false
    }

    /// [`Service::encode_request`] for a response.
    fn encode_response(response: &Self::Response, out: &mut BytesMut) -> bool {
        let _ = (response, out);
        false
    }

    /// Answers `request` on the spot when that needs no waiting (a read or write of the local copy), which spares a
    /// task per request; a request it hands back goes to [`Service::handle`]. The default hands everything back.
    fn handle_now(&self, from: PeerId, request: Self::Request) -> Result<Self::Response, Self::Request> {
        let _ = from;
        Err(request)
    }

    /// Answers one request from `from`. Runs in its own task: it may await other peers.
    fn handle(self: Arc<Self>, from: PeerId, request: Self::Request) -> impl Future<Output = Self::Response> + Send;

    /// Awaited once before each coalesced batch of responses is written: the node's durability barrier (e.g. an
    /// fsync covering every write whose acknowledgement is in the batch).
    fn before_reply(&self) -> impl Future<Output = ()> + Send;
}

/// Why the answering peer could not produce a response; sent back so the caller fails at once, not at its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteFailure {
    /// The request did not decode as the peer's `Request` type (mismatched versions).
    #[error("the peer could not decode the request")]
    Undecodable,
    /// The handler ended without answering: it panicked, or the peer is shutting down.
    #[error("the handler ended without answering")]
    Aborted,
    /// The response failed to serialize.
    #[error("the peer could not encode the response")]
    Unencodable,
    /// The response is larger than the frame limit.
    #[error("the response exceeds the frame limit")]
    TooLarge,
}

/// Why a call failed; the caller decides whether to retry elsewhere.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Not connected to the peer right now; the call was not sent.
    #[error("peer is unreachable")]
    Unreachable,
    /// The peer is cut off by [`Bus::isolate`].
    #[error("peer is isolated")]
    Isolated,
    /// No response within the call's timeout; the request may still take effect.
    #[error("call timed out")]
    Timeout,
    /// The connection was lost while waiting; the request may or may not have taken effect.
    #[error("connection lost while waiting for the response")]
    Closed,
    /// [`Bus::stop`] was called.
    #[error("the bus is stopped")]
    Stopped,
    /// The id is not a member of the cluster.
    #[error("no member with id {0}")]
    UnknownPeer(PeerId),
    /// The request failed to serialize; it was not sent.
    #[error("cannot encode the request: {0}")]
    Encode(#[source] postcard::Error),
    /// The response did not decode as this node's `Response` type (mismatched versions).
    #[error("cannot decode the response: {0}")]
    Decode(#[source] postcard::Error),
    /// The encoded request exceeds [`BusConfig::max_frame`]; it was not sent.
    #[error("request of {size} bytes exceeds the frame limit of {max}")]
    TooLarge {
        /// Encoded size of the request.
        size: usize,
        /// The frame limit in force.
        max: usize,
    },
    /// The peer received the request but could not answer it.
    #[error("{0}")]
    Remote(#[from] RemoteFailure),
}

impl From<frame::FrameError> for BusError {
    fn from(e: frame::FrameError) -> Self {
        match e {
            frame::FrameError::Encode(e) => Self::Encode(e),
            frame::FrameError::TooLarge { size, max } => Self::TooLarge { size, max },
        }
    }
}

/// A peer's state and counters, for CLUSTER NODES and INFO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// Our outbound connection is up and authenticated (this node itself counts as connected).
    pub connected: bool,
    /// Cut off by [`Bus::isolate`].
    pub isolated: bool,
    /// Unix time in milliseconds of the last change of `connected` or `isolated` (0: never).
    pub since_unix_ms: u64,
    /// Calls sent to the peer.
    pub requests_sent: u64,
    /// Calls answered successfully.
    pub responses_received: u64,
    /// Calls that failed for any reason, including never being sent.
    pub failures: u64,
    /// Authenticated connections the peer currently holds to us.
    pub inbound_connections: usize,
    /// Why the last dial or connection to the peer failed; cleared on reconnecting.
    pub last_error: Option<String>,
}

/// The peer bus of one node; see the module documentation.
pub struct Bus<S: Service> {
    inner: Arc<Inner<S>>,
}

/// What the bus's tasks share; they hold this rather than [`Bus`], so dropping the last `Bus` stops them.
struct Inner<S: Service> {
    me: PeerId,
    names: Vec<String>,
    addresses: Vec<SocketAddr>,
    secret: Vec<u8>,
    max_frame: usize,
    connect_timeout: Duration,
    redial: Redial,
    service: Arc<S>,
    /// Indexed by [`PeerId`]; our own slot only keeps the counters of calls to ourselves.
    peers: Vec<Slot<S::Request, S::Response>>,
    /// Cancelled by [`Bus::stop`]; every task and connection token descends from it.
    stop: CancellationToken,
    refused: AtomicU64,
    /// Told each time a dialer's first attempt ends; see [`Bus::settle`].
    first_dial_ended: Notify,
}

/// Per-peer state.
struct Slot<Req, Resp> {
    link: Mutex<Option<Arc<Link<Req, Resp>>>>,
    /// Mirrors `link.is_some()` so `is_reachable` needs no lock.
    connected: AtomicBool,
    isolated: AtomicBool,
    since_ms: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Cancellation tokens of the peer's authenticated inbound connections, so isolation can cut them.
    inbound: Mutex<Vec<(u64, CancellationToken)>>,
    next_inbound: AtomicU64,
    /// Wakes the dialer early: after `heal`, or to end its backoff.
    wake: Notify,
    /// The dialer's first attempt has ended, connected or not.
    dialed: AtomicBool,
}

impl<Req, Resp> Slot<Req, Resp> {
    fn new() -> Self {
        Self {
            link: Mutex::new(None),
            connected: AtomicBool::new(false),
            isolated: AtomicBool::new(false),
            since_ms: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            inbound: Mutex::new(Vec::new()),
            next_inbound: AtomicU64::new(0),
            wake: Notify::new(),
            dialed: AtomicBool::new(false),
        }
    }

    fn isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }

    fn touch(&self) {
        self.since_ms.store(unix_ms(), Ordering::Relaxed);
    }

    fn set_last_error(&self, message: &str) {
        *self.last_error.lock() = Some(message.to_owned());
    }

    /// Makes `link` the connection calls use, unless the peer was isolated or the bus stopped meanwhile.
    fn install(&self, link: &Arc<Link<Req, Resp>>, stop: &CancellationToken) -> bool {
        let mut current = self.link.lock();
        // Checked under the lock that `isolate` takes after setting the flag, so a link cannot slip in after it.
        if self.isolated() || stop.is_cancelled() {
            return false;
        }
        *current = Some(link.clone());
        self.connected.store(true, Ordering::SeqCst);
        self.touch();
        drop(current);
        *self.last_error.lock() = None;
        true
    }

    /// Closes `link`, failing its waiters with `error()`, and forgets it if it is still the current one.
    fn detach(&self, link: &Arc<Link<Req, Resp>>, error: fn() -> BusError) {
        {
            let mut current = self.link.lock();
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, link)) {
                *current = None;
                self.connected.store(false, Ordering::SeqCst);
                self.touch();
            }
        }
        link.close(error);
    }

    /// Closes whatever link is current.
    fn drop_link(&self, error: fn() -> BusError) {
        let link = self.link.lock().clone();
        if let Some(link) = link {
            self.detach(&link, error);
        }
    }

    /// Records an authenticated inbound connection; `None` if the peer is isolated. Unregistered on drop.
    fn register_inbound(&self, token: &CancellationToken) -> Option<InboundRegistration<'_, Req, Resp>> {
        let id = self.next_inbound.fetch_add(1, Ordering::Relaxed);
        let mut inbound = self.inbound.lock();
        if self.isolated() {
            return None;
        }
        inbound.push((id, token.clone()));
        Some(InboundRegistration { slot: self, id })
    }

    fn isolate(&self) {
        if !self.isolated.swap(true, Ordering::SeqCst) {
            self.touch();
        }
        self.drop_link(|| BusError::Isolated);
        for (_, token) in self.inbound.lock().iter() {
            token.cancel();
        }
    }

    fn status(&self) -> PeerStatus {
        PeerStatus {
            connected: self.connected.load(Ordering::SeqCst),
            isolated: self.isolated(),
            since_unix_ms: self.since_ms.load(Ordering::Relaxed),
            requests_sent: self.sent.load(Ordering::Relaxed),
            responses_received: self.received.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            inbound_connections: self.inbound.lock().len(),
            last_error: self.last_error.lock().clone(),
        }
    }
}

struct InboundRegistration<'a, Req, Resp> {
    slot: &'a Slot<Req, Resp>,
    id: u64,
}

impl<Req, Resp> Drop for InboundRegistration<'_, Req, Resp> {
    fn drop(&mut self) {
        self.slot.inbound.lock().retain(|(id, _)| *id != self.id);
    }
}

/// Fails a call's waiter registration if the call is dropped (timeout, or the caller's future cancelled).
struct PendingCall<'a, Req, Resp> {
    link: &'a Link<Req, Resp>,
    id: u64,
    armed: bool,
}

impl<Req, Resp> Drop for PendingCall<'_, Req, Resp> {
    fn drop(&mut self) {
        if self.armed {
            self.link.forget(self.id);
        }
    }
}

impl<S: Service> Inner<S> {
    fn name(&self, peer: PeerId) -> &str {
        self.names.get(usize::from(peer)).map_or("?", String::as_str)
    }

    fn note_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that the dialer of `slot` has tried once, connected or not, for [`Bus::settle`].
    fn note_first_dial(&self, slot: &Slot<S::Request, S::Response>) {
        if !slot.dialed.swap(true, Ordering::SeqCst) {
            self.first_dial_ended.notify_waiters();
        }
    }

    /// Whether every other member's dialer has tried once.
    fn all_dialed(&self) -> bool {
        self.peers
            .iter()
            .enumerate()
            .all(|(peer, slot)| peer == usize::from(self.me) || slot.dialed.load(Ordering::SeqCst))
    }

    async fn call_remote(
        &self,
        slot: &Slot<S::Request, S::Response>,
        request: S::Request,
        timeout: Duration,
    ) -> Result<S::Response, BusError> {
        if self.stop.is_cancelled() {
            return Err(BusError::Stopped);
        }
        if slot.isolated() {
            return Err(BusError::Isolated);
        }
        let link = slot.link.lock().clone().ok_or(BusError::Unreachable)?;
        let (id, waiter) = link.send(request, timeout)?;
        slot.sent.fetch_add(1, Ordering::Relaxed);
        let mut pending = PendingCall {
            link: &link,
            id,
            armed: true,
        };
        // The link's sweeper answers the waiter with a timeout at its deadline.
        let reply = waiter.await.unwrap_or(Err(BusError::Closed));
        pending.armed = false;
        reply
    }

    /// Runs the handler in-process, with the same task and barrier semantics as a remote call.
    async fn call_local(self: &Arc<Self>, request: S::Request, timeout: Duration) -> Result<S::Response, BusError> {
        if self.stop.is_cancelled() {
            return Err(BusError::Stopped);
        }
        let (tx, rx) = oneshot::channel();
        let service = self.service.clone();
        let me = self.me;
        tokio::spawn(async move {
            let response = service.clone().handle(me, request).await;
            service.before_reply().await;
            let _ = tx.send(response);
        });
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(BusError::Remote(RemoteFailure::Aborted)),
            Err(_) => Err(BusError::Timeout),
        }
    }
}

impl<S: Service> Bus<S> {
    /// Starts the bus on an already-bound `listener` (so tests can bind port 0 and the node can report bind errors
    /// itself): spawns the accept loop and one dialer per other member, and returns at once.
    ///
    /// Must be called within a tokio runtime. With a configuration that [`BusConfig::validate`] rejects, the error is
    /// logged and the bus starts stopped: every call fails with [`BusError::Stopped`].
    pub fn start(config: BusConfig, listener: TcpListener, service: Arc<S>) -> Arc<Bus<S>> {
        let valid = config.validate();
        let members = config.names.len().min(usize::from(PeerId::MAX) + 1);
        let inner = Arc::new(Inner {
            me: config.me,
            names: config.names,
            addresses: config.addresses,
            secret: config.secret,
            max_frame: config.max_frame,
            connect_timeout: config.connect_timeout,
            redial: config.redial,
            service,
            peers: (0..members).map(|_| Slot::new()).collect(),
            stop: CancellationToken::new(),
            refused: AtomicU64::new(0),
            first_dial_ended: Notify::new(),
        });
        if let Err(e) = valid {
            error!(error = %e, "invalid peer-bus configuration; the bus is not started");
            inner.stop.cancel();
            return Arc::new(Bus { inner });
        }
        if let Some(me) = inner.peers.get(usize::from(inner.me)) {
            me.connected.store(true, Ordering::SeqCst);
            me.touch();
        }
        info!(me = %inner.name(inner.me), addr = ?listener.local_addr().ok(), "peer bus started");
        tokio::spawn(server::accept_loop(inner.clone(), listener));
        for peer in (0..members)
            .filter_map(|p| PeerId::try_from(p).ok())
            .filter(|&p| p != inner.me)
        {
            tokio::spawn(client::dial_loop(inner.clone(), peer));
        }
        Arc::new(Bus { inner })
    }

    /// Sends `request` to `to` and waits up to `timeout` for the response.
    ///
    /// Fails fast with [`BusError::Unreachable`] when the peer is not connected rather than waiting for a
    /// reconnect: the coordinator would rather try another replica. A call to this node itself runs the handler
    /// in-process (followed by `before_reply`).
    pub async fn call(&self, to: PeerId, request: S::Request, timeout: Duration) -> Result<S::Response, BusError> {
        let inner = &self.inner;
        let slot = inner.peers.get(usize::from(to)).ok_or(BusError::UnknownPeer(to))?;
        let result = if to == inner.me {
            slot.sent.fetch_add(1, Ordering::Relaxed);
            inner.call_local(request, timeout).await
        } else {
            inner.call_remote(slot, request, timeout).await
        };
        let counter = if result.is_ok() { &slot.received } else { &slot.failures };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Sends `request` to `to` without asking for an answer, for messages whose acknowledgement nobody waits for: it
    /// saves the response frame and the waiter. Requests on one link are handled in the order sent, so the answer to
    /// a later [`Bus::call`] to `to` shows that a told request the service handles on the spot
    /// ([`Service::handle_now`]) has been handled. Fails at once if `to` is not connected; otherwise a message lost
    /// with its connection goes unnoticed.
    pub fn tell(&self, to: PeerId, request: S::Request) -> Result<(), BusError> {
        let inner = &self.inner;
        let slot = inner.peers.get(usize::from(to)).ok_or(BusError::UnknownPeer(to))?;
        if inner.stop.is_cancelled() {
            return Err(BusError::Stopped);
        }
        if to == inner.me {
            let (service, me) = (inner.service.clone(), inner.me);
            tokio::spawn(async move {
                service.handle(me, request).await;
            });
        } else {
            if slot.isolated() {
                return Err(BusError::Isolated);
            }
            let link = slot.link.lock().clone().ok_or(BusError::Unreachable)?;
            link.tell(request)?;
        }
        slot.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until every other member has been dialed once, reached or not, for at most `limit` (a dial gives up after
    /// the configured `connect_timeout`); `false` if the limit passed first. A node that takes commands before then
    /// would count peers that are up as unreachable and refuse writes a moment after it starts.
    pub async fn settle(&self, limit: Duration) -> bool {
        let inner = &self.inner;
        let settled = async {
            loop {
                let ended = inner.first_dial_ended.notified();
                tokio::pin!(ended);
                // Registered before the check, so an attempt ending in between still wakes this task.
                ended.as_mut().enable();
                if inner.all_dialed() || inner.stop.is_cancelled() {
                    return;
                }
                ended.await;
            }
        };
        tokio::time::timeout(limit, settled).await.is_ok()
    }

    /// Whether a call to `to` would be sent now: connected, authenticated and not isolated (the coordinator's
    /// "reachable"). This node is reachable from itself until stopped.
    pub fn is_reachable(&self, to: PeerId) -> bool {
        let inner = &self.inner;
        if to == inner.me {
            return !inner.stop.is_cancelled();
        }
        inner
            .peers
            .get(usize::from(to))
            .is_some_and(|slot| slot.connected.load(Ordering::SeqCst) && !slot.isolated())
    }

    /// State and counters of `to`, for CLUSTER NODES and INFO; all zero for an unknown id.
    pub fn peer_status(&self, to: PeerId) -> PeerStatus {
        self.inner
            .peers
            .get(usize::from(to))
            .map(Slot::status)
            .unwrap_or_default()
    }

    /// Inbound connections refused since start (strangers, wrong secrets, garbage), for INFO.
    pub fn refused_connections(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Debug fault switch: cuts all traffic with `peers` both ways until [`Bus::heal`]. Current connections are
    /// closed (their pending calls fail with [`BusError::Isolated`]), their handshakes are refused, they are not
    /// dialed, and calls to them fail with [`BusError::Isolated`]. Adds to any earlier isolation.
    pub fn isolate(&self, peers: &[PeerId]) {
        for &peer in peers {
            if peer == self.inner.me {
                continue;
            }
            if let Some(slot) = self.inner.peers.get(usize::from(peer)) {
                slot.isolate();
                info!(peer = %self.inner.name(peer), "peer isolated");
            }
        }
    }

    /// Ends every isolation; dialers reconnect at once.
    pub fn heal(&self) {
        for (peer, slot) in self.inner.peers.iter().enumerate() {
            if slot.isolated.swap(false, Ordering::SeqCst) {
                slot.touch();
                info!(peer = %self.inner.names.get(peer).map_or("?", String::as_str), "peer healed");
            }
            slot.wake.notify_one();
        }
    }

    /// Shuts the bus down: stops accepting (freeing the port) and dialing, closes every connection, and fails
    /// pending calls with [`BusError::Stopped`]. Handlers already running finish, but their responses are dropped.
    pub fn stop(&self) {
        if self.inner.stop.is_cancelled() {
            return;
        }
        self.inner.stop.cancel();
        for slot in &self.inner.peers {
            slot.drop_link(|| BusError::Stopped);
        }
        info!(me = %self.inner.name(self.inner.me), "peer bus stopped");
    }
}

impl<S: Service> Drop for Bus<S> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
