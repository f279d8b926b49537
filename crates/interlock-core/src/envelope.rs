//! Envelopes: an event on its way into the store, and an event as the store recorded it.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DecodeError, DecodeReason};
use crate::ids::{EventId, StreamId};
use crate::message::{Event, SerializedEvent};
use crate::position::Position;

/// User metadata stored next to an event (free-form JSON object).
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// An event to append: everything but what the store assigns (version, position, time).
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Client-generated id; re-appending the same id is idempotent.
    pub event_id: EventId,
    /// Stable type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: u32,
    /// JSON payload.
    pub payload: Bytes,
    /// The id shared by all messages of one business flow.
    pub correlation_id: Option<Uuid>,
    /// The id of the message that caused this event.
    pub causation_id: Option<Uuid>,
    /// User metadata.
    pub metadata: Metadata,
}

impl NewEvent {
    /// Serializes a typed event with a fresh id and no context.
    pub fn from_event<E: Event>(event: &E) -> Result<Self, serde_json::Error> {
        Ok(Self::from_serialized(SerializedEvent::from_event(event)?))
    }

    /// Wraps an already serialized event with a fresh id and no context.
    pub fn from_serialized(event: SerializedEvent) -> Self {
        Self {
            event_id: EventId::new(),
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.payload,
            correlation_id: None,
            causation_id: None,
            metadata: Metadata::new(),
        }
    }

    /// Sets the event id (for idempotent retries that must reuse ids).
    pub fn with_event_id(mut self, id: EventId) -> Self {
        self.event_id = id;
        self
    }

    /// Sets the correlation and causation ids.
    pub fn with_context(mut self, correlation: Option<Uuid>, causation: Option<Uuid>) -> Self {
        self.correlation_id = correlation;
        self.causation_id = causation;
        self
    }

    /// Sets user metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Whether `recorded` holds the same event (same id, type, version, payload and context);
    /// stores use it to tell an idempotent retry from an id collision.
    pub fn same_content_as(&self, recorded: &RecordedEvent) -> bool {
        self.event_id == recorded.event_id
            && self.event_type == *recorded.event_type
            && self.schema_version == recorded.schema_version
            && self.payload == recorded.payload
            && self.correlation_id == recorded.correlation_id
            && self.causation_id == recorded.causation_id
            && self.metadata == recorded.metadata
    }
}

/// An event as stored: the full envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Client-generated id (UUID v7).
    pub event_id: EventId,
    /// The stream (aggregate type and id).
    pub stream_id: StreamId,
    /// 1-based, gapless version within the stream.
    pub stream_version: u64,
    /// Place in the store-wide order.
    pub position: Position,
    /// When the store committed the event.
    pub recorded_at: DateTime<Utc>,
    /// Stable type name.
    pub event_type: String,
    /// Schema version of the payload as stored.
    pub schema_version: u32,
    /// The id shared by all messages of one business flow.
    pub correlation_id: Option<Uuid>,
    /// The id of the message that caused this event.
    pub causation_id: Option<Uuid>,
    /// User metadata.
    pub metadata: Metadata,
    /// JSON payload.
    #[serde(with = "payload_as_json")]
    pub payload: Bytes,
}

impl RecordedEvent {
    /// Decodes the payload into `E`, checking the type name and schema version first.
    ///
    /// Errors name the stream, version and type, so a bad row can be found.
    pub fn decode<E: Event>(&self) -> Result<E, DecodeError> {
        if self.event_type != E::TYPE_NAME {
            return Err(self.decode_error(DecodeReason::UnexpectedType {
                expected: E::TYPE_NAME.to_owned(),
            }));
        }
        self.check_schema_version(E::SCHEMA_VERSION)?;
        self.decode_payload()
    }

    /// Fails when the stored schema version is not `known` (newer than the code, or older with
    /// no upcaster applied).
    pub fn check_schema_version(&self, known: u32) -> Result<(), DecodeError> {
        if self.schema_version == known {
            Ok(())
        } else if self.schema_version > known {
            Err(self.decode_error(DecodeReason::NewerSchemaVersion { known }))
        } else {
            Err(self.decode_error(DecodeReason::OlderSchemaVersion { known }))
        }
    }

    /// Decodes the payload into any deserializable type, without checking names or versions.
    pub fn decode_payload<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| self.decode_error(DecodeReason::Malformed(e.to_string())))
    }

    /// A decode error about this event.
    pub fn decode_error(&self, reason: DecodeReason) -> DecodeError {
        DecodeError {
            stream: self.stream_id.clone(),
            stream_version: self.stream_version,
            event_type: self.event_type.clone(),
            reason,
        }
    }

    /// The type name, version and payload alone.
    pub fn to_serialized(&self) -> SerializedEvent {
        SerializedEvent {
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            payload: self.payload.clone(),
        }
    }
}

/// Serializes the payload bytes as embedded JSON (not as an array of numbers), so exported
/// envelopes stay readable; falls back to a string when the bytes are not valid JSON.
mod payload_as_json {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(payload: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_slice::<&serde_json::value::RawValue>(payload) {
            Ok(raw) => raw.serialize(s),
            Err(_) => String::from_utf8_lossy(payload).serialize(s),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        serde_json::to_vec(&value)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}
