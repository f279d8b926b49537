//! Aggregates: the traits a domain type implements (by hand or through `#[aggregate]`) and the
//! routing tables built from them.
//!
//! The plain-trait path, which the macros generate exactly:
//!
//! ```
//! use interlock_runtime::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Add { counter: String, by: u32 }
//! impl Command for Add {
//!     type Output = u32;
//!     const TYPE_NAME: &'static str = "Add";
//!     fn aggregate_id(&self) -> AggregateId { self.counter.as_str().into() }
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Added { by: u32 }
//! impl Event for Added { const TYPE_NAME: &'static str = "Added"; }
//!
//! #[derive(Default)]
//! struct Counter { total: u32 }
//!
//! impl Aggregate for Counter {
//!     const TYPE_NAME: &'static str = "Counter";
//!     fn configure(routes: &mut AggregateRoutes<Self>) {
//!         routes.creating_command::<Add>().event::<Added>();
//!     }
//! }
//! impl HandlesCommand<Add> for Counter {
//!     async fn handle(&mut self, cmd: Add, _ctx: &CommandContext) -> Result<u32, DomainError> {
//!         self.emit(Added { by: cmd.by });
//!         Ok(self.total) // `emit` applied the event already
//!     }
//! }
//! impl AppliesEvent<Added> for Counter {
//!     fn apply(&mut self, e: &Added) { self.total += e.by; }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let app = Application::builder().register_aggregate::<Counter>().build()?;
//! assert_eq!(app.dispatch(Add { counter: "c".into(), by: 2 }).await?, 2);
//! assert_eq!(app.dispatch(Add { counter: "c".into(), by: 3 }).await?, 5);
//! assert_eq!(app.load::<Counter>("c").await?.total, 5);
//! # Ok::<(), interlock_runtime::Error>(())
//! # }).unwrap();
//! ```

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use interlock_core::upcast::Upcasters;
use interlock_core::{Command, DecodeError, DecodeReason, Event, RecordedEvent};

use crate::cache::FastState;
use crate::context::{CommandContext, DispatchOptions, Dispatched};
use crate::engine::Engine;
use crate::error::{DomainError, Error};

/// A consistency boundary: state rebuilt from its events, deciding on commands.
///
/// Implemented by `#[aggregate]`, or by hand (see the [module docs](self)).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an aggregate",
    label = "not an aggregate",
    note = "add `#[aggregate]` to the type and to its impl block, or implement `Aggregate` by hand (it also needs `Default`)"
)]
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate's type name: the category of its streams. Changing it orphans stored streams.
    const TYPE_NAME: &'static str;

    /// Version of the aggregate's state shape, recorded with snapshots so that a snapshot of an
    /// older shape is ignored instead of misread.
    const SCHEMA_VERSION: u32 = 1;

    /// Declares the commands this aggregate handles and the events it applies.
    fn configure(routes: &mut AggregateRoutes<Self>);
}

/// An aggregate that handles command `C`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not handle command `{C}`",
    note = "add a `#[handles_command]` method taking `{C}` to the `#[aggregate] impl` block of `{Self}`"
)]
pub trait HandlesCommand<C: Command>: Aggregate {
    /// Decides on the command: validates it against the current state and emits events with
    /// [`Emit::emit`]. Returning an error stores nothing and leaves no trace in any cached state.
    fn handle(
        &mut self,
        command: C,
        ctx: &CommandContext,
    ) -> impl Future<Output = Result<C::Output, DomainError>> + Send;
}

/// An aggregate that folds event `E` into its state.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no applier for event `{E}`",
    note = "add an `#[applies_event]` method taking `&{E}` to the `#[aggregate] impl` block of `{Self}`"
)]
pub trait AppliesEvent<E: Event>: Aggregate {
    /// Applies the event. Appliers cannot fail: the event already happened.
    fn apply(&mut self, event: &E);
}

/// What to do with a stored or emitted event the aggregate has no applier for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownEventPolicy {
    /// Fail: emitting it fails the command, loading it fails the load with a typed error.
    #[default]
    Error,
    /// Skip it: store it when emitted, ignore it when loading.
    Ignore,
}

pub(crate) type CommandFn<C> = Arc<
    dyn Fn(Arc<Engine>, C, DispatchOptions) -> BoxFuture<'static, DispatchResult<C>> + Send + Sync,
>;
type DispatchResult<C> = Result<Dispatched<<C as Command>::Output>, Error>;

/// One command route of one aggregate, type-erased so routes of all commands fit in one map.
pub(crate) struct CommandRoute {
    pub(crate) command_type: &'static str,
    pub(crate) type_id: TypeId,
    pub(crate) aggregate_type: &'static str,
    /// Holds a `CommandFn<C>`.
    pub(crate) handler: Box<dyn Any + Send + Sync>,
}

type RouteFactory<A> = Box<dyn FnOnce(Arc<AggregateRuntime<A>>) -> CommandRoute + Send>;

/// Decodes a stored event and applies it (`None`: a known event the state ignores).
type StoredApplier<A> = Option<fn(&mut A, &RecordedEvent) -> Result<(), DecodeError>>;
/// Applies an event just emitted, given as `&dyn Any` (`None`: known, ignored).
type TypedApplier<A> = Option<fn(&mut A, &dyn Any)>;

struct EventRoute<A> {
    type_name: &'static str,
    schema_version: u32,
    type_id: TypeId,
    apply_stored: StoredApplier<A>,
    apply_typed: TypedApplier<A>,
}

/// The list of commands and events an aggregate declares in [`Aggregate::configure`].
pub struct AggregateRoutes<A: Aggregate> {
    requirements: Vec<crate::services::Requirement>,
    commands: Vec<(&'static str, TypeId, RouteFactory<A>)>,
    events: Vec<EventRoute<A>>,
}

impl<A: Aggregate> AggregateRoutes<A> {
    fn new() -> Self {
        Self {
            requirements: Vec::new(),
            commands: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Routes command `C` to this aggregate; the instance must already exist.
    pub fn command<C: Command>(&mut self) -> &mut Self
    where
        A: HandlesCommand<C>,
    {
        self.add_command::<C>(false)
    }

    /// Routes command `C` to this aggregate; it may create the instance.
    pub fn creating_command<C: Command>(&mut self) -> &mut Self
    where
        A: HandlesCommand<C>,
    {
        self.add_command::<C>(true)
    }

    fn add_command<C: Command>(&mut self, creates: bool) -> &mut Self
    where
        A: HandlesCommand<C>,
    {
        let factory: RouteFactory<A> = Box::new(move |runtime: Arc<AggregateRuntime<A>>| {
            let handler: CommandFn<C> = Arc::new(move |engine, command, options| {
                // One future, not an async block around `execute`'s: the block's own copy of
                // the arguments pushed the future past the allocator's per-thread cache size.
                Box::pin(crate::dispatch::execute::<A, C>(
                    engine,
                    runtime.clone(),
                    command,
                    options,
                    creates,
                ))
            });
            CommandRoute {
                command_type: C::TYPE_NAME,
                type_id: TypeId::of::<C>(),
                aggregate_type: A::TYPE_NAME,
                handler: Box::new(handler),
            }
        });
        self.commands
            .push((C::TYPE_NAME, TypeId::of::<C>(), factory));
        self
    }

    /// Declares that a handler takes `T` (a [`Dep`](crate::Dep), say), so `build()` checks it
    /// is registered.
    pub fn requires<T: crate::services::FromServices>(&mut self) -> &mut Self {
        self.requirements.extend(T::requirement());
        self
    }

    /// Declares that this aggregate applies event `E`.
    pub fn event<E: Event>(&mut self) -> &mut Self
    where
        A: AppliesEvent<E>,
    {
        self.events.push(EventRoute {
            type_name: E::TYPE_NAME,
            schema_version: E::SCHEMA_VERSION,
            type_id: TypeId::of::<E>(),
            apply_stored: Some(apply_stored::<A, E>),
            apply_typed: Some(apply_typed::<A, E>),
        });
        self
    }

    /// Declares that this aggregate emits event `E` but its state does not depend on it: emitting
    /// and loading it are fine under [`UnknownEventPolicy::Error`], and nothing is applied.
    pub fn ignored_event<E: Event>(&mut self) -> &mut Self {
        self.events.push(EventRoute {
            type_name: E::TYPE_NAME,
            schema_version: E::SCHEMA_VERSION,
            type_id: TypeId::of::<E>(),
            apply_stored: None,
            apply_typed: None,
        });
        self
    }
}

fn apply_stored<A: AppliesEvent<E>, E: Event>(
    state: &mut A,
    event: &RecordedEvent,
) -> Result<(), DecodeError> {
    event.check_schema_version(E::SCHEMA_VERSION)?;
    let payload: E = event.decode_payload()?;
    state.apply(&payload);
    Ok(())
}

fn apply_typed<A: AppliesEvent<E>, E: Event>(state: &mut A, event: &dyn Any) {
    if let Some(event) = event.downcast_ref::<E>() {
        state.apply(event);
    }
}

/// The applier tables of one aggregate type, indexed by stored type name and by Rust type.
pub(crate) struct Appliers<A> {
    by_name: HashMap<&'static str, StoredApplier<A>, FastState>,
    by_type: HashMap<TypeId, TypedApplier<A>, FastState>,
    pub(crate) policy: UnknownEventPolicy,
}

/// What emitting an event did to the state.
pub(crate) enum Applied {
    Yes,
    Ignored,
    NoApplier,
}

impl<A: Aggregate> Appliers<A> {
    /// Applies a typed event just emitted.
    pub(crate) fn apply_typed<E: Event>(&self, state: &mut A, event: &E) -> Applied {
        match self.by_type.get(&TypeId::of::<E>()) {
            Some(Some(apply)) => {
                apply(state, event);
                Applied::Yes
            }
            Some(None) => Applied::Ignored,
            None if self.policy == UnknownEventPolicy::Ignore => Applied::Ignored,
            None => Applied::NoApplier,
        }
    }

    /// Folds stored events into `state`, upcasting each first. On error the state may be partly
    /// applied: callers discard it, so an aggregate is never used half-loaded.
    pub(crate) fn fold(
        &self,
        state: &mut A,
        events: &[RecordedEvent],
        upcasters: &Upcasters,
    ) -> Result<(), DecodeError> {
        for stored in events {
            let event = upcasters.upcast(stored)?;
            self.apply_one(state, &event)?;
        }
        Ok(())
    }

    /// Applies one (already upcast) stored event.
    pub(crate) fn apply_one(
        &self,
        state: &mut A,
        event: &RecordedEvent,
    ) -> Result<(), DecodeError> {
        match self.by_name.get(event.event_type.as_str()) {
            Some(Some(apply)) => apply(state, event),
            Some(None) => Ok(()),
            None if self.policy == UnknownEventPolicy::Ignore => Ok(()),
            None => Err(event.decode_error(DecodeReason::UnknownType)),
        }
    }

    /// Builds the tables without the command routes (for emit outside an application).
    pub(crate) fn standalone() -> Self {
        let mut routes = AggregateRoutes::<A>::new();
        A::configure(&mut routes);
        let (appliers, _) = Self::from_routes(&mut routes, UnknownEventPolicy::default());
        appliers
    }

    fn from_routes(
        routes: &mut AggregateRoutes<A>,
        policy: UnknownEventPolicy,
    ) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let mut by_name = HashMap::default();
        let mut by_type = HashMap::default();
        for route in routes.events.drain(..) {
            if by_name
                .insert(route.type_name, route.apply_stored)
                .is_some()
            {
                problems.push(format!(
                    "aggregate {} declares event type {} twice (two appliers, or two Rust types with one type name)",
                    A::TYPE_NAME,
                    route.type_name
                ));
            }
            by_type.insert(route.type_id, route.apply_typed);
        }
        (
            Self {
                by_name,
                by_type,
                policy,
            },
            problems,
        )
    }
}

/// Per-aggregate-type runtime data shared by all its command routes.
pub(crate) struct AggregateRuntime<A> {
    /// `A::TYPE_NAME`, shared by the stream ids of every command (no allocation per command).
    pub(crate) category: Arc<str>,
    pub(crate) appliers: Arc<Appliers<A>>,
    pub(crate) cache: crate::cache::AggregateCache<A>,
    /// Set by `ApplicationBuilder::with_snapshots`.
    pub(crate) snapshots: std::sync::OnceLock<crate::snapshot::SnapshotConfig<A>>,
}

/// Settings for one aggregate type, given to
/// [`ApplicationBuilder::register_aggregate_with`](crate::ApplicationBuilder::register_aggregate_with).
#[derive(Clone, Copy, Debug)]
pub struct AggregateSettings {
    pub(crate) cache_capacity: usize,
    pub(crate) unknown_events: UnknownEventPolicy,
}

impl Default for AggregateSettings {
    fn default() -> Self {
        Self {
            cache_capacity: 1024,
            unknown_events: UnknownEventPolicy::Error,
        }
    }
}

impl AggregateSettings {
    /// Default settings: a cache of 1024 instances, unknown events are errors.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many instances to keep in memory between commands (0 disables the cache). The cache
    /// always reads the stream's tail before use, so other writers never make it stale.
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// What to do with events the aggregate has no applier for.
    pub fn unknown_events(mut self, policy: UnknownEventPolicy) -> Self {
        self.unknown_events = policy;
        self
    }
}

/// The result of registering one aggregate type: its routes and problems, ready for the engine.
pub(crate) struct AggregateRegistration {
    pub(crate) type_name: &'static str,
    pub(crate) type_id: TypeId,
    pub(crate) routes: Vec<CommandRoute>,
    /// Holds an `Arc<AggregateRuntime<A>>`.
    pub(crate) runtime: Arc<dyn Any + Send + Sync>,
    pub(crate) problems: Vec<String>,
    /// The event types it reads, with the schema version it expects.
    pub(crate) events: Vec<(&'static str, u32)>,
    /// Dependencies its handlers take.
    pub(crate) requirements: Vec<crate::services::Requirement>,
}

impl AggregateRegistration {
    pub(crate) fn new<A: Aggregate>(settings: &AggregateSettings) -> Self {
        let mut routes = AggregateRoutes::<A>::new();
        A::configure(&mut routes);
        let events = routes
            .events
            .iter()
            .map(|r| (r.type_name, r.schema_version))
            .collect();
        let (appliers, mut problems) = Appliers::from_routes(&mut routes, settings.unknown_events);
        let runtime = Arc::new(AggregateRuntime {
            category: Arc::from(A::TYPE_NAME),
            appliers: Arc::new(appliers),
            cache: crate::cache::AggregateCache::new(settings.cache_capacity),
            snapshots: std::sync::OnceLock::new(),
        });
        let mut seen = HashMap::new();
        let mut command_routes = Vec::new();
        for (name, type_id, factory) in routes.commands {
            if seen.insert(type_id, name).is_some() {
                problems.push(format!(
                    "aggregate {} routes command {name} twice",
                    A::TYPE_NAME
                ));
                continue;
            }
            command_routes.push(factory(runtime.clone()));
        }
        if command_routes.is_empty() {
            problems.push(format!(
                "aggregate {} handles no command: declare at least one in configure (or #[handles_command])",
                A::TYPE_NAME
            ));
        }
        Self {
            type_name: A::TYPE_NAME,
            type_id: TypeId::of::<A>(),
            routes: command_routes,
            runtime,
            problems,
            events,
            requirements: routes.requirements,
        }
    }
}
