//! Row #12: a poison event is parked in stream order, through the backend's dead-letter store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use interlock_core::{Event, EventStore, ExpectedVersion, NewEvent, Position, StreamId};
use interlock_runtime::ApplicationBuilder;
use interlock_runtime::processor::{
    EventContext, EventProcessor, HandlerError, HandlesEvent, ProcessorRoutes, ProcessorSettings,
};
use serde::{Deserialize, Serialize};

use super::{WAIT, quick_retry, settle, shared};

#[derive(Serialize, Deserialize)]
struct Booked {
    amount: u64,
}
impl Event for Booked {
    const TYPE_NAME: &'static str = "ParkingBooked";
}

/// Sums amounts per stream and logs each application (stream, version); fails on 13 until
/// `fixed`.
#[derive(Clone, Default)]
struct Sums {
    sums: Arc<Mutex<HashMap<String, u64>>>,
    applied: Arc<Mutex<Vec<(String, u64)>>>,
    fixed: Arc<AtomicBool>,
}

impl EventProcessor for Sums {
    const NAME: &'static str = "row12_sums";
    fn configure(routes: &mut ProcessorRoutes<Self>) {
        routes.event::<Booked>();
    }
    async fn reset(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl HandlesEvent<Booked> for Sums {
    async fn handle(&mut self, e: Booked, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        if e.amount == 13 && !self.fixed.load(Ordering::SeqCst) {
            return Err(HandlerError::new("13 is refused until the fix"));
        }
        let stream = ctx.stream_id().id().to_owned();
        *self
            .sums
            .lock()
            .expect("sums")
            .entry(stream.clone())
            .or_default() += e.amount;
        self.applied
            .lock()
            .expect("log")
            .push((stream, ctx.stream_version()));
        Ok(())
    }
}

async fn book(store: &Arc<dyn EventStore>, stream: &str, amount: u64) -> Position {
    store
        .append(
            &StreamId::new("Parking", stream).expect("stream"),
            ExpectedVersion::Any,
            vec![NewEvent::from_event(&Booked { amount }).expect("event")],
        )
        .await
        .expect("append")
        .last_position
}

/// RELIABILITY.md #12: a handler fails on event k of stream S while streams T and U
/// interleave. After its retries k is parked with its error and attempt count; S's later
/// events wait behind it (parked as held, untried); T and U keep flowing. After the fix a
/// replay applies k and then the held events, in stream order, once each, and S flows again.
/// Held streams survive a restart: the index is rebuilt from the stored dead letters.
pub async fn row12_a_poison_event_parks_its_stream_in_order<S: EventStore>(store: S) {
    let store = shared(store);
    let sums = Sums::default();
    let settings = ProcessorSettings::new().retry(quick_retry()).batch_size(4);
    let app = ApplicationBuilder::new()
        .with_shared_event_store(store.clone())
        .register_event_processor_with(sums.clone(), settings)
        .build()
        .expect("build");
    app.start().await.expect("start");
    for (stream, amount) in [
        ("s", 1),
        ("t", 10),
        ("s", 13),
        ("u", 100),
        ("s", 2),
        ("t", 20),
        ("s", 3),
        ("u", 200),
    ] {
        book(&store, stream, amount).await;
    }
    settle(&app).await;
    let totals = |sums: &Sums| sums.sums.lock().expect("sums").clone();
    let now = totals(&sums);
    assert_eq!(
        (now.get("s"), now.get("t"), now.get("u")),
        (Some(&1), Some(&30), Some(&300)),
        "T and U flow, S stops at its poison event"
    );
    let letters = app.dead_letters(Some(Sums::NAME)).await.expect("letters");
    let summary: Vec<(u64, u32)> = letters
        .iter()
        .map(|l| (l.stream_version, l.attempts))
        .collect();
    assert_eq!(
        summary,
        vec![(2, 2), (3, 0), (4, 0)],
        "the poison event after its two attempts, then S's later events held, untried"
    );
    assert!(
        letters[0].error.contains("refused until the fix"),
        "{}",
        letters[0].error
    );
    assert!(
        letters[1].error.contains("held behind"),
        "{}",
        letters[1].error
    );
    assert!(letters.iter().all(|l| l.stream_id.id() == "s"));

    // A restart keeps S held: a new S event waits too.
    app.shutdown().await.expect("shutdown");
    let sums = Sums {
        sums: sums.sums.clone(),
        applied: sums.applied.clone(),
        fixed: sums.fixed.clone(),
    };
    let app = ApplicationBuilder::new()
        .with_shared_event_store(store.clone())
        .register_event_processor_with(sums.clone(), settings)
        .build()
        .expect("build again");
    app.start().await.expect("start again");
    book(&store, "s", 4).await;
    book(&store, "t", 30).await;
    settle(&app).await;
    assert_eq!(totals(&sums).get("t"), Some(&60));
    assert_eq!(
        totals(&sums).get("s"),
        Some(&1),
        "S still held after the restart"
    );
    let letters = app.dead_letters(Some(Sums::NAME)).await.expect("letters");
    assert_eq!(letters.len(), 4);

    // Replaying before the fix fails and keeps every letter.
    assert!(app.replay_dead_letter(letters[0].id).await.is_err());
    assert_eq!(
        app.dead_letters(Some(Sums::NAME))
            .await
            .expect("letters")
            .len(),
        4
    );

    sums.fixed.store(true, Ordering::SeqCst);
    tokio::time::timeout(WAIT, app.replay_dead_letter(letters[2].id))
        .await
        .expect("replay in time")
        .expect("the replay applies the whole held stream");
    assert!(
        app.dead_letters(Some(Sums::NAME))
            .await
            .expect("letters")
            .is_empty()
    );
    assert_eq!(totals(&sums).get("s"), Some(&23));
    let s_applied: Vec<u64> = sums
        .applied
        .lock()
        .expect("log")
        .iter()
        .filter(|(stream, _)| stream == "s")
        .map(|(_, version)| *version)
        .collect();
    assert_eq!(
        s_applied,
        vec![1, 2, 3, 4, 5],
        "S applied once each, in order"
    );

    // S flows again.
    book(&store, "s", 5).await;
    settle(&app).await;
    assert_eq!(totals(&sums).get("s"), Some(&28));
    app.shutdown().await.expect("shutdown");
}
