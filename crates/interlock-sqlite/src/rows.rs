//! Turning stored rows back into values, trusting nothing in them.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use interlock_core::{
    DecodeError, DecodeReason, EventId, Metadata, Position, RecordedEvent, StoreError, StreamId,
    StreamInfo,
};
use rusqlite::Row;
use rusqlite::types::ValueRef;
use uuid::Uuid;

use crate::error::{BACKEND, store_error};

/// The columns [`decode_event`] reads, in its order.
pub(crate) const EVENT_COLUMNS: &str = "position, event_id, category, stream_id, version, \
     event_type, schema_version, payload, metadata, correlation_id, causation_id, recorded_at";

/// The columns [`decode_stream_info`] reads, in its order.
pub(crate) const STREAM_COLUMNS: &str =
    "category, stream_id, version, last_position, created_at, updated_at";

/// Now, as stored: nanoseconds since the Unix epoch (good until the year 2262).
pub(crate) fn now_nanos() -> i64 {
    to_nanos(Utc::now())
}

pub(crate) fn to_nanos(time: DateTime<Utc>) -> i64 {
    time.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

pub(crate) fn from_nanos(nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(nanos)
}

/// A `u64` for a SQL parameter, saturated at `i64::MAX` (SQLite integers are signed).
pub(crate) fn sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn int(value: ValueRef<'_>) -> Option<i64> {
    match value {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    }
}

fn bytes(value: ValueRef<'_>) -> Option<&[u8]> {
    match value {
        ValueRef::Blob(b) | ValueRef::Text(b) => Some(b),
        _ => None,
    }
}

fn text_lossy(value: ValueRef<'_>) -> String {
    bytes(value).map_or_else(String::new, |b| String::from_utf8_lossy(b).into_owned())
}

fn uuid(value: ValueRef<'_>) -> Result<Option<Uuid>, String> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(b) => Uuid::from_slice(b)
            .map(Some)
            .map_err(|_| format!("a {}-byte blob is not a UUID", b.len())),
        other => Err(format!("a {} is not a UUID", other.data_type())),
    }
}

/// Reads one row of [`EVENT_COLUMNS`]. Anything malformed in the envelope is a
/// [`DecodeError`] naming the stream, version and type (as far as they are readable); the payload
/// is returned as stored, for typed decoding to judge.
pub(crate) fn decode_event(row: &Row<'_>) -> Result<RecordedEvent, StoreError> {
    let col = |i: usize| row.get_ref(i).map_err(store_error);
    let raw_position = int(col(0)?).unwrap_or(0);
    let stream_id = stream_or_placeholder(col(2)?, col(3)?, raw_position);
    let raw_version = int(col(4)?);
    let event_type_raw = col(5)?;
    let event_type = text_lossy(event_type_raw);
    let corrupt = |reason: String| -> StoreError {
        DecodeError {
            stream: stream_id.clone(),
            stream_version: raw_version.and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
            event_type: event_type.clone(),
            reason: DecodeReason::CorruptEnvelope(reason),
        }
        .into()
    };

    let position = u64::try_from(raw_position)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| corrupt(format!("position {raw_position} is not positive")))?;
    if stream_id.category() == PLACEHOLDER_CATEGORY {
        return Err(corrupt("the stream id columns are unreadable".to_owned()));
    }
    let stream_version = raw_version
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| corrupt("the stream version is not a positive integer".to_owned()))?;
    if !matches!(event_type_raw, ValueRef::Text(t) if std::str::from_utf8(t).is_ok()) {
        return Err(corrupt("the type name is not UTF-8 text".to_owned()));
    }
    let event_id = match uuid(col(1)?) {
        Ok(Some(id)) => EventId::from_uuid(id),
        Ok(None) => return Err(corrupt("the event id is missing".to_owned())),
        Err(e) => return Err(corrupt(format!("event id: {e}"))),
    };
    let schema_version = int(col(6)?)
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| corrupt("the schema version is not a positive 32-bit integer".to_owned()))?;
    let payload = bytes(col(7)?)
        .map(Bytes::copy_from_slice)
        .ok_or_else(|| corrupt("the payload is missing".to_owned()))?;
    let metadata: Metadata = match bytes(col(8)?) {
        Some(b) => serde_json::from_slice(b)
            .map_err(|e| corrupt(format!("metadata is not a JSON object: {e}")))?,
        None => return Err(corrupt("the metadata is missing".to_owned())),
    };
    let correlation_id = uuid(col(9)?).map_err(|e| corrupt(format!("correlation id: {e}")))?;
    let causation_id = uuid(col(10)?).map_err(|e| corrupt(format!("causation id: {e}")))?;
    let recorded_at = int(col(11)?)
        .map(from_nanos)
        .ok_or_else(|| corrupt("the recording time is not an integer".to_owned()))?;
    Ok(RecordedEvent {
        event_id,
        stream_id,
        stream_version,
        position: Position::from_sequence(position),
        recorded_at,
        event_type,
        schema_version,
        correlation_id,
        causation_id,
        metadata,
        payload,
    })
}

const PLACEHOLDER_CATEGORY: &str = "$unreadable";

/// The stream named by two text columns; when they are not a valid stream id, a placeholder
/// naming the row's position, so errors can still point at the row.
fn stream_or_placeholder(category: ValueRef<'_>, id: ValueRef<'_>, position: i64) -> StreamId {
    let parts = match (category, id) {
        (ValueRef::Text(c), ValueRef::Text(i)) => {
            std::str::from_utf8(c).ok().zip(std::str::from_utf8(i).ok())
        }
        _ => None,
    };
    parts
        .and_then(|(c, i)| StreamId::new(c, i).ok())
        .or_else(|| StreamId::new(PLACEHOLDER_CATEGORY, format!("position {position}")).ok())
        .unwrap_or_else(placeholder_stream)
}

#[allow(clippy::expect_used)] // a constant, valid stream id
fn placeholder_stream() -> StreamId {
    StreamId::new(PLACEHOLDER_CATEGORY, "?").expect("constant stream id is valid")
}

/// A backend error for a side-table or `streams` row that does not hold what we wrote.
pub(crate) fn corrupt_row(table: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        source: format!("corrupt row in {table}: {what}").into(),
    }
}

/// Reads a stream id from two text columns of a side table.
pub(crate) fn stream_at(row: &Row<'_>, first: usize, table: &str) -> Result<StreamId, StoreError> {
    let category = text_lossy(row.get_ref(first).map_err(store_error)?);
    let id = text_lossy(row.get_ref(first + 1).map_err(store_error)?);
    StreamId::new(category, id).map_err(|e| corrupt_row(table, e))
}

/// Reads a non-negative integer column of a side table.
pub(crate) fn u64_at(row: &Row<'_>, index: usize, table: &str) -> Result<u64, StoreError> {
    int(row.get_ref(index).map_err(store_error)?)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| {
            corrupt_row(
                table,
                format!("column {index} is not a non-negative integer"),
            )
        })
}

/// Reads a time column of a side table.
pub(crate) fn time_at(
    row: &Row<'_>,
    index: usize,
    table: &str,
) -> Result<DateTime<Utc>, StoreError> {
    int(row.get_ref(index).map_err(store_error)?)
        .map(from_nanos)
        .ok_or_else(|| corrupt_row(table, format!("column {index} is not a time")))
}

/// Reads a text or blob column as bytes.
pub(crate) fn bytes_at(row: &Row<'_>, index: usize, table: &str) -> Result<Bytes, StoreError> {
    bytes(row.get_ref(index).map_err(store_error)?)
        .map(Bytes::copy_from_slice)
        .ok_or_else(|| corrupt_row(table, format!("column {index} is empty")))
}

/// Reads a text column.
pub(crate) fn text_at(row: &Row<'_>, index: usize) -> Result<String, StoreError> {
    Ok(text_lossy(row.get_ref(index).map_err(store_error)?))
}

/// Reads a UUID blob column.
pub(crate) fn uuid_at(row: &Row<'_>, index: usize, table: &str) -> Result<Uuid, StoreError> {
    match uuid(row.get_ref(index).map_err(store_error)?) {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(corrupt_row(table, "missing id")),
        Err(e) => Err(corrupt_row(table, e)),
    }
}

/// Reads one row of [`STREAM_COLUMNS`].
pub(crate) fn decode_stream_info(row: &Row<'_>) -> Result<StreamInfo, StoreError> {
    Ok(StreamInfo {
        stream_id: stream_at(row, 0, "streams")?,
        version: u64_at(row, 2, "streams")?,
        last_position: Position::from_sequence(u64_at(row, 3, "streams")?),
        created_at: time_at(row, 4, "streams")?,
        updated_at: time_at(row, 5, "streams")?,
    })
}

/// Collects every row of a query through `decode`.
pub(crate) fn collect<T>(
    mut rows: rusqlite::Rows<'_>,
    mut decode: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(store_error)? {
        out.push(decode(row)?);
    }
    Ok(out)
}
