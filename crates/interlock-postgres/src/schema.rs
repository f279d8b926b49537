//! The tables, their versioned migrations, and the SQL text of every statement.

use sqlx_core::executor::Executor;
use sqlx_core::row::Row;
use sqlx_postgres::PgPool;

use crate::error::PgError;

/// The schema version this release writes. A schema with a higher one is refused with
/// [`PgError::NewerSchema`]; lower ones are migrated at connect.
///
/// Version 2 added the `leases` table.
pub const SCHEMA_VERSION: i32 = 2;

/// Migrations by version, applied in order inside one transaction. `{s}` is the quoted schema.
///
/// Text columns that are keys use `COLLATE "C"`, so `ORDER BY` is byte order, the order of
/// `StreamId`'s `Ord`. Payloads, metadata and side-store documents are `bytea`: returned
/// byte for byte as written, and never parsed by the server. `events.tx_id` is the writing
/// transaction's id and, with `position`, the global order (see the crate docs).
///
/// Version 2: `leases` (see the `lease` module). `owner` is `NULL` once released; the row stays,
/// so the fence keeps growing across owners. `expires_at` is on the server's clock.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE {s}.events (
    position       bigserial   NOT NULL,
    tx_id          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid        NOT NULL,
    category       text        COLLATE "C" NOT NULL,
    stream_id      text        COLLATE "C" NOT NULL,
    stream_version bigint      NOT NULL,
    event_type     text        NOT NULL,
    schema_version bigint      NOT NULL,
    payload        bytea       NOT NULL,
    metadata       bytea       NOT NULL,
    correlation_id uuid,
    causation_id   uuid,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (position),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (category, stream_id, stream_version)
);
CREATE INDEX events_global_order ON {s}.events (tx_id, position);
CREATE TABLE {s}.streams (
    category      text        COLLATE "C" NOT NULL,
    stream_id     text        COLLATE "C" NOT NULL,
    version       bigint      NOT NULL,
    last_tx       xid8        NOT NULL,
    last_position bigint      NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (category, stream_id)
);
CREATE TABLE {s}.snapshots (
    category       text        COLLATE "C" NOT NULL,
    stream_id      text        COLLATE "C" NOT NULL,
    version        bigint      NOT NULL,
    schema_version bigint      NOT NULL,
    payload        bytea       NOT NULL,
    taken_at       timestamptz NOT NULL,
    PRIMARY KEY (category, stream_id)
);
CREATE TABLE {s}.checkpoints (
    processor      text        COLLATE "C" NOT NULL PRIMARY KEY,
    position_major bigint      NOT NULL,
    position_minor bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {s}.saga_states (
    saga       text        COLLATE "C" NOT NULL,
    key        text        COLLATE "C" NOT NULL,
    version    bigint      NOT NULL,
    state      bytea       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga, key)
);
CREATE TABLE {s}.dead_letters (
    id             bigserial   PRIMARY KEY,
    processor      text        COLLATE "C" NOT NULL,
    position_major bigint      NOT NULL,
    position_minor bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    category       text        COLLATE "C" NOT NULL,
    stream_id      text        COLLATE "C" NOT NULL,
    stream_version bigint      NOT NULL,
    event_type     text        NOT NULL,
    error          text        NOT NULL,
    attempts       bigint      NOT NULL,
    parked_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dead_letters_event_key UNIQUE (processor, event_id)
);
CREATE TABLE {s}.idempotency_keys (
    key        text        COLLATE "C" NOT NULL PRIMARY KEY,
    result     bytea,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE {s}.leases (
    key        text        COLLATE "C" NOT NULL PRIMARY KEY,
    owner      text        COLLATE "C",
    fence      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
"#,
    ),
];

/// Creates the schema or brings it up to [`SCHEMA_VERSION`], in one transaction that holds an
/// advisory lock on the schema's name, so processes connecting at once migrate it once.
pub(crate) async fn migrate(pool: &PgPool, schema: &str) -> Result<(), PgError> {
    let s = quoted(schema);
    let mut tx = pool.begin().await?;
    sqlx_core::query::query("SELECT pg_advisory_xact_lock(1229876039, hashtext($1))")
        .bind(schema)
        .execute(&mut *tx)
        .await?;
    tx.execute(format!("CREATE SCHEMA IF NOT EXISTS {s}").as_str())
        .await?;
    tx.execute(
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.schema_version (\
                version integer PRIMARY KEY, \
                applied_at timestamptz NOT NULL DEFAULT now())"
        )
        .as_str(),
    )
    .await?;
    let found: i32 = sqlx_core::query::query(&format!(
        "SELECT COALESCE(max(version), 0) FROM {s}.schema_version"
    ))
    .fetch_one(&mut *tx)
    .await?
    .try_get(0)?;
    if found > SCHEMA_VERSION {
        return Err(PgError::NewerSchema {
            schema: schema.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, script) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tracing::info!(schema, version, "applying event store migration");
        sqlx_core::raw_sql::raw_sql(&script.replace("{s}", &s))
            .execute(&mut *tx)
            .await?;
        sqlx_core::query::query(&format!(
            "INSERT INTO {s}.schema_version (version) VALUES ($1)"
        ))
        .bind(version)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The schema name as a quoted identifier. Names are validated to `[a-z0-9_]` first, so the
/// quotes only protect reserved words (`user`, `select`), never an injection.
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// The seed of the 64-bit hash that keys a lease's advisory lock (any constant; "ILKL").
const LEASE_LOCK_SEED: i64 = 0x494C_4B4C;

/// The columns every event query selects, in the order `rows::event` reads them.
const EVENT_COLUMNS: &str = "tx_id::text, position, event_id, category, stream_id, stream_version, \
     event_type, schema_version, payload, metadata, correlation_id, causation_id, recorded_at";

/// The columns of `read_stream`, in the order `rows::stream_event` reads them: those of
/// [`EVENT_COLUMNS`] but the category and stream id, which its `WHERE` fixes.
const STREAM_EVENT_COLUMNS: &str = "tx_id::text, position, event_id, stream_version, \
     event_type, schema_version, payload, metadata, correlation_id, causation_id, recorded_at";

/// The horizon: every transaction below it has ended, so no row below it can still appear.
/// `pg_current_snapshot()` is the statement's own snapshot, so rows below the horizon that
/// committed are exactly the rows this statement sees.
const HORIZON: &str = "pg_snapshot_xmin(pg_current_snapshot())";

/// The SQL of every statement, built once per store with the schema name filled in (so the
/// driver's per-connection statement cache keys on a fixed text).
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) append: String,
    pub(crate) events_by_id: String,
    pub(crate) read_stream: String,
    pub(crate) read_all: String,
    pub(crate) head: String,
    pub(crate) stream_version: String,
    pub(crate) stream_info: String,
    pub(crate) list_streams: String,
    pub(crate) list_streams_after: String,
    pub(crate) rewrite_event: String,
    pub(crate) save_snapshot: String,
    pub(crate) load_snapshot: String,
    pub(crate) delete_snapshot: String,
    pub(crate) load_checkpoint: String,
    pub(crate) save_checkpoint: String,
    pub(crate) load_saga: String,
    pub(crate) insert_saga: String,
    pub(crate) update_saga: String,
    pub(crate) saga_version: String,
    pub(crate) delete_saga: String,
    pub(crate) park: String,
    pub(crate) list_dead_letters: String,
    pub(crate) delete_dead_letter: String,
    pub(crate) claim: String,
    pub(crate) load_claim: String,
    pub(crate) complete: String,
    pub(crate) release: String,
    pub(crate) lease_lock: String,
    pub(crate) lease_acquire: String,
    pub(crate) lease_renew: String,
    pub(crate) lease_release: String,
    pub(crate) live_leases: String,
    pub(crate) save_checkpoint_fenced: String,
}

impl Sql {
    pub(crate) fn new(schema: &str) -> Self {
        let s = quoted(schema);
        let cols = EVENT_COLUMNS;
        Self {
            // One statement, so outside a caller's transaction it is its own transaction (one
            // round trip). `cur` locks the stream's row: concurrent appends to an existing
            // stream queue there and re-read the version that won. Appends to a new stream
            // have no row to lock; the unique (category, stream_id, stream_version) index
            // settles that race. `ok` is empty when the expectation fails, and then nothing is
            // inserted. `nextval` in the select list runs after `ORDER BY`, so positions
            // follow versions. The rows' `tx_id` is the larger of this transaction's id and
            // the stream's last one (see "A global order readers never skip" in the crate
            // docs), so a stream's events keep their order in the global order.
            append: format!(
                r#"WITH cur AS (
    SELECT version, last_tx FROM {s}.streams
    WHERE category = $1 AND stream_id = $2 FOR UPDATE
), state AS (
    SELECT COALESCE((SELECT version FROM cur), 0) AS version,
        GREATEST(pg_current_xact_id(), (SELECT last_tx FROM cur)) AS tx
), ok AS (
    SELECT version, tx FROM state
    WHERE CASE $3::int
        WHEN 0 THEN true
        WHEN 1 THEN version = 0
        WHEN 2 THEN version > 0
        ELSE version = $4::bigint
    END
), ins AS (
    INSERT INTO {s}.events (tx_id, position, event_id, category, stream_id, stream_version,
        event_type, schema_version, payload, metadata, correlation_id, causation_id)
    SELECT ok.tx, nextval('{s}.events_position_seq'), b.event_id, $1, $2, ok.version + b.ord,
        b.event_type, b.schema_version, b.payload, b.metadata, b.correlation_id, b.causation_id
    FROM ok, unnest($5::uuid[], $6::text[], $7::bigint[], $8::bytea[], $9::bytea[],
        $10::uuid[], $11::uuid[])
        WITH ORDINALITY AS b(event_id, event_type, schema_version, payload, metadata,
            correlation_id, causation_id, ord)
    ORDER BY b.ord
    RETURNING position, stream_version
), done AS (
    SELECT max(stream_version) AS version, min(position) AS first_position,
        max(position) AS last_position
    FROM ins
), up AS (
    INSERT INTO {s}.streams AS st (category, stream_id, version, last_tx, last_position,
        created_at, updated_at)
    SELECT $1, $2, done.version, state.tx, done.last_position, now(), now()
    FROM done, state WHERE done.version IS NOT NULL
    ON CONFLICT (category, stream_id) DO UPDATE SET version = EXCLUDED.version,
        last_tx = EXCLUDED.last_tx, last_position = EXCLUDED.last_position,
        updated_at = EXCLUDED.updated_at
    RETURNING 1
), note AS (
    SELECT pg_notify($12, '') FROM done WHERE done.version IS NOT NULL AND $12::text <> ''
)
SELECT state.version, done.version, done.first_position, done.last_position,
    state.tx::text, (SELECT count(*) FROM note)
FROM done, state"#
            ),
            events_by_id: format!("SELECT {cols} FROM {s}.events WHERE event_id = ANY($1)"),
            read_stream: format!(
                "SELECT {STREAM_EVENT_COLUMNS} FROM {s}.events WHERE category = $1 \
                 AND stream_id = $2 AND stream_version BETWEEN $3 AND $4 ORDER BY stream_version"
            ),
            // The rows below the horizon, and whether committed rows after `after` wait above
            // it, from ONE snapshot: two statements could see an older transaction end in
            // between and wrongly conclude nothing was held back. The page is ordered by
            // `order_tx` (the xid8), never by the `tx_id` output column, which {cols} turns into
            // text: "1000" sorts before "999", and a reader would jump over transactions when
            // the ids gain a digit (the regression test `transaction_ids_gaining_a_digit_...`).
            //
            // `pending` must be an index probe at the horizon, whatever the statistics say (a
            // catch-up right after a bulk load has none), or each page costs a scan of the log
            // and catch-up slows down as the log grows (W3 on PostgreSQL: 9.5k events/s over
            // 100k events). So: `(tx_id, position) > (a, p)` spelled `tx_id >= a AND (tx_id > a
            // OR position > p)` (a row comparison would be the scan's start key, at `after`, not
            // the larger of the two lower bounds), and an ordered `LIMIT 1` rather than `EXISTS`
            // (the planner drops `ORDER BY` from an `EXISTS` and, expecting many matches,
            // prefers a sequential scan that stops at the first one; there are usually none).
            read_all: format!(
                "SELECT p.pending, e.* FROM (SELECT COALESCE((SELECT true FROM {s}.events \
                 WHERE tx_id >= {HORIZON} AND tx_id >= $1::text::xid8 \
                 AND (tx_id > $1::text::xid8 OR position > $2) \
                 ORDER BY tx_id, position LIMIT 1), false) \
                 AS pending) p LEFT JOIN LATERAL (SELECT {cols}, tx_id AS order_tx \
                 FROM {s}.events \
                 WHERE (tx_id, position) > ($1::text::xid8, $2) AND tx_id < {HORIZON} \
                 ORDER BY order_tx, position LIMIT $3) e ON true \
                 ORDER BY e.order_tx, e.position"
            ),
            // `pending` as in `read_all`: an index probe even without statistics.
            head: format!(
                "SELECT p.pending, h.tx, h.position FROM (SELECT COALESCE((SELECT true \
                 FROM {s}.events WHERE tx_id >= {HORIZON} ORDER BY tx_id, position LIMIT 1), \
                 false) AS pending) p \
                 LEFT JOIN LATERAL (SELECT tx_id::text AS tx, position FROM {s}.events \
                 WHERE tx_id < {HORIZON} ORDER BY tx_id DESC, position DESC LIMIT 1) h ON true"
            ),
            stream_version: format!(
                "SELECT version FROM {s}.streams WHERE category = $1 AND stream_id = $2"
            ),
            stream_info: format!(
                "SELECT category, stream_id, version, last_tx::text, last_position, created_at, \
                 updated_at FROM {s}.streams WHERE category = $1 AND stream_id = $2"
            ),
            list_streams: format!(
                "SELECT category, stream_id, version, last_tx::text, last_position, created_at, \
                 updated_at FROM {s}.streams ORDER BY category, stream_id LIMIT $1"
            ),
            list_streams_after: format!(
                "SELECT category, stream_id, version, last_tx::text, last_position, created_at, \
                 updated_at FROM {s}.streams WHERE (category, stream_id) > ($2, $3) \
                 ORDER BY category, stream_id LIMIT $1"
            ),
            rewrite_event: format!(
                "UPDATE {s}.events SET event_type = $4, schema_version = $5, payload = $6 \
                 WHERE event_id = $1 AND category = $2 AND stream_id = $3"
            ),
            save_snapshot: format!(
                "INSERT INTO {s}.snapshots AS sn (category, stream_id, version, schema_version, \
                 payload, taken_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (category, stream_id) DO UPDATE SET version = EXCLUDED.version, \
                 schema_version = EXCLUDED.schema_version, payload = EXCLUDED.payload, \
                 taken_at = EXCLUDED.taken_at WHERE sn.version <= EXCLUDED.version"
            ),
            load_snapshot: format!(
                "SELECT version, schema_version, payload, taken_at FROM {s}.snapshots \
                 WHERE category = $1 AND stream_id = $2"
            ),
            delete_snapshot: format!(
                "DELETE FROM {s}.snapshots WHERE category = $1 AND stream_id = $2"
            ),
            load_checkpoint: format!(
                "SELECT position_major, position_minor FROM {s}.checkpoints WHERE processor = $1"
            ),
            save_checkpoint: format!(
                "INSERT INTO {s}.checkpoints (processor, position_major, position_minor) \
                 VALUES ($1, $2, $3) ON CONFLICT (processor) DO UPDATE SET \
                 position_major = EXCLUDED.position_major, \
                 position_minor = EXCLUDED.position_minor, updated_at = now()"
            ),
            load_saga: format!(
                "SELECT version, state, updated_at FROM {s}.saga_states \
                 WHERE saga = $1 AND key = $2"
            ),
            insert_saga: format!(
                "INSERT INTO {s}.saga_states (saga, key, version, state) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (saga, key) DO NOTHING RETURNING version"
            ),
            update_saga: format!(
                "UPDATE {s}.saga_states SET version = version + 1, state = $4, \
                 updated_at = now() WHERE saga = $1 AND key = $2 AND version = $3 \
                 RETURNING version"
            ),
            saga_version: format!(
                "SELECT version FROM {s}.saga_states WHERE saga = $1 AND key = $2"
            ),
            delete_saga: format!(
                "DELETE FROM {s}.saga_states WHERE saga = $1 AND key = $2 AND version = $3"
            ),
            park: format!(
                "INSERT INTO {s}.dead_letters (processor, position_major, position_minor, \
                 event_id, category, stream_id, stream_version, event_type, error, attempts) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (processor, event_id) DO UPDATE SET error = EXCLUDED.error, \
                 attempts = EXCLUDED.attempts, parked_at = now() RETURNING id"
            ),
            list_dead_letters: format!(
                "SELECT id, processor, position_major, position_minor, event_id, category, \
                 stream_id, stream_version, event_type, error, attempts, parked_at \
                 FROM {s}.dead_letters WHERE ($1::text IS NULL OR processor = $1) AND id > $2 \
                 ORDER BY id LIMIT $3"
            ),
            delete_dead_letter: format!("DELETE FROM {s}.dead_letters WHERE id = $1"),
            claim: format!(
                "INSERT INTO {s}.idempotency_keys (key) VALUES ($1) \
                 ON CONFLICT (key) DO NOTHING RETURNING claimed_at"
            ),
            load_claim: format!(
                "SELECT result, claimed_at FROM {s}.idempotency_keys WHERE key = $1"
            ),
            complete: format!(
                "INSERT INTO {s}.idempotency_keys (key, result) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET result = EXCLUDED.result"
            ),
            release: format!("DELETE FROM {s}.idempotency_keys WHERE key = $1 AND result IS NULL"),
            // Leases (see the `lease` module). Every time is the server's `clock_timestamp()`
            // (the moment the statement runs; `now()` would be when the transaction began,
            // before any wait for a lock). The advisory lock's key is a 64-bit hash of schema
            // and lease key; its two-part (int, int) form used by `migrate` is a separate
            // key space, so they never collide.
            // (The schema name is validated to `[a-z0-9_]`, so it is safe in a literal.)
            lease_lock: format!(
                "SELECT pg_advisory_xact_lock(hashtextextended('{schema}/' || $1, \
                 {LEASE_LOCK_SEED}))"
            ),
            // Taken from nobody (no row, or released), from an owner whose lease expired, or
            // extended for its own owner. Only a change of hands raises the fence. No row
            // back: another owner holds it.
            lease_acquire: format!(
                "INSERT INTO {s}.leases AS l (key, owner, fence, expires_at) \
                 VALUES ($1, $2, 1, clock_timestamp() + $3::bigint * interval '1 microsecond') \
                 ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, \
                 fence = CASE WHEN l.owner = EXCLUDED.owner THEN l.fence ELSE l.fence + 1 END, \
                 expires_at = EXCLUDED.expires_at \
                 WHERE l.owner = EXCLUDED.owner OR l.owner IS NULL \
                 OR l.expires_at <= clock_timestamp() \
                 RETURNING fence"
            ),
            lease_renew: format!(
                "UPDATE {s}.leases \
                 SET expires_at = clock_timestamp() + $4::bigint * interval '1 microsecond' \
                 WHERE key = $1 AND owner = $2 AND fence = $3"
            ),
            lease_release: format!(
                "UPDATE {s}.leases SET owner = NULL, expires_at = clock_timestamp() \
                 WHERE key = $1 AND owner = $2 AND fence = $3"
            ),
            live_leases: format!(
                "SELECT key, owner, fence FROM {s}.leases \
                 WHERE key >= $1 AND starts_with(key, $1) AND owner IS NOT NULL \
                 AND expires_at > clock_timestamp() ORDER BY key"
            ),
            // The lease row is locked `FOR SHARE` until the transaction ends, so a take-over
            // (an `UPDATE` of that row) waits for this checkpoint, and everything committed
            // with it, to commit or roll back; and a take-over that committed first leaves no
            // row matching the fence (READ COMMITTED re-checks a row it waited for), so nothing
            // is written and no row comes back.
            save_checkpoint_fenced: format!(
                "WITH held AS (SELECT 1 FROM {s}.leases \
                 WHERE key = $4 AND owner = $5 AND fence = $6 FOR SHARE) \
                 INSERT INTO {s}.checkpoints (processor, position_major, position_minor) \
                 SELECT $1, $2, $3 FROM held ON CONFLICT (processor) DO UPDATE SET \
                 position_major = EXCLUDED.position_major, \
                 position_minor = EXCLUDED.position_minor, updated_at = now() RETURNING 1"
            ),
        }
    }
}
