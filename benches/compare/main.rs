//! Interlock's side of the side-by-side comparison with cqrs-es 0.5, the raw floors, and the
//! table. Normally run by `benches/compare.sh`, which alternates this binary with the cqrs-es
//! side (`benches/cqrs-es-side`, its own crate) and hands both outputs to `report`.
//!
//! * `interlock-side <w1|w2|w3|w4|w5|floor-w1> <memory|sqlite|postgres> <n>`: one workload,
//!   results as JSON lines on stdout.
//! * `interlock-side report <results.jsonl>`: the markdown table; exits non-zero when an
//!   Interlock or floor result was wrong (cqrs-es's wrong results are reported, not fatal).
//!
//! The PostgreSQL server is `INTERLOCK_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).

mod backend;
mod catch_up;
mod commands;
mod floors;
mod model;
mod out;
mod reload;
mod report;

use out::BoxError;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [command, path] = args.as_slice()
        && command == "report"
    {
        let text = std::fs::read_to_string(path)?;
        return if report::print(&text) {
            Ok(())
        } else {
            Err("a workload gave a wrong result (see FAILED above)".into())
        };
    }
    let [workload, store, n] = args.as_slice() else {
        return Err(
            "usage: interlock-side <w1|w2|w3|w4|w5|floor-w1> <memory|sqlite|postgres> <n> \
                    | interlock-side report <results.jsonl>"
                .into(),
        );
    };
    let n: u64 = n.parse()?;
    // Two workers, as on the cqrs-es side.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match workload.as_str() {
            "w1" => commands::w1(store, n).await,
            "floor-w1" => floors::w1(store, n).await,
            "w2" => reload::w2(store, n).await,
            "w3" => catch_up::w3(store, n).await,
            "w4" => commands::w4(store, n).await,
            "w5" => reload::w5(store, n).await,
            other => Err(format!("unknown workload {other}").into()),
        }
    })
}
