//! SQL views in the store's file, driven by the application: catch-up then live, checkpoint and
//! view committed together, parking, stopping, rebuild, dead-letter replay, and SIGKILL at random
//! moments without double counting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{TestStore, fresh_store, stream};
use interlock_core::{CheckpointStore, SerializedEvent};
use interlock_runtime::prelude::*;
use interlock_runtime::processor::FailurePolicy;
use interlock_sqlite::{
    SqliteEventStore, SqliteHandles, SqliteProjection, SqliteView, SqliteViewRoutes,
};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

const VIEW: &str = "sql-balances";

#[derive(Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}
impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
}

#[derive(Serialize, Deserialize)]
struct Renamed {
    name: String,
}
impl Event for Renamed {
    const TYPE_NAME: &'static str = "Renamed";
}

/// One row per account: total deposited and deposits counted. 13 is refused until `fixed`, after
/// the handler already wrote (so a failure must undo the handler's own writes).
#[derive(Default)]
struct Balances {
    fixed: Arc<AtomicBool>,
}

impl SqliteView for Balances {
    const NAME: &'static str = VIEW;

    fn configure(routes: &mut SqliteViewRoutes<Self>) {
        routes.event::<Deposited>();
    }

    fn create(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS balances (
                 account TEXT PRIMARY KEY, total INTEGER NOT NULL, deposits INTEGER NOT NULL
             )",
        )
    }

    fn reset(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DELETE FROM balances")
    }
}

impl SqliteHandles<Deposited> for Balances {
    fn handle(
        &mut self,
        conn: &Connection,
        event: Deposited,
        ctx: &EventContext<'_>,
    ) -> Result<(), HandlerError> {
        conn.prepare_cached(
            "INSERT INTO balances (account, total, deposits) VALUES (?1, ?2, 1) \
             ON CONFLICT (account) DO UPDATE SET total = total + excluded.total, \
             deposits = deposits + 1",
        )?
        .execute((ctx.stream_id().id(), i64::try_from(event.amount)?))?;
        assert_ne!(event.amount, 666, "a bug in the handler");
        if event.amount == 13 && !self.fixed.load(Ordering::SeqCst) {
            return Err(HandlerError::new("13 is unlucky"));
        }
        Ok(())
    }
}

async fn deposit(store: &SqliteEventStore, account: &str, amount: u64) -> Position {
    store
        .append(
            &stream(account),
            ExpectedVersion::Any,
            vec![NewEvent::from_event(&Deposited { amount }).unwrap()],
        )
        .await
        .unwrap()
        .last_position
}

fn app(store: &SqliteEventStore, view: Balances, settings: ProcessorSettings) -> Application {
    Application::builder()
        .with_event_store(store.clone())
        .register_batch_processor_with(SqliteProjection::new(store, view), settings)
        .build()
        .unwrap()
}

async fn settle(app: &Application, position: Position) {
    tokio::time::timeout(Duration::from_secs(20), app.wait_for(position))
        .await
        .expect("the view caught up in time")
        .unwrap();
}

/// The rows of the view, sorted, through the store's readers.
async fn rows(store: &SqliteEventStore) -> Vec<(String, i64, i64)> {
    store
        .read_view(|conn| {
            let mut stmt =
                conn.prepare("SELECT account, total, deposits FROM balances ORDER BY account")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .await
        .unwrap()
}

/// (checkpoint, sum of totals, deposits) read in ONE read transaction of a separate connection
/// on the file, so both come from the same commit.
fn on_file(path: &std::path::Path) -> (Option<u64>, u64, u64) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("BEGIN").unwrap();
    let checkpoint: Option<i64> = conn
        .query_row(
            "SELECT position_minor FROM checkpoints WHERE processor = ?1",
            [VIEW],
            |r| r.get(0),
        )
        .ok();
    let has_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'balances')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let (total, deposits): (i64, i64) = if has_table {
        conn.query_row(
            "SELECT coalesce(sum(total), 0), coalesce(sum(deposits), 0) FROM balances",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    } else {
        (0, 0)
    };
    conn.execute_batch("COMMIT").unwrap();
    (checkpoint.map(|c| c as u64), total as u64, deposits as u64)
}

#[tokio::test]
async fn catches_up_then_follows_live_with_the_checkpoint_in_the_view_transaction() {
    let s = fresh_store();
    for i in 0..1000u64 {
        deposit(&s, &format!("a{}", i % 7), i % 5 + 1).await;
    }
    // A type the view does not route: skipped, and the checkpoint moves past it.
    s.append(
        &stream("a0"),
        ExpectedVersion::Any,
        vec![NewEvent::from_event(&Renamed { name: "x".into() }).unwrap()],
    )
    .await
    .unwrap();
    let expected: u64 = (0..1000u64).map(|i| i % 5 + 1).sum();

    let mut projection = SqliteProjection::new(&s, Balances::default());
    projection.create_tables().await.unwrap();
    assert!(
        rows(&s).await.is_empty(),
        "the tables exist before any event"
    );
    let app = Application::builder()
        .with_event_store(s.store.clone())
        .register_batch_processor_with(projection, ProcessorSettings::new().batch_size(100))
        .build()
        .unwrap();
    app.start().await.unwrap();
    let head = s.head_position().await.unwrap();
    settle(&app, head).await;
    assert_eq!(on_file(&s.path()), (Some(1001), expected, 1000));

    // Live: a few more after start.
    deposit(&s, "a1", 10).await;
    let unrouted = s
        .append(
            &stream("a9"),
            ExpectedVersion::Any,
            vec![NewEvent::from_event(&Renamed { name: "y".into() }).unwrap()],
        )
        .await
        .unwrap()
        .last_position;
    settle(&app, unrouted).await;
    assert_eq!(
        s.load_checkpoint(VIEW).await.unwrap(),
        Some(unrouted),
        "the checkpoint is the last event seen, routed or not"
    );
    assert_eq!(
        on_file(&s.path()),
        (Some(unrouted.minor()), expected + 10, 1001)
    );
    assert_eq!(rows(&s).await.len(), 7);
    assert!(app.dead_letters(Some(VIEW)).await.unwrap().is_empty());
    app.shutdown().await.unwrap();

    // A restart resumes from the checkpoint: nothing counted twice.
    let s = s.reopen();
    let app = app_for(&s, ProcessorSettings::new());
    app.start().await.unwrap();
    let last = deposit(&s, "a2", 1).await;
    settle(&app, last).await;
    assert_eq!(
        on_file(&s.path()),
        (Some(last.minor()), expected + 11, 1002)
    );
    app.shutdown().await.unwrap();
}

fn app_for(s: &TestStore, settings: ProcessorSettings) -> Application {
    app(&s.store, Balances::default(), settings)
}

#[tokio::test]
async fn a_poison_event_is_parked_in_the_batch_transaction_and_other_streams_apply() {
    let s = fresh_store();
    deposit(&s, "a", 1).await;
    let poison = deposit(&s, "a", 13).await;
    // Stored with a schema version newer than the code knows: cannot be decoded, so parked too
    // (in a stream of its own: a later event of its stream would be held behind it).
    let future = s
        .append(
            &stream("c"),
            ExpectedVersion::Any,
            vec![NewEvent::from_serialized(SerializedEvent {
                event_type: "Deposited".into(),
                schema_version: 2,
                payload: Bytes::from_static(br#"{"amount":100}"#),
            })],
        )
        .await
        .unwrap()
        .last_position;
    let last = deposit(&s, "b", 5).await;

    let app = app_for(&s, ProcessorSettings::inline());
    let before = s.writer_stats().transactions;
    let err = app.start().await.unwrap_err();
    assert!(matches!(err, Error::Processing { .. }), "{err:?}");
    assert_eq!(
        s.writer_stats().transactions - before,
        1,
        "view, dead letters and checkpoint committed in one transaction"
    );
    // The poison's own upsert was rolled back with its savepoint.
    assert_eq!(rows(&s).await, vec![("a".into(), 1, 1), ("b".into(), 5, 1)]);
    assert_eq!(on_file(&s.path()), (Some(last.minor()), 6, 2));
    let letters = app.dead_letters(Some(VIEW)).await.unwrap();
    let parked: Vec<_> = letters.iter().map(|l| l.position).collect();
    assert_eq!(parked, vec![poison, future]);
    assert_eq!(letters[0].error, "13 is unlucky");
    assert_eq!(letters[0].attempts, 1);
    assert!(letters[1].error.contains("newer"), "{}", letters[1].error);
}

#[tokio::test]
async fn stop_policy_keeps_the_checkpoint_before_the_failing_event() {
    let s = fresh_store();
    let ok = deposit(&s, "a", 2).await;
    deposit(&s, "a", 13).await;
    deposit(&s, "a", 3).await;
    let app = app_for(
        &s,
        ProcessorSettings::inline().on_failure(FailurePolicy::Stop),
    );
    let err = app.start().await.unwrap_err();
    assert!(matches!(err, Error::Processing { .. }), "{err:?}");
    assert_eq!(s.load_checkpoint(VIEW).await.unwrap(), Some(ok));
    assert_eq!(on_file(&s.path()), (Some(ok.minor()), 2, 1));
    assert!(app.dead_letters(Some(VIEW)).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_rebuild_gives_the_view_live_processing_built() {
    let s = fresh_store();
    let app = app_for(&s, ProcessorSettings::new().batch_size(64));
    app.start().await.unwrap();
    let mut last = Position::START;
    for i in 0..500u64 {
        last = deposit(
            &s,
            &format!("a{}", i % 11),
            if i == 250 { 13 } else { i % 4 },
        )
        .await;
    }
    settle(&app, last).await;
    let live = rows(&s).await;
    let live_file = on_file(&s.path());
    assert_eq!(live_file.0, Some(last.minor()));

    let mut reports = Vec::new();
    let done = app
        .rebuild(VIEW, |p| reports.push(p.processed))
        .await
        .unwrap();
    assert_eq!((done.position, done.processed), (last, 500));
    assert!(
        reports.len() > 2,
        "progress reported per batch: {reports:?}"
    );
    assert_eq!(rows(&s).await, live);
    assert_eq!(on_file(&s.path()), live_file);
    // Parked again, not twice: the 13 (event 250, account a8) and the later events of a8 held
    // behind it.
    let held = (251..500u64).filter(|i| i % 11 == 250 % 11).count();
    assert_eq!(app.dead_letters(Some(VIEW)).await.unwrap().len(), 1 + held);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn replaying_a_dead_letter_after_a_fix_applies_it_once_and_leaves_the_checkpoint() {
    let s = fresh_store();
    deposit(&s, "a", 1).await;
    deposit(&s, "a", 13).await;
    let last = deposit(&s, "a", 2).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let app = app(
        &s,
        Balances {
            fixed: fixed.clone(),
        },
        ProcessorSettings::new(),
    );
    app.start().await.unwrap();
    settle(&app, last).await;
    // The 2 after the 13 is held behind it (same stream).
    let letters = app.dead_letters(Some(VIEW)).await.unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(on_file(&s.path()), (Some(last.minor()), 1, 1));

    // Still broken: the replay fails and the letters stay.
    let err = app.replay_dead_letter(letters[0].id).await.unwrap_err();
    assert!(matches!(err, Error::Processing { .. }), "{err:?}");
    assert_eq!(app.dead_letters(Some(VIEW)).await.unwrap().len(), 2);
    assert_eq!(on_file(&s.path()), (Some(last.minor()), 1, 1));

    fixed.store(true, Ordering::SeqCst);
    app.replay_dead_letter(letters[0].id).await.unwrap();
    assert!(app.dead_letters(Some(VIEW)).await.unwrap().is_empty());
    assert_eq!(on_file(&s.path()), (Some(last.minor()), 16, 3));
    assert!(matches!(
        app.replay_dead_letter(letters[0].id).await.unwrap_err(),
        Error::DeadLetterNotFound { .. }
    ));
    app.shutdown().await.unwrap();
}

/// Every deposit applied, one row each in the order applied (no key: a second application of
/// the same event shows as a second row). 13 is refused until `fixed`, after the row is written.
struct Journal {
    fixed: Arc<AtomicBool>,
}

impl SqliteView for Journal {
    const NAME: &'static str = "sql-journal";

    fn configure(routes: &mut SqliteViewRoutes<Self>) {
        routes.event::<Deposited>();
    }

    fn create(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS journal (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 account TEXT NOT NULL, version INTEGER NOT NULL, amount INTEGER NOT NULL
             )",
        )
    }

    fn reset(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("DELETE FROM journal")
    }
}

impl SqliteHandles<Deposited> for Journal {
    fn handle(
        &mut self,
        conn: &Connection,
        event: Deposited,
        ctx: &EventContext<'_>,
    ) -> Result<(), HandlerError> {
        conn.prepare_cached("INSERT INTO journal (account, version, amount) VALUES (?1, ?2, ?3)")?
            .execute((
                ctx.stream_id().id(),
                i64::try_from(ctx.stream_version())?,
                i64::try_from(event.amount)?,
            ))?;
        if event.amount == 13 && !self.fixed.load(Ordering::SeqCst) {
            return Err(HandlerError::new("13 is unlucky"));
        }
        Ok(())
    }
}

/// (account, stream version, amount) of every journal row, in the order applied.
async fn journal(store: &SqliteEventStore) -> Vec<(String, i64, i64)> {
    store
        .read_view(|conn| {
            let mut stmt =
                conn.prepare("SELECT account, version, amount FROM journal ORDER BY seq")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .await
        .unwrap()
}

fn row(account: &str, version: i64, amount: i64) -> (String, i64, i64) {
    (account.to_owned(), version, amount)
}

/// RELIABILITY #12 for SQL views: a poison event holds the later events of its stream, in order,
/// inside the batch transaction; the other streams keep flowing; a replay after the fix applies
/// the poison and the held events in order, once each.
#[tokio::test]
async fn a_poison_event_holds_its_stream_in_order_until_replayed() {
    const NAME: &str = "sql-journal";
    let s = fresh_store();
    let fixed = Arc::new(AtomicBool::new(false));
    // Stored before the start, read in batches of 3: the stream is held both within a batch and
    // across batches (where the letters come from the table).
    let mut head = Position::START;
    for (account, amount) in [
        ("s", 1),
        ("t", 10),
        ("s", 13),
        ("u", 100),
        ("s", 2),
        ("t", 20),
        ("s", 3),
        ("u", 200),
    ] {
        head = deposit(&s, account, amount).await;
        if account == "t" && amount == 20 {
            // An event type the view does not route, in the held stream: held too, so nothing
            // of the stream overtakes the parked event.
            s.append(
                &stream("s"),
                ExpectedVersion::Any,
                vec![NewEvent::from_event(&Renamed { name: "x".into() }).unwrap()],
            )
            .await
            .unwrap();
        }
    }
    let app = Application::builder()
        .with_event_store(s.store.clone())
        .register_batch_processor_with(
            SqliteProjection::new(
                &s,
                Journal {
                    fixed: fixed.clone(),
                },
            ),
            ProcessorSettings::new().batch_size(3),
        )
        .build()
        .unwrap();
    app.start().await.unwrap();
    settle(&app, head).await;

    let flowing = vec![
        row("s", 1, 1),
        row("t", 1, 10),
        row("u", 1, 100),
        row("t", 2, 20),
        row("u", 2, 200),
    ];
    assert_eq!(journal(&s).await, flowing, "t and u flow; s stops at 13");
    assert_eq!(
        s.load_checkpoint(NAME).await.unwrap(),
        Some(head),
        "the checkpoint passes the parked and held events"
    );
    let letters = app.dead_letters(Some(NAME)).await.unwrap();
    let summary: Vec<_> = letters
        .iter()
        .map(|l| (l.stream_id.id().to_owned(), l.stream_version, l.attempts))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("s".into(), 2, 1),
            ("s".into(), 3, 0),
            ("s".into(), 4, 0),
            ("s".into(), 5, 0)
        ],
        "the poison event, then the held ones in order, untried"
    );
    assert_eq!(letters[0].error, "13 is unlucky");
    let held = format!(
        "held behind the parked event at version 2 of stream {}",
        stream("s")
    );
    for letter in &letters[1..] {
        assert!(letter.error.starts_with(&held), "{}", letter.error);
    }
    assert_eq!(letters[2].event_type, "Renamed");

    // While s is held, a new s event waits too and the others still flow.
    let waiting = deposit(&s, "s", 4).await;
    let t = deposit(&s, "t", 30).await;
    settle(&app, t).await;
    let mut expected = flowing.clone();
    expected.push(row("t", 3, 30));
    assert_eq!(journal(&s).await, expected);
    let letters = app.dead_letters(Some(NAME)).await.unwrap();
    assert_eq!(
        letters
            .iter()
            .map(|l| (l.stream_version, l.position))
            .next_back(),
        Some((6, waiting))
    );
    assert_eq!(letters[4].attempts, 0);

    // Replaying before the fix fails on the poison and changes nothing else.
    let err = app.replay_dead_letter(letters[2].id).await.unwrap_err();
    assert!(matches!(err, Error::Processing { .. }), "{err:?}");
    assert_eq!(app.dead_letters(Some(NAME)).await.unwrap().len(), 5);
    assert_eq!(journal(&s).await, expected);

    fixed.store(true, Ordering::SeqCst);
    // Any letter of the stream replays the stream from its oldest letter.
    app.replay_dead_letter(letters[3].id).await.unwrap();
    assert!(app.dead_letters(Some(NAME)).await.unwrap().is_empty());
    expected.extend([
        row("s", 2, 13),
        row("s", 3, 2),
        row("s", 5, 3),
        row("s", 6, 4),
    ]);
    assert_eq!(
        journal(&s).await,
        expected,
        "the poison, then the held events, in order, once each"
    );
    assert_eq!(
        s.load_checkpoint(NAME).await.unwrap(),
        Some(t),
        "a replay leaves the checkpoint alone"
    );

    // The stream flows again.
    let next = deposit(&s, "s", 5).await;
    settle(&app, next).await;
    expected.push(row("s", 7, 5));
    assert_eq!(journal(&s).await, expected);
    assert!(app.dead_letters(Some(NAME)).await.unwrap().is_empty());
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_handler_that_panics_fails_on_that_event_alone() {
    let s = fresh_store();
    deposit(&s, "a", 1).await;
    let bug = deposit(&s, "a", 666).await;
    // Another stream: a later event of "a" would be held behind the parked one.
    let last = deposit(&s, "b", 2).await;
    let app = app_for(&s, ProcessorSettings::inline());
    assert!(app.start().await.is_err());
    assert_eq!(on_file(&s.path()), (Some(last.minor()), 3, 2));
    let letters = app.dead_letters(Some(VIEW)).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].position, letters[0].error.as_str()),
        (bug, "the handler panicked")
    );
    // The writer thread lives on.
    let more = deposit(&s, "b", 4).await;
    assert_eq!(s.head_position().await.unwrap(), more);
}

/// Two Rust types under one stored name: refused before touching the file.
#[tokio::test]
async fn a_view_routing_one_type_name_to_two_types_is_refused() {
    #[derive(Serialize, Deserialize)]
    struct OtherDeposited {}
    impl Event for OtherDeposited {
        const TYPE_NAME: &'static str = "Deposited";
    }
    struct Confused;
    impl SqliteView for Confused {
        const NAME: &'static str = "confused";
        fn configure(routes: &mut SqliteViewRoutes<Self>) {
            routes.event::<Deposited>().event::<OtherDeposited>();
        }
        fn create(_: &Connection) -> rusqlite::Result<()> {
            Ok(())
        }
        fn reset(_: &Connection) -> rusqlite::Result<()> {
            Ok(())
        }
    }
    impl SqliteHandles<Deposited> for Confused {
        fn handle(
            &mut self,
            _: &Connection,
            _: Deposited,
            _: &EventContext<'_>,
        ) -> Result<(), HandlerError> {
            Ok(())
        }
    }
    impl SqliteHandles<OtherDeposited> for Confused {
        fn handle(
            &mut self,
            _: &Connection,
            _: OtherDeposited,
            _: &EventContext<'_>,
        ) -> Result<(), HandlerError> {
            Ok(())
        }
    }
    let s = fresh_store();
    let err = SqliteProjection::new(&s, Confused)
        .create_tables()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("two different"), "{err}");
}

mod crash {
    //! A child process (this test binary, re-executed) runs the view over many events in small
    //! batches and is SIGKILLed at a random moment, several times over the same file.
    #![cfg(unix)]

    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, SystemTime};

    use super::*;

    const CHILD_ENV: &str = "INTERLOCK_SQLITE_VIEW_CRASH_CHILD";
    const EVENTS: u64 = 20_000;
    const PER_APPEND: u64 = 100;
    const ACCOUNTS: u64 = 10;
    /// The one event the view parks.
    const POISON: u64 = 7_777;
    const KILLS: usize = 6;

    /// Event `n` (0-based) deposits this much; never 13, except the poison.
    fn amount(n: u64) -> u64 {
        if n == POISON { 13 } else { n % 9 + 1 }
    }

    /// Whether event `n` ends up a dead letter: the poison, and the later events of its stream
    /// (account `a{chunk % ACCOUNTS}`), held behind it.
    fn parked(n: u64) -> bool {
        let account = |n: u64| (n / PER_APPEND) % ACCOUNTS;
        n >= POISON && account(n) == account(POISON)
    }

    /// Not a real test: the body of the child process, run when the parent re-executes this
    /// test binary with `CHILD_ENV` set. Without it, it does nothing.
    #[test]
    #[allow(clippy::print_stdout)] // its protocol with the parent
    fn view_crash_child_process() {
        let Ok(path) = std::env::var(CHILD_ENV) else {
            return;
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let store = SqliteEventStore::open(&path).unwrap();
            let app = app(
                &store,
                Balances::default(),
                ProcessorSettings::inline().batch_size(10),
            );
            println!("READY");
            // Inline: start catches up to the head, one transaction per 10 events.
            match app.start().await {
                Ok(()) | Err(Error::Processing { .. }) => {}
                Err(e) => panic!("{e}"),
            }
            println!("DONE");
        });
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Runs the child; kills it after `kill_after` from its READY line, or lets it finish.
    /// Returns whether it was killed before finishing.
    fn run_child(path: &Path, kill_after: Option<Duration>) -> bool {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash::view_crash_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The test harness prints its own text around ours ("test name ... READY").
                for marker in ["READY", "DONE"] {
                    if line.trim_end().ends_with(marker) {
                        let _ = tx.send(marker.to_owned());
                    }
                }
            }
        });
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let ready = rx.recv_timeout(Duration::from_secs(30));
        assert_eq!(ready.as_deref(), Ok("READY"));
        let killed = match kill_after {
            Some(wait) => {
                // Killed before DONE, or it finished first.
                let done = rx.recv_timeout(wait).is_ok();
                child.kill().unwrap(); // SIGKILL
                !done
            }
            None => false,
        };
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let stderr = errors.join().unwrap();
        if killed {
            assert_eq!(status.signal(), Some(9), "{stderr}");
        } else if kill_after.is_none() {
            assert!(status.success(), "the child failed: {stderr}");
        }
        killed
    }

    /// The view must hold exactly the events up to its checkpoint, the parked ones aside; those
    /// are dead letters exactly when the checkpoint passed them.
    fn verify(path: &Path) -> u64 {
        let (checkpoint, total, deposits) = on_file(path);
        let upto = checkpoint.unwrap_or(0);
        // Positions are 1-based and contiguous: event n is at position n + 1.
        let applied = (0..upto).filter(|n| !parked(*n));
        let expected_total: u64 = applied.clone().map(amount).sum();
        assert_eq!(
            (total, deposits),
            (expected_total, applied.count() as u64),
            "view out of step with checkpoint {upto}"
        );
        let conn = Connection::open(path).unwrap();
        let letters: i64 = conn
            .query_row(
                "SELECT count(*) FROM dead_letters WHERE processor = ?1",
                [VIEW],
                |r| r.get(0),
            )
            .unwrap();
        let expected_letters = (0..upto).filter(|n| parked(*n)).count();
        assert_eq!(
            usize::try_from(letters).unwrap(),
            expected_letters,
            "checkpoint {upto}"
        );
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        upto
    }

    #[tokio::test]
    async fn killed_at_random_the_view_always_equals_its_checkpoint() {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("view crash test seed {seed}");
        let mut rng = Rng(seed);
        let s = fresh_store();
        for chunk in 0..EVENTS / PER_APPEND {
            let batch: Vec<NewEvent> = (0..PER_APPEND)
                .map(|i| {
                    let n = chunk * PER_APPEND + i;
                    NewEvent::from_event(&Deposited { amount: amount(n) }).unwrap()
                })
                .collect();
            s.append(
                &stream(&format!("a{}", chunk % ACCOUNTS)),
                ExpectedVersion::Any,
                batch,
            )
            .await
            .unwrap();
        }
        let path = s.path();
        drop(s.store);

        let mut mid_run = 0;
        let mut last = 0;
        for kill in 0..KILLS {
            let wait = Duration::from_millis(rng.next() % 400);
            let killed = run_child(&path, Some(wait));
            let upto = verify(&path);
            eprintln!("kill {kill} after {wait:?}: killed={killed}, checkpoint {upto}");
            assert!(upto >= last, "the checkpoint went back");
            last = upto;
            mid_run += usize::from(killed && upto < EVENTS);
            if upto == EVENTS {
                break;
            }
        }
        assert!(mid_run >= 1, "no kill landed before the view was complete");
        assert!(!run_child(&path, None));
        assert_eq!(verify(&path), EVENTS);
        let (_, total, deposits) = on_file(&path);
        let all: u64 = (0..EVENTS).filter(|n| !parked(*n)).map(amount).sum();
        let parked_count = (0..EVENTS).filter(|n| parked(*n)).count() as u64;
        assert!(
            parked_count > 1,
            "the poison holds later events of its stream"
        );
        assert_eq!((total, deposits), (all, EVENTS - parked_count));
    }
}
