//! What a command handler knows about the dispatch it runs in.

use std::sync::Arc;

use interlock_core::{Metadata, Position};

use crate::error::Error;
use crate::services::{FromServices, Services};
use uuid::Uuid;

/// Options for one dispatch: correlation, causation and metadata stamped on every event it stores.
#[derive(Clone, Debug, Default)]
pub struct DispatchOptions {
    /// Correlation id; defaults to the command id, starting a new flow.
    pub correlation_id: Option<Uuid>,
    /// Causation id; defaults to the command id.
    pub causation_id: Option<Uuid>,
    /// Metadata copied onto every stored event.
    pub metadata: Metadata,
    /// With [`IdempotencyMiddleware`](crate::middleware::IdempotencyMiddleware): a duplicate
    /// dispatch with the same key gets the original result instead of running again.
    pub idempotency_key: Option<String>,
    /// Derives the ids of the command's events from this seed instead of drawing them at
    /// random, and records the command's output in the first event's metadata (under
    /// [`OUTPUT_METADATA_KEY`]). A second dispatch with the same seed (a retry after a crash
    /// whose outcome is unknown) first looks for that event among the stream's latest 256
    /// events and, if the first dispatch committed, returns its stored output without running
    /// the command again; if they race, the store's event-id check lets only one commit. Sagas
    /// use it for every command they send.
    pub event_ids_from: Option<String>,
}

/// The metadata key under which a dispatch with [`DispatchOptions::event_ids_from`] records the
/// command's output (JSON) on its first event.
pub const OUTPUT_METADATA_KEY: &str = "interlock.output";

impl DispatchOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Derives the events' ids from `seed` (see [`DispatchOptions::event_ids_from`]).
    pub fn event_ids_from(mut self, seed: impl Into<String>) -> Self {
        self.event_ids_from = Some(seed.into());
        self
    }

    /// Adds one metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// The context a command handler runs in.
#[derive(Clone, Debug)]
pub struct CommandContext {
    pub(crate) command_id: Uuid,
    pub(crate) command_type: &'static str,
    pub(crate) correlation_id: Uuid,
    pub(crate) causation_id: Uuid,
    pub(crate) metadata: Metadata,
    pub(crate) services: Arc<Services>,
}

impl CommandContext {
    pub(crate) fn new(
        command_type: &'static str,
        options: DispatchOptions,
        services: Arc<Services>,
    ) -> Self {
        let command_id = Uuid::now_v7();
        Self {
            command_id,
            command_type,
            correlation_id: options.correlation_id.unwrap_or(command_id),
            causation_id: options.causation_id.unwrap_or(command_id),
            metadata: options.metadata,
            services,
        }
    }

    /// Takes a handler parameter (a [`Dep<T>`](crate::Dep), a
    /// [`CommandSender`](crate::CommandSender), ...) from the application's services.
    pub fn extract<T: FromServices>(&self) -> Result<T, Error> {
        T::from_services(&self.services)
    }

    /// The application's services.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// A context for calling a handler directly, outside an application (unit tests).
    pub fn detached(command_type: &'static str) -> Self {
        Self::new(
            command_type,
            DispatchOptions::default(),
            Arc::new(Services::detached()),
        )
    }

    /// The id given to this dispatch of the command.
    pub fn command_id(&self) -> Uuid {
        self.command_id
    }

    /// The command's type name.
    pub fn command_type(&self) -> &'static str {
        self.command_type
    }

    /// The correlation id stored on the events.
    pub fn correlation_id(&self) -> Uuid {
        self.correlation_id
    }

    /// The causation id stored on the events.
    pub fn causation_id(&self) -> Uuid {
        self.causation_id
    }

    /// The metadata stored on the events.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

/// What a dispatch did, beside the handler's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatched<T> {
    /// What the handler returned.
    pub output: T,
    /// The aggregate's version after the command (unchanged when it emitted nothing).
    pub version: u64,
    /// How many events the command stored.
    pub events: usize,
    /// Global position of the last stored event, `None` when nothing was stored. Pass it to
    /// read-your-writes waits.
    pub position: Option<Position>,
}

/// The message being handled on the current task: what a nested dispatch inherits through
/// [`ContextPropagationMiddleware`](crate::middleware::ContextPropagationMiddleware).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecutionContext {
    /// The flow's correlation id.
    pub correlation_id: Uuid,
    /// The id of the message being handled (the causation of anything it causes).
    pub message_id: Uuid,
}

tokio::task_local! {
    static CURRENT: ExecutionContext;
}

impl ExecutionContext {
    /// The context of the message handled on this task, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|c| *c).ok()
    }

    /// Runs `future` as the handling of this context's message.
    pub(crate) async fn scope<F: std::future::Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }
}
