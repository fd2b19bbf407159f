//! Who may sync: hellos checked, partners' certificates, penalties and blocks, revoked peers dropped.

use super::*;

impl Service {
    /// Checks a peer's `Hello`. Refused: the reason, and the penalty (none for a valid node of
    /// an org that is not a partner: it is only disconnected).
    pub(super) fn verify_hello(
        &mut self,
        peer: PeerId,
        certificate: &Certificate,
    ) -> Result<OrgId, (String, u32)> {
        let revoked_from = self
            .ingest
            .directory()
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .certificates()
            .revoked_from(&certificate.body.subject);
        let org = check_peer_certificate(certificate, &peer, self.org, revoked_from, Self::now())
            .map_err(|reason| (reason, PENALTY_LIMIT))?;
        if org != self.org && !self.partners.contains(&org) {
            return Err((
                format!("org {org} is not a partner of this org (`threadline partner add {org}`)"),
                0,
            ));
        }
        Ok(org)
    }

    pub(super) fn refuse_hello(&mut self, peer: PeerId, reason: &str, points: u32) {
        warn!(%peer, reason, "refused a peer's Hello");
        if points > 0 {
            self.penalise(peer, points, reason);
        } else {
            self.peers.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Token bucket per peer: [`REQUESTS_PER_SECOND`], bursts of twice that.
    pub(super) fn allow_request(&mut self, peer: PeerId) -> bool {
        let state = self.peers.entry(peer).or_default();
        let now = Instant::now();
        let burst = 2.0 * REQUESTS_PER_SECOND;
        state.allowance = match state.last_request {
            None => burst,
            Some(last) => (state.allowance
                + now.duration_since(last).as_secs_f64() * REQUESTS_PER_SECOND)
                .min(burst),
        };
        state.last_request = Some(now);
        if state.allowance >= 1.0 {
            state.allowance -= 1.0;
            true
        } else {
            false
        }
    }

    /// A peer's certificate checked out: pull from it, once per connection.
    pub(super) fn accept(&mut self, peer: PeerId, org: OrgId) {
        let state = self.peers.entry(peer).or_default();
        if state.org.is_none() {
            info!(%peer, %org, "peer connected");
        }
        state.org = Some(org);
        if !state.pull_started {
            state.pull_started = true;
            self.send_certificates(peer, org);
            self.start_pull_with(peer, None);
        }
    }

    /// Sends a peer the certificates it may need for shared threads: to a partner, this org's;
    /// to a node of this org, the partners' this node knows.
    pub(super) fn send_certificates(&mut self, peer: PeerId, peer_org: OrgId) {
        let certificates: Vec<Certificate> = if peer_org == self.org {
            match self.ingest.store().partner_certificates() {
                Ok(certificates) => certificates,
                Err(err) => {
                    warn!(cause = %err, "cannot read partner certificates");
                    return;
                }
            }
        } else {
            self.ingest
                .directory()
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .state()
                .certificates
                .values()
                .flatten()
                // A certificate scoped to one customer's handle names that customer.
                .filter(|c| {
                    !matches!(
                        c.body.role,
                        CertRole::Bridge {
                            handle_scope: Some(_),
                            ..
                        }
                    )
                })
                .cloned()
                .collect()
        };
        if !certificates.is_empty() {
            self.request(
                peer,
                SyncMessage::Certificates { certificates },
                Asked::Certificates,
            );
        }
    }

    /// Disconnects the nodes of orgs that are no longer partners (`threadline partner
    /// remove`): they get nothing more, and are refused if they come back.
    pub(super) fn drop_former_partners(&mut self) {
        let former: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, state)| {
                state
                    .org
                    .is_some_and(|org| org != self.org && !self.partners.contains(&org))
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in former {
            info!(%peer, "its org is no longer a partner; disconnecting it");
            self.peers.remove(&peer);
            self.asked.retain(|_, (to, _)| *to != peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Disconnects peers whose keys were just revoked.
    pub(super) fn drop_revoked(&mut self) {
        let directory = self
            .ingest
            .directory()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Self::now();
        let revoked: Vec<PeerId> = self
            .peers
            .keys()
            .filter(|peer| {
                peer_key(peer)
                    .and_then(|key| directory.certificates().revoked_from(&key))
                    .is_some_and(|from| from <= now)
            })
            .copied()
            .collect();
        drop(directory);
        for peer in revoked {
            info!(%peer, "the peer's key was revoked; disconnecting it");
            self.block(peer, Duration::from_secs(u64::MAX / 4));
        }
    }

    pub(super) fn penalise(&mut self, peer: PeerId, points: u32, reason: &str) {
        // A peer that already went keeps no state (and no points) here.
        let total = match self.peers.get_mut(&peer) {
            Some(state) => {
                state.penalty = state.penalty.saturating_add(points);
                state.penalty
            }
            None => points,
        };
        warn!(%peer, points, total, reason, "peer penalised");
        if total >= PENALTY_LIMIT {
            warn!(%peer, "disconnecting and blocking the peer for {} s", BLOCK_FOR.as_secs());
            self.block(peer, BLOCK_FOR);
        }
    }

    pub(super) fn block(&mut self, peer: PeerId, duration: Duration) {
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
        self.peers.remove(&peer);
        self.blocked_until.insert(
            peer,
            Instant::now()
                .checked_add(duration)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600)),
        );
    }

    pub(super) fn unblock_due(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .blocked_until
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            self.blocked_until.remove(&peer);
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
    }
}
