//! The side stores, in the same schema as the events: snapshots, checkpoints, saga state,
//! dead letters and idempotency keys, with the semantics of the in-memory reference.
//!
//! Every query waits for its answer at most [`PgConfig::operation_timeout`](crate::PgConfig),
//! like the event store's own: a server that stops answering makes these calls
//! [`StoreError::Unavailable`], not a hang.

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use interlock_core::side::{
    CheckpointStore, DeadLetter, DeadLetterStore, IdempotencyClaim, IdempotencyStore,
    NewDeadLetter, SagaState, SagaStateStore, Snapshot, SnapshotStore, validate_json,
    validate_name,
};
use interlock_core::{ConcurrencyError, EventId, ExpectedVersion, Position, StoreError, StreamId};
use sqlx_postgres::PgRow;
use uuid::Uuid;

use crate::error::backend;
use crate::rows::{self, bits_to_i64, bits_to_u64, column, to_i64};
use crate::store::PgEventStore;

fn unsigned(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| backend(format!("stored {what} {value} is negative")))
}

fn limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl SnapshotStore for PgEventStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        validate_json("snapshot", &snapshot.payload)?;
        self.inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.save_snapshot)
                    .bind(snapshot.stream_id.category())
                    .bind(snapshot.stream_id.id())
                    .bind(to_i64(snapshot.version))
                    .bind(i64::from(snapshot.schema_version))
                    .bind(&snapshot.payload[..])
                    .bind(snapshot.taken_at)
                    .execute(self.pool()),
            )
            .await?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let row = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.load_snapshot)
                    .bind(stream.category())
                    .bind(stream.id())
                    .fetch_optional(self.pool()),
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let schema_version: i64 = column(&row, 1)?;
        Ok(Some(Snapshot {
            stream_id: stream.clone(),
            version: unsigned(column(&row, 0)?, "snapshot version")?,
            schema_version: u32::try_from(schema_version).map_err(|_| {
                backend(format!(
                    "snapshot of {stream} has schema version {schema_version}"
                ))
            })?,
            payload: rows::bytes(&row, 2)?,
            taken_at: column(&row, 3)?,
        }))
    }

    async fn delete_snapshot(&self, stream: &StreamId) -> Result<bool, StoreError> {
        let done = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.delete_snapshot)
                    .bind(stream.category())
                    .bind(stream.id())
                    .execute(self.pool()),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl CheckpointStore for PgEventStore {
    async fn load_checkpoint(&self, processor: &str) -> Result<Option<Position>, StoreError> {
        validate_name("processor", processor)?;
        let row = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.load_checkpoint)
                    .bind(processor)
                    .fetch_optional(self.pool()),
            )
            .await?;
        row.map(|row| {
            Ok(Position::new(
                bits_to_u64(column(&row, 0)?),
                bits_to_u64(column(&row, 1)?),
            ))
        })
        .transpose()
    }

    async fn save_checkpoint(&self, processor: &str, position: Position) -> Result<(), StoreError> {
        validate_name("processor", processor)?;
        self.inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.save_checkpoint)
                    .bind(processor)
                    .bind(bits_to_i64(position.major()))
                    .bind(bits_to_i64(position.minor()))
                    .execute(self.pool()),
            )
            .await?;
        Ok(())
    }
}

fn saga_conflict(saga: &str, key: &str, expected: u64, actual: u64) -> StoreError {
    match StreamId::new(saga, key) {
        Ok(stream) => ConcurrencyError {
            stream,
            expected: ExpectedVersion::Exact(expected),
            actual,
        }
        .into(),
        Err(e) => e.into(),
    }
}

impl PgEventStore {
    async fn saga_version(&self, saga: &str, key: &str) -> Result<u64, StoreError> {
        let row = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.saga_version)
                    .bind(saga)
                    .bind(key)
                    .fetch_optional(self.pool()),
            )
            .await?;
        match row {
            None => Ok(0),
            Some(row) => unsigned(column(&row, 0)?, "saga version"),
        }
    }
}

#[async_trait]
impl SagaStateStore for PgEventStore {
    async fn load_saga(&self, saga: &str, key: &str) -> Result<Option<SagaState>, StoreError> {
        validate_name("saga", saga)?;
        validate_name("saga key", key)?;
        let row = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.load_saga)
                    .bind(saga)
                    .bind(key)
                    .fetch_optional(self.pool()),
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(SagaState {
            version: unsigned(column(&row, 0)?, "saga version")?,
            state: rows::bytes(&row, 1)?,
            updated_at: column(&row, 2)?,
        }))
    }

    async fn save_saga(
        &self,
        saga: &str,
        key: &str,
        expected_version: u64,
        state: Bytes,
    ) -> Result<u64, StoreError> {
        validate_name("saga", saga)?;
        validate_name("saga key", key)?;
        validate_json("saga state", &state)?;
        let sql = &self.inner().sql;
        let row = self
            .inner()
            .answer(async {
                if expected_version == 0 {
                    sqlx_core::query::query(&sql.insert_saga)
                        .bind(saga)
                        .bind(key)
                        .bind(&state[..])
                        .fetch_optional(self.pool())
                        .await
                } else {
                    sqlx_core::query::query(&sql.update_saga)
                        .bind(saga)
                        .bind(key)
                        .bind(to_i64(expected_version))
                        .bind(&state[..])
                        .fetch_optional(self.pool())
                        .await
                }
            })
            .await?;
        match row {
            Some(row) => unsigned(column(&row, 0)?, "saga version"),
            None => {
                let actual = self.saga_version(saga, key).await?;
                Err(saga_conflict(saga, key, expected_version, actual))
            }
        }
    }

    async fn delete_saga(
        &self,
        saga: &str,
        key: &str,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        validate_name("saga", saga)?;
        validate_name("saga key", key)?;
        let done = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.delete_saga)
                    .bind(saga)
                    .bind(key)
                    .bind(to_i64(expected_version))
                    .execute(self.pool()),
            )
            .await?;
        if done.rows_affected() == 0 {
            let actual = self.saga_version(saga, key).await?;
            // Deleting what is not there, expecting it not to be, matches the reference store.
            if !(actual == 0 && expected_version == 0) {
                return Err(saga_conflict(saga, key, expected_version, actual));
            }
        }
        Ok(())
    }
}

fn dead_letter(row: &PgRow) -> Result<DeadLetter, StoreError> {
    let id = unsigned(column(row, 0)?, "dead letter id")?;
    let stream = rows::stream_id(column(row, 5)?, column(row, 6)?)?;
    let attempts: i64 = column(row, 10)?;
    let event_id: Uuid = column(row, 4)?;
    Ok(DeadLetter {
        id,
        processor: column(row, 1)?,
        position: Position::new(bits_to_u64(column(row, 2)?), bits_to_u64(column(row, 3)?)),
        event_id: EventId::from_uuid(event_id),
        stream_id: stream,
        stream_version: bits_to_u64(column(row, 7)?),
        event_type: column(row, 8)?,
        error: column(row, 9)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| backend(format!("dead letter {id} has {attempts} attempts")))?,
        parked_at: column(row, 11)?,
    })
}

#[async_trait]
impl DeadLetterStore for PgEventStore {
    async fn park(&self, letter: NewDeadLetter) -> Result<u64, StoreError> {
        validate_name("processor", &letter.processor)?;
        if letter.error.contains('\0') || letter.event_type.contains('\0') {
            return Err(interlock_core::ValidationError::new(
                "dead letter",
                "error text and event type must not contain NUL",
            )
            .into());
        }
        let row = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.park)
                    .bind(&letter.processor)
                    .bind(bits_to_i64(letter.position.major()))
                    .bind(bits_to_i64(letter.position.minor()))
                    .bind(letter.event_id.as_uuid())
                    .bind(letter.stream_id.category())
                    .bind(letter.stream_id.id())
                    .bind(bits_to_i64(letter.stream_version))
                    .bind(&letter.event_type)
                    .bind(&letter.error)
                    .bind(i64::from(letter.attempts))
                    .fetch_one(self.pool()),
            )
            .await?;
        unsigned(column(&row, 0)?, "dead letter id")
    }

    async fn list_dead_letters(
        &self,
        processor: Option<&str>,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.list_dead_letters)
                    .bind(processor)
                    .bind(after.map_or(0, to_i64))
                    .bind(limit(max))
                    .fetch_all(self.pool()),
            )
            .await?;
        rows.iter().map(dead_letter).collect()
    }

    async fn delete_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(false);
        };
        let done = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.delete_dead_letter)
                    .bind(id)
                    .execute(self.pool()),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl IdempotencyStore for PgEventStore {
    async fn claim(&self, key: &str) -> Result<IdempotencyClaim, StoreError> {
        validate_name("idempotency key", key)?;
        let sql = &self.inner().sql;
        // The insert decides the race; a key released between our insert and our read is
        // simply claimed again. Bounded as a whole, not only query by query.
        self.inner()
            .bounded(async {
                for _ in 0..8 {
                    let claimed = self
                        .inner()
                        .answer(
                            sqlx_core::query::query(&sql.claim)
                                .bind(key)
                                .fetch_optional(self.pool()),
                        )
                        .await?;
                    if claimed.is_some() {
                        return Ok(IdempotencyClaim::New);
                    }
                    let row = self
                        .inner()
                        .answer(
                            sqlx_core::query::query(&sql.load_claim)
                                .bind(key)
                                .fetch_optional(self.pool()),
                        )
                        .await?;
                    if let Some(row) = row {
                        let result: Option<Vec<u8>> = column(&row, 0)?;
                        let claimed_at: DateTime<Utc> = column(&row, 1)?;
                        return Ok(match result {
                            Some(result) => IdempotencyClaim::Completed(Bytes::from(result)),
                            None => IdempotencyClaim::InProgress { claimed_at },
                        });
                    }
                }
                Err(backend(format!(
                    "idempotency key {key:?} keeps being claimed and released"
                )))
            })
            .await
    }

    async fn complete(&self, key: &str, result: Bytes) -> Result<(), StoreError> {
        validate_name("idempotency key", key)?;
        validate_json("idempotency result", &result)?;
        self.inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.complete)
                    .bind(key)
                    .bind(&result[..])
                    .execute(self.pool()),
            )
            .await?;
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<bool, StoreError> {
        validate_name("idempotency key", key)?;
        let done = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.release)
                    .bind(key)
                    .execute(self.pool()),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
