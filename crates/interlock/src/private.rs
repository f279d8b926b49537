//! What the macros expand into. Not a public API: it changes whenever the macros do.
//!
//! Every path in generated code goes through here (never to `interlock_core` or
//! `interlock_runtime` directly), so an application depends on `interlock` alone, and the crates
//! behind the facade can be reorganised without breaking expanded code.

pub use interlock_core;
pub use interlock_runtime;
pub use serde;

pub use std::clone::Clone;
pub use std::convert::{From, Into};
pub use std::default::Default;
pub use std::future::Future;
pub use std::marker::{Send, Sync};
pub use std::option::Option;
pub use std::primitive::{str, u32};
pub use std::result::Result;

pub use interlock_core::{AggregateId, Command, Event, Query};
pub use interlock_runtime::saga::{DeadlineReached, Saga, SagaContext, SagaRoutes, SagaStep};
pub use interlock_runtime::{
    Aggregate, AggregateRoutes, AppliesEvent, CommandContext, DomainError, Error, FromServices,
    HandlesCommand,
};
pub use interlock_runtime::{
    AnswersQuery, EventContext, EventProcessor, HandlerError, HandlesEvent, ProcessorRoutes,
};

/// The route table of an aggregate, written by `#[aggregate]` on its impl block.
///
/// The `Aggregate` impl written by `#[aggregate]` on the type calls it. It is a trait rather than
/// an inherent function so that a missing impl block is reported in words, and so that the type
/// and its impl block may live in different modules.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no `#[aggregate] impl` block",
    label = "this aggregate declares no command handlers or event appliers",
    note = "add `#[aggregate] impl {Self} {{ ... }}` with its #[handles_command] and #[applies_event] methods"
)]
pub trait ConfigureAggregate: Aggregate {
    /// Declares every command and event of the impl block.
    fn configure_aggregate(routes: &mut AggregateRoutes<Self>);
}

/// Turns what a `#[handles_command]` method returns into what `HandlesCommand::handle` returns.
#[diagnostic::on_unimplemented(
    message = "a command handler must return `Result<{T}, E>` with `E: Into<DomainError>`, not `{Self}`",
    label = "the command's output type is `{T}`",
    note = "the `Ok` type is the command's `#[command(output = ...)]` (default `()`)"
)]
pub trait HandlerResult<T> {
    /// Converts the handler's error into a [`DomainError`].
    fn into_handler_result(self) -> Result<T, DomainError>;
}

impl<T, E: Into<DomainError>> HandlerResult<T> for Result<T, E> {
    fn into_handler_result(self) -> Result<T, DomainError> {
        self.map_err(Into::into)
    }
}

/// Turns what a `#[handles_event]` or `#[reset]` method returns (nothing, or `Result<(), E>`)
/// into what `HandlesEvent::handle` and `EventProcessor::reset` return.
#[diagnostic::on_unimplemented(
    message = "an event handler or reset must return nothing or `Result<(), E>` with `E: Into<HandlerError>`, not `{Self}`",
    label = "expected `()` or `Result<(), E>`",
    note = "an error makes the application retry the event, then park it as a dead letter"
)]
pub trait ProcessorResult {
    /// Converts the method's error into a [`HandlerError`].
    fn into_processor_result(self) -> Result<(), HandlerError>;
}

impl ProcessorResult for () {
    fn into_processor_result(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: Into<HandlerError>> ProcessorResult for Result<(), E> {
    fn into_processor_result(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}

/// Turns what a `#[handles_query]` method returns into what `AnswersQuery::answer` returns.
#[diagnostic::on_unimplemented(
    message = "a query handler must return `Result<{T}, E>` with `E: Into<HandlerError>`, not `{Self}`",
    label = "the query's output type is `{T}`",
    note = "the `Ok` type is the query's `#[query(output = ...)]`"
)]
pub trait QueryResult<T> {
    /// Converts the handler's error into a [`HandlerError`].
    fn into_query_result(self) -> Result<T, HandlerError>;
}

impl<T, E: Into<HandlerError>> QueryResult<T> for Result<T, E> {
    fn into_query_result(self) -> Result<T, HandlerError> {
        self.map_err(Into::into)
    }
}
