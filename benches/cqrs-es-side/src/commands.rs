//! W1 (N `Open` commands on N accounts, 1 or 8 tasks) and W4 (8 writers depositing into one
//! account), through `CqrsFramework::execute`, on `MemStore` and on postgres-es.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cqrs_es::mem_store::MemStore;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateContext, AggregateError, CqrsFramework, EventStore};

use crate::model::{Account, AccountCommand};
use crate::out::Row;
use crate::pg::{BoxError, PgSchema};

/// Runs `n` `Open` commands on accounts `acc-0..n`, split over `tasks` tasks.
async fn open_all<ES>(
    cqrs: Arc<CqrsFramework<Account, ES>>,
    n: u64,
    tasks: u64,
) -> Result<Duration, BoxError>
where
    ES: EventStore<Account> + 'static,
    ES::AC: Send,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let cqrs = Arc::clone(&cqrs);
            tokio::spawn(async move {
                let mut i = t;
                while i < n {
                    cqrs.execute(&format!("acc-{i}"), AccountCommand::Open)
                        .await?;
                    i += tasks;
                }
                Ok::<_, AggregateError<_>>(())
            })
        })
        .collect();
    for handle in handles {
        handle.await??;
    }
    Ok(start.elapsed())
}

/// How many of accounts `acc-0..n` a fresh load finds open.
async fn count_open<ES: EventStore<Account>>(store: &ES, n: u64) -> Result<u64, BoxError> {
    let mut open = 0;
    for i in 0..n {
        let mut context = store.load_aggregate(&format!("acc-{i}")).await?;
        if *context.aggregate() == crate::model::account_at(1) {
            open += 1;
        }
    }
    Ok(open)
}

pub async fn w1(store: &'static str, n: u64, url: &str) -> Result<(), BoxError> {
    for (tasks, variant) in [(1, "sequential"), (8, "8 tasks")] {
        let row = Row::new("W1", store, variant, n);
        let (elapsed, open) = if store == "memory" {
            let mem = MemStore::<Account>::default();
            let cqrs = Arc::new(CqrsFramework::new(mem.clone(), vec![], ()));
            let elapsed = open_all(cqrs, n, tasks).await?;
            (elapsed, count_open(&mem, n).await?)
        } else {
            let pg = PgSchema::fresh(url).await?;
            let es = PersistedEventStore::<_, Account>::new_event_store(pg.repo());
            let cqrs = Arc::new(CqrsFramework::new(es, vec![], ()));
            let elapsed = open_all(cqrs, n, tasks).await?;
            let check = PersistedEventStore::<_, Account>::new_event_store(pg.repo());
            let open = count_open(&check, n).await?;
            let stored = pg.count_events().await? as u64;
            pg.drop().await?;
            (elapsed, if stored == n { open } else { u64::MAX })
        };
        row.rate("cmd/s", elapsed)
            .detail("CqrsFramework::execute(Open), each on a new account")
            .check(open == n, || {
                format!("{open} of {n} accounts open after reload")
            })
            .print();
    }
    Ok(())
}

pub async fn w4(store: &'static str, per_writer: u64, url: &str) -> Result<(), BoxError> {
    const WRITERS: u64 = 8;
    let pg = if store == "postgres" {
        Some(PgSchema::fresh(url).await?)
    } else {
        None
    };
    let mem = MemStore::<Account>::default();
    let row = Row::new("W4", store, "no retry", WRITERS * per_writer);
    let (elapsed, ok, conflicts, other, account) = match &pg {
        None => {
            let cqrs = Arc::new(CqrsFramework::new(mem.clone(), vec![], ()));
            let (elapsed, ok, conflicts, other) = race(cqrs, WRITERS, per_writer).await?;
            let account = mem.load_aggregate("hot").await?.aggregate().clone();
            (elapsed, ok, conflicts, other, account)
        }
        Some(pg) => {
            let es = PersistedEventStore::<_, Account>::new_event_store(pg.repo());
            let cqrs = Arc::new(CqrsFramework::new(es, vec![], ()));
            let (elapsed, ok, conflicts, other) = race(cqrs, WRITERS, per_writer).await?;
            let check = PersistedEventStore::<_, Account>::new_event_store(pg.repo());
            let account = check.load_aggregate("hot").await?.aggregate().clone();
            (elapsed, ok, conflicts, other, account)
        }
    };
    let lost = ok.saturating_sub(account.balance);
    let mut row = row
        .detail(format!(
            "{ok} succeeded, {conflicts} conflicts, {other} other errors, {lost} lost updates"
        ))
        .check(lost == 0 && other == 0 && account.balance <= ok, || {
            format!(
                "{ok} deposits acknowledged, balance {}: {lost} lost updates ({conflicts} conflicts reported)",
                account.balance
            )
        });
    row.n = ok;
    row.rate("cmd/s", elapsed).print();
    if let Some(pg) = pg {
        pg.drop().await?;
    }
    Ok(())
}

/// Opens account `hot`, then `writers` tasks deposit 1, `per_writer` times each, all at once.
/// Returns (elapsed, successes, conflicts, other errors).
async fn race<ES>(
    cqrs: Arc<CqrsFramework<Account, ES>>,
    writers: u64,
    per_writer: u64,
) -> Result<(Duration, u64, u64, u64), BoxError>
where
    ES: EventStore<Account> + 'static,
    ES::AC: Send,
{
    cqrs.execute("hot", AccountCommand::Open).await?;
    let ok = Arc::new(AtomicU64::new(0));
    let conflicts = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (cqrs, ok, conflicts, other) = (
                Arc::clone(&cqrs),
                ok.clone(),
                conflicts.clone(),
                other.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..per_writer {
                    let counter = match cqrs
                        .execute("hot", AccountCommand::Deposit { amount: 1 })
                        .await
                    {
                        Ok(()) => &ok,
                        Err(AggregateError::AggregateConflict) => &conflicts,
                        Err(_) => &other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await?;
    }
    let elapsed = start.elapsed();
    Ok((
        elapsed,
        ok.load(Ordering::Relaxed),
        conflicts.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    ))
}
