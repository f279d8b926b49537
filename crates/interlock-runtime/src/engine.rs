//! The application: what `build()` assembles and what callers dispatch through.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use interlock_core::{AggregateId, Command, EventStore, RecordedEvent, StreamId};

use crate::aggregate::{
    Aggregate, AggregateRegistration, AggregateRuntime, CommandFn, CommandRoute,
};
use crate::context::{DispatchOptions, Dispatched};
use crate::dispatch;
use crate::error::Error;

pub(crate) const CREATED: u8 = 0;
pub(crate) const STARTED: u8 = 1;
pub(crate) const SHUT_DOWN: u8 = 2;

/// Everything the application shares between clones and running commands.
pub(crate) struct Engine {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) commands: HashMap<TypeId, CommandRoute>,
    /// `Arc<AggregateRuntime<A>>` by `TypeId::of::<A>()`.
    pub(crate) aggregates: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    pub(crate) state: AtomicU8,
}

impl Engine {
    pub(crate) fn new(
        store: Arc<dyn EventStore>,
        registrations: Vec<AggregateRegistration>,
    ) -> Self {
        let mut commands = HashMap::new();
        let mut aggregates = HashMap::new();
        for registration in registrations {
            for route in registration.routes {
                commands.insert(route.type_id, route);
            }
            aggregates.insert(registration.type_id, registration.runtime);
        }
        Self {
            store,
            commands,
            aggregates,
            state: AtomicU8::new(CREATED),
        }
    }

    fn runtime<A: Aggregate>(&self) -> Result<&AggregateRuntime<A>, Error> {
        self.aggregates
            .get(&TypeId::of::<A>())
            .and_then(|r| r.downcast_ref::<AggregateRuntime<A>>())
            .ok_or(Error::AggregateNotRegistered {
                aggregate_type: A::TYPE_NAME,
            })
    }
}

/// A built application: dispatch commands, load aggregates.
///
/// Cheap to clone; clones share everything. Built with [`Application::builder`].
#[derive(Clone)]
pub struct Application {
    pub(crate) engine: Arc<Engine>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut commands: Vec<_> = self
            .engine
            .commands
            .values()
            .map(|r| r.command_type)
            .collect();
        commands.sort_unstable();
        f.debug_struct("Application")
            .field("commands", &commands)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Starts configuring an application.
    pub fn builder() -> crate::ApplicationBuilder {
        crate::ApplicationBuilder::new()
    }

    /// Starts the application's background work. Dispatching does not require it; processors
    /// (when registered) only run between `start` and `shutdown`.
    pub async fn start(&self) -> Result<(), Error> {
        match self.engine.state.compare_exchange(
            CREATED,
            STARTED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) | Err(STARTED) => Ok(()),
            Err(_) => Err(Error::ShutDown),
        }
    }

    /// Stops the application: later dispatches fail with [`Error::ShutDown`].
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.engine.state.store(SHUT_DOWN, Ordering::Release);
        Ok(())
    }

    /// Sends a command to the aggregate that handles it and returns the handler's output.
    ///
    /// Either every event the handler emitted is stored, or none is (and the error says why:
    /// [`Error::Domain`] for a rejection, [`Error::Concurrency`] when another writer got there
    /// first, [`Error::AggregateNotFound`] for a missing instance, ...).
    pub async fn dispatch<C: Command>(&self, command: C) -> Result<C::Output, Error> {
        Ok(self
            .dispatch_with(command, DispatchOptions::default())
            .await?
            .output)
    }

    /// Like [`dispatch`](Self::dispatch), with correlation, causation and metadata, returning
    /// what was stored (version, count, global position) beside the output.
    pub async fn dispatch_with<C: Command>(
        &self,
        command: C,
        options: DispatchOptions,
    ) -> Result<Dispatched<C::Output>, Error> {
        if self.engine.state.load(Ordering::Acquire) == SHUT_DOWN {
            return Err(Error::ShutDown);
        }
        let route = self
            .engine
            .commands
            .get(&TypeId::of::<C>())
            .ok_or(Error::NoHandler {
                command: C::TYPE_NAME,
            })?;
        let handler = route
            .handler
            .downcast_ref::<CommandFn<C>>()
            .ok_or(Error::NoHandler {
                command: C::TYPE_NAME,
            })?;
        let span = tracing::debug_span!(
            "dispatch",
            command = C::TYPE_NAME,
            aggregate = route.aggregate_type
        );
        tracing::Instrument::instrument(handler(self.engine.clone(), command, options), span).await
    }

    /// Loads the current state of an aggregate instance by replaying its stream.
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
        let id = id.into();
        let runtime = self.engine.runtime::<A>()?;
        let stream = StreamId::for_aggregate(A::TYPE_NAME, &id)?;
        let (state, version) =
            dispatch::replay(&self.engine, &runtime.appliers, &stream, None).await?;
        if version == 0 {
            return Err(Error::AggregateNotFound {
                aggregate_type: A::TYPE_NAME,
                id,
                command: None,
            });
        }
        Ok((state, version))
    }

    /// The stored events of one aggregate instance, in order.
    pub async fn events_of<A: Aggregate>(
        &self,
        id: impl Into<AggregateId>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let stream = StreamId::for_aggregate(A::TYPE_NAME, &id.into())?;
        Ok(self.engine.store.read_stream(&stream, 1, None).await?)
    }

    /// The event store the application writes to.
    pub fn event_store(&self) -> &Arc<dyn EventStore> {
        &self.engine.store
    }
}
