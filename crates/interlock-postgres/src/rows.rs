//! Turning rows into envelopes and positions, trusting nothing that was stored.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use interlock_core::{
    DecodeError, DecodeReason, EventId, Metadata, Position, RecordedEvent, StoreError, StreamId,
    StreamInfo,
};
use sqlx_core::row::Row;
use sqlx_postgres::PgRow;
use uuid::Uuid;

use crate::error::{backend, store_error};

/// A stored `u64` as PostgreSQL's `bigint`. Positions and versions never exceed `i64::MAX` in
/// this store; values from callers above it are clamped where that keeps the meaning.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A `u64` kept exactly through a `bigint` column (checkpoints and dead letters store
/// positions they did not make, and must give them back unchanged).
pub(crate) fn bits_to_i64(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The inverse of [`bits_to_i64`].
pub(crate) fn bits_to_u64(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// A position from a transaction id (as text) and a sequence number.
pub(crate) fn position(tx: &str, sequence: i64) -> Option<Position> {
    let tx = tx.parse::<u64>().ok()?;
    let sequence = u64::try_from(sequence).ok()?;
    Some(Position::new(tx, sequence))
}

fn get<'r, T>(row: &'r PgRow, index: usize) -> Result<T, StoreError>
where
    T: sqlx_core::decode::Decode<'r, sqlx_postgres::Postgres>
        + sqlx_core::types::Type<sqlx_postgres::Postgres>,
{
    row.try_get(index).map_err(store_error)
}

/// A stream id read back from storage; one that no longer validates is reported, not trusted.
pub(crate) fn stream_id(category: String, id: String) -> Result<StreamId, StoreError> {
    StreamId::new(category, id).map_err(|e| backend(format!("stored stream id is invalid: {e}")))
}

/// An event row selected with `schema::EVENT_COLUMNS`.
pub(crate) fn event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    event_at(row, 0)
}

/// An event whose `schema::EVENT_COLUMNS` start at column `at`.
pub(crate) fn event_at(row: &PgRow, at: usize) -> Result<RecordedEvent, StoreError> {
    let tx: String = get(row, at)?;
    let sequence: i64 = get(row, at + 1)?;
    let event_id: Uuid = get(row, at + 2)?;
    let stream = stream_id(get(row, at + 3)?, get(row, at + 4)?)?;
    let version: i64 = get(row, at + 5)?;
    let event_type: String = get(row, at + 6)?;
    let schema_version: i64 = get(row, at + 7)?;
    let payload: Vec<u8> = get(row, at + 8)?;
    let metadata: Vec<u8> = get(row, at + 9)?;
    let correlation_id: Option<Uuid> = get(row, at + 10)?;
    let causation_id: Option<Uuid> = get(row, at + 11)?;
    let recorded_at: DateTime<Utc> = get(row, at + 12)?;

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
    let position = position(&tx, sequence)
        .ok_or_else(|| corrupt(format!("position {tx}:{sequence} is invalid")))?;
    let schema_version = u32::try_from(schema_version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| corrupt(format!("schema version {schema_version} is out of range")))?;
    let metadata: Metadata = serde_json::from_slice(&metadata)
        .map_err(|e| corrupt(format!("metadata is not a JSON object: {e}")))?;
    Ok(RecordedEvent {
        event_id: EventId::from_uuid(event_id),
        stream_id: stream,
        stream_version,
        position,
        recorded_at,
        event_type,
        schema_version,
        correlation_id,
        causation_id,
        metadata,
        payload: Bytes::from(payload),
    })
}

/// A `streams` row: category, stream id, version, last tx, last position, created, updated.
pub(crate) fn stream_info(row: &PgRow) -> Result<StreamInfo, StoreError> {
    let stream = stream_id(get(row, 0)?, get(row, 1)?)?;
    let version: i64 = get(row, 2)?;
    let tx: String = get(row, 3)?;
    let sequence: i64 = get(row, 4)?;
    let bad = |what: &str| backend(format!("stream {stream} has an invalid {what}"));
    Ok(StreamInfo {
        version: u64::try_from(version).map_err(|_| bad("version"))?,
        last_position: position(&tx, sequence).ok_or_else(|| bad("last position"))?,
        created_at: get(row, 5)?,
        updated_at: get(row, 6)?,
        stream_id: stream,
    })
}

/// Column `index` of a stored JSON document, as bytes.
pub(crate) fn bytes(row: &PgRow, index: usize) -> Result<Bytes, StoreError> {
    get::<Vec<u8>>(row, index).map(Bytes::from)
}

/// Column `index`, decoded.
pub(crate) fn column<'r, T>(row: &'r PgRow, index: usize) -> Result<T, StoreError>
where
    T: sqlx_core::decode::Decode<'r, sqlx_postgres::Postgres>
        + sqlx_core::types::Type<sqlx_postgres::Postgres>,
{
    get(row, index)
}
