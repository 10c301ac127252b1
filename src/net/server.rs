//! The answering side: the accept loop, and one task per accepted connection that answers quick requests itself
//! and spawns a task for each of the others.
//!
//! Handlers push their responses into the connection's outbox; its writer awaits the service's `before_reply`
//! once per batch and writes the batch. A handler that ends without answering (panic, runtime shutdown) still
//! sends a failure, so the caller does not wait for its timeout.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use super::client::ONE_WAY;
use super::frame::{decoder, encode_frame, encode_frame_by, serialize_into, write_loop, Barrier, FrameError};
use super::handshake::{self, HandshakeError, Refusal};
use super::outbox::Outbox;
use super::{shared, Inner, PeerId, RemoteFailure, Service};
use crate::varint::put_varint;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

type Response<S> = (u64, Result<<S as Service>::Response, RemoteFailure>);

/// Accepts connections until the bus stops; dropping `listener` on return frees the port.
pub(crate) async fn accept_loop<S: Service>(inner: Arc<Inner<S>>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = inner.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                tokio::spawn(serve(inner.clone(), stream, addr));
            }
            Err(e) => {
                warn!(error = %e, "peer-bus accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// Authenticates one inbound connection and answers its requests until it ends.
async fn serve<S: Service>(inner: Arc<Inner<S>>, mut stream: TcpStream, addr: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(remote = %addr, error = %e, "cannot set TCP_NODELAY");
    }
    let admit = |peer: PeerId| {
        if inner.stop.is_cancelled() {
            Err(Refusal::Stopping)
        } else if inner.peers.get(usize::from(peer)).is_some_and(|slot| slot.isolated()) {
            Err(Refusal::Isolated)
        } else {
            Ok(())
        }
    };
    let handshake = handshake::accept(&mut stream, &inner.secret, &inner.names, inner.me, admit);
    let peer = match tokio::time::timeout(inner.connect_timeout, handshake)
        .await
        .unwrap_or(Err(HandshakeError::Timeout))
    {
        Ok(peer) => peer,
        Err(HandshakeError::Refused(why)) => {
            debug!(remote = %addr, reason = %why, "turned away a peer-bus connection");
            return;
        }
        Err(e) => {
            inner.note_refused();
            warn!(remote = %addr, error = %e, "refused peer-bus connection");
            return;
        }
    };
    let Some(slot) = inner.peers.get(usize::from(peer)) else {
        return;
    };
    let token = inner.stop.child_token();
    let Some(_registration) = slot.register_inbound(&token) else {
        debug!(remote = %addr, "turned away a peer-bus connection: peer is isolated");
        return;
    };
    let name = inner.name(peer);
    info!(peer = %name, remote = %addr, "peer connected");
    if !slot.connected.load(Ordering::SeqCst) {
        // The peer is back: our dialer need not wait out its backoff to reach it.
        slot.wake.notify_one();
    }

    let (read, write) = stream.into_split();
    let outbox: Arc<Outbox<Response<S>>> = Arc::new(Outbox::new());
    let max = inner.max_frame;
    let writer_outbox = outbox.clone();
    let writer_token = token.clone();
    let barrier = ServiceBarrier(inner.service.clone());
    tokio::spawn(async move {
        let encode = |buf: &mut BytesMut, (id, reply): Response<S>| encode_reply::<S>(buf, id, &reply, max);
        if let Err(e) = write_loop(&writer_outbox, write, &writer_token, encode, barrier).await {
            debug!(error = %e, "peer-bus response write failed");
        }
        writer_token.cancel();
    });

    let mut frames = FramedRead::new(read, decoder(max));
    loop {
        let frame = tokio::select! {
            biased;
            () = token.cancelled() => break,
            frame = frames.next() => frame,
        };
        let frame = match frame {
            Some(Ok(frame)) => frame.freeze(),
            Some(Err(e)) => {
                warn!(peer = %name, remote = %addr, error = %e, "peer-bus connection failed");
                break;
            }
            None => break,
        };
        let Ok((id, body)) = postcard::take_from_bytes::<u64>(&frame) else {
            warn!(peer = %name, remote = %addr, "malformed request frame; closing connection");
            break;
        };
        let mut reply = ReplySlot::<S> {
            id,
            outbox: (id != ONE_WAY).then(|| outbox.clone()),
        };
        let decoded = match S::decode_request(&frame, body) {
            Some(request) => Ok(request),
            None => shared::decode::<S::Request>(&frame, body),
        };
        match decoded {
            Ok(request) => match inner.service.handle_now(peer, request) {
                Ok(response) => reply.send(Ok(response)),
                Err(request) => {
                    let service = inner.service.clone();
                    tokio::spawn(async move {
                        let response = service.handle(peer, request).await;
                        reply.send(Ok(response));
                    });
                }
            },
            Err(e) => {
                debug!(peer = %name, error = %e, "undecodable request");
                reply.send(Err(RemoteFailure::Undecodable));
            }
        }
    }
    debug!(peer = %name, remote = %addr, "peer connection closed");
    token.cancel();
    outbox.close();
}

/// Encodes one response; one that cannot be framed is replaced by a failure so the caller hears back at once.
fn encode_reply<S: Service>(buf: &mut BytesMut, id: u64, reply: &Result<S::Response, RemoteFailure>, max: usize) {
    let body = |buf: &mut BytesMut| {
        put_varint(buf, id);
        match reply {
            Ok(response) => {
                buf.put_u8(0); // postcard's tag of `Ok`
                match S::encode_response(response, buf) {
                    true => Ok(()),
                    false => serialize_into(buf, response),
                }
            }
            Err(_) => serialize_into(buf, reply),
        }
    };
    let failure = match encode_frame_by(buf, max, body) {
        Ok(()) => return,
        Err(FrameError::Encode(e)) => {
            warn!(error = %e, "cannot encode a response");
            RemoteFailure::Unencodable
        }
        Err(FrameError::TooLarge { size, max }) => {
            warn!(size, max, "response exceeds the frame limit");
            RemoteFailure::TooLarge
        }
    };
    if let Err(e) = encode_frame(buf, &(id, Err::<S::Response, _>(failure)), max) {
        warn!(error = %e, "cannot encode a failure response");
    }
}

/// The promise to answer request `id`; dropped unanswered, it answers with [`RemoteFailure::Aborted`].
struct ReplySlot<S: Service> {
    id: u64,
    outbox: Option<Arc<Outbox<Response<S>>>>,
}

impl<S: Service> ReplySlot<S> {
    fn send(&mut self, reply: Result<S::Response, RemoteFailure>) {
        if let Some(outbox) = self.outbox.take() {
            // A closed outbox means the caller's connection is gone; nobody is left to tell.
            let _ = outbox.push((self.id, reply));
        }
    }
}

impl<S: Service> Drop for ReplySlot<S> {
    fn drop(&mut self) {
        self.send(Err(RemoteFailure::Aborted));
    }
}

/// Makes the service's durability barrier the response writer's per-batch barrier.
struct ServiceBarrier<S>(Arc<S>);

impl<S: Service> Barrier for ServiceBarrier<S> {
    fn wait(&self) -> impl std::future::Future<Output = ()> + Send {
        self.0.before_reply()
    }
}
