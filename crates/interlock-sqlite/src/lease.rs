//! Leases with fencing numbers ([`interlock_core::lease`]), in the `leases` table of the file.
//!
//! Every write (acquire, renew, release, fenced checkpoint) runs on the store's writer thread,
//! so the read-compare-write of one call is atomic: the writer holds SQLite's write lock for its
//! whole transaction, which also shuts out other processes that opened the same file.
//!
//! ## Clock
//!
//! A SQLite file has no clock of its own: expiry times are the writing process's wall clock
//! (nanoseconds since the Unix epoch), compared with the clock of whichever process looks next.
//! Processes sharing one file run on one machine, so they share that clock; a clock step only
//! shortens or stretches a lease, it never lets two holders write: every take-over raises the
//! fence, and a fenced write (a checkpoint, a [`SqliteProjection`](crate::SqliteProjection)
//! batch) checks the fence in its own transaction.
//!
//! A released lease keeps its row with no owner (so its fence keeps growing across owners).

use std::time::Duration;

use async_trait::async_trait;
use interlock_core::lease::{Lease, LeaseStore, fenced, validate_lease_request};
use interlock_core::{Position, StoreError, validate_name};
use rusqlite::Connection;

use crate::error::store_error;
use crate::rows::{corrupt_row, now_nanos, u64_at};
use crate::side::save_checkpoint_in;
use crate::store::SqliteEventStore;

const TABLE: &str = "leases";

/// `ttl` in nanoseconds (at most 24 h once validated, so it fits).
fn ttl_nanos(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX)
}

/// Whether `lease` names a key and owner that could ever have been stored.
fn is_storable(lease: &Lease) -> bool {
    validate_name("lease key", &lease.key).is_ok()
        && validate_name("lease owner", &lease.owner).is_ok()
}

/// The stored fence of `lease`; `None` when no stored fence can equal it.
fn fence_param(lease: &Lease) -> Option<i64> {
    i64::try_from(lease.fence).ok()
}

/// Checks, within the caller's transaction, that `lease` is still held by its owner with its
/// fence (expired but not taken over counts as held). Otherwise [`StoreError::Fenced`].
pub(crate) fn check_lease_in(conn: &Connection, lease: &Lease) -> Result<(), StoreError> {
    let Some(fence) = fence_param(lease) else {
        return Err(fenced(lease));
    };
    let holds: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM leases WHERE key = ?1 AND owner = ?2 AND fence = ?3)",
        )
        .and_then(|mut s| s.query_row((&lease.key, &lease.owner, fence), |r| r.get(0)))
        .map_err(store_error)?;
    if holds { Ok(()) } else { Err(fenced(lease)) }
}

/// Acquire, within the writer's transaction, at `now` (nanoseconds).
fn acquire_in(
    conn: &Connection,
    key: &str,
    owner: &str,
    now: i64,
    expires: i64,
) -> Result<Option<Lease>, StoreError> {
    let found: Option<(Option<String>, u64, i64)> = {
        let mut stmt = conn
            .prepare_cached("SELECT owner, fence, expires_at FROM leases WHERE key = ?1")
            .map_err(store_error)?;
        let mut rows = stmt.query([key]).map_err(store_error)?;
        match rows.next().map_err(store_error)? {
            None => None,
            Some(row) => Some((
                row.get::<_, Option<String>>(0)
                    .map_err(|_| corrupt_row(TABLE, "owner is not text"))?,
                u64_at(row, 1, TABLE)?,
                row.get::<_, i64>(2)
                    .map_err(|_| corrupt_row(TABLE, "expires_at is not an integer"))?,
            )),
        }
    };
    let fence = match found {
        None => {
            conn.prepare_cached(
                "INSERT INTO leases (key, owner, fence, expires_at) VALUES (?1, ?2, 1, ?3)",
            )
            .and_then(|mut s| s.execute((key, owner, expires)))
            .map_err(store_error)?;
            1
        }
        Some((Some(held_by), fence, _)) if held_by == owner => {
            conn.prepare_cached("UPDATE leases SET expires_at = ?2 WHERE key = ?1")
                .and_then(|mut s| s.execute((key, expires)))
                .map_err(store_error)?;
            fence
        }
        Some((held_by, fence, expires_at)) if held_by.is_none() || expires_at <= now => {
            let next = fence
                .checked_add(1)
                .and_then(|f| i64::try_from(f).ok())
                .ok_or_else(|| corrupt_row(TABLE, "fence out of range"))?;
            conn.prepare_cached(
                "UPDATE leases SET owner = ?2, fence = ?3, expires_at = ?4 WHERE key = ?1",
            )
            .and_then(|mut s| s.execute((key, owner, next, expires)))
            .map_err(store_error)?;
            fence + 1
        }
        Some(_) => return Ok(None),
    };
    Ok(Some(Lease {
        key: key.to_owned(),
        owner: owner.to_owned(),
        fence,
    }))
}

/// Leases live in the same file as the events and checkpoints, written by the writer thread;
/// they expire on the machine's wall clock (the processes sharing a file share a machine), and
/// every fenced write checks the fence in its own transaction.
#[async_trait]
impl LeaseStore for SqliteEventStore {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        validate_lease_request(key, owner, ttl)?;
        let (key, owner, ttl) = (key.to_owned(), owner.to_owned(), ttl_nanos(ttl));
        self.write(move |conn| {
            // The clock is read on the writer thread, when the transaction runs.
            let now = now_nanos();
            acquire_in(conn, &key, &owner, now, now.saturating_add(ttl))
        })
        .await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        validate_lease_request(&lease.key, &lease.owner, ttl)?;
        let Some(fence) = fence_param(lease) else {
            return Ok(false);
        };
        let (lease, ttl) = (lease.clone(), ttl_nanos(ttl));
        self.write(move |conn| {
            let expires = now_nanos().saturating_add(ttl);
            let changed = conn
                .prepare_cached(
                    "UPDATE leases SET expires_at = ?4 WHERE key = ?1 AND owner = ?2 AND fence = ?3",
                )
                .and_then(|mut s| s.execute((&lease.key, &lease.owner, fence, expires)))
                .map_err(store_error)?;
            Ok(changed > 0)
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        // A lease that could never have been stored is not held: nothing to give up.
        let Some(fence) = fence_param(lease).filter(|_| is_storable(lease)) else {
            return Ok(());
        };
        let lease = lease.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE leases SET owner = NULL, expires_at = ?4 \
                 WHERE key = ?1 AND owner = ?2 AND fence = ?3",
            )
            .and_then(|mut s| s.execute((&lease.key, &lease.owner, fence, now_nanos())))
            .map_err(store_error)?;
            Ok(())
        })
        .await
    }

    async fn live_leases(&self, prefix: &str) -> Result<Vec<Lease>, StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |conn| {
            let now = now_nanos();
            // Keys are TEXT in BINARY collation: byte order, the order of `str`. The scan starts
            // at the prefix and stops at the first key past it.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key, owner, fence, expires_at FROM leases WHERE key >= ?1 ORDER BY key",
                )
                .map_err(store_error)?;
            let mut rows = stmt.query([&prefix]).map_err(store_error)?;
            let mut live = Vec::new();
            while let Some(row) = rows.next().map_err(store_error)? {
                let key: String = row
                    .get(0)
                    .map_err(|_| corrupt_row(TABLE, "key is not text"))?;
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                let owner: Option<String> = row
                    .get(1)
                    .map_err(|_| corrupt_row(TABLE, "owner is not text"))?;
                let expires_at: i64 = row
                    .get(3)
                    .map_err(|_| corrupt_row(TABLE, "expires_at is not an integer"))?;
                if let Some(owner) = owner
                    && expires_at > now
                {
                    live.push(Lease {
                        key,
                        owner,
                        fence: u64_at(row, 2, TABLE)?,
                    });
                }
            }
            Ok(live)
        })
        .await
    }

    async fn save_checkpoint_fenced(
        &self,
        processor: &str,
        position: Position,
        lease: &Lease,
    ) -> Result<(), StoreError> {
        validate_name("processor", processor)?;
        if !is_storable(lease) {
            return Err(fenced(lease));
        }
        let (processor, lease) = (processor.to_owned(), lease.clone());
        self.write(move |conn| {
            check_lease_in(conn, &lease)?;
            save_checkpoint_in(conn, &processor, position)
        })
        .await
    }
}
