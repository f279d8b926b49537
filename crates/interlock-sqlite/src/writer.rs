//! The single writer thread and its group commit.
//!
//! Every write (appends and side-table updates) is a job sent to one thread that owns the only
//! read-write connection. The thread takes the first waiting job, then every job that queued up
//! behind it (up to `max_group_size`), and runs them all in ONE transaction, so many producers
//! share one disk flush. Each job runs inside its own `SAVEPOINT`: a job that fails (a conflict,
//! a duplicate id) is rolled back to its savepoint alone and the others still commit. Replies are
//! sent only after `COMMIT` returned, so an acknowledged write is on disk.
//!
//! Why readers that follow positions never skip an event: positions are the `events` rowid,
//! assigned while this thread holds SQLite's write lock, and only this thread writes. A group
//! that commits after another therefore has only larger positions than everything committed
//! before it, and a reader's WAL snapshot always contains a prefix of the position order: there
//! is never a committed event with a smaller position than one already visible. (Rows of a
//! rolled-back savepoint never become visible, and SQLite may reuse their rowids for later rows,
//! which is harmless for the same reason.)

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use futures::channel::oneshot;
use interlock_core::{AppendNotifier, StoreError};
use rusqlite::Connection;

use crate::error::{BACKEND, SqliteError, internal};

/// Why a job's work did not survive: the transaction failed as a whole.
struct Failure {
    message: String,
    transient: bool,
}

impl Failure {
    fn from_sqlite(what: &str, error: &rusqlite::Error) -> Self {
        Self {
            message: format!("{what}: {error}"),
            transient: matches!(store_error_kind(error), Some(true)),
        }
    }

    fn to_store_error(&self) -> StoreError {
        let source = format!("write not committed: {}", self.message).into();
        if self.transient {
            StoreError::Unavailable {
                backend: BACKEND,
                source,
            }
        } else {
            StoreError::Backend {
                backend: BACKEND,
                source,
            }
        }
    }
}

fn store_error_kind(error: &rusqlite::Error) -> Option<bool> {
    use rusqlite::ErrorCode;
    error
        .sqlite_error_code()
        .map(|code| matches!(code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// A unit of work for the writer thread.
trait WriteJob: Send {
    /// Runs inside the open transaction, within the job's savepoint; `true` when it succeeded
    /// and its changes should be kept.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Whether a successful run should wake subscriptions after the commit.
    fn notifies(&self) -> bool;
    /// Sends the reply: `None` once the transaction committed, or why it did not.
    fn finish(self: Box<Self>, failure: Option<&Failure>);
}

struct Job<T, F> {
    work: Option<F>,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    notifies: bool,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A bug in a job must not take the writer (and every later append) down with it.
        let outcome = catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(internal("a write job panicked")));
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn notifies(&self) -> bool {
        self.notifies
    }

    fn finish(self: Box<Self>, failure: Option<&Failure>) {
        let reply = match (self.outcome, failure) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(failure)) => Err(failure.to_store_error()),
            (None, None) => Err(internal("the write job never ran")),
        };
        // The caller may have gone away (cancelled); the outcome stands either way and a retry
        // with the same event ids resolves it.
        let _ = self.reply.send(reply);
    }
}

/// Counters of the writer's work, for monitoring how well group commit batches writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Writes (appends and side-table updates, failed ones included) in those transactions.
    pub writes: u64,
}

#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    writes: AtomicU64,
}

/// Handle to the writer thread. Dropping it lets the thread finish the queued jobs and stop.
pub(crate) struct Writer {
    sender: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the thread that owns `conn`.
    pub(crate) fn start(
        conn: Connection,
        max_group_size: usize,
        notifier: Arc<AppendNotifier>,
    ) -> Result<Self, SqliteError> {
        let (sender, receiver) = mpsc::channel::<Box<dyn WriteJob>>();
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("interlock-sqlite-writer".to_owned())
            .spawn(move || {
                run_writer(
                    &conn,
                    &receiver,
                    max_group_size,
                    &notifier,
                    &thread_counters,
                );
            })
            .map_err(|source| SqliteError::Thread {
                role: "writer",
                source,
            })?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
            counters,
        })
    }

    /// What the writer has done so far.
    pub(crate) fn stats(&self) -> WriterStats {
        WriterStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }

    /// Runs `work` in the writer's next transaction and returns its result once committed.
    /// `notifies`: wake subscriptions after the commit (appends).
    pub(crate) async fn write<T, F>(&self, notifies: bool, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Job {
            work: Some(work),
            outcome: None,
            reply,
            notifies,
        });
        self.sender
            .as_ref()
            .ok_or_else(|| internal("the store is closed"))?
            .send(job)
            .map_err(|_| internal("the writer thread has stopped"))?;
        answer
            .await
            .map_err(|_| internal("the writer thread stopped before answering"))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_writer(
    conn: &Connection,
    receiver: &mpsc::Receiver<Box<dyn WriteJob>>,
    max_group_size: usize,
    notifier: &AppendNotifier,
    counters: &Counters,
) {
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        while group.len() < max_group_size {
            match receiver.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(conn, group, notifier, counters);
    }
}

fn exec(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs a group of jobs in one transaction, each in its own savepoint, then commits and replies.
fn commit_group(
    conn: &Connection,
    group: Vec<Box<dyn WriteJob>>,
    notifier: &AppendNotifier,
    counters: &Counters,
) {
    if group.len() == 1 {
        // Alone in its transaction, a job needs no savepoint: a failure rolls everything back.
        if let Some(job) = group.into_iter().next() {
            commit_alone(conn, job, notifier, counters);
        }
        return;
    }
    let mut queue = group.into_iter();
    let mut ran: Vec<Box<dyn WriteJob>> = Vec::new();
    let mut notify = false;
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let failure = Failure::from_sqlite("cannot begin a transaction", &e);
        queue.for_each(|job| job.finish(Some(&failure)));
        return;
    }
    while let Some(mut job) = queue.next() {
        let ok = match exec(conn, "SAVEPOINT job") {
            Ok(()) => job.run(conn),
            Err(_) => false,
        };
        let closed = if ok {
            exec(conn, "RELEASE job")
        } else {
            exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
        };
        if closed.is_err() || conn.is_autocommit() {
            // SQLite abandoned the whole transaction (I/O error, disk full): the work of every
            // job run so far is gone. Tell them, and start over for the rest of the group.
            let failure = Failure {
                message: match closed {
                    Err(e) => format!("the transaction was rolled back: {e}"),
                    Ok(()) => "the transaction was rolled back".to_owned(),
                },
                transient: false,
            };
            if !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            ran.drain(..).for_each(|job| job.finish(Some(&failure)));
            job.finish(Some(&failure));
            notify = false;
            if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
                let failure = Failure::from_sqlite("cannot begin a transaction", &e);
                queue.for_each(|job| job.finish(Some(&failure)));
                return;
            }
            continue;
        }
        notify |= ok && job.notifies();
        ran.push(job);
    }
    match exec(conn, "COMMIT") {
        Ok(()) => {
            counters.transactions.fetch_add(1, Ordering::Relaxed);
            counters
                .writes
                .fetch_add(ran.len() as u64, Ordering::Relaxed);
            // Wake subscribers only now: what they will read is committed.
            if notify {
                notifier.notify();
            }
            ran.into_iter().for_each(|job| job.finish(None));
        }
        Err(e) => {
            let failure = Failure::from_sqlite("commit failed", &e);
            if !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            ran.into_iter().for_each(|job| job.finish(Some(&failure)));
        }
    }
}

fn commit_alone(
    conn: &Connection,
    mut job: Box<dyn WriteJob>,
    notifier: &AppendNotifier,
    counters: &Counters,
) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        job.finish(Some(&Failure::from_sqlite(
            "cannot begin a transaction",
            &e,
        )));
        return;
    }
    if !job.run(conn) {
        if !conn.is_autocommit() {
            let _ = exec(conn, "ROLLBACK");
        }
        // Its own error is its reply.
        job.finish(None);
        return;
    }
    if conn.is_autocommit() {
        job.finish(Some(&Failure {
            message: "the transaction was rolled back".to_owned(),
            transient: false,
        }));
        return;
    }
    match exec(conn, "COMMIT") {
        Ok(()) => {
            counters.transactions.fetch_add(1, Ordering::Relaxed);
            counters.writes.fetch_add(1, Ordering::Relaxed);
            if job.notifies() {
                notifier.notify();
            }
            job.finish(None);
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            job.finish(Some(&Failure::from_sqlite("commit failed", &e)));
        }
    }
}
