//! ProjectionScenario and ProcessorScenario: passing paths and readable failures.

use std::collections::BTreeMap;

use interlock_runtime::prelude::*;
use interlock_testing::{ProcessorScenario, ProjectionScenario};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}
impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
}

struct Balance(&'static str);
impl Query for Balance {
    type Output = u64;
    const TYPE_NAME: &'static str = "Balance";
}

#[derive(Default, Debug)]
struct Balances {
    by_account: BTreeMap<String, u64>,
    correlated: usize,
}
impl EventProcessor for Balances {
    const NAME: &'static str = "balances";
    fn configure(routes: &mut ProcessorRoutes<Self>) {
        routes.event::<Deposited>().query::<Balance>();
    }
}
impl HandlesEvent<Deposited> for Balances {
    async fn handle(&mut self, e: Deposited, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        if e.amount == 0 {
            return Err(HandlerError::new("empty deposit"));
        }
        self.correlated += usize::from(ctx.correlation_id().is_none());
        *self
            .by_account
            .entry(ctx.stream_id().id().to_owned())
            .or_default() += e.amount;
        Ok(())
    }
}
impl AnswersQuery<Balance> for Balances {
    async fn answer(&self, q: Balance) -> Result<u64, HandlerError> {
        self.by_account
            .get(q.0)
            .copied()
            .ok_or_else(|| HandlerError::new(format!("no account {}", q.0)))
    }
}

#[tokio::test]
async fn projections_answer_from_given_events() {
    ProjectionScenario::new(Balances::default())
        .given_in(
            "Account",
            "a",
            (Deposited { amount: 5 }, Deposited { amount: 7 }),
        )
        .given_in("Account", "b", Deposited { amount: 1 })
        .when_query(Balance("a"))
        .await
        .should_return(12);
    ProjectionScenario::new(Balances::default())
        .when_query(Balance("zz"))
        .await
        .should_fail_with_message("no account zz");
}

#[tokio::test]
async fn processors_report_state_and_failures() {
    ProcessorScenario::new(Balances::default())
        .given(vec![
            Deposited { amount: 2 },
            Deposited { amount: 0 },
            Deposited { amount: 3 },
        ])
        .run()
        .await
        .should_fail_on(&[2])
        .should_hold(&[3])
        .should_have_state(|b| b.by_account["1"] == 2 && b.correlated == 1)
        .await;
}

#[tokio::test]
#[should_panic(expected = "query Balance returned another answer\n  expected: 99\n  actual: 12")]
async fn a_wrong_answer_shows_both() {
    ProjectionScenario::new(Balances::default())
        .given_in(
            "Account",
            "a",
            (Deposited { amount: 5 }, Deposited { amount: 7 }),
        )
        .when_query(Balance("a"))
        .await
        .should_return(99);
}

#[tokio::test]
#[should_panic(
    expected = "the projection failed on given events:\n  processor balances failed on event Test/1 version 1 of type \"Deposited\""
)]
async fn a_failing_event_fails_a_query_expectation() {
    ProjectionScenario::new(Balances::default())
        .given(Deposited { amount: 0 })
        .when_query(Balance("1"))
        .await
        .should_return(0);
}

#[tokio::test]
#[should_panic(expected = "expected every event to be handled, but:")]
async fn should_succeed_names_the_failures() {
    ProcessorScenario::new(Balances::default())
        .given(Deposited { amount: 0 })
        .run()
        .await
        .should_succeed();
}

#[tokio::test]
#[should_panic(expected = "actual state: Balances {")]
async fn a_state_miss_shows_the_state() {
    ProcessorScenario::new(Balances::default())
        .given(Deposited { amount: 4 })
        .run()
        .await
        .should_have_state(|b| b.by_account.is_empty())
        .await;
}
