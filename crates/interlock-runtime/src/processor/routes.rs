//! The events and queries one processor declares.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use interlock_core::{Event, Query, RecordedEvent};
use tokio::sync::RwLock;

use super::{AnswersQuery, EventContext, EventProcessor, HandlerError, HandlesEvent};
use crate::services::{FromServices, Requirement, Services};

/// Decodes a stored event and hands it to the processor's handler.
pub(crate) type InvokeFn<P> = for<'a> fn(
    &'a mut P,
    &'a RecordedEvent,
    &'static str,
    &'a Services,
) -> BoxFuture<'a, Result<(), HandlerError>>;

/// Answers one query type from a shared projection.
pub(crate) type QueryFn<Q> =
    Arc<dyn Fn(Q) -> BoxFuture<'static, Result<<Q as Query>::Output, HandlerError>> + Send + Sync>;

type QueryFactory<P> = Box<dyn FnOnce(Arc<RwLock<P>>) -> Box<dyn Any + Send + Sync> + Send>;

/// One query route, type-erased: holds a `QueryFn<Q>`.
pub(crate) struct QueryRoute {
    pub(crate) query_type: &'static str,
    pub(crate) type_id: TypeId,
    pub(crate) processor: &'static str,
    pub(crate) answer: Box<dyn Any + Send + Sync>,
}

/// The list of events a processor handles and queries it answers, filled in
/// [`EventProcessor::configure`].
pub struct ProcessorRoutes<P: EventProcessor> {
    pub(crate) events: HashMap<&'static str, InvokeFn<P>>,
    /// The event types handled, with the schema version each handler expects.
    pub(crate) versions: Vec<(&'static str, u32)>,
    /// Dependencies the handlers take, checked by `build()`.
    pub(crate) requirements: Vec<Requirement>,
    queries: Vec<(&'static str, TypeId, QueryFactory<P>)>,
    pub(crate) problems: Vec<String>,
}

impl<P: EventProcessor> ProcessorRoutes<P> {
    pub(crate) fn collect() -> Self {
        let mut routes = Self {
            events: HashMap::new(),
            versions: Vec::new(),
            requirements: Vec::new(),
            queries: Vec::new(),
            problems: Vec::new(),
        };
        P::configure(&mut routes);
        if routes.events.is_empty() {
            routes.problems.push(format!(
                "processor {} handles no event: declare at least one in configure (or #[handles_event])",
                P::NAME
            ));
        }
        routes
    }

    /// Delivers events of type `E` to this processor.
    pub fn event<E: Event>(&mut self) -> &mut Self
    where
        P: HandlesEvent<E>,
    {
        self.versions.push((E::TYPE_NAME, E::SCHEMA_VERSION));
        if self.events.insert(E::TYPE_NAME, invoke::<P, E>).is_some() {
            self.problems.push(format!(
                "processor {} handles event type {} twice",
                P::NAME,
                E::TYPE_NAME
            ));
        }
        self
    }

    /// Declares that a handler takes `T` (a [`Dep`](crate::Dep), say), so `build()` checks it
    /// is registered.
    pub fn requires<T: FromServices>(&mut self) -> &mut Self {
        self.requirements.extend(T::requirement());
        self
    }

    /// Routes query `Q` to this projection.
    pub fn query<Q: Query>(&mut self) -> &mut Self
    where
        P: AnswersQuery<Q>,
    {
        if self
            .queries
            .iter()
            .any(|(_, id, _)| *id == TypeId::of::<Q>())
        {
            self.problems.push(format!(
                "projection {} answers query {} twice",
                P::NAME,
                Q::TYPE_NAME
            ));
            return self;
        }
        let factory: QueryFactory<P> = Box::new(|shared: Arc<RwLock<P>>| {
            let answer: QueryFn<Q> = Arc::new(move |query: Q| {
                let shared = shared.clone();
                Box::pin(async move { shared.read().await.answer(query).await })
            });
            Box::new(answer)
        });
        self.queries
            .push((Q::TYPE_NAME, TypeId::of::<Q>(), factory));
        self
    }

    pub(crate) fn take_queries(&mut self, shared: &Arc<RwLock<P>>) -> Vec<QueryRoute> {
        self.queries
            .drain(..)
            .map(|(query_type, type_id, factory)| QueryRoute {
                query_type,
                type_id,
                processor: P::NAME,
                answer: factory(shared.clone()),
            })
            .collect()
    }
}

fn invoke<'a, P: HandlesEvent<E>, E: Event>(
    processor: &'a mut P,
    event: &'a RecordedEvent,
    name: &'static str,
    services: &'a Services,
) -> BoxFuture<'a, Result<(), HandlerError>> {
    Box::pin(async move {
        let payload = event.decode::<E>()?;
        let ctx = EventContext::new(event, name).with_services(services);
        processor.handle(payload, &ctx).await
    })
}
