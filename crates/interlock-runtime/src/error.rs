//! The application's error type and the domain error handlers return.

use std::fmt;

use interlock_core::{
    AggregateId, ConcurrencyError, DecodeError, Position, RecordedEvent, StoreError, StreamId,
    ValidationError,
};

/// A command was rejected by domain logic ("insufficient funds").
///
/// Handlers return `Result<T, E>` where `E` converts into a `DomainError`: any
/// `std::error::Error + Send + Sync + 'static` does, so a handler can return its own error enum and
/// the caller can get it back with [`DomainError::downcast_ref`]. [`DomainError::new`] makes one
/// from a message, [`DomainError::with_code`] adds a stable code to match on.
///
/// ```
/// use interlock_runtime::DomainError;
/// let e = DomainError::with_code("insufficient_funds", "balance is 5, cannot withdraw 7");
/// assert_eq!(e.code(), Some("insufficient_funds"));
/// assert_eq!(e.to_string(), "balance is 5, cannot withdraw 7");
/// ```
pub struct DomainError {
    code: Option<String>,
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl DomainError {
    /// A domain error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            code: None,
            inner: Box::new(Message(message.into())),
        }
    }

    /// A domain error with a stable code (for callers to match on) and a message.
    pub fn with_code(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: Some(code.into()),
            inner: Box::new(Message(message.into())),
        }
    }

    /// The code given with [`with_code`](Self::with_code), if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The handler's own error, if it was of type `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.inner.downcast_ref::<E>()
    }

    /// Whether the handler's own error was of type `E`.
    pub fn is<E: std::error::Error + 'static>(&self) -> bool {
        self.inner.is::<E>()
    }

    /// A framework [`Error`] that travelled through a handler's `?` comes back as itself (a
    /// nested dispatch's conflict stays a conflict, a missing dependency stays one); anything
    /// else is the domain rejection it is.
    pub(crate) fn into_error(self) -> Error {
        if self.code.is_none() && self.inner.is::<Error>() {
            match self.inner.downcast::<Error>() {
                Ok(error) => *error,
                Err(inner) => Error::Domain(Self { code: None, inner }),
            }
        } else {
            Error::Domain(self)
        }
    }

    /// The error as a standard error (to walk its sources).
    pub fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.inner
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for DomainError {
    fn from(error: E) -> Self {
        Self {
            code: None,
            inner: Box::new(error),
        }
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DomainError");
        if let Some(code) = &self.code {
            d.field("code", code);
        }
        d.field("error", &self.inner).finish()
    }
}

/// Everything that can go wrong when dispatching, loading or building.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command handler rejected the command; nothing was stored.
    #[error("{0}")]
    Domain(DomainError),
    /// The command targets an aggregate instance that has no events, and is not declared as a
    /// command that creates one.
    #[error("aggregate {aggregate_type} with id {id} not found{}", command.map(|c| format!(" (command {c} does not create it)")).unwrap_or_default())]
    AggregateNotFound {
        /// The aggregate type.
        aggregate_type: &'static str,
        /// The id that was asked for.
        id: AggregateId,
        /// The command that was dispatched, if any.
        command: Option<&'static str>,
    },
    /// No registered aggregate handles this command type.
    #[error("no handler for command {command}: register the aggregate that handles it")]
    NoHandler {
        /// The command type.
        command: &'static str,
    },
    /// The aggregate type was never registered with the application.
    #[error("aggregate {aggregate_type} is not registered with this application")]
    AggregateNotRegistered {
        /// The aggregate type.
        aggregate_type: &'static str,
    },
    /// Optimistic concurrency failed: another writer appended first. Nothing was stored.
    #[error(transparent)]
    Concurrency(#[from] ConcurrencyError),
    /// A stored event could not be decoded (names stream, version and type).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A handler emitted an event the aggregate has no applier for (with the `Error` policy).
    #[error(
        "aggregate {aggregate_type} has no applier for event {event_type} emitted by command {command}"
    )]
    NoApplier {
        /// The aggregate type.
        aggregate_type: &'static str,
        /// The emitted event type.
        event_type: &'static str,
        /// The command being handled.
        command: &'static str,
    },
    /// An emitted event could not be serialized; nothing was stored.
    #[error(
        "event #{index} ({event_type}) emitted by command {command} on {stream} could not be serialized: {message}"
    )]
    EventSerialization {
        /// The stream the events were for.
        stream: StreamId,
        /// The command being handled.
        command: &'static str,
        /// 1-based index of the event among those the handler emitted.
        index: usize,
        /// The event's type name.
        event_type: &'static str,
        /// What serde said.
        message: String,
    },
    /// An input was rejected before anything was written.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// `build()` found problems (convenient for `?` in a `main` returning `Result<_, Error>`).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Processors failed on events; with `committed` set, the command's events are stored (an
    /// inline processor failed after the commit) and the failed events are parked.
    #[error(
        "{}{}",
        match committed {
            Some(p) => format!("the command's events are committed (up to position {p}), but "),
            None => String::new(),
        },
        failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Processing {
        /// One entry per failed (and parked) event.
        failures: Vec<ProcessingFailure>,
        /// The position of the dispatch's last stored event, when the failure happened after a
        /// dispatch committed.
        committed: Option<Position>,
    },
    /// A processor with the `Stop` policy stopped at an event that kept failing.
    #[error("processor stopped: {0}")]
    ProcessorStopped(Box<ProcessingFailure>),
    /// A rebuild could not start.
    #[error("cannot rebuild {processor}: {message}")]
    Rebuild {
        /// The processor.
        processor: &'static str,
        /// Why.
        message: String,
    },
    /// No processor with this name is registered.
    #[error("no processor named {name} is registered")]
    ProcessorNotFound {
        /// The name asked for.
        name: String,
    },
    /// No dead letter with this id exists.
    #[error("dead letter {id} not found")]
    DeadLetterNotFound {
        /// The id asked for.
        id: u64,
    },
    /// No projection answers this query type.
    #[error("no projection answers query {query}: register the projection that does")]
    NoQueryHandler {
        /// The query type.
        query: &'static str,
    },
    /// The projection failed to answer.
    #[error("query {query} failed in projection {projection}: {message}")]
    Query {
        /// The query type.
        query: &'static str,
        /// The projection.
        projection: &'static str,
        /// What it said.
        message: String,
    },
    /// An idempotent dispatch could not be decided or answered.
    #[error("idempotency key {key}: {message}")]
    Idempotency {
        /// The (namespaced) key.
        key: String,
        /// What went wrong.
        message: String,
    },
    /// A lifecycle hook failed; every hook still ran.
    #[error("{} lifecycle hook(s) failed: {}", failures.len(), failures.join("; "))]
    Lifecycle {
        /// One line per failed hook.
        failures: Vec<String>,
    },
    /// A handler needed a dependency that was not registered.
    #[error("missing dependency {type_name}: register it with register_dependency")]
    MissingDependency {
        /// The dependency's type.
        type_name: &'static str,
    },
    /// A wait did not finish in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, String),
    /// The application was shut down.
    #[error("the application has been shut down")]
    ShutDown,
    /// Any other store failure.
    #[error(transparent)]
    Store(StoreError),
}

impl Error {
    /// The domain error, when the command was rejected by domain logic.
    pub fn as_domain(&self) -> Option<&DomainError> {
        match self {
            Error::Domain(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is an optimistic concurrency conflict (retrying the command may succeed).
    pub fn is_concurrency(&self) -> bool {
        matches!(self, Error::Concurrency(_))
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Concurrency(e) => Error::Concurrency(e),
            StoreError::Decode(e) => Error::Decode(e),
            StoreError::Validation(e) => Error::Validation(e),
            other => Error::Store(other),
        }
    }
}

impl From<DomainError> for Error {
    fn from(error: DomainError) -> Self {
        Error::Domain(error)
    }
}

/// `build()` found problems with the application's wiring; every one of them is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the application is misconfigured:\n  - {}", problems.join("\n  - "))]
pub struct BuildError {
    /// One human-readable line per problem.
    pub problems: Vec<String>,
}

/// One event a processor failed to handle after all its attempts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "processor {processor} failed on event {stream} version {stream_version} of type {event_type:?} (position {position}) after {attempts} attempt(s): {error}"
)]
pub struct ProcessingFailure {
    /// The processor.
    pub processor: &'static str,
    /// The event's stream.
    pub stream: StreamId,
    /// The event's version.
    pub stream_version: u64,
    /// The event's type name.
    pub event_type: String,
    /// The event's global position.
    pub position: Position,
    /// Attempts made.
    pub attempts: u32,
    /// The last error, as text.
    pub error: String,
}

impl ProcessingFailure {
    pub(crate) fn new(
        processor: &'static str,
        event: &RecordedEvent,
        error: &dyn fmt::Display,
        attempts: u32,
    ) -> Self {
        Self {
            processor,
            stream: event.stream_id.clone(),
            stream_version: event.stream_version,
            event_type: event.event_type.clone(),
            position: event.position,
            attempts,
            error: error.to_string(),
        }
    }
}
