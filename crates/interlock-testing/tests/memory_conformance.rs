//! The conformance suite on the in-memory reference store.

interlock_testing::event_store_conformance!(async { interlock_runtime::InMemoryEventStore::new() });
