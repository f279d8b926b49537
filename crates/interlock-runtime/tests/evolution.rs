//! Upcasting, snapshots, temporal loads and history.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::time::Duration;

use bytes::Bytes;
use interlock_runtime::core::side::{Snapshot, SnapshotStore};
use interlock_runtime::core::upcast::{JsonUpcaster, TypedUpcaster};
use interlock_runtime::core::{DecodeReason, EventStore, NewEvent, StreamId};
use interlock_runtime::prelude::*;
use interlock_runtime::{SnapshotPolicy, processor::ProcessorSettings as Settings};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Add {
    id: String,
    amounts: Vec<i64>,
}
impl Command for Add {
    type Output = i64;
    const TYPE_NAME: &'static str = "Add";
    fn aggregate_id(&self) -> AggregateId {
        self.id.as_str().into()
    }
}

/// Version 3 of the event: v1 was `{"value": n}` named "Increment", v2 was `{"delta": n}`.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Added {
    delta: i64,
    note: String,
}
impl Event for Added {
    const TYPE_NAME: &'static str = "Added";
    const SCHEMA_VERSION: u32 = 3;
}

#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    total: i64,
    applied: u64,
}
impl Aggregate for Counter {
    const TYPE_NAME: &'static str = "Counter";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes
            .creating_command::<Add>()
            .command::<Fail>()
            .event::<Added>();
    }
}
impl HandlesCommand<Add> for Counter {
    async fn handle(&mut self, cmd: Add, _: &CommandContext) -> Result<i64, DomainError> {
        for delta in cmd.amounts {
            self.emit(Added {
                delta,
                note: String::new(),
            });
        }
        Ok(self.total)
    }
}
impl AppliesEvent<Added> for Counter {
    fn apply(&mut self, e: &Added) {
        self.total += e.delta;
        self.applied += 1;
    }
}

/// Emits, then refuses: nothing may be stored or snapshotted.
#[derive(Serialize, Deserialize)]
struct Fail {
    id: String,
}
impl Command for Fail {
    type Output = ();
    const TYPE_NAME: &'static str = "Fail";
    fn aggregate_id(&self) -> AggregateId {
        self.id.as_str().into()
    }
}
impl HandlesCommand<Fail> for Counter {
    async fn handle(&mut self, _: Fail, _: &CommandContext) -> Result<(), DomainError> {
        self.emit(Added {
            delta: 100,
            note: String::new(),
        });
        Err(DomainError::new("refused"))
    }
}

/// The same state shape under a bumped schema version: snapshots of v1 must be ignored.
#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CounterV2(Counter);
impl Aggregate for CounterV2 {
    const TYPE_NAME: &'static str = "Counter";
    const SCHEMA_VERSION: u32 = 2;
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes.event::<Added>().command::<Add>();
    }
}
impl HandlesCommand<Add> for CounterV2 {
    async fn handle(&mut self, _: Add, _: &CommandContext) -> Result<i64, DomainError> {
        Ok(self.0.total)
    }
}
impl AppliesEvent<Added> for CounterV2 {
    fn apply(&mut self, e: &Added) {
        self.0.apply(e);
    }
}

fn stream(id: &str) -> StreamId {
    StreamId::new("Counter", id).unwrap()
}

fn raw(event_type: &str, version: u32, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        schema_version: version,
        payload: Bytes::from(serde_json::to_vec(&payload).unwrap()),
        ..NewEvent::from_event(&Added {
            delta: 0,
            note: String::new(),
        })
        .unwrap()
    }
}

/// v1 "Increment" {value} -> v2 "Added" {delta} (rename + JSON) -> v3 typed (adds a note).
fn upcasters(builder: ApplicationBuilder) -> ApplicationBuilder {
    #[derive(Deserialize)]
    struct AddedV2 {
        delta: i64,
    }
    builder
        .register_upcaster(JsonUpcaster::to("Increment", 1, "Added", 2, |v| {
            let value = v["value"].as_i64().ok_or("no value")?;
            Ok(serde_json::json!({ "delta": value }))
        }))
        .register_upcaster(TypedUpcaster::new("Added", 2, |old: AddedV2| Added {
            delta: old.delta,
            note: "upcast".into(),
        }))
}

#[tokio::test]
async fn old_events_are_upcast_on_every_read_path() {
    let store = InMemoryEventStore::new();
    store
        .append(
            &stream("a"),
            ExpectedVersion::NoStream,
            vec![
                raw("Increment", 1, serde_json::json!({"value": 5})),
                raw("Added", 2, serde_json::json!({"delta": 7})),
                NewEvent::from_event(&Added {
                    delta: 1,
                    note: "new".into(),
                })
                .unwrap(),
            ],
        )
        .await
        .unwrap();

    #[derive(Default)]
    struct Notes(Vec<String>);
    impl EventProcessor for Notes {
        const NAME: &'static str = "notes";
        fn configure(routes: &mut ProcessorRoutes<Self>) {
            routes.event::<Added>();
        }
    }
    impl HandlesEvent<Added> for Notes {
        async fn handle(&mut self, e: Added, _: &EventContext<'_>) -> Result<(), HandlerError> {
            self.0.push(format!("{}:{}", e.note, e.delta));
            Ok(())
        }
    }

    let app = upcasters(
        Application::builder()
            .with_event_store(store.clone())
            .register_aggregate::<Counter>(),
    )
    .register_event_processor_with(Notes::default(), Settings::inline())
    .build()
    .unwrap();
    app.start().await.unwrap();
    assert_eq!(app.load::<Counter>("a").await.unwrap().total, 13);
    let notes = app
        .inspect_processor::<Notes, _>(|n| n.0.clone())
        .await
        .unwrap();
    assert_eq!(notes, vec!["upcast:5", "upcast:7", "new:1"]);
    // Commands run on the upcast state too, and new events are stored at the current version.
    assert_eq!(
        app.dispatch(Add {
            id: "a".into(),
            amounts: vec![1]
        })
        .await
        .unwrap(),
        14
    );
    let stored = store.read_stream(&stream("a"), 1, None).await.unwrap();
    assert_eq!(
        (stored[0].event_type.as_str(), stored[0].schema_version),
        ("Increment", 1),
        "reads never rewrite"
    );
    assert_eq!(stored[3].schema_version, 3);

    // Without the upcasters the same stream is a typed error naming the event.
    let plain = Application::builder()
        .with_event_store(store.clone())
        .register_aggregate::<Counter>()
        .build()
        .unwrap();
    let err = plain.load::<Counter>("a").await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode(e) if e.reason == DecodeReason::UnknownType && e.event_type == "Increment"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_upcast_paths_and_failing_upcasters_are_typed_errors() {
    let store = InMemoryEventStore::new();
    store
        .append(
            &stream("b"),
            ExpectedVersion::NoStream,
            vec![raw("Added", 1, serde_json::json!({"delta": 1}))],
        )
        .await
        .unwrap();
    store
        .append(
            &stream("c"),
            ExpectedVersion::NoStream,
            vec![raw("Increment", 1, serde_json::json!({"wrong": 1}))],
        )
        .await
        .unwrap();
    let app = upcasters(
        Application::builder()
            .with_event_store(store)
            .register_aggregate::<Counter>(),
    )
    .build()
    .unwrap();
    let err = app.load::<Counter>("b").await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode(e) if e.reason == DecodeReason::OlderSchemaVersion { known: 3 }),
        "{err}"
    );
    assert!(err.to_string().contains("Counter/b version 1"), "{err}");
    let err = app.load::<Counter>("c").await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode(e) if matches!(&e.reason, DecodeReason::Upcast(m) if m.contains("no value"))),
        "{err}"
    );

    let err = Application::builder()
        .register_aggregate::<Counter>()
        .register_upcaster(JsonUpcaster::rename("X", 1, "Y", 1))
        .register_upcaster(JsonUpcaster::rename("X", 1, "Z", 1))
        .build()
        .unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.contains("two upcasters read \"X\" version 1")),
        "{err}"
    );
}

async fn snapshotting_app(store: &InMemoryEventStore, every: u64) -> Application {
    Application::builder()
        .with_event_store(store.clone())
        .register_aggregate_with::<Counter>(AggregateSettings::new().cache_capacity(0))
        .with_snapshots::<Counter>(SnapshotPolicy::every(every))
        .build()
        .unwrap()
}

#[tokio::test]
async fn snapshots_follow_the_policy_even_when_a_command_crosses_the_boundary() {
    let store = InMemoryEventStore::new();
    let app = snapshotting_app(&store, 100).await;
    for _ in 0..24 {
        app.dispatch(Add {
            id: "s".into(),
            amounts: vec![1; 10],
        })
        .await
        .unwrap();
    }
    // Versions went 10, 20, ..., 240: boundaries 100 and 200 were crossed mid-command.
    let snapshot = store.load_snapshot(&stream("s")).await.unwrap().unwrap();
    assert_eq!(snapshot.version, 200);
    assert_eq!(snapshot.schema_version, 1);
    let from_snapshot = app.load_versioned::<Counter>("s").await.unwrap();
    assert_eq!(
        from_snapshot,
        (
            Counter {
                total: 240,
                applied: 240
            },
            240
        )
    );

    // The snapshot is really used: a different stored state shows through.
    store
        .save_snapshot(Snapshot {
            payload: Bytes::from_static(b"{\"total\":-1000,\"applied\":200}"),
            taken_at: chrono::Utc::now(),
            ..snapshot.clone()
        })
        .await
        .unwrap();
    assert_eq!(app.load::<Counter>("s").await.unwrap().total, -1000 + 40);
}

#[tokio::test]
async fn bad_snapshots_are_ignored_and_loads_equal_full_replay() {
    let store = InMemoryEventStore::new();
    let app = snapshotting_app(&store, 100).await;
    for _ in 0..25 {
        app.dispatch(Add {
            id: "s".into(),
            amounts: vec![2; 10],
        })
        .await
        .unwrap();
    }
    let full = Counter {
        total: 500,
        applied: 250,
    };
    let good = store.load_snapshot(&stream("s")).await.unwrap().unwrap();
    // (a) corrupt payload
    store
        .save_snapshot(Snapshot {
            payload: Bytes::from_static(b"{\"total\": \"oops\"}"),
            version: 300,
            ..good.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        app.load::<Counter>("s").await.unwrap(),
        full,
        "corrupt snapshot ignored"
    );
    // The version-300 snapshot is ahead of the stream (250): never trusted over the log either.
    store.delete_snapshot(&stream("s")).await.unwrap();
    store
        .save_snapshot(Snapshot {
            payload: Bytes::from_static(b"{\"total\":0,\"applied\":0}"),
            version: 300,
            ..good.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        app.load::<Counter>("s").await.unwrap(),
        full,
        "snapshot ahead of the stream ignored"
    );
    // (b) another aggregate schema version
    let v2 = Application::builder()
        .with_event_store(store.clone())
        .register_aggregate::<CounterV2>()
        .with_snapshots::<CounterV2>(SnapshotPolicy::every(100))
        .build()
        .unwrap();
    store.delete_snapshot(&stream("s")).await.unwrap();
    store.save_snapshot(good.clone()).await.unwrap();
    assert_eq!(
        v2.load::<CounterV2>("s").await.unwrap().0,
        full,
        "v1 snapshot not read as v2"
    );
    // (d) no snapshot at all
    store.delete_snapshot(&stream("s")).await.unwrap();
    assert_eq!(app.load::<Counter>("s").await.unwrap(), full);
}

#[tokio::test]
async fn age_policy_snapshots_aggregates_that_never_had_one() {
    let store = InMemoryEventStore::new();
    let app = Application::builder()
        .with_event_store(store.clone())
        .register_aggregate::<Counter>()
        .with_snapshots::<Counter>(SnapshotPolicy::older_than(Duration::from_secs(3600)))
        .build()
        .unwrap();
    app.dispatch(Add {
        id: "old".into(),
        amounts: vec![1, 2],
    })
    .await
    .unwrap();
    let first = store.load_snapshot(&stream("old")).await.unwrap().unwrap();
    assert_eq!(first.version, 2);
    app.dispatch(Add {
        id: "old".into(),
        amounts: vec![3],
    })
    .await
    .unwrap();
    let second = store.load_snapshot(&stream("old")).await.unwrap().unwrap();
    assert_eq!(second.version, 2, "young snapshot kept");
}

#[tokio::test]
async fn a_failed_command_never_reaches_a_snapshot() {
    let store = InMemoryEventStore::new();
    let app = snapshotting_app(&store, 1).await;
    app.dispatch(Add {
        id: "f".into(),
        amounts: vec![5],
    })
    .await
    .unwrap();
    let err = app.dispatch(Fail { id: "f".into() }).await.unwrap_err();
    assert!(matches!(err, Error::Domain(_)));
    let snapshot = store.load_snapshot(&stream("f")).await.unwrap().unwrap();
    assert_eq!(snapshot.version, 1);
    assert_eq!(&snapshot.payload[..], br#"{"total":5,"applied":1}"#);
    assert_eq!(store.stream_version(&stream("f")).await.unwrap(), 1);
}

#[tokio::test]
async fn temporal_loads_and_history() {
    let store = InMemoryEventStore::new();
    let app = Application::builder()
        .with_event_store(store.clone())
        .register_aggregate::<Counter>()
        .build()
        .unwrap();
    app.dispatch(Add {
        id: "t".into(),
        amounts: vec![1, 2],
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.dispatch(Add {
        id: "t".into(),
        amounts: vec![10],
    })
    .await
    .unwrap();

    assert_eq!(app.load_at::<Counter>("t", 1).await.unwrap().total, 1);
    assert_eq!(app.load_at::<Counter>("t", 2).await.unwrap().total, 3);
    assert_eq!(app.load_at::<Counter>("t", 99).await.unwrap().total, 13);
    assert_eq!(
        app.load_as_of::<Counter>("t", between).await.unwrap().total,
        3
    );
    assert_eq!(
        app.load_as_of::<Counter>("t", chrono::Utc::now())
            .await
            .unwrap()
            .total,
        13
    );
    assert!(matches!(
        app.load_as_of::<Counter>("t", between - chrono::Duration::hours(1))
            .await,
        Err(Error::AggregateNotFound { .. })
    ));
    let history = app.history::<Counter>("t").await.unwrap();
    let totals: Vec<i64> = history.iter().map(|h| h.state.total).collect();
    assert_eq!(totals, vec![1, 3, 13]);
    assert_eq!(history[2].event.stream_version, 3);
    assert!(matches!(
        app.history::<Counter>("nobody").await,
        Err(Error::AggregateNotFound { .. })
    ));
}

#[tokio::test]
async fn schemas_are_checkable_up_front_and_migrations_rewrite_explicitly() {
    use interlock_runtime::migration::SchemaStatus;
    let store = InMemoryEventStore::new();
    store
        .append(
            &stream("m"),
            ExpectedVersion::NoStream,
            vec![
                raw("Increment", 1, serde_json::json!({"value": 5})),
                raw("Added", 2, serde_json::json!({"delta": 7})),
                raw("Added", 1, serde_json::json!({"delta": 1})),
                NewEvent::from_event(&Added {
                    delta: 1,
                    note: "new".into(),
                })
                .unwrap(),
                raw("Other", 1, serde_json::json!({})),
            ],
        )
        .await
        .unwrap();
    let app = upcasters(
        Application::builder()
            .with_event_store(store.clone())
            .register_aggregate_with::<Counter>(
                AggregateSettings::new()
                    .unknown_events(interlock_runtime::UnknownEventPolicy::Ignore),
            ),
    )
    .build()
    .unwrap();
    let report = app.check_event_schemas().await.unwrap();
    let status = |ty: &str, v: u32| {
        report
            .iter()
            .find(|r| r.event_type == ty && r.schema_version == v)
            .map(|r| r.status.clone())
            .unwrap()
    };
    assert_eq!(status("Added", 3), SchemaStatus::Current);
    assert_eq!(
        status("Increment", 1),
        SchemaStatus::Upcast {
            to_type: "Added".into(),
            to_version: 3
        }
    );
    assert_eq!(
        status("Added", 1),
        SchemaStatus::NoPath {
            reaches: ("Added".into(), 1),
            known: 3
        }
    );
    assert_eq!(status("Other", 1), SchemaStatus::Unread);
    assert_eq!(report.iter().filter(|r| r.status.is_problem()).count(), 1);

    let before = store.read_stream(&stream("m"), 1, None).await.unwrap();
    let dry = app.migrate_events(true, |_| {}).await.unwrap();
    assert_eq!((dry.scanned, dry.changed), (5, 2));
    assert_eq!(dry.changes[0].from, ("Increment".to_owned(), 1));
    assert_eq!(dry.changes[0].to, ("Added".to_owned(), 3));
    assert_eq!(
        store.read_stream(&stream("m"), 1, None).await.unwrap(),
        before,
        "a dry run writes nothing"
    );

    let mut progress = Vec::new();
    let done = app
        .migrate_events(false, |n| progress.push(n))
        .await
        .unwrap();
    assert_eq!(done.changed, 2);
    assert_eq!(progress.last(), Some(&5));
    let after = store.read_stream(&stream("m"), 1, None).await.unwrap();
    assert_eq!(
        (after[0].event_type.as_str(), after[0].schema_version),
        ("Added", 3)
    );
    assert_eq!(after[0].event_id, before[0].event_id);
    assert_eq!(after[0].position, before[0].position);
    let payload: serde_json::Value = serde_json::from_slice(&after[0].payload).unwrap();
    assert_eq!(payload, serde_json::json!({"delta": 5, "note": "upcast"}));
    // Once migrated, the plain application (no upcasters) reads them too.
    let plain = Application::builder()
        .with_event_store(store.clone())
        .register_aggregate::<Counter>()
        .build()
        .unwrap();
    assert_eq!(plain.load_at::<Counter>("m", 2).await.unwrap().total, 12);
    let again = app.migrate_events(false, |_| {}).await.unwrap();
    assert_eq!(again.changed, 0, "a migration is idempotent");
}
