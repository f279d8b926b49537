//! SagaScenario: commands sent, state, deadlines, and readable failures.

use interlock_core::{AggregateId, Command, Event};
use interlock_runtime::HandlerError;
use interlock_runtime::saga::{DeadlineReached, Saga, SagaContext, SagaRoutes, SagaStep};
use interlock_testing::SagaScenario;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct OrderPlaced {
    order: String,
    total: u64,
}
impl Event for OrderPlaced {
    const TYPE_NAME: &'static str = "OrderPlaced";
}

#[derive(Serialize, Deserialize)]
struct PaymentReceived {
    order: String,
}
impl Event for PaymentReceived {
    const TYPE_NAME: &'static str = "PaymentReceived";
}

#[derive(Serialize, Deserialize)]
struct Charge {
    customer: String,
    amount: u64,
}
impl Command for Charge {
    type Output = u64;
    const TYPE_NAME: &'static str = "Charge";
    fn aggregate_id(&self) -> AggregateId {
        self.customer.as_str().into()
    }
}

#[derive(Serialize, Deserialize)]
struct Remind {
    order: String,
}
impl Command for Remind {
    type Output = ();
    const TYPE_NAME: &'static str = "Remind";
    fn aggregate_id(&self) -> AggregateId {
        self.order.as_str().into()
    }
}

#[derive(Default, Debug, Serialize, Deserialize)]
struct Payment {
    total: u64,
    receipt: u64,
    reminded: bool,
}

struct Checkout;
impl Saga for Checkout {
    const NAME: &'static str = "checkout";
    type State = Payment;
    fn configure(routes: &mut SagaRoutes<'_, Self>) {
        routes
            .starts_with(|e: &OrderPlaced| e.order.clone())
            .step(|e: &PaymentReceived| e.order.clone())
            .deadlines();
    }
}
impl SagaStep<OrderPlaced> for Checkout {
    async fn handle(
        &self,
        state: &mut Payment,
        e: OrderPlaced,
        ctx: &mut SagaContext<'_>,
    ) -> Result<(), HandlerError> {
        state.total = e.total;
        state.receipt = ctx
            .send(Charge {
                customer: "c-1".into(),
                amount: e.total,
            })
            .await?;
        ctx.schedule("remind", Duration::from_secs(3600));
        Ok(())
    }
}
impl SagaStep<PaymentReceived> for Checkout {
    async fn handle(
        &self,
        _state: &mut Payment,
        _e: PaymentReceived,
        ctx: &mut SagaContext<'_>,
    ) -> Result<(), HandlerError> {
        ctx.end();
        Ok(())
    }
}
impl SagaStep<DeadlineReached> for Checkout {
    async fn handle(
        &self,
        state: &mut Payment,
        _d: DeadlineReached,
        ctx: &mut SagaContext<'_>,
    ) -> Result<(), HandlerError> {
        ctx.send(Remind {
            order: ctx.key().to_owned(),
        })
        .await?;
        state.reminded = true;
        Ok(())
    }
}

fn placed(order: &str) -> OrderPlaced {
    OrderPlaced {
        order: order.into(),
        total: 40,
    }
}

#[tokio::test]
async fn commands_state_and_deadlines() {
    SagaScenario::new(Checkout)
        .given_in("Order", "o-1", placed("o-1"))
        .stub::<Charge>(777)
        .run()
        .await
        .should_send(
            "o-1",
            vec![("Charge", json!({"customer": "c-1", "amount": 40}))],
        )
        .await
        .should_have_state("o-1", |p| p.total == 40 && p.receipt == 777 && !p.reminded)
        .await
        .should_be_ended("o-1", false)
        .await
        .after(Duration::from_secs(7200))
        .await
        .should_send(
            "o-1",
            vec![
                ("Charge", json!({"customer": "c-1", "amount": 40})),
                ("Remind", json!({"order": "o-1"})),
            ],
        )
        .await
        .should_have_state("o-1", |p| p.reminded)
        .await;

    SagaScenario::new(Checkout)
        .given_in(
            "Order",
            "o-2",
            (
                placed("o-2"),
                PaymentReceived {
                    order: "o-2".into(),
                },
            ),
        )
        .stub::<Charge>(1)
        .run()
        .await
        .should_be_ended("o-2", true)
        .await
        .after(Duration::from_secs(7200))
        .await
        .should_have_state("o-2", |p| !p.reminded)
        .await;

    SagaScenario::new(Checkout)
        .given_in(
            "Order",
            "o-3",
            PaymentReceived {
                order: "o-3".into(),
            },
        )
        .run()
        .await
        .should_have_no_instance("o-3")
        .await;
}

#[tokio::test]
#[should_panic(expected = "saga checkout instance o-1 sent other commands")]
async fn a_missing_command_shows_expected_and_actual() {
    SagaScenario::new(Checkout)
        .given_in("Order", "o-1", placed("o-1"))
        .stub::<Charge>(1)
        .run()
        .await
        .should_send("o-1", vec![])
        .await;
}

#[tokio::test]
#[should_panic(expected = "the state of saga checkout instance o-1 does not match")]
async fn a_state_miss_shows_the_state() {
    SagaScenario::new(Checkout)
        .given_in("Order", "o-1", placed("o-1"))
        .stub::<Charge>(1)
        .run()
        .await
        .should_have_state("o-1", |p| p.total == 0)
        .await;
}
