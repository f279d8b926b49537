//! Given-when-then tests for projections and event processors.
//!
//! The processor runs inline in a real [`Application`] on an in-memory store: given events are
//! stored in their streams, then delivered exactly as production delivers them (decoding by type
//! name, envelope context, checkpoints).
//!
//! ```
//! # use std::collections::HashMap;
//! # use interlock_runtime::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)] struct Deposited { amount: u64 }
//! # impl Event for Deposited { const TYPE_NAME: &'static str = "Deposited"; }
//! # struct Balance(String);
//! # impl Query for Balance { type Output = u64; const TYPE_NAME: &'static str = "Balance"; }
//! # #[derive(Default, Debug)] struct Balances(HashMap<String, u64>);
//! # impl EventProcessor for Balances { const NAME: &'static str = "balances";
//! #     fn configure(r: &mut ProcessorRoutes<Self>) { r.event::<Deposited>().query::<Balance>(); } }
//! # impl HandlesEvent<Deposited> for Balances {
//! #     async fn handle(&mut self, e: Deposited, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
//! #         *self.0.entry(ctx.stream_id().id().to_owned()).or_default() += e.amount; Ok(()) } }
//! # impl AnswersQuery<Balance> for Balances {
//! #     async fn answer(&self, q: Balance) -> Result<u64, HandlerError> { Ok(self.0.get(&q.0).copied().unwrap_or(0)) } }
//! use interlock_testing::ProjectionScenario;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! ProjectionScenario::new(Balances::default())
//!     .given_in("Account", "a", (Deposited { amount: 5 }, Deposited { amount: 7 }))
//!     .given_in("Account", "b", Deposited { amount: 1 })
//!     .when_query(Balance("a".into()))
//!     .await
//!     .should_return(12);
//! # });
//! ```

use std::fmt::Debug;

use interlock_core::{
    EventBatch, EventStore, ExpectedVersion, NewEvent, Query, SerializedEvent, StreamId,
};
use interlock_runtime::processor::RetryPolicy;
use interlock_runtime::{
    Application, Error, EventProcessor, InMemoryEventStore, ProcessingFailure, ProcessorSettings,
};

/// Given events, then a query on a projection.
#[must_use = "a scenario does nothing until `when_query(...).await` or `run().await`"]
pub struct ProjectionScenario<P: EventProcessor> {
    processor: P,
    given: Vec<(StreamId, Vec<SerializedEvent>)>,
    setup_error: Option<String>,
}

/// Given events, then checks on an event processor's state and failures.
pub type ProcessorScenario<P> = ProjectionScenario<P>;

impl<P: EventProcessor> ProjectionScenario<P> {
    /// A scenario for this processor instance.
    pub fn new(processor: P) -> Self {
        Self {
            processor,
            given: Vec::new(),
            setup_error: None,
        }
    }

    /// Events stored, in order, in the stream `category`/`id`. Calls add up in order.
    pub fn given_in(mut self, category: &str, id: &str, events: impl EventBatch) -> Self {
        let stream = match StreamId::new(category, id) {
            Ok(stream) => stream,
            Err(e) => {
                self.setup_error = Some(e.to_string());
                return self;
            }
        };
        match events.into_serialized() {
            Ok(events) => self.given.push((stream, events)),
            Err(e) => {
                self.setup_error = Some(format!("a given event could not be serialized: {e}"));
            }
        }
        self
    }

    /// Events stored in one stream, `Test/1`.
    pub fn given(self, events: impl EventBatch) -> Self {
        self.given_in("Test", "1", events)
    }

    async fn deliver(
        self,
        caller: &std::panic::Location<'static>,
    ) -> (Application, Vec<ProcessingFailure>) {
        if let Some(error) = self.setup_error {
            panic!("{caller}: scenario setup failed: {error}");
        }
        let store = InMemoryEventStore::new();
        for (stream, events) in self.given {
            let events = events.into_iter().map(NewEvent::from_serialized).collect();
            store
                .append(&stream, ExpectedVersion::Any, events)
                .await
                .unwrap_or_else(|e| panic!("{caller}: storing the given events failed: {e}"));
        }
        let app = Application::builder()
            .with_event_store(store)
            .register_projection_with(
                self.processor,
                ProcessorSettings::inline().retry(RetryPolicy::none()),
            )
            .build()
            .unwrap_or_else(|e| panic!("{caller}: the processor under test does not build: {e}"));
        let failures = match app.start().await {
            Ok(()) => Vec::new(),
            Err(Error::Processing { failures, .. }) => failures,
            Err(e) => panic!("{caller}: delivering the given events failed: {e}"),
        };
        (app, failures)
    }

    /// Delivers the given events, then asks the query.
    #[track_caller]
    pub fn when_query<Q: Query>(self, query: Q) -> impl Future<Output = QueryOutcome<Q::Output>> {
        let caller = std::panic::Location::caller();
        async move {
            let (app, failures) = self.deliver(caller).await;
            let result = app.query(query).await;
            QueryOutcome {
                query: Q::TYPE_NAME,
                result,
                failures,
            }
        }
    }

    /// Delivers the given events; check the processor with the returned outcome.
    #[track_caller]
    pub fn run(self) -> impl Future<Output = ProcessorOutcome<P>> {
        let caller = std::panic::Location::caller();
        async move {
            let (app, failures) = self.deliver(caller).await;
            ProcessorOutcome {
                app,
                failures,
                _processor: std::marker::PhantomData,
            }
        }
    }
}

/// What a projection answered.
#[derive(Debug)]
pub struct QueryOutcome<O> {
    query: &'static str,
    result: Result<O, Error>,
    failures: Vec<ProcessingFailure>,
}

impl<O> QueryOutcome<O> {
    #[track_caller]
    fn no_failures(&self) {
        if !self.failures.is_empty() {
            let list: Vec<String> = self.failures.iter().map(ToString::to_string).collect();
            panic!(
                "the projection failed on given events:\n  {}",
                list.join("\n  ")
            );
        }
    }

    /// Every event was handled and the query returned `expected`.
    #[track_caller]
    pub fn should_return(self, expected: O) -> Self
    where
        O: PartialEq + Debug,
    {
        self.no_failures();
        match &self.result {
            Ok(actual) if *actual == expected => {}
            Ok(actual) => panic!(
                "query {} returned another answer\n  expected: {expected:?}\n  actual: {actual:?}",
                self.query
            ),
            Err(e) => panic!(
                "expected query {} to answer {expected:?}, but it failed: {e}",
                self.query
            ),
        }
        self
    }

    /// The query failed with a message containing `text`.
    #[track_caller]
    pub fn should_fail_with_message(self, text: &str) -> Self
    where
        O: Debug,
    {
        match &self.result {
            Err(e) if e.to_string().contains(text) => {}
            Err(e) => panic!(
                "query {} failed with another message\n  expected to contain: {text:?}\n  actual: {e}",
                self.query
            ),
            Ok(actual) => panic!(
                "expected query {} to fail with {text:?}, but it answered {actual:?}",
                self.query
            ),
        }
        self
    }

    /// The query's result, for other checks.
    pub fn result(&self) -> &Result<O, Error> {
        &self.result
    }
}

/// What delivering the given events did to a processor.
pub struct ProcessorOutcome<P> {
    app: Application,
    failures: Vec<ProcessingFailure>,
    _processor: std::marker::PhantomData<fn() -> P>,
}

impl<P: EventProcessor> ProcessorOutcome<P> {
    /// Every given event was handled without error.
    #[track_caller]
    pub fn should_succeed(self) -> Self {
        if !self.failures.is_empty() {
            let list: Vec<String> = self.failures.iter().map(ToString::to_string).collect();
            panic!(
                "expected every event to be handled, but:\n  {}",
                list.join("\n  ")
            );
        }
        self
    }

    /// Exactly these stream versions (of any stream) failed and were parked, in order (events
    /// held behind them, untried, are [`should_hold`](Self::should_hold)'s).
    #[track_caller]
    pub fn should_fail_on(self, versions: &[u64]) -> Self {
        let actual: Vec<u64> = self
            .failures
            .iter()
            .filter(|f| f.attempts > 0)
            .map(|f| f.stream_version)
            .collect();
        if actual != versions {
            let list: Vec<String> = self.failures.iter().map(ToString::to_string).collect();
            panic!(
                "expected failures on versions {versions:?}, got {actual:?}\n  {}",
                list.join("\n  ")
            );
        }
        self
    }

    /// Exactly these stream versions were held, untried, behind an earlier parked event of
    /// their stream (parking keeps stream order).
    #[track_caller]
    pub fn should_hold(self, versions: &[u64]) -> Self {
        let actual: Vec<u64> = self
            .failures
            .iter()
            .filter(|f| f.attempts == 0)
            .map(|f| f.stream_version)
            .collect();
        if actual != versions {
            panic!("expected held events at versions {versions:?}, got {actual:?}");
        }
        self
    }

    /// The processor's state satisfies `check` (checked after every event was delivered).
    #[track_caller]
    pub fn should_have_state(self, check: impl FnOnce(&P) -> bool) -> impl Future<Output = Self>
    where
        P: Debug,
    {
        let caller = std::panic::Location::caller();
        async move {
            let summary = self
                .app
                .inspect_processor::<P, _>(|p| (!check(p)).then(|| format!("{p:#?}")))
                .await
                .unwrap_or_else(|e| panic!("{caller}: {e}"));
            if let Some(state) = summary {
                panic!(
                    "{caller}: the processor's state does not match the predicate\n  actual state: {state}"
                );
            }
            self
        }
    }

    /// The failures, for other checks.
    pub fn failures(&self) -> &[ProcessingFailure] {
        &self.failures
    }
}
