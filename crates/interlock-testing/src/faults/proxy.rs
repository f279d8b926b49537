//! [`TcpProxy`]: a loopback TCP proxy that loses connections on command.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// How long an [`CutMoment::AfterSendDropReply`] cut waits for the server's reply before
/// dropping the connection anyway.
const REPLY_WAIT: Duration = Duration::from_secs(30);

/// When an armed [`CutRule`] drops the connection, relative to the client's bytes that
/// contain its pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CutMoment {
    /// The bytes read together with the pattern are not forwarded: the server never sees the
    /// message (bytes forwarded earlier, possibly the start of the pattern, stay forwarded).
    BeforeSend,
    /// Forwards the bytes up to the middle of the pattern, then drops the connection: the
    /// server receives a truncated message.
    MidSend,
    /// Forwards the bytes, waits until the server answers (so it has acted on the message),
    /// swallows the answer and drops the connection: the server did the work, the client
    /// never hears of it. This is a lost acknowledgement.
    AfterSendDropReply,
    /// Forwards the bytes, then forwards nothing more on that connection in either direction
    /// but keeps it open (until [`TcpProxy::cut_all`]): the server seems to stop answering in
    /// the middle of the exchange.
    AfterSendGoSilent,
}

/// A one-shot fault: the first time a client sends bytes containing `pattern` through the
/// proxy (on any connection), that connection is dropped at `moment`.
#[derive(Clone, Debug)]
pub struct CutRule {
    /// The bytes to look for in the client-to-server stream (they may span reads).
    pub pattern: Vec<u8>,
    /// When to drop the connection.
    pub moment: CutMoment,
}

impl CutRule {
    /// A rule for `pattern` at `moment`.
    pub fn new(pattern: impl AsRef<[u8]>, moment: CutMoment) -> Self {
        Self {
            pattern: pattern.as_ref().to_vec(),
            moment,
        }
    }
}

/// What the test gets back from [`TcpProxy::arm`]: whether, and when, the rule fired.
#[derive(Clone, Debug)]
pub struct ArmedCut {
    state: Arc<ArmedState>,
}

#[derive(Debug)]
struct ArmedState {
    rule: CutRule,
    fired: AtomicBool,
    done: Notify,
}

impl ArmedCut {
    /// Whether the rule has fired (its connection has been dropped).
    pub fn fired(&self) -> bool {
        self.state.fired.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for the rule to fire; returns whether it did.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.state.done.notified();
            if self.fired() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, done).await.is_err() {
                return self.fired();
            }
        }
    }
}

#[derive(Debug, Default)]
struct Gate {
    /// New connections are accepted and closed at once until then.
    refuse_until: Option<Instant>,
    /// New connections are accepted but not connected upstream until then.
    hold_until: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    gate: Mutex<Gate>,
    rules: Mutex<Vec<Arc<ArmedState>>>,
    /// Bumped by [`TcpProxy::cut_all`]; every connection task watches it.
    generation: watch::Sender<u64>,
    /// While true, open connections forward nothing in either direction (but stay open).
    frozen: watch::Sender<bool>,
    accepted: AtomicUsize,
    open: AtomicUsize,
}

impl Shared {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A TCP proxy on `127.0.0.1` in front of one server, for tests that lose connections.
///
/// Point the client at [`addr`](Self::addr) (or rewrite its URL with
/// [`proxied_url`](Self::proxied_url)); every connection is forwarded to the upstream address
/// until the test intervenes:
///
/// * [`cut_all`](Self::cut_all) drops every open connection now (both sides see the socket
///   close, as when a server or a network path dies);
/// * [`refuse_new_for`](Self::refuse_new_for) closes new connections as soon as they arrive,
///   [`hold_new_for`](Self::hold_new_for) keeps them waiting without an answer;
/// * [`arm`](Self::arm) drops a connection at a chosen moment of the byte stream, for
///   example right after the client's `COMMIT` reached the server and before the server's
///   answer reaches the client.
///
/// The proxy stops when dropped; connections it carried are closed.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.generation.send_modify(|g| *g += 1);
    }
}

impl TcpProxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (resolved once, now).
    pub async fn start(upstream: &str) -> io::Result<Self> {
        let upstream = tokio::net::lookup_host(upstream)
            .await?
            .next()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "upstream has no address")
            })?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            gate: Mutex::new(Gate::default()),
            rules: Mutex::new(Vec::new()),
            generation: watch::Sender::new(0),
            frozen: watch::Sender::new(false),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// Starts a proxy in front of the server of a `postgres://` (or similar) URL; returns it
    /// with the URL rewritten to go through it.
    pub async fn for_url(url: &str) -> io::Result<(Self, String)> {
        let (host, port) = url_authority(url).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "URL has no host and port")
        })?;
        let proxy = Self::start(&format!("{host}:{port}")).await?;
        let proxied = proxy.proxied_url(url);
        Ok((proxy, proxied))
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn proxied_url(&self, url: &str) -> String {
        match authority_span(url) {
            Some((start, end)) => format!("{}{}{}", &url[..start], self.addr, &url[end..]),
            None => url.to_owned(),
        }
    }

    /// Drops every connection open now. New connections are forwarded as before.
    pub fn cut_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Stops forwarding on every connection, in both directions, without closing any: the
    /// server seems to have stopped answering (a frozen process, a lost network path). New
    /// connections freeze too once established. Undone by [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.shared.frozen.send_replace(true);
    }

    /// Resumes forwarding after [`freeze`](Self::freeze); bytes held meanwhile go through.
    pub fn thaw(&self) {
        self.shared.frozen.send_replace(false);
    }

    /// Closes new connections as soon as they are accepted, for `duration` from now.
    pub fn refuse_new_for(&self, duration: Duration) {
        self.shared.gate().refuse_until = Some(Instant::now() + duration);
    }

    /// Accepts new connections but forwards nothing (not even the upstream connect) for
    /// `duration` from now; they go through once it has passed, if the client still waits.
    pub fn hold_new_for(&self, duration: Duration) {
        self.shared.gate().hold_until = Some(Instant::now() + duration);
    }

    /// Lifts [`refuse_new_for`](Self::refuse_new_for) and [`hold_new_for`](Self::hold_new_for)
    /// early.
    pub fn open_gate(&self) {
        *self.shared.gate() = Gate::default();
    }

    /// Arms a one-shot cut. Rules armed together fire independently.
    pub fn arm(&self, rule: CutRule) -> ArmedCut {
        assert!(!rule.pattern.is_empty(), "a cut needs a non-empty pattern");
        let state = Arc::new(ArmedState {
            rule,
            fired: AtomicBool::new(false),
            done: Notify::new(),
        });
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(state.clone());
        ArmedCut { state }
    }

    /// Removes every armed rule that has not fired.
    pub fn disarm_all(&self) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// How many connections the proxy has accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many connections are being forwarded now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

/// Where the `host:port` of a URL is: after `scheme://` and any `user:password@`, up to the
/// next `/`, `?` or the end.
fn authority_span(url: &str) -> Option<(usize, usize)> {
    let after_scheme = url.find("://")? + 3;
    let rest = &url[after_scheme..];
    let len = rest.find(['/', '?']).unwrap_or(rest.len());
    let user = rest[..len].rfind('@').map_or(0, |at| at + 1);
    Some((after_scheme + user, after_scheme + len))
}

/// The host and port of a URL (port 5432 when none is given).
fn url_authority(url: &str) -> Option<(String, u16)> {
    let (start, end) = authority_span(url)?;
    let authority = &url[start..end];
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host.to_owned(), port.parse().ok()?)),
        _ if !authority.is_empty() => Some((authority.to_owned(), 5432)),
        _ => None,
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let (refuse, hold) = {
            let gate = shared.gate();
            let now = Instant::now();
            (
                gate.refuse_until.is_some_and(|t| t > now),
                gate.hold_until.filter(|t| *t > now),
            )
        };
        if refuse {
            drop(client);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.open.fetch_add(1, Ordering::SeqCst);
            let _ = forward(client, hold, &shared).await;
            shared.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// The rule to fire for a chunk, and where its pattern starts in `window` (the tail of the
/// stream seen before plus the new chunk).
fn matching_rule(shared: &Shared, window: &[u8]) -> Option<(Arc<ArmedState>, usize)> {
    let mut rules = shared.rules.lock().unwrap_or_else(PoisonError::into_inner);
    let found = rules
        .iter()
        .enumerate()
        .find_map(|(i, rule)| find(window, &rule.rule.pattern).map(|at| (i, at)))?;
    let rule = rules.remove(found.0);
    Some((rule, found.1))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn longest_pattern(shared: &Shared) -> usize {
    shared
        .rules
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|r| r.rule.pattern.len())
        .max()
        .unwrap_or(0)
}

fn fire(rule: &ArmedState) {
    rule.fired.store(true, Ordering::SeqCst);
    rule.done.notify_waiters();
}

async fn forward(client: TcpStream, hold: Option<Instant>, shared: &Shared) -> io::Result<()> {
    let mut generation = shared.generation.subscribe();
    generation.mark_unchanged();
    if let Some(until) = hold {
        tokio::select! {
            _ = generation.changed() => return Ok(()),
            () = tokio::time::sleep_until(until.into()) => {}
        }
    }
    let server = tokio::select! {
        _ = generation.changed() => return Ok(()),
        server = TcpStream::connect(shared.upstream) => server?,
    };
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut from_client = vec![0u8; 64 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    // The end of the client's stream already forwarded, so a pattern split across reads is
    // still found.
    let mut tail: Vec<u8> = Vec::new();
    let mut frozen = shared.frozen.subscribe();
    loop {
        if *frozen.borrow_and_update() {
            tokio::select! {
                _ = generation.changed() => return Ok(()),
                _ = frozen.changed() => continue,
            }
        }
        tokio::select! {
            _ = frozen.changed() => continue,
            _ = generation.changed() => return Ok(()),
            read = client_read.read(&mut from_client) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                let chunk = &from_client[..n];
                let longest = longest_pattern(shared);
                if longest == 0 {
                    tail.clear();
                    server_write.write_all(chunk).await?;
                    continue;
                }
                let mut window = std::mem::take(&mut tail);
                let carried = window.len();
                window.extend_from_slice(chunk);
                if let Some((rule, at)) = matching_rule(shared, &window) {
                    match rule.rule.moment {
                        CutMoment::BeforeSend => {}
                        CutMoment::MidSend => {
                            let middle = at + rule.rule.pattern.len() / 2;
                            if middle > carried {
                                server_write.write_all(&window[carried..middle]).await?;
                                server_write.flush().await?;
                            }
                        }
                        CutMoment::AfterSendDropReply => {
                            server_write.write_all(chunk).await?;
                            server_write.flush().await?;
                            // The answer proves the server acted; it is swallowed.
                            let _ = tokio::time::timeout(
                                REPLY_WAIT,
                                server_read.read(&mut from_server),
                            )
                            .await;
                        }
                        CutMoment::AfterSendGoSilent => {
                            server_write.write_all(chunk).await?;
                            server_write.flush().await?;
                            fire(&rule);
                            // Both sockets stay open, unread, until the test cuts them.
                            let _ = generation.changed().await;
                            return Ok(());
                        }
                    }
                    fire(&rule);
                    return Ok(());
                }
                server_write.write_all(chunk).await?;
                let keep = (longest - 1).min(window.len());
                tail = window.split_off(window.len() - keep);
            }
            read = server_read.read(&mut from_server) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                client_write.write_all(&from_server[..n]).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_rewritten_to_the_proxy() {
        assert_eq!(
            url_authority("postgres://u:p@127.0.0.1:5433/db?x=1"),
            Some(("127.0.0.1".to_owned(), 5433))
        );
        assert_eq!(
            url_authority("postgres://localhost/db"),
            Some(("localhost".to_owned(), 5432))
        );
        let span = authority_span("postgres://u:p@h:1/db").unwrap();
        assert_eq!(&"postgres://u:p@h:1/db"[span.0..span.1], "h:1");
    }

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if socket.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(stream: &mut TcpStream, message: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(message).await?;
        let mut buf = vec![0u8; message.len()];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn forwards_cuts_and_drops_a_reply() {
        let upstream = echo_server().await;
        let proxy = TcpProxy::start(&upstream.to_string()).await.unwrap();
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut a, b"hello").await.unwrap(), b"hello");

        let cut = proxy.arm(CutRule::new("COMMIT", CutMoment::AfterSendDropReply));
        assert!(roundtrip(&mut a, b"xxCOMMITyy").await.is_err());
        assert!(cut.wait(Duration::from_secs(5)).await);

        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut b, b"again").await.unwrap(), b"again");
        proxy.cut_all();
        assert!(roundtrip(&mut b, b"gone").await.is_err());

        proxy.refuse_new_for(Duration::from_secs(60));
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(roundtrip(&mut c, b"refused").await.is_err());
        proxy.open_gate();
        let mut d = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut d, b"open").await.unwrap(), b"open");

        proxy.freeze();
        let frozen =
            tokio::time::timeout(Duration::from_millis(300), roundtrip(&mut d, b"cold")).await;
        assert!(frozen.is_err(), "no answer while frozen");
        proxy.thaw();
        let mut rest = [0u8; 4];
        d.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"cold", "held bytes go through after the thaw");
    }

    #[tokio::test]
    async fn a_pattern_split_across_writes_is_found() {
        let upstream = echo_server().await;
        let proxy = TcpProxy::start(&upstream.to_string()).await.unwrap();
        let cut = proxy.arm(CutRule::new("COMMIT", CutMoment::BeforeSend));
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut a, b"..COM").await.unwrap(), b"..COM");
        assert!(roundtrip(&mut a, b"MIT..").await.is_err());
        assert!(cut.fired());
    }
}
