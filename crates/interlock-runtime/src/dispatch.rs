//! Running one command against one aggregate: load, decide, append, maybe snapshot.

use std::sync::Arc;

use chrono::Utc;
use interlock_core::side::Snapshot;
use interlock_core::{
    AggregateId, Command, EventId, ExpectedVersion, NewEvent, StoreError, StreamId,
};
use uuid::Uuid;

use crate::aggregate::{Aggregate, AggregateRuntime, HandlesCommand};
use crate::cache::Loaded;
use crate::context::{CommandContext, DispatchOptions, Dispatched, ExecutionContext};
use crate::emit::{EmitFailure, Emitted, run_in_scope};
use crate::engine::Engine;
use crate::error::{DomainError, Error};
use crate::snapshot::SnapshotMark;

/// The newest usable snapshot of a stream at or below `max_version`, or a fresh state.
///
/// Snapshots are only a shortcut: one that is missing, unreadable, of another aggregate schema
/// version, or ahead of what the caller asked for is skipped (with a warning where it is
/// damaged), and the events are replayed instead.
async fn start_from_snapshot<A: Aggregate>(
    engine: &Engine,
    runtime: &AggregateRuntime<A>,
    stream: &StreamId,
    max_version: Option<u64>,
) -> Loaded<A> {
    let fresh = Loaded::fresh();
    let Some(config) = runtime.snapshots.get() else {
        return fresh;
    };
    let snapshot = match engine.side.snapshots.load_snapshot(stream).await {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => return fresh,
        Err(e) => {
            tracing::warn!(%stream, error = %e, "cannot read the snapshot; replaying all events");
            return fresh;
        }
    };
    let mark = SnapshotMark {
        version: snapshot.version,
        taken_at: snapshot.taken_at,
    };
    if snapshot.schema_version != A::SCHEMA_VERSION {
        tracing::info!(
            %stream,
            stored = snapshot.schema_version,
            current = A::SCHEMA_VERSION,
            "ignoring a snapshot of another aggregate schema version"
        );
        return Loaded {
            snapshot: Some(mark),
            ..fresh
        };
    }
    if snapshot.version == 0 {
        // Taken after no event at all: not a state any replay can reach. Folding the events
        // onto it would count them twice (RELIABILITY.md #17).
        tracing::warn!(%stream, "ignoring a snapshot at version 0; replaying all events");
        return fresh;
    }
    if max_version.is_some_and(|max| snapshot.version > max) {
        return fresh;
    }
    match (config.decode)(&snapshot.payload) {
        Ok(state) => Loaded {
            state,
            version: snapshot.version,
            snapshot: Some(mark),
        },
        Err(e) => {
            tracing::warn!(%stream, version = snapshot.version, error = %e, "ignoring a damaged snapshot");
            fresh
        }
    }
}

/// Loads the current state of one instance: a cached copy, or the latest snapshot, brought up
/// to date with the stream's tail. Version 0 means the stream has no events.
pub(crate) async fn load_current<A: Aggregate>(
    engine: &Engine,
    runtime: &AggregateRuntime<A>,
    id: &AggregateId,
    stream: &StreamId,
) -> Result<Loaded<A>, Error> {
    let start = match runtime.cache.take(id) {
        Some(cached) => cached,
        // Boxed: the snapshot path's future is large, and it would make every command's future
        // that large (W1: over the allocator's per-thread cache size, ~10% of a command).
        None if runtime.snapshots.get().is_some() => {
            return Box::pin(replay(engine, runtime, stream, None)).await;
        }
        // Without snapshots, a replay is a catch-up from nothing.
        None => Loaded::fresh(),
    };
    catch_up(engine, runtime, stream, start, None).await
}

/// Replays a stream into a fresh state (from a snapshot when one fits), up to `to` (inclusive)
/// when given.
pub(crate) async fn replay<A: Aggregate>(
    engine: &Engine,
    runtime: &AggregateRuntime<A>,
    stream: &StreamId,
    to: Option<u64>,
) -> Result<Loaded<A>, Error> {
    let start = start_from_snapshot(engine, runtime, stream, to).await;
    let from_snapshot = start.version > 0;
    let loaded = catch_up(engine, runtime, stream, start, to).await?;
    if from_snapshot && loaded.version == loaded.snapshot.map_or(0, |s| s.version) {
        // Nothing followed the snapshot: make sure the stream really reaches it (a restored
        // backup can be older than its snapshots). The log wins over a snapshot.
        let actual = engine.store.stream_version(stream).await?;
        if actual < loaded.version {
            tracing::warn!(%stream, snapshot = loaded.version, actual, "ignoring a snapshot ahead of its stream");
            let mut fresh = Loaded {
                state: A::default(),
                version: 0,
                snapshot: loaded.snapshot,
            };
            let events = engine.store.read_stream(stream, 1, to).await?;
            runtime
                .appliers
                .fold(&mut fresh.state, &events, &engine.upcasters)?;
            fresh.version = events.last().map_or(0, |e| e.stream_version);
            return Ok(fresh);
        }
    }
    Ok(loaded)
}

/// Applies the events after `loaded.version` (up to `to`) to `loaded`.
async fn catch_up<A: Aggregate>(
    engine: &Engine,
    runtime: &AggregateRuntime<A>,
    stream: &StreamId,
    mut loaded: Loaded<A>,
    to: Option<u64>,
) -> Result<Loaded<A>, Error> {
    let events = engine
        .store
        .read_stream(stream, loaded.version + 1, to)
        .await?;
    runtime
        .appliers
        .fold(&mut loaded.state, &events, &engine.upcasters)?;
    loaded.version = events.last().map_or(loaded.version, |e| e.stream_version);
    Ok(loaded)
}

pub(crate) async fn execute<A, C>(
    engine: Arc<Engine>,
    runtime: Arc<AggregateRuntime<A>>,
    command: C,
    options: DispatchOptions,
    creates: bool,
) -> Result<Dispatched<C::Output>, Error>
where
    A: HandlesCommand<C>,
    C: Command,
{
    let (engine, runtime) = (&*engine, &*runtime);
    let id = command.aggregate_id();
    let stream = StreamId::for_aggregate_shared(&runtime.category, &id)?;
    let mut loaded = load_current(engine, runtime, &id, &stream).await?;
    let version = loaded.version;
    if version == 0 && !creates {
        return Err(Error::AggregateNotFound {
            aggregate_type: A::TYPE_NAME,
            id,
            command: Some(C::TYPE_NAME),
        });
    }
    let seed = options.event_ids_from.clone();
    if let Some(seed) = &seed
        && let Some(done) = committed_before::<C>(engine, &stream, version, seed, false).await?
    {
        return Ok(done);
    }
    let ctx = CommandContext::new(C::TYPE_NAME, options, engine.services.clone());
    let current = ExecutionContext {
        correlation_id: ctx.correlation_id,
        message_id: ctx.command_id,
    };
    let (result, emitted) = current
        .scope(run_in_scope(
            runtime.appliers.clone(),
            loaded.state.handle(command, &ctx),
        ))
        .await;
    // From here on, any early return drops `loaded`: the cache never sees a failed command's copy.
    let output = result.map_err(DomainError::into_error)?;
    let mut events = to_new_events::<A, C>(&stream, &ctx, emitted)?;
    if let Some(seed) = &seed {
        seed_events(&mut events, seed, &output)?;
    }
    if events.is_empty() {
        runtime.cache.put(id, loaded);
        return Ok(Dispatched {
            output,
            version,
            events: 0,
            position: None,
        });
    }
    let count = events.len();
    let expected = if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    };
    let appended = match engine.store.append(&stream, expected, events).await {
        Ok(appended) => appended,
        // A seeded dispatch that committed before, out of reach of the quick look: find it.
        Err(StoreError::DuplicateEventId { event_id, .. })
            if seed
                .as_deref()
                .is_some_and(|seed| event_id == seeded_id(seed, 0)) =>
        {
            let seed = seed.as_deref().unwrap_or_default();
            return committed_before::<C>(engine, &stream, version, seed, true)
                .await?
                .ok_or(Error::Store(StoreError::DuplicateEventId {
                    event_id,
                    stream: Some(stream.clone()),
                }));
        }
        Err(e) => return Err(e.into()),
    };
    if appended.already_appended {
        // The same events were committed by an earlier run of this seeded command: the state
        // in hand applied them a second time, so it must not reach the cache.
        return Ok(Dispatched {
            output,
            version: appended.last_version,
            events: count,
            position: Some(appended.last_position),
        });
    }
    loaded.version = appended.last_version;
    // Committed: a snapshot now can only be a shortcut to what is stored, never ahead of it.
    snapshot_if_due(engine, runtime, &stream, version, &mut loaded).await;
    runtime.cache.put(id, loaded);
    Ok(Dispatched {
        output,
        version: appended.last_version,
        events: count,
        position: Some(appended.last_position),
    })
}

/// The id of event `index` of a dispatch seeded with `seed`.
pub(crate) fn seeded_id(seed: &str, index: usize) -> EventId {
    EventId::from_uuid(Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("interlock-dispatch/{seed}/{index}").as_bytes(),
    ))
}

/// Gives a seeded dispatch's events their derived ids and records the output on the first.
fn seed_events<O: serde::Serialize>(
    events: &mut [NewEvent],
    seed: &str,
    output: &O,
) -> Result<(), Error> {
    for (index, event) in events.iter_mut().enumerate() {
        event.event_id = seeded_id(seed, index);
    }
    if let Some(first) = events.first_mut() {
        let value = serde_json::to_value(output).map_err(|e| {
            Error::Validation(interlock_core::ValidationError::new(
                "output",
                format!("the command's output cannot be recorded as JSON: {e}"),
            ))
        })?;
        first
            .metadata
            .insert(crate::context::OUTPUT_METADATA_KEY.to_owned(), value);
    }
    Ok(())
}

/// The result of an earlier run of a seeded dispatch, if its first event is stored: among the
/// stream's latest 256 events, or anywhere in the stream with `whole`.
async fn committed_before<C: Command>(
    engine: &Engine,
    stream: &StreamId,
    version: u64,
    seed: &str,
    whole: bool,
) -> Result<Option<Dispatched<C::Output>>, Error> {
    let head = if whole {
        engine.store.stream_version(stream).await?
    } else {
        version
    };
    if head == 0 {
        return Ok(None);
    }
    let from = if whole {
        1
    } else {
        head.saturating_sub(255).max(1)
    };
    let first = seeded_id(seed, 0);
    let events = engine.store.read_stream(stream, from, Some(head)).await?;
    let Some(at) = events.iter().position(|e| e.event_id == first) else {
        return Ok(None);
    };
    let recorded = events[at]
        .metadata
        .get(crate::context::OUTPUT_METADATA_KEY)
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let output: C::Output = serde_json::from_value(recorded).map_err(|e| {
        Error::Validation(interlock_core::ValidationError::new(
            "output",
            format!(
                "command {} with seed {seed} committed before, but its recorded output does not decode: {e}",
                C::TYPE_NAME
            ),
        ))
    })?;
    let count = events[at..]
        .iter()
        .take_while(|e| {
            let index = e.stream_version - events[at].stream_version;
            e.event_id == seeded_id(seed, index as usize)
        })
        .count();
    let last = &events[at + count - 1];
    tracing::info!(%stream, command = C::TYPE_NAME, seed, "a seeded command committed before; returning its recorded output");
    Ok(Some(Dispatched {
        output,
        version: last.stream_version,
        events: count,
        position: Some(last.position),
    }))
}

/// Takes a snapshot after a commit when the policy says so. Failures are logged, not returned:
/// the command succeeded, and a missing snapshot only costs a longer replay.
async fn snapshot_if_due<A: Aggregate>(
    engine: &Engine,
    runtime: &AggregateRuntime<A>,
    stream: &StreamId,
    before: u64,
    loaded: &mut Loaded<A>,
) {
    let Some(config) = runtime.snapshots.get() else {
        return;
    };
    let now = Utc::now();
    if !config
        .policy
        .due(before, loaded.version, loaded.snapshot, now)
    {
        return;
    }
    let payload = match (config.encode)(&loaded.state) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::warn!(%stream, error = %e, "cannot serialize a snapshot");
            return;
        }
    };
    let snapshot = Snapshot {
        stream_id: stream.clone(),
        version: loaded.version,
        schema_version: A::SCHEMA_VERSION,
        payload: payload.into(),
        taken_at: now,
    };
    match engine.side.snapshots.save_snapshot(snapshot).await {
        Ok(()) => {
            loaded.snapshot = Some(SnapshotMark {
                version: loaded.version,
                taken_at: now,
            });
        }
        Err(e) => tracing::warn!(%stream, error = %e, "cannot save a snapshot"),
    }
}

/// The handler's emitted events, stamped with the command's context, or why they cannot be
/// stored (the first emitted event that went wrong).
fn to_new_events<A: Aggregate, C: Command>(
    stream: &StreamId,
    ctx: &CommandContext,
    emitted: Emitted,
) -> Result<Vec<NewEvent>, Error> {
    let Emitted {
        mut events,
        failure,
    } = emitted;
    match failure {
        None => {}
        Some(EmitFailure::SerializeFailed {
            index,
            event_type,
            message,
        }) => {
            return Err(Error::EventSerialization {
                stream: stream.clone(),
                command: C::TYPE_NAME,
                index,
                event_type,
                message,
            });
        }
        Some(EmitFailure::NoApplier { event_type }) => {
            return Err(Error::NoApplier {
                aggregate_type: A::TYPE_NAME,
                event_type,
                command: C::TYPE_NAME,
            });
        }
        Some(EmitFailure::ForeignAggregate {
            event_type,
            aggregate_type,
        }) => {
            return Err(Error::Validation(interlock_core::ValidationError::new(
                "emit",
                format!(
                    "event {event_type} was emitted on a {aggregate_type} inside a handler of {}; \
                     a handler may only emit on its own aggregate",
                    A::TYPE_NAME
                ),
            )));
        }
    }
    for event in &mut events {
        event.correlation_id = Some(ctx.correlation_id);
        event.causation_id = Some(ctx.causation_id);
        // Events start with empty metadata: only a command's own metadata needs copying.
        if !ctx.metadata.is_empty() {
            event.metadata = ctx.metadata.clone();
        }
    }
    Ok(events)
}
