//! `self.emit(event)`: apply at once, record for the store.
//!
//! A handler runs inside a task-local *emit scope* that holds its aggregate type's applier table
//! and the list of events emitted so far. `emit` applies through the table (so the handler's next
//! line sees the new state) and serializes the event into the list. Keeping the list outside the
//! aggregate means domain structs need no hidden field and can be built with plain literals.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use interlock_core::{Event, SerializedEvent};

use crate::aggregate::{Aggregate, Applied, Appliers};

/// One emitted event, serialized, or what went wrong with it.
pub(crate) enum Emitted {
    Ok(SerializedEvent),
    SerializeFailed {
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

pub(crate) struct EmitScope {
    appliers: Arc<dyn Any + Send + Sync>,
    emitted: RefCell<Vec<Emitted>>,
}

tokio::task_local! {
    static EMIT_SCOPE: EmitScope;
}

/// Runs `handler` in an emit scope for aggregate `A`; returns its output and what it emitted.
pub(crate) async fn run_in_scope<A: Aggregate, F: Future>(
    appliers: Arc<Appliers<A>>,
    handler: F,
) -> (F::Output, Vec<Emitted>) {
    let scope = EmitScope {
        appliers,
        emitted: RefCell::new(Vec::new()),
    };
    let mut future = std::pin::pin!(EMIT_SCOPE.scope(scope, handler));
    let output = (&mut future).await;
    let emitted = future
        .as_mut()
        .take_value()
        .map(|scope| scope.emitted.into_inner())
        .unwrap_or_default();
    (output, emitted)
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
                    Emitted::ForeignAggregate {
                        event_type: E::TYPE_NAME,
                        aggregate_type: A::TYPE_NAME,
                    },
                );
                return;
            };
            let entry = match appliers.apply_typed(self, &event) {
                Applied::NoApplier => Emitted::NoApplier {
                    event_type: E::TYPE_NAME,
                },
                Applied::Yes | Applied::Ignored => match SerializedEvent::from_event(&event) {
                    Ok(serialized) => Emitted::Ok(serialized),
                    Err(e) => Emitted::SerializeFailed {
                        event_type: E::TYPE_NAME,
                        message: e.to_string(),
                    },
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

fn push(scope: &EmitScope, entry: Emitted) {
    // An applier that itself emits would re-enter here while nothing is borrowed: the borrow
    // lasts only for the push.
    if let Ok(mut emitted) = scope.emitted.try_borrow_mut() {
        emitted.push(entry);
    }
}
