use interlock::prelude::*;

#[aggregate]
#[derive(Default)]
struct Account {
    balance: u64,
}

fn main() {}
