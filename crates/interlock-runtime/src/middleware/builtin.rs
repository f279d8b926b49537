//! The built-in middleware: logging, retry on conflict, context propagation, timeouts.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::{MessageInfo, Middleware, Next, Outcome};
use crate::context::{DispatchOptions, ExecutionContext};
use crate::error::Error;

/// A tracing span per message (kind, type, handler, aggregate id) and one event with the outcome
/// and duration: `info` on success, `warn` on failure.
#[derive(Clone, Debug, Default)]
pub struct LoggingMiddleware {
    quiet_success: bool,
}

impl LoggingMiddleware {
    /// Logs every message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Logs successes at `debug` instead of `info` (failures stay at `warn`).
    pub fn quiet_success(mut self) -> Self {
        self.quiet_success = true;
        self
    }
}

impl Middleware for LoggingMiddleware {
    fn handle<'a>(
        &'a self,
        message: &'a MessageInfo,
        options: DispatchOptions,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        let aggregate = message
            .aggregate_id()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default();
        let span = tracing::info_span!(
            "message",
            kind = ?message.kind(),
            message = message.type_name(),
            handler = message.handler(),
            aggregate = %aggregate,
        );
        Box::pin(tracing::Instrument::instrument(
            async move {
                let started = Instant::now();
                let result = next.run(options).await;
                let duration_us = started.elapsed().as_micros() as u64;
                match &result {
                    Ok(outcome) if self.quiet_success => {
                        tracing::debug!(outcome = "ok", events = outcome.events, duration_us);
                    }
                    Ok(outcome) => {
                        tracing::info!(outcome = "ok", events = outcome.events, duration_us);
                    }
                    Err(error) => {
                        tracing::warn!(outcome = "error", %error, duration_us);
                    }
                }
                result
            },
            span,
        ))
    }
}

/// Re-runs a command that lost an optimistic-concurrency race: the aggregate is reloaded with the
/// winner's events and the handler decides again. Bounded attempts, exponential backoff with
/// jitter; when attempts run out, the last conflict (naming stream and versions) is returned.
#[derive(Clone, Debug)]
pub struct ConcurrencyRetryMiddleware {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for ConcurrencyRetryMiddleware {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(200),
        }
    }
}

impl ConcurrencyRetryMiddleware {
    /// 10 attempts, backoff from 2 ms doubling to 200 ms, with ±50% jitter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts in all (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The first wait and the longest wait between attempts.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    fn wait(&self, attempt: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_backoff);
        // Jitter spreads racing writers apart so they do not collide again in lockstep.
        base.mul_f64(0.5 + fastrand::f64())
    }
}

impl Middleware for ConcurrencyRetryMiddleware {
    fn intercepts(&self, message: &MessageInfo) -> bool {
        message.is_command()
    }

    fn handle<'a>(
        &'a self,
        message: &'a MessageInfo,
        options: DispatchOptions,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(async move {
            let mut attempt = 1;
            loop {
                match next.run(options.clone()).await {
                    Err(Error::Concurrency(conflict)) if attempt < self.max_attempts => {
                        tracing::debug!(
                            command = message.type_name(),
                            attempt,
                            %conflict,
                            "concurrency conflict, retrying"
                        );
                        tokio::time::sleep(self.wait(attempt)).await;
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        })
    }
}

/// Carries the flow's correlation id and the causing message's id into messages dispatched while
/// another is being handled (from a command handler, an event processor or a saga step). The
/// outer context comes back when the nested dispatch returns. Ids given explicitly in
/// [`DispatchOptions`] win.
#[derive(Clone, Copy, Debug, Default)]
pub struct ContextPropagationMiddleware;

impl ContextPropagationMiddleware {
    /// The middleware.
    pub fn new() -> Self {
        Self
    }
}

impl Middleware for ContextPropagationMiddleware {
    fn handle<'a>(
        &'a self,
        _message: &'a MessageInfo,
        mut options: DispatchOptions,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        if let Some(outer) = ExecutionContext::current() {
            options.correlation_id.get_or_insert(outer.correlation_id);
            options.causation_id.get_or_insert(outer.message_id);
        }
        next.run(options)
    }
}

/// Fails a message that takes longer than a limit with [`Error::Timeout`].
///
/// The caller stops waiting; a command's append that was already sent may still commit. Retry
/// with the same idempotency key (or event ids) to learn the outcome safely.
#[derive(Clone, Copy, Debug)]
pub struct TimeoutMiddleware {
    limit: Duration,
}

impl TimeoutMiddleware {
    /// Messages fail after `limit`.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl Middleware for TimeoutMiddleware {
    fn handle<'a>(
        &'a self,
        message: &'a MessageInfo,
        options: DispatchOptions,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(async move {
            match tokio::time::timeout(self.limit, next.run(options)).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout(
                    self.limit,
                    format!("{:?} {}", message.kind(), message.type_name()),
                )),
            }
        })
    }
}
