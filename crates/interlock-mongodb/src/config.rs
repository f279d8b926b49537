//! How a store is connected: URI, database, collection names, polling, retries.

use std::time::Duration;

use crate::error::MongoError;
use crate::store::MongoEventStore;

/// Longest database name MongoDB accepts, in bytes.
const MAX_DATABASE_LEN: usize = 63;

/// Longest collection name this crate accepts, in bytes (MongoDB's own limit is on the whole
/// `database.collection` namespace; 100 keeps every combination well inside it).
pub const MAX_COLLECTION_LEN: usize = 100;

/// The names of the collections a store keeps in its database.
///
/// Each must be 1 to [`MAX_COLLECTION_LEN`] bytes, contain no `$`, no control character (NUL
/// included) and no invisible bidirectional formatting character, and start with neither `.`
/// nor `system.`; all nine must differ. [`validate_collection_name`] is the check.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectionNames {
    /// One document per event, `_id` = global position.
    pub events: String,
    /// One document per stream: version, last position, times.
    pub streams: String,
    /// Counter documents: the global position and the dead-letter id.
    pub counters: String,
    /// The latest snapshot of each stream.
    pub snapshots: String,
    /// Processor checkpoints.
    pub checkpoints: String,
    /// Saga instance state.
    pub sagas: String,
    /// Parked events.
    pub dead_letters: String,
    /// Idempotency keys and results.
    pub idempotency_keys: String,
    /// Leases of processors split across processes, with their fencing numbers.
    pub leases: String,
}

impl CollectionNames {
    /// The default names with `prefix` in front: `{prefix}events`, `{prefix}streams`, ...
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            events: format!("{prefix}events"),
            streams: format!("{prefix}streams"),
            counters: format!("{prefix}counters"),
            snapshots: format!("{prefix}snapshots"),
            checkpoints: format!("{prefix}checkpoints"),
            sagas: format!("{prefix}saga_states"),
            dead_letters: format!("{prefix}dead_letters"),
            idempotency_keys: format!("{prefix}idempotency_keys"),
            leases: format!("{prefix}leases"),
        }
    }

    fn all(&self) -> [(&'static str, &str); 9] {
        [
            ("collections.events", &self.events),
            ("collections.streams", &self.streams),
            ("collections.counters", &self.counters),
            ("collections.snapshots", &self.snapshots),
            ("collections.checkpoints", &self.checkpoints),
            ("collections.sagas", &self.sagas),
            ("collections.dead_letters", &self.dead_letters),
            ("collections.idempotency_keys", &self.idempotency_keys),
            ("collections.leases", &self.leases),
        ]
    }

    pub(crate) fn check(&self) -> Result<(), MongoError> {
        let all = self.all();
        for (i, (field, name)) in all.iter().enumerate() {
            validate_collection_name(field, name)?;
            if let Some((other, _)) = all[..i].iter().find(|(_, n)| n == name) {
                return Err(MongoError::InvalidConfig {
                    field,
                    reason: format!("{name:?} is already the name of {other}"),
                });
            }
        }
        Ok(())
    }
}

impl Default for CollectionNames {
    /// `interlock_events`, `interlock_streams`, `interlock_counters`, `interlock_snapshots`,
    /// `interlock_checkpoints`, `interlock_saga_states`, `interlock_dead_letters`,
    /// `interlock_idempotency_keys`, `interlock_leases`.
    fn default() -> Self {
        Self::with_prefix("interlock_")
    }
}

/// Everything [`MongoEventStore::connect_with`] needs. Start from [`MongoConfiguration::new`]
/// and change fields, or use the fluent [`MongoEventStoreBuilder`].
#[derive(Clone)]
#[non_exhaustive]
pub struct MongoConfiguration {
    /// A MongoDB connection string, `mongodb://user:password@host1,host2/?replicaSet=rs0` or
    /// `mongodb+srv://...`. A database in its path is ignored: [`database`](Self::database)
    /// says which one is used.
    pub uri: String,
    /// The database holding the store's collections (default `interlock`).
    pub database: String,
    /// The collections' names.
    pub collections: CollectionNames,
    /// Subscriptions re-poll at least this often even without a local append: appends made by
    /// other processes wake nobody here.
    pub poll_interval: Duration,
    /// Events a subscription reads per query while catching up.
    pub subscription_batch: usize,
    /// How long an append keeps retrying a transaction the server reports as transient (a
    /// write conflict with a concurrent append, a failover) before it gives up with
    /// [`StoreError::Unavailable`](interlock_core::StoreError::Unavailable).
    pub transaction_timeout: Duration,
    /// How long an operation waits for a suitable server (the driver's server selection
    /// timeout) before failing with `StoreError::Unavailable`.
    pub server_selection_timeout: Duration,
}

impl std::fmt::Debug for MongoConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URI may carry a password: show only that there is one.
        f.debug_struct("MongoConfiguration")
            .field("uri", &redact(&self.uri))
            .field("database", &self.database)
            .field("collections", &self.collections)
            .field("poll_interval", &self.poll_interval)
            .field("subscription_batch", &self.subscription_batch)
            .field("transaction_timeout", &self.transaction_timeout)
            .field("server_selection_timeout", &self.server_selection_timeout)
            .finish()
    }
}

pub(crate) fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &uri[..scheme], &uri[at + 1..])
        }
        _ => uri.to_owned(),
    }
}

impl MongoConfiguration {
    /// The defaults for `uri`: database `interlock`, the collections of
    /// [`CollectionNames::default`], 500 ms fallback polling, subscriptions reading 1024 events
    /// at a time, 30 s of transaction retries, 10 s server selection.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            database: "interlock".to_owned(),
            collections: CollectionNames::default(),
            poll_interval: Duration::from_millis(500),
            subscription_batch: 1024,
            transaction_timeout: Duration::from_secs(30),
            server_selection_timeout: Duration::from_secs(10),
        }
    }

    /// Checks every field that can be checked without the server.
    pub fn check(&self) -> Result<(), MongoError> {
        let bad = |field: &'static str, reason: &str| {
            Err(MongoError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.uri.is_empty() {
            return bad("uri", "must not be empty");
        }
        validate_database_name(&self.database)?;
        self.collections.check()?;
        if self.poll_interval.is_zero() {
            return bad("poll_interval", "must be positive");
        }
        if self.subscription_batch == 0 {
            return bad("subscription_batch", "must be at least 1");
        }
        if self.transaction_timeout.is_zero() {
            return bad("transaction_timeout", "must be positive");
        }
        if self.server_selection_timeout.is_zero() {
            return bad("server_selection_timeout", "must be positive");
        }
        Ok(())
    }
}

fn shown(name: &str) -> String {
    format!("{:?}", name.chars().take(64).collect::<String>())
}

/// Whether `c` is an invisible bidirectional formatting character (the marks, embeddings,
/// overrides and isolates of Unicode's bidi algorithm): a name holding one can display as
/// another name, in logs and tools alike.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Why a name with characters no name should hold is refused, if it is.
fn unprintable(name: &str) -> Option<String> {
    if name.contains('\0') {
        return Some(format!("{} must not contain a NUL character", shown(name)));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Some(format!(
            "{} must not contain the control character {c:?}",
            shown(name)
        ));
    }
    name.chars().find(|&c| is_bidi_control(c)).map(|c| {
        format!(
            "{} must not contain the bidirectional formatting character {:?}",
            shown(name),
            c
        )
    })
}

/// Checks a database name: 1 to 63 bytes, none of `/\. "$*<>:|?` and no NUL (MongoDB's rules),
/// no other control character and no invisible bidirectional formatting character.
pub fn validate_database_name(name: &str) -> Result<(), MongoError> {
    const FORBIDDEN: &[char] = &['/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?'];
    let reason = if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > MAX_DATABASE_LEN {
        Some(format!(
            "is {} bytes long, the limit is {MAX_DATABASE_LEN}",
            name.len()
        ))
    } else if let Some(reason) = unprintable(name) {
        Some(reason)
    } else {
        name.chars()
            .find(|c| FORBIDDEN.contains(c))
            .map(|c| format!("{} must not contain {c:?}", shown(name)))
    };
    match reason {
        Some(reason) => Err(MongoError::InvalidConfig {
            field: "database",
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a collection name: 1 to [`MAX_COLLECTION_LEN`] bytes, no `$`, no NUL or other control
/// character, no invisible bidirectional formatting character, not starting with `.` (MongoDB
/// refuses it) nor `system.` (reserved by MongoDB). `field` names it in the error.
///
/// Anything else is a name MongoDB keeps as it is: quotes, `;`, `--`, `%`, `_`, a `.` inside,
/// right-to-left letters and emoji are plain characters of a collection name, never code.
pub fn validate_collection_name(field: &'static str, name: &str) -> Result<(), MongoError> {
    let reason = if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > MAX_COLLECTION_LEN {
        Some(format!(
            "is {} bytes long, the limit is {MAX_COLLECTION_LEN}",
            name.len()
        ))
    } else if let Some(reason) = unprintable(name) {
        Some(reason)
    } else if name.contains('$') {
        Some(format!("{} must not contain '$'", shown(name)))
    } else if name.starts_with('.') {
        Some(format!("{} must not start with '.'", shown(name)))
    } else if name.starts_with("system.") {
        Some(format!("{} is reserved by MongoDB (system.*)", shown(name)))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(MongoError::InvalidConfig { field, reason }),
        None => Ok(()),
    }
}

/// Fluent configuration of a [`MongoEventStore`].
///
/// ```no_run
/// use std::time::Duration;
/// use interlock_mongodb::MongoEventStore;
/// # async fn run() -> Result<(), interlock_mongodb::MongoError> {
/// let store = MongoEventStore::builder("mongodb://db1,db2,db3/?replicaSet=rs0")
///     .database("billing")
///     .collection_prefix("billing_")
///     .poll_interval(Duration::from_millis(250))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MongoEventStoreBuilder {
    config: MongoConfiguration,
}

impl MongoEventStoreBuilder {
    /// A builder with the defaults of [`MongoConfiguration::new`].
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            config: MongoConfiguration::new(uri),
        }
    }

    /// Sets the database holding the store's collections.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.config.database = database.into();
        self
    }

    /// Sets every collection name.
    pub fn collections(mut self, collections: CollectionNames) -> Self {
        self.config.collections = collections;
        self
    }

    /// Uses the default collection names with another prefix (see
    /// [`CollectionNames::with_prefix`]).
    pub fn collection_prefix(mut self, prefix: &str) -> Self {
        self.config.collections = CollectionNames::with_prefix(prefix);
        self
    }

    /// Sets the fallback polling interval of subscriptions.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }

    /// Sets how many events a subscription reads per query while catching up.
    pub fn subscription_batch(mut self, batch: usize) -> Self {
        self.config.subscription_batch = batch;
        self
    }

    /// Sets how long an append retries transient transaction errors.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.config.transaction_timeout = timeout;
        self
    }

    /// Sets how long an operation waits for a suitable server.
    pub fn server_selection_timeout(mut self, timeout: Duration) -> Self {
        self.config.server_selection_timeout = timeout;
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> &MongoConfiguration {
        &self.config
    }

    /// Connects, checks the server, creates the indexes. Must run inside a tokio runtime.
    pub async fn connect(self) -> Result<MongoEventStore, MongoError> {
        MongoEventStore::connect_with(self.config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_are_checked() {
        for ok in ["events", "a.b", "ünï", "x y", &"c".repeat(100)] {
            assert!(validate_collection_name("c", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ev$nts",
            "$cmd",
            "a\0b",
            "system.users",
            ".events",
            "a\nb",
            "\u{202E}stneve",
            "ev\u{2066}ents",
            &"c".repeat(101),
        ] {
            let err = validate_collection_name("collections.events", bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    MongoError::InvalidConfig {
                        field: "collections.events",
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn database_names_are_checked() {
        assert!(validate_database_name("interlock_test").is_ok());
        for bad in [
            "",
            "a.b",
            "a/b",
            "a b",
            "a$b",
            "a\0b",
            "x\"y",
            "a\tb",
            "\u{202E}db",
            &"d".repeat(64),
        ] {
            assert!(validate_database_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn collection_names_must_differ() {
        let mut names = CollectionNames::default();
        names.streams = names.events.clone();
        let err = names.check().unwrap_err();
        assert!(err.to_string().contains("collections.streams"), "{err}");
    }

    #[test]
    fn passwords_are_not_shown() {
        let config = MongoConfiguration::new("mongodb://u:secret@h:27017/?replicaSet=rs0");
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("h:27017"), "{shown}");
    }
}
