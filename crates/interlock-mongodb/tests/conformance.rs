//! The shared conformance suites, against a fresh database per test.
//!
//! Needs a MongoDB-wire server: `MONGODB_URI`, or the SecantusDB test server this binary starts
//! (see `support`). Without either it prints a notice and exits successfully, unless
//! `INTERLOCK_REQUIRE_MONGO=1`.

mod support;

interlock_testing::event_store_conformance!(support::store_or_exit());
interlock_testing::side_store_conformance!(support::store_or_exit());
