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

/// Whether [`envelope`] checks each column's type against the Rust type it decodes into.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Columns {
    /// Check (a single row, or the first of a result).
    Check,
    /// The first row of the same result was decoded with [`Columns::Check`]: the types are
    /// those of every row (one row description per result), so the check, a third of the cost
    /// of decoding a row, is not repeated. Values are still decoded and validated.
    Checked,
}

fn get_as<'r, T>(row: &'r PgRow, index: usize, columns: Columns) -> Result<T, StoreError>
where
    T: sqlx_core::decode::Decode<'r, sqlx_postgres::Postgres>
        + sqlx_core::types::Type<sqlx_postgres::Postgres>,
{
    match columns {
        Columns::Check => row.try_get(index),
        Columns::Checked => row.try_get_unchecked(index),
    }
    .map_err(store_error)
}

/// A stream id read back from storage; one that no longer validates is reported, not trusted.
pub(crate) fn stream_id(category: String, id: String) -> Result<StreamId, StoreError> {
    StreamId::new(category, id).map_err(|e| backend(format!("stored stream id is invalid: {e}")))
}

/// PostgreSQL's epoch, 2000-01-01T00:00:00Z, in Unix microseconds.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` column. Once the column's type is checked, its binary value (microseconds
/// since PostgreSQL's epoch) is converted directly: the same instant as the driver's decoding,
/// without its calendar arithmetic (a twentieth of the cost of reading a row).
fn timestamp(row: &PgRow, index: usize, columns: Columns) -> Result<DateTime<Utc>, StoreError> {
    match columns {
        Columns::Check => get(row, index),
        Columns::Checked => {
            let micros: i64 = row.try_get_unchecked(index).map_err(store_error)?;
            micros
                .checked_add(PG_EPOCH_UNIX_MICROS)
                .and_then(DateTime::from_timestamp_micros)
                .ok_or_else(|| backend(format!("stored timestamp {micros} is out of range")))
        }
    }
}

/// An event row selected with `schema::EVENT_COLUMNS`.
pub(crate) fn event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    event_at(row, 0, Columns::Check)
}

/// An event whose `schema::EVENT_COLUMNS` start at column `at`.
pub(crate) fn event_at(
    row: &PgRow,
    at: usize,
    columns: Columns,
) -> Result<RecordedEvent, StoreError> {
    envelope(row, at, None, columns)
}

/// An event row of `stream`, selected with `schema::STREAM_EVENT_COLUMNS` (the event columns
/// without the stream's category and id, which the query fixed to `stream`'s: a reload of a long
/// stream then neither transfers nor checks them again on every row).
pub(crate) fn stream_event(
    row: &PgRow,
    stream: &StreamId,
    columns: Columns,
) -> Result<RecordedEvent, StoreError> {
    envelope(row, 0, Some(stream), columns)
}

/// The envelope whose columns start at `at`; the stream's two columns are absent when the
/// stream is given.
fn envelope(
    row: &PgRow,
    at: usize,
    known_stream: Option<&StreamId>,
    columns: Columns,
) -> Result<RecordedEvent, StoreError> {
    // Borrowed where the value is only looked at (the position's text, the metadata), so that
    // a row costs no allocation it does not keep.
    let tx: &str = get_as(row, at, columns)?;
    let sequence: i64 = get_as(row, at + 1, columns)?;
    let event_id: Uuid = get_as(row, at + 2, columns)?;
    let (stream, at) = match known_stream {
        Some(stream) => (stream.clone(), at + 3),
        None => (
            stream_id(get_as(row, at + 3, columns)?, get_as(row, at + 4, columns)?)?,
            at + 5,
        ),
    };
    let version: i64 = get_as(row, at, columns)?;
    let event_type: String = get_as(row, at + 1, columns)?;
    let schema_version: i64 = get_as(row, at + 2, columns)?;
    let payload: Vec<u8> = get_as(row, at + 3, columns)?;
    let metadata: &[u8] = get_as(row, at + 4, columns)?;
    let correlation_id: Option<Uuid> = get_as(row, at + 5, columns)?;
    let causation_id: Option<Uuid> = get_as(row, at + 6, columns)?;
    let recorded_at = timestamp(row, at + 7, columns)?;

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
    let position = position(tx, sequence)
        .ok_or_else(|| corrupt(format!("position {tx}:{sequence} is invalid")))?;
    let schema_version = u32::try_from(schema_version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| corrupt(format!("schema version {schema_version} is out of range")))?;
    // Most events carry no metadata: the empty object needs no parser.
    let metadata: Metadata = if metadata == b"{}" {
        Metadata::new()
    } else {
        serde_json::from_slice(metadata)
            .map_err(|e| corrupt(format!("metadata is not a JSON object: {e}")))?
    };
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

#[cfg(test)]
mod tests {
    //! Against the server at `INTERLOCK_PG_URL` (default
    //! `postgres://postgres@127.0.0.1:5432/test`); skipped without one unless
    //! `INTERLOCK_REQUIRE_PG=1`.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[tokio::test]
    async fn checked_timestamps_decode_as_the_driver_does() {
        let url = std::env::var("INTERLOCK_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let pool = match sqlx_postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect(&url)
            .await
        {
            Ok(pool) => pool,
            Err(e) if std::env::var("INTERLOCK_REQUIRE_PG").is_ok_and(|v| v == "1") => {
                panic!("INTERLOCK_REQUIRE_PG=1 but no PostgreSQL server at {url}: {e}")
            }
            Err(e) => {
                eprintln!("notice: skipping PostgreSQL test, no server at {url} ({e})");
                return;
            }
        };
        // Before and after both epochs, with and without fractions, and the extremes chrono
        // and PostgreSQL share.
        let rows = sqlx_core::query::query(
            "SELECT t FROM unnest(ARRAY[now(), '2000-01-01T00:00:00Z', \
             '1999-12-31T23:59:59.999999Z', '1970-01-01T00:00:00Z', '1969-07-20T20:17:40.5Z', \
             '1066-10-14T09:00:00Z', '2262-04-11T23:47:16.854775Z', \
             '4713-01-01T00:00:00Z BC', '99999-12-31T23:59:59.999999Z']::timestamptz[]) AS t",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), 9);
        for row in &rows {
            let driver: DateTime<Utc> = get(row, 0).unwrap();
            assert_eq!(timestamp(row, 0, Columns::Checked).unwrap(), driver);
            assert_eq!(timestamp(row, 0, Columns::Check).unwrap(), driver);
        }
    }
}
