//! Rows checked at the store's API: races, atomic batches, cancellation, bad inputs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use interlock_core::{
    EventId, EventStore, ExpectedVersion, MAX_PAYLOAD_LEN, NewEvent, Position, RecordedEvent,
    StoreError, StreamId, ValidationError,
};
use tokio::sync::Barrier;

use super::{WAIT, drop_after, raw_event, read_everything, shared};
use crate::conformance::{payload_n, test_event, test_events, test_stream};

fn validation<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>) -> ValidationError {
    match result {
        Err(StoreError::Validation(e)) => e,
        other => panic!("{what}: expected a validation error, got {other:?}"),
    }
}

/// What a store holds, to compare before and after refused writes.
async fn fingerprint(store: &Arc<dyn EventStore>) -> (Position, Vec<RecordedEvent>) {
    let head = store.head_position().await.expect("head");
    (head, read_everything(store).await)
}

/// RELIABILITY.md #1, exactly as written: a stream at version 10, 50 tasks that each read its
/// version and, released together by a barrier, append one event expecting 10. Exactly one
/// wins; the 49 others get `ConcurrencyError` naming the stream, expected 10 and actual 11; 11
/// events are stored, without a duplicate version.
pub async fn row01_fifty_racing_appends_have_one_winner<S: EventStore>(store: S) {
    const TASKS: usize = 50;
    let store = shared(store);
    let stream = test_stream("race");
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 10))
        .await
        .expect("setup");
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, stream, barrier) = (store.clone(), stream.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let version = store.stream_version(&stream).await.expect("version");
            assert_eq!(version, 10, "every racer loads version 10");
            barrier.wait().await;
            store
                .append(
                    &stream,
                    ExpectedVersion::Exact(version),
                    vec![test_event(100 + t as u64)],
                )
                .await
        }));
    }
    let (mut winners, mut conflicts) = (Vec::new(), 0);
    for task in tasks {
        let result = tokio::time::timeout(WAIT, task)
            .await
            .expect("racer finished in time")
            .expect("racer did not panic");
        match result {
            Ok(appended) => winners.push(appended),
            Err(StoreError::Concurrency(e)) => {
                assert_eq!(e.stream, stream);
                assert_eq!(e.expected, ExpectedVersion::Exact(10));
                assert_eq!(e.actual, 11, "the loser sees the winner's version");
                let message = e.to_string();
                assert!(
                    message.contains("Test/race") && message.contains("10"),
                    "{message}"
                );
                conflicts += 1;
            }
            Err(other) => panic!("a racer got something else than a conflict: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    assert_eq!(conflicts, TASKS - 1);
    assert_eq!(
        (winners[0].first_version, winners[0].last_version),
        (11, 11)
    );
    let events = store.read_stream(&stream, 1, None).await.expect("read");
    assert_eq!(events.len(), 11);
    let versions: HashSet<u64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions.len(), 11, "no duplicate versions");
    assert_eq!(
        read_everything(&store).await.len(),
        11,
        "nothing else stored"
    );
}

/// RELIABILITY.md #2 at the store: 5 events where the 4th is invalid (bad JSON, an empty type
/// name, schema version 0, a payload over the limit, metadata over the limit, the id of event 1
/// again) are refused with a validation error naming event 4 and the field; nothing of the
/// batch is stored; the next append at the old expected version succeeds.
pub async fn row02_a_batch_with_an_invalid_fourth_event_stores_nothing<S: EventStore>(store: S) {
    let store = shared(store);
    let stream = test_stream("atomic");
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 2))
        .await
        .expect("setup");
    let before = fingerprint(&store).await;

    let oversized = Bytes::from(vec![b' '; MAX_PAYLOAD_LEN + 1]);
    let mut big_metadata = interlock_core::Metadata::new();
    big_metadata.insert("blob".into(), "x".repeat(MAX_PAYLOAD_LEN).into());
    type Spoil = Box<dyn Fn(&mut Vec<NewEvent>)>;
    let cases: Vec<(&str, &str, Spoil)> = vec![
        (
            "bad JSON",
            "payload",
            Box::new(|b| b[3].payload = Bytes::from_static(b"{\"n\": 6, oops")),
        ),
        (
            "NaN is not JSON",
            "payload",
            Box::new(|b| b[3].payload = Bytes::from_static(b"{\"n\": NaN}")),
        ),
        (
            "empty type name",
            "event_type",
            Box::new(|b| b[3].event_type = String::new()),
        ),
        (
            "schema version 0",
            "schema_version",
            Box::new(|b| b[3].schema_version = 0),
        ),
        (
            "payload over the limit",
            "payload",
            Box::new(move |b| b[3].payload = oversized.clone()),
        ),
        (
            "metadata over the limit",
            "metadata",
            Box::new(move |b| b[3].metadata = big_metadata.clone()),
        ),
        (
            "the id of event 1 again",
            "event_id",
            Box::new(|b| b[3].event_id = b[0].event_id),
        ),
    ];
    for (what, field, spoil) in &cases {
        let mut batch = test_events(3, 5);
        spoil(&mut batch);
        let e = validation(
            what,
            store
                .append(&stream, ExpectedVersion::Exact(2), batch)
                .await,
        );
        assert_eq!(e.field(), *field, "{what}: {e}");
        assert!(e.to_string().contains("#4"), "{what}: names event 4: {e}");
        assert_eq!(
            fingerprint(&store).await,
            before,
            "{what}: nothing of the batch is stored"
        );
    }
    let appended = store
        .append(&stream, ExpectedVersion::Exact(2), test_events(3, 5))
        .await
        .expect("the next append at the old expected version succeeds");
    assert_eq!((appended.first_version, appended.last_version), (3, 7));
    let numbers: Vec<u64> = store
        .read_stream(&stream, 1, None)
        .await
        .expect("read")
        .iter()
        .map(|e| payload_n(&e.payload))
        .collect();
    assert_eq!(numbers, (1..=7).collect::<Vec<_>>());
}

/// How one cancelled append ended.
#[derive(Debug, Default)]
struct CancelOutcomes {
    finished: usize,
    dropped_absent: usize,
    dropped_present: usize,
    retried_as_already_appended: usize,
}

/// How many of `ids` the stream holds (each at most once, or the test fails).
async fn present(store: &Arc<dyn EventStore>, stream: &StreamId, ids: &[EventId]) -> usize {
    let events = store.read_stream(stream, 1, None).await.expect("read");
    let stored: Vec<EventId> = events.iter().map(|e| e.event_id).collect();
    let unique: HashSet<&EventId> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "an event id is stored twice");
    ids.iter().filter(|id| unique.contains(id)).count()
}

/// RELIABILITY.md #2, cancellation: a 5-event append is dropped (the task cancelled) at many
/// moments, from before its first poll to past the time an append takes, by poll count and by
/// elapsed time. Each time the batch is fully present or fully absent at once, and a retry with
/// the same event ids at the old expected version ends with exactly one copy (a fresh append
/// or "already appended" with the batch's versions), never a false conflict.
#[allow(clippy::print_stdout)] // how the cancellations fell, shown with --nocapture
pub async fn row02_cancelled_appends_are_all_or_nothing_and_retry_once<S: EventStore>(store: S) {
    let store = shared(store);
    let stream = test_stream("cancelled");
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 1))
        .await
        .expect("setup");
    // How long an append of 5 takes here, to spread the cancellation moments over it.
    let started = Instant::now();
    store
        .append(&stream, ExpectedVersion::Exact(1), test_events(2, 5))
        .await
        .expect("timing append");
    let typical = started.elapsed().max(Duration::from_micros(50));
    let mut version = 6;
    let mut outcomes = CancelOutcomes::default();
    let moments: Vec<(usize, Duration)> = (0..12)
        .map(|polls| (polls, Duration::MAX))
        .chain((0..36).map(|i| (usize::MAX, typical * i / 24)))
        .collect();
    for (attempt, &(polls, budget)) in moments.iter().enumerate() {
        let batch = test_events(1000 * (attempt as u64 + 1), 5);
        let ids: Vec<EventId> = batch.iter().map(|e| e.event_id).collect();
        let finished = drop_after(
            store.append(&stream, ExpectedVersion::Exact(version), batch.clone()),
            polls,
            budget,
        )
        .await;
        let seen = present(&store, &stream, &ids).await;
        assert!(
            seen == 0 || seen == 5,
            "attempt {attempt}: {seen} of 5 events of a cancelled batch are visible"
        );
        match finished {
            Some(result) => {
                let result = result.expect("an append that finished succeeded");
                assert_eq!(result.first_version, version + 1);
                assert_eq!(seen, 5);
                outcomes.finished += 1;
            }
            None if seen == 5 => outcomes.dropped_present += 1,
            None => outcomes.dropped_absent += 1,
        }
        let retry = tokio::time::timeout(
            WAIT,
            store.append(&stream, ExpectedVersion::Exact(version), batch),
        )
        .await
        .expect("the retry finishes in time")
        .unwrap_or_else(|e| {
            panic!("attempt {attempt}: retrying a cancelled append with its ids failed: {e:?}")
        });
        assert_eq!(
            (retry.first_version, retry.last_version),
            (version + 1, version + 5),
            "attempt {attempt}"
        );
        if retry.already_appended {
            outcomes.retried_as_already_appended += 1;
        }
        assert_eq!(present(&store, &stream, &ids).await, 5, "attempt {attempt}");
        version += 5;
        assert_eq!(
            store.stream_version(&stream).await.expect("version"),
            version,
            "attempt {attempt}: exactly one copy"
        );
    }
    // Late commits of dropped appends (a writer thread, a server finishing a commit) must not
    // show up as second copies either.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = store.read_stream(&stream, 1, None).await.expect("read");
    assert_eq!(events.len() as u64, version);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.stream_version == i as u64 + 1),
        "versions stay gapless"
    );
    let all = read_everything(&store).await;
    assert_eq!(all.len() as u64, version, "the global log holds one copy");
    println!("cancelled appends: {outcomes:?} (an append takes about {typical:?} here)");
    assert!(
        outcomes.dropped_absent > 0,
        "some appends were cancelled before they stored anything: {outcomes:?}"
    );
}

/// RELIABILITY.md #16 at the store: huge expected versions (`u64::MAX`, and the largest a
/// signed 64-bit column could not hold after the batch), an empty batch, a payload one byte
/// over [`MAX_PAYLOAD_LEN`], a repeated event id, `NaN` in a payload are refused with a
/// validation error naming the field, before any write: the store is unchanged. (Expected
/// versions are unsigned: a negative one cannot be expressed.) A payload at the limit is
/// either stored intact or refused the same way (a backend whose documents are smaller).
pub async fn row16_bad_appends_are_refused_before_any_write<S: EventStore>(store: S) {
    let store = shared(store);
    let stream = test_stream("edge");
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 3))
        .await
        .expect("setup");
    let before = fingerprint(&store).await;
    let twin = test_event(9);
    let cases: Vec<(&str, &str, ExpectedVersion, Vec<NewEvent>)> = vec![
        (
            "u64::MAX expected",
            "expected_version",
            ExpectedVersion::Exact(u64::MAX),
            vec![test_event(4)],
        ),
        (
            "i64::MAX expected",
            "expected_version",
            ExpectedVersion::Exact(i64::MAX as u64),
            vec![test_event(4)],
        ),
        ("empty batch", "events", ExpectedVersion::Exact(3), vec![]),
        (
            "empty batch, any version",
            "events",
            ExpectedVersion::Any,
            vec![],
        ),
        (
            "payload over the limit",
            "payload",
            ExpectedVersion::Exact(3),
            vec![NewEvent {
                payload: Bytes::from(vec![b' '; MAX_PAYLOAD_LEN + 1]),
                ..test_event(4)
            }],
        ),
        (
            "repeated id",
            "event_id",
            ExpectedVersion::Exact(3),
            vec![twin.clone(), test_event(5), twin],
        ),
        (
            "NaN",
            "payload",
            ExpectedVersion::Exact(3),
            vec![raw_event("TestEvent", 1, "{\"n\": NaN}")],
        ),
        (
            "Infinity",
            "payload",
            ExpectedVersion::Exact(3),
            vec![raw_event("TestEvent", 1, "{\"n\": Infinity}")],
        ),
    ];
    for (what, field, expected, events) in cases {
        let e = validation(what, store.append(&stream, expected, events).await);
        assert_eq!(e.field(), field, "{what}: {e}");
        assert!(!e.reason().is_empty(), "{what}: says why");
        assert_eq!(fingerprint(&store).await, before, "{what}: store unchanged");
    }

    // At the limit exactly: `"` + spaces + `"` is valid JSON of MAX_PAYLOAD_LEN bytes.
    let mut at_limit = vec![b' '; MAX_PAYLOAD_LEN];
    at_limit[0] = b'"';
    at_limit[MAX_PAYLOAD_LEN - 1] = b'"';
    let event = NewEvent {
        payload: Bytes::from(at_limit),
        ..test_event(4)
    };
    match store
        .append(&stream, ExpectedVersion::Exact(3), vec![event.clone()])
        .await
    {
        Ok(appended) => {
            assert_eq!(appended.last_version, 4);
            let read = store.read_stream(&stream, 4, Some(4)).await.expect("read");
            assert_eq!(read[0].payload, event.payload, "stored byte for byte");
        }
        Err(StoreError::Validation(e)) => {
            assert_eq!(e.field(), "payload", "{e}");
            assert_eq!(fingerprint(&store).await, before, "store unchanged");
        }
        Err(other) => panic!("a payload at the limit: {other:?}"),
    }
}

/// RELIABILITY.md #16 on the read side: absurd ranges and limits (`u64::MAX` versions, a zero
/// or `usize::MAX` limit) are answered correctly or refused with a validation error, never a
/// raw driver error, an overflow or an attempt to allocate for the limit.
pub async fn row16_bad_reads_are_answered_or_refused_typed<S: EventStore>(store: S) {
    let store = shared(store);
    let stream = test_stream("reads");
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 3))
        .await
        .expect("setup");
    let ok_or_validation = |what: &str, result: Result<Vec<RecordedEvent>, StoreError>| match result
    {
        Ok(events) => Some(events),
        Err(StoreError::Validation(_)) => None,
        Err(other) => panic!("{what}: a bad read must be answered or refused typed: {other:?}"),
    };
    let all = |events: Option<Vec<RecordedEvent>>| events.map(|e| e.len());
    assert_eq!(
        all(ok_or_validation(
            "from u64::MAX",
            store.read_stream(&stream, u64::MAX, None).await
        ))
        .unwrap_or(0),
        0
    );
    assert_eq!(
        all(ok_or_validation(
            "from u64::MAX to u64::MAX",
            store.read_stream(&stream, u64::MAX, Some(u64::MAX)).await
        ))
        .unwrap_or(0),
        0
    );
    if let Some(n) = all(ok_or_validation(
        "to u64::MAX",
        store.read_stream(&stream, 1, Some(u64::MAX)).await,
    )) {
        assert_eq!(n, 3, "to u64::MAX reads to the end");
    }
    if let Some(n) = all(ok_or_validation(
        "from 0",
        store.read_stream(&stream, 0, None).await,
    )) {
        assert_eq!(n, 3, "from 0 reads from the start");
    }
    assert_eq!(
        all(ok_or_validation(
            "to before from",
            store.read_stream(&stream, 3, Some(1)).await
        ))
        .unwrap_or(0),
        0
    );
    if let Some(n) = all(ok_or_validation(
        "limit usize::MAX",
        store.read_all(Position::START, usize::MAX).await,
    )) {
        assert_eq!(n, 3);
    }
    assert_eq!(
        all(ok_or_validation(
            "limit 0",
            store.read_all(Position::START, 0).await
        ))
        .unwrap_or(0),
        0
    );
    match store.list_streams(None, usize::MAX).await {
        Ok(streams) => assert_eq!(streams.len(), 1),
        Err(StoreError::Validation(_)) => {}
        Err(other) => panic!("list_streams with limit usize::MAX: {other:?}"),
    }
}
