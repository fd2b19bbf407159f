//! Pulling from a peer: digests compared, the logs that differ wanted, their events taken in.

use super::*;

impl Service {
    pub(super) fn pull_again(&mut self) {
        let peers: Vec<PeerId> = self
            .peers
            .iter_mut()
            .filter(|(_, state)| state.org.is_some())
            .map(|(peer, state)| {
                // Something may be missing (events waited, or the live stream lagged).
                state.out_of_sync();
                *peer
            })
            .collect();
        for peer in peers {
            self.start_pull_with(peer, None);
        }
    }

    pub(super) fn on_response(&mut self, peer: PeerId, asked: Asked, response: SyncMessage) {
        match (asked, response) {
            (Asked::Hello, SyncMessage::Hello { certificate }) => {
                match self.verify_hello(peer, &certificate) {
                    Ok(org) => self.accept(peer, org),
                    Err((reason, points)) => self.refuse_hello(peer, &reason, points),
                }
            }
            (Asked::Digest(generation), SyncMessage::Digest { n_scopes, digest }) => {
                if !self.current_pull(peer, generation) {
                    return;
                }
                let Some(state) = self.peers.get_mut(&peer) else {
                    return;
                };
                if n_scopes == state.ours.len() as u64 && digest == summaries_digest(&state.ours) {
                    debug!(%peer, scopes = n_scopes, "in sync");
                    self.pull_finished(peer, true);
                } else {
                    state.in_sync = false;
                    let digests = bucket_digests(&state.ours);
                    self.request(
                        peer,
                        SyncMessage::Buckets { digests },
                        Asked::Buckets(generation),
                    );
                }
            }
            (Asked::Buckets(generation), SyncMessage::Buckets { digests }) => {
                if !self.current_pull(peer, generation) {
                    return;
                }
                if digests.len() != N_BUCKETS {
                    self.penalise(peer, 50, "a Buckets answer of the wrong size");
                    self.pull_failed(peer, generation);
                    return;
                }
                let Some(state) = self.peers.get_mut(&peer) else {
                    return;
                };
                let ours = bucket_digests(&state.ours);
                let buckets: Vec<u8> = (0..N_BUCKETS)
                    .filter(|&i| ours[i] != digests[i])
                    .filter_map(|i| u8::try_from(i).ok())
                    .collect();
                if buckets.is_empty() {
                    self.pull_finished(peer, true);
                } else {
                    // A few buckets an answer, so a summary fits its frame even with millions
                    // of threads.
                    state.steps_awaited = buckets.chunks(SUMMARY_BUCKETS_PER_REQUEST).len();
                    for chunk in buckets.chunks(SUMMARY_BUCKETS_PER_REQUEST) {
                        let buckets = chunk.to_vec();
                        self.request(
                            peer,
                            SyncMessage::SummaryOf { buckets },
                            Asked::SummaryOf(generation),
                        );
                    }
                }
            }
            (Asked::SummaryOf(generation), SyncMessage::Summary { scopes }) => {
                if !self.current_pull(peer, generation) {
                    return;
                }
                let Some(state) = self.peers.get_mut(&peer) else {
                    return;
                };
                state.steps_awaited = state.steps_awaited.saturating_sub(1);
                let ours: BTreeMap<ScopeId, &ScopeSummary> =
                    state.ours.iter().map(|s| (s.scope, s)).collect();
                let mut differing: Vec<ScopeId> = scopes
                    .iter()
                    .filter(|theirs| theirs.n_events > 0)
                    .filter(|theirs| {
                        ours.get(&theirs.scope)
                            .is_none_or(|mine| mine.heads_digest != theirs.heads_digest)
                    })
                    // A log given up on with this peer stays so until it reconnects.
                    .filter(|theirs| {
                        state
                            .stalls
                            .get(&theirs.scope)
                            .is_none_or(|stalls| *stalls <= STALLS_ALLOWED)
                    })
                    .map(|theirs| theirs.scope)
                    .collect();
                // The directory first: it brings the certificates thread events need.
                differing.sort_by_key(|scope| !matches!(scope, ScopeId::Directory(_)));
                for scope in differing {
                    self.want(peer, scope);
                }
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|state| state.wants.is_empty() && state.wants_in_flight == 0)
                {
                    self.wants_drained(peer);
                }
            }
            (
                Asked::Want(asked_scope),
                SyncMessage::Events {
                    scope,
                    events,
                    complete,
                },
            ) => {
                if scope != asked_scope {
                    self.penalise(
                        peer,
                        PENALTY_LIMIT,
                        "events of a log that was not asked for",
                    );
                    return;
                }
                self.store_events(peer, scope, events, complete);
            }
            (Asked::Want(scope), SyncMessage::Refused { reason }) => {
                warn!(%peer, %scope, reason, "a peer refused a Want");
                self.step_failed(peer, &Asked::Want(scope));
            }
            (Asked::Push(sent), SyncMessage::Ack) => self.push_answered(peer, sent, true),
            (Asked::Certificates, SyncMessage::Ack) => {}
            (
                Asked::Blob(asked),
                SyncMessage::Blob {
                    blob,
                    size,
                    offset,
                    bytes,
                },
            ) if blob == asked => match self
                .blob_fetches
                .on_chunk(peer, blob, size, offset, &bytes.0)
            {
                Chunk::Next(peer, offset) => {
                    let request = SyncMessage::WantBlob { blob, offset };
                    self.request(peer, request, Asked::Blob(blob));
                }
                Chunk::Whole(blob, bytes) => {
                    let store = self.ingest.store().clone();
                    let done = self.done_sender.clone();
                    tokio::task::spawn_blocking(move || {
                        let stored = store.blobs().put_checked(&blob, &bytes);
                        // Erased while it was on its way: not kept.
                        if stored.is_ok() && store.drop_unreferenced(&[blob]).is_err() {
                            warn!(%blob, "cannot check whether a fetched blob is still wanted");
                        }
                        let forged =
                            matches!(stored, Err(crate::store::BlobError::HashMismatch { .. }));
                        let result = stored
                            .map_err(crate::store::StoreError::from)
                            .and_then(|()| store.blob_found(&blob))
                            .map_err(|err| err.to_string());
                        let _ = done.send(Done::BlobStored {
                            peer,
                            blob,
                            result,
                            forged,
                        });
                    });
                }
                Chunk::Wrong(reason) => self.penalise(peer, 50, reason),
            },
            (Asked::Blob(asked), SyncMessage::NoBlob { blob }) if blob == asked => {
                debug!(%peer, %blob, "the peer has no such blob to share");
                self.blob_fetches.not_from(peer, blob);
                self.fetch_blobs();
            }
            (Asked::Blob(blob), SyncMessage::Refused { reason }) => {
                debug!(%peer, %blob, reason, "a peer refused a blob");
                self.blob_fetches.not_from(peer, blob);
            }
            (Asked::Blob(blob), _) => {
                self.blob_fetches.not_from(peer, blob);
                self.penalise(peer, 50, &format!("a wrong answer to a WantBlob of {blob}"));
            }
            (asked, SyncMessage::Refused { reason }) => {
                // A joining node refuses everything until it has its certificate; a busy one
                // refuses a flood. The step is tried again by a check.
                debug!(%peer, ?asked, reason, "a peer refused a request");
                self.step_failed(peer, &asked);
            }
            (asked, _) => {
                self.penalise(peer, 50, &format!("a wrong answer to {asked:?}"));
                self.step_failed(peer, &asked);
            }
        }
    }

    /// Queues a `Want` for `scope` from `peer` (once at a time per log).
    pub(super) fn want(&mut self, peer: PeerId, scope: ScopeId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.wanted.insert(scope) {
            if matches!(scope, ScopeId::Directory(_)) {
                state.wants.push_front(scope);
            } else {
                state.wants.push_back(scope);
            }
        } else if !state.wants.contains(&scope) {
            state.rewant.insert(scope);
        }
        self.pump_wants(peer);
    }

    pub(super) fn pump_wants(&mut self, peer: PeerId) {
        loop {
            let Some(state) = self.peers.get_mut(&peer) else {
                return;
            };
            // The directory alone first (it is queued first): its certificates authorise the
            // rest.
            let directory_pending = state
                .wanted
                .iter()
                .any(|s| matches!(s, ScopeId::Directory(_)));
            let limit = if directory_pending {
                1
            } else {
                WANTS_IN_FLIGHT
            };
            if state.wants_in_flight >= limit {
                return;
            }
            let Some(scope) = state.wants.pop_front() else {
                if state.wants_in_flight == 0 {
                    self.wants_drained(peer);
                }
                return;
            };
            state.wants_in_flight += 1;
            let from_depth = state.from_depth.get(&scope).copied().unwrap_or(0);
            let store = self.ingest.store().clone();
            let done = self.done_sender.clone();
            tokio::task::spawn_blocking(move || {
                let have = match store.heads(&scope) {
                    Ok(Some((_, heads))) => heads,
                    Ok(None) => Vec::new(),
                    Err(err) => {
                        warn!(cause = %err, %scope, "cannot read a log's heads");
                        Vec::new()
                    }
                };
                let _ = done.send(Done::WantReady(
                    peer,
                    SyncMessage::Want {
                        scope,
                        have,
                        from_depth,
                        max_events: MAX_EVENTS_PER_WANT,
                    },
                ));
            });
        }
    }

    /// A request that got no good answer: the pull's steps are tried again by a check; a
    /// push's events are left for the peer to pull.
    fn step_failed(&mut self, peer: PeerId, asked: &Asked) {
        match asked {
            Asked::Digest(n) | Asked::Buckets(n) | Asked::SummaryOf(n) => {
                self.pull_failed(peer, *n)
            }
            Asked::Push(sent) => self.push_answered(peer, *sent, false),
            Asked::Want(scope) => {
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.out_of_sync();
                }
                self.want_done(peer, *scope);
            }
            Asked::Hello | Asked::Certificates | Asked::Blob(_) => {}
        }
    }

    pub(super) fn want_done(&mut self, peer: PeerId, scope: ScopeId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.wants_in_flight = state.wants_in_flight.saturating_sub(1);
            state.wanted.remove(&scope);
        }
        self.pump_wants(peer);
    }
}
