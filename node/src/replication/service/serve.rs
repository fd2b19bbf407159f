//! Answering a peer's sync requests: hello, summaries, wants, blobs.

use super::*;

impl Service {
    pub(super) fn request(&mut self, peer: PeerId, message: SyncMessage, asked: Asked) {
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, message.into());
        self.asked.insert(id, (peer, asked));
    }

    pub(super) fn respond(&mut self, channel: ResponseChannel<SyncMessage>, message: SyncMessage) {
        // The peer may have gone; nothing to do then.
        let _ = self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, message);
    }

    pub(super) fn refuse(&mut self, channel: ResponseChannel<SyncMessage>, reason: &str) {
        self.respond(
            channel,
            SyncMessage::Refused {
                reason: reason.to_owned(),
            },
        );
    }

    pub(super) fn on_request(
        &mut self,
        peer: PeerId,
        request: SyncMessage,
        channel: ResponseChannel<SyncMessage>,
    ) {
        if !self.allow_request(peer) {
            self.refuse(channel, "too many requests");
            self.penalise(peer, 10, "a flood of requests");
            return;
        }
        let org = self.peers.get(&peer).and_then(|state| state.org);
        match (request, org) {
            (SyncMessage::Hello { certificate }, _) => {
                match self.verify_hello(peer, &certificate) {
                    Ok(org) => {
                        let hello = SyncMessage::Hello {
                            certificate: self.certificate.clone(),
                        };
                        self.respond(channel, hello);
                        self.accept(peer, org);
                    }
                    Err((reason, points)) => {
                        self.refuse(channel, &reason);
                        self.refuse_hello(peer, &reason, points);
                    }
                }
            }
            (
                SyncMessage::Join {
                    secret,
                    bridge_keys,
                },
                _,
            ) => self.on_join(peer, secret, bridge_keys, channel),
            (_, None) => {
                self.refuse(channel, "say Hello with a node certificate first");
                self.penalise(peer, 25, "a request before Hello");
            }
            (
                request @ (SyncMessage::Digest { .. }
                | SyncMessage::Buckets { .. }
                | SyncMessage::SummaryOf { .. }
                | SyncMessage::Want { .. }
                | SyncMessage::WantBlob { .. }),
                Some(peer_org),
            ) => self.serve_heavy(peer, peer_org, request, channel),
            (SyncMessage::Push { events }, Some(peer_org)) => {
                self.on_push(peer, peer_org, events, channel);
            }
            (SyncMessage::Certificates { certificates }, Some(peer_org)) => {
                // A partner speaks for its own org only; this org's nodes relay partners'.
                let from_partner = peer_org != self.org;
                let certificates: Vec<Certificate> = certificates
                    .into_iter()
                    .filter(|c| !from_partner || c.body.org == peer_org)
                    .collect();
                let ingest = self.ingest.clone();
                let done = self.done_sender.clone();
                tokio::spawn(async move {
                    let added = ingest
                        .add_partner_certificates(certificates.clone())
                        .await
                        .unwrap_or_else(|err| {
                            warn!(cause = %err, "cannot store partner certificates");
                            0
                        });
                    let relay = if added > 0 { certificates } else { Vec::new() };
                    let _ = done.send(Done::CertificatesTaken(channel, relay, added));
                });
            }
            (_, Some(_)) => {
                self.refuse(channel, "not a request");
                self.penalise(peer, 25, "an answer sent as a request");
            }
        }
    }

    /// Serves a request that reads much of the store (summaries, a log, a blob), at most
    /// [`SERVING_PER_PEER`] of one peer's at once and [`SERVE_QUEUE_PER_PEER`] more waiting
    /// their turn; beyond that it is refused as busy (the peer asks again later). So a slow,
    /// greedy or hostile peer holds a few of the node's threads, never all of them, and the
    /// others are served meanwhile.
    fn serve_heavy(
        &mut self,
        peer: PeerId,
        peer_org: OrgId,
        request: SyncMessage,
        channel: ResponseChannel<SyncMessage>,
    ) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.serving < SERVING_PER_PEER {
            state.serving += 1;
            self.start_heavy(peer, peer_org, request, channel);
        } else if state.serve_queue.len() < SERVE_QUEUE_PER_PEER {
            state.serve_queue.push_back((request, channel));
        } else {
            debug!(%peer, "too many requests waiting; refused as busy");
            self.refuse(
                channel,
                "busy: too many of your requests are waiting; ask again later",
            );
        }
    }

    /// A heavy request of `peer` was answered: the next of its queue starts.
    pub(super) fn served(&mut self, peer: PeerId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.serving = state.serving.saturating_sub(1);
        let (Some(peer_org), Some((request, channel))) = (state.org, state.serve_queue.pop_front())
        else {
            return;
        };
        state.serving += 1;
        self.start_heavy(peer, peer_org, request, channel);
    }

    /// Starts serving one heavy request off the loop; [`Done::Served`] brings the answer.
    fn start_heavy(
        &mut self,
        peer: PeerId,
        peer_org: OrgId,
        request: SyncMessage,
        channel: ResponseChannel<SyncMessage>,
    ) {
        let session = self.peers.get(&peer).map_or(0, |state| state.session);
        match request {
            SyncMessage::Digest { n_scopes, digest } => {
                // Answered with this node's digest, and compared: a peer that holds something
                // else makes this node pull too ([`checks`]).
                let store = self.ingest.store().clone();
                let our_org = self.org;
                let done = self.done_sender.clone();
                let dirty = self.dirty_of(peer);
                let reply = Answer::new(peer, session, channel, self.done_sender.clone());
                tokio::task::spawn_blocking(move || {
                    let answer = match logs::shared_summaries(&store, our_org, peer_org) {
                        Ok(ours) => {
                            let ours_digest = summaries_digest(ours.iter());
                            let n_ours = ours.len() as u64;
                            let equal = n_scopes == n_ours && digest == ours_digest;
                            let _ = done.send(Done::TheirDigest {
                                peer,
                                session,
                                equal,
                                dirty,
                                ours,
                            });
                            SyncMessage::Digest {
                                n_scopes: n_ours,
                                digest: ours_digest,
                            }
                        }
                        Err(err) => SyncMessage::Refused {
                            reason: format!("cannot read the store: {err}"),
                        },
                    };
                    reply.send(answer);
                });
            }
            SyncMessage::Buckets { .. } => {
                self.answer_with_summaries(peer, channel, peer_org, |ours| SyncMessage::Buckets {
                    digests: bucket_digests(ours),
                });
            }
            SyncMessage::SummaryOf { buckets } => {
                let buckets: HashSet<u8> = buckets.into_iter().collect();
                self.answer_with_summaries(peer, channel, peer_org, move |ours| {
                    SyncMessage::Summary {
                        scopes: ours
                            .iter()
                            .filter(|s| {
                                buckets.contains(&threadline_protocol::sync::bucket_of(&s.scope))
                            })
                            .cloned()
                            .collect(),
                    }
                });
            }
            SyncMessage::Want {
                scope,
                have,
                from_depth,
                max_events,
            } => {
                let store = self.ingest.store().clone();
                let our_org = self.org;
                let reply = Answer::new(peer, session, channel, self.done_sender.clone());
                tokio::task::spawn_blocking(move || {
                    let answer = match logs::may_share_stored(&store, &scope, our_org, peer_org) {
                        Ok(true) => {
                            match logs::events_for_want(
                                &store, &scope, &have, from_depth, max_events,
                            ) {
                                Ok((events, complete)) => SyncMessage::Events {
                                    scope,
                                    events,
                                    complete,
                                },
                                Err(err) => SyncMessage::Refused {
                                    reason: format!("cannot read {scope}: {err}"),
                                },
                            }
                        }
                        // Not even whether it exists.
                        Ok(false) => SyncMessage::Events {
                            scope,
                            events: Vec::new(),
                            complete: true,
                        },
                        Err(err) => SyncMessage::Refused {
                            reason: format!("cannot read {scope}: {err}"),
                        },
                    };
                    reply.send(answer);
                });
            }
            SyncMessage::WantBlob { blob, offset } => {
                let store = self.ingest.store().clone();
                let our_org = self.org;
                let reply = Answer::new(peer, session, channel, self.done_sender.clone());
                tokio::task::spawn_blocking(move || {
                    let read = logs::may_share_blob(&store, &blob, our_org, peer_org)
                        .map_err(|err| err.to_string())
                        .and_then(|shared| match shared {
                            true => store
                                .blobs()
                                .read_range(&blob, offset, MAX_BLOB_CHUNK_BYTES)
                                .map_err(|err| err.to_string()),
                            false => Ok(None),
                        });
                    let answer = match read {
                        Ok(Some((size, bytes))) => SyncMessage::Blob {
                            blob,
                            size,
                            offset,
                            bytes: threadline_protocol::codec::ByteBuf(bytes),
                        },
                        // Not even whether it exists.
                        Ok(None) => SyncMessage::NoBlob { blob },
                        Err(err) => SyncMessage::Refused {
                            reason: format!("cannot read blob {blob}: {err}"),
                        },
                    };
                    reply.send(answer);
                });
            }
            // Only the kinds above come here.
            _ => {
                let refused = SyncMessage::Refused {
                    reason: "not a request served here".to_owned(),
                };
                let _ = self
                    .done_sender
                    .send(Done::Served(peer, session, channel, refused));
            }
        }
    }

    /// Answers with something made of this node's summaries for `peer_org`.
    pub(super) fn answer_with_summaries(
        &mut self,
        peer: PeerId,
        channel: ResponseChannel<SyncMessage>,
        peer_org: OrgId,
        make: impl FnOnce(&[ScopeSummary]) -> SyncMessage + Send + 'static,
    ) {
        let store = self.ingest.store().clone();
        let our_org = self.org;
        let session = self.peers.get(&peer).map_or(0, |state| state.session);
        let reply = Answer::new(peer, session, channel, self.done_sender.clone());
        tokio::task::spawn_blocking(move || {
            let answer = match logs::shared_summaries(&store, our_org, peer_org) {
                Ok(ours) => make(&ours),
                Err(err) => SyncMessage::Refused {
                    reason: format!("cannot read the store: {err}"),
                },
            };
            reply.send(answer);
        });
    }
}

/// The answer to a heavy request, brought back to the loop exactly once: if the work ends
/// without one (it panicked), a refusal goes instead, so the peer's turn is given back.
struct Answer {
    peer: PeerId,
    session: u64,
    channel: Option<ResponseChannel<SyncMessage>>,
    done: mpsc::UnboundedSender<Done>,
}

impl Answer {
    fn new(
        peer: PeerId,
        session: u64,
        channel: ResponseChannel<SyncMessage>,
        done: mpsc::UnboundedSender<Done>,
    ) -> Self {
        Answer {
            peer,
            session,
            channel: Some(channel),
            done,
        }
    }

    fn send(mut self, message: SyncMessage) {
        if let Some(channel) = self.channel.take() {
            let _ = self
                .done
                .send(Done::Served(self.peer, self.session, channel, message));
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take() {
            let refused = SyncMessage::Refused {
                reason: "the node could not answer this request".to_owned(),
            };
            let _ = self
                .done
                .send(Done::Served(self.peer, self.session, channel, refused));
        }
    }
}
