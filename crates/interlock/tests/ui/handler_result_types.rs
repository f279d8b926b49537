use interlock::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Command, Serialize, Deserialize)]
#[command(output = u64)]
struct Deposit {
    aggregate_id: u64,
    amount: u64,
}

#[derive(Command, Serialize, Deserialize)]
struct Withdraw {
    aggregate_id: u64,
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
    async fn deposit(&mut self, cmd: Deposit) -> Result<(), DomainError> {
        self.balance += cmd.amount;
        Ok(())
    }

    #[handles_command]
    fn withdraw(&mut self, cmd: Withdraw) -> Result<(), String> {
        self.balance -= cmd.amount;
        Ok(())
    }
}

fn main() {}
