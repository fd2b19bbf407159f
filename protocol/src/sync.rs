//! The messages nodes exchange to replicate logs, encoded with the same codec as events.
//!
//! # Protocol flow
//! 1. On connect, each side sends a [`SyncMessage::Summary`]: for every log both may share, its
//!    event count and a digest of its heads. Logs whose summaries match are in sync and cost
//!    nothing more.
//! 2. For a log that differs, a side sends [`SyncMessage::Heads`]; the other answers with
//!    [`SyncMessage::Want`] naming the heads it has and the depth from which it wants events.
//! 3. The holder streams [`SyncMessage::Events`] in linear order (parents first), in batches
//!    that fit [`MAX_FRAME_BYTES`], with `complete` on the last.
//! 4. While connected, a new event is sent at once as [`SyncMessage::Push`].
//!
//! Every event received goes through verification and the auth rules like any other.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, EncodeError};
use crate::digest::{self, Domain};
use crate::event::{Event, ScopeId};
use crate::id::{EventId, StateHash};

/// The largest sync frame (one encoded [`SyncMessage`]).
pub const MAX_FRAME_BYTES: usize = codec::MAX_MESSAGE_BYTES;

/// Most events asked for in one [`SyncMessage::Want`].
pub const MAX_EVENTS_PER_WANT: u32 = 4096;

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

/// A replication message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SyncMessage {
    /// Summaries of the logs the sender holds that the receiver may share.
    Summary {
        /// One per log, sorted by scope.
        scopes: Vec<ScopeSummary>,
    },
    /// The sender's heads of one log.
    Heads {
        /// The log.
        scope: ScopeId,
        /// Heads, sorted ascending.
        heads: Vec<EventId>,
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
    /// Events of one log, in linear order (parents first).
    Events {
        /// The log.
        scope: ScopeId,
        /// The events.
        events: Vec<Event>,
        /// Whether this is the last batch for the `Want`.
        complete: bool,
    },
    /// A new event, pushed live.
    Push {
        /// The event.
        event: Event,
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
