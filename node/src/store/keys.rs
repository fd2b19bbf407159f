//! Big-endian binary keys, so that sled's byte order is the order we want.

use threadline_protocol::{EventId, ScopeId};

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
