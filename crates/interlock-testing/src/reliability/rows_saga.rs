//! Row 18: a saga that crashes between sending a command and saving its state.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use interlock_core::side::IdempotencyClaim;
use interlock_core::{
    EventId, EventStore, ExpectedVersion, NewEvent, SideStores, StoreError, StreamId,
};
use interlock_runtime::processor::RetryPolicy;
use interlock_runtime::saga::{DeadlineReached, DeadlineScheduled, Saga};
use interlock_runtime::{Application, FakeClock, ProcessorSettings};
use tokio::sync::Barrier;

use super::domain::{
    CrashAfterCommit, Deposited, TRANSFER_DEADLINE, TransferRequested, TransferState, Transfers,
};
use super::{WAIT, ledger_app, ledger_stream, settle, shared, side_of};

const SAGA: &str = Transfers::NAME;

fn saga_app(
    store: &Arc<dyn EventStore>,
    clock: &FakeClock,
    saga: Transfers,
    crash: Option<CrashAfterCommit>,
) -> Application {
    let mut builder = ledger_app(store).with_clock(clock.clone());
    if let Some(crash) = crash {
        builder = builder.register_middleware(crash);
    }
    builder
        .register_saga_with(
            saga,
            ProcessorSettings::new().retry(RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(5),
            }),
        )
        .build()
        .expect("app")
}

/// Appends a transfer request (the event that starts the saga); returns its event id.
async fn request(
    store: &Arc<dyn EventStore>,
    transfer: &str,
    account: &str,
    amount: u64,
) -> EventId {
    let event = NewEvent::from_event(&TransferRequested {
        transfer: transfer.into(),
        account: account.into(),
        amount,
    })
    .expect("event");
    let id = event.event_id;
    store
        .append(
            &StreamId::new("Transfer", transfer).expect("stream"),
            ExpectedVersion::NoStream,
            vec![event],
        )
        .await
        .expect("request");
    id
}

/// The stored saga document of `key` and its version.
async fn saga_doc(side: &SideStores, key: &str) -> Option<(serde_json::Value, u64)> {
    side.sagas
        .load_saga(SAGA, key)
        .await
        .expect("load saga")
        .map(|s| {
            (
                serde_json::from_slice(&s.state).expect("saga document is JSON"),
                s.version,
            )
        })
}

fn state_of(doc: &serde_json::Value) -> TransferState {
    serde_json::from_value(doc["state"].clone()).expect("transfer state")
}

/// The deterministic idempotency key of the first command a step sends for `event`.
fn command_key(transfer: &str, event: EventId) -> String {
    format!("saga:{SAGA}:{transfer}:{}:0", event.as_uuid())
}

async fn deposits_of(
    store: &Arc<dyn EventStore>,
    account: &str,
) -> Vec<interlock_core::RecordedEvent> {
    store
        .read_stream(&ledger_stream(account), 1, None)
        .await
        .expect("read")
}

/// Waits (bounded) until `check` holds.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} (waited {limit:?})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the deadline stream of the saga holds: (scheduled, reached).
async fn deadline_events(store: &Arc<dyn EventStore>) -> (usize, usize) {
    let events = store
        .read_stream(&StreamId::new("$deadlines", SAGA).expect("stream"), 1, None)
        .await
        .expect("read deadlines");
    let count = |name: &str| events.iter().filter(|e| e.event_type == name).count();
    (
        count(<DeadlineScheduled as interlock_core::Event>::TYPE_NAME),
        count(<DeadlineReached as interlock_core::Event>::TYPE_NAME),
    )
}

/// After a restart: the request was handled once, its deposit applied once with the saga's
/// deterministic key, the answer recorded from the original command.
async fn assert_sent_once(
    store: &Arc<dyn EventStore>,
    side: &SideStores,
    transfer: &str,
    account: &str,
    request_id: EventId,
    amount: u64,
) {
    let deposits = deposits_of(store, account).await;
    assert_eq!(
        deposits.len(),
        1,
        "the command was applied once: {deposits:#?}"
    );
    assert_eq!(
        deposits[0].decode::<Deposited>().expect("a deposit").amount,
        amount
    );
    assert_eq!(
        deposits[0].causation_id,
        Some(*request_id.as_uuid()),
        "caused by the request"
    );
    let (doc, version) = saga_doc(side, transfer)
        .await
        .expect("the saga state is saved");
    let handled: Vec<String> = serde_json::from_value(doc["handled"].clone()).expect("handled");
    assert_eq!(
        handled,
        vec![request_id.as_uuid().to_string()],
        "the step ran once"
    );
    assert_eq!(version, 1, "saved once");
    let sent = doc["sent"].as_array().expect("sent commands");
    assert_eq!(sent.len(), 1, "{doc}");
    assert_eq!(
        sent[0]["key"].as_str(),
        Some(command_key(transfer, request_id).as_str()),
        "re-sent with the same deterministic id"
    );
    assert_eq!(
        state_of(&doc).balance_seen,
        Some(amount),
        "the original answer"
    );
    match side
        .idempotency
        .claim(&command_key(transfer, request_id))
        .await
        .expect("claim")
    {
        IdempotencyClaim::Completed(_) => {}
        other => panic!("the command's key is completed, got {other:?}"),
    }
    assert_eq!(
        deadline_events(store).await,
        (1, 0),
        "the deadline was armed once"
    );
}

/// RELIABILITY.md #18, crash after sending: the request step sends its deposit (committed and
/// acknowledged), then the process dies (the step panics, killing the processor task) before
/// the saga's state commits. The application is shut down and built again over the same store.
/// The step runs again, re-sends the command with the same deterministic id and gets the
/// original answer: the deposit is applied once, the state saved once, the deadline armed once.
pub async fn row18_a_saga_crash_after_sending_resends_once<S: EventStore>(store: S) {
    let store = shared(store);
    let side = side_of(&store);
    let clock = FakeClock::at(chrono::Utc::now());
    let crashing = Transfers::default();
    crashing.crash_after_send.store(true, Ordering::SeqCst);
    let runs = crashing.request_runs.clone();
    let first = saga_app(&store, &clock, crashing, None);
    first.start().await.expect("start");
    let request_id = request(&store, "t1", "alice", 25).await;
    eventually("the deposit is sent", WAIT, || async {
        deposits_of(&store, "alice").await.len() == 1
    })
    .await;
    let key = command_key("t1", request_id);
    eventually("the command's result is recorded", WAIT, || async {
        matches!(
            side.idempotency.claim(&key).await,
            Ok(IdempotencyClaim::Completed(_))
        )
    })
    .await;
    eventually("the step crashed", WAIT, || async {
        runs.load(Ordering::SeqCst) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        saga_doc(&side, "t1").await.is_none(),
        "the crash came before the saga's state was saved"
    );
    first.shutdown().await.expect("shutdown after the crash");
    drop(first);

    let again = Transfers::default();
    let runs = again.request_runs.clone();
    let second = saga_app(&store, &clock, again, None);
    second.start().await.expect("restart");
    settle(&second).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the step ran again after the restart"
    );
    assert_sent_once(&store, &side, "t1", "alice", request_id, 25).await;
    second.shutdown().await.expect("shutdown");
}

/// RELIABILITY.md #18, crash inside the send: the deposit commits, then the process dies
/// before the sender records the command's result (a middleware panics right after the
/// commit). After a restart the step runs again and must still apply the deposit once and
/// finish (within 20 s: a restarted process cannot wait out a dead process's claim).
pub async fn row18_a_crash_inside_the_send_resends_once<S: EventStore>(store: S) {
    let store = shared(store);
    let side = side_of(&store);
    let clock = FakeClock::at(chrono::Utc::now());
    let crash = CrashAfterCommit::default();
    crash.armed.store(true, Ordering::SeqCst);
    let first = saga_app(&store, &clock, Transfers::default(), Some(crash.clone()));
    first.start().await.expect("start");
    let request_id = request(&store, "t2", "carol", 40).await;
    eventually("the deposit commits", WAIT, || async {
        deposits_of(&store, "carol").await.len() == 1
    })
    .await;
    eventually("the sender crashed", WAIT, || async {
        !crash.armed.load(Ordering::SeqCst)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        saga_doc(&side, "t2").await.is_none(),
        "no state saved before the crash"
    );
    first.shutdown().await.expect("shutdown after the crash");
    drop(first);

    let second = saga_app(&store, &clock, Transfers::default(), None);
    second.start().await.expect("restart");
    eventually(
        "after the restart, the saga finishes its step (is it waiting for the dead \
         process's idempotency claim?)",
        WAIT,
        || async { saga_doc(&side, "t2").await.is_some() },
    )
    .await;
    settle(&second).await;
    assert!(
        second
            .dead_letters(Some(SAGA))
            .await
            .expect("dead letters")
            .is_empty(),
        "nothing parked"
    );
    assert_sent_once(&store, &side, "t2", "carol", request_id, 40).await;
    second.shutdown().await.expect("shutdown");
}

/// RELIABILITY.md #18, deadlines: a transfer arms a deadline one hour ahead (fake clock). It
/// does not fire early; the clock moves past it while no application runs; two applications
/// built after that "restart" fire due deadlines at the same time; the deadline is stored as
/// reached exactly once, further calls and later restarts fire nothing, and the saga receives
/// it once, also after another restart.
pub async fn row18_deadlines_fire_once_across_restarts<S: EventStore>(store: S) {
    let store = shared(store);
    let side = side_of(&store);
    let clock = FakeClock::at(chrono::Utc::now());
    let first = saga_app(&store, &clock, Transfers::default(), None);
    first.start().await.expect("start");
    request(&store, "t3", "dave", 5).await;
    settle(&first).await;
    assert_eq!(deadline_events(&store).await, (1, 0));
    assert_eq!(
        first.fire_due_deadlines().await.expect("fire"),
        0,
        "not due yet"
    );
    first.shutdown().await.expect("shutdown");
    drop(first);

    clock.advance(TRANSFER_DEADLINE + Duration::from_secs(60));
    let a = saga_app(&store, &clock, Transfers::default(), None);
    let b = saga_app(&store, &clock, Transfers::default(), None);
    let gate = Arc::new(Barrier::new(2));
    let fire = |app: Application, gate: Arc<Barrier>| async move {
        gate.wait().await;
        app.fire_due_deadlines().await.expect("fire")
    };
    let (fa, fb) = tokio::join!(
        tokio::spawn(fire(a.clone(), gate.clone())),
        tokio::spawn(fire(b.clone(), gate))
    );
    let fired = fa.expect("a") + fb.expect("b");
    assert!((1..=2).contains(&fired), "{fired}");
    assert_eq!(deadline_events(&store).await, (1, 1), "reached once");
    assert_eq!(a.fire_due_deadlines().await.expect("fire"), 0, "fires once");
    drop((a, b));

    let third = saga_app(&store, &clock, Transfers::default(), None);
    assert_eq!(
        third.fire_due_deadlines().await.expect("fire"),
        0,
        "nothing fires again after a restart"
    );
    third.start().await.expect("start");
    settle(&third).await;
    let (doc, _) = saga_doc(&side, "t3").await.expect("saga");
    assert_eq!(
        state_of(&doc).expired,
        1,
        "the saga received the deadline once"
    );
    third.shutdown().await.expect("shutdown");
    drop(third);

    let fourth = saga_app(&store, &clock, Transfers::default(), None);
    fourth.start().await.expect("start");
    settle(&fourth).await;
    let (doc, _) = saga_doc(&side, "t3").await.expect("saga");
    assert_eq!(
        state_of(&doc).expired,
        1,
        "still once after another restart"
    );
    assert_eq!(deadline_events(&store).await, (1, 1));
    fourth.shutdown().await.expect("shutdown");
}

/// RELIABILITY.md #18, a concurrent second instance: (1) 20 writers race to create the state of
/// one saga instance (expected version 0): one wins, the others get a conflict naming the
/// instance; (2) two applications run the same saga over one store at once, so every request
/// is handled by two runners: each deposit is applied once, each instance's state is saved
/// once (the second runner's save is rejected and its retry finds the step done), each
/// deadline armed once.
pub async fn row18_a_concurrent_second_saga_runner_is_rejected<S: EventStore>(store: S) {
    const RACERS: usize = 20;
    const TRANSFERS: usize = 10;
    let store = shared(store);
    let side = side_of(&store);
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (side, barrier) = (side.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            side.sagas
                .save_saga(
                    "rel-race",
                    "k",
                    0,
                    bytes::Bytes::from(format!("{{\"runner\":{i}}}")),
                )
                .await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        match tokio::time::timeout(WAIT, task)
            .await
            .expect("in time")
            .expect("no panic")
        {
            Ok(version) => {
                assert_eq!(version, 1);
                winners += 1;
            }
            Err(StoreError::Concurrency(e)) => {
                assert_eq!(e.stream, StreamId::new("rel-race", "k").expect("stream"));
                assert_eq!(e.expected, ExpectedVersion::Exact(0));
                assert_eq!(e.actual, 1);
            }
            Err(other) => panic!("a second instance must be a conflict: {other:?}"),
        }
    }
    assert_eq!(winners, 1, "one instance is created");

    let clock = FakeClock::at(chrono::Utc::now());
    let (ra, rb) = (Transfers::default(), Transfers::default());
    let (runs_a, runs_b) = (ra.request_runs.clone(), rb.request_runs.clone());
    let a = saga_app(&store, &clock, ra, None);
    let b = saga_app(&store, &clock, rb, None);
    a.start().await.expect("start a");
    b.start().await.expect("start b");
    let mut requests = Vec::new();
    for i in 0..TRANSFERS {
        let transfer = format!("c{i}");
        let id = request(&store, &transfer, &format!("acc-{i}"), 10 + i as u64).await;
        requests.push((transfer, id));
    }
    settle(&a).await;
    settle(&b).await;
    for (i, (transfer, id)) in requests.iter().enumerate() {
        let deposits = deposits_of(&store, &format!("acc-{i}")).await;
        assert_eq!(deposits.len(), 1, "transfer {transfer}: applied once");
        let (doc, version) = saga_doc(&side, transfer).await.expect("state");
        let handled: Vec<String> = serde_json::from_value(doc["handled"].clone()).expect("handled");
        assert_eq!(handled, vec![id.as_uuid().to_string()], "{transfer}");
        assert_eq!(
            version, 1,
            "{transfer}: saved once, the second save was rejected"
        );
        assert_eq!(
            state_of(&doc).balance_seen,
            Some(10 + i as u64),
            "{transfer}"
        );
    }
    assert_eq!(deadline_events(&store).await, (TRANSFERS, 0));
    assert!(
        runs_a.load(Ordering::SeqCst) + runs_b.load(Ordering::SeqCst) >= TRANSFERS,
        "every request was handled"
    );
    a.shutdown().await.expect("shutdown a");
    b.shutdown().await.expect("shutdown b");
}
