//! The three kinds of message: commands, queries and events.
//!
//! Usually derived (`#[derive(Command)]`, `#[derive(Query)]`, `#[derive(Event)]` from the
//! `interlock` crate); implementing them by hand is just as valid.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ids::AggregateId;

/// A request to change one aggregate instance.
///
/// A command names its target (`aggregate_id`) and the type its handler returns (`Output`), so
/// `dispatch(cmd)` is typed end to end. Commands are serde structs: middleware can keep a copy to
/// re-run them (retries) and store their results (idempotency).
///
/// ```
/// use interlock_core::{AggregateId, Command};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Deposit { account: u64, amount: u64 }
/// impl Command for Deposit {
///     type Output = u64;
///     const TYPE_NAME: &'static str = "Deposit";
///     fn aggregate_id(&self) -> AggregateId { self.account.into() }
/// }
/// assert_eq!(Deposit { account: 7, amount: 1 }.aggregate_id().as_str(), "7");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command",
    label = "not a command",
    note = "add `#[derive(Command)]` (with an `aggregate_id` field) or implement `Command` by hand"
)]
pub trait Command: Serialize + DeserializeOwned + Send + 'static {
    /// What the handler returns to the caller of `dispatch`. Serializable, so that an
    /// idempotent retry can be answered with the original result.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// A stable name, used in errors, logs and traces.
    const TYPE_NAME: &'static str;

    /// The aggregate instance this command is for.
    fn aggregate_id(&self) -> AggregateId;
}

/// A request for data, answered by exactly one projection.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a query",
    label = "not a query",
    note = "add `#[derive(Query)]` with `#[query(output = ...)]`, or implement `Query` by hand"
)]
pub trait Query: Send + 'static {
    /// What the projection answers.
    type Output: Send + 'static;

    /// A stable name, used in errors, logs and traces.
    const TYPE_NAME: &'static str;
}

/// A fact that happened, stored as JSON under a stable type name and schema version.
///
/// The type name (not the Rust path) is what storage records, so renaming the Rust struct does not
/// orphan stored events; bumping `SCHEMA_VERSION` tells readers that older payloads need upcasting.
///
/// ```
/// use interlock_core::Event;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct MoneyDeposited { amount: u64 }
/// impl Event for MoneyDeposited {
///     const TYPE_NAME: &'static str = "MoneyDeposited";
/// }
/// assert_eq!(MoneyDeposited::SCHEMA_VERSION, 1);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    label = "not an event",
    note = "add `#[derive(Event, Serialize, Deserialize)]`, or implement `Event` by hand"
)]
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable name stored with every event of this type.
    const TYPE_NAME: &'static str;
    /// The current schema version of the payload (starts at 1).
    const SCHEMA_VERSION: u32 = 1;
}

/// An event already turned into its stored form: type name, schema version and JSON payload.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SerializedEvent {
    /// The event's type name.
    pub event_type: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload as JSON text.
    pub payload: Bytes,
}

impl SerializedEvent {
    /// Serializes a typed event.
    pub fn from_event<E: Event>(event: &E) -> Result<Self, serde_json::Error> {
        Ok(Self {
            event_type: E::TYPE_NAME.to_owned(),
            schema_version: E::SCHEMA_VERSION,
            payload: Bytes::from(serde_json::to_vec(event)?),
        })
    }

    /// The payload parsed as a JSON value (for comparisons and display).
    pub fn payload_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

/// Something that can be turned into an ordered list of events: one event, a tuple of events of
/// different types, a `Vec` of one type, or already serialized events.
///
/// Test scenarios take this so that `given((Opened { .. }, Deposited { .. }))` reads naturally.
pub trait EventBatch {
    /// Serializes the events in order.
    fn into_serialized(self) -> Result<Vec<SerializedEvent>, serde_json::Error>;
}

impl<E: Event> EventBatch for E {
    fn into_serialized(self) -> Result<Vec<SerializedEvent>, serde_json::Error> {
        Ok(vec![SerializedEvent::from_event(&self)?])
    }
}

impl<E: Event> EventBatch for Vec<E> {
    fn into_serialized(self) -> Result<Vec<SerializedEvent>, serde_json::Error> {
        self.iter().map(SerializedEvent::from_event).collect()
    }
}

impl EventBatch for Vec<SerializedEvent> {
    fn into_serialized(self) -> Result<Vec<SerializedEvent>, serde_json::Error> {
        Ok(self)
    }
}

impl EventBatch for () {
    fn into_serialized(self) -> Result<Vec<SerializedEvent>, serde_json::Error> {
        Ok(Vec::new())
    }
}

macro_rules! event_batch_tuple {
    ($($name:ident),+) => {
        impl<$($name: Event),+> EventBatch for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_serialized(self) -> Result<Vec<SerializedEvent>, serde_json::Error> {
                let ($($name,)+) = self;
                Ok(vec![$(SerializedEvent::from_event(&$name)?),+])
            }
        }
    };
}
event_batch_tuple!(A);
event_batch_tuple!(A, B);
event_batch_tuple!(A, B, C);
event_batch_tuple!(A, B, C, D);
event_batch_tuple!(A, B, C, D, E);
event_batch_tuple!(A, B, C, D, E, F);
event_batch_tuple!(A, B, C, D, E, F, G);
event_batch_tuple!(A, B, C, D, E, F, G, H);
event_batch_tuple!(A, B, C, D, E, F, G, H, I);
event_batch_tuple!(A, B, C, D, E, F, G, H, I, J);
event_batch_tuple!(A, B, C, D, E, F, G, H, I, J, K);
event_batch_tuple!(A, B, C, D, E, F, G, H, I, J, K, L);
