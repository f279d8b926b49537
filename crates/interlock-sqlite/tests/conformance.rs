//! The shared store conformance suite of `interlock-testing`, instantiated for SQLite files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use interlock_sqlite::SqliteEventStore;

/// A store on a fresh file. The suite takes the store by value, so the directory is kept (under
/// cargo's per-target temporary directory, which `cargo clean` removes) rather than deleted.
async fn fresh_store() -> SqliteEventStore {
    let dir = tempfile::Builder::new()
        .prefix("interlock-sqlite-conformance")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
        .keep();
    SqliteEventStore::open(dir.join("events.db")).unwrap()
}

mod event_store {
    interlock_testing::event_store_conformance!(super::fresh_store());
}

mod side_stores {
    interlock_testing::side_store_conformance!(super::fresh_store());
}
