//! The side stores of `interlock_core::side`, on the same file as the events.
//!
//! Writes go through the writer thread (so they share its group commit and never contend for
//! SQLite's write lock); reads use the reader pool.

use async_trait::async_trait;
use bytes::Bytes;
use interlock_core::{
    CheckpointStore, ConcurrencyError, DeadLetter, DeadLetterStore, EventId, ExpectedVersion,
    IdempotencyClaim, IdempotencyStore, NewDeadLetter, Position, SagaState, SagaStateStore,
    Snapshot, SnapshotStore, StoreError, StreamId, ValidationError, validate_json, validate_name,
};
use rusqlite::{Connection, OptionalExtension};

use crate::error::store_error;
use crate::rows::{
    bytes_at, collect, corrupt_row, now_nanos, sql_int, stream_at, text_at, time_at, to_nanos,
    u64_at, uuid_at,
};
use crate::store::SqliteEventStore;

/// Longest error text kept with a dead letter; longer text is cut (parking must not fail).
const MAX_ERROR_LEN: usize = 64 * 1024;

/// Positions are two `u64`s; SQLite stores signed integers, so the bits are stored as they are.
fn pos_to_sql(part: u64) -> i64 {
    i64::from_ne_bytes(part.to_ne_bytes())
}

fn pos_from_sql(part: i64) -> u64 {
    u64::from_ne_bytes(part.to_ne_bytes())
}

fn int_at(row: &rusqlite::Row<'_>, index: usize) -> Result<i64, StoreError> {
    row.get(index).map_err(store_error)
}

fn version_param(field: &'static str, version: u64) -> Result<i64, StoreError> {
    i64::try_from(version)
        .map_err(|_| ValidationError::new(field, format!("{version} is too large")).into())
}

#[async_trait]
impl SnapshotStore for SqliteEventStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        validate_json("snapshot", &snapshot.payload)?;
        let version = version_param("snapshot version", snapshot.version)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO snapshots (category, stream_id, version, schema_version, payload, taken_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (category, stream_id) DO UPDATE SET \
                 version = excluded.version, schema_version = excluded.schema_version, \
                 payload = excluded.payload, taken_at = excluded.taken_at \
                 WHERE excluded.version >= snapshots.version",
            )
            .and_then(|mut s| {
                s.execute((
                    snapshot.stream_id.category(),
                    snapshot.stream_id.id(),
                    version,
                    snapshot.schema_version,
                    &snapshot.payload[..],
                    to_nanos(snapshot.taken_at),
                ))
            })
            .map_err(store_error)?;
            Ok(())
        })
        .await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let stream = stream.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT category, stream_id, version, schema_version, payload, taken_at \
                     FROM snapshots WHERE category = ?1 AND stream_id = ?2",
                )
                .map_err(store_error)?;
            let rows = stmt
                .query((stream.category(), stream.id()))
                .map_err(store_error)?;
            let found = collect(rows, |row| {
                let schema_version = u32::try_from(u64_at(row, 3, "snapshots")?)
                    .map_err(|_| corrupt_row("snapshots", "schema version out of range"))?;
                Ok(Snapshot {
                    stream_id: stream_at(row, 0, "snapshots")?,
                    version: u64_at(row, 2, "snapshots")?,
                    schema_version,
                    payload: bytes_at(row, 4, "snapshots")?,
                    taken_at: time_at(row, 5, "snapshots")?,
                })
            })?;
            Ok(found.into_iter().next())
        })
        .await
    }

    async fn delete_snapshot(&self, stream: &StreamId) -> Result<bool, StoreError> {
        let stream = stream.clone();
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM snapshots WHERE category = ?1 AND stream_id = ?2")
                .and_then(|mut s| s.execute((stream.category(), stream.id())))
                .map_err(store_error)?;
            Ok(deleted > 0)
        })
        .await
    }
}

#[async_trait]
impl CheckpointStore for SqliteEventStore {
    async fn load_checkpoint(&self, processor: &str) -> Result<Option<Position>, StoreError> {
        validate_name("processor", processor)?;
        let processor = processor.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT position_major, position_minor FROM checkpoints WHERE processor = ?1",
            )
            .and_then(|mut s| {
                s.query_row([&processor], |r| {
                    Ok(Position::new(
                        pos_from_sql(r.get(0)?),
                        pos_from_sql(r.get(1)?),
                    ))
                })
                .optional()
            })
            .map_err(store_error)
        })
        .await
    }

    async fn save_checkpoint(&self, processor: &str, position: Position) -> Result<(), StoreError> {
        validate_name("processor", processor)?;
        let processor = processor.to_owned();
        self.write(move |conn| save_checkpoint_in(conn, &processor, position))
            .await
    }
}

/// Stores `processor`'s checkpoint within the caller's transaction (the name is validated by the
/// caller).
pub(crate) fn save_checkpoint_in(
    conn: &Connection,
    processor: &str,
    position: Position,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO checkpoints (processor, position_major, position_minor, updated_at) \
         VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (processor) DO UPDATE SET position_major = excluded.position_major, \
         position_minor = excluded.position_minor, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| {
        s.execute((
            processor,
            pos_to_sql(position.major()),
            pos_to_sql(position.minor()),
            now_nanos(),
        ))
    })
    .map_err(store_error)?;
    Ok(())
}

/// Removes `processor`'s checkpoint within the caller's transaction.
pub(crate) fn delete_checkpoint_in(conn: &Connection, processor: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM checkpoints WHERE processor = ?1")
        .and_then(|mut s| s.execute([processor]))
        .map_err(store_error)?;
    Ok(())
}

fn saga_stream(saga: &str, key: &str) -> Result<StreamId, StoreError> {
    validate_name("saga", saga)?;
    validate_name("saga key", key)?;
    Ok(StreamId::new(saga, key)?)
}

fn saga_version(conn: &Connection, saga: &StreamId) -> Result<u64, StoreError> {
    let version: Option<i64> = conn
        .prepare_cached("SELECT version FROM saga_states WHERE saga = ?1 AND key = ?2")
        .and_then(|mut s| {
            s.query_row((saga.category(), saga.id()), |r| r.get(0))
                .optional()
        })
        .map_err(store_error)?;
    Ok(version.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

fn saga_conflict(conn: &Connection, saga: &StreamId, expected: u64) -> StoreError {
    match saga_version(conn, saga) {
        Ok(actual) => ConcurrencyError {
            stream: saga.clone(),
            expected: ExpectedVersion::Exact(expected),
            actual,
        }
        .into(),
        Err(e) => e,
    }
}

#[async_trait]
impl SagaStateStore for SqliteEventStore {
    async fn load_saga(&self, saga: &str, key: &str) -> Result<Option<SagaState>, StoreError> {
        let saga = saga_stream(saga, key)?;
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT version, state, updated_at FROM saga_states WHERE saga = ?1 AND key = ?2",
                )
                .map_err(store_error)?;
            let rows = stmt
                .query((saga.category(), saga.id()))
                .map_err(store_error)?;
            let found = collect(rows, |row| {
                Ok(SagaState {
                    version: u64_at(row, 0, "saga_states")?,
                    state: bytes_at(row, 1, "saga_states")?,
                    updated_at: time_at(row, 2, "saga_states")?,
                })
            })?;
            Ok(found.into_iter().next())
        })
        .await
    }

    async fn save_saga(
        &self,
        saga: &str,
        key: &str,
        expected_version: u64,
        state: Bytes,
    ) -> Result<u64, StoreError> {
        let saga = saga_stream(saga, key)?;
        validate_json("saga state", &state)?;
        let expected = version_param("expected_version", expected_version)?;
        self.write(move |conn| {
            let now = now_nanos();
            let changed = if expected == 0 {
                conn.prepare_cached(
                    "INSERT INTO saga_states (saga, key, version, state, updated_at) \
                     VALUES (?1, ?2, 1, ?3, ?4) ON CONFLICT (saga, key) DO NOTHING",
                )
                .and_then(|mut s| s.execute((saga.category(), saga.id(), &state[..], now)))
            } else {
                conn.prepare_cached(
                    "UPDATE saga_states SET version = version + 1, state = ?3, updated_at = ?4 \
                     WHERE saga = ?1 AND key = ?2 AND version = ?5",
                )
                .and_then(|mut s| {
                    s.execute((saga.category(), saga.id(), &state[..], now, expected))
                })
            }
            .map_err(store_error)?;
            if changed == 0 {
                return Err(saga_conflict(conn, &saga, expected_version));
            }
            Ok(expected_version + 1)
        })
        .await
    }

    async fn delete_saga(
        &self,
        saga: &str,
        key: &str,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        let saga = saga_stream(saga, key)?;
        let expected = version_param("expected_version", expected_version)?;
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM saga_states WHERE saga = ?1 AND key = ?2 AND version = ?3",
                )
                .and_then(|mut s| s.execute((saga.category(), saga.id(), expected)))
                .map_err(store_error)?;
            if deleted == 0 {
                return Err(saga_conflict(conn, &saga, expected_version));
            }
            Ok(())
        })
        .await
    }
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Parks `letter` within the caller's transaction (the processor name is validated by the
/// caller); parking the same event for the same processor again updates it. Returns its id.
pub(crate) fn park_in(conn: &Connection, letter: &NewDeadLetter) -> Result<u64, StoreError> {
    let stream_version = version_param("stream_version", letter.stream_version)?;
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO dead_letters (processor, position_major, position_minor, event_id, \
             category, stream_id, stream_version, event_type, error, attempts, parked_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (processor, event_id) DO UPDATE SET error = excluded.error, \
             attempts = excluded.attempts, parked_at = excluded.parked_at \
             RETURNING id",
        )
        .and_then(|mut s| {
            s.query_row(
                rusqlite::params![
                    &letter.processor,
                    pos_to_sql(letter.position.major()),
                    pos_to_sql(letter.position.minor()),
                    &letter.event_id.as_uuid().as_bytes()[..],
                    letter.stream_id.category(),
                    letter.stream_id.id(),
                    stream_version,
                    &letter.event_type,
                    cut(&letter.error, MAX_ERROR_LEN),
                    letter.attempts,
                    now_nanos(),
                ],
                |r| r.get(0),
            )
        })
        .map_err(store_error)?;
    u64::try_from(id).map_err(|_| corrupt_row("dead_letters", "negative id"))
}

/// Whether `processor` has any dead letter (a prefix lookup on the unique index).
pub(crate) fn has_dead_letters_in(conn: &Connection, processor: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM dead_letters WHERE processor = ?1)")
        .and_then(|mut s| s.query_row([processor], |r| r.get(0)))
        .map_err(store_error)
}

/// Removes `processor`'s dead letter for `event_id`, if any, within the caller's transaction.
pub(crate) fn clear_dead_letter_in(
    conn: &Connection,
    processor: &str,
    event_id: EventId,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM dead_letters WHERE processor = ?1 AND event_id = ?2")
        .and_then(|mut s| s.execute((processor, &event_id.as_uuid().as_bytes()[..])))
        .map_err(store_error)?;
    Ok(())
}

fn decode_dead_letter(row: &rusqlite::Row<'_>) -> Result<DeadLetter, StoreError> {
    const T: &str = "dead_letters";
    let attempts = u32::try_from(u64_at(row, 11, T)?)
        .map_err(|_| corrupt_row(T, "attempt count out of range"))?;
    Ok(DeadLetter {
        id: u64_at(row, 0, T)?,
        processor: text_at(row, 1)?,
        position: Position::new(pos_from_sql(int_at(row, 2)?), pos_from_sql(int_at(row, 3)?)),
        event_id: EventId::from_uuid(uuid_at(row, 4, T)?),
        stream_id: stream_at(row, 5, T)?,
        stream_version: u64_at(row, 7, T)?,
        event_type: text_at(row, 8)?,
        error: text_at(row, 9)?,
        attempts,
        parked_at: time_at(row, 10, T)?,
    })
}

#[async_trait]
impl DeadLetterStore for SqliteEventStore {
    async fn park(&self, letter: NewDeadLetter) -> Result<u64, StoreError> {
        validate_name("processor", &letter.processor)?;
        version_param("stream_version", letter.stream_version)?;
        self.write(move |conn| park_in(conn, &letter)).await
    }

    async fn list_dead_letters(
        &self,
        processor: Option<&str>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let processor = processor.map(str::to_owned);
        let after = after.map_or(0, sql_int);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, processor, position_major, position_minor, event_id, category, \
                     stream_id, stream_version, event_type, error, parked_at, attempts \
                     FROM dead_letters WHERE (?1 IS NULL OR processor = ?1) AND id > ?2 \
                     ORDER BY id LIMIT ?3",
                )
                .map_err(store_error)?;
            let rows = stmt
                .query((&processor, after, limit))
                .map_err(store_error)?;
            collect(rows, decode_dead_letter)
        })
        .await
    }

    async fn delete_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        let id = sql_int(id);
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM dead_letters WHERE id = ?1")
                .and_then(|mut s| s.execute([id]))
                .map_err(store_error)?;
            Ok(deleted > 0)
        })
        .await
    }
}

#[async_trait]
impl IdempotencyStore for SqliteEventStore {
    async fn claim(&self, key: &str) -> Result<IdempotencyClaim, StoreError> {
        validate_name("idempotency key", key)?;
        let key = key.to_owned();
        // On the writer thread, so "insert if absent, else read" is atomic.
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO idempotency_keys (key, claimed_at) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO NOTHING",
                )
                .and_then(|mut s| s.execute((&key, now_nanos())))
                .map_err(store_error)?;
            if inserted > 0 {
                return Ok(IdempotencyClaim::New);
            }
            let mut stmt = conn
                .prepare_cached("SELECT result, claimed_at FROM idempotency_keys WHERE key = ?1")
                .map_err(store_error)?;
            let rows = stmt.query([&key]).map_err(store_error)?;
            let found = collect(rows, |row| {
                let result = match row.get_ref(0).map_err(store_error)? {
                    rusqlite::types::ValueRef::Null => None,
                    _ => Some(bytes_at(row, 0, "idempotency_keys")?),
                };
                Ok(match result {
                    Some(result) => IdempotencyClaim::Completed(result),
                    None => IdempotencyClaim::InProgress {
                        claimed_at: time_at(row, 1, "idempotency_keys")?,
                    },
                })
            })?;
            found
                .into_iter()
                .next()
                .ok_or_else(|| corrupt_row("idempotency_keys", "claimed key vanished"))
        })
        .await
    }

    async fn complete(&self, key: &str, result: Bytes) -> Result<(), StoreError> {
        validate_name("idempotency key", key)?;
        validate_json("idempotency result", &result)?;
        let key = key.to_owned();
        self.write(move |conn| {
            let now = now_nanos();
            // The first result stands: a duplicate always gets the original answer.
            conn.prepare_cached(
                "INSERT INTO idempotency_keys (key, result, claimed_at, completed_at) \
                 VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT (key) DO UPDATE SET result = excluded.result, \
                 completed_at = excluded.completed_at WHERE idempotency_keys.result IS NULL",
            )
            .and_then(|mut s| s.execute((&key, &result[..], now)))
            .map_err(store_error)?;
            Ok(())
        })
        .await
    }

    async fn release(&self, key: &str) -> Result<bool, StoreError> {
        validate_name("idempotency key", key)?;
        let key = key.to_owned();
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM idempotency_keys WHERE key = ?1 AND result IS NULL")
                .and_then(|mut s| s.execute([&key]))
                .map_err(store_error)?;
            Ok(deleted > 0)
        })
        .await
    }
}
