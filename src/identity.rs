//! Who this node is: a name and an incarnation, made when the data directory
//! is created and kept in it. The version-vector actor is derived from both, so
//! a node that lost its disk (or runs the RAM engine) comes back as a new actor
//! and can never reissue a dot it issued before.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::version::ActorId;

const FILE: &str = "identity.toml";

/// The persisted identity of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Stable node name (40 hex characters when generated, like Redis node ids).
    pub node_id: String,
    /// Random number drawn when the data dir was created.
    pub incarnation: u64,
}

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the identity file failed.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The identity file is not ours.
    #[error("identity file {0} is damaged")]
    Damaged(String),
    /// The config names a different node than the data dir holds.
    #[error("data dir belongs to node {stored}, but the config says node_id = {configured}")]
    Mismatch {
        /// In the data dir.
        stored: String,
        /// In the config.
        configured: String,
    },
}

impl Identity {
    /// The version-vector actor for this incarnation.
    pub fn actor(&self) -> ActorId {
        let mut bytes = self.node_id.as_bytes().to_vec();
        bytes.extend_from_slice(&self.incarnation.to_le_bytes());
        xxh3_64(&bytes)
    }

    /// A fresh identity; `node_id` is used if non-empty.
    pub fn generate(node_id: &str) -> Identity {
        let node_id = if node_id.is_empty() {
            (0..5).map(|_| format!("{:08x}", rand::random::<u32>())).collect()
        } else {
            node_id.to_string()
        };
        Identity {
            node_id,
            // 63 bits: TOML integers are signed.
            incarnation: rand::random::<u64>() >> 1,
        }
    }

    /// Loads the identity kept in `dir`, or creates and stores one.
    pub fn load_or_create(dir: &Path, configured: &str) -> Result<Identity, IdentityError> {
        let path = dir.join(FILE);
        let shown = path.display().to_string();
        let io = |source| IdentityError::Io {
            path: shown.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let identity: Identity = toml::from_str(&text).map_err(|_| IdentityError::Damaged(shown.clone()))?;
                if !configured.is_empty() && configured != identity.node_id {
                    return Err(IdentityError::Mismatch {
                        stored: identity.node_id,
                        configured: configured.to_string(),
                    });
                }
                Ok(identity)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(io)?;
                let identity = Identity::generate(configured);
                let text = toml::to_string(&identity).map_err(|_| IdentityError::Damaged(shown.clone()))?;
                let tmp = dir.join(format!("{FILE}.tmp"));
                let mut file = std::fs::File::create(&tmp).map_err(io)?;
                file.write_all(text.as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
                Ok(identity)
            }
            Err(e) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists_and_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Identity::load_or_create(dir.path(), "").expect("create");
        assert_eq!(first.node_id.len(), 40);
        let again = Identity::load_or_create(dir.path(), "").expect("load");
        assert_eq!(first, again);
        assert_eq!(first.actor(), again.actor());
        let err = Identity::load_or_create(dir.path(), "other").expect_err("mismatch");
        assert!(matches!(err, IdentityError::Mismatch { .. }));
        assert_ne!(Identity::generate("n").actor(), Identity::generate("n").actor());
    }
}
