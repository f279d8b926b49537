//! RELIABILITY.md #10 on MongoDB: a crash after an external call repeats no effect, the child
//! processes connecting to the test server this binary started. See
//! `interlock_testing::effects`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use interlock_mongodb::{MongoConfiguration, MongoEventStore};

interlock_testing::external_effect_test!(
    open: |locator: String| async move {
        let (uri, database) = locator.rsplit_once('#').unwrap();
        let mut config = MongoConfiguration::new(uri.to_owned());
        config.database = database.to_owned();
        MongoEventStore::connect_with(config).await.unwrap()
    },
    fresh: || async {
        let uri = support::uri()?;
        Some(format!("{uri}#{}", support::fresh_database()))
    },
);
