use interlock::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Query)]
struct BalanceOf {
    account: u64,
}

#[derive(Event, Serialize, Deserialize)]
#[event(version = 0)]
struct Deposited {
    amount: u64,
}

fn main() {}
