use bytes::Bytes;
use interlock_core::{
    ConcurrencyError, EventStore, ExpectedVersion, Position, StoreError, ValidationError,
};
use uuid::Uuid;

use super::{payload_n, test_event, test_events, test_stream};

/// Appending assigns versions 1..n and increasing positions, and keeps every envelope field.
pub async fn append_assigns_versions_positions_and_keeps_the_envelope<S: EventStore>(store: S) {
    let stream = test_stream("envelope");
    let correlation = Uuid::now_v7();
    let causation = Uuid::now_v7();
    let mut metadata = interlock_core::Metadata::new();
    metadata.insert(
        "user".into(),
        serde_json::json!({"name": "ada", "roles": [1, 2]}),
    );
    let events: Vec<_> = test_events(1, 3)
        .into_iter()
        .map(|e| {
            e.with_context(Some(correlation), Some(causation))
                .with_metadata(metadata.clone())
        })
        .collect();
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let result = store
        .append(&stream, ExpectedVersion::NoStream, events.clone())
        .await
        .expect("first append");
    assert_eq!((result.first_version, result.last_version), (1, 3));
    assert!(!result.already_appended);
    assert!(result.first_position > Position::START);
    assert!(result.first_position < result.last_position);

    let read = store.read_stream(&stream, 1, None).await.expect("read");
    assert_eq!(read.len(), 3);
    for (i, (sent, got)) in events.iter().zip(&read).enumerate() {
        assert_eq!(got.event_id, sent.event_id, "event id of #{i}");
        assert_eq!(got.stream_id, stream);
        assert_eq!(got.stream_version, i as u64 + 1);
        assert_eq!(got.event_type, "TestEvent");
        assert_eq!(got.schema_version, 1);
        assert_eq!(got.payload, sent.payload);
        assert_eq!(got.correlation_id, Some(correlation));
        assert_eq!(got.causation_id, Some(causation));
        assert_eq!(got.metadata, metadata);
        assert!(got.recorded_at > before, "recorded_at {}", got.recorded_at);
    }
    assert_eq!(read[0].position, result.first_position);
    assert_eq!(read[2].position, result.last_position);
    assert!(read.windows(2).all(|w| w[0].position < w[1].position));

    let next = store
        .append(&stream, ExpectedVersion::Exact(3), vec![test_event(4)])
        .await
        .expect("second append");
    assert_eq!((next.first_version, next.last_version), (4, 4));
    assert!(next.first_position > result.last_position);
    assert_eq!(store.stream_version(&stream).await.expect("version"), 4);
}

/// Each expectation is checked, and a conflict names stream, expectation and actual version.
pub async fn expected_version_is_checked<S: EventStore>(store: S) {
    let stream = test_stream("expected");
    let conflict = |r: Result<_, StoreError>| match r {
        Err(StoreError::Concurrency(e)) => e,
        other => panic!("expected a concurrency error, got {other:?}"),
    };

    let e = conflict(
        store
            .append(&stream, ExpectedVersion::StreamExists, vec![test_event(0)])
            .await,
    );
    assert_eq!(e.actual, 0);
    let e = conflict(
        store
            .append(&stream, ExpectedVersion::Exact(1), vec![test_event(0)])
            .await,
    );
    assert_eq!((e.expected, e.actual), (ExpectedVersion::Exact(1), 0));

    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 2))
        .await
        .expect("create");
    let e = conflict(
        store
            .append(&stream, ExpectedVersion::NoStream, vec![test_event(0)])
            .await,
    );
    assert_eq!(
        e,
        ConcurrencyError {
            stream: stream.clone(),
            expected: ExpectedVersion::NoStream,
            actual: 2
        }
    );
    let message = e.to_string();
    assert!(
        message.contains("Test/expected") && message.contains('2'),
        "{message}"
    );
    let e = conflict(
        store
            .append(&stream, ExpectedVersion::Exact(1), vec![test_event(0)])
            .await,
    );
    assert_eq!((e.expected, e.actual), (ExpectedVersion::Exact(1), 2));

    store
        .append(&stream, ExpectedVersion::Exact(2), vec![test_event(3)])
        .await
        .expect("exact");
    store
        .append(&stream, ExpectedVersion::StreamExists, vec![test_event(4)])
        .await
        .expect("exists");
    store
        .append(&stream, ExpectedVersion::Any, vec![test_event(5)])
        .await
        .expect("any");
    store
        .append(
            &test_stream("fresh"),
            ExpectedVersion::Any,
            vec![test_event(1)],
        )
        .await
        .expect("any on a new stream");
    let numbers: Vec<u64> = store
        .read_stream(&stream, 1, None)
        .await
        .expect("read")
        .iter()
        .map(|e| payload_n(&e.payload))
        .collect();
    assert_eq!(
        numbers,
        vec![1, 2, 3, 4, 5],
        "rejected appends left nothing behind"
    );
}

fn validation<T: std::fmt::Debug>(result: Result<T, StoreError>) -> ValidationError {
    match result {
        Err(StoreError::Validation(e)) => e,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// A batch whose 4th event is invalid stores nothing, names event 4, and does not disturb the
/// next append at the same expected version.
pub async fn a_batch_with_a_bad_event_stores_nothing<S: EventStore>(store: S) {
    let stream = test_stream("atomic");
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 2))
        .await
        .expect("setup");
    let head = store.head_position().await.expect("head");

    let mut batch = test_events(3, 5);
    batch[3].payload = Bytes::from_static(b"{\"n\": 6, oops");
    let e = validation(
        store
            .append(&stream, ExpectedVersion::Exact(2), batch)
            .await,
    );
    assert_eq!(e.field(), "payload");
    assert!(e.to_string().contains("#4"), "error names the event: {e}");

    let mut batch = test_events(3, 5);
    batch[3].event_type = String::new();
    let e = validation(
        store
            .append(&stream, ExpectedVersion::Exact(2), batch)
            .await,
    );
    assert_eq!(e.field(), "event_type");

    let mut batch = test_events(3, 5);
    batch[3].schema_version = 0;
    let e = validation(
        store
            .append(&stream, ExpectedVersion::Exact(2), batch)
            .await,
    );
    assert_eq!(e.field(), "schema_version");

    assert_eq!(store.stream_version(&stream).await.expect("version"), 2);
    assert_eq!(store.head_position().await.expect("head"), head);
    store
        .append(&stream, ExpectedVersion::Exact(2), test_events(3, 5))
        .await
        .expect("the same append, valid, succeeds");
    assert_eq!(store.stream_version(&stream).await.expect("version"), 7);
}

/// Empty batches, repeated ids and absurd expected versions are refused before any write.
pub async fn empty_batches_and_repeated_ids_are_refused<S: EventStore>(store: S) {
    let stream = test_stream("refused");
    let e = validation(store.append(&stream, ExpectedVersion::Any, vec![]).await);
    assert_eq!(e.field(), "events");

    let twin = test_event(1);
    let batch = vec![twin.clone(), test_event(2), twin];
    let e = validation(store.append(&stream, ExpectedVersion::Any, batch).await);
    assert_eq!(e.field(), "event_id");
    assert!(e.to_string().contains("#3"), "{e}");

    let e = validation(
        store
            .append(
                &stream,
                ExpectedVersion::Exact(u64::MAX),
                vec![test_event(1)],
            )
            .await,
    );
    assert_eq!(e.field(), "expected_version");

    assert_eq!(store.stream_version(&stream).await.expect("version"), 0);
    assert_eq!(store.head_position().await.expect("head"), Position::START);
}

/// Re-sending a batch whose ids are stored returns the original result and stores nothing,
/// whatever the expected version says (a retry after a lost acknowledgement).
pub async fn reappending_the_same_batch_is_idempotent<S: EventStore>(store: S) {
    let stream = test_stream("idempotent");
    let batch = test_events(1, 3);
    let first = store
        .append(&stream, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("first");
    store
        .append(&stream, ExpectedVersion::Exact(3), vec![test_event(4)])
        .await
        .expect("another writer");

    let again = store
        .append(&stream, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("retry is not an error");
    assert!(again.already_appended);
    assert_eq!(
        (
            again.first_version,
            again.last_version,
            again.first_position,
            again.last_position
        ),
        (
            first.first_version,
            first.last_version,
            first.first_position,
            first.last_position
        )
    );
    let again = store
        .append(&stream, ExpectedVersion::Any, batch[1..].to_vec())
        .await
        .expect("a suffix of the batch is a retry too");
    assert!(again.already_appended);
    assert_eq!(again.first_version, 2);
    assert_eq!(store.stream_version(&stream).await.expect("version"), 4);
    assert_eq!(
        store
            .read_all(Position::START, 100)
            .await
            .expect("all")
            .len(),
        4
    );
}

/// An id already stored with other content, in another stream, or mixed with new ids is a
/// typed conflict, never a silent success and never a false concurrency error.
pub async fn reusing_an_event_id_for_other_content_is_refused<S: EventStore>(store: S) {
    let stream = test_stream("dup");
    let original = test_event(1);
    store
        .append(&stream, ExpectedVersion::NoStream, vec![original.clone()])
        .await
        .expect("setup");

    let mut changed = original.clone();
    changed.payload = Bytes::from_static(b"{\"n\":2}");
    let duplicate = |r: Result<_, StoreError>| match r {
        Err(StoreError::DuplicateEventId { event_id, .. }) => event_id,
        other => panic!("expected DuplicateEventId, got {other:?}"),
    };
    assert_eq!(
        duplicate(
            store
                .append(&stream, ExpectedVersion::Any, vec![changed])
                .await
        ),
        original.event_id
    );
    assert_eq!(
        duplicate(
            store
                .append(
                    &test_stream("other"),
                    ExpectedVersion::Any,
                    vec![original.clone()]
                )
                .await
        ),
        original.event_id
    );
    assert_eq!(
        duplicate(
            store
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    vec![original.clone(), test_event(9)]
                )
                .await
        ),
        original.event_id
    );
    assert_eq!(store.stream_version(&stream).await.expect("version"), 1);
    assert_eq!(
        store
            .stream_version(&test_stream("other"))
            .await
            .expect("version"),
        0
    );
}

/// 10 000 events in one append are stored in order, all or nothing.
pub async fn large_batches_are_atomic<S: EventStore>(store: S) {
    let stream = test_stream("large");
    let result = store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 10_000))
        .await
        .expect("10k events");
    assert_eq!(result.last_version, 10_000);
    let read = store.read_stream(&stream, 1, None).await.expect("read");
    assert_eq!(read.len(), 10_000);
    assert!(read.iter().enumerate().all(|(i, e)| e.stream_version == i as u64 + 1
        && payload_n(&e.payload) == i as u64 + 1));

    let mut bad = test_events(10_001, 10_000);
    bad[9_999].payload = Bytes::from_static(b"not json");
    let e = validation(
        store
            .append(&stream, ExpectedVersion::Exact(10_000), bad)
            .await,
    );
    assert!(e.to_string().contains("#10000"), "{e}");
    assert_eq!(
        store.stream_version(&stream).await.expect("version"),
        10_000
    );
}

/// A migration rewrite changes an event's type, version and payload in place, keeping its id,
/// version and position; a wrong stream or a bad payload is refused and changes nothing.
pub async fn rewriting_an_event_keeps_its_place<S: EventStore>(store: S) {
    use interlock_core::EventRewrite;
    let stream = test_stream("rewrite");
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 3))
        .await
        .expect("setup");
    let before = store.read_stream(&stream, 1, None).await.expect("read");
    let target = &before[1];
    let rewrite = EventRewrite {
        event_id: target.event_id,
        stream_id: stream.clone(),
        event_type: "TestEventV2".into(),
        schema_version: 2,
        payload: Bytes::from_static(b"{\"n\":2,\"migrated\":true}"),
    };
    let wrong_stream = EventRewrite {
        stream_id: test_stream("elsewhere"),
        ..rewrite.clone()
    };
    let e = validation(store.rewrite_event(wrong_stream).await);
    assert_eq!(e.field(), "event_id");
    let bad_payload = EventRewrite {
        payload: Bytes::from_static(b"{oops"),
        ..rewrite.clone()
    };
    let e = validation(store.rewrite_event(bad_payload).await);
    assert_eq!(e.field(), "payload");
    assert_eq!(
        store.read_stream(&stream, 1, None).await.expect("read"),
        before
    );

    store.rewrite_event(rewrite).await.expect("rewrite");
    let after = store.read_stream(&stream, 1, None).await.expect("read");
    assert_eq!(after[0], before[0]);
    assert_eq!(after[2], before[2]);
    let changed = &after[1];
    assert_eq!(
        (changed.event_type.as_str(), changed.schema_version),
        ("TestEventV2", 2)
    );
    assert_eq!(&changed.payload[..], b"{\"n\":2,\"migrated\":true}");
    assert_eq!(
        (
            changed.event_id,
            changed.stream_version,
            changed.position,
            changed.recorded_at
        ),
        (
            target.event_id,
            target.stream_version,
            target.position,
            target.recorded_at
        )
    );
    let all = store.read_all(Position::START, 10).await.expect("all");
    assert_eq!(all[1].event_type, "TestEventV2");
}
