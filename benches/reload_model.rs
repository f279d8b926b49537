//! The model of the reload benchmark: a ledger aggregate whose one event is at schema version 2,
//! the version-1 shape it upcasts from, and helpers that write long streams of either.

use interlock::core::upcast::JsonUpcaster;
use interlock::prelude::*;
use interlock::{AggregateRoutes, NewEvent, ValidationError};
use serde::{Deserialize, Serialize};

/// Credits a ledger, opening it on first use.
#[derive(Serialize, Deserialize)]
pub struct Credit {
    /// The ledger.
    pub ledger: String,
    /// One event per amount.
    pub amounts: Vec<u64>,
}

impl Command for Credit {
    type Output = ();
    const TYPE_NAME: &'static str = "Credit";
    fn aggregate_id(&self) -> AggregateId {
        self.ledger.as_str().into()
    }
}

/// Money credited, schema version 2: `{"amount": n}`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credited {
    /// How much.
    pub amount: u64,
}

impl Event for Credited {
    const TYPE_NAME: &'static str = "Credited";
    const SCHEMA_VERSION: u32 = 2;
}

/// Version 1 of [`Credited`], as old code wrote it: `{"cents": n}`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub struct CreditedV1 {
    /// How much.
    pub cents: u64,
}

/// The upcaster from [`CreditedV1`] to [`Credited`]: renames one field on the JSON.
pub fn credited_v1_to_v2() -> JsonUpcaster {
    JsonUpcaster::new("Credited", 1, |mut payload| {
        let object = payload.as_object_mut().ok_or("not an object")?;
        let cents = object.remove("cents").ok_or("no cents")?;
        object.insert("amount".into(), cents);
        Ok(payload)
    })
}

/// A ledger: the sum of its credits and how many there were.
#[derive(Default, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Sum of the amounts.
    pub total: u64,
    /// Number of credits.
    pub credits: u64,
}

impl Aggregate for Ledger {
    const TYPE_NAME: &'static str = "Ledger";
    fn configure(routes: &mut AggregateRoutes<Self>) {
        routes.creating_command::<Credit>().event::<Credited>();
    }
}

impl HandlesCommand<Credit> for Ledger {
    async fn handle(&mut self, cmd: Credit, _: &CommandContext) -> Result<(), DomainError> {
        for amount in cmd.amounts {
            self.emit(Credited { amount });
        }
        Ok(())
    }
}

impl AppliesEvent<Credited> for Ledger {
    fn apply(&mut self, e: &Credited) {
        self.total += e.amount;
        self.credits += 1;
    }
}

/// The amount of the event at `version` (1-based): varied, so a skipped or repeated event shows
/// in the total.
pub fn amount_at(version: u64) -> u64 {
    version % 10 + 1
}

/// The ledger after events `1..=version`.
pub fn ledger_at(version: u64) -> Ledger {
    Ledger {
        total: (1..=version).map(amount_at).sum(),
        credits: version,
    }
}

/// The shape events are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The current [`Credited`] (version 2).
    Current,
    /// The old [`CreditedV1`] (version 1): every read needs the upcaster.
    V1,
}

/// Appends events `from..=to` (1-based stream versions) to the ledger's stream, in batches of
/// up to 1000.
pub async fn append_credits(
    store: &impl EventStore,
    ledger: &str,
    from: u64,
    to: u64,
    shape: Shape,
) -> Result<(), Error> {
    let stream = StreamId::new(Ledger::TYPE_NAME, ledger)?;
    let mut version = from;
    while version <= to {
        let last = to.min(version + 999);
        let batch = (version..=last)
            .map(|v| credit_event(v, shape))
            .collect::<Result<Vec<_>, _>>()?;
        let expected = if version == 1 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version - 1)
        };
        store.append(&stream, expected, batch).await?;
        version = last + 1;
    }
    Ok(())
}

fn credit_event(version: u64, shape: Shape) -> Result<NewEvent, ValidationError> {
    let current = Credited {
        amount: amount_at(version),
    };
    let event = NewEvent::from_event(&current).map_err(payload_error)?;
    Ok(match shape {
        Shape::Current => event,
        Shape::V1 => NewEvent {
            schema_version: 1,
            payload: serde_json::to_vec(&CreditedV1 {
                cents: current.amount,
            })
            .map_err(payload_error)?
            .into(),
            ..event
        },
    })
}

fn payload_error(e: serde_json::Error) -> ValidationError {
    ValidationError::new("payload", e.to_string())
}
