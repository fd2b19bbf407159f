//! Time as the protocol sees it: milliseconds since the Unix epoch, passed in by the caller.

use serde::{Deserialize, Serialize};

/// A point in time, in milliseconds since 1970-01-01T00:00:00Z (UTC).
///
/// The protocol never reads a clock: callers pass `now` in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch (used by directory genesis events, whose bytes must be the same on every
    /// node).
    pub const EPOCH: Timestamp = Timestamp(0);
    /// The latest representable time.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// A timestamp from milliseconds since the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `millis`, saturating at [`Timestamp::MAX`].
    pub const fn saturating_add_millis(self, millis: u64) -> Self {
        Timestamp(self.0.saturating_add(millis))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
