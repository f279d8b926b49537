//! The store under test: in memory, SQLite (a temporary file, durable defaults) or PostgreSQL
//! (a fresh schema, 10 pooled connections like postgres-es's default pool).

use std::sync::Arc;

use interlock::ApplicationBuilder;
use interlock::prelude::*;
use interlock::sqlite::SqliteEventStore;
use interlock_postgres::PgEventStore;
use sqlx_core::executor::Executor;

use crate::out::BoxError;

pub(crate) fn pg_url() -> String {
    std::env::var("INTERLOCK_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub(crate) fn fresh_schema(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub(crate) struct Backend {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) pg: Option<PgEventStore>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    pub(crate) async fn new(kind: &str) -> Result<Self, BoxError> {
        Ok(match kind {
            "memory" => Self {
                store: Arc::new(InMemoryEventStore::new()),
                pg: None,
                _dir: None,
            },
            "sqlite" => {
                let dir = tempfile::tempdir()?;
                let store = SqliteEventStore::open(dir.path().join("events.db"))?;
                Self {
                    store: Arc::new(store),
                    pg: None,
                    _dir: Some(dir),
                }
            }
            "postgres" => {
                let store = PgEventStore::builder(pg_url())
                    .schema(fresh_schema("ilc"))
                    .max_connections(10)
                    .connect()
                    .await?;
                Self {
                    store: Arc::new(store.clone()),
                    pg: Some(store),
                    _dir: None,
                }
            }
            other => return Err(format!("unknown store {other}").into()),
        })
    }

    pub(crate) fn app(&self) -> ApplicationBuilder {
        Application::builder().with_shared_event_store(self.store.clone())
    }

    pub(crate) async fn close(self) -> Result<(), BoxError> {
        if let Some(pg) = self.pg {
            let sql = format!("DROP SCHEMA \"{}\" CASCADE", pg.schema());
            pg.pool().execute(sql.as_str()).await?;
        }
        Ok(())
    }
}
