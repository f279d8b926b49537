use interlock::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Command, Serialize, Deserialize)]
struct Deposit {
    aggregate_id: u64,
    amount: u64,
}

#[derive(Default)]
struct Account {
    balance: u64,
}

impl Account {
    #[handles_command]
    fn deposit(&mut self, cmd: Deposit) -> Result<(), DomainError> {
        self.balance += cmd.amount;
        Ok(())
    }
}

fn main() {}
