//! Given-when-then tests for sagas: given events, expect state and the commands sent.
//!
//! The saga runs in a real [`Application`] on an in-memory store. Commands it sends are answered
//! by a stub (registered outputs, or JSON `null` for commands returning `()`) unless a real
//! aggregate is registered for them with [`SagaScenario::with_aggregate`]; either way they are
//! recorded. Deadlines follow a [`FakeClock`] the scenario owns.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::future::BoxFuture;
use interlock_core::side::SagaStateStore;
use interlock_core::{
    Command, EventBatch, EventStore, ExpectedVersion, NewEvent, SerializedEvent, StreamId,
};
use interlock_runtime::middleware::{MessageInfo, Middleware, Next, Outcome};
use interlock_runtime::saga::{Saga, SentCommand};
use interlock_runtime::{
    Aggregate, Application, ApplicationBuilder, DispatchOptions, Error, FakeClock,
    InMemoryEventStore,
};

/// Answers commands nobody handles, with the output registered for their type.
struct Stubs {
    outputs: HashMap<TypeId, serde_json::Value>,
}

impl Middleware for Stubs {
    fn intercepts(&self, message: &MessageInfo) -> bool {
        message.is_command() && message.handler().is_empty()
    }

    fn handle<'a>(
        &'a self,
        message: &'a MessageInfo,
        _options: DispatchOptions,
        _next: Next<'a>,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        let output = self
            .outputs
            .iter()
            .find(|(type_id, _)| message.is_type_id(**type_id))
            .map_or(serde_json::Value::Null, |(_, v)| v.clone());
        Box::pin(async move {
            message
                .decode_output(output)
                .unwrap_or_else(|| Err(serde::de::Error::custom("no output codec")))
                .map_err(|e| Error::Idempotency {
                    key: message.type_name().to_owned(),
                    message: format!(
                        "the scenario has no stub output for {} ({e}): register one with stub::<{}>(output)",
                        message.type_name(),
                        message.type_name()
                    ),
                })
        })
    }
}

/// A given-when-then test of one saga.
#[must_use = "a scenario does nothing until `run().await`"]
pub struct SagaScenario<S: Saga> {
    saga: S,
    given: Vec<(StreamId, Vec<SerializedEvent>)>,
    outputs: HashMap<TypeId, serde_json::Value>,
    register: Vec<Box<dyn FnOnce(ApplicationBuilder) -> ApplicationBuilder + Send>>,
    clock: FakeClock,
    setup_error: Option<String>,
}

impl<S: Saga> SagaScenario<S> {
    /// A scenario for this saga, with a fake clock stopped at the current time.
    pub fn new(saga: S) -> Self {
        Self {
            saga,
            given: Vec::new(),
            outputs: HashMap::new(),
            register: Vec::new(),
            clock: FakeClock::at(chrono::Utc::now()),
            setup_error: None,
        }
    }

    /// Events stored, in order, in stream `category`/`id`; calls add up in order.
    pub fn given_in(mut self, category: &str, id: &str, events: impl EventBatch) -> Self {
        match (StreamId::new(category, id), events.into_serialized()) {
            (Ok(stream), Ok(events)) => self.given.push((stream, events)),
            (Err(e), _) => self.setup_error = Some(e.to_string()),
            (_, Err(e)) => {
                self.setup_error = Some(format!("a given event could not be serialized: {e}"));
            }
        }
        self
    }

    /// The output a stubbed command of type `C` returns to the saga.
    pub fn stub<C: Command>(mut self, output: C::Output) -> Self {
        match serde_json::to_value(&output) {
            Ok(value) => {
                self.outputs.insert(TypeId::of::<C>(), value);
            }
            Err(e) => self.setup_error = Some(format!("stub output for {}: {e}", C::TYPE_NAME)),
        }
        self
    }

    /// Handles commands of aggregate `A` for real instead of stubbing them.
    pub fn with_aggregate<A: Aggregate>(mut self) -> Self {
        self.register
            .push(Box::new(|b| b.register_aggregate::<A>()));
        self
    }

    /// Registers a dependency the saga's steps take.
    pub fn with_dependency<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.register
            .push(Box::new(move |b| b.register_dependency(value)));
        self
    }

    /// Delivers the given events and waits until the saga is idle.
    #[track_caller]
    pub fn run(self) -> impl Future<Output = SagaOutcome<S>> {
        let caller = std::panic::Location::caller();
        async move {
            if let Some(error) = self.setup_error {
                panic!("{caller}: scenario setup failed: {error}");
            }
            let store = InMemoryEventStore::new();
            let mut builder = Application::builder()
                .with_event_store(store.clone())
                .with_clock(self.clock.clone())
                .register_middleware(Stubs {
                    outputs: self.outputs,
                });
            for register in self.register {
                builder = register(builder);
            }
            let app = builder
                .register_saga(self.saga)
                .build()
                .unwrap_or_else(|e| panic!("{caller}: the saga under test does not build: {e}"));
            for (stream, events) in self.given {
                let events = events.into_iter().map(NewEvent::from_serialized).collect();
                store
                    .append(&stream, ExpectedVersion::Any, events)
                    .await
                    .unwrap_or_else(|e| panic!("{caller}: storing the given events failed: {e}"));
            }
            if let Err(e) = app.start().await {
                panic!("{caller}: the application did not start: {e}");
            }
            let outcome = SagaOutcome {
                app,
                store,
                clock: self.clock,
                _saga: std::marker::PhantomData,
            };
            outcome.settle(caller).await;
            outcome
        }
    }
}

/// What the saga did; check it with the `should_*` methods.
pub struct SagaOutcome<S: Saga> {
    app: Application,
    store: InMemoryEventStore,
    clock: FakeClock,
    _saga: std::marker::PhantomData<fn() -> S>,
}

#[derive(serde::Deserialize)]
struct Document {
    state: serde_json::Value,
    done: bool,
    #[serde(default)]
    sent: Vec<SentCommand>,
}

impl<S: Saga> SagaOutcome<S> {
    async fn settle(&self, caller: &std::panic::Location<'static>) {
        for _ in 0..100 {
            let head = self.store.head_position().await.unwrap_or_default();
            let waited =
                tokio::time::timeout(Duration::from_secs(10), self.app.wait_for(head)).await;
            match waited {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{caller}: the saga failed: {e}"),
                Err(_) => panic!("{caller}: the saga did not catch up within 10 s"),
            }
            if self.store.head_position().await.unwrap_or_default() == head {
                return;
            }
        }
        panic!("{caller}: the saga never became idle");
    }

    #[track_caller]
    fn document(&self, key: &str) -> impl Future<Output = Option<Document>> + '_ {
        let caller = std::panic::Location::caller();
        let key = key.to_owned();
        async move {
            let stored = self
                .store
                .load_saga(S::NAME, &key)
                .await
                .unwrap_or_else(|e| panic!("{caller}: reading saga {} {key}: {e}", S::NAME))?;
            Some(
                serde_json::from_slice(&stored.state).unwrap_or_else(|e| {
                    panic!("{caller}: saga {} {key} is unreadable: {e}", S::NAME)
                }),
            )
        }
    }

    /// The instance `key` sent exactly these commands, in order: `(type name, JSON payload)`.
    #[track_caller]
    pub fn should_send(
        self,
        key: &str,
        expected: Vec<(&str, serde_json::Value)>,
    ) -> impl Future<Output = Self> {
        let caller = std::panic::Location::caller();
        let key = key.to_owned();
        async move {
            let doc = self.document(&key).await;
            let sent: Vec<(String, serde_json::Value)> = doc
                .map(|d| {
                    d.sent
                        .into_iter()
                        .map(|c| (c.command_type, c.payload))
                        .collect()
                })
                .unwrap_or_default();
            let expected: Vec<(String, serde_json::Value)> = expected
                .into_iter()
                .map(|(t, p)| (t.to_owned(), p))
                .collect();
            if sent != expected {
                panic!(
                    "{caller}: saga {} instance {key} sent other commands\n  expected: {expected:#?}\n  actual: {sent:#?}",
                    S::NAME
                );
            }
            self
        }
    }

    /// The instance `key` exists and its state satisfies `check`.
    #[track_caller]
    pub fn should_have_state(
        self,
        key: &str,
        check: impl FnOnce(&S::State) -> bool,
    ) -> impl Future<Output = Self>
    where
        S::State: Debug,
    {
        let caller = std::panic::Location::caller();
        let key = key.to_owned();
        async move {
            let Some(doc) = self.document(&key).await else {
                panic!("{caller}: saga {} has no instance {key}", S::NAME);
            };
            let state: S::State = serde_json::from_value(doc.state)
                .unwrap_or_else(|e| panic!("{caller}: saga state is unreadable: {e}"));
            if !check(&state) {
                panic!(
                    "{caller}: the state of saga {} instance {key} does not match\n  actual: {state:#?}",
                    S::NAME
                );
            }
            self
        }
    }

    /// The instance `key` has ended (or not).
    #[track_caller]
    pub fn should_be_ended(self, key: &str, ended: bool) -> impl Future<Output = Self> {
        let caller = std::panic::Location::caller();
        let key = key.to_owned();
        async move {
            let done = self.document(&key).await.map(|d| d.done);
            if done != Some(ended) {
                panic!(
                    "{caller}: expected saga {} instance {key} ended = {ended}, got {done:?}",
                    S::NAME
                );
            }
            self
        }
    }

    /// Has no instance `key` (the events did not start one).
    #[track_caller]
    pub fn should_have_no_instance(self, key: &str) -> impl Future<Output = Self> {
        let caller = std::panic::Location::caller();
        let key = key.to_owned();
        async move {
            if self.document(&key).await.is_some() {
                panic!("{caller}: saga {} has an instance {key}", S::NAME);
            }
            self
        }
    }

    /// Moves the fake clock, fires the deadlines now due, and waits for the saga to handle them.
    #[track_caller]
    pub fn after(self, elapsed: Duration) -> impl Future<Output = Self> {
        let caller = std::panic::Location::caller();
        async move {
            self.clock.advance(elapsed);
            if let Err(e) = self.app.fire_due_deadlines().await {
                panic!("{caller}: firing deadlines failed: {e}");
            }
            self.settle(caller).await;
            self
        }
    }

    /// The application the saga ran in (for checks the methods above do not cover).
    pub fn application(&self) -> &Application {
        &self.app
    }

    /// The store the scenario ran on.
    pub fn store(&self) -> &InMemoryEventStore {
        &self.store
    }
}
