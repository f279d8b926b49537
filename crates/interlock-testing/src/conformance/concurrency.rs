use std::collections::HashSet;
use std::sync::Arc;

use interlock_core::{EventStore, ExpectedVersion, Position, StoreError};
use tokio::sync::Barrier;

use super::{WAIT, payload_n, test_event, test_events, test_stream};

/// 50 tasks load a stream at version 10 and each append one event expecting 10, released
/// together: exactly one wins, 49 get a conflict naming expected 10 and actual 11.
pub async fn racing_writers_on_one_stream_have_exactly_one_winner<S: EventStore>(store: S) {
    const TASKS: usize = 50;
    let store = Arc::new(store);
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
            barrier.wait().await;
            store
                .append(
                    &stream,
                    ExpectedVersion::Exact(version),
                    vec![test_event(1000 + t as u64)],
                )
                .await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        let result = tokio::time::timeout(WAIT, task)
            .await
            .expect("task finished")
            .expect("task");
        match result {
            Ok(r) => {
                winners += 1;
                assert_eq!(r.last_version, 11);
            }
            Err(StoreError::Concurrency(e)) => {
                assert_eq!(e.expected, ExpectedVersion::Exact(10));
                assert_eq!(e.actual, 11);
                assert_eq!(e.stream, stream);
            }
            Err(other) => panic!("unexpected error in the race: {other:?}"),
        }
    }
    assert_eq!(winners, 1, "exactly one writer wins");
    let events = store.read_stream(&stream, 1, None).await.expect("read");
    assert_eq!(events.len(), 11);
    let versions: HashSet<u64> = events.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions.len(), 11, "no duplicate versions");
}

/// Writers that reload and retry on conflict never lose an update: every append lands once,
/// versions stay gapless.
pub async fn retrying_writers_lose_nothing<S: EventStore>(store: S) {
    const WRITERS: u64 = 8;
    const EACH: u64 = 25;
    let store = Arc::new(store);
    let stream = test_stream("retry");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, stream) = (store.clone(), stream.clone());
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for i in 0..EACH {
                let event = test_event(w * 1000 + i);
                loop {
                    let version = store.stream_version(&stream).await.expect("version");
                    match store
                        .append(
                            &stream,
                            ExpectedVersion::Exact(version),
                            vec![event.clone()],
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Concurrency(_)) => {
                            conflicts += 1;
                            assert!(conflicts < 100_000, "writer {w} starves");
                            tokio::task::yield_now().await;
                        }
                        Err(other) => panic!("unexpected error: {other:?}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(WAIT, task)
            .await
            .expect("writer finished")
            .expect("writer");
    }
    let events = store.read_stream(&stream, 1, None).await.expect("read");
    assert_eq!(events.len() as u64, WRITERS * EACH);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.stream_version == i as u64 + 1)
    );
    let numbers: HashSet<u64> = events.iter().map(|e| payload_n(&e.payload)).collect();
    assert_eq!(
        numbers.len() as u64,
        WRITERS * EACH,
        "every update present exactly once"
    );
}

/// Writers on many streams at once: the global log holds every event once, in strictly
/// increasing positions that keep each stream's order.
pub async fn concurrent_writers_on_many_streams_keep_global_order<S: EventStore>(store: S) {
    const STREAMS: u64 = 16;
    const BATCHES: u64 = 10;
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for s in 0..STREAMS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = test_stream(&format!("many-{s}"));
            for b in 0..BATCHES {
                store
                    .append(
                        &stream,
                        ExpectedVersion::Exact(b * 3),
                        test_events(b * 3 + 1, 3),
                    )
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(WAIT, task)
            .await
            .expect("writer finished")
            .expect("writer");
    }
    let all = store.read_all(Position::START, 10_000).await.expect("all");
    assert_eq!(all.len() as u64, STREAMS * BATCHES * 3);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let ids: HashSet<_> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), all.len(), "no event twice in the global log");
    let mut last_version = std::collections::HashMap::new();
    for e in &all {
        let previous = last_version
            .insert(e.stream_id.clone(), e.stream_version)
            .unwrap_or(0);
        assert_eq!(
            e.stream_version,
            previous + 1,
            "stream order kept in {}",
            e.stream_id
        );
    }
}
