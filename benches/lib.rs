//! Shared workloads for the benchmarks under `benches/`: an account model and helpers that fill
//! stores, so every benchmark measures the same thing on every backend.

use std::collections::HashMap;

use interlock::prelude::*;
use interlock::{ExpectedVersion, NewEvent};
use serde::{Deserialize, Serialize};

pub mod reload_model;

/// Events per benchmark, from `INTERLOCK_BENCH_N` (CI runs a small smoke size).
pub fn bench_size(default: u64) -> u64 {
    std::env::var("INTERLOCK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Money arrived in an account.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub struct Deposited {
    /// How much.
    pub amount: u64,
}

impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
}

/// The balance of every account, kept in memory.
#[derive(Default, Debug)]
pub struct Balances {
    /// Balance by account id.
    pub by_account: HashMap<String, u64>,
}

impl EventProcessor for Balances {
    const NAME: &'static str = "balances";
    fn configure(routes: &mut ProcessorRoutes<Self>) {
        routes.event::<Deposited>();
    }
    async fn reset(&mut self) -> Result<(), HandlerError> {
        self.by_account.clear();
        Ok(())
    }
}

impl HandlesEvent<Deposited> for Balances {
    async fn handle(&mut self, e: Deposited, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        match self.by_account.get_mut(ctx.stream_id().id()) {
            Some(balance) => *balance += e.amount,
            None => {
                self.by_account
                    .insert(ctx.stream_id().id().to_owned(), e.amount);
            }
        }
        Ok(())
    }
}

/// Appends `events` deposits of 1 spread evenly over `accounts` streams, in batches of up to
/// 1000 events.
pub async fn fill(store: &impl EventStore, events: u64, accounts: u64) -> Result<(), Error> {
    let per_account = events / accounts.max(1);
    for account in 0..accounts {
        let stream = StreamId::new("Account", account.to_string())?;
        let mut version = 0;
        while version < per_account {
            let batch = (per_account - version).min(1000);
            let new: Vec<NewEvent> = (0..batch)
                .map(|_| NewEvent::from_event(&Deposited { amount: 1 }))
                .collect::<Result<_, _>>()
                .map_err(|e| interlock::ValidationError::new("payload", e.to_string()))?;
            store
                .append(&stream, ExpectedVersion::Exact(version), new)
                .await?;
            version += batch;
        }
    }
    Ok(())
}
