//! The file layout: tables, indexes, the schema version, and connection settings.

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::config::SqliteConfig;
use crate::error::SqliteError;

/// The schema version this release writes. A file with a higher one is refused; a lower one is
/// migrated when it is opened (each version's tables are added in one transaction).
///
/// Version 2 added the `leases` table.
pub const SCHEMA_VERSION: i64 = 2;

/// Written into the SQLite header (`PRAGMA application_id`, "ILK1") so other tools can tell
/// what the file is, and so we refuse to write our tables into another application's database.
const APPLICATION_ID: i64 = 0x494C_4B31;

/// Version 1 of the schema.
///
/// `events.position` is the rowid (`INTEGER PRIMARY KEY`): the global position. `AUTOINCREMENT`
/// makes SQLite never hand out a number twice, even if rows at the end were ever removed.
/// Stream text columns use the default `BINARY` collation, so `ORDER BY category, stream_id`
/// is byte order, the same order as `StreamId`'s `Ord`. Times are nanoseconds since the Unix
/// epoch; ids are 16-byte blobs.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       BLOB    NOT NULL UNIQUE,
    category       TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    metadata       TEXT    NOT NULL,
    correlation_id BLOB,
    causation_id   BLOB,
    recorded_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_stream_version
    ON events (category, stream_id, version);
CREATE TABLE IF NOT EXISTS streams (
    category      TEXT    NOT NULL,
    stream_id     TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    last_position INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (category, stream_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    category       TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    taken_at       INTEGER NOT NULL,
    PRIMARY KEY (category, stream_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    processor      TEXT    NOT NULL PRIMARY KEY,
    position_major INTEGER NOT NULL,
    position_minor INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS saga_states (
    saga       TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    state      BLOB    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (saga, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    processor      TEXT    NOT NULL,
    position_major INTEGER NOT NULL,
    position_minor INTEGER NOT NULL,
    event_id       BLOB    NOT NULL,
    category       TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    error          TEXT    NOT NULL,
    attempts       INTEGER NOT NULL,
    parked_at      INTEGER NOT NULL,
    UNIQUE (processor, event_id)
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          TEXT    NOT NULL PRIMARY KEY,
    result       BLOB,
    claimed_at   INTEGER NOT NULL,
    completed_at INTEGER
) WITHOUT ROWID;
";

/// Version 2: leases with fencing numbers (see the `lease` module). `owner` is `NULL` once the
/// lease is released; `expires_at` is nanoseconds since the Unix epoch on the writing process's
/// clock. The row stays after a release, so the fence keeps growing across owners.
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS leases (
    key        TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT,
    fence      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
";

fn sqlite(config: &SqliteConfig) -> impl Fn(rusqlite::Error) -> SqliteError + '_ {
    move |source| SqliteError::Sqlite {
        path: config.path.clone(),
        source,
    }
}

/// Opens the writer connection: checks the file is ours, switches it to WAL, sets durability and
/// creates or checks the schema.
pub(crate) fn open_writer(config: &SqliteConfig) -> Result<Connection, SqliteError> {
    let err = sqlite(config);
    let conn = Connection::open_with_flags(
        &config.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(&err)?;
    conn.busy_timeout(config.busy_timeout).map_err(&err)?;

    let application_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(&err)?;
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(SqliteError::ForeignDatabase {
            path: config.path.clone(),
            application_id,
        });
    }

    // WAL lets readers work on a snapshot while the writer appends; it is persistent in the file.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(&err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode stayed {mode}, WAL is required"
        ))));
    }
    conn.pragma_update(None, "synchronous", config.synchronous.pragma_value())
        .map_err(&err)?;
    conn.set_prepared_statement_cache_capacity(64);

    conn.execute_batch("BEGIN IMMEDIATE").map_err(&err)?;
    match create_schema(&conn, config) {
        Ok(()) => conn.execute_batch("COMMIT").map_err(&err)?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(conn)
}

fn create_schema(conn: &Connection, config: &SqliteConfig) -> Result<(), SqliteError> {
    let err = sqlite(config);
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER NOT NULL,
             applied_at INTEGER NOT NULL
         )",
    )
    .map_err(&err)?;
    let found: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .optional()
        .map_err(&err)?
        .flatten();
    if let Some(found) = found
        && found > SCHEMA_VERSION
    {
        return Err(SqliteError::NewerSchema {
            path: config.path.clone(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    // Every version's tables, each created only if missing, all in this same transaction: a
    // new file gets them all, an older one the versions it lacks.
    conn.execute_batch(SCHEMA_V1).map_err(&err)?;
    conn.execute_batch(SCHEMA_V2).map_err(&err)?;
    if found.is_none_or(|found| found < SCHEMA_VERSION) {
        conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            (SCHEMA_VERSION, crate::rows::now_nanos()),
        )
        .map_err(&err)?;
    }
    conn.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(&err)?;
    Ok(())
}

/// Opens one read-only connection (after the writer made the file and its schema).
pub(crate) fn open_reader(config: &SqliteConfig) -> Result<Connection, SqliteError> {
    let err = sqlite(config);
    let conn = Connection::open_with_flags(
        &config.path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(&err)?;
    conn.busy_timeout(config.busy_timeout).map_err(&err)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}
