//! Quorum reads a pipeline made ahead of its commands.
//!
//! Each single-key read of a pipeline would ask every replica on its own. Instead the connection reads all their
//! keys with one message per replica ([`Coordinator::read_many`](super::coordinator::Coordinator::read_many)) and
//! runs the commands in a scope where a read finds its key's answer in hand. The pipeline's keys are distinct, so
//! each answer is taken by the one command that reads it, exactly as if it had read then.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;

use crate::error::CommandResult;
use crate::version::Record;

/// A key's merged record from R replicas, or why not.
type Answer = CommandResult<Option<Arc<Record>>>;

tokio::task_local! {
    static PREREAD: Preread;
}

struct Preread {
    db: u8,
    answers: RefCell<AHashMap<Bytes, Answer>>,
}

/// Runs `commands` with the `answers` read for `keys` of `db` in hand.
pub async fn scope<T>(db: u8, keys: Vec<Bytes>, answers: Vec<Answer>, commands: impl Future<Output = T>) -> T {
    let preread = Preread {
        db,
        answers: RefCell::new(keys.into_iter().zip(answers).collect()),
    };
    PREREAD.scope(preread, commands).await
}

/// The answer read ahead for `key` of `db`, if any; each is given out once.
pub fn take(db: u8, key: &[u8]) -> Option<Answer> {
    PREREAD
        .try_with(|preread| {
            if preread.db != db {
                return None;
            }
            preread.answers.borrow_mut().remove(key)
        })
        .ok()
        .flatten()
}
