//! Everything a connection shares with the rest of the node: settings that
//! CONFIG SET may change, the coordinator, the client registry, counters for
//! INFO, and the shutdown switch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use tokio::sync::watch;

use crate::cluster::coordinator::Coordinator;
use crate::config::Config;
use crate::identity::Identity;
use crate::server::clients::ClientRegistry;
use crate::server::parse::Limits;

/// Settings that may change while the node runs (CONFIG SET).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Password for AUTH; empty means none.
    pub requirepass: String,
    /// Connection cap.
    pub maxclients: usize,
    /// Parser limits.
    pub limits: Limits,
    /// Accepted and reported but without effect: ringkv takes no snapshots.
    pub save: String,
}

/// Counters reported by INFO stats.
#[derive(Debug, Default)]
pub struct Stats {
    /// Commands executed.
    pub commands: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections refused at maxclients.
    pub rejected: AtomicU64,
    /// Reads that found a value.
    pub hits: AtomicU64,
    /// Reads that found none.
    pub misses: AtomicU64,
    /// Records removed by the expiry sweep.
    pub expired: AtomicU64,
}

impl Stats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The node's shared state.
pub struct Node {
    /// The configuration the node started with.
    pub config: Config,
    /// Settings CONFIG SET can change.
    pub settings: RwLock<Settings>,
    /// Who this node is.
    pub identity: Identity,
    /// Where key operations go.
    pub coordinator: Coordinator,
    /// Connected clients, for CLIENT LIST and maxclients.
    pub clients: ClientRegistry,
    /// INFO counters.
    pub stats: Stats,
    /// When the node started.
    pub started: Instant,
    /// Port actually bound (differs from config when it was 0).
    pub port: u16,
    /// Memory limit in bytes (0: none); past it, commands that may grow
    /// memory get `-OOM`, as Redis's `noeviction` policy does.
    pub maxmemory: AtomicU64,
    /// Resident memory, sampled by [`Node::sample_memory`].
    pub used_memory: AtomicU64,
    /// Idle timeout in seconds (0: none). An atomic, not a setting behind the
    /// lock: every connection reads it before every read.
    pub timeout: AtomicU64,
    shutdown: watch::Sender<bool>,
}

impl Node {
    /// Assembles the node.
    pub fn new(config: Config, identity: Identity, coordinator: Coordinator, port: u16) -> Arc<Node> {
        let s = &config.server;
        let settings = Settings {
            requirepass: s.requirepass.clone(),
            maxclients: s.maxclients,
            limits: Limits {
                max_bulk_len: s.proto_max_bulk_len,
                max_multibulk_len: s.max_multibulk_len,
                query_buffer_limit: s.client_query_buffer_limit,
            },
            save: String::new(),
        };
        Arc::new(Node {
            settings: RwLock::new(settings),
            identity,
            coordinator,
            clients: ClientRegistry::default(),
            stats: Stats::default(),
            started: Instant::now(),
            port,
            maxmemory: AtomicU64::new(s.maxmemory),
            used_memory: AtomicU64::new(0),
            timeout: AtomicU64::new(s.timeout),
            shutdown: watch::channel(false).0,
            config,
        })
    }

    /// Asks the node to stop: listener closes, connections finish, data is synced.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves when shutdown was asked for.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Refreshes `used_memory` from the process's resident set size (on
    /// Linux; elsewhere it stays 0 and maxmemory is not enforced).
    pub fn sample_memory(&self) -> u64 {
        let rss = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
            .map_or(0, |pages| pages * 4096);
        self.used_memory.store(rss, Ordering::Relaxed);
        rss
    }

    /// True when a maxmemory limit is set and memory is above it.
    pub fn over_maxmemory(&self) -> bool {
        let max = self.maxmemory.load(Ordering::Relaxed);
        max > 0 && self.used_memory.load(Ordering::Relaxed) > max
    }

    /// Number of logical databases.
    pub fn databases(&self) -> u8 {
        self.config.server.databases
    }
}
