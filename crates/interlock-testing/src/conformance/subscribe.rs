use futures::StreamExt;
use interlock_core::{EventStore, EventSubscription, ExpectedVersion, Position, RecordedEvent};

use super::{WAIT, payload_n, test_events, test_stream};

async fn next_n(subscription: &mut EventSubscription, n: usize) -> Vec<RecordedEvent> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let item = tokio::time::timeout(WAIT, subscription.next())
            .await
            .unwrap_or_else(|_| panic!("subscription stalled after {} of {n} events", got.len()))
            .expect("subscription ended");
        got.push(item.expect("subscription error"));
    }
    got
}

/// A subscription delivers every stored event, then events appended later, in order, once.
pub async fn subscription_catches_up_then_follows_live<S: EventStore>(store: S) {
    let stream = test_stream("live");
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 5))
        .await
        .expect("setup");
    let mut subscription = store.subscribe_all(Position::START);
    let caught_up = next_n(&mut subscription, 5).await;
    assert_eq!(
        caught_up
            .iter()
            .map(|e| payload_n(&e.payload))
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );

    // Nothing more is there: the next poll must wait, not invent events.
    let early =
        tokio::time::timeout(std::time::Duration::from_millis(100), subscription.next()).await;
    assert!(early.is_err(), "no event before the next append: {early:?}");

    for n in 6..=8 {
        store
            .append(&stream, ExpectedVersion::Exact(n - 1), test_events(n, 1))
            .await
            .expect("live append");
    }
    let live = next_n(&mut subscription, 3).await;
    assert_eq!(
        live.iter()
            .map(|e| payload_n(&e.payload))
            .collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    let positions: Vec<_> = caught_up.iter().chain(&live).map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
}

/// A subscription from a position starts right after it.
pub async fn subscription_starts_after_the_given_position<S: EventStore>(store: S) {
    let stream = test_stream("from");
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 4))
        .await
        .expect("setup");
    let all = store.read_all(Position::START, 10).await.expect("all");
    let mut subscription = store.subscribe_all(all[1].position);
    let got = next_n(&mut subscription, 2).await;
    assert_eq!(got[0].event_id, all[2].event_id);
    assert_eq!(got[1].event_id, all[3].event_id);
}
