//! W1-style appends against the local PostgreSQL server: 1-event batches, each to a new stream
//! (a command creating an aggregate), with 1 and 8 concurrent tasks, durable commits (the
//! server's defaults: `synchronous_commit = on`, `fsync = on`). Side by side with a raw sqlx
//! floor of the same shape: one single-row `INSERT` per transaction into a table with the
//! same indexes, no version check, no notification.
//!
//! After criterion's report, a table gives appends/s. Run:
//! `cargo bench -p interlock-postgres --bench appends` (server from `INTERLOCK_PG_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`; skipped with a notice without one).
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use interlock_core::{EventStore, ExpectedVersion, NewEvent, SerializedEvent, StreamId};
use interlock_postgres::{PgConfig, PgEventStore};
use sqlx_core::executor::Executor;
use sqlx_postgres::PgPool;

const TASKS: [usize; 2] = [1, 8];
/// Appends per task per measured iteration.
const PER_TASK: usize = 20;

static TOTALS: Mutex<BTreeMap<String, (u64, Duration)>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

fn record(name: &str, appends: u64, elapsed: Duration) {
    let mut totals = TOTALS.lock().unwrap();
    let entry = totals.entry(name.to_owned()).or_default();
    entry.0 += appends;
    entry.1 += elapsed;
}

fn url() -> String {
    std::env::var("INTERLOCK_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn new_event(n: u64) -> NewEvent {
    NewEvent::from_serialized(SerializedEvent {
        event_type: "AccountOpened".to_owned(),
        schema_version: 1,
        payload: Bytes::from(format!(r#"{{"owner":"owner-{n}","amount":{n}}}"#)),
    })
}

/// Runs `tasks` tasks doing `per_task` appends each; returns the elapsed time.
fn run_store(rt: &tokio::runtime::Runtime, store: &PgEventStore, tasks: usize) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    let n = NEXT.fetch_add(1, Ordering::Relaxed);
                    let stream = StreamId::new("Account", n.to_string()).unwrap();
                    store
                        .append(&stream, ExpectedVersion::NoStream, vec![new_event(n)])
                        .await
                        .unwrap();
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        start.elapsed()
    })
}

fn run_raw(rt: &tokio::runtime::Runtime, pool: &PgPool, sql: &str, tasks: usize) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (pool, sql) = (pool.clone(), sql.to_owned());
            handles.push(tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    let n = NEXT.fetch_add(1, Ordering::Relaxed);
                    let event = new_event(n);
                    sqlx_core::query::query(&sql)
                        .bind(event.event_id.as_uuid())
                        .bind("Account")
                        .bind(n.to_string())
                        .bind(&event.event_type)
                        .bind(&event.payload[..])
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        start.elapsed()
    })
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let schema = format!("ilb_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut config = PgConfig::new(url());
    config.schema = schema.clone();
    config.max_connections = 16;
    let store = match rt.block_on(PgEventStore::connect_with(config)) {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "notice: skipping the PostgreSQL benchmark, no server at {} ({e})",
                url()
            );
            return;
        }
    };
    let pool = store.pool().clone();
    let raw_sql = format!(
        "INSERT INTO \"{schema}\".raw_events (event_id, category, stream_id, stream_version, \
         event_type, payload) VALUES ($1, $2, $3, 1, $4, $5)"
    );
    rt.block_on(async {
        pool.execute(
            format!(
                "CREATE TABLE \"{schema}\".raw_events (position bigserial PRIMARY KEY, \
                 event_id uuid NOT NULL UNIQUE, category text NOT NULL, stream_id text NOT NULL, \
                 stream_version bigint NOT NULL, event_type text NOT NULL, payload bytea NOT NULL, \
                 recorded_at timestamptz NOT NULL DEFAULT now(), \
                 UNIQUE (category, stream_id, stream_version))"
            )
            .as_str(),
        )
        .await
        .unwrap();
    });

    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .configure_from_args();
    let mut group = criterion.benchmark_group("pg_appends");
    for tasks in TASKS {
        group.throughput(Throughput::Elements((tasks * PER_TASK) as u64));
        group.bench_with_input(BenchmarkId::new("raw_sqlx", tasks), &tasks, |b, &tasks| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_raw(&rt, &pool, &raw_sql, tasks);
                }
                record(
                    &format!("raw_sqlx/{tasks}"),
                    iters * (tasks * PER_TASK) as u64,
                    total,
                );
                total
            });
        });
        group.bench_with_input(BenchmarkId::new("interlock", tasks), &tasks, |b, &tasks| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_store(&rt, &store, tasks);
                }
                record(
                    &format!("interlock/{tasks}"),
                    iters * (tasks * PER_TASK) as u64,
                    total,
                );
                total
            });
        });
    }
    group.finish();

    // Check the result, not only the time: every append is there, once.
    let appended = rt.block_on(async {
        sqlx_core::query_scalar::query_scalar::<_, i64>(&format!(
            "SELECT count(*) FROM \"{schema}\".events"
        ))
        .fetch_one(&pool)
        .await
        .unwrap()
    });
    let streams = rt.block_on(async {
        sqlx_core::query_scalar::query_scalar::<_, i64>(&format!(
            "SELECT count(*) FROM \"{schema}\".streams WHERE version = 1"
        ))
        .fetch_one(&pool)
        .await
        .unwrap()
    });
    assert_eq!(appended, streams, "one event per stream");

    println!(
        "\n{:<16} {:>12} {:>14}",
        "benchmark", "appends", "appends/s"
    );
    let totals = TOTALS.lock().unwrap().clone();
    for (name, (appends, elapsed)) in &totals {
        println!(
            "{name:<16} {appends:>12} {:>14.0}",
            *appends as f64 / elapsed.as_secs_f64()
        );
    }
    for tasks in TASKS {
        let rate = |name: &str| {
            totals
                .get(&format!("{name}/{tasks}"))
                .map(|(n, t)| *n as f64 / t.as_secs_f64())
        };
        if let (Some(ours), Some(raw)) = (rate("interlock"), rate("raw_sqlx")) {
            println!("{tasks} task(s): interlock / raw floor = {:.2}", ours / raw);
        }
    }
    rt.block_on(async {
        pool.execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str())
            .await
            .unwrap();
    });
}
