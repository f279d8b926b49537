use interlock::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

#[derive(Query)]
#[query(output = u64)]
struct Sent;

#[derive(Default)]
struct Mailer {
    sent: u64,
}

#[event_processor]
impl Mailer {
    #[handles_event]
    fn on_deposited(&mut self, _: Deposited) {
        self.sent += 1;
    }

    #[handles_query]
    fn sent(&self, _: Sent) -> Result<u64, HandlerError> {
        Ok(self.sent)
    }
}

// Without #[projection] or #[event_processor] on the block, the marker cannot work.
impl Mailer {
    #[handles_event]
    fn on_other(&mut self, _: Deposited) {}
}

fn main() {}
