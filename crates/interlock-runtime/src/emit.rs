//! `self.emit(event)`: apply at once, record for the store.
//!
//! A handler runs inside a task-local *emit scope* that holds its aggregate type's applier table
//! and the list of events emitted so far. `emit` applies through the table (so the handler's next
//! line sees the new state) and serializes the event into the list, ready to append (the
//! dispatcher only stamps the command's context on it). Keeping the list outside the aggregate
//! means domain structs need no hidden field and can be built with plain literals.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use interlock_core::{Event, NewEvent, SerializedEvent};

use crate::aggregate::{Aggregate, Applied, Appliers};

/// What a handler emitted: its events up to the first one that went wrong, and what went wrong.
#[derive(Default)]
pub(crate) struct Emitted {
    /// Serialized, with fresh ids; correlation, causation and metadata still to be stamped.
    pub(crate) events: Vec<NewEvent>,
    pub(crate) failure: Option<EmitFailure>,
}

/// Why an emitted event cannot be stored (only the first failure of a handler is kept: it is the
/// one reported).
pub(crate) enum EmitFailure {
    SerializeFailed {
        /// 1-based, among the handler's emitted events.
        index: usize,
        event_type: &'static str,
        message: String,
    },
    NoApplier {
        event_type: &'static str,
    },
    ForeignAggregate {
        event_type: &'static str,
        aggregate_type: &'static str,
    },
}

enum Emission {
    Ok(SerializedEvent),
    Failed(EmitFailure),
}

pub(crate) struct EmitScope {
    appliers: Arc<dyn Any + Send + Sync>,
    emitted: RefCell<Emitted>,
}

tokio::task_local! {
    static EMIT_SCOPE: EmitScope;
}

/// Runs `handler` in an emit scope for aggregate `A`; returns its output and what it emitted.
///
/// A plain function returning the scope's own future, not an `async fn` around it: an `async fn`
/// would hold the handler's future twice (as its argument and inside the scope), and the
/// dispatch future, allocated per command, would grow with it.
pub(crate) fn run_in_scope<A: Aggregate, F: Future>(
    appliers: Arc<Appliers<A>>,
    handler: F,
) -> impl Future<Output = (F::Output, Emitted)> {
    let scope = EmitScope {
        appliers,
        emitted: RefCell::new(Emitted::default()),
    };
    EMIT_SCOPE.scope(scope, async move {
        let output = handler.await;
        // Still inside the scope: take what the handler emitted.
        let emitted = EMIT_SCOPE
            .try_with(|scope| scope.emitted.take())
            .unwrap_or_default();
        (output, emitted)
    })
}

/// Emitting events from a command handler.
///
/// Implemented for every [`Aggregate`]; bring it into scope with the prelude.
pub trait Emit: Aggregate {
    /// Applies `event` to `self` at once and records it to be stored when the handler succeeds.
    ///
    /// Called outside a command handler (a unit test calling a handler method directly), the
    /// event is applied but not recorded anywhere.
    fn emit<E: Event>(&mut self, event: E);
}

impl<A: Aggregate> Emit for A {
    fn emit<E: Event>(&mut self, event: E) {
        let in_scope = EMIT_SCOPE.try_with(|scope| {
            let Some(appliers) = scope.appliers.downcast_ref::<Appliers<A>>() else {
                push(
                    scope,
                    Emission::Failed(EmitFailure::ForeignAggregate {
                        event_type: E::TYPE_NAME,
                        aggregate_type: A::TYPE_NAME,
                    }),
                );
                return;
            };
            let entry = match appliers.apply_typed(self, &event) {
                Applied::NoApplier => Emission::Failed(EmitFailure::NoApplier {
                    event_type: E::TYPE_NAME,
                }),
                Applied::Yes | Applied::Ignored => match SerializedEvent::from_event(&event) {
                    Ok(serialized) => Emission::Ok(serialized),
                    Err(e) => Emission::Failed(EmitFailure::SerializeFailed {
                        index: 0,
                        event_type: E::TYPE_NAME,
                        message: e.to_string(),
                    }),
                },
            };
            push(scope, entry);
        });
        if in_scope.is_err() {
            tracing::debug!(
                aggregate = A::TYPE_NAME,
                event = E::TYPE_NAME,
                "emit outside a command handler: applied, not recorded"
            );
            let _ = Appliers::<A>::standalone().apply_typed(self, &event);
        }
    }
}

fn push(scope: &EmitScope, entry: Emission) {
    // An applier that itself emits would re-enter here while nothing is borrowed: the borrow
    // lasts only for the push.
    let Ok(mut emitted) = scope.emitted.try_borrow_mut() else {
        return;
    };
    // Once one failed, the handler's result is that failure: later events are not kept.
    if emitted.failure.is_some() {
        return;
    }
    match entry {
        Emission::Ok(serialized) => emitted.events.push(NewEvent::from_serialized(serialized)),
        Emission::Failed(mut failure) => {
            if let EmitFailure::SerializeFailed { index, .. } = &mut failure {
                *index = emitted.events.len() + 1;
            }
            emitted.failure = Some(failure);
        }
    }
}
