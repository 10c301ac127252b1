//! The registry of connected clients: ids, the fields CLIENT LIST shows, and
//! the count that maxclients caps. A connection updates its own entry with
//! relaxed atomics, so the hot path takes no lock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use ahash::AHashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::clock::now_ms;

/// What other connections may read about one client.
#[derive(Debug)]
pub struct ClientHandle {
    /// Unique, increasing id (CLIENT ID).
    pub id: u64,
    /// Peer address.
    pub addr: SocketAddr,
    /// Local address.
    pub laddr: SocketAddr,
    /// Connect time, unix ms.
    pub created_ms: u64,
    /// When the client last sent anything, unix ms: stamped once per read, as Redis stamps its `lastinteraction`,
    /// not per command (a clock read is about 40 ns here, and a pipelined read holds many commands).
    pub last_ms: AtomicU64,
    /// Selected database.
    pub db: AtomicU8,
    /// Protocol version, 2 or 3.
    pub resp: AtomicU8,
    /// Name of the last command (an index into the command table).
    pub last_cmd: AtomicUsize,
    /// CLIENT SETNAME, lib-name and lib-ver.
    pub names: Mutex<ClientNames>,
    /// CONSISTENCY READ override (0: the configured R), for CLIENT LIST.
    pub read_quorum: AtomicU8,
    /// CONSISTENCY WRITE override (0: the configured W), for CLIENT LIST.
    pub write_quorum: AtomicU8,
}

/// Names a client gives itself.
#[derive(Debug, Default, Clone)]
pub struct ClientNames {
    /// CLIENT SETNAME / HELLO SETNAME.
    pub name: String,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: String,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: String,
}

impl ClientHandle {
    fn new(id: u64, addr: SocketAddr, laddr: SocketAddr) -> ClientHandle {
        let now = now_ms();
        ClientHandle {
            id,
            addr,
            laddr,
            created_ms: now,
            last_ms: AtomicU64::new(now),
            db: AtomicU8::new(0),
            resp: AtomicU8::new(2),
            last_cmd: AtomicUsize::new(usize::MAX),
            names: Mutex::new(ClientNames::default()),
            read_quorum: AtomicU8::new(0),
            write_quorum: AtomicU8::new(0),
        }
    }

    /// A handle for a command forwarded by a peer: not a client, not listed. One serves them all: only keyed writes
    /// are forwarded, and they change nothing in a handle but its last command (a handle each was an allocation and
    /// a clock read per forwarded command: callgrind).
    pub fn detached() -> Arc<ClientHandle> {
        static DETACHED: OnceLock<Arc<ClientHandle>> = OnceLock::new();
        DETACHED
            .get_or_init(|| {
                let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
                Arc::new(ClientHandle::new(0, nowhere, nowhere))
            })
            .clone()
    }

    /// Notes that the client sent something now.
    pub fn heard_from(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Notes the command the client ran last.
    pub fn ran(&self, cmd: usize) {
        self.last_cmd.store(cmd, Ordering::Relaxed);
    }
}

/// All connected clients.
#[derive(Default)]
pub struct ClientRegistry {
    clients: Mutex<AHashMap<u64, Arc<ClientHandle>>>,
    next_id: AtomicU64,
    /// Woken when the last client leaves (shutdown waits for it).
    empty: Notify,
}

impl ClientRegistry {
    /// Registers a connection unless `max` clients are already connected.
    pub fn register(&self, addr: SocketAddr, laddr: SocketAddr, max: usize) -> Option<Arc<ClientHandle>> {
        let mut clients = self.clients.lock();
        if clients.len() >= max {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = Arc::new(ClientHandle::new(id, addr, laddr));
        clients.insert(id, handle.clone());
        Some(handle)
    }

    /// Removes a connection that closed.
    pub fn unregister(&self, id: u64) {
        let mut clients = self.clients.lock();
        clients.remove(&id);
        if clients.is_empty() {
            self.empty.notify_waiters();
        }
    }

    /// Number of connected clients.
    pub fn len(&self) -> usize {
        self.clients.lock().len()
    }

    /// True when no client is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every client, ordered by id.
    pub fn all(&self) -> Vec<Arc<ClientHandle>> {
        let mut all: Vec<_> = self.clients.lock().values().cloned().collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Waits until every client has disconnected.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.empty.notified();
            if self.is_empty() {
                return;
            }
            notified.await;
        }
    }
}
