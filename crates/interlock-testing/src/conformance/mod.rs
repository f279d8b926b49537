//! The event store conformance suite: one set of tests every backend must pass.
//!
//! Each test is a plain `async fn` taking a fresh, empty store, so a backend author instantiates
//! the whole suite with one macro call in an integration test:
//!
//! ```
//! interlock_testing::event_store_conformance!(async { interlock_runtime::InMemoryEventStore::new() });
//! # fn main() {}
//! ```
//!
//! The expression is evaluated once per test and must yield a store with no events. The
//! generated tests run on a multi-threaded tokio runtime (the race tests need real parallelism);
//! every wait is bounded by a timeout so a broken backend fails instead of hanging.

mod append;
mod concurrency;
mod lease;
mod read;
mod side;
mod strings;
mod subscribe;

use std::time::Duration;

use bytes::Bytes;
use interlock_core::{EventId, NewEvent, StreamId};

pub use append::*;
pub use concurrency::*;
pub use lease::*;
pub use read::*;
pub use side::*;
pub use strings::*;
pub use subscribe::*;

/// How long any single wait in the suite may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// A test event `{"n": n}` of type `TestEvent`, version 1, with a fresh id.
pub fn test_event(n: u64) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: "TestEvent".to_owned(),
        schema_version: 1,
        payload: Bytes::from(format!("{{\"n\":{n}}}")),
        correlation_id: None,
        causation_id: None,
        metadata: Default::default(),
    }
}

/// `count` test events numbered from `first`.
pub fn test_events(first: u64, count: u64) -> Vec<NewEvent> {
    (first..first + count).map(test_event).collect()
}

/// A stream in the `Test` category.
pub fn test_stream(id: &str) -> StreamId {
    StreamId::new("Test", id).expect("valid test stream id")
}

/// The `n` field of a test event's payload.
pub fn payload_n(payload: &[u8]) -> u64 {
    let value: serde_json::Value = serde_json::from_slice(payload).expect("test payload is JSON");
    value["n"].as_u64().expect("test payload has n")
}

/// Instantiates the side-store tests (snapshots, checkpoints, saga state, dead letters,
/// idempotency keys) for a backend whose store implements all five traits. The argument is
/// evaluated once per test, like [`event_store_conformance!`]'s.
#[macro_export]
macro_rules! side_store_conformance {
    ($factory:expr) => {
        $crate::event_store_conformance!(@tests $factory;
            snapshots_keep_the_latest,
            checkpoints_are_saved_per_processor,
            saga_state_uses_optimistic_versions,
            dead_letters_are_parked_in_order,
            idempotency_claims_have_one_winner,
            leases_have_one_holder_and_fence_takeovers,
        );
    };
}

/// Runs one conformance test on a fresh multi-threaded runtime (4 workers, so races are real).
pub fn run<F: std::future::Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance test")
        .block_on(test);
}

/// Instantiates every conformance test for a backend. The argument is an expression evaluating
/// to a future that yields a fresh, empty store (it is evaluated once per test).
#[macro_export]
macro_rules! event_store_conformance {
    ($factory:expr) => {
        $crate::event_store_conformance!(@tests $factory;
            append_assigns_versions_positions_and_keeps_the_envelope,
            expected_version_is_checked,
            a_batch_with_a_bad_event_stores_nothing,
            empty_batches_and_repeated_ids_are_refused,
            reappending_the_same_batch_is_idempotent,
            reusing_an_event_id_for_other_content_is_refused,
            read_stream_honours_ranges,
            read_all_follows_global_order_in_pages,
            stream_info_listing_and_head,
            large_batches_are_atomic,
            hostile_and_unicode_strings_round_trip,
            large_payloads_round_trip,
            subscription_catches_up_then_follows_live,
            subscription_starts_after_the_given_position,
            racing_writers_on_one_stream_have_exactly_one_winner,
            retrying_writers_lose_nothing,
            concurrent_writers_on_many_streams_keep_global_order,
            rewriting_an_event_keeps_its_place,
        );
    };
    (@tests $factory:expr; $($test:ident),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                $crate::conformance::run(async {
                    let store = $factory.await;
                    $crate::conformance::$test(store).await;
                });
            }
        )+
    };
}
