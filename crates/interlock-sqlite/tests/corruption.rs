//! Stored data is never trusted: corrupted rows give typed errors naming stream, version, type.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use common::{event, fresh_store, stream};
use futures::StreamExt;
use interlock_core::{DecodeReason, Event, EventStore, ExpectedVersion, Position, StoreError};

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Deposited {
    n: u64,
}
impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
}

/// Stores 3 events on `Account/x` and corrupts column `column` of version 2 with `value` (SQL).
async fn corrupted(column: &str, value: &str) -> common::TestStore {
    let s = fresh_store();
    let batch = (1..=3)
        .map(|n| event("Deposited", serde_json::json!({ "n": n })))
        .collect();
    s.append(&stream("x"), ExpectedVersion::NoStream, batch)
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(s.path()).unwrap();
    let changed = conn
        .execute(
            &format!("UPDATE events SET {column} = {value} WHERE version = 2"),
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    s
}

fn assert_names_the_row(err: StoreError, what: &str) {
    match err {
        StoreError::Decode(d) => {
            assert_eq!(d.stream, stream("x"));
            assert_eq!(d.stream_version, 2);
            assert_eq!(d.event_type, "Deposited");
            assert!(
                matches!(d.reason, DecodeReason::CorruptEnvelope(_)),
                "{:?}",
                d.reason
            );
            let msg = d.to_string();
            assert!(
                msg.contains("Account/x") && msg.contains("version 2") && msg.contains("Deposited"),
                "{msg}"
            );
            assert!(msg.contains(what), "{msg}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_metadata_is_a_typed_decode_error() {
    let s = corrupted("metadata", "'{truncated'").await;
    assert_names_the_row(
        s.read_stream(&stream("x"), 1, None).await.unwrap_err(),
        "metadata",
    );
    assert_names_the_row(
        s.read_all(Position::START, 10).await.unwrap_err(),
        "metadata",
    );
    // Rows before the bad one still read.
    assert_eq!(
        s.read_stream(&stream("x"), 1, Some(1)).await.unwrap().len(),
        1
    );
    assert_eq!(s.read_stream(&stream("x"), 3, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn garbage_event_id_is_a_typed_decode_error() {
    let s = corrupted("event_id", "'not a uuid'").await;
    assert_names_the_row(
        s.read_stream(&stream("x"), 1, None).await.unwrap_err(),
        "event id",
    );
    let s = corrupted("event_id", "x'0102'").await;
    assert_names_the_row(
        s.read_all(Position::START, 10).await.unwrap_err(),
        "event id",
    );
}

#[tokio::test]
async fn bad_envelope_numbers_are_typed_decode_errors() {
    let s = corrupted("schema_version", "-4").await;
    assert_names_the_row(
        s.read_all(Position::START, 10).await.unwrap_err(),
        "schema version",
    );
    let s = corrupted("recorded_at", "'yesterday'").await;
    assert_names_the_row(s.read_all(Position::START, 10).await.unwrap_err(), "time");
    let s = corrupted("correlation_id", "'abc'").await;
    assert_names_the_row(
        s.read_all(Position::START, 10).await.unwrap_err(),
        "correlation",
    );
}

#[tokio::test]
async fn a_corrupted_payload_is_returned_as_stored_and_fails_typed_decoding() {
    let s = corrupted("payload", "x'7b226e223a'").await; // `{"n":` truncated
    let events = s.read_stream(&stream("x"), 1, None).await.unwrap();
    assert_eq!(&events[1].payload[..], b"{\"n\":");
    assert_eq!(events[0].decode::<Deposited>().unwrap().n, 1);
    let err = events[1].decode::<Deposited>().unwrap_err();
    assert_eq!(
        (
            err.stream.clone(),
            err.stream_version,
            err.event_type.as_str()
        ),
        (stream("x"), 2, "Deposited")
    );
    assert!(matches!(err.reason, DecodeReason::Malformed(_)));
}

#[tokio::test]
async fn a_subscription_yields_the_error_instead_of_crashing() {
    let s = corrupted("metadata", "'['").await;
    let mut sub = s.subscribe_all(Position::START);
    // The subscription reads in batches: the bad row poisons its batch, as an error item.
    let first = sub.next().await.unwrap();
    assert!(matches!(first, Err(StoreError::Decode(_))), "{first:?}");
}

#[tokio::test]
async fn an_unreadable_stream_id_still_gives_a_typed_error() {
    let s = fresh_store();
    s.append(
        &stream("x"),
        ExpectedVersion::Any,
        vec![event("Deposited", serde_json::json!({"n": 1}))],
    )
    .await
    .unwrap();
    let conn = rusqlite::Connection::open(s.path()).unwrap();
    conn.execute("UPDATE events SET category = x'00ff'", [])
        .unwrap();
    match s.read_all(Position::START, 10).await.unwrap_err() {
        StoreError::Decode(d) => {
            assert!(d.stream.id().contains("position 1"), "{d}");
            assert_eq!(d.stream_version, 1);
            assert_eq!(d.event_type, "Deposited");
        }
        other => panic!("{other:?}"),
    }
}
