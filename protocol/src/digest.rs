//! Domain separation for signatures and hashes.
//!
//! Every signature and every hash in the protocol is taken over
//! `domain || 0x00 || canonical bytes`, where `domain` is one of the ASCII strings below. A
//! signature made for one purpose therefore never verifies for another, and a hash of one kind
//! of value never collides with a hash of another by construction.

use sha2::{Digest as _, Sha256};

/// What a signature or a hash is for. The string of each is part of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Domain {
    /// Signature over an event header.
    EventSignature,
    /// Signature over a certificate body.
    CertificateSignature,
    /// Hash of a signed header: the event id.
    EventId,
    /// Hash of an event's content (the `v1` fields).
    Content,
    /// Hash of an event's content with a subject or an original (the `v2` fields).
    ContentV2,
    /// Hash of an event's content with a message template (all fields).
    ContentV3,
    /// Hash of a thread's derived state.
    ThreadState,
    /// Hash of a directory's derived state.
    DirectoryState,
    /// Digest of a set of log summaries (replication).
    SyncDigest,
    /// Signature over a contact export's manifest.
    ExportManifest,
}

impl Domain {
    /// The domain string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Domain::EventSignature => "threadline/event/v1",
            Domain::CertificateSignature => "threadline/cert/v1",
            Domain::EventId => "threadline/event-id/v1",
            Domain::Content => "threadline/content/v1",
            Domain::ContentV2 => "threadline/content/v2",
            Domain::ContentV3 => "threadline/content/v3",
            Domain::ThreadState => "threadline/thread-state/v1",
            Domain::DirectoryState => "threadline/directory-state/v1",
            Domain::SyncDigest => "threadline/sync-digest/v1",
            Domain::ExportManifest => "threadline/export/v1",
        }
    }
}

/// `domain || 0x00 || bytes`: what is actually signed.
pub fn separated(domain: Domain, bytes: &[u8]) -> Vec<u8> {
    let tag = domain.as_str().as_bytes();
    let mut out = Vec::with_capacity(tag.len() + 1 + bytes.len());
    out.extend_from_slice(tag);
    out.push(0);
    out.extend_from_slice(bytes);
    out
}

/// SHA-256 of `domain || 0x00 || bytes`.
pub fn sha256(domain: Domain, bytes: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(domain.as_str().as_bytes());
    hasher.update([0u8]);
    hasher.update(bytes);
    hasher.finalize().into()
}

/// [`sha256`] over the concatenation of `parts`, without building it.
pub fn sha256_parts(domain: Domain, parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(domain.as_str().as_bytes());
    hasher.update([0u8]);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separation_prefixes_the_domain_and_a_zero_byte() {
        assert_eq!(
            separated(Domain::EventSignature, b"ab"),
            b"threadline/event/v1\0ab"
        );
    }

    #[test]
    fn domains_give_different_hashes_for_the_same_bytes() {
        assert_ne!(sha256(Domain::EventId, b"x"), sha256(Domain::Content, b"x"));
    }
}
