//! Middleware around command and query handling.
//!
//! Each middleware wraps the ones registered after it: the first registered is the outermost. A
//! middleware sees the message's description ([`MessageInfo`]), may change the
//! [`DispatchOptions`], calls [`Next::run`] zero times (short-circuit), once, or several times
//! (retries), and may change the result.
//!
//! ```
//! use futures::future::BoxFuture;
//! use interlock_runtime::middleware::{MessageInfo, Middleware, Next, Outcome};
//! use interlock_runtime::{DispatchOptions, Error};
//!
//! /// Refuses every command while the system is read-only.
//! struct ReadOnly;
//!
//! impl Middleware for ReadOnly {
//!     fn intercepts(&self, message: &MessageInfo) -> bool {
//!         message.is_command()
//!     }
//!     fn handle<'a>(
//!         &'a self,
//!         message: &'a MessageInfo,
//!         _options: DispatchOptions,
//!         _next: Next<'a>,
//!     ) -> BoxFuture<'a, Result<Outcome, Error>> {
//!         let refusal = interlock_runtime::DomainError::new(format!(
//!             "{} refused: the system is read-only",
//!             message.type_name()
//!         ));
//!         Box::pin(async move { Err(Error::Domain(refusal)) })
//!     }
//! }
//! ```

mod builtin;
mod idempotency;

use std::any::{Any, TypeId};
use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use interlock_core::{AggregateId, Position};

pub use builtin::{
    ConcurrencyRetryMiddleware, ContextPropagationMiddleware, LoggingMiddleware, TimeoutMiddleware,
};
pub use idempotency::IdempotencyMiddleware;
#[allow(unused_imports)] // used by the saga command sender
pub(crate) use idempotency::run_idempotent;

use crate::context::DispatchOptions;
use crate::error::Error;

/// Whether a message is a command or a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A command: changes one aggregate.
    Command,
    /// A query: reads a projection.
    Query,
}

type Encode = fn(&(dyn Any + Send)) -> Result<serde_json::Value, serde_json::Error>;
type Decode = fn(serde_json::Value) -> Result<Box<dyn Any + Send>, serde_json::Error>;

/// What a middleware knows about the message it wraps.
#[derive(Clone, Debug)]
pub struct MessageInfo {
    pub(crate) kind: MessageKind,
    pub(crate) type_name: &'static str,
    pub(crate) type_id: TypeId,
    pub(crate) handler: &'static str,
    pub(crate) aggregate_id: Option<AggregateId>,
    pub(crate) codec: Option<(Encode, Decode)>,
}

impl MessageInfo {
    pub(crate) fn command<C: interlock_core::Command>(
        aggregate: &'static str,
        id: AggregateId,
    ) -> Self {
        Self {
            kind: MessageKind::Command,
            type_name: C::TYPE_NAME,
            type_id: TypeId::of::<C>(),
            handler: aggregate,
            aggregate_id: Some(id),
            codec: Some((encode::<C::Output>, decode::<C::Output>)),
        }
    }

    pub(crate) fn query<Q: interlock_core::Query>(projection: &'static str) -> Self {
        Self {
            kind: MessageKind::Query,
            type_name: Q::TYPE_NAME,
            type_id: TypeId::of::<Q>(),
            handler: projection,
            aggregate_id: None,
            codec: None,
        }
    }

    /// Command or query.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }
    /// Whether it is a command.
    pub fn is_command(&self) -> bool {
        self.kind == MessageKind::Command
    }
    /// The message's type name.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
    /// Whether the message's Rust type has this id.
    pub fn is_type_id(&self, type_id: TypeId) -> bool {
        self.type_id == type_id
    }
    /// Whether the message is of Rust type `M`.
    pub fn is<M: 'static>(&self) -> bool {
        self.type_id == TypeId::of::<M>()
    }
    /// The aggregate type (commands) or projection (queries) that handles it; empty when no
    /// handler is registered (a middleware may still answer the message).
    pub fn handler(&self) -> &'static str {
        self.handler
    }
    /// The target aggregate instance (commands).
    pub fn aggregate_id(&self) -> Option<&AggregateId> {
        self.aggregate_id.as_ref()
    }

    /// The output as JSON (commands' outputs are serde types).
    pub fn encode_output(
        &self,
        outcome: &Outcome,
    ) -> Option<Result<serde_json::Value, serde_json::Error>> {
        self.codec.map(|(encode, _)| encode(&*outcome.output))
    }

    /// An outcome from an output stored as JSON earlier (nothing stored this time).
    pub fn decode_output(
        &self,
        value: serde_json::Value,
    ) -> Option<Result<Outcome, serde_json::Error>> {
        self.codec.map(|(_, decode)| {
            decode(value).map(|output| Outcome {
                output,
                version: None,
                events: 0,
                position: None,
            })
        })
    }
}

fn encode<T: serde::Serialize + 'static>(
    output: &(dyn Any + Send),
) -> Result<serde_json::Value, serde_json::Error> {
    match output.downcast_ref::<T>() {
        Some(output) => serde_json::to_value(output),
        None => Err(serde::ser::Error::custom("output of an unexpected type")),
    }
}

fn decode<T: serde::de::DeserializeOwned + Send + 'static>(
    value: serde_json::Value,
) -> Result<Box<dyn Any + Send>, serde_json::Error> {
    Ok(Box::new(serde_json::from_value::<T>(value)?))
}

/// The result of handling a message, as middleware sees it: the handler's output, type-erased,
/// and what was stored.
#[derive(Debug)]
pub struct Outcome {
    /// The handler's output (downcast with [`Outcome::output_ref`]).
    pub output: Box<dyn Any + Send>,
    /// The aggregate's version afterwards (commands that ran; `None` when answered otherwise).
    pub version: Option<u64>,
    /// Events stored.
    pub events: usize,
    /// Position of the last stored event.
    pub position: Option<Position>,
}

impl Outcome {
    /// The output, if it is a `T`.
    pub fn output_ref<T: 'static>(&self) -> Option<&T> {
        self.output.downcast_ref::<T>()
    }
}

/// What a middleware can take from the application when it is built.
#[derive(Clone, Debug)]
pub struct MiddlewareEnv {
    pub(crate) side: interlock_core::SideStores,
}

impl MiddlewareEnv {
    /// The application's idempotency key store.
    pub fn idempotency_store(&self) -> &Arc<dyn interlock_core::side::IdempotencyStore> {
        &self.side.idempotency
    }
}

/// Wraps command and query handling. See the [module docs](self).
pub trait Middleware: Send + Sync + 'static {
    /// Called once by `build()`, before any message, with what the application offers.
    fn attach(&mut self, env: &MiddlewareEnv) {
        let _ = env;
    }

    /// Whether to wrap this message (default: every message).
    fn intercepts(&self, message: &MessageInfo) -> bool {
        let _ = message;
        true
    }

    /// Handles the message, usually by calling `next.run(options)`.
    fn handle<'a>(
        &'a self,
        message: &'a MessageInfo,
        options: DispatchOptions,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Outcome, Error>>;
}

/// The innermost step: runs the handler (a fresh copy of the message each time it is called).
pub(crate) type Terminal<'a> =
    dyn Fn(DispatchOptions) -> BoxFuture<'a, Result<Outcome, Error>> + Send + Sync + 'a;

/// The rest of the chain, given to a middleware.
pub struct Next<'a> {
    chain: &'a [Arc<dyn Middleware>],
    message: &'a MessageInfo,
    terminal: &'a Terminal<'a>,
}

impl<'a> Next<'a> {
    pub(crate) fn new(
        chain: &'a [Arc<dyn Middleware>],
        message: &'a MessageInfo,
        terminal: &'a Terminal<'a>,
    ) -> Self {
        Self {
            chain,
            message,
            terminal,
        }
    }

    /// Runs the rest of the chain, then the handler. May be called more than once (each call
    /// handles the message afresh: reloaded aggregate, new attempt).
    pub fn run(&self, options: DispatchOptions) -> BoxFuture<'a, Result<Outcome, Error>> {
        let (chain, message, terminal) = (self.chain, self.message, self.terminal);
        match chain.iter().position(|m| m.intercepts(message)) {
            Some(i) => chain[i].handle(
                message,
                options,
                Next {
                    chain: &chain[i + 1..],
                    message,
                    terminal,
                },
            ),
            None => terminal(options),
        }
    }
}

/// A middleware limited to some message types; see [`MiddlewareExt::only`].
pub struct Only<M> {
    inner: M,
    types: HashSet<TypeId>,
}

impl<M> Only<M> {
    /// Also wraps messages of type `T`.
    pub fn and<T: 'static>(mut self) -> Self {
        self.types.insert(TypeId::of::<T>());
        self
    }
}

impl<M: Middleware> Middleware for Only<M> {
    fn attach(&mut self, env: &MiddlewareEnv) {
        self.inner.attach(env);
    }

    fn intercepts(&self, message: &MessageInfo) -> bool {
        self.types.contains(&message.type_id) && self.inner.intercepts(message)
    }

    fn handle<'a>(
        &'a self,
        message: &'a MessageInfo,
        options: DispatchOptions,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        self.inner.handle(message, options, next)
    }
}

/// Targeting a middleware at chosen message types.
pub trait MiddlewareExt: Middleware + Sized {
    /// Wraps only messages of type `T` (add more with [`Only::and`]).
    fn only<T: 'static>(self) -> Only<Self> {
        Only {
            inner: self,
            types: HashSet::from([TypeId::of::<T>()]),
        }
    }
}

impl<M: Middleware> MiddlewareExt for M {}
