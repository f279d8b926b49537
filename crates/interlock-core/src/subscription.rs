//! A runtime-independent "catch up, then follow" subscription built on `read_all`.
//!
//! Backends that can tell when an append commits (an in-process writer, a LISTEN connection) signal
//! an [`AppendNotifier`]; [`poll_subscription`] reads in batches until it reaches the head, then
//! sleeps until the next signal. The notifier is only a wake-up: the store stays the log, so a lost
//! or spurious signal costs at most a delay or an empty read, never an event.

use std::collections::VecDeque;

use event_listener::{Event as Signal, Listener};
use futures::stream::{self, StreamExt};

use crate::envelope::RecordedEvent;
use crate::position::Position;
use crate::store::{EventStore, EventSubscription};

/// Wakes subscriptions when new events have committed.
#[derive(Debug, Default)]
pub struct AppendNotifier {
    signal: Signal,
}

impl AppendNotifier {
    /// A notifier nobody listens to yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every waiting subscription. Call after the commit, never before.
    pub fn notify(&self) {
        self.signal.notify(usize::MAX);
    }

    /// Registers interest in the next [`notify`](Self::notify). Register before checking for
    /// new events, then await, so a commit between the check and the wait is not missed.
    pub fn listen(&self) -> impl std::future::Future<Output = ()> + Send + Unpin + use<> {
        let listener = self.signal.listen();
        Box::pin(async move {
            let _: () = listener.await;
        })
    }

    /// Blocks the current thread until the next notification or the timeout (for threads that
    /// are not async).
    pub fn wait_blocking(&self, timeout: std::time::Duration) {
        let listener = self.signal.listen();
        let _ = listener.wait_timeout(timeout);
    }
}

struct State<S> {
    store: S,
    notifier: std::sync::Arc<AppendNotifier>,
    after: Position,
    batch: usize,
    buffer: VecDeque<RecordedEvent>,
}

/// A subscription that reads `store` in batches of `batch` events after `after`, then waits on
/// `notifier` whenever it has caught up. Errors are yielded as items; the subscription then keeps
/// trying from the same position when polled again.
pub fn poll_subscription<S>(
    store: S,
    notifier: std::sync::Arc<AppendNotifier>,
    after: Position,
    batch: usize,
) -> EventSubscription
where
    S: EventStore + Clone,
{
    let state = State {
        store,
        notifier,
        after,
        batch: batch.max(1),
        buffer: VecDeque::new(),
    };
    stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.buffer.pop_front() {
                st.after = event.position;
                return Some((Ok(event), st));
            }
            let woken = st.notifier.listen();
            match st.store.read_all(st.after, st.batch).await {
                Ok(events) if events.is_empty() => woken.await,
                Ok(events) => st.buffer.extend(events),
                Err(e) => return Some((Err(e), st)),
            }
        }
    })
    .boxed()
}
