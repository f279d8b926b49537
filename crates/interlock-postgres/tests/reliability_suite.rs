//! The reliability suite of `interlock-testing` (the rows of RELIABILITY.md that every backend
//! runs), against a fresh schema per test. Truncated bytes are written into a stored event's
//! payload with plain SQL, behind the store's back. (Row 3, the multi-stream append this
//! backend offers through `append_in`, is in `multi_stream.rs`.)
//!
//! Needs the server at `INTERLOCK_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! without one this binary prints a notice and exits successfully, unless
//! `INTERLOCK_REQUIRE_PG=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use interlock_core::EventId;
use interlock_postgres::PgEventStore;

/// Overwrites the payload of one stored event with raw bytes (`bytea`: any bytes fit).
async fn corrupt(store: PgEventStore, event: EventId, payload: Vec<u8>) {
    let sql = format!(
        "UPDATE \"{}\".events SET payload = $1 WHERE event_id = $2",
        store.schema()
    );
    let done = sqlx_core::query::query(&sql)
        .bind(payload)
        .bind(event.as_uuid())
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1, "one event corrupted");
}

// The load test (row #20) in CI: 8 x 1 000 commands (debug build); INTERLOCK_LOAD_COMMANDS=10000
// gives the 80 000-command figure of the README.
interlock_testing::reliability_suite!(
    common::store_or_exit(),
    corrupt_payload = corrupt,
    load_commands = 1000,
);
