//! # interlock-sqlite
//!
//! The embedded default event store of Interlock: everything an application stores, in one
//! SQLite file (bundled SQLite, nothing to install).
//!
//! ## File layout
//!
//! One file per application holds:
//!
//! * `events`: one row per event. Its `INTEGER PRIMARY KEY` (the rowid) is the global
//!   [`Position`](interlock_core::Position); `event_id` is unique (idempotent retries), and a
//!   unique index on `(category, stream_id, version)` is the final word on optimistic
//!   concurrency.
//! * `streams`: each stream's current version, last position and times (for version checks and
//!   listing without scanning events).
//! * `snapshots`, `checkpoints`, `saga_states`, `dead_letters`, `idempotency_keys`: the side
//!   stores of [`interlock_core::side`], which [`SqliteEventStore`] also implements.
//! * `leases`: the [`LeaseStore`](interlock_core::lease::LeaseStore) of processors split across
//!   processes, with fencing numbers; expiry is on the machine's wall clock (the processes that
//!   share a file share a machine), and every fenced write checks the fence in its own
//!   transaction.
//! * the tables of [SQL views](#sql-views), created by each view, beside the store's own.
//! * `schema_version`: the layout's version ([`SCHEMA_VERSION`]), so a later release can migrate
//!   the file; a file with a newer version than this release knows is refused with
//!   [`SqliteError::NewerSchema`] and left untouched.
//!
//! ## WAL, durability, group commit
//!
//! The file runs in WAL mode: readers (a small pool of read-only connections, each on its own
//! thread) read a snapshot of the last commit and never block the writer. All writes go to ONE
//! writer thread that owns the only read-write connection. It takes every write waiting in its
//! queue and commits them in one transaction (group commit), so many concurrent producers share
//! one disk flush; each write runs in its own `SAVEPOINT`, so a conflict or a bad input in one
//! append fails that append alone. An append is acknowledged only after its transaction
//! committed.
//!
//! Durability is `synchronous = FULL` by default: an acknowledged append survives a power loss.
//! [`Synchronous::Normal`] is the documented opt-in: faster, still safe when the process is
//! killed, but the last commits before an OS crash or power loss may be lost (never half of one).
//!
//! ## Why positions never skip
//!
//! Positions are assigned by the single writer while it holds SQLite's write lock, and commits
//! happen in that same order, so commit order equals position order: a reader that has seen
//! position `p` will never later find a committed event below `p`. [`subscribe_all`] reads in
//! batches up to the head, then sleeps until the writer signals a commit (no busy polling).
//!
//! Stored data is not trusted: a row whose envelope (event id, metadata, versions) is malformed
//! reads as a typed [`DecodeError`](interlock_core::DecodeError) naming its stream, version and
//! type; payload bytes are returned as stored, and typed decoding reports its own errors.
//!
//! [`subscribe_all`]: interlock_core::EventStore::subscribe_all
//!
//! ## Example
//!
//! ```
//! use interlock_core::{Event, EventStore, ExpectedVersion, NewEvent, Position, StreamId};
//! use interlock_sqlite::SqliteEventStore;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct MoneyDeposited { amount: u64 }
//! impl Event for MoneyDeposited { const TYPE_NAME: &'static str = "MoneyDeposited"; }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("bank.db");
//! let store = SqliteEventStore::open(&path)?;
//!
//! let account = StreamId::new("BankAccount", "42")?;
//! let event = NewEvent::from_event(&MoneyDeposited { amount: 100 })?;
//! let appended = store.append(&account, ExpectedVersion::NoStream, vec![event.clone()]).await?;
//! assert_eq!(appended.last_version, 1);
//!
//! // A retry with the same event id is recognised, not stored twice.
//! let retried = store.append(&account, ExpectedVersion::NoStream, vec![event]).await?;
//! assert!(retried.already_appended);
//! assert_eq!(retried.first_position, appended.first_position);
//!
//! // Everything is in the file: reopen it and read the stream back.
//! drop(store);
//! let store = SqliteEventStore::open(&path)?;
//! let events = store.read_stream(&account, 1, None).await?;
//! assert_eq!(events[0].decode::<MoneyDeposited>()?.amount, 100);
//! assert_eq!(store.read_all(Position::START, 10).await?.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! ## SQL views
//!
//! A read model can live in the same file, in tables of its own, and be *effectively once*:
//! implement [`SqliteView`] (its tables) and [`SqliteHandles<E>`] for each event type it handles
//! (a synchronous handler that writes through the connection it is handed), then register a
//! [`SqliteProjection`] with the application as a batch processor. Each batch of events, the
//! view's checkpoint and the dead letters parked on the way commit in ONE transaction of the
//! writer thread, so after a crash the view is exactly as far as its checkpoint says: no event
//! counted twice, none missed. A failing event is undone alone (each runs in its own savepoint),
//! then parked or stopped at, as the processor's `FailurePolicy` says.
//!
//! The handlers run on the writer thread, inside its transaction: every append waits while they
//! run, so keep them to a few SQL statements. Read the view with
//! [`SqliteEventStore::read_view`], on the reader threads; after `Application::wait_for(p)` it
//! shows every event up to `p`.
//!
//! ```
//! use interlock_runtime::core::CheckpointStore;
//! use interlock_runtime::prelude::*;
//! use interlock_sqlite::{
//!     SqliteEventStore, SqliteHandles, SqliteProjection, SqliteView, SqliteViewRoutes,
//! };
//! use rusqlite::Connection;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct MoneyDeposited { amount: i64 }
//! impl Event for MoneyDeposited { const TYPE_NAME: &'static str = "MoneyDeposited"; }
//!
//! /// One row per account, in the event store's file.
//! struct Balances;
//!
//! impl SqliteView for Balances {
//!     const NAME: &'static str = "balances";
//!     fn configure(routes: &mut SqliteViewRoutes<Self>) {
//!         routes.event::<MoneyDeposited>();
//!     }
//!     fn create(conn: &Connection) -> rusqlite::Result<()> {
//!         conn.execute_batch(
//!             "CREATE TABLE IF NOT EXISTS balances (
//!                  account TEXT PRIMARY KEY, balance INTEGER NOT NULL)",
//!         )
//!     }
//!     fn reset(conn: &Connection) -> rusqlite::Result<()> {
//!         conn.execute_batch("DELETE FROM balances")
//!     }
//! }
//!
//! impl SqliteHandles<MoneyDeposited> for Balances {
//!     fn handle(
//!         &mut self,
//!         conn: &Connection,
//!         e: MoneyDeposited,
//!         ctx: &EventContext<'_>,
//!     ) -> Result<(), HandlerError> {
//!         conn.prepare_cached(
//!             "INSERT INTO balances (account, balance) VALUES (?1, ?2) \
//!              ON CONFLICT (account) DO UPDATE SET balance = balance + excluded.balance",
//!         )?
//!         .execute((ctx.stream_id().id(), e.amount))?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = SqliteEventStore::open(dir.path().join("bank.db"))?;
//! let app = Application::builder()
//!     .with_event_store(store.clone())
//!     .register_batch_processor(SqliteProjection::new(&store, Balances))
//!     .build()?;
//! app.start().await?;
//!
//! let account = StreamId::new("BankAccount", "42")?;
//! let deposit = NewEvent::from_event(&MoneyDeposited { amount: 100 })?;
//! let stored = store.append(&account, ExpectedVersion::Any, vec![deposit]).await?;
//! app.wait_for(stored.last_position).await?;
//!
//! let balance: i64 = store
//!     .read_view(|conn| {
//!         conn.query_row("SELECT balance FROM balances WHERE account = '42'", [], |r| r.get(0))
//!     })
//!     .await?;
//! assert_eq!(balance, 100);
//! assert_eq!(store.load_checkpoint("balances").await?, Some(stored.last_position));
//! app.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod append;
mod config;
mod error;
mod lease;
mod projection;
mod reader;
mod rows;
mod schema;
mod side;
mod store;
mod view;
mod writer;

pub use config::{SqliteConfig, SqliteEventStoreBuilder, Synchronous};
pub use error::SqliteError;
pub use projection::SqliteProjection;
pub use schema::SCHEMA_VERSION;
pub use store::SqliteEventStore;
pub use view::{SqliteHandles, SqliteView, SqliteViewRoutes};
pub use writer::WriterStats;
