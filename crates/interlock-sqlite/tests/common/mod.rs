//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::ops::Deref;
use std::path::PathBuf;

use bytes::Bytes;
use interlock_core::{EventId, NewEvent, SerializedEvent, StreamId};
use interlock_sqlite::SqliteEventStore;
use tempfile::TempDir;

/// A store on a fresh file in its own temporary directory, removed when dropped.
pub struct TestStore {
    pub store: SqliteEventStore,
    pub dir: TempDir,
}

impl TestStore {
    pub fn path(&self) -> PathBuf {
        self.store.path_buf()
    }

    /// Closes the store (waiting for its threads) and opens the same file again.
    pub fn reopen(self) -> TestStore {
        let TestStore { store, dir } = self;
        let path = store.path_buf();
        drop(store);
        TestStore {
            store: SqliteEventStore::open(&path).unwrap(),
            dir,
        }
    }
}

impl Deref for TestStore {
    type Target = SqliteEventStore;
    fn deref(&self) -> &SqliteEventStore {
        &self.store
    }
}

/// The store the conformance suite will be instantiated with.
pub fn fresh_store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path().join("events.db")).unwrap();
    TestStore { store, dir }
}

pub fn stream(id: &str) -> StreamId {
    StreamId::new("Account", id).unwrap()
}

pub fn event(ty: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent::from_serialized(SerializedEvent {
        event_type: ty.to_owned(),
        schema_version: 1,
        payload: Bytes::from(serde_json::to_vec(&payload).unwrap()),
    })
}

pub fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| event("Deposited", serde_json::json!({ "n": i })))
        .collect()
}

pub fn with_id(e: NewEvent, id: EventId) -> NewEvent {
    e.with_event_id(id)
}
