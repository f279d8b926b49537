//! RELIABILITY #15, the configuration half, for SQLite: the one configured identifier is the
//! database path (table names are fixed; view and processor names are bound values). A path
//! SQLite would not take as a plain file (`:memory:`, `file:` URIs with parameters such as
//! `nolock=1`, a NUL that would cut the name short, lengths SQLite or the file system cannot
//! open) is refused as `InvalidConfig` for `path` before any file is opened, so a canary
//! database next to it is byte for byte unchanged; a name that merely looks hostile (quotes,
//! `;`, `--`, `%`, `?`, right-to-left text, emoji) is an ordinary file name and names exactly
//! that file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use interlock_core::{EventStore, ExpectedVersion, Position, StreamId};
use interlock_sqlite::{SqliteConfig, SqliteError, SqliteEventStore};
use interlock_testing::conformance::test_event;
use rusqlite::Connection;

/// Every file of `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<OsString, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

/// A store at `dir/canary.db` holding one event, with a table `canary` of the application's
/// beside the store's own. Closed again, so the file is complete on its own.
async fn canary(dir: &Path) -> PathBuf {
    let path = dir.join("canary.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE canary (n INTEGER NOT NULL); INSERT INTO canary VALUES (42);")
        .unwrap();
    drop(conn);
    let store = SqliteEventStore::open(&path).unwrap();
    store
        .append(
            &StreamId::new("Canary", "1").unwrap(),
            ExpectedVersion::NoStream,
            vec![test_event(1)],
        )
        .await
        .unwrap();
    drop(store);
    path
}

/// The canary table and event are still there.
async fn assert_canary_alive(path: &Path) {
    let conn = Connection::open(path).unwrap();
    let n: i64 = conn
        .query_row("SELECT n FROM canary", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 42, "the canary table survived");
    drop(conn);
    let store = SqliteEventStore::open(path).unwrap();
    let events = store.read_all(Position::START, 10).await.unwrap();
    assert_eq!(events.len(), 1, "the canary event survived");
    assert_eq!(events[0].stream_id.category(), "Canary");
}

fn assert_refused_path(result: Result<SqliteEventStore, SqliteError>, what: &str) {
    match result {
        Err(error @ SqliteError::InvalidConfig { field: "path", .. }) => {
            assert!(error.to_string().contains("path"), "{what}: {error}");
        }
        Err(other) => panic!("{what}: refused, but not as a configuration error: {other:?}"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

#[tokio::test]
async fn hostile_paths_are_refused_before_any_file_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let canary = canary(dir.path()).await;
    let canary_text = canary.to_str().unwrap();
    let before = snapshot(dir.path());

    let in_dir = |name: &str| dir.path().join(name).into_os_string();
    let refused: Vec<(&str, OsString)> = vec![
        ("empty", OsString::new()),
        ("in-memory", ":memory:".into()),
        ("another special name", ":canary.db".into()),
        // SQLite is built with URI filenames on: each of these would open the canary itself,
        // with its parameters changing how (in memory, read-only, without any locking).
        (
            "URI in memory",
            format!("file:{canary_text}?mode=memory").into(),
        ),
        (
            "URI without locks",
            format!("file:{canary_text}?nolock=1").into(),
        ),
        (
            "URI with another VFS",
            format!("file:{canary_text}?vfs=unix-none").into(),
        ),
        (
            "URI immutable",
            format!("file:{canary_text}?immutable=1").into(),
        ),
        ("plain URI", format!("file:{canary_text}").into()),
        // A C string stops at the NUL: this would be the canary.
        (
            "NUL cutting the name short",
            format!("{canary_text}\0.evil").into(),
        ),
        ("NUL inside", in_dir("a\0b.db")),
        ("10 kB file name", in_dir(&"x".repeat(10_000))),
        ("10 kB path", in_dir(&"d/".repeat(5_000))),
        ("10 kB of emoji", in_dir(&"🦀".repeat(2_500))),
        (
            "component over 255 bytes",
            in_dir(&format!("{}/e.db", "c".repeat(256))),
        ),
        // 248 bytes fits the file system, its `-journal` companion does not.
        ("no room for -journal", in_dir(&"j".repeat(248))),
    ];
    for (what, path) in &refused {
        assert_refused_path(SqliteEventStore::open(path), what);
        assert_refused_path(SqliteEventStore::builder(path).readers(1).open(), what);
        assert_refused_path(SqliteEventStore::open_with(SqliteConfig::new(path)), what);
    }

    assert_eq!(
        snapshot(dir.path()),
        before,
        "no file created, and the canary's bytes untouched"
    );
    assert_canary_alive(&canary).await;
}

#[tokio::test]
async fn file_names_that_only_look_hostile_name_exactly_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let canary = canary(dir.path()).await;
    let names = [
        "x'; DROP TABLE canary; --.db".to_owned(),
        "x\"; DROP TABLE canary; --".to_owned(),
        "-- ; * comment.db".to_owned(),
        "a%41b_%_.db".to_owned(),
        "q.db?mode=memory&nolock=1#x".to_owned(),
        "file:x.db".to_owned(), // not at the start of the path: a plain name
        ":memory:".to_owned(),  // likewise
        "\u{202E}bd.exe".to_owned(),
        "אירועים.db".to_owned(),
        "🦀📦.db".to_owned(),
        "j".repeat(247),
    ];
    for (i, name) in (0_u64..).zip(&names) {
        let path = dir.path().join(name);
        let store = SqliteEventStore::open(&path).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        let stream = StreamId::new("Named", format!("{i}")).unwrap();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![test_event(i)])
            .await
            .unwrap();
        assert_eq!(store.path(), path.as_path());
        drop(store);
        // That very file, byte for byte its name, holds the event.
        let listed = std::fs::read_dir(dir.path())
            .unwrap()
            .any(|e| e.unwrap().file_name() == OsString::from(name));
        assert!(listed, "{name:?} is a file of its own");
        let store = SqliteEventStore::open(&path).unwrap();
        let events = store.read_stream(&stream, 1, None).await.unwrap();
        assert_eq!(events.len(), 1, "{name:?}");
    }
    // No other file: each name's database, and its `-wal` / `-shm` companions.
    let files = snapshot(dir.path());
    let expected = |f: &OsString| {
        let f = f.to_str().unwrap_or_default();
        let base = f
            .strip_suffix("-wal")
            .or_else(|| f.strip_suffix("-shm"))
            .unwrap_or(f);
        base == "canary.db" || names.iter().any(|n| n == base)
    };
    assert!(
        files.keys().all(expected),
        "{:?}",
        files.keys().collect::<Vec<_>>()
    );
    assert_canary_alive(&canary).await;
}
