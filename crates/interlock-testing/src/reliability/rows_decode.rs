//! Rows about stored data that cannot be trusted: undecodable events and type names.

use std::future::Future;
use std::sync::Arc;

use interlock_core::{
    DecodeError, DecodeReason, EventId, EventStore, ExpectedVersion, NewEvent, StoreError, StreamId,
};
use interlock_runtime::{Application, Error, ProcessorSettings};

use super::domain::{Counter, Deposit, Ledger, Totals};
use super::{WAIT, ledger_app, ledger_stream, quick_retry, raw_event, settle, shared};

fn deposited(amount: u64) -> NewEvent {
    raw_event("Deposited", 1, &format!("{{\"amount\":{amount}}}"))
}

/// Checks that `error` is a decode error about version 2 of `stream`, stored as `event_type`,
/// whose reason passes `reason`, and whose message names all of them.
fn assert_decode_error(
    what: &str,
    error: Error,
    stream: &StreamId,
    event_type: &str,
    reason: impl Fn(&DecodeReason) -> bool,
) -> DecodeError {
    let Error::Decode(d) = error else {
        panic!("{what}: expected Error::Decode, got {error:?}");
    };
    assert_eq!(&d.stream, stream, "{what}");
    assert_eq!(d.stream_version, 2, "{what}");
    assert_eq!(d.event_type, event_type, "{what}");
    assert!(
        reason(&d.reason),
        "{what}: unexpected reason {:?}",
        d.reason
    );
    let message = d.to_string();
    assert!(
        message.contains(&stream.to_string())
            && message.contains("version 2")
            && message.contains(&format!("{event_type:?}")),
        "{what}: the message names stream, version and type: {message}"
    );
    d
}

/// An application over `store` with the ledger and the `Totals` processor (quick retries).
fn app_with_totals(store: &Arc<dyn EventStore>) -> Application {
    ledger_app(store)
        .register_aggregate::<Counter<1>>()
        .register_event_processor_with(
            Totals::default(),
            ProcessorSettings::new().retry(quick_retry()),
        )
        .build()
        .expect("app")
}

/// The checks every bad stream of a ledger gets: loading fails typed and never half-applied,
/// the prefix before the bad event still loads, a command fails the same way and stores
/// nothing.
async fn assert_unloadable(
    app: &Application,
    store: &Arc<dyn EventStore>,
    id: &str,
    event_type: &str,
    reason: impl Fn(&DecodeReason) -> bool + Copy,
) {
    let stream = ledger_stream(id);
    let what = format!("ledger {id}");
    let load = app.load::<Ledger>(id).await.map(|l| l.balance);
    assert_decode_error(
        &what,
        load.expect_err("loading fails"),
        &stream,
        event_type,
        reason,
    );
    let history = app.history::<Ledger>(id).await.map(|h| h.len());
    assert_decode_error(
        &what,
        history.expect_err("history fails"),
        &stream,
        event_type,
        reason,
    );
    let prefix = app.load_at::<Ledger>(id, 1).await.expect("version 1 loads");
    assert_eq!(prefix.balance, 5, "{what}: the good prefix");
    let version = store.stream_version(&stream).await.expect("version");
    let dispatched = app
        .dispatch(Deposit {
            account: id.into(),
            amount: 1,
        })
        .await;
    assert_decode_error(
        &what,
        dispatched.expect_err("a command on it fails"),
        &stream,
        event_type,
        reason,
    );
    assert_eq!(
        store.stream_version(&stream).await.expect("version"),
        version,
        "{what}: the failed command stored nothing"
    );
}

/// Starts `app`, lets its processor work through everything, and checks that the bad event
/// (version 2) of each ledger of `parked` (ledger id, reason text) was parked by `Totals` with
/// its coordinates and attempts, while the good events were counted: all of them in the
/// `good` ledgers; in a ledger with a parked event, the one before it, and the one after it
/// too unless the processor holds it behind the parked one (ordered parking, row 12). Then
/// checks that the processor still follows new events.
async fn assert_processor_parks(app: &Application, parked: &[(&str, &str)], good: &[&str]) {
    app.start().await.expect("start");
    settle(app).await;
    let letters = app
        .dead_letters(Some("rel-totals"))
        .await
        .expect("dead letters");
    let totals = app
        .inspect_processor::<Totals, _>(|t| t.by_stream.clone())
        .await
        .expect("totals");
    let mut expected_letters = 0;
    for (id, reason) in parked {
        let stream = ledger_stream(id);
        let letter = letters
            .iter()
            .find(|l| l.stream_id == stream && l.stream_version == 2)
            .unwrap_or_else(|| panic!("the bad event of ledger {id} is parked: {letters:#?}"));
        assert_eq!(letter.event_type, "Deposited");
        assert_eq!(letter.attempts, quick_retry().max_attempts);
        assert!(
            letter.error.contains(reason) && letter.error.contains("version 2"),
            "ledger {id}: {}",
            letter.error
        );
        expected_letters += 1;
        let held = letters
            .iter()
            .find(|l| l.stream_id == stream && l.stream_version == 3);
        let counted = totals.get(&stream.to_string()).copied();
        match held {
            Some(held) => {
                assert_eq!(held.attempts, 0, "ledger {id}: held, not failed: {held:?}");
                expected_letters += 1;
                assert_eq!(
                    counted,
                    Some(5),
                    "ledger {id}: the event before the bad one"
                );
            }
            None => assert_eq!(
                counted,
                Some(8),
                "ledger {id}: the events around the bad one"
            ),
        }
    }
    assert_eq!(
        letters.len(),
        expected_letters,
        "only undecodable events (and those held behind them) are parked: {letters:#?}"
    );
    for id in good {
        assert_eq!(
            totals.get(&ledger_stream(id).to_string()),
            Some(&8),
            "ledger {id}: every good event is counted: {totals:?}"
        );
    }
    let fresh = app
        .dispatch_with(
            Deposit {
                account: "after".into(),
                amount: 4,
            },
            Default::default(),
        )
        .await
        .expect("a new deposit");
    tokio::time::timeout(
        WAIT,
        app.wait_for(fresh.position.expect("stored at a position")),
    )
    .await
    .expect("the processor still follows the store")
    .expect("the processor did not stop");
    let after = app
        .inspect_processor::<Totals, _>(|t| t.by_stream.get("Ledger/after").copied())
        .await
        .expect("totals");
    assert_eq!(
        after,
        Some(4),
        "the processor is alive after the bad events"
    );
    app.shutdown().await.expect("shutdown");
}

/// RELIABILITY.md #13, the rows every store can hold: an event with a schema version newer
/// than the code knows, a payload of the wrong shape (a string where a number is expected, a
/// missing field), an unknown type name. Loading the aggregate gives `Error::Decode` naming
/// stream, version, type and reason, never a half-applied state (the good prefix still loads
/// with `load_at`, a command on it fails the same way and stores nothing); the `Totals`
/// processor parks the undecodable events it handles (with stream, version, type, reason and
/// attempts), counts the good ones around them, and keeps following the store. (A type name
/// no processor handles is skipped by processors: see row 14.) Truncated bytes need a backend
/// corrupter: [`row13_truncated_json_in_storage_fails_typed`].
pub async fn row13_undecodable_events_fail_typed_and_processors_park<S: EventStore>(store: S) {
    let store = shared(store);
    let cases: [(&str, NewEvent); 4] = [
        ("newer", raw_event("Deposited", 2, "{\"amount\":7}")),
        ("shape", raw_event("Deposited", 1, "{\"amount\":\"seven\"}")),
        ("missing", raw_event("Deposited", 1, "{}")),
        ("unknown", raw_event("DepositReversed", 1, "{\"amount\":7}")),
    ];
    for (id, bad) in cases {
        store
            .append(
                &ledger_stream(id),
                ExpectedVersion::NoStream,
                vec![deposited(5), bad, deposited(3)],
            )
            .await
            .expect("a store holds any valid JSON under any type name");
    }
    let app = app_with_totals(&store);
    assert_unloadable(&app, &store, "newer", "Deposited", |r| {
        matches!(r, DecodeReason::NewerSchemaVersion { known: 1 })
    })
    .await;
    for id in ["shape", "missing"] {
        assert_unloadable(&app, &store, id, "Deposited", |r| {
            matches!(r, DecodeReason::Malformed(_))
        })
        .await;
    }
    assert_unloadable(&app, &store, "unknown", "DepositReversed", |r| {
        matches!(r, DecodeReason::UnknownType)
    })
    .await;
    assert_processor_parks(
        &app,
        &[
            ("newer", "newer"),
            ("shape", "malformed"),
            ("missing", "malformed"),
        ],
        &["unknown"],
    )
    .await;
}

/// RELIABILITY.md #13, truncated JSON and bytes that are not UTF-8 in storage, written behind
/// the store's back by the backend's `corrupt` function (every store API refuses such
/// payloads, so the in-memory store cannot hold them and does not run this test). Reading
/// returns the bytes as stored (or a typed decode error naming the event); loading the
/// aggregate gives `Error::Decode` naming stream, version, type and reason, never a
/// half-applied state; the processor parks the event and goes on.
pub async fn row13_truncated_json_in_storage_fails_typed<S, F, Fut>(store: S, corrupt: F)
where
    S: EventStore + Clone,
    F: Fn(S, EventId, Vec<u8>) -> Fut,
    Fut: Future<Output = ()>,
{
    let handle = store.clone();
    let store = shared(store);
    let corruptions: [(&str, &[u8]); 2] = [
        ("truncated", b"{\"amount\":"),
        ("binary", b"{\"amount\":\xff\xfe}"),
    ];
    for (id, bytes) in corruptions {
        let stream = ledger_stream(id);
        let batch = vec![deposited(5), deposited(7), deposited(3)];
        let target = batch[1].event_id;
        store
            .append(&stream, ExpectedVersion::NoStream, batch)
            .await
            .expect("setup");
        corrupt(handle.clone(), target, bytes.to_vec()).await;
        match store.read_stream(&stream, 1, None).await {
            Ok(events) => assert_eq!(&events[1].payload[..], bytes, "returned as stored"),
            Err(StoreError::Decode(d)) => {
                assert_eq!((d.stream, d.stream_version), (stream.clone(), 2));
            }
            Err(other) => panic!("reading a corrupted payload: {other:?}"),
        }
    }
    let app = app_with_totals(&store);
    for (id, _) in corruptions {
        assert_unloadable(&app, &store, id, "Deposited", |r| {
            matches!(
                r,
                DecodeReason::Malformed(_) | DecodeReason::CorruptEnvelope(_)
            )
        })
        .await;
    }
    assert_processor_parks(&app, &[("truncated", ""), ("binary", "")], &[]).await;
}

/// RELIABILITY.md #14: stored type names that look like Rust paths, file paths, Mongo
/// operators, code, near-misses of registered names, a command's name, the framework's own
/// deadline event, or an event of another registered aggregate: loading the aggregate gives
/// `Error::Decode` with `DecodeReason::UnknownType` (the registry's defined behaviour for an
/// aggregate), naming stream, version and the stored name; processors skip events they do not
/// handle (their defined behaviour) without parking or stopping. Only the application's own
/// tables are looked up: nothing is resolved from the stored name itself.
pub async fn row14_stored_type_names_resolve_only_through_the_registry<S: EventStore>(store: S) {
    let store = shared(store);
    let names = [
        "std::process::Command",
        "interlock_testing::reliability::domain::Deposited",
        "../../etc/passwd",
        "{\"$where\":1}",
        "'; DROP TABLE events; --",
        "deposited",
        "Deposited ",
        "Deposited\u{200b}",
        "Deposit",
        "Ledger",
        "Counted",
        "$DeadlineReached",
    ];
    for (i, name) in names.iter().enumerate() {
        store
            .append(
                &ledger_stream(&format!("n{i}")),
                ExpectedVersion::NoStream,
                vec![
                    deposited(5),
                    raw_event(name, 1, "{\"amount\":7}"),
                    deposited(3),
                ],
            )
            .await
            .expect("a store holds any type name");
    }
    // A ledger event inside another registered aggregate's stream.
    let counter = StreamId::new("Counter", "c").expect("stream");
    store
        .append(
            &counter,
            ExpectedVersion::NoStream,
            vec![raw_event("Counted", 1, "{\"amount\":1}"), deposited(7)],
        )
        .await
        .expect("setup");
    let app = app_with_totals(&store);
    for (i, name) in names.iter().enumerate() {
        assert_unloadable(&app, &store, &format!("n{i}"), name, |r| {
            matches!(r, DecodeReason::UnknownType)
        })
        .await;
    }
    let load = app.load::<Counter<1>>("c").await.map(|c| c.total);
    assert_decode_error(
        "counter",
        load.expect_err("a ledger event in a counter"),
        &counter,
        "Deposited",
        |r| matches!(r, DecodeReason::UnknownType),
    );
    let good: Vec<String> = (0..names.len()).map(|i| format!("n{i}")).collect();
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    assert_processor_parks(&app, &[], &good).await;
}
