//! The account of every workload, the same as on the cqrs-es side: `Open` and `Deposit`
//! commands, `Opened` and `Deposited` events, and a balance view. Written with the plain traits
//! (what the macros generate), so the comparison does not depend on macro details.

use std::collections::HashMap;

use interlock::core::upcast::JsonUpcaster;
use interlock::prelude::*;
use interlock::{AggregateRoutes, NewEvent, ValidationError};
use serde::{Deserialize, Serialize};

/// Opens an account.
#[derive(Serialize, Deserialize)]
pub(crate) struct Open {
    pub(crate) account: String,
}

impl Command for Open {
    type Output = ();
    const TYPE_NAME: &'static str = "Open";
    fn aggregate_id(&self) -> AggregateId {
        self.account.as_str().into()
    }
}

/// Puts money into an open account.
#[derive(Serialize, Deserialize)]
pub(crate) struct Deposit {
    pub(crate) account: String,
    pub(crate) amount: u64,
}

impl Command for Deposit {
    type Output = ();
    const TYPE_NAME: &'static str = "Deposit";
    fn aggregate_id(&self) -> AggregateId {
        self.account.as_str().into()
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub(crate) struct Opened {}

impl Event for Opened {
    const TYPE_NAME: &'static str = "Opened";
}

/// Schema version 2; version 1 named the field `cents` (see [`deposited_v1_to_v2`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub(crate) struct Deposited {
    pub(crate) amount: u64,
}

impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
    const SCHEMA_VERSION: u32 = 2;
}

/// The upcaster of W5: renames `cents` to `amount` on the stored JSON.
pub(crate) fn deposited_v1_to_v2() -> JsonUpcaster {
    JsonUpcaster::new("Deposited", 1, |mut payload| {
        let object = payload.as_object_mut().ok_or("not an object")?;
        let cents = object.remove("cents").ok_or("no cents")?;
        object.insert("amount".into(), cents);
        Ok(payload)
    })
}

#[derive(Default, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Account {
    pub(crate) opened: bool,
    pub(crate) balance: u64,
    pub(crate) deposits: u64,
}

impl Aggregate for Account {
    const TYPE_NAME: &'static str = "Account";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes
            .creating_command::<Open>()
            .command::<Deposit>()
            .event::<Opened>()
            .event::<Deposited>();
    }
}

impl HandlesCommand<Open> for Account {
    async fn handle(&mut self, _: Open, _: &CommandContext) -> Result<(), DomainError> {
        if self.opened {
            return Err(DomainError::new("the account is already open"));
        }
        self.emit(Opened {});
        Ok(())
    }
}

impl HandlesCommand<Deposit> for Account {
    async fn handle(&mut self, cmd: Deposit, _: &CommandContext) -> Result<(), DomainError> {
        if !self.opened {
            return Err(DomainError::new("the account is not open"));
        }
        self.emit(Deposited { amount: cmd.amount });
        Ok(())
    }
}

impl AppliesEvent<Opened> for Account {
    fn apply(&mut self, _: &Opened) {
        self.opened = true;
    }
}

impl AppliesEvent<Deposited> for Account {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
        self.deposits += 1;
    }
}

/// The amount of the deposit at `version` (1-based; version 1 is `Opened`): varied, so a
/// skipped or repeated event shows in the balance.
pub(crate) fn amount_at(version: u64) -> u64 {
    version % 10 + 1
}

/// The account after `Opened` and the deposits up to stream version `version`.
pub(crate) fn account_at(version: u64) -> Account {
    Account {
        opened: version >= 1,
        balance: (2..=version).map(amount_at).sum(),
        deposits: version.saturating_sub(1),
    }
}

/// The balance of every account, in memory.
#[derive(Default, Debug)]
pub(crate) struct Balances {
    pub(crate) by_account: HashMap<String, u64>,
}

impl EventProcessor for Balances {
    const NAME: &'static str = "balances";
    fn configure(routes: &mut ProcessorRoutes<Self>) {
        routes.event::<Opened>().event::<Deposited>();
    }
    async fn reset(&mut self) -> Result<(), HandlerError> {
        self.by_account.clear();
        Ok(())
    }
}

impl HandlesEvent<Opened> for Balances {
    async fn handle(&mut self, _: Opened, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        self.by_account.insert(ctx.stream_id().id().to_owned(), 0);
        Ok(())
    }
}

impl HandlesEvent<Deposited> for Balances {
    async fn handle(&mut self, e: Deposited, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        match self.by_account.get_mut(ctx.stream_id().id()) {
            Some(balance) => *balance += e.amount,
            None => {
                self.by_account
                    .insert(ctx.stream_id().id().to_owned(), e.amount);
            }
        }
        Ok(())
    }
}

/// Whether `view` holds exactly `accounts` accounts `acc-*`, each with `per_account` events.
pub(crate) fn check_view(
    view: &HashMap<String, u64>,
    accounts: u64,
    per_account: u64,
) -> Result<(), String> {
    let expected = account_at(per_account).balance;
    let wrong = (0..accounts)
        .filter(|a| view.get(&format!("acc-{a}")) != Some(&expected))
        .count();
    if view.len() as u64 != accounts || wrong > 0 {
        return Err(format!(
            "view holds {} accounts, {wrong} with a wrong balance",
            view.len()
        ));
    }
    Ok(())
}

/// How events are written: at the current version, or `Deposited` at version 1 (`cents`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Current,
    Legacy,
}

/// Appends versions `from..=to` of account `id`'s stream, 1000 events per append (setup only,
/// never measured).
pub(crate) async fn append_stream(
    store: &impl EventStore,
    id: &str,
    from: u64,
    to: u64,
    shape: Shape,
) -> Result<(), Error> {
    let stream = StreamId::new(Account::TYPE_NAME, id)?;
    let mut version = from;
    while version <= to {
        let last = to.min(version + 999);
        let batch = (version..=last)
            .map(|v| event_at(v, shape))
            .collect::<Result<Vec<_>, _>>()?;
        let expected = if version == 1 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version - 1)
        };
        store.append(&stream, expected, batch).await?;
        version = last + 1;
    }
    Ok(())
}

fn event_at(version: u64, shape: Shape) -> Result<NewEvent, ValidationError> {
    let payload_error = |e: serde_json::Error| ValidationError::new("payload", e.to_string());
    if version == 1 {
        return NewEvent::from_event(&Opened {}).map_err(payload_error);
    }
    let amount = amount_at(version);
    let event = NewEvent::from_event(&Deposited { amount }).map_err(payload_error)?;
    Ok(match shape {
        Shape::Current => event,
        Shape::Legacy => NewEvent {
            schema_version: 1,
            payload: serde_json::to_vec(&serde_json::json!({ "cents": amount }))
                .map_err(payload_error)?
                .into(),
            ..event
        },
    })
}
