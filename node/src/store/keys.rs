//! Big-endian binary keys, so that sled's byte order is the order we want.

use threadline_protocol::{
    channel::Handle,
    event::{Direction, EventKind, ThreadKind},
    id::BlobHash,
    name::ExternalId,
    ChannelKind, Content, EventId, ScopeId,
};

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

/// The scope and event id of a [`log_key`].
pub fn split_log_key(key: &[u8]) -> Option<(ScopeId, EventId)> {
    let scope_bytes: [u8; 32] = key.get(1..33)?.try_into().ok()?;
    let id: [u8; 32] = key.get(33..)?.try_into().ok()?;
    let scope = match key.first()? {
        0 => ScopeId::Directory(threadline_protocol::OrgId(
            threadline_protocol::PublicKey::from_bytes(&scope_bytes).ok()?,
        )),
        1 => ScopeId::Thread(threadline_protocol::ThreadId::from_bytes(scope_bytes)),
        _ => return None,
    };
    Some((scope, EventId::from_bytes(id)))
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

/// `blob ‖ scope ‖ event id`: an event that refers to a blob.
pub fn blob_ref_key(blob: &BlobHash, scope: &ScopeId, id: &EventId) -> [u8; 97] {
    let mut key = [0u8; 97];
    key[..32].copy_from_slice(blob.as_bytes());
    key[32..].copy_from_slice(&log_key(scope, id));
    key
}

/// `channel ‖ SHA-256(sender's address ‖ 0 ‖ external id)`: the key that makes an inbound
/// message's resubmission idempotent. The sender is part of it because an app's message id is
/// only the sender's to choose (a mail's Message-ID): the same id from someone else is another
/// message. Hashed, because both can carry personal data that erasure must not leave behind.
pub fn external_id_key(channel: ChannelKind, sender: &Handle, external: &ExternalId) -> Vec<u8> {
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut hasher, sender.address().as_bytes());
    sha2::Digest::update(&mut hasher, [0u8]);
    sha2::Digest::update(&mut hasher, external.as_str().as_bytes());
    let mut key = vec![channel_key(channel)];
    key.extend_from_slice(&sha2::Digest::finalize(hasher));
    key
}

/// The [`external_id_key`] of an inbound message that names an external id and its sender.
pub fn external_id_key_of(kind: &EventKind, content: Option<&Content>) -> Option<Vec<u8>> {
    let (EventKind::Thread(ThreadKind::Message {
        direction: Direction::Inbound { channel },
    })
    | EventKind::Thread(ThreadKind::AutoReply { channel })) = kind
    else {
        return None;
    };
    let content = content?;
    Some(external_id_key(
        *channel,
        content.handle.as_ref()?,
        content.external_id.as_ref()?,
    ))
}
