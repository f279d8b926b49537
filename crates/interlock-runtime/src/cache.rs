//! A bounded per-aggregate-type cache of loaded instances, and the fast hasher of the runtime's
//! in-process maps.
//!
//! An instance is *taken out* while a command runs on it and put back only after the command's
//! events are stored, so a failing command can never leave a changed copy behind, and two commands
//! on one instance never share a copy (the second one loads its own and the store's version check
//! decides). A cached copy is only a starting point: the stream's tail is always read before use,
//! so appends from other processes are never missed.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
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

impl<A: Default> Loaded<A> {
    /// The state before any event.
    pub(crate) fn fresh() -> Self {
        Self {
            state: A::default(),
            version: 0,
            snapshot: None,
        }
    }
}

pub(crate) struct AggregateCache<A> {
    capacity: usize,
    entries: Mutex<HashMap<AggregateId, Loaded<A>, FastState>>,
}

impl<A> AggregateCache<A> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::default()),
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
        if entries.len() >= self.capacity && !entries.contains_key(&id) {
            // Full: drop an arbitrary eighth of the entries in one pass (any entry is only a
            // head start), so that eviction costs a table scan every `capacity / 8` puts
            // instead of a search for a victim on every put.
            let mut evict = (self.capacity / 8).max(1);
            entries.retain(|_, _| {
                if evict == 0 {
                    return true;
                }
                evict -= 1;
                false
            });
        }
        match entries.entry(id) {
            std::collections::hash_map::Entry::Occupied(mut cached) => {
                if cached.get().version < loaded.version {
                    cached.insert(loaded);
                }
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(loaded);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Builds [`FastHasher`]s with a per-map random key: the hasher of the runtime's in-process maps
/// (the cache, the in-memory store's indexes, the applier tables).
///
/// SipHash, the standard library's default, showed as the largest single cost of dispatching a
/// command in memory (every command hashes its aggregate id and stream id several times). This
/// one hashes a word with one 64×64→128-bit multiply. The random key keeps colliding keys
/// from being precomputed; it is not a cryptographic MAC, which in-process maps do not need.
#[derive(Clone, Copy)]
pub(crate) struct FastState {
    seed: u64,
    key: u64,
}

impl Default for FastState {
    fn default() -> Self {
        // `RandomState` draws its keys from the OS once per thread, then increments them: two
        // hashes of different values give two independent-looking words.
        let random = std::collections::hash_map::RandomState::new();
        Self {
            seed: random.hash_one(0x5EED_u64),
            key: random.hash_one(0x0C0F_FEE5_u64) | 1,
        }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher {
            acc: self.seed,
            key: self.key,
        }
    }
}

/// See [`FastState`].
pub(crate) struct FastHasher {
    acc: u64,
    key: u64,
}

/// The high and low halves of the 128-bit product, folded into one word.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

impl FastHasher {
    #[inline]
    fn word(&mut self, word: u64) {
        self.acc = fold_mul(self.acc ^ word, self.key ^ MIX);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // The length first, so that inputs differing only by trailing zero bytes differ.
        self.acc = self.acc.wrapping_add(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.word(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.word(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.word(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.word(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.word(i);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.word(i as u64);
        self.word((i >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.word(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // One more round, so that the last word reaches the top bits (hashbrown's tag) too.
        fold_mul(self.acc, self.key.rotate_left(32) ^ MIX)
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

    #[test]
    fn a_full_cache_keeps_its_newest_entry_and_its_bound() {
        let cache = AggregateCache::new(16);
        for i in 0..1000u32 {
            cache.put(AggregateId::from(i), loaded(i, 1));
            assert!(cache.len() <= 16);
            assert!(cache.take(&AggregateId::from(i)).is_some(), "{i} just put");
            cache.put(AggregateId::from(i), loaded(i, 1));
        }
    }

    #[test]
    fn the_fast_hasher_spreads_similar_keys() {
        use std::collections::HashSet;
        let state = FastState::default();
        // Short, similar keys (the usual stream and aggregate ids) differ in the tag bits
        // (top 7) and the bucket bits (low) alike.
        let hashes: Vec<u64> = (0..4096u32)
            .map(|i| state.hash_one(format!("acc-{i}").as_str()))
            .collect();
        let distinct: HashSet<u64> = hashes.iter().copied().collect();
        assert_eq!(distinct.len(), hashes.len());
        let low: HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 2400, "{} of 4096 low buckets", low.len());
        assert_eq!(top.len(), 128);
        // Prefixes and trailing zero bytes do not collide.
        assert_ne!(
            state.hash_one([1u8, 0].as_slice()),
            state.hash_one([1u8].as_slice())
        );
        assert_ne!(state.hash_one("ab"), state.hash_one("a"));
        // Two maps get two keys.
        assert_ne!(FastState::default().hash_one(7u64), state.hash_one(7u64));
    }
}
