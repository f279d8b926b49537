//! One append, run by the writer thread inside its own savepoint.

use chrono::{DateTime, Utc};
use interlock_core::{
    AppendResult, ConcurrencyError, ExpectedVersion, MAX_PAYLOAD_LEN, NewEvent, Position,
    RecordedEvent, StoreError, StreamId, ValidationError, recognise_retry,
};
use rusqlite::{Connection, ErrorCode, OptionalExtension};

use crate::error::store_error;
use crate::rows::{EVENT_COLUMNS, decode_event, sql_int, to_nanos};

/// Appends `events` to `stream` if `expected` holds, with the in-memory store's semantics:
/// a retried batch (every id stored, in order, in this stream, same content) returns the
/// original result; an id stored with other content is [`StoreError::DuplicateEventId`]; a
/// version mismatch is a [`ConcurrencyError`]. Input was validated by the caller.
///
/// On error the caller rolls back to the job's savepoint, so partial inserts vanish.
pub(crate) fn append(
    conn: &Connection,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
    now: DateTime<Utc>,
) -> Result<AppendResult, StoreError> {
    if events.is_empty() {
        return Err(ValidationError::new("events", "an append needs at least one event").into());
    }
    let current = stream_version(conn, stream)?;
    if !expected.is_satisfied_by(current) {
        // A retry carries a stale expected version: recognise it first, as the in-memory store
        // does (which also reports an id collision before a version conflict).
        if let Some(existing) = existing_append(conn, stream, events)? {
            return Ok(existing);
        }
        return Err(conflict(stream, expected, current));
    }

    let recorded_at = to_nanos(now);
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO events (event_id, category, stream_id, version, event_type, \
             schema_version, payload, metadata, correlation_id, causation_id, recorded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .map_err(store_error)?;
    let mut first_position = 0;
    let mut last_position = 0;
    for (offset, event) in events.iter().enumerate() {
        let version = current + offset as u64 + 1;
        let metadata = metadata_json(event, offset)?;
        let inserted = insert.execute((
            &event.event_id.as_uuid().as_bytes()[..],
            stream.category(),
            stream.id(),
            sql_int(version),
            &event.event_type,
            event.schema_version,
            &event.payload[..],
            &metadata,
            event.correlation_id.as_ref().map(|id| &id.as_bytes()[..]),
            event.causation_id.as_ref().map(|id| &id.as_bytes()[..]),
            recorded_at,
        ));
        match inserted {
            Ok(_) => {}
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                // The hot path does not look ids up first: the unique index tells us when an id
                // is stored. If it is the first one, this may be a retry.
                if offset == 0
                    && let Some(existing) = existing_append(conn, stream, events)?
                {
                    return Ok(existing);
                }
                return Err(unique_violation(conn, stream, expected, event)?);
            }
            Err(e) => return Err(store_error(e)),
        }
        last_position = conn.last_insert_rowid();
        if offset == 0 {
            first_position = last_position;
        }
    }
    let last_version = current + events.len() as u64;
    conn.prepare_cached(
        "INSERT INTO streams (category, stream_id, version, last_position, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
         ON CONFLICT (category, stream_id) DO UPDATE SET \
         version = excluded.version, last_position = excluded.last_position, \
         updated_at = excluded.updated_at",
    )
    .and_then(|mut s| {
        s.execute((
            stream.category(),
            stream.id(),
            sql_int(last_version),
            last_position,
            recorded_at,
        ))
    })
    .map_err(store_error)?;
    Ok(AppendResult {
        first_version: current + 1,
        last_version,
        first_position: position(first_position),
        last_position: position(last_position),
        already_appended: false,
    })
}

fn position(rowid: i64) -> Position {
    Position::from_sequence(u64::try_from(rowid).unwrap_or(0))
}

fn conflict(stream: &StreamId, expected: ExpectedVersion, actual: u64) -> StoreError {
    ConcurrencyError {
        stream: stream.clone(),
        expected,
        actual,
    }
    .into()
}

fn metadata_json(event: &NewEvent, offset: usize) -> Result<String, StoreError> {
    let n = offset + 1;
    let json = serde_json::to_string(&event.metadata).map_err(|e| {
        ValidationError::new(
            "metadata",
            format!("event #{n} has unserializable metadata: {e}"),
        )
    })?;
    if json.len() > MAX_PAYLOAD_LEN {
        return Err(ValidationError::new(
            "metadata",
            format!(
                "event #{n} ({}) has {} bytes of metadata, the limit is {MAX_PAYLOAD_LEN}",
                event.event_type,
                json.len()
            ),
        )
        .into());
    }
    Ok(json)
}

fn stored_event(conn: &Connection, event: &NewEvent) -> Result<Option<RecordedEvent>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ?1"
        ))
        .map_err(store_error)?;
    let mut rows = stmt
        .query([&event.event_id.as_uuid().as_bytes()[..]])
        .map_err(store_error)?;
    match rows.next().map_err(store_error)? {
        Some(row) => decode_event(row).map(Some),
        None => Ok(None),
    }
}

/// The stream's current version (0 when it has no events).
pub(crate) fn stream_version(conn: &Connection, stream: &StreamId) -> Result<u64, StoreError> {
    let version: Option<i64> = conn
        .prepare_cached("SELECT version FROM streams WHERE category = ?1 AND stream_id = ?2")
        .and_then(|mut s| {
            s.query_row((stream.category(), stream.id()), |r| r.get(0))
                .optional()
        })
        .map_err(store_error)?;
    Ok(version.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

/// Recognises a retried append, exactly as the in-memory store does: every id stored, in order,
/// in this stream, with the same content gives the original result; any partial or different
/// match is a [`StoreError::DuplicateEventId`] naming a stored id; no stored id gives `None`.
fn existing_append(
    conn: &Connection,
    stream: &StreamId,
    events: &[NewEvent],
) -> Result<Option<AppendResult>, StoreError> {
    let mut stored = Vec::with_capacity(events.len());
    for event in events {
        stored.push(stored_event(conn, event)?);
    }
    let stored: Vec<Option<&RecordedEvent>> = stored.iter().map(Option::as_ref).collect();
    recognise_retry(stream, events, &stored)
}

/// A unique index refused `event`: either its id is stored already (the earlier ids of this
/// batch were new, so it is the batch's first stored id) or its (stream, version) is taken, which
/// the version check should have caught; the index is the final word either way.
fn unique_violation(
    conn: &Connection,
    stream: &StreamId,
    expected: ExpectedVersion,
    event: &NewEvent,
) -> Result<StoreError, StoreError> {
    if let Some(clash) = stored_event(conn, event)? {
        return Ok(StoreError::DuplicateEventId {
            event_id: clash.event_id,
            stream: Some(clash.stream_id),
        });
    }
    let actual: Option<i64> = conn
        .prepare_cached("SELECT max(version) FROM events WHERE category = ?1 AND stream_id = ?2")
        .and_then(|mut s| s.query_row((stream.category(), stream.id()), |r| r.get(0)))
        .map_err(store_error)?;
    let actual = actual.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    Ok(conflict(stream, expected, actual))
}
