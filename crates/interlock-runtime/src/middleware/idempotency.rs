//! Idempotent commands: a duplicate key gets the original result.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::future::BoxFuture;
use interlock_core::side::{IdempotencyClaim, IdempotencyStore};

use super::{MessageInfo, Middleware, MiddlewareEnv, Next, Outcome};
use crate::context::DispatchOptions;
use crate::error::Error;

/// Commands dispatched with an idempotency key run once: a duplicate with the same key (now, from
/// another task, or after a restart) gets the original result. Keys live in the store's
/// idempotency table, so they survive restarts; two racing duplicates are decided by the store's
/// atomic claim, the loser waits for the winner's result.
///
/// A command that fails releases its key, so a corrected retry can run.
#[derive(Clone)]
pub struct IdempotencyMiddleware {
    store: Option<Arc<dyn IdempotencyStore>>,
    wait: Duration,
    abandoned_after: Duration,
}

impl std::fmt::Debug for IdempotencyMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyMiddleware")
            .field("wait", &self.wait)
            .field("abandoned_after", &self.abandoned_after)
            .finish_non_exhaustive()
    }
}

impl Default for IdempotencyMiddleware {
    fn default() -> Self {
        Self {
            store: None,
            wait: Duration::from_secs(30),
            abandoned_after: Duration::from_secs(300),
        }
    }
}

impl IdempotencyMiddleware {
    /// Keys in the application's store; duplicates wait up to 30 s for an original in flight; a
    /// claim older than 5 minutes without a result counts as abandoned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps keys in another store.
    pub fn with_store(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// How long a duplicate waits for the original that is still running.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// After how long a claim without a result is taken over (its process died).
    pub fn abandoned_after(mut self, after: Duration) -> Self {
        self.abandoned_after = after;
        self
    }
}

impl Middleware for IdempotencyMiddleware {
    fn attach(&mut self, env: &MiddlewareEnv) {
        self.store
            .get_or_insert_with(|| env.idempotency_store().clone());
    }

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
            let (Some(key), Some(store)) = (options.idempotency_key.clone(), &self.store) else {
                return next.run(options).await;
            };
            let key = format!("{}:{key}", message.type_name());
            run_idempotent(
                store.as_ref(),
                &key,
                message,
                self.wait,
                self.abandoned_after,
                None,
                || next.run(options.clone()),
            )
            .await
        })
    }
}

/// Runs `run` once per `key`: claims the key, stores the result; a duplicate gets the stored
/// result (waiting up to `wait` while the original runs). Shared by the middleware and the saga
/// command sender.
///
/// `take_over_after`: for callers whose `run` is itself safe to repeat (a dispatch seeded with
/// [`DispatchOptions::event_ids_from`](crate::DispatchOptions::event_ids_from), which returns
/// an earlier commit's output instead of running twice), a claim still in progress after this
/// long is not waited for: its holder may have died between the command's commit and the
/// claim's completion, so `run` goes ahead and its result completes the claim.
pub(crate) async fn run_idempotent<'a, F, Fut>(
    store: &dyn IdempotencyStore,
    key: &str,
    message: &MessageInfo,
    wait: Duration,
    abandoned_after: Duration,
    take_over_after: Option<Duration>,
    run: F,
) -> Result<Outcome, Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Outcome, Error>> + 'a,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match store.claim(key).await? {
            IdempotencyClaim::New => {
                return match run().await {
                    Ok(outcome) => record(store, message, key, outcome).await,
                    Err(error) => {
                        store.release(key).await?;
                        Err(error)
                    }
                };
            }
            IdempotencyClaim::Completed(stored) => return decode(message, key, &stored),
            IdempotencyClaim::InProgress { claimed_at } => {
                let age = Utc::now()
                    .signed_duration_since(claimed_at)
                    .to_std()
                    .unwrap_or_default();
                if take_over_after.is_some_and(|after| age > after) {
                    tracing::warn!(
                        key,
                        ?age,
                        "taking over a stale idempotency claim of a repeatable command"
                    );
                    return record(store, message, key, run().await?).await;
                }
                if age > abandoned_after {
                    tracing::warn!(key, ?age, "taking over an abandoned idempotency claim");
                    store.release(key).await?;
                    continue;
                }
                if started.elapsed() > wait {
                    return Err(Error::Idempotency {
                        key: key.to_owned(),
                        message: format!("the original is still running after {wait:?}"),
                    });
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// Completes the claim on `key` with `outcome`, and hands the outcome back.
async fn record(
    store: &dyn IdempotencyStore,
    message: &MessageInfo,
    key: &str,
    outcome: Outcome,
) -> Result<Outcome, Error> {
    let stored = encode(message, key, &outcome)?;
    store.complete(key, stored).await?;
    Ok(outcome)
}

fn encode(message: &MessageInfo, key: &str, outcome: &Outcome) -> Result<Bytes, Error> {
    let failure = |m: String| Error::Idempotency {
        key: key.to_owned(),
        message: m,
    };
    let value = message
        .encode_output(outcome)
        .ok_or_else(|| failure("this message's output cannot be stored".into()))?
        .map_err(|e| failure(format!("cannot store the result: {e}")))?;
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| failure(format!("cannot store the result: {e}")))
}

fn decode(message: &MessageInfo, key: &str, stored: &[u8]) -> Result<Outcome, Error> {
    let failure = |m: String| Error::Idempotency {
        key: key.to_owned(),
        message: m,
    };
    let value: serde_json::Value = serde_json::from_slice(stored)
        .map_err(|e| failure(format!("the stored result is not JSON: {e}")))?;
    message
        .decode_output(value)
        .ok_or_else(|| failure("this message's output cannot be restored".into()))?
        .map_err(|e| {
            failure(format!(
                "the stored result does not fit the output type: {e}"
            ))
        })
}
