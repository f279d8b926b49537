//! The reliability suite of `interlock-testing` (the rows of RELIABILITY.md that every backend
//! runs), against a fresh database per test. Truncated bytes are written into a stored event's
//! payload with a raw update, behind the store's back.
//!
//! Needs a MongoDB-wire server: `MONGODB_URI`, or the SecantusDB test server this binary starts
//! (see `support`). Without either it prints a notice and exits successfully, unless
//! `INTERLOCK_REQUIRE_MONGO=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod support;

use interlock_core::EventId;
use interlock_mongodb::MongoEventStore;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Document, doc};

/// Overwrites the payload of one stored event with raw bytes.
async fn corrupt(store: MongoEventStore, event: EventId, payload: Vec<u8>) {
    let id = Binary {
        subtype: BinarySubtype::Uuid,
        bytes: event.as_uuid().as_bytes().to_vec(),
    };
    let payload = Binary {
        subtype: BinarySubtype::Generic,
        bytes: payload,
    };
    let done = store
        .database()
        .collection::<Document>(&store.config().collections.events)
        .update_one(
            doc! { "event_id": id },
            doc! { "$set": { "payload": payload } },
        )
        .await
        .unwrap();
    assert_eq!(done.modified_count, 1, "one event corrupted");
}

// The load test (row #20) in CI: 8 x 50 commands; the SecantusDB test server slows to a few
// events per second as its log grows (see the README's reliability table).
interlock_testing::reliability_suite!(
    support::store_or_exit(),
    corrupt_payload = corrupt,
    load_commands = 50,
);
