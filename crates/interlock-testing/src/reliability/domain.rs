//! The small domain the reliability tests run through a real
//! [`Application`](interlock_runtime::Application): written with the plain traits (this crate
//! cannot use the facade's macros), kept deliberately simple so that every expected outcome can
//! be computed by hand.
//!
//! * [`Ledger`]: accounts that take deposits, numbered entries (one of which may refuse to be
//!   serialized), measurements (an `f64`) and notes (a string of any size).
//! * [`Counter`]: a snapshotted aggregate whose schema version is a const parameter, so a test
//!   can "bump the schema" by registering `Counter<2>` over a store written by `Counter<1>`.
//! * [`Totals`], [`Counts`], [`Versions`]: three processors over [`Deposited`].
//! * [`Transfers`]: a saga that deposits money and arms a deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use interlock_core::{AggregateId, Command, Event, RecordedEvent};
use interlock_runtime::middleware::{MessageInfo, Middleware, Next, Outcome};
use interlock_runtime::saga::{DeadlineReached, Saga, SagaContext, SagaRoutes, SagaStep};
use interlock_runtime::{
    Aggregate, AggregateRoutes, AppliesEvent, CommandContext, Dep, DispatchOptions, DomainError,
    Emit, Error, EventContext, EventProcessor, HandlerError, HandlesCommand, HandlesEvent,
    ProcessorRoutes,
};
use serde::ser::{Error as _, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use tokio::sync::Barrier;

// ---- the ledger ------------------------------------------------------------------------------

/// Deposits `amount` on `account` (creating it); answers the new balance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deposit {
    /// The account.
    pub account: String,
    /// How much.
    pub amount: u64,
}

impl Command for Deposit {
    type Output = u64;
    const TYPE_NAME: &'static str = "Deposit";
    fn aggregate_id(&self) -> AggregateId {
        self.account.as_str().into()
    }
}

/// Like [`Deposit`] on an existing account, but the handler first waits at the [`RaceGate`]
/// registered as a dependency: every racer has loaded the same version before any appends.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RaceDeposit {
    /// The account.
    pub account: String,
    /// How much.
    pub amount: u64,
}

impl Command for RaceDeposit {
    type Output = u64;
    const TYPE_NAME: &'static str = "RaceDeposit";
    fn aggregate_id(&self) -> AggregateId {
        self.account.as_str().into()
    }
}

/// The barrier [`RaceDeposit`] handlers wait at (a dependency of the application).
#[derive(Debug)]
pub struct RaceGate(pub Barrier);

/// Emits `count` [`Entry`] events numbered from 1; the one numbered `poison_at` refuses to be
/// serialized.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriteEntries {
    /// The account.
    pub account: String,
    /// How many entries.
    pub count: u32,
    /// The 1-based number of the entry that cannot be serialized, if any.
    pub poison_at: Option<u32>,
}

impl Command for WriteEntries {
    type Output = ();
    const TYPE_NAME: &'static str = "WriteEntries";
    fn aggregate_id(&self) -> AggregateId {
        self.account.as_str().into()
    }
}

/// Records a measurement (any `f64`, NaN included).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measure {
    /// The account.
    pub account: String,
    /// The value.
    pub value: f64,
}

impl Command for Measure {
    type Output = ();
    const TYPE_NAME: &'static str = "Measure";
    fn aggregate_id(&self) -> AggregateId {
        self.account.as_str().into()
    }
}

/// Records a note of any length.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Note {
    /// The account.
    pub account: String,
    /// The note.
    pub text: String,
}

impl Command for Note {
    type Output = ();
    const TYPE_NAME: &'static str = "Note";
    fn aggregate_id(&self) -> AggregateId {
        self.account.as_str().into()
    }
}

/// Money was deposited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposited {
    /// How much.
    pub amount: u64,
}

impl Event for Deposited {
    const TYPE_NAME: &'static str = "Deposited";
}

/// A numbered entry. Serializing one with `poison` set fails, the way a value with a map keyed
/// by non-strings or a custom `Serialize` that errors would.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Entry {
    /// The entry's number.
    pub n: u32,
    /// Whether serializing it fails.
    #[serde(default)]
    pub poison: bool,
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.poison {
            return Err(S::Error::custom(format!(
                "entry {} refuses to be serialized",
                self.n
            )));
        }
        let mut s = serializer.serialize_struct("Entry", 2)?;
        s.serialize_field("n", &self.n)?;
        s.serialize_field("poison", &false)?;
        s.end()
    }
}

impl Event for Entry {
    const TYPE_NAME: &'static str = "Entry";
}

/// A measurement was taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// The value.
    pub value: f64,
}

impl Event for Measured {
    const TYPE_NAME: &'static str = "Measured";
}

/// A note was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Noted {
    /// The note.
    pub text: String,
}

impl Event for Noted {
    const TYPE_NAME: &'static str = "Noted";
}

/// An account.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Sum of the deposits.
    pub balance: u64,
    /// Number of deposits.
    pub deposits: u64,
    /// Numbers of the entries, in order.
    pub entries: Vec<u32>,
    /// The last measurement.
    pub last_measure: Option<f64>,
    /// Number of notes.
    pub notes: u64,
}

impl Aggregate for Ledger {
    const TYPE_NAME: &'static str = "Ledger";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes
            .creating_command::<Deposit>()
            .command::<RaceDeposit>()
            .creating_command::<WriteEntries>()
            .creating_command::<Measure>()
            .creating_command::<Note>()
            .event::<Deposited>()
            .event::<Entry>()
            .event::<Measured>()
            .event::<Noted>();
    }
}

impl HandlesCommand<Deposit> for Ledger {
    async fn handle(&mut self, cmd: Deposit, _: &CommandContext) -> Result<u64, DomainError> {
        self.emit(Deposited { amount: cmd.amount });
        Ok(self.balance)
    }
}

impl HandlesCommand<RaceDeposit> for Ledger {
    async fn handle(&mut self, cmd: RaceDeposit, ctx: &CommandContext) -> Result<u64, DomainError> {
        let gate = ctx.extract::<Dep<RaceGate>>()?;
        let RaceGate(barrier) = &*gate;
        barrier.wait().await;
        self.emit(Deposited { amount: cmd.amount });
        Ok(self.balance)
    }
}

impl HandlesCommand<WriteEntries> for Ledger {
    async fn handle(&mut self, cmd: WriteEntries, _: &CommandContext) -> Result<(), DomainError> {
        for n in 1..=cmd.count {
            self.emit(Entry {
                n,
                poison: cmd.poison_at == Some(n),
            });
        }
        Ok(())
    }
}

impl HandlesCommand<Measure> for Ledger {
    async fn handle(&mut self, cmd: Measure, _: &CommandContext) -> Result<(), DomainError> {
        self.emit(Measured { value: cmd.value });
        Ok(())
    }
}

impl HandlesCommand<Note> for Ledger {
    async fn handle(&mut self, cmd: Note, _: &CommandContext) -> Result<(), DomainError> {
        self.emit(Noted { text: cmd.text });
        Ok(())
    }
}

impl AppliesEvent<Deposited> for Ledger {
    fn apply(&mut self, e: &Deposited) {
        self.balance += e.amount;
        self.deposits += 1;
    }
}

impl AppliesEvent<Entry> for Ledger {
    fn apply(&mut self, e: &Entry) {
        self.entries.push(e.n);
    }
}

impl AppliesEvent<Measured> for Ledger {
    fn apply(&mut self, e: &Measured) {
        self.last_measure = Some(e.value);
    }
}

impl AppliesEvent<Noted> for Ledger {
    fn apply(&mut self, _: &Noted) {
        self.notes += 1;
    }
}

/// Folds stored ledger events by hand, independently of the application (for comparisons).
pub fn fold_ledger(events: &[RecordedEvent]) -> Ledger {
    let mut ledger = Ledger::default();
    for e in events {
        match e.event_type.as_str() {
            "Deposited" => ledger.apply(&e.decode::<Deposited>().expect("a Deposited")),
            "Entry" => ledger.apply(&e.decode::<Entry>().expect("an Entry")),
            "Measured" => ledger.apply(&e.decode::<Measured>().expect("a Measured")),
            "Noted" => ledger.apply(&e.decode::<Noted>().expect("a Noted")),
            other => panic!("not a ledger event: {other}"),
        }
    }
    ledger
}

// ---- the snapshotted counter ------------------------------------------------------------------

/// Adds each amount as one [`Counted`] event (so one command may cross a snapshot boundary).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Count {
    /// The counter.
    pub counter: String,
    /// One event per amount.
    pub amounts: Vec<u64>,
}

impl Command for Count {
    type Output = u64;
    const TYPE_NAME: &'static str = "Count";
    fn aggregate_id(&self) -> AggregateId {
        self.counter.as_str().into()
    }
}

/// One amount was counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// The amount.
    pub amount: u64,
}

impl Event for Counted {
    const TYPE_NAME: &'static str = "Counted";
}

/// A counter whose aggregate schema version is `V`: `Counter<1>` and `Counter<2>` share the
/// type name and events, and differ only in the version their snapshots carry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter<const V: u32> {
    /// Number of events applied (equals the stream version).
    pub count: u64,
    /// Sum of the amounts.
    pub total: u64,
    /// An order-sensitive digest of the amounts.
    pub digest: u64,
}

impl<const V: u32> Aggregate for Counter<V> {
    const TYPE_NAME: &'static str = "Counter";
    const SCHEMA_VERSION: u32 = V;
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes.creating_command::<Count>().event::<Counted>();
    }
}

impl<const V: u32> HandlesCommand<Count> for Counter<V> {
    async fn handle(&mut self, cmd: Count, _: &CommandContext) -> Result<u64, DomainError> {
        for amount in cmd.amounts {
            self.emit(Counted { amount });
        }
        Ok(self.count)
    }
}

impl<const V: u32> AppliesEvent<Counted> for Counter<V> {
    fn apply(&mut self, e: &Counted) {
        self.count += 1;
        self.total += e.amount;
        self.digest = self.digest.wrapping_mul(1_000_003).wrapping_add(e.amount);
    }
}

/// Folds stored counter events by hand: the full replay every snapshot must agree with.
pub fn fold_counter<const V: u32>(events: &[RecordedEvent]) -> Counter<V> {
    let mut counter = Counter::<V>::default();
    for e in events {
        counter.apply(&e.decode::<Counted>().expect("a Counted"));
    }
    counter
}

// ---- processors ------------------------------------------------------------------------------

/// Sum of deposits per stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Stream id (`Ledger/a`) to sum.
    pub by_stream: BTreeMap<String, u64>,
}

impl EventProcessor for Totals {
    const NAME: &'static str = "rel-totals";
    fn configure(routes: &mut ProcessorRoutes<Self>) {
        routes.event::<Deposited>();
    }
    async fn reset(&mut self) -> Result<(), HandlerError> {
        *self = Self::default();
        Ok(())
    }
}

impl HandlesEvent<Deposited> for Totals {
    async fn handle(&mut self, e: Deposited, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        *self
            .by_stream
            .entry(ctx.stream_id().to_string())
            .or_default() += e.amount;
        Ok(())
    }
}

/// Number of deposits per stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Stream id to count.
    pub by_stream: BTreeMap<String, u64>,
}

impl EventProcessor for Counts {
    const NAME: &'static str = "rel-counts";
    fn configure(routes: &mut ProcessorRoutes<Self>) {
        routes.event::<Deposited>();
    }
    async fn reset(&mut self) -> Result<(), HandlerError> {
        *self = Self::default();
        Ok(())
    }
}

impl HandlesEvent<Deposited> for Counts {
    async fn handle(&mut self, _: Deposited, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        *self
            .by_stream
            .entry(ctx.stream_id().to_string())
            .or_default() += 1;
        Ok(())
    }
}

/// The last version seen per stream, and how often a stream's events arrived out of order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Versions {
    /// Stream id to the last version seen.
    pub last: BTreeMap<String, u64>,
    /// Events whose version was not one more than the last seen of their stream.
    pub out_of_order: u64,
}

impl EventProcessor for Versions {
    const NAME: &'static str = "rel-versions";
    fn configure(routes: &mut ProcessorRoutes<Self>) {
        routes.event::<Deposited>();
    }
    async fn reset(&mut self) -> Result<(), HandlerError> {
        *self = Self::default();
        Ok(())
    }
}

impl HandlesEvent<Deposited> for Versions {
    async fn handle(&mut self, _: Deposited, ctx: &EventContext<'_>) -> Result<(), HandlerError> {
        let last = self.last.entry(ctx.stream_id().to_string()).or_default();
        if ctx.stream_version() != *last + 1 {
            self.out_of_order += 1;
        }
        *last = ctx.stream_version();
        Ok(())
    }
}

// ---- the saga ------------------------------------------------------------------------------

/// Asks for `amount` to be deposited on `account`; starts a [`Transfers`] saga keyed by
/// `transfer`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferRequested {
    /// The saga key.
    pub transfer: String,
    /// The account to credit.
    pub account: String,
    /// How much.
    pub amount: u64,
}

impl Event for TransferRequested {
    const TYPE_NAME: &'static str = "TransferRequested";
}

/// The state of one transfer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferState {
    /// The account credited.
    pub account: String,
    /// The balance the deposit answered.
    pub balance_seen: Option<u64>,
    /// How many times the "expire" deadline reached this instance.
    pub expired: u32,
}

/// How long after the request the transfer's "expire" deadline is due.
pub const TRANSFER_DEADLINE: Duration = Duration::from_secs(3600);

/// Deposits on the request and arms an "expire" deadline; counts the deadlines it receives.
///
/// With `crash_after_send` set, the request step panics right after its command was sent and
/// acknowledged, once: the processor task dies before the saga's state is saved, like a process
/// killed between sending and committing.
#[derive(Clone, Debug, Default)]
pub struct Transfers {
    /// Panic once, right after the deposit was acknowledged.
    pub crash_after_send: Arc<AtomicBool>,
    /// How many times the request step ran (crashed runs included).
    pub request_runs: Arc<AtomicUsize>,
}

impl Saga for Transfers {
    const NAME: &'static str = "rel-transfers";
    type State = TransferState;
    fn configure(routes: &mut SagaRoutes<'_, Self>) {
        routes
            .starts_with(|e: &TransferRequested| e.transfer.clone())
            .deadlines();
    }
}

impl SagaStep<TransferRequested> for Transfers {
    async fn handle(
        &self,
        state: &mut TransferState,
        e: TransferRequested,
        ctx: &mut SagaContext<'_>,
    ) -> Result<(), HandlerError> {
        self.request_runs.fetch_add(1, Ordering::SeqCst);
        state.account.clone_from(&e.account);
        ctx.schedule("expire", TRANSFER_DEADLINE);
        let balance = ctx
            .send(Deposit {
                account: e.account,
                amount: e.amount,
            })
            .await?;
        if self.crash_after_send.swap(false, Ordering::SeqCst) {
            panic!("simulated crash: the deposit is acknowledged, the saga state is not saved");
        }
        state.balance_seen = Some(balance);
        Ok(())
    }
}

impl SagaStep<DeadlineReached> for Transfers {
    async fn handle(
        &self,
        state: &mut TransferState,
        d: DeadlineReached,
        _: &mut SagaContext<'_>,
    ) -> Result<(), HandlerError> {
        if d.name == "expire" {
            state.expired += 1;
        }
        Ok(())
    }
}

/// A middleware that panics once, right after a [`Deposit`] committed and before its caller
/// hears back: the crash between a command's commit and the recording of its result.
#[derive(Clone, Debug, Default)]
pub struct CrashAfterCommit {
    /// Panic on the next successful deposit.
    pub armed: Arc<AtomicBool>,
}

impl Middleware for CrashAfterCommit {
    fn intercepts(&self, message: &MessageInfo) -> bool {
        message.is::<Deposit>()
    }

    fn handle<'a>(
        &'a self,
        _message: &'a MessageInfo,
        options: DispatchOptions,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(async move {
            let outcome = next.run(options).await;
            if outcome.is_ok() && self.armed.swap(false, Ordering::SeqCst) {
                panic!("simulated crash: the deposit is committed, its result is not recorded");
            }
            outcome
        })
    }
}
