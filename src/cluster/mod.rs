//! Cluster concerns: where a key lives (slots, later the ring) and how an
//! operation reaches its replicas (the coordinator).

pub mod coordinator;
pub mod slot;
