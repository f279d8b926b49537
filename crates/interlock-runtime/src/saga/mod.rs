//! Sagas: stateful processors that coordinate a long process across aggregates.
//!
//! A saga instance is found by a *key* taken from each event (a transfer id, an order id). The
//! first step creates its state; later steps receive and update it; a step may end it. Steps send
//! commands through their [`SagaContext`]. The guarantees:
//!
//! * **Each step runs at most once per instance**: the ids of handled events are saved with the
//!   state, under optimistic concurrency, so a redelivered event (or a second process handling
//!   it) finds the step done and skips it.
//! * **Commands are sent once**: each command a step sends gets a deterministic idempotency key
//!   (saga, key, event, index), so a step re-run after a crash between sending and saving gets
//!   the original results instead of sending again.
//! * **Context**: commands carry the saga's correlation id (from the event that started it) and
//!   the triggering event as causation.
//! * **Deadlines** ([`SagaContext::schedule`]) are stored as events, survive restarts, and fire
//!   once as a [`DeadlineReached`] event delivered to the instance.

mod deadline;
mod processor;

use std::future::Future;
use std::time::Duration;

use interlock_core::{Command, Event};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub(crate) use deadline::fire_due_deadlines;
pub use deadline::{DeadlineReached, DeadlineScheduled};
pub(crate) use processor::SagaProcessor;
pub use processor::{SagaContext, SagaKey, SagaRoutes};

use crate::processor::HandlerError;

/// A saga: its name, its state type, and the events that drive it.
///
/// ```
/// use interlock_runtime::prelude::*;
/// use interlock_runtime::saga::{Saga, SagaContext, SagaRoutes, SagaStep};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct OrderPlaced { order: String }
/// impl Event for OrderPlaced { const TYPE_NAME: &'static str = "OrderPlaced"; }
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Fulfilment { reminded: bool }
///
/// struct Fulfil;
/// impl Saga for Fulfil {
///     const NAME: &'static str = "fulfil";
///     type State = Fulfilment;
///     fn configure(routes: &mut SagaRoutes<'_, Self>) {
///         routes.starts_with(|e: &OrderPlaced| e.order.clone());
///     }
/// }
/// impl SagaStep<OrderPlaced> for Fulfil {
///     async fn handle(
///         &self,
///         _state: &mut Fulfilment,
///         _event: OrderPlaced,
///         ctx: &mut SagaContext<'_>,
///     ) -> Result<(), HandlerError> {
///         ctx.schedule("remind", std::time::Duration::from_secs(3600));
///         Ok(())
///     }
/// }
/// # let _ = Fulfil;
/// ```
pub trait Saga: Send + Sync + 'static {
    /// The saga's stable name: its instances are stored under it.
    const NAME: &'static str;
    /// The state of one instance; a new instance starts from `Default`.
    type State: Serialize + DeserializeOwned + Default + Send + Sync + 'static;
    /// Declares the steps (and the key each event is correlated by).
    fn configure(routes: &mut SagaRoutes<'_, Self>)
    where
        Self: Sized;
}

/// A saga step for event `E`.
pub trait SagaStep<E: Event>: Saga {
    /// Runs the step: update the state, send commands, schedule deadlines, maybe end the saga.
    /// An error is retried (the state is not saved), then the event is parked.
    fn handle(
        &self,
        state: &mut Self::State,
        event: E,
        ctx: &mut SagaContext<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A command a step sent, as recorded with the instance (for tests and diagnostics).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct SentCommand {
    /// The command's type name.
    pub command_type: String,
    /// The command as JSON.
    pub payload: serde_json::Value,
    /// The idempotency key it was sent with.
    pub key: String,
}

/// The stored form of one instance.
#[derive(Serialize, serde::Deserialize)]
pub(crate) struct SagaDocument {
    pub(crate) state: serde_json::Value,
    pub(crate) correlation_id: Uuid,
    pub(crate) handled: Vec<Uuid>,
    pub(crate) done: bool,
    #[serde(default)]
    pub(crate) sent: Vec<SentCommand>,
}

pub(crate) fn schedule_at(
    now: chrono::DateTime<chrono::Utc>,
    after: Duration,
) -> chrono::DateTime<chrono::Utc> {
    now + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX)
}

pub(crate) fn command_payload<C: Command>(command: &C) -> serde_json::Value {
    serde_json::to_value(command).unwrap_or(serde_json::Value::Null)
}
