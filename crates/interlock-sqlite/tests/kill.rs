//! THE KILL TEST (RELIABILITY.md #5) on SQLite: a child process appends 100-event batches and
//! reports each acknowledged batch; the parent SIGKILLs it at a random moment, 20 times, each
//! on a fresh file, and checks that every acknowledged batch is complete, no batch is partial,
//! stream heads match, the file takes the next append, and SQLite's integrity check passes
//! (run on every reopen). The harness is `interlock_testing::kill`, shared with the other
//! backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly
#![cfg(unix)]

use interlock_sqlite::SqliteEventStore;

/// Opens the store, after checking the file's integrity when it exists (the parent's reopen
/// after a kill).
fn open_checked(path: &str) -> SqliteEventStore {
    if std::path::Path::new(path).exists() {
        let conn = rusqlite::Connection::open(path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "integrity of {path} after the kill");
    }
    SqliteEventStore::open(path).unwrap()
}

interlock_testing::writer_kill_test!(
    open: |path: String| async move { open_checked(&path) },
    fresh: || async {
        let dir = std::env::temp_dir().join(format!("interlock-kill-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Some(dir.join("killed.db").to_string_lossy().into_owned())
    },
    repetitions: 20,
    next_append: AtOnce,
);
