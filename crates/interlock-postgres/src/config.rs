//! How a store is connected: URL, schema, pool, polling.

use std::time::Duration;

use crate::error::PgError;
use crate::store::PgEventStore;

/// The longest schema name PostgreSQL keeps without truncating it (`NAMEDATALEN - 1`).
const MAX_SCHEMA_LEN: usize = 63;

/// Everything [`PgEventStore::connect_with`] needs. Start from [`PgConfig::new`] and change
/// fields, or use the fluent [`PgEventStoreBuilder`].
#[derive(Clone)]
#[non_exhaustive]
pub struct PgConfig {
    /// A libpq-style URL, `postgres://user:password@host:port/database?sslmode=...`.
    pub url: String,
    /// The schema holding every table of the store; created with its tables at connect. Only
    /// `[a-z_][a-z0-9_]{0,62}` is accepted (and not PostgreSQL's own `pg_*` and
    /// `information_schema`), so the name never needs escaping; see [`validate_schema_name`].
    pub schema: String,
    /// Most pooled connections. The LISTEN connection that wakes subscriptions takes one of them.
    pub max_connections: u32,
    /// How long a query waits for a free connection (or a new one) before failing with
    /// [`StoreError::Unavailable`](interlock_core::StoreError::Unavailable).
    pub acquire_timeout: Duration,
    /// Subscriptions re-poll at least this often even without a notification: notifications
    /// can be lost (the LISTEN connection dropped), and a reader waiting behind an open
    /// transaction has to look again when it ends, which sends no notification.
    pub poll_interval: Duration,
    /// How long `read_all` and `head_position` wait, at most, for transactions older than the
    /// newest committed event to finish, so that a writer reads its own appends in the global
    /// order. After that they return what is safe to read (never more) and a later read
    /// returns the rest.
    pub horizon_wait: Duration,
    /// Events a subscription reads per query while catching up.
    pub subscription_batch: usize,
    /// The longest the store waits for the server's answer to one query (to a whole append),
    /// on top of waiting for a connection. A server that stops answering without closing the
    /// connection (a frozen process, a lost network path) would otherwise make a call wait
    /// for the operating system's TCP timeout, many minutes. When it passes, the call fails
    /// with [`StoreError::Unavailable`](interlock_core::StoreError::Unavailable): for an
    /// append the outcome is then unknown, and retrying it with the same event ids is
    /// idempotent.
    /// `None` waits as long as the connection stays open. Keep it longer than appends may
    /// wait for each other's locks on a busy stream.
    pub operation_timeout: Option<Duration>,
    /// Whether appends wake subscriptions at once: this process's directly, other processes'
    /// through a `NOTIFY` sent after the commit. Without it, subscriptions still see every
    /// event, within [`poll_interval`](Self::poll_interval).
    pub notify: bool,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show only that there is one.
        f.debug_struct("PgConfig")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("horizon_wait", &self.horizon_wait)
            .field("subscription_batch", &self.subscription_batch)
            .field("operation_timeout", &self.operation_timeout)
            .field("notify", &self.notify)
            .finish()
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl PgConfig {
    /// The defaults for `url`: schema `interlock`, 10 connections, 5 s acquire timeout,
    /// 500 ms fallback polling, 5 s horizon wait, subscriptions reading 1024 events at a time,
    /// 30 s operation timeout, notifications on.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "interlock".to_owned(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(500),
            horizon_wait: Duration::from_secs(5),
            subscription_batch: 1024,
            operation_timeout: Some(Duration::from_secs(30)),
            notify: true,
        }
    }

    pub(crate) fn check(&self) -> Result<(), PgError> {
        let bad = |field: &'static str, reason: &str| {
            Err(PgError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        validate_schema_name(&self.schema)?;
        if self.url.is_empty() {
            return bad("url", "must not be empty");
        }
        if self.max_connections < 2 {
            return bad(
                "max_connections",
                "must be at least 2 (one is the LISTEN connection)",
            );
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval", "must be positive");
        }
        if self.subscription_batch == 0 {
            return bad("subscription_batch", "must be at least 1");
        }
        if self.operation_timeout.is_some_and(|t| t.is_zero()) {
            return bad("operation_timeout", "must be positive (or None)");
        }
        Ok(())
    }
}

/// Checks a schema name: 1 to 63 characters of `[a-z0-9_]`, not starting with a digit, not
/// `pg_*` nor `information_schema` (PostgreSQL's own). Anything else is refused before any
/// statement runs, as [`PgError::InvalidConfig`] for `schema`: quotes, `;`, `--`, `%`, NUL,
/// upper case (which PostgreSQL folds, unless quoted), names longer than PostgreSQL keeps
/// (which it would cut to 63 bytes, onto another schema), right-to-left text and emoji.
pub fn validate_schema_name(name: &str) -> Result<(), PgError> {
    let reason = if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > MAX_SCHEMA_LEN {
        Some(format!(
            "is {} bytes long, the limit is {MAX_SCHEMA_LEN}",
            name.len()
        ))
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Some(format!(
            "{:?} may only contain a-z, 0-9 and _",
            name.chars().take(64).collect::<String>()
        ))
    } else if name.as_bytes()[0].is_ascii_digit() {
        Some(format!("{name:?} must not start with a digit"))
    } else if name.starts_with("pg_") {
        Some(format!("{name:?} is reserved by PostgreSQL (pg_*)"))
    } else if name == "information_schema" {
        Some(format!("{name:?} is PostgreSQL's own schema"))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PgError::InvalidConfig {
            field: "schema",
            reason,
        }),
        None => Ok(()),
    }
}

/// Fluent configuration of a [`PgEventStore`].
///
/// ```no_run
/// use std::time::Duration;
/// use interlock_postgres::PgEventStore;
/// # async fn run() -> Result<(), interlock_postgres::PgError> {
/// let store = PgEventStore::builder("postgres://app@db.internal/app")
///     .schema("billing_events")
///     .max_connections(20)
///     .poll_interval(Duration::from_millis(250))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PgEventStoreBuilder {
    config: PgConfig,
}

impl PgEventStoreBuilder {
    /// A builder with the defaults of [`PgConfig::new`].
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            config: PgConfig::new(url),
        }
    }

    /// Sets the schema holding the store's tables.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.config.schema = schema.into();
        self
    }

    /// Sets the most pooled connections (at least 2).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.config.max_connections = max;
        self
    }

    /// Sets how long a query waits for a connection.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.config.acquire_timeout = timeout;
        self
    }

    /// Sets the fallback polling interval of subscriptions.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }

    /// Sets how long reads wait for older transactions before returning what is safe.
    pub fn horizon_wait(mut self, wait: Duration) -> Self {
        self.config.horizon_wait = wait;
        self
    }

    /// Sets how many events a subscription reads per query while catching up.
    pub fn subscription_batch(mut self, batch: usize) -> Self {
        self.config.subscription_batch = batch;
        self
    }

    /// Sets how long one call waits for the server's answer (`None`: as long as the
    /// connection stays open).
    pub fn operation_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.operation_timeout = timeout;
        self
    }

    /// Turns the `NOTIFY` sent by each append on or off.
    pub fn notify(mut self, notify: bool) -> Self {
        self.config.notify = notify;
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    /// Connects, creates or migrates the schema, and starts the LISTEN task. Must run inside
    /// a tokio runtime.
    pub async fn connect(self) -> Result<PgEventStore, PgError> {
        PgEventStore::connect_with(self.config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["interlock", "_x", "a1_b2", &"s".repeat(63)] {
            assert!(validate_schema_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Upper",
            "1abc",
            "pg_catalog",
            "information_schema",
            "a-b",
            "a b",
            "x\"; DROP SCHEMA public; --",
            "ünï",
            "a\0b",
            &"s".repeat(64),
        ] {
            let err = validate_schema_name(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    PgError::InvalidConfig {
                        field: "schema",
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_zero_operation_timeout_is_refused() {
        let mut config = PgConfig::new("postgres://h/db");
        config.operation_timeout = Some(Duration::ZERO);
        assert!(matches!(
            config.check(),
            Err(PgError::InvalidConfig {
                field: "operation_timeout",
                ..
            })
        ));
        config.operation_timeout = None;
        assert!(config.check().is_ok());
    }

    #[test]
    fn passwords_are_not_shown() {
        let config = PgConfig::new("postgres://u:secret@h/db");
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("h/db"), "{shown}");
    }
}
