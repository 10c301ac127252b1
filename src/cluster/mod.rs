//! Cluster concerns: where a key lives (slots, the ring), who the members are,
//! and how an operation reaches its replicas (the coordinator).

pub mod coordinator;
pub mod handback;
pub mod membership;
pub mod merge_batch;
pub mod messages;
pub mod preread;
pub mod ring;
pub mod service;
pub mod slot;
pub mod wire;
