//! # interlock-testing
//!
//! Test helpers for Interlock applications and backends:
//!
//! * [`AggregateScenario`]: given events, when a command, then expect events, an error, a state
//!   or an output. Failures print expected vs actual.
//! * [`conformance`]: the event store conformance suite, written once over the
//!   [`EventStore`](interlock_core::EventStore) trait and instantiated for every backend with
//!   [`event_store_conformance!`].
//!
//! This crate's purpose is to fail tests loudly, so it panics where a library would return errors.

#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod conformance;
mod scenario;

pub use scenario::{AggregateScenario, ScenarioOutcome};
