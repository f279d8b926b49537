//! [`MongoEventStore`]: connection, reads, and the [`EventStore`] implementation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use interlock_core::{
    AppendNotifier, AppendResult, EventRewrite, EventStore, EventSubscription, ExpectedVersion,
    NewEvent, Position, RecordedEvent, SideStores, StoreError, StreamId, StreamInfo,
    ValidationError, poll_subscription, validate_rewrite,
};
use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, DatabaseOptions, ReadConcern, WriteConcern};
use mongodb::{Client, Collection, Database};

use crate::codec::{self, to_i64};
use crate::config::{MongoConfiguration, MongoEventStoreBuilder};
use crate::error::{MongoError, backend, store_error};
use crate::schema;

/// How many times, and how long apart, a read that finds a hole in the positions looks again
/// before reporting it (see the crate docs: a hole is never skipped).
const GAP_RETRIES: u32 = 20;
const GAP_PAUSE: Duration = Duration::from_millis(25);

/// The MongoDB event store. Also implements every side store (snapshots, checkpoints, saga
/// state, dead letters, idempotency keys) in the same database.
///
/// Cheap to clone: clones share one client (one connection pool per server) and one
/// fallback-polling task, which stops when the last clone and subscription are dropped.
#[derive(Clone)]
pub struct MongoEventStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) database: Database,
    pub(crate) events: Collection<Document>,
    pub(crate) streams: Collection<Document>,
    pub(crate) counters: Collection<Document>,
    pub(crate) snapshots: Collection<Document>,
    pub(crate) checkpoints: Collection<Document>,
    pub(crate) sagas: Collection<Document>,
    pub(crate) dead_letters: Collection<Document>,
    pub(crate) idempotency: Collection<Document>,
    pub(crate) config: MongoConfiguration,
    pub(crate) notifier: Arc<AppendNotifier>,
    /// The largest document the server accepts (`maxBsonObjectSize` from `hello`).
    pub(crate) max_document_len: usize,
    /// Taken by each append of this process for its whole transaction: appends serialise on
    /// the counter document anyway, and queueing here instead of conflicting there saves the
    /// aborted attempts and back-off sleeps. Appends of other processes still conflict, and
    /// are retried.
    pub(crate) append_turn: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for MongoEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoEventStore")
            .field("database", &self.inner.config.database)
            .field("events", &self.inner.config.collections.events)
            .finish_non_exhaustive()
    }
}

impl MongoEventStore {
    /// Connects to `uri` with the defaults of [`MongoConfiguration::new`] (database
    /// `interlock`).
    pub async fn connect(uri: &str) -> Result<Self, MongoError> {
        Self::connect_with(MongoConfiguration::new(uri)).await
    }

    /// A builder for the other settings.
    pub fn builder(uri: impl Into<String>) -> MongoEventStoreBuilder {
        MongoEventStoreBuilder::new(uri)
    }

    /// Connects with `config`: checks it, asks the server `hello` (a standalone server is
    /// refused with [`MongoError::ReplicaSetRequired`]), creates the collections' indexes and
    /// counters, and starts the fallback-polling task. Must run inside a tokio runtime.
    pub async fn connect_with(config: MongoConfiguration) -> Result<Self, MongoError> {
        config.check()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            MongoError::Store(backend(
                "the mongodb store must be connected inside a tokio runtime",
            ))
        })?;
        let mut options = ClientOptions::parse(config.uri.as_str())
            .await
            .map_err(|e| {
                if crate::error::is_unavailable(&e) {
                    MongoError::Store(store_error(e))
                } else {
                    MongoError::InvalidConfig {
                        field: "uri",
                        reason: e.to_string(),
                    }
                }
            })?;
        options
            .app_name
            .get_or_insert_with(|| "interlock".to_owned());
        options.server_selection_timeout = Some(config.server_selection_timeout);
        let address = options
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let client = Client::with_options(options)?;
        let max_document_len = schema::check_server(&client, &address).await?;

        // Majority reads and writes: an acknowledged append survives a failover, and a reader
        // never sees an event that a failover could roll back (and whose position another
        // event could then take).
        let database = client.database_with_options(
            &config.database,
            DatabaseOptions::builder()
                .read_concern(ReadConcern::majority())
                .write_concern(WriteConcern::majority())
                .build(),
        );
        let names = &config.collections;
        let collection = |name: &str| database.collection::<Document>(name);
        let inner = Inner {
            events: collection(&names.events),
            streams: collection(&names.streams),
            counters: collection(&names.counters),
            snapshots: collection(&names.snapshots),
            checkpoints: collection(&names.checkpoints),
            sagas: collection(&names.sagas),
            dead_letters: collection(&names.dead_letters),
            idempotency: collection(&names.idempotency_keys),
            notifier: Arc::new(AppendNotifier::new()),
            max_document_len,
            append_turn: tokio::sync::Mutex::new(()),
            client,
            database,
            config,
        };
        schema::prepare(&inner).await?;
        start_fallback_polling(&runtime, &inner.notifier, inner.config.poll_interval);
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The driver's client, for work of your own on the same deployment.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The database holding the store's collections (with majority read and write concern).
    pub fn database(&self) -> &Database {
        &self.inner.database
    }

    /// The configuration the store was connected with.
    pub fn config(&self) -> &MongoConfiguration {
        &self.inner.config
    }

    /// One read of `read_all`: the events after `after`, cut at the first hole in the
    /// positions. `Err(position)` when the very first expected position is missing although
    /// later ones exist.
    async fn read_all_once(
        &self,
        after: u64,
        limit: i64,
    ) -> Result<Result<Vec<RecordedEvent>, u64>, StoreError> {
        let docs: Vec<Document> = self
            .inner
            .events
            .find(doc! { "_id": { "$gt": to_i64(after) } })
            .sort(doc! { "_id": 1 })
            .limit(limit)
            .await
            .map_err(store_error)?
            .try_collect()
            .await
            .map_err(store_error)?;
        let mut events = Vec::with_capacity(docs.len());
        for (expected, doc) in (after + 1..).zip(&docs) {
            let event = codec::event(doc)?;
            if event.position.minor() != expected {
                break;
            }
            events.push(event);
        }
        if events.is_empty() && !docs.is_empty() {
            return Ok(Err(after + 1));
        }
        Ok(Ok(events))
    }
}

/// Wakes subscriptions every `interval` even without a local append, for appends made by other
/// processes. The task holds only a weak reference: it ends when the store and every
/// subscription are gone.
fn start_fallback_polling(
    runtime: &tokio::runtime::Handle,
    notifier: &Arc<AppendNotifier>,
    interval: Duration,
) {
    let notifier = Arc::downgrade(notifier);
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match notifier.upgrade() {
                Some(notifier) => notifier.notify(),
                None => return,
            }
        }
    });
}

#[async_trait]
impl EventStore for MongoEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let result = crate::append::append(self, stream, expected, &events).await;
        if matches!(result, Ok(ref r) if !r.already_appended) {
            self.inner.notifier.notify();
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let from = from.max(1);
        let to = to.map_or(i64::MAX, to_i64);
        if from > i64::MAX as u64 || to_i64(from) > to {
            return Ok(Vec::new());
        }
        let mut filter = codec::stream_filter(stream);
        filter.insert("version", doc! { "$gte": to_i64(from), "$lte": to });
        let docs: Vec<Document> = self
            .inner
            .events
            .find(filter)
            .sort(doc! { "version": 1 })
            .await
            .map_err(store_error)?
            .try_collect()
            .await
            .map_err(store_error)?;
        docs.iter().map(codec::event).collect()
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // Positions of this store have no major part and stay below i64::MAX: anything else
        // lies after every event.
        if limit == 0 || after.major() != 0 || after.minor() >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut tries = 0;
        loop {
            match self.read_all_once(after.minor(), limit).await? {
                Ok(events) => return Ok(events),
                Err(missing) if tries >= GAP_RETRIES => {
                    return Err(backend(format!(
                        "the event at position {missing} is missing although later ones exist \
                         (collection {}): readers stop here instead of skipping it",
                        self.inner.config.collections.events
                    )));
                }
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(GAP_PAUSE).await;
                }
            }
        }
    }

    fn subscribe_all(&self, after: Position) -> EventSubscription {
        poll_subscription(
            self.clone(),
            self.inner.notifier.clone(),
            after,
            self.inner.config.subscription_batch,
        )
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64, StoreError> {
        crate::append::stream_version(self, stream).await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>, StoreError> {
        let doc = self
            .inner
            .streams
            .find_one(codec::stream_filter(stream))
            .await
            .map_err(store_error)?;
        doc.as_ref().map(codec::stream_info).transpose()
    }

    async fn list_streams(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = match after {
            None => doc! {},
            Some(after) => doc! { "$or": [
                { "category": { "$gt": after.category() } },
                { "category": after.category(), "stream_id": { "$gt": after.id() } },
            ] },
        };
        // Strings compare by their UTF-8 bytes (no collation), the order of `StreamId`.
        let docs: Vec<Document> = self
            .inner
            .streams
            .find(filter)
            .sort(doc! { "category": 1, "stream_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(store_error)?
            .try_collect()
            .await
            .map_err(store_error)?;
        docs.iter().map(codec::stream_info).collect()
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        let last = self
            .inner
            .events
            .find_one(doc! {})
            .sort(doc! { "_id": -1 })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(store_error)?;
        match last {
            None => Ok(Position::START),
            Some(doc) => codec::Fields::new(&doc, "the last event")
                .u64("_id")
                .map(Position::from_sequence)
                .map_err(backend),
        }
    }

    /// Snapshots, checkpoints, saga state, dead letters, idempotency keys and the leases (with
    /// their fencing numbers) of partitioned processors live in the store's database, each in
    /// its collection of [`CollectionNames`](crate::CollectionNames).
    fn side_stores(&self) -> Option<SideStores> {
        Some(SideStores::from_backend(self.clone()).with_leases(self.clone()))
    }

    async fn rewrite_event(&self, rewrite: EventRewrite) -> Result<(), StoreError> {
        validate_rewrite(&rewrite)?;
        crate::append::check_document_len(
            self,
            &format!("event {}", rewrite.event_id),
            &rewrite.event_type,
            &rewrite.stream_id,
            rewrite.payload.len(),
            0,
        )?;
        let mut filter = codec::stream_filter(&rewrite.stream_id);
        filter.insert("event_id", codec::uuid(rewrite.event_id.as_uuid()));
        let done = self
            .inner
            .events
            .update_one(
                filter,
                doc! { "$set": {
                    "type": rewrite.event_type.as_str(),
                    "schema_version": i64::from(rewrite.schema_version),
                    "payload": codec::binary(&rewrite.payload),
                } },
            )
            .await
            .map_err(store_error)?;
        if done.matched_count == 0 {
            return Err(ValidationError::new(
                "event_id",
                format!(
                    "no event {} in stream {}",
                    rewrite.event_id, rewrite.stream_id
                ),
            )
            .into());
        }
        Ok(())
    }
}
