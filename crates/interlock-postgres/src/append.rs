//! Appends: one statement per batch, and telling a retry, a conflict and a collision apart.

use std::collections::HashMap;

use interlock_core::{
    AppendResult, ConcurrencyError, EventId, ExpectedVersion, NewEvent, RecordedEvent, StoreError,
    StreamId, recognise_retry,
};
use sqlx_core::executor::Executor;
use sqlx_core::row::Row;
use sqlx_postgres::{PgConnection, Postgres};
use uuid::Uuid;

use crate::error::{backend, db_code, store_error};
use crate::rows;
use crate::store::PgEventStore;

/// Constraint names from the schema; a unique violation names the one it hit.
const VERSION_KEY: &str = "events_stream_version_key";
const EVENT_ID_KEY: &str = "events_event_id_key";
const UNIQUE_VIOLATION: &str = "23505";

/// How often an append is re-run after losing a race it may still win (an `Any` append to a
/// stream another writer created at the same moment).
const MAX_ATTEMPTS: usize = 5;

/// The batch as column arrays, bound once and sent as one multi-row `INSERT ... unnest`.
struct Columns<'a> {
    event_ids: Vec<Uuid>,
    types: Vec<&'a str>,
    schema_versions: Vec<i64>,
    payloads: Vec<&'a [u8]>,
    metadata: Vec<Vec<u8>>,
    correlation_ids: Vec<Option<Uuid>>,
    causation_ids: Vec<Option<Uuid>>,
}

impl<'a> Columns<'a> {
    fn new(events: &'a [NewEvent]) -> Result<Self, StoreError> {
        let mut metadata = Vec::with_capacity(events.len());
        for event in events {
            metadata.push(
                serde_json::to_vec(&event.metadata)
                    .map_err(|e| backend(format!("cannot serialize metadata: {e}")))?,
            );
        }
        Ok(Self {
            event_ids: events.iter().map(|e| *e.event_id.as_uuid()).collect(),
            types: events.iter().map(|e| e.event_type.as_str()).collect(),
            schema_versions: events.iter().map(|e| i64::from(e.schema_version)).collect(),
            payloads: events.iter().map(|e| &e.payload[..]).collect(),
            metadata,
            correlation_ids: events.iter().map(|e| e.correlation_id).collect(),
            causation_ids: events.iter().map(|e| e.causation_id).collect(),
        })
    }
}

/// `ExpectedVersion` as the statement's `$3` (kind) and `$4` (exact version).
fn expectation(expected: ExpectedVersion) -> (i32, i64) {
    match expected {
        ExpectedVersion::Any => (0, 0),
        ExpectedVersion::NoStream => (1, 0),
        ExpectedVersion::StreamExists => (2, 0),
        ExpectedVersion::Exact(v) => (3, rows::to_i64(v)),
    }
}

/// Appends `events` (already validated) on `conn`. With `savepoint`, the statement runs under
/// a savepoint of the caller's transaction, so a failure leaves that transaction usable.
pub(crate) async fn append(
    store: &PgEventStore,
    conn: &mut PgConnection,
    savepoint: bool,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<AppendResult, StoreError> {
    let inner = store.inner();
    let columns = Columns::new(events)?;
    let (kind, exact) = expectation(expected);
    // Only inside a caller's transaction does the statement itself NOTIFY (at that
    // transaction's commit, which only the caller sees); pool appends announce after commit.
    let channel = if inner.config.notify && savepoint {
        inner.channel.as_str()
    } else {
        ""
    };
    for attempt in 1..=MAX_ATTEMPTS {
        if savepoint {
            conn.execute("SAVEPOINT interlock_append")
                .await
                .map_err(store_error)?;
        }
        let outcome = sqlx_core::query::query(&inner.sql.append)
            .bind(stream.category())
            .bind(stream.id())
            .bind(kind)
            .bind(exact)
            .bind(&columns.event_ids)
            .bind(&columns.types)
            .bind(&columns.schema_versions)
            .bind(&columns.payloads)
            .bind(&columns.metadata)
            .bind(&columns.correlation_ids)
            .bind(&columns.causation_ids)
            .bind(channel)
            .fetch_one(&mut *conn)
            .await;
        let error = match outcome {
            Ok(row) => {
                if savepoint {
                    conn.execute("RELEASE SAVEPOINT interlock_append")
                        .await
                        .map_err(store_error)?;
                }
                return match inserted(&row, events.len())? {
                    Ok(result) => Ok(result),
                    // The expectation failed and nothing was written. Unless this is a retry
                    // of a stored batch, it is a conflict.
                    Err(actual) => match existing_append(store, conn, stream, events).await? {
                        Some(existing) => Ok(existing),
                        None => Err(ConcurrencyError {
                            stream: stream.clone(),
                            expected,
                            actual,
                        }
                        .into()),
                    },
                };
            }
            Err(error) => error,
        };
        if savepoint {
            conn.execute("ROLLBACK TO SAVEPOINT interlock_append")
                .await
                .map_err(store_error)?;
        }
        let Some((code, constraint)) = db_code(&error) else {
            return Err(store_error(error));
        };
        if code != UNIQUE_VIOLATION {
            return Err(store_error(error));
        }
        // A unique index had the final word. A retry of a stored batch is answered first,
        // exactly as when the expectation fails.
        if let Some(existing) = existing_append(store, conn, stream, events).await? {
            return Ok(existing);
        }
        match constraint.as_deref() {
            Some(VERSION_KEY) => {
                // Another writer created the stream between our check and our insert.
                let actual = stream_version(store, &mut *conn, stream).await?;
                if !expected.is_satisfied_by(actual) || attempt == MAX_ATTEMPTS {
                    return Err(ConcurrencyError {
                        stream: stream.clone(),
                        expected,
                        actual,
                    }
                    .into());
                }
            }
            // The id's holder is gone again (deleted by hand): just try again.
            Some(EVENT_ID_KEY) if attempt < MAX_ATTEMPTS => {}
            _ => return Err(store_error(error)),
        }
    }
    Err(backend("append did not settle after repeated races"))
}

/// The statement's answer: the stream's version before, then (when inserted) the new version,
/// the first and last sequence numbers, and the transaction id. `Err(actual)` when the
/// expectation failed and nothing was inserted.
fn inserted(
    row: &sqlx_postgres::PgRow,
    count: usize,
) -> Result<Result<AppendResult, u64>, StoreError> {
    let current: i64 = rows::column(row, 0)?;
    let last: Option<i64> = rows::column(row, 1)?;
    let first_sequence: Option<i64> = rows::column(row, 2)?;
    let last_sequence: Option<i64> = rows::column(row, 3)?;
    let tx: String = rows::column(row, 4)?;
    let (Some(last), Some(first_sequence), Some(last_sequence)) =
        (last, first_sequence, last_sequence)
    else {
        return Ok(Err(u64::try_from(current).unwrap_or(0)));
    };
    let position = |sequence| {
        rows::position(&tx, sequence)
            .ok_or_else(|| backend(format!("append returned position {tx}:{sequence}")))
    };
    let last = u64::try_from(last).map_err(|_| backend("append returned a negative version"))?;
    Ok(Ok(AppendResult {
        first_version: last + 1 - count as u64,
        last_version: last,
        first_position: position(first_sequence)?,
        last_position: position(last_sequence)?,
        already_appended: false,
    }))
}

/// Recognises a retried append: every id already stored, in order, in this stream, with the
/// same content; returns the original result. A partial or different match is
/// [`StoreError::DuplicateEventId`]; no stored id at all is `None`.
pub(crate) async fn existing_append(
    store: &PgEventStore,
    conn: &mut PgConnection,
    stream: &StreamId,
    events: &[NewEvent],
) -> Result<Option<AppendResult>, StoreError> {
    let ids: Vec<Uuid> = events.iter().map(|e| *e.event_id.as_uuid()).collect();
    let rows = sqlx_core::query::query(&store.inner().sql.events_by_id)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(store_error)?;
    let mut stored: HashMap<EventId, RecordedEvent> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let event = rows::event(row)?;
        stored.insert(event.event_id, event);
    }
    let in_batch: Vec<Option<&RecordedEvent>> =
        events.iter().map(|e| stored.get(&e.event_id)).collect();
    recognise_retry(stream, events, &in_batch)
}

/// The stream's committed version (0 when it has no events).
pub(crate) async fn stream_version<'c, E>(
    store: &PgEventStore,
    executor: E,
    stream: &StreamId,
) -> Result<u64, StoreError>
where
    E: Executor<'c, Database = Postgres>,
{
    let row = sqlx_core::query::query(&store.inner().sql.stream_version)
        .bind(stream.category())
        .bind(stream.id())
        .fetch_optional(executor)
        .await
        .map_err(store_error)?;
    match row {
        None => Ok(0),
        Some(row) => {
            let version: i64 = row.try_get(0).map_err(store_error)?;
            u64::try_from(version)
                .map_err(|_| backend(format!("stream {stream} has version {version}")))
        }
    }
}
