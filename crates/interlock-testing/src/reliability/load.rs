//! Row 20: load, with every command accounted for and every view checked.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use interlock_core::{EventStore, Position};
use interlock_runtime::{Application, DispatchOptions, Error, EventProcessor};
use tokio::sync::mpsc::error::TryRecvError;

use super::domain::{Counts, Deposit, Deposited, Totals, Versions};
use super::{ledger_app, read_everything, shared};

/// Writer tasks.
pub const LOAD_WRITERS: usize = 8;
/// Aggregates the writers spread their commands over.
pub const LOAD_AGGREGATES: u64 = 1000;
/// Every how many commands a writer samples the processors' lag.
const LAG_SAMPLE_EVERY: usize = 16;

/// Commands per writer: `INTERLOCK_LOAD_COMMANDS`, 10 000 by default.
pub fn load_commands_per_writer() -> usize {
    load_commands_or(10_000)
}

/// Commands per writer: `INTERLOCK_LOAD_COMMANDS`, or `default`.
pub fn load_commands_or(default: usize) -> usize {
    std::env::var("INTERLOCK_LOAD_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one writer did.
#[derive(Debug, Default)]
struct WriterTally {
    ok: u64,
    conflicts: u64,
    /// Sum of the successful deposits per stream.
    deposited: BTreeMap<String, u64>,
    successes: BTreeMap<String, u64>,
}

/// A small deterministic generator (xorshift), so runs are reproducible per writer.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A processor's view, for comparisons.
async fn view<P: EventProcessor + Clone>(app: &Application) -> P {
    app.inspect_processor::<P, _>(Clone::clone)
        .await
        .expect("inspect")
}

/// RELIABILITY.md #20: 8 writer tasks each dispatch `INTERLOCK_LOAD_COMMANDS` (10 000 by
/// default) deposits on 1 000 accounts picked at random, while 3 background processors follow
/// the store. Every command is accounted for: it succeeded, or failed with a typed
/// `Error::Concurrency` (two writers on one account); any other error fails the test. The
/// store holds exactly the successful deposits; each processor's view equals an independent
/// fold over `read_all` and its own rebuild, and saw every stream in order. Prints
/// `LOAD backend=… writers=… commands=… ok=… conflicts=… seconds=… cmds_per_s=… lag_p50_ms=…
/// lag_p99_ms=… lag_max_ms=… lag_samples=…`, where the lag is the time from a dispatch
/// returning to every processor having handled its position (polled each millisecond),
/// sampled every 16th command.
#[allow(clippy::print_stdout)] // the figures are the point
pub async fn row20_load<S: EventStore>(store: S) {
    row20_load_with(store, 10_000).await;
}

/// [`row20_load`] with another default number of commands per writer (a backend whose test
/// server is slow); `INTERLOCK_LOAD_COMMANDS` still wins.
#[allow(clippy::print_stdout)] // the LOAD line is the test's report
pub async fn row20_load_with<S: EventStore>(store: S, default_per_writer: usize) {
    let backend = std::any::type_name::<S>()
        .rsplit("::")
        .next()
        .unwrap_or("unknown")
        .to_owned();
    let per_writer = load_commands_or(default_per_writer);
    let store = shared(store);
    let app = ledger_app(&store)
        .register_event_processor(Totals::default())
        .register_event_processor(Counts::default())
        .register_event_processor(Versions::default())
        .build()
        .expect("app");
    app.start().await.expect("start");

    // One monitor follows every processor's progress (polled each millisecond) and records,
    // for each sampled command, the time from its dispatch returning to the slowest processor
    // having handled its position.
    let (sample_tx, mut sample_rx) = tokio::sync::mpsc::unbounded_channel::<(Position, Instant)>();
    let monitor_app = app.clone();
    let monitor = tokio::spawn(async move {
        let mut pending = BinaryHeap::new();
        let mut lags = Vec::new();
        let mut open = true;
        while open || !pending.is_empty() {
            loop {
                match sample_rx.try_recv() {
                    Ok((position, returned)) => pending.push(Reverse((position, returned))),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let reached = monitor_app
                .processor_positions()
                .into_iter()
                .map(|(_, p)| p)
                .min()
                .unwrap_or(Position::START);
            let now = Instant::now();
            while pending
                .peek()
                .is_some_and(|Reverse((position, _))| *position <= reached)
            {
                if let Some(Reverse((_, returned))) = pending.pop() {
                    lags.push(now.duration_since(returned));
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lags
    });

    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..LOAD_WRITERS {
        let app = app.clone();
        let samples = sample_tx.clone();
        writers.push(tokio::spawn(async move {
            let mut tally = WriterTally::default();
            let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ ((w as u64 + 1) * 0x1000_0001);
            for i in 0..per_writer {
                let account = format!("a{}", next(&mut rng) % LOAD_AGGREGATES);
                let amount = next(&mut rng) % 100 + 1;
                let result = app
                    .dispatch_with(
                        Deposit {
                            account: account.clone(),
                            amount,
                        },
                        DispatchOptions::default(),
                    )
                    .await;
                match result {
                    Ok(done) => {
                        tally.ok += 1;
                        let stream = format!("Ledger/{account}");
                        *tally.deposited.entry(stream.clone()).or_default() += amount;
                        *tally.successes.entry(stream).or_default() += 1;
                        if i % LAG_SAMPLE_EVERY == 0 {
                            let position = done.position.expect("a stored deposit has a position");
                            let _ = samples.send((position, Instant::now()));
                        }
                    }
                    Err(Error::Concurrency(e)) => {
                        assert_eq!(e.stream.id(), account, "the conflict names the stream");
                        tally.conflicts += 1;
                    }
                    Err(other) => panic!("writer {w}, command {i}: an untyped outcome: {other:?}"),
                }
            }
            tally
        }));
    }
    drop(sample_tx);
    let mut total = WriterTally::default();
    for writer in writers {
        let tally = writer.await.expect("a writer panicked");
        total.ok += tally.ok;
        total.conflicts += tally.conflicts;
        for (stream, amount) in tally.deposited {
            *total.deposited.entry(stream).or_default() += amount;
        }
        for (stream, n) in tally.successes {
            *total.successes.entry(stream).or_default() += n;
        }
    }
    let writing = started.elapsed();
    let commands = (LOAD_WRITERS * per_writer) as u64;
    assert_eq!(
        total.ok + total.conflicts,
        commands,
        "every command is accounted for"
    );
    let head = store.head_position().await.expect("head");
    tokio::time::timeout(Duration::from_secs(600), app.wait_for(head))
        .await
        .expect("the processors catch up within 10 minutes")
        .expect("the processors did not stop");
    let mut lags = tokio::time::timeout(Duration::from_secs(60), monitor)
        .await
        .expect("the lag monitor finishes")
        .expect("the lag monitor");

    // The store holds exactly the successful commands.
    let all = read_everything(&store).await;
    assert_eq!(
        all.len() as u64,
        total.ok,
        "one event per successful command"
    );
    let mut folded_totals = BTreeMap::new();
    let mut folded_counts = BTreeMap::new();
    let mut last_versions = BTreeMap::new();
    for e in &all {
        let deposit = e.decode::<Deposited>().expect("a deposit");
        let stream = e.stream_id.to_string();
        *folded_totals.entry(stream.clone()).or_insert(0) += deposit.amount;
        *folded_counts.entry(stream.clone()).or_insert(0) += 1;
        let last = last_versions.entry(stream).or_insert(0);
        assert_eq!(
            e.stream_version,
            *last + 1,
            "global order keeps stream order"
        );
        *last = e.stream_version;
    }
    assert_eq!(
        folded_totals, total.deposited,
        "the store holds what succeeded"
    );
    assert_eq!(folded_counts, total.successes);

    let totals = view::<Totals>(&app).await;
    let counts = view::<Counts>(&app).await;
    let versions = view::<Versions>(&app).await;
    assert_eq!(
        totals.by_stream, folded_totals,
        "totals == fold over read_all"
    );
    assert_eq!(
        counts.by_stream, folded_counts,
        "counts == fold over read_all"
    );
    assert_eq!(
        versions.last, last_versions,
        "versions == fold over read_all"
    );
    assert_eq!(versions.out_of_order, 0, "every stream seen in order");
    for name in ["rel-totals", "rel-counts", "rel-versions"] {
        let progress = app.rebuild(name, |_| {}).await.expect("rebuild");
        assert_eq!(progress.processed, all.len() as u64, "{name} rebuilt");
    }
    assert_eq!(view::<Totals>(&app).await, totals, "totals == rebuild");
    assert_eq!(view::<Counts>(&app).await, counts, "counts == rebuild");
    assert_eq!(
        view::<Versions>(&app).await,
        versions,
        "versions == rebuild"
    );
    app.shutdown().await.expect("shutdown");

    lags.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "LOAD backend={backend} writers={LOAD_WRITERS} commands={commands} ok={} conflicts={} \
         seconds={:.2} cmds_per_s={:.0} lag_p50_ms={:.2} lag_p99_ms={:.2} lag_max_ms={:.2} \
         lag_samples={}",
        total.ok,
        total.conflicts,
        writing.as_secs_f64(),
        commands as f64 / writing.as_secs_f64(),
        ms(percentile(&lags, 0.50)),
        ms(percentile(&lags, 0.99)),
        ms(lags.last().copied().unwrap_or_default()),
        lags.len(),
    );
}
