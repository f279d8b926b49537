//! [`SecantusServer`]: a MongoDB-wire server of a test's own (SecantusDB, run as a separate
//! process), to kill and restart on the same port and storage.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::process::{Signal, send_signal};

/// How long a start waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the server given as arguments (its output appended to `$1/server.log`), prints its
/// process id, and waits for it. A watcher blocks reading the wrapper's standard input, a pipe
/// from the test process: when the test process goes away, however it goes (a panic, a
/// `SIGKILL`), the read ends and the watcher kills the server and removes `$1`. A server killed
/// by the test ends the wrapper and its watcher without removing anything, so it can be started
/// again on the same storage.
const WRAPPER: &str = r#"
dir="$1"; shift
exec 3<&0 </dev/null
"$@" >>"$dir/server.log" 2>&1 3<&- &
server=$!
echo "$server"
( cat <&3 >/dev/null; kill -9 "$server" 2>/dev/null; sleep 1; rm -rf "$dir" ) &
watcher=$!
exec 3<&-
wait "$server" 2>/dev/null
status=$?
kill -9 "$watcher" 2>/dev/null
exit "$status"
"#;

/// A SecantusDB server (the MongoDB-wire server the MongoDB tests run against) in a temporary
/// directory, on `127.0.0.1` and a free port of its own, for tests that kill and restart a
/// server under load. It is run as a separate executable (SecantusDB is GPL software, never
/// linked).
///
/// [`kill`](Self::kill) sends `SIGKILL` (no shutdown, no flush: what the storage engine had
/// made durable is all that survives) and [`start_again`](Self::start_again) starts a new
/// server on the same port and storage directory. Dropping the handle kills the server and
/// removes the directory; if the test process dies without dropping it, a watcher process
/// does both.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use interlock_testing::faults::SecantusServer;
/// let command = SecantusServer::command_from_env().expect("secantusd-py is installed");
/// let mut server = SecantusServer::start(command, &["--sync-on-commit"]).await?;
/// let uri = server.uri(); // mongodb://127.0.0.1:<port>/?directConnection=true
/// server.kill().await?;
/// server.start_again().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SecantusServer {
    command: PathBuf,
    args: Vec<OsString>,
    root: PathBuf,
    port: u16,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    wrapper: Child,
    /// The write end of the watcher's pipe: closing it kills the server.
    _lifeline: ChildStdin,
    pid: u32,
}

impl SecantusServer {
    /// The server command: the path in `INTERLOCK_SECANTUS_BIN` when set, else `secantusd-py`
    /// found on `PATH`; `None` when neither exists.
    pub fn command_from_env() -> Option<PathBuf> {
        if let Some(bin) = std::env::var_os("INTERLOCK_SECANTUS_BIN").filter(|b| !b.is_empty()) {
            return Some(PathBuf::from(bin));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("secantusd-py"))
            .find(|candidate| candidate.is_file())
    }

    /// Starts `command` on a free loopback port with its storage in a new temporary directory,
    /// passing `extra_args` too (`--sync-on-commit`, `--enable-test-commands`, ...), and waits
    /// until it accepts connections.
    pub async fn start(command: impl Into<PathBuf>, extra_args: &[&str]) -> io::Result<Self> {
        let root = unique_dir();
        std::fs::create_dir_all(&root)?;
        let mut server = Self {
            command: command.into(),
            args: extra_args.iter().map(OsString::from).collect(),
            root,
            port: free_port()?,
            running: None,
        };
        // The port was free a moment ago; if another process took it since, try another.
        let mut attempts = 0;
        loop {
            match server.start_server().await {
                Ok(()) => return Ok(server),
                Err(e) if attempts < 3 => {
                    attempts += 1;
                    eprintln!("test server did not start ({e}); trying another port");
                    server.port = free_port()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The connection string: `mongodb://127.0.0.1:<port>/?directConnection=true`.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// The TCP port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's storage directory (the same across restarts).
    pub fn storage_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server's log (every run's output, appended).
    pub fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The process id of the running server, `None` after [`kill`](Self::kill).
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.pid)
    }

    /// Whether the server was started and not killed since (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Kills the server with `SIGKILL` and waits until it is gone. Its connections are
    /// reset by the operating system; nothing of it runs any clean-up.
    pub async fn kill(&mut self) -> io::Result<()> {
        let Some(mut running) = self.running.take() else {
            return Ok(());
        };
        send_signal(running.pid, Signal::Kill)?;
        match tokio::time::timeout(Duration::from_secs(30), running.wrapper.wait()).await {
            Ok(status) => status.map(|_| ()),
            Err(_) => Err(io::Error::other(format!(
                "the server (pid {}) did not die of SIGKILL within 30 s",
                running.pid
            ))),
        }
    }

    /// Starts the server again after [`kill`](Self::kill), on the same port and storage;
    /// waits until it accepts connections.
    pub async fn start_again(&mut self) -> io::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        self.start_server().await
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    async fn start_server(&mut self) -> io::Result<()> {
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("sh")
            .arg(&self.root)
            .arg(&self.command)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--storage-path")
            .arg(self.storage_dir())
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| io::Error::other(format!("cannot run sh for the test server: {e}")))?;
        let lifeline = wrapper
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("the wrapper has no stdin"))?;
        let stdout = wrapper
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("the wrapper has no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await?;
        let pid: u32 = line.trim().parse().map_err(|_| {
            io::Error::other(format!(
                "the wrapper printed {line:?} instead of the server's pid"
            ))
        })?;
        let mut running = Running {
            wrapper,
            _lifeline: lifeline,
            pid,
        };
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = running.wrapper.try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited at start-up ({status}):\n{}",
                    self.command.display(),
                    self.log_tail(20)
                )));
            }
            let connect = tokio::net::TcpStream::connect(address);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
                self.running = Some(running);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = send_signal(pid, Signal::Kill);
                let _ = running.wrapper.wait().await;
                return Err(io::Error::other(format!(
                    "the server did not accept connections on {address} within {START_TIMEOUT:?}:\n{}",
                    self.log_tail(20)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SecantusServer {
    fn drop(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = send_signal(running.pid, Signal::Kill);
            let _ = running.wrapper.start_kill();
        }
        remove_dir(&self.root);
    }
}

fn remove_dir(root: &Path) {
    // The dying server may still write a file or two: try a few times.
    for _ in 0..5 {
        if std::fs::remove_dir_all(root).is_ok() || !root.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A port nobody listens on right now (the OS picks it).
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

fn unique_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!(
        "interlock-secantus-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ))
}
