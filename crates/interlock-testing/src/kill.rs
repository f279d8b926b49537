//! RELIABILITY.md #5 for any backend: a writer process killed mid-append.
//!
//! A child process (the test binary itself, run again) appends 100-event batches from four
//! tasks, one stream each, and prints `ACK <batch>` after each acknowledged append (stdout is
//! flushed per line, and the parent reads it through a pipe, so an acknowledgement the parent
//! saw was really given). The parent SIGKILLs the child at a random moment after the first
//! acknowledgement, reopens the store and checks that every acknowledged batch is fully present,
//! any other batch is fully present or fully absent, each stream holds a prefix of its batches
//! with versions 1..n, the heads agree, and the stream accepts the next append at its head.
//!
//! Instantiate with [`writer_kill_test!`](crate::writer_kill_test) at the root of an
//! integration-test file (the child is found by its test name).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use interlock_core::{EventId, EventStore, ExpectedVersion, NewEvent, SerializedEvent, StreamId};
use uuid::Uuid;

/// The variable that makes the test binary run as the child, holding the store's locator.
pub const CHILD_ENV: &str = "INTERLOCK_KILL_CHILD";
/// The child's test name.
pub const CHILD_TEST: &str = "writer_kill_child_process";
const PRODUCERS: u64 = 4;
const BATCH: u64 = 100;

fn producer_stream(producer: u64) -> StreamId {
    StreamId::new("Killed", producer.to_string()).expect("valid stream")
}

/// Batch `b` goes to producer `b % PRODUCERS`'s stream; its event ids encode (b, i).
fn batch(b: u64) -> Vec<NewEvent> {
    (0..BATCH)
        .map(|i| {
            NewEvent::from_serialized(SerializedEvent {
                event_type: "Appended".to_owned(),
                schema_version: 1,
                payload: Bytes::from(format!(r#"{{"b":{b},"i":{i}}}"#)),
            })
            .with_event_id(EventId::from_uuid(Uuid::from_u128(
                (u128::from(b) << 32) | u128::from(i) | (1 << 127),
            )))
        })
        .collect()
}

/// The child's body: opens the store at `locator` and appends until killed (bounded).
pub fn child<S, F, Fut>(locator: String, open: F)
where
    S: EventStore + Clone,
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = S>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = open(locator).await;
        let mut tasks = Vec::new();
        for producer in 0..PRODUCERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let stream = producer_stream(producer);
                let mut version = 0;
                for k in 0..10_000u64 {
                    let b = producer + k * PRODUCERS;
                    let appended = store
                        .append(&stream, ExpectedVersion::Exact(version), batch(b))
                        .await
                        .expect("append");
                    version = appended.last_version;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {b}").expect("stdout");
                    out.flush().expect("stdout");
                }
            }));
        }
        for task in tasks {
            task.await.expect("producer");
        }
    });
}

/// Runs one child on `locator`, kills it after a random wait, returns the acknowledged batches.
fn run_and_kill(locator: &str, wait_ms: u64) -> BTreeSet<u64> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, locator)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = BTreeSet::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(b) = line.strip_prefix("ACK ") {
                acked.insert(b.trim().parse::<u64>().expect("batch number"));
                let _ = tx.send(());
            }
        }
        acked
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = rx.recv_timeout(Duration::from_secs(30)).is_ok();
    std::thread::sleep(Duration::from_millis(wait_ms));
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    let acked = reader.join().expect("reader");
    let stderr = errors.join().expect("stderr reader");
    assert!(started, "the child never acknowledged a batch: {stderr}");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child ended before the kill: {stderr}"
    );
    acked
}

/// When the store must take the next append at each stream's head after a kill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextAppend {
    /// At once: the killed writer left nothing behind on the server (SQLite, PostgreSQL: the
    /// server rolls back a dead connection's transaction).
    AtOnce,
    /// After the server reaps the killed writer's open transaction (MongoDB keeps it until
    /// `transactionLifetimeLimitSeconds`, 60 s by default, and meanwhile appends to the same
    /// stream meet write conflicts, which the store retries and then reports as
    /// `StoreError::Unavailable`). Checked on the last repetition only, waiting up to 100 s.
    AfterOrphansExpire,
}

/// Checks the store after a kill; returns how many batches are present.
pub async fn verify<S: EventStore>(
    store: &S,
    acked: &BTreeSet<u64>,
    next_append: Option<NextAppend>,
) -> usize {
    let all = crate::reliability::read_everything(store).await;
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let mut batches: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for e in &all {
        let v: serde_json::Value = e.decode_payload().expect("payload");
        let (b, i) = (v["b"].as_u64().expect("b"), v["i"].as_u64().expect("i"));
        assert_eq!(e.stream_id, producer_stream(b % PRODUCERS));
        batches.entry(b).or_default().push(i);
    }
    for (b, items) in &batches {
        assert_eq!(
            items,
            &(0..BATCH).collect::<Vec<_>>(),
            "batch {b} is partial"
        );
    }
    for b in acked {
        assert!(batches.contains_key(b), "acknowledged batch {b} is missing");
    }
    for producer in 0..PRODUCERS {
        let stream = producer_stream(producer);
        let present: Vec<u64> = batches
            .keys()
            .copied()
            .filter(|b| b % PRODUCERS == producer)
            .collect();
        let expected: Vec<u64> = (0..present.len() as u64)
            .map(|k| producer + k * PRODUCERS)
            .collect();
        assert_eq!(
            present, expected,
            "stream {stream} holds a prefix of its batches"
        );
        let events = store
            .read_stream(&stream, 1, None)
            .await
            .expect("read_stream");
        assert!(
            events
                .iter()
                .enumerate()
                .all(|(i, e)| e.stream_version == i as u64 + 1),
            "versions 1..n in {stream}"
        );
        let head = present.len() as u64 * BATCH;
        assert_eq!(events.len() as u64, head);
        assert_eq!(store.stream_version(&stream).await.expect("version"), head);
        let Some(next_append) = next_append else {
            continue;
        };
        let started = std::time::Instant::now();
        let patience = match next_append {
            NextAppend::AtOnce => Duration::ZERO,
            NextAppend::AfterOrphansExpire => Duration::from_secs(100),
        };
        loop {
            match store
                .append(
                    &stream,
                    ExpectedVersion::Exact(head),
                    batch(1_000_000 + producer),
                )
                .await
            {
                Ok(_) => break,
                Err(e) if e.is_transient() && started.elapsed() < patience => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!(
                    "stream {stream} does not take the next append at its head {head} \
                     (after {:?}): {e}",
                    started.elapsed()
                ),
            }
        }
        if started.elapsed() > Duration::from_secs(1) {
            eprintln!(
                "stream {stream} took the next append after {:?}",
                started.elapsed()
            );
        }
    }
    batches.len()
}

/// The parent: `repetitions` times, a fresh store from `fresh` (its locator), a child killed at
/// a random moment, then [`verify`] on the store reopened with `open`.
pub async fn parent<S, F, Fut, N, NFut>(
    fresh: N,
    open: F,
    repetitions: usize,
    next_append: NextAppend,
) where
    S: EventStore,
    F: Fn(String) -> Fut,
    Fut: Future<Output = S>,
    N: Fn() -> NFut,
    NFut: Future<Output = Option<String>>,
{
    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    eprintln!("kill test seed {seed}");
    for rep in 0..repetitions {
        let Some(locator) = fresh().await else {
            return;
        };
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = seed % 300;
        let acked = tokio::task::spawn_blocking({
            let locator = locator.clone();
            move || run_and_kill(&locator, wait)
        })
        .await
        .expect("kill run");
        let store = open(locator).await;
        let check = match next_append {
            NextAppend::AtOnce => Some(NextAppend::AtOnce),
            NextAppend::AfterOrphansExpire if rep + 1 == repetitions => Some(next_append),
            NextAppend::AfterOrphansExpire => None,
        };
        let present = verify(&store, &acked, check).await;
        eprintln!(
            "kill run {rep}: killed after {wait} ms, {} acknowledged, {present} present",
            acked.len()
        );
    }
}

/// Generates the two tests of [the kill test](crate::kill): the child body and the parent.
/// `open` is a closure `|locator: String| async { store }`; `fresh` yields a new locator (a file
/// path, a schema name) or `None` to skip; `repetitions` is how many kills; `next_append` a
/// [`NextAppend`](crate::kill::NextAppend) variant name.
#[macro_export]
macro_rules! writer_kill_test {
    (open: $open:expr, fresh: $fresh:expr, repetitions: $reps:expr, next_append: $next:ident $(,)?) => {
        /// Not a test by itself: the child process of the kill test.
        #[test]
        fn writer_kill_child_process() {
            if let Ok(locator) = std::env::var($crate::kill::CHILD_ENV) {
                $crate::kill::child(locator, $open);
            }
        }

        /// RELIABILITY.md #5: a writer killed mid-append leaves only whole batches, and every
        /// acknowledged one.
        #[test]
        #[ignore = "slow: CI runs it with --ignored"]
        fn a_writer_killed_mid_append_leaves_whole_batches() {
            $crate::conformance::run($crate::kill::parent(
                $fresh,
                $open,
                $reps,
                $crate::kill::NextAppend::$next,
            ));
        }
    };
}
