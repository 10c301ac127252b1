//! Replication of a pipeline's writes in one message per replica.
//!
//! A coordinator sends each record it writes to the key's other replicas as a [`PeerRequest::Merge`]. A pipeline's
//! writes (and a forwarded batch's, and an MSET's) run concurrently in one task; in a [`scope`], their merges to one
//! member queue up and travel as one [`PeerRequest::MergeBatch`], answered by one [`PeerResponse::Batch`]: per key,
//! no request id, timer or response frame of its own.
//!
//! When a batch goes: a write that waits for acks queues its merges, then yields once, so that every write of the
//! pass queues its own before the first of them polls the batch's answer, which sends it. Merges nobody waits for
//! (told, not asked) go when the scope ends, before the task answers. Each write still counts its own acks, so W
//! is exactly what it was with a message per key. A write stops waiting once it has W; batches still unanswered
//! when the scope ends are handed back to the caller to wait for (one task per pipeline, not one per write).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{join_all, poll_fn, BoxFuture, FutureExt};
use futures_util::task::{waker_ref, ArcWake};
use parking_lot::Mutex;
use smallvec::SmallVec;

use super::coordinator::ClusterStats;
use super::messages::{PeerRequest, PeerResponse, Written};
use super::ring::MemberIndex;
use super::service::PeerService;
use crate::net::{Bus, BusError};
use crate::node::Stats;

/// Bytes of records per batch, far below the frame limit; a bigger record travels alone.
const BATCH_BYTES: usize = 256 * 1024;

tokio::task_local! {
    static BATCHES: Batches;
}

/// What a replica answered to one merge.
#[derive(Debug, Clone)]
pub enum MergeAnswer {
    /// Merged.
    Ack,
    /// Merged, and the replica held versions the sender lacked: its merged copy (encoded).
    Diverged(Bytes),
    /// No answer, or an error.
    Failed,
}

impl MergeAnswer {
    fn of(response: &PeerResponse) -> MergeAnswer {
        match response {
            PeerResponse::Ack => MergeAnswer::Ack,
            PeerResponse::Diverged(copy) => MergeAnswer::Diverged(copy.clone()),
            _ => MergeAnswer::Failed,
        }
    }

    /// The answer to a [`PeerRequest::Merge`] call.
    pub fn of_call(result: Result<PeerResponse, BusError>) -> MergeAnswer {
        result.map_or(MergeAnswer::Failed, |response| MergeAnswer::of(&response))
    }
}

/// A batch's answers (`None` if the batch failed as a whole), sent when first polled.
type Call = BoxFuture<'static, Option<Vec<PeerResponse>>>;

/// A batch's call, shared by the writes in it: whichever polls first drives it, and its answers stay for the rest.
/// The call is polled with a waker that wakes every write that waited for it, as a write may be polled with a waker
/// of its own (`join_all` of many) and may be dropped once it has W. Written here rather than with
/// `futures::Shared`, whose every clone keeps its waker in a locked slab under a key of its own, where the writes of
/// a pipeline usually share one: the entry node ran 3% fewer instructions per `SET -P 16` without it (callgrind).
#[derive(Clone)]
struct BatchCall(Arc<Batch>);

struct Batch {
    state: Mutex<CallState>,
    /// Wakers of the writes that found the call unanswered, each once.
    waiting: Mutex<SmallVec<[Waker; 2]>>,
}

struct CallState {
    /// `None` once answered.
    call: Option<Call>,
    answers: Option<Vec<PeerResponse>>,
}

impl ArcWake for Batch {
    fn wake_by_ref(batch: &Arc<Self>) {
        for waker in batch.waiting.lock().drain(..) {
            waker.wake();
        }
    }
}

impl BatchCall {
    fn new(call: Call) -> BatchCall {
        BatchCall(Arc::new(Batch {
            state: Mutex::new(CallState {
                call: Some(call),
                answers: None,
            }),
            waiting: Mutex::new(SmallVec::new()),
        }))
    }

    /// Polls the call if it is still unanswered; once it is, `read` reads the answers.
    fn poll_answers<T>(&self, cx: &mut Context<'_>, read: impl FnOnce(Option<&[PeerResponse]>) -> T) -> Poll<T> {
        let mut guard = self.0.state.lock();
        let state = &mut *guard;
        if let Some(call) = &mut state.call {
            {
                let mut waiting = self.0.waiting.lock();
                if !waiting.iter().any(|waker| waker.will_wake(cx.waker())) {
                    waiting.push(cx.waker().clone());
                }
            }
            let wake_all = waker_ref(&self.0);
            state.answers = ready!(call.as_mut().poll(&mut Context::from_waker(&wake_all)));
            state.call = None;
            // The others waiting learn it now; this one needs no wake-up.
            for waker in self.0.waiting.lock().drain(..) {
                if !waker.will_wake(cx.waker()) {
                    waker.wake();
                }
            }
        }
        Poll::Ready(read(state.answers.as_deref()))
    }

    fn is_answered(&self) -> bool {
        self.0.state.lock().call.is_none()
    }
}

/// One write's answer from a batch. Dropping it does not cancel the batch: the scope hands batches still
/// unanswered at its end to its caller (see [`Unanswered`]).
pub struct BatchedAnswer {
    answers: BatchCall,
    index: usize,
}

impl Future for BatchedAnswer {
    type Output = MergeAnswer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<MergeAnswer> {
        let index = self.index;
        self.answers.poll_answers(cx, |answers| {
            answers
                .and_then(|all| all.get(index))
                .map_or(MergeAnswer::Failed, MergeAnswer::of)
        })
    }
}

/// Batches a scope sent whose answers had not come when it ended: waited for after it, so that a merge counts in
/// flight until it lands (FLUSHDB's fence) though no write waits for it any more.
pub struct Unanswered(Vec<BatchCall>);

impl Unanswered {
    /// Whether every batch was answered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Waits for the answers (and drops them).
    pub async fn wait(self) {
        join_all(self.0.iter().map(|call| poll_fn(|cx| call.poll_answers(cx, |_| ())))).await;
    }
}

/// Merges to one member that have not been sent yet, and the answer that sends them when first polled.
struct Open {
    member: MemberIndex,
    bytes: usize,
    /// `None` once sent.
    queued: Arc<Mutex<Option<Vec<Written>>>>,
    answers: BatchCall,
}

/// The batches of one scope.
struct Batches {
    bus: Arc<Bus<PeerService>>,
    timeout: Duration,
    stats: Arc<ClusterStats>,
    open: RefCell<Vec<Open>>,
    /// Every batch opened, to find those unanswered at the end.
    asked: RefCell<Vec<BatchCall>>,
    /// Merges told (no answer wanted), per member, sent when the scope ends.
    told: RefCell<Vec<(MemberIndex, Vec<Written>)>>,
}

/// Runs `writes` with their merges batched per member (see the module doc); gives their output and the batches
/// still unanswered.
pub async fn scope<T>(
    bus: Arc<Bus<PeerService>>,
    timeout: Duration,
    stats: Arc<ClusterStats>,
    writes: impl Future<Output = T>,
) -> (T, Unanswered) {
    let batches = Batches {
        bus,
        timeout,
        stats,
        open: RefCell::new(Vec::new()),
        asked: RefCell::new(Vec::new()),
        told: RefCell::new(Vec::new()),
    };
    BATCHES
        .scope(batches, async {
            let out = writes.await;
            let unanswered = BATCHES.with(|batches| {
                batches.send_told();
                let mut asked = batches.asked.take();
                asked.retain(|call| !call.is_answered());
                Unanswered(asked)
            });
            (out, unanswered)
        })
        .await
}

/// Queues a merge of `written()` to `member` if a scope is open, and gives the way to its answer; otherwise `None`:
/// the caller sends it on its own. The caller yields once before it awaits (see the module doc).
pub fn ask(member: MemberIndex, written: impl FnOnce() -> Written) -> Option<BatchedAnswer> {
    if !is_open() {
        return None;
    }
    let (answers, index) = BATCHES.with(|batches| batches.ask(member, written()));
    Some(BatchedAnswer { answers, index })
}

/// Queues a merge of `written()` to `member`, sent without asking for an answer when the scope ends, if a scope is
/// open; otherwise false: the caller sends it on its own.
pub fn tell(member: MemberIndex, written: impl FnOnce() -> Written) -> bool {
    if !is_open() {
        return false;
    }
    BATCHES.with(|batches| {
        let mut told = batches.told.borrow_mut();
        match told.iter_mut().find(|(m, _)| *m == member) {
            Some((_, merges)) => merges.push(written()),
            None => told.push((member, vec![written()])),
        }
    });
    true
}

/// Whether this task runs in a [`scope`].
pub fn is_open() -> bool {
    BATCHES.try_with(|_| ()).is_ok()
}

impl Batches {
    /// Queues `written` in `member`'s open batch (a new one if it was sent or is full): the batch's answers and
    /// the merge's position in them.
    fn ask(&self, member: MemberIndex, written: Written) -> (BatchCall, usize) {
        let size = weight(&written);
        let mut open = self.open.borrow_mut();
        open.retain(|batch| batch.queued.lock().is_some());
        let at = match open
            .iter()
            .position(|b| b.member == member && (b.bytes == 0 || b.bytes + size <= BATCH_BYTES))
        {
            Some(at) => at,
            None => {
                let batch = self.open_batch(member);
                self.asked.borrow_mut().push(batch.answers.clone());
                open.push(batch);
                open.len() - 1
            }
        };
        let batch = &mut open[at];
        batch.bytes += size;
        let mut queued = batch.queued.lock();
        let merges = queued.get_or_insert_with(Vec::new);
        merges.push(written);
        (batch.answers.clone(), merges.len() - 1)
    }

    /// An empty batch to `member`, sent when its answers are first polled.
    fn open_batch(&self, member: MemberIndex) -> Open {
        let queued: Arc<Mutex<Option<Vec<Written>>>> = Arc::new(Mutex::new(Some(Vec::new())));
        let (bus, timeout, stats, taken) = (self.bus.clone(), self.timeout, self.stats.clone(), queued.clone());
        let answers = async move {
            let merges = taken.lock().take().unwrap_or_default();
            Stats::bump(&stats.replication_messages);
            let n = merges.len();
            let answers = match bus.call(member, request(merges), timeout).await {
                Ok(PeerResponse::Batch(answers)) if answers.len() == n => Some(answers),
                Ok(single) if n == 1 => Some(vec![single]),
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!("replicating to member {member} failed: {e}");
                    None
                }
            };
            answers
        };
        Open {
            member,
            bytes: 0,
            queued,
            answers: BatchCall::new(answers.boxed()),
        }
    }

    /// Sends the told merges, in batches of at most [`BATCH_BYTES`].
    fn send_told(&self) {
        for (member, merges) in self.told.take() {
            for batch in split_by_weight(merges, BATCH_BYTES) {
                self.tell_now(member, batch);
            }
        }
    }

    fn tell_now(&self, member: MemberIndex, merges: Vec<Written>) {
        Stats::bump(&self.stats.replication_messages);
        if let Err(e) = self.bus.tell(member, request(merges)) {
            tracing::debug!("replicating to member {member} failed: {e}");
        }
    }
}

/// One merge as a plain `Merge`, more as a `MergeBatch`.
fn request(mut merges: Vec<Written>) -> PeerRequest {
    match merges.pop() {
        Some(only) if merges.is_empty() => only.into_merge(),
        last => {
            merges.extend(last);
            PeerRequest::MergeBatch(merges)
        }
    }
}

/// `merges` in order, in batches of at most `limit` bytes each (a merge that weighs more travels alone). Merges that
/// fit one batch, a pipeline's as a rule, stay in their list: no copy into a new one (callgrind).
fn split_by_weight(merges: Vec<Written>, limit: usize) -> SmallVec<[Vec<Written>; 1]> {
    if merges.is_empty() {
        return SmallVec::new();
    }
    if merges.iter().map(weight).sum::<usize>() <= limit {
        return smallvec::smallvec![merges];
    }
    let mut batches = SmallVec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for merge in merges {
        let size = weight(&merge);
        if !batch.is_empty() && bytes + size > limit {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push(merge);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// About how many bytes a merge takes on the wire.
fn weight(written: &Written) -> usize {
    written.key.len() + written.record.len() + 8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(key: &'static str) -> Written {
        Written {
            db: 0,
            key: Bytes::from_static(key.as_bytes()),
            record: Bytes::from_static(b"r"),
            basis: None,
        }
    }

    #[test]
    fn one_merge_goes_plain_and_more_keep_their_order() {
        assert!(matches!(request(vec![written("a")]), PeerRequest::Merge { key, .. } if key == "a"));
        let PeerRequest::MergeBatch(merges) = request(vec![written("a"), written("b"), written("c")]) else {
            panic!("three merges make a batch");
        };
        let keys: Vec<&[u8]> = merges.iter().map(|m| &m.key[..]).collect();
        assert_eq!(keys, [b"a", b"b", b"c"]);
    }

    /// Told merges go in order, none lost, each batch within the limit unless one merge alone exceeds it.
    #[test]
    fn told_merges_are_split_by_weight_in_order() {
        let keys = ["a", "b", "c", "d", "e"];
        let merges = || keys.iter().map(|k| written(k)).collect::<Vec<_>>();
        let one = weight(&written("a"));
        let split = |limit| -> Vec<Vec<String>> {
            split_by_weight(merges(), limit)
                .into_iter()
                .map(|batch| {
                    batch
                        .iter()
                        .map(|m| String::from_utf8_lossy(&m.key).into_owned())
                        .collect()
                })
                .collect()
        };
        assert_eq!(split(5 * one), [keys]);
        assert_eq!(split(2 * one), [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
        assert_eq!(split(one - 1), keys.map(|k| vec![k]));
        assert!(
            split_by_weight(Vec::new(), one).is_empty(),
            "nothing told, nothing sent"
        );
    }

    /// Counts its wake-ups.
    struct Counter(std::sync::atomic::AtomicUsize);

    impl ArcWake for Counter {
        fn wake_by_ref(counter: &Arc<Self>) {
            counter.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn woken(counter: &Arc<Counter>) -> usize {
        counter.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Writes that wait with wakers of their own are all woken by the answer, whichever polled last, and all read it.
    #[test]
    fn every_write_waiting_for_a_batch_is_woken_by_its_answer() {
        let (send, receive) = tokio::sync::oneshot::channel::<Vec<PeerResponse>>();
        let call = BatchCall::new(async move { receive.await.ok() }.boxed());
        let (first, second) = (Arc::new(Counter(0.into())), Arc::new(Counter(0.into())));
        let (first_waker, second_waker) = (
            futures_util::task::waker(first.clone()),
            futures_util::task::waker(second.clone()),
        );
        let ack = |answers: Option<&[PeerResponse]>| answers.and_then(|all| all.first()).map(MergeAnswer::of);
        for waker in [&first_waker, &second_waker, &first_waker] {
            assert!(call.poll_answers(&mut Context::from_waker(waker), ack).is_pending());
        }
        assert!(!call.is_answered());
        send.send(vec![PeerResponse::Ack]).expect("the call waits");
        assert_eq!((woken(&first), woken(&second)), (1, 1), "each waiting write woken once");
        for waker in [&second_waker, &first_waker] {
            let answer = call.poll_answers(&mut Context::from_waker(waker), ack);
            assert!(matches!(answer, Poll::Ready(Some(MergeAnswer::Ack))));
        }
        assert!(call.is_answered());
        assert_eq!((woken(&first), woken(&second)), (1, 1), "no wake-up once answered");
    }
}
