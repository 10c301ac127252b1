//! Futures run concurrently, their outputs in order: what `futures_util::future::join_all` does for a short list,
//! without its move of each finished future's slot. join_all keeps a `MaybeDone` per future and takes an output by
//! `mem::replace` of the whole slot, which is as large as the future; a pipelined command's future is over a KiB,
//! and callgrind counted about 150 instructions of `memcpy` per pipelined SET for it. Here a finished future is
//! dropped in place and its output kept apart.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The future [`join_in_order`] gives.
pub struct JoinInOrder<F: Future> {
    /// Each future until it finishes, then `None` (dropped where it lies).
    running: Pin<Box<[Option<F>]>>,
    /// Each future's output once it has one, by position.
    outputs: Vec<Option<F::Output>>,
    /// Futures not finished yet.
    left: usize,
}

// The futures are pinned inside their box; the outputs are never pinned.
impl<F: Future> Unpin for JoinInOrder<F> {}

/// Runs `futures` concurrently and gives their outputs in the order the futures came.
pub fn join_in_order<I>(futures: I) -> JoinInOrder<I::Item>
where
    I: IntoIterator,
    I::Item: Future,
{
    let running: Box<[Option<I::Item>]> = futures.into_iter().map(Some).collect();
    let left = running.len();
    JoinInOrder {
        running: Box::into_pin(running),
        outputs: (0..left).map(|_| None).collect(),
        left,
    }
}

impl<F: Future> Future for JoinInOrder<F> {
    type Output = Vec<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        for (i, output) in this.outputs.iter_mut().enumerate() {
            // SAFETY: a slot is never moved out of the pinned box: it is polled where it lies, then dropped there.
            let mut slot = unsafe { this.running.as_mut().map_unchecked_mut(|all| &mut all[i]) };
            let Some(future) = slot.as_mut().as_pin_mut() else {
                continue;
            };
            if let Poll::Ready(out) = future.poll(cx) {
                *output = Some(out);
                slot.set(None);
                this.left -= 1;
            }
        }
        if this.left > 0 {
            return Poll::Pending;
        }
        // Sized first: a flattened iterator's lower bound is 0, so collecting it would grow the list.
        let mut outputs = Vec::with_capacity(this.outputs.len());
        outputs.extend(this.outputs.drain(..).flatten());
        Poll::Ready(outputs)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use futures_util::FutureExt;
    use tokio::sync::oneshot;

    use super::*;

    /// Outputs come in the futures' order whatever order they finish in, and a finished future is dropped at once
    /// (not polled again, not kept until the others finish).
    #[tokio::test]
    async fn outputs_keep_the_order_given_and_finished_futures_are_dropped_at_once() {
        let dropped = Rc::new(RefCell::new(Vec::new()));
        struct Marker(usize, Rc<RefCell<Vec<usize>>>);
        impl Drop for Marker {
            fn drop(&mut self) {
                self.1.borrow_mut().push(self.0);
            }
        }
        /// Ten times what its channel brings; its marker lives as long as it does.
        struct Held {
            rx: oneshot::Receiver<usize>,
            _marker: Marker,
        }
        impl Future for Held {
            type Output = usize;
            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
                Pin::new(&mut self.rx)
                    .poll(cx)
                    .map(|value| value.unwrap_or(usize::MAX) * 10)
            }
        }
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..4).map(|_| oneshot::channel::<usize>()).unzip();
        let futures = receivers.into_iter().enumerate().map(|(i, rx)| Held {
            rx,
            _marker: Marker(i, dropped.clone()),
        });
        let mut join = join_in_order(futures);
        let mut senders: Vec<Option<oneshot::Sender<usize>>> = senders.into_iter().map(Some).collect();
        for i in [2, 0, 3] {
            if let Some(tx) = senders[i].take() {
                let _ = tx.send(i);
            }
            assert!((&mut join).now_or_never().is_none(), "one future is still waiting");
        }
        assert_eq!(*dropped.borrow(), [2, 0, 3]);
        if let Some(tx) = senders[1].take() {
            let _ = tx.send(1);
        }
        assert_eq!(join.await, [0, 10, 20, 30]);
        assert_eq!(
            join_in_order(Vec::<std::future::Ready<u8>>::new()).await,
            Vec::<u8>::new()
        );
    }
}
