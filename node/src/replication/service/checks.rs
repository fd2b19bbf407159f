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
    /// Something says the peer may lack what this node holds, or the reverse: not in sync,
    /// and a check is due after the current back-off (unless one is due sooner).
    pub(super) fn out_of_sync(&mut self) {
        self.in_sync = false;
        let at = Instant::now() + jittered(self.check_backoff.max(CHECK_FIRST_WAIT));
        if self.check_at.is_none_or(|due| due > at) {
            self.check_at = Some(at);
        }
    }

    /// A comparison found both sides equal.
    pub(super) fn compared_equal(&mut self) {
        self.in_sync = true;
        self.check_backoff = CHECK_FIRST_WAIT;
        self.check_at = Some(Instant::now() + jittered(CHECK_IN_SYNC_EVERY));
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
                .oldest_push
                .is_none_or(|sent| sent.elapsed() < PUSH_LAG)
    }
}

impl Service {
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
        if equal {
            state.compared_equal();
        } else {
            state.check_later();
        }
        if std::mem::take(&mut state.pull_queued) {
            if let Some(org) = state.org {
                self.start_pull(peer, org);
            }
        }
    }

    /// A step of the pull from `peer` failed (no answer, refused, wrong): it is tried again
    /// after the back-off, the connection kept.
    pub(super) fn pull_failed(&mut self, peer: PeerId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        // Wants already queued go on; the check asks again for whatever is still missing.
        state.pulling = false;
        state.pull_queued = false;
        state.summaries_in_flight = 0;
        state.check_later();
    }

    /// The wants of `peer` are all answered: the end of a pull if one is under way and no
    /// summary is still awaited.
    pub(super) fn wants_drained(&mut self, peer: PeerId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.pulling && state.summaries_in_flight == 0 {
            self.pull_finished(peer, false);
        } else if !state.pulling && !state.in_sync && state.check_at.is_none() {
            state.out_of_sync();
        }
    }

    /// The peer sent its digest (the first step of its own pull, or its check): equal means
    /// in sync; otherwise this node pulls too, unless it is pulling already.
    pub(super) fn on_their_digest(&mut self, peer: PeerId, equal: bool) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if equal {
            state.compared_equal();
        } else if !state.pulling {
            state.in_sync = false;
            if let Some(org) = state.org {
                self.start_pull(peer, org);
            }
        } else {
            state.in_sync = false;
        }
    }

    /// Starts the checks that are due (one pull per peer at a time), and marks peers whose
    /// pushes wait too long.
    pub(super) fn checks_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(PeerId, OrgId)> = self
            .peers
            .iter_mut()
            .filter_map(|(peer, state)| {
                if state.in_sync && !state.reported_in_sync() {
                    state.out_of_sync();
                }
                let org = state.org?;
                (!state.pulling && state.check_at.is_some_and(|at| at <= now))
                    .then_some((*peer, org))
            })
            .collect();
        for (peer, org) in due {
            self.start_pull(peer, org);
        }
    }
}
