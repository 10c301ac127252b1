//! The calling side: one dialer task per peer keeps one outbound connection up, and calls ride on it.
//!
//! A [`Link`] is one authenticated outbound connection. Callers register a oneshot under a fresh request id and
//! queue the request; the link's writer encodes and writes it; its reader completes waiters by id. When the
//! connection ends, every waiter fails at once and the dialer reconnects with jittered exponential backoff.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use parking_lot::Mutex;
use rand::Rng;
use serde::de::DeserializeOwned;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::frame::{decoder, encode_frame_by, serialize_into, write_loop, NoBarrier};
use super::handshake::{self, HandshakeError};
use super::outbox::Outbox;
use super::{shared, BusError, Inner, PeerId, RemoteFailure, Service};
use crate::varint::put_varint;

/// The request id of a message that wants no response; calls number theirs from 1.
pub(crate) const ONE_WAY: u64 = 0;

/// What a waiting caller receives.
type Reply<R> = Result<R, BusError>;

/// One authenticated outbound connection and the calls waiting on it.
pub(crate) struct Link<Req, Resp> {
    outbox: Outbox<(u64, Req)>,
    pending: Mutex<Pending<Resp>>,
    next_id: AtomicU64,
    /// Cancelled when the connection ends, for whatever reason; stops both of its tasks.
    token: CancellationToken,
    /// What call deadlines count from.
    epoch: Instant,
    /// When the sweeper next looks for calls past their deadline (nanoseconds from `epoch`), and its wake-up when a
    /// call's deadline comes sooner than that.
    next_sweep: AtomicU64,
    sweep_sooner: Notify,
}

/// A call's waiter and its deadline (nanoseconds from the link's epoch).
type Waiter<R> = (oneshot::Sender<Reply<R>>, u64);

struct Pending<R> {
    waiters: HashMap<u64, Waiter<R>, BuildHasherDefault<IdHasher>>,
    /// Set under the same lock as the drain, so no waiter can be registered after it and then forgotten.
    closed: bool,
}

impl<Req, Resp> Link<Req, Resp> {
    fn new(token: CancellationToken) -> Self {
        Self {
            outbox: Outbox::new(),
            pending: Mutex::new(Pending {
                waiters: HashMap::default(),
                closed: false,
            }),
            next_id: AtomicU64::new(1),
            token,
            epoch: Instant::now(),
            next_sweep: AtomicU64::new(u64::MAX),
            sweep_sooner: Notify::new(),
        }
    }

    /// Fails each call still waiting at its deadline with [`BusError::Timeout`], until the connection ends. One
    /// sweeper per link instead of a timer per call: a call's timer cost its caller a registration in tokio's timer
    /// wheel, a removal and a check at every poll (about 400 instructions per pipelined SET at the entry node,
    /// callgrind). It sleeps until the earliest deadline it knows of; a call due sooner wakes it.
    async fn expire_overdue(&self) {
        loop {
            let next = self.next_sweep.load(Ordering::Acquire);
            let sleep = match next {
                u64::MAX => None,
                at => Some(tokio::time::sleep_until((self.epoch + Duration::from_nanos(at)).into())),
            };
            tokio::select! {
                biased;
                () = self.token.cancelled() => return,
                () = self.sweep_sooner.notified() => continue,
                () = async { match sleep { Some(sleep) => sleep.await, None => std::future::pending().await } } => {}
            }
            let now = self.since_epoch(Duration::ZERO);
            let overdue: Vec<Waiter<Resp>> = {
                let mut pending = self.pending.lock();
                let overdue = pending.waiters.extract_if(|_, w| w.1 <= now).map(|(_, w)| w).collect();
                let earliest = pending.waiters.values().map(|w| w.1).min().unwrap_or(u64::MAX);
                self.next_sweep.store(earliest, Ordering::Release);
                overdue
            };
            for (waiter, _) in overdue {
                let _ = waiter.send(Err(BusError::Timeout));
            }
        }
    }

    /// Nanoseconds from the link's epoch to `after` from now.
    fn since_epoch(&self, after: Duration) -> u64 {
        u64::try_from((self.epoch.elapsed() + after).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Queues `request` under [`ONE_WAY`]: the peer handles it and sends nothing back.
    pub(crate) fn tell(&self, request: Req) -> Result<(), BusError> {
        self.outbox.push((ONE_WAY, request)).map_err(|_| BusError::Closed)
    }

    /// Registers a waiter, failed with [`BusError::Timeout`] if no response came within `timeout`, and queues
    /// `request`; returns the id to `forget` if the caller gives up.
    pub(crate) fn send(
        &self,
        request: Req,
        timeout: Duration,
    ) -> Result<(u64, oneshot::Receiver<Reply<Resp>>), BusError> {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline = self.since_epoch(timeout);
        {
            let mut pending = self.pending.lock();
            if pending.closed {
                return Err(BusError::Closed);
            }
            pending.waiters.insert(id, (tx, deadline));
            if deadline < self.next_sweep.load(Ordering::Acquire) {
                self.next_sweep.store(deadline, Ordering::Release);
                self.sweep_sooner.notify_one();
            }
        }
        if self.outbox.push((id, request)).is_err() {
            self.forget(id);
            return Err(BusError::Closed);
        }
        Ok((id, rx))
    }

    /// Drops the waiter for `id` (timed out or cancelled); a late response is then ignored.
    pub(crate) fn forget(&self, id: u64) {
        drop(self.take(id));
    }

    fn take(&self, id: u64) -> Option<oneshot::Sender<Reply<Resp>>> {
        self.pending.lock().waiters.remove(&id).map(|(waiter, _)| waiter)
    }

    /// Ends the connection: every waiter gets `error()` now, and both connection tasks stop. Idempotent.
    pub(crate) fn close(&self, error: fn() -> BusError) {
        let waiters = {
            let mut pending = self.pending.lock();
            pending.closed = true;
            std::mem::take(&mut pending.waiters)
        };
        for (_, (waiter, _)) in waiters {
            let _ = waiter.send(Err(error()));
        }
        self.outbox.close();
        self.token.cancel();
    }
}

/// Keeps a connection to `peer` up until the bus stops, waiting out isolation and backing off between attempts.
pub(crate) async fn dial_loop<S: Service>(inner: Arc<Inner<S>>, peer: PeerId) {
    let (Some(slot), Some(&addr)) = (
        inner.peers.get(usize::from(peer)),
        inner.addresses.get(usize::from(peer)),
    ) else {
        return;
    };
    let name = inner.name(peer);
    let mut backoff = inner.redial.first;
    let mut last_failure = String::new();
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        if slot.isolated() {
            tokio::select! {
                () = slot.wake.notified() => continue,
                () = inner.stop.cancelled() => return,
            }
        }
        match connect(&inner, peer, addr).await {
            Ok(stream) => {
                backoff = inner.redial.first;
                last_failure.clear();
                run_link(&inner, peer, stream).await;
            }
            Err(e) => {
                let message = e.to_string();
                // A peer that is merely down is expected during restarts; one that rejects us is a configuration
                // problem worth a warning, once per change of reason.
                if e.is_rejection() && message != last_failure {
                    warn!(peer = %name, %addr, error = %message, "peer-bus handshake failed");
                } else {
                    debug!(peer = %name, %addr, error = %message, "cannot connect to peer");
                }
                slot.set_last_error(&message);
                last_failure = message;
                inner.note_first_dial(slot);
            }
        }
        let delay = jitter(backoff);
        backoff = (backoff * 2).min(inner.redial.max);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = slot.wake.notified() => {}
            () = inner.stop.cancelled() => return,
        }
    }
}

/// Why dialing failed.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

impl DialError {
    fn is_rejection(&self) -> bool {
        matches!(self, Self::Handshake(e) if e.is_rejection())
    }
}

async fn connect<S: Service>(inner: &Inner<S>, peer: PeerId, addr: SocketAddr) -> Result<TcpStream, DialError> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.map_err(DialError::Connect)?;
        stream.set_nodelay(true).map_err(DialError::Connect)?;
        handshake::dial(&mut stream, &inner.secret, inner.name(inner.me), inner.name(peer)).await?;
        Ok(stream)
    };
    tokio::time::timeout(inner.connect_timeout, attempt)
        .await
        .unwrap_or(Err(HandshakeError::Timeout.into()))
}

/// Serves one authenticated connection to `peer` until it ends.
async fn run_link<S: Service>(inner: &Arc<Inner<S>>, peer: PeerId, stream: TcpStream) {
    let Some(slot) = inner.peers.get(usize::from(peer)) else {
        return;
    };
    let name = inner.name(peer);
    let link = Arc::new(Link::new(inner.stop.child_token()));
    let installed = slot.install(&link, &inner.stop);
    inner.note_first_dial(slot);
    if !installed {
        return;
    }
    info!(peer = %name, "connected to peer");
    let (read, write) = stream.into_split();
    let max = inner.max_frame;
    let sweeper_link = link.clone();
    tokio::spawn(async move { sweeper_link.expire_overdue().await });
    let writer_link = link.clone();
    let writer_name = name.to_owned();
    tokio::spawn(async move {
        let link = &*writer_link;
        let encode = |buf: &mut BytesMut, (id, request): (u64, S::Request)| {
            let body = |buf: &mut BytesMut| {
                put_varint(buf, id);
                match S::encode_request(&request, buf) {
                    true => Ok(()),
                    false => serialize_into(buf, &request),
                }
            };
            if let Err(e) = encode_frame_by(buf, max, body) {
                if let Some(waiter) = link.take(id) {
                    let _ = waiter.send(Err(e.into()));
                }
            }
        };
        if let Err(e) = write_loop(&link.outbox, write, &link.token, encode, NoBarrier).await {
            warn!(peer = %writer_name, error = %e, "lost connection to peer (write failed)");
        }
        link.token.cancel();
    });
    let ended = read_loop(&link, read, max, S::decode_response).await;
    let stopping = inner.stop.is_cancelled();
    slot.detach(
        &link,
        if stopping {
            || BusError::Stopped
        } else {
            || BusError::Closed
        },
    );
    match ended {
        Err(e) if !stopping => {
            warn!(peer = %name, error = %e, "lost connection to peer");
            slot.set_last_error(&e.to_string());
        }
        // Closed on purpose (isolation, shutdown) or by the writer, which logged why.
        _ => debug!(peer = %name, "connection to peer closed"),
    }
}

/// Why an outbound connection ended other than by being closed on purpose.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("connection closed by peer")]
    Eof,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed response frame: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Completes waiters from response frames until the connection ends; `Ok` when it was closed on purpose. A
/// response is decoded by `decode_fast` where it can (see [`Service::decode_response`]), else by postcard.
async fn read_loop<Req, Resp>(
    link: &Link<Req, Resp>,
    read: OwnedReadHalf,
    max: usize,
    decode_fast: fn(&Bytes, &[u8]) -> Option<Resp>,
) -> Result<(), ReadError>
where
    Resp: DeserializeOwned,
{
    let mut frames = FramedRead::new(read, decoder(max));
    loop {
        let frame = tokio::select! {
            biased;
            () = link.token.cancelled() => return Ok(()),
            frame = frames.next() => frame,
        };
        let frame = frame.ok_or(ReadError::Eof)??.freeze();
        let (id, body) = postcard::take_from_bytes::<u64>(&frame)?;
        // Responses to calls that timed out are skipped without decoding.
        if let Some(waiter) = link.take(id) {
            // postcard's tag of `Result::Ok`.
            let fast = match body.split_first() {
                Some((0, response)) => decode_fast(&frame, response),
                _ => None,
            };
            let decoded = match fast {
                Some(response) => Ok(Ok(response)),
                None => shared::decode::<Result<Resp, RemoteFailure>>(&frame, body),
            };
            let reply = match decoded {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(failure)) => Err(BusError::Remote(failure)),
                Err(e) => Err(BusError::Decode(e)),
            };
            let _ = waiter.send(reply);
        }
    }
}

/// A random delay in [backoff/2, backoff], so that peers restarted together do not redial in lockstep.
fn jitter(backoff: Duration) -> Duration {
    let max = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX).max(2);
    Duration::from_millis(rand::rng().random_range(max / 2..=max))
}

/// Hashes the sequential request ids by Fibonacci multiplication: cheap, and it spreads consecutive ids over
/// both the low bits (bucket) and the high bits (hashbrown's tag).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
