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

/// A subscription read by a task of its own from the start, as a tailing reader does.
struct Tail {
    got: Arc<Mutex<Vec<RecordedEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tail {
    fn start(mut subscription: interlock_core::EventSubscription) -> Self {
        let got: Arc<Mutex<Vec<RecordedEvent>>> = Arc::default();
        let task = {
            let got = got.clone();
            tokio::spawn(async move {
                while let Some(item) = subscription.next().await {
                    got.lock().unwrap().push(item.expect("subscription failed"));
                }
            })
        };
        Self { got, task }
    }

    fn last_position(&self) -> Position {
        self.got
            .lock()
            .unwrap()
            .last()
            .map_or(Position::START, |e| e.position)
    }

    /// Waits for `until` events, then makes sure no more come.
    async fn finish(self, until: usize) -> Vec<RecordedEvent> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.got.lock().unwrap().len() < until {
            assert!(
                Instant::now() < deadline,
                "subscription stalled at {} of {until}",
                self.got.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Anything beyond the committed set would be a duplicate or a phantom.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.task.abort();
        let got = self.got.lock().unwrap().clone();
        assert_eq!(got.len(), until, "no event beyond the committed set");
        got
    }
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
    // Both subscriptions tail the log while the writers write.
    let first = Tail::start(store.subscribe_all(Position::START));
    let second = Tail::start(store.subscribe_all(Position::START));
    let committed: Committed = Arc::default();
    let long_open = Arc::new(tokio::sync::Notify::new());
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, committed, long_open) = (store.clone(), committed.clone(), long_open.clone());
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
                let long = w == 0 && t == 1;
                let hold = if long {
                    long_open.notify_one();
                    2000
                } else {
                    rng.below(30)
                };
                tokio::time::sleep(Duration::from_millis(hold)).await;
                // The long one commits: it must be delivered late, not skipped.
                if !long && rng.below(10) < 3 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                    let mut committed = committed.lock().unwrap();
                    committed.extend(batch.iter().map(|e| (target.clone(), e.event_id)));
                }
            }
        }));
    }

    // While the long transaction is open, the others' commits pile up behind it, and the
    // store says so.
    long_open.notified().await;
    let opened = Instant::now();
    let mut lag = 0;
    while lag == 0 && opened.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        lag = store.read_lag(first.last_position()).await.unwrap();
    }
    assert!(lag > 0, "lag reported while the long transaction is open");
    let open_for = store.oldest_open_transaction().await.unwrap();
    assert!(
        open_for.is_some_and(|d| d >= Duration::from_millis(50)),
        "the open transaction's age is reported: {open_for:?}"
    );
    eprintln!("lag while open: {lag} events, oldest transaction open for {open_for:?}");

    for writer in writers {
        writer.await.unwrap();
    }
    let committed = committed.lock().unwrap().clone();
    let expected: HashSet<EventId> = committed.iter().map(|(_, id)| *id).collect();
    let (a, b) = tokio::join!(
        first.finish(committed.len()),
        second.finish(committed.len())
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

/// Transaction ids are compared as numbers, never as text: in text order "1000" sorts before
/// "999", so a page cut by `LIMIT` would return a later transaction's events first, and the
/// reader's checkpoint would jump over the earlier ones for good. A fresh cluster starts near
/// transaction 730; the test pushes the counter past 1000 between two appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_ids_gaining_a_digit_keep_the_global_order() {
    use interlock_testing::faults::PgCluster;
    let cluster = match PgCluster::start().await {
        Ok(cluster) => cluster,
        Err(e) if std::env::var("INTERLOCK_REQUIRE_PG").as_deref() != Ok("1") => {
            eprintln!("notice: skipping, cannot start a PostgreSQL cluster: {e}");
            return;
        }
        Err(e) => panic!("cannot start a PostgreSQL cluster: {e}"),
    };
    let store = PgEventStore::connect(&cluster.url()).await.unwrap();
    let mut expected = Vec::new();
    for digits in [3u32, 4] {
        // Burn transaction ids (one per committed loop turn) up to the next power of ten.
        sqlx_core::raw_sql::raw_sql(&format!(
            "DO $$ BEGIN WHILE pg_current_xact_id()::text::bigint < {} LOOP COMMIT; END LOOP; END $$",
            10u64.pow(digits) - 50
        ))
        .execute(store.pool())
        .await
        .unwrap();
        for n in 0..100 {
            let event = test_event(n);
            expected.push(event.event_id);
            store
                .append(
                    &stream(&format!("digits-{digits}-{n}")),
                    ExpectedVersion::NoStream,
                    vec![event],
                )
                .await
                .unwrap();
        }
    }
    // Page by page, as a follower reads.
    let mut checkpoint = Position::START;
    let mut got = Vec::new();
    loop {
        let page = store.read_all(checkpoint, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        checkpoint = last.position;
        got.extend(page.iter().map(|e| e.event_id));
        assert!(got.len() <= expected.len(), "read past the end");
    }
    let first_wrong = got.iter().zip(&expected).position(|(a, b)| a != b);
    assert!(
        got.len() == expected.len() && first_wrong.is_none(),
        "every event in commit order across 999 -> 1000 and 9999 -> 10000: read {} of {}, \
         first out of order at {first_wrong:?}",
        got.len(),
        expected.len()
    );
    assert_eq!(store.head_position().await.unwrap(), checkpoint);
    drop(store);
    drop(cluster);
}

/// RELIABILITY #8 at full length: while 8 writers append and roll back 30% of their
/// transactions (after taking positions), one transaction holds its positions for 10 s and
/// rolls back, then another holds them longer than `horizon_wait` and commits. A tailing
/// subscription stalls no longer than the open transaction, skips nothing, and does not give
/// up on the late commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: CI runs it with --include-ignored"]
async fn a_ten_second_rollback_stalls_nobody_longer_than_itself_and_a_late_commit_arrives() {
    let _serial = SERIAL.lock().await;
    let Some(store) = common::store_with(|mut c| {
        c.poll_interval = Duration::from_millis(200);
        c.max_connections = 16;
        c
    })
    .await
    else {
        return;
    };
    let horizon_wait = store.config().horizon_wait;
    let tail = Tail::start(store.subscribe_all(Position::START));
    let committed: Arc<Mutex<Vec<EventId>>> = Arc::default();
    let rolled_back: Arc<Mutex<HashSet<EventId>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let (store, committed, rolled_back, stop) = (
            store.clone(),
            committed.clone(),
            rolled_back.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut rng = Rng((w + 11).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut n = w * 1_000_000;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let target = stream(&format!("w{w}-{}", rng.below(4)));
                let batch = test_events(n, 1 + rng.below(3));
                n += 10;
                let mut tx = store.pool().begin().await.unwrap();
                store
                    .append_in(&mut tx, &target, ExpectedVersion::Any, batch.clone())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
                if rng.below(10) < 3 {
                    tx.rollback().await.unwrap();
                    rolled_back
                        .lock()
                        .unwrap()
                        .extend(batch.iter().map(|e| e.event_id));
                } else {
                    tx.commit().await.unwrap();
                    committed
                        .lock()
                        .unwrap()
                        .extend(batch.iter().map(|e| e.event_id));
                }
            }
        }));
    }
    let delivered = |tail: &Tail| -> HashSet<EventId> {
        tail.got
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.event_id)
            .collect()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 10 s holding positions, then a rollback.
    let doomed = test_events(9_000_000, 3);
    let mut long = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut long,
            &stream("long-rollback"),
            ExpectedVersion::NoStream,
            doomed.clone(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        store.read_lag(tail.last_position()).await.unwrap() > 0,
        "the subscriber is held back, and the store says so"
    );
    tokio::time::sleep(Duration::from_secs(7)).await;
    long.rollback().await.unwrap();
    let ended = Instant::now();
    let before_end: Vec<EventId> = committed.lock().unwrap().clone();
    loop {
        let seen = delivered(&tail);
        if before_end.iter().all(|id| seen.contains(id)) {
            break;
        }
        assert!(
            ended.elapsed() < Duration::from_secs(10),
            "stalled after the rollback"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stall = ended.elapsed();
    eprintln!(
        "{} events committed during the 10 s transaction delivered {stall:?} after its rollback",
        before_end.len()
    );
    assert!(
        stall < Duration::from_secs(2),
        "no stall longer than the open transaction: {stall:?}"
    );

    // Longer than horizon_wait, then a commit: delivered late, never skipped.
    let late = test_events(9_100_000, 3);
    let mut long = store.pool().begin().await.unwrap();
    store
        .append_in(
            &mut long,
            &stream("long-commit"),
            ExpectedVersion::NoStream,
            late.clone(),
        )
        .await
        .unwrap();
    tokio::time::sleep(horizon_wait + Duration::from_secs(2)).await;
    long.commit().await.unwrap();
    committed
        .lock()
        .unwrap()
        .extend(late.iter().map(|e| e.event_id));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }

    let committed = committed.lock().unwrap().clone();
    let got = tail.finish(committed.len()).await;
    let ids: Vec<EventId> = got.iter().map(|e| e.event_id).collect();
    let unique: HashSet<EventId> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "nothing delivered twice");
    assert_eq!(
        unique,
        committed.iter().copied().collect::<HashSet<_>>(),
        "exactly the committed events"
    );
    assert!(late.iter().all(|e| unique.contains(&e.event_id)));
    assert!(
        !rolled_back.lock().unwrap().is_empty(),
        "some appends rolled back"
    );
    assert!(doomed.iter().all(|e| !unique.contains(&e.event_id)));
    assert!(got.windows(2).all(|w| w[0].position < w[1].position));
    common::drop_schema(&store).await;
}
