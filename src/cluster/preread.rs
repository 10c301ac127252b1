//! Quorum reads a pipeline made ahead of its commands.
//!
//! Each single-key read of a pipeline would ask every replica on its own. Instead the connection reads all their
//! keys with one message per replica ([`Coordinator::read_many`](super::coordinator::Coordinator::read_many)) and
//! runs the commands in a scope where a read finds its key's answer in hand. The pipeline's keys are distinct, so
//! each answer is taken by the one command that reads it, exactly as if it had read then.

use std::cell::{Cell, RefCell};
use std::future::Future;

use bytes::Bytes;

use super::coordinator::Found;
use crate::error::CommandResult;

/// A key's merged record from R replicas, or why not.
type Answer = CommandResult<Option<Found>>;

tokio::task_local! {
    static PREREAD: Preread;
}

/// The answers by key, in the pipeline's order. The commands run in that order too, so a command's key is nearly
/// always the one after the last taken: a comparison, where a hash map hashed every key twice (callgrind: 400
/// instructions per pipelined GET); any other order still finds its key by a search.
struct Preread {
    db: u8,
    answers: RefCell<Vec<(Bytes, Option<Answer>)>>,
    next: Cell<usize>,
}

/// Runs `commands` with the `answers` read for `keys` of `db` in hand.
pub async fn scope<T>(db: u8, keys: Vec<Bytes>, answers: Vec<Answer>, commands: impl Future<Output = T>) -> T {
    let preread = Preread {
        db,
        answers: RefCell::new(keys.into_iter().zip(answers.into_iter().map(Some)).collect()),
        next: Cell::new(0),
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
            let mut answers = preread.answers.borrow_mut();
            let next = preread.next.get();
            let at = match answers.get(next) {
                Some((k, _)) if k[..] == *key => next,
                _ => answers.iter().position(|(k, _)| k[..] == *key)?,
            };
            preread.next.set(at + 1);
            answers[at].1.take()
        })
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::error::CommandError;
    use crate::version::Record;

    fn answer(value: &'static [u8]) -> Answer {
        let mut record = Record::default();
        record
            .supersede(1, Some(Bytes::from_static(value)), None, 1)
            .map_err(|_| CommandError::NoReplica)?;
        Ok(Some(Found::Decoded(Arc::new(record))))
    }

    fn value(answer: Option<Answer>) -> Option<Bytes> {
        let record = answer?.ok()??.record().ok()?;
        record.siblings.first()?.value.clone()
    }

    #[tokio::test]
    async fn each_answer_goes_once_to_its_key_in_any_order_and_only_in_its_database() {
        let keys: Vec<Bytes> = [&b"a"[..], b"b", b"c", b"d"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        let answers = vec![answer(b"1"), answer(b"2"), answer(b"3"), Ok(None)];
        scope(3, keys, answers, async {
            assert_eq!(value(take(3, b"a")), Some(Bytes::from_static(b"1")));
            assert_eq!(value(take(3, b"c")), Some(Bytes::from_static(b"3")), "out of order");
            assert_eq!(value(take(3, b"b")), Some(Bytes::from_static(b"2")), "back again");
            assert!(matches!(take(3, b"d"), Some(Ok(None))), "read and absent");
            assert!(take(3, b"a").is_none(), "given out once");
            assert!(take(3, b"e").is_none(), "not read ahead");
            assert!(take(4, b"c").is_none(), "another database");
        })
        .await;
        assert!(take(3, b"a").is_none(), "outside the scope");
    }
}
