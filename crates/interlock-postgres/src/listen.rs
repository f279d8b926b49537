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
/// The longest wait between attempts to LISTEN again: short, because while nobody listens
/// this process's subscriptions only learn of other processes' appends by polling.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How long the announcer waits for its `NOTIFY` to be answered: a server that stops
/// answering must not stop the announcements for good.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// The `application_name` of a schema's LISTEN connection, `interlock-listen:<schema>` (cut
/// to PostgreSQL's 63 bytes), so it can be told apart in `pg_stat_activity`.
pub(crate) fn application_name(schema: &str) -> String {
    let mut name = format!("interlock-listen:{schema}");
    name.truncate(63);
    name
}

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
    schema: &str,
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
    let listener = tokio::spawn(listen(pool, application_name(schema), channel, notifier));
    (Tasks(vec![ticker, listener, announcer]), doorbell)
}

/// Sends one `NOTIFY` per ring of the doorbell; rings while it sends collapse into one more.
async fn announce(pool: PgPool, channel: String, doorbell: Arc<tokio::sync::Notify>) {
    loop {
        doorbell.notified().await;
        let sent = tokio::time::timeout(
            NOTIFY_TIMEOUT,
            sqlx_core::query::query(
                "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')",
            )
            .bind(&channel)
            .execute(&pool),
        )
        .await
        .map_err(|_| format!("no answer within {NOTIFY_TIMEOUT:?}"))
        .and_then(|sent| sent.map_err(|e| e.to_string()));
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

/// A connection of the pool's (detached from it), named, listening on `channel`.
async fn connect(pool: &PgPool, name: &str, channel: &str) -> Result<PgListener, sqlx_core::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnecting is this module's job (below), so that every connection is named.
    listener.eager_reconnect(false);
    sqlx_core::query::query("SELECT set_config('application_name', $1, false)")
        .bind(name)
        .execute(&mut listener)
        .await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Listens on `channel`, reconnecting with exponential backoff whenever the connection fails.
async fn listen(pool: PgPool, name: String, channel: String, notifier: Arc<AppendNotifier>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if pool.is_closed() {
            return;
        }
        match connect(&pool, &name, &channel).await {
            Ok(mut listener) => {
                backoff = FIRST_BACKOFF;
                // Appends may have committed while nobody listened.
                notifier.notify();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => notifier.notify(),
                        // The connection dropped (the server closed it, or it died): what was
                        // sent meanwhile is lost, so wake everyone to re-read, and listen on
                        // a new connection.
                        Ok(None) => {
                            tracing::warn!(channel, "LISTEN connection lost");
                            notifier.notify();
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(channel, %error, "LISTEN connection failed");
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
