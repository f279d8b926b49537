//! BSON documents to envelopes and back, trusting nothing that was stored.
//!
//! Typed values are native BSON: ids are UUIDs (binary subtype 4), times are BSON datetimes,
//! versions and positions are 64-bit integers. Payloads and metadata are the caller's JSON
//! bytes as BSON binary (subtype 0), so they come back byte for byte.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use interlock_core::{
    DecodeError, DecodeReason, EventId, Metadata, NewEvent, Position, RecordedEvent, StoreError,
    StreamId, StreamInfo,
};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, Document, doc};
use uuid::Uuid;

use crate::error::backend;

/// A `u64` the store made (versions, positions) as a BSON int64. They never exceed
/// `i64::MAX` here; larger values from callers are clamped where that keeps the meaning.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A `u64` kept exactly through an int64 (checkpoints and dead letters store positions they
/// did not make, and must give them back unchanged).
pub(crate) fn bits_to_i64(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The inverse of [`bits_to_i64`].
pub(crate) fn bits_to_u64(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// A UUID as BSON binary subtype 4.
pub(crate) fn uuid(value: &Uuid) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: value.as_bytes().to_vec(),
    })
}

/// Bytes as BSON binary subtype 0.
pub(crate) fn binary(value: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: value.to_vec(),
    })
}

/// A time as a BSON datetime (millisecond precision).
pub(crate) fn datetime(value: DateTime<Utc>) -> Bson {
    Bson::DateTime(mongodb::bson::DateTime::from_millis(
        value.timestamp_millis(),
    ))
}

/// Now, at the millisecond precision BSON keeps, so what a call returns equals what a later
/// read returns.
pub(crate) fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// Reads typed fields of one stored document, naming the document in errors.
pub(crate) struct Fields<'a> {
    doc: &'a Document,
    what: &'a str,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(doc: &'a Document, what: &'a str) -> Self {
        Self { doc, what }
    }

    fn bad(&self, field: &str, expected: &str) -> String {
        match self.doc.get(field) {
            None => format!("{} has no {field}", self.what),
            Some(value) => format!(
                "{} has a {field} of type {:?}, expected {expected}",
                self.what,
                value.element_type()
            ),
        }
    }

    pub(crate) fn str(&self, field: &str) -> Result<&'a str, String> {
        match self.doc.get(field) {
            Some(Bson::String(s)) => Ok(s),
            _ => Err(self.bad(field, "a string")),
        }
    }

    pub(crate) fn i64(&self, field: &str) -> Result<i64, String> {
        match self.doc.get(field) {
            Some(Bson::Int64(v)) => Ok(*v),
            Some(Bson::Int32(v)) => Ok(i64::from(*v)),
            _ => Err(self.bad(field, "an integer")),
        }
    }

    /// A non-negative integer.
    pub(crate) fn u64(&self, field: &str) -> Result<u64, String> {
        let value = self.i64(field)?;
        u64::try_from(value).map_err(|_| format!("{} has a negative {field} {value}", self.what))
    }

    pub(crate) fn bytes(&self, field: &str) -> Result<&'a [u8], String> {
        match self.doc.get(field) {
            Some(Bson::Binary(b)) if b.subtype == BinarySubtype::Generic => Ok(&b.bytes),
            _ => Err(self.bad(field, "generic binary")),
        }
    }

    pub(crate) fn uuid(&self, field: &str) -> Result<Uuid, String> {
        match self.doc.get(field) {
            Some(Bson::Binary(b)) if b.subtype == BinarySubtype::Uuid => Uuid::from_slice(&b.bytes)
                .map_err(|_| format!("{} has a {field} of {} bytes", self.what, b.bytes.len())),
            _ => Err(self.bad(field, "a UUID")),
        }
    }

    pub(crate) fn optional_uuid(&self, field: &str) -> Result<Option<Uuid>, String> {
        match self.doc.get(field) {
            None | Some(Bson::Null) => Ok(None),
            Some(_) => self.uuid(field).map(Some),
        }
    }

    pub(crate) fn datetime(&self, field: &str) -> Result<DateTime<Utc>, String> {
        match self.doc.get(field) {
            Some(Bson::DateTime(t)) => DateTime::from_timestamp_millis(t.timestamp_millis())
                .ok_or_else(|| format!("{} has an out-of-range {field}", self.what)),
            _ => Err(self.bad(field, "a datetime")),
        }
    }
}

/// The filter selecting one stream's documents.
pub(crate) fn stream_filter(stream: &StreamId) -> Document {
    // Both parts are bound as BSON strings: a stream id that looks like an operator document
    // (`{"$gt": ""}`) is compared as the text it is, never interpreted.
    doc! { "category": stream.category(), "stream_id": stream.id() }
}

/// The document of a new event.
pub(crate) fn event_document(
    event: &NewEvent,
    stream: &StreamId,
    version: u64,
    position: u64,
    recorded_at: DateTime<Utc>,
) -> Result<Document, StoreError> {
    let metadata = serde_json::to_vec(&event.metadata)
        .map_err(|e| backend(format!("metadata does not serialize: {e}")))?;
    Ok(doc! {
        "_id": to_i64(position),
        "event_id": uuid(event.event_id.as_uuid()),
        "category": stream.category(),
        "stream_id": stream.id(),
        "version": to_i64(version),
        "type": event.event_type.as_str(),
        "schema_version": i64::from(event.schema_version),
        "payload": binary(&event.payload),
        "metadata": binary(&metadata),
        "correlation_id": event.correlation_id.as_ref().map_or(Bson::Null, uuid),
        "causation_id": event.causation_id.as_ref().map_or(Bson::Null, uuid),
        "recorded_at": datetime(recorded_at),
    })
}

/// A stream id read back from storage; one that no longer validates is reported, not trusted.
fn stream_id(fields: &Fields<'_>) -> Result<StreamId, StoreError> {
    let category = fields.str("category").map_err(backend)?;
    let id = fields.str("stream_id").map_err(backend)?;
    StreamId::new(category, id).map_err(|e| backend(format!("stored stream id is invalid: {e}")))
}

/// An event document, decoded. A document that cannot name its stream, version and type is a
/// backend error; any other bad field is a [`DecodeError`] naming them.
pub(crate) fn event(doc: &Document) -> Result<RecordedEvent, StoreError> {
    let fields = Fields::new(doc, "a stored event");
    let stream = stream_id(&fields)?;
    let version = fields.i64("version").map_err(backend)?;
    let event_type = fields.str("type").map_err(backend)?.to_owned();
    let corrupt = |reason: String| {
        StoreError::Decode(DecodeError {
            stream: stream.clone(),
            stream_version: u64::try_from(version).unwrap_or(0),
            event_type: event_type.clone(),
            reason: DecodeReason::CorruptEnvelope(reason),
        })
    };
    let stream_version = u64::try_from(version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| corrupt(format!("stream version {version} is not positive")))?;
    let position = fields
        .u64("_id")
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| corrupt(format!("position {:?} is not positive", doc.get("_id"))))?;
    let schema_version = fields.i64("schema_version").map_err(corrupt)?;
    let schema_version = u32::try_from(schema_version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| corrupt(format!("schema version {schema_version} is out of range")))?;
    let metadata: Metadata = serde_json::from_slice(fields.bytes("metadata").map_err(corrupt)?)
        .map_err(|e| corrupt(format!("metadata is not a JSON object: {e}")))?;
    Ok(RecordedEvent {
        event_id: EventId::from_uuid(fields.uuid("event_id").map_err(corrupt)?),
        stream_version,
        position: Position::from_sequence(position),
        recorded_at: fields.datetime("recorded_at").map_err(corrupt)?,
        schema_version,
        correlation_id: fields.optional_uuid("correlation_id").map_err(corrupt)?,
        causation_id: fields.optional_uuid("causation_id").map_err(corrupt)?,
        metadata,
        payload: Bytes::copy_from_slice(fields.bytes("payload").map_err(corrupt)?),
        stream_id: stream,
        event_type,
    })
}

/// A stream document, decoded.
pub(crate) fn stream_info(doc: &Document) -> Result<StreamInfo, StoreError> {
    let fields = Fields::new(doc, "a stored stream");
    let stream = stream_id(&fields)?;
    let bad = |reason: String| backend(format!("stream {stream}: {reason}"));
    Ok(StreamInfo {
        version: fields.u64("version").map_err(bad)?,
        last_position: Position::from_sequence(fields.u64("last_position").map_err(bad)?),
        created_at: fields.datetime("created_at").map_err(bad)?,
        updated_at: fields.datetime("updated_at").map_err(bad)?,
        stream_id: stream.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_documents() {
        let stream = StreamId::new("Cat {\"$gt\": \"\"}", "{\"$ne\": null}").unwrap();
        let mut new = NewEvent {
            event_id: EventId::new(),
            event_type: "T".into(),
            schema_version: 3,
            payload: Bytes::from_static(b"{ \"a\" : 1.50 }"),
            correlation_id: Some(Uuid::now_v7()),
            causation_id: None,
            metadata: Metadata::new(),
        };
        new.metadata
            .insert("$where".into(), serde_json::json!({"k\u{0}": u64::MAX}));
        let at = now();
        let doc = event_document(&new, &stream, 7, 42, at).unwrap();
        let back = event(&doc).unwrap();
        assert!(new.same_content_as(&back));
        assert_eq!(back.stream_id, stream);
        assert_eq!(
            (back.stream_version, back.position),
            (7, Position::from_sequence(42))
        );
        assert_eq!(back.recorded_at, at);
    }

    #[test]
    fn corrupt_documents_are_named() {
        let stream = StreamId::new("S", "1").unwrap();
        let new = NewEvent::from_serialized(interlock_core::SerializedEvent {
            event_type: "T".into(),
            schema_version: 1,
            payload: Bytes::from_static(b"{}"),
        });
        let mut doc = event_document(&new, &stream, 1, 1, now()).unwrap();
        doc.insert("schema_version", "one");
        match event(&doc) {
            Err(StoreError::Decode(e)) => {
                assert_eq!((e.stream_version, e.event_type.as_str()), (1, "T"));
                assert!(e.to_string().contains("schema_version"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        doc.remove("type");
        assert!(matches!(event(&doc), Err(StoreError::Backend { .. })));
        assert_eq!(bits_to_u64(bits_to_i64(u64::MAX)), u64::MAX);
    }
}
