//! Pushing live events to peers, and taking theirs in: checked, stored, origins remembered.

use super::*;

impl Service {
    /// Stores a peer's events (from a `Want`) through the pipeline.
    pub(super) fn store_events(
        &mut self,
        peer: PeerId,
        scope: ScopeId,
        events: Vec<Event>,
        complete: bool,
    ) {
        let Some(peer_org) = self.peers.get(&peer).and_then(|s| s.org) else {
            return;
        };
        let scopes = match self.check_events(&events, peer_org, Some(scope)) {
            Ok(scopes) => scopes,
            Err(reason) => {
                self.penalise(peer, PENALTY_LIMIT, &reason);
                self.want_done(peer, scope);
                return;
            }
        };
        self.remember_origins(peer, &events);
        let reached = events
            .iter()
            .map(|event| event.signed.header.depth)
            .max()
            .unwrap_or(0);
        let ingest = self.ingest.clone();
        let done = self.done_sender.clone();
        tokio::spawn(async move {
            let results = ingest.submit_from(events, Source::Peer).await;
            let verdict = judge(&results, &scopes);
            let _ = done.send(Done::Stored {
                peer,
                scope,
                reached,
                complete,
                verdict,
            });
        });
    }

    pub(super) fn on_push(
        &mut self,
        peer: PeerId,
        peer_org: OrgId,
        events: Vec<Event>,
        channel: ResponseChannel<SyncMessage>,
    ) {
        // A partner's push of a thread this node does not hold yet (just shared with this
        // org): pull it whole instead, so that it comes only if the partner shares it.
        let mut events = events;
        if peer_org != self.org {
            let store = self.ingest.store();
            let mut unknown = Vec::new();
            events.retain(|event| match scope_of(event) {
                Some(scope @ ScopeId::Thread(thread)) => {
                    let held = matches!(store.thread_state(&thread), Ok(Some(_)));
                    if !held {
                        unknown.push(scope);
                    }
                    held
                }
                _ => true,
            });
            unknown.sort();
            unknown.dedup();
            for scope in unknown {
                self.want(peer, scope);
            }
        }
        let scopes = match self.check_events(&events, peer_org, None) {
            Ok(scopes) => scopes,
            Err(reason) => {
                self.refuse(channel, &reason);
                self.penalise(peer, PENALTY_LIMIT, &reason);
                return;
            }
        };
        self.remember_origins(peer, &events);
        let ingest = self.ingest.clone();
        let done = self.done_sender.clone();
        tokio::spawn(async move {
            let results = ingest.submit_from(events, Source::Peer).await;
            let verdict = judge(&results, &scopes);
            let _ = done.send(Done::Pushed {
                peer,
                verdict,
                channel,
            });
        });
    }

    /// The logs of a peer's events, or why it may not send them: a log it may not hold
    /// (another org's directory, a thread its org is not a member of), or another log than
    /// the one asked for.
    pub(super) fn check_events(
        &self,
        events: &[Event],
        peer_org: OrgId,
        expected: Option<ScopeId>,
    ) -> Result<Vec<ScopeId>, String> {
        let store = self.ingest.store();
        let mut checked: HashSet<ScopeId> = HashSet::new();
        let mut scopes = Vec::with_capacity(events.len());
        for event in events {
            let scope = scope_of(event).ok_or("an event that cannot be encoded")?;
            scopes.push(scope);
            if expected.is_some_and(|expected| expected != scope) {
                return Err(format!("an event of {scope} among events of another log"));
            }
            if !checked.insert(scope) {
                continue;
            }
            let allowed = match scope {
                ScopeId::Directory(org) => org == self.org && peer_org == self.org,
                // A known thread from its members; a new one from this org's nodes, or from a
                // partner in answer to a `Want` (it sends only what it shares with this org).
                // A known thread: the auth rules judge membership, as of each event's causal
                // past (a member removed meanwhile may still send what it wrote before).
                ScopeId::Thread(thread) => match store.thread_state(&thread) {
                    Ok(Some(_)) => true,
                    Ok(None) => peer_org == self.org || expected == Some(scope),
                    Err(_) => false,
                },
            };
            if !allowed {
                return Err(format!("an event of {scope}, which that peer may not hold"));
            }
        }
        Ok(scopes)
    }

    /// A push to `peer` sent at `sent` was acknowledged (`taken`) or not (failed, refused):
    /// not taken, the peer is out of sync until a check.
    pub(super) fn push_answered(&mut self, peer: PeerId, sent: Instant, taken: bool) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.push_done(sent);
        if !taken {
            state.out_of_sync();
        }
    }

    pub(super) fn remember_origins(&mut self, peer: PeerId, events: &[Event]) {
        if self.origins.len() > ORIGINS_KEPT {
            self.origins.clear();
        }
        for event in events {
            if let Ok(id) = event.id() {
                self.origins.insert(id, peer);
            }
        }
    }

    /// Pushes what was just stored to every peer that may hold it.
    pub(super) fn push_live(&mut self, changes: Vec<LiveEvent>) {
        let peers: Vec<(PeerId, OrgId)> = self
            .peers
            .iter()
            .filter_map(|(peer, state)| Some((*peer, state.org?)))
            .collect();
        if peers.is_empty() {
            return;
        }
        let store = self.ingest.store().clone();
        let mut members: HashMap<ScopeId, Option<std::collections::BTreeSet<OrgId>>> =
            HashMap::new();
        let mut outgoing: HashMap<PeerId, Vec<Event>> = HashMap::new();
        let mut revoked = false;
        for change in changes {
            if change.kind == "directory.revoke" {
                revoked = true;
            }
            let Ok(Some(event)) = store.event(&change.scope, &change.event) else {
                continue;
            };
            let scope_members = members
                .entry(change.scope)
                .or_insert_with(|| match change.scope {
                    ScopeId::Thread(thread) => store
                        .thread_state(&thread)
                        .ok()
                        .flatten()
                        .map(|state| state.members),
                    ScopeId::Directory(_) => None,
                });
            let origin = self.origins.get(&change.event).copied();
            // The org a thread stops being shared with learns it.
            let removed = match &event.signed.header.kind {
                threadline_protocol::EventKind::Thread(
                    threadline_protocol::event::ThreadKind::MemberRemove { org },
                ) => Some(*org),
                _ => None,
            };
            for (peer, peer_org) in &peers {
                if origin == Some(*peer) {
                    continue;
                }
                if removed == Some(*peer_org)
                    || logs::may_share(&change.scope, self.org, *peer_org, scope_members.as_ref())
                {
                    outgoing.entry(*peer).or_default().push(event.clone());
                }
            }
        }
        for (peer, events) in outgoing {
            let mut batches = Vec::new();
            let mut batch = Vec::new();
            let mut bytes = 0;
            for event in events {
                let size = threadline_protocol::codec::encode(&event)
                    .map(|b| b.len())
                    .unwrap_or(0);
                if !batch.is_empty() && bytes + size > PUSH_BYTES {
                    batches.push(std::mem::take(&mut batch));
                    bytes = 0;
                }
                bytes += size;
                batch.push(event);
            }
            if !batch.is_empty() {
                batches.push(batch);
            }
            for events in batches {
                let Some(state) = self.peers.get_mut(&peer) else {
                    break;
                };
                if state.pushes_in_flight() >= PUSHES_IN_FLIGHT {
                    // It cannot keep up: the check tells it to pull instead.
                    state.out_of_sync();
                    break;
                }
                let sent = Instant::now();
                *state.pushes_sent.entry(sent).or_default() += 1;
                self.request(peer, SyncMessage::Push { events }, Asked::Push(sent));
            }
        }
        if revoked {
            self.drop_revoked();
        }
    }
}
