//! Durable appends (`synchronous = FULL`) of 1-event batches with 1, 8 and 64 concurrent
//! producers, side by side with a raw rusqlite insert loop of the same durability:
//!
//! * `raw_autocommit`: one insert per transaction (one flush per row): the single-producer floor.
//! * `raw_group/P`: inserts batched P per transaction, the way the writer batches P waiting
//!   producers: the group-commit floor for P producers.
//! * `interlock/P`: P tasks appending concurrently to the store.
//!
//! After criterion's own report, a table gives appends/s and the ratio to the floors.
//! Run: `cargo bench -p interlock-sqlite --bench appends`.
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use interlock_core::{EventStore, ExpectedVersion, NewEvent, SerializedEvent, StreamId};
use interlock_sqlite::SqliteEventStore;

const PRODUCERS: [usize; 3] = [1, 8, 64];

/// Appends per measured iteration, by producer count (kept modest: every one is a disk flush or
/// shares one).
fn appends_per_iter(producers: usize) -> usize {
    match producers {
        1 => 100,
        8 => 400,
        _ => 1280,
    }
}

/// (appends, time) summed over every run of a benchmark, for the closing table.
static TOTALS: Mutex<BTreeMap<String, (u64, Duration)>> = Mutex::new(BTreeMap::new());

fn record(name: &str, appends: u64, elapsed: Duration) {
    let mut totals = TOTALS.lock().unwrap();
    let entry = totals.entry(name.to_owned()).or_default();
    entry.0 += appends;
    entry.1 += elapsed;
}

fn new_event(n: u64) -> NewEvent {
    NewEvent::from_serialized(SerializedEvent {
        event_type: "Deposited".to_owned(),
        schema_version: 1,
        payload: Bytes::from(format!(r#"{{"amount":{n}}}"#)),
    })
}

/// The raw floor's table: the same event row and indexes as the store's, nothing else.
fn raw_connection(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE events (
             position INTEGER PRIMARY KEY AUTOINCREMENT,
             event_id BLOB NOT NULL UNIQUE,
             category TEXT NOT NULL, stream_id TEXT NOT NULL, version INTEGER NOT NULL,
             event_type TEXT NOT NULL, schema_version INTEGER NOT NULL,
             payload BLOB NOT NULL, metadata TEXT NOT NULL,
             correlation_id BLOB, causation_id BLOB, recorded_at INTEGER NOT NULL);
         CREATE UNIQUE INDEX events_stream_version ON events (category, stream_id, version);",
    )
    .unwrap();
    conn
}

/// Inserts `total` rows, `per_tx` per transaction; returns the elapsed time.
fn raw_inserts(
    conn: &rusqlite::Connection,
    next: &mut u64,
    total: usize,
    per_tx: usize,
) -> Duration {
    let start = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(per_tx);
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        {
            let mut stmt = conn
                .prepare_cached(
                    "INSERT INTO events (event_id, category, stream_id, version, event_type, \
                     schema_version, payload, metadata, correlation_id, causation_id, recorded_at) \
                     VALUES (?1, 'Account', ?2, ?3, 'Deposited', 1, ?4, '{}', NULL, NULL, ?5)",
                )
                .unwrap();
            for _ in 0..n {
                *next += 1;
                let event = new_event(*next);
                stmt.execute((
                    &event.event_id.as_uuid().as_bytes()[..],
                    (*next % 64).to_string(),
                    *next as i64,
                    &event.payload[..],
                    0i64,
                ))
                .unwrap();
            }
        }
        conn.execute_batch("COMMIT").unwrap();
        left -= n;
    }
    start.elapsed()
}

fn interlock_appends(
    runtime: &tokio::runtime::Runtime,
    store: &SqliteEventStore,
    producers: usize,
    total: usize,
) -> Duration {
    let per_producer = total / producers;
    runtime.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..producers)
            .map(|p| {
                let store = store.clone();
                tokio::spawn(async move {
                    let stream = StreamId::new("Account", p.to_string()).unwrap();
                    for n in 0..per_producer {
                        store
                            .append(&stream, ExpectedVersion::Any, vec![new_event(n as u64)])
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        start.elapsed()
    })
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("durable_appends");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));

    let raw = raw_connection(&dir.path().join("raw.db"));
    let mut next = 0;
    group.throughput(Throughput::Elements(appends_per_iter(1) as u64));
    group.bench_function("raw_autocommit", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let total = appends_per_iter(1);
                let t = raw_inserts(&raw, &mut next, total, 1);
                record("raw_autocommit", total as u64, t);
                elapsed += t;
            }
            elapsed
        });
    });

    for producers in PRODUCERS {
        let total = appends_per_iter(producers);
        group.throughput(Throughput::Elements(total as u64));
        if producers > 1 {
            let name = format!("raw_group/{producers}");
            group.bench_function(BenchmarkId::new("raw_group", producers), |b| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        let t = raw_inserts(&raw, &mut next, total, producers);
                        record(&name, total as u64, t);
                        elapsed += t;
                    }
                    elapsed
                });
            });
        }
        let store =
            SqliteEventStore::open(dir.path().join(format!("interlock-{producers}.db"))).unwrap();
        let name = format!("interlock/{producers}");
        group.bench_function(BenchmarkId::new("interlock", producers), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let t = interlock_appends(&runtime, &store, producers, total);
                    record(&name, total as u64, t);
                    elapsed += t;
                }
                elapsed
            });
        });
        let stats = store.writer_stats();
        record(
            &format!("group_size/{producers}"),
            stats.writes,
            Duration::from_secs(stats.transactions.max(1)),
        );
    }
    group.finish();
}

fn report() {
    let totals = TOTALS.lock().unwrap();
    let rate = |name: &str| {
        totals
            .get(name)
            .map(|(n, t)| *n as f64 / t.as_secs_f64().max(1e-9))
    };
    let Some(autocommit) = rate("raw_autocommit") else {
        return;
    };
    println!();
    println!("durable appends (synchronous=FULL), 1-event batches");
    println!(
        "{:>9} | {:>14} | {:>14} | {:>12} | {:>16} | {:>17}",
        "producers", "interlock/s", "raw group/s", "avg group", "vs group floor", "vs autocommit"
    );
    for producers in PRODUCERS {
        let Some(ours) = rate(&format!("interlock/{producers}")) else {
            continue;
        };
        let floor = if producers == 1 {
            autocommit
        } else {
            rate(&format!("raw_group/{producers}")).unwrap_or(f64::NAN)
        };
        let group = rate(&format!("group_size/{producers}")).unwrap_or(f64::NAN);
        println!(
            "{producers:>9} | {ours:>14.0} | {floor:>14.0} | {group:>12.1} | {:>15.0}% | {:>16.1}x",
            100.0 * ours / floor,
            ours / autocommit
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
    report();
}
