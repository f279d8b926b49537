//! The shared conformance suites, against a fresh schema per test.
//!
//! Needs the server at `INTERLOCK_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! without one this binary prints a notice and exits successfully, unless
//! `INTERLOCK_REQUIRE_PG=1`.

mod common;

interlock_testing::event_store_conformance!(common::store_or_exit());
interlock_testing::side_store_conformance!(common::store_or_exit());
