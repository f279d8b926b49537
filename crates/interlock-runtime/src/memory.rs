//! The in-memory event store: the reference implementation of the store contract.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use interlock_core::{
    AppendNotifier, AppendResult, ConcurrencyError, EventId, EventRewrite, EventStore,
    EventSubscription, ExpectedVersion, NewEvent, Position, RecordedEvent, SideStores, StoreError,
    StreamId, StreamInfo, ValidationError, poll_subscription, recognise_retry, validate_append,
    validate_rewrite,
};

use crate::cache::FastState;

/// Keeps every event in memory; the default store of an application, and the reference the
/// other backends are checked against. It also implements every side store (snapshots,
/// checkpoints, saga state, dead letters, idempotency keys). Positions are 1, 2, 3, ...; appends are serialized by a
/// lock, so commit order is position order and readers never skip.
///
/// Cheap to clone: clones share the same events.
#[derive(Clone, Default)]
pub struct InMemoryEventStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: RwLock<State>,
    notifier: Arc<AppendNotifier>,
    side: crate::memory_side::Side,
}

#[derive(Default)]
struct State {
    /// The global log; the event at index `i` has position `i + 1`.
    log: Vec<RecordedEvent>,
    /// Log indexes of each stream's events, by version - 1.
    streams: HashMap<StreamId, Vec<usize>, FastState>,
    /// Every stream, in order of creation.
    created: Vec<StreamId>,
    /// `created` in id order, for listing: sorted when streams are listed, not on every new
    /// stream (an ordered set updated by each append cost W1 ~10%). Holds a sorted prefix of
    /// `created`'s streams; a listing sorts in the ones created since.
    listing: Mutex<Vec<StreamId>>,
    /// Log index of each event id.
    ids: HashMap<EventId, usize, FastState>,
}

impl std::fmt::Debug for InMemoryEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("InMemoryEventStore")
            .field("events", &state.log.len())
            .field("streams", &state.streams.len())
            .finish()
    }
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn side(&self) -> &crate::memory_side::Side {
        &self.inner.side
    }
}

impl State {
    fn version(&self, stream: &StreamId) -> u64 {
        self.streams.get(stream).map_or(0, |v| v.len() as u64)
    }

    /// Recognises a retried append: every id already stored, in order, in this stream, with the
    /// same content. Returns the original result; any partial or different match is an error.
    fn existing_append(
        &self,
        stream: &StreamId,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>, StoreError> {
        let stored = |e: &NewEvent| self.ids.get(&e.event_id).map(|&i| &self.log[i]);
        // The usual case, no id stored yet, needs no list.
        let Some(first) = events.iter().position(|e| stored(e).is_some()) else {
            return Ok(None);
        };
        let stored: Vec<Option<&RecordedEvent>> = events
            .iter()
            .enumerate()
            .map(|(i, e)| if i < first { None } else { stored(e) })
            .collect();
        recognise_retry(stream, events, &stored)
    }

    /// Streams in id order, from the first after `after`, at most `limit`, with their info.
    fn listed(&self, after: Option<&StreamId>, limit: usize) -> Vec<StreamInfo> {
        let mut listing = self.listing.lock().unwrap_or_else(PoisonError::into_inner);
        if listing.len() < self.created.len() {
            // A stable sort finds the sorted run already there and merges the new tail into it.
            let known = listing.len();
            listing.extend_from_slice(&self.created[known..]);
            listing.sort();
        }
        let start = after.map_or(0, |after| listing.partition_point(|s| s <= after));
        listing[start..]
            .iter()
            .take(limit)
            .filter_map(|stream| {
                self.streams
                    .get(stream)
                    .and_then(|indexes| self.info(stream, indexes))
            })
            .collect()
    }

    fn info(&self, stream: &StreamId, indexes: &[usize]) -> Option<StreamInfo> {
        let first = &self.log[*indexes.first()?];
        let last = &self.log[*indexes.last()?];
        Some(StreamInfo {
            stream_id: stream.clone(),
            version: indexes.len() as u64,
            last_position: last.position,
            created_at: first.recorded_at,
            updated_at: last.recorded_at,
        })
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        validate_append(expected, &events)?;
        let result = {
            let mut state = self
                .inner
                .state
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(existing) = state.existing_append(stream, &events)? {
                return Ok(existing);
            }
            let State {
                log,
                streams,
                created,
                ids,
                ..
            } = &mut *state;
            // One lookup of the stream for the check and the append; a new stream is only
            // inserted once the check has passed.
            let existing = streams.get_mut(stream);
            let current = existing.as_ref().map_or(0, |v| v.len() as u64);
            if !expected.is_satisfied_by(current) {
                return Err(ConcurrencyError {
                    stream: stream.clone(),
                    expected,
                    actual: current,
                }
                .into());
            }
            let count = events.len();
            let indexes = match existing {
                Some(indexes) => indexes,
                None => {
                    created.push(stream.clone());
                    match streams.entry(stream.clone()) {
                        Entry::Vacant(slot) => slot.insert(Vec::with_capacity(count)),
                        Entry::Occupied(slot) => slot.into_mut(),
                    }
                }
            };
            let recorded_at: DateTime<Utc> = Utc::now();
            let first_index = log.len();
            ids.reserve(count);
            for (offset, event) in events.into_iter().enumerate() {
                let index = first_index + offset;
                ids.insert(event.event_id, index);
                indexes.push(index);
                log.push(RecordedEvent {
                    event_id: event.event_id,
                    stream_id: stream.clone(),
                    stream_version: current + offset as u64 + 1,
                    position: Position::from_sequence(index as u64 + 1),
                    recorded_at,
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    correlation_id: event.correlation_id,
                    causation_id: event.causation_id,
                    metadata: event.metadata,
                    payload: event.payload,
                });
            }
            AppendResult {
                first_version: current + 1,
                last_version: current + count as u64,
                first_position: Position::from_sequence(first_index as u64 + 1),
                last_position: Position::from_sequence((first_index + count) as u64),
                already_appended: false,
            }
        };
        self.inner.notifier.notify();
        Ok(result)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let state = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(indexes) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let start = from.max(1) as usize - 1;
        let end = to.map_or(indexes.len(), |to| (to as usize).min(indexes.len()));
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(indexes[start..end]
            .iter()
            .map(|&i| state.log[i].clone())
            .collect())
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if after.major() != 0 {
            return Ok(Vec::new());
        }
        let state = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let start = usize::try_from(after.minor()).unwrap_or(usize::MAX);
        if start >= state.log.len() {
            return Ok(Vec::new());
        }
        let end = start.saturating_add(limit).min(state.log.len());
        Ok(state.log[start..end].to_vec())
    }

    fn subscribe_all(&self, after: Position) -> EventSubscription {
        poll_subscription(self.clone(), self.inner.notifier.clone(), after, 1024)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        let state = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(state.version(stream))
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>, StoreError> {
        let state = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(state
            .streams
            .get(stream)
            .and_then(|indexes| state.info(stream, indexes)))
    }

    async fn list_streams(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        let state = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(state.listed(after, limit))
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        let state = self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(Position::from_sequence(state.log.len() as u64))
    }

    fn side_stores(&self) -> Option<SideStores> {
        Some(SideStores::from_backend(self.clone()).with_leases(self.clone()))
    }

    async fn rewrite_event(&self, rewrite: EventRewrite) -> Result<(), StoreError> {
        validate_rewrite(&rewrite)?;
        let mut state = self
            .inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let index = state
            .ids
            .get(&rewrite.event_id)
            .copied()
            .filter(|&i| state.log[i].stream_id == rewrite.stream_id)
            .ok_or_else(|| {
                ValidationError::new(
                    "event_id",
                    format!(
                        "no event {} in stream {}",
                        rewrite.event_id, rewrite.stream_id
                    ),
                )
            })?;
        let event = &mut state.log[index];
        event.event_type = rewrite.event_type;
        event.schema_version = rewrite.schema_version;
        event.payload = rewrite.payload;
        Ok(())
    }
}
