//! Leases with fencing numbers ([`interlock_core::lease`]), one document per lease in the
//! leases collection: `{_id: key, owner, fence, expires_at, fenced_writes}`.
//!
//! The collection is [`CollectionNames::leases`](crate::CollectionNames::leases)
//! (`interlock_leases` by default), validated with the other names. It is created at connect.
//!
//! ## Clock
//!
//! Expiry is on the **server's** clock: every time is computed by the server from `$$NOW`, in
//! an update pipeline or an `$expr` filter, never by a process (whose clocks may disagree).
//! `expires_at` is stored as milliseconds since the Unix epoch (`{$toLong: "$$NOW"}` plus the
//! time-to-live), and compared as such: numbers compare the same way on every server (a BSON
//! date compared with `$$NOW` does not on every MongoDB-compatible server). Pipeline updates
//! and `$$NOW` need MongoDB 4.2 or later.
//!
//! ## Atomicity
//!
//! Acquire, renew and release are each one single-document atomic update whose filter says
//! when it may apply (for acquire: no owner, an expired lease, or the caller's own), so
//! concurrent callers are serialised by the server on the lease's document. An acquire of a
//! lease that has no document yet upserts it; of two racing upserts, the loser hits the unique
//! `_id` and is answered "held by another".
//!
//! A fenced checkpoint is one transaction that first increments `fenced_writes` on the lease's
//! document, filtered on owner and fence, then writes the checkpoint. The write to the lease
//! document makes a concurrent take-over conflict with the transaction: the take-over waits
//! until the transaction ends, and a transaction whose lease changed hands after it started
//! fails with a write conflict and runs again, to find the new fence and answer
//! [`StoreError::Fenced`]. (A read of the lease alone would not do: MongoDB transactions only
//! conflict on writes.)

use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::TryStreamExt;
use interlock_core::lease::{Lease, LeaseStore, fenced, validate_lease_request};
use interlock_core::{Position, StoreError, validate_name};
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ReadConcern, ReturnDocument, WriteConcern};
use mongodb::{ClientSession, Collection};

use crate::codec::Fields;
use crate::config::CollectionNames;
use crate::error::{
    backend, is_duplicate_key, is_transient_transaction, is_unknown_commit, store_error,
};
use crate::side::checkpoint_update;
use crate::store::MongoEventStore;

/// The name of the leases collection for `names`: [`CollectionNames::leases`].
pub(crate) fn collection_name(names: &CollectionNames) -> String {
    names.leases.clone()
}

/// The server's clock, in milliseconds since the Unix epoch.
fn server_now() -> Bson {
    Bson::Document(doc! { "$toLong": "$$NOW" })
}

/// `ttl` in milliseconds (at most 24 h once validated), at least 1.
fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Whether `lease` names a key and owner that could ever have been stored.
fn is_storable(lease: &Lease) -> bool {
    validate_name("lease key", &lease.key).is_ok()
        && validate_name("lease owner", &lease.owner).is_ok()
}

/// The filter matching `lease`'s document while it carries `lease`'s owner and fence; `None`
/// when no stored document can.
fn held_filter(lease: &Lease) -> Option<Document> {
    let fence = i64::try_from(lease.fence).ok()?;
    Some(doc! { "_id": &lease.key, "owner": &lease.owner, "fence": fence })
}

fn decode(doc: &Document) -> Result<Lease, StoreError> {
    let fields = Fields::new(doc, "a stored lease");
    let bad = |e: String| backend(format!("lease: {e}"));
    Ok(Lease {
        key: fields.str("_id").map_err(bad)?.to_owned(),
        owner: fields.str("owner").map_err(bad)?.to_owned(),
        fence: fields.u64("fence").map_err(bad)?,
    })
}

/// How one attempt of the fenced-checkpoint transaction ended.
enum Attempt {
    Saved,
    Fenced,
    /// A transient failure: run the transaction again.
    Retry(StoreError),
}

impl MongoEventStore {
    fn leases(&self) -> Collection<Document> {
        let inner = self.inner();
        inner.database.collection(&inner.config.collections.leases)
    }

    /// One attempt: bump the lease's `fenced_writes` (the conflict point with a take-over),
    /// then write the checkpoint, then commit.
    async fn fenced_attempt(
        &self,
        session: &mut ClientSession,
        held: &Document,
        processor: &str,
        position: Position,
        deadline: Instant,
    ) -> Result<Attempt, StoreError> {
        let classify = |e: mongodb::error::Error| {
            if is_transient_transaction(&e) {
                Ok(Attempt::Retry(store_error(e)))
            } else {
                Err(store_error(e))
            }
        };
        if let Err(e) = session
            .start_transaction()
            .read_concern(ReadConcern::snapshot())
            .write_concern(WriteConcern::majority())
            .await
        {
            return classify(e);
        }
        let body = async {
            let touched = self
                .leases()
                .update_one(held.clone(), doc! { "$inc": { "fenced_writes": 1_i64 } })
                .session(&mut *session)
                .await?;
            if touched.matched_count == 0 {
                return Ok(false);
            }
            self.inner()
                .checkpoints
                .update_one(doc! { "_id": processor }, checkpoint_update(position))
                .upsert(true)
                .session(&mut *session)
                .await?;
            Ok::<_, mongodb::error::Error>(true)
        };
        match body.await {
            Ok(true) => {}
            Ok(false) => {
                let _ = session.abort_transaction().await;
                return Ok(Attempt::Fenced);
            }
            Err(e) => {
                let _ = session.abort_transaction().await;
                return classify(e);
            }
        }
        loop {
            match session.commit_transaction().await {
                Ok(()) => return Ok(Attempt::Saved),
                // The server remembers a committed transaction: committing again is safe.
                Err(e) if is_unknown_commit(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=20))).await;
                }
                Err(e) => return classify(e),
            }
        }
    }
}

/// Leases live in the store's database and expire on the server's clock (`$$NOW`); a fenced
/// checkpoint is a transaction that writes the lease's document, so a take-over cannot slip in
/// between its check and its write (see the crate docs).
#[async_trait]
impl LeaseStore for MongoEventStore {
    async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        validate_lease_request(key, owner, ttl)?;
        // Takeable: the caller's own, released (owner null) or expired. A missing document
        // does not match, and is inserted.
        let filter = doc! {
            "_id": key,
            "$expr": { "$or": [
                { "$eq": ["$owner", owner] },
                { "$eq": [{ "$ifNull": ["$owner", Bson::Null] }, Bson::Null] },
                { "$lte": ["$expires_at", server_now()] },
            ] },
        };
        // Two stages, so the fence is computed from the owner as it was.
        let update = vec![
            doc! { "$set": { "fence": { "$cond": [
                { "$eq": ["$owner", owner] },
                "$fence",
                { "$add": [{ "$ifNull": ["$fence", 0_i64] }, 1_i64] },
            ] } } },
            doc! { "$set": {
                "owner": owner,
                "expires_at": { "$add": [server_now(), ttl_millis(ttl)] },
            } },
        ];
        let taken = self
            .leases()
            .find_one_and_update(filter, update)
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        match taken {
            Ok(Some(doc)) => decode(&doc).map(Some),
            Ok(None) => Err(backend(format!(
                "the upsert of lease {key:?} returned no document"
            ))),
            // The document exists and is not takeable (or a racing acquirer inserted it).
            Err(e) if is_duplicate_key(&e) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        validate_lease_request(&lease.key, &lease.owner, ttl)?;
        let Some(filter) = held_filter(lease) else {
            return Ok(false);
        };
        let renewed = self
            .leases()
            .update_one(
                filter,
                vec![doc! { "$set": {
                    "expires_at": { "$add": [server_now(), ttl_millis(ttl)] },
                } }],
            )
            .await
            .map_err(store_error)?;
        Ok(renewed.matched_count > 0)
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        // A lease that could never have been stored is not held: nothing to give up.
        let Some(filter) = held_filter(lease).filter(|_| is_storable(lease)) else {
            return Ok(());
        };
        self.leases()
            .update_one(
                filter,
                vec![doc! { "$set": { "owner": Bson::Null, "expires_at": server_now() } }],
            )
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn live_leases(&self, prefix: &str) -> Result<Vec<Lease>, StoreError> {
        // Stored keys never hold NUL: nothing starts with it.
        if prefix.contains('\0') {
            return Ok(Vec::new());
        }
        // Strings compare by their UTF-8 bytes, the order of `str`: the scan starts at the
        // prefix and stops at the first key past it.
        let mut cursor = self
            .leases()
            .find(doc! {
                "_id": { "$gte": prefix },
                "owner": { "$type": "string" },
                "$expr": { "$gt": ["$expires_at", server_now()] },
            })
            .sort(doc! { "_id": 1 })
            .await
            .map_err(store_error)?;
        let mut live = Vec::new();
        while let Some(doc) = cursor.try_next().await.map_err(store_error)? {
            let lease = decode(&doc)?;
            if !lease.key.starts_with(prefix) {
                break;
            }
            live.push(lease);
        }
        Ok(live)
    }

    async fn save_checkpoint_fenced(
        &self,
        processor: &str,
        position: Position,
        lease: &Lease,
    ) -> Result<(), StoreError> {
        validate_name("processor", processor)?;
        let Some(held) = held_filter(lease).filter(|_| is_storable(lease)) else {
            return Err(fenced(lease));
        };
        let mut session = self
            .inner()
            .client
            .start_session()
            .await
            .map_err(store_error)?;
        let deadline = Instant::now() + self.inner().config.transaction_timeout;
        let mut attempt = 0_u32;
        loop {
            attempt += 1;
            match self
                .fenced_attempt(&mut session, &held, processor, position, deadline)
                .await?
            {
                Attempt::Saved => return Ok(()),
                Attempt::Fenced => return Err(fenced(lease)),
                Attempt::Retry(e) if Instant::now() >= deadline => return Err(e),
                Attempt::Retry(_) => {
                    let cap_us = 1_000_u64 << attempt.min(6);
                    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=cap_us))).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leases_collection_has_a_name_of_its_own() {
        assert_eq!(
            collection_name(&CollectionNames::default()),
            "interlock_leases"
        );
        assert_eq!(
            collection_name(&CollectionNames::with_prefix("billing.")),
            "billing.leases"
        );
        // No longer derived from the checkpoints collection's name.
        let names = CollectionNames {
            checkpoints: "offsets".to_owned(),
            leases: "fences".to_owned(),
            ..CollectionNames::default()
        };
        assert_eq!(collection_name(&names), "fences");
        assert!(names.check().is_ok());
        let clash = CollectionNames {
            leases: "interlock_checkpoints".to_owned(),
            ..CollectionNames::default()
        };
        let err = clash.check().unwrap_err();
        assert!(err.to_string().contains("collections.leases"), "{err}");
    }

    #[test]
    fn leases_that_cannot_be_stored_match_nothing() {
        let lease = Lease {
            key: "k".to_owned(),
            owner: "o".to_owned(),
            fence: u64::MAX,
        };
        assert!(held_filter(&lease).is_none());
        assert_eq!(ttl_millis(Duration::from_micros(10)), 1);
    }
}
