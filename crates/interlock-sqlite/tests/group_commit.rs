//! Group commit: queued appends share one transaction, yet each succeeds or fails on its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::{events, fresh_store, stream};
use interlock_core::{EventStore, ExpectedVersion, Position, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_append_in_a_group_does_not_fail_the_others() {
    let s = fresh_store();
    let taken = events(1);
    s.append(&stream("existing"), ExpectedVersion::Any, taken.clone())
        .await
        .unwrap();
    let retried = events(2);
    let original = s
        .append(&stream("retry"), ExpectedVersion::Any, retried.clone())
        .await
        .unwrap();

    // Another connection holds the write lock, so the writer stalls on its first job and the
    // rest queue up behind it: they must then commit as ONE group.
    let blocker = rusqlite::Connection::open(s.path()).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let store = s.store.clone();
    let first = tokio::spawn(async move {
        store
            .append(&stream("first"), ExpectedVersion::Any, events(1))
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = s.writer_stats();

    let mut good = Vec::new();
    for i in 0..10 {
        let store = s.store.clone();
        good.push(tokio::spawn(async move {
            store
                .append(
                    &stream(&format!("good{i}")),
                    ExpectedVersion::NoStream,
                    events(3),
                )
                .await
        }));
    }
    let store = s.store.clone();
    let conflict = tokio::spawn(async move {
        store
            .append(&stream("existing"), ExpectedVersion::NoStream, events(2))
            .await
    });
    let store = s.store.clone();
    let mut dup_batch = events(3);
    dup_batch[2] = dup_batch[2].clone().with_event_id(taken[0].event_id);
    let duplicate = tokio::spawn(async move {
        store
            .append(&stream("dup"), ExpectedVersion::Any, dup_batch)
            .await
    });
    let store = s.store.clone();
    let retry = tokio::spawn(async move {
        store
            .append(&stream("retry"), ExpectedVersion::NoStream, retried)
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    blocker.execute_batch("ROLLBACK").unwrap();

    first.await.unwrap().unwrap();
    for g in good {
        assert_eq!(g.await.unwrap().unwrap().last_version, 3);
    }
    assert!(
        matches!(conflict.await.unwrap(), Err(StoreError::Concurrency(ref c)) if c.actual == 1)
    );
    assert!(matches!(
        duplicate.await.unwrap(),
        Err(StoreError::DuplicateEventId { .. })
    ));
    let again = retry.await.unwrap().unwrap();
    assert!(again.already_appended);
    assert_eq!(again.first_position, original.first_position);

    let after = s.writer_stats();
    assert_eq!(
        after.transactions - before.transactions,
        2,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.writes - before.writes, 1 + 13);

    // Exactly what succeeded is stored; the failed ones left nothing, and positions are dense
    // from a reader's point of view.
    assert_eq!(s.stream_version(&stream("dup")).await.unwrap(), 0);
    assert_eq!(s.stream_version(&stream("existing")).await.unwrap(), 1);
    let all = s.read_all(Position::START, 1000).await.unwrap();
    assert_eq!(all.len(), 1 + 2 + 1 + 30);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_producers_share_transactions() {
    let s = fresh_store();
    let mut tasks = Vec::new();
    for p in 0..32 {
        let store = s.store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                store
                    .append(&stream(&format!("p{p}")), ExpectedVersion::Any, events(1))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = s.writer_stats();
    assert_eq!(stats.writes, 640);
    assert!(
        stats.transactions < stats.writes,
        "no batching at all: {stats:?}"
    );
    assert_eq!(
        s.read_all(Position::START, 10_000).await.unwrap().len(),
        640
    );
}

#[tokio::test]
async fn a_cancelled_append_is_resolved_by_an_idempotent_retry() {
    let s = fresh_store();
    let batch = events(4);
    let a = stream("a");
    // Poll the append once (it is queued), then drop it: its outcome is unknown to the caller.
    {
        let fut = s.append(&a, ExpectedVersion::NoStream, batch.clone());
        let _ = tokio::time::timeout(Duration::from_micros(1), fut).await;
    }
    let r = s
        .append(&a, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!((r.first_version, r.last_version), (1, 4));
    assert_eq!(s.read_stream(&a, 1, None).await.unwrap().len(), 4);
}
