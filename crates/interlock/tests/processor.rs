//! Projections and event processors written with `#[projection]` and `#[event_processor]`, run
//! through an `Application`: background and inline delivery, the event's context, parking, and
//! rebuilds.

#![allow(clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interlock::prelude::*;
use interlock::{RebuildProgress, RetryPolicy};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Command, Serialize, Deserialize)]
struct Deposit {
    aggregate_id: Uuid,
    amount: u64,
}

#[derive(Command, Serialize, Deserialize)]
struct Close {
    aggregate_id: Uuid,
}

#[derive(Event, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

#[derive(Event, Serialize, Deserialize)]
struct Closed {}

#[aggregate]
#[derive(Default)]
struct Account;

#[aggregate]
impl Account {
    #[handles_command(create)]
    fn deposit(&mut self, cmd: Deposit) -> Result<(), DomainError> {
        self.emit(Deposited { amount: cmd.amount });
        Ok(())
    }

    #[handles_command]
    fn close(&mut self, _: Close) -> Result<(), DomainError> {
        self.emit(Closed {});
        Ok(())
    }

    #[applies_event]
    fn on_deposited(&mut self, _: &Deposited) {}

    #[applies_event]
    fn on_closed(&mut self, _: &Closed) {}
}

#[derive(Query)]
#[query(output = u64)]
struct BalanceOf {
    account: Uuid,
}

#[derive(Query)]
#[query(output = Vec<String>)]
struct ClosedAccounts;

/// Balances per account, keyed by the stream each event came from.
#[derive(Default)]
struct Balances {
    by_account: HashMap<String, u64>,
    closed: Vec<String>,
}

#[projection(name = "balances", resettable)]
impl Balances {
    #[handles_event]
    fn on_deposited(&mut self, e: Deposited, ctx: &EventContext<'_>) {
        *self
            .by_account
            .entry(ctx.stream_id().id().to_owned())
            .or_default() += e.amount;
    }

    #[interlock::handles_event]
    async fn on_closed(
        &mut self,
        _: Closed,
        ctx: &interlock::EventContext<'_>,
    ) -> Result<(), HandlerError> {
        self.closed.push(ctx.stream_id().id().to_owned());
        Ok(())
    }

    #[handles_query]
    fn balance(&self, q: BalanceOf) -> Result<u64, HandlerError> {
        Ok(self
            .by_account
            .get(&q.account.to_string())
            .copied()
            .unwrap_or(0))
    }

    #[handles_query]
    async fn closed_accounts(
        &self,
        _: ClosedAccounts,
    ) -> Result<Vec<String>, std::convert::Infallible> {
        Ok(self.closed.clone())
    }

    /// Not a handler: left as written.
    fn total(&self) -> u64 {
        self.by_account.values().sum()
    }
}

#[derive(Debug)]
struct Unlucky(u64);

impl std::fmt::Display for Unlucky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is unlucky", self.0)
    }
}

impl std::error::Error for Unlucky {}

/// Records every deposit it is given; refuses 13. Named after its type.
#[derive(Clone, Default)]
struct Auditor {
    seen: Arc<Mutex<Vec<(u64, String)>>>,
}

#[event_processor]
impl Auditor {
    #[handles_event]
    async fn on_deposited(&mut self, e: Deposited, ctx: &EventContext<'_>) -> Result<(), Unlucky> {
        if e.amount == 13 {
            return Err(Unlucky(e.amount));
        }
        let mut seen = self.seen.lock().map_err(|_| Unlucky(0))?;
        seen.push((e.amount, ctx.idempotency_key()));
        Ok(())
    }
}

/// Counts deposits of any stream; its own `#[reset]` counts the resets too. Generic, to check
/// the bounds the macro adds.
struct Counter<T> {
    deposits: u64,
    resets: Arc<AtomicUsize>,
    _tag: PhantomData<fn() -> T>,
}

#[event_processor(name = "counter")]
impl<T: 'static> Counter<T> {
    #[handles_event]
    fn on_deposited(&mut self, _: Deposited) {}

    #[handles_event]
    fn on_closed(&mut self, _: Closed) -> Result<(), HandlerError> {
        self.deposits += 0;
        Ok(())
    }

    #[interlock::reset]
    async fn clear(&mut self) {
        self.deposits = 0;
        self.resets.fetch_add(1, Ordering::SeqCst);
    }
}

fn fast_retry() -> ProcessorSettings {
    ProcessorSettings::new().retry(RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    })
}

async fn deposit(app: &Application, account: Uuid, amount: u64) -> Position {
    app.dispatch_with(
        Deposit {
            aggregate_id: account,
            amount,
        },
        DispatchOptions::new(),
    )
    .await
    .expect("the deposit is stored")
    .position
    .expect("a deposit stores an event")
}

async fn wait(app: &Application, position: Position) {
    tokio::time::timeout(Duration::from_secs(10), app.wait_for(position))
        .await
        .expect("the processors caught up in time")
        .expect("no processor stopped");
}

#[test]
fn names_come_from_the_attribute_or_the_type() {
    assert_eq!(<Balances as EventProcessor>::NAME, "balances");
    assert_eq!(<Auditor as EventProcessor>::NAME, "Auditor");
    assert_eq!(<Counter<u8> as EventProcessor>::NAME, "counter");
    assert_eq!(Balances::default().total(), 0);
}

#[tokio::test]
async fn a_background_projection_answers_after_wait_for() -> Result<(), Error> {
    let app = Application::builder()
        .register_aggregate::<Account>()
        .register_projection(Balances::default())
        .build()?;
    app.start().await?;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    deposit(&app, a, 10).await;
    deposit(&app, b, 5).await;
    let last = deposit(&app, a, 7).await;
    wait(&app, last).await;
    assert_eq!(app.query(BalanceOf { account: a }).await?, 17);
    assert_eq!(app.query(BalanceOf { account: b }).await?, 5);

    let closed = app
        .dispatch_with(Close { aggregate_id: b }, DispatchOptions::new())
        .await?;
    wait(&app, closed.position.expect("closing stores an event")).await;
    assert_eq!(app.query(ClosedAccounts).await?, vec![b.to_string()]);
    app.shutdown().await
}

#[tokio::test]
async fn an_inline_projection_is_up_to_date_when_dispatch_returns() -> Result<(), Error> {
    let app = Application::builder()
        .register_aggregate::<Account>()
        .register_projection_with(Balances::default(), ProcessorSettings::inline())
        .build()?;
    let a = Uuid::now_v7();
    app.dispatch(Deposit {
        aggregate_id: a,
        amount: 3,
    })
    .await?;
    assert_eq!(app.query(BalanceOf { account: a }).await?, 3, "no wait");
    let total = app.inspect_processor(|p: &Balances| p.total()).await?;
    assert_eq!(total, 3);
    Ok(())
}

#[tokio::test]
async fn a_failing_handler_parks_its_event_and_other_streams_flow() -> Result<(), Error> {
    let auditor = Auditor::default();
    let seen = auditor.seen.clone();
    let app = Application::builder()
        .register_aggregate::<Account>()
        .register_event_processor_with(auditor, fast_retry())
        .build()?;
    app.start().await?;
    let a = Uuid::now_v7();
    deposit(&app, a, 1).await;
    let poison = deposit(&app, a, 13).await;
    let b = Uuid::now_v7();
    let last = deposit(&app, b, 2).await;
    wait(&app, last).await;

    let letters = app.dead_letters(None).await?;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].processor.as_str(), letters[0].position),
        ("Auditor", poison)
    );
    assert_eq!(letters[0].error, "13 is unlucky");
    assert_eq!(letters[0].attempts, 2);

    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let amounts: Vec<u64> = seen.iter().map(|(amount, _)| *amount).collect();
    assert_eq!(amounts, vec![1, 2]);
    // The context is the delivered event's: one key per (processor, event).
    assert!(seen.iter().all(|(_, key)| key.starts_with("Auditor:")));
    assert_ne!(seen[0].1, seen[1].1);
    // A later event of the poisoned stream waits behind it, untried.
    let held = deposit(&app, a, 3).await;
    wait(&app, held).await;
    let letters = app.dead_letters(None).await?;
    assert_eq!(letters.len(), 2);
    assert_eq!((letters[1].position, letters[1].attempts), (held, 0));
    app.shutdown().await
}

#[tokio::test]
async fn rebuilds_use_resettable_or_the_reset_method_and_are_refused_otherwise() -> Result<(), Error>
{
    let resets = Arc::new(AtomicUsize::new(0));
    let counter = Counter::<()> {
        deposits: 0,
        resets: resets.clone(),
        _tag: PhantomData,
    };
    let app = Application::builder()
        .register_aggregate::<Account>()
        .register_projection_with(Balances::default(), ProcessorSettings::inline())
        .register_event_processor_with(counter, ProcessorSettings::inline())
        .register_event_processor_with(Auditor::default(), ProcessorSettings::inline())
        .build()?;
    let a = Uuid::now_v7();
    // 20 deposits, none of them the auditor's unlucky 13.
    for amount in 20..40 {
        deposit(&app, a, amount).await;
    }
    let before = app.query(BalanceOf { account: a }).await?;
    assert_eq!(before, (20..40).sum::<u64>());

    let mut reports = Vec::new();
    let done = app
        .rebuild("balances", |p: RebuildProgress| reports.push(p))
        .await?;
    assert_eq!(done.processed, 20);
    assert!(!reports.is_empty());
    assert_eq!(
        app.query(BalanceOf { account: a }).await?,
        before,
        "reset to default, then every event once"
    );

    app.rebuild("counter", |_| {}).await?;
    assert_eq!(resets.load(Ordering::SeqCst), 1);

    let refused = app.rebuild("Auditor", |_| {}).await.unwrap_err();
    assert!(
        refused.to_string().contains("Auditor cannot be reset"),
        "{refused}"
    );
    Ok(())
}
