//! The event store contract every backend implements.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

use crate::envelope::{NewEvent, RecordedEvent};
use crate::error::{StoreError, ValidationError};
use crate::ids::StreamId;
use crate::position::{ExpectedVersion, Position};
use crate::side::{
    CheckpointStore, DeadLetterStore, IdempotencyStore, SagaStateStore, SnapshotStore,
};

/// Most events one append may carry; larger batches are refused before any write.
pub const MAX_BATCH_LEN: usize = 100_000;

/// Largest payload (or metadata document) of one event, in bytes.
pub const MAX_PAYLOAD_LEN: usize = 16 * 1024 * 1024;

/// Longest event type name, in bytes.
pub const MAX_TYPE_NAME_LEN: usize = 256;

/// What an append stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// Version of the first event of the batch.
    pub first_version: u64,
    /// Version of the last event of the batch: the stream's version after the append.
    pub last_version: u64,
    /// Position of the first event of the batch.
    pub first_position: Position,
    /// Position of the last event of the batch.
    pub last_position: Position,
    /// `true` when every event id of the batch was already stored (a retried append): nothing was
    /// written and the positions are those of the original append.
    pub already_appended: bool,
}

/// What a store knows about one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream.
    pub stream_id: StreamId,
    /// Its current version (the number of events in it).
    pub version: u64,
    /// Position of its last event.
    pub last_position: Position,
    /// When its first event was recorded.
    pub created_at: DateTime<Utc>,
    /// When its last event was recorded.
    pub updated_at: DateTime<Utc>,
}

/// A live feed of recorded events in global order: catch-up first, then new events as they commit.
pub type EventSubscription = BoxStream<'static, Result<RecordedEvent, StoreError>>;

/// The event store: streams of events with optimistic concurrency, plus one global order.
///
/// Every backend (in-memory, SQLite, PostgreSQL, MongoDB) implements this with the same
/// semantics, checked by the conformance suite in `interlock-testing`:
///
/// * `append` is atomic: all events of the batch are stored, or none.
/// * The expected version is checked inside the same transaction as the write; a mismatch is
///   [`StoreError::Concurrency`] naming the stream, what was expected and the actual version.
/// * Re-appending a batch whose event ids are all stored, in order, in this stream is not an error:
///   it returns the original result with `already_appended = true`, whatever the expected version
///   says. Reusing an id for different content is [`StoreError::DuplicateEventId`].
/// * Stream versions start at 1 and have no gaps. Global positions strictly increase in the order
///   readers see events, and a reader following `read_all` never skips an event that commits
///   later with a smaller position.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends a batch of events to one stream.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError>;

    /// Reads events of one stream with versions in `from..=to` (`to = None`: to the end), in
    /// version order. A missing stream reads as empty.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads up to `limit` events with positions after `after`, in global order.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Follows the global order from after `after`: every stored event, then live ones.
    fn subscribe_all(&self, after: Position) -> EventSubscription;

    /// The current version of a stream (0 when it has no events).
    async fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError>;

    /// What the store knows about one stream, `None` when it has no events.
    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>, StoreError>;

    /// Lists streams in id order, starting after `after`, at most `limit` of them.
    async fn list_streams(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError>;

    /// The position of the last event a reader can see, [`Position::START`] when empty.
    async fn head_position(&self) -> Result<Position, StoreError>;

    /// The side stores this backend keeps next to its events (snapshots, checkpoints, saga
    /// state, dead letters, idempotency keys), so an application given only the event store
    /// keeps everything in one place. `None` (the default) makes the application keep them in
    /// memory.
    fn side_stores(&self) -> Option<SideStores> {
        None
    }

    /// Replaces the type name, schema version and payload of one stored event, keeping its id,
    /// stream, version and position: the building block of explicit schema migrations. Never
    /// called by reads. Backends that cannot do it answer [`StoreError::Unsupported`].
    async fn rewrite_event(&self, rewrite: EventRewrite) -> Result<(), StoreError> {
        let _ = rewrite;
        Err(StoreError::Unsupported {
            backend: "this",
            operation: "rewriting stored events",
        })
    }
}

/// A new shape for one stored event, used by migrations.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRewrite {
    /// The event to change.
    pub event_id: crate::ids::EventId,
    /// Its stream (checked: the event must belong to it).
    pub stream_id: StreamId,
    /// The new type name.
    pub event_type: String,
    /// The new schema version.
    pub schema_version: u32,
    /// The new JSON payload.
    pub payload: bytes::Bytes,
}

/// Handles to the side stores of one backend.
#[derive(Clone)]
pub struct SideStores {
    /// Snapshots of aggregate state.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// Processor checkpoints.
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// Saga instance state.
    pub sagas: Arc<dyn SagaStateStore>,
    /// Parked events.
    pub dead_letters: Arc<dyn DeadLetterStore>,
    /// Idempotency keys and results.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Leases with fencing numbers, for processors split across processes; `None` when the
    /// backend does not keep them.
    pub leases: Option<Arc<dyn crate::lease::LeaseStore>>,
}

impl SideStores {
    /// All five side stores served by one backend handle.
    pub fn from_backend<B>(backend: B) -> Self
    where
        B: SnapshotStore
            + CheckpointStore
            + SagaStateStore
            + DeadLetterStore
            + IdempotencyStore
            + Clone,
    {
        Self {
            snapshots: Arc::new(backend.clone()),
            checkpoints: Arc::new(backend.clone()),
            sagas: Arc::new(backend.clone()),
            dead_letters: Arc::new(backend.clone()),
            idempotency: Arc::new(backend),
            leases: None,
        }
    }

    /// Adds the backend's lease store.
    pub fn with_leases(mut self, leases: impl crate::lease::LeaseStore) -> Self {
        self.leases = Some(Arc::new(leases));
        self
    }
}

impl std::fmt::Debug for SideStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideStores").finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: EventStore + ?Sized> EventStore for Arc<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        (**self).append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        (**self).read_stream(stream, from, to).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        (**self).read_all(after, limit).await
    }
    fn subscribe_all(&self, after: Position) -> EventSubscription {
        (**self).subscribe_all(after)
    }
    async fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        (**self).stream_version(stream).await
    }
    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>, StoreError> {
        (**self).stream_info(stream).await
    }
    async fn list_streams(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        (**self).list_streams(after, limit).await
    }
    async fn head_position(&self) -> Result<Position, StoreError> {
        (**self).head_position().await
    }
    fn side_stores(&self) -> Option<SideStores> {
        (**self).side_stores()
    }
    async fn rewrite_event(&self, rewrite: EventRewrite) -> Result<(), StoreError> {
        (**self).rewrite_event(rewrite).await
    }
}

/// Checks an append's input before any backend touches storage: a non-empty batch within the
/// size limits, no event id twice, sane type names, versions and payloads. Every backend calls
/// this first, so bad input is refused the same way everywhere.
pub fn validate_append(
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<(), ValidationError> {
    if events.is_empty() {
        return Err(ValidationError::new(
            "events",
            "an append needs at least one event",
        ));
    }
    if events.len() > MAX_BATCH_LEN {
        return Err(ValidationError::new(
            "events",
            format!(
                "{} events in one append, the limit is {MAX_BATCH_LEN}",
                events.len()
            ),
        ));
    }
    if let ExpectedVersion::Exact(v) = expected {
        // Versions are stored as signed 64-bit integers by SQL backends.
        if v > i64::MAX as u64 - MAX_BATCH_LEN as u64 {
            return Err(ValidationError::new(
                "expected_version",
                format!("{v} is beyond the largest storable version"),
            ));
        }
    }
    // Repeated ids: pairwise for the usual small batch (no allocation, no hashing), a set
    // beyond that.
    let mut seen = (events.len() > 16).then(|| HashSet::with_capacity(events.len()));
    for (index, event) in events.iter().enumerate() {
        let n = index + 1;
        let repeated = match &mut seen {
            Some(ids) => !ids.insert(event.event_id),
            None => events[..index].iter().any(|e| e.event_id == event.event_id),
        };
        if repeated {
            return Err(ValidationError::new(
                "event_id",
                format!("event #{n} repeats id {} within the batch", event.event_id),
            ));
        }
        validate_shape(
            format_args!("event #{n}"),
            &event.event_type,
            event.schema_version,
            &event.payload,
        )?;
        if !event.metadata.is_empty() {
            let len = serde_json::to_vec(&event.metadata).map_or(usize::MAX, |m| m.len());
            if len > MAX_PAYLOAD_LEN {
                return Err(ValidationError::new(
                    "metadata",
                    format!(
                        "event #{n} has {len} bytes of metadata, the limit is {MAX_PAYLOAD_LEN}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Recognises a retried append, the same way in every backend. `stored[i]` is the stored event
/// that has the id of `events[i]`, if any. Every id stored, in order, in this stream, with the
/// same content: the original result, `already_appended`. No id stored: `None` (a new append).
/// Anything in between (some ids stored, in another stream, out of order, other content) is a
/// [`StoreError::DuplicateEventId`] naming a stored id, never a false concurrency error.
pub fn recognise_retry(
    stream: &StreamId,
    events: &[NewEvent],
    stored: &[Option<&RecordedEvent>],
) -> Result<Option<AppendResult>, StoreError> {
    let Some(first) = stored.iter().flatten().next().copied() else {
        return Ok(None);
    };
    for (offset, (new, recorded)) in events.iter().zip(stored).enumerate() {
        let matches = recorded.is_some_and(|r| {
            r.stream_id == *stream
                && r.stream_version == first.stream_version + offset as u64
                && new.same_content_as(r)
        });
        if !matches {
            // A partial overlap names an id that is stored, so the message stays true.
            let clash = recorded.unwrap_or(first);
            return Err(StoreError::DuplicateEventId {
                event_id: clash.event_id,
                stream: Some(clash.stream_id.clone()),
            });
        }
    }
    let last = stored.last().copied().flatten().unwrap_or(first);
    Ok(Some(AppendResult {
        first_version: first.stream_version,
        last_version: last.stream_version,
        first_position: first.position,
        last_position: last.position,
        already_appended: true,
    }))
}

/// Checks a migration's new shape for one event the way [`validate_append`] checks new events.
pub fn validate_rewrite(rewrite: &EventRewrite) -> Result<(), ValidationError> {
    validate_shape(
        format_args!("event {}", rewrite.event_id),
        &rewrite.event_type,
        rewrite.schema_version,
        &rewrite.payload,
    )
}

/// Type name, schema version and payload checks shared by appends and rewrites; `which` names
/// the event in messages.
fn validate_shape(
    which: std::fmt::Arguments<'_>,
    ty: &str,
    schema_version: u32,
    payload: &[u8],
) -> Result<(), ValidationError> {
    if ty.is_empty() || ty.len() > MAX_TYPE_NAME_LEN || ty.contains('\0') {
        return Err(ValidationError::new(
            "event_type",
            format!(
                "{which} has type name {:?}: it must be 1 to {MAX_TYPE_NAME_LEN} bytes without NUL",
                truncate(ty)
            ),
        ));
    }
    if schema_version == 0 {
        return Err(ValidationError::new(
            "schema_version",
            format!("{which} ({ty}) has schema version 0; versions start at 1"),
        ));
    }
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(ValidationError::new(
            "payload",
            format!(
                "{which} ({ty}) is {} bytes, the limit is {MAX_PAYLOAD_LEN}",
                payload.len()
            ),
        ));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(payload) {
        return Err(ValidationError::new(
            "payload",
            format!("{which} ({ty}) is not valid JSON: {e}"),
        ));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
