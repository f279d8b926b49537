//! Aggregates through the plain-trait path: routing, emit-then-apply, rollback, typed errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use interlock_runtime::core::{DecodeReason, EventStore, NewEvent, StreamId};
use interlock_runtime::prelude::*;
use interlock_runtime::{AggregateSettings, UnknownEventPolicy};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Open {
    id: String,
}
impl Command for Open {
    type Output = ();
    const TYPE_NAME: &'static str = "Open";
    fn aggregate_id(&self) -> AggregateId {
        self.id.as_str().into()
    }
}

#[derive(Serialize, Deserialize)]
struct Deposit {
    id: String,
    amounts: Vec<u64>,
}
impl Command for Deposit {
    type Output = Vec<u64>;
    const TYPE_NAME: &'static str = "Deposit";
    fn aggregate_id(&self) -> AggregateId {
        self.id.as_str().into()
    }
}

/// Emits one event, then fails: nothing may be stored and no copy may change.
#[derive(Serialize, Deserialize)]
struct DepositThenFail {
    id: String,
}
impl Command for DepositThenFail {
    type Output = ();
    const TYPE_NAME: &'static str = "DepositThenFail";
    fn aggregate_id(&self) -> AggregateId {
        self.id.as_str().into()
    }
}

#[derive(Serialize, Deserialize)]
struct EmitUnserializable {
    id: String,
}
impl Command for EmitUnserializable {
    type Output = ();
    const TYPE_NAME: &'static str = "EmitUnserializable";
    fn aggregate_id(&self) -> AggregateId {
        self.id.as_str().into()
    }
}

#[derive(Serialize, Deserialize)]
struct EmitUnapplied {
    id: String,
}
impl Command for EmitUnapplied {
    type Output = ();
    const TYPE_NAME: &'static str = "EmitUnapplied";
    fn aggregate_id(&self) -> AggregateId {
        self.id.as_str().into()
    }
}

#[derive(Serialize, Deserialize)]
struct Unrouted;
impl Command for Unrouted {
    type Output = ();
    const TYPE_NAME: &'static str = "Unrouted";
    fn aggregate_id(&self) -> AggregateId {
        "x".into()
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Opened;
impl Event for Opened {
    const TYPE_NAME: &'static str = "Opened";
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Deposited {
    amount: u64,
}
impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
}

/// Serializing a map with non-string keys fails in serde_json: a real unserialisable value.
#[derive(Serialize, Deserialize)]
struct Weird {
    map: std::collections::HashMap<(u8, u8), u8>,
}
impl Event for Weird {
    const TYPE_NAME: &'static str = "Weird";
}

#[derive(Serialize, Deserialize)]
struct Noted;
impl Event for Noted {
    const TYPE_NAME: &'static str = "Noted";
}

#[derive(Default, Debug)]
struct Account {
    open: bool,
    balance: u64,
}

impl Aggregate for Account {
    const TYPE_NAME: &'static str = "Account";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes
            .creating_command::<Open>()
            .command::<Deposit>()
            .command::<DepositThenFail>()
            .command::<EmitUnserializable>()
            .command::<EmitUnapplied>()
            .event::<Opened>()
            .event::<Deposited>()
            .event::<Weird>();
    }
}

impl HandlesCommand<Open> for Account {
    async fn handle(&mut self, _: Open, _: &CommandContext) -> Result<(), DomainError> {
        if self.open {
            return Err(DomainError::with_code(
                "already_open",
                "account is already open",
            ));
        }
        self.emit(Opened);
        Ok(())
    }
}

impl HandlesCommand<Deposit> for Account {
    async fn handle(&mut self, cmd: Deposit, _: &CommandContext) -> Result<Vec<u64>, DomainError> {
        let mut seen = Vec::new();
        for amount in cmd.amounts {
            // An await between emits: the scope must survive suspension points.
            tokio::task::yield_now().await;
            self.emit(Deposited { amount });
            seen.push(self.balance);
        }
        Ok(seen)
    }
}

impl HandlesCommand<DepositThenFail> for Account {
    async fn handle(&mut self, _: DepositThenFail, _: &CommandContext) -> Result<(), DomainError> {
        self.emit(Deposited { amount: 1_000 });
        Err(DomainError::new(format!(
            "refused after emitting; balance was {}",
            self.balance
        )))
    }
}

impl HandlesCommand<EmitUnserializable> for Account {
    async fn handle(
        &mut self,
        _: EmitUnserializable,
        _: &CommandContext,
    ) -> Result<(), DomainError> {
        self.emit(Deposited { amount: 1 });
        self.emit(Weird {
            map: [((1, 2), 3)].into_iter().collect(),
        });
        Ok(())
    }
}

impl HandlesCommand<EmitUnapplied> for Account {
    async fn handle(&mut self, _: EmitUnapplied, _: &CommandContext) -> Result<(), DomainError> {
        self.emit(Noted);
        Ok(())
    }
}

impl AppliesEvent<Opened> for Account {
    fn apply(&mut self, _: &Opened) {
        self.open = true;
    }
}
impl AppliesEvent<Deposited> for Account {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }
}
impl AppliesEvent<Weird> for Account {
    fn apply(&mut self, _: &Weird) {}
}

fn app_on(store: &InMemoryEventStore) -> Application {
    Application::builder()
        .with_event_store(store.clone())
        .register_aggregate::<Account>()
        .build()
        .expect("valid wiring")
}

fn stream(id: &str) -> StreamId {
    StreamId::new("Account", id).unwrap()
}

#[tokio::test]
async fn emit_applies_at_once_and_outputs_are_typed() {
    let store = InMemoryEventStore::new();
    let app = app_on(&store);
    app.dispatch(Open { id: "a".into() }).await.unwrap();
    let seen: Vec<u64> = app
        .dispatch(Deposit {
            id: "a".into(),
            amounts: vec![5, 7, 11],
        })
        .await
        .unwrap();
    assert_eq!(
        seen,
        vec![5, 12, 23],
        "each emit was visible on the next line"
    );
    let (state, version) = app.load_versioned::<Account>("a").await.unwrap();
    assert_eq!((state.balance, version), (23, 4));

    let events = store.read_stream(&stream("a"), 1, None).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, vec!["Opened", "Deposited", "Deposited", "Deposited"]);
    assert_eq!(
        events[3].decode::<Deposited>().unwrap(),
        Deposited { amount: 11 }
    );
    // One command, one correlation: every event of the dispatch shares it.
    assert!(
        events[1..]
            .iter()
            .all(|e| e.correlation_id == events[1].correlation_id)
    );
    assert_ne!(events[0].correlation_id, events[1].correlation_id);
}

#[tokio::test]
async fn a_failing_handler_leaves_nothing_behind() {
    let store = InMemoryEventStore::new();
    let app = app_on(&store);
    app.dispatch(Open { id: "a".into() }).await.unwrap();
    app.dispatch(Deposit {
        id: "a".into(),
        amounts: vec![10],
    })
    .await
    .unwrap();
    let head = store.head_position().await.unwrap();

    let err = app
        .dispatch(DepositThenFail { id: "a".into() })
        .await
        .unwrap_err();
    let domain = err.as_domain().expect("a domain error");
    assert_eq!(
        domain.to_string(),
        "refused after emitting; balance was 1010"
    );
    assert_eq!(
        store.head_position().await.unwrap(),
        head,
        "no event stored"
    );

    // The next command sees the state before the failed one: the cached copy was not kept.
    let seen = app
        .dispatch(Deposit {
            id: "a".into(),
            amounts: vec![1],
        })
        .await
        .unwrap();
    assert_eq!(seen, vec![11]);
    assert_eq!(app.load::<Account>("a").await.unwrap().balance, 11);
}

#[tokio::test]
async fn domain_errors_carry_codes() {
    let app = app_on(&InMemoryEventStore::new());
    app.dispatch(Open { id: "a".into() }).await.unwrap();
    let err = app.dispatch(Open { id: "a".into() }).await.unwrap_err();
    assert!(
        matches!(&err, Error::Domain(d) if d.code() == Some("already_open")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_non_creating_command_on_a_missing_instance_is_not_found() {
    let store = InMemoryEventStore::new();
    let app = app_on(&store);
    let err = app
        .dispatch(Deposit {
            id: "ghost".into(),
            amounts: vec![1],
        })
        .await
        .unwrap_err();
    match &err {
        Error::AggregateNotFound {
            aggregate_type,
            id,
            command,
        } => {
            assert_eq!(*aggregate_type, "Account");
            assert_eq!(id.as_str(), "ghost");
            assert_eq!(*command, Some("Deposit"));
        }
        other => panic!("expected AggregateNotFound, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "aggregate Account with id ghost not found (command Deposit does not create it)"
    );
    assert!(matches!(
        app.load::<Account>("ghost").await,
        Err(Error::AggregateNotFound { .. })
    ));
    assert_eq!(store.head_position().await.unwrap(), Position::START);
}

#[tokio::test]
async fn an_unserializable_event_fails_the_command_and_names_it() {
    let store = InMemoryEventStore::new();
    let app = app_on(&store);
    app.dispatch(Open { id: "a".into() }).await.unwrap();
    let err = app
        .dispatch(EmitUnserializable { id: "a".into() })
        .await
        .unwrap_err();
    match &err {
        Error::EventSerialization {
            index, event_type, ..
        } => assert_eq!((*index, *event_type), (2, "Weird")),
        other => panic!("expected EventSerialization, got {other:?}"),
    }
    assert!(err.to_string().contains("event #2 (Weird)"), "{err}");
    assert_eq!(store.stream_version(&stream("a")).await.unwrap(), 1);
    assert_eq!(app.load::<Account>("a").await.unwrap().balance, 0);
}

#[tokio::test]
async fn events_without_applier_follow_the_policy() {
    let store = InMemoryEventStore::new();
    let strict = app_on(&store);
    strict.dispatch(Open { id: "a".into() }).await.unwrap();
    let err = strict
        .dispatch(EmitUnapplied { id: "a".into() })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoApplier {
                event_type: "Noted",
                command: "EmitUnapplied",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.stream_version(&stream("a")).await.unwrap(), 1);

    let lenient = Application::builder()
        .with_event_store(store.clone())
        .register_aggregate_with::<Account>(
            AggregateSettings::new().unknown_events(UnknownEventPolicy::Ignore),
        )
        .build()
        .unwrap();
    lenient
        .dispatch(EmitUnapplied { id: "a".into() })
        .await
        .unwrap();
    assert_eq!(store.stream_version(&stream("a")).await.unwrap(), 2);
    assert!(lenient.load::<Account>("a").await.unwrap().open);
    // The strict application cannot load what it does not know, and says exactly what it is.
    let err = strict.load::<Account>("a").await.unwrap_err();
    match err {
        Error::Decode(e) => {
            assert_eq!((e.stream_version, e.event_type.as_str()), (2, "Noted"));
            assert_eq!(e.reason, DecodeReason::UnknownType);
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test]
async fn undecodable_stored_events_give_typed_errors() {
    let store = InMemoryEventStore::new();
    let app = app_on(&store);
    app.dispatch(Open { id: "a".into() }).await.unwrap();
    let mut bad = NewEvent::from_event(&Deposited { amount: 1 }).unwrap();
    bad.payload = Bytes::from_static(b"{\"amount\": \"lots\"}");
    store
        .append(&stream("a"), ExpectedVersion::Exact(1), vec![bad])
        .await
        .unwrap();
    let mut newer = NewEvent::from_event(&Deposited { amount: 1 }).unwrap();
    newer.schema_version = 9;
    store
        .append(&stream("b"), ExpectedVersion::NoStream, vec![newer])
        .await
        .unwrap();

    let err = app.load::<Account>("a").await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("Account/a")
            && message.contains("version 2")
            && message.contains("Deposited"),
        "{message}"
    );
    assert!(matches!(&err, Error::Decode(e) if matches!(e.reason, DecodeReason::Malformed(_))));
    // A command on the damaged aggregate fails the same way instead of acting on half a state.
    let err = app
        .dispatch(Deposit {
            id: "a".into(),
            amounts: vec![1],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");

    let err = app.load::<Account>("b").await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode(e) if e.reason == DecodeReason::NewerSchemaVersion { known: 1 }),
        "{err:?}"
    );
}

#[tokio::test]
async fn unknown_commands_and_aggregates_are_typed_errors() {
    let app = app_on(&InMemoryEventStore::new());
    let err = app.dispatch(Unrouted).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoHandler {
                command: "Unrouted"
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("Unrouted"));
    let err = app.load::<Other>("x").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::AggregateNotRegistered {
                aggregate_type: "Other"
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn concurrent_commands_on_one_instance_conflict_instead_of_losing_updates() {
    let app = app_on(&InMemoryEventStore::new());
    app.dispatch(Open { id: "a".into() }).await.unwrap();
    let ok = Arc::new(AtomicUsize::new(0));
    let conflicts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (app, ok, conflicts) = (app.clone(), ok.clone(), conflicts.clone());
        tasks.push(tokio::spawn(async move {
            match app
                .dispatch(Deposit {
                    id: "a".into(),
                    amounts: vec![1],
                })
                .await
            {
                Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                Err(e) if e.is_concurrency() => conflicts.fetch_add(1, Ordering::SeqCst),
                Err(e) => panic!("unexpected {e:?}"),
            };
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ok = ok.load(Ordering::SeqCst);
    assert_eq!(ok + conflicts.load(Ordering::SeqCst), 16);
    let balance = app.load::<Account>("a").await.unwrap().balance;
    assert_eq!(
        balance, ok as u64,
        "every acknowledged deposit counted once, nothing else"
    );
}

#[tokio::test]
async fn another_writer_never_makes_the_cache_stale() {
    let store = InMemoryEventStore::new();
    let first = app_on(&store);
    let second = app_on(&store);
    first.dispatch(Open { id: "a".into() }).await.unwrap();
    first
        .dispatch(Deposit {
            id: "a".into(),
            amounts: vec![1],
        })
        .await
        .unwrap();
    second
        .dispatch(Deposit {
            id: "a".into(),
            amounts: vec![10],
        })
        .await
        .unwrap();
    let seen = first
        .dispatch(Deposit {
            id: "a".into(),
            amounts: vec![100],
        })
        .await
        .unwrap();
    assert_eq!(seen, vec![111]);
}

#[tokio::test]
async fn shutdown_stops_dispatch() {
    let app = app_on(&InMemoryEventStore::new());
    app.start().await.unwrap();
    app.dispatch(Open { id: "a".into() }).await.unwrap();
    app.shutdown().await.unwrap();
    let err = app.dispatch(Open { id: "b".into() }).await.unwrap_err();
    assert!(matches!(err, Error::ShutDown));
    assert!(
        app.start().await.is_err(),
        "a shut-down application does not restart"
    );
}

#[derive(Default, Debug)]
struct Other;
impl Aggregate for Other {
    const TYPE_NAME: &'static str = "Other";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes.command::<Open>();
    }
}
impl HandlesCommand<Open> for Other {
    async fn handle(&mut self, _: Open, _: &CommandContext) -> Result<(), DomainError> {
        Ok(())
    }
}

#[derive(Default)]
struct SameName;
impl Aggregate for SameName {
    const TYPE_NAME: &'static str = "Account";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes.command::<Unrouted>().command::<Unrouted>();
    }
}
impl HandlesCommand<Unrouted> for SameName {
    async fn handle(&mut self, _: Unrouted, _: &CommandContext) -> Result<(), DomainError> {
        Ok(())
    }
}

#[derive(Default)]
struct Empty;
impl Aggregate for Empty {
    const TYPE_NAME: &'static str = "Empty";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes.event::<Opened>().event::<Opened>();
    }
}
impl AppliesEvent<Opened> for Empty {
    fn apply(&mut self, _: &Opened) {}
}

#[test]
fn build_reports_every_routing_problem_at_once() {
    let err = Application::builder()
        .register_aggregate::<Account>()
        .register_aggregate::<Other>()
        .register_aggregate::<SameName>()
        .register_aggregate::<Empty>()
        .register_aggregate::<Empty>()
        .build()
        .unwrap_err();
    let expected = [
        "command Open is handled by both Account and Other",
        "two aggregate types share the type name Account",
        "aggregate Account routes command Unrouted twice",
        "aggregate Empty handles no command",
        "aggregate Empty declares event type Opened twice",
        "aggregate Empty is registered twice",
    ];
    for line in expected {
        assert!(
            err.problems.iter().any(|p| p.contains(line)),
            "missing {line:?} in {:#?}",
            err.problems
        );
    }
    assert!(
        err.to_string()
            .starts_with("the application is misconfigured:")
    );
}

#[test]
fn emit_outside_a_handler_applies_without_recording() {
    let mut account = Account::default();
    account.emit(Deposited { amount: 3 });
    assert_eq!(account.balance, 3);
}

/// A command dispatched again with the same `event_ids_from` seed (a retry after a crash whose
/// outcome was unknown) returns the first run's recorded output and commits nothing, even when
/// running it again would decide differently; racing runs commit once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_command_commits_once_and_repeats_its_recorded_output() {
    let store = InMemoryEventStore::new();
    let app = app_on(&store);
    app.dispatch(Open { id: "a".into() }).await.unwrap();
    let seeded = || DispatchOptions::new().event_ids_from("saga:transfer:42:evt:0");
    let first = app
        .dispatch_with(
            Deposit {
                id: "a".into(),
                amounts: vec![5, 7],
            },
            seeded(),
        )
        .await
        .unwrap();
    assert_eq!(first.output, vec![5, 12]);
    let stream = StreamId::new("Account", "a").unwrap();
    let stored = store.read_stream(&stream, 1, None).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(
        stored[1]
            .metadata
            .get(interlock_runtime::OUTPUT_METADATA_KEY),
        Some(&serde_json::json!([5, 12])),
        "the output rides on the first event"
    );

    // A restarted process (a fresh application, empty cache) repeats the seeded command.
    let restarted = app_on(&store);
    let again = restarted
        .dispatch_with(
            Deposit {
                id: "a".into(),
                amounts: vec![5, 7],
            },
            seeded(),
        )
        .await
        .unwrap();
    assert_eq!(
        again.output,
        vec![5, 12],
        "the recorded output, not [17, 24]"
    );
    assert_eq!((again.version, again.events), (first.version, 2));
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        3,
        "nothing committed twice"
    );
    let next = restarted
        .dispatch(Deposit {
            id: "a".into(),
            amounts: vec![1],
        })
        .await
        .unwrap();
    assert_eq!(next, vec![13], "the state counts the seeded deposit once");

    // Racing runs of one new seeded command: one commit.
    let (x, y) = (app_on(&store), app_on(&store));
    let race = |app: Application| async move {
        app.dispatch_with(
            Deposit {
                id: "a".into(),
                amounts: vec![100],
            },
            DispatchOptions::new().event_ids_from("race"),
        )
        .await
    };
    let (rx, ry) = tokio::join!(race(x), race(y));
    let ok = [&rx, &ry].iter().filter(|r| r.is_ok()).count();
    assert!(ok >= 1, "{rx:?} {ry:?}");
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        5,
        "one commit of the race"
    );
}
