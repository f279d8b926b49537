//! The reliability suite of `interlock-testing` (the rows of RELIABILITY.md that every backend
//! runs), on SQLite files. Truncated bytes are written into a stored event's payload with plain
//! SQL on a second connection, behind the store's back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use interlock_core::EventId;
use interlock_sqlite::SqliteEventStore;

/// A store on a fresh file. The suite takes the store by value, so the directory is kept (under
/// cargo's per-target temporary directory, which `cargo clean` removes) rather than deleted.
async fn fresh_store() -> SqliteEventStore {
    let dir = tempfile::Builder::new()
        .prefix("interlock-sqlite-reliability")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
        .keep();
    SqliteEventStore::open(dir.join("events.db")).unwrap()
}

/// Overwrites the payload of one stored event with raw bytes.
async fn corrupt(store: SqliteEventStore, event: EventId, payload: Vec<u8>) {
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let changed = conn
        .execute(
            "UPDATE events SET payload = ?1 WHERE event_id = ?2",
            (payload, &event.as_uuid().as_bytes()[..]),
        )
        .unwrap();
    assert_eq!(changed, 1, "one event corrupted");
}

// The load test (row #20) in CI: 8 x 2 000 commands; INTERLOCK_LOAD_COMMANDS=10000 gives the
// 80 000-command figure of the README.
interlock_testing::reliability_suite!(
    fresh_store(),
    corrupt_payload = corrupt,
    load_commands = 2000,
);
