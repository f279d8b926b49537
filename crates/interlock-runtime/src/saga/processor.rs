//! Running saga steps as an event processor.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use interlock_core::{Command, Event, EventId, ExpectedVersion, NewEvent};
use uuid::Uuid;

use super::deadline::{DeadlineReached, DeadlineScheduled, deadline_stream};
use super::{Saga, SagaDocument, SagaStep, SentCommand, command_payload, schedule_at};
use crate::context::DispatchOptions;
use crate::error::Error;
use crate::middleware::{MessageInfo, Outcome, run_idempotent};
use crate::processor::{EventContext, EventProcessor, HandlerError, HandlesEvent, ProcessorRoutes};
use crate::services::{FromServices, Services};

/// The key that finds a saga instance, taken from an event. `None`: this event concerns no
/// instance of this saga (it is skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaKey(pub Option<String>);

impl From<String> for SagaKey {
    fn from(key: String) -> Self {
        Self(Some(key))
    }
}
impl From<&str> for SagaKey {
    fn from(key: &str) -> Self {
        Self(Some(key.to_owned()))
    }
}
impl From<Uuid> for SagaKey {
    fn from(key: Uuid) -> Self {
        Self(Some(key.to_string()))
    }
}
impl From<u64> for SagaKey {
    fn from(key: u64) -> Self {
        Self(Some(key.to_string()))
    }
}
impl From<Option<String>> for SagaKey {
    fn from(key: Option<String>) -> Self {
        Self(key)
    }
}

type KeyFn<E> = Arc<dyn Fn(&E) -> SagaKey + Send + Sync>;

struct Step {
    key: Arc<dyn Any + Send + Sync>,
    starts: bool,
}

/// The steps a saga declares in [`Saga::configure`].
pub struct SagaRoutes<'a, S: Saga> {
    routes: Option<&'a mut ProcessorRoutes<SagaProcessor<S>>>,
    steps: HashMap<TypeId, Step>,
    problems: Vec<String>,
}

impl<S: Saga> SagaRoutes<'_, S> {
    fn add<E: Event, K: Into<SagaKey>>(
        &mut self,
        starts: bool,
        key: impl Fn(&E) -> K + Send + Sync + 'static,
    ) -> &mut Self
    where
        S: SagaStep<E>,
    {
        let key: KeyFn<E> = Arc::new(move |e| key(e).into());
        if self
            .steps
            .insert(
                TypeId::of::<E>(),
                Step {
                    key: Arc::new(key),
                    starts,
                },
            )
            .is_some()
        {
            self.problems.push(format!(
                "saga {} has two steps for event {}",
                S::NAME,
                E::TYPE_NAME
            ));
        }
        if let Some(routes) = self.routes.as_deref_mut() {
            routes.event::<E>();
        }
        self
    }

    /// A step that may create the instance (the first event of the process). The event type is
    /// taken from the key closure's parameter: `routes.starts_with(|e: &OrderPlaced| e.order)`.
    pub fn starts_with<E: Event, K: Into<SagaKey>>(
        &mut self,
        key: impl Fn(&E) -> K + Send + Sync + 'static,
    ) -> &mut Self
    where
        S: SagaStep<E>,
    {
        self.add::<E, K>(true, key)
    }

    /// A step for an existing instance; events for unknown instances are skipped.
    pub fn step<E: Event, K: Into<SagaKey>>(
        &mut self,
        key: impl Fn(&E) -> K + Send + Sync + 'static,
    ) -> &mut Self
    where
        S: SagaStep<E>,
    {
        self.add::<E, K>(false, key)
    }

    /// Delivers this saga's fired deadlines ([`DeadlineReached`]) to its instances.
    pub fn deadlines(&mut self) -> &mut Self
    where
        S: SagaStep<DeadlineReached>,
    {
        self.add::<DeadlineReached, SagaKey>(false, |d: &DeadlineReached| {
            SagaKey((d.saga == S::NAME).then(|| d.key.clone()))
        })
    }

    /// Declares that a step takes `T` from the services, so `build()` checks it is registered.
    pub fn requires<T: FromServices>(&mut self) -> &mut Self {
        if let Some(routes) = self.routes.as_deref_mut() {
            routes.requires::<T>();
        }
        self
    }
}

/// Runs a saga's steps as an event processor.
pub(crate) struct SagaProcessor<S: Saga> {
    saga: S,
    steps: HashMap<TypeId, Step>,
}

impl<S: Saga> SagaProcessor<S> {
    pub(crate) fn new(saga: S) -> (Self, Vec<String>) {
        let mut routes = SagaRoutes::<S> {
            routes: None,
            steps: HashMap::new(),
            problems: Vec::new(),
        };
        S::configure(&mut routes);
        let problems = routes.problems;
        (
            Self {
                saga,
                steps: routes.steps,
            },
            problems,
        )
    }
}

impl<S: Saga> EventProcessor for SagaProcessor<S> {
    const NAME: &'static str = S::NAME;

    fn configure(routes: &mut ProcessorRoutes<Self>) {
        let mut saga_routes = SagaRoutes::<S> {
            routes: Some(routes),
            steps: HashMap::new(),
            problems: Vec::new(),
        };
        S::configure(&mut saga_routes);
    }
}

impl<S: SagaStep<E>, E: Event> HandlesEvent<E> for SagaProcessor<S> {
    async fn handle(&mut self, event: E, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        let Some(step) = self.steps.get(&TypeId::of::<E>()) else {
            return Ok(());
        };
        let Some(key_fn) = step.key.downcast_ref::<KeyFn<E>>() else {
            return Ok(());
        };
        let SagaKey(Some(key)) = key_fn(&event) else {
            return Ok(());
        };
        let starts = step.starts;
        run_step(&self.saga, key, starts, event, ctx).await
    }
}

async fn run_step<S: SagaStep<E>, E: Event>(
    saga: &S,
    key: String,
    starts: bool,
    event: E,
    ctx: &EventContext<'_>,
) -> Result<(), HandlerError> {
    let services = ctx
        .services()
        .ok_or_else(|| HandlerError::new("sagas need an application"))?;
    let side = services
        .side
        .as_ref()
        .ok_or_else(|| HandlerError::new("sagas need the application's stores"))?;
    let event_id = *ctx.event_id().as_uuid();
    let (mut doc, version) = match side.sagas.load_saga(S::NAME, &key).await? {
        Some(stored) => (
            serde_json::from_slice::<SagaDocument>(&stored.state)?,
            stored.version,
        ),
        None if starts => (
            SagaDocument {
                state: serde_json::to_value(S::State::default())?,
                correlation_id: ctx.correlation_id().unwrap_or(event_id),
                handled: Vec::new(),
                done: false,
                sent: Vec::new(),
            },
            0,
        ),
        None => return Ok(()),
    };
    if doc.done || doc.handled.contains(&event_id) {
        tracing::debug!(saga = S::NAME, key, %event_id, "step already ran for this event, skipping");
        return Ok(());
    }
    let mut state: S::State = serde_json::from_value(doc.state.take())?;
    let mut step = SagaContext {
        saga: S::NAME,
        key: &key,
        event: ctx,
        services,
        correlation_id: doc.correlation_id,
        event_id,
        sends: 0,
        deadlines: Vec::new(),
        done: false,
        sent: Vec::new(),
    };
    saga.handle(&mut state, event, &mut step).await?;
    let SagaContext {
        deadlines,
        done,
        sent,
        ..
    } = step;
    if !deadlines.is_empty() {
        // Written before the state: if we crash in between, the redelivered step writes the
        // same deadline events again (same ids: idempotent) and then saves.
        let events = deadlines
            .iter()
            .map(|d| {
                NewEvent::from_event(d).map(|e| e.with_event_id(EventId::from_uuid(d.deadline_id)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let app = services.command_sender().application()?;
        app.event_store()
            .append(&deadline_stream(S::NAME)?, ExpectedVersion::Any, events)
            .await?;
    }
    doc.state = serde_json::to_value(&state)?;
    doc.handled.push(event_id);
    doc.done = done;
    doc.sent.extend(sent);
    side.sagas
        .save_saga(
            S::NAME,
            &key,
            version,
            Bytes::from(serde_json::to_vec(&doc)?),
        )
        .await?;
    Ok(())
}

/// What a saga step can do besides changing its state: send commands, schedule deadlines, end
/// the saga.
pub struct SagaContext<'a> {
    saga: &'static str,
    key: &'a str,
    event: &'a EventContext<'a>,
    services: &'a Services,
    correlation_id: Uuid,
    event_id: Uuid,
    sends: u32,
    deadlines: Vec<DeadlineScheduled>,
    done: bool,
    sent: Vec<SentCommand>,
}

impl std::fmt::Debug for SagaContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaContext")
            .field("saga", &self.saga)
            .field("key", &self.key)
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

impl SagaContext<'_> {
    /// The instance's key.
    pub fn key(&self) -> &str {
        self.key
    }

    /// The envelope of the event being handled.
    pub fn event(&self) -> &EventContext<'_> {
        self.event
    }

    /// The saga's correlation id (from the event that started it).
    pub fn correlation_id(&self) -> Uuid {
        self.correlation_id
    }

    /// Takes a dependency (a [`Dep<T>`](crate::Dep), ...) from the application's services.
    pub fn extract<T: FromServices>(&self) -> Result<T, Error> {
        T::from_services(self.services)
    }

    /// Ends the saga once this step's state is saved; later events for it are ignored.
    pub fn end(&mut self) {
        self.done = true;
    }

    /// Schedules a deadline: a [`DeadlineReached`] named `name` is delivered to this instance
    /// `after` from now (by the application's clock), once, even across restarts. Needs
    /// `routes.deadlines()` in the saga's configuration.
    pub fn schedule(&mut self, name: &str, after: Duration) {
        let n = self.deadlines.len();
        let seed = format!("{}/{}/{}/{n}", self.saga, self.key, self.event_id);
        self.deadlines.push(DeadlineScheduled {
            saga: self.saga.to_owned(),
            key: self.key.to_owned(),
            name: name.to_owned(),
            deadline_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, seed.as_bytes()),
            due_at: schedule_at(self.services.clock.now(), after),
        });
    }

    /// Sends a command with the saga's correlation id and this event as causation, and returns
    /// its output. The command gets an idempotency key derived from the saga, the instance, the
    /// event and its place in the step, so a step that runs again after a crash gets the
    /// original result instead of sending the command twice; its events get ids derived from
    /// that key, so even a crash between the command's commit and the key's record is
    /// recovered (the re-run finds the commit and its output).
    pub async fn send<C: Command>(&mut self, command: C) -> Result<C::Output, Error> {
        let n = self.sends;
        self.sends += 1;
        let key = format!("saga:{}:{}:{}:{n}", self.saga, self.key, self.event_id);
        let app = self.services.command_sender().application()?;
        let side = self.services.side.as_ref().ok_or(Error::ShutDown)?;
        let payload = command_payload(&command);
        let info = MessageInfo::command::<C>(self.saga, command.aggregate_id());
        // The events' ids derive from the key: should this process die after the command's
        // commit and before the claim's completion, the step's re-run finds that commit and
        // its output instead of applying the command a second time.
        let options = DispatchOptions::new()
            .correlation_id(self.correlation_id)
            .causation_id(self.event_id)
            .event_ids_from(key.clone());
        let slot = Mutex::new(Some(command));
        let outcome = run_idempotent(
            side.idempotency.as_ref(),
            &key,
            &info,
            Duration::from_secs(30),
            Duration::from_secs(300),
            Some(Duration::from_secs(2)),
            || {
                let command = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                let (app, options) = (app.clone(), options.clone());
                async move {
                    let command = command.ok_or(Error::ShutDown)?;
                    let done = app.dispatch_with(command, options).await?;
                    Ok(Outcome {
                        output: Box::new(done.output),
                        version: Some(done.version),
                        events: done.events,
                        position: done.position,
                    })
                }
            },
        )
        .await?;
        self.sent.push(SentCommand {
            command_type: C::TYPE_NAME.to_owned(),
            payload,
            key,
        });
        outcome
            .output
            .downcast::<C::Output>()
            .map(|output| *output)
            .map_err(|_| Error::Idempotency {
                key: format!("saga:{}:{}", self.saga, self.key),
                message: "the stored result has another type".into(),
            })
    }
}
