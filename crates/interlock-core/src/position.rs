//! Global positions and stream versions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// A place in the store-wide order of events.
///
/// Positions are opaque, comparable tokens: a reader that has processed everything up to and
/// including a position asks for what comes after it. A position has two parts so that backends
/// whose commit order differs from their allocation order (PostgreSQL) can encode
/// `(transaction, sequence)`; single-writer backends use only the second part. Only the order is
/// meaningful: positions are neither dense nor counts.
///
/// [`Position::START`] sorts before every stored event.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Position {
    major: u64,
    minor: u64,
}

impl Position {
    /// The position before the first event: reading "after START" reads everything.
    pub const START: Position = Position { major: 0, minor: 0 };

    /// A position made of its two parts. Backends build positions; applications only store and
    /// compare them.
    pub const fn new(major: u64, minor: u64) -> Self {
        Self { major, minor }
    }

    /// A single-part position, as used by backends with one writer (in-memory, SQLite).
    pub const fn from_sequence(sequence: u64) -> Self {
        Self {
            major: 0,
            minor: sequence,
        }
    }

    /// The first part (a transaction id on backends that use one; 0 elsewhere).
    pub const fn major(&self) -> u64 {
        self.major
    }

    /// The second part (a sequence number).
    pub const fn minor(&self) -> u64 {
        self.minor
    }

    /// Whether this is [`Position::START`].
    pub const fn is_start(&self) -> bool {
        self.major == 0 && self.minor == 0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.major == 0 {
            write!(f, "{}", self.minor)
        } else {
            write!(f, "{}:{}", self.major, self.minor)
        }
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({self})")
    }
}

impl FromStr for Position {
    type Err = ValidationError;

    /// Parses the [`Display`](fmt::Display) form back: `"17"` or `"812:17"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ValidationError::new("position", format!("{s:?} is not a position"));
        match s.split_once(':') {
            None => s.parse().map(Position::from_sequence).map_err(|_| bad()),
            Some((major, minor)) => Ok(Position::new(
                major.parse().map_err(|_| bad())?,
                minor.parse().map_err(|_| bad())?,
            )),
        }
    }
}

/// What the writer believes the current version of a stream to be (optimistic concurrency).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version is.
    Any,
    /// The stream must not exist yet (it has no events).
    NoStream,
    /// The stream must exist, whatever its version.
    StreamExists,
    /// The stream's last event must have exactly this version (`Exact(0)` means "no events").
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream currently at `current` (0 = no events) satisfies this expectation.
    pub const fn is_satisfied_by(&self, current: u64) -> bool {
        match *self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::StreamExists => current > 0,
            ExpectedVersion::Exact(v) => v == current,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("an existing stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_major_then_minor() {
        assert!(Position::START < Position::from_sequence(1));
        assert!(Position::new(1, 0) > Position::from_sequence(u64::MAX));
        assert!(Position::new(2, 1) > Position::new(1, 9));
    }

    #[test]
    fn positions_round_trip_through_text() {
        for p in [
            Position::START,
            Position::from_sequence(42),
            Position::new(7, 3),
        ] {
            assert_eq!(p.to_string().parse::<Position>().unwrap(), p);
        }
        let err = "x:1".parse::<Position>().unwrap_err();
        assert_eq!(err.field(), "position");
    }

    #[test]
    fn expected_versions() {
        assert!(ExpectedVersion::Any.is_satisfied_by(5));
        assert!(ExpectedVersion::NoStream.is_satisfied_by(0));
        assert!(!ExpectedVersion::NoStream.is_satisfied_by(1));
        assert!(ExpectedVersion::StreamExists.is_satisfied_by(1));
        assert!(!ExpectedVersion::StreamExists.is_satisfied_by(0));
        assert!(ExpectedVersion::Exact(0).is_satisfied_by(0));
        assert!(!ExpectedVersion::Exact(3).is_satisfied_by(4));
    }
}
