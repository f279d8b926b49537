//! # interlock-testing
//!
//! Test helpers for Interlock applications and backends:
//!
//! * [`AggregateScenario`]: given events, when a command, then expect events, an error, a state
//!   or an output. Failures print expected vs actual.
//! * [`ProjectionScenario`] / [`ProcessorScenario`]: given events, then a query's answer, the
//!   processor's state, or which events failed.
//! * [`SagaScenario`]: given events, then a saga's state and the commands it sent.
//! * [`conformance`]: the event store conformance suite, written once over the
//!   [`EventStore`](interlock_core::EventStore) trait and instantiated for every backend with
//!   [`event_store_conformance!`].
//! * [`reliability`]: the rows of `RELIABILITY.md` run through a real application on every
//!   backend, instantiated with [`reliability_suite!`].
//!
//! This crate's purpose is to fail tests loudly, so it panics where a library would return errors.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod conformance;
#[cfg(feature = "faults")]
pub mod effects;
#[cfg(feature = "faults")]
pub mod faults;
#[cfg(all(unix, feature = "faults"))]
pub mod kill;
mod processor_scenario;
pub mod reliability;
mod saga_scenario;
mod scenario;

pub use processor_scenario::{
    ProcessorOutcome, ProcessorScenario, ProjectionScenario, QueryOutcome,
};
pub use saga_scenario::{SagaOutcome, SagaScenario};
pub use scenario::{AggregateScenario, ScenarioOutcome};
