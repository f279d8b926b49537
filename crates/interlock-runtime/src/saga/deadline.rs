//! Saga deadlines, kept as events so they survive restarts and fire exactly once.
//!
//! Scheduling appends a [`DeadlineScheduled`] event (its id derived from the saga, instance,
//! event and position in the step) to the stream `$deadlines/<saga>`. Firing appends a
//! [`DeadlineReached`] event to the same stream with an id derived from the deadline's, so
//! whichever process fires it, and however often, it is stored once; the saga receives it like
//! any event.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use interlock_core::{Event, EventId, ExpectedVersion, NewEvent, StreamId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::Engine;
use crate::error::Error;

/// A deadline a saga step scheduled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlineScheduled {
    /// The saga's name.
    pub saga: String,
    /// The instance's key.
    pub key: String,
    /// The deadline's name, given by the step.
    pub name: String,
    /// The deadline's id (deterministic).
    pub deadline_id: Uuid,
    /// When it is due.
    pub due_at: DateTime<Utc>,
}

impl Event for DeadlineScheduled {
    const TYPE_NAME: &'static str = "$DeadlineScheduled";
}

/// A deadline that came due, delivered to its saga instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlineReached {
    /// The saga's name.
    pub saga: String,
    /// The instance's key.
    pub key: String,
    /// The deadline's name.
    pub name: String,
    /// The deadline's id.
    pub deadline_id: Uuid,
}

impl Event for DeadlineReached {
    const TYPE_NAME: &'static str = "$DeadlineReached";
}

pub(crate) fn deadline_stream(saga: &str) -> Result<StreamId, Error> {
    Ok(StreamId::new("$deadlines", saga)?)
}

/// Fires every due, unfired deadline of `saga`; returns how many were fired.
pub(crate) async fn fire_due_deadlines(engine: &Engine, saga: &str) -> Result<usize, Error> {
    let stream = deadline_stream(saga)?;
    let events = engine.store.read_stream(&stream, 1, None).await?;
    let mut pending: HashMap<Uuid, DeadlineScheduled> = HashMap::new();
    for event in &events {
        if event.event_type == DeadlineScheduled::TYPE_NAME {
            let scheduled: DeadlineScheduled = event.decode()?;
            pending.insert(scheduled.deadline_id, scheduled);
        } else if event.event_type == DeadlineReached::TYPE_NAME {
            let reached: DeadlineReached = event.decode()?;
            pending.remove(&reached.deadline_id);
        }
    }
    let now = engine.services.clock.now();
    let mut due: Vec<&DeadlineScheduled> = pending.values().filter(|d| d.due_at <= now).collect();
    due.sort_by_key(|d| (d.due_at, d.deadline_id));
    for deadline in &due {
        let reached = DeadlineReached {
            saga: deadline.saga.clone(),
            key: deadline.key.clone(),
            name: deadline.name.clone(),
            deadline_id: deadline.deadline_id,
        };
        let id = Uuid::new_v5(&deadline.deadline_id, b"reached");
        let event = NewEvent::from_event(&reached)
            .map_err(|e| interlock_core::ValidationError::new("deadline", e.to_string()))?
            .with_event_id(EventId::from_uuid(id));
        engine
            .store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await?;
        tracing::debug!(saga, key = %deadline.key, name = %deadline.name, "deadline reached");
    }
    Ok(due.len())
}
