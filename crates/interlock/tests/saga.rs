//! A money transfer written with `#[saga]`: a start step keyed by a field of the event, a later
//! step keyed by a closure, a deadline, a dependency, and compensation. Run through an
//! `Application`; the instance's state is read back from the saga state store.

#![allow(clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::sync::{Arc, Mutex};
use std::time::Duration;

use interlock::core::side::SagaStateStore;
use interlock::prelude::*;
use interlock::{Clock, FakeClock, RetryPolicy, SystemClock};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// ---- accounts --------------------------------------------------------------------------------

#[derive(Command, Serialize, Deserialize)]
struct Open {
    #[command(aggregate_id)]
    account: String,
    balance: u64,
}

#[derive(Command, Serialize, Deserialize)]
#[command(output = u64)]
struct Withdraw {
    #[command(aggregate_id)]
    account: String,
    transfer: Uuid,
    amount: u64,
}

#[derive(Command, Serialize, Deserialize)]
#[command(output = u64)]
struct Credit {
    #[command(aggregate_id)]
    account: String,
    transfer: Uuid,
    amount: u64,
}

#[derive(Event, Serialize, Deserialize)]
struct Opened {
    balance: u64,
}

#[derive(Event, Serialize, Deserialize)]
struct Withdrawn {
    transfer: Uuid,
    amount: u64,
}

#[derive(Event, Serialize, Deserialize)]
struct Credited {
    transfer: Uuid,
    amount: u64,
}

#[aggregate]
#[derive(Default)]
struct Account {
    balance: u64,
}

#[aggregate]
impl Account {
    #[handles_command(create)]
    fn open(&mut self, cmd: Open) -> Result<(), DomainError> {
        self.emit(Opened {
            balance: cmd.balance,
        });
        Ok(())
    }

    #[handles_command]
    fn withdraw(&mut self, cmd: Withdraw) -> Result<u64, DomainError> {
        if cmd.amount > self.balance {
            return Err(DomainError::with_code("funds", "insufficient funds"));
        }
        self.emit(Withdrawn {
            transfer: cmd.transfer,
            amount: cmd.amount,
        });
        Ok(self.balance)
    }

    #[handles_command]
    fn credit(&mut self, cmd: Credit) -> Result<u64, DomainError> {
        self.emit(Credited {
            transfer: cmd.transfer,
            amount: cmd.amount,
        });
        Ok(self.balance)
    }

    #[applies_event]
    fn on_opened(&mut self, e: &Opened) {
        self.balance = e.balance;
    }

    #[applies_event]
    fn on_withdrawn(&mut self, e: &Withdrawn) {
        self.balance -= e.amount;
    }

    #[applies_event]
    fn on_credited(&mut self, e: &Credited) {
        self.balance += e.amount;
    }
}

// ---- transfer requests: their own aggregate, whose event starts the saga ----------------------

#[derive(Command, Serialize, Deserialize)]
struct RequestTransfer {
    #[command(aggregate_id)]
    transfer_id: Uuid,
    from: String,
    to: String,
    amount: u64,
}

#[derive(Event, Serialize, Deserialize)]
struct TransferRequested {
    transfer_id: Uuid,
    from: String,
    to: String,
    amount: u64,
}

#[aggregate]
#[derive(Default)]
struct TransferRequest;

#[aggregate(ignores(TransferRequested))]
impl TransferRequest {
    #[handles_command(create)]
    fn request(&mut self, cmd: RequestTransfer) -> Result<(), DomainError> {
        self.emit(TransferRequested {
            transfer_id: cmd.transfer_id,
            from: cmd.from,
            to: cmd.to,
            amount: cmd.amount,
        });
        Ok(())
    }
}

// ---- the saga ---------------------------------------------------------------------------------

#[derive(Default, Serialize, Deserialize, Debug, PartialEq)]
enum Stage {
    #[default]
    New,
    Withdrawn,
    Completed,
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

/// A dependency of the start step: every transfer the saga began.
#[derive(Default, Clone)]
struct Journal {
    started: Arc<Mutex<Vec<Uuid>>>,
}

struct MoneyTransfer;

#[saga(name = "transfer", state = TransferState)]
impl MoneyTransfer {
    /// Withdraws from the source, and gives the transfer an hour.
    #[saga_step(start, key = transfer_id)]
    async fn requested(
        &self,
        state: &mut TransferState,
        e: TransferRequested,
        ctx: &mut SagaContext<'_>,
        journal: Dep<Journal>,
    ) -> Result<(), interlock::Error> {
        journal
            .started
            .lock()
            .expect("journal lock")
            .push(e.transfer_id);
        state.from.clone_from(&e.from);
        state.to.clone_from(&e.to);
        state.amount = e.amount;
        ctx.schedule("expire", Duration::from_secs(3600));
        let withdrawal = Withdraw {
            account: e.from,
            transfer: e.transfer_id,
            amount: e.amount,
        };
        match ctx.send(withdrawal).await {
            Ok(_) => state.stage = Stage::Withdrawn,
            Err(refused) if refused.as_domain().is_some() => {
                state.stage = Stage::Failed;
                ctx.end();
            }
            Err(other) => return Err(other),
        }
        Ok(())
    }

    /// Credits the destination once the withdrawal is stored. An unknown destination fails the
    /// step (it is parked), leaving the transfer to its deadline.
    #[saga_step(key = |e: &Withdrawn| e.transfer)]
    async fn withdrawn(
        &self,
        state: &mut TransferState,
        e: Withdrawn,
        ctx: &mut SagaContext<'_>,
    ) -> Result<(), interlock::Error> {
        ctx.send(Credit {
            account: state.to.clone(),
            transfer: e.transfer,
            amount: e.amount,
        })
        .await?;
        state.stage = Stage::Completed;
        ctx.end();
        Ok(())
    }

    /// Out of time: give the money back.
    #[saga_deadline]
    async fn expired(
        &self,
        state: &mut TransferState,
        deadline: DeadlineReached,
        ctx: &mut SagaContext<'_>,
    ) -> Result<(), interlock::Error> {
        if deadline.name == "expire" && state.stage == Stage::Withdrawn {
            let key = ctx.key().parse().expect("the key is the transfer id");
            ctx.send(Credit {
                account: state.from.clone(),
                transfer: key,
                amount: state.amount,
            })
            .await?;
            state.stage = Stage::Expired;
            ctx.end();
        }
        Ok(())
    }
}

// ---- helpers ----------------------------------------------------------------------------------

fn builder(store: &InMemoryEventStore, clock: &FakeClock) -> ApplicationBuilder {
    Application::builder()
        .with_event_store(store.clone())
        .with_clock(clock.clone())
        .register_aggregate::<Account>()
        .register_aggregate::<TransferRequest>()
        .register_saga_with(
            MoneyTransfer,
            ProcessorSettings::new().retry(RetryPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(5),
            }),
        )
}

async fn app(store: &InMemoryEventStore, clock: &FakeClock, journal: &Journal) -> Application {
    let app = builder(store, clock)
        .register_dependency(journal.clone())
        .build()
        .expect("the wiring is complete");
    for (account, balance) in [("ada", 100), ("bob", 0)] {
        app.dispatch(Open {
            account: account.into(),
            balance,
        })
        .await
        .expect("open");
    }
    app.start().await.expect("start");
    app
}

async fn request(app: &Application, from: &str, to: &str, amount: u64) -> Uuid {
    let transfer_id = Uuid::now_v7();
    let request = RequestTransfer {
        transfer_id,
        from: from.into(),
        to: to.into(),
        amount,
    };
    app.dispatch_with(request, DispatchOptions::new().correlation_id(transfer_id))
        .await
        .expect("request");
    transfer_id
}

/// Waits until the saga's commands stop appending events.
async fn settle(app: &Application, store: &InMemoryEventStore) {
    for _ in 0..100 {
        let head = store.head_position().await.expect("head");
        tokio::time::timeout(Duration::from_secs(10), app.wait_for(head))
            .await
            .expect("caught up in time")
            .expect("caught up");
        tokio::time::sleep(Duration::from_millis(5)).await;
        if store.head_position().await.expect("head") == head {
            return;
        }
    }
    panic!("the saga never settled");
}

/// The stored instance: `{ state, correlation_id, handled, done, sent }`.
async fn instance(store: &InMemoryEventStore, transfer: Uuid) -> serde_json::Value {
    let stored = store
        .load_saga("transfer", &transfer.to_string())
        .await
        .expect("load")
        .expect("the instance exists");
    serde_json::from_slice(&stored.state).expect("json")
}

async fn balance(app: &Application, account: &str) -> u64 {
    app.load::<Account>(account).await.expect("load").balance
}

// ---- tests ------------------------------------------------------------------------------------

#[test]
fn the_macro_writes_the_saga_impl() {
    use interlock::Saga;
    assert_eq!(<MoneyTransfer as Saga>::NAME, "transfer");
}

#[test]
fn a_step_dependency_is_checked_at_build() {
    let clock = FakeClock::at(SystemClock.now());
    let Err(err) = builder(&InMemoryEventStore::new(), &clock).build() else {
        panic!("the journal is missing, yet the build passed");
    };
    let err = err.to_string();
    assert!(
        err.contains("processor transfer needs dependency saga::Journal"),
        "{err}"
    );
}

#[tokio::test]
async fn steps_run_in_order_and_their_commands_take_effect() {
    let store = InMemoryEventStore::new();
    let clock = FakeClock::at(SystemClock.now());
    let journal = Journal::default();
    let app = app(&store, &clock, &journal).await;

    let transfer = request(&app, "ada", "bob", 30).await;
    settle(&app, &store).await;
    assert_eq!(
        (balance(&app, "ada").await, balance(&app, "bob").await),
        (70, 30)
    );
    let doc = instance(&store, transfer).await;
    assert_eq!(doc["state"]["stage"], "Completed", "{doc}");
    assert_eq!(doc["state"]["amount"], 30);
    assert_eq!(doc["done"], true);
    let sent: Vec<&str> = doc["sent"]
        .as_array()
        .expect("sent commands")
        .iter()
        .filter_map(|c| c["command_type"].as_str())
        .collect();
    assert_eq!(sent, ["Withdraw", "Credit"]);
    assert_eq!(*journal.started.lock().expect("journal lock"), [transfer]);
    // The saga's commands carry its correlation id.
    let bob = app.events_of::<Account>("bob").await.expect("events");
    assert_eq!(bob[1].correlation_id, Some(transfer));

    // Insufficient funds: the start step ends the saga at once.
    let refused = request(&app, "ada", "bob", 1_000).await;
    settle(&app, &store).await;
    let doc = instance(&store, refused).await;
    assert_eq!(
        (&doc["state"]["stage"], &doc["done"]),
        (&"Failed".into(), &true.into())
    );
    assert_eq!(balance(&app, "ada").await, 70);
    app.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_deadline_compensates_a_transfer_that_never_finished() {
    let store = InMemoryEventStore::new();
    let clock = FakeClock::at(SystemClock.now());
    let app = app(&store, &clock, &Journal::default()).await;

    // Nobody called "ghost" has an account: the credit step fails and is parked.
    let transfer = request(&app, "ada", "ghost", 25).await;
    settle(&app, &store).await;
    assert_eq!(balance(&app, "ada").await, 75);
    assert_eq!(
        instance(&store, transfer).await["state"]["stage"],
        "Withdrawn"
    );
    assert_eq!(
        app.fire_due_deadlines().await.expect("fire"),
        0,
        "not due yet"
    );

    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(app.fire_due_deadlines().await.expect("fire"), 1);
    settle(&app, &store).await;
    let doc = instance(&store, transfer).await;
    assert_eq!(doc["state"]["stage"], "Expired", "{doc}");
    assert_eq!(doc["done"], true);
    assert_eq!(
        balance(&app, "ada").await,
        100,
        "refunded by the deadline step"
    );
    app.shutdown().await.expect("shutdown");
}
