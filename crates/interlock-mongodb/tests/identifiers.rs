//! RELIABILITY #15, the configuration half, for MongoDB: the configured identifiers are the
//! database and the nine collection names. Names MongoDB would refuse or read as something
//! else (`$` operators and commands, a `.` where it splits a namespace, `system.*`, NUL and
//! other control characters, invisible right-to-left overrides, empty, too long, two
//! collections under one name) are refused as `InvalidConfig` naming the setting, before any
//! connection; a canary collection is untouched and no collection is created by them. Names
//! that only look hostile (quotes, `;`, `--`, `%`, `_`, right-to-left letters, emoji) are
//! plain names and name exactly those collections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod support;

use futures::TryStreamExt;
use interlock_core::{EventStore, ExpectedVersion, StreamId};
use interlock_mongodb::{CollectionNames, MongoConfiguration, MongoError, MongoEventStore};
use interlock_testing::conformance::test_event;
use mongodb::bson::{Document, doc};

/// Nothing listens on port 1: a configuration that got past the checks would fail
/// differently.
const NOWHERE: &str = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500";

/// Database names that are refused, aimed at the database `target`.
fn hostile_databases(target: &str) -> Vec<(&'static str, String)> {
    vec![
        ("quote and script", "x\"; db.dropDatabase(); //".to_owned()),
        ("namespace of another", format!("{target}.canary")),
        ("command namespace", format!("{target}.$cmd")),
        ("dollar", "$cmd".to_owned()),
        ("slash", "../etc".to_owned()),
        ("backslash", "a\\b".to_owned()),
        ("space", "a b".to_owned()),
        ("wildcard", "*".to_owned()),
        ("NUL cutting the name short", format!("{target}\0x")),
        ("newline", "a\nb".to_owned()),
        ("10 kB", "d".repeat(10_000)),
        ("64 bytes", "d".repeat(64)),
        ("right-to-left override", "\u{202E}yranac".to_owned()),
        ("empty", String::new()),
    ]
}

/// Collection names that are refused.
fn hostile_collections(target: &str) -> Vec<(&'static str, String)> {
    vec![
        ("dollar command", "$cmd".to_owned()),
        ("dollar inside", "ev$nts".to_owned()),
        ("operator document", "{\"$gt\": \"\"}".to_owned()),
        ("leading dot", ".canary".to_owned()),
        ("system collection", "system.js".to_owned()),
        ("system users", "system.users".to_owned()),
        ("NUL cutting the name short", format!("{target}\0x")),
        ("newline", "a\nb".to_owned()),
        ("tab", "a\tb".to_owned()),
        ("right-to-left override", "\u{202E}stneve".to_owned()),
        ("right-to-left isolate", "ev\u{2067}ents".to_owned()),
        ("10 kB", "c".repeat(10_000)),
        ("101 bytes", "c".repeat(101)),
        ("10 kB of emoji", "🦀".repeat(2_500)),
        ("empty", String::new()),
    ]
}

type Field = (&'static str, fn(&mut CollectionNames) -> &mut String);

/// Every collection setting, with the name its error carries.
const FIELDS: [Field; 9] = [
    ("collections.events", |n| &mut n.events),
    ("collections.streams", |n| &mut n.streams),
    ("collections.counters", |n| &mut n.counters),
    ("collections.snapshots", |n| &mut n.snapshots),
    ("collections.checkpoints", |n| &mut n.checkpoints),
    ("collections.sagas", |n| &mut n.sagas),
    ("collections.dead_letters", |n| &mut n.dead_letters),
    ("collections.idempotency_keys", |n| &mut n.idempotency_keys),
    ("collections.leases", |n| &mut n.leases),
];

fn assert_refused(result: Result<MongoEventStore, MongoError>, field: &str, what: &str) {
    match result {
        Err(error @ MongoError::InvalidConfig { field: f, .. }) if f == field => {
            assert!(error.to_string().contains(field), "{what}: {error}");
        }
        Err(other) => panic!("{what}: not refused as {field}: {other:?}"),
        Ok(_) => panic!("{what}: accepted as {field}"),
    }
}

/// Every hostile configuration, with the setting it must be refused for, on `uri`, aimed at
/// database `target`: hostile database names, and each hostile collection name in each
/// collection setting of a store on `target`.
fn hostile_configs(uri: &str, target: &str) -> Vec<(String, &'static str, MongoConfiguration)> {
    let mut configs = Vec::new();
    for (what, database) in hostile_databases(target) {
        let mut config = MongoConfiguration::new(uri);
        config.database = database;
        configs.push((what.to_owned(), "database", config));
    }
    for (field, name_of) in FIELDS {
        for (what, name) in hostile_collections("canary") {
            let mut config = MongoConfiguration::new(uri);
            config.database = target.to_owned();
            *name_of(&mut config.collections) = name;
            configs.push((format!("{what} in {field}"), field, config));
        }
        // Two settings under one name: the later one in the list is refused.
        if field != "collections.events" {
            let mut config = MongoConfiguration::new(uri);
            config.database = target.to_owned();
            *name_of(&mut config.collections) = config.collections.events.clone();
            configs.push((format!("{field} = events"), field, config));
        }
    }
    configs
}

#[tokio::test]
async fn hostile_names_are_refused_before_connecting() {
    for (what, field, config) in hostile_configs(NOWHERE, "interlock") {
        assert!(config.check().is_err(), "{what}");
        assert_refused(MongoEventStore::connect_with(config).await, field, &what);
    }
    for (what, prefix) in [
        ("dollar", "$"),
        ("leading dot", "."),
        ("system", "system."),
        ("NUL", "a\0"),
        ("override", "\u{202E}"),
        ("too long", &"p".repeat(90)),
    ] {
        let error = MongoEventStore::builder(NOWHERE)
            .collection_prefix(prefix)
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(error, MongoError::InvalidConfig { field, .. } if field.starts_with("collections.")),
            "{what}: {error}"
        );
    }
}

async fn collections(client: &mongodb::Client, database: &str) -> Vec<String> {
    let mut names = client
        .database(database)
        .list_collection_names()
        .await
        .unwrap();
    names.sort();
    names
}

#[tokio::test]
async fn a_canary_collection_survives_hostile_names() {
    let Some(uri) = support::uri() else { return };
    // A store on another database, for its client.
    let Some(store) = support::store().await else {
        return;
    };
    let client = store.client().clone();
    let target = support::fresh_database();
    let canary = client.database(&target).collection::<Document>("canary");
    canary.insert_one(doc! { "n": 42 }).await.unwrap();
    let databases_before = client.list_database_names().await.unwrap();

    for (what, field, config) in hostile_configs(&uri, &target) {
        assert_refused(MongoEventStore::connect_with(config).await, field, &what);
    }

    let left: Vec<Document> = canary
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "the canary document survived");
    assert_eq!(left[0].get_i32("n").unwrap(), 42);
    assert_eq!(
        collections(&client, &target).await,
        vec!["canary".to_owned()],
        "no collection was created in the canary's database"
    );
    let mut databases_after = client.list_database_names().await.unwrap();
    databases_after.retain(|d| !databases_before.contains(d));
    // Other tests of this binary may create their fresh databases meanwhile.
    assert!(
        databases_after.iter().all(|d| d.starts_with("ilt_")),
        "no database was created by a refused name: {databases_after:?}"
    );
    client.database(&target).drop().await.unwrap();
    store.database().drop().await.unwrap();
}

#[tokio::test]
async fn names_that_only_look_hostile_name_exactly_those_collections() {
    let Some(store) = support::store().await else {
        return;
    };
    let client = store.client().clone();
    let target = support::fresh_database();
    let canary = client.database(&target).collection::<Document>("canary");
    canary.insert_one(doc! { "n": 42 }).await.unwrap();

    let prefixes = [
        "x\"; db.canary.drop(); --",
        "x'; DROP TABLE canary; --",
        "%_%_",
        "a.b.",
        "אירועים_",
        "🦀📦_",
        "{\"a\": 1}",
    ];
    for (n, prefix) in (0_u64..).zip(prefixes) {
        let mut config = support::config().unwrap();
        config.database.clone_from(&target);
        config.collections = CollectionNames::with_prefix(prefix);
        let names = config.collections.clone();
        let store = MongoEventStore::connect_with(config)
            .await
            .unwrap_or_else(|e| panic!("{prefix:?}: {e}"));
        let stream = StreamId::new("Named", format!("{n}")).unwrap();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![test_event(n)])
            .await
            .unwrap();
        assert_eq!(store.read_stream(&stream, 1, None).await.unwrap().len(), 1);
        // Exactly those names, byte for byte: the events are in the collection so named.
        let events = client
            .database(&target)
            .collection::<Document>(&names.events)
            .count_documents(doc! {})
            .await
            .unwrap();
        assert_eq!(events, 1, "{prefix:?}");
        let present = collections(&client, &target).await;
        for name in [
            &names.events,
            &names.streams,
            &names.counters,
            &names.dead_letters,
            &names.leases,
        ] {
            assert!(present.contains(name), "{name:?} in {present:?}");
        }
    }
    let left: Vec<Document> = canary
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "the canary document survived");
    client.database(&target).drop().await.unwrap();
    store.database().drop().await.unwrap();
}
