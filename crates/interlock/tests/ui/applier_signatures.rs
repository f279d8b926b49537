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

#[aggregate]
#[derive(Default)]
struct Account {
    balance: u64,
}

#[aggregate]
impl Account {
    #[handles_command(create)]
    fn deposit(&mut self, cmd: Deposit) -> Result<(), DomainError> {
        self.emit(Deposited { amount: cmd.amount });
        Ok(())
    }

    #[applies_event]
    fn on_deposited(&mut self, e: Deposited) {
        self.balance += e.amount;
    }

    #[applies_event]
    async fn on_deposited_later(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }
}

fn main() {}
