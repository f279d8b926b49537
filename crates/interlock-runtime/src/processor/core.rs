//! Delivering events to one processor: batches, retries, parking, checkpoints, rebuilds.
//!
//! Every path that feeds the processor (the background task, inline catch-up after a dispatch, a
//! rebuild, a dead-letter replay) goes through the *cursor* lock, which holds the position of the
//! last event the processor has seen. Events at or before the cursor are skipped, so a
//! subscription that restarts, or a rebuild that overtakes the background task, never delivers an
//! event twice in one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};

use futures::StreamExt;
use futures::future::BoxFuture;
use interlock_core::side::{CheckpointStore, DeadLetter, DeadLetterStore, NewDeadLetter};
use interlock_core::upcast::Upcasters;
use interlock_core::{EventStore, Position, RecordedEvent, StoreError};
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
    position: Position,
    loaded: bool,
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
    ) -> BoxFuture<'a, Result<Vec<ProcessingFailure>, BatchError>>;
    /// Empties the read model before a rebuild.
    fn reset(&self) -> BoxFuture<'_, Result<(), HandlerError>>;
    /// Hands one parked event over again, without moving the checkpoint.
    fn redeliver(&self, event: RecordedEvent) -> BoxFuture<'_, Result<(), (HandlerError, u32)>>;
}

pub(crate) struct ProcessorCore<S> {
    sink: S,
    settings: ProcessorSettings,
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    dead_letters: Arc<dyn DeadLetterStore>,
    cursor: Mutex<Cursor>,
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
        }
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

    async fn save(&self, cursor: Position, before: Position) -> Result<(), StoreError> {
        if cursor != before {
            self.checkpoints.save_checkpoint(P::NAME, cursor).await?;
        }
        Ok(())
    }

    async fn deliver_batch(
        &self,
        cursor: &mut Position,
        events: &[RecordedEvent],
    ) -> Result<Vec<ProcessingFailure>, BatchError> {
        let mut parked = Vec::new();
        let before = *cursor;
        let mut processor = self.processor.write().await;
        for event in events {
            if event.position <= *cursor {
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
            if let Some((error, attempts)) = outcome {
                let failure = ProcessingFailure::new(P::NAME, event, &error, attempts);
                match self.settings.on_failure {
                    FailurePolicy::Park => {
                        tracing::error!(%failure, "parking event as a dead letter");
                        self.dead_letters
                            .park(NewDeadLetter::for_event(
                                P::NAME,
                                event,
                                error.to_string(),
                                attempts,
                            ))
                            .await?;
                        parked.push(failure);
                    }
                    FailurePolicy::Stop => {
                        drop(processor);
                        self.save(*cursor, before).await?;
                        return Err(BatchError::Stopped(failure));
                    }
                }
            }
            *cursor = event.position;
        }
        drop(processor);
        self.save(*cursor, before).await?;
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
    ) -> BoxFuture<'a, Result<Vec<ProcessingFailure>, BatchError>> {
        Box::pin(self.deliver_batch(cursor, events))
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
        Self {
            sink,
            settings,
            store: env.store.clone(),
            checkpoints: env.side.checkpoints.clone(),
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
                .load_checkpoint(self.sink.name())
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
        let result = self.sink.deliver(&mut cursor.position, events).await;
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

    async fn catch_up_locked(
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
            self.checkpoints
                .save_checkpoint(self.sink.name(), Position::START)
                .await?;
            cursor.position = Position::START;
            cursor.loaded = true;
            self.progress.send_replace(Position::START);
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
        Box::pin(async move {
            let events = self
                .store
                .read_stream(
                    &letter.stream_id,
                    letter.stream_version,
                    Some(letter.stream_version),
                )
                .await?;
            let event = events
                .into_iter()
                .find(|e| e.event_id == letter.event_id)
                .ok_or_else(|| Error::DeadLetterNotFound { id: letter.id })?;
            let result = {
                let _cursor = self.cursor.lock().await;
                self.sink.redeliver(event.clone()).await
            };
            match result {
                Ok(()) => {
                    self.dead_letters.delete_dead_letter(letter.id).await?;
                    Ok(())
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
                    Err(Error::Processing {
                        failures: vec![failure],
                        committed: None,
                    })
                }
            }
        })
    }
}
