//! Snapshot policies and the codec that turns an aggregate's state into a snapshot and back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// When to take a snapshot of an aggregate, checked after each command that stored events.
///
/// ```
/// use std::time::Duration;
/// use interlock_runtime::SnapshotPolicy;
/// let policy = SnapshotPolicy::every(100).or_older_than(Duration::from_secs(3600));
/// # let _ = policy;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotPolicy {
    every: Option<u64>,
    max_age: Option<Duration>,
}

impl SnapshotPolicy {
    /// A snapshot each time the stream's version crosses a multiple of `events` (also when one
    /// command emits several events and jumps over the multiple).
    pub fn every(events: u64) -> Self {
        Self {
            every: Some(events.max(1)),
            max_age: None,
        }
    }

    /// A snapshot when the last one is older than `age`, or there is none yet.
    pub fn older_than(age: Duration) -> Self {
        Self {
            every: None,
            max_age: Some(age),
        }
    }

    /// Adds an age rule to a count rule.
    pub fn or_older_than(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Whether a command that moved the stream from `before` to `after` should be followed by a
    /// snapshot, given the last one taken (if known).
    pub(crate) fn due(
        &self,
        before: u64,
        after: u64,
        last: Option<SnapshotMark>,
        now: DateTime<Utc>,
    ) -> bool {
        if after <= before {
            return false;
        }
        let by_count = self.every.is_some_and(|n| before / n != after / n);
        let by_age = self.max_age.is_some_and(|age| match last {
            None => true,
            Some(mark) => now
                .signed_duration_since(mark.taken_at)
                .to_std()
                .is_ok_and(|elapsed| elapsed >= age),
        });
        by_count || by_age
    }
}

/// The version and time of the last snapshot of one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotMark {
    pub(crate) version: u64,
    pub(crate) taken_at: DateTime<Utc>,
}

/// How one aggregate type is snapshotted: the policy and its JSON codec.
pub(crate) struct SnapshotConfig<A> {
    pub(crate) policy: SnapshotPolicy,
    pub(crate) encode: fn(&A) -> Result<Vec<u8>, serde_json::Error>,
    pub(crate) decode: fn(&[u8]) -> Result<A, serde_json::Error>,
}

impl<A: Serialize + DeserializeOwned> SnapshotConfig<A> {
    pub(crate) fn json(policy: SnapshotPolicy) -> Self {
        Self {
            policy,
            encode: |state| serde_json::to_vec(state),
            decode: |bytes| serde_json::from_slice(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_rule_fires_when_a_multiple_is_crossed() {
        let p = SnapshotPolicy::every(100);
        let now = Utc::now();
        assert!(!p.due(98, 99, None, now));
        assert!(p.due(99, 100, None, now));
        assert!(p.due(98, 103, None, now), "one command with several events");
        assert!(p.due(150, 250, None, now));
        assert!(!p.due(100, 199, None, now));
        assert!(!p.due(100, 100, None, now), "no events, no snapshot");
    }

    #[test]
    fn age_rule_fires_for_old_or_missing_snapshots() {
        let p = SnapshotPolicy::older_than(Duration::from_secs(60));
        let now = Utc::now();
        assert!(p.due(1, 2, None, now), "never snapshotted");
        let fresh = SnapshotMark {
            version: 1,
            taken_at: now,
        };
        assert!(!p.due(1, 2, Some(fresh), now));
        let old = SnapshotMark {
            version: 1,
            taken_at: now - chrono::Duration::seconds(61),
        };
        assert!(p.due(1, 2, Some(old), now));
    }
}
