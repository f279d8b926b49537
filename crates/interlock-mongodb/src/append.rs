//! Appends: one multi-document transaction per batch, retried while the server calls the
//! failure transient.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use interlock_core::{
    AppendResult, ConcurrencyError, EventId, ExpectedVersion, NewEvent, RecordedEvent, StoreError,
    StreamId, ValidationError, validate_append,
};
use mongodb::ClientSession;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::Error as DriverError;
use mongodb::options::{ReadConcern, ReturnDocument, WriteConcern};

use crate::codec::{self, to_i64};
use crate::error::{
    backend, is_duplicate_key, is_transient_transaction, is_unknown_commit, store_error,
};
use crate::schema::EVENTS_COUNTER;
use crate::store::MongoEventStore;

/// Room for an event document's fields besides payload, metadata, type name and stream id.
const ENVELOPE_OVERHEAD: usize = 512;

/// What one transaction attempt found.
enum Step {
    /// The batch was stored earlier: nothing written, the transaction is over.
    Existing(AppendResult),
    /// The batch is written; the transaction waits for its commit.
    Written(AppendResult),
}

/// Why one attempt failed.
enum Failure {
    /// Final: report it.
    Fatal(StoreError),
    /// Retry the whole transaction; this is the error to report if time runs out.
    Retry(StoreError),
}

fn classify(error: DriverError) -> Failure {
    // A write conflict with a concurrent append carries the TransientTransactionError label. A
    // duplicate key means another writer committed the same version or event id after this
    // attempt's snapshot was taken: the next attempt re-reads both, and answers with the
    // actual version (ConcurrencyError) or the original append (idempotent retry).
    if is_transient_transaction(&error) || is_duplicate_key(&error) {
        Failure::Retry(store_error(error))
    } else {
        Failure::Fatal(store_error(error))
    }
}

/// Refuses an event whose document would exceed the server's document size limit, before
/// anything is written.
pub(crate) fn check_document_len(
    store: &MongoEventStore,
    which: &str,
    event_type: &str,
    stream: &StreamId,
    payload_len: usize,
    metadata_len: usize,
) -> Result<(), ValidationError> {
    let max = store.inner().max_document_len;
    let needed = payload_len
        .saturating_add(metadata_len)
        .saturating_add(event_type.len())
        .saturating_add(stream.category().len())
        .saturating_add(stream.id().len())
        .saturating_add(ENVELOPE_OVERHEAD);
    if needed > max {
        return Err(ValidationError::new(
            "payload",
            format!(
                "{which} ({event_type}) needs about {needed} bytes as a MongoDB document, \
                 the server's limit is {max}"
            ),
        ));
    }
    Ok(())
}

/// The current version of a stream, outside any transaction.
pub(crate) async fn stream_version(
    store: &MongoEventStore,
    stream: &StreamId,
) -> Result<u64, StoreError> {
    let doc = store
        .inner()
        .streams
        .find_one(codec::stream_filter(stream))
        .projection(doc! { "version": 1 })
        .await
        .map_err(store_error)?;
    version_of(stream, doc.as_ref())
}

fn version_of(stream: &StreamId, doc: Option<&Document>) -> Result<u64, StoreError> {
    match doc {
        None => Ok(0),
        Some(doc) => codec::Fields::new(doc, "a stored stream")
            .u64("version")
            .map_err(|e| backend(format!("stream {stream}: {e}"))),
    }
}

/// Appends `events` to `stream` in one transaction (see the crate docs for why readers never
/// skip what it writes).
pub(crate) async fn append(
    store: &MongoEventStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<AppendResult, StoreError> {
    validate_append(expected, events)?;
    let inner = store.inner();
    let recorded_at = codec::now();
    let mut docs = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let doc = codec::event_document(event, stream, 0, 0, recorded_at)?;
        let metadata_len = match doc.get("metadata") {
            Some(Bson::Binary(b)) => b.bytes.len(),
            _ => 0,
        };
        check_document_len(
            store,
            &format!("event #{}", index + 1),
            &event.event_type,
            stream,
            event.payload.len(),
            metadata_len,
        )?;
        docs.push(doc);
    }
    let ids: Vec<Bson> = events
        .iter()
        .map(|e| codec::uuid(e.event_id.as_uuid()))
        .collect();

    // One deadline for the whole call, the wait for this process's turn included: during an
    // outage appends queue behind each other's retries, and without it a queued append could
    // wait several whole retry periods. Running out before anything was sent is Unavailable,
    // and retrying then is safe.
    let deadline = Instant::now() + inner.config.transaction_timeout;
    let out_of_time = || StoreError::Unavailable {
        backend: "mongodb",
        source: format!(
            "no turn to append to {stream} within the transaction timeout ({:?})",
            inner.config.transaction_timeout
        )
        .into(),
    };
    let mut session = tokio::time::timeout_at(deadline.into(), inner.client.start_session())
        .await
        .map_err(|_| out_of_time())?
        .map_err(store_error)?;
    let _turn = tokio::time::timeout_at(deadline.into(), inner.append_turn.lock())
        .await
        .map_err(|_| out_of_time())?;
    let mut attempt = 0_u32;
    // Set once a commit of this call had an unknown outcome: if a later attempt finds the
    // batch stored, it was this call that stored it.
    let mut maybe_committed = false;
    loop {
        attempt += 1;
        let attempt_result = attempt_once(
            store,
            &mut session,
            stream,
            expected,
            events,
            &ids,
            &mut docs,
            recorded_at,
        )
        .await;
        let retry_error = match attempt_result {
            Ok(Step::Existing(mut result)) => {
                if maybe_committed {
                    result.already_appended = false;
                }
                return Ok(result);
            }
            Ok(Step::Written(result)) => {
                match commit(&mut session, deadline, &mut maybe_committed).await {
                    Ok(()) => return Ok(result),
                    Err(Failure::Retry(e)) => e,
                    Err(Failure::Fatal(e)) => return Err(e),
                }
            }
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(e)) => e,
        };
        if Instant::now() >= deadline {
            tracing::warn!(%stream, attempt, "append gave up after transient transaction errors");
            return Err(retry_error);
        }
        back_off(attempt).await;
    }
}

/// Sleeps a random time up to 2^attempt ms (at most 64 ms), so racing writers spread out.
async fn back_off(attempt: u32) {
    let cap_us = 1_000_u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=cap_us))).await;
}

/// Commits, retrying the commit itself while its outcome is unknown (safe: the server
/// remembers a committed transaction). `Retry` when the whole transaction must run again.
/// Sets `maybe_committed` when an outcome was unknown.
async fn commit(
    session: &mut ClientSession,
    deadline: Instant,
    maybe_committed: &mut bool,
) -> Result<(), Failure> {
    let mut attempt = 0_u32;
    loop {
        attempt += 1;
        match session.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(e) if is_unknown_commit(&e) && Instant::now() < deadline => {
                *maybe_committed = true;
                back_off(attempt).await;
            }
            Err(e) if is_unknown_commit(&e) => {
                // Still unknown at the deadline: Unavailable, and the caller's retry with the
                // same event ids resolves it.
                return Err(Failure::Fatal(store_error(e)));
            }
            Err(e) if is_transient_transaction(&e) => return Err(Failure::Retry(store_error(e))),
            Err(e) => return Err(Failure::Fatal(store_error(e))),
        }
    }
}

/// One transaction: starts it, runs the body, aborts unless the batch is ready to commit.
#[allow(clippy::too_many_arguments)]
async fn attempt_once(
    store: &MongoEventStore,
    session: &mut ClientSession,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
    ids: &[Bson],
    docs: &mut [Document],
    recorded_at: DateTime<Utc>,
) -> Result<Step, Failure> {
    session
        .start_transaction()
        .read_concern(ReadConcern::snapshot())
        .write_concern(WriteConcern::majority())
        .await
        .map_err(classify)?;
    let result = body(
        store,
        session,
        stream,
        expected,
        events,
        ids,
        docs,
        recorded_at,
    )
    .await;
    if !matches!(result, Ok(Step::Written(_))) {
        // The server may have aborted it already; either way nothing of it remains.
        let _ = session.abort_transaction().await;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn body(
    store: &MongoEventStore,
    session: &mut ClientSession,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[NewEvent],
    ids: &[Bson],
    docs: &mut [Document],
    recorded_at: DateTime<Utc>,
) -> Result<Step, Failure> {
    let inner = store.inner();

    // 1. A retried batch: its ids are stored already.
    let stored: Vec<Document> = inner
        .events
        .find(doc! { "event_id": { "$in": ids } })
        .session(&mut *session)
        .await
        .map_err(classify)?
        .stream(&mut *session)
        .try_collect()
        .await
        .map_err(classify)?;
    if !stored.is_empty() {
        let stored = stored
            .iter()
            .map(codec::event)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Failure::Fatal)?;
        return match existing_append(stream, events, stored) {
            Ok(result) => Ok(Step::Existing(result)),
            Err(e) => Err(Failure::Fatal(e)),
        };
    }

    // 2. The expected version, checked in the transaction's snapshot.
    let filter = codec::stream_filter(stream);
    let stream_doc = inner
        .streams
        .find_one(filter.clone())
        .session(&mut *session)
        .await
        .map_err(classify)?;
    let current = version_of(stream, stream_doc.as_ref()).map_err(Failure::Fatal)?;
    if !expected.is_satisfied_by(current) {
        return Err(Failure::Fatal(
            ConcurrencyError {
                stream: stream.clone(),
                expected,
                actual: current,
            }
            .into(),
        ));
    }

    // 3. Positions: the counter document, incremented in this transaction. Every append
    //    writes it, so concurrent appends conflict here and commit one after the other.
    let count = events.len() as u64;
    let counter = inner
        .counters
        .find_one_and_update(
            doc! { "_id": EVENTS_COUNTER },
            doc! { "$inc": { "value": to_i64(count) } },
        )
        .upsert(true)
        .return_document(ReturnDocument::After)
        .session(&mut *session)
        .await
        .map_err(classify)?;
    let last_position = match counter {
        Some(doc) => codec::Fields::new(&doc, "the position counter")
            .u64("value")
            .map_err(|e| Failure::Fatal(backend(e)))?,
        None => return Err(Failure::Fatal(backend("the position counter is missing"))),
    };
    let first_position = last_position
        .checked_sub(count - 1)
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            Failure::Fatal(backend(format!(
                "the position counter ({last_position}) is below the batch size"
            )))
        })?;

    // 4. The events.
    for (offset, doc) in docs.iter_mut().enumerate() {
        doc.insert("_id", to_i64(first_position + offset as u64));
        doc.insert("version", to_i64(current + offset as u64 + 1));
    }
    inner
        .events
        .insert_many(&*docs)
        .session(&mut *session)
        .await
        .map_err(classify)?;

    // 5. The stream document.
    let new_version = current + count;
    let at = codec::datetime(recorded_at);
    if stream_doc.is_none() {
        inner
            .streams
            .insert_one(doc! {
                "category": stream.category(),
                "stream_id": stream.id(),
                "version": to_i64(new_version),
                "last_position": to_i64(last_position),
                "created_at": at.clone(),
                "updated_at": at,
            })
            .session(&mut *session)
            .await
            .map_err(classify)?;
    } else {
        let mut guard = filter;
        guard.insert("version", to_i64(current));
        let updated = inner
            .streams
            .update_one(
                guard,
                doc! { "$set": {
                    "version": to_i64(new_version),
                    "last_position": to_i64(last_position),
                    "updated_at": at,
                } },
            )
            .session(&mut *session)
            .await
            .map_err(classify)?;
        if updated.matched_count != 1 {
            // Cannot happen under snapshot isolation; if it does, look again.
            return Err(Failure::Retry(backend(format!(
                "stream {stream} changed during the append"
            ))));
        }
    }
    Ok(Step::Written(AppendResult {
        first_version: current + 1,
        last_version: new_version,
        first_position: interlock_core::Position::from_sequence(first_position),
        last_position: interlock_core::Position::from_sequence(last_position),
        already_appended: false,
    }))
}

/// Recognises a retried append: every id already stored, in order, in this stream, with the
/// same content. Returns the original result; any partial or different match is an error.
/// (The in-memory store's rule, applied to the stored events found by id.)
fn existing_append(
    stream: &StreamId,
    events: &[NewEvent],
    stored: Vec<RecordedEvent>,
) -> Result<AppendResult, StoreError> {
    let by_id: HashMap<EventId, RecordedEvent> =
        stored.into_iter().map(|e| (e.event_id, e)).collect();
    let found: Vec<Option<&RecordedEvent>> =
        events.iter().map(|e| by_id.get(&e.event_id)).collect();
    let Some(first) = found.iter().flatten().next().copied() else {
        return Err(backend("stored events vanished while checking a retry"));
    };
    for (offset, (new, recorded)) in events.iter().zip(&found).enumerate() {
        let matches = recorded.is_some_and(|r| {
            r.stream_id == *stream
                && r.stream_version == first.stream_version + offset as u64
                && new.same_content_as(r)
        });
        if !matches {
            // A partial overlap names an id that is stored, so the message stays true.
            let clash = recorded.unwrap_or(first);
            return Err(StoreError::DuplicateEventId {
                event_id: clash.event_id,
                stream: Some(clash.stream_id.clone()),
            });
        }
    }
    let last = found.last().copied().flatten().unwrap_or(first);
    Ok(AppendResult {
        first_version: first.stream_version,
        last_version: last.stream_version,
        first_position: first.position,
        last_position: last.position,
        already_appended: true,
    })
}
