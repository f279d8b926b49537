//! Loading aggregates: now, at a version, as of a time, and step by step.

use chrono::{DateTime, Utc};
use interlock_core::{AggregateId, RecordedEvent, StreamId};

use crate::aggregate::Aggregate;
use crate::dispatch;
use crate::engine::Application;
use crate::error::Error;

/// One step of an aggregate's history: an event and the state right after it.
#[derive(Debug, Clone)]
pub struct HistoryEntry<A> {
    /// The event as stored (before upcasting).
    pub event: RecordedEvent,
    /// The aggregate's state after applying it.
    pub state: A,
}

fn not_found<A: Aggregate>(id: AggregateId) -> Error {
    Error::AggregateNotFound {
        aggregate_type: A::TYPE_NAME,
        id,
        command: None,
    }
}

impl Application {
    /// Loads the current state of an aggregate instance (from its latest snapshot when
    /// snapshots are on, then the events after it).
    ///
    /// Fails with [`Error::AggregateNotFound`] when the instance has no events.
    pub async fn load<A: Aggregate>(&self, id: impl Into<AggregateId>) -> Result<A, Error> {
        Ok(self.load_versioned::<A>(id).await?.0)
    }

    /// Loads the current state of an aggregate instance and its version.
    pub async fn load_versioned<A: Aggregate>(
        &self,
        id: impl Into<AggregateId>,
    ) -> Result<(A, u64), Error> {
        self.load_up_to::<A>(id.into(), None).await
    }

    /// Loads the state of an aggregate instance as it was right after its event number
    /// `version` (1-based). Asking beyond the last event gives the current state.
    pub async fn load_at<A: Aggregate>(
        &self,
        id: impl Into<AggregateId>,
        version: u64,
    ) -> Result<A, Error> {
        Ok(self.load_up_to::<A>(id.into(), Some(version)).await?.0)
    }

    async fn load_up_to<A: Aggregate>(
        &self,
        id: AggregateId,
        to: Option<u64>,
    ) -> Result<(A, u64), Error> {
        let runtime = self.engine.runtime::<A>()?;
        let stream = StreamId::for_aggregate(A::TYPE_NAME, &id)?;
        let loaded = dispatch::replay(&self.engine, runtime, &stream, to).await?;
        if loaded.version == 0 {
            return Err(not_found::<A>(id));
        }
        Ok((loaded.state, loaded.version))
    }

    /// Loads the state of an aggregate instance as it was at `time`: every event recorded at or
    /// before it, none after. Fails with [`Error::AggregateNotFound`] if it did not exist yet.
    pub async fn load_as_of<A: Aggregate>(
        &self,
        id: impl Into<AggregateId>,
        time: DateTime<Utc>,
    ) -> Result<A, Error> {
        let id = id.into();
        let runtime = self.engine.runtime::<A>()?;
        let stream = StreamId::for_aggregate(A::TYPE_NAME, &id)?;
        let events = self.engine.store.read_stream(&stream, 1, None).await?;
        let upto = events.partition_point(|e| e.recorded_at <= time);
        if upto == 0 {
            return Err(not_found::<A>(id));
        }
        let mut state = A::default();
        runtime
            .appliers
            .fold(&mut state, &events[..upto], &self.engine.upcasters)?;
        Ok(state)
    }

    /// Every event of an aggregate instance with the state after it, oldest first.
    pub async fn history<A: Aggregate + Clone>(
        &self,
        id: impl Into<AggregateId>,
    ) -> Result<Vec<HistoryEntry<A>>, Error> {
        let id = id.into();
        let runtime = self.engine.runtime::<A>()?;
        let stream = StreamId::for_aggregate(A::TYPE_NAME, &id)?;
        let events = self.engine.store.read_stream(&stream, 1, None).await?;
        if events.is_empty() {
            return Err(not_found::<A>(id));
        }
        let mut state = A::default();
        let mut history = Vec::with_capacity(events.len());
        for event in events {
            runtime.appliers.fold(
                &mut state,
                std::slice::from_ref(&event),
                &self.engine.upcasters,
            )?;
            history.push(HistoryEntry {
                event,
                state: state.clone(),
            });
        }
        Ok(history)
    }
}
