//! Checking stored event schemas up front, and rewriting stored events explicitly.
//!
//! Reads upcast on the fly and never change the store. When old shapes should go for good, a
//! migration rewrites them: run it with `dry_run` first to see what would change; every rewrite
//! is logged.

use std::collections::BTreeMap;

use interlock_core::{EventRewrite, Position, StreamId};
use serde_json::Value;

use crate::engine::Application;
use crate::error::Error;

/// What the application can make of one stored `(type name, schema version)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaStatus {
    /// Stored at the version the code reads.
    Current,
    /// Upcast on read to the version the code reads.
    Upcast {
        /// The type name after upcasting.
        to_type: String,
        /// The version after upcasting.
        to_version: u32,
    },
    /// Upcasting ends at a version no handler reads: loads of these events fail.
    NoPath {
        /// Where the upcasters stop.
        reaches: (String, u32),
        /// The version the code reads.
        known: u32,
    },
    /// An upcaster fails on a sample payload.
    UpcastFails(String),
    /// No aggregate or processor of this application reads this type (fine for events that
    /// belong to other applications; a problem if an aggregate's stream holds them).
    Unread,
}

impl SchemaStatus {
    /// Whether loading such events fails.
    pub fn is_problem(&self) -> bool {
        matches!(
            self,
            SchemaStatus::NoPath { .. } | SchemaStatus::UpcastFails(_)
        )
    }
}

/// One stored `(type name, schema version)` with how many events have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaReport {
    /// The stored type name.
    pub event_type: String,
    /// The stored schema version.
    pub schema_version: u32,
    /// How many stored events have it.
    pub count: u64,
    /// What reading them does.
    pub status: SchemaStatus,
}

/// One event a migration changes (or would change, in a dry run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventChange {
    /// The event's stream.
    pub stream: StreamId,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its position.
    pub position: Position,
    /// Stored type and version before.
    pub from: (String, u32),
    /// Stored type and version after.
    pub to: (String, u32),
}

/// What a migration did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// `true`: nothing was written.
    pub dry_run: bool,
    /// Events read.
    pub scanned: u64,
    /// Events rewritten (or that would be).
    pub changed: u64,
    /// The first changes, at most [`MigrationReport::SAMPLE`] of them.
    pub changes: Vec<EventChange>,
}

impl MigrationReport {
    /// How many changes a report lists.
    pub const SAMPLE: usize = 1000;
}

const SCAN_BATCH: usize = 1000;

impl Application {
    /// Scans the store and reports every stored `(type name, schema version)`: how many events
    /// have it and whether this application can read them (current, upcast, or not at all).
    /// Run it at deployment to find missing upcasters before a load fails.
    pub async fn check_event_schemas(&self) -> Result<Vec<SchemaReport>, Error> {
        let mut found: BTreeMap<(String, u32), (u64, Value)> = BTreeMap::new();
        let mut after = Position::START;
        loop {
            let batch = self.engine.store.read_all(after, SCAN_BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = last.position;
            for event in &batch {
                let entry = found
                    .entry((event.event_type.clone(), event.schema_version))
                    .or_insert_with(|| {
                        let sample = serde_json::from_slice(&event.payload).unwrap_or(Value::Null);
                        (0, sample)
                    });
                entry.0 += 1;
            }
        }
        Ok(found
            .into_iter()
            .map(|((event_type, schema_version), (count, sample))| {
                let status = self.schema_status(&event_type, schema_version, sample);
                SchemaReport {
                    event_type,
                    schema_version,
                    count,
                    status,
                }
            })
            .collect())
    }

    fn schema_status(&self, event_type: &str, version: u32, sample: Value) -> SchemaStatus {
        let (to_type, to_version, _) = match self
            .engine
            .upcasters
            .upcast_json(event_type, version, sample)
        {
            Ok(done) => done,
            Err(e) => return SchemaStatus::UpcastFails(e.to_string()),
        };
        let Some(&known) = self.engine.known_events.get(to_type.as_str()) else {
            return SchemaStatus::Unread;
        };
        if to_version != known {
            SchemaStatus::NoPath {
                reaches: (to_type, to_version),
                known,
            }
        } else if to_type == event_type && to_version == version {
            SchemaStatus::Current
        } else {
            SchemaStatus::Upcast {
                to_type,
                to_version,
            }
        }
    }

    /// Rewrites every stored event that an upcaster applies to into its upcast shape (type name,
    /// version, payload), keeping ids, streams, versions and positions. With `dry_run` nothing is
    /// written and the report says what would change. `on_progress` gets the number of events
    /// scanned after each batch.
    pub async fn migrate_events(
        &self,
        dry_run: bool,
        mut on_progress: impl FnMut(u64) + Send,
    ) -> Result<MigrationReport, Error> {
        let mut report = MigrationReport {
            dry_run,
            scanned: 0,
            changed: 0,
            changes: Vec::new(),
        };
        let upcasters = &self.engine.upcasters;
        let mut after = Position::START;
        loop {
            let batch = self.engine.store.read_all(after, SCAN_BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = last.position;
            for event in &batch {
                report.scanned += 1;
                if !upcasters.applies_to(&event.event_type, event.schema_version) {
                    continue;
                }
                let upcast = upcasters.upcast(event)?;
                let change = EventChange {
                    stream: event.stream_id.clone(),
                    stream_version: event.stream_version,
                    position: event.position,
                    from: (event.event_type.clone(), event.schema_version),
                    to: (upcast.event_type.clone(), upcast.schema_version),
                };
                if !dry_run {
                    self.engine
                        .store
                        .rewrite_event(EventRewrite {
                            event_id: event.event_id,
                            stream_id: event.stream_id.clone(),
                            event_type: upcast.event_type.clone(),
                            schema_version: upcast.schema_version,
                            payload: upcast.payload.clone(),
                        })
                        .await?;
                    tracing::info!(
                        stream = %change.stream,
                        version = change.stream_version,
                        from = ?change.from,
                        to = ?change.to,
                        "rewrote a stored event"
                    );
                }
                report.changed += 1;
                if report.changes.len() < MigrationReport::SAMPLE {
                    report.changes.push(change);
                }
            }
            on_progress(report.scanned);
        }
        Ok(report)
    }
}
