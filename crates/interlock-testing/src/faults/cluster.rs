//! [`PgCluster`]: a throwaway PostgreSQL server of a test's own, to stop and restart at will.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How a [`PgCluster`] is stopped (`pg_ctl stop -m ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopMode {
    /// Waits for clients to disconnect.
    Smart,
    /// Rolls back open transactions and disconnects clients, then shuts down cleanly.
    Fast,
    /// Kills every server process at once, like a crash: the next start replays the WAL.
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A PostgreSQL cluster in a temporary directory, listening on `127.0.0.1` on a free port of
/// its own, created with `initdb` and driven with `pg_ctl`. Dropping it stops the server
/// (immediately) and removes the directory. It never touches another server.
///
/// The binaries are found in `INTERLOCK_PG_BIN` if set, else in the newest
/// `/usr/lib/postgresql/*/bin`, else on `PATH`. `initdb` refuses to run as root, so when the
/// test runs as root the binaries run as the `postgres` OS user (through `runuser`) and the
/// directory is handed to that user.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use interlock_testing::faults::{PgCluster, StopMode};
/// let mut cluster = PgCluster::start().await?;
/// let url = cluster.url(); // postgres://postgres@127.0.0.1:<port>/postgres
/// cluster.restart(StopMode::Immediate).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PgCluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    running: bool,
}

impl PgCluster {
    /// Creates a cluster in a new temporary directory and starts it.
    pub async fn start() -> io::Result<Self> {
        let bin = find_bin_dir()?;
        let as_postgres = running_as_root();
        let root = unique_dir();
        std::fs::create_dir_all(&root)?;
        let mut cluster = Self {
            root,
            bin,
            port: free_port()?,
            as_postgres,
            running: false,
        };
        if as_postgres {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&cluster.root))
            .await?;
        }
        let data = cluster.data_dir();
        run(cluster.command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]))
        .await?;
        cluster.write_port_config()?;
        // The port was free a moment ago; if another process took it since, try another.
        let mut attempts = 0;
        loop {
            match cluster.start_server().await {
                Ok(()) => return Ok(cluster),
                Err(e) if attempts < 3 => {
                    attempts += 1;
                    eprintln!("test cluster did not start ({e}); trying another port");
                    cluster.port = free_port()?;
                    cluster.write_port_config()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The URL of the cluster's `postgres` database as the `postgres` superuser (no password).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// Whether the server was started and not stopped since (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Starts the server again after [`stop`](Self::stop); waits until it accepts connections.
    pub async fn start_again(&mut self) -> io::Result<()> {
        if self.running {
            return Ok(());
        }
        self.start_server().await
    }

    /// Stops the server in `mode` and waits until it is down.
    pub async fn stop(&mut self, mode: StopMode) -> io::Result<()> {
        if !self.running {
            return Ok(());
        }
        run(self.command("pg_ctl").arg("-D").arg(self.data_dir()).args([
            "-w",
            "-t",
            "60",
            "-m",
            mode.as_arg(),
            "stop",
        ]))
        .await?;
        self.running = false;
        Ok(())
    }

    /// Stops the server in `mode` and starts it again, on the same port and data.
    pub async fn restart(&mut self, mode: StopMode) -> io::Result<()> {
        self.stop(mode).await?;
        self.start_server().await
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    async fn start_server(&mut self) -> io::Result<()> {
        let started = run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "start"]))
        .await;
        match started {
            Ok(_) => {
                self.running = true;
                Ok(())
            }
            Err(e) => Err(io::Error::other(format!("{e}\n{}", self.log_tail(20)))),
        }
    }

    /// Appends the port, loopback-only listening and the socket directory to the
    /// configuration (later lines win, so a new port simply overrides the old).
    fn write_port_config(&self) -> io::Result<()> {
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir().join("postgresql.conf"))?;
        writeln!(
            conf,
            "\n# interlock test cluster\nport = {}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nmax_connections = 100\n",
            self.port,
            self.root.display()
        )
    }

    /// A command running `program` from the cluster's binaries, as `postgres` when needed.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        // Keep settings of the shared server's environment from leaking in.
        command
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        command
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "30", "-m", "immediate", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs a command to completion (without blocking the runtime); a non-zero exit is an error
/// carrying its output.
async fn run(command: &mut Command) -> io::Result<Output> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{command:?}");
    let output = tokio::process::Command::from(std::mem::replace(command, Command::new("true")))
        .output()
        .await?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(io::Error::other(format!(
            "{shown} failed with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn find_bin_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("INTERLOCK_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    // Fall back to PATH: `pg_config --bindir`, else bare names.
    match Command::new("pg_config").arg("--bindir").output() {
        Ok(o) if o.status.success() => Ok(PathBuf::from(
            String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )),
        _ if Path::new("/usr/bin/initdb").exists() => Ok(PathBuf::from("/usr/bin")),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no PostgreSQL binaries (initdb, pg_ctl): install PostgreSQL or set INTERLOCK_PG_BIN",
        )),
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
        "interlock-pg-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ))
}
