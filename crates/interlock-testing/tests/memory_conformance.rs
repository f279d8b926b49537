//! The conformance suites (events and side stores) on the in-memory reference store.

interlock_testing::event_store_conformance!(async { interlock_runtime::InMemoryEventStore::new() });
interlock_testing::side_store_conformance!(async { interlock_runtime::InMemoryEventStore::new() });
