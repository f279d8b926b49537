//! The side stores on the same SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use bytes::Bytes;
use chrono::Utc;
use common::{events, fresh_store, stream};
use interlock_core::{
    CheckpointStore, DeadLetterStore, EventStore, ExpectedVersion, IdempotencyClaim,
    IdempotencyStore, NewDeadLetter, Position, SagaStateStore, Snapshot, SnapshotStore, StoreError,
};

fn snapshot(version: u64, body: &str) -> Snapshot {
    Snapshot {
        stream_id: stream("s"),
        version,
        schema_version: 2,
        payload: Bytes::from(body.to_owned()),
        taken_at: Utc::now(),
    }
}

#[tokio::test]
async fn snapshots_keep_the_latest() {
    let s = fresh_store();
    assert!(s.load_snapshot(&stream("s")).await.unwrap().is_none());
    s.save_snapshot(snapshot(100, r#"{"balance":1}"#))
        .await
        .unwrap();
    s.save_snapshot(snapshot(200, r#"{"balance":2}"#))
        .await
        .unwrap();
    // An older snapshot arriving late does not replace the newer one.
    s.save_snapshot(snapshot(150, r#"{"balance":9}"#))
        .await
        .unwrap();
    let got = s.load_snapshot(&stream("s")).await.unwrap().unwrap();
    assert_eq!((got.version, got.schema_version), (200, 2));
    assert_eq!(&got.payload[..], br#"{"balance":2}"#);
    let err = s.save_snapshot(snapshot(300, "{oops")).await.unwrap_err();
    assert!(matches!(err, StoreError::Validation(ref v) if v.field() == "snapshot"));
    let s = s.reopen();
    assert_eq!(
        s.load_snapshot(&stream("s"))
            .await
            .unwrap()
            .unwrap()
            .version,
        200
    );
    assert!(s.delete_snapshot(&stream("s")).await.unwrap());
    assert!(!s.delete_snapshot(&stream("s")).await.unwrap());
    assert!(s.load_snapshot(&stream("s")).await.unwrap().is_none());
}

#[tokio::test]
async fn checkpoints_per_processor() {
    let s = fresh_store();
    assert_eq!(s.load_checkpoint("billing").await.unwrap(), None);
    s.save_checkpoint("billing", Position::from_sequence(5))
        .await
        .unwrap();
    s.save_checkpoint("billing", Position::from_sequence(9))
        .await
        .unwrap();
    s.save_checkpoint("mail", Position::new(u64::MAX, 3))
        .await
        .unwrap();
    assert_eq!(
        s.load_checkpoint("billing").await.unwrap(),
        Some(Position::from_sequence(9))
    );
    assert_eq!(
        s.load_checkpoint("mail").await.unwrap(),
        Some(Position::new(u64::MAX, 3))
    );
    assert!(matches!(
        s.load_checkpoint("").await.unwrap_err(),
        StoreError::Validation(_)
    ));
}

#[tokio::test]
async fn saga_state_with_optimistic_versions() {
    let s = fresh_store();
    assert!(s.load_saga("Transfer", "t1").await.unwrap().is_none());
    let v = s
        .save_saga("Transfer", "t1", 0, Bytes::from_static(b"{\"step\":1}"))
        .await
        .unwrap();
    assert_eq!(v, 1);
    // A second instance trying to create the same saga is rejected.
    let err = s
        .save_saga("Transfer", "t1", 0, Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    match err {
        StoreError::Concurrency(c) => {
            assert_eq!(
                (c.stream.category(), c.stream.id(), c.actual),
                ("Transfer", "t1", 1)
            );
        }
        other => panic!("{other:?}"),
    }
    let v = s
        .save_saga("Transfer", "t1", 1, Bytes::from_static(b"{\"step\":2}"))
        .await
        .unwrap();
    assert_eq!(v, 2);
    assert!(matches!(
        s.save_saga("Transfer", "t1", 1, Bytes::from_static(b"{}"))
            .await
            .unwrap_err(),
        StoreError::Concurrency(_)
    ));
    let got = s.load_saga("Transfer", "t1").await.unwrap().unwrap();
    assert_eq!((got.version, &got.state[..]), (2, &b"{\"step\":2}"[..]));
    assert!(matches!(
        s.delete_saga("Transfer", "t1", 1).await.unwrap_err(),
        StoreError::Concurrency(_)
    ));
    s.delete_saga("Transfer", "t1", 2).await.unwrap();
    assert!(s.load_saga("Transfer", "t1").await.unwrap().is_none());
    assert!(matches!(
        s.save_saga("Transfer", "t2", 0, Bytes::from_static(b"not json"))
            .await
            .unwrap_err(),
        StoreError::Validation(_)
    ));
}

#[tokio::test]
async fn dead_letters_park_list_and_delete_in_order() {
    let s = fresh_store();
    s.append(&stream("a"), ExpectedVersion::Any, events(3))
        .await
        .unwrap();
    let stored = s.read_stream(&stream("a"), 1, None).await.unwrap();
    let id1 = s
        .park(NewDeadLetter::for_event("proj", &stored[1], "boom", 3))
        .await
        .unwrap();
    let id2 = s
        .park(NewDeadLetter::for_event("proj", &stored[2], "held", 0))
        .await
        .unwrap();
    let id3 = s
        .park(NewDeadLetter::for_event(
            "other",
            &stored[0],
            "x".repeat(200_000),
            1,
        ))
        .await
        .unwrap();
    assert!(id1 < id2 && id2 < id3);
    // Parking again updates it in place.
    assert_eq!(
        s.park(NewDeadLetter::for_event(
            "proj",
            &stored[1],
            "boom again",
            5
        ))
        .await
        .unwrap(),
        id1
    );
    let proj = s.list_dead_letters(Some("proj"), None, 10).await.unwrap();
    assert_eq!(proj.len(), 2);
    assert_eq!(
        (proj[0].id, proj[0].attempts, proj[0].error.as_str()),
        (id1, 5, "boom again")
    );
    assert_eq!(proj[0].event_id, stored[1].event_id);
    assert_eq!(proj[0].position, stored[1].position);
    assert_eq!(
        (proj[0].stream_id.clone(), proj[0].stream_version),
        (stream("a"), 2)
    );
    assert_eq!(proj[0].event_type, "Deposited");
    let all = s.list_dead_letters(None, None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].error.len(), 64 * 1024);
    assert_eq!(
        s.list_dead_letters(None, Some(id1), 1).await.unwrap()[0].id,
        id2
    );
    assert!(s.delete_dead_letter(id1).await.unwrap());
    assert!(!s.delete_dead_letter(id1).await.unwrap());
    assert_eq!(
        s.list_dead_letters(Some("proj"), None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_claim_once_and_return_the_original_result() {
    let s = fresh_store();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = s.store.clone();
        tasks.push(tokio::spawn(
            async move { store.claim("req-1").await.unwrap() },
        ));
    }
    let mut new = 0;
    for t in tasks {
        match t.await.unwrap() {
            IdempotencyClaim::New => new += 1,
            IdempotencyClaim::InProgress { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(new, 1);
    s.complete("req-1", Bytes::from_static(b"{\"ok\":1}"))
        .await
        .unwrap();
    s.complete("req-1", Bytes::from_static(b"{\"ok\":2}"))
        .await
        .unwrap();
    assert_eq!(
        s.claim("req-1").await.unwrap(),
        IdempotencyClaim::Completed(Bytes::from_static(b"{\"ok\":1}"))
    );
    assert!(!s.release("req-1").await.unwrap());
    assert_eq!(s.claim("req-2").await.unwrap(), IdempotencyClaim::New);
    assert!(s.release("req-2").await.unwrap());
    assert_eq!(s.claim("req-2").await.unwrap(), IdempotencyClaim::New);
    assert!(matches!(
        s.claim("").await.unwrap_err(),
        StoreError::Validation(_)
    ));
}

#[tokio::test]
async fn the_event_store_hands_out_its_side_stores() {
    let s = fresh_store();
    let side = s.side_stores().expect("sqlite keeps its side tables");
    side.checkpoints
        .save_checkpoint("p", Position::from_sequence(3))
        .await
        .unwrap();
    // Same file: visible through the store itself.
    assert_eq!(
        s.load_checkpoint("p").await.unwrap(),
        Some(Position::from_sequence(3))
    );
}
