//! How a store is opened: file, durability, pool sizes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::SqliteError;
use crate::store::SqliteEventStore;

/// When SQLite forces written data to disk (`PRAGMA synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// `FULL`, the default: every commit is flushed to disk (`fsync` of the WAL) before the
    /// append is acknowledged, so an acknowledged append survives a power loss or an OS crash.
    #[default]
    Full,
    /// `NORMAL`, the opt-in: commits are flushed only at WAL checkpoints. An acknowledged append
    /// survives the process being killed, but the last commits before a power loss or OS crash
    /// may be lost (never half-written: the file stays consistent). Faster on slow disks.
    Normal,
}

impl Synchronous {
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Everything [`SqliteEventStore::open_with`] needs. Start from [`SqliteConfig::new`] and change
/// fields, or use the fluent [`SqliteEventStoreBuilder`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database file; created (with its tables) when missing.
    pub path: PathBuf,
    /// Durability of commits; [`Synchronous::Full`] unless you opt in to `Normal`.
    pub synchronous: Synchronous,
    /// Read-only connections, each on its own thread, serving reads in parallel with the writer.
    pub readers: usize,
    /// Most queued writes the writer thread commits in one transaction (group commit).
    pub max_group_size: usize,
    /// How long a connection waits for a lock held by another process before failing.
    pub busy_timeout: Duration,
    /// Events a subscription reads per query while catching up.
    pub subscription_batch: usize,
}

impl SqliteConfig {
    /// The defaults for the file at `path`: `synchronous = FULL`, 4 readers, groups of up to
    /// 512 writes, 5 s busy timeout, subscriptions reading 1024 events at a time.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            synchronous: Synchronous::Full,
            readers: 4,
            max_group_size: 512,
            busy_timeout: Duration::from_secs(5),
            subscription_batch: 1024,
        }
    }

    pub(crate) fn check(&self) -> Result<(), SqliteError> {
        let bad = |field: &'static str, reason: &str| {
            Err(SqliteError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.readers == 0 || self.readers > 64 {
            return bad("readers", "must be between 1 and 64");
        }
        if self.max_group_size == 0 {
            return bad("max_group_size", "must be at least 1");
        }
        if self.subscription_batch == 0 {
            return bad("subscription_batch", "must be at least 1");
        }
        if self.path.as_os_str().is_empty() {
            return bad("path", "must not be empty");
        }
        Ok(())
    }
}

/// Fluent configuration of a [`SqliteEventStore`].
///
/// ```no_run
/// use interlock_sqlite::{SqliteEventStore, Synchronous};
/// let store = SqliteEventStore::builder("app.db")
///     .synchronous(Synchronous::Normal)
///     .readers(2)
///     .open()?;
/// # Ok::<(), interlock_sqlite::SqliteError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SqliteEventStoreBuilder {
    config: SqliteConfig,
}

impl SqliteEventStoreBuilder {
    /// A builder with the defaults of [`SqliteConfig::new`].
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            config: SqliteConfig::new(path),
        }
    }

    /// Sets the durability of commits.
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.config.synchronous = synchronous;
        self
    }

    /// Sets the number of reader connections (1 to 64).
    pub fn readers(mut self, readers: usize) -> Self {
        self.config.readers = readers;
        self
    }

    /// Sets the most writes committed in one transaction.
    pub fn max_group_size(mut self, size: usize) -> Self {
        self.config.max_group_size = size;
        self
    }

    /// Sets how long to wait for a lock held by another process.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.config.busy_timeout = timeout;
        self
    }

    /// Sets how many events a subscription reads per query while catching up.
    pub fn subscription_batch(mut self, batch: usize) -> Self {
        self.config.subscription_batch = batch;
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> &SqliteConfig {
        &self.config
    }

    /// Opens (or creates) the store. Blocking: it opens connections and creates the schema.
    pub fn open(self) -> Result<SqliteEventStore, SqliteError> {
        SqliteEventStore::open_with(self.config)
    }
}
