//! Errors of the MongoDB backend, and how driver errors become [`StoreError`]s.

use interlock_core::StoreError;
use mongodb::error::{
    Error as DriverError, ErrorKind, RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR,
    UNKNOWN_TRANSACTION_COMMIT_RESULT, WriteFailure,
};

pub(crate) const BACKEND: &str = "mongodb";

/// The server error code of a duplicate key in a unique index.
const DUPLICATE_KEY: i32 = 11000;

/// Server error codes meaning "this node cannot serve you now" (not primary, shutting down,
/// stepping down, network trouble seen by the server): retrying later, maybe elsewhere, may work.
const UNAVAILABLE_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Why a MongoDB store could not be configured or connected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MongoError {
    /// A configuration value is refused (before anything is sent to the server).
    #[error("invalid mongodb configuration {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The server is a standalone node. Appends are multi-document transactions, which
    /// MongoDB offers only on replica sets and sharded clusters.
    #[error(
        "the mongodb server at {address} is a standalone node, but the interlock event store needs a replica set: appends are multi-document transactions, which MongoDB offers only on a replica set (or a sharded cluster); start the server as a replica set, a single node is enough (`mongod --replSet rs0`, then `rs.initiate()`)"
    )]
    ReplicaSetRequired {
        /// The server(s) the URI names.
        address: String,
    },
    /// The server is too old for transactions.
    #[error(
        "the mongodb server at {address} speaks wire version {found}; the interlock event store needs at least {required} (MongoDB 4.0, the first with transactions)"
    )]
    UnsupportedServer {
        /// The server(s) the URI names.
        address: String,
        /// The newest wire version the server speaks.
        found: i64,
        /// The oldest wire version the store works with.
        required: i64,
    },
    /// The server could not be reached, or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MongoError {
    /// Whether connecting again later may succeed (the server was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, MongoError::Store(e) if e.is_transient())
    }
}

impl From<DriverError> for MongoError {
    fn from(error: DriverError) -> Self {
        MongoError::Store(store_error(error))
    }
}

impl From<MongoError> for StoreError {
    fn from(error: MongoError) -> Self {
        match error {
            MongoError::Store(e) => e,
            other => StoreError::Backend {
                backend: BACKEND,
                source: Box::new(other),
            },
        }
    }
}

/// Whether a driver error means the server or the connection is gone, or the node cannot
/// serve writes now (failover, shutdown), so that retrying later may work. An append that
/// fails this way has an unknown outcome; retrying it with the same event ids is idempotent.
pub(crate) fn is_unavailable(error: &DriverError) -> bool {
    if error.contains_label(RETRYABLE_WRITE_ERROR)
        || error.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || error.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
    {
        return true;
    }
    match &*error.kind {
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => true,
        _ => server_code(error).is_some_and(|code| UNAVAILABLE_CODES.contains(&code)),
    }
}

/// Maps a driver error: connection trouble is [`StoreError::Unavailable`], anything else
/// [`StoreError::Backend`].
pub(crate) fn store_error(error: DriverError) -> StoreError {
    if is_unavailable(&error) {
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

/// The server's error code, wherever the driver put it.
fn server_code(error: &DriverError) -> Option<i32> {
    match &*error.kind {
        ErrorKind::Command(e) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteError(e)) => Some(e.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(e)) => Some(e.code),
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .and_then(|errors| errors.first())
            .map(|e| e.code)
            .or_else(|| e.write_concern_error.as_ref().map(|e| e.code)),
        _ => None,
    }
}

/// Whether the error is a duplicate key in a unique index.
pub(crate) fn is_duplicate_key(error: &DriverError) -> bool {
    match &*error.kind {
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|e| e.code == DUPLICATE_KEY)),
        _ => server_code(error) == Some(DUPLICATE_KEY),
    }
}

/// Whether the driver says the whole transaction may be retried.
pub(crate) fn is_transient_transaction(error: &DriverError) -> bool {
    error.contains_label(TRANSIENT_TRANSACTION_ERROR)
}

/// Whether a commit's outcome is unknown (retrying the commit is safe).
pub(crate) fn is_unknown_commit(error: &DriverError) -> bool {
    error.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
}

/// A backend error from a message (a corrupt document that cannot even name its stream).
pub(crate) fn backend(message: impl Into<String>) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        source: message.into().into(),
    }
}
