//! The bank's domain: accounts that open, take deposits, refuse overdrafts, and move money.

use interlock::middleware::{
    ConcurrencyRetryMiddleware, ContextPropagationMiddleware, IdempotencyMiddleware,
    LoggingMiddleware,
};
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

/// Moves money between accounts: the source's `SendTransfer` already took the money (the
/// withdrawal); this saga deposits it at the destination, or refunds the source when the
/// destination refuses. Each step runs once per transfer, whatever redeliveries happen.
pub(crate) struct TransferSaga;

/// Where one transfer stands.
#[derive(Default, Debug, Serialize, Deserialize)]
pub(crate) struct TransferState {
    pub(crate) from: Uuid,
    pub(crate) to: Uuid,
    pub(crate) amount: u64,
    pub(crate) outcome: Option<String>,
}

#[saga(name = "transfer", state = TransferState)]
impl TransferSaga {
    #[saga_step(start, key = transfer_id)]
    async fn sent(
        &self,
        state: &mut TransferState,
        e: TransferSent,
        ctx: &mut SagaContext<'_>,
    ) -> Result<(), Error> {
        let from = ctx.event().stream_id().id().parse().unwrap_or_default();
        *state = TransferState {
            from,
            to: e.to,
            amount: e.amount,
            outcome: None,
        };
        let deposit = ctx
            .send(ReceiveTransfer {
                aggregate_id: e.to,
                transfer_id: e.transfer_id,
                from,
                amount: e.amount,
            })
            .await;
        match deposit {
            Ok(()) => state.outcome = Some("completed".into()),
            Err(Error::Domain(refusal)) => {
                // Compensation: the destination refused, the source gets its money back.
                ctx.send(RefundTransfer {
                    aggregate_id: from,
                    transfer_id: e.transfer_id,
                    amount: e.amount,
                })
                .await?;
                state.outcome = Some(format!("refunded: {refusal}"));
            }
            Err(other) => return Err(other),
        }
        ctx.end();
        Ok(())
    }
}

/// The balance of every account, kept up to date from the events.
#[derive(Default)]
pub(crate) struct Balances {
    owners: std::collections::BTreeMap<Uuid, String>,
    balances: std::collections::BTreeMap<Uuid, i128>,
}

/// Every account's owner and balance, by owner.
#[derive(Query, Serialize, Deserialize)]
#[query(output = Vec<(String, i128)>)]
pub(crate) struct AllBalances;

fn account_of(ctx: &EventContext<'_>) -> Uuid {
    ctx.stream_id().id().parse().unwrap_or_default()
}

#[projection(name = "balances", resettable)]
impl Balances {
    #[handles_event]
    fn opened(&mut self, e: AccountOpened, ctx: &EventContext<'_>) {
        self.owners.insert(account_of(ctx), e.owner);
    }

    #[handles_event]
    fn deposited(&mut self, e: MoneyDeposited, ctx: &EventContext<'_>) {
        *self.balances.entry(account_of(ctx)).or_default() += i128::from(e.amount);
    }

    #[handles_event]
    fn withdrawn(&mut self, e: MoneyWithdrawn, ctx: &EventContext<'_>) {
        *self.balances.entry(account_of(ctx)).or_default() -= i128::from(e.amount);
    }

    #[handles_event]
    fn sent(&mut self, e: TransferSent, ctx: &EventContext<'_>) {
        *self.balances.entry(account_of(ctx)).or_default() -= i128::from(e.amount);
    }

    #[handles_event]
    fn received(&mut self, e: TransferReceived, ctx: &EventContext<'_>) {
        *self.balances.entry(account_of(ctx)).or_default() += i128::from(e.amount);
    }

    #[handles_event]
    fn refunded(&mut self, e: TransferRefunded, ctx: &EventContext<'_>) {
        *self.balances.entry(account_of(ctx)).or_default() += i128::from(e.amount);
    }

    #[handles_query]
    fn all(&self, _q: AllBalances) -> Result<Vec<(String, i128)>, HandlerError> {
        Ok(self
            .owners
            .iter()
            .map(|(id, owner)| (owner.clone(), self.balances.get(id).copied().unwrap_or(0)))
            .collect())
    }
}

/// The bank, wired: the account aggregate, the transfer saga, the balances projection, and the
/// middleware every command goes through.
pub(crate) fn bank(builder: ApplicationBuilder) -> ApplicationBuilder {
    builder
        .register_middleware(LoggingMiddleware::new().quiet_success())
        .register_middleware(ContextPropagationMiddleware::new())
        .register_middleware(IdempotencyMiddleware::new())
        .register_middleware(ConcurrencyRetryMiddleware::new())
        .register_aggregate::<BankAccount>()
        .register_saga(TransferSaga)
        // The view lives in memory: rebuild it from the log on every start.
        .register_projection_with(
            Balances::default(),
            ProcessorSettings::new().replay_on_start(),
        )
}

/// Starts a transfer and waits until the saga has settled it. The money leaves the source at
/// once (or the command is refused); the saga deposits it or refunds it.
pub(crate) async fn transfer(
    app: &Application,
    from: Uuid,
    to: Uuid,
    amount: u64,
) -> Result<TransferState, Error> {
    let transfer_id = Uuid::now_v7();
    let sent = app
        .dispatch_with(
            SendTransfer {
                aggregate_id: from,
                transfer_id,
                to,
                amount,
            },
            DispatchOptions::new(),
        )
        .await?;
    if let Some(position) = sent.position {
        app.wait_for(position).await?;
    }
    let stored = app
        .event_store()
        .side_stores()
        .ok_or(Error::ShutDown)?
        .sagas
        .load_saga("transfer", &transfer_id.to_string())
        .await?;
    let state = stored
        .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s.state).ok())
        .and_then(|doc| serde_json::from_value(doc["state"].clone()).ok())
        .unwrap_or_default();
    Ok(state)
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
    async fn transfers_complete_or_are_refunded_by_the_saga() {
        let app = bank(Application::builder()).build().unwrap();
        app.start().await.unwrap();
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        for (id, owner) in [(a, "ada"), (b, "bob"), (c, "cy")] {
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
        app.dispatch(CloseAccount { aggregate_id: c })
            .await
            .unwrap();

        let done = transfer(&app, a, b, 4).await.unwrap();
        assert_eq!(done.outcome.as_deref(), Some("completed"));
        let refused = transfer(&app, a, c, 3).await.unwrap();
        assert!(
            refused
                .outcome
                .as_deref()
                .is_some_and(|o| o.contains("closed")),
            "{refused:?}"
        );
        assert_eq!(app.load::<BankAccount>(a).await.unwrap().balance, 6);
        assert_eq!(app.load::<BankAccount>(b).await.unwrap().balance, 4);
        assert_eq!(app.load::<BankAccount>(c).await.unwrap().balance, 0);
        let overdraft = transfer(&app, a, b, 100).await.unwrap_err();
        assert!(
            overdraft.to_string().contains("insufficient"),
            "{overdraft}"
        );

        let head = app.event_store().head_position().await.unwrap();
        app.wait_for(head).await.unwrap();
        let balances = app.query(AllBalances).await.unwrap();
        assert_eq!(
            balances,
            vec![
                ("ada".to_owned(), 6),
                ("bob".to_owned(), 4),
                ("cy".to_owned(), 0)
            ]
        );
        app.shutdown().await.unwrap();
    }
}
