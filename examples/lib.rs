//! Holds the examples; see `bank/main.rs`.
