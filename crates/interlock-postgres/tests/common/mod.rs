//! Shared helpers: the server URL, a fresh schema per test, skipping without a server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use interlock_postgres::{PgConfig, PgEventStore};
use sqlx_core::executor::Executor;
use sqlx_core::row::Row;
use sqlx_postgres::{PgPool, PgPoolOptions};

/// The server: `INTERLOCK_PG_URL`, or the local test database.
pub fn url() -> String {
    std::env::var("INTERLOCK_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn required() -> bool {
    std::env::var("INTERLOCK_REQUIRE_PG").is_ok_and(|v| v == "1")
}

/// A pool on the test server, or `None` (after a notice) when there is no server and
/// `INTERLOCK_REQUIRE_PG=1` is not set. With it set, a missing server fails the test.
pub async fn raw_pool() -> Option<PgPool> {
    let connected = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&url())
        .await;
    match connected {
        Ok(pool) => {
            clean_old_schemas(&pool).await;
            Some(pool)
        }
        Err(e) if !required() => {
            eprintln!(
                "notice: skipping PostgreSQL test, no server at {} ({e}); set INTERLOCK_PG_URL, or INTERLOCK_REQUIRE_PG=1 to fail instead",
                url()
            );
            None
        }
        Err(e) => panic!(
            "INTERLOCK_REQUIRE_PG=1 but no PostgreSQL server at {}: {e}",
            url()
        ),
    }
}

/// A schema name no other test uses: `ilt_<unix seconds>_<random>`.
pub fn fresh_schema() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("ilt_{secs}_{}", &random[..12])
}

/// Drops test schemas left behind more than an hour ago (tests that cannot drop their own,
/// like the conformance suite's, leave theirs; this keeps the database from filling up).
async fn clean_old_schemas(pool: &PgPool) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let cutoff = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .saturating_sub(3600);
    let Ok(rows) = sqlx_core::query::query(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ilt\\_%' ESCAPE '\\'",
    )
    .fetch_all(pool)
    .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let stamp = name
            .split('_')
            .nth(1)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        if stamp < cutoff && interlock_postgres::validate_schema_name(&name).is_ok() {
            let _ = pool
                .execute(format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE").as_str())
                .await;
        }
    }
}

/// A store in a fresh schema, or `None` when the test is skipped.
pub async fn store() -> Option<PgEventStore> {
    store_with(|c| c).await
}

/// A store in a fresh schema with a tweaked configuration.
pub async fn store_with(tweak: impl FnOnce(PgConfig) -> PgConfig) -> Option<PgEventStore> {
    raw_pool().await?;
    let mut config = PgConfig::new(url());
    config.schema = fresh_schema();
    Some(PgEventStore::connect_with(tweak(config)).await.unwrap())
}

/// A store for the conformance macros, which cannot skip a test: without a server (and
/// without `INTERLOCK_REQUIRE_PG=1`) the whole test binary exits successfully after a notice.
pub async fn store_or_exit() -> PgEventStore {
    match store().await {
        Some(store) => store,
        None => std::process::exit(0),
    }
}

/// Drops the store's schema.
pub async fn drop_schema(store: &PgEventStore) {
    let schema = store.schema().to_owned();
    store
        .pool()
        .execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str())
        .await
        .unwrap();
}
