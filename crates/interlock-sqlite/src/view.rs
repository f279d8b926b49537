//! What a SQL view declares: its tables, and a synchronous handler per event type.

use std::any::TypeId;
use std::collections::HashMap;

use interlock_core::{Event, RecordedEvent};
use interlock_runtime::{EventContext, HandlerError};
use rusqlite::Connection;

/// A read model kept in tables of the event store's own SQLite file, updated in the same
/// transaction as its checkpoint (see [`SqliteProjection`](crate::SqliteProjection)).
///
/// The handlers ([`SqliteHandles`]) are synchronous and run on the store's single writer
/// thread, inside its transaction: every append waits while they run, so keep them to a few SQL
/// statements on the connection they are handed (no network calls, no sleeping). They must not
/// begin, commit or roll back transactions themselves.
pub trait SqliteView: Sized + Send + 'static {
    /// The view's stable name: its checkpoint and dead letters are stored under it.
    const NAME: &'static str;

    /// Declares the events the view handles, with [`SqliteViewRoutes::event`].
    fn configure(routes: &mut SqliteViewRoutes<Self>);

    /// Creates the view's tables and indexes if they do not exist (`CREATE TABLE IF NOT
    /// EXISTS ...`). Runs once per process, in the transaction of the first batch or reset, or
    /// earlier through [`SqliteProjection::create_tables`](crate::SqliteProjection::create_tables).
    fn create(conn: &Connection) -> rusqlite::Result<()>;

    /// Deletes every row of the view, before a rebuild replays all events. Runs in the same
    /// transaction as the removal of the view's checkpoint.
    fn reset(conn: &Connection) -> rusqlite::Result<()>;
}

/// A view that handles event `E`.
#[diagnostic::on_unimplemented(
    message = "the SQL view `{Self}` does not handle `{E}`",
    label = "no `SqliteHandles<{E}>` impl",
    note = "implement `SqliteHandles<{E}>` for `{Self}`, or remove `.event::<{E}>()` from its `configure`"
)]
pub trait SqliteHandles<E: Event>: SqliteView {
    /// Applies one event to the view through `conn`. An error rolls back what this call wrote
    /// (the event runs in its own savepoint); the event is then parked as a dead letter, or the
    /// batch stops before it, as the processor's `FailurePolicy` says. It is not retried: the
    /// handler sees nothing but its own tables, so trying again would fail again.
    /// `rusqlite::Error` converts into [`HandlerError`], so `?` works on SQL calls.
    fn handle(
        &mut self,
        conn: &Connection,
        event: E,
        ctx: &EventContext<'_>,
    ) -> Result<(), HandlerError>;
}

/// Decodes a stored event and hands it to the view's handler.
pub(crate) type HandleFn<V> = fn(&mut V, &Connection, &RecordedEvent) -> Result<(), HandlerError>;

/// The event types one view handles, filled in [`SqliteView::configure`].
pub struct SqliteViewRoutes<V: SqliteView> {
    handlers: HashMap<&'static str, (TypeId, HandleFn<V>)>,
    problems: Vec<String>,
}

impl<V: SqliteView> std::fmt::Debug for SqliteViewRoutes<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut events: Vec<_> = self.handlers.keys().collect();
        events.sort();
        f.debug_struct("SqliteViewRoutes")
            .field("view", &V::NAME)
            .field("events", &events)
            .finish()
    }
}

impl<V: SqliteView> SqliteViewRoutes<V> {
    /// Runs `V::configure`.
    pub(crate) fn collect() -> Self {
        let mut routes = Self {
            handlers: HashMap::new(),
            problems: Vec::new(),
        };
        V::configure(&mut routes);
        routes
    }

    /// Hands events of type `E` to the view's [`SqliteHandles<E>`] impl. Events of types no
    /// route names are skipped (the checkpoint still moves past them).
    pub fn event<E: Event>(&mut self) -> &mut Self
    where
        V: SqliteHandles<E>,
    {
        let route = (TypeId::of::<E>(), handle::<V, E> as HandleFn<V>);
        if let Some((previous, _)) = self.handlers.insert(E::TYPE_NAME, route)
            && previous != route.0
        {
            self.problems.push(format!(
                "SQL view {} routes event type {} to two different Rust types",
                V::NAME,
                E::TYPE_NAME
            ));
        }
        self
    }

    /// The handler for a stored type name.
    pub(crate) fn get(&self, event_type: &str) -> Option<HandleFn<V>> {
        self.handlers.get(event_type).map(|(_, handle)| *handle)
    }

    /// What is wrong with the declaration, if anything.
    pub(crate) fn problem(&self) -> Option<&str> {
        self.problems.first().map(String::as_str)
    }
}

fn handle<V: SqliteHandles<E>, E: Event>(
    view: &mut V,
    conn: &Connection,
    event: &RecordedEvent,
) -> Result<(), HandlerError> {
    // Checks the type name and schema version: an old event with no upcaster fails (and is
    // parked) instead of being misread.
    let payload = event.decode::<E>()?;
    view.handle(conn, payload, &EventContext::new(event, V::NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Opened {}
    impl Event for Opened {
        const TYPE_NAME: &'static str = "Opened";
    }
    #[derive(serde::Serialize, serde::Deserialize)]
    struct AlsoOpened {}
    impl Event for AlsoOpened {
        const TYPE_NAME: &'static str = "Opened";
    }

    struct View<const CONFUSED: bool>;
    impl<const CONFUSED: bool> SqliteView for View<CONFUSED> {
        const NAME: &'static str = "view";
        fn configure(routes: &mut SqliteViewRoutes<Self>) {
            routes.event::<Opened>().event::<Opened>();
            if CONFUSED {
                routes.event::<AlsoOpened>();
            }
        }
        fn create(_: &Connection) -> rusqlite::Result<()> {
            Ok(())
        }
        fn reset(_: &Connection) -> rusqlite::Result<()> {
            Ok(())
        }
    }
    impl<const CONFUSED: bool, E: Event> SqliteHandles<E> for View<CONFUSED> {
        fn handle(
            &mut self,
            _: &Connection,
            _: E,
            _: &EventContext<'_>,
        ) -> Result<(), HandlerError> {
            Ok(())
        }
    }

    #[test]
    fn routing_a_type_twice_is_harmless_but_two_types_under_one_name_are_refused() {
        let routes = SqliteViewRoutes::<View<false>>::collect();
        assert!(routes.problem().is_none());
        assert!(routes.get("Opened").is_some());
        assert!(routes.get("Closed").is_none());
        let routes = SqliteViewRoutes::<View<true>>::collect();
        assert!(
            routes
                .problem()
                .is_some_and(|p| p.contains("two different"))
        );
    }
}
