//! AggregateScenario: the passing paths, and readable failures on every miss.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use interlock_core::{AggregateId, Command, Event};
use interlock_runtime::prelude::*;
use interlock_testing::AggregateScenario;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Withdraw {
    id: u64,
    amount: u64,
}
impl Command for Withdraw {
    type Output = u64;
    const TYPE_NAME: &'static str = "Withdraw";
    fn aggregate_id(&self) -> AggregateId {
        self.id.into()
    }
}

#[derive(Serialize, Deserialize)]
struct Open {
    id: u64,
}
impl Command for Open {
    type Output = ();
    const TYPE_NAME: &'static str = "Open";
    fn aggregate_id(&self) -> AggregateId {
        self.id.into()
    }
}

#[derive(Serialize, Deserialize)]
struct Opened;
impl Event for Opened {
    const TYPE_NAME: &'static str = "Opened";
}

#[derive(Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}
impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
}

#[derive(Serialize, Deserialize)]
struct Withdrawn {
    amount: u64,
}
impl Event for Withdrawn {
    const TYPE_NAME: &'static str = "Withdrawn";
}

#[derive(Default, Debug)]
struct Account {
    open: bool,
    balance: u64,
}
impl Aggregate for Account {
    const TYPE_NAME: &'static str = "Account";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes
            .creating_command::<Open>()
            .command::<Withdraw>()
            .event::<Opened>()
            .event::<Deposited>()
            .event::<Withdrawn>();
    }
}
impl HandlesCommand<Open> for Account {
    async fn handle(&mut self, _: Open, _: &CommandContext) -> Result<(), DomainError> {
        if !self.open {
            self.emit(Opened);
        }
        Ok(())
    }
}
impl HandlesCommand<Withdraw> for Account {
    async fn handle(&mut self, cmd: Withdraw, _: &CommandContext) -> Result<u64, DomainError> {
        if cmd.amount > self.balance {
            return Err(DomainError::with_code(
                "insufficient_funds",
                format!(
                    "cannot withdraw {} from a balance of {}",
                    cmd.amount, self.balance
                ),
            ));
        }
        self.emit(Withdrawn { amount: cmd.amount });
        Ok(self.balance)
    }
}
impl AppliesEvent<Opened> for Account {
    fn apply(&mut self, _: &Opened) {
        self.open = true;
    }
}
impl AppliesEvent<Deposited> for Account {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }
}
impl AppliesEvent<Withdrawn> for Account {
    fn apply(&mut self, e: &Withdrawn) {
        self.balance -= e.amount;
    }
}

fn scenario() -> AggregateScenario<Account> {
    AggregateScenario::new().given((Opened, Deposited { amount: 10 }))
}

#[tokio::test]
async fn passing_expectations() {
    scenario()
        .given(vec![Deposited { amount: 5 }, Deposited { amount: 5 }])
        .when(Withdraw { id: 1, amount: 15 })
        .await
        .should_emit(Withdrawn { amount: 15 })
        .should_return(5)
        .should_have_state(|a| a.open && a.balance == 5)
        .should_emit_matching(|events| {
            events.len() == 1
                && events[0].stream_version == 5
                && events[0]
                    .decode::<Withdrawn>()
                    .is_ok_and(|w| w.amount == 15)
        });

    scenario()
        .when(Open { id: 1 })
        .await
        .should_emit_nothing()
        .should_have_state(|a| a.balance == 10);

    AggregateScenario::<Account>::new()
        .when(Open { id: 1 })
        .await
        .should_emit(Opened);

    scenario()
        .when(Withdraw { id: 1, amount: 11 })
        .await
        .should_fail_with(|e| e.as_domain().and_then(|d| d.code()) == Some("insufficient_funds"))
        .should_fail_with_message("cannot withdraw 11 from a balance of 10")
        .should_have_state(|a| a.balance == 10);

    AggregateScenario::<Account>::new()
        .when(Withdraw { id: 1, amount: 1 })
        .await
        .should_fail_with(|e| matches!(e, Error::AggregateNotFound { .. }));
}

#[tokio::test]
#[should_panic(
    expected = "command Withdraw emitted other events than expected\n  expected:\n    1. Withdrawn v1 {\"amount\":4}\n  actual:\n    1. Withdrawn v1 {\"amount\":3}"
)]
async fn a_wrong_event_shows_expected_and_actual() {
    scenario()
        .when(Withdraw { id: 1, amount: 3 })
        .await
        .should_emit(Withdrawn { amount: 4 });
}

#[tokio::test]
#[should_panic(expected = "actual:\n    1. Withdrawn v1 {\"amount\":3}")]
async fn missing_or_extra_events_are_shown() {
    scenario()
        .when(Withdraw { id: 1, amount: 3 })
        .await
        .should_emit((Withdrawn { amount: 3 }, Withdrawn { amount: 3 }));
}

#[tokio::test]
#[should_panic(
    expected = "expected events to be emitted, but command Withdraw failed: cannot withdraw 50 from a balance of 10"
)]
async fn an_unexpected_error_fails_with_the_error() {
    scenario()
        .when(Withdraw { id: 1, amount: 50 })
        .await
        .should_emit(Withdrawn { amount: 50 });
}

#[tokio::test]
#[should_panic(
    expected = "expected command Withdraw to fail, but it succeeded and emitted:\n    1. Withdrawn v1 {\"amount\":1}"
)]
async fn an_unexpected_success_fails() {
    scenario()
        .when(Withdraw { id: 1, amount: 1 })
        .await
        .should_fail_with(|_| true);
}

#[tokio::test]
#[should_panic(expected = "expected to contain: \"overdrawn\"")]
async fn a_different_error_message_fails() {
    scenario()
        .when(Withdraw { id: 1, amount: 50 })
        .await
        .should_fail_with_message("overdrawn");
}

#[tokio::test]
#[should_panic(expected = "expected command Withdraw to emit nothing")]
async fn emit_nothing_fails_when_events_are_emitted() {
    scenario()
        .when(Withdraw { id: 1, amount: 1 })
        .await
        .should_emit_nothing();
}

#[tokio::test]
#[should_panic(expected = "actual state: Account {\n    open: true,\n    balance: 9,\n}")]
async fn a_state_miss_shows_the_state() {
    scenario()
        .when(Withdraw { id: 1, amount: 1 })
        .await
        .should_have_state(|a| a.balance == 10);
}

#[tokio::test]
#[should_panic(expected = "command Withdraw returned another output\n  expected: 7\n  actual: 9")]
async fn a_wrong_output_shows_both() {
    scenario()
        .when(Withdraw { id: 1, amount: 1 })
        .await
        .should_return(7);
}

#[tokio::test]
#[should_panic(
    expected = "but reloading the aggregate failed: cannot decode event Account/1 version 1 of type \"Deposited\""
)]
async fn undecodable_given_events_are_reported() {
    AggregateScenario::<Account>::new()
        .given(vec![interlock_core::SerializedEvent {
            event_type: "Deposited".into(),
            schema_version: 1,
            payload: bytes::Bytes::from_static(b"{\"amount\": -1}"),
        }])
        .when(Open { id: 1 })
        .await
        .should_fail_with(|e| matches!(e, Error::Decode(_)))
        .should_have_state(|_| true);
}
