//! # Interlock
//!
//! Event sourcing and CQRS for Rust. You write the domain: aggregates that decide on commands
//! and emit events. Interlock does the rest: routing each command to its aggregate, loading the
//! aggregate's state from its events, storing what the handler emitted with optimistic
//! concurrency, and giving the caller the handler's typed result.
//!
//! ## Architecture
//!
//! This crate is a facade over a few layers, each its own crate:
//!
//! * **Contracts** ([`core`], from `interlock-core`): the message traits [`Command`], [`Query`]
//!   and [`Event`]; the envelope of a stored event ([`NewEvent`], [`RecordedEvent`]); ids and
//!   positions ([`AggregateId`], [`StreamId`], [`Position`], [`ExpectedVersion`]); and the
//!   [`EventStore`] trait every backend implements. Small and stable, with no runtime in it.
//! * **Runtime** ([`runtime`], from `interlock-runtime`): the [`Aggregate`],
//!   [`HandlesCommand`] and [`AppliesEvent`] traits, [`Emit`], the [`ApplicationBuilder`] that
//!   checks the wiring, and the [`Application`] that dispatches commands and loads aggregates.
//!   On the read side, [`EventProcessor`]s fold events ([`HandlesEvent`]) into read models and
//!   answer queries ([`AnswersQuery`]), each with its own durable checkpoint.
//!   Around them: typed dependencies ([`Dep`], [`CommandSender`], [`Lifecycle`] hooks),
//!   [`middleware`] around commands and queries, and [sagas](mod@saga) that coordinate aggregates.
//!   The [`InMemoryEventStore`] is the default store and the reference for the others.
//! * **Macros** (from `interlock-macros`): [`derive@Command`], [`derive@Query`],
//!   [`derive@Event`], and [`macro@aggregate`] with its [`macro@handles_command`] and
//!   [`macro@applies_event`] markers; on the read side [`macro@projection`] and
//!   [`macro@event_processor`] with their [`macro@handles_event`], [`macro@handles_query`] and
//!   [`macro@reset`] markers; for sagas [`macro@saga`] with [`macro@saga_step`] and
//!   [`macro@saga_deadline`]. They write exactly the trait impls you could write by hand,
//!   nothing more.
//! * **Stores**: the embedded SQLite store (feature `sqlite`, on by default) as
//!   `interlock::sqlite`; the PostgreSQL store (feature `postgres`) as `interlock::postgres`;
//!   the MongoDB store (feature `mongodb`) as `interlock::mongodb`.
//! * **Testing** (feature `testing`): given-when-then scenarios as `interlock::testing`.
//!
//! A command runs like this: `dispatch(cmd)` finds the one aggregate type that handles the
//! command's type, loads the instance named by the command's `aggregate_id`, runs the handler,
//! and appends the events it emitted, expecting the version it loaded. `emit` applies each event
//! at once, so a handler's next line sees the new state. If the handler returns an error, nothing
//! is stored and no cached state changes.
//!
//! ## Example
//!
//! ```
//! use interlock::prelude::*;
//! use serde::{Deserialize, Serialize};
//! use uuid::Uuid;
//!
//! #[derive(Command, Serialize, Deserialize)]
//! struct OpenAccount { aggregate_id: Uuid, owner: String }
//!
//! #[derive(Command, Serialize, Deserialize)]
//! #[command(output = u64)] // the balance after the deposit
//! struct DepositMoney { aggregate_id: Uuid, amount: u64 }
//!
//! #[derive(Command, Serialize, Deserialize)]
//! #[command(output = u64)]
//! struct WithdrawMoney { aggregate_id: Uuid, amount: u64 }
//!
//! #[derive(Event, Serialize, Deserialize)]
//! struct AccountOpened { owner: String }
//!
//! #[derive(Event, Serialize, Deserialize)]
//! struct MoneyDeposited { amount: u64 }
//!
//! #[derive(Event, Serialize, Deserialize)]
//! struct MoneyWithdrawn { amount: u64 }
//!
//! #[aggregate]
//! #[derive(Default, Serialize, Deserialize)]
//! struct BankAccount { owner: String, balance: u64 }
//!
//! #[aggregate]
//! impl BankAccount {
//!     // `create`: this command may target an account that does not exist yet.
//!     #[handles_command(create)]
//!     fn open(&mut self, cmd: OpenAccount) -> Result<(), DomainError> {
//!         self.emit(AccountOpened { owner: cmd.owner });
//!         Ok(())
//!     }
//!
//!     #[handles_command]
//!     async fn deposit(&mut self, cmd: DepositMoney) -> Result<u64, DomainError> {
//!         if cmd.amount == 0 {
//!             return Err(DomainError::new("amount must be positive"));
//!         }
//!         self.emit(MoneyDeposited { amount: cmd.amount });
//!         Ok(self.balance) // already includes the deposit
//!     }
//!
//!     #[handles_command]
//!     async fn withdraw(&mut self, cmd: WithdrawMoney) -> Result<u64, DomainError> {
//!         if cmd.amount > self.balance {
//!             return Err(DomainError::with_code(
//!                 "insufficient_funds",
//!                 format!("balance is {}, cannot withdraw {}", self.balance, cmd.amount),
//!             ));
//!         }
//!         self.emit(MoneyWithdrawn { amount: cmd.amount });
//!         Ok(self.balance)
//!     }
//!
//!     #[applies_event]
//!     fn on_opened(&mut self, e: &AccountOpened) { self.owner = e.owner.clone(); }
//!
//!     #[applies_event]
//!     fn on_deposited(&mut self, e: &MoneyDeposited) { self.balance += e.amount; }
//!
//!     #[applies_event]
//!     fn on_withdrawn(&mut self, e: &MoneyWithdrawn) { self.balance -= e.amount; }
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), interlock::Error> {
//!     let app = Application::builder()
//!         .register_aggregate::<BankAccount>()
//!         .build()?;
//!
//!     let id = Uuid::now_v7();
//!     app.dispatch(OpenAccount { aggregate_id: id, owner: "Ada".into() }).await?;
//!     assert_eq!(app.dispatch(DepositMoney { aggregate_id: id, amount: 100 }).await?, 100);
//!     assert_eq!(app.dispatch(WithdrawMoney { aggregate_id: id, amount: 30 }).await?, 70);
//!
//!     // A rejected command is a typed error, and stores nothing.
//!     let err = app.dispatch(WithdrawMoney { aggregate_id: id, amount: 500 }).await.unwrap_err();
//!     assert_eq!(err.as_domain().and_then(DomainError::code), Some("insufficient_funds"));
//!
//!     // A command that does not create an account needs one that exists.
//!     let missing = app.dispatch(DepositMoney { aggregate_id: Uuid::now_v7(), amount: 1 }).await;
//!     assert!(matches!(missing, Err(Error::AggregateNotFound { .. })));
//!
//!     let account = app.load::<BankAccount>(id).await?;
//!     assert_eq!((account.owner.as_str(), account.balance), ("Ada", 70));
//!     Ok(())
//! }
//! ```
//!
//! ## The macros
//!
//! Each macro writes a plain trait impl (see [`runtime`] for the same aggregate written by
//! hand). Their attributes:
//!
//! ```
//! use interlock::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! // Output defaults to `()`; the target instance is the field called `aggregate_id`, or the
//! // one marked `#[command(aggregate_id)]`.
//! #[derive(Command, Serialize, Deserialize)]
//! #[command(output = u64, name = "Shop.Restock")]
//! struct Restock { #[command(aggregate_id)] sku: String, quantity: u64 }
//!
//! // The stored type name defaults to the struct's name, the schema version to 1.
//! #[derive(Event, Serialize, Deserialize)]
//! #[event(name = "Restocked", version = 2)]
//! struct RestockedV2 { quantity: u64, warehouse: String }
//!
//! // A query must say what it answers.
//! #[derive(Query)]
//! #[query(output = Option<u64>)]
//! struct StockOf { sku: String }
//!
//! assert_eq!(<Restock as Command>::TYPE_NAME, "Shop.Restock");
//! let cmd = Restock { sku: "apple".into(), quantity: 3 };
//! assert_eq!(cmd.aggregate_id().as_str(), "apple");
//! assert_eq!((RestockedV2::TYPE_NAME, RestockedV2::SCHEMA_VERSION), ("Restocked", 2));
//! assert_eq!(<StockOf as Query>::TYPE_NAME, "StockOf");
//! ```
//!
//! On the aggregate's type, `#[aggregate(name = "Account", schema_version = 2)]` sets the stream
//! category and the state's schema version (recorded with snapshots). On its impl block,
//! `#[aggregate(ignores(EventA, EventB))]` declares events the aggregate emits without changing
//! state. A handler may take the [`CommandContext`] as a third parameter:
//! `fn handle(&mut self, cmd: C, ctx: &CommandContext) -> Result<C::Output, E>`.
//!
//! ## The read side
//!
//! A projection folds events into a read model of its own and answers queries from it. Mark its
//! impl block `#[projection]` and its methods `#[handles_event]` (taking the event by value, and
//! optionally the [`EventContext`] with the stored envelope) and `#[handles_query]` (taking
//! `&self`: queries only read). `#[event_processor]` is the same without queries, for code that
//! reacts to events instead of keeping a model.
//!
//! Each processor is a durable subscription with its own checkpoint. By default it runs in the
//! background once the application is [started](Application::start); to read your own writes,
//! wait for the position [`dispatch_with`](Application::dispatch_with) reports. (Registered with
//! [`ProcessorSettings::inline()`] instead, it is up to date when `dispatch` returns.)
//!
//! ```
//! use std::collections::HashMap;
//! use interlock::prelude::*;
//! use serde::{Deserialize, Serialize};
//! use uuid::Uuid;
//!
//! #[derive(Command, Serialize, Deserialize)]
//! struct Deposit { aggregate_id: Uuid, amount: u64 }
//!
//! #[derive(Event, Serialize, Deserialize)]
//! struct Deposited { amount: u64 }
//!
//! #[aggregate]
//! #[derive(Default)]
//! struct Account;
//!
//! #[aggregate]
//! impl Account {
//!     #[handles_command(create)]
//!     fn deposit(&mut self, cmd: Deposit) -> Result<(), DomainError> {
//!         self.emit(Deposited { amount: cmd.amount });
//!         Ok(())
//!     }
//!     #[applies_event]
//!     fn on_deposited(&mut self, _: &Deposited) {}
//! }
//!
//! #[derive(Query)]
//! #[query(output = u64)]
//! struct BalanceOf { account: Uuid }
//!
//! #[derive(Default)]
//! struct Balances { by_account: HashMap<String, u64> }
//!
//! // `name`: where its checkpoint is stored (default: the type's name). `resettable`: a rebuild
//! // starts again from `Balances::default()`.
//! #[projection(name = "balances", resettable)]
//! impl Balances {
//!     #[handles_event]
//!     fn on_deposited(&mut self, e: Deposited, ctx: &EventContext<'_>) {
//!         let account = ctx.stream_id().id().to_owned();
//!         *self.by_account.entry(account).or_default() += e.amount;
//!     }
//!
//!     #[handles_query]
//!     fn balance(&self, q: BalanceOf) -> Result<u64, HandlerError> {
//!         Ok(self.by_account.get(&q.account.to_string()).copied().unwrap_or(0))
//!     }
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), interlock::Error> {
//!     let app = Application::builder()
//!         .register_aggregate::<Account>()
//!         .register_projection(Balances::default())
//!         .build()?;
//!     app.start().await?; // background processors run from here on
//!
//!     let id = Uuid::now_v7();
//!     app.dispatch(Deposit { aggregate_id: id, amount: 100 }).await?;
//!     let deposit = Deposit { aggregate_id: id, amount: 5 };
//!     let stored = app.dispatch_with(deposit, DispatchOptions::new()).await?;
//!     if let Some(position) = stored.position {
//!         app.wait_for(position).await?; // read your own writes
//!     }
//!     assert_eq!(app.query(BalanceOf { account: id }).await?, 105);
//!
//!     // A rebuild resets the projection and replays every event into it.
//!     let done = app.rebuild("balances", |_progress| {}).await?;
//!     assert_eq!(done.processed, 2);
//!     assert_eq!(app.query(BalanceOf { account: id }).await?, 105);
//!     app.shutdown().await
//! }
//! ```
//!
//! A handler returns nothing or `Result<(), E>` with `E: Into<HandlerError>` (any standard
//! error type). An error makes the application retry the event, then park it as a dead letter
//! ([`Application::dead_letters`]) and go on, or stop, as the [`ProcessorSettings`] say.
//! Instead of `resettable`, a method marked `#[reset]` may clear the model; without either, a
//! rebuild is refused, which suits processors whose effects cannot be undone. `reset` is
//! exported as `interlock::reset` only (its name is too generic for the prelude); inside a
//! `#[projection]` block the markers are recognised by name and need no import.
//!
//! ## Dependencies
//!
//! Handlers receive what they need as typed parameters after their message, in the style of axum
//! extractors: `Dep<T>` is the value registered with
//! [`register_dependency`](ApplicationBuilder::register_dependency), [`CommandSender`] sends
//! commands from inside a handler, and any type implementing [`FromServices`] works the same
//! way. The macros declare every parameter they take, so [`build`](ApplicationBuilder::build)
//! names a dependency that was never registered instead of a handler failing later. The
//! handler's context (`&CommandContext`, `&EventContext<'_>`) may come before, between or after
//! them. Values with a start and a stop implement [`Lifecycle`]: hooks start in registration
//! order and shut down in reverse, and every hook runs even when another fails.
//!
//! ```
//! use interlock::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! /// The fee schedule, registered once and shared by every handler that takes `Dep<Fees>`.
//! struct Fees { percent: u64 }
//!
//! #[derive(Command, Serialize, Deserialize)]
//! #[command(output = u64)]
//! struct Deposit { #[command(aggregate_id)] account: String, amount: u64 }
//!
//! #[derive(Event, Serialize, Deserialize)]
//! struct Deposited { amount: u64 }
//!
//! #[aggregate]
//! #[derive(Default)]
//! struct Account { balance: u64 }
//!
//! #[aggregate]
//! impl Account {
//!     #[handles_command(create)]
//!     fn deposit(&mut self, cmd: Deposit, fees: Dep<Fees>) -> Result<u64, DomainError> {
//!         self.emit(Deposited { amount: cmd.amount - cmd.amount * fees.percent / 100 });
//!         Ok(self.balance)
//!     }
//!
//!     #[applies_event]
//!     fn on_deposited(&mut self, e: &Deposited) { self.balance += e.amount; }
//! }
//!
//! /// Something that opens with the application and closes with it.
//! struct Pool;
//!
//! impl Lifecycle for Pool {
//!     async fn start(&self) -> Result<(), HandlerError> { Ok(()) }
//!     async fn shutdown(&self) -> Result<(), HandlerError> { Ok(()) }
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), interlock::Error> {
//!     // The handler takes `Dep<Fees>`, so the wiring is incomplete without one.
//!     let missing = Application::builder().register_aggregate::<Account>().build();
//!     let message = missing.err().map(|e| e.to_string()).unwrap_or_default();
//!     assert!(message.contains("needs dependency") && message.contains("Fees"), "{message}");
//!
//!     let app = Application::builder()
//!         .register_aggregate::<Account>()
//!         .register_dependency(Fees { percent: 2 })
//!         .register_lifecycle(Pool)
//!         .build()?;
//!     app.start().await?;
//!     assert_eq!(app.dispatch(Deposit { account: "ada".into(), amount: 100 }).await?, 98);
//!     app.shutdown().await
//! }
//! ```
//!
//! ## Middleware
//!
//! A [`Middleware`] wraps the handling of commands and queries; the first registered is the
//! outermost. It may change the dispatch options, call the rest of the chain once, several
//! times (retries) or not at all (a refusal), and change the result.
//! [`MiddlewareExt::only`] limits one to chosen message types. The built-ins live in
//! [`middleware`]: `LoggingMiddleware` (a tracing span per message), `ConcurrencyRetryMiddleware`
//! (reload and run again on a concurrency conflict, with backoff), `IdempotencyMiddleware`
//! (a repeated idempotency key returns the first result), `ContextPropagationMiddleware`
//! (correlation and causation ids across nested dispatches) and `TimeoutMiddleware`.
//!
//! ```
//! use std::future::Future;
//! use std::pin::Pin;
//! use std::time::Duration;
//!
//! use interlock::middleware::{
//!     ConcurrencyRetryMiddleware, LoggingMiddleware, MessageInfo, Middleware, Next, Outcome,
//!     TimeoutMiddleware,
//! };
//! use interlock::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Command, Serialize, Deserialize)]
//! struct Deposit { #[command(aggregate_id)] account: String, amount: u64 }
//!
//! #[derive(Command, Serialize, Deserialize)]
//! struct Withdraw { #[command(aggregate_id)] account: String, amount: u64 }
//!
//! #[derive(Event, Serialize, Deserialize)]
//! struct Moved { delta: i64 }
//!
//! #[aggregate]
//! #[derive(Default)]
//! struct Account;
//!
//! #[aggregate(ignores(Moved))]
//! impl Account {
//!     #[handles_command(create)]
//!     fn deposit(&mut self, cmd: Deposit) -> Result<(), DomainError> {
//!         self.emit(Moved { delta: cmd.amount as i64 });
//!         Ok(())
//!     }
//!
//!     #[handles_command]
//!     fn withdraw(&mut self, cmd: Withdraw) -> Result<(), DomainError> {
//!         self.emit(Moved { delta: -(cmd.amount as i64) });
//!         Ok(())
//!     }
//! }
//!
//! /// Refuses what it wraps without running it: the bank is closed.
//! struct Closed;
//!
//! impl Middleware for Closed {
//!     fn handle<'a>(
//!         &'a self,
//!         message: &'a MessageInfo,
//!         _options: DispatchOptions,
//!         _next: Next<'a>,
//!     ) -> Pin<Box<dyn Future<Output = Result<Outcome, Error>> + Send + 'a>> {
//!         let why = format!("{} waits for Monday", message.type_name());
//!         let refusal = DomainError::with_code("closed", why);
//!         Box::pin(async move { Err(Error::Domain(refusal)) })
//!     }
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), interlock::Error> {
//!     let app = Application::builder()
//!         .register_aggregate::<Account>()
//!         .register_middleware(LoggingMiddleware::new()) // outermost: sees every outcome
//!         .register_middleware(ConcurrencyRetryMiddleware::new().max_attempts(5))
//!         .register_middleware(Closed.only::<Withdraw>()) // withdrawals only
//!         .register_middleware(TimeoutMiddleware::new(Duration::from_secs(5)))
//!         .build()?;
//!
//!     app.dispatch(Deposit { account: "ada".into(), amount: 10 }).await?;
//!     let refused = app.dispatch(Withdraw { account: "ada".into(), amount: 5 }).await;
//!     let code = refused.as_ref().err().and_then(Error::as_domain).and_then(DomainError::code);
//!     assert_eq!(code, Some("closed"));
//!     assert_eq!(app.events_of::<Account>("ada").await?.len(), 1, "the withdrawal never ran");
//!     Ok(())
//! }
//! ```
//!
//! ## Sagas
//!
//! A [saga](mod@saga) coordinates a process across aggregates: it reacts to events by sending
//! commands, and keeps a state per instance in the saga state store. Mark its impl block
//! `#[saga(state = ...)]` and its methods `#[saga_step(key = ...)]`: the key finds the instance
//! from the event (a field of the event, a function, or a closure). A `start` step creates the
//! instance; later steps receive its state; a step may [end](SagaContext::end) it. Each step runs
//! at most once per instance even when an event is delivered twice, and the commands it
//! [sends](SagaContext::send) carry the saga's correlation id. A step may
//! [schedule](SagaContext::schedule) a deadline, stored as an event so it survives restarts; the
//! `#[saga_deadline]` method receives it once it is due
//! ([`Application::fire_due_deadlines`], also run by the application in the background).
//! Steps take dependencies like handlers do.
//!
//! ```
//! use std::time::Duration;
//! use interlock::prelude::*;
//! use interlock::{Clock, FakeClock, SystemClock};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Command, Serialize, Deserialize)]
//! struct PlaceOrder { #[command(aggregate_id)] order_id: String, sku: String }
//!
//! #[derive(Command, Serialize, Deserialize)]
//! struct Reserve { #[command(aggregate_id)] sku: String, order_id: String }
//!
//! #[derive(Command, Serialize, Deserialize)]
//! struct Release { #[command(aggregate_id)] sku: String }
//!
//! #[derive(Event, Serialize, Deserialize)]
//! struct OrderPlaced { order_id: String, sku: String }
//!
//! #[derive(Event, Serialize, Deserialize)]
//! struct Reserved { order_id: String }
//!
//! #[derive(Event, Serialize, Deserialize)]
//! struct Released {}
//!
//! #[aggregate]
//! #[derive(Default)]
//! struct Order;
//!
//! #[aggregate(ignores(OrderPlaced))]
//! impl Order {
//!     #[handles_command(create)]
//!     fn place(&mut self, cmd: PlaceOrder) -> Result<(), DomainError> {
//!         self.emit(OrderPlaced { order_id: cmd.order_id, sku: cmd.sku });
//!         Ok(())
//!     }
//! }
//!
//! #[aggregate]
//! #[derive(Default)]
//! struct Stock { reserved: u64 }
//!
//! #[aggregate]
//! impl Stock {
//!     #[handles_command(create)]
//!     fn reserve(&mut self, cmd: Reserve) -> Result<(), DomainError> {
//!         self.emit(Reserved { order_id: cmd.order_id });
//!         Ok(())
//!     }
//!     #[handles_command]
//!     fn release(&mut self, _: Release) -> Result<(), DomainError> {
//!         self.emit(Released {});
//!         Ok(())
//!     }
//!     #[applies_event]
//!     fn on_reserved(&mut self, _: &Reserved) { self.reserved += 1; }
//!     #[applies_event]
//!     fn on_released(&mut self, _: &Released) { self.reserved -= 1; }
//! }
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Checkout { sku: String, reserved: bool, paid: bool }
//!
//! struct CheckoutSaga;
//!
//! #[saga(name = "checkout", state = Checkout)]
//! impl CheckoutSaga {
//!     // Starts an instance per order: the key is the event's `order_id` field.
//!     #[saga_step(start, key = order_id)]
//!     async fn placed(
//!         &self,
//!         state: &mut Checkout,
//!         e: OrderPlaced,
//!         ctx: &mut SagaContext<'_>,
//!     ) -> Result<(), interlock::Error> {
//!         state.sku = e.sku.clone();
//!         ctx.send(Reserve { sku: e.sku, order_id: e.order_id }).await?;
//!         ctx.schedule("pay-by", Duration::from_secs(24 * 3600));
//!         Ok(())
//!     }
//!
//!     // A later step, keyed by a closure.
//!     #[saga_step(key = |e: &Reserved| e.order_id.clone())]
//!     fn reserved(&self, state: &mut Checkout, _: Reserved) {
//!         state.reserved = true;
//!     }
//!
//!     // Not paid in time: release the stock and end the saga.
//!     #[saga_deadline]
//!     async fn deadline(
//!         &self,
//!         state: &mut Checkout,
//!         d: DeadlineReached,
//!         ctx: &mut SagaContext<'_>,
//!     ) -> Result<(), interlock::Error> {
//!         if d.name == "pay-by" && !state.paid {
//!             ctx.send(Release { sku: state.sku.clone() }).await?;
//!             ctx.end();
//!         }
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), interlock::Error> {
//!     let clock = FakeClock::at(SystemClock.now());
//!     let app = Application::builder()
//!         .with_clock(clock.clone())
//!         .register_aggregate::<Order>()
//!         .register_aggregate::<Stock>()
//!         .register_saga(CheckoutSaga)
//!         .build()?;
//!     app.start().await?;
//!     // Waits until the saga has handled everything stored so far.
//!     let settle = async || -> Result<(), interlock::Error> {
//!         for _ in 0..2 {
//!             app.wait_for(app.event_store().head_position().await?).await?;
//!         }
//!         Ok(())
//!     };
//!
//!     app.dispatch(PlaceOrder { order_id: "o-1".into(), sku: "apple".into() }).await?;
//!     settle().await?;
//!     assert_eq!(app.load::<Stock>("apple").await?.reserved, 1);
//!
//!     clock.advance(Duration::from_secs(25 * 3600));
//!     assert_eq!(app.fire_due_deadlines().await?, 1);
//!     settle().await?;
//!     assert_eq!(app.load::<Stock>("apple").await?.reserved, 0, "released by the deadline");
//!     app.shutdown().await
//! }
//! ```
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `sqlite` (default) | the embedded SQLite event store, as `interlock::sqlite` |
//! | `postgres` | the PostgreSQL event store, as `interlock::postgres` |
//! | `mongodb` | the MongoDB event store (replica set), as `interlock::mongodb` |
//! | `testing` | given-when-then scenarios and the store conformance suite, as `interlock::testing` |
//! | `otel` | reserved; not implemented yet |
//! | `full` | every implemented feature |

pub use interlock_core as core;
pub use interlock_runtime as runtime;
pub use interlock_runtime::{middleware, migration, processor, saga};

#[cfg(feature = "mongodb")]
#[doc(inline)]
pub use interlock_mongodb as mongodb;
#[cfg(feature = "postgres")]
#[doc(inline)]
pub use interlock_postgres as postgres;
#[cfg(feature = "sqlite")]
#[doc(inline)]
pub use interlock_sqlite as sqlite;
#[cfg(feature = "testing")]
#[doc(inline)]
pub use interlock_testing as testing;

// Contracts.
pub use interlock_core::{
    AggregateId, AppendNotifier, AppendResult, BoxError, Command, ConcurrencyError, DecodeError,
    DecodeReason, Event, EventBatch, EventId, EventStore, EventSubscription, ExpectedVersion,
    MAX_BATCH_LEN, MAX_ID_LEN, MAX_PAYLOAD_LEN, MAX_TYPE_NAME_LEN, Metadata, NewEvent, Position,
    Query, RecordedEvent, SerializedEvent, StoreError, StreamId, StreamInfo, ValidationError,
    poll_subscription, validate_append,
};
// Side stores: snapshots, checkpoints, dead letters, saga state, idempotency keys.
pub use interlock_core::{
    CheckpointStore, DeadLetter, DeadLetterStore, IdempotencyClaim, IdempotencyStore,
    NewDeadLetter, SagaState, SagaStateStore, SideStores, Snapshot, SnapshotStore, validate_json,
    validate_name,
};

// Runtime: aggregates and the application.
pub use interlock_runtime::{
    Aggregate, AggregateRoutes, AggregateSettings, Application, ApplicationBuilder, AppliesEvent,
    BuildError, CommandContext, DispatchOptions, Dispatched, DomainError, Emit, Error,
    HandlesCommand, InMemoryEventStore, ProcessingFailure, UnknownEventPolicy,
};
// Upcasting: events whose stored shape is older than their type.
pub use interlock_core::upcast::{JsonUpcaster, TypedUpcaster, Upcaster};
pub use interlock_runtime::{HistoryEntry, SnapshotPolicy};
// Runtime: the read side.
pub use interlock_runtime::processor::{
    Batch, BatchOutcome, BatchProcessor, Delivery, FailurePolicy, RebuildProgress, RetryPolicy,
};
pub use interlock_runtime::{
    AnswersQuery, EventContext, EventProcessor, HandlerError, HandlesEvent, ProcessorRoutes,
    ProcessorSettings,
};
// Runtime: dependencies, lifecycle, time and the context a message runs in.
pub use interlock_runtime::{
    Clock, CommandSender, Dep, Dependencies, ExecutionContext, FakeClock, FromServices, Lifecycle,
    Requirement, Services, SystemClock,
};
// Runtime: middleware and sagas (their modules hold the rest).
pub use interlock_runtime::middleware::{Middleware, MiddlewareExt};
pub use interlock_runtime::saga::{
    DeadlineReached, Saga, SagaContext, SagaKey, SagaRoutes, SagaStep,
};

// Macros. The derives share their names with the traits they implement (they live in another
// namespace), so `use interlock::Command` brings in both.
pub use interlock_macros::{Command, Event, Query, aggregate, applies_event, handles_command};
// Read-side macros. `reset` is exported here only, not in the prelude: the name is too generic to
// glob-import, and inside a `#[projection]` block the marker is recognised without an import.
pub use interlock_macros::{event_processor, handles_event, handles_query, projection, reset};
// Saga macros. The attribute `saga` and the module `saga` live in different namespaces.
pub use interlock_macros::{saga, saga_deadline, saga_step};

/// What applications use daily: `use interlock::prelude::*;`.
///
/// The message traits come with their derive macros of the same name.
pub mod prelude {
    pub use crate::{
        Aggregate, AggregateId, Application, ApplicationBuilder, AppliesEvent, Command,
        CommandContext, DispatchOptions, DomainError, Emit, Error, Event, EventStore,
        ExpectedVersion, HandlesCommand, InMemoryEventStore, Position, Query, StreamId, aggregate,
        applies_event, handles_command,
    };
    pub use crate::{
        AnswersQuery, EventContext, EventProcessor, HandlerError, HandlesEvent, ProcessorRoutes,
        ProcessorSettings, event_processor, handles_event, handles_query, projection,
    };
    pub use crate::{
        CommandSender, DeadlineReached, Dep, Lifecycle, MiddlewareExt, Saga, SagaContext, saga,
        saga_deadline, saga_step,
    };
}

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
