//! Aggregates written with `#[aggregate]`, run through an `Application`.

use interlock::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Command, Serialize, Deserialize)]
struct Open {
    aggregate_id: Uuid,
}

#[derive(Command, Serialize, Deserialize)]
#[command(output = u64)]
struct Deposit {
    aggregate_id: Uuid,
    amount: u64,
}

/// Deposits twice in one handler and reports the balance seen after each emit.
#[derive(Command, Serialize, Deserialize)]
#[command(output = (u64, u64))]
struct DepositTwice {
    aggregate_id: Uuid,
    amount: u64,
}

/// Emits, then fails: nothing may be stored.
#[derive(Command, Serialize, Deserialize)]
struct DepositThenFail {
    aggregate_id: Uuid,
}

#[derive(Command, Serialize, Deserialize)]
#[command(output = Uuid)]
struct Audit {
    aggregate_id: Uuid,
}

#[derive(Command, Serialize, Deserialize)]
struct Freeze {
    aggregate_id: Uuid,
}

#[derive(Event, Serialize, Deserialize)]
struct Opened;

#[derive(Event, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

#[derive(Event, Serialize, Deserialize)]
#[event(name = "AuditRequested")]
struct Audited;

#[derive(Debug, PartialEq)]
struct Frozen;

impl std::fmt::Display for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the account is frozen")
    }
}

impl std::error::Error for Frozen {}

mod model {
    use super::*;

    #[aggregate(name = "Account", schema_version = 2)]
    #[derive(Default, Debug)]
    pub(crate) struct Account {
        pub(crate) open: bool,
        pub(crate) balance: u64,
    }
}

use model::Account;

// The impl block may live in another module than the struct.
mod behaviour {
    use super::*;

    async fn slow_fee(amount: u64) -> u64 {
        tokio::task::yield_now().await;
        amount / 100
    }

    #[aggregate(ignores(Audited))]
    impl Account {
        #[handles_command(create)]
        fn open(&mut self, _cmd: Open) -> Result<(), DomainError> {
            if self.open {
                return Err(DomainError::with_code("already_open", "already open"));
            }
            self.emit(Opened);
            Ok(())
        }

        #[handles_command]
        async fn deposit(&mut self, cmd: Deposit) -> Result<u64, DomainError> {
            let fee = slow_fee(cmd.amount).await;
            self.emit(Deposited {
                amount: cmd.amount - fee,
            });
            Ok(self.balance)
        }

        #[handles_command]
        async fn deposit_twice(&mut self, cmd: DepositTwice) -> Result<(u64, u64), DomainError> {
            self.emit(Deposited { amount: cmd.amount });
            let first = self.balance;
            tokio::task::yield_now().await;
            self.emit(Deposited { amount: cmd.amount });
            Ok((first, self.balance))
        }

        #[handles_command]
        fn deposit_then_fail(&mut self, _cmd: DepositThenFail) -> Result<(), Frozen> {
            self.emit(Deposited { amount: 1_000 });
            Err(Frozen)
        }

        #[handles_command]
        async fn audit(&mut self, _cmd: Audit, ctx: &CommandContext) -> Result<Uuid, DomainError> {
            self.emit(Audited);
            Ok(ctx.correlation_id())
        }

        #[handles_command]
        fn freeze(&mut self, _cmd: Freeze) -> Result<(), Frozen> {
            Err(Frozen)
        }

        #[applies_event]
        fn on_opened(&mut self, _e: &Opened) {
            self.open = true;
        }

        #[applies_event]
        fn on_deposited(&mut self, e: &Deposited) {
            self.balance += e.amount;
        }

        /// An ordinary method in the same block is left alone.
        pub(crate) fn is_rich(&self) -> bool {
            self.balance >= 1_000
        }
    }
}

fn app() -> Application {
    let built = Application::builder()
        .register_aggregate::<Account>()
        .build();
    match built {
        Ok(app) => app,
        Err(e) => unreachable!("the account aggregate is wired correctly: {e}"),
    }
}

async fn opened(app: &Application) -> Result<Uuid, Error> {
    let id = Uuid::now_v7();
    app.dispatch(Open { aggregate_id: id }).await?;
    Ok(id)
}

#[test]
fn aggregate_attributes_set_name_and_schema_version() {
    assert_eq!(<Account as Aggregate>::TYPE_NAME, "Account");
    assert_eq!(<Account as Aggregate>::SCHEMA_VERSION, 2);
}

#[tokio::test]
async fn dispatch_returns_the_handlers_typed_output() {
    let app = app();
    let id = opened(&app).await.unwrap();
    let balance: u64 = app
        .dispatch(Deposit {
            aggregate_id: id,
            amount: 500,
        })
        .await
        .unwrap();
    assert_eq!(balance, 495, "the async handler awaited the fee");
    let account = app.load::<Account>(id).await.unwrap();
    assert!(account.open);
    assert_eq!(account.balance, 495);
    assert!(!account.is_rich());
}

#[tokio::test]
async fn emit_applies_at_once_inside_the_handler() {
    let app = app();
    let id = opened(&app).await.unwrap();
    let seen = app
        .dispatch(DepositTwice {
            aggregate_id: id,
            amount: 10,
        })
        .await
        .unwrap();
    assert_eq!(seen, (10, 20));
    assert_eq!(app.events_of::<Account>(id).await.unwrap().len(), 3);
}

#[tokio::test]
async fn only_creating_commands_reach_a_missing_instance() {
    let app = app();
    let missing = Uuid::now_v7();
    let err = app
        .dispatch(Deposit {
            aggregate_id: missing,
            amount: 1,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::AggregateNotFound {
                aggregate_type: "Account",
                command: Some("Deposit"),
                ..
            }
        ),
        "{err:?}"
    );
    app.dispatch(Open {
        aggregate_id: missing,
    })
    .await
    .unwrap();
    let again = app.dispatch(Open {
        aggregate_id: missing,
    });
    let err = again.await.unwrap_err();
    assert_eq!(
        err.as_domain().and_then(DomainError::code),
        Some("already_open")
    );
}

#[tokio::test]
async fn a_failing_handler_stores_nothing_and_changes_nothing() {
    let app = app();
    let id = opened(&app).await.unwrap();
    let err = app
        .dispatch(DepositThenFail { aggregate_id: id })
        .await
        .unwrap_err();
    let domain = err.as_domain().expect("a domain error");
    assert_eq!(domain.downcast_ref::<Frozen>(), Some(&Frozen));
    assert_eq!(app.events_of::<Account>(id).await.unwrap().len(), 1);
    assert_eq!(app.load::<Account>(id).await.unwrap().balance, 0);
    // The next command sees the state before the failed one, not its emitted deposit.
    let balance = app
        .dispatch(Deposit {
            aggregate_id: id,
            amount: 100,
        })
        .await
        .unwrap();
    assert_eq!(balance, 99);

    let err = app.dispatch(Freeze { aggregate_id: id }).await.unwrap_err();
    assert_eq!(err.to_string(), "the account is frozen");
}

#[tokio::test]
async fn ignored_events_are_stored_without_an_applier() {
    let app = app();
    let id = opened(&app).await.unwrap();
    let correlation = Uuid::now_v7();
    let dispatched = app
        .dispatch_with(
            Audit { aggregate_id: id },
            DispatchOptions::new().correlation_id(correlation),
        )
        .await
        .unwrap();
    assert_eq!(
        dispatched.output, correlation,
        "the handler saw its context"
    );
    let events = app.events_of::<Account>(id).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event_type, "AuditRequested");
    // Loading replays the ignored event without complaint.
    assert_eq!(app.load::<Account>(id).await.unwrap().balance, 0);
}
