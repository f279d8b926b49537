//! Wake-ups for subscriptions: a LISTEN connection, a fallback tick, and the announcer that
//! sends this process's `NOTIFY`s.
//!
//! Appends made through the pool do not `NOTIFY` inside their own transaction: PostgreSQL
//! serialises the commits of notifying transactions on one lock held through the WAL flush,
//! which would cost concurrent writers their shared flushes (measured: 8 writers fell from
//! ~1700 to ~430 appends/s). Instead a committed append wakes this process's subscriptions
//! directly and pokes the announcer, which sends one `NOTIFY` for however many appends
//! committed meanwhile, in a transaction of its own with `synchronous_commit` off (nothing to
//! make durable), so other processes wake within a round trip.
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

/// Starts the LISTEN task, the fallback tick and the announcer; returns the tasks and the
/// announcer's doorbell.
pub(crate) fn start(
    pool: PgPool,
    channel: String,
    notifier: Arc<AppendNotifier>,
    poll_interval: Duration,
) -> (Tasks, Arc<tokio::sync::Notify>) {
    let doorbell = Arc::new(tokio::sync::Notify::new());
    let announcer = tokio::spawn(announce(pool.clone(), channel.clone(), doorbell.clone()));
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
    (Tasks(vec![ticker, listener, announcer]), doorbell)
}

/// Sends one `NOTIFY` per ring of the doorbell; rings while it sends collapse into one more.
async fn announce(pool: PgPool, channel: String, doorbell: Arc<tokio::sync::Notify>) {
    loop {
        doorbell.notified().await;
        let sent = sqlx_core::query::query(
            "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')",
        )
        .bind(&channel)
        .execute(&pool)
        .await;
        if let Err(error) = sent {
            // Other processes fall back to polling; nothing is lost.
            tracing::debug!(channel, %error, "cannot send NOTIFY");
            if pool.is_closed() {
                return;
            }
            tokio::time::sleep(FIRST_BACKOFF).await;
        }
    }
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
