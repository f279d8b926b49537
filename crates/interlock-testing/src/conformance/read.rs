use interlock_core::{EventStore, ExpectedVersion, Position};

use super::{payload_n, test_events, test_stream};

/// `read_stream(from, to)` returns exactly versions `from..=to`, clamped to what exists.
pub async fn read_stream_honours_ranges<S: EventStore>(store: S) {
    let stream = test_stream("ranges");
    store
        .append(&stream, ExpectedVersion::NoStream, test_events(1, 10))
        .await
        .expect("setup");
    let versions = |events: Vec<interlock_core::RecordedEvent>| {
        events.iter().map(|e| e.stream_version).collect::<Vec<_>>()
    };
    let read = |from, to| {
        let store = &store;
        let stream = &stream;
        async move { store.read_stream(stream, from, to).await.expect("read") }
    };
    assert_eq!(versions(read(1, None).await), (1..=10).collect::<Vec<_>>());
    assert_eq!(versions(read(0, None).await), (1..=10).collect::<Vec<_>>());
    assert_eq!(versions(read(4, Some(6)).await), vec![4, 5, 6]);
    assert_eq!(versions(read(7, None).await), vec![7, 8, 9, 10]);
    assert_eq!(versions(read(10, Some(10)).await), vec![10]);
    assert_eq!(versions(read(9, Some(100)).await), vec![9, 10]);
    assert!(read(11, None).await.is_empty());
    assert!(read(6, Some(5)).await.is_empty());
    assert!(read(u64::MAX, None).await.is_empty());
    assert!(
        store
            .read_stream(&test_stream("missing"), 1, None)
            .await
            .expect("read missing")
            .is_empty()
    );
}

/// `read_all` pages through every stream in one strictly increasing order that keeps each
/// stream's own order.
pub async fn read_all_follows_global_order_in_pages<S: EventStore>(store: S) {
    let (a, b) = (test_stream("a"), test_stream("b"));
    store
        .append(&a, ExpectedVersion::NoStream, test_events(1, 3))
        .await
        .expect("a");
    store
        .append(&b, ExpectedVersion::NoStream, test_events(101, 2))
        .await
        .expect("b");
    store
        .append(&a, ExpectedVersion::Exact(3), test_events(4, 2))
        .await
        .expect("a again");

    let mut all = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 2).await.expect("page");
        assert!(page.len() <= 2, "a page never exceeds its limit");
        let Some(last) = page.last() else { break };
        after = last.position;
        all.extend(page);
    }
    let order: Vec<u64> = all.iter().map(|e| payload_n(&e.payload)).collect();
    assert_eq!(order, vec![1, 2, 3, 101, 102, 4, 5]);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(store.head_position().await.expect("head"), after);
    assert!(
        store
            .read_all(after, 10)
            .await
            .expect("past the end")
            .is_empty()
    );
    assert!(
        store
            .read_all(Position::START, 0)
            .await
            .expect("limit 0")
            .is_empty()
    );

    let middle = all[2].position;
    let rest = store.read_all(middle, 100).await.expect("from the middle");
    assert_eq!(rest.len(), 4);
    assert_eq!(rest[0].event_id, all[3].event_id);
}

/// Stream info, listing in id order with paging, and the head position.
pub async fn stream_info_listing_and_head<S: EventStore>(store: S) {
    assert_eq!(store.head_position().await.expect("head"), Position::START);
    assert!(
        store
            .stream_info(&test_stream("x"))
            .await
            .expect("info")
            .is_none()
    );
    assert!(store.list_streams(None, 10).await.expect("list").is_empty());

    for (id, n) in [("c", 1), ("a", 3), ("b", 2)] {
        store
            .append(
                &test_stream(id),
                ExpectedVersion::NoStream,
                test_events(1, n),
            )
            .await
            .expect("setup");
    }
    let info = store
        .stream_info(&test_stream("a"))
        .await
        .expect("info")
        .expect("stream a exists");
    assert_eq!(info.version, 3);
    assert!(info.created_at <= info.updated_at);
    let last_of_a = store
        .read_stream(&test_stream("a"), 3, None)
        .await
        .expect("read");
    assert_eq!(info.last_position, last_of_a[0].position);

    let listed = store.list_streams(None, 10).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|s| s.stream_id.id()).collect();
    assert_eq!(ids, vec!["a", "b", "c"]);
    assert_eq!(listed[1].version, 2);
    let page = store
        .list_streams(Some(&test_stream("a")), 1)
        .await
        .expect("page");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].stream_id.id(), "b");

    let head = store.head_position().await.expect("head");
    let all = store.read_all(Position::START, 100).await.expect("all");
    assert_eq!(all.len(), 6);
    assert_eq!(all.last().map(|e| e.position), Some(head));
}
