//! RELIABILITY.md #10 for any durable backend: duplicate delivery to an external effect.
//!
//! The parent test runs a small "payment service" on loopback TCP that applies each request
//! once per idempotency key and counts the duplicates it turns away. A child process (the test
//! binary run again) runs an application whose processor calls that service for every event
//! with [`EventContext::idempotency_key`], and aborts right after the call for its 85th event,
//! before its batch (of 50) is checkpointed. A second child resumes from the checkpoint: the
//! events of the interrupted batch are delivered again, the service refuses them as
//! duplicates, and every event has exactly one effect.
//!
//! Instantiate with [`external_effect_test!`](crate::external_effect_test) at the root of an
//! integration-test file (the child is found by its test name).

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interlock_core::{Event, EventStore, ExpectedVersion, NewEvent, StreamId};
use interlock_runtime::ApplicationBuilder;
use interlock_runtime::processor::{
    EventContext, EventProcessor, HandlerError, HandlesEvent, ProcessorRoutes, ProcessorSettings,
};
use serde::{Deserialize, Serialize};

/// The variable that makes the test binary run as the child, holding the store's locator.
pub const CHILD_ENV: &str = "INTERLOCK_EFFECT_CHILD";
/// The child's test name.
pub const CHILD_TEST: &str = "external_effect_child_process";
const SERVICE_ENV: &str = "INTERLOCK_EFFECT_SERVICE";
const ABORT_ENV: &str = "INTERLOCK_EFFECT_ABORT_AT";
const STREAMS: u64 = 12;
const PER_STREAM: u64 = 10;
const BATCH: usize = 50;

#[derive(Serialize, Deserialize)]
struct Charged {
    n: u64,
}
impl Event for Charged {
    const TYPE_NAME: &'static str = "EffectCharged";
}

/// Calls the payment service for every event.
struct Payer {
    service: String,
    connection: Option<BufReader<TcpStream>>,
    handled: u64,
    abort_at: Option<u64>,
}

impl Payer {
    fn pay(&mut self, key: &str) -> std::io::Result<()> {
        if self.connection.is_none() {
            self.connection = Some(BufReader::new(TcpStream::connect(&self.service)?));
        }
        let connection = self.connection.as_mut().expect("connected above");
        writeln!(connection.get_mut(), "PAY {key}")?;
        let mut answer = String::new();
        connection.read_line(&mut answer)?;
        if answer.trim() == "OK" {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "service answered {answer:?}"
            )))
        }
    }
}

impl EventProcessor for Payer {
    const NAME: &'static str = "payer";
    fn configure(routes: &mut ProcessorRoutes<Self>) {
        routes.event::<Charged>();
    }
    async fn reset(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl HandlesEvent<Charged> for Payer {
    async fn handle(&mut self, _: Charged, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        let key = ctx.idempotency_key();
        if let Err(e) = self.pay(&key) {
            self.connection = None;
            return Err(HandlerError::new(e.to_string()));
        }
        self.handled += 1;
        if self.abort_at == Some(self.handled) {
            // The crash: after the call, before the batch's checkpoint.
            std::process::abort();
        }
        Ok(())
    }
}

/// The child's body: runs the application over the store at `locator` until killed.
pub fn child<S, F, Fut>(locator: String, open: F)
where
    S: EventStore,
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = S>,
{
    let service = std::env::var(SERVICE_ENV).expect("the service address");
    let abort_at = std::env::var(ABORT_ENV)
        .ok()
        .map(|n| n.parse().expect("a number"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = open(locator).await;
        let app = ApplicationBuilder::new()
            .with_event_store(store)
            .register_event_processor_with(
                Payer {
                    service,
                    connection: None,
                    handled: 0,
                    abort_at,
                },
                ProcessorSettings::new().batch_size(BATCH),
            )
            .build()
            .expect("build");
        app.start().await.expect("start");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

/// The payment ledger: calls per idempotency key.
type Ledger = Arc<Mutex<HashMap<String, u32>>>;

/// Serves `PAY <key>` lines: records the call, answers `OK`.
fn serve(listener: TcpListener, ledger: Ledger) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let ledger = ledger.clone();
        std::thread::spawn(move || {
            let Ok(mut writer) = stream.try_clone() else {
                return;
            };
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                let Some(key) = line.strip_prefix("PAY ") else {
                    return;
                };
                *ledger
                    .lock()
                    .expect("ledger")
                    .entry(key.to_owned())
                    .or_default() += 1;
                if writeln!(writer, "OK").is_err() {
                    return;
                }
            }
        });
    }
}

fn spawn_child(locator: &str, service: &str, abort_at: Option<u64>) -> std::process::Child {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, locator)
        .env(SERVICE_ENV, service)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(n) = abort_at {
        command.env(ABORT_ENV, n.to_string());
    }
    command.spawn().expect("spawn the child")
}

/// The parent: appends the events, runs a crashing child then a resuming one, and checks the
/// service's ledger.
pub async fn parent<S, F, Fut, N, NFut>(fresh: N, open: F)
where
    S: EventStore,
    F: Fn(String) -> Fut,
    Fut: Future<Output = S>,
    N: Fn() -> NFut,
    NFut: Future<Output = Option<String>>,
{
    let Some(locator) = fresh().await else {
        return;
    };
    {
        let store = open(locator.clone()).await;
        for n in 0..PER_STREAM {
            for s in 0..STREAMS {
                store
                    .append(
                        &StreamId::new("Effect", format!("s{s}")).expect("stream"),
                        ExpectedVersion::Any,
                        vec![NewEvent::from_event(&Charged { n }).expect("event")],
                    )
                    .await
                    .expect("append");
            }
        }
    }
    let events = (STREAMS * PER_STREAM) as usize;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the service");
    let service = listener.local_addr().expect("address").to_string();
    let ledger = Ledger::default();
    std::thread::spawn({
        let ledger = ledger.clone();
        move || serve(listener, ledger)
    });

    let mut crashing = spawn_child(&locator, &service, Some(85));
    let status = tokio::task::spawn_blocking(move || crashing.wait())
        .await
        .expect("wait task")
        .expect("wait");
    assert!(!status.success(), "the first child crashed");
    let paid_before = ledger.lock().expect("ledger").len();
    assert_eq!(paid_before, 85, "the first child paid up to its crash");

    let mut resuming = spawn_child(&locator, &service, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger.lock().expect("ledger").len() < events {
        if Instant::now() > deadline {
            let _ = resuming.kill();
            panic!(
                "only {} of {events} events paid",
                ledger.lock().expect("ledger").len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let any late duplicate arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = resuming.kill();
    let _ = resuming.wait();
    let ledger = ledger.lock().expect("ledger").clone();
    let calls: u32 = ledger.values().sum();
    let duplicates = calls as usize - ledger.len();
    eprintln!(
        "external effects: {} keys, {calls} calls, {duplicates} duplicates refused",
        ledger.len()
    );
    assert_eq!(ledger.len(), events, "one effect per event");
    assert!(
        (1..=BATCH).contains(&duplicates),
        "the interrupted batch was delivered again, at most one batch: {duplicates}"
    );
    assert!(
        ledger.values().all(|&c| c <= 2),
        "no key called more than twice"
    );
}

/// Generates the two tests of [the external-effect test](crate::effects): the child body and
/// the parent. `open` is a closure `|locator: String| async { store }`; `fresh` yields a new
/// locator (a file path, a schema name) or `None` to skip.
#[macro_export]
macro_rules! external_effect_test {
    (open: $open:expr, fresh: $fresh:expr $(,)?) => {
        /// Not a test by itself: the child process of the external-effect test.
        #[test]
        fn external_effect_child_process() {
            if let Ok(locator) = std::env::var($crate::effects::CHILD_ENV) {
                $crate::effects::child(locator, $open);
            }
        }

        /// RELIABILITY.md #10: a crash after an external call and before the checkpoint repeats
        /// no effect: the service refuses the redelivered calls by their idempotency key.
        #[test]
        fn a_crash_after_an_external_call_repeats_no_effect() {
            $crate::conformance::run($crate::effects::parent($fresh, $open));
        }
    };
}
