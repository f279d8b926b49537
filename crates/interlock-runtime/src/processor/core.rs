//! Delivering events to one processor: batches, retries, parking, checkpoints, rebuilds.
//!
//! Every path that feeds the processor (the background task, inline catch-up after a dispatch, a
//! rebuild, a dead-letter replay) goes through the *cursor* lock, which holds the position of the
//! last event the processor has seen. Events at or before the cursor are skipped, so a
//! subscription that restarts, or a rebuild that overtakes the background task, never delivers an
//! event twice in one process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};

use futures::StreamExt;
use futures::future::BoxFuture;
use interlock_core::side::{CheckpointStore, DeadLetter, DeadLetterStore, NewDeadLetter};
use interlock_core::upcast::Upcasters;
use interlock_core::{
    EventStore, Lease, LeaseStore, Position, RecordedEvent, StoreError, StreamId,
};
use tokio::sync::{Mutex, RwLock, watch};

use super::registration::ProcessorEnv;
use super::routes::{InvokeFn, ProcessorRoutes};
use super::settings::{Delivery, FailurePolicy, ProcessorSettings, RebuildProgress};
use super::{EventProcessor, HandlerError};
use crate::context::ExecutionContext;
use crate::error::{Error, ProcessingFailure};
use crate::services::Services;

tokio::task_local! {
    /// The processors this task is delivering events to right now. A handler that dispatches a
    /// command runs the inline processors again on the same task; the ones already delivering
    /// are skipped (their own catch-up loop picks the new events up), instead of waiting on a
    /// cursor lock this task already holds.
    static DELIVERING: Vec<&'static str>;
}

fn delivering_with(name: &'static str) -> Vec<&'static str> {
    let mut names = DELIVERING.try_with(Clone::clone).unwrap_or_default();
    names.push(name);
    names
}

/// Whether this task is already delivering events to `processor`.
pub(crate) fn is_delivering(processor: &str) -> bool {
    DELIVERING
        .try_with(|names| names.contains(&processor))
        .unwrap_or(false)
}

pub(crate) struct Cursor {
    pub(crate) position: Position,
    pub(crate) loaded: bool,
}

/// One slice of a partitioned processor: the streams whose [`partition_of`] is `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Partition {
    pub(crate) index: u32,
    pub(crate) count: u32,
}

/// The partition (0-based, below `count`) a stream's events go to when a processor is split into
/// `count` partitions: FNV-1a over the stream's category and id, so every process, platform and
/// version of Interlock agrees. `count` 0 is read as 1.
pub fn partition_of(stream: &StreamId, count: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let category = stream.category().as_bytes();
    // A separator byte that cannot occur in a name (they hold no NUL), so ("ab","c") and
    // ("a","bc") differ.
    for &byte in category.iter().chain(&[0u8]).chain(stream.id().as_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    (hash % u64::from(count.max(1))) as u32
}

/// Which events a core delivers, where its checkpoint goes, and the lease that guards it.
pub(crate) struct Scope {
    pub(crate) checkpoint: String,
    pub(crate) partition: Option<Partition>,
    /// Held while this process owns the partition; `None` for unpartitioned processors.
    pub(crate) lease: StdMutex<Option<Lease>>,
}

impl Scope {
    fn whole(name: &str) -> Self {
        Self {
            checkpoint: name.to_owned(),
            partition: None,
            lease: StdMutex::new(None),
        }
    }

    pub(crate) fn lease(&self) -> Option<Lease> {
        self.lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_lease(&self, lease: Option<Lease>) {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = lease;
    }

    /// The error for delivering without the lease this scope needs.
    fn not_leased(&self) -> StoreError {
        StoreError::Fenced {
            key: self.checkpoint.clone(),
            owner: String::new(),
            fence: 0,
        }
    }
}

/// What a sink needs to know about the batch it is given.
pub(crate) struct Target<'a> {
    pub(crate) checkpoint: &'a str,
    pub(crate) partition: Option<Partition>,
    pub(crate) lease: Option<&'a Lease>,
}

impl Target<'_> {
    /// Whether this target delivers `event` (its stream is in the partition).
    pub(crate) fn takes(&self, event: &RecordedEvent) -> bool {
        self.partition
            .is_none_or(|p| partition_of(&event.stream_id, p.count) == p.index)
    }
}

/// Saves a checkpoint, through the lease's fence when there is one.
pub(crate) async fn save_checkpoint(
    checkpoints: &dyn CheckpointStore,
    leases: Option<&dyn LeaseStore>,
    target: &Target<'_>,
    position: Position,
) -> Result<(), StoreError> {
    match (target.lease, leases) {
        (None, _) => {
            checkpoints
                .save_checkpoint(target.checkpoint, position)
                .await
        }
        (Some(lease), Some(leases)) => {
            leases
                .save_checkpoint_fenced(target.checkpoint, position, lease)
                .await
        }
        (Some(_), None) => Err(StoreError::Unsupported {
            backend: "this",
            operation: "leases",
        }),
    }
}

/// Why a batch did not complete.
pub(crate) enum BatchError {
    /// The processor's policy is `Stop` and an event kept failing.
    Stopped(ProcessingFailure),
    /// A store call failed (reading, checkpointing, parking).
    Store(StoreError),
}

impl From<StoreError> for BatchError {
    fn from(e: StoreError) -> Self {
        BatchError::Store(e)
    }
}

impl From<BatchError> for Error {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Stopped(failure) => Error::ProcessorStopped(Box::new(failure)),
            BatchError::Store(e) => e.into(),
        }
    }
}

/// How a processor takes a batch of events: one event at a time through typed handlers
/// ([`HandlerSink`]), or the whole batch at once ([`BatchSink`](super::batch::BatchSink)).
pub(crate) trait Sink: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Delivers the events after `cursor`, advances it, and makes the new position durable
    /// (checkpoint); returns the events parked on the way.
    fn deliver<'a>(
        &'a self,
        cursor: &'a mut Position,
        events: &'a [RecordedEvent],
        target: &'a Target<'a>,
    ) -> BoxFuture<'a, Result<Vec<ProcessingFailure>, BatchError>>;
    /// Empties the read model before a rebuild.
    fn reset(&self) -> BoxFuture<'_, Result<(), HandlerError>>;
    /// Hands one parked event over again, without moving the checkpoint.
    fn redeliver(&self, event: RecordedEvent) -> BoxFuture<'_, Result<(), (HandlerError, u32)>>;
    /// The dead letter of `stream` at `version` was replayed and deleted.
    fn replayed(&self, stream: &StreamId, version: u64) {
        let _ = (stream, version);
    }
}

pub(crate) struct ProcessorCore<S> {
    pub(crate) sink: Arc<S>,
    pub(crate) scope: Scope,
    settings: ProcessorSettings,
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    leases: Option<Arc<dyn LeaseStore>>,
    dead_letters: Arc<dyn DeadLetterStore>,
    pub(crate) cursor: Mutex<Cursor>,
    progress: watch::Sender<Position>,
    stopped: StdMutex<Option<ProcessingFailure>>,
}

/// The type-erased face of a processor, as the application drives it.
pub(crate) trait ProcessorHandle: Send + Sync {
    fn name(&self) -> &'static str;
    fn delivery(&self) -> Delivery;
    /// Delivers every stored event after the cursor, up to `target` when given; returns the
    /// events parked on the way.
    fn catch_up(
        &self,
        target: Option<Position>,
    ) -> BoxFuture<'_, Result<Vec<ProcessingFailure>, Error>>;
    /// The background loop, until `shutdown` turns true.
    fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) -> BoxFuture<'static, ()>;
    fn progress(&self) -> watch::Receiver<Position>;
    fn stopped(&self) -> Option<ProcessingFailure>;
    fn rebuild<'a>(
        &'a self,
        on_progress: &'a mut (dyn FnMut(RebuildProgress) + Send),
    ) -> BoxFuture<'a, Result<RebuildProgress, Error>>;
    fn replay(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), Error>>;
}

/// Delivers events one at a time to an [`EventProcessor`]'s typed handlers, with retries and
/// parking, and saves the checkpoint once per batch.
pub(crate) struct HandlerSink<P: EventProcessor> {
    processor: Arc<RwLock<P>>,
    events: HashMap<&'static str, InvokeFn<P>>,
    settings: ProcessorSettings,
    checkpoints: Arc<dyn CheckpointStore>,
    dead_letters: Arc<dyn DeadLetterStore>,
    upcasters: Arc<Upcasters>,
    services: Arc<Services>,
    leases: Option<Arc<dyn LeaseStore>>,
    /// The parked events of this processor, by stream then version (letter id as value); `None`
    /// until loaded from the dead-letter store. A stream with a parked event is *held*: its
    /// later events are parked behind it, in order, until a replay clears them.
    letters: StdMutex<Option<Letters>>,
}

type Letters = HashMap<StreamId, BTreeMap<u64, u64>>;

/// Every dead letter of one processor, oldest first.
pub(crate) async fn all_letters(
    store: &dyn DeadLetterStore,
    processor: &str,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut letters = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_dead_letters(Some(processor), after, 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        letters.extend(page);
    }
    Ok(letters)
}

impl<P: EventProcessor> HandlerSink<P> {
    pub(crate) fn new(
        processor: Arc<RwLock<P>>,
        routes: ProcessorRoutes<P>,
        settings: ProcessorSettings,
        env: &ProcessorEnv,
    ) -> Self {
        Self {
            processor,
            events: routes.events,
            settings,
            checkpoints: env.side.checkpoints.clone(),
            dead_letters: env.side.dead_letters.clone(),
            upcasters: env.upcasters.clone(),
            services: env.services.clone(),
            leases: env.side.leases.clone(),
            letters: StdMutex::new(None),
        }
    }

    fn with_letters<R>(&self, f: impl FnOnce(&mut Letters) -> R) -> R {
        let mut letters = self.letters.lock().unwrap_or_else(PoisonError::into_inner);
        f(letters.get_or_insert_with(HashMap::new))
    }

    async fn load_letters(&self) -> Result<(), StoreError> {
        let loaded = self
            .letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if !loaded {
            let mut index = Letters::new();
            for letter in all_letters(&*self.dead_letters, P::NAME).await? {
                index
                    .entry(letter.stream_id)
                    .or_default()
                    .insert(letter.stream_version, letter.id);
            }
            *self.letters.lock().unwrap_or_else(PoisonError::into_inner) = Some(index);
        }
        Ok(())
    }

    /// Handles one event with retries; `Err` carries the last error and the attempt count.
    async fn handle_with_retries(
        &self,
        processor: &mut P,
        invoke: InvokeFn<P>,
        event: &RecordedEvent,
    ) -> Result<(), (HandlerError, u32)> {
        let retry = self.settings.retry;
        let mut attempt = 1;
        loop {
            let result = {
                let span = tracing::debug_span!(
                    "deliver",
                    processor = P::NAME,
                    event = %event.event_type,
                    stream = %event.stream_id,
                    version = event.stream_version
                );
                let current = ExecutionContext {
                    correlation_id: event.correlation_id.unwrap_or(*event.event_id.as_uuid()),
                    message_id: *event.event_id.as_uuid(),
                };
                let handling = current.scope(invoke(processor, event, P::NAME, &self.services));
                tracing::Instrument::instrument(handling, span).await
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if attempt < retry.max_attempts => {
                    tracing::warn!(processor = P::NAME, attempt, error = %e, "event handler failed, retrying");
                    tokio::time::sleep(retry.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err((e, attempt)),
            }
        }
    }

    async fn save(
        &self,
        cursor: Position,
        before: Position,
        target: &Target<'_>,
    ) -> Result<(), StoreError> {
        if cursor != before {
            save_checkpoint(&*self.checkpoints, self.leases.as_deref(), target, cursor).await?;
        }
        Ok(())
    }

    async fn park(
        &self,
        event: &RecordedEvent,
        error: &HandlerError,
        attempts: u32,
    ) -> Result<ProcessingFailure, StoreError> {
        let failure = ProcessingFailure::new(P::NAME, event, error, attempts);
        let id = self
            .dead_letters
            .park(NewDeadLetter::for_event(
                P::NAME,
                event,
                error.to_string(),
                attempts,
            ))
            .await?;
        self.with_letters(|letters| {
            letters
                .entry(event.stream_id.clone())
                .or_default()
                .insert(event.stream_version, id)
        });
        Ok(failure)
    }

    async fn deliver_batch(
        &self,
        cursor: &mut Position,
        events: &[RecordedEvent],
        target: &Target<'_>,
    ) -> Result<Vec<ProcessingFailure>, BatchError> {
        self.load_letters().await?;
        let mut parked = Vec::new();
        let before = *cursor;
        let mut processor = self.processor.write().await;
        for event in events {
            if event.position <= *cursor {
                continue;
            }
            if !target.takes(event) {
                *cursor = event.position;
                continue;
            }
            // Ordered parking: an event behind a parked one of its stream waits as a letter too.
            let (held_behind, own_letter) = self.with_letters(|letters| {
                letters
                    .get(&event.stream_id)
                    .map_or((None, None), |versions| {
                        (
                            versions
                                .keys()
                                .next()
                                .copied()
                                .filter(|&first| first < event.stream_version),
                            versions.get(&event.stream_version).copied(),
                        )
                    })
            });
            if let Some(first) = held_behind
                && self.settings.on_failure == FailurePolicy::Park
            {
                let error = HandlerError::new(format!(
                    "held behind the parked event at version {first} of stream {}: replay that one first",
                    event.stream_id
                ));
                let failure = self.park(event, &error, 0).await?;
                tracing::warn!(%failure, "holding an event behind a parked one of its stream");
                parked.push(failure);
                *cursor = event.position;
                continue;
            }
            let outcome = match self.upcasters.upcast(event) {
                Ok(upcast) => match self.events.get(upcast.event_type.as_str()) {
                    Some(&invoke) => self
                        .handle_with_retries(&mut processor, invoke, &upcast)
                        .await
                        .err(),
                    None => None,
                },
                // An event that cannot be upcast cannot be handled: park it like a failure.
                Err(e) => Some((HandlerError::from(e), 1)),
            };
            match outcome {
                None => {
                    // Handled now (a redelivery after a fix, a rebuild): its letter is done.
                    if let Some(id) = own_letter {
                        self.dead_letters.delete_dead_letter(id).await?;
                        self.replayed(&event.stream_id, event.stream_version);
                    }
                }
                Some((error, attempts)) => match self.settings.on_failure {
                    FailurePolicy::Park => {
                        let failure = self.park(event, &error, attempts).await?;
                        tracing::error!(%failure, "parking event as a dead letter");
                        parked.push(failure);
                    }
                    FailurePolicy::Stop => {
                        let failure = ProcessingFailure::new(P::NAME, event, &error, attempts);
                        drop(processor);
                        self.save(*cursor, before, target).await?;
                        return Err(BatchError::Stopped(failure));
                    }
                },
            }
            *cursor = event.position;
        }
        drop(processor);
        self.save(*cursor, before, target).await?;
        Ok(parked)
    }
}

impl<P: EventProcessor> Sink for HandlerSink<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn deliver<'a>(
        &'a self,
        cursor: &'a mut Position,
        events: &'a [RecordedEvent],
        target: &'a Target<'a>,
    ) -> BoxFuture<'a, Result<Vec<ProcessingFailure>, BatchError>> {
        Box::pin(self.deliver_batch(cursor, events, target))
    }

    fn replayed(&self, stream: &StreamId, version: u64) {
        self.with_letters(|letters| {
            if let Some(versions) = letters.get_mut(stream) {
                versions.remove(&version);
                if versions.is_empty() {
                    letters.remove(stream);
                }
            }
        });
    }

    fn reset(&self) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move { self.processor.write().await.reset().await })
    }

    fn redeliver(&self, event: RecordedEvent) -> BoxFuture<'_, Result<(), (HandlerError, u32)>> {
        Box::pin(async move {
            let event = self
                .upcasters
                .upcast(&event)
                .map_err(|e| (HandlerError::from(e), 1))?
                .into_owned();
            let Some(&invoke) = self.events.get(event.event_type.as_str()) else {
                return Ok(());
            };
            let mut processor = self.processor.write().await;
            self.handle_with_retries(&mut processor, invoke, &event)
                .await
        })
    }
}

impl<S: Sink> ProcessorCore<S> {
    pub(crate) fn new(sink: S, settings: ProcessorSettings, env: &ProcessorEnv) -> Self {
        let scope = Scope::whole(sink.name());
        Self::scoped(Arc::new(sink), scope, settings, env)
    }

    /// A core delivering one partition of a processor whose sink it shares with the others.
    pub(crate) fn scoped(
        sink: Arc<S>,
        scope: Scope,
        settings: ProcessorSettings,
        env: &ProcessorEnv,
    ) -> Self {
        Self {
            sink,
            scope,
            settings,
            store: env.store.clone(),
            checkpoints: env.side.checkpoints.clone(),
            leases: env.side.leases.clone(),
            dead_letters: env.side.dead_letters.clone(),
            cursor: Mutex::new(Cursor {
                position: Position::START,
                loaded: false,
            }),
            progress: watch::Sender::new(Position::START),
            stopped: StdMutex::new(None),
        }
    }

    async fn load(&self, cursor: &mut Cursor) -> Result<(), StoreError> {
        if !cursor.loaded {
            cursor.position = self
                .checkpoints
                .load_checkpoint(&self.scope.checkpoint)
                .await?
                .unwrap_or(Position::START);
            cursor.loaded = true;
            self.progress.send_replace(cursor.position);
        }
        Ok(())
    }

    /// Delivers a batch through the sink and publishes the progress (or the stop).
    async fn process_batch(
        &self,
        cursor: &mut Cursor,
        events: &[RecordedEvent],
    ) -> Result<Vec<ProcessingFailure>, BatchError> {
        let lease = self.scope.lease();
        if self.scope.partition.is_some() && lease.is_none() {
            return Err(BatchError::Store(self.scope.not_leased()));
        }
        let target = Target {
            checkpoint: &self.scope.checkpoint,
            partition: self.scope.partition,
            lease: lease.as_ref(),
        };
        let result = self
            .sink
            .deliver(&mut cursor.position, events, &target)
            .await;
        if let Err(BatchError::Store(StoreError::Fenced { .. })) = &result {
            // Another process owns this partition now: forget what this one believed.
            self.scope.set_lease(None);
            cursor.loaded = false;
        }
        self.progress.send_if_modified(|p| {
            let moved = *p != cursor.position;
            *p = cursor.position;
            moved
        });
        if let Err(BatchError::Stopped(failure)) = &result {
            tracing::error!(%failure, "stopping processor");
            *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure.clone());
            // Wake `wait_for` callers so they see the stop instead of waiting forever.
            self.progress.send_modify(|_| {});
        }
        result
    }

    pub(crate) async fn catch_up_locked(
        &self,
        cursor: &mut Cursor,
        target: Option<Position>,
        mut on_batch: impl FnMut(u64, Position) + Send,
    ) -> Result<Vec<ProcessingFailure>, BatchError> {
        self.load(cursor).await?;
        let mut parked = Vec::new();
        loop {
            if target.is_some_and(|t| cursor.position >= t) {
                break;
            }
            let batch = self
                .store
                .read_all(cursor.position, self.settings.batch_size)
                .await?;
            if batch.is_empty() {
                break;
            }
            parked.extend(self.process_batch(cursor, &batch).await?);
            on_batch(batch.len() as u64, cursor.position);
        }
        Ok(parked)
    }

    async fn run_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut failures = 0u32;
        while !*shutdown.borrow() {
            let start = {
                let mut cursor = self.cursor.lock().await;
                match self.load(&mut cursor).await {
                    Ok(()) => cursor.position,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(processor = self.sink.name(), error = %e, "cannot load checkpoint");
                        self.pause(failures, &mut shutdown).await;
                        continue;
                    }
                }
            };
            let mut chunks = self
                .store
                .subscribe_all(start)
                .ready_chunks(self.settings.batch_size);
            loop {
                let chunk = tokio::select! {
                    _ = shutdown.changed() => return,
                    chunk = chunks.next() => chunk,
                };
                let Some(chunk) = chunk else { break };
                let (events, errors): (Vec<_>, Vec<_>) = chunk.into_iter().partition(Result::is_ok);
                let events: Vec<RecordedEvent> =
                    events.into_iter().filter_map(Result::ok).collect();
                let mut cursor = self.cursor.lock().await;
                match self.process_batch(&mut cursor, &events).await {
                    Ok(_) => failures = 0,
                    Err(BatchError::Stopped(_)) => return,
                    Err(BatchError::Store(e @ StoreError::Fenced { .. })) => {
                        tracing::warn!(processor = self.sink.name(), partition = %self.scope.checkpoint, error = %e, "lost the partition's lease; stopping it");
                        return;
                    }
                    Err(BatchError::Store(e)) => {
                        tracing::warn!(processor = self.sink.name(), error = %e, "delivery failed; resubscribing");
                        break;
                    }
                }
                if let Some(Err(e)) = errors.into_iter().next() {
                    tracing::warn!(processor = self.sink.name(), error = %e, "subscription failed; resubscribing");
                    break;
                }
            }
            failures += 1;
            self.pause(failures, &mut shutdown).await;
        }
    }

    /// The store's head position.
    pub(crate) async fn head(&self) -> Result<Position, StoreError> {
        self.store.head_position().await
    }

    /// Sets the checkpoint back to the start (through the lease's fence, when partitioned), after
    /// the read model was emptied.
    pub(crate) async fn restart(&self, cursor: &mut Cursor) -> Result<(), StoreError> {
        let lease = self.scope.lease();
        let target = Target {
            checkpoint: &self.scope.checkpoint,
            partition: self.scope.partition,
            lease: lease.as_ref(),
        };
        save_checkpoint(
            &*self.checkpoints,
            self.leases.as_deref(),
            &target,
            Position::START,
        )
        .await?;
        cursor.position = Position::START;
        cursor.loaded = true;
        self.progress.send_replace(Position::START);
        Ok(())
    }

    /// Replays the dead letters of `letter`'s stream, oldest first (held events wait behind
    /// the first parked one), stopping at the first that fails again.
    pub(crate) async fn replay_stream(&self, letter: DeadLetter) -> Result<(), Error> {
        let _cursor = self.cursor.lock().await;
        let mut letters: Vec<DeadLetter> = all_letters(&*self.dead_letters, self.sink.name())
            .await?
            .into_iter()
            .filter(|l| l.stream_id == letter.stream_id)
            .collect();
        if !letters.iter().any(|l| l.id == letter.id) {
            return Err(Error::DeadLetterNotFound { id: letter.id });
        }
        letters.sort_by_key(|l| l.stream_version);
        for letter in letters {
            let event = self
                .store
                .read_stream(
                    &letter.stream_id,
                    letter.stream_version,
                    Some(letter.stream_version),
                )
                .await?
                .into_iter()
                .find(|e| e.event_id == letter.event_id)
                .ok_or(Error::DeadLetterNotFound { id: letter.id })?;
            match self.sink.redeliver(event.clone()).await {
                Ok(()) => {
                    self.dead_letters.delete_dead_letter(letter.id).await?;
                    self.sink.replayed(&letter.stream_id, letter.stream_version);
                }
                Err((error, attempts)) => {
                    let failure =
                        ProcessingFailure::new(self.sink.name(), &event, &error, attempts);
                    self.dead_letters
                        .park(NewDeadLetter::for_event(
                            self.sink.name(),
                            &event,
                            error.to_string(),
                            letter.attempts.saturating_add(attempts),
                        ))
                        .await?;
                    return Err(Error::Processing {
                        failures: vec![failure],
                        committed: None,
                    });
                }
            }
        }
        Ok(())
    }

    /// Backs off before resubscribing, unless shutting down.
    async fn pause(&self, failures: u32, shutdown: &mut watch::Receiver<bool>) {
        let wait = self.settings.retry.backoff(failures);
        tokio::select! {
            _ = shutdown.changed() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

impl<S: Sink> ProcessorHandle for ProcessorCore<S> {
    fn name(&self) -> &'static str {
        self.sink.name()
    }

    fn delivery(&self) -> Delivery {
        self.settings.delivery
    }

    fn catch_up(
        &self,
        target: Option<Position>,
    ) -> BoxFuture<'_, Result<Vec<ProcessingFailure>, Error>> {
        Box::pin(async move {
            let mut cursor = self.cursor.lock().await;
            let delivering = delivering_with(self.sink.name());
            Ok(DELIVERING
                .scope(
                    delivering,
                    self.catch_up_locked(&mut cursor, target, |_, _| {}),
                )
                .await?)
        })
    }

    fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(self.run_loop(shutdown))
    }

    fn progress(&self) -> watch::Receiver<Position> {
        self.progress.subscribe()
    }

    fn stopped(&self) -> Option<ProcessingFailure> {
        self.stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn rebuild<'a>(
        &'a self,
        on_progress: &'a mut (dyn FnMut(RebuildProgress) + Send),
    ) -> BoxFuture<'a, Result<RebuildProgress, Error>> {
        Box::pin(async move {
            let mut cursor = self.cursor.lock().await;
            let target = self.store.head_position().await?;
            self.sink.reset().await.map_err(|e| Error::Rebuild {
                processor: self.sink.name(),
                message: e.to_string(),
            })?;
            // The view is empty now: the checkpoint must say so before anything is replayed, so
            // a crash mid-rebuild resumes from the start instead of above an empty view.
            self.restart(&mut cursor).await?;
            let mut processed = 0;
            self.catch_up_locked(&mut cursor, Some(target), |n, position| {
                processed += n;
                on_progress(RebuildProgress {
                    processed,
                    position,
                    target,
                });
            })
            .await?;
            let done = RebuildProgress {
                processed,
                position: cursor.position,
                target,
            };
            on_progress(done);
            Ok(done)
        })
    }

    fn replay(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.replay_stream(letter))
    }
}
