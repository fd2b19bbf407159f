//! The messages nodes exchange to replicate logs, encoded with the same codec as events.
//!
//! Every message is a request or the answer to one. Each side of a connection pulls what it
//! lacks; neither sends a log the other may not share.
//!
//! # Protocol flow
//! 1. `Hello` → `Hello`: each side shows the org's certificate for its node key (the key the
//!    transport's handshake proved). A node with no certificate yet sends `Join` with an
//!    invite's secret instead and gets `Joined` with its new certificate.
//! 2. `Digest` → `Digest`: the count and [`summaries_digest`] of every log the two may share
//!    (a [`ScopeSummary`] each: event count and [`heads_digest`]). Equal: in sync, done.
//! 3. `Buckets` → `Buckets`: the digest of each of [`N_BUCKETS`] buckets (by the first byte of
//!    the scope's id); then `SummaryOf` the differing buckets → `Summary` of their logs.
//! 4. For each log whose summary differs, `Want` (the asker's heads, a depth, a count) →
//!    `Events` in linear order (parents first), at most [`MAX_FRAME_BYTES`] a frame; asked
//!    again with the new heads until `complete`.
//! 5. While connected, new events go as `Push` → `Ack`.
//! 6. Between nodes of different orgs that share threads, `Certificates` → `Ack` brings each
//!    the other org's certificates (a node forwards them to the nodes of its own org), so the
//!    other org's events in a shared thread can be authorised.
//!
//! 7. An event whose attachments the receiver lacks: `WantBlob` (the blob's hash, an offset)
//!    → `Blob` (at most [`MAX_BLOB_CHUNK_BYTES`] from that offset, and the blob's size), asked
//!    again from the next offset until whole; or `NoBlob` when the holder has none it may
//!    share. The receiver checks the whole blob against its hash.
//!
//! Any request may be answered `Refused`. Every event received goes through verification and
//! the auth rules like any other.

use serde::{Deserialize, Serialize};

use crate::cert::Certificate;
use crate::channel::ChannelKind;
use crate::codec::{self, DecodeError, EncodeError};
use crate::digest::{self, Domain};
use crate::event::{Event, ScopeId};
use crate::id::{BlobHash, EventId, StateHash};
use crate::key::PublicKey;

/// The largest sync frame (one encoded [`SyncMessage`]).
pub const MAX_FRAME_BYTES: usize = codec::MAX_MESSAGE_BYTES;

/// Most events asked for in one [`SyncMessage::Want`].
pub const MAX_EVENTS_PER_WANT: u32 = 4096;

/// The most bytes of a blob in one [`SyncMessage::Blob`].
pub const MAX_BLOB_CHUNK_BYTES: usize = 1024 * 1024;

/// One log's summary: enough to tell whether two nodes hold the same set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScopeSummary {
    /// The log.
    pub scope: ScopeId,
    /// Number of events held.
    pub n_events: u64,
    /// Digest of the sorted heads (see [`heads_digest`]).
    pub heads_digest: StateHash,
}

impl ScopeSummary {
    /// A summary.
    pub fn new(scope: ScopeId, n_events: u64, heads_digest: StateHash) -> Self {
        ScopeSummary {
            scope,
            n_events,
            heads_digest,
        }
    }
}

/// Number of buckets scopes are grouped in for reconciliation (by the first byte of the
/// scope's id).
pub const N_BUCKETS: usize = 256;

/// A replication message. Each is either a request or the answer to one (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SyncMessage {
    /// Summaries of logs (the answer to [`SyncMessage::SummaryOf`]), sorted by scope.
    Summary {
        /// One per log.
        scopes: Vec<ScopeSummary>,
    },
    /// The node's certificate: the first request on a connection, and its answer.
    Hello {
        /// The org's certificate for the sender's node key (the key Noise proved).
        certificate: Certificate,
    },
    /// Asks for events of a log that the sender lacks.
    Want {
        /// The log.
        scope: ScopeId,
        /// The sender's heads, so the holder can skip what the sender has.
        have: Vec<EventId>,
        /// Send events of at least this depth.
        from_depth: u64,
        /// At most this many (≤ [`MAX_EVENTS_PER_WANT`]).
        max_events: u32,
    },
    /// Events of one log, in linear order (parents first): the answer to a `Want`.
    Events {
        /// The log.
        scope: ScopeId,
        /// The events.
        events: Vec<Event>,
        /// Whether the holder has nothing more for the `Want` (else ask again with new heads).
        complete: bool,
    },
    /// New events, pushed live, in linear order per log.
    Push {
        /// The events.
        events: Vec<Event>,
    },
    /// A new node redeems a one-time invite (instead of `Hello`: it has no certificate yet).
    Join {
        /// The invite's secret.
        secret: [u8; 32],
        /// Keys of the new node's built-in bridges to certify too (one per channel).
        bridge_keys: Vec<(ChannelKind, PublicKey)>,
    },
    /// The answer to `Join`: the org's certificates for the new node's key and its bridges'
    /// keys, already published in the org's directory.
    Joined {
        /// The node's certificate.
        certificate: Certificate,
        /// Its bridges' certificates, in the order asked.
        bridge_certificates: Vec<Certificate>,
    },
    /// The digest of every log the two nodes may share (the first step of reconciliation).
    Digest {
        /// How many logs.
        n_scopes: u64,
        /// [`summaries_digest`] of their summaries.
        digest: StateHash,
    },
    /// The digest of each of the [`N_BUCKETS`] buckets of shared logs.
    Buckets {
        /// One per bucket, in bucket order.
        digests: Vec<StateHash>,
    },
    /// Asks for the summaries of the shared logs in some buckets; answered by `Summary`.
    SummaryOf {
        /// The buckets, ascending.
        buckets: Vec<u8>,
    },
    /// Certificates the receiver may need to check events of shared threads: the sender's
    /// org's (to a partner), or its partners' (to a node of its own org). Answered by `Ack`.
    Certificates {
        /// Each verified by the receiver before use.
        certificates: Vec<Certificate>,
    },
    /// A push was taken (stored or already there).
    Ack,
    /// A request was refused; the reason is for the operator's log.
    Refused {
        /// Why.
        reason: String,
    },
    /// Asks for a blob an event of a shared log refers to, from `offset`; answered by `Blob`
    /// or `NoBlob`.
    WantBlob {
        /// The blob's hash.
        blob: BlobHash,
        /// The first byte wanted.
        offset: u64,
    },
    /// Part of a blob: at most [`MAX_BLOB_CHUNK_BYTES`] from `offset` (empty past the end).
    Blob {
        /// The blob's hash.
        blob: BlobHash,
        /// The blob's whole size.
        size: u64,
        /// Where `bytes` start.
        offset: u64,
        /// The bytes.
        bytes: codec::ByteBuf,
    },
    /// The holder has no such blob that it may share with the asker (it does not say which).
    NoBlob {
        /// The blob's hash.
        blob: BlobHash,
    },
}

impl SyncMessage {
    /// Decodes one frame (at most [`MAX_FRAME_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_FRAME_BYTES)
    }

    /// Encodes a frame.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        codec::encode(self)
    }
}

/// Digest of a log's heads: SHA-256 over the `threadline/event-id/v1` domain of the
/// concatenated sorted head ids. Equal heads mean equal event sets.
pub fn heads_digest<'a>(heads: impl IntoIterator<Item = &'a EventId>) -> StateHash {
    let mut bytes = Vec::new();
    for head in heads {
        bytes.extend_from_slice(head.as_bytes());
    }
    StateHash::from_bytes(digest::sha256(Domain::EventId, &bytes))
}

/// The bucket of a scope: the first byte of its id.
pub fn bucket_of(scope: &ScopeId) -> u8 {
    match scope {
        ScopeId::Directory(org) => org.0.as_bytes()[0],
        ScopeId::Thread(thread) => thread.as_bytes()[0],
    }
}

/// Digest of a set of summaries: SHA-256 in the `threadline/sync-digest/v1` domain of their
/// encodings concatenated, in scope order. The caller passes them sorted by scope.
pub fn summaries_digest<'a>(summaries: impl IntoIterator<Item = &'a ScopeSummary>) -> StateHash {
    let mut bytes = Vec::new();
    for summary in summaries {
        // A summary is fixed-size plain data: encoding cannot fail.
        if let Ok(encoded) = codec::encode(summary) {
            bytes.extend_from_slice(&encoded);
        }
    }
    StateHash::from_bytes(digest::sha256(Domain::SyncDigest, &bytes))
}

/// The digest of each bucket of `summaries` (sorted by scope), [`N_BUCKETS`] of them.
pub fn bucket_digests(summaries: &[ScopeSummary]) -> Vec<StateHash> {
    let mut buckets: Vec<Vec<&ScopeSummary>> = vec![Vec::new(); N_BUCKETS];
    for summary in summaries {
        buckets[usize::from(bucket_of(&summary.scope))].push(summary);
    }
    buckets.into_iter().map(summaries_digest).collect()
}
