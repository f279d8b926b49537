//! Errors of the PostgreSQL backend, and how driver errors become [`StoreError`]s.

use interlock_core::StoreError;
use sqlx_core::error::Error as SqlxError;

pub(crate) const BACKEND: &str = "postgres";

/// Why a PostgreSQL store could not be configured or connected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// A configuration value is refused (before anything is sent to the server).
    #[error("invalid postgres configuration {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The schema was written by a newer release of this crate; it is left untouched.
    #[error(
        "schema {schema} has event store version {found}, newer than the newest this release knows ({supported})"
    )]
    NewerSchema {
        /// The schema.
        schema: String,
        /// The version stored in it.
        found: i32,
        /// The newest version this release knows.
        supported: i32,
    },
    /// The server could not be reached, or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PgError {
    /// Whether connecting again later may succeed (the server was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, PgError::Store(e) if e.is_transient())
    }
}

impl From<SqlxError> for PgError {
    fn from(error: SqlxError) -> Self {
        PgError::Store(store_error(error))
    }
}

impl From<PgError> for StoreError {
    fn from(error: PgError) -> Self {
        match error {
            PgError::Store(e) => e,
            other => StoreError::Backend {
                backend: BACKEND,
                source: Box::new(other),
            },
        }
    }
}

/// Whether a driver error means the server or the connection is gone (or refusing
/// connections for now), so that retrying later may work.
pub(crate) fn is_connection_error(error: &SqlxError) -> bool {
    match error {
        SqlxError::Io(_)
        | SqlxError::Tls(_)
        | SqlxError::PoolTimedOut
        | SqlxError::PoolClosed
        | SqlxError::WorkerCrashed => true,
        SqlxError::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-03: admin/crash shutdown, cannot connect now;
            // 53300: too many connections.
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Maps a driver error: connection trouble is [`StoreError::Unavailable`], anything else
/// [`StoreError::Backend`].
pub(crate) fn store_error(error: SqlxError) -> StoreError {
    if is_connection_error(&error) {
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

/// The server did not answer within [`PgConfig::operation_timeout`](crate::PgConfig): the
/// connection may be dead without having been closed. Transient, like a lost connection.
pub(crate) fn timed_out(timeout: std::time::Duration) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        source: format!("no answer from the server within {timeout:?}").into(),
    }
}

/// The SQLSTATE and constraint of a database error, if it is one.
pub(crate) fn db_code(error: &SqlxError) -> Option<(String, Option<String>)> {
    match error {
        SqlxError::Database(db) => Some((
            db.code().map(|c| c.into_owned()).unwrap_or_default(),
            db.constraint().map(str::to_owned),
        )),
        _ => None,
    }
}

/// A backend error from a message (a corrupt row that cannot even name its stream).
pub(crate) fn backend(message: impl Into<String>) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        source: message.into().into(),
    }
}
