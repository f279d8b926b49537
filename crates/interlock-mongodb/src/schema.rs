//! Start-up: what the server must offer, and the indexes and counters the store relies on.

use mongodb::bson::{Bson, Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, IndexModel};

use crate::error::{MongoError, is_duplicate_key};
use crate::store::Inner;

/// Wire version of MongoDB 4.0, the first with multi-document transactions on replica sets.
const MIN_WIRE_VERSION: i64 = 7;

/// The counter document holding the last global position handed out.
pub(crate) const EVENTS_COUNTER: &str = "events";
/// The counter document holding the last dead-letter id handed out.
pub(crate) const DEAD_LETTER_COUNTER: &str = "dead_letters";

/// Asks the server `hello`; refuses a standalone node (no transactions) and servers too old
/// for transactions. Returns the largest document the server accepts.
pub(crate) async fn check_server(client: &Client, address: &str) -> Result<usize, MongoError> {
    let hello = client
        .database("admin")
        .run_command(doc! { "hello": 1 })
        .await?;
    let int = |field: &str| match hello.get(field) {
        Some(Bson::Int32(v)) => Some(i64::from(*v)),
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Double(v)) => Some(*v as i64),
        _ => None,
    };
    let wire = int("maxWireVersion").unwrap_or(0);
    if wire < MIN_WIRE_VERSION {
        return Err(MongoError::UnsupportedServer {
            address: address.to_owned(),
            found: wire,
            required: MIN_WIRE_VERSION,
        });
    }
    let replica_set = matches!(hello.get("setName"), Some(Bson::String(name)) if !name.is_empty());
    let router = matches!(hello.get("msg"), Some(Bson::String(msg)) if msg == "isdbgrid");
    if !replica_set && !router {
        return Err(MongoError::ReplicaSetRequired {
            address: address.to_owned(),
        });
    }
    let max = int("maxBsonObjectSize").unwrap_or(16 * 1024 * 1024);
    Ok(usize::try_from(max).unwrap_or(16 * 1024 * 1024))
}

fn unique(keys: Document, name: &str) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(
            IndexOptions::builder()
                .unique(true)
                .name(name.to_owned())
                .build(),
        )
        .build()
}

async fn create(collection: &Collection<Document>, model: IndexModel) -> Result<(), MongoError> {
    // Creating an index that exists with the same keys and options is a no-op.
    collection.create_index(model).await?;
    Ok(())
}

/// MongoDB's code for "the collection already exists".
const NAMESPACE_EXISTS: i32 = 48;

/// Creates the leases collection (see the `lease` module) if it is missing: up front, so that
/// no transaction has to create it (servers before 4.4 cannot). Its name, derived from the
/// checkpoints collection's, must not be one of the other collections'.
async fn create_leases(inner: &Inner) -> Result<(), MongoError> {
    let names = &inner.config.collections;
    // Validated (and checked against the other eight) with the configuration.
    let leases = crate::lease::collection_name(names);
    match inner.database.create_collection(&leases).await {
        Ok(()) => Ok(()),
        Err(e) if matches!(&*e.kind, ErrorKind::Command(c) if c.code == NAMESPACE_EXISTS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the indexes (idempotent), the leases collection and the counter documents (if
/// missing).
///
/// There is no stored schema version: everything here is created only if it is missing, so a
/// database prepared by an older release gets what it lacks (the leases collection came after
/// the first release) and is otherwise left as it is.
pub(crate) async fn prepare(inner: &Inner) -> Result<(), MongoError> {
    create_leases(inner).await?;
    // `_id` is the global position: the global order needs no other index.
    create(
        &inner.events,
        unique(
            doc! { "category": 1, "stream_id": 1, "version": 1 },
            "interlock_stream_version",
        ),
    )
    .await?;
    create(
        &inner.events,
        unique(doc! { "event_id": 1 }, "interlock_event_id"),
    )
    .await?;
    create(
        &inner.streams,
        unique(doc! { "category": 1, "stream_id": 1 }, "interlock_stream"),
    )
    .await?;
    create(
        &inner.snapshots,
        unique(doc! { "category": 1, "stream_id": 1 }, "interlock_stream"),
    )
    .await?;
    create(
        &inner.sagas,
        unique(doc! { "saga": 1, "key": 1 }, "interlock_saga_key"),
    )
    .await?;
    create(
        &inner.dead_letters,
        unique(
            doc! { "processor": 1, "event_id": 1 },
            "interlock_processor_event",
        ),
    )
    .await?;
    create(
        &inner.dead_letters,
        IndexModel::builder()
            .keys(doc! { "processor": 1, "_id": 1 })
            .options(
                IndexOptions::builder()
                    .name("interlock_processor_id".to_owned())
                    .build(),
            )
            .build(),
    )
    .await?;
    for counter in [EVENTS_COUNTER, DEAD_LETTER_COUNTER] {
        // Created up front, outside any transaction, so that the first appends do not race to
        // create it. Two processes starting together may both try: the loser's duplicate key
        // means the document is there, which is all that matters.
        let created = inner
            .counters
            .update_one(
                doc! { "_id": counter },
                doc! { "$setOnInsert": { "value": 0_i64 } },
            )
            .upsert(true)
            .await;
        match created {
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
