//! Property tests: snapshots and temporal loads are only shortcuts to the fold of the log, and
//! an upcaster chain is the hand-written migration it replaces.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::BTreeSet;

use bytes::Bytes;
use interlock_runtime::core::side::{Snapshot, SnapshotStore};
use interlock_runtime::core::upcast::{JsonUpcaster, TypedUpcaster, Upcasters};
use interlock_runtime::core::{EventStore, NewEvent, StreamId};
use interlock_runtime::prelude::*;
use interlock_runtime::{HistoryEntry, SnapshotPolicy};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::{Deserialize, Serialize};

/// Each property builds a small store per case; 64 cases keep the file at a few seconds in debug.
const CASES: u32 = 64;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

// ---------------------------------------------------------------------------------------------
// Snapshots and temporal loads
// ---------------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct Add {
    id: String,
    deltas: Vec<i64>,
}
impl Command for Add {
    type Output = u64;
    const TYPE_NAME: &'static str = "Add";
    fn aggregate_id(&self) -> AggregateId {
        self.id.as_str().into()
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Added {
    delta: i64,
}
impl Event for Added {
    const TYPE_NAME: &'static str = "Added";
}

/// A fold that depends on the order of events, not only on their sum, so a tail applied twice,
/// skipped or out of order shows.
#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    total: i64,
    applied: u64,
    digest: u64,
    last: Option<i64>,
}
impl Aggregate for Counter {
    const TYPE_NAME: &'static str = "Counter";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes.creating_command::<Add>().event::<Added>();
    }
}
impl HandlesCommand<Add> for Counter {
    async fn handle(&mut self, cmd: Add, _: &CommandContext) -> Result<u64, DomainError> {
        let before = self.applied;
        for delta in cmd.deltas {
            self.emit(Added { delta });
        }
        Ok(before)
    }
}
impl AppliesEvent<Added> for Counter {
    fn apply(&mut self, e: &Added) {
        self.total = self.total.wrapping_add(e.delta);
        self.applied += 1;
        self.digest = self
            .digest
            .wrapping_mul(1_000_003)
            .wrapping_add(e.delta as u64);
        self.last = Some(e.delta);
    }
}

/// The reference: the deltas folded by hand, no store involved.
fn fold(deltas: &[i64]) -> Counter {
    let mut state = Counter::default();
    for &delta in deltas {
        state.apply(&Added { delta });
    }
    state
}

/// One command: its events, and whether the snapshotting application runs it (the other one
/// takes no snapshots, so the stream also grows past boundaries nobody snapshotted).
#[derive(Debug, Clone)]
struct Batch {
    deltas: Vec<i64>,
    by_snapshotting_app: bool,
}

/// 0..300 events in commands of 1..8 events, three in four run by the snapshotting app.
fn batches() -> impl Strategy<Value = Vec<Batch>> {
    (
        prop::collection::vec(-1_000i64..1_000, 0..300),
        prop::collection::vec((1usize..8, prop::bool::weighted(0.75)), 300),
    )
        .prop_map(|(deltas, shapes)| {
            let mut rest = &deltas[..];
            let mut out = Vec::new();
            for (size, by_snapshotting_app) in shapes {
                if rest.is_empty() {
                    break;
                }
                let (head, tail) = rest.split_at(size.min(rest.len()));
                out.push(Batch {
                    deltas: head.to_vec(),
                    by_snapshotting_app,
                });
                rest = tail;
            }
            out
        })
}

fn counter_stream() -> StreamId {
    StreamId::new("Counter", "p").unwrap()
}

async fn check_snapshots_and_replays(
    batches: Vec<Batch>,
    every: u64,
    probes: Vec<prop::sample::Index>,
) -> Result<(), TestCaseError> {
    let store = InMemoryEventStore::new();
    // Cache off: every command and every load of this app starts from the snapshot store.
    let snapshotting = Application::builder()
        .with_event_store(store.clone())
        .register_aggregate_with::<Counter>(AggregateSettings::new().cache_capacity(0))
        .with_snapshots::<Counter>(SnapshotPolicy::every(every))
        .build()
        .unwrap();
    // Default cache: its cached copies must catch up with what the other app appended.
    let plain = Application::builder()
        .with_event_store(store.clone())
        .register_aggregate::<Counter>()
        .build()
        .unwrap();

    let mut deltas = Vec::new();
    let mut expected_snapshot = None;
    for batch in batches {
        let before = deltas.len() as u64;
        let app = if batch.by_snapshotting_app {
            &snapshotting
        } else {
            &plain
        };
        let applied_before = app
            .dispatch(Add {
                id: "p".into(),
                deltas: batch.deltas.clone(),
            })
            .await
            .unwrap();
        prop_assert_eq!(applied_before, before, "the command saw the whole stream");
        deltas.extend(batch.deltas);
        let after = deltas.len() as u64;
        if batch.by_snapshotting_app && before / every != after / every {
            expected_snapshot = Some(after);
        }
    }
    let len = deltas.len() as u64;

    let snapshot = store.load_snapshot(&counter_stream()).await.unwrap();
    prop_assert_eq!(snapshot.as_ref().map(|s| s.version), expected_snapshot);
    if let Some(snapshot) = &snapshot {
        let state: Counter = serde_json::from_slice(&snapshot.payload).unwrap();
        prop_assert_eq!(
            state,
            fold(&deltas[..snapshot.version as usize]),
            "the snapshot is the fold of the events it covers"
        );
    }

    if len == 0 {
        for app in [&snapshotting, &plain] {
            let not_found = matches!(
                app.load::<Counter>("p").await,
                Err(Error::AggregateNotFound { .. })
            );
            prop_assert!(not_found, "an empty stream is not found");
        }
        return Ok(());
    }

    let expected = fold(&deltas);
    let from_snapshot = snapshotting.load_versioned::<Counter>("p").await.unwrap();
    let full_replay = plain.load_versioned::<Counter>("p").await.unwrap();
    prop_assert_eq!(&from_snapshot, &(expected.clone(), len));
    prop_assert_eq!(&full_replay, &(expected.clone(), len));

    for probe in probes {
        // 1..=len + 2: a little past the end must read as the current state.
        let version = probe.index(deltas.len() + 2) as u64 + 1;
        let prefix = fold(&deltas[..version.min(len) as usize]);
        let at_snapshot = snapshotting.load_at::<Counter>("p", version).await.unwrap();
        let at_plain = plain.load_at::<Counter>("p", version).await.unwrap();
        prop_assert_eq!(&at_snapshot, &prefix, "load_at({}) with snapshots", version);
        prop_assert_eq!(&at_plain, &prefix, "load_at({}) without snapshots", version);
    }
    if let Some(snapshot) = &snapshot {
        // The boundaries: right at the snapshot, and one event either side of it.
        for version in [snapshot.version - 1, snapshot.version, snapshot.version + 1] {
            if version == 0 {
                continue;
            }
            let prefix = fold(&deltas[..version.min(len) as usize]);
            prop_assert_eq!(
                snapshotting.load_at::<Counter>("p", version).await.unwrap(),
                prefix,
                "load_at({}) next to the snapshot",
                version
            );
        }
    }

    let history: Vec<HistoryEntry<Counter>> = snapshotting.history::<Counter>("p").await.unwrap();
    prop_assert_eq!(history.len(), deltas.len());
    for (i, entry) in history.iter().enumerate() {
        prop_assert_eq!(entry.event.stream_version, i as u64 + 1);
        prop_assert_eq!(&entry.state, &fold(&deltas[..=i]));
    }

    // The equalities above are not vacuous: the snapshotting app really starts from the
    // snapshot, as a marked one shows through, and the plain app never reads it.
    if let Some(snapshot) = snapshot {
        let marker = 1 << 40;
        let marked = Counter {
            applied: marker,
            ..fold(&deltas[..snapshot.version as usize])
        };
        store
            .save_snapshot(Snapshot {
                payload: Bytes::from(serde_json::to_vec(&marked).unwrap()),
                ..snapshot.clone()
            })
            .await
            .unwrap();
        let loaded = snapshotting.load::<Counter>("p").await.unwrap();
        prop_assert_eq!(loaded.applied, marker + len - snapshot.version);
        prop_assert_eq!(plain.load::<Counter>("p").await.unwrap(), expected);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Snapshot + tail, a full replay and the fold of the deltas agree, now and at any version.
    #[test]
    fn snapshot_plus_tail_equals_full_replay(
        batches in batches(),
        every in 1u64..50,
        probes in prop::collection::vec(any::<prop::sample::Index>(), 1..6),
    ) {
        block_on(check_snapshots_and_replays(batches, every, probes))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Upcaster chains
// ---------------------------------------------------------------------------------------------

/// Version 1, stored under the old name "MoneyIn" (and, after the rename, as "Deposited" v1).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct DepositV1 {
    cents: i64,
    /// Empty meant "no memo".
    memo: String,
    tags: Vec<String>,
}

/// Version 2 as the v2 -> v3 typed upcaster reads it.
#[derive(Deserialize)]
struct DepositedV2 {
    amount_cents: i64,
    memo: Option<String>,
    tags: Vec<String>,
}

/// Version 3, the current event.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Deposited {
    units: i64,
    cents: u8,
    label: String,
    tags: BTreeSet<String>,
}
impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
    const SCHEMA_VERSION: u32 = 3;
}

/// The migration written directly from v1 to v3, as one would without upcasters.
fn migrate_v1_to_v3(old: DepositV1) -> Deposited {
    Deposited {
        units: old.cents.div_euclid(100),
        cents: old.cents.rem_euclid(100) as u8,
        label: if old.memo.is_empty() {
            "(none)".to_owned()
        } else {
            old.memo
        },
        tags: old.tags.into_iter().collect(),
    }
}

/// Reads the old name: "MoneyIn" v1 is "Deposited" v1.
fn rename() -> JsonUpcaster {
    JsonUpcaster::rename("MoneyIn", 1, "Deposited", 1)
}

/// v1 -> v2 on the JSON: `cents` becomes `amount_cents`, an empty memo becomes null.
fn v1_to_v2() -> JsonUpcaster {
    JsonUpcaster::new("Deposited", 1, |mut payload| {
        let object = payload.as_object_mut().ok_or("not an object")?;
        let cents = object.remove("cents").ok_or("no cents")?;
        object.insert("amount_cents".into(), cents);
        let memo = match object.remove("memo") {
            Some(serde_json::Value::String(memo)) if memo.is_empty() => serde_json::Value::Null,
            Some(memo) => memo,
            None => return Err("no memo".into()),
        };
        object.insert("memo".into(), memo);
        Ok(payload)
    })
}

/// v2 -> v3 on the structs: split the amount, name the missing memo, deduplicate the tags.
fn v2_to_v3() -> TypedUpcaster<DepositedV2, Deposited> {
    TypedUpcaster::new("Deposited", 2, |old: DepositedV2| Deposited {
        units: old.amount_cents.div_euclid(100),
        cents: old.amount_cents.rem_euclid(100) as u8,
        label: old.memo.unwrap_or_else(|| "(none)".to_owned()),
        tags: old.tags.into_iter().collect(),
    })
}

fn registry() -> Upcasters {
    let mut upcasters = Upcasters::new();
    upcasters.register(rename()).unwrap();
    upcasters.register(v1_to_v2()).unwrap();
    upcasters.register(v2_to_v3()).unwrap();
    upcasters
}

fn deposit_v1() -> impl Strategy<Value = DepositV1> {
    (
        any::<i64>(),
        prop_oneof![Just(String::new()), "\\PC{0,12}"],
        prop::collection::vec("[a-c]{0,2}", 0..5),
    )
        .prop_map(|(cents, memo, tags)| DepositV1 { cents, memo, tags })
}

/// How an event sits in the store.
#[derive(Debug, Clone)]
enum Stored {
    /// v1 under the old name.
    OldName(DepositV1),
    /// v1 under the new name (written between the rename and v2).
    V1(DepositV1),
    /// Written by the current code.
    Current(Deposited),
}

fn stored() -> impl Strategy<Value = Stored> {
    prop_oneof![
        deposit_v1().prop_map(Stored::OldName),
        deposit_v1().prop_map(Stored::V1),
        deposit_v1().prop_map(|v1| Stored::Current(migrate_v1_to_v3(v1))),
    ]
}

impl Stored {
    fn to_new_event(&self) -> NewEvent {
        let (event_type, version, payload) = match self {
            Stored::OldName(v1) => ("MoneyIn", 1, serde_json::to_vec(v1).unwrap()),
            Stored::V1(v1) => ("Deposited", 1, serde_json::to_vec(v1).unwrap()),
            Stored::Current(v3) => return NewEvent::from_event(v3).unwrap(),
        };
        NewEvent {
            event_type: event_type.into(),
            schema_version: version,
            payload: Bytes::from(payload),
            ..NewEvent::from_event(&migrate_v1_to_v3(DepositV1 {
                cents: 0,
                memo: String::new(),
                tags: Vec::new(),
            }))
            .unwrap()
        }
    }

    fn expected(&self) -> Deposited {
        match self {
            Stored::OldName(v1) | Stored::V1(v1) => migrate_v1_to_v3(v1.clone()),
            Stored::Current(v3) => v3.clone(),
        }
    }
}

/// Remembers every deposit, so a load compares every field of every upcast event.
#[derive(Default, Debug, PartialEq)]
struct Ledger {
    deposits: Vec<Deposited>,
}
#[derive(Serialize, Deserialize)]
struct Deposit {
    id: String,
}
impl Command for Deposit {
    type Output = ();
    const TYPE_NAME: &'static str = "Deposit";
    fn aggregate_id(&self) -> AggregateId {
        self.id.as_str().into()
    }
}
impl Aggregate for Ledger {
    const TYPE_NAME: &'static str = "Ledger";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes.creating_command::<Deposit>().event::<Deposited>();
    }
}
impl HandlesCommand<Deposit> for Ledger {
    async fn handle(&mut self, _: Deposit, _: &CommandContext) -> Result<(), DomainError> {
        Ok(())
    }
}
impl AppliesEvent<Deposited> for Ledger {
    fn apply(&mut self, e: &Deposited) {
        self.deposits.push(e.clone());
    }
}

async fn check_chain_through_a_load(events: Vec<Stored>) -> Result<(), TestCaseError> {
    let store = InMemoryEventStore::new();
    store
        .append(
            &StreamId::new("Ledger", "l").unwrap(),
            ExpectedVersion::NoStream,
            events.iter().map(Stored::to_new_event).collect(),
        )
        .await
        .unwrap();
    let app = Application::builder()
        .with_event_store(store)
        .register_aggregate::<Ledger>()
        .register_upcaster(rename())
        .register_upcaster(v1_to_v2())
        .register_upcaster(v2_to_v3())
        .build()
        .unwrap();
    let loaded = app.load::<Ledger>("l").await.unwrap();
    prop_assert_eq!(
        loaded.deposits,
        events.iter().map(Stored::expected).collect::<Vec<_>>()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// On the registry itself: from every stored shape, the chain lands on the direct migration.
    #[test]
    fn upcaster_chain_equals_the_direct_migration(old in deposit_v1()) {
        let upcasters = registry();
        let expected = serde_json::to_value(migrate_v1_to_v3(old.clone())).unwrap();
        let v1 = serde_json::to_value(&old).unwrap();
        for name in ["MoneyIn", "Deposited"] {
            let (ty, version, payload) = upcasters.upcast_json(name, 1, v1.clone()).unwrap();
            prop_assert_eq!((ty.as_str(), version), ("Deposited", 3), "from {} v1", name);
            prop_assert_eq!(&payload, &expected, "from {} v1", name);
        }
        // The current version passes through untouched.
        let current = upcasters.upcast_json("Deposited", 3, expected.clone()).unwrap();
        prop_assert_eq!(current, ("Deposited".to_owned(), 3, expected));
    }

    /// Through an aggregate load, on a stream mixing every stored shape.
    #[test]
    fn upcast_loads_equal_the_direct_migration(
        events in prop::collection::vec(stored(), 1..20),
    ) {
        block_on(check_chain_through_a_load(events))?;
    }
}
