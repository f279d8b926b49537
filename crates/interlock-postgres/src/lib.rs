//! # interlock-postgres
//!
//! The PostgreSQL event store of Interlock: for applications that outgrow one machine. Many
//! application processes share one PostgreSQL server; the store needs nothing else.
//!
//! [`PgEventStore`] implements the whole [`EventStore`](interlock_core::EventStore) contract
//! and every side store of [`interlock_core::side`] (snapshots, checkpoints, saga state, dead
//! letters, idempotency keys), all in one schema. It uses sqlx with runtime-checked queries
//! (no compile-time database), and every value is a bound parameter.
//!
//! ## Layout
//!
//! One schema (default `interlock`; set [`PgConfig::schema`]) holds:
//!
//! * `events`: one row per event, with `position bigserial`, `tx_id xid8` (the writing
//!   transaction's id, or the stream's previous label if larger; see below), a unique `event_id` (idempotent retries) and
//!   a unique `(category, stream_id, stream_version)` index, the final word on optimistic
//!   concurrency. Payload and metadata are `bytea`, returned byte for byte.
//! * `streams`: each stream's version, last position and times; appends lock its row.
//! * `snapshots`, `checkpoints`, `saga_states`, `dead_letters`, `idempotency_keys`.
//! * `leases`: one row per lease, with its fencing number (see [Leases](#leases)).
//! * `schema_version`: migrations applied; they run at connect, under an advisory lock, so
//!   processes starting together migrate once. A schema newer than this release is refused
//!   with [`PgError::NewerSchema`].
//!
//! Key columns use `COLLATE "C"`, so stream listing is in byte order, the order of
//! [`StreamId`](interlock_core::StreamId).
//!
//! ## Appends
//!
//! An append is one SQL statement, so outside a caller's transaction it is its own
//! transaction and costs one round trip. It locks the stream's row (`SELECT ... FOR UPDATE`),
//! checks the expected version against it, inserts the whole batch with one multi-row
//! `INSERT ... SELECT ... FROM unnest($arrays)` and updates the stream row. Nothing is
//! written when the expectation fails. Two writers
//! creating the same stream have no row to lock; the unique version index stops the second,
//! which is answered with [`ConcurrencyError`](interlock_core::ConcurrencyError) carrying the
//! version it lost to. A batch whose event ids are already stored, in order and with the same
//! content, is answered with the original positions and `already_appended = true`; an id reused
//! for other content is [`StoreError::DuplicateEventId`](interlock_core::StoreError).
//! [`PgEventStore::append_in`] appends inside a transaction of the caller's.
//!
//! ## A global order readers never skip
//!
//! Sequence numbers are handed out when rows are inserted, not when transactions commit. If
//! transaction A takes position 10 and transaction B position 11, B may commit first; a reader
//! that sees 11 and remembers "after 11" never sees 10 when A commits. (And a rolled-back
//! transaction leaves holes that a reader must not wait for.)
//!
//! This store orders events by `(tx_id, position)` — a transaction id, then the sequence — and
//! that pair is the [`Position`](interlock_core::Position) (`Position::new(tx_id, position)`).
//! An append labels its rows with `tx_id = greatest(own transaction id, the stream's last
//! tx_id)`: at least its own id, and never below the stream's previous events, so each
//! stream's events keep their version order in the global order even when a transaction that
//! obtained its id early appends after a younger one. `read_all` only returns rows with
//! `tx_id < pg_snapshot_xmin(pg_current_snapshot())`, the *horizon*: the oldest transaction
//! still running when the query's snapshot was taken. Why this never skips:
//!
//! 1. A row's label is at least the id of the transaction that wrote it. So every row labelled
//!    below the horizon was written by a transaction that has ended: that set of rows is
//!    final, nothing can join it later, and rolled-back transactions simply left nothing in
//!    it. The query's snapshot is the one `pg_current_snapshot()` describes, so it sees every
//!    committed row below the horizon (checking "is anything held back" happens in the same
//!    statement, on the same snapshot).
//! 2. A transaction that has not ended has an id at or above the horizon (new ones get larger
//!    ids), so every row that appears later is labelled at or above it, and sorts after every
//!    row returned now.
//! 3. So a reader that checkpoints the last `(tx_id, position)` it processed and asks for what
//!    comes after it gets exactly what it has not seen, however transactions interleave.
//!
//! Writers are never serialised for this (appends to different streams run in parallel). The
//! cost is on the reading side: a reader does not see past a transaction that is still open,
//! so one long transaction delays every reader until it ends. Transaction ids are
//! cluster-wide, so this includes long transactions in *other* databases of the same server
//! that hold a transaction id (writers); keep long batch jobs off the event store's server or
//! short. Nothing is skipped on a timeout, ever: a transaction that commits late is delivered
//! late, not lost. So that a writer reads its own appends, `read_all` and `head_position` wait
//! up to [`PgConfig::horizon_wait`] for older transactions to end before answering with what
//! is safe. [`head_position`](interlock_core::EventStore::head_position) is the last position
//! `read_all` can return.
//!
//! ## Subscriptions
//!
//! [`subscribe_all`](interlock_core::EventStore::subscribe_all) reads in batches up to the
//! horizon, then sleeps until woken. A committed append wakes this process's subscriptions
//! directly and has a background task send one coalesced `NOTIFY` on the schema's channel
//! (not inside the append's transaction: PostgreSQL serialises the commits of notifying
//! transactions, which would cost concurrent writers their shared WAL flushes; appends made
//! with [`PgEventStore::append_in`] do notify inside the caller's transaction, at its
//! commit). Another task `LISTEN`s on the channel and wakes subscriptions when any process
//! appended; it reconnects with backoff when its connection dies. A notification is only a wake-up: a fallback tick every [`PgConfig::poll_interval`]
//! re-polls anyway, because notifications can be lost and because the end of a transaction
//! that held readers back sends none.
//!
//! ## Leases
//!
//! [`PgEventStore`] is also a [`LeaseStore`](interlock_core::lease::LeaseStore), for processors
//! split across processes. Expiry is on the server's clock (`clock_timestamp()`), so process
//! clocks need not agree. An acquire is a short transaction: `pg_advisory_xact_lock` on a
//! 64-bit hash of the lease key, then an upsert of the lease's row that raises its fence when
//! the lease changes hands.
//!
//! A session-level advisory lock alone would not fence anything: a paused process (`SIGSTOP`,
//! a long stall) keeps its connection, because its kernel keeps the TCP connection up, so the
//! server keeps its lock and nobody can take over; and if the session is ended for it, the
//! process is not told, and writes on another connection when it wakes. Instead, each write
//! made under a lease checks the lease's fence in its own transaction and locks the lease's
//! row `FOR SHARE` until it commits: a take-over waits for such a write, and a write after a
//! take-over fails with [`StoreError::Fenced`](interlock_core::StoreError). An application's
//! own batch processor commits its view rows and its fenced checkpoint in one transaction with
//! [`PgEventStore::save_checkpoint_fenced_in`].
//!
//! ## Connection settings
//!
//! [`PgConfig::url`] is a libpq-style URL (`postgres://user:pass@host:5432/db?sslmode=...`);
//! sqlx also reads the usual `PG*` environment variables for what the URL leaves out. The
//! pool's size, acquire timeout, schema, polling and notifications are set through
//! [`PgConfig`] or [`PgEventStore::builder`]. Connection failures are
//! [`StoreError::Unavailable`](interlock_core::StoreError) (transient: retry; an append that
//! fails so has an unknown outcome, and retrying it with the same event ids is idempotent);
//! other driver errors are `StoreError::Backend`; a stored row that does not decode is
//! `StoreError::Decode` naming its stream, version and type. Durability is the server's: with
//! PostgreSQL's default `synchronous_commit = on`, an acknowledged append is on disk.
//!
//! ## Example
//!
//! ```no_run
//! use interlock_core::{Event, EventStore, ExpectedVersion, NewEvent, Position, StreamId};
//! use interlock_postgres::PgEventStore;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct MoneyDeposited { amount: u64 }
//! impl Event for MoneyDeposited { const TYPE_NAME: &'static str = "MoneyDeposited"; }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgEventStore::builder("postgres://postgres@127.0.0.1:5432/app")
//!     .schema("bank")
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
mod config;
mod error;
mod lease;
mod listen;
mod rows;
mod schema;
mod side;
mod store;

pub use config::{PgConfig, PgEventStoreBuilder, validate_schema_name};
pub use error::PgError;
pub use schema::SCHEMA_VERSION;
pub use store::PgEventStore;
