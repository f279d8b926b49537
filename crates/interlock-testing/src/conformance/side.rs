use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use interlock_core::side::{
    CheckpointStore, DeadLetterStore, IdempotencyClaim, IdempotencyStore, NewDeadLetter,
    SagaStateStore, Snapshot, SnapshotStore,
};
use interlock_core::{EventId, Position, StoreError, StreamId};
use tokio::sync::Barrier;

use super::WAIT;

fn snapshot(stream: &StreamId, version: u64, payload: &'static str) -> Snapshot {
    Snapshot {
        stream_id: stream.clone(),
        version,
        schema_version: 1,
        payload: Bytes::from_static(payload.as_bytes()),
        taken_at: Utc::now(),
    }
}

/// Snapshots: the latest one wins, an older one never replaces a newer one, bad JSON is refused.
pub async fn snapshots_keep_the_latest<S: SnapshotStore>(store: S) {
    let stream = StreamId::new("Snap", "1").expect("stream");
    assert!(store.load_snapshot(&stream).await.expect("load").is_none());
    store
        .save_snapshot(snapshot(&stream, 100, r#"{"total":100}"#))
        .await
        .expect("save");
    store
        .save_snapshot(snapshot(&stream, 200, r#"{"total":200}"#))
        .await
        .expect("save newer");
    store
        .save_snapshot(snapshot(&stream, 150, r#"{"total":150}"#))
        .await
        .expect("a late, older snapshot is accepted but ignored");
    let loaded = store
        .load_snapshot(&stream)
        .await
        .expect("load")
        .expect("present");
    assert_eq!(
        (loaded.version, &loaded.payload[..]),
        (200, &br#"{"total":200}"#[..])
    );
    assert_eq!(loaded.schema_version, 1);

    match store.save_snapshot(snapshot(&stream, 300, "{broken")).await {
        Err(StoreError::Validation(e)) => assert_eq!(e.field(), "snapshot"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert!(store.delete_snapshot(&stream).await.expect("delete"));
    assert!(!store.delete_snapshot(&stream).await.expect("delete again"));
    assert!(store.load_snapshot(&stream).await.expect("load").is_none());
}

/// Checkpoints: absent until saved, replaced on save, names validated.
pub async fn checkpoints_are_saved_per_processor<S: CheckpointStore>(store: S) {
    assert_eq!(store.load_checkpoint("billing").await.expect("load"), None);
    store
        .save_checkpoint("billing", Position::from_sequence(7))
        .await
        .expect("save");
    store
        .save_checkpoint("billing", Position::new(3, 9))
        .await
        .expect("replace");
    store
        .save_checkpoint("emails", Position::from_sequence(1))
        .await
        .expect("other");
    assert_eq!(
        store.load_checkpoint("billing").await.expect("load"),
        Some(Position::new(3, 9))
    );
    assert_eq!(
        store.load_checkpoint("emails").await.expect("load"),
        Some(Position::from_sequence(1))
    );
    match store.save_checkpoint("", Position::START).await {
        Err(StoreError::Validation(e)) => assert_eq!(e.field(), "processor"),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// Saga state: created at expected version 0, updated with optimistic versions, deleted.
pub async fn saga_state_uses_optimistic_versions<S: SagaStateStore>(store: S) {
    assert!(
        store
            .load_saga("Transfer", "t1")
            .await
            .expect("load")
            .is_none()
    );
    let v1 = store
        .save_saga("Transfer", "t1", 0, Bytes::from_static(b"{\"step\":1}"))
        .await
        .expect("create");
    assert_eq!(v1, 1);
    match store
        .save_saga("Transfer", "t1", 0, Bytes::from_static(b"{\"step\":9}"))
        .await
    {
        Err(StoreError::Concurrency(e)) => assert_eq!(e.actual, 1),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let v2 = store
        .save_saga("Transfer", "t1", 1, Bytes::from_static(b"{\"step\":2}"))
        .await
        .expect("update");
    assert_eq!(v2, 2);
    let state = store
        .load_saga("Transfer", "t1")
        .await
        .expect("load")
        .expect("present");
    assert_eq!((state.version, &state.state[..]), (2, &b"{\"step\":2}"[..]));
    assert!(
        store
            .load_saga("Other", "t1")
            .await
            .expect("load")
            .is_none()
    );
    assert!(store.delete_saga("Transfer", "t1", 1).await.is_err());
    store
        .delete_saga("Transfer", "t1", 2)
        .await
        .expect("delete");
    assert!(
        store
            .load_saga("Transfer", "t1")
            .await
            .expect("load")
            .is_none()
    );
}

fn letter(processor: &str, n: u64) -> NewDeadLetter {
    NewDeadLetter {
        processor: processor.to_owned(),
        position: Position::from_sequence(n),
        event_id: EventId::new(),
        stream_id: StreamId::new("S", n.to_string()).expect("stream"),
        stream_version: n,
        event_type: "Poison".to_owned(),
        error: format!("failure {n}"),
        attempts: 3,
    }
}

/// Dead letters: parked in order, re-parking updates in place, listed per processor, deleted.
pub async fn dead_letters_are_parked_in_order<S: DeadLetterStore>(store: S) {
    let first = letter("billing", 1);
    let a = store.park(first.clone()).await.expect("park");
    let b = store.park(letter("emails", 2)).await.expect("park");
    let c = store.park(letter("billing", 3)).await.expect("park");
    assert!(a < b && b < c, "ids increase in parking order");

    let again = NewDeadLetter {
        error: "still failing".into(),
        attempts: 6,
        ..first
    };
    assert_eq!(
        store.park(again).await.expect("re-park"),
        a,
        "same event keeps its id"
    );

    let billing = store
        .list_dead_letters(Some("billing"), None, 10)
        .await
        .expect("list");
    assert_eq!(billing.iter().map(|d| d.id).collect::<Vec<_>>(), vec![a, c]);
    assert_eq!(
        (billing[0].error.as_str(), billing[0].attempts),
        ("still failing", 6)
    );
    assert_eq!(billing[1].stream_version, 3);
    let all = store
        .list_dead_letters(None, None, 10)
        .await
        .expect("list all");
    assert_eq!(all.len(), 3);
    let page = store
        .list_dead_letters(None, Some(a), 1)
        .await
        .expect("page");
    assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), vec![b]);

    assert!(store.delete_dead_letter(a).await.expect("delete"));
    assert!(!store.delete_dead_letter(a).await.expect("delete again"));
    assert_eq!(
        store
            .list_dead_letters(None, None, 10)
            .await
            .expect("list")
            .len(),
        2
    );
}

/// Idempotency keys: exactly one of many racing claims wins; the result is kept; release frees
/// a pending claim only.
pub async fn idempotency_claims_have_one_winner<S: IdempotencyStore>(store: S) {
    const RACERS: usize = 16;
    let store = Arc::new(store);
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let (store, barrier) = (store.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.claim("order-42").await.expect("claim")
        }));
    }
    let mut new = 0;
    for task in tasks {
        let claim = tokio::time::timeout(WAIT, task)
            .await
            .expect("in time")
            .expect("task");
        match claim {
            IdempotencyClaim::New => new += 1,
            IdempotencyClaim::InProgress { .. } => {}
            other => panic!("unexpected claim {other:?}"),
        }
    }
    assert_eq!(new, 1, "exactly one claimant");

    store
        .complete("order-42", Bytes::from_static(b"{\"ok\":1}"))
        .await
        .expect("complete");
    assert_eq!(
        store.claim("order-42").await.expect("claim"),
        IdempotencyClaim::Completed(Bytes::from_static(b"{\"ok\":1}"))
    );
    assert!(!store.release("order-42").await.expect("release completed"));

    assert_eq!(
        store.claim("order-43").await.expect("claim"),
        IdempotencyClaim::New
    );
    assert!(store.release("order-43").await.expect("release"));
    assert_eq!(
        store.claim("order-43").await.expect("claim"),
        IdempotencyClaim::New
    );
}
