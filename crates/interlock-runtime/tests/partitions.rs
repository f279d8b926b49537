//! Processors split into partitions across application instances sharing one store: fair
//! shares, per-stream order, take-over when an instance goes away.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interlock_runtime::core::{EventStore, ExpectedVersion, LeaseStore, NewEvent, StreamId};
use interlock_runtime::prelude::*;
use interlock_runtime::processor::partition_of;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Ticked {
    n: u64,
}
impl Event for Ticked {
    const TYPE_NAME: &'static str = "Ticked";
}

/// Every delivery: (stream id, n, node that handled it).
type Log = Arc<Mutex<Vec<(String, u64, &'static str)>>>;

struct Effects {
    node: &'static str,
    log: Log,
}

impl EventProcessor for Effects {
    const NAME: &'static str = "effects";
    fn configure(routes: &mut ProcessorRoutes<Self>) {
        routes.event::<Ticked>();
    }
    async fn reset(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }
}
impl HandlesEvent<Ticked> for Effects {
    async fn handle(&mut self, e: Ticked, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        self.log
            .lock()
            .unwrap()
            .push((ctx.stream_id().id().to_owned(), e.n, self.node));
        Ok(())
    }
}

fn instance(store: &InMemoryEventStore, node: &'static str, log: &Log) -> Application {
    Application::builder()
        .with_event_store(store.clone())
        .with_node_id(node)
        .register_event_processor_with(
            Effects {
                node,
                log: log.clone(),
            },
            ProcessorSettings::new()
                .partitions(4)
                .batch_size(16)
                .lease_ttl(Duration::from_millis(200)),
        )
        .build()
        .unwrap()
}

async fn append(store: &InMemoryEventStore, streams: u64, per_stream: u64, first: u64) {
    for n in first..first + per_stream {
        for s in 0..streams {
            store
                .append(
                    &StreamId::new("Clock", format!("c{s}")).unwrap(),
                    ExpectedVersion::Any,
                    vec![NewEvent::from_event(&Ticked { n }).unwrap()],
                )
                .await
                .unwrap();
        }
    }
}

/// Waits until every (stream, n) below the bounds was delivered at least once.
async fn wait_all(log: &Log, streams: u64, per_stream: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen: HashSet<(String, u64)> = log
            .lock()
            .unwrap()
            .iter()
            .map(|(s, n, _)| (s.clone(), *n))
            .collect();
        if seen.len() as u64 == streams * per_stream {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {} events delivered",
            seen.len(),
            streams * per_stream
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn partition_of_is_stable_and_spreads_streams() {
    let stream = StreamId::new("Order", "42").unwrap();
    // Pinned (FNV-1a of "Order\0" + "42"): changing the hash would move streams between
    // partitions under their checkpoints.
    assert_eq!(partition_of(&stream, 8), 3);
    assert_eq!(partition_of(&stream, 1_000_003), 779_097);
    assert_eq!(partition_of(&stream, 1), 0);
    assert_eq!(partition_of(&stream, 0), 0);
    let mut counts = [0u32; 4];
    for i in 0..4000 {
        let s = StreamId::new("Order", i.to_string()).unwrap();
        counts[partition_of(&s, 4) as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    assert_ne!(
        partition_of(&StreamId::new("ab", "c").unwrap(), 1 << 31),
        partition_of(&StreamId::new("a", "bc").unwrap(), 1 << 31)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_partitions_and_take_over_when_one_leaves() {
    let store = InMemoryEventStore::new();
    let log: Log = Arc::default();
    let a = instance(&store, "node-a", &log);
    let b = instance(&store, "node-b", &log);
    a.start().await.unwrap();
    b.start().await.unwrap();
    // The first to start takes everything, then hands half over once it sees the second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let leases = store.live_leases("effects#").await.unwrap();
        let a_share = leases.iter().filter(|l| l.owner == "node-a").count();
        if leases.len() == 4 && a_share == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no fair share: {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    append(&store, 40, 10, 0).await;
    wait_all(&log, 40, 10).await;

    // Both worked, each stream was handled by one node, in order, exactly once.
    let entries = log.lock().unwrap().clone();
    let nodes: HashSet<&str> = entries.iter().map(|(_, _, node)| *node).collect();
    assert_eq!(nodes.len(), 2, "both instances took partitions");
    let mut by_stream: HashMap<String, Vec<u64>> = HashMap::new();
    for (stream, n, _) in &entries {
        by_stream.entry(stream.clone()).or_default().push(*n);
    }
    for (stream, ns) in &by_stream {
        assert_eq!(ns, &(0..10).collect::<Vec<_>>(), "stream {stream}");
    }
    let head = store.head_position().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), a.wait_for(head))
        .await
        .expect("progress over every partition")
        .unwrap();

    // b leaves: a takes its partitions over from their checkpoints.
    b.shutdown().await.unwrap();
    log.lock().unwrap().clear();
    append(&store, 40, 10, 10).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen: HashSet<(String, u64)> = log
            .lock()
            .unwrap()
            .iter()
            .map(|(s, n, _)| (s.clone(), *n))
            .collect();
        if seen.len() == 400 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 400",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entries = log.lock().unwrap().clone();
    assert!(
        entries
            .iter()
            .all(|(_, n, node)| *node == "node-a" && *n >= 10)
    );
    assert_eq!(entries.len(), 400, "a clean hand-over repeats nothing");
    a.shutdown().await.unwrap();
}

#[test]
fn partitions_need_background_delivery_and_durable_checkpoints() {
    let err = Application::builder()
        .register_event_processor_with(
            Effects {
                node: "x",
                log: Log::default(),
            },
            ProcessorSettings::inline().partitions(2).replay_on_start(),
        )
        .build()
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("partitioned and inline"), "{text}");
    assert!(text.contains("partitioned and replays on start"), "{text}");
}
