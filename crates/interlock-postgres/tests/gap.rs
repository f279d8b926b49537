//! The global order under interleaved, late and rolled-back commits (RELIABILITY #7, #8, #19).
//!
//! The naive design — order and checkpoint by a sequence number alone — is written out here
//! as the foil: it skips an event that took a smaller number and committed later.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use interlock_core::{EventId, EventStore, ExpectedVersion, Position, RecordedEvent, StreamId};
use interlock_postgres::PgEventStore;
use interlock_testing::conformance::{test_event, test_events};
use sqlx_core::row::Row;

/// These tests hold transactions open on purpose, and an open transaction holds back every
/// reader on the server (the horizon is cluster-wide): run them one at a time so their
/// timing assertions measure their own transactions.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn stream(id: &str) -> StreamId {
    StreamId::new("Gap", id).unwrap()
}

/// The naive follower: remembers the highest sequence number it has seen and asks for rows
/// above it, visible to its snapshot, with no regard for transactions still open.
struct NaiveReader {
    checkpoint: i64,
    seen: Vec<EventId>,
}

impl NaiveReader {
    async fn poll(&mut self, store: &PgEventStore) {
        let sql = format!(
            "SELECT position, event_id FROM \"{}\".events WHERE position > $1 ORDER BY position",
            store.schema()
        );
        let rows = sqlx_core::query::query(&sql)
            .bind(self.checkpoint)
            .fetch_all(store.pool())
            .await
            .unwrap();
        for row in rows {
            self.checkpoint = row.get(0);
            self.seen.push(EventId::from_uuid(row.get(1)));
        }
    }
}

/// A follower of `read_all` that checkpoints the last position it was given.
struct Follower {
    checkpoint: Position,
    seen: Vec<RecordedEvent>,
}

impl Follower {
    async fn poll(&mut self, store: &PgEventStore) -> usize {
        let page = store.read_all(self.checkpoint, 1000).await.unwrap();
        if let Some(last) = page.last() {
            self.checkpoint = last.position;
        }
        let n = page.len();
        self.seen.extend(page);
        n
    }

    fn ids(&self) -> Vec<EventId> {
        self.seen.iter().map(|e| e.event_id).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_is_skipped_by_the_naive_reader_and_not_by_read_all() {
    let _serial = SERIAL.lock().await;
    // A short horizon wait: while the first transaction is open, reads return what is safe
    // after 200 ms instead of waiting the default 5 s.
    let Some(store) = common::store_with(|mut c| {
        c.horizon_wait = Duration::from_millis(200);
        c
    })
    .await
    else {
        return;
    };
    let mut naive = NaiveReader {
        checkpoint: 0,
        seen: Vec::new(),
    };
    let mut follower = Follower {
        checkpoint: Position::START,
        seen: Vec::new(),
    };
    let before = test_event(0);
    store
        .append(
            &stream("before"),
            ExpectedVersion::NoStream,
            vec![before.clone()],
        )
        .await
        .unwrap();
    naive.poll(&store).await;
    assert_eq!(follower.poll(&store).await, 1);

    // Transaction 1 appends and holds its position, uncommitted.
    let late = test_event(1);
    let mut tx1 = store.pool().begin().await.unwrap();
    let p1 = store
        .append_in(
            &mut tx1,
            &stream("late"),
            ExpectedVersion::NoStream,
            vec![late.clone()],
        )
        .await
        .unwrap();
    // Transaction 2 appends after it and commits first.
    let early = test_event(2);
    let p2 = store
        .append(
            &stream("early"),
            ExpectedVersion::NoStream,
            vec![early.clone()],
        )
        .await
        .unwrap();
    assert!(
        p1.first_position.minor() < p2.first_position.minor(),
        "the late commit took the smaller sequence number: {:?} {:?}",
        p1.first_position,
        p2.first_position
    );
    assert!(p1.first_position < p2.first_position, "and sorts first");

    // The naive reader sees the early commit and moves its checkpoint past the late one.
    naive.poll(&store).await;
    assert_eq!(naive.seen, vec![before.event_id, early.event_id]);
    assert!(naive.checkpoint > i64::try_from(p1.first_position.minor()).unwrap());
    // read_all does not return the early commit while an older transaction is open.
    assert_eq!(follower.poll(&store).await, 0);
    assert_eq!(follower.poll(&store).await, 0);
    assert!(store.head_position().await.unwrap() < p1.first_position);

    tx1.commit().await.unwrap();

    // The naive reader has lost the late event for good.
    naive.poll(&store).await;
    assert_eq!(
        naive.seen,
        vec![before.event_id, early.event_id],
        "the naive design skips the late commit"
    );
    assert!(!naive.seen.contains(&late.event_id));

    // The follower gets both, in (transaction, sequence) order, exactly once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while follower.seen.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "follower stalled: {:?}",
            follower.ids()
        );
        follower.poll(&store).await;
    }
    assert_eq!(
        follower.ids(),
        vec![before.event_id, late.event_id, early.event_id]
    );
    assert_eq!(follower.poll(&store).await, 0, "nothing twice");
    assert_eq!(follower.seen[1].position, p1.first_position);
    assert_eq!(follower.seen[2].position, p2.first_position);
    assert_eq!(store.head_position().await.unwrap(), p2.first_position);
    common::drop_schema(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_leaves_no_gap_and_no_stall() {
    let _serial = SERIAL.lock().await;
    let Some(store) = common::store_with(|mut c| {
        c.horizon_wait = Duration::from_millis(100);
        c.poll_interval = Duration::from_millis(100);
        c
    })
    .await
    else {
        return;
    };
    let mut subscription = store.subscribe_all(Position::START);

    let doomed = test_events(1, 3);
    let mut tx = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut tx,
            &stream("doomed"),
            ExpectedVersion::NoStream,
            doomed.clone(),
        )
        .await
        .unwrap();
    let kept = test_event(9);
    store
        .append(
            &stream("kept"),
            ExpectedVersion::NoStream,
            vec![kept.clone()],
        )
        .await
        .unwrap();

    // Held back while the transaction is open (it might still commit: no timeout skips it).
    let early = tokio::time::timeout(Duration::from_millis(700), subscription.next()).await;
    assert!(
        early.is_err(),
        "delivered past an open transaction: {early:?}"
    );

    tx.rollback().await.unwrap();
    let rolled_back = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("delivered after the rollback")
        .unwrap()
        .unwrap();
    assert_eq!(next.event_id, kept.event_id);
    assert!(
        rolled_back.elapsed() < Duration::from_secs(2),
        "no stall after the rollback: {:?}",
        rolled_back.elapsed()
    );
    let quiet = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await;
    assert!(
        quiet.is_err(),
        "nothing of the rolled-back batch: {quiet:?}"
    );
    let all = store.read_all(Position::START, 100).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(store.stream_version(&stream("doomed")).await.unwrap(), 0);
    // The numbers the rollback took are simply absent; the stream starts over at version 1.
    let again = store
        .append(
            &stream("doomed"),
            ExpectedVersion::NoStream,
            test_events(1, 1),
        )
        .await
        .unwrap();
    assert_eq!(again.first_version, 1);
    common::drop_schema(&store).await;
}

/// A small deterministic generator (no extra dependency), seeded per run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type Committed = Arc<Mutex<Vec<RecordedEventKey>>>;
type RecordedEventKey = (StreamId, EventId);

async fn collect(
    mut subscription: interlock_core::EventSubscription,
    until: usize,
) -> Vec<RecordedEvent> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < until {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, subscription.next()).await {
            Ok(Some(Ok(event))) => got.push(event),
            Ok(other) => panic!("subscription ended or failed: {other:?}"),
            Err(_) => panic!("subscription stalled at {} of {until}", got.len()),
        }
    }
    // Anything beyond the committed set would be a duplicate or a phantom.
    if let Ok(extra) = tokio::time::timeout(Duration::from_millis(500), subscription.next()).await {
        panic!("unexpected extra event: {extra:?}");
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_writers_with_rollbacks_reach_every_subscriber_exactly_once() {
    let _serial = SERIAL.lock().await;
    const WRITERS: u64 = 8;
    const TRANSACTIONS: u64 = 8;
    const STREAMS: u64 = 4;
    let Some(store) = common::store_with(|mut c| {
        c.poll_interval = Duration::from_millis(200);
        c.max_connections = 16;
        c
    })
    .await
    else {
        return;
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let first = store.subscribe_all(Position::START);
    let second = store.subscribe_all(Position::START);
    let committed: Committed = Arc::default();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, committed) = (store.clone(), committed.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_mul(w + 7) | 1);
            for t in 0..TRANSACTIONS {
                let target = stream(&format!("s{}", rng.below(STREAMS)));
                let batch = test_events(w * 1000 + t * 10, 3);
                let mut tx = store.pool().begin().await.unwrap();
                tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
                store
                    .append_in(&mut tx, &target, ExpectedVersion::Any, batch.clone())
                    .await
                    .unwrap();
                // One transaction stays open for 2 s while everyone else goes on.
                let hold = if w == 0 && t == 1 {
                    2000
                } else {
                    rng.below(30)
                };
                tokio::time::sleep(Duration::from_millis(hold)).await;
                if rng.below(10) < 3 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                    let mut committed = committed.lock().unwrap();
                    committed.extend(batch.iter().map(|e| (target.clone(), e.event_id)));
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let committed = committed.lock().unwrap().clone();
    let expected: HashSet<EventId> = committed.iter().map(|(_, id)| *id).collect();
    let (a, b) = tokio::join!(
        collect(first, committed.len()),
        collect(second, committed.len())
    );
    for got in [a, b] {
        let ids: HashSet<EventId> = got.iter().map(|e| e.event_id).collect();
        assert_eq!(ids.len(), got.len(), "no duplicates");
        assert_eq!(ids, expected, "exactly the committed set");
        assert!(got.windows(2).all(|w| w[0].position < w[1].position));
        let mut versions: HashMap<StreamId, u64> = HashMap::new();
        for event in &got {
            let last = versions.entry(event.stream_id.clone()).or_default();
            assert_eq!(
                event.stream_version,
                *last + 1,
                "order of {}",
                event.stream_id
            );
            *last = event.stream_version;
        }
    }
    common::drop_schema(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_survive_the_loss_of_the_listen_connection() {
    let _serial = SERIAL.lock().await;
    // Fallback polling is made too slow to matter: delivery within the test's time needs the
    // LISTEN connection to come back.
    let Some(store) = common::store_with(|mut c| {
        c.poll_interval = Duration::from_secs(3600);
        c
    })
    .await
    else {
        return;
    };
    let mut subscription = store.subscribe_all(Position::START);
    let target = stream("listen");
    let mut version = 0;
    let mut expected = Vec::new();
    for round in 0..3 {
        for _ in 0..5 {
            let event = test_event(version);
            expected.push(event.event_id);
            store
                .append(&target, ExpectedVersion::Exact(version), vec![event])
                .await
                .unwrap();
            version += 1;
        }
        for _ in 0..5 {
            let event = tokio::time::timeout(Duration::from_secs(20), subscription.next())
                .await
                .unwrap_or_else(|_| panic!("stalled in round {round}"))
                .unwrap()
                .unwrap();
            assert_eq!(
                Some(&event.event_id),
                expected.get(event.stream_version as usize - 1)
            );
        }
        // Kill the LISTEN connection; the store must reconnect and keep waking subscribers.
        let killed: Vec<bool> = sqlx_core::query::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN %' AND query LIKE '%' || $1 || '%'",
        )
        .bind(store.schema())
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
        assert_eq!(killed, vec![true], "found and killed the LISTEN connection");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    common::drop_schema(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_with_an_older_id_still_appends_after_the_stream_head() {
    let _serial = SERIAL.lock().await;
    let Some(store) = common::store().await else {
        return;
    };
    let target = stream("order");
    // This transaction takes its id first, then appends after another writer.
    let mut old = store.pool().begin().await.unwrap();
    sqlx_core::query::query("SELECT pg_current_xact_id()")
        .execute(&mut *old)
        .await
        .unwrap();
    let first = store
        .append(&target, ExpectedVersion::NoStream, test_events(1, 1))
        .await
        .unwrap();
    let second = store
        .append_in(
            &mut old,
            &target,
            ExpectedVersion::Exact(1),
            test_events(2, 1),
        )
        .await
        .unwrap();
    old.commit().await.unwrap();
    assert!(
        first.last_position < second.first_position,
        "version 2 sorts after version 1: {:?} {:?}",
        first.last_position,
        second.first_position
    );
    let all = store.read_all(Position::START, 10).await.unwrap();
    let versions: Vec<u64> = all.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![1, 2]);
    common::drop_schema(&store).await;
}
