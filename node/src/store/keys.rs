//! Big-endian binary keys, so that sled's byte order is the order we want.

use threadline_protocol::{ChannelKind, EventId, ScopeId};

/// `0x00 ‖ org` or `0x01 ‖ thread id`.
pub fn scope_key(scope: &ScopeId) -> [u8; 33] {
    let mut key = [0u8; 33];
    match scope {
        ScopeId::Directory(org) => key[1..].copy_from_slice(org.0.as_bytes()),
        ScopeId::Thread(thread) => {
            key[0] = 1;
            key[1..].copy_from_slice(thread.as_bytes());
        }
    }
    key
}

/// `scope ‖ event id`.
pub fn log_key(scope: &ScopeId, id: &EventId) -> [u8; 65] {
    let mut key = [0u8; 65];
    key[..33].copy_from_slice(&scope_key(scope));
    key[33..].copy_from_slice(id.as_bytes());
    key
}

/// The one-byte key of a channel (its position in [`ChannelKind::ALL`]): the prefix of its
/// outbound queue.
pub fn channel_key(channel: ChannelKind) -> u8 {
    ChannelKind::ALL
        .iter()
        .position(|c| *c == channel)
        .and_then(|idx| u8::try_from(idx).ok())
        .unwrap_or(u8::MAX)
}
