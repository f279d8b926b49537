//! MongoDB-specific behaviour: configuration checks, the replica-set requirement, hostile
//! stream ids, reopening, corrupt and missing documents, the document size limit, repeated
//! races, and wake-ups across processes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use interlock_core::side::{
    CheckpointStore, DeadLetterStore, IdempotencyClaim, IdempotencyStore, NewDeadLetter,
    SagaStateStore, Snapshot, SnapshotStore,
};
use interlock_core::{
    DecodeReason, EventStore, ExpectedVersion, MAX_PAYLOAD_LEN, Position, StoreError, StreamId,
};
use interlock_mongodb::{CollectionNames, MongoConfiguration, MongoError, MongoEventStore};
use interlock_testing::conformance::{test_event, test_events};
use mongodb::bson::{Bson, doc};

/// Nothing listens on port 1: a configuration that got past the checks would fail differently.
const NOWHERE: &str = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500";

#[tokio::test]
async fn bad_names_are_refused_before_connecting() {
    for database in [
        "",
        "a.b",
        "a$b",
        "a b",
        "a\0b",
        "x\"y",
        "a/b",
        &"d".repeat(64),
    ] {
        let error = MongoEventStore::builder(NOWHERE)
            .database(database)
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                MongoError::InvalidConfig {
                    field: "database",
                    ..
                }
            ),
            "{database:?}: {error}"
        );
    }
    for prefix in ["$", "a\0", "system.", &"p".repeat(100)] {
        let error = MongoEventStore::builder(NOWHERE)
            .collection_prefix(prefix)
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(error, MongoError::InvalidConfig { field, .. } if field.starts_with("collections.")),
            "{prefix:?}: {error}"
        );
    }
    let mut names = CollectionNames::default();
    names.events = String::new();
    let error = MongoEventStore::builder(NOWHERE)
        .collections(names)
        .connect()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("collections.events"), "{error}");
    let error = MongoEventStore::connect("not a uri").await.unwrap_err();
    assert!(
        matches!(error, MongoError::InvalidConfig { field: "uri", .. }),
        "{error}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let mut config = MongoConfiguration::new(NOWHERE);
    config.server_selection_timeout = Duration::from_millis(500);
    let error = MongoEventStore::connect_with(config).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(
        matches!(
            StoreError::from(error),
            StoreError::Unavailable {
                backend: "mongodb",
                ..
            }
        ),
        "unreachable is Unavailable"
    );
}

#[tokio::test]
async fn a_standalone_server_is_refused_with_a_clear_message() {
    let Some(uri) = support::standalone_uri() else {
        return;
    };
    // The wire server accepts transactions even in standalone mode; what tells it apart is
    // its hello: no replica set name.
    let hello = support::hello_blocking(&uri).unwrap();
    assert!(hello.get("setName").is_none(), "{hello:?}");
    let error = MongoEventStore::builder(uri)
        .database(support::fresh_database())
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(error, MongoError::ReplicaSetRequired { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("standalone") && message.contains("needs a replica set"),
        "{message}"
    );
    assert!(!error.is_transient());
}

#[tokio::test]
async fn the_replica_set_server_is_accepted() {
    let Some(uri) = support::uri() else { return };
    let hello = support::hello_blocking(&uri).unwrap();
    assert!(
        hello.get("setName").is_some() || hello.get("msg").is_some(),
        "{hello:?}"
    );
}

#[test]
fn the_race_on_one_stream_has_one_winner_every_time() {
    if support::uri().is_none() {
        return;
    }
    for _ in 0..5 {
        interlock_testing::conformance::run(async {
            let store = support::store().await.unwrap();
            interlock_testing::conformance::racing_writers_on_one_stream_have_exactly_one_winner(
                store,
            )
            .await;
        });
    }
}

#[tokio::test]
async fn operator_documents_as_stream_ids_are_plain_strings() {
    let Some(store) = support::store().await else {
        return;
    };
    let canary = StreamId::new("Canary", "1").unwrap();
    store
        .append(&canary, ExpectedVersion::NoStream, test_events(1, 2))
        .await
        .unwrap();
    let hostile = [
        r#"{"$gt": ""}"#,
        r#"{"$ne": null}"#,
        r#"{"$regex": ".*"}"#,
        "$where",
        "'; db.dropDatabase(); '",
        "this.stream_id != ''",
    ];
    // Operator-like ids that match nothing must read as empty, not as "every stream".
    for id in hostile {
        let stream = StreamId::new("Canary", id).unwrap();
        assert_eq!(store.stream_version(&stream).await.unwrap(), 0, "{id}");
        assert!(
            store
                .read_stream(&stream, 1, None)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.stream_info(&stream).await.unwrap().is_none());
    }
    for (i, id) in hostile.iter().enumerate() {
        let stream = StreamId::new(format!("Cat {id}"), *id).unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![test_event(i as u64)],
            )
            .await
            .unwrap();
        let read = store.read_stream(&stream, 1, None).await.unwrap();
        assert_eq!(read.len(), 1, "{id}");
        assert_eq!(read[0].stream_id, stream);
        let e = store
            .append(&stream, ExpectedVersion::NoStream, vec![test_event(9)])
            .await
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Concurrency(ref c) if c.actual == 1),
            "{e}"
        );
        // A snapshot, saga and idempotency key under the same hostile text.
        store
            .save_snapshot(Snapshot {
                stream_id: stream.clone(),
                version: 1,
                schema_version: 1,
                payload: Bytes::from_static(b"{}"),
                taken_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
        assert_eq!(
            store
                .save_saga(id, id, 0, Bytes::from_static(b"{}"))
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.claim(id).await.unwrap(), IdempotencyClaim::New);
    }
    assert_eq!(store.stream_version(&canary).await.unwrap(), 2);
    assert_eq!(
        store.list_streams(None, 100).await.unwrap().len(),
        hostile.len() + 1
    );
    // Stored as BSON strings, not documents.
    let raw = store
        .database()
        .collection::<mongodb::bson::Document>(&store.config().collections.events)
        .find_one(doc! { "stream_id": hostile[0] })
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(raw.get("stream_id"), Some(Bson::String(_))),
        "{raw:?}"
    );
    assert!(
        matches!(raw.get("event_id"), Some(Bson::Binary(_))),
        "{raw:?}"
    );
    assert!(
        matches!(raw.get("recorded_at"), Some(Bson::DateTime(_))),
        "{raw:?}"
    );
    assert!(matches!(raw.get("_id"), Some(Bson::Int64(_))), "{raw:?}");
}

#[tokio::test]
async fn a_new_store_on_the_same_database_reads_everything_back() {
    let Some(config) = support::config() else {
        return;
    };
    let stream = StreamId::new("Account", "reopen").unwrap();
    let (events, snapshot_time, letter) = {
        let store = MongoEventStore::connect_with(config.clone()).await.unwrap();
        store
            .append(&stream, ExpectedVersion::NoStream, test_events(1, 3))
            .await
            .unwrap();
        let events = store.read_all(Position::START, 10).await.unwrap();
        let taken_at = chrono::Utc::now();
        store
            .save_snapshot(Snapshot {
                stream_id: stream.clone(),
                version: 3,
                schema_version: 2,
                payload: Bytes::from_static(br#"{"balance":3}"#),
                taken_at,
            })
            .await
            .unwrap();
        store
            .save_checkpoint("billing", events[2].position)
            .await
            .unwrap();
        store
            .save_saga("Transfer", "t1", 0, Bytes::from_static(br#"{"step":1}"#))
            .await
            .unwrap();
        let letter = store
            .park(NewDeadLetter::for_event("billing", &events[1], "boom", 3))
            .await
            .unwrap();
        store.claim("order-1").await.unwrap();
        store
            .complete("order-1", Bytes::from_static(br#"{"ok":true}"#))
            .await
            .unwrap();
        (events, taken_at, letter)
    };

    let store = MongoEventStore::connect_with(config).await.unwrap();
    assert_eq!(store.read_all(Position::START, 10).await.unwrap(), events);
    assert_eq!(store.read_stream(&stream, 1, None).await.unwrap(), events);
    assert_eq!(store.head_position().await.unwrap(), events[2].position);
    let snapshot = store.load_snapshot(&stream).await.unwrap().unwrap();
    assert_eq!(
        (snapshot.version, snapshot.schema_version, snapshot.taken_at),
        (3, 2, snapshot_time)
    );
    assert_eq!(
        store.load_checkpoint("billing").await.unwrap(),
        Some(events[2].position)
    );
    assert_eq!(
        store
            .load_saga("Transfer", "t1")
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    let letters = store.list_dead_letters(None, None, 10).await.unwrap();
    assert_eq!((letters.len(), letters[0].id), (1, letter));
    assert_eq!(letters[0].event_id, events[1].event_id);
    assert_eq!(
        store.claim("order-1").await.unwrap(),
        IdempotencyClaim::Completed(Bytes::from_static(br#"{"ok":true}"#))
    );
    // Positions and versions carry on where they were.
    let next = store
        .append(&stream, ExpectedVersion::Exact(3), vec![test_event(4)])
        .await
        .unwrap();
    assert_eq!(next.last_version, 4);
    assert_eq!(next.first_position, Position::from_sequence(4));
}

#[tokio::test]
async fn a_missing_event_is_never_skipped() {
    let Some(store) = support::store().await else {
        return;
    };
    let stream = StreamId::new("Gap", "1").unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 5))
        .await
        .unwrap();
    // Simulate a lost document: position 3 disappears behind the store's back.
    store
        .database()
        .collection::<mongodb::bson::Document>(&store.config().collections.events)
        .delete_one(doc! { "_id": 3_i64 })
        .await
        .unwrap();
    let before = store.read_all(Position::START, 10).await.unwrap();
    assert_eq!(
        before
            .iter()
            .map(|e| e.position.minor())
            .collect::<Vec<_>>(),
        vec![1, 2],
        "a read stops before the hole"
    );
    let error = store
        .read_all(Position::from_sequence(2), 10)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("store error"), "{error}");
    let source = std::error::Error::source(&error).unwrap().to_string();
    assert!(source.contains("position 3"), "{source}");
    assert_eq!(
        store
            .read_all(Position::from_sequence(3), 10)
            .await
            .unwrap()
            .len(),
        2,
        "past the hole is readable on purpose"
    );
}

#[tokio::test]
async fn corrupt_documents_are_decode_errors_naming_the_event() {
    let Some(store) = support::store().await else {
        return;
    };
    let stream = StreamId::new("Corrupt", "1").unwrap();
    let mut event = test_event(1);
    event.event_type = "std::process::Command".into();
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event])
        .await
        .unwrap();
    // A path-like type name is only text.
    let read = store.read_stream(&stream, 1, None).await.unwrap();
    assert_eq!(read[0].event_type, "std::process::Command");
    store
        .database()
        .collection::<mongodb::bson::Document>(&store.config().collections.events)
        .update_one(
            doc! { "_id": 1_i64 },
            doc! { "$set": { "schema_version": "two", "metadata": "not binary" } },
        )
        .await
        .unwrap();
    match store.read_stream(&stream, 1, None).await {
        Err(StoreError::Decode(e)) => {
            assert_eq!(e.stream, stream);
            assert_eq!(e.stream_version, 1);
            assert_eq!(e.event_type, "std::process::Command");
            assert!(matches!(e.reason, DecodeReason::CorruptEnvelope(_)), "{e}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert!(matches!(
        store.read_all(Position::START, 10).await,
        Err(StoreError::Decode(_))
    ));
}

#[tokio::test]
async fn payloads_beyond_the_document_limit_are_refused_before_writing() {
    let Some(store) = support::store().await else {
        return;
    };
    let stream = StreamId::new("Huge", "1").unwrap();
    let mut payload = Vec::with_capacity(MAX_PAYLOAD_LEN);
    payload.push(b'"');
    payload.resize(MAX_PAYLOAD_LEN - 1, b'x');
    payload.push(b'"');
    let mut batch = test_events(1, 3);
    batch[2].payload = Bytes::from(payload);
    match store
        .append(&stream, ExpectedVersion::NoStream, batch)
        .await
    {
        Err(StoreError::Validation(e)) => {
            assert_eq!(e.field(), "payload");
            assert!(e.to_string().contains("#3"), "{e}");
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    assert_eq!(store.head_position().await.unwrap(), Position::START);
}

#[tokio::test]
async fn subscriptions_see_appends_of_another_process() {
    let Some(config) = support::config() else {
        return;
    };
    let mut config = config;
    config.poll_interval = Duration::from_millis(100);
    let reader = MongoEventStore::connect_with(config.clone()).await.unwrap();
    let writer = MongoEventStore::connect_with(config).await.unwrap();
    let mut subscription = reader.subscribe_all(Position::START);
    let stream = StreamId::new("Elsewhere", "1").unwrap();
    writer
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 2))
        .await
        .unwrap();
    for n in 1..=2 {
        let event = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("woken by the fallback poll")
            .expect("open")
            .expect("event");
        assert_eq!(event.stream_version, n);
    }
}

/// Two stores on one database are like two processes: their appends do not share the local
/// queue, so they conflict on the counter document and retry. Exactly one racer still wins,
/// and the global order stays dense and in per-stream order.
#[test]
fn two_processes_conflict_on_the_counter_and_retry() {
    let Some(config) = support::config() else {
        return;
    };
    interlock_testing::conformance::run(async move {
        let stores = [
            MongoEventStore::connect_with(config.clone()).await.unwrap(),
            MongoEventStore::connect_with(config).await.unwrap(),
        ];
        let race = StreamId::new("Race", "two-clients").unwrap();
        stores[0]
            .append(&race, ExpectedVersion::NoStream, test_events(1, 10))
            .await
            .unwrap();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(50));
        let mut tasks = Vec::new();
        for t in 0..50_u64 {
            let (store, race, barrier) = (
                stores[(t % 2) as usize].clone(),
                race.clone(),
                barrier.clone(),
            );
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .append(&race, ExpectedVersion::Exact(10), vec![test_event(100 + t)])
                    .await
            }));
        }
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(r) => {
                    winners += 1;
                    assert_eq!(r.last_version, 11);
                }
                Err(StoreError::Concurrency(e)) => assert_eq!(e.actual, 11),
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
        assert_eq!(winners, 1);

        let mut writers = Vec::new();
        for w in 0..8_u64 {
            let store = stores[(w % 2) as usize].clone();
            writers.push(tokio::spawn(async move {
                let stream = StreamId::new("Many", w.to_string()).unwrap();
                for b in 0..10_u64 {
                    store
                        .append(
                            &stream,
                            ExpectedVersion::Exact(b * 2),
                            test_events(b * 2 + 1, 2),
                        )
                        .await
                        .unwrap();
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        let all = stores[1].read_all(Position::START, 1000).await.unwrap();
        assert_eq!(all.len(), 11 + 8 * 10 * 2);
        assert!(
            all.iter()
                .enumerate()
                .all(|(i, e)| e.position == Position::from_sequence(i as u64 + 1)),
            "positions are dense and in order"
        );
        let mut versions = std::collections::HashMap::new();
        for e in &all {
            let previous = versions
                .insert(e.stream_id.clone(), e.stream_version)
                .unwrap_or(0);
            assert_eq!(e.stream_version, previous + 1, "{}", e.stream_id);
        }
    });
}
