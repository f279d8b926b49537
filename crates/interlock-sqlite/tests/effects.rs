//! RELIABILITY.md #10 on SQLite: a crash after an external call repeats no effect. See
//! `interlock_testing::effects`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use interlock_sqlite::SqliteEventStore;

interlock_testing::external_effect_test!(
    open: |path: String| async move { SqliteEventStore::open(&path).unwrap() },
    fresh: || async {
        let dir = std::env::temp_dir().join(format!("interlock-effects-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Some(dir.join("effects.db").to_string_lossy().into_owned())
    },
);
