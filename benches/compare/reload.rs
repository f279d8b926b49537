//! W2 (a cold reload of one account with a long stream, with and without snapshots) and W5
//! (the same reload when every event needs an upcaster), through `Application::load` with the
//! aggregate cache off.

use std::time::{Duration, Instant};

use interlock::prelude::*;
use interlock::runtime::SnapshotPolicy;
use interlock::{AggregateSettings, Application};

use crate::backend::Backend;
use crate::model::{
    Account, Deposit, Shape, account_at, amount_at, append_stream, deposited_v1_to_v2,
};
use crate::out::{BoxError, Row};

/// Reloads per measurement; the best time is reported (the same on the cqrs-es side).
pub(crate) const REPEATS: u32 = 5;

fn cold() -> AggregateSettings {
    AggregateSettings::new().cache_capacity(0)
}

async fn best_load(app: &Application, id: &str) -> Result<(Duration, Account), BoxError> {
    let mut best = Duration::MAX;
    let mut account = Account::default();
    for _ in 0..REPEATS {
        let start = Instant::now();
        account = app.load::<Account>(id).await?;
        best = best.min(start.elapsed());
    }
    Ok((best, account))
}

pub(crate) fn wrong(account: &Account, expected: &Account) -> String {
    format!(
        "wrong state: balance {} and {} deposits, expected {} and {}",
        account.balance, account.deposits, expected.balance, expected.deposits
    )
}

pub(crate) async fn w2(store: &str, n: u64) -> Result<(), BoxError> {
    let expected = account_at(n);
    let backend = Backend::new(store).await?;
    append_stream(&backend.store, "long", 1, n, Shape::Current).await?;
    let replay = backend
        .app()
        .register_aggregate_with::<Account>(cold())
        .build()?;
    let (elapsed, account) = best_load(&replay, "long").await?;
    Row::new("W2", store, "full replay", n)
        .millis(elapsed)
        .detail("Application::load, cache off")
        .check(account == expected, || wrong(&account, &expected))
        .print();

    // The snapshot is taken the way production takes it: by the command whose event crosses
    // the policy's boundary.
    let every = 1000.min(n / 10).max(1);
    let snapshot_at = (n - 1) / every * every;
    append_stream(&backend.store, "snap", 1, snapshot_at - 1, Shape::Current).await?;
    let snapshots = backend
        .app()
        .register_aggregate_with::<Account>(cold())
        .with_snapshots::<Account>(SnapshotPolicy::every(every))
        .build()?;
    snapshots
        .dispatch(Deposit {
            account: "snap".to_owned(),
            amount: amount_at(snapshot_at),
        })
        .await?;
    append_stream(&backend.store, "snap", snapshot_at + 1, n, Shape::Current).await?;
    let taken = match backend.store.side_stores() {
        Some(side) => side
            .snapshots
            .load_snapshot(&StreamId::new("Account", "snap")?)
            .await?
            .map(|s| s.version),
        None => None,
    };
    let (elapsed, account) = best_load(&snapshots, "snap").await?;
    Row::new("W2", store, "snapshot + tail", n)
        .millis(elapsed)
        .detail(format!(
            "SnapshotPolicy::every({every}), Application::load: snapshot at {snapshot_at} + {} events",
            n - snapshot_at
        ))
        .check(account == expected && taken == Some(snapshot_at), || {
            format!("{}; snapshot at {taken:?}", wrong(&account, &expected))
        })
        .print();
    crate::floors::reload(&backend, store, n).await?;
    backend.close().await
}

pub(crate) async fn w5(store: &str, n: u64) -> Result<(), BoxError> {
    let expected = account_at(n);
    let backend = Backend::new(store).await?;
    append_stream(&backend.store, "current", 1, n, Shape::Current).await?;
    append_stream(&backend.store, "legacy", 1, n, Shape::Legacy).await?;
    let upcasting = backend
        .app()
        .register_aggregate_with::<Account>(cold())
        .register_upcaster(deposited_v1_to_v2())
        .build()?;
    let (elapsed, account) = best_load(&upcasting, "legacy").await?;
    Row::new("W5", store, "one upcaster per event", n)
        .millis(elapsed)
        .detail("JsonUpcaster v1 → v2 (renames a field), Application::load")
        .check(account == expected, || wrong(&account, &expected))
        .print();
    let plain = backend
        .app()
        .register_aggregate_with::<Account>(cold())
        .build()?;
    let (elapsed, account) = best_load(&plain, "current").await?;
    Row::new("W5", store, "no upcaster", n)
        .millis(elapsed)
        .detail("no upcaster registered, events at the current version")
        .check(account == expected, || wrong(&account, &expected))
        .print();
    backend.close().await
}
