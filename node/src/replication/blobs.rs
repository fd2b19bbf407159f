//! Fetching the blobs (attachment bytes) that events from peers refer to.
//!
//! The writer records each blob an event from a peer refers to and this node lacks in the
//! store's `missing_blobs`. The service asks connected peers for them, one chunk at a time
//! (`WantBlob` → `Blob`, at most [`MAX_BLOB_CHUNK_BYTES`] each), a few blobs at once; a peer
//! that answers `NoBlob` (it does not have it, or may not share it) is not asked for that
//! blob again until every peer has been tried and [`RETRY_AFTER`] passed. The whole blob is
//! checked against its hash before it is stored.
//!
//! [`BlobFetches`] is the bookkeeping, without I/O: the service feeds it what it reads and
//! sends what it answers.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use threadline_protocol::{
    id::BlobHash,
    limits::MAX_BLOB_BYTES,
    sync::{SyncMessage, MAX_BLOB_CHUNK_BYTES},
};

/// Blobs fetched at once (each holds its bytes in memory until whole: at most
/// `MAX_FETCHES × MAX_BLOB_BYTES`).
pub const MAX_FETCHES: usize = 4;
/// How long a blob no connected peer had waits before every peer is asked again; doubled
/// after each such round, up to [`MAX_RETRY_AFTER`].
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// The longest wait between two rounds for a blob nobody has.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// A blob on its way.
#[derive(Debug)]
struct Fetch {
    peer: PeerId,
    /// The size the holder gave in its first answer (an event's claim may be wrong; the hash
    /// decides).
    size: Option<u64>,
    bytes: Vec<u8>,
}

/// Who was asked for a blob in vain, and when to start over.
#[derive(Debug, Default)]
struct Tried {
    peers: HashSet<PeerId>,
    retry_at: Option<Instant>,
    /// Rounds of asking every peer in vain: each doubles the wait before the next.
    rounds: u32,
}

/// What a `Blob` answer leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Ask the peer for the part from this offset.
    Next(PeerId, u64),
    /// The blob is whole: check and store it.
    Whole(BlobHash, Vec<u8>),
    /// The peer answered what was not asked, or broke the protocol: penalise it.
    Wrong(&'static str),
}

/// The blobs being fetched and the peers that did not have them.
///
/// The list of missing blobs is read off the loop, so it can be older than what finished
/// meanwhile: each read has a generation ([`BlobFetches::read_started`]), and a blob whose
/// file was stored after a read began is not fetched again from that read's list.
#[derive(Debug, Default)]
pub struct BlobFetches {
    active: HashMap<BlobHash, Fetch>,
    tried: HashMap<BlobHash, Tried>,
    /// Whole, being checked and stored.
    storing: HashSet<BlobHash>,
    /// Stored, with the generation of the newest read started before.
    stored: HashMap<BlobHash, u64>,
    generation: u64,
}

impl BlobFetches {
    /// Blobs being fetched now.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// A read of the missing blobs starts: its generation, for [`BlobFetches::start`].
    pub fn read_started(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// A whole blob was stored (`ok`), or could not be.
    pub fn stored(&mut self, blob: BlobHash, ok: bool) {
        self.storing.remove(&blob);
        if ok {
            self.stored.insert(blob, self.generation);
        }
    }

    /// Starts fetches for `missing` blobs (hash and size, as the events give them, read by
    /// the read of `generation`) from `peers`, up to [`MAX_FETCHES`] at once: the requests to
    /// send.
    pub fn start(
        &mut self,
        missing: &[(BlobHash, u64)],
        generation: u64,
        peers: &[PeerId],
        now: Instant,
    ) -> Vec<(PeerId, SyncMessage)> {
        let mut requests = Vec::new();
        for &(blob, size) in missing {
            if self.active.len() >= MAX_FETCHES {
                break;
            }
            let stored_since = self.stored.get(&blob).is_some_and(|g| *g >= generation);
            if self.active.contains_key(&blob)
                || self.storing.contains(&blob)
                || stored_since
                || size > MAX_BLOB_BYTES
            {
                continue;
            }
            let tried = self.tried.entry(blob).or_default();
            if tried.retry_at.is_some_and(|at| at > now) {
                continue;
            }
            let peer = match peers.iter().find(|peer| !tried.peers.contains(peer)) {
                Some(peer) => *peer,
                None if peers.is_empty() => continue,
                None => {
                    // Everyone was asked: wait, then start over.
                    tried.peers.clear();
                    let wait = RETRY_AFTER
                        .saturating_mul(1 << tried.rounds.min(10))
                        .min(MAX_RETRY_AFTER);
                    tried.rounds += 1;
                    tried.retry_at = Some(now + wait);
                    continue;
                }
            };
            tried.retry_at = None;
            self.active.insert(
                blob,
                Fetch {
                    peer,
                    size: None,
                    bytes: Vec::new(),
                },
            );
            requests.push((peer, SyncMessage::WantBlob { blob, offset: 0 }));
        }
        // A read that began after these were stored lists them no more.
        self.stored.retain(|_, g| *g >= generation);
        requests
    }

    /// A part of `blob` came from `peer`.
    pub fn on_chunk(
        &mut self,
        peer: PeerId,
        blob: BlobHash,
        size: u64,
        offset: u64,
        bytes: &[u8],
    ) -> Chunk {
        let Some(fetch) = self.active.get_mut(&blob).filter(|f| f.peer == peer) else {
            return Chunk::Wrong("a blob that was not asked for");
        };
        let size_now = *fetch.size.get_or_insert(size);
        let wrong = if size != size_now {
            Some("blob parts of different sizes")
        } else if size > MAX_BLOB_BYTES {
            Some("a blob over the size limit")
        } else if offset != fetch.bytes.len() as u64 {
            Some("a blob part from the wrong offset")
        } else if bytes.len() > MAX_BLOB_CHUNK_BYTES
            || fetch.bytes.len() as u64 + bytes.len() as u64 > size
        {
            Some("a blob part too long")
        } else if bytes.is_empty() && (fetch.bytes.len() as u64) < size {
            Some("an empty blob part before the end")
        } else {
            None
        };
        if let Some(reason) = wrong {
            self.active.remove(&blob);
            self.tried.entry(blob).or_default().peers.insert(peer);
            return Chunk::Wrong(reason);
        }
        fetch.bytes.extend_from_slice(bytes);
        if fetch.bytes.len() as u64 == size {
            let whole = self
                .active
                .remove(&blob)
                .map(|f| f.bytes)
                .unwrap_or_default();
            self.tried.remove(&blob);
            self.storing.insert(blob);
            return Chunk::Whole(blob, whole);
        }
        Chunk::Next(peer, fetch.bytes.len() as u64)
    }

    /// `peer` has no `blob` to share (or the request failed): another peer is asked next.
    pub fn not_from(&mut self, peer: PeerId, blob: BlobHash) {
        if self.active.get(&blob).is_some_and(|f| f.peer == peer) {
            self.active.remove(&blob);
        }
        self.tried.entry(blob).or_default().peers.insert(peer);
    }

    /// A stored blob's bytes did not match its hash: another peer is asked next.
    pub fn bad_bytes(&mut self, peer: PeerId, blob: BlobHash) {
        self.tried.entry(blob).or_default().peers.insert(peer);
    }

    /// `peer` disconnected: its fetches start over elsewhere.
    pub fn peer_gone(&mut self, peer: PeerId) {
        self.active.retain(|_, fetch| fetch.peer != peer);
    }

    /// Forgets what is no longer missing.
    pub fn retain_missing(&mut self, missing: &HashSet<BlobHash>) {
        self.tried.retain(|blob, _| missing.contains(blob));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob_of(len: usize) -> (BlobHash, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        (BlobHash::of(&bytes), bytes)
    }

    /// A blob bigger than a chunk comes in parts, from the offset each answer reached.
    #[test]
    fn a_blob_is_fetched_in_chunks_and_handed_over_whole() {
        let (blob, bytes) = blob_of(MAX_BLOB_CHUNK_BYTES + 10);
        let peer = PeerId::random();
        let mut fetches = BlobFetches::default();
        let now = Instant::now();
        let asked = fetches.start(&[(blob, bytes.len() as u64)], 1, &[peer], now);
        assert_eq!(
            asked,
            vec![(peer, SyncMessage::WantBlob { blob, offset: 0 })]
        );
        let size = bytes.len() as u64;
        let first = fetches.on_chunk(peer, blob, size, 0, &bytes[..MAX_BLOB_CHUNK_BYTES]);
        assert_eq!(first, Chunk::Next(peer, MAX_BLOB_CHUNK_BYTES as u64));
        let last = fetches.on_chunk(
            peer,
            blob,
            size,
            MAX_BLOB_CHUNK_BYTES as u64,
            &bytes[MAX_BLOB_CHUNK_BYTES..],
        );
        assert_eq!(last, Chunk::Whole(blob, bytes));
        assert_eq!(fetches.active(), 0);
    }

    /// A list read before a blob was stored does not fetch it again.
    #[test]
    fn a_stale_list_does_not_fetch_a_stored_blob_again() {
        let (blob, bytes) = blob_of(10);
        let peer = PeerId::random();
        let now = Instant::now();
        let missing = [(blob, bytes.len() as u64)];
        let mut fetches = BlobFetches::default();
        let first = fetches.read_started();
        assert_eq!(fetches.start(&missing, first, &[peer], now).len(), 1);
        let stale = fetches.read_started();
        let size = bytes.len() as u64;
        assert!(matches!(
            fetches.on_chunk(peer, blob, size, 0, &bytes),
            Chunk::Whole(..)
        ));
        assert!(
            fetches.start(&missing, stale, &[peer], now).is_empty(),
            "being stored"
        );
        fetches.stored(blob, true);
        assert!(
            fetches.start(&missing, stale, &[peer], now).is_empty(),
            "stored since"
        );
        // A read begun after it was stored lists it only if it is missing again.
        let fresh = fetches.read_started();
        assert_eq!(fetches.start(&missing, fresh, &[peer], now).len(), 1);
    }

    /// A peer that lacks the blob is not asked again; once all were asked, the fetch waits.
    #[test]
    fn peers_without_the_blob_are_skipped_then_all_retried_later() {
        let (blob, bytes) = blob_of(10);
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut fetches = BlobFetches::default();
        let now = Instant::now();
        let missing = [(blob, bytes.len() as u64)];
        assert_eq!(fetches.start(&missing, 1, &[a, b], now)[0].0, a);
        fetches.not_from(a, blob);
        assert_eq!(fetches.start(&missing, 1, &[a, b], now)[0].0, b);
        fetches.not_from(b, blob);
        assert!(
            fetches.start(&missing, 1, &[a, b], now).is_empty(),
            "both asked"
        );
        assert!(fetches
            .start(&missing, 1, &[a, b], now + Duration::from_secs(1))
            .is_empty());
        let later = fetches.start(
            &missing,
            1,
            &[a, b],
            now + RETRY_AFTER + Duration::from_secs(1),
        );
        assert_eq!(later.len(), 1, "asked again after the wait");
    }

    /// Answers that do not fit what was asked are refused, and the peer is not asked again.
    #[test]
    fn wrong_answers_are_caught() {
        let (blob, bytes) = blob_of(100);
        let (peer, other) = (PeerId::random(), PeerId::random());
        let size = bytes.len() as u64;
        let now = Instant::now();
        let mut fetches = BlobFetches::default();
        fetches.start(&[(blob, size)], 1, &[peer], now);
        assert!(matches!(
            fetches.on_chunk(other, blob, size, 0, &bytes),
            Chunk::Wrong(_)
        ));
        // The holder's size counts, not the event's claim (the hash decides)...
        assert_eq!(
            fetches.on_chunk(peer, blob, size + 1, 0, &bytes[..50]),
            Chunk::Next(peer, 50)
        );
        // ...but it must keep to it.
        assert!(matches!(
            fetches.on_chunk(peer, blob, size, 50, &bytes[50..]),
            Chunk::Wrong(_)
        ));
        fetches.start(&[(blob, size)], 1, &[peer, other], now);
        assert!(matches!(
            fetches.on_chunk(other, blob, size, 5, &bytes[5..]),
            Chunk::Wrong(_)
        ));
        // Not more than one at a time per blob, and at most MAX_FETCHES in all.
        let many: Vec<(BlobHash, u64)> = (0..10).map(|i| (blob_of(i + 1).0, 1)).collect();
        assert_eq!(fetches.start(&many, 1, &[peer], now).len(), MAX_FETCHES);
    }
}
