//! Test support: finds or starts a MongoDB-wire server, and hands out a fresh database per test.
//!
//! Where the server comes from, in order:
//!
//! 1. `MONGODB_URI`, when set: a real replica set (or anything else speaking the protocol).
//! 2. The pinned SecantusDB server command (`secantusd-py` on `PATH`, or the path in
//!    `INTERLOCK_SECANTUS_BIN`), started once per test binary on a free loopback port with a
//!    temporary storage directory, and asked `hello` until it answers.
//! 3. Neither: the test prints a notice and passes, unless `INTERLOCK_REQUIRE_MONGO=1`, which
//!    makes it fail.
//!
//! Tests that kill and restart the server get one of their own from [`own_server`] (an
//! [`interlock_testing::faults::SecantusServer`]).
//!
//! SecantusDB is GPL software: it runs only as a separate process, never linked.
//!
//! ## Stopping the server
//!
//! Rust never drops statics, so no destructor can stop a server a test binary started, and a
//! test process killed by a signal runs no code at all. Instead the server is started by a
//! small `sh` wrapper whose standard input is a pipe from the test process. A watcher in the
//! wrapper blocks reading that pipe; the kernel closes the test process's end when it exits,
//! however it exits (normal end, panic, `SIGKILL`), the read returns end-of-file, and the
//! watcher kills the server; the wrapper then deletes the storage directory. The pipe's write
//! end is close-on-exec, so no other child inherits it and keeps the server alive.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    dead_code,
    unreachable_pub
)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use interlock_mongodb::{MongoConfiguration, MongoEventStore};
use interlock_testing::faults::SecantusServer;
use mongodb::bson::{Document, doc};

/// The pinned test server, as `install-test-server.sh` installs it.
pub const SECANTUS_VERSION: &str = "0.7.0b3";

/// Runs the server given as arguments with its storage in `$1/data`, until the test process
/// (our standard input's writer) goes away; then removes `$1`.
const WRAPPER: &str = r#"
dir="$1"; shift
exec 3<&0 </dev/null
"$@" --storage-path "$dir/data" >"$dir/server.log" 2>&1 3<&- &
server=$!
( cat <&3 >/dev/null; kill "$server" 2>/dev/null ) &
watcher=$!
exec 3<&-
wait "$server"
status=$?
kill "$watcher" 2>/dev/null
if [ "$status" -ne 0 ] && [ "$status" -ne 143 ]; then
    echo "test server exited with status $status:" >&2
    tail -n 40 "$dir/server.log" >&2
fi
rm -rf "$dir"
exit "$status"
"#;

/// The wrappers of servers this process started; kept (never dropped) so their pipes stay
/// open until the process exits.
static RUNNING: Mutex<Vec<Child>> = Mutex::new(Vec::new());

fn required() -> bool {
    std::env::var("INTERLOCK_REQUIRE_MONGO").is_ok_and(|v| v == "1")
}

fn skip_or_fail(what: &str, reason: &str) {
    if required() {
        panic!("INTERLOCK_REQUIRE_MONGO=1 but {what}: {reason}");
    }
    // Straight to stderr, which libtest does not capture (`eprintln!` output of a passing
    // test would be swallowed), once per test binary.
    static SHOWN: AtomicBool = AtomicBool::new(false);
    if !SHOWN.swap(true, Ordering::SeqCst) {
        let _ = writeln!(
            std::io::stderr(),
            "notice: skipping MongoDB tests, {what}: {reason}; set MONGODB_URI or install the test \
             server (crates/interlock-mongodb/install-test-server.sh), or INTERLOCK_REQUIRE_MONGO=1 \
             to fail instead"
        );
    }
}

/// The server command: `INTERLOCK_SECANTUS_BIN`, or `secantusd-py` found on `PATH`.
fn secantus_command() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("INTERLOCK_SECANTUS_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("secantusd-py"))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Asks `hello` on a thread of its own (callers may be inside a tokio runtime already).
pub fn hello_blocking(uri: &str) -> Result<Document, String> {
    let uri = uri.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let mut options = mongodb::options::ClientOptions::parse(uri.as_str())
                .await
                .map_err(|e| e.to_string())?;
            options.server_selection_timeout = Some(Duration::from_secs(2));
            let client = mongodb::Client::with_options(options).map_err(|e| e.to_string())?;
            client
                .database("admin")
                .run_command(doc! { "hello": 1 })
                .await
                .map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "hello thread panicked".to_owned())?
}

/// Starts SecantusDB on a free loopback port and waits until it answers `hello`; returns its
/// URI. Extra flags (`--standalone`) go to the server.
fn start_secantus(extra: &[&str]) -> Result<String, String> {
    let command = secantus_command().ok_or_else(|| {
        format!("the SecantusDB server command (secantusd-py, SecantusDB=={SECANTUS_VERSION}) is not installed")
    })?;
    let mut last_error = String::new();
    // A port found free can be taken before the server binds it: try a few.
    for _ in 0..3 {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "interlock-mongo-{}-{port}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("sh")
            .arg(&dir)
            .arg(&command)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--enable-test-commands")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", command.display()))?;
        let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
        match wait_until_ready(&mut child, port, &uri) {
            Ok(()) => {
                RUNNING
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(child);
                return Ok(uri);
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                last_error = e;
            }
        }
    }
    Err(last_error)
}

fn wait_until_ready(child: &mut Child, port: u16, uri: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited at start-up ({status})"));
        }
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
            && hello_blocking(uri).is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the server did not answer hello within 60 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The replica-set server of this test binary, or `None` (after a notice) when there is none.
pub fn uri() -> Option<String> {
    static SERVER: OnceLock<Option<String>> = OnceLock::new();
    let found = SERVER.get_or_init(|| {
        if let Ok(uri) = std::env::var("MONGODB_URI")
            && !uri.is_empty()
        {
            return Some(uri);
        }
        match start_secantus(&[]) {
            Ok(uri) => Some(uri),
            Err(reason) => {
                skip_or_fail("no MongoDB server", &reason);
                None
            }
        }
    });
    found.clone()
}

/// A SecantusDB started with `--standalone` (a server that is not a replica set), or `None`
/// after a notice. Always the wire server, even with `MONGODB_URI` set.
pub fn standalone_uri() -> Option<String> {
    static SERVER: OnceLock<Option<String>> = OnceLock::new();
    let found = SERVER.get_or_init(|| match start_secantus(&["--standalone"]) {
        Ok(uri) => Some(uri),
        Err(reason) => {
            skip_or_fail("no standalone test server", &reason);
            None
        }
    });
    found.clone()
}

/// A SecantusDB server of the test's own (its own port and storage directory, `extra` flags
/// such as `--sync-on-commit` passed on), to kill and restart; `None` after a notice when the
/// server command is not installed. Always the wire server, even with `MONGODB_URI` set: a
/// shared server cannot be restarted.
pub async fn own_server(extra: &[&str]) -> Option<SecantusServer> {
    let Some(command) = secantus_command() else {
        skip_or_fail(
            "no restartable test server",
            &format!(
                "the SecantusDB server command (secantusd-py, SecantusDB=={SECANTUS_VERSION}) is not installed"
            ),
        );
        return None;
    };
    match SecantusServer::start(command, extra).await {
        Ok(server) => Some(server),
        Err(e) => {
            skip_or_fail("the restartable test server did not start", &e.to_string());
            None
        }
    }
}

/// A database name no other test uses: `ilt_<unix seconds>_<random>`.
pub fn fresh_database() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("ilt_{secs}_{}", &random[..12])
}

/// Drops test databases left behind more than an hour ago on a shared server (`MONGODB_URI`;
/// a server started here is deleted with its directory).
async fn clean_old_databases(store: &MongoEventStore) {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let cutoff = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .saturating_sub(3600);
    let Ok(names) = store.client().list_database_names().await else {
        return;
    };
    for name in names {
        let stamp = name
            .strip_prefix("ilt_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse::<u64>().ok());
        if stamp.is_some_and(|s| s < cutoff) {
            let _ = store.client().database(&name).drop().await;
        }
    }
}

/// A configuration for a fresh database on the test server, or `None` when skipped.
pub fn config() -> Option<MongoConfiguration> {
    let mut config = MongoConfiguration::new(uri()?);
    config.database = fresh_database();
    Some(config)
}

/// A store on a fresh database, or `None` when the test is skipped.
pub async fn store() -> Option<MongoEventStore> {
    store_with(|c| c).await
}

/// A store on a fresh database with a tweaked configuration.
pub async fn store_with(
    tweak: impl FnOnce(MongoConfiguration) -> MongoConfiguration,
) -> Option<MongoEventStore> {
    let config = tweak(config()?);
    let store = MongoEventStore::connect_with(config).await.unwrap();
    clean_old_databases(&store).await;
    Some(store)
}

/// A store for the conformance macros, which cannot skip a test: without a server (and
/// without `INTERLOCK_REQUIRE_MONGO=1`) the whole test binary exits successfully after a notice.
pub async fn store_or_exit() -> MongoEventStore {
    match store().await {
        Some(store) => store,
        None => std::process::exit(0),
    }
}
