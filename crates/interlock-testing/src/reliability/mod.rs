//! The reliability suite: the rows of `RELIABILITY.md` that every backend runs, written once.
//!
//! Like the [conformance suite](crate::conformance), each test is a plain `async fn` taking a
//! fresh, empty store, and a backend instantiates them all with one macro call:
//!
//! ```
//! interlock_testing::reliability_suite!(async { interlock_runtime::InMemoryEventStore::new() });
//! # fn main() {}
//! ```
//!
//! Unlike the conformance suite, most tests here go through a real [`Application`] built over
//! the store (its side stores included), with the small hand-written domain of [`domain`]: what
//! is checked is what an application sees, not only what the store returns.
//!
//! A backend that can write raw bytes behind the store's back adds a corrupter, which turns on
//! the test of truncated JSON in storage (no API of the store lets such bytes in):
//!
//! ```ignore
//! async fn corrupt(store: MyStore, event: interlock_core::EventId, payload: Vec<u8>) { /* raw SQL */ }
//! interlock_testing::reliability_suite!(my_fresh_store(), corrupt_payload = corrupt);
//! ```
//!
//! ## Rows covered
//!
//! | row | tests |
//! |---|---|
//! | #1 optimistic-concurrency race | [`row01_fifty_racing_appends_have_one_winner`], [`row01_fifty_racing_commands_have_one_winner`] |
//! | #2 atomic batch with a failure inside | [`row02_a_batch_with_an_invalid_fourth_event_stores_nothing`], [`row02_a_fourth_event_that_cannot_be_serialized_stores_nothing`], [`row02_cancelled_appends_are_all_or_nothing_and_retry_once`] |
//! | #12 poison event, ordered parking | [`row12_a_poison_event_parks_its_stream_in_order`] |
//! | #13 undecodable stored events | [`row13_undecodable_events_fail_typed_and_processors_park`], [`row13_truncated_json_in_storage_fails_typed`] (backends with a corrupter) |
//! | #14 no type resolved from stored names | [`row14_stored_type_names_resolve_only_through_the_registry`] |
//! | #16 bad inputs at the API edge | [`row16_bad_appends_are_refused_before_any_write`], [`row16_bad_reads_are_answered_or_refused_typed`], [`row16_bad_values_from_handlers_are_refused_before_any_write`] |
//! | #17 snapshot consistency | [`row17_a_corrupt_snapshots_are_ignored`], [`row17_b_a_schema_bump_ignores_old_snapshots`], [`row17_c_cancelled_snapshot_writes_leave_a_consistent_store`], [`row17_d_deleted_snapshots_cost_only_a_replay`] |
//! | #18 saga crash between command and state save | [`row18_a_saga_crash_after_sending_resends_once`], [`row18_a_crash_inside_the_send_resends_once`], [`row18_deadlines_fire_once_across_restarts`], [`row18_a_concurrent_second_saga_runner_is_rejected`] |
//! | #20 load | [`row20_load`] (ignored by default: slow) |
//!
//! Row #3 (multi-stream atomicity) has no generic test: the [`EventStore`] trait offers no
//! multi-stream append. A backend that offers one outside the trait (PostgreSQL's
//! `append_in` inside a caller's transaction) tests it in its own crate.
//!
//! Rows 4-11, 15 and 19 are covered elsewhere (fault injection, process kills, server
//! restarts, projections and leases, hostile strings).

pub mod domain;
mod load;
mod rows_app;
mod rows_decode;
mod rows_parking;
mod rows_saga;
mod rows_snapshot;
mod rows_store;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use interlock_core::{EventId, EventStore, NewEvent, Position, SideStores, StreamId};
use interlock_runtime::processor::RetryPolicy;
use interlock_runtime::{Application, ApplicationBuilder};

pub use load::*;
pub use rows_app::*;
pub use rows_decode::*;
pub use rows_parking::*;
pub use rows_saga::*;
pub use rows_snapshot::*;
pub use rows_store::*;

pub use crate::conformance::WAIT;

/// The store as the application shares it.
pub fn shared<S: EventStore>(store: S) -> Arc<dyn EventStore> {
    Arc::new(store)
}

/// The store's side stores; every backend under test must have them.
pub fn side_of(store: &Arc<dyn EventStore>) -> SideStores {
    store
        .side_stores()
        .expect("the reliability suite needs a store that keeps its own side stores")
}

/// A builder over `store` with the [`Ledger`](domain::Ledger) registered.
pub fn ledger_app(store: &Arc<dyn EventStore>) -> ApplicationBuilder {
    ApplicationBuilder::new()
        .with_shared_event_store(store.clone())
        .register_aggregate::<domain::Ledger>()
}

/// The stream of ledger `id`.
pub fn ledger_stream(id: &str) -> StreamId {
    StreamId::new("Ledger", id).expect("a valid ledger stream")
}

/// A new event with the given type name, schema version and JSON payload (written as given).
pub fn raw_event(event_type: &str, schema_version: u32, payload: &str) -> NewEvent {
    NewEvent {
        event_id: EventId::new(),
        event_type: event_type.to_owned(),
        schema_version,
        payload: Bytes::from(payload.to_owned()),
        correlation_id: None,
        causation_id: None,
        metadata: Default::default(),
    }
}

/// A retry policy that gives up fast: two attempts, a millisecond apart.
pub fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }
}

/// Polls `future` (yielding to the runtime in between, so its I/O progresses) until it finishes
/// or `polls` polls or `budget` have passed, whichever comes first; then drops it. Returns its
/// output when it finished. Dropping a future is how a task is cancelled, so this cancels an
/// operation at a chosen moment, down to a single poll.
pub async fn drop_after<F: Future>(future: F, polls: usize, budget: Duration) -> Option<F::Output> {
    let mut future = pin!(future);
    let started = Instant::now();
    let mut count = 0;
    loop {
        if count >= polls || started.elapsed() >= budget {
            return None;
        }
        count += 1;
        if let Poll::Ready(output) = futures::poll!(future.as_mut()) {
            return Some(output);
        }
        tokio::task::yield_now().await;
    }
}

/// Waits until every background processor of `app` has caught up with the store's head, and
/// the head stopped moving (processors and sagas that append more settle too).
pub async fn settle(app: &Application) {
    let store = app.event_store().clone();
    let deadline = Instant::now() + WAIT;
    loop {
        let head = store.head_position().await.expect("head position");
        tokio::time::timeout(WAIT, app.wait_for(head))
            .await
            .expect("processors catch up in time")
            .expect("processors catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
        if store.head_position().await.expect("head position") == head {
            return;
        }
        assert!(Instant::now() < deadline, "the application never settled");
    }
}

/// Every event of the store, in global order, read in pages.
pub async fn read_everything<S: EventStore + ?Sized>(
    store: &S,
) -> Vec<interlock_core::RecordedEvent> {
    let mut all = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 1000).await.expect("read_all");
        let Some(last) = page.last() else { break };
        after = last.position;
        all.extend(page);
    }
    all
}

/// Runs one reliability test on a fresh multi-threaded runtime (the conformance suite's).
pub use crate::conformance::run;

/// Instantiates every reliability test for a backend. The first argument is an expression
/// evaluating to a future that yields a fresh, empty store (evaluated once per test). The
/// optional `corrupt_payload = path` names an `async fn(store, EventId, Vec<u8>)` that
/// overwrites a stored event's payload bytes behind the store's back; with it, the
/// truncated-JSON test runs too.
///
/// The load test (row #20) is generated with `#[ignore]`: run it with `--include-ignored`
/// (`INTERLOCK_LOAD_COMMANDS` sets the commands per writer; otherwise 10 000, or the
/// backend's `load_commands = N` when it gives a smaller default).
#[macro_export]
macro_rules! reliability_suite {
    ($factory:expr $(, load_commands = $n:expr)? $(,)?) => {
        $crate::reliability_suite!(@all $factory; $($n)?);
    };
    ($factory:expr, corrupt_payload = $corrupt:path $(, load_commands = $n:expr)? $(,)?) => {
        $crate::reliability_suite!(@all $factory; $($n)?);

        #[test]
        fn row13_truncated_json_in_storage_fails_typed() {
            $crate::reliability::run(async {
                let store = $factory.await;
                $crate::reliability::row13_truncated_json_in_storage_fails_typed(store, $corrupt)
                    .await;
            });
        }
    };
    (@all $factory:expr; $($n:expr)?) => {
        $crate::reliability_suite!(@tests $factory;
            row01_fifty_racing_appends_have_one_winner,
            row01_fifty_racing_commands_have_one_winner,
            row12_a_poison_event_parks_its_stream_in_order,
            row02_a_batch_with_an_invalid_fourth_event_stores_nothing,
            row02_a_fourth_event_that_cannot_be_serialized_stores_nothing,
            row02_cancelled_appends_are_all_or_nothing_and_retry_once,
            row13_undecodable_events_fail_typed_and_processors_park,
            row14_stored_type_names_resolve_only_through_the_registry,
            row16_bad_appends_are_refused_before_any_write,
            row16_bad_reads_are_answered_or_refused_typed,
            row16_bad_values_from_handlers_are_refused_before_any_write,
            row17_a_corrupt_snapshots_are_ignored,
            row17_b_a_schema_bump_ignores_old_snapshots,
            row17_c_cancelled_snapshot_writes_leave_a_consistent_store,
            row17_d_deleted_snapshots_cost_only_a_replay,
            row18_a_saga_crash_after_sending_resends_once,
            row18_a_crash_inside_the_send_resends_once,
            row18_deadlines_fire_once_across_restarts,
            row18_a_concurrent_second_saga_runner_is_rejected,
        );

        #[test]
        #[ignore = "slow: CI runs it with --ignored"]
        fn row20_load() {
            $crate::reliability::run(async {
                let store = $factory.await;
                let default_per_writer: usize = 10_000 $(.min($n))?;
                $crate::reliability::row20_load_with(store, default_per_writer).await;
            });
        }
    };
    (@tests $factory:expr; $($test:ident),+ $(,)?) => {
        $(
            #[test]
            fn $test() {
                $crate::reliability::run(async {
                    let store = $factory.await;
                    $crate::reliability::$test(store).await;
                });
            }
        )+
    };
}
