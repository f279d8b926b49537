//! W3: every event of 1000 accounts replayed into an in-memory balance view, by
//! `Application::rebuild` of a registered projection (reset, then read the log in batches).

use std::time::Instant;

use crate::backend::Backend;
use crate::model::{Balances, Shape, append_stream, check_view};
use crate::out::{BoxError, Row};

pub(crate) async fn w3(store: &str, n: u64) -> Result<(), BoxError> {
    let accounts = 1000.min(n);
    let per_account = n / accounts;
    let n = accounts * per_account;
    let backend = Backend::new(store).await?;
    for a in 0..accounts {
        append_stream(
            &backend.store,
            &format!("acc-{a}"),
            1,
            per_account,
            Shape::Current,
        )
        .await?;
    }
    let app = backend
        .app()
        .register_projection(Balances::default())
        .build()?;
    let start = Instant::now();
    let done = app.rebuild("balances", |_| {}).await?;
    let elapsed = start.elapsed();
    let checked = app
        .inspect_processor::<Balances, _>(|b| check_view(&b.by_account, accounts, per_account))
        .await?;
    Row::new("W3", store, "catch-up", n)
        .rate("events/s", elapsed)
        .detail("Application::rebuild of a registered projection")
        .check(checked.is_ok() && done.processed == n, || {
            format!(
                "{:?}; {} of {n} events processed",
                checked.err(),
                done.processed
            )
        })
        .print();
    crate::floors::catch_up(&backend, store, accounts, per_account).await?;
    backend.close().await
}
