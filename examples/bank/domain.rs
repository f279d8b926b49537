//! The bank's domain: accounts that open, take deposits, refuse overdrafts, and move money.

use interlock::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Command, Serialize, Deserialize)]
pub(crate) struct OpenAccount {
    pub(crate) aggregate_id: Uuid,
    pub(crate) owner: String,
}

#[derive(Command, Serialize, Deserialize)]
#[command(output = u64)] // the balance afterwards
pub(crate) struct DepositMoney {
    pub(crate) aggregate_id: Uuid,
    pub(crate) amount: u64,
}

#[derive(Command, Serialize, Deserialize)]
#[command(output = u64)]
pub(crate) struct WithdrawMoney {
    pub(crate) aggregate_id: Uuid,
    pub(crate) amount: u64,
}

/// First leg of a transfer: money leaves the source account.
#[derive(Command, Serialize, Deserialize)]
pub(crate) struct SendTransfer {
    pub(crate) aggregate_id: Uuid,
    pub(crate) transfer_id: Uuid,
    pub(crate) to: Uuid,
    pub(crate) amount: u64,
}

/// Second leg: money arrives at the destination.
#[derive(Command, Serialize, Deserialize)]
pub(crate) struct ReceiveTransfer {
    pub(crate) aggregate_id: Uuid,
    pub(crate) transfer_id: Uuid,
    pub(crate) from: Uuid,
    pub(crate) amount: u64,
}

/// Compensation: the destination refused, the source gets its money back.
#[derive(Command, Serialize, Deserialize)]
pub(crate) struct RefundTransfer {
    pub(crate) aggregate_id: Uuid,
    pub(crate) transfer_id: Uuid,
    pub(crate) amount: u64,
}

#[derive(Command, Serialize, Deserialize)]
pub(crate) struct CloseAccount {
    pub(crate) aggregate_id: Uuid,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct AccountOpened {
    pub(crate) owner: String,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct MoneyDeposited {
    pub(crate) amount: u64,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct MoneyWithdrawn {
    pub(crate) amount: u64,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct TransferSent {
    pub(crate) transfer_id: Uuid,
    pub(crate) to: Uuid,
    pub(crate) amount: u64,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct TransferReceived {
    pub(crate) transfer_id: Uuid,
    pub(crate) from: Uuid,
    pub(crate) amount: u64,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct TransferRefunded {
    pub(crate) transfer_id: Uuid,
    pub(crate) amount: u64,
}

#[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct AccountClosed;

#[aggregate]
#[derive(Default, Debug, Serialize, Deserialize)]
pub(crate) struct BankAccount {
    pub(crate) owner: String,
    pub(crate) balance: u64,
    pub(crate) closed: bool,
}

impl BankAccount {
    fn ensure_open(&self) -> Result<(), DomainError> {
        if self.closed {
            return Err(DomainError::with_code(
                "account_closed",
                format!("the account of {} is closed", self.owner),
            ));
        }
        Ok(())
    }

    fn ensure_funds(&self, amount: u64) -> Result<(), DomainError> {
        if amount > self.balance {
            return Err(DomainError::with_code(
                "insufficient_funds",
                format!(
                    "insufficient funds: {} has {}, cannot take {amount}",
                    self.owner, self.balance
                ),
            ));
        }
        Ok(())
    }
}

fn positive(amount: u64) -> Result<(), DomainError> {
    if amount == 0 {
        return Err(DomainError::with_code(
            "invalid_amount",
            "amount must be positive",
        ));
    }
    Ok(())
}

#[aggregate]
impl BankAccount {
    #[handles_command(create)]
    fn open(&mut self, cmd: OpenAccount) -> Result<(), DomainError> {
        if !self.owner.is_empty() {
            return Err(DomainError::with_code(
                "already_open",
                "the account is already open",
            ));
        }
        self.emit(AccountOpened { owner: cmd.owner });
        Ok(())
    }

    #[handles_command]
    async fn deposit(&mut self, cmd: DepositMoney) -> Result<u64, DomainError> {
        self.ensure_open()?;
        positive(cmd.amount)?;
        self.emit(MoneyDeposited { amount: cmd.amount });
        Ok(self.balance)
    }

    #[handles_command]
    async fn withdraw(&mut self, cmd: WithdrawMoney) -> Result<u64, DomainError> {
        self.ensure_open()?;
        positive(cmd.amount)?;
        self.ensure_funds(cmd.amount)?;
        self.emit(MoneyWithdrawn { amount: cmd.amount });
        Ok(self.balance)
    }

    #[handles_command]
    async fn send(&mut self, cmd: SendTransfer) -> Result<(), DomainError> {
        self.ensure_open()?;
        positive(cmd.amount)?;
        self.ensure_funds(cmd.amount)?;
        self.emit(TransferSent {
            transfer_id: cmd.transfer_id,
            to: cmd.to,
            amount: cmd.amount,
        });
        Ok(())
    }

    #[handles_command]
    async fn receive(&mut self, cmd: ReceiveTransfer) -> Result<(), DomainError> {
        self.ensure_open()?;
        self.emit(TransferReceived {
            transfer_id: cmd.transfer_id,
            from: cmd.from,
            amount: cmd.amount,
        });
        Ok(())
    }

    #[handles_command]
    async fn refund(&mut self, cmd: RefundTransfer) -> Result<(), DomainError> {
        self.emit(TransferRefunded {
            transfer_id: cmd.transfer_id,
            amount: cmd.amount,
        });
        Ok(())
    }

    #[handles_command]
    async fn close(&mut self, _cmd: CloseAccount) -> Result<(), DomainError> {
        self.ensure_open()?;
        self.emit(AccountClosed);
        Ok(())
    }

    #[applies_event]
    fn on_opened(&mut self, e: &AccountOpened) {
        self.owner.clone_from(&e.owner);
    }

    #[applies_event]
    fn on_deposited(&mut self, e: &MoneyDeposited) {
        self.balance += e.amount;
    }

    #[applies_event]
    fn on_withdrawn(&mut self, e: &MoneyWithdrawn) {
        self.balance -= e.amount;
    }

    #[applies_event]
    fn on_sent(&mut self, e: &TransferSent) {
        self.balance -= e.amount;
    }

    #[applies_event]
    fn on_received(&mut self, e: &TransferReceived) {
        self.balance += e.amount;
    }

    #[applies_event]
    fn on_refunded(&mut self, e: &TransferRefunded) {
        self.balance += e.amount;
    }

    #[applies_event]
    fn on_closed(&mut self, _e: &AccountClosed) {
        self.closed = true;
    }
}

/// Moves money between two accounts: send, then receive; if the destination refuses, refund
/// the source. (A saga will own this flow once sagas exist; the steps stay the same.)
pub(crate) async fn transfer(
    app: &Application,
    from: Uuid,
    to: Uuid,
    amount: u64,
) -> Result<(), Error> {
    let transfer_id = Uuid::now_v7();
    app.dispatch(SendTransfer {
        aggregate_id: from,
        transfer_id,
        to,
        amount,
    })
    .await?;
    let received = app
        .dispatch(ReceiveTransfer {
            aggregate_id: to,
            transfer_id,
            from,
            amount,
        })
        .await;
    if let Err(refusal) = received {
        app.dispatch(RefundTransfer {
            aggregate_id: from,
            transfer_id,
            amount,
        })
        .await?;
        return Err(refusal);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use interlock::testing::AggregateScenario;

    use super::*;

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn opened() -> AccountOpened {
        AccountOpened {
            owner: "ada".into(),
        }
    }

    #[tokio::test]
    async fn deposits_add_up() {
        AggregateScenario::<BankAccount>::new()
            .given((opened(), MoneyDeposited { amount: 5 }))
            .when(DepositMoney {
                aggregate_id: id(),
                amount: 10,
            })
            .await
            .should_emit(MoneyDeposited { amount: 10 })
            .should_return(15);
    }

    #[tokio::test]
    async fn overdrafts_are_refused_and_change_nothing() {
        AggregateScenario::<BankAccount>::new()
            .given((opened(), MoneyDeposited { amount: 5 }))
            .when(WithdrawMoney {
                aggregate_id: id(),
                amount: 6,
            })
            .await
            .should_fail_with(|e| {
                e.as_domain().and_then(|d| d.code()) == Some("insufficient_funds")
            })
            .should_have_state(|a| a.balance == 5);
    }

    #[tokio::test]
    async fn closed_accounts_refuse_transfers() {
        AggregateScenario::<BankAccount>::new()
            .given((opened(), AccountClosed))
            .when(ReceiveTransfer {
                aggregate_id: id(),
                transfer_id: Uuid::from_u128(1),
                from: Uuid::from_u128(2),
                amount: 3,
            })
            .await
            .should_fail_with_message("is closed");
    }

    #[tokio::test]
    async fn accounts_open_once() {
        AggregateScenario::<BankAccount>::new()
            .when(OpenAccount {
                aggregate_id: id(),
                owner: "ada".into(),
            })
            .await
            .should_emit(opened());
        AggregateScenario::<BankAccount>::new()
            .given(opened())
            .when(OpenAccount {
                aggregate_id: id(),
                owner: "bob".into(),
            })
            .await
            .should_fail_with_message("already open");
    }

    #[tokio::test]
    async fn a_refused_transfer_is_refunded() {
        let app = Application::builder()
            .register_aggregate::<BankAccount>()
            .build()
            .unwrap();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        for (id, owner) in [(a, "ada"), (b, "bob")] {
            app.dispatch(OpenAccount {
                aggregate_id: id,
                owner: owner.into(),
            })
            .await
            .unwrap();
        }
        app.dispatch(DepositMoney {
            aggregate_id: a,
            amount: 10,
        })
        .await
        .unwrap();
        app.dispatch(CloseAccount { aggregate_id: b })
            .await
            .unwrap();
        let err = transfer(&app, a, b, 4).await.unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
        assert_eq!(app.load::<BankAccount>(a).await.unwrap().balance, 10);
        assert_eq!(app.load::<BankAccount>(b).await.unwrap().balance, 0);
    }
}
