//! Handlers written with the macros take dependencies as typed parameters (`Dep<T>`,
//! `CommandSender`), and `build()` names a dependency that was never registered.

#![allow(clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::sync::{Arc, Mutex};

use interlock::prelude::*;
use serde::{Deserialize, Serialize};

/// The fee kept on every deposit, in percent.
struct Fees {
    percent: u64,
}

/// Where the notifier writes (a stand-in for a mail service); clones share the messages.
#[derive(Default, Clone)]
struct Outbox {
    sent: Arc<Mutex<Vec<String>>>,
}

#[derive(Command, Serialize, Deserialize)]
#[command(output = u64)]
struct Deposit {
    #[command(aggregate_id)]
    account: String,
    amount: u64,
}

#[derive(Command, Serialize, Deserialize)]
struct Flag {
    #[command(aggregate_id)]
    account: String,
}

#[derive(Event, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

#[derive(Event, Serialize, Deserialize)]
struct Flagged {}

#[aggregate]
#[derive(Default)]
struct Account {
    balance: u64,
    flagged: bool,
}

#[aggregate]
impl Account {
    // The context and dependencies come after the command, in any order.
    #[handles_command(create)]
    async fn deposit(
        &mut self,
        cmd: Deposit,
        fees: Dep<Fees>,
        ctx: &CommandContext,
    ) -> Result<u64, DomainError> {
        assert_eq!(ctx.command_type(), "Deposit");
        self.emit(Deposited {
            amount: cmd.amount - cmd.amount * fees.percent / 100,
        });
        Ok(self.balance)
    }

    // Two handlers taking the same dependency declare it once.
    #[handles_command]
    fn flag(&mut self, _: Flag, Dep(fees): Dep<Fees>) -> Result<(), DomainError> {
        if fees.percent > 0 {
            self.emit(Flagged {});
        }
        Ok(())
    }

    #[applies_event]
    fn on_deposited(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }

    #[applies_event]
    fn on_flagged(&mut self, _: &Flagged) {
        self.flagged = true;
    }
}

/// Notes every deposit in the outbox, and flags large ones through the command sender.
#[derive(Default)]
struct Notifier;

#[event_processor(name = "notifier")]
impl Notifier {
    #[handles_event]
    async fn on_deposited(
        &mut self,
        e: Deposited,
        outbox: Dep<Outbox>,
        ctx: &EventContext<'_>,
        sender: CommandSender,
    ) -> Result<(), interlock::Error> {
        let account = ctx.stream_id().id().to_owned();
        outbox
            .sent
            .lock()
            .expect("outbox lock")
            .push(format!("{account}: {}", e.amount));
        if e.amount >= 100 {
            sender.send(Flag { account }).await?;
        }
        Ok(())
    }
}

fn builder() -> ApplicationBuilder {
    Application::builder()
        .register_aggregate::<Account>()
        .register_event_processor_with(Notifier, ProcessorSettings::inline())
}

#[tokio::test]
async fn handlers_receive_their_dependencies_as_parameters() -> Result<(), Error> {
    let outbox = Outbox::default();
    let app = builder()
        .register_dependency(Fees { percent: 10 })
        .register_dependency(outbox.clone())
        .build()
        .expect("every dependency is registered");
    app.start().await?;
    let balance = app
        .dispatch(Deposit {
            account: "ada".into(),
            amount: 50,
        })
        .await?;
    assert_eq!(balance, 45, "the fee from Dep<Fees> was kept");
    app.dispatch(Deposit {
        account: "ada".into(),
        amount: 200,
    })
    .await?;
    // The inline processor took the outbox and the sender, and flagged the large deposit.
    let account = app.load::<Account>("ada").await?;
    assert_eq!((account.balance, account.flagged), (225, true));
    assert_eq!(
        *outbox.sent.lock().expect("outbox lock"),
        ["ada: 45", "ada: 180"]
    );
    app.shutdown().await?;
    Ok(())
}

#[test]
fn build_names_each_missing_dependency_type() {
    let Err(err) = builder().build() else {
        panic!("nothing is registered, yet the build passed");
    };
    let err = err.to_string();
    assert!(
        err.contains("aggregate Account needs dependency dependencies::Fees"),
        "{err}"
    );
    assert!(
        err.contains("processor notifier needs dependency dependencies::Outbox"),
        "{err}"
    );
    assert_eq!(
        err.matches("dependencies::Fees").count(),
        1,
        "declared once though two handlers take it: {err}"
    );
    // The command sender is always available: it is not a requirement.
    assert!(!err.contains("CommandSender"), "{err}");
}
