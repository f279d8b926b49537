//! Cold reload of one aggregate with a long stream, on the in-memory store: a full replay, a
//! snapshot plus its tail, a full replay where every event goes through one upcaster, and the
//! floor of the same work done by hand (read the stream, decode, fold).
//!
//! `cargo bench -p interlock-benches --bench reload` (INTERLOCK_BENCH_N sets the larger stream,
//! default 100 000; the smaller one is a tenth of it).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use interlock::core::side::SnapshotStore;
use interlock::prelude::*;
use interlock::runtime::SnapshotPolicy;
use interlock::{AggregateSettings, Application};
use interlock_benches::bench_size;
use interlock_benches::reload_model::{
    Credit, Credited, Ledger, Shape, amount_at, append_credits, credited_v1_to_v2, ledger_at,
};

/// Every load of these apps is cold: no cache, so each one reads the store.
fn cold() -> AggregateSettings {
    AggregateSettings::new().cache_capacity(0)
}

/// One store holding the workloads for `n` events: `current` (events at the current version,
/// with a snapshot at the last policy boundary before the end) and `legacy` (every event stored
/// at version 1).
struct Workload {
    n: u64,
    store: InMemoryEventStore,
    replay: Application,
    snapshots: Application,
    snapshot_at: u64,
    upcasting: Application,
}

fn workload(runtime: &tokio::runtime::Runtime, n: u64) -> Workload {
    let n = n.max(10);
    // 1000 as asked; smaller streams (CI smoke runs) still get a snapshot and a tail.
    let every = 1000.min(n / 10);
    let snapshot_at = (n - 1) / every * every;
    let store = InMemoryEventStore::new();
    let replay = Application::builder()
        .with_event_store(store.clone())
        .register_aggregate_with::<Ledger>(cold())
        .build()
        .unwrap();
    let snapshots = Application::builder()
        .with_event_store(store.clone())
        .register_aggregate_with::<Ledger>(cold())
        .with_snapshots::<Ledger>(SnapshotPolicy::every(every))
        .build()
        .unwrap();
    let upcasting = Application::builder()
        .with_event_store(store.clone())
        .register_aggregate_with::<Ledger>(cold())
        .register_upcaster(credited_v1_to_v2())
        .build()
        .unwrap();
    runtime.block_on(async {
        append_credits(&store, "current", 1, snapshot_at - 1, Shape::Current)
            .await
            .unwrap();
        // The command that crosses the boundary takes the snapshot, as in production.
        snapshots
            .dispatch(Credit {
                ledger: "current".into(),
                amounts: vec![amount_at(snapshot_at)],
            })
            .await
            .unwrap();
        append_credits(&store, "current", snapshot_at + 1, n, Shape::Current)
            .await
            .unwrap();
        append_credits(&store, "legacy", 1, n, Shape::V1)
            .await
            .unwrap();
        let snapshot = store
            .load_snapshot(&StreamId::new("Ledger", "current").unwrap())
            .await
            .unwrap()
            .expect("a snapshot");
        assert_eq!(snapshot.version, snapshot_at);
    });
    Workload {
        n,
        store,
        replay,
        snapshots,
        snapshot_at,
        upcasting,
    }
}

fn reload(c: &mut Criterion) {
    let large = bench_size(100_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("cold reload of one aggregate, in-memory store");
    group.sample_size(10);
    for n in [large / 10, large] {
        let w = workload(&runtime, n);
        let n = w.n;
        let expected = ledger_at(n);
        group.throughput(Throughput::Elements(n));
        group.bench_function(BenchmarkId::new("full replay", n), |b| {
            b.iter(|| {
                let ledger = runtime
                    .block_on(w.replay.load::<Ledger>("current"))
                    .unwrap();
                assert_eq!(ledger, expected);
            });
        });
        group.bench_function(
            BenchmarkId::new(
                format!(
                    "snapshot at {} + {} events",
                    w.snapshot_at,
                    n - w.snapshot_at
                ),
                n,
            ),
            |b| {
                b.iter(|| {
                    let ledger = runtime
                        .block_on(w.snapshots.load::<Ledger>("current"))
                        .unwrap();
                    assert_eq!(ledger, expected);
                });
            },
        );
        group.bench_function(
            BenchmarkId::new("full replay, one upcaster per event", n),
            |b| {
                b.iter(|| {
                    let ledger = runtime
                        .block_on(w.upcasting.load::<Ledger>("legacy"))
                        .unwrap();
                    assert_eq!(ledger, expected);
                });
            },
        );
        group.bench_function(
            BenchmarkId::new("full replay, upcaster registered, none needed", n),
            |b| {
                b.iter(|| {
                    let ledger = runtime
                        .block_on(w.upcasting.load::<Ledger>("current"))
                        .unwrap();
                    assert_eq!(ledger, expected);
                });
            },
        );
        let stream = StreamId::new("Ledger", "current").unwrap();
        group.bench_function(
            BenchmarkId::new("floor: read_stream + decode + fold by hand", n),
            |b| {
                b.iter(|| {
                    let events = runtime
                        .block_on(w.store.read_stream(&stream, 1, None))
                        .unwrap();
                    let mut ledger = Ledger::default();
                    for event in &events {
                        let e: Credited = event.decode().unwrap();
                        ledger.total += e.amount;
                        ledger.credits += 1;
                    }
                    assert_eq!(ledger, expected);
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
