//! Given-when-then tests for aggregates.
//!
//! A scenario runs the command through a real [`Application`] on an in-memory store, so what it
//! checks is what production does: routing, loading, emit-then-apply, the atomic append.
//!
//! ```
//! # use interlock_runtime::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)] struct Deposit { id: u32, amount: u64 }
//! # impl Command for Deposit { type Output = u64; const TYPE_NAME: &'static str = "Deposit";
//! #     fn aggregate_id(&self) -> AggregateId { self.id.into() } }
//! # #[derive(Serialize, Deserialize)] struct Deposited { amount: u64 }
//! # impl Event for Deposited { const TYPE_NAME: &'static str = "Deposited"; }
//! # #[derive(Default, Debug)] struct Account { balance: u64 }
//! # impl Aggregate for Account { const TYPE_NAME: &'static str = "Account";
//! #     fn configure(r: &mut AggregateRoutes<Self>) { r.creating_command::<Deposit>().event::<Deposited>(); } }
//! # impl HandlesCommand<Deposit> for Account {
//! #     async fn handle(&mut self, c: Deposit, _: &CommandContext) -> Result<u64, DomainError> {
//! #         if c.amount == 0 { return Err(DomainError::new("amount must be positive")); }
//! #         self.emit(Deposited { amount: c.amount }); Ok(self.balance) } }
//! # impl AppliesEvent<Deposited> for Account { fn apply(&mut self, e: &Deposited) { self.balance += e.amount; } }
//! use interlock_testing::AggregateScenario;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! AggregateScenario::<Account>::new()
//!     .given(Deposited { amount: 10 })
//!     .when(Deposit { id: 1, amount: 5 })
//!     .await
//!     .should_emit(Deposited { amount: 5 })
//!     .should_return(15)
//!     .should_have_state(|a| a.balance == 15);
//!
//! AggregateScenario::<Account>::new()
//!     .when(Deposit { id: 1, amount: 0 })
//!     .await
//!     .should_fail_with_message("amount must be positive");
//! # });
//! ```

use std::fmt::{self, Debug, Write as _};
use std::marker::PhantomData;

use interlock_core::{
    Command, EventBatch, EventStore, ExpectedVersion, NewEvent, RecordedEvent, SerializedEvent,
    StreamId,
};
use interlock_runtime::{
    Aggregate, AggregateSettings, Application, DispatchOptions, Error, InMemoryEventStore,
};

/// A given-when-then test of one aggregate type.
#[must_use = "a scenario does nothing until `when(...).await`"]
pub struct AggregateScenario<A: Aggregate> {
    given: Vec<SerializedEvent>,
    given_error: Option<String>,
    settings: AggregateSettings,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Default for AggregateScenario<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Aggregate> Debug for AggregateScenario<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregateScenario")
            .field("aggregate", &A::TYPE_NAME)
            .field("given", &self.given.len())
            .finish()
    }
}

impl<A: Aggregate> AggregateScenario<A> {
    /// A scenario with no history: the command meets a new instance.
    pub fn new() -> Self {
        Self {
            given: Vec::new(),
            given_error: None,
            settings: AggregateSettings::default(),
            _aggregate: PhantomData,
        }
    }

    /// Settings for the aggregate under test (for example the unknown-event policy).
    pub fn with_settings(mut self, settings: AggregateSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Events already in the instance's stream: one event, a tuple of events, or a `Vec`.
    /// Calls add up in order.
    pub fn given(mut self, events: impl EventBatch) -> Self {
        match events.into_serialized() {
            Ok(events) => self.given.extend(events),
            Err(e) => {
                self.given_error = Some(format!("a given event could not be serialized: {e}"));
            }
        }
        self
    }

    /// Runs the command against the given history.
    #[track_caller]
    pub fn when<C: Command>(
        self,
        command: C,
    ) -> impl std::future::Future<Output = ScenarioOutcome<A, C::Output>> {
        let caller = std::panic::Location::caller();
        async move {
            if let Some(error) = self.given_error {
                panic!("{caller}: scenario setup failed: {error}");
            }
            let store = InMemoryEventStore::new();
            let app = Application::builder()
                .with_event_store(store.clone())
                .register_aggregate_with::<A>(self.settings)
                .build()
                .unwrap_or_else(|e| {
                    panic!("{caller}: the aggregate under test does not build: {e}")
                });
            let id = command.aggregate_id();
            let stream = StreamId::for_aggregate(A::TYPE_NAME, &id)
                .unwrap_or_else(|e| panic!("{caller}: the command's aggregate id is invalid: {e}"));
            let given = self.given.len() as u64;
            if given > 0 {
                let events = self
                    .given
                    .into_iter()
                    .map(NewEvent::from_serialized)
                    .collect();
                store
                    .append(&stream, ExpectedVersion::NoStream, events)
                    .await
                    .unwrap_or_else(|e| panic!("{caller}: storing the given events failed: {e}"));
            }
            let result = app
                .dispatch_with(command, DispatchOptions::default())
                .await
                .map(|d| d.output);
            let emitted = store
                .read_stream(&stream, given + 1, None)
                .await
                .unwrap_or_else(|e| panic!("{caller}: reading the emitted events failed: {e}"));
            let state = match app.load::<A>(id).await {
                Ok(state) => Ok(Some(state)),
                Err(Error::AggregateNotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            };
            ScenarioOutcome {
                command: C::TYPE_NAME,
                result,
                emitted,
                state,
            }
        }
    }
}

/// What a scenario's command did; check it with the `should_*` methods (each panics with
/// expected vs actual when the check fails, and returns `self` for more checks).
pub struct ScenarioOutcome<A, O> {
    command: &'static str,
    result: Result<O, Error>,
    emitted: Vec<RecordedEvent>,
    state: Result<Option<A>, Error>,
}

impl<A, O: Debug> Debug for ScenarioOutcome<A, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScenarioOutcome")
            .field("command", &self.command)
            .field("result", &self.result)
            .field(
                "emitted",
                &describe(self.emitted.iter().map(RecordedEvent::to_serialized)),
            )
            .finish_non_exhaustive()
    }
}

fn describe(events: impl Iterator<Item = SerializedEvent>) -> String {
    let mut out = String::new();
    for (i, e) in events.enumerate() {
        let payload = e
            .payload_json()
            .map(|v| v.to_string())
            .unwrap_or_else(|_| String::from_utf8_lossy(&e.payload).into_owned());
        let _ = write!(
            out,
            "\n    {}. {} v{} {}",
            i + 1,
            e.event_type,
            e.schema_version,
            payload
        );
    }
    if out.is_empty() {
        out.push_str(" (none)");
    }
    out
}

impl<A, O> ScenarioOutcome<A, O> {
    #[track_caller]
    fn succeeded(&self, expectation: &str) {
        if let Err(e) = &self.result {
            panic!(
                "expected {expectation}, but command {} failed: {e}\n  error details: {e:?}",
                self.command
            );
        }
    }

    /// The command succeeded and stored exactly these events, in this order (compared by type
    /// name, schema version and JSON payload).
    #[track_caller]
    pub fn should_emit(self, expected: impl EventBatch) -> Self {
        let expected = expected
            .into_serialized()
            .unwrap_or_else(|e| panic!("an expected event could not be serialized: {e}"));
        self.succeeded("events to be emitted");
        let actual: Vec<SerializedEvent> = self
            .emitted
            .iter()
            .map(RecordedEvent::to_serialized)
            .collect();
        let same = expected.len() == actual.len()
            && expected.iter().zip(&actual).all(|(e, a)| {
                e.event_type == a.event_type
                    && e.schema_version == a.schema_version
                    && e.payload_json().ok() == a.payload_json().ok()
            });
        if !same {
            panic!(
                "command {} emitted other events than expected\n  expected:{}\n  actual:{}",
                self.command,
                describe(expected.into_iter()),
                describe(actual.into_iter())
            );
        }
        self
    }

    /// The command succeeded and the stored events (with their full envelopes) satisfy `check`.
    #[track_caller]
    pub fn should_emit_matching(self, check: impl FnOnce(&[RecordedEvent]) -> bool) -> Self {
        self.succeeded("events matching a predicate");
        if !check(&self.emitted) {
            panic!(
                "the events emitted by command {} do not match the predicate\n  actual:{}",
                self.command,
                describe(self.emitted.iter().map(RecordedEvent::to_serialized))
            );
        }
        self
    }

    /// The command succeeded and stored no event.
    #[track_caller]
    pub fn should_emit_nothing(self) -> Self {
        self.succeeded("no events");
        if !self.emitted.is_empty() {
            panic!(
                "expected command {} to emit nothing\n  actual:{}",
                self.command,
                describe(self.emitted.iter().map(RecordedEvent::to_serialized))
            );
        }
        self
    }

    /// The command failed with an error satisfying `check`, and stored nothing.
    #[track_caller]
    pub fn should_fail_with(self, check: impl FnOnce(&Error) -> bool) -> Self {
        match &self.result {
            Ok(_) => panic!(
                "expected command {} to fail, but it succeeded and emitted:{}",
                self.command,
                describe(self.emitted.iter().map(RecordedEvent::to_serialized))
            ),
            Err(e) if !check(e) => panic!(
                "command {} failed, but not as expected\n  actual error: {e}\n  details: {e:?}",
                self.command
            ),
            Err(_) => {}
        }
        self.assert_nothing_stored();
        self
    }

    /// The command failed with an error whose message contains `text`, and stored nothing.
    #[track_caller]
    pub fn should_fail_with_message(self, text: &str) -> Self {
        match &self.result {
            Ok(_) => panic!(
                "expected command {} to fail with {text:?}, but it succeeded and emitted:{}",
                self.command,
                describe(self.emitted.iter().map(RecordedEvent::to_serialized))
            ),
            Err(e) if !e.to_string().contains(text) => panic!(
                "command {} failed with another message\n  expected to contain: {text:?}\n  actual: {e}",
                self.command
            ),
            Err(_) => {}
        }
        self.assert_nothing_stored();
        self
    }

    #[track_caller]
    fn assert_nothing_stored(&self) {
        if !self.emitted.is_empty() {
            panic!(
                "command {} failed but events were stored:{}",
                self.command,
                describe(self.emitted.iter().map(RecordedEvent::to_serialized))
            );
        }
    }

    /// The aggregate, reloaded from its stream after the command, satisfies `check`.
    #[track_caller]
    pub fn should_have_state(self, check: impl FnOnce(&A) -> bool) -> Self
    where
        A: Debug,
    {
        match &self.state {
            Err(e) => panic!(
                "expected state to check after command {}, but reloading the aggregate failed: {e}",
                self.command
            ),
            Ok(None) => panic!(
                "expected state to check after command {}, but the aggregate has no events",
                self.command
            ),
            Ok(Some(state)) if !check(state) => panic!(
                "the state after command {} does not match the predicate\n  actual state: {state:#?}",
                self.command
            ),
            Ok(Some(_)) => {}
        }
        self
    }

    /// The command succeeded and returned `expected`.
    #[track_caller]
    pub fn should_return(self, expected: O) -> Self
    where
        O: PartialEq + Debug,
    {
        self.succeeded("an output");
        if let Ok(actual) = &self.result
            && *actual != expected
        {
            panic!(
                "command {} returned another output\n  expected: {expected:?}\n  actual: {actual:?}",
                self.command
            );
        }
        self
    }

    /// The command's result, for checks the methods above do not cover.
    pub fn result(&self) -> &Result<O, Error> {
        &self.result
    }

    /// The events the command stored, with their envelopes.
    pub fn emitted(&self) -> &[RecordedEvent] {
        &self.emitted
    }

    /// The aggregate reloaded after the command (`Ok(None)` if it has no events).
    pub fn state(&self) -> Result<Option<&A>, &Error> {
        self.state.as_ref().map(Option::as_ref)
    }
}
