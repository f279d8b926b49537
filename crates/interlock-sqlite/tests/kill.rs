//! THE KILL TEST (RELIABILITY #5): a child process appends 100-event batches and reports each
//! acknowledged batch; the parent SIGKILLs it at a random moment, reopens the file and checks
//! that every acknowledged batch is complete, no batch is partial, stream heads match and
//! SQLite's integrity check passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use interlock_core::{
    EventId, EventStore, ExpectedVersion, NewEvent, Position, SerializedEvent, StreamId,
};
use interlock_sqlite::SqliteEventStore;
use uuid::Uuid;

const CHILD_ENV: &str = "INTERLOCK_SQLITE_KILL_CHILD";
const PRODUCERS: u64 = 4;
const BATCH: u64 = 100;
const REPETITIONS: usize = 20;

fn producer_stream(producer: u64) -> StreamId {
    StreamId::new("Killed", producer.to_string()).unwrap()
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

/// Not a real test: the body of the child process, run when the parent re-executes this test
/// binary with `CHILD_ENV` set. Without it, it does nothing.
#[test]
fn kill_test_child_process() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = SqliteEventStore::open(&path).unwrap();
        let mut tasks = Vec::new();
        for producer in 0..PRODUCERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let stream = producer_stream(producer);
                let mut version = 0;
                // Bounded even if nobody kills us.
                for k in 0..10_000u64 {
                    let b = producer + k * PRODUCERS;
                    let r = store
                        .append(&stream, ExpectedVersion::Exact(version), batch(b))
                        .await
                        .unwrap();
                    version = r.last_version;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {b}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs one child, kills it, returns the acknowledged batches.
fn run_and_kill(path: &Path, rng: &mut Rng) -> BTreeSet<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_test_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = BTreeSet::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(b) = line.strip_prefix("ACK ") {
                acked.insert(b.trim().parse::<u64>().unwrap());
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
    // Wait for the first acknowledgement (the child is then mid-stream), then a random while.
    let started = rx.recv_timeout(Duration::from_secs(20)).is_ok();
    std::thread::sleep(Duration::from_millis(rng.next() % 250));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    let acked = reader.join().unwrap();
    let stderr = errors.join().unwrap();
    assert!(started, "the child never acknowledged a batch: {stderr}");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child ended before the kill: {stderr}"
    );
    acked
}

async fn verify(path: &Path, acked: &BTreeSet<u64>) -> usize {
    {
        let conn = rusqlite::Connection::open(path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
    let store = SqliteEventStore::open(path).unwrap();
    let all = store.read_all(Position::START, usize::MAX).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let mut batches: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for e in &all {
        let v: serde_json::Value = e.decode_payload().unwrap();
        let (b, i) = (v["b"].as_u64().unwrap(), v["i"].as_u64().unwrap());
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
        // Each producer appends in sequence: what is present is a prefix of its batches.
        let expected: Vec<u64> = (0..present.len() as u64)
            .map(|k| producer + k * PRODUCERS)
            .collect();
        assert_eq!(present, expected);
        let events = store.read_stream(&stream, 1, None).await.unwrap();
        assert!(
            events
                .iter()
                .enumerate()
                .all(|(i, e)| e.stream_version == i as u64 + 1)
        );
        let head = present.len() as u64 * BATCH;
        assert_eq!(events.len() as u64, head);
        assert_eq!(store.stream_version(&stream).await.unwrap(), head);
        let info = store.stream_info(&stream).await.unwrap();
        assert_eq!(info.map_or(0, |i| i.version), head);
        // The file is writable again, at the head.
        store
            .append(
                &stream,
                ExpectedVersion::Exact(head),
                batch(1_000_000 + producer),
            )
            .await
            .unwrap();
    }
    batches.len()
}

#[tokio::test]
async fn acknowledged_appends_survive_sigkill_and_no_batch_is_partial() {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill test seed {seed}");
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut runs = 0;
    for rep in 0..REPETITIONS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("killed.db");
        let acked = run_and_kill(&path, &mut rng);
        let present = verify(&path, &acked).await;
        eprintln!("run {rep}: {} acknowledged, {present} present", acked.len());
        runs += 1;
        if Instant::now() > deadline {
            break;
        }
    }
    assert!(runs >= 3);
}
