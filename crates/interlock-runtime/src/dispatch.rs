//! Running one command against one aggregate: load, decide, append, maybe snapshot.

use chrono::Utc;
use interlock_core::side::Snapshot;
use interlock_core::{AggregateId, Command, ExpectedVersion, NewEvent, StreamId};

use crate::aggregate::{Aggregate, AggregateRuntime, HandlesCommand};
use crate::cache::Loaded;
use crate::context::{CommandContext, DispatchOptions, Dispatched, ExecutionContext};
use crate::emit::{Emitted, run_in_scope};
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
    let fresh = Loaded {
        state: A::default(),
        version: 0,
        snapshot: None,
    };
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
    match runtime.cache.take(id) {
        Some(cached) => catch_up(engine, runtime, stream, cached, None).await,
        None => replay(engine, runtime, stream, None).await,
    }
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
    engine: &Engine,
    runtime: &AggregateRuntime<A>,
    command: C,
    options: DispatchOptions,
    creates: bool,
) -> Result<Dispatched<C::Output>, Error>
where
    A: HandlesCommand<C>,
    C: Command,
{
    let id = command.aggregate_id();
    let stream = StreamId::for_aggregate(A::TYPE_NAME, &id)?;
    let mut loaded = load_current(engine, runtime, &id, &stream).await?;
    let version = loaded.version;
    if version == 0 && !creates {
        return Err(Error::AggregateNotFound {
            aggregate_type: A::TYPE_NAME,
            id,
            command: Some(C::TYPE_NAME),
        });
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
    let events = to_new_events::<A, C>(&stream, &ctx, emitted)?;
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
    let appended = engine.store.append(&stream, expected, events).await?;
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

fn to_new_events<A: Aggregate, C: Command>(
    stream: &StreamId,
    ctx: &CommandContext,
    emitted: Vec<Emitted>,
) -> Result<Vec<NewEvent>, Error> {
    let mut events = Vec::with_capacity(emitted.len());
    for (index, entry) in emitted.into_iter().enumerate() {
        match entry {
            Emitted::Ok(serialized) => events.push(
                NewEvent::from_serialized(serialized)
                    .with_context(Some(ctx.correlation_id), Some(ctx.causation_id))
                    .with_metadata(ctx.metadata.clone()),
            ),
            Emitted::SerializeFailed {
                event_type,
                message,
            } => {
                return Err(Error::EventSerialization {
                    stream: stream.clone(),
                    command: C::TYPE_NAME,
                    index: index + 1,
                    event_type,
                    message,
                });
            }
            Emitted::NoApplier { event_type } => {
                return Err(Error::NoApplier {
                    aggregate_type: A::TYPE_NAME,
                    event_type,
                    command: C::TYPE_NAME,
                });
            }
            Emitted::ForeignAggregate {
                event_type,
                aggregate_type,
            } => {
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
    }
    Ok(events)
}
