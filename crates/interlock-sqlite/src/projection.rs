//! [`SqliteProjection`]: a [`SqliteView`] driven as a batch processor, each batch committed
//! with its checkpoint and its dead letters in one transaction of the writer thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};

use interlock_core::side::NewDeadLetter;
use interlock_core::{RecordedEvent, StoreError, ValidationError, validate_name};
use interlock_runtime::ProcessingFailure;
use interlock_runtime::processor::{
    Batch, BatchOutcome, BatchProcessor, FailurePolicy, HandlerError,
};
use rusqlite::Connection;

use crate::error::{BACKEND, store_error};
use crate::side::{
    clear_dead_letter_in, delete_checkpoint_in, has_dead_letters_in, park_in, save_checkpoint_in,
};
use crate::store::SqliteEventStore;
use crate::view::{HandleFn, SqliteView, SqliteViewRoutes};

/// A [`SqliteView`] kept up to date by the application, with *effectively-once* delivery: each
/// batch of events, the view's checkpoint and the dead letters parked on the way commit in ONE
/// transaction of the store's writer, so after a crash the view is exactly as far as its
/// checkpoint says, never ahead of it and never behind.
///
/// Register it with `ApplicationBuilder::register_batch_processor` (or `..._with` for settings):
/// it then catches up from its checkpoint, follows live events, rebuilds and replays dead
/// letters like any processor. Read the view with [`SqliteEventStore::read_view`].
///
/// How a batch runs, on the writer thread, inside the writer's transaction:
///
/// 1. the first time in this process, [`SqliteView::create`];
/// 2. each event whose type the view routes, in its own `SAVEPOINT`: decoded, handed to its
///    handler; on success the savepoint is released; on failure it is rolled back (nothing the
///    handler wrote stays) and then, with `FailurePolicy::Park`, the event is parked in the
///    `dead_letters` table and the batch goes on, or with `FailurePolicy::Stop` the batch ends
///    before that event. Events of other types are skipped;
/// 3. the checkpoint row (the one `CheckpointStore::load_checkpoint` reads) is set to the last
///    event applied, parked or skipped (not for a dead-letter replay, which leaves it alone).
///
/// An event applied successfully also removes its own dead letter, if it has one, in the same
/// transaction: replaying a dead letter, or rebuilding after a fix, applies it exactly once
/// even if the process dies right after.
///
/// Failing events are not retried (the processor's `RetryPolicy` does not apply): a handler
/// that sees only its own tables fails the same way every time, and retrying would hold up the
/// writer. A handler that panics counts as failing on that event.
pub struct SqliteProjection<V: SqliteView> {
    store: SqliteEventStore,
    view: Arc<Mutex<V>>,
    routes: Arc<SqliteViewRoutes<V>>,
    created: bool,
}

impl<V: SqliteView> std::fmt::Debug for SqliteProjection<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteProjection")
            .field("routes", &self.routes)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<V: SqliteView> SqliteProjection<V> {
    /// The view `view`, kept in `store`'s file. Its tables are created with the first batch (or
    /// call [`create_tables`](Self::create_tables) to have them before any event arrives).
    pub fn new(store: &SqliteEventStore, view: V) -> Self {
        Self {
            store: store.clone(),
            view: Arc::new(Mutex::new(view)),
            routes: Arc::new(SqliteViewRoutes::collect()),
            created: false,
        }
    }

    /// Creates the view's tables now ([`SqliteView::create`]), so reads work before the first
    /// event is applied.
    pub async fn create_tables(&mut self) -> Result<(), StoreError> {
        self.check()?;
        self.store
            .write(|conn| V::create(conn).map_err(store_error))
            .await?;
        self.created = true;
        Ok(())
    }

    /// Refuses a view whose name or routes are unusable, before touching the file.
    fn check(&self) -> Result<(), StoreError> {
        validate_name("view name", V::NAME)?;
        match self.routes.problem() {
            Some(problem) => Err(ValidationError::new("view routes", problem).into()),
            None => Ok(()),
        }
    }
}

impl<V: SqliteView> BatchProcessor for SqliteProjection<V> {
    const NAME: &'static str = V::NAME;

    async fn apply_batch(&mut self, batch: Batch<'_>) -> Result<BatchOutcome, StoreError> {
        self.check()?;
        if batch.events.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let job = BatchJob {
            view: self.view.clone(),
            routes: self.routes.clone(),
            events: batch.events.to_vec(),
            create: !self.created,
            store_checkpoint: batch.store_checkpoint,
            stop_on_failure: batch.on_failure == FailurePolicy::Stop,
        };
        let outcome = self.store.write(move |conn| job.run(conn)).await?;
        // Only now: had the transaction failed, the tables would not exist.
        self.created = true;
        Ok(outcome)
    }

    async fn reset(&mut self) -> Result<(), HandlerError> {
        self.check()?;
        self.store
            .write(|conn| {
                V::create(conn).map_err(store_error)?;
                V::reset(conn).map_err(store_error)?;
                delete_checkpoint_in(conn, V::NAME)
            })
            .await?;
        self.created = true;
        Ok(())
    }
}

/// One batch, as sent to the writer thread.
struct BatchJob<V: SqliteView> {
    view: Arc<Mutex<V>>,
    routes: Arc<SqliteViewRoutes<V>>,
    events: Vec<RecordedEvent>,
    create: bool,
    store_checkpoint: bool,
    stop_on_failure: bool,
}

impl<V: SqliteView> BatchJob<V> {
    /// Runs inside the writer's transaction. An `Err` rolls back the whole batch (view, dead
    /// letters and checkpoint alike).
    fn run(self, conn: &Connection) -> Result<BatchOutcome, StoreError> {
        // Only this job's thread ever takes the lock; a poisoned lock means a handler panicked
        // in an earlier batch, whose writes were rolled back.
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        if self.create {
            V::create(conn).map_err(store_error)?;
        }
        // An event applied now is no longer dead: its letter goes in this same transaction, so a
        // replay (or a rebuild after a fix) can never apply it a second time. Looked up once per
        // batch, the letters of a healthy view cost nothing per event.
        let has_letters = has_dead_letters_in(conn, V::NAME)?;
        let mut outcome = BatchOutcome::default();
        for event in &self.events {
            let Some(handle) = self.routes.get(&event.event_type) else {
                outcome.applied_up_to = Some(event.position);
                continue;
            };
            let result = apply_one(conn, &mut *view, handle, event)?;
            if let Err(error) = result {
                let failure = ProcessingFailure {
                    processor: V::NAME,
                    stream: event.stream_id.clone(),
                    stream_version: event.stream_version,
                    event_type: event.event_type.clone(),
                    position: event.position,
                    attempts: 1,
                    error: error.to_string(),
                };
                if self.stop_on_failure {
                    tracing::error!(%failure, "SQL view stops before a failing event");
                    outcome.stopped = Some(failure);
                    break;
                }
                tracing::error!(%failure, "SQL view parks a failing event as a dead letter");
                park_in(
                    conn,
                    &NewDeadLetter::for_event(V::NAME, event, failure.error.clone(), 1),
                )?;
                outcome.parked.push(failure);
            } else if has_letters {
                clear_dead_letter_in(conn, V::NAME, event.event_id)?;
            }
            outcome.applied_up_to = Some(event.position);
        }
        if self.store_checkpoint
            && let Some(position) = outcome.applied_up_to
        {
            save_checkpoint_in(conn, V::NAME, position)?;
        }
        Ok(outcome)
    }
}

const SAVEPOINT: &str = "SAVEPOINT interlock_view_event";
const RELEASE: &str = "RELEASE interlock_view_event";
const ROLLBACK: &str = "ROLLBACK TO interlock_view_event";

fn exec(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(store_error)
}

/// Applies one event in its own savepoint. The outer `Err` is a failure of the transaction
/// itself (the batch is lost); the inner one, the handler's failure (its writes undone).
fn apply_one<V: SqliteView>(
    conn: &Connection,
    view: &mut V,
    handle: HandleFn<V>,
    event: &RecordedEvent,
) -> Result<Result<(), HandlerError>, StoreError> {
    exec(conn, SAVEPOINT)?;
    let result = catch_unwind(AssertUnwindSafe(|| handle(view, conn, event)))
        .unwrap_or_else(|_| Err(HandlerError::new("the handler panicked")));
    if result.is_ok() {
        exec(conn, RELEASE)?;
    } else {
        exec(conn, ROLLBACK)?;
        exec(conn, RELEASE)?;
    }
    if conn.is_autocommit() {
        // SQLite gave up the transaction (disk full, I/O error) or the handler ended it against
        // the rules: the batch cannot be committed with its checkpoint; fail the whole job.
        return Err(StoreError::Backend {
            backend: BACKEND,
            source: format!(
                "the transaction ended while SQL view {} handled the event at position {}",
                V::NAME,
                event.position
            )
            .into(),
        });
    }
    Ok(result)
}
