//! The floors: the same work done raw, without a framework, on the same store.
//!
//! * W1: one durable single-row `INSERT` per transaction (rusqlite with WAL and
//!   `synchronous = FULL`; sqlx on PostgreSQL with the server's `synchronous_commit = on`), into
//!   a table with the same row and unique indexes as the store's, no version check. With 8
//!   tasks, SQLite's floor commits 8 rows per transaction (what 8 waiting producers can share
//!   with one writer); PostgreSQL's runs 8 tasks on the pool.
//! * W2: read the stream, decode each payload, fold by hand.
//! * W3: read the whole log in order, decode, update a map by hand.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use interlock::prelude::*;
use sqlx_core::executor::Executor;
use sqlx_core::row::Row as _;

use crate::backend::{Backend, fresh_schema, pg_url};
use crate::model::{Account, Deposited, Opened, account_at, check_view};
use crate::out::{BoxError, Row};
use crate::reload::{REPEATS, wrong};

const W1_DETAIL: &str = "one durable single-row INSERT per transaction, same row and indexes";

pub(crate) async fn w1(store: &str, n: u64) -> Result<(), BoxError> {
    match store {
        "sqlite" => {
            for (per_tx, variant) in [(1, "sequential"), (8, "8 tasks")] {
                let elapsed = sqlite_inserts(n, per_tx)?;
                Row::floor("W1", store, variant, n)
                    .rate("cmd/s", elapsed)
                    .detail(format!(
                        "rusqlite, {per_tx} row(s) per transaction, WAL, synchronous=FULL"
                    ))
                    .print();
            }
        }
        "postgres" => {
            for (tasks, variant) in [(1, "sequential"), (8, "8 tasks")] {
                let (elapsed, stored) = pg_inserts(n, tasks).await?;
                Row::floor("W1", store, variant, n)
                    .rate("cmd/s", elapsed)
                    .detail(format!("sqlx, {W1_DETAIL}"))
                    .check(stored == n, || format!("{stored} of {n} rows stored"))
                    .print();
            }
        }
        _ => {}
    }
    Ok(())
}

fn sqlite_inserts(n: u64, per_tx: u64) -> Result<Duration, BoxError> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if mode != "wal" {
        return Err(format!("journal_mode {mode}").into());
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE events (
             position INTEGER PRIMARY KEY AUTOINCREMENT,
             event_id BLOB NOT NULL UNIQUE,
             category TEXT NOT NULL, stream_id TEXT NOT NULL, version INTEGER NOT NULL,
             event_type TEXT NOT NULL, schema_version INTEGER NOT NULL,
             payload BLOB NOT NULL, metadata TEXT NOT NULL, recorded_at INTEGER NOT NULL);
         CREATE UNIQUE INDEX events_stream_version ON events (category, stream_id, version);",
    )?;
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut stmt = conn.prepare_cached(
            "INSERT INTO events (event_id, category, stream_id, version, event_type, \
             schema_version, payload, metadata, recorded_at) \
             VALUES (?1, 'Account', ?2, 1, 'Opened', 1, ?3, '{}', 0)",
        )?;
        for _ in 0..per_tx.min(n - i) {
            stmt.execute((
                &uuid::Uuid::now_v7().as_bytes()[..],
                format!("acc-{i}"),
                &b"{}"[..],
            ))?;
            i += 1;
        }
        drop(stmt);
        conn.execute_batch("COMMIT")?;
    }
    Ok(start.elapsed())
}

async fn pg_inserts(n: u64, tasks: u64) -> Result<(Duration, u64), BoxError> {
    let pool = sqlx_postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect(&pg_url())
        .await?;
    let schema = fresh_schema("ilf");
    pool.execute(
        format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.events (position bigserial PRIMARY KEY, \
             event_id uuid NOT NULL UNIQUE, category text NOT NULL, stream_id text NOT NULL, \
             stream_version bigint NOT NULL, event_type text NOT NULL, payload bytea NOT NULL, \
             recorded_at timestamptz NOT NULL DEFAULT now(), \
             UNIQUE (category, stream_id, stream_version))"
        )
        .as_str(),
    )
    .await?;
    let sql = format!(
        "INSERT INTO {schema}.events (event_id, category, stream_id, stream_version, event_type, \
         payload) VALUES ($1, 'Account', $2, 1, 'Opened', $3)"
    );
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (pool, sql) = (pool.clone(), sql.clone());
            tokio::spawn(async move {
                let mut i = t;
                while i < n {
                    sqlx_core::query::query(&sql)
                        .bind(uuid::Uuid::now_v7())
                        .bind(format!("acc-{i}"))
                        .bind(&b"{}"[..])
                        .execute(&pool)
                        .await?;
                    i += tasks;
                }
                Ok::<_, sqlx_core::Error>(())
            })
        })
        .collect();
    for handle in handles {
        handle.await??;
    }
    let elapsed = start.elapsed();
    let stored: i64 =
        sqlx_core::query_scalar::query_scalar(&format!("SELECT count(*) FROM {schema}.events"))
            .fetch_one(&pool)
            .await?;
    pool.execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
        .await?;
    Ok((elapsed, stored as u64))
}

fn fold(account: &mut Account, event_type: &str, payload: &[u8]) -> Result<(), BoxError> {
    match event_type {
        "Opened" => {
            let _: Opened = serde_json::from_slice(payload)?;
            account.opened = true;
        }
        _ => {
            let e: Deposited = serde_json::from_slice(payload)?;
            account.balance += e.amount;
            account.deposits += 1;
        }
    }
    Ok(())
}

/// W2's floor, on the stream `long` the workload wrote.
pub(crate) async fn reload(backend: &Backend, store: &str, n: u64) -> Result<(), BoxError> {
    let expected = account_at(n);
    let stream = StreamId::new("Account", "long")?;
    let mut best = Duration::MAX;
    let mut account = Account::default();
    for _ in 0..REPEATS {
        let start = Instant::now();
        account = Account::default();
        match &backend.pg {
            None => {
                for event in backend.store.read_stream(&stream, 1, None).await? {
                    fold(&mut account, &event.event_type, &event.payload)?;
                }
            }
            Some(pg) => {
                let sql = format!(
                    "SELECT event_type, payload FROM \"{}\".events \
                     WHERE category = $1 AND stream_id = $2 ORDER BY stream_version",
                    pg.schema()
                );
                let rows = sqlx_core::query::query(&sql)
                    .bind("Account")
                    .bind("long")
                    .fetch_all(pg.pool())
                    .await?;
                for row in rows {
                    let (event_type, payload): (String, Vec<u8>) =
                        (row.try_get(0)?, row.try_get(1)?);
                    fold(&mut account, &event_type, &payload)?;
                }
            }
        }
        best = best.min(start.elapsed());
    }
    let how = if backend.pg.is_some() {
        "SELECT by stream ORDER BY version, decode, fold (sqlx)"
    } else {
        "read_stream, decode, fold by hand"
    };
    for variant in ["full replay", "snapshot + tail"] {
        Row::floor("W2", store, variant, n)
            .millis(best)
            .detail(format!("{how} (a full replay: the floor of both variants)"))
            .check(account == expected, || wrong(&account, &expected))
            .print();
    }
    Ok(())
}

/// W3's floor, on the log the workload wrote.
pub(crate) async fn catch_up(
    backend: &Backend,
    store: &str,
    accounts: u64,
    per_account: u64,
) -> Result<(), BoxError> {
    let mut view: HashMap<String, u64> = HashMap::new();
    let start = Instant::now();
    let mut apply = |stream_id: &str, event_type: &str, payload: &[u8]| -> Result<(), BoxError> {
        let mut account = Account::default();
        fold(&mut account, event_type, payload)?;
        *view.entry(stream_id.to_owned()).or_default() += account.balance;
        Ok(())
    };
    let how = match &backend.pg {
        None => {
            let mut after = Position::START;
            loop {
                let batch = backend.store.read_all(after, 1000).await?;
                let Some(last) = batch.last() else { break };
                after = last.position;
                for event in &batch {
                    apply(event.stream_id.id(), &event.event_type, &event.payload)?;
                }
            }
            "read_all in batches of 1000, decode, update a map by hand"
        }
        Some(pg) => {
            let sql = format!(
                "SELECT stream_id, event_type, payload FROM \"{}\".events ORDER BY tx_id, position",
                pg.schema()
            );
            for row in sqlx_core::query::query(&sql).fetch_all(pg.pool()).await? {
                let (stream_id, event_type, payload): (String, String, Vec<u8>) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                apply(&stream_id, &event_type, &payload)?;
            }
            "one SELECT of the whole log in global order, decode, update a map by hand (sqlx)"
        }
    };
    let elapsed = start.elapsed();
    let checked = check_view(&view, accounts, per_account);
    Row::floor("W3", store, "catch-up", accounts * per_account)
        .rate("events/s", elapsed)
        .detail(how)
        .check(checked.is_ok(), || checked.err().unwrap_or_default())
        .print();
    Ok(())
}
