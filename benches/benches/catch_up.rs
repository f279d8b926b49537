//! W3: projection catch-up throughput (events/s) into an in-memory view, next to the floor of
//! the same work done by hand (read the log, decode, update the map) on the same store.
//!
//! `cargo bench -p interlock-benches --bench catch_up` (INTERLOCK_BENCH_N sets the event count,
//! default 1 000 000).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use interlock::prelude::*;
use interlock_benches::{Balances, Deposited, bench_size, fill};

fn catch_up(c: &mut Criterion) {
    let n = bench_size(1_000_000);
    let accounts = 1000;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = InMemoryEventStore::new();
    runtime.block_on(fill(&store, n, accounts)).unwrap();
    let app = Application::builder()
        .with_event_store(store.clone())
        .register_projection(Balances::default())
        .build()
        .unwrap();

    let mut group = c.benchmark_group("W3 catch-up, in-memory store");
    group.throughput(Throughput::Elements(n));
    group.sample_size(10);
    group.bench_function("interlock projection (rebuild)", |b| {
        b.iter(|| {
            let done = runtime.block_on(app.rebuild("balances", |_| {})).unwrap();
            assert_eq!(done.processed, n);
        });
    });
    group.bench_function("floor: read_all + decode + map by hand", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut view: HashMap<String, u64> = HashMap::new();
                let mut after = Position::START;
                loop {
                    let batch = store.read_all(after, 500).await.unwrap();
                    let Some(last) = batch.last() else { break };
                    after = last.position;
                    for event in &batch {
                        let e: Deposited = event.decode().unwrap();
                        *view.entry(event.stream_id.id().to_owned()).or_default() += e.amount;
                    }
                }
                assert_eq!(view.values().sum::<u64>(), n);
            });
        });
    });
    group.finish();
    let total: u64 = runtime
        .block_on(app.inspect_processor::<Balances, _>(|b| b.by_account.values().sum()))
        .unwrap();
    assert_eq!(total, n, "the view holds every event once");
}

criterion_group!(benches, catch_up);
criterion_main!(benches);
