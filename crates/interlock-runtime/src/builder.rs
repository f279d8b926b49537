//! `ApplicationBuilder`: register the parts, then `build()` checks the wiring.

use std::any::TypeId;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use interlock_core::upcast::{Upcaster, Upcasters};
use interlock_core::{EventStore, SideStores};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aggregate::{Aggregate, AggregateRegistration, AggregateRuntime, AggregateSettings};
use crate::engine::{Application, Engine, EngineParts};
use crate::error::BuildError;
use crate::memory::InMemoryEventStore;
use crate::middleware::{Middleware, MiddlewareEnv};
use crate::processor::{
    BatchProcessor, Delivery, EventProcessor, ProcessorRegistration, ProcessorSettings,
};
use crate::saga::{Saga, SagaProcessor};
use crate::services::{
    Clock, Dependencies, ErasedLifecycle, Lifecycle, Services, SharedHook, SystemClock,
};
use crate::snapshot::{SnapshotConfig, SnapshotPolicy};

/// Configures an [`Application`].
///
/// ```
/// use interlock_runtime::{ApplicationBuilder, InMemoryEventStore};
/// let err = ApplicationBuilder::new()
///     .with_event_store(InMemoryEventStore::new())
///     .build()
///     .map(|_| ())
///     .unwrap_err();
/// assert!(err.to_string().contains("no aggregate or processor"));
/// ```
#[derive(Default)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ApplicationBuilder {
    store: Option<Arc<dyn EventStore>>,
    aggregates: Vec<AggregateRegistration>,
    processors: Vec<ProcessorRegistration>,
    upcasters: Upcasters,
    middleware: Vec<Box<dyn Middleware>>,
    dependencies: Dependencies,
    hooks: Vec<Arc<dyn ErasedLifecycle>>,
    clock: Option<Arc<dyn Clock>>,
    sagas: Vec<&'static str>,
    node_id: Option<String>,
    problems: Vec<String>,
}

impl std::fmt::Debug for ApplicationBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplicationBuilder")
            .field(
                "aggregates",
                &self
                    .aggregates
                    .iter()
                    .map(|a| a.type_name)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ApplicationBuilder {
    /// An empty configuration with the in-memory store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an aggregate type with default settings.
    pub fn register_aggregate<A: Aggregate>(self) -> Self {
        self.register_aggregate_with::<A>(AggregateSettings::default())
    }

    /// Registers an aggregate type with its own settings (cache size, unknown-event policy).
    pub fn register_aggregate_with<A: Aggregate>(mut self, settings: AggregateSettings) -> Self {
        self.aggregates
            .push(AggregateRegistration::new::<A>(&settings));
        self
    }

    /// Snapshots aggregate `A` (registered before) by `policy`: after a command whose events
    /// make the policy due, the state is stored as JSON with `A::SCHEMA_VERSION`; loads start from
    /// the latest snapshot of the same schema version and replay only the events after it.
    pub fn with_snapshots<A>(mut self, policy: SnapshotPolicy) -> Self
    where
        A: Aggregate + Serialize + DeserializeOwned,
    {
        let runtime = self
            .aggregates
            .iter()
            .find(|r| r.type_id == TypeId::of::<A>())
            .and_then(|r| r.runtime.downcast_ref::<AggregateRuntime<A>>());
        match runtime {
            Some(runtime) => {
                if runtime.snapshots.set(SnapshotConfig::json(policy)).is_err() {
                    self.problems.push(format!(
                        "snapshots of aggregate {} are configured twice",
                        A::TYPE_NAME
                    ));
                }
            }
            None => self.problems.push(format!(
                "snapshots are configured for aggregate {}, which is not registered (register it first)",
                A::TYPE_NAME
            )),
        }
        self
    }

    /// Registers a projection: a processor that answers queries, delivered in the background.
    pub fn register_projection<P: EventProcessor>(self, projection: P) -> Self {
        self.register_projection_with(projection, ProcessorSettings::default())
    }

    /// Registers a projection with its own delivery, batching and failure settings.
    pub fn register_projection_with<P: EventProcessor>(
        mut self,
        projection: P,
        settings: ProcessorSettings,
    ) -> Self {
        self.processors
            .push(ProcessorRegistration::new(projection, settings));
        self
    }

    /// Registers a saga. Sagas are always delivered in the background (a step that sends a
    /// command must not wait for its own delivery).
    pub fn register_saga<S: Saga>(self, saga: S) -> Self {
        self.register_saga_with(saga, ProcessorSettings::default())
    }

    /// Registers a saga with its own batching and failure settings (delivery stays background).
    pub fn register_saga_with<S: Saga>(mut self, saga: S, settings: ProcessorSettings) -> Self {
        let (processor, problems) = SagaProcessor::new(saga);
        self.problems.extend(problems);
        self.sagas.push(S::NAME);
        self.processors.push(ProcessorRegistration::new(
            processor,
            settings.delivery(Delivery::Background),
        ));
        self
    }

    /// Registers an event processor (reacts to events), delivered in the background.
    pub fn register_event_processor<P: EventProcessor>(self, processor: P) -> Self {
        self.register_projection_with(processor, ProcessorSettings::default())
    }

    /// Registers a processor that applies whole batches and stores its checkpoint with its read
    /// model (for example a SQL view in the event store's database).
    pub fn register_batch_processor<T: BatchProcessor>(self, processor: T) -> Self {
        self.register_batch_processor_with(processor, ProcessorSettings::default())
    }

    /// Registers a batch processor with its own settings.
    pub fn register_batch_processor_with<T: BatchProcessor>(
        mut self,
        processor: T,
        settings: ProcessorSettings,
    ) -> Self {
        self.processors
            .push(ProcessorRegistration::batch(processor, settings));
        self
    }

    /// Registers an event processor with its own settings.
    pub fn register_event_processor_with<P: EventProcessor>(
        self,
        processor: P,
        settings: ProcessorSettings,
    ) -> Self {
        self.register_projection_with(processor, settings)
    }

    /// Registers a dependency: handlers take it as a [`Dep<T>`](crate::Dep) parameter (or from
    /// their context). One value per type.
    pub fn register_dependency<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        if !self.dependencies.insert(Arc::new(value)) {
            self.problems.push(format!(
                "dependency {} is registered twice",
                std::any::type_name::<T>()
            ));
        }
        self
    }

    /// Registers a dependency that also starts and stops with the application.
    pub fn register_managed_dependency<T: Lifecycle>(mut self, value: T) -> Self {
        let value = Arc::new(value);
        if !self.dependencies.insert(value.clone()) {
            self.problems.push(format!(
                "dependency {} is registered twice",
                std::any::type_name::<T>()
            ));
        }
        self.hooks.push(Arc::new(SharedHook(value)));
        self
    }

    /// Names this process among the processes that run the same application over one store:
    /// the owner of the partition leases it takes (see [`ProcessorSettings::partitions`]).
    /// Default: the process id plus a random suffix, unique per `build()`. Two processes must
    /// never share a node id.
    pub fn with_node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// Uses this clock for saga deadlines (default: the system clock).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Registers a lifecycle hook: started by `start()` in registration order, shut down by
    /// `shutdown()` in reverse order.
    pub fn register_lifecycle(mut self, hook: impl Lifecycle) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Adds a middleware around command and query handling. The first registered is the
    /// outermost; limit one to some message types with
    /// [`MiddlewareExt::only`](crate::middleware::MiddlewareExt::only).
    pub fn register_middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Box::new(middleware));
        self
    }

    /// Registers an upcaster: events stored as its `(type name, version)` are converted on every
    /// read (aggregate loads, processors, rebuilds). Chains form on their own: register 1→2 and
    /// 2→3 and a version-1 event reads as version 3.
    pub fn register_upcaster(mut self, upcaster: impl Upcaster) -> Self {
        if let Err(e) = self.upcasters.register(upcaster) {
            self.problems.push(e.reason().to_owned());
        }
        self
    }

    /// Uses this event store (the default is a fresh [`InMemoryEventStore`]). Its side stores
    /// (checkpoints, dead letters, ...) are used too when it has them.
    pub fn with_event_store(mut self, store: impl EventStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Uses an event store already shared with other parts of the program.
    pub fn with_shared_event_store(mut self, store: Arc<dyn EventStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Checks the wiring and builds the application. Every problem found is reported at once.
    pub fn build(self) -> Result<Application, BuildError> {
        let mut problems = self.problems;
        if self.aggregates.is_empty() && self.processors.is_empty() {
            problems.push(
                "no aggregate or processor is registered: call register_aggregate::<A>()"
                    .to_owned(),
            );
        }
        let mut by_type: HashMap<TypeId, &'static str> = HashMap::new();
        let mut by_name: HashMap<&'static str, usize> = HashMap::new();
        let mut commands: HashMap<TypeId, (&'static str, &'static str)> = HashMap::new();
        for registration in &self.aggregates {
            problems.extend(registration.problems.iter().cloned());
            if by_type
                .insert(registration.type_id, registration.type_name)
                .is_some()
            {
                problems.push(format!(
                    "aggregate {} is registered twice",
                    registration.type_name
                ));
                continue;
            }
            let count = by_name.entry(registration.type_name).or_default();
            *count += 1;
            if *count == 2 {
                problems.push(format!(
                    "two aggregate types share the type name {}: their streams would mix; give one another name",
                    registration.type_name
                ));
            }
            for route in &registration.routes {
                if let Some((_, other)) = commands.get(&route.type_id) {
                    problems.push(format!(
                        "command {} is handled by both {other} and {}: a command has exactly one handler",
                        route.command_type, route.aggregate_type
                    ));
                } else {
                    commands.insert(route.type_id, (route.command_type, route.aggregate_type));
                }
            }
        }
        let mut processor_names = HashSet::new();
        let mut queries: HashMap<TypeId, (&'static str, &'static str)> = HashMap::new();
        let store_has_leases = self
            .store
            .as_ref()
            .is_none_or(|store| store.side_stores().is_none_or(|side| side.leases.is_some()));
        for registration in &self.processors {
            problems.extend(registration.problems.iter().cloned());
            problems.extend(registration.settings_problems(store_has_leases));
            if !processor_names.insert(registration.name) {
                problems.push(format!(
                    "two processors are named {}: each needs its own name for its checkpoint",
                    registration.name
                ));
            }
            for route in &registration.queries {
                if let Some((_, other)) = queries.get(&route.type_id) {
                    problems.push(format!(
                        "query {} is answered by both {other} and {}: a query has exactly one projection",
                        route.query_type, route.processor
                    ));
                } else {
                    queries.insert(route.type_id, (route.query_type, route.processor));
                }
            }
        }
        let needs = self
            .aggregates
            .iter()
            .map(|a| ("aggregate", a.type_name, &a.requirements))
            .chain(
                self.processors
                    .iter()
                    .map(|p| ("processor", p.name, &p.requirements)),
            );
        for (kind, name, requirements) in needs {
            for requirement in requirements {
                if !self.dependencies.contains(requirement.type_id) {
                    problems.push(format!(
                        "{kind} {name} needs dependency {}, which is not registered (register_dependency)",
                        requirement.type_name
                    ));
                }
            }
        }
        let mut known_events: HashMap<&'static str, (u32, &'static str)> = HashMap::new();
        let readers = self
            .aggregates
            .iter()
            .map(|a| (a.type_name, &a.events))
            .chain(self.processors.iter().map(|p| (p.name, &p.events)));
        for (reader, events) in readers {
            for &(event, version) in events {
                match known_events.get(event) {
                    Some(&(other, first)) if other != version => problems.push(format!(
                        "event type {event} is read as schema version {other} by {first} and as version {version} by {reader}"
                    )),
                    Some(_) => {}
                    None => {
                        known_events.insert(event, (version, reader));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(BuildError { problems });
        }
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(InMemoryEventStore::new()));
        let side = store
            .side_stores()
            .unwrap_or_else(|| SideStores::from_backend(InMemoryEventStore::new()));
        let env = MiddlewareEnv { side: side.clone() };
        let middleware = self
            .middleware
            .into_iter()
            .map(|mut m| {
                m.attach(&env);
                Arc::from(m)
            })
            .collect();
        let known_events = known_events.into_iter().map(|(k, (v, _))| (k, v)).collect();
        let parts = EngineParts {
            store,
            side,
            upcasters: Arc::new(self.upcasters),
            known_events,
            aggregates: self.aggregates,
            processors: self.processors,
            middleware,
            hooks: self.hooks,
            sagas: self.sagas,
            node: self.node_id.map_or_else(default_node_id, Arc::from),
        };
        let dependencies = self.dependencies;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let side_for_services = parts.side.clone();
        let engine = Arc::new_cyclic(|weak| {
            let services = Arc::new(Services {
                dependencies,
                engine: weak.clone(),
                side: Some(side_for_services),
                clock,
            });
            Engine::new(parts, services)
        });
        Ok(Application { engine })
    }
}

/// A node id unique to this process and build: the process id and a random suffix.
fn default_node_id() -> Arc<str> {
    let random = uuid::Uuid::new_v4().simple().to_string();
    Arc::from(format!("pid{}-{}", std::process::id(), &random[..12]))
}
