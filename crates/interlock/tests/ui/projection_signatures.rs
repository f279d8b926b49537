use interlock::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

#[derive(Query)]
#[query(output = u64)]
struct Total;

#[derive(Default)]
struct Totals {
    total: u64,
    asked: u64,
}

#[projection]
impl Totals {
    // `String` is not an error type: it does not convert into `HandlerError`.
    #[handles_event]
    fn on_deposited(&mut self, e: Deposited) -> Result<(), String> {
        self.total += e.amount;
        Ok(())
    }

    #[handles_query]
    fn total(&mut self, _: Total) -> Result<u64, HandlerError> {
        self.asked += 1;
        Ok(self.total)
    }
}

fn main() {}
