//! [`SqliteEventStore`]: the event store contract on one SQLite file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use interlock_core::{
    AppendNotifier, AppendResult, EventRewrite, EventStore, EventSubscription, ExpectedVersion,
    NewEvent, Position, RecordedEvent, SideStores, StoreError, StreamId, StreamInfo,
    ValidationError, poll_subscription, validate_append, validate_rewrite,
};
use rusqlite::{Connection, OptionalExtension};

use crate::append;
use crate::config::{SqliteConfig, SqliteEventStoreBuilder};
use crate::error::{SqliteError, store_error};
use crate::reader::ReaderPool;
use crate::rows::{
    EVENT_COLUMNS, STREAM_COLUMNS, collect, decode_event, decode_stream_info, sql_int,
};
use crate::schema::{open_reader, open_writer};
use crate::writer::{Writer, WriterStats};

/// The event store on one SQLite file: WAL, one writer thread with group commit, a pool of
/// reader connections, durable (`synchronous = FULL`) by default. It also implements every side
/// store of [`interlock_core::side`] on the same file.
///
/// Cheap to clone: clones share the connections and threads. When the last clone (and the last
/// subscription) is dropped, queued writes are finished and the threads stop.
///
/// Only one process should open a file at a time: another process's appends would be stored
/// correctly, but this store's subscriptions would not be woken by them.
#[derive(Clone)]
pub struct SqliteEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: SqliteConfig,
    notifier: Arc<AppendNotifier>,
    // Field order is drop order: the writer finishes its queue before the readers go.
    writer: Writer,
    readers: ReaderPool,
}

impl std::fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEventStore")
            .field("path", &self.inner.config.path)
            .field("synchronous", &self.inner.config.synchronous)
            .finish_non_exhaustive()
    }
}

impl SqliteEventStore {
    /// Opens (or creates) the store at `path` with the default configuration.
    ///
    /// Blocking: it opens connections and creates the schema; call it before entering async
    /// code or from a blocking task.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SqliteError> {
        Self::open_with(SqliteConfig::new(path))
    }

    /// A builder for the store at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteEventStoreBuilder {
        SqliteEventStoreBuilder::new(path)
    }

    /// Opens (or creates) the store described by `config`. Blocking, like [`open`](Self::open).
    pub fn open_with(config: SqliteConfig) -> Result<Self, SqliteError> {
        config.check()?;
        let notifier = Arc::new(AppendNotifier::new());
        let conn = open_writer(&config)?;
        let readers = ReaderPool::start(&config)?;
        let writer = Writer::start(conn, config.max_group_size, notifier.clone())?;
        if !config.poll_interval.is_zero() {
            watch_other_processes(open_reader(&config)?, &notifier, config.poll_interval);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                notifier,
                writer,
                readers,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.config.path
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    /// The database file as an owned path (for reopening).
    pub fn path_buf(&self) -> PathBuf {
        self.inner.config.path.clone()
    }

    /// Counters of the writer thread: transactions committed and writes in them (their ratio is
    /// the average group-commit size).
    pub fn writer_stats(&self) -> WriterStats {
        self.inner.writer.stats()
    }

    /// Runs `query` on a reader connection: read-only, on a snapshot of the last commit, on one
    /// of the store's reader threads (so a slow query never stalls the async executor, nor the
    /// writer). Meant for reading [SQL views](crate::SqliteView) kept in this file; after
    /// `Application::wait_for(position)`, the snapshot includes every batch up to `position`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let store = interlock_sqlite::SqliteEventStore::open(dir.path().join("app.db"))?;
    /// let events: i64 = store
    ///     .read_view(|conn| conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0)))
    ///     .await?;
    /// assert_eq!(events, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_view<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.read(move |conn| query(conn).map_err(store_error))
            .await
    }

    /// Runs `work` on a reader connection (read-only, on a snapshot of the last commit).
    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.readers.read(work).await
    }

    /// Runs `work` in the writer's next group transaction, in its own savepoint.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.writer.write(false, work).await
    }
}

/// Wakes this process's subscriptions when another process commits to the file: SQLite bumps
/// `PRAGMA data_version` on a connection when any *other* connection commits. The thread holds
/// only a weak reference to the notifier and ends when the store is gone.
fn watch_other_processes(
    conn: rusqlite::Connection,
    notifier: &Arc<AppendNotifier>,
    interval: std::time::Duration,
) {
    let notifier = Arc::downgrade(notifier);
    let version = |conn: &rusqlite::Connection| {
        conn.query_row("PRAGMA data_version", [], |row| row.get::<_, i64>(0))
            .ok()
    };
    let spawned = std::thread::Builder::new()
        .name("interlock-sqlite-watch".to_owned())
        .spawn(move || {
            let mut seen = version(&conn);
            loop {
                std::thread::sleep(interval);
                let Some(notifier) = notifier.upgrade() else {
                    return;
                };
                let now = version(&conn);
                if now != seen {
                    seen = now;
                    notifier.notify();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch the file for other processes' commits");
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        validate_append(expected, &events)?;
        let stream = stream.clone();
        self.inner
            .writer
            .write(true, move |conn| {
                append::append(conn, &stream, expected, &events, Utc::now())
            })
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let from = sql_int(from.max(1));
        let to = to.map_or(i64::MAX, sql_int);
        if from > to {
            return Ok(Vec::new());
        }
        let stream = stream.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events \
                     WHERE category = ?1 AND stream_id = ?2 AND version BETWEEN ?3 AND ?4 \
                     ORDER BY version"
                ))
                .map_err(store_error)?;
            let rows = stmt
                .query((stream.category(), stream.id(), from, to))
                .map_err(store_error)?;
            collect(rows, decode_event)
        })
        .await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // Single-writer positions have no major part; anything else is past our end.
        if after.major() != 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let Ok(after) = i64::try_from(after.minor()) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE position > ?1 \
                     ORDER BY position LIMIT ?2"
                ))
                .map_err(store_error)?;
            let rows = stmt.query((after, limit)).map_err(store_error)?;
            collect(rows, decode_event)
        })
        .await
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
        let stream = stream.clone();
        self.read(move |conn| append::stream_version(conn, &stream))
            .await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>, StoreError> {
        let stream = stream.clone();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {STREAM_COLUMNS} FROM streams WHERE category = ?1 AND stream_id = ?2"
                ))
                .map_err(store_error)?;
            let rows = stmt
                .query((stream.category(), stream.id()))
                .map_err(store_error)?;
            Ok(collect(rows, decode_stream_info)?.into_iter().next())
        })
        .await
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
        let after = after.cloned();
        self.read(move |conn| {
            // Row-value comparison walks the primary key in (category, stream_id) byte order,
            // which is `StreamId`'s order.
            let rows = match &after {
                Some(after) => {
                    let mut stmt = conn
                        .prepare_cached(&format!(
                            "SELECT {STREAM_COLUMNS} FROM streams \
                             WHERE (category, stream_id) > (?1, ?2) \
                             ORDER BY category, stream_id LIMIT ?3"
                        ))
                        .map_err(store_error)?;
                    let rows = stmt
                        .query((after.category(), after.id(), limit))
                        .map_err(store_error)?;
                    collect(rows, decode_stream_info)?
                }
                None => {
                    let mut stmt = conn
                        .prepare_cached(&format!(
                            "SELECT {STREAM_COLUMNS} FROM streams \
                             ORDER BY category, stream_id LIMIT ?1"
                        ))
                        .map_err(store_error)?;
                    let rows = stmt.query([limit]).map_err(store_error)?;
                    collect(rows, decode_stream_info)?
                }
            };
            Ok(rows)
        })
        .await
    }

    /// Snapshots, checkpoints, saga state, dead letters, idempotency keys and the leases (with
    /// their fencing numbers) of partitioned processors live in the same file as the events.
    fn side_stores(&self) -> Option<SideStores> {
        Some(SideStores::from_backend(self.clone()).with_leases(self.clone()))
    }

    async fn rewrite_event(&self, rewrite: EventRewrite) -> Result<(), StoreError> {
        validate_rewrite(&rewrite)?;
        self.inner
            .writer
            .write(false, move |conn| {
                let changed = conn
                    .prepare_cached(
                        "UPDATE events SET event_type = ?1, schema_version = ?2, payload = ?3 \
                         WHERE event_id = ?4 AND category = ?5 AND stream_id = ?6",
                    )
                    .and_then(|mut s| {
                        s.execute(rusqlite::params![
                            rewrite.event_type,
                            rewrite.schema_version,
                            &rewrite.payload[..],
                            &rewrite.event_id.as_uuid().as_bytes()[..],
                            rewrite.stream_id.category(),
                            rewrite.stream_id.id(),
                        ])
                    })
                    .map_err(store_error)?;
                if changed == 0 {
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
            })
            .await
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        self.read(|conn| {
            let head: Option<i64> = conn
                .prepare_cached("SELECT max(position) FROM events")
                .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
                .map_err(store_error)?
                .flatten();
            Ok(Position::from_sequence(
                head.and_then(|h| u64::try_from(h).ok()).unwrap_or(0),
            ))
        })
        .await
    }
}
