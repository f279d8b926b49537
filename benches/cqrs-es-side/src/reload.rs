//! W2 (a cold reload of one account with a long stream, with and without snapshots) and W5
//! (the same reload when every event needs an upcaster), through `EventStore::load_aggregate`,
//! the call `CqrsFramework::execute` starts every command with.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cqrs_es::mem_store::{MemStore, MemStoreAggregateContext};
use cqrs_es::persist::{PersistedEventStore, SemanticVersionEventUpcaster, SerializedEvent};
use cqrs_es::{AggregateContext, CqrsFramework, EventStore};
use serde_json::Value;

use crate::model::{Account, AccountCommand, account_at, amount_at};
use crate::out::Row;
use crate::pg::{BoxError, PgSchema, stream};

/// Reloads per measurement; the best time is reported.
const REPEATS: u32 = 5;

/// The best of [`REPEATS`] loads of `id`, and the state the last one found.
async fn best_load<ES: EventStore<Account>>(
    store: &ES,
    id: &str,
) -> Result<(Duration, Account), BoxError> {
    let mut best = Duration::MAX;
    let mut account = Account::default();
    for _ in 0..REPEATS {
        let start = Instant::now();
        let mut context = store.load_aggregate(id).await?;
        best = best.min(start.elapsed());
        account = context.aggregate().clone();
    }
    Ok((best, account))
}

fn wrong(account: &Account, expected: &Account) -> String {
    format!(
        "wrong state: balance {} and {} deposits, expected {} and {}",
        account.balance, account.deposits, expected.balance, expected.deposits
    )
}

pub async fn w2(store: &'static str, n: u64, url: &str) -> Result<(), BoxError> {
    let expected = account_at(n);
    if store == "memory" {
        let mem = MemStore::<Account>::default();
        let events = stream("long", 1, n);
        for (i, chunk) in events.chunks(1000).enumerate() {
            let context = MemStoreAggregateContext {
                aggregate_id: "long".to_owned(),
                aggregate: Account::default(),
                current_sequence: i * 1000,
            };
            let payloads = chunk.iter().map(|e| e.payload.clone()).collect();
            mem.commit(payloads, context, HashMap::new()).await?;
        }
        let (elapsed, account) = best_load(&mem, "long").await?;
        Row::new("W2", store, "full replay", n)
            .millis(elapsed)
            .detail("MemStore::load_aggregate (MemStore has no snapshots)")
            .check(account == expected, || wrong(&account, &expected))
            .print();
        return Ok(());
    }

    let pg = PgSchema::fresh(url).await?;
    pg.insert(&stream("long", 1, n)).await?;
    let plain = PersistedEventStore::<_, Account>::new_event_store(pg.repo());
    let (elapsed, account) = best_load(&plain, "long").await?;
    Row::new("W2", store, "full replay", n)
        .millis(elapsed)
        .detail("PersistedEventStore::new_event_store → load_aggregate")
        .check(account == expected, || wrong(&account, &expected))
        .print();

    // The snapshot is taken the way production takes it: by the command whose event crosses
    // the snapshot boundary.
    let every = 1000.min(n / 10).max(1);
    let snapshot_at = (n - 1) / every * every;
    pg.insert(&stream("snap", 1, snapshot_at - 1)).await?;
    let snapshots = CqrsFramework::new(
        PersistedEventStore::<_, Account>::new_snapshot_store(pg.repo(), every as usize),
        vec![],
        (),
    );
    snapshots
        .execute(
            "snap",
            AccountCommand::Deposit {
                amount: amount_at(snapshot_at),
            },
        )
        .await?;
    pg.insert(&stream("snap", snapshot_at + 1, n)).await?;
    let store_with_snapshots =
        PersistedEventStore::<_, Account>::new_snapshot_store(pg.repo(), every as usize);
    let (elapsed, account) = best_load(&store_with_snapshots, "snap").await?;
    Row::new("W2", store, "snapshot + tail", n)
        .millis(elapsed)
        .detail(format!(
            "new_snapshot_store(every {every}) → load_aggregate: snapshot at {snapshot_at} + {} events",
            n - snapshot_at
        ))
        .check(account == expected, || wrong(&account, &expected))
        .print();
    pg.drop().await
}

pub async fn w5(n: u64, url: &str) -> Result<(), BoxError> {
    let expected = account_at(n);
    let pg = PgSchema::fresh(url).await?;
    pg.insert(&stream("current", 1, n)).await?;
    // The same stream as version 1.0 wrote it: `{"Deposited": {"cents": n}}`.
    let legacy: Vec<SerializedEvent> = stream("legacy", 1, n)
        .iter()
        .map(SerializedEvent::try_from)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(|mut e| {
            if e.event_type == "Deposited" {
                e.event_version = "1.0".to_owned();
                if let Some(body) = e
                    .payload
                    .get_mut("Deposited")
                    .and_then(Value::as_object_mut)
                    && let Some(amount) = body.remove("amount")
                {
                    body.insert("cents".to_owned(), amount);
                }
            }
            e
        })
        .collect();
    pg.insert_serialized(&legacy).await?;

    let upcaster = SemanticVersionEventUpcaster::new(
        "Deposited",
        "2.0",
        Box::new(|mut payload: Value| {
            if let Some(body) = payload.get_mut("Deposited").and_then(Value::as_object_mut)
                && let Some(cents) = body.remove("cents")
            {
                body.insert("amount".to_owned(), cents);
            }
            payload
        }),
    );
    let upcasting = PersistedEventStore::<_, Account>::new_event_store(pg.repo())
        .with_upcasters(vec![Box::new(upcaster)]);
    let (elapsed, account) = best_load(&upcasting, "legacy").await?;
    Row::new("W5", "postgres", "one upcaster per event", n)
        .millis(elapsed)
        .detail("SemanticVersionEventUpcaster 1.0 → 2.0 (renames a field), load_aggregate")
        .check(account == expected, || wrong(&account, &expected))
        .print();

    let plain = PersistedEventStore::<_, Account>::new_event_store(pg.repo());
    let (elapsed, account) = best_load(&plain, "current").await?;
    Row::new("W5", "postgres", "no upcaster", n)
        .millis(elapsed)
        .detail("no upcaster registered, events at the current version")
        .check(account == expected, || wrong(&account, &expected))
        .print();
    pg.drop().await
}
