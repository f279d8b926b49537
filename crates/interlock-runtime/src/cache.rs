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

pub(crate) struct AggregateCache<A> {
    capacity: usize,
    entries: Mutex<HashMap<AggregateId, (A, u64)>>,
}

impl<A> AggregateCache<A> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Removes and returns the cached state and its version.
    pub(crate) fn take(&self, id: &AggregateId) -> Option<(A, u64)> {
        if self.capacity == 0 {
            return None;
        }
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }

    /// Stores a state known to match the stream at `version`; keeps a newer copy if one is there.
    pub(crate) fn put(&self, id: AggregateId, state: A, version: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, cached)) = entries.get(&id) {
            if *cached >= version {
                return;
            }
        } else if entries.len() >= self.capacity {
            // Evict an arbitrary entry: cheap, and any entry is only a head start.
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(id, (state, version));
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

    #[test]
    fn take_removes_and_put_keeps_the_newest() {
        let cache = AggregateCache::new(2);
        let id = AggregateId::from("a");
        cache.put(id.clone(), "v2", 2);
        cache.put(id.clone(), "v1", 1);
        assert_eq!(cache.take(&id), Some(("v2", 2)));
        assert_eq!(cache.take(&id), None);
    }

    #[test]
    fn capacity_is_a_bound() {
        let cache = AggregateCache::new(2);
        for i in 0..10u32 {
            cache.put(AggregateId::from(i), i, 1);
        }
        assert_eq!(cache.len(), 2);
        let disabled = AggregateCache::new(0);
        disabled.put(AggregateId::from("x"), 1, 1);
        assert_eq!(disabled.take(&AggregateId::from("x")), None);
    }
}
