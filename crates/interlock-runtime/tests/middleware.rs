//! Middleware: order, targeting, short-circuit, retries, idempotency, timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use interlock_runtime::middleware::{
    ConcurrencyRetryMiddleware, IdempotencyMiddleware, MessageInfo, Middleware, MiddlewareExt,
    Next, Outcome, TimeoutMiddleware,
};
use interlock_runtime::prelude::*;
use serde::{Deserialize, Serialize};

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
struct Slow {
    id: String,
}
impl Command for Slow {
    type Output = ();
    const TYPE_NAME: &'static str = "Slow";
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
            .creating_command::<Slow>()
            .event::<Deposited>();
    }
}
impl HandlesCommand<Deposit> for Account {
    async fn handle(&mut self, cmd: Deposit, _: &CommandContext) -> Result<u64, DomainError> {
        // A pause between load and append makes concurrent writers really collide.
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.emit(Deposited { amount: cmd.amount });
        Ok(self.balance)
    }
}
impl HandlesCommand<Slow> for Account {
    async fn handle(&mut self, _: Slow, _: &CommandContext) -> Result<(), DomainError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.emit(Deposited { amount: 1 });
        Ok(())
    }
}
impl AppliesEvent<Deposited> for Account {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
    }
}

/// Records when it is entered and left.
struct Trace {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}
impl Middleware for Trace {
    fn handle<'a>(
        &'a self,
        message: &'a MessageInfo,
        options: DispatchOptions,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(async move {
            self.log
                .lock()
                .unwrap()
                .push(format!("{} > {}", self.name, message.type_name()));
            let result = next.run(options).await;
            self.log.lock().unwrap().push(format!("{} <", self.name));
            result
        })
    }
}

/// Answers without running the handler.
struct Refuse;
impl Middleware for Refuse {
    fn handle<'a>(
        &'a self,
        message: &'a MessageInfo,
        _options: DispatchOptions,
        _next: Next<'a>,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        let error =
            DomainError::with_code("maintenance", format!("{} refused", message.type_name()));
        Box::pin(async move { Err(Error::Domain(error)) })
    }
}

fn builder(store: &InMemoryEventStore) -> ApplicationBuilder {
    Application::builder()
        .with_event_store(store.clone())
        .register_aggregate::<Account>()
}

fn deposit(id: &str, amount: u64) -> Deposit {
    Deposit {
        id: id.into(),
        amount,
    }
}

#[tokio::test]
async fn middleware_runs_in_registration_order_and_can_target_and_short_circuit() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let store = InMemoryEventStore::new();
    let app = builder(&store)
        .register_middleware(Trace {
            name: "outer",
            log: log.clone(),
        })
        .register_middleware(
            Trace {
                name: "only-slow",
                log: log.clone(),
            }
            .only::<Slow>(),
        )
        .register_middleware(Trace {
            name: "inner",
            log: log.clone(),
        })
        .build()
        .unwrap();
    assert_eq!(app.dispatch(deposit("a", 5)).await.unwrap(), 5);
    assert_eq!(
        *log.lock().unwrap(),
        vec!["outer > Deposit", "inner > Deposit", "inner <", "outer <"]
    );
    log.lock().unwrap().clear();
    app.dispatch(Slow { id: "a".into() }).await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "outer > Slow",
            "only-slow > Slow",
            "inner > Slow",
            "inner <",
            "only-slow <",
            "outer <"
        ]
    );

    let refusing = builder(&store)
        .register_middleware(Refuse.only::<Deposit>())
        .build()
        .unwrap();
    let err = refusing.dispatch(deposit("a", 1)).await.unwrap_err();
    assert_eq!(err.as_domain().and_then(|d| d.code()), Some("maintenance"));
    assert_eq!(
        app.load::<Account>("a").await.unwrap().balance,
        6,
        "nothing stored"
    );
}

#[tokio::test]
async fn retry_turns_eight_concurrent_writers_into_eight_successes() {
    let store = InMemoryEventStore::new();
    let app = builder(&store)
        .register_middleware(
            ConcurrencyRetryMiddleware::new()
                .max_attempts(50)
                .backoff(Duration::from_millis(1), Duration::from_millis(20)),
        )
        .build()
        .unwrap();
    app.dispatch(deposit("hot", 0)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.dispatch(deposit("hot", 1)).await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("every writer succeeds");
    }
    assert_eq!(
        app.load::<Account>("hot").await.unwrap().balance,
        8,
        "no lost update"
    );

    // Without the middleware the same race loses writers to conflicts, so the test can tell.
    let plain = builder(&store).build().unwrap();
    let mut conflicts = 0;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let app = plain.clone();
        tasks.push(tokio::spawn(async move {
            app.dispatch(deposit("hot", 1)).await
        }));
    }
    for task in tasks {
        if let Err(e) = task.await.unwrap() {
            assert!(e.is_concurrency(), "{e}");
            conflicts += 1;
        }
    }
    assert!(conflicts > 0, "the race is real");

    // Attempts are bounded: the final error is the conflict, naming the stream.
    let stubborn = builder(&store)
        .register_middleware(ConcurrencyRetryMiddleware::new().max_attempts(1))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let app = stubborn.clone();
        tasks.push(tokio::spawn(async move {
            app.dispatch(deposit("hot", 1)).await
        }));
    }
    let errors: Vec<Error> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter_map(|r| r.unwrap().err())
        .collect();
    assert!(!errors.is_empty());
    assert!(
        errors[0].to_string().contains("Account/hot"),
        "{}",
        errors[0]
    );
}

#[tokio::test]
async fn idempotent_duplicates_run_once_even_when_racing_and_after_a_restart() {
    let store = InMemoryEventStore::new();
    let app = builder(&store)
        .register_middleware(IdempotencyMiddleware::new())
        .build()
        .unwrap();
    app.dispatch(deposit("idem", 100)).await.unwrap();
    let options = || DispatchOptions::new().idempotency_key("payment-42");
    let (a, b) = tokio::join!(
        app.dispatch_with(deposit("idem", 5), options()),
        app.dispatch_with(deposit("idem", 5), options()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.output, b.output, "both callers get the original result");
    assert_eq!(a.output, 105);
    assert_eq!(a.events + b.events, 1, "one of them stored the event");
    assert_eq!(app.load::<Account>("idem").await.unwrap().balance, 105);

    // A new application on the same store (a restart) still knows the key.
    let restarted = builder(&store)
        .register_middleware(IdempotencyMiddleware::new())
        .build()
        .unwrap();
    let again = restarted
        .dispatch_with(deposit("idem", 5), options())
        .await
        .unwrap();
    assert_eq!((again.output, again.events), (105, 0));
    assert_eq!(
        restarted.load::<Account>("idem").await.unwrap().balance,
        105
    );
    // One event for the three dispatches with the key.
    let events = restarted.events_of::<Account>("idem").await.unwrap();
    assert_eq!(events.len(), 2);

    // Without a key, commands are not deduplicated.
    app.dispatch(deposit("idem", 1)).await.unwrap();
    app.dispatch(deposit("idem", 1)).await.unwrap();
    assert_eq!(app.load::<Account>("idem").await.unwrap().balance, 107);
}

#[tokio::test]
async fn a_failed_idempotent_command_releases_its_key() {
    let store = InMemoryEventStore::new();
    let app = builder(&store)
        .register_middleware(IdempotencyMiddleware::new())
        .register_middleware(Refuse.only::<Deposit>())
        .build()
        .unwrap();
    let options = DispatchOptions::new().idempotency_key("k");
    assert!(
        app.dispatch_with(deposit("f", 1), options.clone())
            .await
            .is_err()
    );
    let retry = builder(&store)
        .register_middleware(IdempotencyMiddleware::new())
        .build()
        .unwrap();
    let done = retry.dispatch_with(deposit("f", 1), options).await.unwrap();
    assert_eq!(done.events, 1, "the corrected retry ran");
}

#[tokio::test]
async fn timeouts_fail_slow_messages() {
    let store = InMemoryEventStore::new();
    let app = builder(&store)
        .register_middleware(TimeoutMiddleware::new(Duration::from_millis(50)))
        .build()
        .unwrap();
    let err = app.dispatch(Slow { id: "t".into() }).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(..)), "{err:?}");
    assert!(err.to_string().contains("Slow"), "{err}");
    app.dispatch(deposit("t", 1)).await.unwrap();
}
