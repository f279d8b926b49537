//! The event store contract (SPEC §5.1) on a real SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{event, events, fresh_store, stream};
use futures::StreamExt;
use interlock_core::{
    ConcurrencyError, EventStore, ExpectedVersion, Metadata, Position, StoreError, StreamId,
};
use interlock_sqlite::SqliteEventStore;
use uuid::Uuid;

fn concurrency(err: StoreError) -> ConcurrencyError {
    match err {
        StoreError::Concurrency(c) => c,
        other => panic!("expected a concurrency error, got {other:?}"),
    }
}

#[tokio::test]
async fn expected_version_no_stream() {
    let s = fresh_store();
    let a = stream("a");
    let r = s
        .append(&a, ExpectedVersion::NoStream, events(2))
        .await
        .unwrap();
    assert_eq!((r.first_version, r.last_version), (1, 2));
    assert_eq!(r.first_position, Position::from_sequence(1));
    assert_eq!(r.last_position, Position::from_sequence(2));
    assert!(!r.already_appended);
    let err = s
        .append(&a, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap_err();
    let c = concurrency(err);
    assert_eq!(c.stream, a);
    assert_eq!(c.expected, ExpectedVersion::NoStream);
    assert_eq!(c.actual, 2);
}

#[tokio::test]
async fn expected_version_exists() {
    let s = fresh_store();
    let a = stream("a");
    let c = concurrency(
        s.append(&a, ExpectedVersion::StreamExists, events(1))
            .await
            .unwrap_err(),
    );
    assert_eq!(c.actual, 0);
    s.append(&a, ExpectedVersion::Any, events(1)).await.unwrap();
    let r = s
        .append(&a, ExpectedVersion::StreamExists, events(1))
        .await
        .unwrap();
    assert_eq!(r.last_version, 2);
}

#[tokio::test]
async fn expected_version_exact_and_any() {
    let s = fresh_store();
    let a = stream("a");
    s.append(&a, ExpectedVersion::Exact(0), events(3))
        .await
        .unwrap();
    let c = concurrency(
        s.append(&a, ExpectedVersion::Exact(2), events(1))
            .await
            .unwrap_err(),
    );
    assert_eq!((c.expected, c.actual), (ExpectedVersion::Exact(2), 3));
    let r = s
        .append(&a, ExpectedVersion::Exact(3), events(2))
        .await
        .unwrap();
    assert_eq!((r.first_version, r.last_version), (4, 5));
    let r = s.append(&a, ExpectedVersion::Any, events(1)).await.unwrap();
    assert_eq!(r.last_version, 6);
    assert_eq!(s.stream_version(&a).await.unwrap(), 6);
    let msg = concurrency(
        s.append(&a, ExpectedVersion::Exact(1), events(1))
            .await
            .unwrap_err(),
    )
    .to_string();
    assert!(msg.contains("Account/a") && msg.contains('6'), "{msg}");
}

#[tokio::test]
async fn a_failed_batch_stores_nothing_and_the_old_version_still_works() {
    let s = fresh_store();
    let a = stream("a");
    s.append(&a, ExpectedVersion::NoStream, events(2))
        .await
        .unwrap();
    // The 4th event is not JSON: the whole batch is refused, naming it.
    let mut batch = events(5);
    batch[3].payload = bytes::Bytes::from_static(b"{not json");
    let err = s
        .append(&a, ExpectedVersion::Exact(2), batch)
        .await
        .unwrap_err();
    match &err {
        StoreError::Validation(v) => {
            assert_eq!(v.field(), "payload");
            assert!(v.reason().contains("#4"), "{v}");
        }
        other => panic!("{other:?}"),
    }
    // A conflicting 4th event id (stored in another stream) also refuses the whole batch.
    let other = stream("b");
    let taken = events(1);
    s.append(&other, ExpectedVersion::Any, taken.clone())
        .await
        .unwrap();
    let mut batch = events(5);
    batch[3] = batch[3].clone().with_event_id(taken[0].event_id);
    let err = s
        .append(&a, ExpectedVersion::Exact(2), batch)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateEventId { event_id, stream: Some(st) } if *event_id == taken[0].event_id && *st == other),
        "{err:?}"
    );
    assert_eq!(s.stream_version(&a).await.unwrap(), 2);
    assert_eq!(s.read_all(Position::START, 100).await.unwrap().len(), 3);
    let r = s
        .append(&a, ExpectedVersion::Exact(2), events(5))
        .await
        .unwrap();
    assert_eq!(r.last_version, 7);
    // Rolled-back rows left no hole that a reader could notice: positions are gapless here.
    let all = s.read_all(Position::START, 100).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position.minor()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn bad_inputs_are_refused_before_any_write() {
    let s = fresh_store();
    let a = stream("a");
    let err = s
        .append(&a, ExpectedVersion::Any, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Validation(ref v) if v.field() == "events"));
    let e = events(1).remove(0);
    let err = s
        .append(&a, ExpectedVersion::Any, vec![e.clone(), e])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Validation(ref v) if v.field() == "event_id"));
    let err = s
        .append(&a, ExpectedVersion::Exact(u64::MAX), events(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Validation(ref v) if v.field() == "expected_version"));
    let mut bad = events(1);
    bad[0].event_type = String::new();
    let err = s.append(&a, ExpectedVersion::Any, bad).await.unwrap_err();
    assert!(matches!(err, StoreError::Validation(ref v) if v.field() == "event_type"));
    assert_eq!(s.head_position().await.unwrap(), Position::START);
}

#[tokio::test]
async fn idempotent_reappend_returns_the_original_positions() {
    let s = fresh_store();
    let a = stream("a");
    s.append(&a, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    let batch = events(3);
    let first = s
        .append(&a, ExpectedVersion::Exact(1), batch.clone())
        .await
        .unwrap();
    s.append(&stream("b"), ExpectedVersion::Any, events(2))
        .await
        .unwrap();
    // The retry carries a stale expected version: still recognised.
    let again = s
        .append(&a, ExpectedVersion::Exact(1), batch.clone())
        .await
        .unwrap();
    assert!(again.already_appended);
    assert_eq!(
        (
            again.first_version,
            again.last_version,
            again.first_position,
            again.last_position
        ),
        (
            first.first_version,
            first.last_version,
            first.first_position,
            first.last_position
        )
    );
    let again = s
        .append(&a, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert!(again.already_appended);
    assert_eq!(s.stream_version(&a).await.unwrap(), 4);
    assert_eq!(s.read_all(Position::START, 100).await.unwrap().len(), 6);

    // A prefix of a stored batch is a retry too.
    let again = s
        .append(&a, ExpectedVersion::Any, batch[..2].to_vec())
        .await
        .unwrap();
    assert!(again.already_appended);
    assert_eq!(again.last_version, 3);

    // The same id with other content is a typed conflict, never a ConcurrencyError.
    let mut changed = batch.clone();
    changed[1].payload = bytes::Bytes::from_static(b"{\"other\":true}");
    let err = s
        .append(&a, ExpectedVersion::Exact(1), changed)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateEventId { event_id, .. } if *event_id == batch[1].event_id),
        "{err:?}"
    );
    // Same ids in another stream, or out of order, or mixed with new ids.
    let err = s
        .append(&stream("c"), ExpectedVersion::Any, batch.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateEventId { stream: Some(ref st), .. } if *st == a));
    let reversed: Vec<_> = batch.iter().rev().cloned().collect();
    assert!(matches!(
        s.append(&a, ExpectedVersion::Any, reversed)
            .await
            .unwrap_err(),
        StoreError::DuplicateEventId { .. }
    ));
    let mut mixed = batch.clone();
    mixed.push(events(1).remove(0));
    assert!(matches!(
        s.append(&a, ExpectedVersion::Any, mixed).await.unwrap_err(),
        StoreError::DuplicateEventId { .. }
    ));
    let mut mixed = events(1);
    mixed.extend(batch.clone());
    let err = s
        .append(&a, ExpectedVersion::Exact(1), mixed)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::DuplicateEventId { event_id, .. } if *event_id == batch[0].event_id),
        "{err:?}"
    );
    assert_eq!(s.read_all(Position::START, 100).await.unwrap().len(), 6);
}

#[tokio::test]
async fn context_and_metadata_round_trip() {
    let s = fresh_store();
    let a = stream("a");
    let mut metadata = Metadata::new();
    metadata.insert("user".into(), serde_json::json!("zoë"));
    metadata.insert("n".into(), serde_json::json!(1.5e300));
    metadata.insert("nested".into(), serde_json::json!({"a": [1, null, true]}));
    let (corr, cause) = (Uuid::now_v7(), Uuid::new_v4());
    let e = event("Opened", serde_json::json!({"x": 1}))
        .with_context(Some(corr), Some(cause))
        .with_metadata(metadata.clone());
    s.append(&a, ExpectedVersion::Any, vec![e.clone()])
        .await
        .unwrap();
    let got = s.read_stream(&a, 1, None).await.unwrap().remove(0);
    assert!(e.same_content_as(&got));
    assert_eq!(got.metadata, metadata);
    assert_eq!(got.correlation_id, Some(corr));
    assert_eq!(got.causation_id, Some(cause));
    // And the retry of it is recognised.
    assert!(
        s.append(&a, ExpectedVersion::Any, vec![e])
            .await
            .unwrap()
            .already_appended
    );
}

#[tokio::test]
async fn read_stream_ranges() {
    let s = fresh_store();
    let a = stream("a");
    s.append(&a, ExpectedVersion::Any, events(10))
        .await
        .unwrap();
    s.append(&stream("b"), ExpectedVersion::Any, events(3))
        .await
        .unwrap();
    let versions = |v: Vec<interlock_core::RecordedEvent>| {
        v.iter().map(|e| e.stream_version).collect::<Vec<_>>()
    };
    assert_eq!(
        versions(s.read_stream(&a, 0, None).await.unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        versions(s.read_stream(&a, 1, Some(3)).await.unwrap()),
        vec![1, 2, 3]
    );
    assert_eq!(
        versions(s.read_stream(&a, 4, Some(4)).await.unwrap()),
        vec![4]
    );
    assert_eq!(
        versions(s.read_stream(&a, 9, Some(100)).await.unwrap()),
        vec![9, 10]
    );
    assert!(s.read_stream(&a, 5, Some(4)).await.unwrap().is_empty());
    assert!(s.read_stream(&a, 11, None).await.unwrap().is_empty());
    assert!(
        s.read_stream(&a, u64::MAX, Some(u64::MAX))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.read_stream(&stream("none"), 1, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.read_stream(&a, 1, Some(0)).await.unwrap().is_empty());
}

#[tokio::test]
async fn read_all_paginates_in_global_order() {
    let s = fresh_store();
    for i in 0..25 {
        s.append(
            &stream(&format!("s{}", i % 4)),
            ExpectedVersion::Any,
            events(2),
        )
        .await
        .unwrap();
    }
    let mut after = Position::START;
    let mut seen = Vec::new();
    loop {
        let page = s.read_all(after, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = page.last().unwrap().position;
        seen.extend(page);
    }
    assert_eq!(seen.len(), 50);
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(
        s.head_position().await.unwrap(),
        seen.last().unwrap().position
    );
    assert!(s.read_all(Position::START, 0).await.unwrap().is_empty());
    assert!(
        s.read_all(Position::new(1, 0), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.read_all(Position::from_sequence(u64::MAX), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.read_all(Position::from_sequence(48), usize::MAX)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn subscribe_catches_up_then_follows_live() {
    let s = fresh_store();
    let a = stream("a");
    s.append(&a, ExpectedVersion::Any, events(3)).await.unwrap();
    let mut sub = s.subscribe_all(Position::START);
    for v in 1..=3 {
        let e = sub.next().await.unwrap().unwrap();
        assert_eq!(e.stream_version, v);
    }
    // Nothing more: the subscription waits (without a busy loop) ...
    assert!(
        tokio::time::timeout(Duration::from_millis(100), sub.next())
            .await
            .is_err()
    );
    // ... until a commit wakes it.
    let store = s.store.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        store
            .append(&stream("b"), ExpectedVersion::Any, events(2))
            .await
            .unwrap();
    });
    for _ in 0..2 {
        let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("live event")
            .unwrap()
            .unwrap();
        assert_eq!(e.stream_id, stream("b"));
    }
    writer.await.unwrap();
    // A subscription from the middle sees only what follows.
    let mut late = s.subscribe_all(Position::from_sequence(4));
    assert_eq!(
        late.next().await.unwrap().unwrap().position,
        Position::from_sequence(5)
    );
}

#[tokio::test]
async fn list_streams_in_id_order_with_paging() {
    let s = fresh_store();
    let ids = [
        ("B", "1"),
        ("A", "2"),
        ("A", "10"),
        ("A", "1"),
        ("Ä", "x"),
        ("A", "1 "),
    ];
    for (i, (cat, id)) in ids.iter().enumerate() {
        let st = StreamId::new(*cat, *id).unwrap();
        s.append(&st, ExpectedVersion::Any, events(i + 1))
            .await
            .unwrap();
    }
    let mut expected: Vec<StreamId> = ids
        .iter()
        .map(|(c, i)| StreamId::new(*c, *i).unwrap())
        .collect();
    expected.sort();
    let all = s.list_streams(None, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|i| i.stream_id.clone()).collect::<Vec<_>>(),
        expected
    );
    let mut after: Option<StreamId> = None;
    let mut paged = Vec::new();
    loop {
        let page = s.list_streams(after.as_ref(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().stream_id.clone());
        paged.extend(page.into_iter().map(|i| i.stream_id));
    }
    assert_eq!(paged, expected);
    assert!(s.list_streams(None, 0).await.unwrap().is_empty());
    let info = s
        .stream_info(&StreamId::new("A", "10").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.version, 3);
    assert_eq!(info.last_position, Position::from_sequence(6));
    assert!(info.created_at <= info.updated_at);
    assert!(s.stream_info(&stream("none")).await.unwrap().is_none());
    assert_eq!(s.stream_version(&stream("none")).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_racing_writers_one_winner_per_version() {
    let s = fresh_store();
    let a = stream("race");
    s.append(&a, ExpectedVersion::Any, events(10))
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (store, barrier, a) = (s.store.clone(), barrier.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let e = event("Raced", serde_json::json!({ "task": i }));
            store.append(&a, ExpectedVersion::Exact(10), vec![e]).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                wins += 1;
                assert_eq!(r.last_version, 11);
            }
            Err(e) => {
                let c = concurrency(e);
                assert_eq!(
                    (c.stream.clone(), c.expected, c.actual),
                    (a.clone(), ExpectedVersion::Exact(10), 11)
                );
            }
        }
    }
    assert_eq!(wins, 1);
    let stored = s.read_stream(&a, 1, None).await.unwrap();
    assert_eq!(stored.len(), 11);

    // Then 50 writers that each retry until they get in: nothing lost, nothing duplicated.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (store, a) = (s.store.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let e = event("Raced", serde_json::json!({ "retrying": i }));
            loop {
                let v = store.stream_version(&a).await.unwrap();
                match store
                    .append(&a, ExpectedVersion::Exact(v), vec![e.clone()])
                    .await
                {
                    Ok(r) => return r.last_version,
                    Err(StoreError::Concurrency(_)) => tokio::task::yield_now().await,
                    Err(other) => panic!("{other}"),
                }
            }
        }));
    }
    let mut versions = HashSet::new();
    for t in tasks {
        assert!(versions.insert(t.await.unwrap()));
    }
    assert_eq!(versions, (12..=61).collect());
    let stored = s.read_stream(&a, 1, None).await.unwrap();
    assert_eq!(stored.len(), 61);
    assert!(
        stored
            .iter()
            .enumerate()
            .all(|(i, e)| e.stream_version == i as u64 + 1)
    );
    let ids: HashSet<_> = stored.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 61);
}

#[tokio::test]
async fn ten_thousand_events_in_one_append() {
    let s = fresh_store();
    let a = stream("big");
    let r = s
        .append(&a, ExpectedVersion::NoStream, events(10_000))
        .await
        .unwrap();
    assert_eq!((r.first_version, r.last_version), (1, 10_000));
    assert_eq!(r.last_position.minor() - r.first_position.minor(), 9_999);
    let back = s.read_stream(&a, 1, None).await.unwrap();
    assert_eq!(back.len(), 10_000);
    assert_eq!(
        back[9_999].decode_payload::<serde_json::Value>().unwrap()["n"],
        9_999
    );
}

#[tokio::test]
async fn unicode_hostile_strings_and_large_payloads_round_trip() {
    let s = fresh_store();
    let hostile = "'; DROP TABLE events; -- %_ \u{202e}עברית 🙂 \"x\"";
    let st = StreamId::new(format!("Cat{hostile}"), hostile).unwrap();
    let long = StreamId::new("Account", "é".repeat(512)).unwrap();
    let big = serde_json::json!({ "blob": "ü".repeat(500_000) });
    let mut meta = Metadata::new();
    meta.insert(hostile.to_owned(), serde_json::json!(hostile));
    let batch = vec![
        event(
            &format!("Type{hostile}"),
            serde_json::json!({ "text": hostile }),
        )
        .with_metadata(meta),
        event("Big", big.clone()),
    ];
    assert!(batch[1].payload.len() >= 1_000_000);
    s.append(&st, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    s.append(&long, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    let back = s.read_stream(&st, 1, None).await.unwrap();
    assert!(batch[0].same_content_as(&back[0]));
    assert!(batch[1].same_content_as(&back[1]));
    assert_eq!(back[1].decode_payload::<serde_json::Value>().unwrap(), big);
    let listed: Vec<_> = s
        .list_streams(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.stream_id)
        .collect();
    assert!(listed.contains(&st) && listed.contains(&long));
    // The tables are all still there.
    let conn = rusqlite::Connection::open(s.path()).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn reopening_the_file_reads_everything_back() {
    let s = fresh_store();
    let mut written = Vec::new();
    for i in 0..20 {
        let st = stream(&format!("r{}", i % 3));
        s.append(&st, ExpectedVersion::Any, events(5))
            .await
            .unwrap();
    }
    written.extend(s.read_all(Position::START, 1000).await.unwrap());
    let s = s.reopen();
    let back = s.read_all(Position::START, 1000).await.unwrap();
    assert_eq!(back, written);
    assert_eq!(s.list_streams(None, 10).await.unwrap().len(), 3);
    assert_eq!(
        s.head_position().await.unwrap(),
        Position::from_sequence(100)
    );
    // Appending continues where it stopped, retries still recognised after the reopen.
    let r = s
        .append(&stream("r0"), ExpectedVersion::Exact(35), events(1))
        .await
        .unwrap();
    assert_eq!(r.first_position, Position::from_sequence(101));
}

#[tokio::test]
async fn a_newer_schema_version_is_refused_and_the_file_left_alone() {
    let s = fresh_store();
    s.append(&stream("a"), ExpectedVersion::Any, events(1))
        .await
        .unwrap();
    let TestStoreParts { path, dir } = parts(s);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (99, 0)",
            [],
        )
        .unwrap();
    }
    let err = SqliteEventStore::open(&path).unwrap_err();
    match &err {
        interlock_sqlite::SqliteError::NewerSchema {
            found, supported, ..
        } => {
            assert_eq!((*found, *supported), (99, interlock_sqlite::SCHEMA_VERSION));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("99"), "{err}");
    drop(dir);
}

#[test]
fn a_foreign_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA application_id = 12345; CREATE TABLE mine (x)")
        .unwrap();
    drop(conn);
    let err = SqliteEventStore::open(&path).unwrap_err();
    assert!(matches!(
        err,
        interlock_sqlite::SqliteError::ForeignDatabase {
            application_id: 12345,
            ..
        }
    ));
}

#[test]
fn bad_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteEventStore::builder(dir.path().join("x.db"))
        .readers(0)
        .open()
        .unwrap_err();
    assert!(matches!(
        err,
        interlock_sqlite::SqliteError::InvalidConfig {
            field: "readers",
            ..
        }
    ));
}

#[tokio::test]
async fn synchronous_normal_is_an_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    let store = SqliteEventStore::builder(&path)
        .synchronous(interlock_sqlite::Synchronous::Normal)
        .readers(1)
        .open()
        .unwrap();
    store
        .append(&stream("a"), ExpectedVersion::Any, events(3))
        .await
        .unwrap();
    assert_eq!(
        store
            .read_stream(&stream("a"), 1, None)
            .await
            .unwrap()
            .len(),
        3
    );
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

struct TestStoreParts {
    path: std::path::PathBuf,
    dir: tempfile::TempDir,
}

fn parts(s: common::TestStore) -> TestStoreParts {
    let path = s.path();
    let common::TestStore { store, dir } = s;
    drop(store);
    TestStoreParts { path, dir }
}
