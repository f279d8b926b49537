//! A fresh schema per run holding postgres-es's tables (as in its `db/init.sql`), and a bulk
//! fill used only to set workloads up (never measured).

use cqrs_es::EventEnvelope;
use cqrs_es::persist::SerializedEvent;
use postgres_es::PostgresEventRepository;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::model::Account;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct PgSchema {
    pub pool: PgPool,
    pub schema: String,
}

impl PgSchema {
    /// A pool of 10 connections (postgres-es's `default_postgress_pool` size, and Interlock's
    /// default) and a new schema with the events and snapshots tables.
    pub async fn fresh(url: &str) -> Result<Self, BoxError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .connect(url)
            .await?;
        let schema = format!("cqb_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        for sql in [
            format!("CREATE SCHEMA {schema}"),
            format!(
                "CREATE TABLE {schema}.events (
                   aggregate_type text NOT NULL, aggregate_id text NOT NULL,
                   sequence bigint CHECK (sequence >= 0) NOT NULL,
                   event_type text NOT NULL, event_version text NOT NULL,
                   payload json NOT NULL, metadata json NOT NULL,
                   PRIMARY KEY (aggregate_type, aggregate_id, sequence))"
            ),
            format!(
                "CREATE TABLE {schema}.snapshots (
                   aggregate_type text NOT NULL, aggregate_id text NOT NULL,
                   last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
                   current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
                   payload json NOT NULL,
                   PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))"
            ),
        ] {
            sqlx::query(&sql).execute(&pool).await?;
        }
        Ok(Self { pool, schema })
    }

    /// postgres-es's repository on this schema's tables.
    pub fn repo(&self) -> PostgresEventRepository {
        PostgresEventRepository::new(self.pool.clone()).with_tables(
            &format!("{}.events", self.schema),
            &format!("{}.snapshots", self.schema),
        )
    }

    pub async fn count_events(&self) -> Result<i64, BoxError> {
        let sql = format!("SELECT count(*) FROM {}.events", self.schema);
        Ok(sqlx::query_scalar(&sql).fetch_one(&self.pool).await?)
    }

    /// Inserts events serialized exactly as postgres-es serializes them, 1000 rows per
    /// statement.
    pub async fn insert(&self, events: &[EventEnvelope<Account>]) -> Result<(), BoxError> {
        let serialized = events
            .iter()
            .map(SerializedEvent::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        self.insert_serialized(&serialized).await
    }

    pub async fn insert_serialized(&self, events: &[SerializedEvent]) -> Result<(), BoxError> {
        let sql = format!(
            "INSERT INTO {}.events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata) SELECT * FROM unnest($1::text[], $2::text[], \
             $3::bigint[], $4::text[], $5::text[], $6::text[]::json[], $7::text[]::json[])",
            self.schema
        );
        for chunk in events.chunks(1000) {
            let column =
                |f: fn(&SerializedEvent) -> String| chunk.iter().map(f).collect::<Vec<_>>();
            sqlx::query(&sql)
                .bind(column(|e| e.aggregate_type.clone()))
                .bind(column(|e| e.aggregate_id.clone()))
                .bind(chunk.iter().map(|e| e.sequence as i64).collect::<Vec<_>>())
                .bind(column(|e| e.event_type.clone()))
                .bind(column(|e| e.event_version.clone()))
                .bind(column(|e| e.payload.to_string()))
                .bind(column(|e| e.metadata.to_string()))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn drop(self) -> Result<(), BoxError> {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The envelopes of one account's stream from version `from` to `to` (1-based; version 1 is
/// `Opened`, the others deposits of [`amount_at`](crate::model::amount_at)).
pub fn stream(id: &str, from: u64, to: u64) -> Vec<EventEnvelope<Account>> {
    use crate::model::{AccountEvent, amount_at};
    (from..=to)
        .map(|version| EventEnvelope {
            aggregate_id: id.to_owned(),
            sequence: version as usize,
            payload: if version == 1 {
                AccountEvent::Opened
            } else {
                AccountEvent::Deposited {
                    amount: amount_at(version),
                }
            },
            metadata: Default::default(),
        })
        .collect()
}
