//! A bounded per-aggregate-type cache of loaded instances.
//!
//! An instance is *taken out* while a command runs on it and put back only after the command's
//! events are stored, so a failing command can never leave a changed copy behind, and two commands
//! on one instance never share a copy (the second one loads its own and the store's version check
//! decides). A cached copy is only a starting point: the stream's tail is always read before use,
//! so appends from other processes are never missed.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use interlock_core::AggregateId;

use crate::snapshot::SnapshotMark;

/// A state known to match its stream at `version`.
pub(crate) struct Loaded<A> {
    pub(crate) state: A,
    pub(crate) version: u64,
    /// The last snapshot of this instance, if known.
    pub(crate) snapshot: Option<SnapshotMark>,
}

pub(crate) struct AggregateCache<A> {
    capacity: usize,
    entries: Mutex<HashMap<AggregateId, Loaded<A>>>,
}

impl<A> AggregateCache<A> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Removes and returns the cached state.
    pub(crate) fn take(&self, id: &AggregateId) -> Option<Loaded<A>> {
        if self.capacity == 0 {
            return None;
        }
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }

    /// Stores a loaded state; keeps a newer copy if one is there.
    pub(crate) fn put(&self, id: AggregateId, loaded: Loaded<A>) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = entries.get(&id) {
            if cached.version >= loaded.version {
                return;
            }
        } else if entries.len() >= self.capacity {
            // Evict an arbitrary entry: cheap, and any entry is only a head start.
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(id, loaded);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded<T>(state: T, version: u64) -> Loaded<T> {
        Loaded {
            state,
            version,
            snapshot: None,
        }
    }

    #[test]
    fn take_removes_and_put_keeps_the_newest() {
        let cache = AggregateCache::new(2);
        let id = AggregateId::from("a");
        cache.put(id.clone(), loaded("v2", 2));
        cache.put(id.clone(), loaded("v1", 1));
        let taken = cache.take(&id).unwrap();
        assert_eq!((taken.state, taken.version), ("v2", 2));
        assert!(cache.take(&id).is_none());
    }

    #[test]
    fn capacity_is_a_bound() {
        let cache = AggregateCache::new(2);
        for i in 0..10u32 {
            cache.put(AggregateId::from(i), loaded(i, 1));
        }
        assert_eq!(cache.len(), 2);
        let disabled = AggregateCache::new(0);
        disabled.put(AggregateId::from("x"), loaded(1, 1));
        assert!(disabled.take(&AggregateId::from("x")).is_none());
    }
}
