//! The application: what `build()` assembles and what callers dispatch through.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use interlock_core::side::DeadLetter;
use interlock_core::upcast::Upcasters;
use interlock_core::{
    AggregateId, Command, EventStore, Position, Query, RecordedEvent, SideStores, StreamId,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::aggregate::{
    Aggregate, AggregateRegistration, AggregateRuntime, CommandFn, CommandRoute,
};
use crate::context::{DispatchOptions, Dispatched};
use crate::error::Error;
use crate::middleware::{MessageInfo, Middleware, Next, Outcome};
use crate::processor::{
    Delivery, EventProcessor, ProcessorEnv, ProcessorHandle, ProcessorRegistration, QueryFn,
    QueryRoute, RebuildProgress, is_delivering,
};
use crate::saga::fire_due_deadlines;
use crate::services::{ErasedLifecycle, Services, run_hooks};
use futures::future::BoxFuture;

pub(crate) const CREATED: u8 = 0;
pub(crate) const STARTED: u8 = 1;
pub(crate) const SHUT_DOWN: u8 = 2;

/// Everything the application shares between clones and running commands.
pub(crate) struct Engine {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) side: SideStores,
    pub(crate) upcasters: Arc<Upcasters>,
    /// Every event type some aggregate or processor reads, with its current schema version.
    pub(crate) known_events: HashMap<&'static str, u32>,
    pub(crate) commands: HashMap<TypeId, CommandRoute>,
    /// `Arc<AggregateRuntime<A>>` by `TypeId::of::<A>()`.
    pub(crate) aggregates: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    pub(crate) processors: Vec<Arc<dyn ProcessorHandle>>,
    pub(crate) queries: HashMap<TypeId, QueryRoute>,
    /// `Arc<RwLock<P>>` by `TypeId::of::<P>()`.
    instances: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    pub(crate) middleware: Vec<Arc<dyn Middleware>>,
    pub(crate) services: Arc<Services>,
    hooks: Vec<Arc<dyn ErasedLifecycle>>,
    pub(crate) sagas: Vec<&'static str>,
    pub(crate) state: AtomicU8,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What `build()` has checked and hands to the engine.
pub(crate) struct EngineParts {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) side: SideStores,
    pub(crate) upcasters: Arc<Upcasters>,
    pub(crate) known_events: HashMap<&'static str, u32>,
    pub(crate) aggregates: Vec<AggregateRegistration>,
    pub(crate) processors: Vec<ProcessorRegistration>,
    pub(crate) middleware: Vec<Arc<dyn Middleware>>,
    pub(crate) hooks: Vec<Arc<dyn ErasedLifecycle>>,
    pub(crate) sagas: Vec<&'static str>,
    pub(crate) node: Arc<str>,
}

impl Engine {
    pub(crate) fn new(parts: EngineParts, services: Arc<Services>) -> Self {
        let EngineParts {
            store,
            side,
            upcasters,
            known_events,
            aggregates: aggregates_registered,
            processors: processors_registered,
            middleware,
            hooks,
            sagas,
            node,
        } = parts;
        let mut commands = HashMap::new();
        let mut aggregates = HashMap::new();
        for registration in aggregates_registered {
            for route in registration.routes {
                commands.insert(route.type_id, route);
            }
            aggregates.insert(registration.type_id, registration.runtime);
        }
        let mut queries = HashMap::new();
        let mut processors = Vec::new();
        let mut instances = HashMap::new();
        for mut registration in processors_registered {
            if let Some((type_id, instance)) = registration.instance.clone() {
                instances.insert(type_id, instance);
            }
            for route in registration.queries.drain(..) {
                queries.insert(route.type_id, route);
            }
            processors.push(registration.assemble(&ProcessorEnv {
                store: store.clone(),
                side: side.clone(),
                upcasters: upcasters.clone(),
                services: services.clone(),
                node: node.clone(),
            }));
        }
        Self {
            store,
            side,
            upcasters,
            known_events,
            commands,
            aggregates,
            processors,
            queries,
            instances,
            middleware,
            services,
            hooks,
            sagas,
            state: AtomicU8::new(CREATED),
            shutdown: watch::Sender::new(false),
            tasks: Mutex::new(Vec::new()),
        }
    }

    fn processor(&self, name: &str) -> Result<&Arc<dyn ProcessorHandle>, Error> {
        self.processors
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| Error::ProcessorNotFound {
                name: name.to_owned(),
            })
    }

    fn inline_processors(&self) -> impl Iterator<Item = &Arc<dyn ProcessorHandle>> {
        self.processors
            .iter()
            .filter(|p| p.delivery() == Delivery::Inline)
    }

    /// Brings every inline processor up to `target`; failures are reported with `committed`.
    async fn run_inline(&self, target: Position) -> Result<(), Error> {
        let mut failures = Vec::new();
        for processor in self.inline_processors() {
            if is_delivering(processor.name()) {
                // Dispatched from this processor's own handler: its running catch-up goes on
                // to the head and takes these events too.
                continue;
            }
            // To the head, not just `target`: events appended by handlers along the way (a
            // processor that dispatches commands) are delivered before dispatch returns too.
            match processor.catch_up(None).await {
                Ok(parked) => failures.extend(parked),
                Err(Error::ProcessorStopped(failure)) => failures.push(*failure),
                Err(other) => return Err(other),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Processing {
                failures,
                committed: Some(target),
            })
        }
    }

    pub(crate) fn runtime<A: Aggregate>(&self) -> Result<&AggregateRuntime<A>, Error> {
        self.aggregates
            .get(&TypeId::of::<A>())
            .and_then(|r| r.downcast_ref::<AggregateRuntime<A>>())
            .ok_or(Error::AggregateNotRegistered {
                aggregate_type: A::TYPE_NAME,
            })
    }
}

/// A built application: dispatch commands, load aggregates.
///
/// Cheap to clone; clones share everything. Built with [`Application::builder`].
#[derive(Clone)]
pub struct Application {
    pub(crate) engine: Arc<Engine>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut commands: Vec<_> = self
            .engine
            .commands
            .values()
            .map(|r| r.command_type)
            .collect();
        commands.sort_unstable();
        f.debug_struct("Application")
            .field("commands", &commands)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Starts configuring an application.
    pub fn builder() -> crate::ApplicationBuilder {
        crate::ApplicationBuilder::new()
    }

    /// Starts the application: inline processors catch up with the store, background
    /// processors start following it. Dispatching works without `start`; background processors
    /// only run between `start` and `shutdown`. Starting twice is harmless.
    pub async fn start(&self) -> Result<(), Error> {
        match self.engine.state.compare_exchange(
            CREATED,
            STARTED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {}
            Err(STARTED) => return Ok(()),
            Err(_) => return Err(Error::ShutDown),
        }
        let failures = run_hooks(self.engine.hooks.iter(), true).await;
        let mut tasks = Vec::new();
        for processor in &self.engine.processors {
            if processor.delivery() == Delivery::Background {
                let shutdown = self.engine.shutdown.subscribe();
                tasks.push(tokio::spawn(processor.clone().run(shutdown)));
            }
        }
        if !self.engine.sagas.is_empty() {
            let engine = Arc::downgrade(&self.engine);
            let shutdown = self.engine.shutdown.subscribe();
            tasks.push(tokio::spawn(deadline_ticker(engine, shutdown)));
        }
        self.engine
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(tasks);
        let head = self.engine.store.head_position().await?;
        self.engine.run_inline(head).await?;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Lifecycle { failures })
        }
    }

    /// Stops the application: background processors finish the batch in hand and stop; later
    /// dispatches fail with [`Error::ShutDown`].
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.engine.state.store(SHUT_DOWN, Ordering::Release);
        self.engine.shutdown.send_replace(true);
        let tasks = std::mem::take(
            &mut *self
                .engine
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in tasks {
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!(error = %e, "a processor task panicked");
            }
        }
        let failures = run_hooks(self.engine.hooks.iter().rev(), false).await;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Lifecycle { failures })
        }
    }

    /// Sends a command to the aggregate that handles it and returns the handler's output.
    ///
    /// Either every event the handler emitted is stored, or none is (and the error says why:
    /// [`Error::Domain`] for a rejection, [`Error::Concurrency`] when another writer got there
    /// first, [`Error::AggregateNotFound`] for a missing instance, ...).
    pub async fn dispatch<C: Command>(&self, command: C) -> Result<C::Output, Error> {
        Ok(self
            .dispatch_with(command, DispatchOptions::default())
            .await?
            .output)
    }

    /// Like [`dispatch`](Self::dispatch), with correlation, causation and metadata, returning
    /// what was stored (version, count, global position) beside the output.
    pub async fn dispatch_with<C: Command>(
        &self,
        command: C,
        options: DispatchOptions,
    ) -> Result<Dispatched<C::Output>, Error> {
        if self.engine.state.load(Ordering::Acquire) == SHUT_DOWN {
            return Err(Error::ShutDown);
        }
        let route = self.engine.commands.get(&TypeId::of::<C>());
        let handler = route.and_then(|r| r.handler.downcast_ref::<CommandFn<C>>());
        let aggregate_type = route.map_or("", |r| r.aggregate_type);
        let span = tracing::debug_span!(
            "dispatch",
            command = C::TYPE_NAME,
            aggregate = aggregate_type
        );
        let no_handler = || Error::NoHandler {
            command: C::TYPE_NAME,
        };
        let dispatched = if self.engine.middleware.is_empty() {
            let handler = handler.ok_or_else(no_handler)?;
            tracing::Instrument::instrument(handler(self.engine.clone(), command, options), span)
                .await?
        } else {
            // With middleware, a command nobody handles still goes through the chain (a
            // middleware may answer it: stubs in tests, forwarding); the end of the chain then
            // reports the missing handler.
            let info = MessageInfo::command::<C>(aggregate_type, command.aggregate_id());
            let rerun = Rerun::new(command);
            let engine = &self.engine;
            let terminal =
                move |options: DispatchOptions| -> BoxFuture<'_, Result<Outcome, Error>> {
                    let command = rerun.take();
                    let engine = engine.clone();
                    Box::pin(async move {
                        let handler = handler.ok_or_else(no_handler)?;
                        let d = handler(engine, command?, options).await?;
                        Ok(Outcome {
                            output: Box::new(d.output),
                            version: Some(d.version),
                            events: d.events,
                            position: d.position,
                        })
                    })
                };
            let outcome = tracing::Instrument::instrument(
                Next::new(&self.engine.middleware, &info, &terminal).run(options),
                span,
            )
            .await?;
            let output = outcome.output.downcast::<C::Output>().map_err(|_| {
                Error::Validation(interlock_core::ValidationError::new(
                    "middleware",
                    format!(
                        "a middleware replaced the output of {} with another type",
                        C::TYPE_NAME
                    ),
                ))
            })?;
            Dispatched {
                output: *output,
                version: outcome.version.unwrap_or_default(),
                events: outcome.events,
                position: outcome.position,
            }
        };
        if let Some(position) = dispatched.position {
            self.engine.run_inline(position).await?;
        }
        Ok(dispatched)
    }

    /// Asks the projection that answers `Q` (through the middleware that intercepts it).
    pub async fn query<Q: Query>(&self, query: Q) -> Result<Q::Output, Error> {
        let route = self
            .engine
            .queries
            .get(&TypeId::of::<Q>())
            .ok_or(Error::NoQueryHandler {
                query: Q::TYPE_NAME,
            })?;
        let answer = route
            .answer
            .downcast_ref::<QueryFn<Q>>()
            .ok_or(Error::NoQueryHandler {
                query: Q::TYPE_NAME,
            })?;
        let ask = |query: Q| async move {
            answer(query).await.map_err(|e| Error::Query {
                query: Q::TYPE_NAME,
                projection: route.processor,
                message: e.to_string(),
            })
        };
        if self.engine.middleware.is_empty() {
            return ask(query).await;
        }
        let info = MessageInfo::query::<Q>(route.processor);
        let slot = std::sync::Mutex::new(Some(query));
        let terminal = |_options: DispatchOptions| -> BoxFuture<'_, Result<Outcome, Error>> {
            let query = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            Box::pin(async move {
                // Queries are not required to be serde types, so they cannot be re-run.
                let query = query.ok_or_else(|| {
                    Error::Validation(interlock_core::ValidationError::new(
                        "query",
                        format!("query {} cannot be run twice by middleware", Q::TYPE_NAME),
                    ))
                })?;
                Ok(Outcome {
                    output: Box::new(ask(query).await?),
                    version: None,
                    events: 0,
                    position: None,
                })
            })
        };
        let outcome = Next::new(&self.engine.middleware, &info, &terminal)
            .run(DispatchOptions::default())
            .await?;
        outcome
            .output
            .downcast::<Q::Output>()
            .map(|output| *output)
            .map_err(|_| {
                Error::Validation(interlock_core::ValidationError::new(
                    "middleware",
                    format!(
                        "a middleware replaced the answer to {} with another type",
                        Q::TYPE_NAME
                    ),
                ))
            })
    }

    /// Waits until every processor has handled every event up to `position` (read your own
    /// writes: pass the position from [`dispatch_with`](Self::dispatch_with)). Fails if a
    /// processor stopped, or if background processors are not running.
    pub async fn wait_for(&self, position: Position) -> Result<(), Error> {
        for processor in &self.engine.processors {
            if processor.delivery() == Delivery::Background
                && self.engine.state.load(Ordering::Acquire) != STARTED
            {
                return Err(Error::Validation(interlock_core::ValidationError::new(
                    "application",
                    "start() the application before waiting for its background processors",
                )));
            }
            let mut progress = processor.progress();
            loop {
                if *progress.borrow_and_update() >= position {
                    break;
                }
                if let Some(failure) = processor.stopped() {
                    return Err(Error::ProcessorStopped(Box::new(failure)));
                }
                if progress.changed().await.is_err() {
                    return Err(Error::ShutDown);
                }
            }
        }
        Ok(())
    }

    /// Resets a projection and replays every event into it, in batches, calling `on_progress`
    /// after each batch. The background delivery of that processor pauses meanwhile.
    pub async fn rebuild(
        &self,
        processor: &str,
        mut on_progress: impl FnMut(RebuildProgress) + Send,
    ) -> Result<RebuildProgress, Error> {
        self.engine
            .processor(processor)?
            .rebuild(&mut on_progress)
            .await
    }

    /// Lists parked events, of one processor or of all, oldest first.
    pub async fn dead_letters(&self, processor: Option<&str>) -> Result<Vec<DeadLetter>, Error> {
        let mut letters = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .engine
                .side
                .dead_letters
                .list_dead_letters(processor, after, 500)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            letters.extend(page);
        }
        Ok(letters)
    }

    /// Hands a parked event to its processor again; on success the dead letter is removed, on
    /// failure it stays parked with more attempts and the error is returned.
    ///
    /// Parking keeps stream order: once an event of a stream is parked, that processor parks
    /// the stream's later events behind it ("held", with 0 attempts) while other streams flow.
    /// A replay therefore takes the processor's letters of the letter's stream from the oldest
    /// one, in stream order, and stops at the first that fails again; when none is left, the
    /// stream flows again.
    pub async fn replay_dead_letter(&self, id: u64) -> Result<(), Error> {
        let letter = self
            .engine
            .side
            .dead_letters
            .list_dead_letters(None, id.checked_sub(1), 1)
            .await?
            .into_iter()
            .find(|d| d.id == id)
            .ok_or(Error::DeadLetterNotFound { id })?;
        self.engine
            .processor(&letter.processor)?
            .replay(letter)
            .await
    }

    /// Reads a registered processor's current state (between batches), for tests and
    /// diagnostics.
    pub async fn inspect_processor<P: EventProcessor, R>(
        &self,
        read: impl FnOnce(&P) -> R,
    ) -> Result<R, Error> {
        let shared = self
            .engine
            .instances
            .get(&TypeId::of::<P>())
            .and_then(|i| i.downcast_ref::<tokio::sync::RwLock<P>>())
            .ok_or_else(|| Error::ProcessorNotFound {
                name: P::NAME.to_owned(),
            })?;
        Ok(read(&*shared.read().await))
    }

    /// Fires every saga deadline that is due by the application's clock (the background ticker
    /// does this on its own; tests with a [`FakeClock`](crate::FakeClock) call it after moving
    /// the clock). Returns how many fired.
    pub async fn fire_due_deadlines(&self) -> Result<usize, Error> {
        let mut fired = 0;
        for saga in &self.engine.sagas {
            fired += fire_due_deadlines(&self.engine, saga).await?;
        }
        Ok(fired)
    }

    /// Each processor's name and the position it has reached.
    pub fn processor_positions(&self) -> Vec<(&'static str, Position)> {
        self.engine
            .processors
            .iter()
            .map(|p| (p.name(), *p.progress().borrow()))
            .collect()
    }

    /// The stored events of one aggregate instance, in order.
    pub async fn events_of<A: Aggregate>(
        &self,
        id: impl Into<AggregateId>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let stream = StreamId::for_aggregate(A::TYPE_NAME, &id.into())?;
        Ok(self.engine.store.read_stream(&stream, 1, None).await?)
    }

    /// The event store the application writes to.
    pub fn event_store(&self) -> &Arc<dyn EventStore> {
        &self.engine.store
    }
}

/// A message that middleware may run more than once: the first run takes the original, later
/// runs get a fresh copy decoded from a JSON copy taken before the first run.
struct Rerun<M> {
    original: std::sync::Mutex<Option<M>>,
    copy: Result<Vec<u8>, String>,
}

impl<M: serde::Serialize + serde::de::DeserializeOwned> Rerun<M> {
    fn new(message: M) -> Self {
        let copy = serde_json::to_vec(&message).map_err(|e| e.to_string());
        Self {
            original: std::sync::Mutex::new(Some(message)),
            copy,
        }
    }

    fn take(&self) -> Result<M, Error> {
        if let Some(original) = self
            .original
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Ok(original);
        }
        let again = |reason: String| {
            Error::Validation(interlock_core::ValidationError::new(
                "command",
                format!("cannot run the command again: {reason}"),
            ))
        };
        let copy = self.copy.as_ref().map_err(|e| again(e.clone()))?;
        serde_json::from_slice(copy).map_err(|e| again(e.to_string()))
    }
}

/// Fires due saga deadlines every 100 ms until shutdown.
async fn deadline_ticker(engine: std::sync::Weak<Engine>, mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        let Some(engine) = engine.upgrade() else {
            return;
        };
        for saga in &engine.sagas {
            if let Err(e) = fire_due_deadlines(&engine, saga).await {
                tracing::warn!(saga, error = %e, "cannot fire saga deadlines");
            }
        }
        drop(engine);
        tokio::select! {
            _ = shutdown.changed() => {}
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
}
