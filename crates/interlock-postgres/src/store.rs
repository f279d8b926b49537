//! [`PgEventStore`]: connection, reads, and the [`EventStore`] implementation.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use interlock_core::{
    AppendNotifier, AppendResult, EventRewrite, EventStore, EventSubscription, ExpectedVersion,
    NewEvent, Position, RecordedEvent, SideStores, StoreError, StreamId, StreamInfo,
    ValidationError, poll_subscription, validate_rewrite,
};
use sqlx_postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::config::{PgConfig, PgEventStoreBuilder};
use crate::error::{PgError, store_error};
use crate::listen::{self, Tasks};
use crate::rows::{self, to_i64};
use crate::schema::{self, Sql};

/// The PostgreSQL event store. Also implements every side store (snapshots, checkpoints, saga
/// state, dead letters, idempotency keys) in the same schema.
///
/// Cheap to clone: clones share one connection pool and one LISTEN task, which stops when
/// the last clone is dropped.
#[derive(Clone)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) sql: Sql,
    pub(crate) config: PgConfig,
    pub(crate) channel: String,
    pub(crate) notifier: Arc<AppendNotifier>,
    /// Rung after each committed append made through the pool (see `listen`).
    pub(crate) doorbell: Arc<tokio::sync::Notify>,
    _tasks: Tasks,
}

impl std::fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEventStore")
            .field("schema", &self.inner.config.schema)
            .field("pool_size", &self.inner.pool.size())
            .finish_non_exhaustive()
    }
}

/// The notification channel of a schema: `interlock_<schema>`, cut to PostgreSQL's 63-byte
/// limit. Two long schema names sharing a prefix share a channel, which only costs spurious
/// wake-ups (a notification is a hint to re-read, never data).
fn channel_name(schema: &str) -> String {
    let mut channel = format!("interlock_{schema}");
    channel.truncate(63);
    channel
}

impl PgEventStore {
    /// Connects to `url` with the defaults of [`PgConfig::new`] (schema `interlock`).
    pub async fn connect(url: &str) -> Result<Self, PgError> {
        Self::connect_with(PgConfig::new(url)).await
    }

    /// A builder for the other settings.
    pub fn builder(url: impl Into<String>) -> PgEventStoreBuilder {
        PgEventStoreBuilder::new(url)
    }

    /// Connects with `config`: checks it, opens the pool, creates or migrates the schema, and
    /// starts the task that turns notifications into wake-ups. Must run inside a tokio runtime.
    pub async fn connect_with(config: PgConfig) -> Result<Self, PgError> {
        config.check()?;
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(|e| PgError::InvalidConfig {
                field: "url",
                reason: e.to_string(),
            })?
            // Appends rely on READ COMMITTED re-reading a stream row they waited for; a server
            // defaulting to a stricter level would turn every race into a serialization error.
            .options([("default_transaction_isolation", "read\\ committed")]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await?;
        schema::migrate(&pool, &config.schema).await?;
        let notifier = Arc::new(AppendNotifier::new());
        let channel = channel_name(&config.schema);
        let (tasks, doorbell) = listen::start(
            pool.clone(),
            channel.clone(),
            notifier.clone(),
            config.poll_interval,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                sql: Sql::new(&config.schema),
                pool,
                channel,
                notifier,
                doorbell,
                config,
                _tasks: tasks,
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The connection pool, for work of your own in the same database (a read model updated
    /// in the same transaction as its checkpoint, see [`append_in`](Self::append_in)).
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.inner.config.schema
    }

    /// The configuration the store was connected with.
    pub fn config(&self) -> &PgConfig {
        &self.inner.config
    }

    /// Closes the pool: waits for connections in use to come back, then closes them all.
    /// Later calls fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// Appends inside a transaction of the caller's (`conn` must be in one: pass
    /// `&mut *transaction`), so events commit or roll back together with the caller's other
    /// writes. Same checks and errors as [`EventStore::append`]; the events become readable,
    /// and subscriptions are woken, when the caller commits. A failed append rolls back only
    /// its own work (it runs under a savepoint), so the caller's transaction stays usable.
    ///
    /// The wake-up is a `NOTIFY` inside the caller's transaction (delivered at its commit);
    /// PostgreSQL serialises the commits of notifying transactions, so heavy concurrent use
    /// of this method may prefer [`PgConfig::notify`] off and the fallback polling.
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        interlock_core::validate_append(expected, &events)?;
        crate::append::append(self, conn, true, stream, expected, &events).await
    }

    /// One page below the horizon, and whether committed events after `after` wait above it
    /// (behind an older transaction that is still open).
    async fn read_all_once(
        &self,
        after: Position,
        limit: i64,
    ) -> Result<(Vec<RecordedEvent>, bool), StoreError> {
        let rows = sqlx_core::query::query(&self.inner.sql.read_all)
            .bind(after.major().to_string())
            .bind(to_i64(after.minor()))
            .bind(limit)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(store_error)?;
        let mut pending = false;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            pending = rows::column(row, 0)?;
            // The left join yields one row of NULLs when no event is readable.
            if rows::column::<Option<String>>(row, 1)?.is_some() {
                events.push(rows::event_at(row, 1)?);
            }
        }
        Ok((events, pending))
    }

    /// The last position below the horizon, and whether committed events wait above it.
    async fn head_once(&self) -> Result<(Position, bool), StoreError> {
        let row = sqlx_core::query::query(&self.inner.sql.head)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(store_error)?;
        let pending: bool = rows::column(&row, 0)?;
        let tx: Option<String> = rows::column(&row, 1)?;
        let sequence: Option<i64> = rows::column(&row, 2)?;
        let head = match (tx, sequence) {
            (Some(tx), Some(sequence)) => rows::position(&tx, sequence).ok_or_else(|| {
                crate::error::backend(format!("head position {tx}:{sequence} is invalid"))
            })?,
            _ => Position::START,
        };
        Ok((head, pending))
    }
}

/// Sleeps a little longer each time, while `deadline` allows; `false` once it has passed.
async fn back_off(step: &mut Duration, deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    tokio::time::sleep((*step).min(deadline - now)).await;
    *step = (*step * 2).min(Duration::from_millis(50));
    true
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        // Validate before taking a connection: bad input never costs a round trip.
        interlock_core::validate_append(expected, &events)?;
        let mut conn = self.inner.pool.acquire().await.map_err(store_error)?;
        let result = crate::append::append(self, &mut conn, false, stream, expected, &events).await;
        drop(conn);
        if matches!(result, Ok(ref r) if !r.already_appended) && self.inner.config.notify {
            // Committed: wake this process's subscriptions now, and other processes' through
            // one coalesced NOTIFY.
            self.inner.notifier.notify();
            self.inner.doorbell.notify_one();
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let from = from.max(1);
        let to = to.map_or(i64::MAX, to_i64);
        if from > i64::MAX as u64 || to_i64(from) > to {
            return Ok(Vec::new());
        }
        let rows = sqlx_core::query::query(&self.inner.sql.read_stream)
            .bind(stream.category())
            .bind(stream.id())
            .bind(to_i64(from))
            .bind(to)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(store_error)?;
        rows.iter().map(rows::event).collect()
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let deadline = Instant::now() + self.inner.config.horizon_wait;
        let mut step = Duration::from_millis(1);
        loop {
            let (events, pending) = self.read_all_once(after, limit).await?;
            // A full page needs no waiting: the caller reads on from its last position. A
            // short one may be short only because an older transaction is still open; give
            // it a moment, so a writer reads its own committed appends.
            if events.len() as i64 >= limit || !pending || !back_off(&mut step, deadline).await {
                return Ok(events);
            }
        }
    }

    fn subscribe_all(&self, after: Position) -> EventSubscription {
        poll_subscription(
            self.clone(),
            self.inner.notifier.clone(),
            after,
            self.inner.config.subscription_batch,
        )
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        crate::append::stream_version(self, &self.inner.pool, stream).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>, StoreError> {
        let row = sqlx_core::query::query(&self.inner.sql.stream_info)
            .bind(stream.category())
            .bind(stream.id())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(store_error)?;
        row.as_ref().map(rows::stream_info).transpose()
    }

    async fn list_streams(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            None => {
                sqlx_core::query::query(&self.inner.sql.list_streams)
                    .bind(limit)
                    .fetch_all(&self.inner.pool)
                    .await
            }
            Some(after) => {
                sqlx_core::query::query(&self.inner.sql.list_streams_after)
                    .bind(limit)
                    .bind(after.category())
                    .bind(after.id())
                    .fetch_all(&self.inner.pool)
                    .await
            }
        }
        .map_err(store_error)?;
        rows.iter().map(rows::stream_info).collect()
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        let deadline = Instant::now() + self.inner.config.horizon_wait;
        let mut step = Duration::from_millis(1);
        loop {
            let (head, pending) = self.head_once().await?;
            if !pending || !back_off(&mut step, deadline).await {
                return Ok(head);
            }
        }
    }

    fn side_stores(&self) -> Option<SideStores> {
        Some(SideStores::from_backend(self.clone()))
    }

    async fn rewrite_event(&self, rewrite: EventRewrite) -> Result<(), StoreError> {
        validate_rewrite(&rewrite)?;
        let done = sqlx_core::query::query(&self.inner.sql.rewrite_event)
            .bind(rewrite.event_id.as_uuid())
            .bind(rewrite.stream_id.category())
            .bind(rewrite.stream_id.id())
            .bind(&rewrite.event_type)
            .bind(i64::from(rewrite.schema_version))
            .bind(&rewrite.payload[..])
            .execute(&self.inner.pool)
            .await
            .map_err(store_error)?;
        if done.rows_affected() == 0 {
            return Err(ValidationError::new(
                "event_id",
                format!(
                    "no event {} in stream {}",
                    rewrite.event_id, rewrite.stream_id
                ),
            )
            .into());
        }
        Ok(())
    }
}
