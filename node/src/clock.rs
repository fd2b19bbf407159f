//! The node's clock: the only place that reads the system time.

use std::time::{SystemTime, UNIX_EPOCH};

use threadline_protocol::Timestamp;

/// Now, in protocol time. A clock before 1970 reads as the epoch.
pub fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis())
        .unwrap_or(0);
    Timestamp::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}
