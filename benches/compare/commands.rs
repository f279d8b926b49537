//! W1 (N `Open` commands on N accounts, 1 or 8 tasks) and W4 (8 writers depositing into one
//! account, with and without `ConcurrencyRetryMiddleware`), through `Application::dispatch`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use interlock::prelude::*;
use interlock::runtime::middleware::{
    ConcurrencyRetryMiddleware, MessageInfo, Middleware, Next, Outcome,
};

use crate::backend::Backend;
use crate::model::{Account, Deposit, Open, account_at};
use crate::out::{BoxError, Row};

async fn open_all(app: &Application, n: u64, tasks: u64) -> Result<Duration, BoxError> {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut i = t;
                while i < n {
                    app.dispatch(Open {
                        account: format!("acc-{i}"),
                    })
                    .await?;
                    i += tasks;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for handle in handles {
        handle.await??;
    }
    Ok(start.elapsed())
}

pub(crate) async fn w1(store: &str, n: u64) -> Result<(), BoxError> {
    for (tasks, variant) in [(1, "sequential"), (8, "8 tasks")] {
        let backend = Backend::new(store).await?;
        let app = backend.app().register_aggregate::<Account>().build()?;
        let elapsed = open_all(&app, n, tasks).await?;
        // Check with a cold application: every account reloads open.
        let check = backend
            .app()
            .register_aggregate_with::<Account>(
                interlock::AggregateSettings::new().cache_capacity(0),
            )
            .build()?;
        let mut open = 0;
        for i in 0..n {
            if check.load::<Account>(format!("acc-{i}")).await? == account_at(1) {
                open += 1;
            }
        }
        Row::new("W1", store, variant, n)
            .rate("cmd/s", elapsed)
            .detail("Application::dispatch(Open), each on a new account")
            .check(open == n, || {
                format!("{open} of {n} accounts open after reload")
            })
            .print();
        backend.close().await?;
    }
    Ok(())
}

/// Counts the conflicts the retry middleware (outside it) absorbs.
struct CountConflicts(Arc<AtomicU64>);

impl Middleware for CountConflicts {
    fn handle<'a>(
        &'a self,
        _message: &'a MessageInfo,
        options: DispatchOptions,
        next: Next<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<Outcome, Error>> + Send + 'a>> {
        Box::pin(async move {
            let result = next.run(options).await;
            if matches!(result, Err(Error::Concurrency(_))) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
            result
        })
    }
}

pub(crate) async fn w4(store: &str, per_writer: u64) -> Result<(), BoxError> {
    const WRITERS: u64 = 8;
    for (retry, variant) in [(false, "no retry"), (true, "retry middleware")] {
        let backend = Backend::new(store).await?;
        let conflicts = Arc::new(AtomicU64::new(0));
        let mut builder = backend.app().register_aggregate::<Account>();
        if retry {
            // Enough attempts for 8 writers on 2 cores; the default backoff.
            builder =
                builder.register_middleware(ConcurrencyRetryMiddleware::new().max_attempts(50));
        }
        let app = builder
            .register_middleware(CountConflicts(conflicts.clone()))
            .build()?;
        app.dispatch(Open {
            account: "hot".to_owned(),
        })
        .await?;
        let ok = Arc::new(AtomicU64::new(0));
        let other = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let handles: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (app, ok, other) = (app.clone(), ok.clone(), other.clone());
                tokio::spawn(async move {
                    for _ in 0..per_writer {
                        let deposit = Deposit {
                            account: "hot".to_owned(),
                            amount: 1,
                        };
                        match app.dispatch(deposit).await {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(Error::Concurrency(_)) => 0,
                            Err(_) => other.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await?;
        }
        let elapsed = start.elapsed();
        let (ok, other) = (ok.load(Ordering::Relaxed), other.load(Ordering::Relaxed));
        let conflicts = conflicts.load(Ordering::Relaxed);
        let check = backend
            .app()
            .register_aggregate_with::<Account>(
                interlock::AggregateSettings::new().cache_capacity(0),
            )
            .build()?;
        let account = check.load::<Account>("hot").await?;
        let lost = ok.saturating_sub(account.balance);
        let total = WRITERS * per_writer;
        let absorbed = if retry { " (retried)" } else { "" };
        let mut row = Row::new("W4", store, variant, ok)
            .detail(format!(
                "{ok} of {total} succeeded, {conflicts} conflicts{absorbed}, {other} other errors, {lost} lost updates"
            ))
            .check(
                lost == 0 && other == 0 && account.balance == ok && (!retry || ok == total),
                || {
                    format!(
                        "{ok} of {total} deposits acknowledged, balance {}: {lost} lost updates, {other} other errors",
                        account.balance
                    )
                },
            );
        row = row.rate("cmd/s", elapsed);
        row.print();
        backend.close().await?;
    }
    Ok(())
}
