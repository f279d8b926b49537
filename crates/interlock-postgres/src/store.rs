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
use crate::error::{PgError, store_error, timed_out};
use crate::listen::{self, Tasks};
use crate::rows::{self, to_i64};
use crate::schema::{self, Sql};

/// The PostgreSQL event store. Also implements every side store (snapshots, checkpoints, saga
/// state, dead letters, idempotency keys) in the same schema.
///
/// Cheap to clone: clones share one connection pool and one LISTEN task, which stops when
/// the last clone is dropped. The LISTEN connection is named `interlock-listen:<schema>`
/// (`application_name`, cut to 63 bytes), so it can be found in `pg_stat_activity`.
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
    /// The statement of [`PgEventStore::read_lag`].
    sql_read_lag: String,
    _tasks: Tasks,
}

impl Inner {
    /// Awaits one query's answer for at most [`PgConfig::operation_timeout`]; a driver error
    /// becomes a [`StoreError`].
    pub(crate) async fn answer<T>(
        &self,
        query: impl Future<Output = Result<T, sqlx_core::Error>>,
    ) -> Result<T, StoreError> {
        self.bounded(async { query.await.map_err(store_error) })
            .await
    }

    /// Awaits `work` for at most [`PgConfig::operation_timeout`]; past it, the call is
    /// [`StoreError::Unavailable`] (the server may be gone without having closed the
    /// connection).
    pub(crate) async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match self.config.operation_timeout {
            None => work.await,
            Some(limit) => tokio::time::timeout(limit, work)
                .await
                .unwrap_or_else(|_| Err(timed_out(limit))),
        }
    }
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
            &config.schema,
            channel.clone(),
            notifier.clone(),
            config.poll_interval,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                sql: Sql::new(&config.schema),
                sql_read_lag: read_lag_sql(&config.schema),
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

    /// How many committed events after `after` readers of the global order cannot see yet,
    /// because an older transaction is still open (see "A global order readers never skip"
    /// in the crate docs). A subscription or processor whose checkpoint is `after` lags by
    /// this many events until that transaction ends; 0 when nothing holds readers back.
    pub async fn read_lag(&self, after: Position) -> Result<u64, StoreError> {
        let row = self
            .inner
            .answer(
                sqlx_core::query::query(&self.inner.sql_read_lag)
                    .bind(after.major().to_string())
                    .bind(to_i64(after.minor()))
                    .fetch_one(&self.inner.pool),
            )
            .await?;
        let held_back: i64 = rows::column(&row, 0)?;
        Ok(u64::try_from(held_back).unwrap_or(0))
    }

    /// How long the oldest transaction that holds readers back (one with a transaction id,
    /// anywhere on the server) has been open; `None` when there is none, or when the
    /// connecting role may not see other sessions in `pg_stat_activity`.
    pub async fn oldest_open_transaction(&self) -> Result<Option<Duration>, StoreError> {
        let row = self
            .inner
            .answer(
                sqlx_core::query::query(
                    "SELECT extract(epoch FROM clock_timestamp() - min(xact_start))::float8 \
             FROM pg_stat_activity WHERE backend_xid IS NOT NULL",
                )
                .fetch_one(&self.inner.pool),
            )
            .await?;
        let open_for: Option<f64> = rows::column(&row, 0)?;
        Ok(open_for
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64))
    }

    /// One page below the horizon, and whether committed events after `after` wait above it
    /// (behind an older transaction that is still open).
    async fn read_all_once(
        &self,
        after: Position,
        limit: i64,
    ) -> Result<(Vec<RecordedEvent>, bool), StoreError> {
        // Decoded as the rows arrive, like `read_stream`.
        self.inner
            .bounded(async {
                use futures::TryStreamExt;
                let mut rows = sqlx_core::query::query(&self.inner.sql.read_all)
                    .bind(after.major().to_string())
                    .bind(to_i64(after.minor()))
                    .bind(limit)
                    .fetch(&self.inner.pool);
                let mut pending = false;
                let mut events = Vec::new();
                let mut columns = rows::Columns::Check;
                while let Some(row) = rows.try_next().await.map_err(store_error)? {
                    pending = rows::column(&row, 0)?;
                    // The left join yields one row of NULLs when no event is readable.
                    if rows::column::<Option<&str>>(&row, 1)?.is_some() {
                        events.push(rows::event_at(&row, 1, columns)?);
                        columns = rows::Columns::Checked;
                    }
                }
                Ok((events, pending))
            })
            .await
    }

    /// The last position below the horizon, and whether committed events wait above it.
    async fn head_once(&self) -> Result<(Position, bool), StoreError> {
        let row = self
            .inner
            .answer(sqlx_core::query::query(&self.inner.sql.head).fetch_one(&self.inner.pool))
            .await?;
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

/// The statement of [`PgEventStore::read_lag`].
fn read_lag_sql(schema: &str) -> String {
    let s = schema::quoted(schema);
    format!(
        "SELECT count(*) FROM {s}.events \
         WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot()) \
         AND (tx_id, position) > ($1::text::xid8, $2)"
    )
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
        // Bounded as a whole: a server that stops answering leaves the outcome unknown
        // (`Unavailable`), which a retry with the same event ids resolves.
        let result = self
            .inner
            .bounded(crate::append::append(
                self, &mut conn, false, stream, expected, &events,
            ))
            .await;
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
        // Rows are decoded as they arrive, while the server is still sending the rest (a
        // reload of a long stream overlaps the two instead of adding them up).
        self.inner
            .bounded(async {
                use futures::TryStreamExt;
                let mut rows = sqlx_core::query::query(&self.inner.sql.read_stream)
                    .bind(stream.category())
                    .bind(stream.id())
                    .bind(to_i64(from))
                    .bind(to)
                    .fetch(&self.inner.pool);
                let mut events = Vec::new();
                let mut columns = rows::Columns::Check;
                while let Some(row) = rows.try_next().await.map_err(store_error)? {
                    events.push(rows::stream_event(&row, stream, columns)?);
                    columns = rows::Columns::Checked;
                }
                Ok(events)
            })
            .await
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
            if events.len() as i64 >= limit || !pending {
                return Ok(events);
            }
            if !back_off(&mut step, deadline).await {
                // Nothing is skipped: what waits is returned once the transaction ends.
                tracing::warn!(
                    schema = %self.inner.config.schema,
                    after = %after,
                    "committed events are held back behind a transaction open for longer \
                     than horizon_wait; readers lag until it ends (see PgEventStore::read_lag)"
                );
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
        self.inner
            .bounded(crate::append::stream_version(
                self,
                &self.inner.pool,
                stream,
            ))
            .await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>, StoreError> {
        let row = self
            .inner
            .answer(
                sqlx_core::query::query(&self.inner.sql.stream_info)
                    .bind(stream.category())
                    .bind(stream.id())
                    .fetch_optional(&self.inner.pool),
            )
            .await?;
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
        let rows = self
            .inner
            .answer(async {
                match after {
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
            })
            .await?;
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

    /// Snapshots, checkpoints, saga state, dead letters, idempotency keys and the leases (with
    /// their fencing numbers) of partitioned processors live in the store's schema, beside the
    /// events.
    fn side_stores(&self) -> Option<SideStores> {
        Some(SideStores::from_backend(self.clone()).with_leases(self.clone()))
    }

    async fn rewrite_event(&self, rewrite: EventRewrite) -> Result<(), StoreError> {
        validate_rewrite(&rewrite)?;
        let done = self
            .inner
            .answer(
                sqlx_core::query::query(&self.inner.sql.rewrite_event)
                    .bind(rewrite.event_id.as_uuid())
                    .bind(rewrite.stream_id.category())
                    .bind(rewrite.stream_id.id())
                    .bind(&rewrite.event_type)
                    .bind(i64::from(rewrite.schema_version))
                    .bind(&rewrite.payload[..])
                    .execute(&self.inner.pool),
            )
            .await?;
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
