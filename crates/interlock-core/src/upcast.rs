//! Upcasting: reading events stored under an older schema (or an older name) as the current one.
//!
//! An [`Upcaster`] converts one stored `(type name, schema version)` into the next shape. The
//! [`Upcasters`] registry chains them until no upcaster applies, so version 1 goes to 2 goes to 3
//! without anyone writing a 1-to-3 conversion. Stored events are never changed by reading them:
//! rewriting the store is an explicit migration.
//!
//! ```
//! use interlock_core::upcast::{JsonUpcaster, Upcasters};
//! let mut upcasters = Upcasters::new();
//! // v1 stored cents as "cents"; v2 calls it "amount".
//! upcasters.register(JsonUpcaster::new("MoneyDeposited", 1, |mut payload| {
//!     let object = payload.as_object_mut().ok_or("not an object")?;
//!     let cents = object.remove("cents").ok_or("no cents")?;
//!     object.insert("amount".into(), cents);
//!     Ok(payload)
//! }))?;
//! // The old name of the event, renamed in version 3 of the application.
//! upcasters.register(JsonUpcaster::rename("CashDeposited", 1, "MoneyDeposited", 1))?;
//! let (name, version, payload) =
//!     upcasters.upcast_json("CashDeposited", 1, serde_json::json!({"cents": 5}))?;
//! assert_eq!((name.as_str(), version), ("MoneyDeposited", 2));
//! assert_eq!(payload, serde_json::json!({"amount": 5}));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::envelope::RecordedEvent;
use crate::error::{DecodeError, DecodeReason, ValidationError};
use crate::message::Event;

/// Longest chain of upcasters applied to one event; longer means a cycle.
pub const MAX_UPCAST_CHAIN: usize = 64;

/// Converts events stored as `(event_type(), source_version())` into their next shape.
pub trait Upcaster: Send + Sync + 'static {
    /// The stored type name this upcaster reads.
    fn event_type(&self) -> &str;
    /// The stored schema version this upcaster reads.
    fn source_version(&self) -> u32;
    /// Converts the payload; returns the new type name, version and payload. The result must be
    /// a different `(type, version)` than the input.
    fn upcast(&self, payload: Value) -> Result<(String, u32, Value), String>;
}

type JsonFn = dyn Fn(Value) -> Result<Value, String> + Send + Sync;

/// An upcaster written on the stored JSON.
pub struct JsonUpcaster {
    event_type: String,
    from_version: u32,
    to_type: String,
    to_version: u32,
    convert: Box<JsonFn>,
}

impl JsonUpcaster {
    /// Converts `event_type` at `from_version` to the same type at `from_version + 1`.
    pub fn new(
        event_type: impl Into<String>,
        from_version: u32,
        convert: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        let event_type = event_type.into();
        Self {
            to_type: event_type.clone(),
            event_type,
            from_version,
            to_version: from_version.saturating_add(1),
            convert: Box::new(convert),
        }
    }

    /// Reads events stored under an old name as another type and version, payload unchanged.
    pub fn rename(
        old_type: impl Into<String>,
        old_version: u32,
        new_type: impl Into<String>,
        new_version: u32,
    ) -> Self {
        Self {
            event_type: old_type.into(),
            from_version: old_version,
            to_type: new_type.into(),
            to_version: new_version,
            convert: Box::new(Ok),
        }
    }

    /// Converts to another type name and version with a payload conversion.
    pub fn to(
        event_type: impl Into<String>,
        from_version: u32,
        to_type: impl Into<String>,
        to_version: u32,
        convert: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            event_type: event_type.into(),
            from_version,
            to_type: to_type.into(),
            to_version,
            convert: Box::new(convert),
        }
    }
}

impl Upcaster for JsonUpcaster {
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn source_version(&self) -> u32 {
        self.from_version
    }
    fn upcast(&self, payload: Value) -> Result<(String, u32, Value), String> {
        Ok((
            self.to_type.clone(),
            self.to_version,
            (self.convert)(payload)?,
        ))
    }
}

/// An upcaster written as a typed conversion from the old struct to the new event.
pub struct TypedUpcaster<Old, New> {
    event_type: String,
    from_version: u32,
    convert: Box<dyn Fn(Old) -> New + Send + Sync>,
}

impl<Old, New> TypedUpcaster<Old, New>
where
    Old: DeserializeOwned + 'static,
    New: Event,
{
    /// Reads `Old` from events stored as `(event_type, from_version)` and turns it into the
    /// current `New` (stored as `New::TYPE_NAME` at `New::SCHEMA_VERSION`).
    pub fn new(
        event_type: impl Into<String>,
        from_version: u32,
        convert: impl Fn(Old) -> New + Send + Sync + 'static,
    ) -> Self {
        Self {
            event_type: event_type.into(),
            from_version,
            convert: Box::new(convert),
        }
    }
}

impl<Old, New> Upcaster for TypedUpcaster<Old, New>
where
    Old: DeserializeOwned + 'static,
    New: Event + Serialize,
{
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn source_version(&self) -> u32 {
        self.from_version
    }
    fn upcast(&self, payload: Value) -> Result<(String, u32, Value), String> {
        let old: Old = serde_json::from_value(payload).map_err(|e| e.to_string())?;
        let new = (self.convert)(old);
        let value = serde_json::to_value(&new).map_err(|e| e.to_string())?;
        Ok((New::TYPE_NAME.to_owned(), New::SCHEMA_VERSION, value))
    }
}

/// Why an upcast failed (wrapped into a [`DecodeError`] when reading an envelope).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upcasting {event_type:?} version {version} failed: {message}")]
pub struct UpcastError {
    /// The type name the failing step read.
    pub event_type: String,
    /// The version the failing step read.
    pub version: u32,
    /// What went wrong.
    pub message: String,
}

/// The registered upcasters, chained per `(type name, version)`.
#[derive(Clone, Default)]
pub struct Upcasters {
    /// By stored type name, then version: looked up with a borrowed name on every read.
    by_source: HashMap<String, HashMap<u32, Arc<dyn Upcaster>>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self
            .by_source
            .iter()
            .flat_map(|(name, versions)| versions.keys().map(move |v| (name, v)))
            .collect();
        keys.sort();
        f.debug_struct("Upcasters").field("from", &keys).finish()
    }
}

impl Upcasters {
    /// No upcasters: every event reads as stored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no upcaster is registered (reads then cost nothing extra).
    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }

    /// Registers an upcaster; a second one for the same `(type, version)` is refused.
    pub fn register(&mut self, upcaster: impl Upcaster) -> Result<(), ValidationError> {
        self.register_shared(Arc::new(upcaster))
    }

    /// Registers an already shared upcaster.
    pub fn register_shared(&mut self, upcaster: Arc<dyn Upcaster>) -> Result<(), ValidationError> {
        let (name, version) = (upcaster.event_type().to_owned(), upcaster.source_version());
        let versions = self.by_source.entry(name.clone()).or_default();
        if versions.contains_key(&version) {
            return Err(ValidationError::new(
                "upcaster",
                format!("two upcasters read {name:?} version {version}"),
            ));
        }
        versions.insert(version, upcaster);
        Ok(())
    }

    /// Whether some upcaster reads `(event_type, version)`.
    pub fn applies_to(&self, event_type: &str, version: u32) -> bool {
        self.find(event_type, version).is_some()
    }

    fn find(&self, event_type: &str, version: u32) -> Option<&Arc<dyn Upcaster>> {
        self.by_source.get(event_type)?.get(&version)
    }

    /// Runs the chain on a JSON payload: returns the final type name, version and payload.
    pub fn upcast_json(
        &self,
        event_type: &str,
        version: u32,
        payload: Value,
    ) -> Result<(String, u32, Value), UpcastError> {
        let mut current = (event_type.to_owned(), version, payload);
        for _ in 0..MAX_UPCAST_CHAIN {
            let Some(upcaster) = self.find(&current.0, current.1) else {
                return Ok(current);
            };
            let (name, version) = (current.0.clone(), current.1);
            let next = upcaster.upcast(current.2).map_err(|message| UpcastError {
                event_type: name.clone(),
                version,
                message,
            })?;
            if next.0 == name && next.1 == version {
                return Err(UpcastError {
                    event_type: name,
                    version,
                    message: "the upcaster returned the same type and version".into(),
                });
            }
            current = next;
        }
        Err(UpcastError {
            event_type: event_type.to_owned(),
            version,
            message: format!("more than {MAX_UPCAST_CHAIN} upcasters in a row: a cycle?"),
        })
    }

    /// Upcasts a stored envelope; borrows it unchanged when no upcaster applies.
    pub fn upcast<'a>(
        &self,
        event: &'a RecordedEvent,
    ) -> Result<Cow<'a, RecordedEvent>, DecodeError> {
        if !self.applies_to(&event.event_type, event.schema_version) {
            return Ok(Cow::Borrowed(event));
        }
        let payload: Value = serde_json::from_slice(&event.payload)
            .map_err(|e| event.decode_error(DecodeReason::Malformed(e.to_string())))?;
        let (event_type, schema_version, payload) = self
            .upcast_json(&event.event_type, event.schema_version, payload)
            .map_err(|e| event.decode_error(DecodeReason::Upcast(e.to_string())))?;
        let payload = serde_json::to_vec(&payload)
            .map_err(|e| event.decode_error(DecodeReason::Upcast(e.to_string())))?;
        Ok(Cow::Owned(RecordedEvent {
            event_type,
            schema_version,
            payload: Bytes::from(payload),
            ..event.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chains_run_in_order_and_stop_where_nothing_applies() {
        let mut ups = Upcasters::new();
        ups.register(JsonUpcaster::new("E", 1, |mut v| {
            v["b"] = json!(2);
            Ok(v)
        }))
        .unwrap();
        ups.register(JsonUpcaster::new("E", 2, |mut v| {
            v["c"] = json!(3);
            Ok(v)
        }))
        .unwrap();
        let out = ups.upcast_json("E", 1, json!({"a": 1})).unwrap();
        assert_eq!(out, ("E".into(), 3, json!({"a": 1, "b": 2, "c": 3})));
        let out = ups.upcast_json("E", 3, json!({})).unwrap();
        assert_eq!(out.1, 3, "nothing applies to the current version");
    }

    #[test]
    fn duplicates_cycles_and_failures_are_errors() {
        let mut ups = Upcasters::new();
        ups.register(JsonUpcaster::rename("A", 1, "B", 1)).unwrap();
        assert!(ups.register(JsonUpcaster::rename("A", 1, "C", 1)).is_err());
        ups.register(JsonUpcaster::rename("B", 1, "A", 1)).unwrap();
        let err = ups.upcast_json("A", 1, json!({})).unwrap_err();
        assert!(err.message.contains("cycle"), "{err}");
        let mut ups = Upcasters::new();
        ups.register(JsonUpcaster::new("E", 1, |_| Err("no".into())))
            .unwrap();
        let err = ups.upcast_json("E", 1, json!({})).unwrap_err();
        assert_eq!(
            (err.event_type.as_str(), err.version, err.message.as_str()),
            ("E", 1, "no")
        );
    }
}
