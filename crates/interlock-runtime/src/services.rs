//! Dependencies, the command sender and lifecycle hooks: what handlers can ask the application
//! for.
//!
//! Register a value with `ApplicationBuilder::register_dependency(value)`; a handler takes it as
//! a typed parameter ([`Dep<T>`]) or asks its context for it. Every requirement a handler
//! declares is checked by `build()`, which names the missing type.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use interlock_core::Command;

use crate::context::{DispatchOptions, Dispatched};
use crate::engine::{Application, Engine};
use crate::error::Error;
use crate::processor::HandlerError;

/// The typed dependency container.
#[derive(Default, Clone)]
pub struct Dependencies {
    by_type: HashMap<TypeId, (Arc<dyn Any + Send + Sync>, &'static str)>,
}

impl fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.by_type.values().map(|(_, n)| *n).collect();
        names.sort_unstable();
        f.debug_struct("Dependencies")
            .field("types", &names)
            .finish()
    }
}

impl Dependencies {
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: Arc<T>) -> bool {
        self.by_type
            .insert(TypeId::of::<T>(), (value, std::any::type_name::<T>()))
            .is_none()
    }

    /// The registered value of type `T`.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.by_type
            .get(&TypeId::of::<T>())
            .and_then(|(value, _)| value.clone().downcast::<T>().ok())
    }

    pub(crate) fn contains(&self, type_id: TypeId) -> bool {
        self.by_type.contains_key(&type_id)
    }
}

/// What the application offers to handlers: dependencies and a way to send commands.
#[derive(Clone, Debug)]
pub struct Services {
    pub(crate) dependencies: Dependencies,
    pub(crate) engine: Weak<Engine>,
    pub(crate) side: Option<interlock_core::SideStores>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Services {
    pub(crate) fn detached() -> Self {
        Self {
            dependencies: Dependencies::default(),
            engine: Weak::new(),
            side: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The registered dependency of type `T`, or [`Error::MissingDependency`].
    pub fn dependency<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, Error> {
        self.dependencies
            .get::<T>()
            .ok_or(Error::MissingDependency {
                type_name: std::any::type_name::<T>(),
            })
    }

    /// A sender for commands into this application.
    pub fn command_sender(&self) -> CommandSender {
        CommandSender {
            engine: self.engine.clone(),
        }
    }
}

/// The time, as the application sees it: the system clock, or a [`FakeClock`] in tests (saga
/// deadlines use it).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> chrono::DateTime<chrono::Utc>;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }
}

/// A clock that moves only when told to (for tests of deadlines).
#[derive(Clone, Debug)]
pub struct FakeClock {
    now: Arc<std::sync::Mutex<chrono::DateTime<chrono::Utc>>>,
}

impl FakeClock {
    /// A clock stopped at `start`.
    pub fn at(start: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            now: Arc::new(std::sync::Mutex::new(start)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A dependency requirement a handler declares, checked by `build()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub(crate) type_id: TypeId,
    pub(crate) type_name: &'static str,
}

/// A value a handler can take as a typed parameter (axum-extractor style).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler parameter",
    note = "handlers take dependencies as `Dep<T>` (after `register_dependency(value_of_T)`), or `CommandSender`"
)]
pub trait FromServices: Sized + Send {
    /// Takes the value from the application's services.
    fn from_services(services: &Services) -> Result<Self, Error>;
    /// The dependency this needs, for `build()` to check (`None`: always available).
    fn requirement() -> Option<Requirement>;
}

/// A registered dependency, as a handler parameter: `Dep<Clock>` gives the `Clock` registered
/// with `register_dependency(clock)`.
pub struct Dep<T>(pub Arc<T>);

impl<T> Deref for Dep<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Clone for Dep<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: fmt::Debug> fmt::Debug for Dep<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl<T: Send + Sync + 'static> FromServices for Dep<T> {
    fn from_services(services: &Services) -> Result<Self, Error> {
        services.dependency::<T>().map(Dep)
    }
    fn requirement() -> Option<Requirement> {
        Some(Requirement {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
        })
    }
}

impl FromServices for CommandSender {
    fn from_services(services: &Services) -> Result<Self, Error> {
        Ok(services.command_sender())
    }
    fn requirement() -> Option<Requirement> {
        None
    }
}

/// Sends commands into the application from inside handlers, processors and sagas.
///
/// Holds the application weakly: it never keeps a shut-down application alive.
#[derive(Clone, Debug)]
pub struct CommandSender {
    engine: Weak<Engine>,
}

impl CommandSender {
    /// Dispatches a command (through the middleware) and returns its output.
    pub async fn send<C: Command>(&self, command: C) -> Result<C::Output, Error> {
        Ok(self
            .send_with(command, DispatchOptions::default())
            .await?
            .output)
    }

    /// Dispatches a command with options.
    pub async fn send_with<C: Command>(
        &self,
        command: C,
        options: DispatchOptions,
    ) -> Result<Dispatched<C::Output>, Error> {
        self.application()?.dispatch_with(command, options).await
    }

    pub(crate) fn application(&self) -> Result<Application, Error> {
        self.engine
            .upgrade()
            .map(|engine| Application { engine })
            .ok_or(Error::ShutDown)
    }
}

/// Something that starts with the application and stops with it (a connection pool, a timer).
///
/// Hooks start in registration order and shut down in reverse; every hook runs even if another
/// failed, and the failures are reported together.
pub trait Lifecycle: Send + Sync + 'static {
    /// A name for error messages.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }
    /// Called by `Application::start`.
    fn start(&self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }
    /// Called by `Application::shutdown`.
    fn shutdown(&self) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async { Ok(()) }
    }
}

/// A lifecycle hook, type-erased.
pub(crate) trait ErasedLifecycle: Send + Sync {
    fn name(&self) -> String;
    fn start(&self) -> BoxFuture<'_, Result<(), HandlerError>>;
    fn shutdown(&self) -> BoxFuture<'_, Result<(), HandlerError>>;
}

impl<L: Lifecycle> ErasedLifecycle for L {
    fn name(&self) -> String {
        Lifecycle::name(self).to_owned()
    }
    fn start(&self) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(Lifecycle::start(self))
    }
    fn shutdown(&self) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(Lifecycle::shutdown(self))
    }
}

/// Runs every hook, collecting failures.
pub(crate) async fn run_hooks<'a>(
    hooks: impl Iterator<Item = &'a Arc<dyn ErasedLifecycle>>,
    starting: bool,
) -> Vec<String> {
    let mut failures = Vec::new();
    for hook in hooks {
        let result = if starting {
            hook.start().await
        } else {
            hook.shutdown().await
        };
        if let Err(e) = result {
            let phase = if starting { "start" } else { "shutdown" };
            failures.push(format!("{} failed to {phase}: {e}", hook.name()));
        }
    }
    failures
}

/// Type-erases a hook that is also a dependency.
pub(crate) struct SharedHook<T>(pub(crate) Arc<T>);

impl<T: Lifecycle> ErasedLifecycle for SharedHook<T> {
    fn name(&self) -> String {
        Lifecycle::name(&*self.0).to_owned()
    }
    fn start(&self) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(Lifecycle::start(&*self.0))
    }
    fn shutdown(&self) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(Lifecycle::shutdown(&*self.0))
    }
}
