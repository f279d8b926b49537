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
}

impl Default for ProcessorSettings {
    fn default() -> Self {
        Self {
            delivery: Delivery::Background,
            batch_size: 500,
            retry: RetryPolicy::default(),
            on_failure: FailurePolicy::Park,
            replay_on_start: false,
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
