//! Row 17: snapshots are only ever a shortcut to what the events say.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use interlock_core::side::Snapshot;
use interlock_core::{EventStore, SideStores, StreamId};
use interlock_runtime::{Application, ApplicationBuilder, SnapshotPolicy};

use super::domain::{Count, Counter, fold_counter};
use super::{WAIT, drop_after, shared, side_of};

const ID: &str = "c";

fn stream() -> StreamId {
    StreamId::new("Counter", ID).expect("stream")
}

/// `n` amounts for command number `k`.
fn amounts(k: u64, n: u64) -> Vec<u64> {
    (0..n).map(|j| (k * 7 + j) % 11 + 1).collect()
}

/// An application over `store` with `Counter<V>` snapshotted every 100 events.
fn snapshotting<const V: u32>(store: &Arc<dyn EventStore>) -> Application {
    ApplicationBuilder::new()
        .with_shared_event_store(store.clone())
        .register_aggregate::<Counter<V>>()
        .with_snapshots::<Counter<V>>(SnapshotPolicy::every(100))
        .build()
        .expect("app")
}

/// Brings the counter to version 250 with commands of 7 events (the snapshot boundaries fall
/// inside commands), then one of 5. Returns the number of commands sent.
async fn build_to_250<const V: u32>(app: &Application) -> u64 {
    for k in 0..35 {
        app.dispatch(Count {
            counter: ID.into(),
            amounts: amounts(k, 7),
        })
        .await
        .expect("count");
    }
    app.dispatch(Count {
        counter: ID.into(),
        amounts: amounts(35, 5),
    })
    .await
    .expect("count");
    36
}

/// The counter folded by hand from all its events, and its version.
async fn full_replay<const V: u32>(store: &Arc<dyn EventStore>) -> (Counter<V>, u64) {
    let events = store.read_stream(&stream(), 1, None).await.expect("read");
    (fold_counter::<V>(&events), events.len() as u64)
}

async fn latest_snapshot(side: &SideStores) -> Option<Snapshot> {
    side.snapshots
        .load_snapshot(&stream())
        .await
        .expect("load snapshot")
}

/// A snapshot the application wrote: of schema `V`, not ahead of the stream, and exactly the
/// state of the events up to its version.
async fn assert_sound<const V: u32>(what: &str, store: &Arc<dyn EventStore>, snapshot: &Snapshot) {
    let events = store.read_stream(&stream(), 1, None).await.expect("read");
    assert!(
        snapshot.version <= events.len() as u64,
        "{what}: snapshot at {} is ahead of the last committed event {}",
        snapshot.version,
        events.len()
    );
    assert_eq!(snapshot.schema_version, V, "{what}");
    let state: Counter<V> = serde_json::from_slice(&snapshot.payload)
        .unwrap_or_else(|e| panic!("{what}: the application wrote an unreadable snapshot: {e}"));
    assert_eq!(
        state,
        fold_counter::<V>(&events[..snapshot.version as usize]),
        "{what}: a snapshot is the state of the events up to its version"
    );
}

/// Loads through a fresh application (no cache: snapshot + tail) and through `app` (its cache),
/// and checks both, and the temporal loads, against the full replay; retried while a cancelled
/// write still lands, so the comparison is of one stable store.
async fn assert_loads_equal_replay<const V: u32>(
    what: &str,
    store: &Arc<dyn EventStore>,
    app: &Application,
) {
    for _ in 0..50 {
        let (expected, version) = full_replay::<V>(store).await;
        let fresh = snapshotting::<V>(store);
        let (loaded, loaded_version) = fresh
            .load_versioned::<Counter<V>>(ID)
            .await
            .expect("a fresh load");
        let (cached, _) = app
            .load_versioned::<Counter<V>>(ID)
            .await
            .expect("a load through the app");
        let at_100 = fresh.load_at::<Counter<V>>(ID, 100).await.expect("at 100");
        let (_, now) = full_replay::<V>(store).await;
        if now != version {
            // A dropped write landed meanwhile: compare again on the settled store.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        assert_eq!(loaded_version, version, "{what}: fresh load version");
        assert_eq!(loaded, expected, "{what}: fresh load == full replay");
        assert_eq!(
            cached, expected,
            "{what}: load through the app == full replay"
        );
        let events = store
            .read_stream(&stream(), 1, Some(100))
            .await
            .expect("read");
        assert_eq!(
            at_100,
            fold_counter::<V>(&events),
            "{what}: load_at(100) == replay of 100"
        );
        return;
    }
    panic!("{what}: the store never settled");
}

fn planted(version: u64, schema_version: u32, payload: &str) -> Snapshot {
    Snapshot {
        stream_id: stream(),
        version,
        schema_version,
        payload: Bytes::from(payload.to_owned()),
        taken_at: Utc::now(),
    }
}

/// Replaces the stream's snapshot with `snapshot`. A store may refuse a snapshot that cannot be
/// right (version 0) with a validation error; anything else must be stored as given.
async fn replace_snapshot(side: &SideStores, snapshot: Snapshot) {
    side.snapshots
        .delete_snapshot(&stream())
        .await
        .expect("delete");
    let version = snapshot.version;
    match side.snapshots.save_snapshot(snapshot).await {
        Ok(()) => {}
        Err(interlock_core::StoreError::Validation(e)) if version == 0 => {
            assert!(e.to_string().contains("version"), "{e}");
        }
        Err(other) => panic!("saving a planted snapshot: {other:?}"),
    }
}

/// RELIABILITY.md #17 (a): snapshots every 100, the stream at 250 (a snapshot at 203: the
/// boundary falls inside a 7-event command). The latest snapshot is replaced by damaged ones:
/// JSON of the wrong shape, of the wrong type, `null`, a snapshot claiming a version far ahead
/// of the stream, one claiming version 0 with a non-empty state. Each time, loading equals the
/// full replay (the damaged snapshot is ignored), and the next snapshot the application takes
/// is sound and not ahead of the stream.
pub async fn row17_a_corrupt_snapshots_are_ignored<S: EventStore>(store: S) {
    let store = shared(store);
    let side = side_of(&store);
    let app = snapshotting::<1>(&store);
    build_to_250::<1>(&app).await;
    let taken = latest_snapshot(&side).await.expect("a snapshot was taken");
    assert!(
        (200..=250).contains(&taken.version),
        "the snapshot follows the 200 boundary: {}",
        taken.version
    );
    assert_sound::<1>("taken at 200", &store, &taken).await;
    assert_loads_equal_replay::<1>("with a sound snapshot", &store, &app).await;

    replace_snapshot(&side, planted(taken.version, 1, "{\"count\":\"x\"}")).await;
    // The next boundary (300) is crossed by a fresh application: it replays past the damaged
    // snapshot and takes a sound one.
    let fresh = snapshotting::<1>(&store);
    for k in 0..8 {
        fresh
            .dispatch(Count {
                counter: ID.into(),
                amounts: amounts(100 + k, 7),
            })
            .await
            .expect("count past 300");
    }
    let next = latest_snapshot(&side).await.expect("a new snapshot");
    assert!(
        next.version >= 300,
        "a new snapshot after 300: {}",
        next.version
    );
    assert_sound::<1>("taken after the damaged one", &store, &next).await;
    assert_loads_equal_replay::<1>("after a new snapshot", &store, &fresh).await;

    let damaged = [
        (
            "wrong field type",
            planted(taken.version, 1, "{\"count\":\"x\"}"),
        ),
        ("missing fields", planted(taken.version, 1, "{}")),
        ("an array", planted(taken.version, 1, "[]")),
        ("a string", planted(taken.version, 1, "\"garbage\"")),
        ("null", planted(taken.version, 1, "null")),
        (
            "far ahead of the stream",
            planted(9_999, 1, "{\"count\":9999,\"total\":1,\"digest\":1}"),
        ),
        (
            "version 0 with a state",
            planted(0, 1, "{\"count\":1000,\"total\":1000,\"digest\":7}"),
        ),
    ];
    for (what, snapshot) in damaged {
        replace_snapshot(&side, snapshot).await;
        assert_loads_equal_replay::<1>(what, &store, &snapshotting::<1>(&store)).await;
    }
}

/// RELIABILITY.md #17 (b): the aggregate's schema version is bumped (`Counter<2>` over a store
/// written by `Counter<1>`). A version-1 snapshot that `Counter<1>` trusts (planted with a
/// deliberately wrong total, to prove snapshots are used at all) is ignored by `Counter<2>`,
/// whose load equals the full replay; `Counter<2>` takes version-2 snapshots, which a rolled
/// back `Counter<1>` ignores in turn.
pub async fn row17_b_a_schema_bump_ignores_old_snapshots<S: EventStore>(store: S) {
    let store = shared(store);
    let side = side_of(&store);
    let v1 = snapshotting::<1>(&store);
    build_to_250::<1>(&v1).await;
    let taken = latest_snapshot(&side).await.expect("a snapshot was taken");
    assert_sound::<1>("version 1", &store, &taken).await;

    let (truth, version) = full_replay::<1>(&store).await;
    let wrong = Counter::<1> {
        total: truth.total + 1000,
        ..truth.clone()
    };
    replace_snapshot(
        &side,
        Snapshot {
            payload: Bytes::from(serde_json::to_vec(&wrong).expect("json")),
            ..planted(version, 1, "{}")
        },
    )
    .await;
    let trusted = snapshotting::<1>(&store)
        .load::<Counter<1>>(ID)
        .await
        .expect("load");
    assert_eq!(
        trusted, wrong,
        "a snapshot of the same schema version is used (else this test proves nothing)"
    );

    let v2 = snapshotting::<2>(&store);
    assert_loads_equal_replay::<2>("schema bumped", &store, &v2).await;
    for k in 0..8 {
        v2.dispatch(Count {
            counter: ID.into(),
            amounts: amounts(200 + k, 7),
        })
        .await
        .expect("count past 300");
    }
    let bumped = latest_snapshot(&side).await.expect("a version-2 snapshot");
    assert!(bumped.version >= 300, "{}", bumped.version);
    assert_sound::<2>("version 2", &store, &bumped).await;
    assert_loads_equal_replay::<2>("version 2 snapshot", &store, &v2).await;
    let rolled_back = snapshotting::<1>(&store);
    assert_loads_equal_replay::<1>("rolled back to version 1", &store, &rolled_back).await;
}

/// RELIABILITY.md #17 (c): snapshot writes cancelled midway. (1) Commands of 100 events (each
/// crosses a boundary, so each is followed by a snapshot write) are dropped at moments spread
/// over a dispatch's duration; (2) `save_snapshot` itself is dropped at moments spread over
/// its duration. After each, the stored snapshot is either the previous one or the new one,
/// never torn, never ahead of the stream, and every load equals the full replay.
pub async fn row17_c_cancelled_snapshot_writes_leave_a_consistent_store<S: EventStore>(store: S) {
    let store = shared(store);
    let side = side_of(&store);
    let app = snapshotting::<1>(&store);
    build_to_250::<1>(&app).await;
    let started = Instant::now();
    app.dispatch(Count {
        counter: ID.into(),
        amounts: amounts(300, 100),
    })
    .await
    .expect("timing command");
    let typical = started.elapsed().max(Duration::from_micros(100));
    const ATTEMPTS: u32 = 20;
    for i in 0..ATTEMPTS {
        let budget = typical * 3 * i / (2 * ATTEMPTS);
        let what = format!("command dropped after {budget:?}");
        let done = drop_after(
            app.dispatch(Count {
                counter: ID.into(),
                amounts: amounts(400 + u64::from(i), 100),
            }),
            usize::MAX,
            budget,
        )
        .await;
        if let Some(result) = done {
            result.expect("a command that finished succeeded");
        }
        if let Some(snapshot) = latest_snapshot(&side).await {
            assert_sound::<1>(&what, &store, &snapshot).await;
        }
        assert_loads_equal_replay::<1>(&what, &store, &app).await;
    }

    let started = Instant::now();
    let (state, version) = full_replay::<1>(&store).await;
    let good = |state: &Counter<1>, version: u64| Snapshot {
        payload: Bytes::from(serde_json::to_vec(state).expect("json")),
        ..planted(version, 1, "{}")
    };
    side.snapshots
        .save_snapshot(good(&state, version))
        .await
        .expect("timing save");
    let typical = started.elapsed().max(Duration::from_micros(50));
    for i in 0..ATTEMPTS {
        // A new command between attempts, so each save would move the snapshot forward.
        app.dispatch(Count {
            counter: ID.into(),
            amounts: amounts(600 + u64::from(i), 3),
        })
        .await
        .expect("count");
        let (state, version) = full_replay::<1>(&store).await;
        let before = latest_snapshot(&side).await.expect("a snapshot");
        let budget = typical * 3 * i / (2 * ATTEMPTS);
        let done = drop_after(
            side.snapshots.save_snapshot(good(&state, version)),
            usize::MAX,
            budget,
        )
        .await;
        if let Some(result) = done {
            result.expect("a save that finished succeeded");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        let after = latest_snapshot(&side).await.expect("a snapshot");
        assert!(
            after.version == before.version || after.version == version,
            "the snapshot is the old or the new one, not something else: {} (old {}, new {version})",
            after.version,
            before.version
        );
        assert_sound::<1>("save dropped", &store, &after).await;
        assert_loads_equal_replay::<1>("save dropped", &store, &app).await;
    }
    tokio::time::timeout(
        WAIT,
        assert_loads_equal_replay::<1>("at the end", &store, &app),
    )
    .await
    .expect("in time");
}

/// RELIABILITY.md #17 (d): every snapshot deleted: loads equal the full replay (only slower),
/// the application takes a sound snapshot again at the next boundary, and deleting again
/// leaves the same state.
pub async fn row17_d_deleted_snapshots_cost_only_a_replay<S: EventStore>(store: S) {
    let store = shared(store);
    let side = side_of(&store);
    let app = snapshotting::<1>(&store);
    build_to_250::<1>(&app).await;
    assert!(
        latest_snapshot(&side).await.is_some(),
        "a snapshot was taken"
    );
    assert!(
        side.snapshots
            .delete_snapshot(&stream())
            .await
            .expect("delete"),
        "there was a snapshot to delete"
    );
    assert!(latest_snapshot(&side).await.is_none());
    assert_loads_equal_replay::<1>("no snapshot", &store, &app).await;
    for k in 0..8 {
        app.dispatch(Count {
            counter: ID.into(),
            amounts: amounts(700 + k, 7),
        })
        .await
        .expect("count past 300");
    }
    let next = latest_snapshot(&side).await.expect("a snapshot again");
    assert_sound::<1>("after deletion", &store, &next).await;
    assert!(
        side.snapshots
            .delete_snapshot(&stream())
            .await
            .expect("delete")
    );
    assert!(
        !side
            .snapshots
            .delete_snapshot(&stream())
            .await
            .expect("delete again"),
        "nothing left to delete"
    );
    assert_loads_equal_replay::<1>("deleted again", &store, &app).await;
}
