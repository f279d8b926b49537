//! RELIABILITY.md #5 on PostgreSQL: a writer process killed mid-append, 20 times, each on a
//! fresh schema. See `interlock_testing::kill`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(unix)]

mod common;

use interlock_postgres::{PgConfig, PgEventStore};

interlock_testing::writer_kill_test!(
    open: |schema: String| async move {
        let mut config = PgConfig::new(common::url());
        config.schema = schema;
        PgEventStore::connect_with(config).await.unwrap()
    },
    fresh: || async {
        common::raw_pool().await?;
        Some(common::fresh_schema())
    },
    repetitions: 20,
    next_append: AtOnce,
);
