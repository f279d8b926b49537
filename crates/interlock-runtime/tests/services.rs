//! Dependencies, lifecycle hooks, the command sender and context propagation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::sync::{Arc, Mutex};
use std::time::Duration;

use interlock_runtime::middleware::ContextPropagationMiddleware;
use interlock_runtime::prelude::*;
use interlock_runtime::{HandlerError, Lifecycle};
use serde::{Deserialize, Serialize};

/// A dependency: the fee charged on every deposit.
struct Fees {
    percent: u64,
}

#[derive(Serialize, Deserialize)]
struct Deposit {
    id: String,
    amount: u64,
}
impl Command for Deposit {
    type Output = u64;
    const TYPE_NAME: &'static str = "Deposit";
    fn aggregate_id(&self) -> AggregateId {
        self.id.as_str().into()
    }
}

#[derive(Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}
impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
}

#[derive(Default)]
struct Account {
    balance: u64,
}
impl Aggregate for Account {
    const TYPE_NAME: &'static str = "Account";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes
            .creating_command::<Deposit>()
            .event::<Deposited>()
            .requires::<Dep<Fees>>();
    }
}
impl HandlesCommand<Deposit> for Account {
    async fn handle(&mut self, cmd: Deposit, ctx: &CommandContext) -> Result<u64, DomainError> {
        let fees: Dep<Fees> = ctx.extract()?;
        self.emit(Deposited {
            amount: cmd.amount - cmd.amount * fees.percent / 100,
        });
        Ok(self.balance)
    }
}
impl AppliesEvent<Deposited> for Account {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }
}

/// Mirrors every deposit on account "a" into account "mirror" (a reaction across aggregates).
#[derive(Default)]
struct Mirror;
impl EventProcessor for Mirror {
    const NAME: &'static str = "mirror";
    fn configure(routes: &mut ProcessorRoutes<Self>) {
        routes.event::<Deposited>();
    }
}
impl HandlesEvent<Deposited> for Mirror {
    async fn handle(&mut self, e: Deposited, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        if ctx.stream_id().id() == "a" {
            let sender: CommandSender = ctx.extract()?;
            sender
                .send(Deposit {
                    id: "mirror".into(),
                    amount: e.amount,
                })
                .await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn handlers_take_dependencies_and_build_names_missing_ones() {
    let app = Application::builder()
        .register_dependency(Fees { percent: 10 })
        .register_aggregate::<Account>()
        .build()
        .unwrap();
    assert_eq!(
        app.dispatch(Deposit {
            id: "x".into(),
            amount: 100
        })
        .await
        .unwrap(),
        90
    );

    let err = Application::builder()
        .register_aggregate::<Account>()
        .build()
        .unwrap_err();
    assert!(
        err.problems
            .iter()
            .any(|p| p.contains("aggregate Account needs dependency services::Fees")),
        "{err}"
    );
    let err = Application::builder()
        .register_dependency(Fees { percent: 1 })
        .register_dependency(Fees { percent: 2 })
        .register_aggregate::<Account>()
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("dependency services::Fees is registered twice"),
        "{err}"
    );
}

#[tokio::test]
async fn a_processor_sends_commands_and_context_ids_follow_the_hop() {
    let store = InMemoryEventStore::new();
    let app = Application::builder()
        .with_event_store(store.clone())
        .register_dependency(Fees { percent: 0 })
        .register_aggregate::<Account>()
        .register_event_processor(Mirror)
        .register_middleware(ContextPropagationMiddleware::new())
        .build()
        .unwrap();
    app.start().await.unwrap();
    let correlation = uuid::Uuid::now_v7();
    let done = app
        .dispatch_with(
            Deposit {
                id: "a".into(),
                amount: 7,
            },
            DispatchOptions::new().correlation_id(correlation),
        )
        .await
        .unwrap();
    app.wait_for(done.position.unwrap()).await.unwrap();
    let mirrored = loop {
        let events = app.events_of::<Account>("mirror").await.unwrap();
        if !events.is_empty() {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let original = app.events_of::<Account>("a").await.unwrap();
    assert_eq!(
        mirrored[0].correlation_id,
        Some(correlation),
        "one flow, one correlation"
    );
    assert_eq!(
        mirrored[0].causation_id,
        Some(*original[0].event_id.as_uuid()),
        "caused by the event that triggered the processor"
    );
    assert_eq!(app.load::<Account>("mirror").await.unwrap().balance, 7);
    app.shutdown().await.unwrap();
}

struct Hook {
    name: &'static str,
    fail: bool,
    log: Arc<Mutex<Vec<String>>>,
}
impl Lifecycle for Hook {
    fn name(&self) -> &str {
        self.name
    }
    async fn start(&self) -> Result<(), HandlerError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("start {}", self.name));
        if self.fail {
            return Err(HandlerError::new("boom"));
        }
        Ok(())
    }
    async fn shutdown(&self) -> Result<(), HandlerError> {
        self.log.lock().unwrap().push(format!("stop {}", self.name));
        if self.fail {
            return Err(HandlerError::new("bang"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn hooks_start_in_order_stop_in_reverse_and_all_run() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let hook = |name, fail| Hook {
        name,
        fail,
        log: log.clone(),
    };
    let app = Application::builder()
        .register_dependency(Fees { percent: 0 })
        .register_aggregate::<Account>()
        .register_lifecycle(hook("db", false))
        .register_lifecycle(hook("cache", true))
        .register_managed_dependency(hook("mailer", false))
        .build()
        .unwrap();
    let err = app.start().await.unwrap_err();
    assert!(
        matches!(&err, Error::Lifecycle { failures } if failures.len() == 1 && failures[0].contains("cache failed to start: boom")),
        "{err}"
    );
    let err = app.shutdown().await.unwrap_err();
    assert!(
        err.to_string().contains("cache failed to shutdown: bang"),
        "{err}"
    );
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "start db",
            "start cache",
            "start mailer",
            "stop mailer",
            "stop cache",
            "stop db"
        ]
    );
}

#[tokio::test]
async fn an_inline_processor_that_dispatches_neither_deadlocks_nor_lags() {
    let store = InMemoryEventStore::new();
    let app = Application::builder()
        .with_event_store(store.clone())
        .register_dependency(Fees { percent: 0 })
        .register_aggregate::<Account>()
        .register_event_processor_with(Mirror, ProcessorSettings::inline())
        .build()
        .unwrap();
    let done = tokio::time::timeout(
        Duration::from_secs(5),
        app.dispatch(Deposit {
            id: "a".into(),
            amount: 3,
        }),
    )
    .await
    .expect("no deadlock on the processor's own cursor");
    done.unwrap();
    // The mirrored deposit was stored (and delivered) before the outer dispatch returned.
    assert_eq!(app.load::<Account>("mirror").await.unwrap().balance, 3);
    assert_eq!(
        app.processor_positions(),
        vec![("mirror", store.head_position().await.unwrap())]
    );
}

/// Takes a dependency without declaring it, so only dispatch can notice it is missing.
#[derive(Default)]
struct Careless;
impl Aggregate for Careless {
    const TYPE_NAME: &'static str = "Careless";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes.creating_command::<Touch>();
    }
}
#[derive(Serialize, Deserialize)]
struct Touch;
impl Command for Touch {
    type Output = ();
    const TYPE_NAME: &'static str = "Touch";
    fn aggregate_id(&self) -> AggregateId {
        "t".into()
    }
}
impl HandlesCommand<Touch> for Careless {
    async fn handle(&mut self, _: Touch, ctx: &CommandContext) -> Result<(), DomainError> {
        let _fees: Dep<Fees> = ctx.extract()?;
        Ok(())
    }
}

#[tokio::test]
async fn framework_errors_through_a_handler_keep_their_kind() {
    let app = Application::builder()
        .register_aggregate::<Careless>()
        .build()
        .unwrap();
    let err = app.dispatch(Touch).await.unwrap_err();
    assert!(
        matches!(err, Error::MissingDependency { type_name } if type_name.ends_with("Fees")),
        "a missing dependency is not a domain rejection: {err:?}"
    );
}
