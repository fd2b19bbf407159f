//! Whom to dial and when, and the status the API shows.

use super::*;

impl Service {
    /// Reads the configured peers and partners, and their files, into the dial targets and
    /// the partner set.
    pub(super) fn load_targets(&mut self) {
        let mut partners: HashSet<OrgId> = self.configured_partners.iter().copied().collect();
        let mut read = true;
        if let Some(path) = &self.partners_file {
            match DataDir::try_read_list(path) {
                Ok(lines) => {
                    partners.extend(lines.iter().filter_map(|line| line.parse::<OrgId>().ok()))
                }
                Err(err) => {
                    // Not read this time: the partners stay what they were (a failed read is
                    // no removal).
                    warn!(cause = %err, path = %path.display(), "cannot read the partners file");
                    read = false;
                }
            }
        }
        if read && partners != self.partners {
            self.partners = partners;
            self.drop_former_partners();
        }
        let mut addresses = self.configured.clone();
        if let Some(path) = &self.peers_file {
            addresses.extend(
                DataDir::read_list(path)
                    .iter()
                    .filter_map(|line| line.parse::<Multiaddr>().ok()),
            );
        }
        // The last address given for a peer wins (the peers file after the config).
        let mut latest: HashMap<PeerId, Multiaddr> = HashMap::new();
        for address in addresses {
            let Some(peer) = peer_of(&address) else {
                continue;
            };
            if peer != *self.swarm.local_peer_id() {
                latest.insert(peer, address);
            }
        }
        for (peer, address) in latest {
            match self.targets.get_mut(&peer) {
                // A peer given a new address (it moved: `threadline peer add` again) is dialled
                // there from now on, at once.
                Some(target) if target.address != address => {
                    target.address = address;
                    target.next_dial = Instant::now();
                    target.backoff = Duration::from_secs(1);
                }
                Some(_) => {}
                None => {
                    self.targets.insert(
                        peer,
                        Target {
                            address,
                            next_dial: Instant::now(),
                            backoff: Duration::from_secs(1),
                        },
                    );
                }
            }
        }
    }

    pub(super) fn dial_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(PeerId, Multiaddr)> = self
            .targets
            .iter()
            .filter(|(peer, target)| {
                target.next_dial <= now
                    && !self.swarm.is_connected(peer)
                    && !self.blocked_until.contains_key(peer)
            })
            .map(|(peer, target)| (*peer, target.address.clone()))
            .collect();
        for (peer, address) in due {
            if let Err(err) = self.swarm.dial(address.clone()) {
                debug!(%peer, cause = %err, "cannot dial");
            }
            if let Some(target) = self.targets.get_mut(&peer) {
                target.next_dial = now + target.backoff;
                target.backoff = (target.backoff * 2).min(MAX_REDIAL);
            }
        }
    }

    pub(super) fn publish_status(&self) {
        let mut peers: Vec<PeerView> = self
            .peers
            .iter()
            .map(|(peer, state)| PeerView {
                peer_id: peer.to_string(),
                org: state.org.map(|org| org.to_string()),
                in_sync: state.reported_in_sync(),
                connected_at: state.connected_at,
                penalty: state.penalty,
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        self.status.set(StatusView {
            peer_id: self.swarm.local_peer_id().to_string(),
            listening: self.listening.iter().map(ToString::to_string).collect(),
            peers,
        });
    }
}
