//! Errors shared by every layer: validation, concurrency, decoding and store failures.

use std::borrow::Cow;
use std::fmt;

use crate::ids::{EventId, StreamId};
use crate::position::ExpectedVersion;

/// A value was rejected before anything was written; names the field and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    field: Cow<'static, str>,
    reason: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field that was rejected.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why it was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Optimistic concurrency failed: the stream was not at the expected version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("concurrency conflict on stream {stream}: expected {expected}, actual version {actual}")]
pub struct ConcurrencyError {
    /// The stream appended to.
    pub stream: StreamId,
    /// What the writer expected.
    pub expected: ExpectedVersion,
    /// The stream's version when the append was checked (0 = no events).
    pub actual: u64,
}

/// Why a stored event could not be turned into a typed value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeReason {
    /// No type with this name is registered where the event was read.
    UnknownType,
    /// The event was read as a specific type but has another name.
    UnexpectedType {
        /// The type name the reader asked for.
        expected: String,
    },
    /// The payload is not valid JSON for the type.
    Malformed(String),
    /// The stored schema version is newer than the code knows.
    NewerSchemaVersion {
        /// The newest version the code knows.
        known: u32,
    },
    /// The stored schema version is older and no upcaster brings it to the current one.
    OlderSchemaVersion {
        /// The version the code expects.
        known: u32,
    },
    /// A stored envelope field (not the payload) is invalid.
    CorruptEnvelope(String),
    /// An upcaster failed on the event.
    Upcast(String),
}

impl fmt::Display for DecodeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeReason::UnknownType => f.write_str("unknown event type"),
            DecodeReason::UnexpectedType { expected } => {
                write!(f, "expected an event of type {expected}")
            }
            DecodeReason::Malformed(msg) => write!(f, "malformed payload: {msg}"),
            DecodeReason::NewerSchemaVersion { known } => write!(
                f,
                "schema version is newer than the newest this code knows ({known})"
            ),
            DecodeReason::OlderSchemaVersion { known } => write!(
                f,
                "schema version is older than the current one ({known}) and no upcaster converts it"
            ),
            DecodeReason::CorruptEnvelope(msg) => write!(f, "corrupt envelope: {msg}"),
            DecodeReason::Upcast(msg) => write!(f, "{msg}"),
        }
    }
}

/// A stored event could not be decoded; names the stream, version and type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode event {stream} version {stream_version} of type {event_type:?}: {reason}")]
pub struct DecodeError {
    /// The stream the event belongs to.
    pub stream: StreamId,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its stored type name.
    pub event_type: String,
    /// What was wrong.
    pub reason: DecodeReason,
}

/// A boxed error from a backend driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from an event store or one of the side stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stream was not at the expected version.
    #[error(transparent)]
    Concurrency(#[from] ConcurrencyError),
    /// An event id is already stored with different content or in another stream.
    #[error(
        "event id {event_id} is already stored {}, with different content",
        match stream { Some(s) => format!("in stream {s}"), None => "elsewhere".to_owned() }
    )]
    DuplicateEventId {
        /// The colliding id.
        event_id: EventId,
        /// The stream that already holds it, when known.
        stream: Option<StreamId>,
    },
    /// An input was rejected before anything was written.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A stored row could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The backend cannot be reached now (connection lost, server restarting); retrying later may
    /// succeed. The outcome of an append that fails this way is unknown: retry it with the same
    /// event ids, which is idempotent.
    #[error("{backend} store unavailable")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// The driver error.
        #[source]
        source: BoxError,
    },
    /// A write guarded by a lease was refused: the lease changed hands (its fence moved past
    /// this one), so this process no longer owns the work.
    #[error(
        "lease {key} is no longer held by {owner} with fence {fence}: another owner took it over"
    )]
    Fenced {
        /// The lease key.
        key: String,
        /// The owner that lost it.
        owner: String,
        /// The fence it held.
        fence: u64,
    },
    /// The backend does not offer this operation.
    #[error("the {backend} store does not support {operation}")]
    Unsupported {
        /// Which backend.
        backend: &'static str,
        /// What was asked.
        operation: &'static str,
    },
    /// Any other backend failure.
    #[error("{backend} store error")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// The driver error.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}
