//! Misuse of the macros fails to compile with a message that says what to do.
//!
//! Regenerate the expected messages with `TRYBUILD=overwrite cargo test -p interlock --test ui`
//! and read them before committing.

#[test]
fn misuse_is_reported_clearly() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
