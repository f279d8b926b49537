//! # interlock-mongodb
//!
//! The MongoDB event store of Interlock, on the official `mongodb` driver (tokio runtime).
//! Many application processes can share one MongoDB replica set; the store needs nothing else.
//!
//! [`MongoEventStore`] implements the whole [`EventStore`](interlock_core::EventStore)
//! contract, with the semantics of the in-memory reference store (checked by the shared
//! conformance suite), and every side store of [`interlock_core::side`]: snapshots,
//! checkpoints, saga state, dead letters and idempotency keys, in the same database. The
//! aliases [`MongoSnapshotStorage`], [`MongoSagaStateStore`], [`MongoIdempotencyStorage`],
//! [`MongoCheckpointStore`] and [`MongoDeadLetterStore`] name those roles; they are all the
//! same handle, and [`side_stores`](interlock_core::EventStore::side_stores) hands them to an
//! application given only the event store.
//!
//! ## Layout
//!
//! One database (default `interlock`) holds nine collections, named by [`CollectionNames`]
//! (default prefix `interlock_`):
//!
//! * `events`: one document per event. `_id` is its global position (int64), `event_id` a
//!   BSON UUID with a unique index (idempotent retries), `(category, stream_id, version)` a
//!   unique index: the final word on optimistic concurrency. `recorded_at` is a BSON
//!   datetime. Payload and metadata are the JSON bytes as BSON binary: they come back byte for
//!   byte, with no UTF-8 or number conversion in between (a string would also round-trip the
//!   payload, but JSON metadata is not always expressible as a BSON document: keys with NUL,
//!   integers above `i64::MAX`), and the store never queries inside them.
//! * `streams`: each stream's version, last position and times (unique on the stream).
//! * `counters`: `{_id: "events", value}`, the last global position handed out, and the last
//!   dead-letter id.
//! * `snapshots`, `checkpoints`, `saga_states`, `dead_letters`, `idempotency_keys`.
//!
//! The ninth, `leases` (`interlock_leases` by default), holds the [`LeaseStore`](interlock_core::lease::LeaseStore) of processors split
//! across processes: one document per lease with its fencing number, expiring on the server's
//! clock (`$$NOW`; MongoDB 4.2 or later). A fenced checkpoint is a transaction that writes the
//! lease's document, so a take-over conflicts with it and cannot slip in between check and
//! write.
//!
//! Indexes and counters are created at connect (idempotent: processes starting together are
//! fine). Every value in a filter is a bound BSON value: a stream id such as `{"$gt": ""}` is
//! the string it is, never an operator. No type is ever loaded by a name read from the
//! database; a stored document that does not decode is a
//! [`StoreError::Decode`](interlock_core::StoreError) naming stream, version and type.
//!
//! ## Appends
//!
//! An append is one multi-document transaction (read concern `snapshot`, write concern
//! `majority`): look up the batch's event ids (all stored, in order, with the same content:
//! the original result with `already_appended = true`; an id reused for other content:
//! [`StoreError::DuplicateEventId`](interlock_core::StoreError)), read the stream's version
//! and check the expectation ([`ConcurrencyError`](interlock_core::ConcurrencyError) naming
//! the actual version), take positions from the counter, insert the events, write the stream
//! document, commit. The whole batch commits or nothing does.
//!
//! Errors the server labels `TransientTransactionError` (a write conflict with a concurrent
//! append, a failover) rerun the whole transaction after a short random back-off, for at most
//! [`MongoConfiguration::transaction_timeout`]; a duplicate key (another writer committed the
//! same version or id after this attempt's snapshot) reruns it too, and the rerun reads the
//! actual version or the stored ids and answers accordingly. A commit labelled
//! `UnknownTransactionCommitResult` is retried as a commit (the server remembers a committed
//! transaction). When time runs out the error is
//! [`StoreError::Unavailable`](interlock_core::StoreError): the outcome is then unknown, and
//! retrying with the same event ids is idempotent.
//!
//! ## A global order readers never skip
//!
//! The problem: a reader that has seen position 11 and asks for "after 11" never sees 10 if
//! 10 commits after 11 became visible. This store prevents that by construction:
//!
//! 1. **Positions come from one counter document, written inside the append's
//!    transaction.** An append of *n* events `$inc`s `counters.events.value` by *n* and uses
//!    the *n* values below the result. The increment commits or rolls back with the events,
//!    so the committed positions are exactly `1..=value`: dense, and a rolled-back append
//!    leaves no hole at all.
//! 2. **Commit order is position order.** MongoDB transactions detect write-write conflicts
//!    per document: a transaction writing a document that another transaction has written
//!    and not yet committed, or committed after the writer's snapshot was taken, fails with
//!    `WriteConflict` (labelled `TransientTransactionError`) instead of waiting. Every append
//!    writes the counter document, so of two appends that both commit, the second one's
//!    write succeeded only because the first had committed *before the second's snapshot*:
//!    the second read the first's counter value, took larger positions, and committed later.
//!    Hence position(A) < position(B) implies A committed before B did. (Losers of a
//!    conflict rerun as above.)
//! 3. **Readers see a prefix.** `read_all` and `head_position` read with read concern
//!    `majority` from the primary: a point in time that includes every transaction committed
//!    before it. By (2), if it includes the event at position *p*, it includes every event
//!    below *p*; by (1) there are no holes. So "after *p*" returns *p*+1, *p*+2, ... in
//!    order, and a reader that remembers the last position it processed never skips one.
//!    Majority reads also mean a reader never sees an event that a failover could roll
//!    back, and whose position a different event could then take.
//! 4. **Belt and braces.** `read_all` checks that what it returns is contiguous from the
//!    requested position. A hole — impossible by the above unless someone deleted an event
//!    document — is never skipped: the read stops before it, looks again for a moment, and
//!    then fails with a backend error naming the missing position.
//!
//! The price is on the writing side: every append in the store serialises on the counter
//! document (conflicting appends back off and retry), so store-wide append throughput is
//! bounded by one transaction's latency. Readers are never blocked, and batching events into
//! one append is the way to write fast.
//!
//! ## Subscriptions
//!
//! [`subscribe_all`](interlock_core::EventStore::subscribe_all) reads in batches of
//! [`MongoConfiguration::subscription_batch`], then sleeps until woken. A committed append of
//! this process wakes its subscriptions at once; a background task also wakes them every
//! [`MongoConfiguration::poll_interval`], which picks up appends of other processes. A wake-up
//! only triggers a read: the events collection stays the log, so nothing depends on it being
//! delivered. (Change streams are not used: they would only shorten the cross-process delay,
//! and the polling path has to exist anyway.)
//!
//! ## Configuration and the replica-set requirement
//!
//! [`MongoConfiguration::uri`] is a MongoDB connection string (`mongodb://` or
//! `mongodb+srv://`, with TLS, credentials and `replicaSet` as usual). The database and the
//! collection names are checked before anything is sent ([`validate_database_name`],
//! [`validate_collection_name`]: no `$`, no NUL, not empty, at most 100 bytes, not
//! `system.*`), as is everything else in [`MongoConfiguration::check`].
//!
//! At connect the store asks the server `hello`. Appends need multi-document transactions,
//! which MongoDB offers only on replica sets (and sharded clusters): a standalone node (no
//! `setName` in its `hello`) is refused with [`MongoError::ReplicaSetRequired`], whose message
//! says so and how to fix it (a single-node replica set is enough: `mongod --replSet rs0`,
//! then `rs.initiate()`). A server older than MongoDB 4.0 is [`MongoError::UnsupportedServer`].
//!
//! Connection failures, timeouts, failovers and exhausted transaction retries are
//! [`StoreError::Unavailable`](interlock_core::StoreError) (transient: retry later); other
//! driver errors are `StoreError::Backend`. Durability is the replica set's: with write
//! concern `majority` an acknowledged append is on a majority of the members.
//!
//! ## Tests
//!
//! The integration tests run against a MongoDB-wire-compatible server. They use
//! `MONGODB_URI` when it is set (a real replica set); otherwise they start the pinned
//! SecantusDB (`pip install SecantusDB==0.7.0b3`, or `install-test-server.sh` in this crate),
//! as a separate process on a free loopback port with a temporary storage directory, one
//! server per test binary, stopped when the test process exits. Without either they print a
//! notice and pass, unless `INTERLOCK_REQUIRE_MONGO=1`, which makes a missing server a
//! failure. Every test uses a fresh database.
//!
//! ## Example
//!
//! ```no_run
//! use interlock_core::{Event, EventStore, ExpectedVersion, NewEvent, Position, StreamId};
//! use interlock_mongodb::MongoEventStore;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct MoneyDeposited { amount: u64 }
//! impl Event for MoneyDeposited { const TYPE_NAME: &'static str = "MoneyDeposited"; }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MongoEventStore::builder("mongodb://127.0.0.1:27017/?replicaSet=rs0")
//!     .database("bank")
//!     .connect()
//!     .await?;
//!
//! let account = StreamId::new("BankAccount", "42")?;
//! let event = NewEvent::from_event(&MoneyDeposited { amount: 100 })?;
//! let appended = store.append(&account, ExpectedVersion::NoStream, vec![event.clone()]).await?;
//! assert_eq!(appended.last_version, 1);
//!
//! // A retry with the same event id is recognised, not stored twice.
//! let retried = store.append(&account, ExpectedVersion::NoStream, vec![event]).await?;
//! assert!(retried.already_appended);
//!
//! let events = store.read_stream(&account, 1, None).await?;
//! assert_eq!(events[0].decode::<MoneyDeposited>()?.amount, 100);
//! assert_eq!(store.read_all(Position::START, 10).await?.len(), 1);
//! # Ok(())
//! # }
//! ```

mod append;
mod codec;
mod config;
mod error;
mod lease;
mod schema;
mod side;
mod store;

pub use config::{
    CollectionNames, MAX_COLLECTION_LEN, MongoConfiguration, MongoEventStoreBuilder,
    validate_collection_name, validate_database_name,
};
pub use error::MongoError;
pub use store::MongoEventStore;

/// The snapshot store of a MongoDB deployment: [`MongoEventStore`] implements
/// [`SnapshotStore`](interlock_core::SnapshotStore) in its `snapshots` collection.
pub type MongoSnapshotStorage = MongoEventStore;

/// The saga state store: [`MongoEventStore`] implements
/// [`SagaStateStore`](interlock_core::SagaStateStore) in its `saga_states` collection.
pub type MongoSagaStateStore = MongoEventStore;

/// The idempotency key store: [`MongoEventStore`] implements
/// [`IdempotencyStore`](interlock_core::IdempotencyStore) in its `idempotency_keys` collection.
pub type MongoIdempotencyStorage = MongoEventStore;

/// The checkpoint store: [`MongoEventStore`] implements
/// [`CheckpointStore`](interlock_core::CheckpointStore) in its `checkpoints` collection.
pub type MongoCheckpointStore = MongoEventStore;

/// The dead-letter store: [`MongoEventStore`] implements
/// [`DeadLetterStore`](interlock_core::DeadLetterStore) in its `dead_letters` collection.
pub type MongoDeadLetterStore = MongoEventStore;
