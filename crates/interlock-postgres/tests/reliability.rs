//! Faults of the network and the server (RELIABILITY #4, #6, #19), with real connections cut
//! by a TCP proxy and a throwaway PostgreSQL cluster restarted under load.
//!
//! * #4 lost acknowledgement: a connection dropped right after the commit reached the server
//!   (and at other moments). The append is `StoreError::Unavailable`, its retry with the same
//!   event ids is answered with the original positions, one copy is stored.
//! * #6 database restart during writes: 8 writers and a processor while the server is killed
//!   and restarted. Writers get `Unavailable`, back off, go on; nothing acknowledged is lost,
//!   nothing is stored twice; the processor sees every event once and resumes from its
//!   checkpoint.
//! * #19 listener connection loss: the LISTEN connection killed and kept from reconnecting
//!   for 5 s while 8 writers append; a subscriber and a processor get every event once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use interlock_core::lease::LeaseStore;
use interlock_core::side::CheckpointStore;
use interlock_core::{
    EventId, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StoreError, StreamId,
};
use interlock_postgres::{PgConfig, PgEventStore};
use interlock_runtime::Application;
use interlock_runtime::prelude::*;
use interlock_runtime::processor::RetryPolicy;
use interlock_testing::conformance::{test_event, test_events};
use interlock_testing::faults::{CutMoment, CutRule, PgCluster, StopMode, TcpProxy};
use sqlx_core::row::Row;

/// No store call may take longer than this: a hang is a failure.
const CALL_BOUND: Duration = Duration::from_secs(20);

fn stream(id: &str) -> StreamId {
    StreamId::new("Rel", id).unwrap()
}

fn id_bytes(event: &NewEvent) -> [u8; 16] {
    *event.event_id.as_uuid().as_bytes()
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

/// Every event of the schema, in global order.
async fn everything(store: &PgEventStore) -> Vec<RecordedEvent> {
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

/// A second store on the same schema as `direct`, whose connections all go through a proxy.
async fn proxied(
    direct: &PgEventStore,
    tweak: impl FnOnce(&mut PgConfig),
) -> (TcpProxy, PgEventStore) {
    let (proxy, url) = TcpProxy::for_url(&common::url()).await.unwrap();
    let mut config = PgConfig::new(url);
    config.schema = direct.schema().to_owned();
    config.acquire_timeout = Duration::from_secs(3);
    tweak(&mut config);
    let store = PgEventStore::connect_with(config).await.unwrap();
    (proxy, store)
}

// ---------------------------------------------------------------------------------------------
// #4 lost acknowledgement
// ---------------------------------------------------------------------------------------------

/// Cuts `via`'s connection right after the append statement carrying `batch` reached the server
/// (it commits on its own), before the answer comes back; checks the outcome and the retries.
async fn lose_the_acknowledgement(
    proxy: &TcpProxy,
    via: &PgEventStore,
    direct: &PgEventStore,
    target: &StreamId,
    expected: ExpectedVersion,
    batch: Vec<NewEvent>,
) {
    let version_before = direct.stream_version(target).await.unwrap();
    let cut = proxy.arm(CutRule::new(
        id_bytes(&batch[2]),
        CutMoment::AfterSendDropReply,
    ));
    let lost = bounded("append", via.append(target, expected, batch.clone())).await;
    assert!(cut.fired(), "the proxy cut the append's connection");
    assert_unavailable("append with a lost acknowledgement", lost);

    // The server committed the whole batch.
    let stored = direct
        .read_stream(target, version_before + 1, None)
        .await
        .unwrap();
    assert_eq!(
        stored.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        ids(&batch),
        "the batch committed whole"
    );

    // The retry is recognised: same versions, the original positions, nothing stored again.
    for retry_expectation in [expected, ExpectedVersion::Any] {
        let retried = bounded(
            "retry",
            via.append(target, retry_expectation, batch.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("retry with {retry_expectation:?} failed: {e:?}"));
        assert!(retried.already_appended, "{retry_expectation:?}");
        assert_eq!(retried.first_version, version_before + 1);
        assert_eq!(retried.last_version, version_before + batch.len() as u64);
        assert_eq!(retried.first_position, stored[0].position);
        assert_eq!(retried.last_position, stored[batch.len() - 1].position);
    }

    // The same id with other content is a typed conflict, not a concurrency error.
    let mut other = batch.clone();
    other[0].payload = bytes::Bytes::from_static(b"{\"n\":-1}");
    let clash = via.append(target, expected, other).await;
    match clash {
        Err(StoreError::DuplicateEventId { event_id, .. }) => {
            assert_eq!(event_id, batch[0].event_id);
        }
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    assert_eq!(
        direct.stream_version(target).await.unwrap(),
        version_before + batch.len() as u64
    );
}

/// Every event of the schema exactly once, and nothing else.
async fn assert_stored_once(direct: &PgEventStore, expected: &HashSet<EventId>) {
    let all = everything(direct).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row4_a_lost_acknowledgement_is_unavailable_and_the_retry_is_recognised() {
    let Some(direct) = common::store().await else {
        return;
    };
    let (proxy, via) = proxied(&direct, |_| {}).await;
    let mut all = HashSet::new();

    // An existing stream, expecting its exact version.
    let existing = stream("existing");
    let first = test_events(0, 1);
    via.append(&existing, ExpectedVersion::NoStream, first.clone())
        .await
        .unwrap();
    all.extend(ids(&first));
    let batch = test_events(10, 5);
    all.extend(ids(&batch));
    lose_the_acknowledgement(
        &proxy,
        &via,
        &direct,
        &existing,
        ExpectedVersion::Exact(1),
        batch,
    )
    .await;

    // A new stream.
    let batch = test_events(20, 5);
    all.extend(ids(&batch));
    lose_the_acknowledgement(
        &proxy,
        &via,
        &direct,
        &stream("created"),
        ExpectedVersion::NoStream,
        batch,
    )
    .await;

    // Any version: the retry is stopped by the unique event ids, then recognised.
    let batch = test_events(30, 5);
    all.extend(ids(&batch));
    lose_the_acknowledgement(
        &proxy,
        &via,
        &direct,
        &existing,
        ExpectedVersion::Any,
        batch,
    )
    .await;

    // A retry after another writer appended meanwhile is still recognised, not a conflict.
    let batch = test_events(40, 3);
    all.extend(ids(&batch));
    let cut = proxy.arm(CutRule::new(
        id_bytes(&batch[0]),
        CutMoment::AfterSendDropReply,
    ));
    assert_unavailable(
        "append",
        bounded(
            "append",
            via.append(&existing, ExpectedVersion::Exact(11), batch.clone()),
        )
        .await,
    );
    assert!(cut.fired());
    let meanwhile = test_events(50, 1);
    all.extend(ids(&meanwhile));
    direct
        .append(&existing, ExpectedVersion::Exact(14), meanwhile)
        .await
        .unwrap();
    let retried = via
        .append(&existing, ExpectedVersion::Exact(11), batch)
        .await
        .unwrap();
    assert!(retried.already_appended);
    assert_eq!((retried.first_version, retried.last_version), (12, 14));

    assert_stored_once(&direct, &all).await;
    assert!(proxy.accepted() > 1, "the store reconnected after each cut");
    common::drop_schema(&direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row4_a_cut_before_the_commit_stores_nothing_and_the_retry_appends() {
    let Some(direct) = common::store().await else {
        return;
    };
    let (proxy, via) = proxied(&direct, |_| {}).await;
    let target = stream("before");
    let mut version = 0;
    let mut all = HashSet::new();

    // One statement, so its own transaction: cut before it reaches the server, or halfway.
    for (round, moment) in [CutMoment::BeforeSend, CutMoment::MidSend]
        .into_iter()
        .enumerate()
    {
        let batch = test_events(100 * round as u64, 5);
        let cut = proxy.arm(CutRule::new(id_bytes(&batch[4]), moment));
        assert_unavailable(
            "append",
            bounded(
                "append",
                via.append(&target, ExpectedVersion::Exact(version), batch.clone()),
            )
            .await,
        );
        assert!(cut.fired(), "{moment:?}");
        assert_eq!(
            direct.stream_version(&target).await.unwrap(),
            version,
            "nothing of the batch after a cut {moment:?}"
        );
        let retried = bounded(
            "retry",
            via.append(&target, ExpectedVersion::Exact(version), batch.clone()),
        )
        .await
        .unwrap();
        assert!(!retried.already_appended, "{moment:?}: appended now");
        assert_eq!(retried.first_version, version + 1);
        version = retried.last_version;
        all.extend(ids(&batch));
    }

    // Inside a caller's transaction: cut before, during and after its COMMIT.
    for (round, moment) in [
        CutMoment::BeforeSend,
        CutMoment::MidSend,
        CutMoment::AfterSendDropReply,
    ]
    .into_iter()
    .enumerate()
    {
        let batch = test_events(1000 + 100 * round as u64, 5);
        let mut tx = via.pool().begin().await.unwrap();
        via.append_in(
            &mut tx,
            &target,
            ExpectedVersion::Exact(version),
            batch.clone(),
        )
        .await
        .unwrap();
        let cut = proxy.arm(CutRule::new("COMMIT", moment));
        let committed = bounded("commit", tx.commit()).await;
        assert!(
            committed.is_err(),
            "{moment:?}: the commit's answer is lost"
        );
        assert!(cut.fired(), "{moment:?}");
        // All or nothing: the server either committed the batch or rolled it back whole.
        let stored = direct
            .read_stream(&target, version + 1, None)
            .await
            .unwrap();
        assert!(
            stored.is_empty() || stored.len() == batch.len(),
            "{moment:?}: {} of {} events",
            stored.len(),
            batch.len()
        );
        let retried = bounded(
            "retry",
            via.append(&target, ExpectedVersion::Exact(version), batch.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("{moment:?}: retry failed: {e:?}"));
        assert_eq!(
            retried.already_appended,
            moment == CutMoment::AfterSendDropReply,
            "{moment:?}: committed only when the COMMIT reached the server"
        );
        assert_eq!(retried.first_version, version + 1);
        version = retried.last_version;
        all.extend(ids(&batch));
    }

    assert_stored_once(&direct, &all).await;
    let versions: Vec<u64> = direct
        .read_stream(&target, 1, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, (1..=version).collect::<Vec<_>>());
    common::drop_schema(&direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row4_every_connection_cut_at_once_is_unavailable_then_recovers() {
    let Some(direct) = common::store().await else {
        return;
    };
    let (proxy, via) = proxied(&direct, |c| c.acquire_timeout = Duration::from_secs(1)).await;
    let target = stream("cut-all");
    via.append(&target, ExpectedVersion::NoStream, test_events(0, 1))
        .await
        .unwrap();
    // Connections refused for a while: calls fail fast and typed, then work again.
    proxy.refuse_new_for(Duration::from_secs(2));
    proxy.cut_all();
    let started = Instant::now();
    let batch = test_events(1, 2);
    assert_unavailable(
        "append while refused",
        bounded(
            "append",
            via.append(&target, ExpectedVersion::Exact(1), batch.clone()),
        )
        .await,
    );
    assert_unavailable(
        "read while refused",
        bounded("read", via.read_stream(&target, 1, None)).await,
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let appended = bounded(
        "append",
        via.append(&target, ExpectedVersion::Exact(1), batch),
    )
    .await
    .unwrap();
    assert_eq!(appended.last_version, 3);
    assert_eq!(via.read_stream(&target, 1, None).await.unwrap().len(), 3);
    common::drop_schema(&direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: CI runs it with --include-ignored"]
async fn row6_a_server_that_stops_answering_is_unavailable_within_the_timeout() {
    let Some(direct) = common::store().await else {
        return;
    };
    let (proxy, via) = proxied(&direct, |c| {
        c.acquire_timeout = Duration::from_secs(1);
        c.operation_timeout = Some(Duration::from_secs(1));
    })
    .await;
    let target = stream("frozen");
    via.append(&target, ExpectedVersion::NoStream, test_events(0, 1))
        .await
        .unwrap();

    // Connections stay open but nothing comes back: every call gives up, typed, in time.
    proxy.freeze();
    let batch = test_events(1, 3);
    let started = Instant::now();
    assert_unavailable(
        "append to a frozen server",
        bounded(
            "append",
            via.append(&target, ExpectedVersion::Exact(1), batch.clone()),
        )
        .await,
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_unavailable(
        "read_stream",
        bounded("read_stream", via.read_stream(&target, 1, None)).await,
    );
    assert_unavailable(
        "read_all",
        bounded("read_all", via.read_all(Position::START, 10)).await,
    );
    assert_unavailable(
        "stream_version",
        bounded("stream_version", via.stream_version(&target)).await,
    );
    assert_unavailable(
        "head_position",
        bounded("head_position", via.head_position()).await,
    );
    // The side stores and leases are bounded the same way.
    let started = Instant::now();
    assert_unavailable(
        "load_checkpoint",
        bounded("load_checkpoint", via.load_checkpoint("frozen")).await,
    );
    assert_unavailable(
        "save_checkpoint",
        bounded(
            "save_checkpoint",
            via.save_checkpoint("frozen", Position::from_sequence(1)),
        )
        .await,
    );
    assert_unavailable(
        "lease acquire",
        bounded(
            "acquire",
            via.acquire("frozen#0/1", "owner", Duration::from_secs(10)),
        )
        .await,
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "three side-store calls, each within the 1 s timeout (+ the 1 s acquire timeout): {:?}",
        started.elapsed()
    );

    // A connection that goes silent in the middle of an append (after the statement was
    // sent) is given up after operation_timeout, too.
    proxy.thaw();
    let silent_batch = test_events(10, 2);
    let other = stream("silent");
    let silent = proxy.arm(CutRule::new(
        id_bytes(&silent_batch[0]),
        CutMoment::AfterSendGoSilent,
    ));
    let started = Instant::now();
    assert_unavailable(
        "append on a connection gone silent",
        bounded(
            "append",
            via.append(&other, ExpectedVersion::NoStream, silent_batch.clone()),
        )
        .await,
    );
    assert!(silent.fired());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // The statement reached the server: the retry finds it committed.
    let retried = bounded(
        "retry",
        via.append(&other, ExpectedVersion::NoStream, silent_batch),
    )
    .await
    .unwrap();
    assert!(retried.already_appended);
    // The same for side-store and lease statements that reached the server on a connection
    // that then went silent: only the operation timeout ends them.
    let silent_checkpoint = proxy.arm(CutRule::new(
        "silent-checkpoint",
        CutMoment::AfterSendGoSilent,
    ));
    let started = Instant::now();
    assert_unavailable(
        "save_checkpoint on a connection gone silent",
        bounded(
            "save_checkpoint",
            via.save_checkpoint("silent-checkpoint", Position::from_sequence(7)),
        )
        .await,
    );
    assert!(silent_checkpoint.fired());
    let silent_lease = proxy.arm(CutRule::new("silent-lease", CutMoment::AfterSendGoSilent));
    assert_unavailable(
        "lease acquire on a connection gone silent",
        bounded(
            "acquire",
            via.acquire("silent-lease#0/1", "owner", Duration::from_secs(10)),
        )
        .await,
    );
    assert!(silent_lease.fired());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    proxy.cut_all();
    proxy.freeze();

    // The server answers again; the append's outcome was unknown (its statement may run
    // now that the held bytes go through): the retry settles it, one copy either way.
    proxy.thaw();
    let retried = loop {
        match bounded(
            "retry",
            via.append(&target, ExpectedVersion::Exact(1), batch.clone()),
        )
        .await
        {
            Ok(done) => break done,
            Err(StoreError::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("retry failed untyped: {other:?}"),
        }
    };
    assert_eq!((retried.first_version, retried.last_version), (2, 4));
    let stored = direct.read_stream(&target, 1, None).await.unwrap();
    assert_eq!(stored.len(), 4);
    assert_eq!(
        stored[1..].iter().map(|e| e.event_id).collect::<Vec<_>>(),
        ids(&batch)
    );
    // The side stores and leases work again on the thawed connections.
    bounded(
        "save_checkpoint",
        via.save_checkpoint("frozen", Position::from_sequence(2)),
    )
    .await
    .unwrap();
    assert_eq!(
        bounded("load_checkpoint", via.load_checkpoint("frozen"))
            .await
            .unwrap(),
        Some(Position::from_sequence(2))
    );
    let lease = bounded(
        "acquire",
        via.acquire("frozen#0/1", "owner", Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert!(lease.is_some(), "the owner holds its lease again");
    common::drop_schema(&direct).await;
}

// ---------------------------------------------------------------------------------------------
// A processor that counts deliveries, for #6 and #19
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
        *self
            .counts
            .lock()
            .unwrap()
            .entry(ctx.event_id())
            .or_default() += 1;
        Ok(())
    }
}

async fn processor_app(store: &PgEventStore, seen: Seen) -> Application {
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

/// What the writers of #6 and #19 report.
#[derive(Default)]
struct WriterLog {
    acknowledged: Mutex<Vec<EventId>>,
    unavailable: AtomicUsize,
    /// The distinct causes of the `Unavailable` errors, for the test's output.
    causes: Mutex<HashSet<String>>,
    recognised_retries: AtomicUsize,
    raw_errors: Mutex<Vec<String>>,
}

/// Appends batches of 2 to its own stream with exact expected versions until `stop`. An
/// `Unavailable` append is retried with the same events (same ids) after a backoff until it is
/// acknowledged, so every batch it started ends stored exactly once.
async fn writer(
    store: PgEventStore,
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
            let result = tokio::time::timeout(
                CALL_BOUND,
                store.append(&target, ExpectedVersion::Exact(version), batch.clone()),
            )
            .await;
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
                    let cause: String = source.to_string().chars().take(100).collect();
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
#[ignore = "slow: CI runs it with --include-ignored"]
async fn row6_writers_and_a_processor_ride_out_a_database_restart() {
    // A server of the test's own: restarting the shared one would break every other test.
    let mut cluster = match PgCluster::start().await {
        Ok(cluster) => cluster,
        Err(e) if std::env::var("INTERLOCK_REQUIRE_PG").as_deref() != Ok("1") => {
            eprintln!("notice: skipping, cannot start a PostgreSQL cluster: {e}");
            return;
        }
        Err(e) => panic!("cannot start a PostgreSQL cluster: {e}"),
    };
    let mut config = PgConfig::new(cluster.url());
    config.max_connections = 16;
    config.acquire_timeout = Duration::from_secs(2);
    config.poll_interval = Duration::from_millis(200);
    let store = PgEventStore::connect_with(config).await.unwrap();
    let seen = Seen::default();
    let app = processor_app(&store, seen.clone()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(WriterLog::default());
    let writers: Vec<_> = (0..8)
        .map(|w| {
            tokio::spawn(writer(
                store.clone(),
                w,
                stop.clone(),
                log.clone(),
                Duration::from_millis(2),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_restart = log.acknowledged.lock().unwrap().len();
    assert!(
        before_restart > 0,
        "writers were writing before the restart"
    );
    // Kill the server mid-write (immediate: every backend dies, recovery replays the WAL),
    // keep it down a moment, start it again.
    // Down for longer than the acquire timeout, so every writer meets the outage.
    cluster.stop(StopMode::Immediate).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start_again().await.unwrap();
    let restarted = Instant::now();
    let at_restart = log.acknowledged.lock().unwrap().len();

    // The writers get going again.
    eventually("writers resumed", Duration::from_secs(30), || {
        log.acknowledged.lock().unwrap().len() > at_restart + 200
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
        "{} events acknowledged, {unavailable} Unavailable errors, {} recognised retries",
        acknowledged.len(),
        log.recognised_retries.load(Ordering::SeqCst)
    );
    eprintln!("causes: {:?}", log.causes.lock().unwrap());
    assert!(unavailable > 0, "the restart reached the writers");

    // Every acknowledged append once, nothing else; each stream's versions without holes.
    assert_stored_once(&store, &acknowledged).await;
    for w in 0..8 {
        let events = store
            .read_stream(&stream(&format!("writer-{w}")), 1, None)
            .await
            .unwrap();
        assert!(
            events
                .iter()
                .enumerate()
                .all(|(i, e)| e.stream_version == i as u64 + 1)
        );
    }

    // The processor saw everything once, then its checkpoint sits at the head.
    eventually("processor caught up", Duration::from_secs(30), || {
        seen.delivered() >= acknowledged.len()
    })
    .await;
    let head = store.head_position().await.unwrap();
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
    drop(cluster);
}

// ---------------------------------------------------------------------------------------------
// #19 listener connection loss
// ---------------------------------------------------------------------------------------------

/// Collects a subscription's events until dropped; errors are counted and waited out.
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
                    Ok(event) => {
                        *seen
                            .counts
                            .lock()
                            .unwrap()
                            .entry(event.event_id)
                            .or_default() += 1;
                    }
                    Err(e) => {
                        assert!(e.is_transient(), "subscription failed untyped: {e:?}");
                        errors.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    (seen, errors, task)
}

/// The listeners of a schema's stores (their connections are named for it).
async fn listeners(admin: &PgEventStore, schema: &str) -> Vec<i32> {
    sqlx_core::query::query(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'interlock-listen:' || $1",
    )
    .bind(schema)
    .fetch_all(admin.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Waits up to 10 s until the schema has `n` listeners.
async fn wait_for_listeners(admin: &PgEventStore, schema: &str, n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if listeners(admin, schema).await.len() == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: CI runs it with --include-ignored"]
async fn row19_subscribers_and_processors_survive_losing_the_listener() {
    let Some(writers_store) = common::store_with(|mut c| {
        c.max_connections = 12;
        c
    })
    .await
    else {
        return;
    };
    let schema = writers_store.schema().to_owned();
    // The reader is another "process": only its LISTEN connection (or its slow fallback poll)
    // tells it about the writers' appends.
    let (proxy, reader) = proxied(&writers_store, |c| {
        c.poll_interval = Duration::from_secs(2);
    })
    .await;
    assert!(
        wait_for_listeners(&writers_store, &schema, 2).await,
        "both stores listen"
    );
    let (subscribed, subscription_errors, subscriber) =
        collect(reader.subscribe_all(Position::START));
    let processed = Seen::default();
    let app = processor_app(&reader, processed.clone()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(WriterLog::default());
    let writers: Vec<_> = (0..8)
        .map(|w| {
            tokio::spawn(writer(
                writers_store.clone(),
                w,
                stop.clone(),
                log.clone(),
                Duration::from_millis(10),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Kill the LISTEN connections and keep the reader's from coming back for 5 s: no
    // notification reaches it meanwhile.
    let found = listeners(&writers_store, &schema).await;
    assert_eq!(
        found.len(),
        2,
        "the writers' and the reader's listener: {found:?}"
    );
    proxy.refuse_new_for(Duration::from_secs(5));
    for pid in found {
        sqlx_core::query::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(writers_store.pool())
            .await
            .unwrap();
    }
    let blackout = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The reader's listener comes back once connections are let through.
    assert!(
        wait_for_listeners(&writers_store, &schema, 2).await,
        "the LISTEN connections came back"
    );
    eprintln!("listeners back {:?} after the kill", blackout.elapsed());
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        bounded("writer", w).await.unwrap();
    }
    let acknowledged = check_writers(&log);

    eventually("subscriber caught up", Duration::from_secs(30), || {
        subscribed.delivered() >= acknowledged.len()
    })
    .await;
    eventually("processor caught up", Duration::from_secs(30), || {
        processed.delivered() >= acknowledged.len()
    })
    .await;

    // Woken by notifications again, not by the 2 s poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = test_event(42);
    let appended = Instant::now();
    writers_store
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
        latency < Duration::from_millis(1500),
        "the listener wakes the subscriber again: {latency:?}"
    );

    bounded("wait_for", app.wait_for(appended_position(&reader).await))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    subscribed.assert_exactly_once(&everything_acknowledged, "the subscriber");
    processed.assert_exactly_once(&everything_acknowledged, "the processor");
    assert_stored_once(&writers_store, &everything_acknowledged).await;

    subscriber.abort();
    app.shutdown().await.unwrap();
    common::drop_schema(&writers_store).await;
}

async fn appended_position(store: &PgEventStore) -> Position {
    store.head_position().await.unwrap()
}
