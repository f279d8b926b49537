//! How a processor is fed and how it copes with failures.

use std::time::Duration;

use interlock_core::Position;

/// When a processor sees new events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Delivery {
    /// In a background task started by `Application::start`: dispatch returns as soon as the
    /// events are stored; use `Application::wait_for` to read your own writes.
    #[default]
    Background,
    /// Before `dispatch` returns: simple to reason about (tests, small apps), at the cost of
    /// latency on every command. A failure is reported to the dispatcher; the events stay stored.
    Inline,
}

/// What to do with an event that still fails after every retry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Park it as a dead letter (with its error and attempt count) and go on with the next event.
    #[default]
    Park,
    /// Stop the processor at that event; its checkpoint stays before it.
    Stop,
}

/// How often and how patiently a failing event is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles each time.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retry: one attempt.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The wait after failed attempt `attempt` (1-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Settings of one processor, given at registration.
#[derive(Clone, Copy, Debug)]
pub struct ProcessorSettings {
    pub(crate) delivery: Delivery,
    pub(crate) batch_size: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) on_failure: FailurePolicy,
    pub(crate) replay_on_start: bool,
    pub(crate) partitions: Option<u32>,
    pub(crate) lease_ttl: Duration,
}

impl Default for ProcessorSettings {
    fn default() -> Self {
        Self {
            delivery: Delivery::Background,
            batch_size: 500,
            retry: RetryPolicy::default(),
            on_failure: FailurePolicy::Park,
            replay_on_start: false,
            partitions: None,
            lease_ttl: Duration::from_secs(10),
        }
    }
}

impl ProcessorSettings {
    /// Background delivery, batches of 500, 3 attempts, then park.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inline delivery (see [`Delivery::Inline`]).
    pub fn inline() -> Self {
        Self::default().delivery(Delivery::Inline)
    }

    /// Sets the delivery mode.
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// Most events handled between two checkpoint saves (at least 1).
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// The retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = RetryPolicy {
            max_attempts: retry.max_attempts.max(1),
            ..retry
        };
        self
    }

    /// For processors whose state lives in process memory (a `HashMap` view): keep the
    /// checkpoint in memory too, so every start replays every event from the beginning. Without
    /// it, the checkpoint is durable in the store and a restart resumes after it, which is right
    /// for read models and effects that survive the process, and wrong for in-memory state
    /// (it would start empty and only see new events).
    pub fn replay_on_start(mut self) -> Self {
        self.replay_on_start = true;
        self
    }

    /// Splits the processor's work into `count` partitions by stream (every event of one stream
    /// goes to the same partition, so per-stream order is kept), each with its own checkpoint
    /// (`"<name>#<index>/<count>"`) and its own lease: every process of the application that
    /// registers the processor takes a fair share of the partitions, and when a process dies or
    /// stalls past its lease the others take its partitions over, resuming from their
    /// checkpoints. A process that comes back after losing a lease is fenced off at its next
    /// checkpoint write and stops that partition. `partitions(1)` makes the processor
    /// *exclusive*: one process at a time, with fail-over.
    ///
    /// Needs background delivery, a durable checkpoint (not [`replay_on_start`](Self::replay_on_start))
    /// and a store that keeps leases (all backends do); `build()` reports otherwise. The count
    /// is part of the checkpoint names: changing it starts the partitions from the beginning.
    /// Which partition a stream falls in is [`partition_of`](super::partition_of), stable across
    /// versions and platforms.
    pub fn partitions(mut self, count: u32) -> Self {
        self.partitions = Some(count.max(1));
        self
    }

    /// How long a partition's lease lasts without renewal (default 10 s, at least 100 ms): the
    /// time other processes wait before taking over the partitions of a process that died. Leases
    /// are renewed every quarter of it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.max(Duration::from_millis(100));
        self
    }

    /// What to do once retries are exhausted.
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }
}

/// Progress of a rebuild, reported after each batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildProgress {
    /// Events replayed so far (handled or skipped).
    pub processed: u64,
    /// Position of the last replayed event.
    pub position: Position,
    /// The store's head when the rebuild started: the rebuild is done when `position` reaches it.
    pub target: Position,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let retry = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        };
        let waits: Vec<_> = (1..=5).map(|a| retry.backoff(a).as_millis()).collect();
        assert_eq!(waits, vec![10, 20, 40, 50, 50]);
        assert_eq!(
            ProcessorSettings::new()
                .retry(RetryPolicy {
                    max_attempts: 0,
                    ..retry
                })
                .retry
                .max_attempts,
            1
        );
    }
}
