//! A differential test: the same pseudo-random script of appends (good, conflicting, retried,
//! colliding) against the in-memory reference store and the SQLite store gives the same answers
//! and the same stored events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use common::{event, fresh_store, stream};
use interlock_core::{
    AppendResult, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StoreError,
    StreamInfo,
};
use interlock_runtime::InMemoryEventStore;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What an append answered, comparable across stores.
#[derive(Debug, PartialEq)]
enum Answer {
    Ok(AppendResult),
    Concurrency(String, ExpectedVersion, u64),
    Duplicate(interlock_core::EventId, Option<String>),
    Invalid(String),
}

fn answer(result: Result<AppendResult, StoreError>) -> Answer {
    match result {
        Ok(r) => Answer::Ok(r),
        Err(StoreError::Concurrency(c)) => {
            Answer::Concurrency(c.stream.to_string(), c.expected, c.actual)
        }
        Err(StoreError::DuplicateEventId { event_id, stream }) => {
            Answer::Duplicate(event_id, stream.map(|s| s.to_string()))
        }
        Err(StoreError::Validation(v)) => Answer::Invalid(v.field().to_owned()),
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

/// Everything but the recording time, which each store takes from its own clock.
fn comparable(mut e: RecordedEvent) -> RecordedEvent {
    e.recorded_at = chrono::DateTime::UNIX_EPOCH;
    e
}

fn info(i: StreamInfo) -> (String, u64, Position) {
    (i.stream_id.to_string(), i.version, i.last_position)
}

#[tokio::test]
async fn sqlite_answers_like_the_in_memory_reference() {
    let memory = InMemoryEventStore::new();
    let sqlite = fresh_store();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut sent: Vec<Vec<NewEvent>> = Vec::new();
    for step in 0..400 {
        let target = stream(&format!("s{}", rng.below(4)));
        let current = memory.stream_version(&target).await.unwrap();
        let expected = match rng.below(6) {
            0 => ExpectedVersion::Any,
            1 => ExpectedVersion::NoStream,
            2 => ExpectedVersion::StreamExists,
            _ => ExpectedVersion::Exact(current.saturating_sub(rng.below(2))),
        };
        let fresh = |rng: &mut Rng| -> Vec<NewEvent> {
            (0..=rng.below(4))
                .map(|i| event("Stepped", serde_json::json!({ "step": step, "i": i })))
                .collect()
        };
        let batch = match (rng.below(10), sent.is_empty()) {
            (0 | 1, false) => sent[rng.below(sent.len() as u64) as usize].clone(), // retry
            (2, false) => {
                let old = &sent[rng.below(sent.len() as u64) as usize];
                old[..1 + rng.below(old.len() as u64) as usize].to_vec() // prefix
            }
            (3, false) => {
                // A new batch with one stored id somewhere in it.
                let old = &sent[rng.below(sent.len() as u64) as usize];
                let mut b = fresh(&mut rng);
                let at = rng.below(b.len() as u64) as usize;
                b[at] = b[at].clone().with_event_id(old[0].event_id);
                b
            }
            (4, false) => {
                // A stored batch with changed content.
                let mut b = sent[rng.below(sent.len() as u64) as usize].clone();
                let at = rng.below(b.len() as u64) as usize;
                b[at].payload = bytes::Bytes::from_static(b"{\"changed\":true}");
                b
            }
            (5, _) => Vec::new(),
            _ => fresh(&mut rng),
        };
        let a = answer(memory.append(&target, expected, batch.clone()).await);
        let b = answer(sqlite.append(&target, expected, batch.clone()).await);
        assert_eq!(a, b, "step {step}: {expected:?} on {target}");
        if matches!(a, Answer::Ok(r) if !r.already_appended) {
            sent.push(batch);
        }
    }
    assert!(
        sent.len() > 50,
        "the script should mostly succeed ({} batches)",
        sent.len()
    );

    let all_memory: Vec<_> = memory
        .read_all(Position::START, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(comparable)
        .collect();
    let all_sqlite: Vec<_> = sqlite
        .read_all(Position::START, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(comparable)
        .collect();
    assert_eq!(all_memory, all_sqlite);
    for after in [0, 1, 7, 100] {
        let after = Position::from_sequence(after);
        let m: Vec<_> = memory
            .read_all(after, 13)
            .await
            .unwrap()
            .into_iter()
            .map(comparable)
            .collect();
        let s: Vec<_> = sqlite
            .read_all(after, 13)
            .await
            .unwrap()
            .into_iter()
            .map(comparable)
            .collect();
        assert_eq!(m, s);
    }
    let m: Vec<_> = memory
        .list_streams(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(info)
        .collect();
    let s: Vec<_> = sqlite
        .list_streams(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(info)
        .collect();
    assert_eq!(m, s);
    for (from, to) in [
        (0, None),
        (2, Some(5)),
        (5, Some(2)),
        (3, Some(3)),
        (1000, None),
    ] {
        let m: Vec<_> = memory
            .read_stream(&stream("s1"), from, to)
            .await
            .unwrap()
            .into_iter()
            .map(comparable)
            .collect();
        let s: Vec<_> = sqlite
            .read_stream(&stream("s1"), from, to)
            .await
            .unwrap()
            .into_iter()
            .map(comparable)
            .collect();
        assert_eq!(m, s);
    }
    assert_eq!(
        memory.head_position().await.unwrap(),
        sqlite.head_position().await.unwrap()
    );
}
