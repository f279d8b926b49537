//! The reliability suite on the in-memory reference store. (Truncated bytes in storage cannot
//! exist here: every way into the in-memory store validates JSON, so there is no corrupter.)

interlock_testing::reliability_suite!(async { interlock_runtime::InMemoryEventStore::new() });
