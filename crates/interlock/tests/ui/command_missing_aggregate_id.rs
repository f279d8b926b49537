use interlock::prelude::*;

#[derive(Command)]
struct Deposit {
    account: u64,
    amount: u64,
}

fn main() {}
