//! The three kinds of message: commands, queries and events.
//!
//! Usually derived (`#[derive(Command)]`, `#[derive(Query)]`, `#[derive(Event)]` from the
//! `interlock` crate); implementing them by hand is just as valid.

use std::cell::RefCell;

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
            payload: json_bytes(event)?,
        })
    }

    /// The payload parsed as a JSON value (for comparisons and display).
    pub fn payload_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

/// Serializes `value` as JSON into exactly-sized bytes.
///
/// `serde_json::to_vec` starts with 128 bytes of capacity, and `Bytes::from` a vector whose
/// length is not its capacity allocates a second, shared header: two allocations per event, and
/// 128 bytes kept for a 2-byte payload in an in-memory log. Writing into a per-thread scratch
/// buffer and copying out makes it one allocation of the payload's size.
fn json_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, serde_json::Error> {
    let bytes = json_bytes_unchecked(value)?;
    // NaN and infinities come out as `null`: only then is the value walked again to tell.
    if bytes.windows(4).any(|w| w == b"null")
        && let Err(e) = crate::finite::check(value)
    {
        return Err(<serde_json::Error as serde::ser::Error>::custom(e));
    }
    Ok(bytes)
}

fn json_bytes_unchecked<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, serde_json::Error> {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    /// A scratch buffer grown beyond this by a large event is not kept.
    const KEEP: usize = 64 * 1024;
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            let written = serde_json::to_writer(&mut *buffer, value);
            let bytes = written.map(|()| Bytes::copy_from_slice(&buffer));
            if buffer.capacity() > KEEP {
                *buffer = Vec::new();
            }
            bytes
        }
        // Re-entered (a `Serialize` impl that serializes an event itself): no scratch.
        Err(_) => serde_json::to_vec(value).map(Bytes::from),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Note {
        text: String,
    }
    impl Event for Note {
        const TYPE_NAME: &'static str = "Note";
    }

    /// Serializes another event while being serialized: the scratch buffer is in use.
    struct Nested;
    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let inner = SerializedEvent::from_event(&Note { text: "in".into() })
                .map_err(serde::ser::Error::custom)?;
            s.serialize_str(std::str::from_utf8(&inner.payload).map_err(serde::ser::Error::custom)?)
        }
    }
    impl<'de> serde::Deserialize<'de> for Nested {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Nested)
        }
    }
    impl Event for Nested {
        const TYPE_NAME: &'static str = "Nested";
    }

    #[test]
    fn payloads_are_the_json_of_the_event_whatever_their_size() {
        for len in [0, 1, 100, 200_000, 3] {
            let note = Note {
                text: "x".repeat(len),
            };
            let serialized = SerializedEvent::from_event(&note).unwrap();
            assert_eq!(serialized.payload, serde_json::to_vec(&note).unwrap());
            assert_eq!(serialized.event_type, "Note");
        }
        let nested = SerializedEvent::from_event(&Nested).unwrap();
        assert_eq!(&nested.payload[..], br#""{\"text\":\"in\"}""#);
    }
}
