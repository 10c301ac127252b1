//! Who is in the cluster and where each member listens. Today the member list
//! is static (from config); everything that needs the members or the ring
//! asks this module, and gets a snapshot, so a later change can swap the ring
//! at run time (gossip, CLUSTER MEET/FORGET) without touching its users.

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::RwLock;

use super::ring::{MemberIndex, Ring, RingError, RingMember};
use crate::config::ClusterConfig;

/// One node as the others see it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its name (`cluster.node_id`).
    pub id: String,
    /// Where clients reach its RESP port; CLUSTER SLOTS announces it.
    pub address: SocketAddr,
    /// Where its peer bus listens.
    pub peer: SocketAddr,
    /// Failure domain ("" = none).
    pub zone: String,
}

/// The member list, this node's place in it, and the ring built from it.
pub struct Membership {
    me: MemberIndex,
    members: Vec<Member>,
    ring: RwLock<Arc<Ring>>,
}

impl Membership {
    /// A cluster of one: this node owns every slot (N = 1).
    pub fn single(id: &str, address: SocketAddr) -> Membership {
        let member = Member {
            id: id.to_string(),
            address,
            peer: address,
            zone: String::new(),
        };
        let ring = Ring::new(
            vec![RingMember {
                id: id.to_string(),
                zone: String::new(),
                vnodes: 1,
            }],
            1,
        )
        .expect("a ring of one member is valid");
        Membership {
            me: 0,
            members: vec![member],
            ring: RwLock::new(Arc::new(ring)),
        }
    }

    /// The members the config lists; `node_id` must be one of them (checked by config validation).
    pub fn from_config(config: &ClusterConfig, node_id: &str) -> Result<Membership, RingError> {
        let mut members = Vec::with_capacity(config.members.len());
        let mut ring_members = Vec::with_capacity(config.members.len());
        for m in &config.members {
            // Addresses were checked by config validation; a failure here is a bug there.
            let parse = |text: &str| text.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
            members.push(Member {
                id: m.id.clone(),
                address: parse(&m.address),
                peer: parse(&m.peer),
                zone: m.zone.clone(),
            });
            ring_members.push(RingMember {
                id: m.id.clone(),
                zone: m.zone.clone(),
                vnodes: m.vnodes,
            });
        }
        let me = members.iter().position(|m| m.id == node_id).unwrap_or(0) as MemberIndex;
        let ring = Ring::new(ring_members, config.replicas)?;
        Ok(Membership {
            me,
            members,
            ring: RwLock::new(Arc::new(ring)),
        })
    }

    /// This node's index.
    pub fn me(&self) -> MemberIndex {
        self.me
    }

    /// Every member, by index.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// One member.
    pub fn member(&self, index: MemberIndex) -> &Member {
        &self.members[usize::from(index)]
    }

    /// The ring now; hold the snapshot for one operation, not longer.
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.read().clone()
    }
}
