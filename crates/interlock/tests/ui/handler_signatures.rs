use interlock::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Command, Serialize, Deserialize)]
struct Deposit {
    aggregate_id: u64,
    amount: u64,
}

#[derive(Command, Serialize, Deserialize)]
struct Withdraw {
    aggregate_id: u64,
    amount: u64,
}

#[derive(Command, Serialize, Deserialize)]
struct Close {
    aggregate_id: u64,
}

struct Clock;

#[aggregate]
#[derive(Default)]
struct Account {
    balance: u64,
}

#[aggregate]
impl Account {
    #[handles_command]
    fn deposit(&self, cmd: Deposit) -> Result<(), DomainError> {
        let _ = (self.balance, cmd.amount);
        Ok(())
    }

    #[handles_command]
    fn withdraw(&mut self, cmd: Withdraw, clock: &Clock) -> Result<(), DomainError> {
        let _ = (cmd.amount, clock);
        Ok(())
    }

    #[handles_command]
    fn close(&mut self, _cmd: Close) {}
}

fn main() {}
