//! Big-endian binary keys, so that sled's byte order is the order we want.

use threadline_protocol::{dag::OrderKey, ScopeId, VerifiedEvent};

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

/// `scope ‖ depth BE ‖ author time BE ‖ id`: sorts like the protocol's linear order.
pub fn order_key(scope: &[u8; 33], event: &VerifiedEvent) -> Vec<u8> {
    let OrderKey {
        depth,
        author_time,
        id,
    } = OrderKey::of(event);
    let mut key = Vec::with_capacity(33 + 8 + 8 + 32);
    key.extend_from_slice(scope);
    key.extend_from_slice(&depth.to_be_bytes());
    key.extend_from_slice(&author_time.as_millis().to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}
