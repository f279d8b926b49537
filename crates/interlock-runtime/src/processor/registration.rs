//! Turning a registered processor into a running one once the stores are known.

use std::any::{Any, TypeId};
use std::sync::Arc;

use interlock_core::upcast::Upcasters;

use crate::services::{Requirement, Services};
use interlock_core::{EventStore, SideStores};
use tokio::sync::RwLock;

use super::batch::{BatchProcessor, BatchSink};
use super::core::{HandlerSink, ProcessorCore, ProcessorHandle, Sink};
use super::partition::PartitionedProcessor;
use super::routes::{ProcessorRoutes, QueryRoute};
use super::{EventProcessor, ProcessorSettings};

type Assemble = Box<dyn FnOnce(&ProcessorEnv) -> Arc<dyn ProcessorHandle> + Send>;

/// What every processor of an application shares: the stores and the upcasters.
#[derive(Clone)]
pub(crate) struct ProcessorEnv {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) side: SideStores,
    pub(crate) upcasters: Arc<Upcasters>,
    pub(crate) services: Arc<Services>,
    /// This process's id among the application's processes (lease owner).
    pub(crate) node: Arc<str>,
}

/// A processor registered with the builder, waiting for `build()` to give it its stores.
pub(crate) struct ProcessorRegistration {
    pub(crate) name: &'static str,
    pub(crate) queries: Vec<QueryRoute>,
    /// The shared instance (`Arc<RwLock<P>>`), by `TypeId::of::<P>()`, for inspection.
    pub(crate) instance: Option<(TypeId, Arc<dyn Any + Send + Sync>)>,
    pub(crate) problems: Vec<String>,
    /// The event types it handles, with the schema version it expects.
    pub(crate) events: Vec<(&'static str, u32)>,
    /// Dependencies its handlers take.
    pub(crate) requirements: Vec<Requirement>,
    pub(crate) settings: ProcessorSettings,
    assemble: Assemble,
}

impl ProcessorEnv {
    /// The environment one processor runs in: with `replay_on_start`, a checkpoint store of its
    /// own that lives and dies with the process.
    fn for_settings(&self, settings: &ProcessorSettings) -> Self {
        let mut env = self.clone();
        if settings.replay_on_start {
            env.side.checkpoints = Arc::new(crate::InMemoryEventStore::new());
        }
        env
    }
}

impl ProcessorRegistration {
    pub(crate) fn new<P: EventProcessor>(processor: P, settings: ProcessorSettings) -> Self {
        let shared = Arc::new(RwLock::new(processor));
        let mut routes = ProcessorRoutes::<P>::collect();
        let queries = routes.take_queries(&shared);
        let problems = std::mem::take(&mut routes.problems);
        let events = routes.versions.clone();
        let requirements = routes.requirements.clone();
        Self {
            name: P::NAME,
            queries,
            events,
            requirements,
            instance: Some((TypeId::of::<P>(), shared.clone())),
            problems,
            settings,
            assemble: Box::new(move |env| {
                let env = &env.for_settings(&settings);
                let sink = HandlerSink::new(shared, routes, settings, env);
                assemble_sink(sink, settings, env)
            }),
        }
    }

    /// A processor that takes whole batches and stores its own checkpoint.
    pub(crate) fn batch<T: BatchProcessor>(processor: T, settings: ProcessorSettings) -> Self {
        Self {
            name: T::NAME,
            queries: Vec::new(),
            events: Vec::new(),
            requirements: Vec::new(),
            instance: None,
            problems: Vec::new(),
            settings,
            assemble: Box::new(move |env| {
                let sink = BatchSink::new(processor, env.upcasters.clone(), settings.on_failure);
                assemble_sink(sink, settings, env)
            }),
        }
    }

    /// What is wrong with this processor's settings on a store with (or without) leases.
    pub(crate) fn settings_problems(&self, store_has_leases: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if self.settings.partitions.is_some() {
            if self.settings.delivery == super::Delivery::Inline {
                problems.push(format!(
                    "processor {} is partitioned and inline: partitions are delivered in the background",
                    self.name
                ));
            }
            if self.settings.replay_on_start {
                problems.push(format!(
                    "processor {} is partitioned and replays on start: partitions need durable checkpoints",
                    self.name
                ));
            }
            if !store_has_leases {
                problems.push(format!(
                    "processor {} is partitioned, but the event store keeps no leases",
                    self.name
                ));
            }
        }
        problems
    }

    pub(crate) fn assemble(self, env: &ProcessorEnv) -> Arc<dyn ProcessorHandle> {
        (self.assemble)(env)
    }
}

/// One core for a whole processor, or one per partition under a lease manager.
fn assemble_sink<S: Sink>(
    sink: S,
    settings: ProcessorSettings,
    env: &ProcessorEnv,
) -> Arc<dyn ProcessorHandle> {
    match (settings.partitions, env.side.leases.clone()) {
        (Some(count), Some(leases)) => Arc::new(PartitionedProcessor::new(
            sink, count, settings, env, leases,
        )),
        // `build()` refuses partitions without leases; this arm is not reached.
        _ => Arc::new(ProcessorCore::new(sink, settings, env)),
    }
}
