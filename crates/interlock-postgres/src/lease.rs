//! Leases with fencing numbers ([`interlock_core::lease`]), in the `leases` table of the
//! store's schema.
//!
//! ## Clock
//!
//! Every expiry is computed and compared on the **server's** clock (`clock_timestamp()`, the
//! time the statement runs), never on a process's: the processes sharing a lease may run on
//! machines whose clocks disagree, and only the server's clock is common to all of them. A
//! process only chooses the time-to-live.
//!
//! ## Acquiring
//!
//! An acquire is one short transaction: `pg_advisory_xact_lock` on a 64-bit hash of schema and
//! lease key, then one upsert of the lease's row that takes it if it is free (no row, released,
//! or expired) or already the caller's, raising the fence when it changes hands. The advisory
//! lock queues acquirers of one key, so each sees the decision of the one before; the row's
//! upsert is what decides, and the lock goes with the transaction, so a holder that dies or
//! stalls never keeps it.
//!
//! ## Why the fence, and not a session advisory lock
//!
//! A session-level advisory lock (`pg_advisory_lock`) looks like a lease that needs no expiry:
//! the server frees it when the holder's session ends. But a process that is paused
//! (`SIGSTOP`, a long stall, a VM frozen for migration) does not end its session: its
//! operating system keeps the TCP connection open and answers keep-alives for it, so the
//! server keeps the session and its lock for as long as the pause lasts, and nobody can take
//! the work over. And when the session does end (a timeout, an administrator's
//! `pg_terminate_backend`, a network cut), the paused process is not told: it wakes up
//! believing it still holds the lock, and the writes it then makes (on another pooled
//! connection, or after reconnecting) are not guarded by anything. A lock held by a session
//! says nothing about the writes of the process behind it.
//!
//! The fence does: each take-over raises the number stored in the lease's row, and every write
//! made under the lease (a checkpoint, with the view rows committed beside it) checks, in the
//! write's own transaction, that the row still carries the writer's owner and fence
//! ([`LeaseStore::save_checkpoint_fenced`], [`PgEventStore::save_checkpoint_fenced_in`]). That
//! check locks the row `FOR SHARE` until the transaction ends, so a take-over waits for a
//! write already checked to commit, and a write checked after a take-over finds the new fence
//! and fails with [`StoreError::Fenced`]. A process that wakes after losing its lease learns
//! it at its first write, writes nothing, and stops.
//!
//! ## Bounded calls
//!
//! Every call waits for the server at most [`PgConfig::operation_timeout`](crate::PgConfig)
//! (an acquire as a whole, its wait for the advisory lock included) and is then
//! [`StoreError::Unavailable`], never a hang on a server that stopped answering.

use std::time::Duration;

use async_trait::async_trait;
use interlock_core::lease::{Lease, LeaseStore, fenced, validate_lease_request};
use interlock_core::{Position, StoreError, validate_name};
use sqlx_postgres::PgConnection;

use crate::error::{backend, store_error};
use crate::rows::{bits_to_i64, column};
use crate::store::PgEventStore;

/// `ttl` in microseconds (at most 24 h once validated, so it fits).
fn ttl_micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)
}

/// Whether `lease` names a key and owner that could ever have been stored.
fn is_storable(lease: &Lease) -> bool {
    validate_name("lease key", &lease.key).is_ok()
        && validate_name("lease owner", &lease.owner).is_ok()
}

/// The stored form of `lease`'s fence; `None` when no stored fence can equal it.
fn fence_param(lease: &Lease) -> Option<i64> {
    i64::try_from(lease.fence).ok()
}

/// Checks the arguments of a fenced checkpoint; the answer is the lease's stored fence.
fn fenced_params(processor: &str, lease: &Lease) -> Result<i64, StoreError> {
    validate_name("processor", processor)?;
    fence_param(lease)
        .filter(|_| is_storable(lease))
        .ok_or_else(|| fenced(lease))
}

fn fence_from(stored: i64) -> Result<u64, StoreError> {
    u64::try_from(stored).map_err(|_| backend(format!("stored lease fence {stored} is negative")))
}

impl PgEventStore {
    /// Saves `processor`'s checkpoint through `conn`, with the check that `lease` is still held
    /// with its fence, so an application's own batch processor can commit its view rows and
    /// its checkpoint in ONE transaction that a lost lease refuses.
    ///
    /// `conn` should be in the caller's transaction (pass `&mut *transaction`), which also
    /// holds the view's writes. The lease's row stays locked (`FOR SHARE`) until that
    /// transaction ends, so nobody can take the lease over between this check and the commit.
    /// On [`StoreError::Fenced`] nothing was written by this call, and the caller must roll
    /// its transaction back (dropping it does) and stop working on the lease's partition. The
    /// caller's transaction stays usable after `Fenced` (no statement failed), but committing
    /// it would commit view rows the new holder is applying too.
    ///
    /// Under `REPEATABLE READ` or `SERIALIZABLE`, a take-over that races the check may fail it
    /// with a serialization error instead ([`StoreError::Backend`]); retry the batch, which then
    /// gets `Fenced`.
    ///
    /// A server that does not answer within [`PgConfig::operation_timeout`](crate::PgConfig)
    /// makes it [`StoreError::Unavailable`]; drop the transaction then (its connection may
    /// still be in the middle of the statement) and retry the batch.
    ///
    /// ```no_run
    /// use interlock_core::Position;
    /// use interlock_core::lease::Lease;
    /// use interlock_postgres::PgEventStore;
    ///
    /// # async fn apply(store: &PgEventStore, lease: &Lease, last: Position) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = store.pool().begin().await?;
    /// sqlx_core::query::query(
    ///     "INSERT INTO app.totals (account, total) VALUES ($1, $2) \
    ///      ON CONFLICT (account) DO UPDATE SET total = app.totals.total + EXCLUDED.total",
    /// )
    /// .bind("42")
    /// .bind(100_i64)
    /// .execute(&mut *tx)
    /// .await?;
    /// // `?` drops `tx` on `Fenced`, which rolls the view rows back with it.
    /// store
    ///     .save_checkpoint_fenced_in(&mut tx, &lease.key, last, lease)
    ///     .await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn save_checkpoint_fenced_in(
        &self,
        conn: &mut PgConnection,
        processor: &str,
        position: Position,
        lease: &Lease,
    ) -> Result<(), StoreError> {
        let fence = fenced_params(processor, lease)?;
        let saved = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.save_checkpoint_fenced)
                    .bind(processor)
                    .bind(bits_to_i64(position.major()))
                    .bind(bits_to_i64(position.minor()))
                    .bind(&lease.key)
                    .bind(&lease.owner)
                    .bind(fence)
                    .fetch_optional(conn),
            )
            .await?;
        match saved {
            Some(_) => Ok(()),
            None => Err(fenced(lease)),
        }
    }
}

/// Leases live in the store's schema and expire on the server's clock (`clock_timestamp()`);
/// acquirers of one key queue on a transaction-scoped advisory lock, and a fenced checkpoint
/// locks the lease's row until its transaction ends (see the crate docs).
#[async_trait]
impl LeaseStore for PgEventStore {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        validate_lease_request(key, owner, ttl)?;
        let sql = &self.inner().sql;
        // Bounded as a whole, the wait for the advisory lock included. Dropped without a
        // commit (an error or the timeout on the way), the transaction rolls back and the
        // advisory lock goes with it; a commit whose answer is lost leaves the lease taken or
        // not, and the caller's next acquire (same owner) settles it.
        let fence = self
            .inner()
            .bounded(async {
                let mut tx = self.pool().begin().await.map_err(store_error)?;
                sqlx_core::query::query(&sql.lease_lock)
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let row = sqlx_core::query::query(&sql.lease_acquire)
                    .bind(key)
                    .bind(owner)
                    .bind(ttl_micros(ttl))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let fence = row.map(|row| column::<i64>(&row, 0)).transpose()?;
                tx.commit().await.map_err(store_error)?;
                Ok(fence)
            })
            .await?;
        fence
            .map(|fence| {
                Ok(Lease {
                    key: key.to_owned(),
                    owner: owner.to_owned(),
                    fence: fence_from(fence)?,
                })
            })
            .transpose()
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        validate_lease_request(&lease.key, &lease.owner, ttl)?;
        let Some(fence) = fence_param(lease) else {
            return Ok(false);
        };
        let done = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.lease_renew)
                    .bind(&lease.key)
                    .bind(&lease.owner)
                    .bind(fence)
                    .bind(ttl_micros(ttl))
                    .execute(self.pool()),
            )
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        // A lease that could never have been stored is not held: nothing to give up.
        let Some(fence) = fence_param(lease).filter(|_| is_storable(lease)) else {
            return Ok(());
        };
        self.inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.lease_release)
                    .bind(&lease.key)
                    .bind(&lease.owner)
                    .bind(fence)
                    .execute(self.pool()),
            )
            .await?;
        Ok(())
    }

    async fn live_leases(&self, prefix: &str) -> Result<Vec<Lease>, StoreError> {
        // Stored keys never hold NUL (and PostgreSQL text cannot): nothing starts with it.
        if prefix.contains('\0') {
            return Ok(Vec::new());
        }
        let rows = self
            .inner()
            .answer(
                sqlx_core::query::query(&self.inner().sql.live_leases)
                    .bind(prefix)
                    .fetch_all(self.pool()),
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Lease {
                    key: column(row, 0)?,
                    owner: column(row, 1)?,
                    fence: fence_from(column(row, 2)?)?,
                })
            })
            .collect()
    }

    async fn save_checkpoint_fenced(
        &self,
        processor: &str,
        position: Position,
        lease: &Lease,
    ) -> Result<(), StoreError> {
        fenced_params(processor, lease)?;
        self.inner()
            .bounded(async {
                let mut conn = self.pool().acquire().await.map_err(store_error)?;
                self.save_checkpoint_fenced_in(&mut conn, processor, position, lease)
                    .await
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    //! Fenced checkpoints in a caller's transaction, against the server at `INTERLOCK_PG_URL`
    //! (default `postgres://postgres@127.0.0.1:5432/test`); skipped without one unless
    //! `INTERLOCK_REQUIRE_PG=1`.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use interlock_core::CheckpointStore;
    use sqlx_core::executor::Executor;
    use sqlx_core::row::Row;

    use super::*;

    async fn store() -> Option<PgEventStore> {
        let url = std::env::var("INTERLOCK_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let random = uuid::Uuid::new_v4().simple().to_string();
        let connected = PgEventStore::builder(&url)
            .schema(format!("ilt_{secs}_{}", &random[..12]))
            .acquire_timeout(Duration::from_secs(2))
            .connect()
            .await;
        match connected {
            Ok(store) => {
                let view = format!("CREATE TABLE \"{}\".view (n bigint)", store.schema());
                store.pool().execute(view.as_str()).await.unwrap();
                Some(store)
            }
            Err(e) if std::env::var("INTERLOCK_REQUIRE_PG").is_ok_and(|v| v == "1") => {
                panic!("INTERLOCK_REQUIRE_PG=1 but no PostgreSQL server at {url}: {e}")
            }
            Err(e) => {
                eprintln!("notice: skipping PostgreSQL lease test, no server at {url} ({e})");
                None
            }
        }
    }

    async fn drop_schema(store: &PgEventStore) {
        let sql = format!("DROP SCHEMA \"{}\" CASCADE", store.schema());
        store.pool().execute(sql.as_str()).await.unwrap();
    }

    async fn view_rows(store: &PgEventStore) -> i64 {
        let sql = format!("SELECT count(*) FROM \"{}\".view", store.schema());
        store
            .pool()
            .fetch_one(sql.as_str())
            .await
            .unwrap()
            .get::<i64, _>(0)
    }

    /// A view row and a checkpoint in one transaction of the caller's.
    async fn commit_batch(store: &PgEventStore, n: i64, lease: &Lease) -> Result<(), StoreError> {
        let mut tx = store.pool().begin().await.unwrap();
        let insert = format!("INSERT INTO \"{}\".view (n) VALUES ($1)", store.schema());
        sqlx_core::query::query(&insert)
            .bind(n)
            .execute(&mut *tx)
            .await
            .unwrap();
        let position = Position::from_sequence(u64::try_from(n).unwrap());
        store
            .save_checkpoint_fenced_in(&mut tx, "view#0/1", position, lease)
            .await?;
        tx.commit().await.unwrap();
        Ok(())
    }

    #[tokio::test]
    async fn a_stale_holder_commits_neither_view_rows_nor_checkpoint() {
        let Some(store) = store().await else { return };
        let ttl = Duration::from_millis(50);
        let a = store.acquire("view#0/1", "a", ttl).await.unwrap().unwrap();
        commit_batch(&store, 1, &a).await.unwrap();

        tokio::time::sleep(ttl * 3).await;
        let b = store.acquire("view#0/1", "b", ttl).await.unwrap().unwrap();
        assert_eq!(b.fence, a.fence + 1);
        match commit_batch(&store, 2, &a).await {
            Err(StoreError::Fenced { owner, fence, .. }) => {
                assert_eq!((owner.as_str(), fence), ("a", a.fence));
            }
            other => panic!("expected Fenced, got {other:?}"),
        }
        assert_eq!(view_rows(&store).await, 1);
        assert_eq!(
            store.load_checkpoint("view#0/1").await.unwrap(),
            Some(Position::from_sequence(1))
        );
        commit_batch(&store, 2, &b).await.unwrap();
        assert_eq!(view_rows(&store).await, 2);
        drop_schema(&store).await;
    }

    #[tokio::test]
    async fn a_take_over_waits_for_a_checked_write_to_commit() {
        let Some(store) = store().await else { return };
        let ttl = Duration::from_millis(50);
        let a = store.acquire("view#0/1", "a", ttl).await.unwrap().unwrap();
        let mut tx = store.pool().begin().await.unwrap();
        store
            .save_checkpoint_fenced_in(&mut tx, "view#0/1", Position::from_sequence(5), &a)
            .await
            .unwrap();
        // a's lease runs out while its checked write is still open: b must wait for it.
        tokio::time::sleep(ttl * 3).await;
        let taking = tokio::spawn({
            let store = store.clone();
            async move { store.acquire("view#0/1", "b", ttl).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !taking.is_finished(),
            "the take-over waits for a's transaction"
        );
        tx.commit().await.unwrap();
        let b = taking.await.unwrap().unwrap().unwrap();
        assert_eq!(b.fence, a.fence + 1);
        // So b starts from what a committed, and nothing is applied twice.
        assert_eq!(
            store.load_checkpoint("view#0/1").await.unwrap(),
            Some(Position::from_sequence(5))
        );
        drop_schema(&store).await;
    }

    #[tokio::test]
    async fn odd_prefixes_and_leases_are_answered_not_failed() {
        let Some(store) = store().await else { return };
        let ttl = Duration::from_secs(5);
        let a = store.acquire("p%_#0/1", "a", ttl).await.unwrap().unwrap();
        store.acquire("px#0/1", "a", ttl).await.unwrap().unwrap();
        assert_eq!(store.live_leases("p%_").await.unwrap(), vec![a.clone()]);
        assert!(store.live_leases("p\0").await.unwrap().is_empty());
        let nul = Lease {
            key: "p\0".to_owned(),
            ..a.clone()
        };
        store.release(&nul).await.unwrap();
        assert!(matches!(
            store
                .save_checkpoint_fenced("p", Position::from_sequence(1), &nul)
                .await,
            Err(StoreError::Fenced { .. })
        ));
        let huge = Lease {
            fence: u64::MAX,
            ..a.clone()
        };
        assert!(!store.renew(&huge, ttl).await.unwrap());
        drop_schema(&store).await;
    }
}
