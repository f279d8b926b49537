//! A small pool of read-only connections, each owned by its own thread.
//!
//! In WAL mode a reader works on a snapshot of the last commit and never blocks the writer (nor
//! waits for it). Reads run on these threads rather than on the async executor, so a slow query
//! never stalls other tasks, and no particular async runtime is required.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use futures::channel::oneshot;
use interlock_core::StoreError;
use rusqlite::Connection;

use crate::config::SqliteConfig;
use crate::error::{SqliteError, internal};
use crate::schema::open_reader;

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// Handle to the reader threads. Dropping it stops them once their current query is done.
pub(crate) struct ReaderPool {
    sender: Option<mpsc::Sender<ReadJob>>,
    threads: Vec<JoinHandle<()>>,
}

impl ReaderPool {
    /// Opens `config.readers` connections, each on its own thread.
    pub(crate) fn start(config: &SqliteConfig) -> Result<Self, SqliteError> {
        let (sender, receiver) = mpsc::channel::<ReadJob>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut pool = Self {
            sender: Some(sender),
            threads: Vec::with_capacity(config.readers),
        };
        for n in 0..config.readers {
            let conn = open_reader(config)?;
            let receiver = receiver.clone();
            let thread = std::thread::Builder::new()
                .name(format!("interlock-sqlite-reader-{n}"))
                .spawn(move || run_reader(&conn, &receiver))
                .map_err(|source| SqliteError::Thread {
                    role: "reader",
                    source,
                })?;
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Runs `work` on a reader connection.
    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let outcome = catch_unwind(AssertUnwindSafe(|| work(conn)))
                .unwrap_or_else(|_| Err(internal("a read job panicked")));
            let _ = reply.send(outcome);
        });
        self.sender
            .as_ref()
            .ok_or_else(|| internal("the store is closed"))?
            .send(job)
            .map_err(|_| internal("the reader threads have stopped"))?;
        answer
            .await
            .map_err(|_| internal("a reader thread stopped before answering"))?
    }
}

impl Drop for ReaderPool {
    fn drop(&mut self) {
        drop(self.sender.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn run_reader(conn: &Connection, receiver: &Mutex<mpsc::Receiver<ReadJob>>) {
    loop {
        // Only the wait for a job happens under the lock; the query runs after releasing it.
        let job = {
            let receiver = receiver.lock().unwrap_or_else(PoisonError::into_inner);
            match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        job(conn);
    }
}
