use interlock::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Command, Serialize, Deserialize)]
struct Deposit {
    aggregate_id: u64,
    amount: u64,
}

#[derive(Event, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

/// A plain type: not registered as `Dep<Rates>`, and not something handlers can extract.
struct Rates;

#[aggregate]
#[derive(Default)]
struct Account {
    balance: u64,
}

#[aggregate]
impl Account {
    #[handles_command(create)]
    fn deposit(&mut self, cmd: Deposit, rates: Rates) -> Result<(), DomainError> {
        let _ = rates;
        self.emit(Deposited { amount: cmd.amount });
        Ok(())
    }

    #[applies_event]
    fn on_deposited(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }
}

#[derive(Default)]
struct Audit;

#[event_processor]
impl Audit {
    // Dependencies are taken by value: a borrowed one has no owner to borrow from.
    #[handles_event]
    fn on_deposited(&mut self, _e: Deposited, rates: &Dep<Rates>) {
        let _ = rates;
    }
}

fn main() {}
