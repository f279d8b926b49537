//! Sagas: steps, compensation, at-most-once under redelivery and crashes, deadlines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use interlock_runtime::core::side::{CheckpointStore, SagaStateStore};
use interlock_runtime::prelude::*;
use interlock_runtime::processor::RetryPolicy;
use interlock_runtime::saga::{DeadlineReached, Saga, SagaContext, SagaRoutes, SagaStep};
use interlock_runtime::{FakeClock, HandlerError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ---- the accounts -------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Open {
    account: String,
    balance: u64,
    closed: bool,
}
impl Command for Open {
    type Output = ();
    const TYPE_NAME: &'static str = "Open";
    fn aggregate_id(&self) -> AggregateId {
        self.account.as_str().into()
    }
}

#[derive(Serialize, Deserialize)]
struct Move {
    account: String,
    transfer: Uuid,
    delta: i64,
}
impl Command for Move {
    type Output = u64;
    const TYPE_NAME: &'static str = "Move";
    fn aggregate_id(&self) -> AggregateId {
        self.account.as_str().into()
    }
}

#[derive(Serialize, Deserialize)]
struct Opened {
    balance: u64,
    closed: bool,
}
impl Event for Opened {
    const TYPE_NAME: &'static str = "Opened";
}

#[derive(Serialize, Deserialize)]
struct Moved {
    transfer: Uuid,
    delta: i64,
}
impl Event for Moved {
    const TYPE_NAME: &'static str = "Moved";
}

#[derive(Default, Debug)]
struct Account {
    balance: u64,
    closed: bool,
}
impl Aggregate for Account {
    const TYPE_NAME: &'static str = "Account";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes
            .creating_command::<Open>()
            .command::<Move>()
            .event::<Opened>()
            .event::<Moved>();
    }
}
impl HandlesCommand<Open> for Account {
    async fn handle(&mut self, cmd: Open, _: &CommandContext) -> Result<(), DomainError> {
        self.emit(Opened {
            balance: cmd.balance,
            closed: cmd.closed,
        });
        Ok(())
    }
}
impl HandlesCommand<Move> for Account {
    async fn handle(&mut self, cmd: Move, _: &CommandContext) -> Result<u64, DomainError> {
        if self.closed {
            return Err(DomainError::with_code("closed", "the account is closed"));
        }
        if cmd.delta < 0 && cmd.delta.unsigned_abs() > self.balance {
            return Err(DomainError::with_code("funds", "insufficient funds"));
        }
        self.emit(Moved {
            transfer: cmd.transfer,
            delta: cmd.delta,
        });
        Ok(self.balance)
    }
}
impl AppliesEvent<Opened> for Account {
    fn apply(&mut self, e: &Opened) {
        self.balance = e.balance;
        self.closed = e.closed;
    }
}
impl AppliesEvent<Moved> for Account {
    fn apply(&mut self, e: &Moved) {
        self.balance = self.balance.saturating_add_signed(e.delta);
    }
}

// ---- the transfer, started by an event on a "Transfers" stream ------------------------------

#[derive(Serialize, Deserialize, Clone)]
struct TransferRequested {
    transfer: Uuid,
    from: String,
    to: String,
    amount: u64,
}
impl Event for TransferRequested {
    const TYPE_NAME: &'static str = "TransferRequested";
}

#[derive(Default, Serialize, Deserialize, Debug, PartialEq)]
enum Stage {
    #[default]
    New,
    Withdrawn,
    Completed,
    Refunded,
    Failed,
    Expired,
}

#[derive(Default, Serialize, Deserialize, Debug)]
struct TransferState {
    from: String,
    to: String,
    amount: u64,
    stage: Stage,
}

/// Withdraws on the request, deposits when the withdrawal is seen, refunds if the deposit is
/// refused. `crash_once` makes the withdrawal step fail right after sending its command, once.
struct Transfer {
    crash_once: Arc<AtomicBool>,
    steps: Arc<AtomicUsize>,
}

impl Saga for Transfer {
    const NAME: &'static str = "transfer";
    type State = TransferState;
    fn configure(routes: &mut SagaRoutes<'_, Self>) {
        routes
            .starts_with(|e: &TransferRequested| e.transfer)
            .step(|e: &Moved| e.transfer)
            .deadlines();
    }
}

impl SagaStep<TransferRequested> for Transfer {
    async fn handle(
        &self,
        state: &mut TransferState,
        e: TransferRequested,
        ctx: &mut SagaContext<'_>,
    ) -> Result<(), HandlerError> {
        self.steps.fetch_add(1, Ordering::SeqCst);
        state.from.clone_from(&e.from);
        state.to.clone_from(&e.to);
        state.amount = e.amount;
        ctx.schedule("expire", Duration::from_secs(3600));
        let sent = ctx
            .send(Move {
                account: e.from,
                transfer: e.transfer,
                delta: -(e.amount as i64),
            })
            .await;
        if self.crash_once.swap(false, Ordering::SeqCst) {
            return Err(HandlerError::new("crashed after sending"));
        }
        match sent {
            Ok(_) => state.stage = Stage::Withdrawn,
            Err(e) if e.as_domain().is_some() => {
                state.stage = Stage::Failed;
                ctx.end();
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

impl SagaStep<Moved> for Transfer {
    async fn handle(
        &self,
        state: &mut TransferState,
        e: Moved,
        ctx: &mut SagaContext<'_>,
    ) -> Result<(), HandlerError> {
        self.steps.fetch_add(1, Ordering::SeqCst);
        let account = ctx.event().stream_id().id().to_owned();
        if e.delta < 0 && account == state.from && state.stage == Stage::Withdrawn {
            let deposit = ctx
                .send(Move {
                    account: state.to.clone(),
                    transfer: e.transfer,
                    delta: state.amount as i64,
                })
                .await;
            match deposit {
                Ok(_) => {
                    state.stage = Stage::Completed;
                    ctx.end();
                }
                Err(refused) if refused.as_domain().is_some() => {
                    // Compensation: give the money back.
                    ctx.send(Move {
                        account: state.from.clone(),
                        transfer: e.transfer,
                        delta: state.amount as i64,
                    })
                    .await?;
                    state.stage = Stage::Refunded;
                    ctx.end();
                }
                Err(other) => return Err(other.into()),
            }
        }
        Ok(())
    }
}

impl SagaStep<DeadlineReached> for Transfer {
    async fn handle(
        &self,
        state: &mut TransferState,
        d: DeadlineReached,
        ctx: &mut SagaContext<'_>,
    ) -> Result<(), HandlerError> {
        let finished = matches!(
            state.stage,
            Stage::Completed | Stage::Refunded | Stage::Failed
        );
        if d.name == "expire" && !finished {
            state.stage = Stage::Expired;
            ctx.end();
        }
        Ok(())
    }
}

fn transfer(crash_once: bool) -> (Transfer, Arc<AtomicUsize>) {
    let steps = Arc::new(AtomicUsize::new(0));
    (
        Transfer {
            crash_once: Arc::new(AtomicBool::new(crash_once)),
            steps: steps.clone(),
        },
        steps,
    )
}

fn app(store: &InMemoryEventStore, saga: Transfer, clock: &FakeClock) -> Application {
    Application::builder()
        .with_event_store(store.clone())
        .with_clock(clock.clone())
        .register_aggregate::<Account>()
        .register_saga_with(
            saga,
            ProcessorSettings::new().retry(RetryPolicy {
                max_attempts: 5,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(5),
            }),
        )
        .build()
        .unwrap()
}

async fn open(app: &Application, account: &str, balance: u64, closed: bool) {
    app.dispatch(Open {
        account: account.into(),
        balance,
        closed,
    })
    .await
    .unwrap();
}

async fn request(store: &InMemoryEventStore, request: &TransferRequested) -> Position {
    store
        .append(
            &StreamId::new("Transfers", request.transfer.to_string()).unwrap(),
            ExpectedVersion::Any,
            vec![
                NewEvent::from_event(request)
                    .unwrap()
                    .with_context(Some(request.transfer), None),
            ],
        )
        .await
        .unwrap()
        .last_position
}

async fn settle(app: &Application, store: &InMemoryEventStore) {
    // The saga's commands append more events that it reacts to: wait until nothing moves.
    for _ in 0..50 {
        let head = store.head_position().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), app.wait_for(head))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        if store.head_position().await.unwrap() == head {
            return;
        }
    }
    panic!("the saga never settled");
}

async fn balance(app: &Application, account: &str) -> u64 {
    app.load::<Account>(account).await.unwrap().balance
}

async fn saga_state(store: &InMemoryEventStore, key: Uuid) -> serde_json::Value {
    let stored = store
        .load_saga("transfer", &key.to_string())
        .await
        .unwrap()
        .expect("instance exists");
    serde_json::from_slice(&stored.state).unwrap()
}

fn req(from: &str, to: &str, amount: u64) -> TransferRequested {
    TransferRequested {
        transfer: Uuid::now_v7(),
        from: from.into(),
        to: to.into(),
        amount,
    }
}

#[tokio::test]
async fn a_transfer_runs_its_steps_and_carries_the_context() {
    let store = InMemoryEventStore::new();
    let clock = FakeClock::at(chrono::Utc::now());
    let (saga, steps) = transfer(false);
    let app = app(&store, saga, &clock);
    open(&app, "ada", 100, false).await;
    open(&app, "bob", 0, false).await;
    app.start().await.unwrap();
    let r = req("ada", "bob", 30);
    request(&store, &r).await;
    settle(&app, &store).await;
    assert_eq!(
        (balance(&app, "ada").await, balance(&app, "bob").await),
        (70, 30)
    );
    let doc = saga_state(&store, r.transfer).await;
    assert_eq!(doc["state"]["stage"], "Completed");
    assert_eq!(doc["done"], true);
    assert_eq!(doc["sent"].as_array().unwrap().len(), 2);
    // Two steps (request, ada's withdrawal); bob's deposit arrives after the end and is ignored.
    assert_eq!(steps.load(Ordering::SeqCst), 2);

    let bob = app.events_of::<Account>("bob").await.unwrap();
    let ada = app.events_of::<Account>("ada").await.unwrap();
    assert_eq!(
        bob[1].correlation_id,
        Some(r.transfer),
        "saga correlation on every hop"
    );
    assert_eq!(ada[1].correlation_id, Some(r.transfer));
    assert_eq!(
        bob[1].causation_id,
        Some(*ada[1].event_id.as_uuid()),
        "the deposit was caused by the withdrawal event"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refused_deposit_is_compensated() {
    let store = InMemoryEventStore::new();
    let clock = FakeClock::at(chrono::Utc::now());
    let (saga, _) = transfer(false);
    let app = app(&store, saga, &clock);
    open(&app, "ada", 100, false).await;
    open(&app, "closed", 0, true).await;
    app.start().await.unwrap();
    let r = req("ada", "closed", 30);
    request(&store, &r).await;
    settle(&app, &store).await;
    assert_eq!(balance(&app, "ada").await, 100, "refunded");
    assert_eq!(
        saga_state(&store, r.transfer).await["state"]["stage"],
        "Refunded"
    );
    let withdrawn_then_refunded: Vec<i64> = app
        .events_of::<Account>("ada")
        .await
        .unwrap()
        .iter()
        .skip(1)
        .map(|e| e.decode_payload::<Moved>().unwrap().delta)
        .collect();
    assert_eq!(withdrawn_then_refunded, vec![-30, 30]);

    // Insufficient funds ends the saga at once.
    let r = req("ada", "closed", 1_000);
    request(&store, &r).await;
    settle(&app, &store).await;
    assert_eq!(
        saga_state(&store, r.transfer).await["state"]["stage"],
        "Failed"
    );
    assert_eq!(balance(&app, "ada").await, 100);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn redelivered_events_do_not_repeat_steps() {
    let store = InMemoryEventStore::new();
    let clock = FakeClock::at(chrono::Utc::now());
    let (saga, steps) = transfer(false);
    let first = app(&store, saga, &clock);
    open(&first, "ada", 100, false).await;
    open(&first, "bob", 0, false).await;
    first.start().await.unwrap();
    request(&store, &req("ada", "bob", 10)).await;
    settle(&first, &store).await;
    first.shutdown().await.unwrap();
    let ran = steps.load(Ordering::SeqCst);

    // Everything is delivered again from the start (a lost checkpoint).
    store
        .save_checkpoint("transfer", Position::START)
        .await
        .unwrap();
    let (saga, steps_again) = transfer(false);
    let second = app(&store, saga, &clock);
    second.start().await.unwrap();
    settle(&second, &store).await;
    assert_eq!(steps_again.load(Ordering::SeqCst), 0, "no step ran twice");
    assert_eq!(
        (balance(&second, "ada").await, balance(&second, "bob").await),
        (90, 10)
    );
    assert_eq!(ran, 2);
    second.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_crash_between_sending_and_saving_sends_once() {
    let store = InMemoryEventStore::new();
    let clock = FakeClock::at(chrono::Utc::now());
    let (saga, steps) = transfer(true);
    let app = app(&store, saga, &clock);
    open(&app, "ada", 100, false).await;
    open(&app, "bob", 0, false).await;
    app.start().await.unwrap();
    let r = req("ada", "bob", 25);
    request(&store, &r).await;
    settle(&app, &store).await;
    // The first attempt sent the withdrawal, then "crashed"; the retry ran the step again and
    // got the original result back for the same command instead of withdrawing twice.
    assert_eq!(
        (balance(&app, "ada").await, balance(&app, "bob").await),
        (75, 25)
    );
    assert_eq!(app.events_of::<Account>("ada").await.unwrap().len(), 2);
    assert_eq!(
        steps.load(Ordering::SeqCst),
        3,
        "request step twice, withdrawal step once"
    );
    assert_eq!(
        saga_state(&store, r.transfer).await["state"]["stage"],
        "Completed"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn deadlines_fire_once_by_the_clock_and_survive_a_restart() {
    let store = InMemoryEventStore::new();
    let clock = FakeClock::at(chrono::Utc::now());
    let (saga, _) = transfer(false);
    let first = app(&store, saga, &clock);
    open(&first, "ada", 100, false).await;
    first.start().await.unwrap();
    // The deposit goes to an account that does not exist: that step fails and is parked, so
    // the transfer stays half done until its deadline.
    let r = req("ada", "ghost", 1);
    request(&store, &r).await;
    settle(&first, &store).await;
    first.shutdown().await.unwrap();
    // Restart, then move the clock past the deadline.
    let (saga, _) = transfer(false);
    let second = app(&store, saga, &clock);
    second.start().await.unwrap();
    assert_eq!(second.fire_due_deadlines().await.unwrap(), 0, "not due yet");
    clock.advance(Duration::from_secs(7200));
    assert_eq!(second.fire_due_deadlines().await.unwrap(), 1);
    assert_eq!(second.fire_due_deadlines().await.unwrap(), 0, "fires once");
    settle(&second, &store).await;
    let doc = saga_state(&store, r.transfer).await;
    assert_eq!(doc["state"]["stage"], "Expired", "{doc}");
    assert_eq!(doc["done"], true);
    let parked = second.dead_letters(Some("transfer")).await.unwrap();
    assert_eq!(
        parked.len(),
        1,
        "the failed deposit step is parked, not lost"
    );
    second.shutdown().await.unwrap();
}
