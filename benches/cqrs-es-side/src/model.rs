//! The account of every workload, written the cqrs-es way: one enum of commands, one of
//! events, an aggregate that applies them.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// What an account is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AccountCommand {
    Open,
    Deposit { amount: u64 },
}

/// What happened to an account. `Deposited` is at schema version 2.0 (version 1.0 named the
/// field `cents`; see the upcaster of W5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    Opened,
    Deposited { amount: u64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Opened => "Opened".to_owned(),
            Self::Deposited { .. } => "Deposited".to_owned(),
        }
    }
    fn event_version(&self) -> String {
        match self {
            Self::Opened => "1.0".to_owned(),
            Self::Deposited { .. } => "2.0".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub opened: bool,
    pub balance: u64,
    pub deposits: u64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AccountCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AccountError> {
        match command {
            AccountCommand::Open if self.opened => return Err(AccountError::AlreadyOpen),
            AccountCommand::Open => sink.write(AccountEvent::Opened, self).await,
            AccountCommand::Deposit { .. } if !self.opened => return Err(AccountError::NotOpen),
            AccountCommand::Deposit { amount } => {
                sink.write(AccountEvent::Deposited { amount }, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::Opened => self.opened = true,
            AccountEvent::Deposited { amount } => {
                self.balance += amount;
                self.deposits += 1;
            }
        }
    }
}

/// The amount of the deposit at `version` (1-based, the `Opened` event is version 1): varied,
/// so a skipped or repeated event shows in the balance.
pub fn amount_at(version: u64) -> u64 {
    version % 10 + 1
}

/// The account after `Opened` and deposits up to stream version `version`.
pub fn account_at(version: u64) -> Account {
    Account {
        opened: version >= 1,
        balance: (2..=version).map(amount_at).sum(),
        deposits: version.saturating_sub(1),
    }
}
