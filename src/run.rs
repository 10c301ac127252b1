//! Starting and stopping a node.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::cluster::coordinator::Coordinator;
use crate::cluster::membership::Membership;
use crate::cluster::service::PeerService;
use crate::config::{Config, EngineKind};
use crate::identity::{Identity, IdentityError};
use crate::net::{Bus, BusConfig, Redial};
use crate::node::Node;
use crate::replica::Replica;
use crate::server::accept_loop;
use crate::storage::{self, Durability, StorageError};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir's identity could not be read or made.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The storage engine could not open.
    #[error("cannot open storage: {0}")]
    Storage(#[from] StorageError),
    /// The member list does not make a ring.
    #[error("invalid cluster: {0}")]
    Cluster(String),
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// How long shutdown waits for clients to finish before syncing anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a starting node allows beyond a dial's own timeout for its first dials to end.
const SETTLE_MARGIN: Duration = Duration::from_millis(500);

/// Records the expiry sweep handles per round; a full round runs again at once.
const SWEEP_BATCH: usize = 256;

/// Runs a node until SIGINT, SIGTERM or SHUTDOWN; then stops accepting, lets
/// connections finish their replies, syncs storage and returns.
pub async fn run(config: Config) -> Result<(), StartError> {
    let data_dir = config.storage.data_dir.clone();
    let identity = if config.storage.engine.is_durable() {
        Identity::load_or_create(&data_dir, &config.cluster.node_id)?
    } else {
        // Nothing survives a restart, so every start is a new incarnation.
        Identity::generate(&config.cluster.node_id)
    };
    let engine = storage::open(&config.storage, &data_dir)?;
    let durability = Durability::start(config.storage.fsync, engine.clone());
    let replica = Arc::new(Replica::new(
        engine,
        durability,
        identity.actor(),
        config.cluster.conflicts,
        // A node without replicas has nobody to tell about a delete.
        if config.cluster.is_clustered() {
            config.cluster.tombstone_grace_secs.saturating_mul(1000)
        } else {
            0
        },
        match config.storage.engine {
            EngineKind::Disk => (config.storage.record_cache_mb as usize).saturating_mul(1024 * 1024),
            EngineKind::Log | EngineKind::Memory => 0,
        },
    ));
    let addr = (config.server.bind, config.server.port);
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
        addr: format!("{}:{}", addr.0, addr.1),
        source,
    })?;
    let local = listener.local_addr().map_err(|source| StartError::Bind {
        addr: format!("{}:{}", addr.0, addr.1),
        source,
    })?;
    let sweep_every = Duration::from_millis(config.storage.expiry_sweep_ms);
    let (coordinator, service) = start_cluster(&config, &identity, &replica, local).await?;
    let bus = coordinator.bus().cloned();
    let settle_limit = Duration::from_millis(config.cluster.request_timeout_ms).saturating_add(SETTLE_MARGIN);
    let (engine, fsync, node_id) = (config.storage.engine, config.storage.fsync, identity.node_id.clone());
    let node = Node::new(config, identity, coordinator, local.port());
    if let Some(service) = service {
        // Before settling: peers that reach this node meanwhile may forward commands to it.
        service.attach(&node);
    }
    if let Some(bus) = &bus {
        // Clients wait in the listen backlog meanwhile: better a few milliseconds late than NOQUORUM.
        if !bus.settle(settle_limit).await {
            tracing::warn!("some members were still being dialed after {settle_limit:?}; taking commands anyway");
        }
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        addr = %local,
        data_dir = %data_dir.display(),
        engine = ?engine,
        fsync = fsync.as_str(),
        node_id = %node_id,
        "ringkv ready to accept connections"
    );
    tokio::spawn(expiry_sweep(node.clone(), sweep_every));
    tokio::spawn(stop_on_signal(node.clone()));
    tokio::spawn(sample_memory(node.clone()));
    accept_loop(node.clone(), listener).await;
    tracing::info!("shutting down: waiting for clients to finish");
    if tokio::time::timeout(DRAIN_TIMEOUT, node.clients.wait_empty())
        .await
        .is_err()
    {
        tracing::warn!("clients still connected after {DRAIN_TIMEOUT:?}; closing anyway");
    }
    if let Some(bus) = bus {
        bus.stop();
    }
    replica.durability().sync_now()?;
    tracing::info!("data synced; bye");
    Ok(())
}

/// The coordinator: a cluster of one without members; otherwise the ring
/// and the peer bus, listening on this member's peer address.
async fn start_cluster(
    config: &Config,
    identity: &Identity,
    replica: &Arc<Replica>,
    local: std::net::SocketAddr,
) -> Result<(Coordinator, Option<Arc<PeerService>>), StartError> {
    let cluster = &config.cluster;
    if !cluster.is_clustered() {
        let membership = Arc::new(Membership::single(&identity.node_id, local));
        return Ok((Coordinator::single(replica.clone(), membership), None));
    }
    let membership =
        Arc::new(Membership::from_config(cluster, &identity.node_id).map_err(|e| StartError::Cluster(e.to_string()))?);
    let me = membership.member(membership.me()).peer;
    let listener = TcpListener::bind(me).await.map_err(|source| StartError::Bind {
        addr: me.to_string(),
        source,
    })?;
    let service = PeerService::new(replica.clone());
    let bus_config = BusConfig {
        me: membership.me(),
        names: membership.members().iter().map(|m| m.id.clone()).collect(),
        addresses: membership.members().iter().map(|m| m.peer).collect(),
        secret: cluster.secret.as_bytes().to_vec(),
        // A record carries at most a few values of proto_max_bulk_len.
        max_frame: usize::try_from(config.server.proto_max_bulk_len)
            .unwrap_or(usize::MAX)
            .saturating_mul(4)
            .saturating_add(1 << 20),
        connect_timeout: Duration::from_millis(cluster.request_timeout_ms),
        redial: Redial::default(),
    };
    bus_config.validate().map_err(|e| StartError::Cluster(e.to_string()))?;
    let bus = Bus::start(bus_config, listener, service.clone());
    tracing::info!(
        peer = %me,
        members = membership.members().len(),
        replicas = membership.ring().replicas(),
        read_quorum = cluster.read_quorum,
        write_quorum = cluster.write_quorum,
        "peer bus listening"
    );
    let coordinator = Coordinator::clustered(
        replica.clone(),
        membership,
        bus,
        (cluster.read_quorum, cluster.write_quorum),
        Duration::from_millis(cluster.request_timeout_ms),
    );
    Ok((coordinator, Some(service)))
}

async fn expiry_sweep(node: Arc<Node>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Bounded rounds per tick, so a mass expiry cannot starve clients.
        for _ in 0..16 {
            match node.coordinator.local().sweep_expired(SWEEP_BATCH) {
                Ok(swept) => {
                    node.stats.expired.fetch_add(swept.expired, Ordering::Relaxed);
                    if swept.handled < SWEEP_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!("expiry sweep failed: {e}");
                    break;
                }
            }
        }
    }
}

/// Keeps `used_memory` fresh for the maxmemory check (cheaper than reading
/// /proc on every write).
async fn sample_memory(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        node.sample_memory();
    }
}

async fn stop_on_signal(node: Arc<Node>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    node.shut_down();
}
