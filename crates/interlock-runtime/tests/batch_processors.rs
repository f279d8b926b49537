//! Batch processors: the application drives them like any processor, and trusts them with their
//! own checkpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interlock_runtime::ProcessingFailure;
use interlock_runtime::core::side::{CheckpointStore, DeadLetterStore, NewDeadLetter};
use interlock_runtime::core::{NewEvent, StoreError, StreamId};
use interlock_runtime::prelude::*;
use interlock_runtime::processor::{Batch, BatchOutcome, BatchProcessor, FailurePolicy};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}
impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
}

/// A "database" holding a view and the checkpoint, changed together under one lock, the way a
/// SQL transaction would.
#[derive(Default)]
struct Db {
    totals: HashMap<String, u64>,
    batches: usize,
}

struct Totals {
    db: Arc<Mutex<Db>>,
    store: InMemoryEventStore,
}

impl BatchProcessor for Totals {
    const NAME: &'static str = "sql-totals";

    async fn apply_batch(&mut self, batch: Batch<'_>) -> Result<BatchOutcome, StoreError> {
        let mut outcome = BatchOutcome::default();
        let mut staged = self.db.lock().unwrap().totals.clone();
        let mut parked = Vec::new();
        for event in batch.events {
            let decoded = event.decode::<Deposited>();
            match decoded {
                Ok(d) if d.amount != 13 => {
                    *staged.entry(event.stream_id.id().to_owned()).or_default() += d.amount;
                }
                other => {
                    let error = other.map_or_else(|e| e.to_string(), |_| "13 is unlucky".into());
                    let failure = ProcessingFailure {
                        processor: Self::NAME,
                        stream: event.stream_id.clone(),
                        stream_version: event.stream_version,
                        event_type: event.event_type.clone(),
                        position: event.position,
                        attempts: 1,
                        error: error.clone(),
                    };
                    if batch.on_failure == FailurePolicy::Stop {
                        outcome.stopped = Some(failure);
                        break;
                    }
                    parked.push(NewDeadLetter::for_event(Self::NAME, event, error, 1));
                    outcome.parked.push(failure);
                }
            }
            outcome.applied_up_to = Some(event.position);
        }
        // "Commit": view, dead letters and checkpoint together.
        {
            let mut db = self.db.lock().unwrap();
            db.totals = staged;
            db.batches += 1;
        }
        for letter in parked {
            self.store.park(letter).await?;
        }
        if batch.store_checkpoint
            && let Some(p) = outcome.applied_up_to
        {
            self.store.save_checkpoint(batch.checkpoint, p).await?;
        }
        Ok(outcome)
    }

    async fn reset(&mut self) -> Result<(), HandlerError> {
        self.db.lock().unwrap().totals.clear();
        Ok(())
    }
}

async fn deposit(store: &InMemoryEventStore, account: &str, amount: u64) -> Position {
    store
        .append(
            &StreamId::new("Account", account).unwrap(),
            ExpectedVersion::Any,
            vec![NewEvent::from_event(&Deposited { amount }).unwrap()],
        )
        .await
        .unwrap()
        .last_position
}

fn app(
    store: &InMemoryEventStore,
    db: &Arc<Mutex<Db>>,
    settings: ProcessorSettings,
) -> Application {
    Application::builder()
        .with_event_store(store.clone())
        .register_batch_processor_with(
            Totals {
                db: db.clone(),
                store: store.clone(),
            },
            settings,
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn batches_catch_up_follow_live_and_park() {
    let store = InMemoryEventStore::new();
    for i in 0..1000 {
        deposit(&store, &format!("a{}", i % 3), 1).await;
    }
    let db = Arc::new(Mutex::new(Db::default()));
    let app = app(&store, &db, ProcessorSettings::new().batch_size(100));
    app.start().await.unwrap();
    deposit(&store, "a0", 13).await;
    let last = deposit(&store, "a1", 5).await;
    tokio::time::timeout(Duration::from_secs(10), app.wait_for(last))
        .await
        .unwrap()
        .unwrap();
    {
        let db = db.lock().unwrap();
        assert_eq!(db.totals.values().sum::<u64>(), 1005);
        assert!(
            db.batches >= 10 && db.batches < 1000,
            "batched: {}",
            db.batches
        );
    }
    assert_eq!(
        store.load_checkpoint("sql-totals").await.unwrap(),
        Some(last)
    );
    let letters = app.dead_letters(Some("sql-totals")).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error, "13 is unlucky");

    // Rebuild gives the same view.
    let before = db.lock().unwrap().totals.clone();
    let done = app.rebuild("sql-totals", |_| {}).await.unwrap();
    assert_eq!(done.position, last);
    assert_eq!(db.lock().unwrap().totals, before);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn inline_batches_report_failures_and_stop_keeps_the_checkpoint_before_the_event() {
    let store = InMemoryEventStore::new();
    let db = Arc::new(Mutex::new(Db::default()));
    let app = app(
        &store,
        &db,
        ProcessorSettings::inline().on_failure(FailurePolicy::Stop),
    );
    let ok = deposit(&store, "a", 2).await;
    deposit(&store, "a", 13).await;
    deposit(&store, "a", 3).await;
    let err = app.start().await.unwrap_err();
    assert!(matches!(err, Error::Processing { .. }), "{err:?}");
    assert_eq!(store.load_checkpoint("sql-totals").await.unwrap(), Some(ok));
    assert_eq!(db.lock().unwrap().totals["a"], 2);
}
