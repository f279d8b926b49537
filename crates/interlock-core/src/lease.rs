//! Leases: one owner at a time for a unit of work shared by many processes.
//!
//! A processor split into partitions runs each partition in exactly one process at a time. The
//! process that wants a partition *acquires* its lease for a time-to-live, *renews* it well
//! before it runs out, and *releases* it on shutdown. A process that dies stops renewing, its
//! leases expire, and another process takes them over.
//!
//! Expiry alone is not enough: a process that was paused (a long GC-like stall, `SIGSTOP`, a VM
//! migration) can wake up after its lease was taken over and still believe it owns it. Every
//! take-over therefore increments the lease's **fence**, a number that only grows; a checkpoint
//! is saved with [`LeaseStore::save_checkpoint_fenced`], which refuses (with
//! [`StoreError::Fenced`]) unless the lease still carries the caller's fence. The woken process
//! learns that it lost the partition at its first write, and stops.
//!
//! Backends keep leases in their own database, next to the checkpoints they guard, and compare
//! expiry times on the database's clock (PostgreSQL's `now()`, MongoDB's server time) where
//! there is one, so process clocks do not need to agree.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{StoreError, ValidationError};
use crate::position::Position;

/// A held lease, as returned by [`LeaseStore::acquire`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// What the lease is for (for a processor partition: `"<processor>#<index>/<count>"`).
    pub key: String,
    /// Who holds it (a process-unique id).
    pub owner: String,
    /// Grows by one every time the lease changes hands (the first take included).
    pub fence: u64,
}

/// The checks every backend makes on lease arguments, so they all refuse the same input.
pub fn validate_lease_request(
    key: &str,
    owner: &str,
    ttl: Duration,
) -> Result<(), ValidationError> {
    crate::side::validate_name("lease key", key)?;
    crate::side::validate_name("lease owner", owner)?;
    if ttl < Duration::from_millis(10) || ttl > Duration::from_secs(24 * 3600) {
        return Err(ValidationError::new(
            "lease ttl",
            format!("is {ttl:?}; it must be between 10 ms and 24 h"),
        ));
    }
    Ok(())
}

/// Stores leases with fencing numbers. See the [module docs](self).
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes the lease `key` for `owner` until `ttl` from now, if nobody holds it, its holder let
    /// it expire, or `owner` already holds it (then it is simply extended, fence unchanged).
    /// Taking it from nobody or from another owner increments the fence. `None`: another owner
    /// holds an unexpired lease.
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError>;

    /// Extends `lease` until `ttl` from now. `false`: it was lost (expired and taken over, so the
    /// fence moved on); the caller must stop the work it guards. A lease that expired but was
    /// not taken over is renewed.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives the lease up at once (if it is still held with this fence), so another owner can
    /// take it without waiting for it to expire.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;

    /// The unexpired leases whose key starts with `prefix`, in key order.
    async fn live_leases(&self, prefix: &str) -> Result<Vec<Lease>, StoreError>;

    /// Saves `processor`'s checkpoint, in one atomic step with the check that `lease` is still
    /// held by its owner with its fence (expired but not taken over counts as held). Otherwise
    /// nothing is written and the answer is [`StoreError::Fenced`].
    async fn save_checkpoint_fenced(
        &self,
        processor: &str,
        position: Position,
        lease: &Lease,
    ) -> Result<(), StoreError>;
}

/// The error for a write refused because `lease` was taken over.
pub fn fenced(lease: &Lease) -> StoreError {
    StoreError::Fenced {
        key: lease.key.clone(),
        owner: lease.owner.clone(),
        fence: lease.fence,
    }
}
