//! W3: every event of `accounts` accounts replayed into an in-memory balance view (a
//! `cqrs_es::Query`). On PostgreSQL through `QueryReplay::replay_all`, cqrs-es's replay of a
//! query; `MemStore` has no replay, so there each account's events are loaded and dispatched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use cqrs_es::mem_store::{MemStore, MemStoreAggregateContext};
use cqrs_es::persist::QueryReplay;
use cqrs_es::{EventEnvelope, EventStore, Query};

use crate::model::{Account, AccountEvent, account_at};
use crate::out::Row;
use crate::pg::{BoxError, PgSchema, stream};

/// The balance of every account.
#[derive(Clone, Default)]
struct Balances(Arc<Mutex<HashMap<String, u64>>>);

#[async_trait]
impl Query<Account> for Balances {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<Account>]) {
        let Ok(mut balances) = self.0.lock() else {
            return;
        };
        for event in events {
            match event.payload {
                AccountEvent::Opened => {
                    balances.insert(aggregate_id.to_owned(), 0);
                }
                AccountEvent::Deposited { amount } => {
                    *balances.entry(aggregate_id.to_owned()).or_default() += amount;
                }
            }
        }
    }
}

impl Balances {
    /// Whether the view holds exactly `accounts` accounts, each with `per_account` events.
    fn check(&self, accounts: u64, per_account: u64) -> Result<(), String> {
        let balances = self.0.lock().map_err(|e| e.to_string())?;
        let expected = account_at(per_account).balance;
        let wrong = (0..accounts)
            .filter(|a| balances.get(&format!("acc-{a}")) != Some(&expected))
            .count();
        if balances.len() as u64 != accounts || wrong > 0 {
            return Err(format!(
                "view holds {} accounts, {wrong} with a wrong balance",
                balances.len()
            ));
        }
        Ok(())
    }
}

pub async fn w3(store: &'static str, n: u64, url: &str) -> Result<(), BoxError> {
    let accounts = 1000.min(n);
    let per_account = n / accounts;
    let n = accounts * per_account;
    let view = Balances::default();
    let row = Row::new("W3", store, "catch-up", n);
    let (elapsed, detail) = if store == "memory" {
        let mem = MemStore::<Account>::default();
        for a in 0..accounts {
            let id = format!("acc-{a}");
            let context = MemStoreAggregateContext {
                aggregate_id: id.clone(),
                aggregate: Account::default(),
                current_sequence: 0,
            };
            let payloads = stream(&id, 1, per_account)
                .into_iter()
                .map(|e| e.payload)
                .collect();
            mem.commit(payloads, context, HashMap::new()).await?;
        }
        let start = Instant::now();
        for a in 0..accounts {
            let id = format!("acc-{a}");
            let events = mem.load_events(&id).await?;
            view.dispatch(&id, &events).await;
        }
        (
            start.elapsed(),
            "MemStore::load_events per account → Query::dispatch (MemStore has no replay)",
        )
    } else {
        let pg = PgSchema::fresh(url).await?;
        let all: Vec<_> = (0..accounts)
            .flat_map(|a| stream(&format!("acc-{a}"), 1, per_account))
            .collect();
        pg.insert(&all).await?;
        let replay = QueryReplay::<_, _, Account>::new(pg.repo(), view.clone());
        let start = Instant::now();
        replay.replay_all().await?;
        let elapsed = start.elapsed();
        pg.drop().await?;
        (
            elapsed,
            "QueryReplay::replay_all → Query::dispatch, one event at a time",
        )
    };
    let checked = view.check(accounts, per_account);
    row.rate("events/s", elapsed)
        .detail(detail)
        .check(checked.is_ok(), || checked.err().unwrap_or_default())
        .print();
    Ok(())
}
