//! Faults of the server and the network on MongoDB (RELIABILITY #6, #19), against SecantusDB
//! servers of the tests' own (started as separate processes, see `support::own_server`).
//!
//! * #6 database restart during writes: 8 writers and a processor while the server is killed
//!   (`SIGKILL`) and started again on the same port and storage. Writers get
//!   `StoreError::Unavailable` (never a hang or a raw driver error), back off and go on with the
//!   same event ids; nothing acknowledged is lost, nothing is stored twice; the processor sees
//!   every event once and resumes from its checkpoint.
//! * #19 connection loss of a subscriber: the store's subscriptions poll (`read_all` woken by
//!   local appends and a fallback timer; no change streams, so there is no resume token to
//!   lose). The subscriber's connections are cut by a proxy, which then refuses new ones for
//!   5 s, while 8 writers append on a direct connection: a `subscribe_all` subscriber and a
//!   processor deliver every event exactly once afterwards.
//!
//! #4 (a lost acknowledgement) is `lost_ack.rs`, with a fail point of the server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use interlock_core::side::CheckpointStore;
use interlock_core::{
    EventId, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StoreError, StreamId,
};
use interlock_mongodb::{MongoConfiguration, MongoEventStore};
use interlock_runtime::Application;
use interlock_runtime::prelude::*;
use interlock_runtime::processor::RetryPolicy;
use interlock_testing::conformance::{test_event, test_events};
use interlock_testing::faults::TcpProxy;

/// No store call may take longer than this: a hang is a failure.
const CALL_BOUND: Duration = Duration::from_secs(20);

fn stream(id: &str) -> StreamId {
    StreamId::new("Rel", id).unwrap()
}

fn ids(events: &[NewEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.event_id).collect()
}

/// Runs a store call, failing the test if it does not return within [`CALL_BOUND`].
async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(CALL_BOUND, call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {CALL_BOUND:?}"))
}

fn assert_unavailable<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>) {
    match result {
        Err(StoreError::Unavailable { .. }) => {}
        other => panic!("{what}: expected StoreError::Unavailable, got {other:?}"),
    }
}

/// A store on a fresh database of `uri`, quick to give up on a server that is not there.
async fn connect(uri: &str, tweak: impl FnOnce(&mut MongoConfiguration)) -> MongoEventStore {
    let mut config = MongoConfiguration::new(uri);
    config.database = support::fresh_database();
    config.server_selection_timeout = Duration::from_secs(2);
    config.transaction_timeout = Duration::from_secs(2);
    config.poll_interval = Duration::from_millis(200);
    tweak(&mut config);
    MongoEventStore::connect_with(config).await.unwrap()
}

/// Another store on the same database as `store`, through `uri`.
async fn same_database(
    store: &MongoEventStore,
    uri: &str,
    tweak: impl FnOnce(&mut MongoConfiguration),
) -> MongoEventStore {
    let database = store.config().database.clone();
    connect(uri, |c| {
        c.database = database;
        tweak(c);
    })
    .await
}

/// Every event of the database, in global order.
async fn everything(store: &MongoEventStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = Position::START;
    loop {
        let page = bounded("read_all", store.read_all(after, 1000))
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return all;
        };
        after = last.position;
        all.extend(page);
    }
}

/// Every acknowledged event stored exactly once, and nothing else; positions without holes.
async fn assert_stored_once(store: &MongoEventStore, expected: &HashSet<EventId>) {
    let all = everything(store).await;
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.position == Position::from_sequence(i as u64 + 1)),
        "global positions 1..={} without holes",
        all.len()
    );
    let stored: Vec<EventId> = all.iter().map(|e| e.event_id).collect();
    let unique: HashSet<EventId> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "no event stored twice");
    let extra: Vec<String> = all
        .iter()
        .filter(|e| !expected.contains(&e.event_id))
        .take(10)
        .map(|e| format!("{}@{} {:?}", e.stream_id, e.stream_version, e.position))
        .collect();
    let missing = expected.difference(&unique).count();
    assert!(
        extra.is_empty() && missing == 0,
        "exactly the acknowledged events: {missing} of {} missing, {} not acknowledged \
         stored (first: {extra:?})",
        expected.len(),
        unique.difference(expected).count()
    );
}

/// Each writer's stream holds versions 1..=n without holes.
async fn assert_streams_whole(store: &MongoEventStore, writers: u64) {
    for w in 0..writers {
        let target = stream(&format!("writer-{w}"));
        let events = bounded("read_stream", store.read_stream(&target, 1, None))
            .await
            .unwrap();
        assert!(
            events
                .iter()
                .enumerate()
                .all(|(i, e)| e.stream_version == i as u64 + 1),
            "{target}: versions without holes"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A processor that counts deliveries
// ---------------------------------------------------------------------------------------------

#[derive(serde::Serialize, serde::Deserialize)]
struct TestEvent {
    n: u64,
}
impl Event for TestEvent {
    const TYPE_NAME: &'static str = "TestEvent";
}

/// Counts how often each event was delivered.
#[derive(Clone, Default)]
struct Seen {
    counts: Arc<Mutex<HashMap<EventId, u32>>>,
}

impl Seen {
    fn record(&self, event: EventId) {
        *self.counts.lock().unwrap().entry(event).or_default() += 1;
    }

    fn delivered(&self) -> usize {
        self.counts.lock().unwrap().len()
    }

    fn assert_exactly_once(&self, expected: &HashSet<EventId>, who: &str) {
        let counts = self.counts.lock().unwrap();
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{who} delivered twice: {twice:?}");
        let seen: HashSet<EventId> = counts.keys().copied().collect();
        assert_eq!(
            seen.len(),
            expected.len(),
            "{who} delivered {} of {}",
            seen.len(),
            expected.len()
        );
        assert_eq!(&seen, expected, "{who} delivered exactly the stored events");
    }
}

impl EventProcessor for Seen {
    const NAME: &'static str = "reliability_seen";
    fn configure(routes: &mut ProcessorRoutes<Self>) {
        routes.event::<TestEvent>();
    }
}

impl HandlesEvent<TestEvent> for Seen {
    async fn handle(&mut self, _: TestEvent, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        self.record(ctx.event_id());
        Ok(())
    }
}

async fn processor_app(store: &MongoEventStore, seen: Seen) -> Application {
    let app = Application::builder()
        .with_event_store(store.clone())
        .register_projection_with(
            seen,
            ProcessorSettings::new().retry(RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(500),
            }),
        )
        .build()
        .unwrap();
    app.start().await.unwrap();
    app
}

/// Waits until `done` holds, up to `limit`.
async fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------------------

/// What the writers report.
#[derive(Default)]
struct WriterLog {
    acknowledged: Mutex<Vec<EventId>>,
    unavailable: AtomicUsize,
    /// The distinct causes of the `Unavailable` errors, for the test's output.
    causes: Mutex<HashSet<String>>,
    recognised_retries: AtomicUsize,
    /// The longest an append took to answer, success or error.
    slowest: Mutex<Duration>,
    raw_errors: Mutex<Vec<String>>,
}

impl WriterLog {
    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }
}

/// Appends batches of 2 to its own stream with exact expected versions until `stop`. An
/// `Unavailable` append is retried with the same events (same ids) after a backoff until it is
/// acknowledged, so every batch it started ends stored exactly once.
async fn writer(
    store: MongoEventStore,
    w: u64,
    stop: Arc<AtomicBool>,
    log: Arc<WriterLog>,
    pause: Duration,
) {
    let target = stream(&format!("writer-{w}"));
    let mut version = 0;
    let mut n = w * 1_000_000;
    while !stop.load(Ordering::SeqCst) {
        let batch = test_events(n, 2);
        n += 2;
        let mut backoff = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            let result = tokio::time::timeout(
                CALL_BOUND,
                store.append(&target, ExpectedVersion::Exact(version), batch.clone()),
            )
            .await;
            {
                let mut slowest = log.slowest.lock().unwrap();
                *slowest = (*slowest).max(started.elapsed());
            }
            match result {
                Err(_) => {
                    log.raw_errors
                        .lock()
                        .unwrap()
                        .push(format!("writer {w}: append hung for {CALL_BOUND:?}"));
                    return;
                }
                Ok(Ok(done)) => {
                    if done.already_appended {
                        log.recognised_retries.fetch_add(1, Ordering::SeqCst);
                    }
                    assert_eq!(done.first_version, version + 1);
                    version = done.last_version;
                    log.acknowledged.lock().unwrap().extend(ids(&batch));
                    break;
                }
                Ok(Err(StoreError::Unavailable { source, .. })) => {
                    log.unavailable.fetch_add(1, Ordering::SeqCst);
                    let cause: String = source.to_string().chars().take(120).collect();
                    log.causes.lock().unwrap().insert(cause);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Ok(Err(other)) => {
                    log.raw_errors
                        .lock()
                        .unwrap()
                        .push(format!("writer {w}: {other:?}"));
                    return;
                }
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

fn start_writers(
    store: &MongoEventStore,
    stop: &Arc<AtomicBool>,
    log: &Arc<WriterLog>,
    pause: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|w| tokio::spawn(writer(store.clone(), w, stop.clone(), log.clone(), pause)))
        .collect()
}

fn check_writers(log: &WriterLog) -> HashSet<EventId> {
    let raw = log.raw_errors.lock().unwrap();
    assert!(raw.is_empty(), "writers failed untyped or hung: {raw:?}");
    let acknowledged = log.acknowledged.lock().unwrap();
    let set: HashSet<EventId> = acknowledged.iter().copied().collect();
    assert_eq!(set.len(), acknowledged.len(), "no batch acknowledged twice");
    set
}

// ---------------------------------------------------------------------------------------------
// #6 database restart during writes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: CI runs it with --ignored"]
async fn row6_writers_and_a_processor_ride_out_a_server_restart() {
    // A server of the test's own (restarting the binary's shared one would break the other
    // tests), with every commit made durable before it is acknowledged.
    let Some(mut server) = support::own_server(&["--sync-on-commit"]).await else {
        return;
    };
    let store = connect(&server.uri(), |_| {}).await;
    let seen = Seen::default();
    let app = processor_app(&store, seen.clone()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(WriterLog::default());
    let writers = start_writers(&store, &stop, &log, Duration::from_millis(2));

    eventually("writers writing", Duration::from_secs(20), || {
        log.acknowledged() >= 100
    })
    .await;
    // Kill the server mid-write: no shutdown, open transactions and connections gone with it.
    let killed = Instant::now();
    let before_kill = log.acknowledged();
    server.kill().await.unwrap();

    // While it is down, calls fail typed and in time.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let probe = Instant::now();
    let target = stream("writer-0");
    let (head, read, checkpoint) = tokio::join!(
        bounded("head_position", store.head_position()),
        bounded("read_stream", store.read_stream(&target, 1, None)),
        bounded("load_checkpoint", store.load_checkpoint(Seen::NAME)),
    );
    let probed = probe.elapsed();
    assert_unavailable("head_position while the server is down", head);
    assert_unavailable("read_stream while the server is down", read);
    assert_unavailable("load_checkpoint while the server is down", checkpoint);
    assert!(
        probed < Duration::from_secs(5),
        "within the 2 s server selection timeout: {probed:?}"
    );

    // Down for about 3 s, longer than the server selection and transaction timeouts, so
    // writers meet the outage; then up again on the same port and storage.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(killed.elapsed())).await;
    let starting = Instant::now();
    server.start_again().await.unwrap();
    let restarted = Instant::now();
    eprintln!(
        "server down for {:?} (its start took {:?}); calls while down answered in {probed:?}",
        restarted - killed,
        restarted - starting
    );
    let at_restart = log.acknowledged();

    // The writers get going again.
    eventually("writers resumed", Duration::from_secs(60), || {
        log.acknowledged() > at_restart + 100
    })
    .await;
    eprintln!(
        "writers resumed {:?} after the restart",
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        bounded("writer", w).await.unwrap();
    }
    let acknowledged = check_writers(&log);
    let unavailable = log.unavailable.load(Ordering::SeqCst);
    eprintln!(
        "{} events acknowledged ({before_kill} before the kill, {at_restart} at the restart), \
         {unavailable} Unavailable errors, {} recognised retries, slowest append {:?}",
        acknowledged.len(),
        log.recognised_retries.load(Ordering::SeqCst),
        log.slowest.lock().unwrap()
    );
    eprintln!("causes: {:?}", log.causes.lock().unwrap());
    assert!(unavailable > 0, "the restart reached the writers");

    // Every acknowledged append once, nothing else; versions and positions without holes.
    assert_stored_once(&store, &acknowledged).await;
    assert_streams_whole(&store, 8).await;

    // The processor saw everything once, then its checkpoint sits at the head.
    eventually("processor caught up", Duration::from_secs(60), || {
        seen.delivered() >= acknowledged.len()
    })
    .await;
    let head = bounded("head_position", store.head_position())
        .await
        .unwrap();
    bounded("wait_for", app.wait_for(head)).await.unwrap();
    seen.assert_exactly_once(&acknowledged, "the processor");
    app.shutdown().await.unwrap();
    assert_eq!(
        store.load_checkpoint(Seen::NAME).await.unwrap(),
        Some(head),
        "the checkpoint survived the restart and reached the head"
    );

    // Another instance resumes from that checkpoint: only new events reach it.
    let later = Seen::default();
    let resumed = processor_app(&store, later.clone()).await;
    let fresh = test_events(9_000_000, 3);
    let done = store
        .append(&stream("after"), ExpectedVersion::NoStream, fresh.clone())
        .await
        .unwrap();
    bounded("wait_for", resumed.wait_for(done.last_position))
        .await
        .unwrap();
    later.assert_exactly_once(&ids(&fresh).into_iter().collect(), "the resumed processor");
    resumed.shutdown().await.unwrap();
    drop(store);
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// #19 a subscriber's connections lost
// ---------------------------------------------------------------------------------------------

/// Collects a subscription's events until dropped; errors (transient only) are counted and
/// waited out.
fn collect(
    mut subscription: interlock_core::EventSubscription,
) -> (Seen, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let seen = Seen::default();
    let errors = Arc::new(AtomicUsize::new(0));
    let task = {
        let (seen, errors) = (seen.clone(), errors.clone());
        tokio::spawn(async move {
            while let Some(item) = subscription.next().await {
                match item {
                    Ok(event) => seen.record(event.event_id),
                    Err(e) => {
                        assert!(e.is_transient(), "subscription failed untyped: {e:?}");
                        errors.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            panic!("the subscription ended");
        })
    };
    (seen, errors, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: CI runs it with --ignored"]
async fn row19_subscribers_and_processors_survive_losing_their_connections() {
    let Some(server) = support::own_server(&[]).await else {
        return;
    };
    let writers_store = connect(&server.uri(), |_| {}).await;
    // The reader is another "process": only its polling tells it about the writers' appends,
    // and all its connections (the driver's monitor too) go through the proxy.
    let poll_interval = Duration::from_millis(500);
    let (proxy, proxied_uri) = TcpProxy::for_url(&server.uri()).await.unwrap();
    let reader = same_database(&writers_store, &proxied_uri, |c| {
        c.poll_interval = poll_interval;
    })
    .await;
    let (subscribed, subscription_errors, subscriber) =
        collect(reader.subscribe_all(Position::START));
    let processed = Seen::default();
    let app = processor_app(&reader, processed.clone()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(WriterLog::default());
    let writers = start_writers(&writers_store, &stop, &log, Duration::from_millis(10));
    eventually("writers writing", Duration::from_secs(20), || {
        log.acknowledged() >= 50
    })
    .await;
    eventually("the reader following", Duration::from_secs(20), || {
        subscribed.delivered() > 0 && processed.delivered() > 0
    })
    .await;

    // Cut every connection of the reader and refuse new ones for 5 s.
    proxy.refuse_new_for(Duration::from_secs(5));
    proxy.cut_all();
    let blackout = Instant::now();
    let at_cut = log.acknowledged();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = log.acknowledged() - at_cut;
    let errors_during = subscription_errors.load(Ordering::SeqCst);
    eventually("the reader reconnected", Duration::from_secs(20), || {
        proxy.open_connections() > 0
    })
    .await;
    eprintln!(
        "reader reconnected {:?} after the cut; {during} events appended meanwhile",
        blackout.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        bounded("writer", w).await.unwrap();
    }
    let acknowledged = check_writers(&log);
    assert!(during > 0, "the writers went on during the blackout");
    assert!(
        errors_during > 0,
        "the subscriber met the lost connections (as transient errors)"
    );

    eventually("subscriber caught up", Duration::from_secs(30), || {
        subscribed.delivered() >= acknowledged.len()
    })
    .await;
    eventually("processor caught up", Duration::from_secs(30), || {
        processed.delivered() >= acknowledged.len()
    })
    .await;

    // Polling at its normal pace again.
    let last = test_event(42);
    let appended = Instant::now();
    let done = writers_store
        .append(
            &stream("last"),
            ExpectedVersion::NoStream,
            vec![last.clone()],
        )
        .await
        .unwrap();
    let mut everything_acknowledged = acknowledged.clone();
    everything_acknowledged.insert(last.event_id);
    eventually("the last event arrived", Duration::from_secs(10), || {
        subscribed.delivered() > acknowledged.len()
    })
    .await;
    let latency = appended.elapsed();
    eprintln!(
        "{} events; last one delivered after {latency:?}; {} subscription errors",
        everything_acknowledged.len(),
        subscription_errors.load(Ordering::SeqCst)
    );
    assert!(
        latency < poll_interval + Duration::from_secs(1),
        "the subscriber polls at its pace again: {latency:?}"
    );

    bounded("wait_for", app.wait_for(done.last_position))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    subscribed.assert_exactly_once(&everything_acknowledged, "the subscriber");
    processed.assert_exactly_once(&everything_acknowledged, "the processor");
    assert_stored_once(&writers_store, &everything_acknowledged).await;
    assert!(!subscriber.is_finished(), "the subscription is still open");

    subscriber.abort();
    app.shutdown().await.unwrap();
    drop(server);
}
