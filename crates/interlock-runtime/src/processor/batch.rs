//! Processors that take whole batches and commit their checkpoint with their read model.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use interlock_core::upcast::Upcasters;
use interlock_core::{Position, RecordedEvent, StoreError};
use tokio::sync::Mutex;

use super::HandlerError;
use super::core::{BatchError, Sink, Target};
use super::settings::FailurePolicy;
use crate::error::ProcessingFailure;

/// A processor that applies whole batches and stores its own checkpoint in the same transaction
/// as its read model, so a crash can never leave the view ahead of or behind its checkpoint
/// (effectively-once delivery). Backends offer ready-made ones for views kept in their own
/// database; the application drives them like any processor (catch-up, live, inline, rebuild,
/// dead-letter replay).
pub trait BatchProcessor: Send + Sync + 'static {
    /// The processor's stable name (its checkpoint and dead letters are stored under it).
    const NAME: &'static str;

    /// Applies `batch.events` in order, in one transaction that also stores, when
    /// `batch.store_checkpoint` is set, the position of the last event it got past under
    /// `batch.checkpoint` in the store's checkpoint table (with the fence check of `batch.lease`
    /// in that same transaction, when there is one). An event that fails is parked in that
    /// transaction (policy [`FailurePolicy::Park`]) or ends the batch before it
    /// ([`FailurePolicy::Stop`]).
    fn apply_batch(
        &mut self,
        batch: Batch<'_>,
    ) -> impl Future<Output = Result<BatchOutcome, StoreError>> + Send;

    /// Empties the read model (and its checkpoint) before a rebuild.
    fn reset(&mut self) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A batch handed to a [`BatchProcessor`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Batch<'a> {
    /// Events in global order, already upcast.
    pub events: &'a [RecordedEvent],
    /// Whether to store the checkpoint (not for dead-letter replays, which must not move it).
    pub store_checkpoint: bool,
    /// The name to store the checkpoint under: the processor's name, or for a partitioned
    /// processor the partition's (`"<name>#<index>/<count>"`).
    pub checkpoint: &'a str,
    /// The lease this process holds on the partition, when the processor is partitioned or
    /// exclusive: the checkpoint must be stored only if the lease still carries this fence
    /// (checked in the batch's own transaction); otherwise the whole batch is rolled back and the
    /// answer is [`StoreError::Fenced`].
    pub lease: Option<&'a interlock_core::Lease>,
    /// What to do with an event that fails.
    pub on_failure: FailurePolicy,
}

impl<'a> Batch<'a> {
    /// A batch of `events` whose checkpoint is stored under `checkpoint`, parking failures and
    /// without a lease: how the application hands over an unpartitioned processor's events.
    /// (For tests of a batch processor; the application builds its own batches.)
    pub fn new(events: &'a [RecordedEvent], checkpoint: &'a str) -> Self {
        Self {
            events,
            store_checkpoint: true,
            checkpoint,
            lease: None,
            on_failure: FailurePolicy::Park,
        }
    }

    /// The same batch, guarded by `lease` (a partitioned processor's).
    pub fn with_lease(mut self, lease: &'a interlock_core::Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The same batch, storing no checkpoint (a dead-letter replay).
    pub fn without_checkpoint(mut self) -> Self {
        self.store_checkpoint = false;
        self
    }

    /// The same batch with another failure policy.
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }
}

/// What a [`BatchProcessor`] did with a batch.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Position of the last event applied or parked (the stored checkpoint); `None` if the batch
    /// stopped at its first event.
    pub applied_up_to: Option<Position>,
    /// Events parked as dead letters.
    pub parked: Vec<ProcessingFailure>,
    /// The event the batch stopped at, with policy [`FailurePolicy::Stop`].
    pub stopped: Option<ProcessingFailure>,
}

pub(crate) struct BatchSink<T> {
    processor: Arc<Mutex<T>>,
    upcasters: Arc<Upcasters>,
    on_failure: FailurePolicy,
}

impl<T: BatchProcessor> BatchSink<T> {
    pub(crate) fn new(processor: T, upcasters: Arc<Upcasters>, on_failure: FailurePolicy) -> Self {
        Self {
            processor: Arc::new(Mutex::new(processor)),
            upcasters,
            on_failure,
        }
    }

    /// Upcasts what can be; an event whose upcast fails goes as stored, and fails to decode in
    /// the processor, which parks it.
    fn upcast(&self, events: impl Iterator<Item = RecordedEvent>) -> Vec<RecordedEvent> {
        events
            .map(|e| match self.upcasters.upcast(&e) {
                Ok(upcast) => upcast.into_owned(),
                Err(_) => e,
            })
            .collect()
    }
}

impl<T: BatchProcessor> Sink for BatchSink<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn deliver<'a>(
        &'a self,
        cursor: &'a mut Position,
        events: &'a [RecordedEvent],
        target: &'a Target<'a>,
    ) -> BoxFuture<'a, Result<Vec<ProcessingFailure>, BatchError>> {
        Box::pin(async move {
            let after = *cursor;
            let last = events.last().map(|e| e.position).filter(|&p| p > after);
            let fresh = self.upcast(
                events
                    .iter()
                    .filter(|e| e.position > after && target.takes(e))
                    .cloned(),
            );
            if fresh.is_empty() {
                // Only other partitions' events: move on in memory; their checkpoint can wait
                // for this partition's next event (re-reading them after a restart is harmless).
                if let Some(last) = last {
                    *cursor = last;
                }
                return Ok(Vec::new());
            }
            let outcome = self
                .processor
                .lock()
                .await
                .apply_batch(Batch {
                    events: &fresh,
                    store_checkpoint: true,
                    checkpoint: target.checkpoint,
                    lease: target.lease,
                    on_failure: self.on_failure,
                })
                .await?;
            if let Some(position) = outcome.applied_up_to {
                *cursor = position;
            }
            match outcome.stopped {
                Some(failure) => Err(BatchError::Stopped(failure)),
                None => {
                    // Events of other partitions after the last one applied.
                    if let Some(last) = last {
                        *cursor = (*cursor).max(last);
                    }
                    Ok(outcome.parked)
                }
            }
        })
    }

    fn reset(&self) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move { self.processor.lock().await.reset().await })
    }

    fn redeliver(&self, event: RecordedEvent) -> BoxFuture<'_, Result<(), (HandlerError, u32)>> {
        Box::pin(async move {
            let events = self.upcast(std::iter::once(event));
            let outcome = self
                .processor
                .lock()
                .await
                .apply_batch(Batch {
                    events: &events,
                    store_checkpoint: false,
                    checkpoint: T::NAME,
                    lease: None,
                    on_failure: FailurePolicy::Stop,
                })
                .await
                .map_err(|e| (HandlerError::from(e), 1))?;
            match outcome
                .stopped
                .or_else(|| outcome.parked.into_iter().next())
            {
                Some(failure) => Err((HandlerError::new(failure.error), failure.attempts)),
                None => Ok(()),
            }
        })
    }
}
