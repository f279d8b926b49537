//! Errors of the SQLite backend, and how driver errors become [`StoreError`]s.

use std::path::PathBuf;

use interlock_core::StoreError;

pub(crate) const BACKEND: &str = "sqlite";

/// Why a SQLite store could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// A configuration value is out of range.
    #[error("invalid sqlite configuration {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The file was written by a newer release of this crate, with a schema this one does not
    /// know; it is left untouched.
    #[error(
        "{} has event store schema version {found}, newer than the newest this release knows ({supported})",
        path.display()
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The schema version stored in the file.
        found: i64,
        /// The newest schema version this release knows.
        supported: i64,
    },
    /// The file is a SQLite database that belongs to another application.
    #[error("{} is not an interlock event store (application id {application_id:#x})", path.display())]
    ForeignDatabase {
        /// The file.
        path: PathBuf,
        /// The application id found in its header.
        application_id: i64,
    },
    /// A thread could not be started.
    #[error("cannot start the {role} thread")]
    Thread {
        /// Which thread.
        role: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite itself failed.
    #[error("sqlite failed on {}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The driver error.
        #[source]
        source: rusqlite::Error,
    },
}

impl From<SqliteError> for StoreError {
    fn from(error: SqliteError) -> Self {
        StoreError::Backend {
            backend: BACKEND,
            source: Box::new(error),
        }
    }
}

/// Maps a driver error: a lock held elsewhere is transient ([`StoreError::Unavailable`]),
/// anything else a backend failure.
pub(crate) fn store_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let transient = matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    );
    if transient {
        StoreError::Unavailable {
            backend: BACKEND,
            source: Box::new(error),
        }
    } else {
        StoreError::Backend {
            backend: BACKEND,
            source: Box::new(error),
        }
    }
}

/// A failure of the store's own machinery (a stopped thread, a lost transaction).
pub(crate) fn internal(message: impl Into<String>) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        source: message.into().into(),
    }
}
