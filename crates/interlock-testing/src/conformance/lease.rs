use std::sync::Arc;
use std::time::Duration;

use interlock_core::lease::LeaseStore;
use interlock_core::side::CheckpointStore;
use interlock_core::{Position, StoreError};
use tokio::sync::Barrier;

use super::WAIT;

/// Leases (RELIABILITY.md #11, the store's part): one holder at a time, renewals and releases,
/// take-over after expiry with a higher fence, and a stale holder's checkpoint write refused.
pub async fn leases_have_one_holder_and_fence_takeovers<S>(store: S)
where
    S: LeaseStore + CheckpointStore + Clone,
{
    let ttl = Duration::from_millis(400);
    let key = "orders#0/4";
    let a = store
        .acquire(key, "node-a", ttl)
        .await
        .expect("acquire")
        .expect("a free lease is granted");
    assert_eq!((a.key.as_str(), a.owner.as_str()), (key, "node-a"));
    assert!(
        store
            .acquire(key, "node-b", ttl)
            .await
            .expect("acquire")
            .is_none(),
        "a held lease is not granted to another owner"
    );
    let again = store
        .acquire(key, "node-a", ttl)
        .await
        .expect("acquire")
        .expect("the holder re-acquires its own lease");
    assert_eq!(again.fence, a.fence, "re-acquiring keeps the fence");
    assert!(store.renew(&a, ttl).await.expect("renew"));
    store
        .save_checkpoint_fenced("orders#0/4", Position::from_sequence(7), &a)
        .await
        .expect("the holder saves");
    let live = store.live_leases("orders#").await.expect("live");
    assert_eq!(live, vec![a.clone()]);
    assert!(store.live_leases("other#").await.expect("live").is_empty());

    // a stalls past its ttl; b takes over with a higher fence.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let b = store
        .acquire(key, "node-b", ttl)
        .await
        .expect("acquire")
        .expect("an expired lease is taken over");
    assert!(b.fence > a.fence, "a take-over raises the fence");
    assert!(!store.renew(&a, ttl).await.expect("renew"), "a lost it");
    match store
        .save_checkpoint_fenced("orders#0/4", Position::from_sequence(9), &a)
        .await
    {
        Err(StoreError::Fenced { key: k, fence, .. }) => {
            assert_eq!((k.as_str(), fence), (key, a.fence));
        }
        other => panic!("a stale holder's write must be fenced off, got {other:?}"),
    }
    assert_eq!(
        store.load_checkpoint("orders#0/4").await.expect("load"),
        Some(Position::from_sequence(7)),
        "the fenced write changed nothing"
    );
    store
        .save_checkpoint_fenced("orders#0/4", Position::from_sequence(9), &b)
        .await
        .expect("the new holder saves");

    // Release hands it over at once.
    store.release(&b).await.expect("release");
    assert!(store.live_leases("orders#").await.expect("live").is_empty());
    let c = store
        .acquire(key, "node-c", ttl)
        .await
        .expect("acquire")
        .expect("a released lease is free");
    assert!(c.fence > b.fence);
    // Releasing with a stale lease does nothing.
    store.release(&b).await.expect("stale release");
    assert!(
        store
            .acquire(key, "node-b", ttl)
            .await
            .expect("acquire")
            .is_none()
    );

    // Bad arguments are refused before anything is written.
    for (k, o, t) in [
        ("", "x", ttl),
        ("k", "", ttl),
        ("k", "x", Duration::ZERO),
        ("k\0", "x", ttl),
    ] {
        assert!(
            matches!(store.acquire(k, o, t).await, Err(StoreError::Validation(_))),
            "acquire({k:?}, {o:?}, {t:?}) must be refused"
        );
    }

    // Racing acquirers of a free lease: exactly one wins.
    let contenders = 16;
    let barrier = Arc::new(Barrier::new(contenders));
    let mut tasks = Vec::new();
    for i in 0..contenders {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .acquire("race#0/1", &format!("node-{i}"), Duration::from_secs(30))
                .await
                .expect("acquire")
        }));
    }
    let mut winners = 0;
    for task in tasks {
        if tokio::time::timeout(WAIT, task)
            .await
            .expect("in time")
            .expect("task")
            .is_some()
        {
            winners += 1;
        }
    }
    assert_eq!(
        winners, 1,
        "exactly one of {contenders} racing acquirers wins"
    );
}
