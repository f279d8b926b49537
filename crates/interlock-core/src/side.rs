//! Side stores: the tables an application keeps next to its events.
//!
//! Every backend that stores events also stores, with the same shapes:
//!
//! * [`SnapshotStore`]: the latest snapshot of each stream, so loading an aggregate can start
//!   from it instead of the first event.
//! * [`CheckpointStore`]: how far each named processor has got in the global order.
//! * [`SagaStateStore`]: the state of each saga instance, guarded by an optimistic version.
//! * [`DeadLetterStore`]: events a processor gave up on, with the error and attempt count.
//! * [`IdempotencyStore`]: results of requests keyed by a client-supplied key, so a retry gets
//!   the original result.
//!
//! The traits are deliberately small: they store and return values, and leave policy (when to
//! snapshot, how often to retry, how to decode) to the runtime. Names (processor, saga, key) are
//! checked with [`validate_name`], so every backend refuses the same bad input; payloads are JSON
//! documents checked with [`validate_json`].

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::error::{StoreError, ValidationError};
use crate::ids::{EventId, StreamId};
use crate::position::Position;
use crate::store::MAX_PAYLOAD_LEN;

/// Checks a name used as a side-store key (processor, saga, idempotency key): 1 to
/// [`MAX_ID_LEN`](crate::MAX_ID_LEN) bytes, no NUL. `field` names it in the error.
pub fn validate_name(field: &'static str, value: &str) -> Result<(), ValidationError> {
    crate::ids::validate_part(field, value)
}

/// Checks a JSON document handed to a side store: at most [`MAX_PAYLOAD_LEN`] bytes of valid
/// JSON. `field` names it in the error.
pub fn validate_json(field: &'static str, value: &[u8]) -> Result<(), ValidationError> {
    if value.len() > MAX_PAYLOAD_LEN {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes, the limit is {MAX_PAYLOAD_LEN}", value.len()),
        ));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(value)
        .map(|_| ())
        .map_err(|e| ValidationError::new(field, format!("is not valid JSON: {e}")))
}

/// A stored snapshot of one stream's aggregate state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream the state was folded from.
    pub stream_id: StreamId,
    /// The stream version the state includes (the last event applied).
    pub version: u64,
    /// The aggregate's schema version when the snapshot was taken; a reader ignores a snapshot
    /// whose schema version is not its own.
    pub schema_version: u32,
    /// The state as JSON, returned exactly as saved (a corrupted one is for the reader to reject).
    pub payload: Bytes,
    /// When the snapshot was taken.
    pub taken_at: DateTime<Utc>,
}

/// Keeps the latest snapshot of each stream.
///
/// Snapshots are an optimisation: losing one only costs a longer replay, so the runtime treats
/// any it cannot use as absent.
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// Stores `snapshot` as the stream's latest, unless a snapshot of a higher version is
    /// already stored (a slow writer never replaces a newer snapshot). The payload must be JSON.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;

    /// The stream's latest snapshot, if any.
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError>;

    /// Forgets the stream's snapshot; returns whether there was one.
    async fn delete_snapshot(&self, stream: &StreamId) -> Result<bool, StoreError>;
}

/// Remembers, for each named processor, the position of the last event it has fully handled.
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The processor's checkpoint; `None` when it has never saved one (start from the beginning).
    async fn load_checkpoint(&self, processor: &str) -> Result<Option<Position>, StoreError>;

    /// Stores the processor's checkpoint, replacing the previous one.
    async fn save_checkpoint(&self, processor: &str, position: Position) -> Result<(), StoreError>;
}

/// The stored state of one saga instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaState {
    /// Optimistic version: 1 after the first save, +1 on every save.
    pub version: u64,
    /// The state as JSON, returned exactly as saved.
    pub state: Bytes,
    /// When it was last saved.
    pub updated_at: DateTime<Utc>,
}

/// Keeps saga instance state by (saga name, correlation key), with optimistic concurrency.
///
/// A version conflict is a [`StoreError::Concurrency`] whose stream is
/// `StreamId::new(saga, key)`, so it reads like any other conflict.
#[async_trait]
pub trait SagaStateStore: Send + Sync + 'static {
    /// The instance's state, `None` when it has none.
    async fn load_saga(&self, saga: &str, key: &str) -> Result<Option<SagaState>, StoreError>;

    /// Stores the instance's state if its stored version is `expected_version` (0: it must not
    /// exist yet); returns the new version.
    async fn save_saga(
        &self,
        saga: &str,
        key: &str,
        expected_version: u64,
        state: Bytes,
    ) -> Result<u64, StoreError>;

    /// Removes a finished instance if its stored version is `expected_version`.
    async fn delete_saga(
        &self,
        saga: &str,
        key: &str,
        expected_version: u64,
    ) -> Result<(), StoreError>;
}

/// An event a processor could not handle, parked with why and how often it failed.
///
/// It refers to the event (position, stream, version, id, type); the event itself stays in the
/// event store, so a replay reads it from there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead letter's id, increasing in parking order.
    pub id: u64,
    /// The processor that failed.
    pub processor: String,
    /// The event's global position.
    pub position: Position,
    /// The event's id.
    pub event_id: EventId,
    /// The event's stream.
    pub stream_id: StreamId,
    /// The event's version in its stream.
    pub stream_version: u64,
    /// The event's type name.
    pub event_type: String,
    /// The last error, as text.
    pub error: String,
    /// How many times handling was attempted.
    pub attempts: u32,
    /// When the event was (last) parked.
    pub parked_at: DateTime<Utc>,
}

/// What to park: the event's coordinates plus the failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDeadLetter {
    /// The processor that failed.
    pub processor: String,
    /// The event's global position.
    pub position: Position,
    /// The event's id.
    pub event_id: EventId,
    /// The event's stream.
    pub stream_id: StreamId,
    /// The event's version in its stream.
    pub stream_version: u64,
    /// The event's type name.
    pub event_type: String,
    /// The last error, as text.
    pub error: String,
    /// How many times handling was attempted.
    pub attempts: u32,
}

impl NewDeadLetter {
    /// A dead letter for `event`, handled by `processor`, that failed `attempts` times with `error`.
    pub fn for_event(
        processor: impl Into<String>,
        event: &crate::envelope::RecordedEvent,
        error: impl Into<String>,
        attempts: u32,
    ) -> Self {
        Self {
            processor: processor.into(),
            position: event.position,
            event_id: event.event_id,
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            event_type: event.event_type.clone(),
            error: error.into(),
            attempts,
        }
    }
}

/// Parks events that keep failing, in order, per processor.
#[async_trait]
pub trait DeadLetterStore: Send + Sync + 'static {
    /// Parks an event; parking the same event for the same processor again updates its error and
    /// attempt count and keeps its id. Returns the dead letter's id.
    async fn park(&self, letter: NewDeadLetter) -> Result<u64, StoreError>;

    /// Lists dead letters in id (parking) order, of one processor or all, with ids after `after`.
    async fn list_dead_letters(
        &self,
        processor: Option<&str>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// Removes a dead letter (after a successful replay); returns whether it existed.
    async fn delete_dead_letter(&self, id: u64) -> Result<bool, StoreError>;
}

/// The answer to an idempotency claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key was unknown and is now claimed by the caller, who runs the request and then calls
    /// [`IdempotencyStore::complete`] (or [`IdempotencyStore::release`] if it failed).
    New,
    /// Someone claimed the key earlier and has not completed it yet.
    InProgress {
        /// When it was claimed (a caller may treat a very old claim as abandoned).
        claimed_at: DateTime<Utc>,
    },
    /// The request already ran; this is its stored result.
    Completed(Bytes),
}

/// Remembers the results of requests by idempotency key, so a duplicate gets the original result.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` atomically: exactly one concurrent caller gets [`IdempotencyClaim::New`].
    async fn claim(&self, key: &str) -> Result<IdempotencyClaim, StoreError>;

    /// Stores the result (JSON) of the request claimed under `key`.
    async fn complete(&self, key: &str, result: Bytes) -> Result<(), StoreError>;

    /// Gives up a claim that has no result, so a retry can claim the key again; returns whether
    /// a pending claim was removed (a completed key is kept).
    async fn release(&self, key: &str) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_named() {
        assert!(validate_name("processor", "billing").is_ok());
        assert_eq!(
            validate_name("processor", "").unwrap_err().field(),
            "processor"
        );
        assert!(validate_name("key", "a\0b").is_err());
        assert!(validate_name("key", &"x".repeat(crate::MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn json_is_checked() {
        assert!(validate_json("state", br#"{"a":1}"#).is_ok());
        let err = validate_json("state", b"{nope").unwrap_err();
        assert_eq!(err.field(), "state");
    }
}
