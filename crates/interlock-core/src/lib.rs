//! # interlock-core
//!
//! The contracts of the Interlock event-sourcing framework, kept small and stable so that
//! backends and tools can depend on them without pulling in a runtime:
//!
//! * [`Command`], [`Query`] and [`Event`]: the three kinds of message.
//! * [`NewEvent`] and [`RecordedEvent`]: the envelope on its way in and as stored.
//! * [`StreamId`], [`EventId`], [`AggregateId`], [`Position`], [`ExpectedVersion`].
//! * [`EventStore`]: the store contract, with [`validate_append`] so that every backend refuses
//!   bad input the same way, and [`poll_subscription`] for catch-up-then-live subscriptions.
//! * The side stores of [`side`]: snapshots, checkpoints, saga state, dead letters and
//!   idempotency keys.
//! * The error types shared by every layer.
//!
//! Applications normally use the `interlock` facade crate, which re-exports all of this.
//!
//! ```
//! use interlock_core::{ExpectedVersion, Position, StreamId};
//! let stream = StreamId::new("BankAccount", "42")?;
//! assert!(ExpectedVersion::NoStream.is_satisfied_by(0));
//! assert!(Position::START < Position::from_sequence(1));
//! # Ok::<(), interlock_core::ValidationError>(())
//! ```

pub mod envelope;
pub mod error;
mod finite;
pub mod ids;
pub mod lease;
pub mod message;
pub mod position;
pub mod side;
pub mod store;
pub mod subscription;
pub mod upcast;

pub use envelope::{Metadata, NewEvent, RecordedEvent};
pub use error::{
    BoxError, ConcurrencyError, DecodeError, DecodeReason, StoreError, ValidationError,
};
pub use ids::{AggregateId, EventId, MAX_ID_LEN, StreamId};
pub use lease::{Lease, LeaseStore};
pub use message::{Command, Event, EventBatch, Query, SerializedEvent};
pub use position::{ExpectedVersion, Position};
pub use side::{
    CheckpointStore, DeadLetter, DeadLetterStore, IdempotencyClaim, IdempotencyStore,
    NewDeadLetter, SagaState, SagaStateStore, Snapshot, SnapshotStore, validate_json,
    validate_name,
};
pub use store::{
    AppendResult, EventRewrite, EventStore, EventSubscription, MAX_BATCH_LEN, MAX_PAYLOAD_LEN,
    MAX_TYPE_NAME_LEN, SideStores, StreamInfo, recognise_retry, validate_append, validate_rewrite,
};
pub use subscription::{AppendNotifier, poll_subscription};

#[doc(hidden)]
pub use async_trait::async_trait;
