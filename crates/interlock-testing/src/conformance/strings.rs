use bytes::Bytes;
use interlock_core::{EventStore, ExpectedVersion, Position, StreamId};

use super::test_event;

/// Stream ids, type names and metadata full of quotes, SQL, wildcards, RTL text and emoji come
/// back byte for byte, and do not match each other by accident (`%` and `_` are not wildcards).
pub async fn hostile_and_unicode_strings_round_trip<S: EventStore>(store: S) {
    let hostile = [
        "'; DROP TABLE events; --",
        "\"quoted\" `back` \\slash",
        "100%_match",
        "100x_match",
        "\u{202e}rtl\u{202c} עברית العربية",
        "emoji 🙂👩‍👩‍👧",
        "{\"$gt\": \"\"}",
        "tab\tnew\nline",
    ];
    let canary = StreamId::new("Canary", "1").expect("canary");
    store
        .append(&canary, ExpectedVersion::NoStream, vec![test_event(0)])
        .await
        .expect("canary");
    for (i, id) in hostile.iter().enumerate() {
        let stream = StreamId::new(format!("Cat {id}"), *id).expect("hostile but valid");
        let mut event = test_event(i as u64);
        event.event_type = format!("Type {id}");
        event
            .metadata
            .insert((*id).to_owned(), serde_json::json!(id));
        event.payload =
            Bytes::from(serde_json::to_vec(&serde_json::json!({"n": i, "s": id})).expect("json"));
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event.clone()])
            .await
            .expect("append hostile");
        let read = store
            .read_stream(&stream, 1, None)
            .await
            .expect("read hostile");
        assert_eq!(read.len(), 1, "stream {id:?} reads its own event only");
        assert_eq!(read[0].stream_id, stream);
        assert_eq!(read[0].event_type, event.event_type);
        assert_eq!(read[0].metadata, event.metadata);
        let payload: serde_json::Value = serde_json::from_slice(&read[0].payload).expect("json");
        assert_eq!(payload["s"], serde_json::json!(id));
    }
    let long = "ж".repeat(5_000); // 10 kB
    let stream = StreamId::new("Long", long.as_str())
        .map(Some)
        .unwrap_or(None);
    if let Some(stream) = stream {
        panic!("a 10 kB id must be refused by StreamId::new, got {stream:?}");
    }
    assert_eq!(store.stream_version(&canary).await.expect("canary"), 1);
    let all = store.read_all(Position::START, 100).await.expect("all");
    assert_eq!(all.len(), hostile.len() + 1);
    let listed = store.list_streams(None, 100).await.expect("list");
    assert_eq!(listed.len(), hostile.len() + 1);
}

/// A 1 MiB payload and large metadata round-trip unchanged.
pub async fn large_payloads_round_trip<S: EventStore>(store: S) {
    let stream = StreamId::new("Big", "1").expect("stream");
    let text: String = (0..1024 * 1024 / 8)
        .map(|i| format!("{:07}ü", i % 1_000_000))
        .collect();
    let mut event = test_event(1);
    event.payload =
        Bytes::from(serde_json::to_vec(&serde_json::json!({"n": 1, "text": text})).expect("json"));
    event
        .metadata
        .insert("blob".into(), serde_json::json!("m".repeat(64 * 1024)));
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event.clone()])
        .await
        .expect("append 1 MiB");
    let read = store.read_stream(&stream, 1, None).await.expect("read");
    assert_eq!(read[0].payload, event.payload);
    assert_eq!(read[0].metadata, event.metadata);
}
