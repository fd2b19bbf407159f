//! Whether a peer is in sync, and when to compare again.
//!
//! A pull compares this node's digest of the logs it shares with a peer against the peer's.
//! The peer is **in sync** only while the last comparison found them equal and nothing since
//! says otherwise: a push to it failed, was refused or skipped (too many in flight), waited
//! for its acknowledgement longer than [`PUSH_LAG`], or a push from it named parents this node
//! lacks. Then a new comparison (a **check**: a pull, whose `Digest` also tells the peer to
//! pull if it lacks something) is scheduled with back-off and jitter while the connection
//! stays up, so a peer that missed pushes catches up without reconnecting. A pull that ends
//! without an equal comparison (this node took what it lacked; whether the peer holds what
//! this node holds is not known) is followed by a check too; one in sync is checked again
//! every [`CHECK_IN_SYNC_EVERY`], the net under everything else.

use super::*;

/// First wait before a check after something went wrong; it doubles up to [`CHECK_MAX_WAIT`].
pub(super) const CHECK_FIRST_WAIT: Duration = Duration::from_millis(500);
/// Longest wait between two checks of a peer that is not in sync.
const CHECK_MAX_WAIT: Duration = Duration::from_secs(10);
/// How often a peer in sync is compared again.
const CHECK_IN_SYNC_EVERY: Duration = Duration::from_secs(60);
/// A push not acknowledged for this long makes its peer not in sync.
pub(super) const PUSH_LAG: Duration = Duration::from_secs(2);

/// `wait`, ±20 %.
fn jittered(wait: Duration) -> Duration {
    use rand_core::RngCore as _;
    let jitter = 0.8 + 0.4 * (f64::from(rand_core::OsRng.next_u32()) / f64::from(u32::MAX));
    wait.mul_f64(jitter)
}

impl PeerState {
    /// Something says the peer may lack what this node holds, or the reverse: not in sync
    /// (and no comparison begun before now may say otherwise), and a check is due after the
    /// current back-off, unless one is due sooner.
    pub(super) fn out_of_sync(&mut self) {
        self.in_sync = false;
        self.dirty += 1;
        let at = Instant::now() + jittered(self.check_backoff.max(CHECK_FIRST_WAIT));
        if self.check_at.is_none_or(|due| due > at) {
            self.check_at = Some(at);
        }
    }

    /// A comparison begun when `dirty` read `dirty_then` found both sides equal: in sync,
    /// unless something said otherwise since it began.
    fn compared_equal(&mut self, dirty_then: u64) -> bool {
        if dirty_then != self.dirty {
            return false;
        }
        self.in_sync = true;
        self.check_backoff = CHECK_FIRST_WAIT;
        // Nothing said otherwise since the comparison began: the next check is the net.
        self.check_at = Some(Instant::now() + jittered(CHECK_IN_SYNC_EVERY));
        true
    }

    /// The next check after a pull that did not end equal: later each time.
    fn check_later(&mut self) {
        self.in_sync = false;
        let wait = self.check_backoff.max(CHECK_FIRST_WAIT);
        self.check_at = Some(Instant::now() + jittered(wait));
        self.check_backoff = (wait * 2).min(CHECK_MAX_WAIT);
    }

    /// Whether the API may call the peer in sync: compared equal, and no push to it waits
    /// for its acknowledgement longer than [`PUSH_LAG`].
    pub(super) fn reported_in_sync(&self) -> bool {
        self.in_sync
            && self
                .pushes_sent
                .keys()
                .next()
                .is_none_or(|sent| sent.elapsed() < PUSH_LAG)
    }

    /// A push sent at `sent` was answered.
    pub(super) fn push_done(&mut self, sent: Instant) {
        if let Some(count) = self.pushes_sent.get_mut(&sent) {
            *count -= 1;
            if *count == 0 {
                self.pushes_sent.remove(&sent);
            }
        }
    }

    /// Pushes awaiting their acknowledgement.
    pub(super) fn pushes_in_flight(&self) -> usize {
        self.pushes_sent.values().sum()
    }
}

impl Service {
    /// Starts a pull from `peer` (one at a time: asked during one, it follows it). With
    /// `ours` (this node's summaries, just read), its digest goes at once.
    pub(super) fn start_pull_with(&mut self, peer: PeerId, ours: Option<Vec<ScopeSummary>>) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(peer_org) = state.org else {
            return;
        };
        if state.pulling {
            state.pull_queued = true;
            return;
        }
        state.pulling = true;
        state.pull_generation += 1;
        state.steps_awaited = 1;
        state.dirty_at_pull = state.dirty;
        state.check_at = None;
        let generation = state.pull_generation;
        if let Some(ours) = ours {
            self.send_digest(peer, ours);
            return;
        }
        let store = self.ingest.store().clone();
        let our_org = self.org;
        let done = self.done_sender.clone();
        tokio::task::spawn_blocking(move || {
            let ours = logs::shared_summaries(&store, our_org, peer_org)
                .inspect_err(|err| warn!(cause = %err, "cannot summarise the store for a peer"))
                .ok();
            let _ = done.send(Done::Ours(peer, generation, ours));
        });
    }

    /// Sends the current pull's digest of `ours`.
    pub(super) fn send_digest(&mut self, peer: PeerId, ours: Vec<ScopeSummary>) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let digest = SyncMessage::Digest {
            n_scopes: ours.len() as u64,
            digest: summaries_digest(&ours),
        };
        state.ours = ours;
        let generation = state.pull_generation;
        self.request(peer, digest, Asked::Digest(generation));
    }

    /// Whether an answer to a step of pull number `generation` is for the current pull.
    pub(super) fn current_pull(&self, peer: PeerId, generation: u64) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|state| state.pulling && state.pull_generation == generation)
    }

    /// The pull from `peer` ended: `equal` when a comparison found both sides equal, else
    /// this node took what it lacked and a check follows.
    pub(super) fn pull_finished(&mut self, peer: PeerId, equal: bool) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if !state.pulling {
            return;
        }
        state.pulling = false;
        state.steps_awaited = 0;
        let dirty_then = state.dirty_at_pull;
        if !(equal && state.compared_equal(dirty_then)) {
            state.check_later();
        }
        if std::mem::take(&mut state.pull_queued) {
            self.start_pull_with(peer, None);
        }
    }

    /// A step of pull number `generation` failed (no answer, refused, wrong): it is tried
    /// again after the back-off, the connection kept. A step of an older pull changes nothing.
    pub(super) fn pull_failed(&mut self, peer: PeerId, generation: u64) {
        if !self.current_pull(peer, generation) {
            return;
        }
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        // Wants already queued go on; the check asks again for whatever is still missing.
        state.pulling = false;
        state.pull_queued = false;
        state.steps_awaited = 0;
        state.check_later();
    }

    /// The wants of `peer` are all answered: the end of a pull if one is under way and no
    /// step of it is still awaited.
    pub(super) fn wants_drained(&mut self, peer: PeerId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.pulling && state.steps_awaited == 0 {
            self.pull_finished(peer, false);
        } else if !state.pulling && !state.in_sync && state.check_at.is_none() {
            state.out_of_sync();
        }
    }

    /// The peer sent its digest (the first step of its own pull, or its check), compared with
    /// `ours` when `dirty` read as it was then: equal means in sync; otherwise this node
    /// pulls too (from `ours`), unless it is pulling already.
    pub(super) fn on_their_digest(
        &mut self,
        peer: PeerId,
        equal: bool,
        dirty: u64,
        ours: Vec<ScopeSummary>,
    ) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if equal {
            state.compared_equal(dirty);
        } else if state.pulling {
            // This pull may end equal from a view older than the peer's: not to be trusted.
            state.out_of_sync();
        } else {
            state.in_sync = false;
            self.start_pull_with(peer, Some(ours));
        }
    }

    /// The peer's `dirty` count now (for a comparison about to begin).
    pub(super) fn dirty_of(&self, peer: PeerId) -> u64 {
        self.peers.get(&peer).map_or(0, |state| state.dirty)
    }

    /// Starts the checks that are due (one pull per peer at a time), and marks peers whose
    /// pushes wait too long.
    pub(super) fn checks_due(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .peers
            .iter_mut()
            .filter_map(|(peer, state)| {
                if state.in_sync && !state.reported_in_sync() {
                    state.out_of_sync();
                }
                state.org?;
                (!state.pulling && state.check_at.is_some_and(|at| at <= now)).then_some(*peer)
            })
            .collect();
        for peer in due {
            self.start_pull_with(peer, None);
        }
    }
}
