//! The read side: durable delivery, checkpoints, inline mode, parking, replay, rebuild, queries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interlock_runtime::core::{EventStore, NewEvent, Position, StreamId};
use interlock_runtime::prelude::*;
use interlock_runtime::processor::{FailurePolicy, RebuildProgress, RetryPolicy};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Deposit {
    account: String,
    amount: u64,
}
impl Command for Deposit {
    type Output = ();
    const TYPE_NAME: &'static str = "Deposit";
    fn aggregate_id(&self) -> AggregateId {
        self.account.as_str().into()
    }
}

#[derive(Serialize, Deserialize, Clone)]
struct Deposited {
    amount: u64,
}
impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
}

#[derive(Serialize, Deserialize)]
struct Renamed {
    name: String,
}
impl Event for Renamed {
    const TYPE_NAME: &'static str = "Renamed";
}

#[derive(Default)]
struct Account;
impl Aggregate for Account {
    const TYPE_NAME: &'static str = "Account";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes.creating_command::<Deposit>().event::<Deposited>();
    }
}
impl HandlesCommand<Deposit> for Account {
    async fn handle(&mut self, cmd: Deposit, _: &CommandContext) -> Result<(), DomainError> {
        self.emit(Deposited { amount: cmd.amount });
        Ok(())
    }
}
impl AppliesEvent<Deposited> for Account {
    fn apply(&mut self, _: &Deposited) {}
}

/// Sums deposits per account; fails on amount 13 until `fixed` is set; logs every delivery.
#[derive(Clone, Default)]
struct Totals {
    totals: HashMap<String, u64>,
    deliveries: Arc<Mutex<Vec<Position>>>,
    fixed: Arc<AtomicBool>,
}

struct TotalOf(String);
impl Query for TotalOf {
    type Output = Option<u64>;
    const TYPE_NAME: &'static str = "TotalOf";
}

impl EventProcessor for Totals {
    const NAME: &'static str = "totals";
    fn configure(routes: &mut ProcessorRoutes<Self>) {
        routes.event::<Deposited>().query::<TotalOf>();
    }
    async fn reset(&mut self) -> Result<(), HandlerError> {
        self.totals.clear();
        Ok(())
    }
}
impl HandlesEvent<Deposited> for Totals {
    async fn handle(&mut self, e: Deposited, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        if e.amount == 13 && !self.fixed.load(Ordering::SeqCst) {
            return Err(HandlerError::new("13 is unlucky"));
        }
        self.deliveries.lock().unwrap().push(ctx.position());
        *self
            .totals
            .entry(ctx.stream_id().id().to_owned())
            .or_default() += e.amount;
        Ok(())
    }
}
impl AnswersQuery<TotalOf> for Totals {
    async fn answer(&self, q: TotalOf) -> Result<Option<u64>, HandlerError> {
        Ok(self.totals.get(&q.0).copied())
    }
}

fn fast_retry() -> ProcessorSettings {
    ProcessorSettings::new().retry(RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    })
}

fn app(store: &InMemoryEventStore, totals: Totals, settings: ProcessorSettings) -> Application {
    Application::builder()
        .with_event_store(store.clone())
        .register_aggregate::<Account>()
        .register_projection_with(totals, settings)
        .build()
        .unwrap()
}

async fn deposit(app: &Application, account: &str, amount: u64) -> Position {
    app.dispatch_with(
        Deposit {
            account: account.into(),
            amount,
        },
        DispatchOptions::new(),
    )
    .await
    .unwrap()
    .position
    .unwrap()
}

async fn wait(app: &Application, position: Position) {
    tokio::time::timeout(Duration::from_secs(10), app.wait_for(position))
        .await
        .expect("processors caught up in time")
        .unwrap();
}

#[tokio::test]
async fn a_late_processor_sees_every_earlier_event_exactly_once() {
    let store = InMemoryEventStore::new();
    let writer = Application::builder()
        .with_event_store(store.clone())
        .register_aggregate::<Account>()
        .build()
        .unwrap();
    for i in 0..1200u64 {
        deposit(&writer, &format!("acc-{}", i % 7), 1).await;
    }
    let totals = Totals::default();
    let deliveries = totals.deliveries.clone();
    let reader = app(&store, totals, fast_retry().batch_size(100));
    reader.start().await.unwrap();
    let head = store.head_position().await.unwrap();
    wait(&reader, head).await;
    let seen = deliveries.lock().unwrap().clone();
    assert_eq!(seen.len(), 1200);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    let sum: u64 = futures_sum(&reader).await;
    assert_eq!(sum, 1200);

    // Live events after the catch-up arrive too, and queries see them after wait_for.
    let p = deposit(&reader, "acc-0", 100).await;
    wait(&reader, p).await;
    assert!(
        reader
            .query(TotalOf("acc-0".into()))
            .await
            .unwrap()
            .unwrap()
            > 100
    );
    reader.shutdown().await.unwrap();
}

async fn futures_sum(app: &Application) -> u64 {
    let mut sum = 0;
    for i in 0..7 {
        sum += app
            .query(TotalOf(format!("acc-{i}")))
            .await
            .unwrap()
            .unwrap_or(0);
    }
    sum
}

#[tokio::test]
async fn a_restart_resumes_from_the_checkpoint() {
    let store = InMemoryEventStore::new();
    let deliveries = Arc::new(Mutex::new(Vec::new()));
    let first = app(
        &store,
        Totals {
            deliveries: deliveries.clone(),
            ..Totals::default()
        },
        fast_retry().batch_size(10),
    );
    first.start().await.unwrap();
    let mut last = Position::START;
    for i in 100..150 {
        last = deposit(&first, "a", i).await;
    }
    wait(&first, last).await;
    first.shutdown().await.unwrap();
    for i in 150..180 {
        deposit(&first_writer(&store), "a", i).await;
    }

    let second = app(
        &store,
        Totals {
            deliveries: deliveries.clone(),
            ..Totals::default()
        },
        fast_retry().batch_size(10),
    );
    second.start().await.unwrap();
    let head = store.head_position().await.unwrap();
    wait(&second, head).await;
    let seen = deliveries.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        80,
        "no event missed, none delivered twice after a clean stop"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    // The second instance only saw what came after the checkpoint.
    assert_eq!(
        second.query(TotalOf("a".into())).await.unwrap(),
        Some((150..180).sum())
    );
    second.shutdown().await.unwrap();
}

fn first_writer(store: &InMemoryEventStore) -> Application {
    Application::builder()
        .with_event_store(store.clone())
        .register_aggregate::<Account>()
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_crash_before_the_checkpoint_redelivers_at_most_one_batch() {
    let store = InMemoryEventStore::new();
    let writer = first_writer(&store);
    for i in 100..125 {
        deposit(&writer, "a", i).await;
    }
    // A "crashed" instance handled events 1..=25 but its last checkpoint says 20.
    use interlock_runtime::core::side::CheckpointStore;
    store
        .save_checkpoint("totals", Position::from_sequence(20))
        .await
        .unwrap();
    let totals = Totals::default();
    let deliveries = totals.deliveries.clone();
    let restarted = app(&store, totals, fast_retry().batch_size(10));
    restarted.start().await.unwrap();
    wait(&restarted, store.head_position().await.unwrap()).await;
    let seen = deliveries.lock().unwrap().clone();
    // At-least-once: the 5 events after the checkpoint are delivered again, counted, no more.
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0], Position::from_sequence(21));
    restarted.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_poison_event_is_parked_the_rest_flow_and_replay_works_after_a_fix() {
    let store = InMemoryEventStore::new();
    let totals = Totals::default();
    let fixed = totals.fixed.clone();
    let app = app(&store, totals, fast_retry());
    app.start().await.unwrap();
    deposit(&app, "a", 1).await;
    let poison = deposit(&app, "b", 13).await;
    let last = deposit(&app, "c", 2).await;
    wait(&app, last).await;

    assert_eq!(app.query(TotalOf("a".into())).await.unwrap(), Some(1));
    assert_eq!(app.query(TotalOf("c".into())).await.unwrap(), Some(2));
    assert_eq!(app.query(TotalOf("b".into())).await.unwrap(), None);
    let letters = app.dead_letters(Some("totals")).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].position, poison);
    assert_eq!(letters[0].attempts, 3);
    assert_eq!(letters[0].error, "13 is unlucky");
    assert_eq!(letters[0].stream_id, StreamId::new("Account", "b").unwrap());

    // Still broken: replay fails, the letter stays with more attempts.
    assert!(app.replay_dead_letter(letters[0].id).await.is_err());
    let letters = app.dead_letters(None).await.unwrap();
    assert_eq!(letters[0].attempts, 6);

    fixed.store(true, Ordering::SeqCst);
    app.replay_dead_letter(letters[0].id).await.unwrap();
    assert_eq!(app.query(TotalOf("b".into())).await.unwrap(), Some(13));
    assert!(app.dead_letters(None).await.unwrap().is_empty());
    assert!(matches!(
        app.replay_dead_letter(letters[0].id).await,
        Err(Error::DeadLetterNotFound { .. })
    ));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_stop_policy_stops_at_the_poison_event() {
    let store = InMemoryEventStore::new();
    let app = app(
        &store,
        Totals::default(),
        fast_retry().on_failure(FailurePolicy::Stop),
    );
    app.start().await.unwrap();
    deposit(&app, "a", 1).await;
    deposit(&app, "a", 13).await;
    let last = deposit(&app, "a", 2).await;
    let err = tokio::time::timeout(Duration::from_secs(10), app.wait_for(last))
        .await
        .unwrap()
        .unwrap_err();
    match err {
        Error::ProcessorStopped(failure) => {
            assert_eq!(failure.stream_version, 2);
            assert_eq!(failure.event_type, "Deposited");
        }
        other => panic!("expected ProcessorStopped, got {other:?}"),
    }
    assert_eq!(app.query(TotalOf("a".into())).await.unwrap(), Some(1));
    use interlock_runtime::core::side::CheckpointStore;
    assert_eq!(
        store.load_checkpoint("totals").await.unwrap(),
        Some(Position::from_sequence(1)),
        "the checkpoint stays before the failing event"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn inline_processors_run_before_dispatch_returns() {
    let store = InMemoryEventStore::new();
    let app = app(
        &store,
        Totals::default(),
        ProcessorSettings::inline().retry(RetryPolicy::none()),
    );
    deposit(&app, "a", 5).await;
    assert_eq!(
        app.query(TotalOf("a".into())).await.unwrap(),
        Some(5),
        "no wait needed"
    );

    let err = app
        .dispatch(Deposit {
            account: "a".into(),
            amount: 13,
        })
        .await
        .unwrap_err();
    match &err {
        Error::Processing {
            failures,
            committed: Some(_),
        } => assert_eq!(failures[0].processor, "totals"),
        other => panic!("expected a processing error, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("the command's events are committed"),
        "{err}"
    );
    assert_eq!(
        store
            .stream_version(&StreamId::new("Account", "a").unwrap())
            .await
            .unwrap(),
        2,
        "the events stay committed"
    );
    // Other streams keep flowing; later events of "a" wait behind its parked one, in order.
    deposit(&app, "b", 1).await;
    assert_eq!(app.query(TotalOf("b".into())).await.unwrap(), Some(1));
    let held = app
        .dispatch(Deposit {
            account: "a".into(),
            amount: 1,
        })
        .await
        .unwrap_err();
    match &held {
        Error::Processing { failures, .. } => {
            assert_eq!(failures[0].attempts, 0, "held, not tried");
            assert!(failures[0].error.contains("held behind"), "{held}");
        }
        other => panic!("expected the event to be held, got {other:?}"),
    }
    assert_eq!(app.query(TotalOf("a".into())).await.unwrap(), Some(5));
}

#[tokio::test]
async fn a_rebuild_gives_the_same_read_model_as_live_processing() {
    let store = InMemoryEventStore::new();
    let totals = Totals::default();
    let app = app(&store, totals, fast_retry().batch_size(64));
    app.start().await.unwrap();
    let mut last = Position::START;
    for i in 100..600u64 {
        last = deposit(&app, &format!("acc-{}", i % 7), i).await;
    }
    wait(&app, last).await;
    let live: Vec<_> =
        futures::future::join_all((0..7).map(|i| app.query(TotalOf(format!("acc-{i}")))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();

    let mut reports = Vec::new();
    let done = app
        .rebuild("totals", |p: RebuildProgress| reports.push(p))
        .await
        .unwrap();
    assert_eq!(done.processed, 500);
    assert_eq!(done.position, last);
    assert!(
        reports.len() >= 8,
        "progress after each batch: {}",
        reports.len()
    );
    assert!(reports.windows(2).all(|w| w[0].processed <= w[1].processed));
    let rebuilt: Vec<_> =
        futures::future::join_all((0..7).map(|i| app.query(TotalOf(format!("acc-{i}")))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert_eq!(live, rebuilt);

    // Live delivery goes on after the rebuild without double counting.
    let p = deposit(&app, "acc-0", 1_000_000).await;
    wait(&app, p).await;
    assert_eq!(
        app.query(TotalOf("acc-0".into())).await.unwrap(),
        live[0].map(|t| t + 1_000_000)
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn processors_skip_event_types_they_do_not_handle() {
    let store = InMemoryEventStore::new();
    store
        .append(
            &StreamId::new("Profile", "1").unwrap(),
            interlock_runtime::core::ExpectedVersion::Any,
            vec![NewEvent::from_event(&Renamed { name: "x".into() }).unwrap()],
        )
        .await
        .unwrap();
    let app = app(&store, Totals::default(), ProcessorSettings::inline());
    app.start().await.unwrap();
    deposit(&app, "a", 3).await;
    assert_eq!(app.query(TotalOf("a".into())).await.unwrap(), Some(3));
    assert!(app.dead_letters(None).await.unwrap().is_empty());
    assert_eq!(
        app.processor_positions(),
        vec![("totals", store.head_position().await.unwrap())]
    );
}

#[tokio::test]
async fn queries_without_a_projection_and_duplicate_answers_are_errors() {
    struct Nobody;
    impl Query for Nobody {
        type Output = ();
        const TYPE_NAME: &'static str = "Nobody";
    }
    let app = app(&InMemoryEventStore::new(), Totals::default(), fast_retry());
    assert!(matches!(
        app.query(Nobody).await,
        Err(Error::NoQueryHandler { query: "Nobody" })
    ));

    #[derive(Default)]
    struct Copycat;
    impl EventProcessor for Copycat {
        const NAME: &'static str = "totals";
        fn configure(routes: &mut ProcessorRoutes<Self>) {
            routes.event::<Deposited>().query::<TotalOf>();
        }
    }
    impl HandlesEvent<Deposited> for Copycat {
        async fn handle(&mut self, _: Deposited, _: &EventContext<'_>) -> Result<(), HandlerError> {
            Ok(())
        }
    }
    impl AnswersQuery<TotalOf> for Copycat {
        async fn answer(&self, _: TotalOf) -> Result<Option<u64>, HandlerError> {
            Ok(None)
        }
    }
    let err = Application::builder()
        .register_projection(Totals::default())
        .register_projection(Copycat)
        .build()
        .unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.contains("query TotalOf is answered by both totals and totals"))
    );
    assert!(
        err.problems
            .iter()
            .any(|p| p.contains("two processors are named totals"))
    );
}

#[tokio::test]
async fn a_processor_without_reset_refuses_a_rebuild() {
    #[derive(Default)]
    struct Mailer;
    impl EventProcessor for Mailer {
        const NAME: &'static str = "mailer";
        fn configure(routes: &mut ProcessorRoutes<Self>) {
            routes.event::<Deposited>();
        }
    }
    impl HandlesEvent<Deposited> for Mailer {
        async fn handle(&mut self, _: Deposited, _: &EventContext<'_>) -> Result<(), HandlerError> {
            Ok(())
        }
    }
    let app = Application::builder()
        .register_aggregate::<Account>()
        .register_event_processor(Mailer)
        .build()
        .unwrap();
    let err = app.rebuild("mailer", |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("mailer cannot be reset"), "{err}");
    assert!(matches!(
        app.rebuild("nope", |_| {}).await,
        Err(Error::ProcessorNotFound { .. })
    ));
}

#[tokio::test]
async fn in_memory_views_replay_everything_on_start_when_asked() {
    let store = InMemoryEventStore::new();
    let settings = fast_retry().replay_on_start();
    let first = app(&store, Totals::default(), settings);
    first.start().await.unwrap();
    let last = deposit(&first, "a", 5).await;
    wait(&first, last).await;
    first.shutdown().await.unwrap();

    // A restart: a new, empty in-memory view. With durable checkpoints it would resume after
    // the deposit and show nothing; replaying on start rebuilds it.
    let second = app(&store, Totals::default(), settings);
    second.start().await.unwrap();
    let last = deposit(&second, "a", 1).await;
    wait(&second, last).await;
    assert_eq!(second.query(TotalOf("a".into())).await.unwrap(), Some(6));
    use interlock_runtime::core::side::CheckpointStore;
    assert_eq!(
        store.load_checkpoint("totals").await.unwrap(),
        None,
        "the store holds no checkpoint for it"
    );
    second.shutdown().await.unwrap();
}

/// RELIABILITY.md #12: a poison event parks its stream's later events behind it, in order, while
/// other streams keep flowing; a replay after the fix applies the parked event and then the held
/// ones, in stream order, and the stream flows again.
#[tokio::test]
async fn a_poison_event_holds_its_stream_in_order_until_replayed() {
    let store = InMemoryEventStore::new();
    let totals = Totals::default();
    let deliveries = totals.deliveries.clone();
    let fixed = totals.fixed.clone();
    let app = app(&store, totals, fast_retry().batch_size(3));
    app.start().await.unwrap();
    let mut s_positions = Vec::new();
    for (account, amount) in [
        ("s", 1),
        ("t", 10),
        ("s", 13),
        ("u", 100),
        ("s", 2),
        ("t", 20),
        ("s", 3),
        ("u", 200),
    ] {
        let position = deposit(&app, account, amount).await;
        if account == "s" {
            s_positions.push(position);
        }
    }
    wait(&app, store.head_position().await.unwrap()).await;
    assert_eq!(app.query(TotalOf("t".into())).await.unwrap(), Some(30));
    assert_eq!(app.query(TotalOf("u".into())).await.unwrap(), Some(300));
    assert_eq!(app.query(TotalOf("s".into())).await.unwrap(), Some(1));

    let letters = app.dead_letters(Some("totals")).await.unwrap();
    let summary: Vec<_> = letters
        .iter()
        .map(|l| (l.stream_id.id().to_owned(), l.stream_version, l.attempts))
        .collect();
    assert_eq!(
        summary,
        vec![("s".into(), 2, 3), ("s".into(), 3, 0), ("s".into(), 4, 0)],
        "the poison event after its 3 attempts, then the held ones, untried"
    );
    assert!(letters[0].error.contains("13 is unlucky"));
    assert!(letters[1].error.contains("held behind"));

    // Replaying before the fix fails again and keeps everything in place.
    assert!(app.replay_dead_letter(letters[1].id).await.is_err());
    assert_eq!(app.dead_letters(Some("totals")).await.unwrap().len(), 3);

    fixed.store(true, Ordering::SeqCst);
    // Replaying any letter of the stream starts from its oldest.
    app.replay_dead_letter(letters[2].id).await.unwrap();
    assert!(app.dead_letters(Some("totals")).await.unwrap().is_empty());
    assert_eq!(app.query(TotalOf("s".into())).await.unwrap(), Some(19));
    let s_seen: Vec<Position> = deliveries
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|p| s_positions.contains(p))
        .collect();
    assert_eq!(s_seen, s_positions, "stream s handled once each, in order");

    // The stream is no longer held.
    let next = deposit(&app, "s", 4).await;
    wait(&app, next).await;
    assert_eq!(app.query(TotalOf("s".into())).await.unwrap(), Some(23));
    assert!(app.dead_letters(Some("totals")).await.unwrap().is_empty());
    app.shutdown().await.unwrap();
}

/// A held stream stays held across a restart (the index is rebuilt from the stored letters).
#[tokio::test]
async fn a_held_stream_stays_held_after_a_restart() {
    let store = InMemoryEventStore::new();
    let first = app(&store, Totals::default(), fast_retry());
    first.start().await.unwrap();
    deposit(&first, "s", 13).await;
    let head = deposit(&first, "s", 1).await;
    wait(&first, head).await;
    first.shutdown().await.unwrap();
    assert_eq!(first.dead_letters(None).await.unwrap().len(), 2);

    let second = app(&store, Totals::default(), fast_retry());
    second.start().await.unwrap();
    let head = deposit(&second, "s", 5).await;
    wait(&second, head).await;
    let letters = second.dead_letters(None).await.unwrap();
    assert_eq!(
        letters.iter().map(|l| l.stream_version).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "the new event waits behind the old ones"
    );
    second.shutdown().await.unwrap();
}
