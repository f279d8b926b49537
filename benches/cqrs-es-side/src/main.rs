//! The cqrs-es 0.5 side of Interlock's side-by-side benchmarks: the same account model and
//! workloads as `interlock-side`, written against cqrs-es's public API, with `MemStore` and
//! postgres-es. One workload per run, results as JSON lines on stdout.
//!
//! `cqrs-es-side <w1|w2|w3|w4|w5> <memory|postgres> <n>`; the server is `INTERLOCK_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`). Normally run by `benches/compare.sh`.

mod catch_up;
mod commands;
mod model;
mod out;
mod pg;
mod reload;

use pg::BoxError;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [workload, store, n] = args.as_slice() else {
        return Err("usage: cqrs-es-side <w1|w2|w3|w4|w5> <memory|postgres> <n>".into());
    };
    let store: &'static str = match store.as_str() {
        "memory" => "memory",
        "postgres" => "postgres",
        other => return Err(format!("unknown store {other}").into()),
    };
    let n: u64 = n.parse()?;
    let url = std::env::var("INTERLOCK_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    // Two workers, as on Interlock's side.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match (workload.as_str(), store) {
            ("w1", _) => commands::w1(store, n, &url).await,
            ("w2", _) => reload::w2(store, n, &url).await,
            ("w3", _) => catch_up::w3(store, n, &url).await,
            ("w4", _) => commands::w4(store, n, &url).await,
            ("w5", "postgres") => reload::w5(n, &url).await,
            ("w5", _) => Ok(()), // MemStore keeps typed events: nothing to upcast.
            (other, _) => Err(format!("unknown workload {other}").into()),
        }
    })
}
