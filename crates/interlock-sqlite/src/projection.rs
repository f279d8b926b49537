//! [`SqliteProjection`]: a [`SqliteView`] driven as a batch processor, each batch committed
//! with its checkpoint and its dead letters in one transaction of the writer thread.

use std::collections::{BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};

use interlock_core::lease::Lease;
use interlock_core::side::NewDeadLetter;
use interlock_core::{RecordedEvent, StoreError, StreamId, ValidationError, validate_name};
use interlock_runtime::ProcessingFailure;
use interlock_runtime::processor::{
    Batch, BatchOutcome, BatchProcessor, FailurePolicy, HandlerError,
};
use rusqlite::Connection;

use crate::error::{BACKEND, store_error};
use crate::lease::check_lease_in;
use crate::rows::{collect, stream_at, u64_at};
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
///    before that event. Events of other types are skipped. With `FailurePolicy::Park`,
///    parking is *ordered*, as for every processor: an event whose
///    stream already has a dead letter of this view at a lower version is not handed to the
///    handler (routed or not) but parked behind it, "held" (attempts 0, an error starting with
///    "held behind the parked event at version k of stream S"), so a stream's events are never
///    applied out of order; the other streams keep flowing. Replaying the stream's dead letters
///    (`Application::replay_dead_letter`, oldest first) applies the parked event and then the held
///    ones, in order;
/// 3. the checkpoint row (the one `CheckpointStore::load_checkpoint` reads, under the batch's
///    checkpoint name) is set to the last event applied, parked or skipped (not for a
///    dead-letter replay, which leaves it alone).
///
/// When the batch comes with a lease (a partitioned or exclusive processor), the lease's fence
/// is checked first, in that same transaction: if another process took the lease over, nothing
/// is written (no view row, dead letter or checkpoint) and the batch fails with
/// `StoreError::Fenced`, so a process that wakes up after losing its lease cannot apply events
/// the new holder applies too.
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
            checkpoint: batch.checkpoint.to_owned(),
            lease: batch.lease.cloned(),
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
    checkpoint: String,
    lease: Option<Lease>,
    stop_on_failure: bool,
}

impl<V: SqliteView> BatchJob<V> {
    /// Runs inside the writer's transaction. An `Err` rolls back the whole batch (view, dead
    /// letters and checkpoint alike).
    fn run(self, conn: &Connection) -> Result<BatchOutcome, StoreError> {
        // Only this job's thread ever takes the lock; a poisoned lock means a handler panicked
        // in an earlier batch, whose writes were rolled back.
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        // A fenced-off holder writes nothing: the check and every write below share this
        // transaction, and the writer holds the file's write lock until it commits, so the lease
        // cannot change hands in between.
        if let Some(lease) = &self.lease {
            check_lease_in(conn, lease)?;
        }
        if self.create {
            V::create(conn).map_err(store_error)?;
        }
        // An event applied now is no longer dead: its letter goes in this same transaction, so a
        // replay (or a rebuild after a fix) can never apply it a second time. And an event of a
        // stream with a letter at a lower version is held behind it. Loaded once per batch (and
        // kept up to date below), the letters of a healthy view cost nothing per event.
        let mut letters = if has_dead_letters_in(conn, V::NAME)? {
            load_letters_in(conn, V::NAME)?
        } else {
            Letters::new()
        };
        let mut outcome = BatchOutcome::default();
        for event in &self.events {
            let (held_behind, own_letter) =
                letters
                    .get(&event.stream_id)
                    .map_or((None, false), |versions| {
                        (
                            versions
                                .first()
                                .copied()
                                .filter(|&first| first < event.stream_version),
                            versions.contains(&event.stream_version),
                        )
                    });
            if let Some(first) = held_behind
                && !self.stop_on_failure
            {
                let failure = ProcessingFailure {
                    processor: V::NAME,
                    stream: event.stream_id.clone(),
                    stream_version: event.stream_version,
                    event_type: event.event_type.clone(),
                    position: event.position,
                    attempts: 0,
                    error: format!(
                        "held behind the parked event at version {first} of stream {}: replay that one first",
                        event.stream_id
                    ),
                };
                tracing::warn!(%failure, "SQL view holds an event behind a parked one of its stream");
                park_in(
                    conn,
                    &NewDeadLetter::for_event(V::NAME, event, failure.error.clone(), 0),
                )?;
                add_letter(&mut letters, event);
                outcome.parked.push(failure);
                outcome.applied_up_to = Some(event.position);
                continue;
            }
            let Some(handle) = self.routes.get(&event.event_type) else {
                if own_letter {
                    clear_letter::<V>(conn, &mut letters, event)?;
                }
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
                add_letter(&mut letters, event);
                outcome.parked.push(failure);
            } else if own_letter {
                clear_letter::<V>(conn, &mut letters, event)?;
            }
            outcome.applied_up_to = Some(event.position);
        }
        if self.store_checkpoint
            && let Some(position) = outcome.applied_up_to
        {
            save_checkpoint_in(conn, &self.checkpoint, position)?;
        }
        Ok(outcome)
    }
}

/// The stream versions of one view's dead letters, by stream.
type Letters = HashMap<StreamId, BTreeSet<u64>>;

/// Every dead letter of `processor`, by stream, within the caller's transaction.
fn load_letters_in(conn: &Connection, processor: &str) -> Result<Letters, StoreError> {
    const T: &str = "dead_letters";
    let mut stmt = conn
        .prepare_cached(
            "SELECT category, stream_id, stream_version FROM dead_letters WHERE processor = ?1",
        )
        .map_err(store_error)?;
    let rows = stmt.query([processor]).map_err(store_error)?;
    let found = collect(rows, |row| Ok((stream_at(row, 0, T)?, u64_at(row, 2, T)?)))?;
    let mut letters = Letters::new();
    for (stream, version) in found {
        letters.entry(stream).or_default().insert(version);
    }
    Ok(letters)
}

/// Notes that `event` now has a dead letter.
fn add_letter(letters: &mut Letters, event: &RecordedEvent) {
    letters
        .entry(event.stream_id.clone())
        .or_default()
        .insert(event.stream_version);
}

/// Deletes `event`'s own dead letter (it went through now), in the caller's transaction and in
/// `letters`, so the stream's next held event is no longer behind it.
fn clear_letter<V: SqliteView>(
    conn: &Connection,
    letters: &mut Letters,
    event: &RecordedEvent,
) -> Result<(), StoreError> {
    clear_dead_letter_in(conn, V::NAME, event.event_id)?;
    if let Some(versions) = letters.get_mut(&event.stream_id) {
        versions.remove(&event.stream_version);
        if versions.is_empty() {
            letters.remove(&event.stream_id);
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    //! A batch whose lease was taken over changes nothing. (`Batch` cannot be built outside the
    //! runtime, so the writer job is driven directly, as `apply_batch` does.)
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use interlock_core::lease::LeaseStore;
    use interlock_core::{
        CheckpointStore, DeadLetterStore, Event, EventStore, ExpectedVersion, NewEvent, Position,
        StreamId,
    };
    use interlock_runtime::EventContext;

    use super::*;
    use crate::SqliteHandles;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Counted {
        n: i64,
    }
    impl Event for Counted {
        const TYPE_NAME: &'static str = "Counted";
    }

    struct Tally;

    impl SqliteView for Tally {
        const NAME: &'static str = "tally";
        fn configure(routes: &mut SqliteViewRoutes<Self>) {
            routes.event::<Counted>();
        }
        fn create(conn: &Connection) -> rusqlite::Result<()> {
            conn.execute_batch("CREATE TABLE IF NOT EXISTS tally (n INTEGER NOT NULL)")
        }
        fn reset(conn: &Connection) -> rusqlite::Result<()> {
            conn.execute_batch("DELETE FROM tally")
        }
    }

    impl SqliteHandles<Counted> for Tally {
        fn handle(
            &mut self,
            conn: &Connection,
            e: Counted,
            _: &EventContext<'_>,
        ) -> Result<(), HandlerError> {
            // n = 2 fails, so a stale batch would also park a dead letter.
            if e.n == 2 {
                return Err(HandlerError::new("two is refused"));
            }
            conn.execute("INSERT INTO tally (n) VALUES (?1)", [e.n])?;
            Ok(())
        }
    }

    const PARTITION: &str = "tally#0/1";

    async fn run_batch(
        store: &SqliteEventStore,
        events: &[RecordedEvent],
        lease: &Lease,
    ) -> Result<BatchOutcome, StoreError> {
        let job = BatchJob::<Tally> {
            view: Arc::new(Mutex::new(Tally)),
            routes: Arc::new(SqliteViewRoutes::collect()),
            events: events.to_vec(),
            create: true,
            store_checkpoint: true,
            checkpoint: PARTITION.to_owned(),
            lease: Some(lease.clone()),
            stop_on_failure: false,
        };
        store.write(move |conn| job.run(conn)).await
    }

    async fn tally(store: &SqliteEventStore) -> Vec<i64> {
        store
            .read_view(|conn| {
                let mut stmt = conn.prepare("SELECT n FROM tally ORDER BY n")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect()
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_batch_with_a_stale_lease_leaves_view_and_checkpoint_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteEventStore::open(dir.path().join("events.db")).unwrap();
        // 3 in a stream of its own, so it is not held behind the parked 2.
        for (id, n) in [("1", 1), ("1", 2), ("2", 3)] {
            store
                .append(
                    &StreamId::new("Counter", id).unwrap(),
                    ExpectedVersion::Any,
                    vec![NewEvent::from_event(&Counted { n }).unwrap()],
                )
                .await
                .unwrap();
        }
        let all = store.read_all(Position::START, 10).await.unwrap();
        assert_eq!(all.len(), 3);

        let ttl = Duration::from_millis(50);
        let a = store
            .acquire(PARTITION, "node-a", ttl)
            .await
            .unwrap()
            .unwrap();
        let first = run_batch(&store, &all[..1], &a).await.unwrap();
        assert_eq!(first.applied_up_to, Some(all[0].position));

        // node-a stalls past its lease; node-b takes the partition over.
        tokio::time::sleep(ttl * 3).await;
        let b = store
            .acquire(PARTITION, "node-b", ttl)
            .await
            .unwrap()
            .unwrap();
        assert!(b.fence > a.fence);

        // node-a wakes up and hands in its next batch: refused whole.
        match run_batch(&store, &all[1..], &a).await {
            Err(StoreError::Fenced { key, owner, fence }) => {
                assert_eq!(
                    (key.as_str(), owner.as_str(), fence),
                    (PARTITION, "node-a", a.fence)
                );
            }
            other => panic!("a stale lease must fence the batch off, got {other:?}"),
        }
        assert_eq!(
            tally(&store).await,
            vec![1],
            "no view row of the stale batch"
        );
        assert_eq!(
            store.load_checkpoint(PARTITION).await.unwrap(),
            Some(all[0].position),
            "the checkpoint did not move"
        );
        assert!(
            store
                .list_dead_letters(None, None, 10)
                .await
                .unwrap()
                .is_empty(),
            "no dead letter parked by the stale batch"
        );

        // The new holder applies the same events, once.
        let second = run_batch(&store, &all[1..], &b).await.unwrap();
        assert_eq!(second.applied_up_to, Some(all[2].position));
        assert_eq!(second.parked.len(), 1);
        assert_eq!(tally(&store).await, vec![1, 3]);
        assert_eq!(
            store.load_checkpoint(PARTITION).await.unwrap(),
            Some(all[2].position)
        );
    }
}
