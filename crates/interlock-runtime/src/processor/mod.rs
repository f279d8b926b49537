//! The read side: projections and event processors.
//!
//! A processor is a type that handles some event types (and, for a projection, answers some query
//! types). The application delivers events to it as a durable subscription: it starts at the
//! processor's checkpoint, catches up from the store, then follows new events; the checkpoint is
//! saved after each batch. Delivery is at-least-once: after a crash between handling and the
//! checkpoint save, the events of that batch are delivered again, so handlers with external
//! effects use [`EventContext::idempotency_key`].
//!
//! The plain-trait path (the `#[projection]` and `#[event_processor]` macros generate it):
//!
//! ```
//! use std::collections::HashMap;
//! use interlock_runtime::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Deposited { amount: u64 }
//! impl Event for Deposited { const TYPE_NAME: &'static str = "Deposited"; }
//!
//! struct Balance { account: String }
//! impl Query for Balance { type Output = u64; const TYPE_NAME: &'static str = "Balance"; }
//!
//! #[derive(Default)]
//! struct Balances { by_account: HashMap<String, u64> }
//!
//! impl EventProcessor for Balances {
//!     const NAME: &'static str = "balances";
//!     fn configure(routes: &mut ProcessorRoutes<Self>) {
//!         routes.event::<Deposited>().query::<Balance>();
//!     }
//!     async fn reset(&mut self) -> Result<(), HandlerError> {
//!         *self = Self::default();
//!         Ok(())
//!     }
//! }
//! impl HandlesEvent<Deposited> for Balances {
//!     async fn handle(&mut self, e: Deposited, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
//!         *self.by_account.entry(ctx.stream_id().id().to_owned()).or_default() += e.amount;
//!         Ok(())
//!     }
//! }
//! impl AnswersQuery<Balance> for Balances {
//!     async fn answer(&self, q: Balance) -> Result<u64, HandlerError> {
//!         Ok(self.by_account.get(&q.account).copied().unwrap_or(0))
//!     }
//! }
//! # let _ = Balances::default();
//! ```

mod batch;
mod core;
mod partition;
mod registration;
mod routes;
mod settings;

pub use self::core::partition_of;
pub(crate) use self::core::{ProcessorHandle, is_delivering};
pub use batch::{Batch, BatchOutcome, BatchProcessor};
pub(crate) use registration::{ProcessorEnv, ProcessorRegistration};
pub use routes::ProcessorRoutes;
pub(crate) use routes::{QueryFn, QueryRoute};
pub use settings::{Delivery, FailurePolicy, ProcessorSettings, RebuildProgress, RetryPolicy};

use std::fmt;
use std::future::Future;

use chrono::{DateTime, Utc};
use interlock_core::{Event, EventId, Metadata, Position, Query, RecordedEvent, StreamId};
use uuid::Uuid;

use crate::error::Error;
use crate::services::{FromServices, Services};

/// A type that reacts to events: a projection (which also answers queries) or an event processor.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event processor",
    label = "not a projection or event processor",
    note = "add `#[projection]` or `#[event_processor]` to its impl block, or implement `EventProcessor` by hand"
)]
pub trait EventProcessor: Sized + Send + Sync + 'static {
    /// The processor's stable name: its checkpoint and dead letters are stored under it.
    const NAME: &'static str;

    /// Declares the events it handles and the queries it answers.
    fn configure(routes: &mut ProcessorRoutes<Self>);

    /// Clears the read model before a rebuild replays every event. The default refuses, so a
    /// processor whose effects cannot be undone is never rebuilt by accident.
    fn reset(&mut self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async {
            Err(HandlerError::new(format!(
                "processor {} cannot be reset",
                Self::NAME
            )))
        }
    }
}

/// A processor that handles event `E`.
pub trait HandlesEvent<E: Event>: EventProcessor {
    /// Handles one event. An error makes the application retry (with backoff), then park the
    /// event as a dead letter or stop the processor, as its [`FailurePolicy`] says.
    fn handle(
        &mut self,
        event: E,
        ctx: &EventContext<'_>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A projection that answers query `Q`.
pub trait AnswersQuery<Q: Query>: EventProcessor {
    /// Answers the query from the projection's current state.
    fn answer(&self, query: Q) -> impl Future<Output = Result<Q::Output, HandlerError>> + Send;
}

/// The envelope of the event being handled.
#[derive(Clone, Copy)]
pub struct EventContext<'a> {
    event: &'a RecordedEvent,
    processor: &'static str,
    services: Option<&'a Services>,
}

impl<'a> EventContext<'a> {
    /// The context of `event` delivered to `processor` (for processors that decode events
    /// themselves, such as backends' batch processors).
    pub fn new(event: &'a RecordedEvent, processor: &'static str) -> Self {
        Self {
            event,
            processor,
            services: None,
        }
    }

    /// The same context with the application's services (dependencies, command sender).
    pub fn with_services(mut self, services: &'a Services) -> Self {
        self.services = Some(services);
        self
    }

    /// Takes a handler parameter (a [`Dep<T>`](crate::Dep), a
    /// [`CommandSender`](crate::CommandSender), ...) from the application's services.
    pub fn extract<T: FromServices>(&self) -> Result<T, Error> {
        match self.services {
            Some(services) => T::from_services(services),
            None => T::from_services(&Services::detached()),
        }
    }

    /// The application's services, when delivered by an application.
    pub fn services(&self) -> Option<&'a Services> {
        self.services
    }

    /// The name of the processor handling the event.
    pub fn processor(&self) -> &'static str {
        self.processor
    }

    /// The event's id.
    pub fn event_id(&self) -> EventId {
        self.event.event_id
    }
    /// The stream it belongs to.
    pub fn stream_id(&self) -> &'a StreamId {
        &self.event.stream_id
    }
    /// Its version in the stream.
    pub fn stream_version(&self) -> u64 {
        self.event.stream_version
    }
    /// Its global position.
    pub fn position(&self) -> Position {
        self.event.position
    }
    /// When it was recorded.
    pub fn recorded_at(&self) -> DateTime<Utc> {
        self.event.recorded_at
    }
    /// Its correlation id.
    pub fn correlation_id(&self) -> Option<Uuid> {
        self.event.correlation_id
    }
    /// Its causation id.
    pub fn causation_id(&self) -> Option<Uuid> {
        self.event.causation_id
    }
    /// Its user metadata.
    pub fn metadata(&self) -> &'a Metadata {
        &self.event.metadata
    }
    /// The whole stored envelope.
    pub fn envelope(&self) -> &'a RecordedEvent {
        self.event
    }
    /// A key that is the same every time this processor is given this event (redeliveries
    /// included) and different for any other pair: pass it to external services so a redelivered
    /// event does not repeat an effect.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.processor, self.event.event_id)
    }
}

impl fmt::Debug for EventContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventContext")
            .field("stream", &self.event.stream_id)
            .field("version", &self.event.stream_version)
            .field("type", &self.event.event_type)
            .field("position", &self.event.position)
            .finish()
    }
}

/// An error from an event handler or a query.
pub struct HandlerError {
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl HandlerError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            inner: message.into().into(),
        }
    }

    /// The handler's own error, if it was of type `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.inner.downcast_ref::<E>()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self {
            inner: Box::new(error),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}
