//! A lost acknowledgement: the connection drops when the commit is sent (a server fail point),
//! and the append still ends with exactly one copy of its events. Its own test binary, so its
//! fail point never meets another test's commit on the server this binary starts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use interlock_core::{EventStore, ExpectedVersion, Position, StreamId};
use interlock_testing::conformance::test_events;
use mongodb::bson::doc;

#[tokio::test]
async fn a_commit_whose_connection_drops_is_resolved_without_duplicates() {
    let Some(config) = support::config() else {
        return;
    };
    // The fail point only hits clients with this application name (on a shared server too).
    let app = format!("lost-ack-{}", &config.database[4..]);
    let mut config = config;
    config.uri = if config.uri.contains('?') {
        format!("{}&appName={app}", config.uri)
    } else {
        format!("{}/?appName={app}", config.uri.trim_end_matches('/'))
    };
    let store = interlock_mongodb::MongoEventStore::connect_with(config)
        .await
        .unwrap();
    let armed = store
        .client()
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": { "times": 1 },
            "data": {
                "failCommands": ["commitTransaction"],
                "closeConnection": true,
                "appName": app.as_str(),
            },
        })
        .await;
    if let Err(e) = armed {
        eprintln!("notice: skipping, the server has no failCommand fail point: {e}");
        return;
    }
    let stream = StreamId::new("Account", "lost-ack").unwrap();
    let batch = test_events(1, 3);
    let first = store
        .append(&stream, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!((first.first_version, first.last_version), (1, 3));
    assert!(
        !first.already_appended,
        "the commit retry belongs to this call"
    );
    let retried = store
        .append(&stream, ExpectedVersion::NoStream, batch)
        .await
        .unwrap();
    assert!(retried.already_appended);
    assert_eq!(retried.first_position, first.first_position);
    assert_eq!(store.read_all(Position::START, 10).await.unwrap().len(), 3);
    let _ = store
        .client()
        .database("admin")
        .run_command(doc! { "configureFailPoint": "failCommand", "mode": "off" })
        .await;
}
