//! RELIABILITY #15, the configuration half, for PostgreSQL: the configured identifier is the
//! schema (every table name is fixed). Hostile schema names are refused as `InvalidConfig` for
//! `schema` before any connection is made, and a canary table in a schema of its own is still
//! there after them all; the names that are accepted (reserved words, the longest name
//! PostgreSQL keeps) work as they are.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use interlock_core::{EventStore, ExpectedVersion, StreamId};
use interlock_postgres::{PgConfig, PgError, PgEventStore, validate_schema_name};
use interlock_testing::conformance::test_event;
use sqlx_core::executor::Executor;
use sqlx_core::row::Row;

/// Nothing listens on port 1: a configuration that got past the checks would fail to connect,
/// with another error.
const NOWHERE: &str = "postgres://nobody@127.0.0.1:1/none?connect_timeout=1";

/// PostgreSQL keeps identifiers up to this many bytes, and silently cuts longer ones.
const NAMEDATALEN_1: usize = 63;

/// Schema names aimed at `canary` (a schema holding a table `canary`), each with what it tries.
fn hostile(canary: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "quote, statement, comment",
            format!("x\"; DROP TABLE {canary}.canary; --"),
        ),
        (
            "closing the quoted identifier",
            format!("{canary}\".canary; DROP TABLE \"{canary}\".canary; --"),
        ),
        ("single quote", "x'; DROP TABLE canary; --".to_owned()),
        (
            "string literal of the lease lock",
            format!("x', 'y') ; DROP TABLE {canary}.canary; --"),
        ),
        ("dollar quoting", "$$; DROP TABLE canary; $$".to_owned()),
        ("semicolon", format!("{canary};")),
        ("line comment", format!("{canary}--")),
        ("block comment", format!("{canary}/*")),
        ("another schema's table", format!("{canary}.canary")),
        ("percent", "%".to_owned()),
        ("percent inside", format!("{canary}%")),
        ("LIKE escape", format!("{}\\_%", &canary[..3])),
        ("upper case, folded onto the canary", canary.to_uppercase()),
        (
            "64 bytes, cut by PostgreSQL onto the canary's 63",
            format!("{canary}x"),
        ),
        ("NUL cutting the name short", format!("{canary}\0x")),
        ("10 kB", "s".repeat(10_000)),
        ("10 kB of emoji", "🦀".repeat(2_500)),
        ("right-to-left override", "\u{202E}yranac".to_owned()),
        ("right-to-left letters", "סכמה".to_owned()),
        ("emoji", "🦀".to_owned()),
        ("homoglyph (Cyrillic о)", "interlоck".to_owned()),
        ("empty", String::new()),
        ("space", " ".to_owned()),
        ("newline", "a\nb".to_owned()),
        ("leading digit", "1canary".to_owned()),
        ("PostgreSQL's own", "pg_catalog".to_owned()),
        ("PostgreSQL's own, toast", "pg_toast".to_owned()),
        ("the standard's own", "information_schema".to_owned()),
    ]
}

fn assert_refused(result: Result<PgEventStore, PgError>, what: &str) {
    match result {
        Err(
            error @ PgError::InvalidConfig {
                field: "schema", ..
            },
        ) => assert!(error.to_string().contains("schema"), "{what}: {error}"),
        Err(other) => panic!("{what}: refused, but not as a configuration error: {other:?}"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

/// A 63-byte schema name no other test uses.
fn long_fresh_schema() -> String {
    let base = common::fresh_schema();
    let name = format!("{base}_{}", "c".repeat(NAMEDATALEN_1 - base.len() - 1));
    assert_eq!(name.len(), NAMEDATALEN_1);
    name
}

/// Refused with no server at all: the check runs before any connection is attempted.
#[tokio::test]
async fn hostile_schema_names_are_refused_before_any_connection() {
    for (what, name) in hostile(&long_fresh_schema()) {
        assert!(validate_schema_name(&name).is_err(), "{what}");
        let mut config = PgConfig::new(NOWHERE);
        config.schema.clone_from(&name);
        assert_refused(PgEventStore::connect_with(config).await, what);
        assert_refused(
            PgEventStore::builder(NOWHERE).schema(&name).connect().await,
            what,
        );
    }
}

#[tokio::test]
async fn a_canary_table_survives_hostile_schema_names() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    // 63 bytes: a 64-byte name PostgreSQL cut short would land on it.
    let canary = long_fresh_schema();
    pool.execute(
        format!(
            "CREATE SCHEMA \"{canary}\"; CREATE TABLE \"{canary}\".canary (n integer NOT NULL); \
             INSERT INTO \"{canary}\".canary VALUES (42)"
        )
        .as_str(),
    )
    .await
    .unwrap();

    let names = hostile(&canary);
    for (what, name) in &names {
        let mut config = PgConfig::new(common::url());
        config.schema.clone_from(name);
        assert_refused(PgEventStore::connect_with(config).await, what);
    }

    let n: i32 = sqlx_core::query::query(&format!("SELECT n FROM \"{canary}\".canary"))
        .fetch_one(&pool)
        .await
        .expect("the canary table still exists")
        .get(0);
    assert_eq!(n, 42);
    let tables: Vec<String> =
        sqlx_core::query::query("SELECT tablename::text FROM pg_tables WHERE schemaname = $1")
            .bind(&canary)
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(
        tables,
        vec!["canary".to_owned()],
        "no store tables slipped into the canary's schema"
    );
    for (what, name) in names.iter().filter(|(_, n)| !n.contains('\0')) {
        let exists: bool = sqlx_core::query::query(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
        )
        .bind(name)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
        let system = name.starts_with("pg_") || name == "information_schema";
        assert!(!exists || system, "{what}: a schema {name:?} was created");
    }
    pool.execute(format!("DROP SCHEMA \"{canary}\" CASCADE").as_str())
        .await
        .unwrap();
}

/// The accepted names at the edges work as they are: a reserved word (quoted in every
/// statement) and the longest name PostgreSQL keeps.
#[tokio::test]
async fn names_at_the_edges_of_the_rules_work_as_they_are() {
    let Some(pool) = common::raw_pool().await else {
        return;
    };
    for schema in ["select".to_owned(), long_fresh_schema()] {
        pool.execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str())
            .await
            .unwrap();
        let mut config = PgConfig::new(common::url());
        config.schema.clone_from(&schema);
        let store = PgEventStore::connect_with(config).await.unwrap();
        let stream = StreamId::new("Edge", "1").unwrap();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![test_event(1)])
            .await
            .unwrap();
        assert_eq!(store.read_stream(&stream, 1, None).await.unwrap().len(), 1);
        let events: i64 =
            sqlx_core::query::query(&format!("SELECT count(*) FROM \"{schema}\".events"))
                .fetch_one(&pool)
                .await
                .unwrap()
                .get(0);
        assert_eq!(events, 1, "{schema}: the tables are in exactly that schema");
        store.close().await;
        pool.execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str())
            .await
            .unwrap();
    }
}
