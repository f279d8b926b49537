//! Running one command against one aggregate: load, decide, append.

use interlock_core::{AggregateId, Command, ExpectedVersion, NewEvent, StreamId};

use crate::aggregate::{Aggregate, AggregateRuntime, Appliers, HandlesCommand};
use crate::context::{CommandContext, DispatchOptions, Dispatched};
use crate::emit::{Emitted, run_in_scope};
use crate::engine::Engine;
use crate::error::Error;

/// Loads the current state of one instance: a cached copy brought up to date with the stream's
/// tail, or a full replay. Returns the state and its version (0 = no events).
pub(crate) async fn load_current<A: Aggregate>(
    engine: &Engine,
    runtime: &AggregateRuntime<A>,
    id: &AggregateId,
    stream: &StreamId,
) -> Result<(A, u64), Error> {
    let (mut state, version) = runtime.cache.take(id).unwrap_or_default();
    let tail = engine.store.read_stream(stream, version + 1, None).await?;
    let version = tail.last().map_or(version, |e| e.stream_version);
    runtime.appliers.fold(&mut state, &tail)?;
    Ok((state, version))
}

/// Replays a stream into a fresh state, up to `to` (inclusive) when given.
pub(crate) async fn replay<A: Aggregate>(
    engine: &Engine,
    appliers: &Appliers<A>,
    stream: &StreamId,
    to: Option<u64>,
) -> Result<(A, u64), Error> {
    let events = engine.store.read_stream(stream, 1, to).await?;
    let mut state = A::default();
    appliers.fold(&mut state, &events)?;
    Ok((state, events.last().map_or(0, |e| e.stream_version)))
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
    let (mut state, version) = load_current(engine, runtime, &id, &stream).await?;
    if version == 0 && !creates {
        return Err(Error::AggregateNotFound {
            aggregate_type: A::TYPE_NAME,
            id,
            command: Some(C::TYPE_NAME),
        });
    }
    let ctx = CommandContext::new(C::TYPE_NAME, options);
    let (result, emitted) =
        run_in_scope(runtime.appliers.clone(), state.handle(command, &ctx)).await;
    // From here on, any early return drops `state`: the cache never sees a failed command's copy.
    let output = result.map_err(Error::Domain)?;
    let events = to_new_events::<A, C>(&stream, &ctx, emitted)?;
    if events.is_empty() {
        runtime.cache.put(id, state, version);
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
    runtime.cache.put(id, state, appended.last_version);
    Ok(Dispatched {
        output,
        version: appended.last_version,
        events: count,
        position: Some(appended.last_position),
    })
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
