//! What the API shows of replication: written by the replication service, read by the API
//! through [`crate::ingest::Ingest::replication`]. Its own home, so that neither the pipeline
//! nor the API depends on the replication service.

use std::sync::{Arc, PoisonError, RwLock};

/// What the API shows of replication.
#[derive(Debug, Clone, Default)]
pub struct Status(Arc<RwLock<StatusView>>);

/// A snapshot of replication.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StatusView {
    /// This node's PeerId.
    pub peer_id: String,
    /// Where it listens (with `/p2p/<PeerId>`: what `threadline peer add` takes).
    pub listening: Vec<String>,
    /// Connected peers.
    pub peers: Vec<PeerView>,
}

/// One connected peer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerView {
    /// Its PeerId.
    pub peer_id: String,
    /// Its org, once its certificate was checked.
    pub org: Option<String>,
    /// Whether both hold the same of what they share: the last comparison of their digests
    /// found them equal, no push to it failed or was left for it to pull since, and none has
    /// waited more than 2 s for its acknowledgement.
    pub in_sync: bool,
    /// When the current connection was made (ms since the epoch): a reconnection changes it.
    pub connected_at: u64,
    /// Penalty points.
    pub penalty: u32,
}

impl Status {
    /// The current snapshot.
    pub fn view(&self) -> StatusView {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the snapshot (the replication service, as things change).
    pub(crate) fn set(&self, view: StatusView) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = view;
    }
}
