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
    /// The database file; created (with its tables) when missing. A plain file path: opening
    /// refuses, with [`SqliteError::InvalidConfig`] for `path` and before any connection is
    /// made, an empty path, a NUL byte, SQLite's special names (`:memory:`, anything starting
    /// with `:` or `file:`, which SQLite would read as a URI with parameters), a full path over
    /// 512 bytes, a component over 255 bytes and a file name over 247 (room for `-journal`).
    /// Quotes, `;`, `--`, `%`, `?`, right-to-left text or emoji are ordinary file names.
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
    /// How often a watcher thread asks SQLite whether another process committed to the file
    /// (`PRAGMA data_version`, one cheap query) and then wakes this process's subscriptions.
    /// Appends of this process wake them at once; this is for processes sharing one file.
    /// Zero turns the watcher off.
    pub poll_interval: Duration,
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
            poll_interval: Duration::from_millis(100),
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
        validate_path(&self.path)
    }
}

/// SQLite's own limit on a file's full path (`MAX_PATHNAME` of its unix VFS), in bytes.
const MAX_PATH_LEN: usize = 512;

/// The longest file name most file systems keep (`NAME_MAX`), in bytes.
const MAX_NAME_LEN: usize = 255;

/// The longest suffix SQLite adds to the database file's name for its companion files
/// (`-journal`; `-wal` and `-shm` are shorter).
const COMPANION_SUFFIX_LEN: usize = "-journal".len();

/// Checks the database path of a [`SqliteConfig`] before anything is opened: refuses what
/// SQLite would not take as a plain file path, or could not open, so that no connection is
/// made and no statement runs on a file other than the one meant.
///
/// Refused: an empty path; a path with a NUL byte; `:memory:` and other names starting with
/// `:` (SQLite's in-memory and reserved names: the store needs one file shared by its writer
/// and readers); names starting with `file:` (SQLite, as built here, reads them as URIs whose
/// parameters, such as `mode=memory`, `nolock=1` or `vfs=`, would change how the file is
/// opened and locked; write `./file:...` for a file really named so); a full path longer than
/// 512 bytes (SQLite's limit); a path component longer than 255 bytes, or a file name longer
/// than 247, which leaves no room for the `-journal` / `-wal` / `-shm` companion files.
///
/// Anything else, quotes, `;`, `--`, `%`, `?`, `#`, right-to-left text or emoji included, is
/// an ordinary file name: it is never part of an SQL statement and names exactly that file.
pub(crate) fn validate_path(path: &Path) -> Result<(), SqliteError> {
    let bad = |reason: String| {
        Err(SqliteError::InvalidConfig {
            field: "path",
            reason,
        })
    };
    let raw = path.as_os_str();
    let bytes = raw.as_encoded_bytes();
    let shown = || {
        format!(
            "{:?}",
            path.to_string_lossy().chars().take(64).collect::<String>()
        )
    };
    if bytes.is_empty() {
        return bad("must not be empty".to_owned());
    }
    if bytes.contains(&0) {
        return bad(format!("{} must not contain a NUL byte", shown()));
    }
    if bytes.starts_with(b":") {
        return bad(format!(
            "{} is one of SQLite's special names (:memory: and the like), not a file",
            shown()
        ));
    }
    if bytes.starts_with(b"file:") {
        return bad(format!(
            "{} would be read by SQLite as a URI; give a plain path (./file:... for a file named so)",
            shown()
        ));
    }
    let full = std::path::absolute(path).map_or(bytes.len(), |full| {
        full.as_os_str().as_encoded_bytes().len()
    });
    if full > MAX_PATH_LEN {
        return bad(format!(
            "is {full} bytes long as a full path, SQLite's limit is {MAX_PATH_LEN}"
        ));
    }
    for component in path.components() {
        let len = component.as_os_str().len();
        if len > MAX_NAME_LEN {
            return bad(format!(
                "has a component of {len} bytes, the limit is {MAX_NAME_LEN}"
            ));
        }
    }
    let name = path.file_name().map_or(0, |n| n.len());
    if name + COMPANION_SUFFIX_LEN > MAX_NAME_LEN {
        return bad(format!(
            "has a file name of {name} bytes, the limit is {} (SQLite adds -journal, -wal and -shm to it)",
            MAX_NAME_LEN - COMPANION_SUFFIX_LEN
        ));
    }
    Ok(())
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

    /// Sets how often other processes' commits are looked for (zero: never).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
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
