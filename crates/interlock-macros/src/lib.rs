//! # interlock-macros
//!
//! The derive and attribute macros of the Interlock event-sourcing framework. Use them through the
//! `interlock` crate, which re-exports them: the code they generate refers only to
//! `::interlock::__private`, so an application depends on `interlock` and nothing else.
//!
//! | macro | generates |
//! |---|---|
//! | [`#[derive(Command)]`](derive@Command) | `impl Command`: output type, type name, target aggregate id |
//! | [`#[derive(Query)]`](derive@Query) | `impl Query`: output type, type name |
//! | [`#[derive(Event)]`](derive@Event) | `impl Event`: type name, schema version |
//! | [`#[aggregate]`](macro@aggregate) on a struct | `impl Aggregate` |
//! | [`#[aggregate]`](macro@aggregate) on its impl block | `impl HandlesCommand<C>` and `impl AppliesEvent<E>` per marked method, and the route table |
//! | [`#[projection]`](macro@projection) on an impl block | `impl HandlesEvent<E>` and `impl AnswersQuery<Q>` per marked method, and `impl EventProcessor` |
//! | [`#[event_processor]`](macro@event_processor) on an impl block | the same, without queries |
//! | [`#[saga]`](macro@saga) on an impl block | `impl SagaStep<E>` per marked step, and `impl Saga` with the keys that correlate events |
//!
//! Every handler may take dependencies after its message, in the style of axum extractors: any
//! parameter of a type that implements `FromServices` (`Dep<T>`, `CommandSender`) is taken from
//! the application's services before the call, and declared with `routes.requires::<T>()`, so
//! that `build()` names a dependency that was never registered.
//!
//! The examples below are not compiled here (a proc-macro crate cannot use the crate it serves);
//! the same examples run as tests in the `interlock` crate's documentation.

mod aggregate;
mod attr;
mod call;
mod command;
mod event;
mod extract;
mod markers;
mod processor;
mod query;
mod saga;
mod signature;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

fn into_tokens(result: syn::Result<proc_macro2::TokenStream>) -> TokenStream {
    result.unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Implements `Command` for a struct.
///
/// * `#[command(output = Type)]`: what the handler returns to the caller of `dispatch`
///   (default `()`).
/// * `#[command(name = "Name")]`: the stable type name (default: the struct's name).
/// * The target aggregate instance is read from the field called `aggregate_id`, or from the field
///   marked `#[command(aggregate_id)]`. Its type must convert into `AggregateId` by reference
///   (UUIDs, strings and integers do).
///
/// ```ignore
/// use interlock::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Command, Serialize, Deserialize)]
/// #[command(output = u64)]
/// struct Withdraw {
///     #[command(aggregate_id)]
///     account: uuid::Uuid,
///     amount: u64,
/// }
/// ```
#[proc_macro_derive(Command, attributes(command))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    into_tokens(command::derive(&parse_macro_input!(input as DeriveInput)))
}

/// Implements `Query` for a type.
///
/// * `#[query(output = Type)]` (required): what the projection answers.
/// * `#[query(name = "Name")]`: the stable type name (default: the type's name).
///
/// ```ignore
/// use interlock::prelude::*;
///
/// #[derive(Query)]
/// #[query(output = Option<u64>)]
/// struct BalanceOf { account: uuid::Uuid }
/// ```
#[proc_macro_derive(Query, attributes(query))]
pub fn derive_query(input: TokenStream) -> TokenStream {
    into_tokens(query::derive(&parse_macro_input!(input as DeriveInput)))
}

/// Implements `Event` for a type.
///
/// * `#[event(name = "Name")]`: the type name stored with every event (default: the type's
///   name). Keep it when renaming the Rust type, so stored events stay readable.
/// * `#[event(version = N)]`: the payload's schema version (default 1; 0 is refused).
///
/// ```ignore
/// use interlock::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(name = "MoneyDeposited", version = 2)]
/// struct Deposited { amount: u64, currency: String }
/// ```
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    into_tokens(event::derive(&parse_macro_input!(input as DeriveInput)))
}

/// Makes a type an aggregate and its impl block its command handlers and event appliers.
///
/// **On the struct (or enum)**, with optional `name = "Name"` (the stream category, default: the
/// type's name) and `schema_version = N` (the state's shape, recorded with snapshots; default 1),
/// it implements `Aggregate`. The type itself is left as written; it must implement `Default`.
///
/// **On the inherent impl block**, it reads the methods marked:
///
/// * `#[handles_command]`: `(async) fn name(&mut self, command: C) -> Result<C::Output, E>`, where
///   `E: Into<DomainError>`. After the command it may take `ctx: &CommandContext` and any number
///   of dependencies by value (`fees: Dep<Fees>`, `sender: CommandSender`: any `FromServices`
///   type), in any order; each is taken from the application's services before the call, and
///   `build()` checks it is registered. It becomes `impl HandlesCommand<C>`. With `#[handles_command(create)]` the command may create a new
///   instance; other commands for a missing instance fail with `AggregateNotFound`.
/// * `#[applies_event]`: `fn name(&mut self, event: &E)`. It becomes `impl AppliesEvent<E>`.
///
/// It removes the markers, keeps the impl block as written, and registers every command and event
/// with the aggregate. `#[aggregate(ignores(EventA, EventB))]` on the impl block declares events
/// the aggregate emits without any state change.
///
/// ```ignore
/// use interlock::prelude::*;
///
/// #[aggregate]
/// #[derive(Default)]
/// struct BankAccount { balance: u64 }
///
/// #[aggregate]
/// impl BankAccount {
///     #[handles_command(create)]
///     async fn deposit(&mut self, cmd: DepositMoney, fees: Dep<Fees>) -> Result<(), DomainError> {
///         if cmd.amount == 0 {
///             return Err(DomainError::new("amount must be positive"));
///         }
///         self.emit(MoneyDeposited { amount: cmd.amount - fees.on(cmd.amount) });
///         Ok(())
///     }
///
///     #[applies_event]
///     fn on_deposited(&mut self, e: &MoneyDeposited) {
///         self.balance += e.amount;
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn aggregate(args: TokenStream, item: TokenStream) -> TokenStream {
    into_tokens(aggregate::expand(args.into(), item.into()))
}

/// Marks a command handler inside an [`#[aggregate]`](macro@aggregate) impl block.
///
/// `#[handles_command]` or `#[handles_command(create)]`; see [`aggregate`](macro@aggregate) for the
/// signatures it accepts. Used anywhere else it is a compile error.
///
/// ```ignore
/// #[aggregate]
/// impl BankAccount {
///     #[handles_command(create)]
///     fn open(&mut self, cmd: OpenAccount) -> Result<(), DomainError> {
///         self.emit(AccountOpened { owner: cmd.owner });
///         Ok(())
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn handles_command(_args: TokenStream, item: TokenStream) -> TokenStream {
    markers::outside_aggregate(markers::HANDLES_COMMAND, &item.into()).into()
}

/// Marks an event applier inside an [`#[aggregate]`](macro@aggregate) impl block.
///
/// Takes the event by reference and returns nothing: `fn name(&mut self, event: &E)`. Used
/// anywhere else it is a compile error.
///
/// ```ignore
/// #[aggregate]
/// impl BankAccount {
///     #[applies_event]
///     fn on_opened(&mut self, e: &AccountOpened) {
///         self.owner = e.owner.clone();
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn applies_event(_args: TokenStream, item: TokenStream) -> TokenStream {
    markers::outside_aggregate(markers::APPLIES_EVENT, &item.into()).into()
}

/// Makes an impl block a projection: a read model that folds events and answers queries.
///
/// Goes on the inherent impl block of the projection's type (which must be `Send + Sync +
/// 'static`), and implements `EventProcessor` for it, with:
///
/// * `name = "balances"`: the processor's stable name, under which its checkpoint and dead
///   letters are stored (default: the type's name as written). Keep it when renaming the type.
/// * `resettable`: a rebuild resets the projection to `Self::default()` before replaying every
///   event. Without it (and without a `#[reset]` method) a rebuild is refused.
///
/// Inside the block it reads the methods marked:
///
/// * [`#[handles_event]`](macro@handles_event): `(async) fn name(&mut self, event: E)`, optionally
///   followed by `ctx: &EventContext<'_>` (the stored envelope: stream, position, metadata,
///   idempotency key) and dependencies by value (`mailer: Dep<Mailer>`, `sender:
///   CommandSender`), in any order. It returns nothing or `Result<(), Err>` with
///   `Err: Into<HandlerError>`, and becomes `impl HandlesEvent<E>`. At least one is required.
/// * [`#[handles_query]`](macro@handles_query): `(async) fn name(&self, query: Q) ->
///   Result<Q::Output, Err>`. It becomes `impl AnswersQuery<Q>`. Queries read the projection
///   through `&self`; they never change it.
/// * [`#[reset]`](macro@reset): `(async) fn name(&mut self)`, returning nothing or
///   `Result<(), Err>`: clears the read model before a rebuild (instead of `resettable`).
///
/// The markers are removed and the impl block is kept as written. The markers are recognised by
/// name, so they need not be imported (`#[interlock::handles_event]` works too).
///
/// ```ignore
/// use interlock::prelude::*;
///
/// #[derive(Default)]
/// struct Balances { by_account: HashMap<String, u64> }
///
/// #[projection(name = "balances", resettable)]
/// impl Balances {
///     #[handles_event]
///     fn on_deposited(&mut self, e: MoneyDeposited, ctx: &EventContext<'_>) {
///         *self.by_account.entry(ctx.stream_id().id().to_owned()).or_default() += e.amount;
///     }
///
///     #[handles_query]
///     fn balance(&self, q: BalanceOf) -> Result<u64, HandlerError> {
///         Ok(self.by_account.get(&q.account).copied().unwrap_or(0))
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn projection(args: TokenStream, item: TokenStream) -> TokenStream {
    into_tokens(processor::expand(
        processor::Kind::Projection,
        args.into(),
        item.into(),
    ))
}

/// Makes an impl block an event processor: something that reacts to events (sends mail, calls
/// another service, writes elsewhere) and answers no queries.
///
/// The same as [`#[projection]`](macro@projection), options and markers included, except that
/// `#[handles_query]` is a compile error. Its effects usually cannot be undone, so unless it is
/// `resettable` or has a `#[reset]` method, a rebuild is refused.
///
/// ```ignore
/// #[event_processor(name = "welcome-mail")]
/// impl WelcomeMail {
///     #[handles_event]
///     async fn on_opened(
///         &mut self,
///         e: AccountOpened,
///         ctx: &EventContext<'_>,
///         mailer: Dep<Mailer>,
///     ) -> Result<(), MailError> {
///         mailer.send(&e.owner, ctx.idempotency_key()).await
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn event_processor(args: TokenStream, item: TokenStream) -> TokenStream {
    into_tokens(processor::expand(
        processor::Kind::EventProcessor,
        args.into(),
        item.into(),
    ))
}

/// Marks an event handler inside a [`#[projection]`](macro@projection) or
/// [`#[event_processor]`](macro@event_processor) impl block; see there for the signatures it
/// accepts. Used anywhere else it is a compile error.
#[proc_macro_attribute]
pub fn handles_event(_args: TokenStream, item: TokenStream) -> TokenStream {
    processor::markers::outside_processor(processor::markers::HANDLES_EVENT, &item.into()).into()
}

/// Marks a query handler inside a [`#[projection]`](macro@projection) impl block:
/// `(async) fn name(&self, query: Q) -> Result<Q::Output, Err>`. Used anywhere else it is a
/// compile error.
#[proc_macro_attribute]
pub fn handles_query(_args: TokenStream, item: TokenStream) -> TokenStream {
    processor::markers::outside_processor(processor::markers::HANDLES_QUERY, &item.into()).into()
}

/// Marks the method that clears a [`#[projection]`](macro@projection) (or
/// [`#[event_processor]`](macro@event_processor)) before a rebuild: `(async) fn name(&mut self)`,
/// returning nothing or `Result<(), Err>`. Used anywhere else it is a compile error.
///
/// Its name is generic, so the `interlock` crate exports it at its root only, not in the
/// prelude; inside the impl block it is recognised by name and needs no import.
#[proc_macro_attribute]
pub fn reset(_args: TokenStream, item: TokenStream) -> TokenStream {
    processor::markers::outside_processor(processor::markers::RESET, &item.into()).into()
}

/// Makes an impl block a saga: a long process across aggregates, driven by events, with a
/// persisted state per instance.
///
/// Goes on the inherent impl block of the saga's type (which must be `Send + Sync + 'static`; it
/// is shared by all instances) and implements `Saga` for it, with:
///
/// * `state = Type` (required): the state of one instance, `Default + Serialize + Deserialize`.
///   A new instance starts from `Default`; the state is saved after every step.
/// * `name = "transfer"`: the saga's stable name, under which its instances, checkpoint and
///   deadlines are stored (default: the type's name as written).
///
/// Inside the block it reads the methods marked:
///
/// * [`#[saga_step(key = ...)]`](macro@saga_step): `(async) fn name(&self, state: &mut State,
///   event: E)`, optionally followed by `ctx: &mut SagaContext<'_>` (send commands, schedule
///   deadlines, end the saga) and dependencies by value (`Dep<T>`, ...). It returns nothing or
///   `Result<(), Err>` with `Err: Into<HandlerError>`, and becomes `impl SagaStep<E>`. The key
///   finds the instance from the event; it is
///   * a field of the event: `key = transfer_id` (cloned),
///   * a function or method taking `&E`: `key = TransferRequested::key`,
///   * or a closure: `key = |e: &Moved| e.transfer`.
///
///   Keys convert into `SagaKey` (strings, UUIDs, integers; `Option<String>` to skip an event).
///   `#[saga_step(start, key = ...)]` marks a step that creates the instance; other steps run
///   only for existing instances. At least one step starts the saga.
/// * [`#[saga_deadline]`](macro@saga_deadline): the same shape with `deadline: DeadlineReached`
///   as the event: receives the deadlines the steps scheduled with `ctx.schedule(name, after)`.
///   At most one.
///
/// The markers are removed and the impl block is kept as written.
///
/// ```ignore
/// use interlock::prelude::*;
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct TransferState { from: String, to: String, amount: u64, withdrawn: bool }
///
/// struct Transfer;
///
/// #[saga(name = "transfer", state = TransferState)]
/// impl Transfer {
///     #[saga_step(start, key = transfer_id)]
///     async fn requested(
///         &self,
///         state: &mut TransferState,
///         e: TransferRequested,
///         ctx: &mut SagaContext<'_>,
///     ) -> Result<(), interlock::Error> {
///         ctx.schedule("expire", Duration::from_secs(3600));
///         ctx.send(Withdraw { account: e.from, amount: e.amount }).await?;
///         state.withdrawn = true;
///         Ok(())
///     }
///
///     #[saga_step(key = |e: &Withdrawn| e.transfer_id)]
///     async fn withdrawn(&self, state: &mut TransferState, e: Withdrawn, ctx: &mut SagaContext<'_>) {
///         // ...
///     }
///
///     #[saga_deadline]
///     async fn expired(&self, state: &mut TransferState, d: DeadlineReached, ctx: &mut SagaContext<'_>) {
///         ctx.end();
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn saga(args: TokenStream, item: TokenStream) -> TokenStream {
    into_tokens(saga::expand(args.into(), item.into()))
}

/// Marks a step inside a [`#[saga]`](macro@saga) impl block: `#[saga_step(key = ...)]`, or
/// `#[saga_step(start, key = ...)]` for a step that creates the instance; see there for the
/// signatures and keys it accepts. Used anywhere else it is a compile error.
#[proc_macro_attribute]
pub fn saga_step(_args: TokenStream, item: TokenStream) -> TokenStream {
    saga::markers::outside_saga(saga::markers::SAGA_STEP, &item.into()).into()
}

/// Marks the method that receives a [`#[saga]`](macro@saga)'s fired deadlines:
/// `(async) fn name(&self, state: &mut State, deadline: DeadlineReached, ctx: &mut
/// SagaContext<'_>)`. Used anywhere else it is a compile error.
#[proc_macro_attribute]
pub fn saga_deadline(_args: TokenStream, item: TokenStream) -> TokenStream {
    saga::markers::outside_saga(saga::markers::SAGA_DEADLINE, &item.into()).into()
}
