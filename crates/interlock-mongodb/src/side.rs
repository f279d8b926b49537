//! The side stores: snapshots, checkpoints, saga state, dead letters and idempotency keys, one
//! collection each, with the in-memory reference's semantics.

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use interlock_core::side::{
    CheckpointStore, DeadLetter, DeadLetterStore, IdempotencyClaim, IdempotencyStore,
    NewDeadLetter, SagaState, SagaStateStore, Snapshot, SnapshotStore, validate_json,
    validate_name,
};
use interlock_core::{
    ConcurrencyError, EventId, ExpectedVersion, Position, StoreError, StreamId, ValidationError,
};
use mongodb::bson::{Document, doc};
use mongodb::options::ReturnDocument;

use crate::codec::{self, Fields, bits_to_i64, bits_to_u64, to_i64};
use crate::error::{backend, is_duplicate_key, store_error};
use crate::schema::DEAD_LETTER_COUNTER;
use crate::store::MongoEventStore;

/// How often a claim or park that races with a concurrent delete or insert looks again.
const RACE_RETRIES: usize = 16;

fn versioned(field: &'static str, value: u64) -> Result<i64, ValidationError> {
    i64::try_from(value)
        .map_err(|_| ValidationError::new(field, format!("{value} is beyond the largest storable")))
}

#[async_trait]
impl SnapshotStore for MongoEventStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        validate_json("snapshot", &snapshot.payload)?;
        let version = versioned("version", snapshot.version)?;
        let mut filter = codec::stream_filter(&snapshot.stream_id);
        // An equal or older stored snapshot is replaced; a newer one makes the filter miss, and
        // the upsert's insert then hits the unique stream index: the newer one stays.
        filter.insert("version", doc! { "$lte": version });
        let saved = self
            .inner()
            .snapshots
            .update_one(
                filter,
                doc! { "$set": {
                    "version": version,
                    "schema_version": i64::from(snapshot.schema_version),
                    "payload": codec::binary(&snapshot.payload),
                    "taken_at": codec::datetime(snapshot.taken_at),
                    // BSON datetimes keep milliseconds; the rest keeps `taken_at` exact.
                    "taken_at_nanos": i64::from(snapshot.taken_at.timestamp_subsec_nanos() % 1_000_000),
                } },
            )
            .upsert(true)
            .await;
        match saved {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let Some(doc) = self
            .inner()
            .snapshots
            .find_one(codec::stream_filter(stream))
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let fields = Fields::new(&doc, "a stored snapshot");
        let bad = |e: String| backend(format!("snapshot of {stream}: {e}"));
        let schema_version = fields.i64("schema_version").map_err(bad)?;
        let taken_at = fields.datetime("taken_at").map_err(bad)?;
        let nanos = fields.i64("taken_at_nanos").unwrap_or(0).clamp(0, 999_999);
        Ok(Some(Snapshot {
            stream_id: stream.clone(),
            version: fields.u64("version").map_err(bad)?,
            schema_version: u32::try_from(schema_version)
                .map_err(|_| bad(format!("schema version {schema_version} is out of range")))?,
            payload: Bytes::copy_from_slice(fields.bytes("payload").map_err(bad)?),
            taken_at: taken_at + chrono::Duration::nanoseconds(nanos),
        }))
    }

    async fn delete_snapshot(&self, stream: &StreamId) -> Result<bool, StoreError> {
        let deleted = self
            .inner()
            .snapshots
            .delete_one(codec::stream_filter(stream))
            .await
            .map_err(store_error)?;
        Ok(deleted.deleted_count > 0)
    }
}

#[async_trait]
impl CheckpointStore for MongoEventStore {
    async fn load_checkpoint(&self, processor: &str) -> Result<Option<Position>, StoreError> {
        validate_name("processor", processor)?;
        let Some(doc) = self
            .inner()
            .checkpoints
            .find_one(doc! { "_id": processor })
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let fields = Fields::new(&doc, "a stored checkpoint");
        let bad = |e: String| backend(format!("checkpoint of {processor:?}: {e}"));
        Ok(Some(Position::new(
            bits_to_u64(fields.i64("major").map_err(bad)?),
            bits_to_u64(fields.i64("minor").map_err(bad)?),
        )))
    }

    async fn save_checkpoint(&self, processor: &str, position: Position) -> Result<(), StoreError> {
        validate_name("processor", processor)?;
        self.inner()
            .checkpoints
            .update_one(doc! { "_id": processor }, checkpoint_update(position))
            .upsert(true)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

/// The update (with upsert) that stores a checkpoint document, `_id` = the processor's name.
pub(crate) fn checkpoint_update(position: Position) -> Document {
    doc! { "$set": {
        "major": bits_to_i64(position.major()),
        "minor": bits_to_i64(position.minor()),
        "updated_at": codec::datetime(codec::now()),
    } }
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

impl MongoEventStore {
    /// The stored version of a saga instance (0 when it has none).
    async fn saga_version(&self, saga: &str, key: &str) -> Result<u64, StoreError> {
        let doc = self
            .inner()
            .sagas
            .find_one(doc! { "saga": saga, "key": key })
            .projection(doc! { "version": 1 })
            .await
            .map_err(store_error)?;
        match doc {
            None => Ok(0),
            Some(doc) => Fields::new(&doc, "a stored saga")
                .u64("version")
                .map_err(|e| backend(format!("saga {saga:?}/{key:?}: {e}"))),
        }
    }
}

#[async_trait]
impl SagaStateStore for MongoEventStore {
    async fn load_saga(&self, saga: &str, key: &str) -> Result<Option<SagaState>, StoreError> {
        validate_name("saga", saga)?;
        validate_name("saga key", key)?;
        let Some(doc) = self
            .inner()
            .sagas
            .find_one(doc! { "saga": saga, "key": key })
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let fields = Fields::new(&doc, "a stored saga");
        let bad = |e: String| backend(format!("saga {saga:?}/{key:?}: {e}"));
        Ok(Some(SagaState {
            version: fields.u64("version").map_err(bad)?,
            state: Bytes::copy_from_slice(fields.bytes("state").map_err(bad)?),
            updated_at: fields.datetime("updated_at").map_err(bad)?,
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
        let version = expected_version
            .checked_add(1)
            .filter(|v| *v <= i64::MAX as u64)
            .ok_or_else(|| {
                ValidationError::new(
                    "expected_version",
                    format!("{expected_version} is beyond the largest storable version"),
                )
            })?;
        let sagas = &self.inner().sagas;
        let now = codec::datetime(codec::now());
        if expected_version == 0 {
            let inserted = sagas
                .insert_one(doc! {
                    "saga": saga,
                    "key": key,
                    "version": to_i64(version),
                    "state": codec::binary(&state),
                    "updated_at": now,
                })
                .await;
            return match inserted {
                Ok(_) => Ok(version),
                Err(e) if is_duplicate_key(&e) => {
                    let actual = self.saga_version(saga, key).await?;
                    Err(saga_conflict(saga, key, expected_version, actual))
                }
                Err(e) => Err(store_error(e)),
            };
        }
        let updated = sagas
            .update_one(
                doc! { "saga": saga, "key": key, "version": to_i64(expected_version) },
                doc! { "$set": {
                    "version": to_i64(version),
                    "state": codec::binary(&state),
                    "updated_at": now,
                } },
            )
            .await
            .map_err(store_error)?;
        if updated.matched_count == 0 {
            let actual = self.saga_version(saga, key).await?;
            return Err(saga_conflict(saga, key, expected_version, actual));
        }
        Ok(version)
    }

    async fn delete_saga(
        &self,
        saga: &str,
        key: &str,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        validate_name("saga", saga)?;
        validate_name("saga key", key)?;
        if expected_version == 0 || expected_version > i64::MAX as u64 {
            // Only a missing instance is at version 0 (and nothing is stored above i64::MAX).
            let actual = self.saga_version(saga, key).await?;
            if actual != expected_version {
                return Err(saga_conflict(saga, key, expected_version, actual));
            }
            return Ok(());
        }
        let deleted = self
            .inner()
            .sagas
            .delete_one(doc! { "saga": saga, "key": key, "version": to_i64(expected_version) })
            .await
            .map_err(store_error)?;
        if deleted.deleted_count == 0 {
            let actual = self.saga_version(saga, key).await?;
            return Err(saga_conflict(saga, key, expected_version, actual));
        }
        Ok(())
    }
}

fn dead_letter(doc: &Document) -> Result<DeadLetter, StoreError> {
    let fields = Fields::new(doc, "a stored dead letter");
    let id = fields.u64("_id").map_err(backend)?;
    let bad = |e: String| backend(format!("dead letter {id}: {e}"));
    let attempts = fields.i64("attempts").map_err(bad)?;
    Ok(DeadLetter {
        id,
        processor: fields.str("processor").map_err(bad)?.to_owned(),
        position: Position::new(
            bits_to_u64(fields.i64("position_major").map_err(bad)?),
            bits_to_u64(fields.i64("position_minor").map_err(bad)?),
        ),
        event_id: EventId::from_uuid(fields.uuid("event_id").map_err(bad)?),
        stream_id: StreamId::new(
            fields.str("category").map_err(bad)?,
            fields.str("stream_id").map_err(bad)?,
        )
        .map_err(|e| bad(e.to_string()))?,
        stream_version: bits_to_u64(fields.i64("stream_version").map_err(bad)?),
        event_type: fields.str("event_type").map_err(bad)?.to_owned(),
        error: fields.str("error").map_err(bad)?.to_owned(),
        attempts: u32::try_from(attempts)
            .map_err(|_| bad(format!("attempts {attempts} is out of range")))?,
        parked_at: fields.datetime("parked_at").map_err(bad)?,
    })
}

#[async_trait]
impl DeadLetterStore for MongoEventStore {
    async fn park(&self, letter: NewDeadLetter) -> Result<u64, StoreError> {
        validate_name("processor", &letter.processor)?;
        let inner = self.inner();
        let event_id = codec::uuid(letter.event_id.as_uuid());
        for _ in 0..RACE_RETRIES {
            // Parked before: update it in place, keeping its id.
            let existing = inner
                .dead_letters
                .find_one_and_update(
                    doc! { "processor": letter.processor.as_str(), "event_id": event_id.clone() },
                    doc! { "$set": {
                        "error": letter.error.as_str(),
                        "attempts": i64::from(letter.attempts),
                        "parked_at": codec::datetime(codec::now()),
                    } },
                )
                .projection(doc! { "_id": 1 })
                .await
                .map_err(store_error)?;
            if let Some(doc) = existing {
                return Fields::new(&doc, "a stored dead letter")
                    .u64("_id")
                    .map_err(backend);
            }
            let counter = inner
                .counters
                .find_one_and_update(
                    doc! { "_id": DEAD_LETTER_COUNTER },
                    doc! { "$inc": { "value": 1_i64 } },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await
                .map_err(store_error)?;
            let id = counter
                .as_ref()
                .map(|doc| Fields::new(doc, "the dead-letter counter").u64("value"))
                .transpose()
                .map_err(backend)?
                .ok_or_else(|| backend("the dead-letter counter is missing"))?;
            let inserted = inner
                .dead_letters
                .insert_one(doc! {
                    "_id": to_i64(id),
                    "processor": letter.processor.as_str(),
                    "position_major": bits_to_i64(letter.position.major()),
                    "position_minor": bits_to_i64(letter.position.minor()),
                    "event_id": event_id.clone(),
                    "category": letter.stream_id.category(),
                    "stream_id": letter.stream_id.id(),
                    "stream_version": bits_to_i64(letter.stream_version),
                    "event_type": letter.event_type.as_str(),
                    "error": letter.error.as_str(),
                    "attempts": i64::from(letter.attempts),
                    "parked_at": codec::datetime(codec::now()),
                })
                .await;
            match inserted {
                Ok(_) => return Ok(id),
                // Parked concurrently by someone else: update theirs on the next round.
                Err(e) if is_duplicate_key(&e) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(backend(format!(
            "parking event {} for {:?} kept racing with concurrent parks",
            letter.event_id, letter.processor
        )))
    }

    async fn list_dead_letters(
        &self,
        processor: Option<&str>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        if limit == 0 || after.is_some_and(|a| a >= i64::MAX as u64) {
            return Ok(Vec::new());
        }
        let mut filter = doc! {};
        if let Some(processor) = processor {
            filter.insert("processor", processor);
        }
        if let Some(after) = after {
            filter.insert("_id", doc! { "$gt": to_i64(after) });
        }
        let docs: Vec<Document> = self
            .inner()
            .dead_letters
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(store_error)?
            .try_collect()
            .await
            .map_err(store_error)?;
        docs.iter().map(dead_letter).collect()
    }

    async fn delete_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(false);
        };
        let deleted = self
            .inner()
            .dead_letters
            .delete_one(doc! { "_id": id })
            .await
            .map_err(store_error)?;
        Ok(deleted.deleted_count > 0)
    }
}

const PENDING: &str = "pending";
const COMPLETED: &str = "completed";

#[async_trait]
impl IdempotencyStore for MongoEventStore {
    async fn claim(&self, key: &str) -> Result<IdempotencyClaim, StoreError> {
        validate_name("idempotency key", key)?;
        let keys = &self.inner().idempotency;
        for _ in 0..RACE_RETRIES {
            // The unique `_id` decides: exactly one concurrent insert succeeds.
            let inserted = keys
                .insert_one(doc! {
                    "_id": key,
                    "status": PENDING,
                    "claimed_at": codec::datetime(codec::now()),
                })
                .await;
            match inserted {
                Ok(_) => return Ok(IdempotencyClaim::New),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(store_error(e)),
            }
            let Some(doc) = keys
                .find_one(doc! { "_id": key })
                .await
                .map_err(store_error)?
            else {
                // Released between our insert and our read: claim again.
                continue;
            };
            let fields = Fields::new(&doc, "a stored idempotency key");
            let bad = |e: String| backend(format!("idempotency key {key:?}: {e}"));
            return match fields.str("status").map_err(bad)? {
                COMPLETED => Ok(IdempotencyClaim::Completed(Bytes::copy_from_slice(
                    fields.bytes("result").map_err(bad)?,
                ))),
                _ => Ok(IdempotencyClaim::InProgress {
                    claimed_at: fields.datetime("claimed_at").map_err(bad)?,
                }),
            };
        }
        Err(backend(format!(
            "claiming idempotency key {key:?} kept racing with releases"
        )))
    }

    async fn complete(&self, key: &str, result: Bytes) -> Result<(), StoreError> {
        validate_name("idempotency key", key)?;
        validate_json("idempotency result", &result)?;
        let now = codec::datetime(codec::now());
        let update = doc! {
            "$set": {
                "status": COMPLETED,
                "result": codec::binary(&result),
                "completed_at": now.clone(),
            },
            "$setOnInsert": { "claimed_at": now },
        };
        let keys = &self.inner().idempotency;
        let stored = keys
            .update_one(doc! { "_id": key }, update.clone())
            .upsert(true)
            .await;
        match stored {
            Ok(_) => Ok(()),
            // Two upserts creating the key at once: the document exists now, so the plain
            // update stores this result, as the last `complete` wins in the reference.
            Err(e) if is_duplicate_key(&e) => keys
                .update_one(doc! { "_id": key }, update)
                .await
                .map(|_| ())
                .map_err(store_error),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn release(&self, key: &str) -> Result<bool, StoreError> {
        validate_name("idempotency key", key)?;
        let deleted = self
            .inner()
            .idempotency
            .delete_one(doc! { "_id": key, "status": PENDING })
            .await
            .map_err(store_error)?;
        Ok(deleted.deleted_count > 0)
    }
}
