//! Rows checked through an application: command races, batches that fail to serialize, bad
//! values produced by handlers.

use interlock_core::{EventStore, ExpectedVersion, MAX_PAYLOAD_LEN};
use interlock_runtime::Error;
use tokio::sync::Barrier;

use super::domain::{Deposit, Ledger, Measure, Note, RaceDeposit, RaceGate, WriteEntries};
use super::{WAIT, ledger_app, ledger_stream, read_everything, shared};

/// RELIABILITY.md #1 through an application: an account at version 10; 50 `RaceDeposit`
/// commands whose handlers all wait at one barrier after loading it (so all 50 decided on
/// version 10). Exactly one is stored; 49 fail with `Error::Concurrency` naming the stream,
/// expected 10 and actual 11; the account holds 11 deposits and its state is the winner's.
pub async fn row01_fifty_racing_commands_have_one_winner<S: EventStore>(store: S) {
    const TASKS: usize = 50;
    let store = shared(store);
    let app = ledger_app(&store)
        .register_dependency(RaceGate(Barrier::new(TASKS)))
        .build()
        .expect("app");
    for _ in 0..10 {
        app.dispatch(Deposit {
            account: "race".into(),
            amount: 1,
        })
        .await
        .expect("setup deposit");
    }
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.dispatch(RaceDeposit {
                account: "race".into(),
                amount: 100 + t as u64,
            })
            .await
        }));
    }
    let (mut winners, mut conflicts) = (Vec::new(), 0);
    for task in tasks {
        match tokio::time::timeout(WAIT, task)
            .await
            .expect("racer finished in time (all 50 reached the barrier)")
            .expect("racer did not panic")
        {
            Ok(balance) => winners.push(balance),
            Err(Error::Concurrency(e)) => {
                assert_eq!(e.stream, ledger_stream("race"));
                assert_eq!(e.expected, ExpectedVersion::Exact(10));
                assert_eq!(e.actual, 11);
                conflicts += 1;
            }
            Err(other) => panic!("a racer got something else than a conflict: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one command wins");
    assert_eq!(conflicts, TASKS - 1);
    let events = store
        .read_stream(&ledger_stream("race"), 1, None)
        .await
        .expect("read");
    assert_eq!(events.len(), 11);
    let ledger = app.load::<Ledger>("race").await.expect("load");
    assert_eq!(ledger.deposits, 11);
    assert_eq!(ledger.balance, winners[0], "the state is the winner's");
}

/// RELIABILITY.md #2 through an application: a command emits 5 events and the 4th cannot be
/// serialized. The dispatch fails with `Error::EventSerialization` naming event 4, its type,
/// the stream and the command; nothing is stored; no cached state keeps the failed command's
/// events; the next command (at the old version) succeeds.
pub async fn row02_a_fourth_event_that_cannot_be_serialized_stores_nothing<S: EventStore>(
    store: S,
) {
    let store = shared(store);
    let app = ledger_app(&store).build().expect("app");
    app.dispatch(WriteEntries {
        account: "batch".into(),
        count: 2,
        poison_at: None,
    })
    .await
    .expect("setup");
    let before = read_everything(&store).await;
    let failed = app
        .dispatch(WriteEntries {
            account: "batch".into(),
            count: 5,
            poison_at: Some(4),
        })
        .await;
    match failed {
        Err(Error::EventSerialization {
            stream,
            command,
            index,
            event_type,
            message,
        }) => {
            assert_eq!(stream, ledger_stream("batch"));
            assert_eq!((command, index, event_type), ("WriteEntries", 4, "Entry"));
            assert!(message.contains("entry 4 refuses"), "{message}");
        }
        other => panic!("expected EventSerialization naming event 4, got {other:?}"),
    }
    let text = app
        .dispatch(WriteEntries {
            account: "batch".into(),
            count: 5,
            poison_at: Some(4),
        })
        .await
        .expect_err("fails again")
        .to_string();
    assert!(
        text.contains("#4") && text.contains("Entry") && text.contains("Ledger/batch"),
        "{text}"
    );
    assert_eq!(read_everything(&store).await, before, "nothing stored");
    assert_eq!(
        app.load::<Ledger>("batch").await.expect("load").entries,
        vec![1, 2]
    );
    app.dispatch(WriteEntries {
        account: "batch".into(),
        count: 3,
        poison_at: None,
    })
    .await
    .expect("the next command succeeds");
    let events = store
        .read_stream(&ledger_stream("batch"), 1, None)
        .await
        .expect("read");
    assert_eq!(events.len(), 5, "versions 3-5 taken by the next command");
    assert_eq!(
        app.load::<Ledger>("batch").await.expect("load").entries,
        vec![1, 2, 1, 2, 3],
        "the cached copy never saw the failed command's events"
    );
}

/// RELIABILITY.md #16 through an application: values a handler produces that storage cannot
/// hold faithfully are refused with a typed error before any write, and the aggregate stays
/// loadable. `NaN` and the infinities have no JSON form (serde_json would write `null`, which
/// then fails to load as an `f64`: the aggregate would be poisoned by a command that
/// "succeeded"); a payload over [`MAX_PAYLOAD_LEN`] is refused naming the payload.
pub async fn row16_bad_values_from_handlers_are_refused_before_any_write<S: EventStore>(store: S) {
    let store = shared(store);
    let app = ledger_app(&store).build().expect("app");
    app.dispatch(Measure {
        account: "edge".into(),
        value: 1.5,
    })
    .await
    .expect("a finite measurement");
    let before = read_everything(&store).await;

    let huge = app
        .dispatch(Note {
            account: "edge".into(),
            text: "x".repeat(MAX_PAYLOAD_LEN),
        })
        .await;
    match huge {
        Err(Error::Validation(e)) => assert_eq!(e.field(), "payload", "{e}"),
        other => panic!("a payload over the limit: expected a validation error, got {other:?}"),
    }
    assert_eq!(read_everything(&store).await, before, "nothing stored");

    for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let result = app
            .dispatch(Measure {
                account: "edge".into(),
                value,
            })
            .await;
        let stored = read_everything(&store).await;
        let loaded = app.load::<Ledger>("edge").await;
        assert!(
            result.is_err(),
            "measuring {value} must be refused before any write (it was stored as {:?}; loading \
             the account now gives {:?})",
            stored
                .last()
                .map(|e| String::from_utf8_lossy(&e.payload).into_owned()),
            loaded.as_ref().map(|l| l.last_measure)
        );
        let error = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("Measured"), "names the event: {error}");
        assert_eq!(stored, before, "{value}: nothing stored");
        assert_eq!(
            loaded.expect("the account still loads").last_measure,
            Some(1.5)
        );
    }
}
