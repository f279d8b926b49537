//! RELIABILITY.md #3 on PostgreSQL, the one backend whose API offers a multi-stream append:
//! two `append_in` calls in one transaction of the caller's, the second with a stale expected
//! version. Neither stream changes, the error names the stale stream, and the first stream's
//! events never reach the global log or a subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use futures::StreamExt;
use interlock_core::{EventStore, ExpectedVersion, Position, StoreError, StreamId};
use interlock_testing::conformance::{test_events, test_stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_stream_rolls_back_the_whole_multi_stream_append() {
    let Some(store) = common::store().await else {
        return;
    };
    let (a, b): (StreamId, StreamId) = (test_stream("A"), test_stream("B"));
    store
        .append(&a, ExpectedVersion::NoStream, test_events(0, 2))
        .await
        .unwrap();
    store
        .append(&b, ExpectedVersion::NoStream, test_events(10, 3))
        .await
        .unwrap();
    let head = store.head_position().await.unwrap();
    let mut live = store.subscribe_all(head);

    let mut tx = store.pool().begin().await.unwrap();
    store
        .append_in(&mut tx, &a, ExpectedVersion::Exact(2), test_events(2, 2))
        .await
        .expect("A is at the expected version");
    let err = store
        .append_in(&mut tx, &b, ExpectedVersion::Exact(2), test_events(13, 1))
        .await
        .expect_err("B is at 3, not 2");
    match &err {
        StoreError::Concurrency(c) => {
            assert_eq!(c.stream, b, "the error names B");
            assert_eq!((c.expected, c.actual), (ExpectedVersion::Exact(2), 3));
        }
        other => panic!("expected a concurrency error on B, got {other:?}"),
    }
    // The caller gives up on the whole unit of work.
    tx.rollback().await.unwrap();

    assert_eq!(store.stream_version(&a).await.unwrap(), 2, "A unchanged");
    assert_eq!(store.stream_version(&b).await.unwrap(), 3, "B unchanged");
    assert_eq!(store.head_position().await.unwrap(), head);
    assert!(
        store.read_all(head, 100).await.unwrap().is_empty(),
        "nothing reached the global log"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), live.next())
            .await
            .is_err(),
        "no subscriber saw A's rolled-back events"
    );
    // The next append at the old versions succeeds.
    store
        .append(&a, ExpectedVersion::Exact(2), test_events(2, 1))
        .await
        .unwrap();
    let next = live.next().await.unwrap().unwrap();
    assert_eq!((next.stream_id, next.stream_version), (a, 3));
    assert!(next.position > head && head > Position::START);
    common::drop_schema(&store).await;
}
