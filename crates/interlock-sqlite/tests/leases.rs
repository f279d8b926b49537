//! Leases in the SQLite file: shared by two stores opened on one file (as two processes would),
//! kept across a reopen, and added to a file written before leases existed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::fresh_store;
use interlock_core::lease::LeaseStore;
use interlock_core::{CheckpointStore, EventStore, Position, StoreError};
use interlock_sqlite::{SCHEMA_VERSION, SqliteEventStore};

#[tokio::test]
async fn two_stores_on_one_file_share_leases_and_fences() {
    let one = fresh_store();
    let two = SqliteEventStore::open(one.path()).unwrap();
    let ttl = Duration::from_millis(60);

    let a = one.acquire("p#0/2", "node-a", ttl).await.unwrap().unwrap();
    assert!(two.acquire("p#0/2", "node-b", ttl).await.unwrap().is_none());
    assert_eq!(two.live_leases("p#").await.unwrap(), vec![a.clone()]);

    tokio::time::sleep(ttl * 3).await;
    let b = two.acquire("p#0/2", "node-b", ttl).await.unwrap().unwrap();
    assert_eq!(b.fence, a.fence + 1);
    match one
        .save_checkpoint_fenced("p#0/2", Position::from_sequence(5), &a)
        .await
    {
        Err(StoreError::Fenced { fence, .. }) => assert_eq!(fence, a.fence),
        other => panic!("expected a fenced write, got {other:?}"),
    }
    assert_eq!(one.load_checkpoint("p#0/2").await.unwrap(), None);
    two.save_checkpoint_fenced("p#0/2", Position::from_sequence(5), &b)
        .await
        .unwrap();
    assert_eq!(
        one.load_checkpoint("p#0/2").await.unwrap(),
        Some(Position::from_sequence(5))
    );
}

#[tokio::test]
async fn leases_survive_a_reopen() {
    let store = fresh_store();
    let ttl = Duration::from_secs(60);
    let a = store
        .acquire("q#0/1", "node-a", ttl)
        .await
        .unwrap()
        .unwrap();
    store.release(&a).await.unwrap();
    let b = store
        .acquire("q#0/1", "node-b", ttl)
        .await
        .unwrap()
        .unwrap();
    let store = store.reopen();
    assert_eq!(store.live_leases("").await.unwrap(), vec![b.clone()]);
    assert!(store.renew(&b, ttl).await.unwrap());
    assert!(!store.renew(&a, ttl).await.unwrap());
    assert!(
        store
            .acquire("q#0/1", "node-c", ttl)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_version_1_file_gets_the_leases_table() {
    let store = fresh_store();
    assert!(store.side_stores().unwrap().leases.is_some());
    let path = store.path();
    // Turn the file back into what version 1 wrote.
    let store = {
        let common::TestStore { store, dir } = store;
        drop(store);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE leases; DELETE FROM schema_version; \
             INSERT INTO schema_version (version, applied_at) VALUES (1, 0);",
        )
        .unwrap();
        drop(conn);
        common::TestStore {
            store: SqliteEventStore::open(&path).unwrap(),
            dir,
        }
    };
    let lease = store
        .acquire("r#0/1", "node-a", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.fence, 1);
    let versions: Vec<i64> = store
        .read_view(|conn| {
            let mut stmt = conn.prepare("SELECT version FROM schema_version ORDER BY version")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
        .unwrap();
    assert_eq!(versions, vec![1, SCHEMA_VERSION]);
}
