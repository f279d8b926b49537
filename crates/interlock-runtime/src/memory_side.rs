//! The side stores of the in-memory backend: snapshots, checkpoints, saga state, dead letters and
//! idempotency keys, with the same semantics as the durable backends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use interlock_core::lease::{Lease, LeaseStore, fenced, validate_lease_request};
use interlock_core::side::{
    CheckpointStore, DeadLetter, DeadLetterStore, IdempotencyClaim, IdempotencyStore,
    NewDeadLetter, SagaState, SagaStateStore, Snapshot, SnapshotStore, validate_json,
    validate_name,
};
use interlock_core::{ConcurrencyError, ExpectedVersion, Position, StoreError, StreamId};

use crate::memory::InMemoryEventStore;

#[derive(Default)]
pub(crate) struct SideState {
    snapshots: HashMap<StreamId, Snapshot>,
    checkpoints: HashMap<String, Position>,
    sagas: HashMap<(String, String), SagaState>,
    dead_letters: BTreeMap<u64, DeadLetter>,
    next_dead_letter: u64,
    idempotency: HashMap<String, IdempotencyClaim>,
    leases: BTreeMap<String, MemoryLease>,
}

struct MemoryLease {
    owner: String,
    fence: u64,
    expires: Instant,
}

pub(crate) type Side = Mutex<SideState>;

fn lock(side: &Side) -> std::sync::MutexGuard<'_, SideState> {
    side.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl SnapshotStore for InMemoryEventStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        validate_json("snapshot", &snapshot.payload)?;
        let mut side = lock(self.side());
        let keep_existing = side
            .snapshots
            .get(&snapshot.stream_id)
            .is_some_and(|s| s.version > snapshot.version);
        if !keep_existing {
            side.snapshots.insert(snapshot.stream_id.clone(), snapshot);
        }
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        Ok(lock(self.side()).snapshots.get(stream).cloned())
    }

    async fn delete_snapshot(&self, stream: &StreamId) -> Result<bool, StoreError> {
        Ok(lock(self.side()).snapshots.remove(stream).is_some())
    }
}

#[async_trait]
impl CheckpointStore for InMemoryEventStore {
    async fn load_checkpoint(&self, processor: &str) -> Result<Option<Position>, StoreError> {
        validate_name("processor", processor)?;
        Ok(lock(self.side()).checkpoints.get(processor).copied())
    }

    async fn save_checkpoint(&self, processor: &str, position: Position) -> Result<(), StoreError> {
        validate_name("processor", processor)?;
        lock(self.side())
            .checkpoints
            .insert(processor.to_owned(), position);
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for InMemoryEventStore {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        validate_lease_request(key, owner, ttl)?;
        let now = Instant::now();
        let mut side = lock(self.side());
        let lease = side.leases.entry(key.to_owned()).or_insert(MemoryLease {
            owner: String::new(),
            fence: 0,
            expires: now,
        });
        if lease.owner == owner {
            lease.expires = now + ttl;
        } else if lease.expires <= now {
            lease.owner = owner.to_owned();
            lease.fence += 1;
            lease.expires = now + ttl;
        } else {
            return Ok(None);
        }
        Ok(Some(Lease {
            key: key.to_owned(),
            owner: owner.to_owned(),
            fence: lease.fence,
        }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        validate_lease_request(&lease.key, &lease.owner, ttl)?;
        let mut side = lock(self.side());
        match side.leases.get_mut(&lease.key) {
            Some(held) if held.owner == lease.owner && held.fence == lease.fence => {
                held.expires = Instant::now() + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut side = lock(self.side());
        if let Some(held) = side.leases.get_mut(&lease.key)
            && held.owner == lease.owner
            && held.fence == lease.fence
        {
            held.owner.clear();
            held.expires = Instant::now();
        }
        Ok(())
    }

    async fn live_leases(&self, prefix: &str) -> Result<Vec<Lease>, StoreError> {
        let now = Instant::now();
        let side = lock(self.side());
        Ok(side
            .leases
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(_, held)| held.expires > now && !held.owner.is_empty())
            .map(|(key, held)| Lease {
                key: key.clone(),
                owner: held.owner.clone(),
                fence: held.fence,
            })
            .collect())
    }

    async fn save_checkpoint_fenced(
        &self,
        processor: &str,
        position: Position,
        lease: &Lease,
    ) -> Result<(), StoreError> {
        validate_name("processor", processor)?;
        let mut side = lock(self.side());
        let holds = side
            .leases
            .get(&lease.key)
            .is_some_and(|held| held.owner == lease.owner && held.fence == lease.fence);
        if !holds {
            return Err(fenced(lease));
        }
        side.checkpoints.insert(processor.to_owned(), position);
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

#[async_trait]
impl SagaStateStore for InMemoryEventStore {
    async fn load_saga(&self, saga: &str, key: &str) -> Result<Option<SagaState>, StoreError> {
        validate_name("saga", saga)?;
        validate_name("saga key", key)?;
        Ok(lock(self.side())
            .sagas
            .get(&(saga.to_owned(), key.to_owned()))
            .cloned())
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
        let mut side = lock(self.side());
        let id = (saga.to_owned(), key.to_owned());
        let actual = side.sagas.get(&id).map_or(0, |s| s.version);
        if actual != expected_version {
            return Err(saga_conflict(saga, key, expected_version, actual));
        }
        let version = actual + 1;
        side.sagas.insert(
            id,
            SagaState {
                version,
                state,
                updated_at: Utc::now(),
            },
        );
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
        let mut side = lock(self.side());
        let id = (saga.to_owned(), key.to_owned());
        let actual = side.sagas.get(&id).map_or(0, |s| s.version);
        if actual != expected_version {
            return Err(saga_conflict(saga, key, expected_version, actual));
        }
        side.sagas.remove(&id);
        Ok(())
    }
}

#[async_trait]
impl DeadLetterStore for InMemoryEventStore {
    async fn park(&self, letter: NewDeadLetter) -> Result<u64, StoreError> {
        validate_name("processor", &letter.processor)?;
        let mut side = lock(self.side());
        let existing = side
            .dead_letters
            .values_mut()
            .find(|d| d.processor == letter.processor && d.event_id == letter.event_id);
        if let Some(existing) = existing {
            existing.error = letter.error;
            existing.attempts = letter.attempts;
            existing.parked_at = Utc::now();
            return Ok(existing.id);
        }
        side.next_dead_letter += 1;
        let id = side.next_dead_letter;
        side.dead_letters.insert(
            id,
            DeadLetter {
                id,
                processor: letter.processor,
                position: letter.position,
                event_id: letter.event_id,
                stream_id: letter.stream_id,
                stream_version: letter.stream_version,
                event_type: letter.event_type,
                error: letter.error,
                attempts: letter.attempts,
                parked_at: Utc::now(),
            },
        );
        Ok(id)
    }

    async fn list_dead_letters(
        &self,
        processor: Option<&str>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let side = lock(self.side());
        Ok(side
            .dead_letters
            .range(after.map_or(0, |a| a.saturating_add(1))..)
            .map(|(_, d)| d)
            .filter(|d| processor.is_none_or(|p| d.processor == p))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn delete_dead_letter(&self, id: u64) -> Result<bool, StoreError> {
        Ok(lock(self.side()).dead_letters.remove(&id).is_some())
    }
}

#[async_trait]
impl IdempotencyStore for InMemoryEventStore {
    async fn claim(&self, key: &str) -> Result<IdempotencyClaim, StoreError> {
        validate_name("idempotency key", key)?;
        let mut side = lock(self.side());
        match side.idempotency.get(key) {
            Some(existing) => Ok(existing.clone()),
            None => {
                side.idempotency.insert(
                    key.to_owned(),
                    IdempotencyClaim::InProgress {
                        claimed_at: Utc::now(),
                    },
                );
                Ok(IdempotencyClaim::New)
            }
        }
    }

    async fn complete(&self, key: &str, result: Bytes) -> Result<(), StoreError> {
        validate_name("idempotency key", key)?;
        validate_json("idempotency result", &result)?;
        lock(self.side())
            .idempotency
            .insert(key.to_owned(), IdempotencyClaim::Completed(result));
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<bool, StoreError> {
        validate_name("idempotency key", key)?;
        let mut side = lock(self.side());
        if matches!(
            side.idempotency.get(key),
            Some(IdempotencyClaim::InProgress { .. })
        ) {
            side.idempotency.remove(key);
            return Ok(true);
        }
        Ok(false)
    }
}
