//! Fault injection for reliability tests (feature `faults`).
//!
//! * [`TcpProxy`]: a loopback TCP proxy in front of a server that drops every connection on
//!   command, refuses or holds new ones for a while, or drops one at a chosen moment of the
//!   byte stream (after a `COMMIT` reached the server, before its answer reaches the client:
//!   a lost acknowledgement).
//! * [`PgCluster`]: a throwaway PostgreSQL cluster (`initdb` + `pg_ctl` in a temporary
//!   directory, on a free port) to stop, kill and restart.
//! * [`ChildProcess`], [`send_signal`] and [`role`]: the current test binary re-run as a
//!   child in a named role, and `SIGKILL` / `SIGSTOP` / `SIGCONT` for it.
//! * [`SecantusServer`]: a MongoDB-wire server (SecantusDB, run as a separate process) of a
//!   test's own, to kill and restart on the same port and storage.

mod cluster;
mod process;
mod proxy;
mod secantus;

pub use cluster::{PgCluster, StopMode};
pub use process::{ChildProcess, ROLE_ENV, Signal, role, send_signal};
pub use proxy::{ArmedCut, CutMoment, CutRule, TcpProxy};
pub use secantus::SecantusServer;
