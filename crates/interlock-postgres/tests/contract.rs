//! Configuration, error mapping, schema versions and corrupt rows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use interlock_core::{DecodeReason, EventStore, ExpectedVersion, Position, StoreError, StreamId};
use interlock_postgres::{PgConfig, PgError, PgEventStore, SCHEMA_VERSION};
use interlock_testing::conformance::{test_event, test_events};
use sqlx_core::executor::Executor;

#[tokio::test]
async fn hostile_schema_names_are_refused_before_connecting() {
    // Nothing listens on port 1: a name that got past the check would fail differently.
    for name in [
        "x\"; DROP SCHEMA public CASCADE; --",
        "public; --",
        "Mixed",
        "with space",
        "pg_temp",
        "%_",
        "a\0b",
        "",
        "9lives",
        "ünï",
    ] {
        let error = PgEventStore::builder("postgres://nobody@127.0.0.1:1/none")
            .schema(name)
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                PgError::InvalidConfig {
                    field: "schema",
                    ..
                }
            ),
            "{name:?}: {error}"
        );
    }
    let error = PgEventStore::builder("postgres://nobody@127.0.0.1:1/none")
        .max_connections(1)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        PgError::InvalidConfig {
            field: "max_connections",
            ..
        }
    ));
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let mut config = PgConfig::new("postgres://nobody@127.0.0.1:1/none");
    config.acquire_timeout = Duration::from_secs(2);
    let error = PgEventStore::connect_with(config).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    let store_error = StoreError::from(error);
    assert!(
        matches!(
            store_error,
            StoreError::Unavailable {
                backend: "postgres",
                ..
            }
        ),
        "{store_error:?}"
    );
}

#[tokio::test]
async fn a_closed_store_is_unavailable() {
    let Some(store) = common::store().await else {
        return;
    };
    let schema = store.schema().to_owned();
    store.close().await;
    let error = store
        .append(
            &StreamId::new("C", "1").unwrap(),
            ExpectedVersion::Any,
            vec![test_event(1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Unavailable {
                backend: "postgres",
                ..
            }
        ),
        "{error:?}"
    );
    let pool = common::raw_pool().await.unwrap();
    pool.execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str())
        .await
        .unwrap();
}

#[tokio::test]
async fn reconnecting_keeps_the_data_and_a_newer_schema_is_refused() {
    let Some(store) = common::store().await else {
        return;
    };
    let stream = StreamId::new("Keep", "1").unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 2))
        .await
        .unwrap();
    let mut config = store.config().clone();
    let again = PgEventStore::connect_with(config.clone()).await.unwrap();
    assert_eq!(again.stream_version(&stream).await.unwrap(), 2);
    let versions: Vec<i32> = sqlx_core::query_scalar::query_scalar(&format!(
        "SELECT version FROM \"{}\".schema_version ORDER BY version",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        versions,
        (1..=SCHEMA_VERSION).collect::<Vec<_>>(),
        "migrated once"
    );

    store
        .pool()
        .execute(
            format!(
                "INSERT INTO \"{}\".schema_version (version) VALUES (99)",
                store.schema()
            )
            .as_str(),
        )
        .await
        .unwrap();
    config.schema = store.schema().to_owned();
    match PgEventStore::connect_with(config).await {
        Err(PgError::NewerSchema { found: 99, .. }) => {}
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    common::drop_schema(&store).await;
}

#[tokio::test]
async fn corrupt_rows_are_typed_decode_errors() {
    let Some(store) = common::store().await else {
        return;
    };
    let stream = StreamId::new("Corrupt", "1").unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 3))
        .await
        .unwrap();
    store
        .pool()
        .execute(
            format!(
                "UPDATE \"{}\".events SET metadata = '\\x7b6e6f7065'::bytea WHERE stream_version = 2",
                store.schema()
            )
            .as_str(),
        )
        .await
        .unwrap();
    for error in [
        store.read_stream(&stream, 1, None).await.unwrap_err(),
        store.read_all(Position::START, 10).await.unwrap_err(),
    ] {
        match error {
            StoreError::Decode(e) => {
                assert_eq!(e.stream, stream);
                assert_eq!(e.stream_version, 2);
                assert_eq!(e.event_type, "TestEvent");
                assert!(matches!(e.reason, DecodeReason::CorruptEnvelope(_)));
                let message = e.to_string();
                assert!(message.contains("Corrupt/1") && message.contains("TestEvent"));
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }
    // The rows around it still read.
    assert_eq!(store.read_stream(&stream, 3, None).await.unwrap().len(), 1);
    common::drop_schema(&store).await;
}

#[tokio::test]
async fn a_failed_append_in_a_transaction_leaves_it_usable() {
    let Some(store) = common::store().await else {
        return;
    };
    let stream = StreamId::new("Tx", "1").unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 1))
        .await
        .unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    let conflict = store
        .append_in(
            &mut tx,
            &stream,
            ExpectedVersion::NoStream,
            test_events(2, 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, StoreError::Concurrency(ref e) if e.actual == 1),
        "{conflict:?}"
    );
    let duplicate = store
        .append_in(
            &mut tx,
            &StreamId::new("Tx", "2").unwrap(),
            ExpectedVersion::Any,
            store
                .read_stream(&stream, 1, None)
                .await
                .unwrap()
                .iter()
                .map(|e| test_event(1).with_event_id(e.event_id))
                .collect(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(duplicate, StoreError::DuplicateEventId { .. }),
        "{duplicate:?}"
    );
    let appended = store
        .append_in(
            &mut tx,
            &stream,
            ExpectedVersion::Exact(1),
            test_events(2, 2),
        )
        .await
        .unwrap();
    assert_eq!(appended.last_version, 3);
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        1,
        "not visible before the commit"
    );
    tx.commit().await.unwrap();
    assert_eq!(store.stream_version(&stream).await.unwrap(), 3);
    assert_eq!(store.read_all(Position::START, 10).await.unwrap().len(), 3);
    common::drop_schema(&store).await;
}
