use interlock::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
struct Shipped {
    order_id: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Delivery {
    shipped: bool,
}

struct Fulfilment;

// Every step waits for an existing instance, so no instance could ever be created.
#[saga(state = Delivery)]
impl Fulfilment {
    #[saga_step(key = order_id)]
    async fn shipped(&self, state: &mut Delivery, _e: Shipped) {
        state.shipped = true;
    }
}

#[derive(Event, Serialize, Deserialize)]
struct Cancelled {
    order_id: String,
}

struct Outside;

impl Outside {
    // A step outside a `#[saga]` block.
    #[saga_step(start, key = order_id)]
    async fn cancelled(&self, _state: &mut Delivery, _e: Cancelled) {}
}

fn main() {}
