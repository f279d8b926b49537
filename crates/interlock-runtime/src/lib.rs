//! # interlock-runtime
//!
//! The moving parts of an Interlock application, on top of the contracts in `interlock-core`:
//!
//! * [`Aggregate`], [`HandlesCommand`], [`AppliesEvent`] and [`Emit`]: the plain-trait path for
//!   domain types (the `#[aggregate]` macro generates exactly these impls).
//! * [`ApplicationBuilder`] and [`Application`]: registration, wiring checks, `dispatch`, `load`.
//! * [`InMemoryEventStore`]: the reference store.
//!
//! ## How a command runs
//!
//! `dispatch(cmd)` finds the one aggregate type that handles the command's type, loads the target
//! instance (a cached copy brought up to date with its stream's tail, or a full replay), runs the
//! handler inside an *emit scope* that applies each emitted event at once and records it, then
//! appends the recorded events with the version it loaded as the expected version. A handler
//! error, a serialization error or a concurrency conflict drops the working copy: nothing is
//! stored and no cached state changes.
//!
//! Most applications use the `interlock` facade crate, which re-exports this crate together with
//! the macros and the stores.

mod aggregate;
mod builder;
mod cache;
mod context;
mod dispatch;
mod emit;
mod engine;
mod error;
mod memory;
mod memory_side;
pub mod middleware;
pub mod migration;
pub mod processor;
pub mod saga;
mod services;
mod snapshot;
mod temporal;

pub use aggregate::{
    Aggregate, AggregateRoutes, AggregateSettings, AppliesEvent, HandlesCommand, UnknownEventPolicy,
};
pub use builder::ApplicationBuilder;
pub use context::{
    CommandContext, DispatchOptions, Dispatched, ExecutionContext, OUTPUT_METADATA_KEY,
};
pub use emit::Emit;
pub use engine::Application;
pub use error::{BuildError, DomainError, Error, ProcessingFailure};
pub use interlock_core as core;
pub use memory::InMemoryEventStore;
pub use processor::{
    AnswersQuery, EventContext, EventProcessor, HandlerError, HandlesEvent, ProcessorRoutes,
    ProcessorSettings,
};
pub use services::{
    Clock, CommandSender, Dep, Dependencies, FakeClock, FromServices, Lifecycle, Requirement,
    Services, SystemClock,
};
pub use snapshot::SnapshotPolicy;
pub use temporal::HistoryEntry;

/// What applications use daily.
pub mod prelude {
    pub use crate::{
        Aggregate, AggregateRoutes, AggregateSettings, Application, ApplicationBuilder,
        AppliesEvent, CommandContext, DispatchOptions, DomainError, Emit, Error, HandlesCommand,
        InMemoryEventStore,
    };
    pub use crate::{
        AnswersQuery, EventContext, EventProcessor, HandlerError, HandlesEvent, ProcessorRoutes,
        ProcessorSettings,
    };
    pub use crate::{CommandSender, Dep, Lifecycle};
    pub use interlock_core::{
        AggregateId, Command, Event, EventStore, ExpectedVersion, NewEvent, Position, Query,
        RecordedEvent, StreamId,
    };
}
