//! Processors split into partitions, each owned by one process at a time through a lease.
//!
//! A partitioned processor runs one [`ProcessorCore`] per partition, all sharing one sink (the
//! handlers). Each core delivers only the events of its streams ([`partition_of`]) and keeps its
//! own checkpoint. A *manager* task, every quarter of the lease's time-to-live:
//!
//! 1. renews this process's membership lease (`"<name>@<node>"`) and counts the live members;
//! 2. renews the partitions it owns, and stops at once any whose lease was lost;
//! 3. gives up partitions above its fair share (`ceil(partitions / members)`), highest first,
//!    after their core has finished the batch in hand, so a process that joins gets work;
//! 4. takes free partitions (never held, released, or expired) up to its share; a core starts
//!    from the partition's stored checkpoint, so a take-over resumes where the last owner's
//!    last *committed* checkpoint says.
//!
//! Checkpoints are written with the lease's fence: a process that stalled past its lease (and
//! whose partitions were taken over) has its next write refused and stops that partition, so
//! two processes never advance one partition's checkpoint. Handlers between two checkpoints
//! may still run twice for one event (at-least-once), at most one batch per take-over; a view in
//! the same database as the checkpoint (a batch processor given the lease) is exactly-once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use interlock_core::side::{CheckpointStore, DeadLetter};
use interlock_core::{Lease, LeaseStore, Position, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::core::{Cursor, Partition, ProcessorCore, ProcessorHandle, Scope, Sink, partition_of};
use super::registration::ProcessorEnv;
use super::settings::{Delivery, ProcessorSettings, RebuildProgress};
use crate::error::{Error, ProcessingFailure};

/// The checkpoint (and lease) name of one partition.
pub(crate) fn partition_key(name: &str, index: u32, count: u32) -> String {
    format!("{name}#{index}/{count}")
}

/// One partition this process runs now.
struct Running {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    renewed: Instant,
}

pub(crate) struct PartitionedProcessor<S> {
    name: &'static str,
    node: Arc<str>,
    cores: Vec<Arc<ProcessorCore<S>>>,
    leases: Arc<dyn LeaseStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    ttl: Duration,
    /// The lowest position every partition has reached, as far as this process knows.
    progress: watch::Sender<Position>,
}

impl<S: Sink> PartitionedProcessor<S> {
    pub(crate) fn new(
        sink: S,
        count: u32,
        settings: ProcessorSettings,
        env: &ProcessorEnv,
        leases: Arc<dyn LeaseStore>,
    ) -> Self {
        let sink = Arc::new(sink);
        let name = sink.name();
        let cores = (0..count)
            .map(|index| {
                let scope = Scope {
                    checkpoint: partition_key(name, index, count),
                    partition: Some(Partition { index, count }),
                    lease: std::sync::Mutex::new(None),
                };
                Arc::new(ProcessorCore::scoped(sink.clone(), scope, settings, env))
            })
            .collect();
        Self {
            name,
            node: env.node.clone(),
            cores,
            leases,
            checkpoints: env.side.checkpoints.clone(),
            ttl: settings.lease_ttl,
            progress: watch::Sender::new(Position::START),
        }
    }

    fn count(&self) -> u32 {
        self.cores.len() as u32
    }

    fn member_key(&self) -> String {
        format!("{}@{}", self.name, self.node)
    }

    /// Starts delivering partition `index` under `lease`.
    async fn start_partition(&self, index: usize, lease: Lease) -> Running {
        let core = self.cores[index].clone();
        // Whatever this process saw before, the stored checkpoint is the truth now.
        core.cursor.lock().await.loaded = false;
        core.scope.set_lease(Some(lease));
        let (shutdown, stop) = watch::channel(false);
        let task = tokio::spawn(core.run(stop));
        tracing::info!(processor = self.name, partition = index, node = %self.node, "took a partition");
        Running {
            shutdown,
            task,
            renewed: Instant::now(),
        }
    }

    /// Stops partition `index`'s core after the batch in hand, then gives its lease back.
    async fn stop_partition(&self, index: usize, running: Running, release: bool) {
        running.shutdown.send_replace(true);
        let _ = running.task.await;
        let core = &self.cores[index];
        let lease = core.scope.lease();
        core.scope.set_lease(None);
        if release
            && let Some(lease) = lease
            && let Err(e) = self.leases.release(&lease).await
        {
            tracing::warn!(processor = self.name, partition = index, error = %e, "cannot release a partition lease");
        }
    }

    /// One round of the manager; `running[i]` is `Some` for the partitions this process owns,
    /// `member` holds this process's membership lease once taken.
    async fn balance(
        &self,
        running: &mut [Option<Running>],
        member: &mut Option<Lease>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        *member = self
            .leases
            .acquire(&self.member_key(), &self.node, self.ttl)
            .await?;
        let members = self
            .leases
            .live_leases(&format!("{}@", self.name))
            .await?
            .len()
            .max(1);
        let share = self.count().div_ceil(members as u32) as usize;

        // Renew, and stop what was lost (or could not be renewed for a whole ttl).
        for (index, slot) in running.iter_mut().enumerate() {
            let Some(run) = slot else { continue };
            let lease = self.cores[index].scope.lease();
            let held = match &lease {
                None => false,
                Some(lease) => match self.leases.renew(lease, self.ttl).await {
                    Ok(true) => {
                        run.renewed = Instant::now();
                        true
                    }
                    Ok(false) => false,
                    Err(e) => {
                        tracing::warn!(processor = self.name, partition = index, error = %e, "cannot renew a partition lease");
                        run.renewed.elapsed() < self.ttl
                    }
                },
            };
            if (!held || run.task.is_finished())
                && let Some(run) = slot.take()
            {
                tracing::warn!(
                    processor = self.name,
                    partition = index,
                    "partition lost or stopped; letting it go"
                );
                self.stop_partition(index, run, held).await;
            }
        }

        // Give back what is above the fair share, highest partitions first.
        let mut owned = running.iter().filter(|r| r.is_some()).count();
        for index in (0..running.len()).rev() {
            if owned <= share {
                break;
            }
            if let Some(run) = running[index].take() {
                tracing::info!(
                    processor = self.name,
                    partition = index,
                    "handing a partition over"
                );
                self.stop_partition(index, run, true).await;
                owned -= 1;
            }
        }

        // Take free partitions up to the share, starting after this node's usual place so
        // that processes starting together spread out.
        if owned < share {
            let count = running.len();
            let offset = (partition_of_node(&self.node) as usize) % count;
            for step in 0..count {
                if owned >= share || *shutdown.borrow() {
                    break;
                }
                let index = (offset + step) % count;
                if running[index].is_some() {
                    continue;
                }
                let key = &self.cores[index].scope.checkpoint;
                if let Some(lease) = self.leases.acquire(key, &self.node, self.ttl).await? {
                    running[index] = Some(self.start_partition(index, lease).await);
                    owned += 1;
                }
            }
        }
        Ok(())
    }

    /// Publishes the lowest position over all partitions: this process's cores for its own,
    /// the stored checkpoints for the others.
    async fn refresh_progress(&self, running: &[Option<Running>]) {
        let mut lowest: Option<Position> = None;
        for (index, core) in self.cores.iter().enumerate() {
            let position = if running[index].is_some() {
                *core.progress().borrow()
            } else {
                match self
                    .checkpoints
                    .load_checkpoint(&core.scope.checkpoint)
                    .await
                {
                    Ok(p) => p.unwrap_or(Position::START),
                    Err(_) => return,
                }
            };
            lowest = Some(lowest.map_or(position, |l| l.min(position)));
        }
        if let Some(lowest) = lowest {
            self.progress.send_if_modified(|p| {
                let moved = *p != lowest;
                *p = lowest;
                moved
            });
        }
    }

    async fn manage(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut running: Vec<Option<Running>> = (0..self.cores.len()).map(|_| None).collect();
        let tick = self.ttl / 4;
        let mut failures = 0u32;
        let mut member = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.balance(&mut running, &mut member, &shutdown).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(processor = self.name, error = %e, failures, "cannot balance partitions");
                }
            }
            self.refresh_progress(&running).await;
            // Between rounds, follow this process's own partitions closely for `wait_for`.
            let until = tokio::time::Instant::now() + tick;
            loop {
                tokio::select! {
                    _ = shutdown.changed() => break,
                    () = tokio::time::sleep_until(until) => break,
                    () = tokio::time::sleep(Duration::from_millis(20)) => {
                        self.refresh_local(&running);
                    }
                }
            }
        }
        for (index, slot) in running.iter_mut().enumerate() {
            if let Some(run) = slot.take() {
                self.stop_partition(index, run, true).await;
            }
        }
        if let Some(member) = member {
            // Failing that, it expires after one ttl.
            let _ = self.leases.release(&member).await;
        }
    }

    /// Like [`refresh_progress`](Self::refresh_progress) without store reads: only moves the
    /// published position up when every partition this process knows about has moved.
    fn refresh_local(&self, running: &[Option<Running>]) {
        if running.iter().all(Option::is_some) {
            let lowest = self
                .cores
                .iter()
                .map(|c| *c.progress().borrow())
                .min()
                .unwrap_or(Position::START);
            self.progress.send_if_modified(|p| {
                let moved = *p < lowest;
                if moved {
                    *p = lowest;
                }
                moved
            });
        }
    }

    fn owned(&self) -> impl Iterator<Item = &Arc<ProcessorCore<S>>> {
        self.cores.iter().filter(|c| c.scope.lease().is_some())
    }
}

/// Where a node starts looking for free partitions.
fn partition_of_node(node: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in node.as_bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

impl<S: Sink> ProcessorHandle for PartitionedProcessor<S> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn delivery(&self) -> Delivery {
        Delivery::Background
    }

    fn catch_up(
        &self,
        target: Option<Position>,
    ) -> BoxFuture<'_, Result<Vec<ProcessingFailure>, Error>> {
        Box::pin(async move {
            let mut parked = Vec::new();
            for core in self.owned() {
                parked.extend(core.catch_up(target).await?);
            }
            Ok(parked)
        })
    }

    fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(self.manage(shutdown))
    }

    fn progress(&self) -> watch::Receiver<Position> {
        self.progress.subscribe()
    }

    fn stopped(&self) -> Option<ProcessingFailure> {
        self.cores.iter().find_map(|c| c.stopped())
    }

    fn rebuild<'a>(
        &'a self,
        on_progress: &'a mut (dyn FnMut(RebuildProgress) + Send),
    ) -> BoxFuture<'a, Result<RebuildProgress, Error>> {
        Box::pin(async move {
            let owned = self.owned().count();
            if owned != self.cores.len() {
                return Err(Error::Rebuild {
                    processor: self.name,
                    message: format!(
                        "this process owns {owned} of its {} partitions; a rebuild empties the \
                         whole read model, so run it where every partition is owned (stop the \
                         other processes first)",
                        self.cores.len()
                    ),
                });
            }
            let mut cursors: Vec<tokio::sync::MutexGuard<'_, Cursor>> = Vec::new();
            for core in &self.cores {
                cursors.push(core.cursor.lock().await);
            }
            let target = self.cores[0].head().await?;
            self.cores[0]
                .sink
                .reset()
                .await
                .map_err(|e| Error::Rebuild {
                    processor: self.name,
                    message: e.to_string(),
                })?;
            for (core, cursor) in self.cores.iter().zip(cursors.iter_mut()) {
                core.restart(cursor).await?;
            }
            let mut processed = 0;
            let mut lowest = target;
            for (core, cursor) in self.cores.iter().zip(cursors.iter_mut()) {
                core.catch_up_locked(cursor, Some(target), |n, position| {
                    processed += n;
                    on_progress(RebuildProgress {
                        processed,
                        position,
                        target,
                    });
                })
                .await?;
                lowest = lowest.min(cursor.position);
            }
            let done = RebuildProgress {
                processed,
                position: lowest,
                target,
            };
            on_progress(done);
            Ok(done)
        })
    }

    fn replay(&self, letter: DeadLetter) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let index = partition_of(&letter.stream_id, self.count()) as usize;
            self.cores[index].replay_stream(letter).await
        })
    }
}
