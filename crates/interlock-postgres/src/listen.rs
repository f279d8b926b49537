//! Wake-ups for subscriptions: a LISTEN connection, and a fallback tick.
//!
//! Both only call [`AppendNotifier::notify`]; subscriptions then re-read the store, which is
//! the log. So a lost notification (the LISTEN connection dropped, the server restarted)
//! costs at most one poll interval, never an event.

use std::sync::Arc;
use std::time::Duration;

use interlock_core::AppendNotifier;
use sqlx_postgres::{PgListener, PgPool};
use tokio::task::JoinHandle;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Background tasks that end when the store's last clone is dropped.
pub(crate) struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Starts the LISTEN task and the fallback tick.
pub(crate) fn start(
    pool: PgPool,
    channel: String,
    notifier: Arc<AppendNotifier>,
    poll_interval: Duration,
) -> Tasks {
    let ticker = {
        let notifier = notifier.clone();
        tokio::spawn(async move {
            // Also the wake-up for a reader waiting behind an open transaction: its end sends
            // no notification.
            let mut tick = tokio::time::interval(poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                notifier.notify();
            }
        })
    };
    let listener = tokio::spawn(listen(pool, channel, notifier));
    Tasks(vec![ticker, listener])
}

async fn connect(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx_core::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Listens on `channel`, reconnecting with exponential backoff whenever the connection fails.
async fn listen(pool: PgPool, channel: String, notifier: Arc<AppendNotifier>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if pool.is_closed() {
            return;
        }
        match connect(&pool, &channel).await {
            Ok(mut listener) => {
                backoff = FIRST_BACKOFF;
                // Appends may have committed while nobody listened.
                notifier.notify();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => notifier.notify(),
                        // The connection dropped and was re-established: what was sent in
                        // between is lost, so wake everyone to re-read.
                        Ok(None) => {
                            tracing::debug!(channel, "LISTEN connection re-established");
                            notifier.notify();
                        }
                        Err(error) => {
                            tracing::warn!(channel, %error, "LISTEN connection lost");
                            notifier.notify();
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(channel, %error, ?backoff, "cannot LISTEN, retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
