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
//!
//! The examples below are not compiled here (a proc-macro crate cannot use the crate it serves);
//! the same examples run as tests in the `interlock` crate's documentation.

mod aggregate;
mod attr;
mod command;
mod event;
mod markers;
mod query;

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
///   `E: Into<DomainError>`, optionally with a third parameter `ctx: &CommandContext`. It becomes
///   `impl HandlesCommand<C>`. With `#[handles_command(create)]` the command may create a new
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
///     async fn deposit(&mut self, cmd: DepositMoney) -> Result<(), DomainError> {
///         if cmd.amount == 0 {
///             return Err(DomainError::new("amount must be positive"));
///         }
///         self.emit(MoneyDeposited { amount: cmd.amount });
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
