//! RELIABILITY.md #5 on MongoDB: a writer process killed mid-append, 20 times, each on a fresh
//! database of the test server (which this binary started; the child writers connect to it).
//! A killed writer's open transaction stays on the server until it is reaped (60 s), so the
//! next append to its stream is checked once, on the last repetition, after that wait.
//! See `interlock_testing::kill`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(unix)]

mod support;

use interlock_mongodb::{MongoConfiguration, MongoEventStore};

/// `<uri>#<database>`: the server URI never contains `#` (it would start a URI fragment).
fn split(locator: &str) -> (&str, &str) {
    locator.rsplit_once('#').unwrap()
}

interlock_testing::writer_kill_test!(
    open: |locator: String| async move {
        let (uri, database) = split(&locator);
        let mut config = MongoConfiguration::new(uri.to_owned());
        config.database = database.to_owned();
        MongoEventStore::connect_with(config).await.unwrap()
    },
    fresh: || async {
        let uri = support::uri()?;
        Some(format!("{uri}#{}", support::fresh_database()))
    },
    repetitions: 20,
    next_append: AfterOrphansExpire,
);
