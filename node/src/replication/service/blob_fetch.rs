//! Fetching the blobs that events from peers refer to and this node lacks.

use super::*;

impl Service {
    /// Asks peers for missing blobs, if fewer than the most are on their way: reads the
    /// missing ones off the loop, then [`Service::start_blob_fetches`].
    pub(super) fn fetch_blobs(&mut self) {
        if self.reading_missing
            || self.blob_fetches.active() >= crate::replication::blobs::MAX_FETCHES
        {
            return;
        }
        if !self.peers.values().any(|state| state.org.is_some()) {
            return;
        }
        self.reading_missing = true;
        let generation = self.blob_fetches.read_started();
        let store = self.ingest.store().clone();
        let done = self.done_sender.clone();
        let after = self.missing_after;
        tokio::task::spawn_blocking(move || {
            let mut missing = Vec::new();
            let mut window = MissingWindow {
                from_start: after.is_none(),
                last: None,
                to_end: true,
            };
            match store.missing_blobs(after.as_ref(), MISSING_BLOBS_READ) {
                Ok(listed) => {
                    window.to_end = listed.len() < MISSING_BLOBS_READ;
                    window.last = listed.last().map(|(blob, _)| *blob);
                    for (blob, size) in listed {
                        // Already here (another fetch, or the bridge that made it uploaded it).
                        // A file is named by the hash of its bytes: present is whole.
                        match store.blobs().size(&blob) {
                            Ok(Some(_)) => {
                                if let Err(err) = store.blob_found(&blob) {
                                    warn!(%blob, cause = %err, "cannot mark a blob found");
                                }
                            }
                            _ => missing.push((blob, size)),
                        }
                    }
                }
                Err(err) => warn!(cause = %err, "cannot read the missing blobs"),
            }
            let _ = done.send(Done::MissingBlobs(generation, window, missing));
        });
    }

    pub(super) fn start_blob_fetches(
        &mut self,
        generation: u64,
        window: MissingWindow,
        missing: Vec<(BlobHash, u64)>,
    ) {
        self.reading_missing = false;
        // The next read goes on where this one stopped, wrapping round at the end.
        self.missing_after = if window.to_end { None } else { window.last };
        if window.from_start && window.to_end {
            // The whole list: what is not on it is missing no more.
            self.blob_fetches
                .retain_missing(&missing.iter().map(|(blob, _)| *blob).collect());
        }
        // This org's nodes first: they may have every blob; a partner only its shared threads'.
        let mut peers: Vec<(bool, PeerId)> = self
            .peers
            .iter()
            .filter_map(|(peer, state)| Some((state.org? != self.org, *peer)))
            .collect();
        peers.sort();
        let peers: Vec<PeerId> = peers.into_iter().map(|(_, peer)| peer).collect();
        for (peer, request) in self
            .blob_fetches
            .start(&missing, generation, &peers, Instant::now())
        {
            if let SyncMessage::WantBlob { blob, .. } = request {
                debug!(%peer, %blob, "fetching a blob");
                self.request(peer, request, Asked::Blob(blob));
            }
        }
    }
}
