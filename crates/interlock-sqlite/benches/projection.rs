//! Catch-up throughput (events/s) of a SQL view kept in the store's file, with its checkpoint in
//! each batch's transaction (durable, `synchronous = FULL`), next to two hand-written floors on
//! the same file:
//!
//! * `floor: upserts`: the view's UPSERTs alone, from a precomputed list, 500 per transaction;
//! * `floor: catch-up by hand`: what a careful hand-written projection does: read 500 events,
//!   decode their JSON, UPSERT each, store the checkpoint, commit; repeat.
//!
//! `interlock: rebuild` resets the view and replays every event through the application
//! (`Application::rebuild`: the catch-up path, batches of 500).
//!
//! After criterion's report, a table gives events/s and the ratio to each floor.
//! Run: `cargo bench -p interlock-sqlite --bench projection` (`INTERLOCK_BENCH_N` sets the event
//! count, default 1 000 000).
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use interlock_runtime::prelude::*;
use interlock_sqlite::{
    SqliteEventStore, SqliteHandles, SqliteProjection, SqliteView, SqliteViewRoutes,
};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

const ACCOUNTS: u64 = 1000;
const PER_APPEND: u64 = 1000;
const BATCH: usize = 500;

const UPSERT: &str = "INSERT INTO balances (account, total) VALUES (?1, ?2) \
     ON CONFLICT (account) DO UPDATE SET total = total + excluded.total";

#[derive(Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}
impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
}

fn amount(n: u64) -> u64 {
    n % 9 + 1
}

fn bench_size() -> u64 {
    std::env::var("INTERLOCK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

struct SqlBalances;

impl SqliteView for SqlBalances {
    const NAME: &'static str = "sql-balances";
    fn configure(routes: &mut SqliteViewRoutes<Self>) {
        routes.event::<Deposited>();
    }
    fn create(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, total INTEGER NOT NULL)",
        )
    }
    fn reset(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DELETE FROM balances")
    }
}

impl SqliteHandles<Deposited> for SqlBalances {
    fn handle(
        &mut self,
        conn: &Connection,
        event: Deposited,
        ctx: &EventContext<'_>,
    ) -> Result<(), HandlerError> {
        conn.prepare_cached(UPSERT)?
            .execute((ctx.stream_id().id(), i64::try_from(event.amount)?))?;
        Ok(())
    }
}

/// (events, time) summed over every run of a benchmark, for the closing table.
static TOTALS: Mutex<BTreeMap<&'static str, (u64, Duration)>> = Mutex::new(BTreeMap::new());

fn record(name: &'static str, events: u64, elapsed: Duration) {
    let mut totals = TOTALS.lock().unwrap();
    let entry = totals.entry(name).or_default();
    entry.0 += events;
    entry.1 += elapsed;
}

/// `n` deposits, 1000 per append, each append to the next of `ACCOUNTS` streams.
async fn fill(store: &SqliteEventStore, n: u64) {
    let mut next = 0;
    while next < n {
        let len = (n - next).min(PER_APPEND);
        let events: Vec<NewEvent> = (next..next + len)
            .map(|i| NewEvent::from_event(&Deposited { amount: amount(i) }).unwrap())
            .collect();
        let account = (next / PER_APPEND) % ACCOUNTS;
        store
            .append(
                &StreamId::new("Account", account.to_string()).unwrap(),
                ExpectedVersion::Any,
                events,
            )
            .await
            .unwrap();
        next += len;
    }
}

/// A read-write connection on the store's file, as durable as the store.
fn raw_connection(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, total INTEGER NOT NULL)",
    )
    .unwrap();
    conn
}

fn expected_total(n: u64) -> i64 {
    (0..n).map(amount).sum::<u64>() as i64
}

fn view_total(conn: &Connection) -> i64 {
    conn.query_row("SELECT coalesce(sum(total), 0) FROM balances", [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// The view's UPSERTs alone, `BATCH` per transaction.
fn floor_upserts(conn: &Connection, rows: &[(String, i64)]) -> Duration {
    conn.execute_batch("DELETE FROM balances").unwrap();
    let start = Instant::now();
    for chunk in rows.chunks(BATCH) {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        {
            let mut upsert = conn.prepare_cached(UPSERT).unwrap();
            for (account, amount) in chunk {
                upsert.execute((account, amount)).unwrap();
            }
        }
        conn.execute_batch("COMMIT").unwrap();
    }
    start.elapsed()
}

/// A hand-written effectively-once projection: read, decode, upsert, checkpoint, commit.
fn floor_catch_up(conn: &Connection) -> Duration {
    conn.execute_batch("DELETE FROM balances").unwrap();
    let start = Instant::now();
    let mut after = 0i64;
    loop {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut last = None;
        {
            let mut read = conn
                .prepare_cached(
                    "SELECT position, stream_id, payload FROM events \
                     WHERE position > ?1 ORDER BY position LIMIT ?2",
                )
                .unwrap();
            let mut upsert = conn.prepare_cached(UPSERT).unwrap();
            let mut rows = read.query((after, BATCH as i64)).unwrap();
            while let Some(row) = rows.next().unwrap() {
                let position: i64 = row.get(0).unwrap();
                let account: String = row.get(1).unwrap();
                let payload = row.get_ref(2).unwrap().as_blob().unwrap();
                let event: Deposited = serde_json::from_slice(payload).unwrap();
                upsert.execute((account, event.amount as i64)).unwrap();
                last = Some(position);
            }
        }
        let Some(last) = last else {
            conn.execute_batch("COMMIT").unwrap();
            break;
        };
        conn.prepare_cached(
            "INSERT INTO checkpoints (processor, position_major, position_minor, updated_at) \
             VALUES ('by-hand', 0, ?1, 0) ON CONFLICT (processor) DO UPDATE SET \
             position_minor = excluded.position_minor",
        )
        .unwrap()
        .execute([last])
        .unwrap();
        conn.execute_batch("COMMIT").unwrap();
        after = last;
    }
    start.elapsed()
}

fn benches(c: &mut Criterion, n: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.db");
    let filled = Instant::now();
    {
        let store = SqliteEventStore::open(&path).unwrap();
        runtime.block_on(fill(&store, n));
    }
    println!("filled {n} events in {:.1?}", filled.elapsed());

    let mut group = c.benchmark_group("sql view catch-up");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(n));

    // Floors first, by hand on the file, with the store closed.
    {
        let conn = raw_connection(&path);
        let rows: Vec<(String, i64)> = (0..n)
            .map(|i| (((i / PER_APPEND) % ACCOUNTS).to_string(), amount(i) as i64))
            .collect();
        group.bench_function("floor: upserts", |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let t = floor_upserts(&conn, &rows);
                    assert_eq!(view_total(&conn), expected_total(n));
                    record("floor: upserts", n, t);
                    elapsed += t;
                }
                elapsed
            });
        });
        group.bench_function("floor: catch-up by hand", |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let t = floor_catch_up(&conn);
                    assert_eq!(view_total(&conn), expected_total(n));
                    record("floor: catch-up by hand", n, t);
                    elapsed += t;
                }
                elapsed
            });
        });
        conn.execute_batch("DROP TABLE balances; DELETE FROM checkpoints")
            .unwrap();
    }

    let store = SqliteEventStore::open(&path).unwrap();
    let app = Application::builder()
        .with_event_store(store.clone())
        .register_batch_processor_with(
            SqliteProjection::new(&store, SqlBalances),
            ProcessorSettings::inline().batch_size(BATCH),
        )
        .build()
        .unwrap();
    group.bench_function("interlock: rebuild", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let done = runtime
                    .block_on(app.rebuild("sql-balances", |_| {}))
                    .unwrap();
                let t = start.elapsed();
                assert_eq!(done.processed, n);
                record("interlock: rebuild", n, t);
                elapsed += t;
            }
            elapsed
        });
    });
    group.finish();
    let total = runtime
        .block_on(store.read_view(|conn| {
            conn.query_row("SELECT sum(total) FROM balances", [], |r| {
                r.get::<_, i64>(0)
            })
        }))
        .unwrap();
    assert_eq!(total, expected_total(n), "the view holds every event once");
}

fn report(n: u64) {
    let totals = TOTALS.lock().unwrap();
    let rate = |name: &str| {
        totals
            .get(name)
            .map(|(events, t)| *events as f64 / t.as_secs_f64().max(1e-9))
    };
    let (Some(ours), Some(upserts), Some(by_hand)) = (
        rate("interlock: rebuild"),
        rate("floor: upserts"),
        rate("floor: catch-up by hand"),
    ) else {
        return;
    };
    println!();
    println!("SQL view catch-up, {n} events, batches of {BATCH}, synchronous=FULL");
    println!("{:>26} | {:>12} | {:>10}", "", "events/s", "ours vs");
    for (name, r) in [
        ("interlock: rebuild", ours),
        ("floor: upserts", upserts),
        ("floor: catch-up by hand", by_hand),
    ] {
        println!("{name:>26} | {r:>12.0} | {:>9.0}%", 100.0 * ours / r);
    }
}

fn main() {
    let n = bench_size();
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion, n);
    criterion.final_summary();
    report(n);
}
