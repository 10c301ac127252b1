//! Mutual authentication of a new connection: both ends prove they hold the cluster secret without sending it.
//!
//! ```text
//! dialer   -> acceptor  Hello  { magic, version, dialer name, nonce_a }
//! acceptor -> dialer    Answer::Challenge { nonce_b, proof_b = HMAC(secret, "accept" | transcript) }
//!                       (or Answer::Refused(reason) for a wrong version, an unknown name or isolation)
//! dialer   -> acceptor  Proof  { proof_a = HMAC(secret, "dial" | transcript) }
//! transcript = version | nonce_a | nonce_b | len | dialer name | len | acceptor name
//! ```
//! The dialer checks proof_b against the member it meant to reach, so a wrong address is caught too; fresh nonces on
//! both sides make recorded proofs useless. Messages are length-prefixed like bus frames but capped at
//! [`MAX_MESSAGE`] and read without buffering, so nothing meant for the frame reader is consumed here.

use std::io;

use bytes::BytesMut;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{encode_frame, FrameError};
use super::PeerId;

/// Bumped whenever the handshake or the frame envelope changes incompatibly.
pub(crate) const PROTOCOL_VERSION: u16 = 1;
/// Lets the acceptor tell a confused client (Redis, HTTP, a port scanner) from a peer of another version.
const MAGIC: [u8; 10] = *b"ringkv-bus";
/// The largest handshake message accepted: enough for a member name, small enough that a stranger costs nothing.
pub(crate) const MAX_MESSAGE: usize = 1024;
const NONCE: usize = 32;
/// How much of a stranger-supplied name goes into a log line.
const NAME_IN_LOGS: usize = 64;

type HmacSha256 = Hmac<Sha256>;

#[derive(Serialize, Deserialize)]
struct Hello<'a> {
    name: &'a str,
    nonce: [u8; NONCE],
}

#[derive(Serialize, Deserialize)]
enum Answer {
    Challenge { nonce: [u8; NONCE], proof: [u8; 32] },
    Refused(Refusal),
}

#[derive(Serialize, Deserialize)]
struct Proof {
    proof: [u8; 32],
}

/// Why an acceptor turned a dialer away before any proof was exchanged; sent so the dialer can log the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("protocol version mismatch")]
    Version,
    #[error("name is not a member of this cluster")]
    UnknownName,
    #[error("peer is isolated")]
    Isolated,
    #[error("bus is stopping")]
    Stopping,
}

/// Why a handshake failed; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("i/o during handshake: {0}")]
    Io(#[from] io::Error),
    #[error("handshake message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("not a ringkv peer (bad magic)")]
    NotAPeer,
    #[error("malformed handshake message: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("protocol version {theirs} differs from ours ({ours})")]
    Version { ours: u16, theirs: u16 },
    #[error("unknown member name {0:?}")]
    UnknownName(String),
    #[error("{0:?} failed to prove it knows the cluster secret")]
    BadProof(String),
    #[error("refused by the peer: {0}")]
    RefusedByPeer(Refusal),
    #[error("refused: {0}")]
    Refused(Refusal),
    #[error("handshake timed out")]
    Timeout,
}

impl HandshakeError {
    /// Whether the failure says the two ends do not belong together (as opposed to the network or timing).
    pub(crate) fn is_rejection(&self) -> bool {
        matches!(
            self,
            Self::NotAPeer | Self::Version { .. } | Self::UnknownName(_) | Self::BadProof(_) | Self::RefusedByPeer(_)
        )
    }
}

impl From<FrameError> for HandshakeError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Encode(e) => Self::Malformed(e),
            FrameError::TooLarge { size, .. } => Self::TooLarge(size),
        }
    }
}

/// Runs the dialer's side: `me` introduces itself to the member named `them`.
pub(crate) async fn dial<T>(io: &mut T, secret: &[u8], me: &str, them: &str) -> Result<(), HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let nonce_a: [u8; NONCE] = rand::random();
    send(
        io,
        &(
            MAGIC,
            PROTOCOL_VERSION,
            Hello {
                name: me,
                nonce: nonce_a,
            },
        ),
    )
    .await?;
    let message = recv(io).await?;
    let (nonce_b, proof_b) = match postcard::from_bytes::<Answer>(&message)? {
        Answer::Challenge { nonce, proof } => (nonce, proof),
        Answer::Refused(why) => return Err(HandshakeError::RefusedByPeer(why)),
    };
    let transcript = Transcript {
        nonce_a: &nonce_a,
        nonce_b: &nonce_b,
        dialer: me,
        acceptor: them,
    };
    if !transcript.verify(secret, Role::Acceptor, &proof_b) {
        return Err(HandshakeError::BadProof(them.to_owned()));
    }
    send(
        io,
        &Proof {
            proof: transcript.prove(secret, Role::Dialer),
        },
    )
    .await
}

/// Runs the acceptor's side for the member at index `me` of `names`; returns who dialed.
///
/// `admit` may turn away an authenticated-looking member (isolation, shutdown) before any proof is computed.
pub(crate) async fn accept<T>(
    io: &mut T,
    secret: &[u8],
    names: &[String],
    me: PeerId,
    admit: impl Fn(PeerId) -> Result<(), Refusal>,
) -> Result<PeerId, HandshakeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let message = recv(io).await?;
    let ((magic, version), rest) = postcard::take_from_bytes::<([u8; 10], u16)>(&message)?;
    if magic != MAGIC {
        return Err(HandshakeError::NotAPeer);
    }
    if version != PROTOCOL_VERSION {
        refuse(io, Refusal::Version).await;
        return Err(HandshakeError::Version {
            ours: PROTOCOL_VERSION,
            theirs: version,
        });
    }
    let hello: Hello<'_> = postcard::from_bytes(rest)?;
    let me_index = usize::from(me);
    let Some(peer) = names.iter().position(|n| n == hello.name).filter(|&i| i != me_index) else {
        refuse(io, Refusal::UnknownName).await;
        return Err(HandshakeError::UnknownName(for_logs(hello.name)));
    };
    let (Ok(peer), Some(acceptor)) = (PeerId::try_from(peer), names.get(me_index)) else {
        refuse(io, Refusal::UnknownName).await;
        return Err(HandshakeError::UnknownName(for_logs(hello.name)));
    };
    if let Err(why) = admit(peer) {
        refuse(io, why).await;
        return Err(HandshakeError::Refused(why));
    }
    let nonce_b: [u8; NONCE] = rand::random();
    let transcript = Transcript {
        nonce_a: &hello.nonce,
        nonce_b: &nonce_b,
        dialer: hello.name,
        acceptor,
    };
    send(
        io,
        &Answer::Challenge {
            nonce: nonce_b,
            proof: transcript.prove(secret, Role::Acceptor),
        },
    )
    .await?;
    let message = recv(io).await?;
    let proof: Proof = postcard::from_bytes(&message)?;
    if !transcript.verify(secret, Role::Dialer, &proof.proof) {
        return Err(HandshakeError::BadProof(for_logs(hello.name)));
    }
    Ok(peer)
}

#[derive(Clone, Copy)]
enum Role {
    Dialer,
    Acceptor,
}

/// What both proofs cover; the role label keeps one side's proof from being replayed as the other's.
struct Transcript<'a> {
    nonce_a: &'a [u8; NONCE],
    nonce_b: &'a [u8; NONCE],
    dialer: &'a str,
    acceptor: &'a str,
}

impl Transcript<'_> {
    fn mac(&self, secret: &[u8], role: Role) -> HmacSha256 {
        // HMAC takes keys of any length; the fallback key only matters if that ever changed, and then no proof
        // made with it verifies against a peer holding the real secret.
        let mut mac =
            HmacSha256::new_from_slice(secret).unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
        mac.update(match role {
            Role::Dialer => b"ringkv-bus dial",
            Role::Acceptor => b"ringkv-bus accept",
        });
        mac.update(&PROTOCOL_VERSION.to_be_bytes());
        mac.update(self.nonce_a);
        mac.update(self.nonce_b);
        for name in [self.dialer, self.acceptor] {
            // Length-prefixed so that ("ab", "c") and ("a", "bc") differ.
            mac.update(&(name.len() as u64).to_be_bytes());
            mac.update(name.as_bytes());
        }
        mac
    }

    fn prove(&self, secret: &[u8], role: Role) -> [u8; 32] {
        self.mac(secret, role).finalize().into_bytes().into()
    }

    fn verify(&self, secret: &[u8], role: Role, proof: &[u8]) -> bool {
        self.mac(secret, role).verify_slice(proof).is_ok()
    }
}

fn for_logs(name: &str) -> String {
    name.chars().take(NAME_IN_LOGS).collect()
}

/// Tells the dialer why it is turned away; best effort, the connection is closed either way.
async fn refuse<T: AsyncWrite + Unpin>(io: &mut T, why: Refusal) {
    let _ = send(io, &Answer::Refused(why)).await;
}

async fn send<T, M>(io: &mut T, message: &M) -> Result<(), HandshakeError>
where
    T: AsyncWrite + Unpin,
    M: Serialize,
{
    let mut buf = BytesMut::with_capacity(128);
    encode_frame(&mut buf, message, MAX_MESSAGE)?;
    io.write_all(&buf).await?;
    Ok(())
}

async fn recv<T: AsyncRead + Unpin>(io: &mut T) -> Result<Vec<u8>, HandshakeError> {
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_MESSAGE {
        return Err(HandshakeError::TooLarge(len));
    }
    let mut message = vec![0u8; len];
    io.read_exact(&mut message).await?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["a".to_owned(), "b".to_owned()]
    }

    async fn run(
        dialer_secret: &[u8],
        dialer_name: &str,
        dialed: &str,
    ) -> (Result<(), HandshakeError>, Result<PeerId, HandshakeError>) {
        let (mut d, mut a) = tokio::io::duplex(4096);
        let names = names();
        let dial = async {
            let r = dial(&mut d, dialer_secret, dialer_name, dialed).await;
            drop(d);
            r
        };
        let accept = async {
            let r = accept(&mut a, b"secret", &names, 1, |_| Ok(())).await;
            drop(a);
            r
        };
        tokio::join!(dial, accept)
    }

    #[tokio::test]
    async fn same_secret_authenticates_both_ways() {
        let (d, a) = run(b"secret", "a", "b").await;
        assert!(d.is_ok(), "{d:?}");
        assert_eq!(a.ok(), Some(0));
    }

    #[tokio::test]
    async fn wrong_secret_fails_on_both_sides() {
        let (d, a) = run(b"other", "a", "b").await;
        assert!(matches!(d, Err(HandshakeError::BadProof(_))), "{d:?}");
        assert!(a.is_err());
    }

    #[tokio::test]
    async fn dialing_the_wrong_member_is_detected() {
        // The acceptor is "b" but the dialer believes it reached some other member.
        let (d, a) = run(b"secret", "a", "c").await;
        assert!(matches!(d, Err(HandshakeError::BadProof(_))), "{d:?}");
        assert!(a.is_err());
    }

    #[tokio::test]
    async fn unknown_or_own_name_is_refused() {
        for name in ["zed", "b"] {
            let (d, a) = run(b"secret", name, "b").await;
            assert!(
                matches!(d, Err(HandshakeError::RefusedByPeer(Refusal::UnknownName))),
                "{d:?}"
            );
            assert!(matches!(a, Err(HandshakeError::UnknownName(_))), "{a:?}");
        }
    }

    #[tokio::test]
    async fn admit_can_refuse() {
        let (mut d, mut a) = tokio::io::duplex(4096);
        let names = names();
        let (dr, ar) = tokio::join!(dial(&mut d, b"secret", "a", "b"), async {
            let r = accept(&mut a, b"secret", &names, 1, |_| Err(Refusal::Isolated)).await;
            drop(a);
            r
        });
        assert!(
            matches!(dr, Err(HandshakeError::RefusedByPeer(Refusal::Isolated))),
            "{dr:?}"
        );
        assert!(matches!(ar, Err(HandshakeError::Refused(Refusal::Isolated))), "{ar:?}");
    }

    #[tokio::test]
    async fn oversized_or_foreign_first_message_is_rejected() {
        let names = names();
        for input in [
            &b"*1\r\n$4\r\nPING\r\n"[..],
            &[0, 0, 0, 12, b'G', b'E', b'T', b' ', 0, 0, 0, 0, 0, 0, 0, 0][..],
        ] {
            let (mut client, mut a) = tokio::io::duplex(4096);
            client.write_all(input).await.expect("write");
            let r = accept(&mut a, b"secret", &names, 1, |_| Ok(())).await;
            assert!(
                matches!(r, Err(HandshakeError::TooLarge(_) | HandshakeError::NotAPeer)),
                "{r:?}"
            );
        }
    }
}
