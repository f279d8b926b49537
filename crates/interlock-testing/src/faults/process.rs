//! Child processes for crash tests: the current test binary re-run in a role, and signals.

use std::io;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the role a child test process plays.
pub const ROLE_ENV: &str = "INTERLOCK_TEST_ROLE";

/// The role this process was started in by [`ChildProcess::spawn_test`], if any. A test that
/// doubles as a child checks it first:
///
/// ```no_run
/// # fn writer_loop() {}
/// #[test]
/// fn crash_test() {
///     if interlock_testing::faults::role().as_deref() == Some("writer") {
///         return writer_loop();
///     }
///     // ... the parent: spawn, kill, check ...
/// }
/// ```
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok().filter(|r| !r.is_empty())
}

/// A signal [`send_signal`] can deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signal {
    /// `SIGKILL`: dies at once, no clean-up.
    Kill,
    /// `SIGTERM`: asked to stop.
    Term,
    /// `SIGSTOP`: frozen until `SIGCONT`.
    Stop,
    /// `SIGCONT`: resumes a stopped process.
    Cont,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Kill => "KILL",
            Signal::Term => "TERM",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        }
    }
}

/// Sends `signal` to process `pid` (with the `kill` utility, so no unsafe code is needed).
pub fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let status = Command::new("kill")
        .args(["-s", signal.name(), &pid.to_string()])
        .stdin(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -s {} {pid} failed with {status}",
            signal.name()
        )))
    }
}

/// A child process, killed (`SIGKILL`) and reaped when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
}

impl ChildProcess {
    /// Runs the current test binary again as a child, running only the test `test_name`
    /// (exactly, ignored tests included) with [`ROLE_ENV`] set to `role` and the extra
    /// environment `envs`. Its output goes to this process's stderr.
    pub fn spawn_test(test_name: &str, role: &str, envs: &[(&str, &str)]) -> io::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command
            .args([
                test_name,
                "--exact",
                "--nocapture",
                "--include-ignored",
                "--test-threads=1",
            ])
            .env(ROLE_ENV, role)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        for (key, value) in envs {
            command.env(key, value);
        }
        Self::spawn(command)
    }

    /// Spawns any command.
    pub fn spawn(mut command: Command) -> io::Result<Self> {
        Ok(Self {
            child: command.spawn()?,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        send_signal(self.pid(), signal)
    }

    /// Kills the child with `SIGKILL` and waits for it to be gone.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        // Resume it first: a stopped process dies of SIGKILL too, but be explicit.
        let _ = self.child.kill();
        self.child.wait()
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The underlying [`Child`].
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
