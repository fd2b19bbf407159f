//! The replication service: one task that owns the swarm, talks the sync protocol with every
//! connected peer, and feeds what it receives into the ingest pipeline like any other source.
//!
//! Per connected peer:
//! 1. both sides send `Hello` with their node certificate; a peer whose certificate is not of
//!    this org, not for the key the connection proved, expired or revoked is refused and
//!    disconnected;
//! 2. each side pulls what it lacks: `Digest` (one exchange when in sync), then `Buckets`,
//!    `SummaryOf` the differing buckets, and a `Want` per differing log (the directory first,
//!    so certificates arrive before the events that need them), repeated until `complete`;
//! 3. while connected, each event this node stores is pushed to every peer that may hold it
//!    (not back to the peer it came from);
//! 4. the attachment bytes that events from peers refer to are fetched from peers that may
//!    share them ([`super::blobs`]), checked against their hash, and stored.
//!
//! A peer that sends forged events, events of logs it may not hold, garbage frames, or fails
//! to redeem an invite is penalised; at [`PENALTY_LIMIT`] it is disconnected and blocked for
//! [`BLOCK_FOR`]. Nothing it sent is stored unless it passed verification and the auth rules.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use libp2p::{
    multiaddr::Protocol,
    request_response::{self, OutboundRequestId, ResponseChannel},
    swarm::SwarmEvent,
    Multiaddr, PeerId, Swarm,
};
use threadline_protocol::{
    cert::{CertRole, Certificate, CertificateBody},
    event::Scope,
    id::BlobHash,
    sync::{
        bucket_digests, summaries_digest, ScopeSummary, SyncMessage, MAX_BLOB_CHUNK_BYTES,
        MAX_EVENTS_PER_WANT, N_BUCKETS,
    },
    Event, EventId, OrgId, PublicKey, ScopeId, ThreadId, Timestamp,
};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

use super::blobs::{BlobFetches, Chunk};
use super::{invite, logs, NodeBehaviour, NodeBehaviourEvent, ReplicationError};
use crate::data_dir::{DataDir, NODE_CERT_VALIDITY_MILLIS};
use crate::identity::peer_of;
use crate::ingest::{DirectoryAction, Ingest, IngestError, LiveEvent, Source, Submitted};
use crate::replication_status::{PeerView, Status, StatusView};

mod blob_fetch;
mod checks;
mod dial;
mod peers;
mod pull;
mod push;
mod serve;

/// Penalty points at which a peer is disconnected and blocked.
pub const PENALTY_LIMIT: u32 = 100;
/// How long a blocked peer stays blocked.
pub const BLOCK_FOR: Duration = Duration::from_secs(60);
/// `Want`s in flight per peer.
const WANTS_IN_FLIGHT: usize = 8;
/// Longest wait between two dials of a configured peer.
const MAX_REDIAL: Duration = Duration::from_secs(30);
/// Events pushed in one `Push` at most (bounded by the frame size too).
const PUSH_BATCH: usize = 512;
/// Bytes of events in one `Push` at most.
const PUSH_BYTES: usize = 4 << 20;
/// Events remembered with the peer they came from (not pushed back to it).
const ORIGINS_KEPT: usize = 100_000;
/// Requests a peer may make per second, on average (bursts of twice that). Beyond it, its
/// requests are refused and it is penalised: a flood. An honest peer pushes once per group
/// commit, and asks at most a few `Want`s at once: far below this.
pub const REQUESTS_PER_SECOND: f64 = 5_000.0;
/// Buckets asked for in one `SummaryOf`: 16 of 256 is 1/16 of the logs, ~67 bytes each, so an
/// answer fits its 8 MiB frame up to about 2 million shared threads.
const SUMMARY_BUCKETS_PER_REQUEST: usize = 16;
/// Bridge keys a joining node may have certified (one per channel).
const MAX_JOIN_BRIDGES: usize = 9;
/// Missing blobs read per look (those nobody has wait their turn in [`BlobFetches`] without
/// holding up the others).
const MISSING_BLOBS_READ: usize = 4096;
/// Rounds of a `Want` that bring nothing new before the log is given up with that peer.
const STALLS_ALLOWED: u32 = 3;
/// A peer's requests that read much of the store (summaries, a log, a blob) served at once.
const SERVING_PER_PEER: usize = 4;
/// More of them waiting their turn; beyond, they are refused as busy.
const SERVE_QUEUE_PER_PEER: usize = 64;
/// Pushes in flight per peer. Beyond it, what would be pushed is left for the peer to pull
/// (it is told to by a check, [`checks`]): a peer that cannot keep up (paused, slow, far) gets
/// one pull instead of a pile of streams it would drop (libp2p takes 100 at once per
/// connection).
const PUSHES_IN_FLIGHT: usize = 32;

/// What the service is told at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to keep connected (each ending in `/p2p/<PeerId>`).
    pub peers: Vec<Multiaddr>,
    /// A file of more peers, one multiaddr a line (`threadline peer add`), re-read every few
    /// seconds.
    pub peers_file: Option<PathBuf>,
    /// Find peers on the LAN with mDNS.
    pub mdns: bool,
    /// Orgs whose nodes may connect as partners (to get the threads shared with them).
    pub partners: Vec<OrgId>,
    /// A file of more partner orgs, one org id a line (`threadline partner add`), re-read every
    /// few seconds.
    pub partners_file: Option<PathBuf>,
}

/// What this node asked a peer (to read the answer).
#[derive(Debug, Clone)]
enum Asked {
    Hello,
    /// The steps of pull number `.0` with that peer (an answer to an older pull is dropped).
    Digest(u64),
    Buckets(u64),
    SummaryOf(u64),
    Want(ScopeId),
    /// When it was sent.
    Push(Instant),
    Certificates,
    Blob(BlobHash),
}

#[derive(Debug, Default)]
struct PeerState {
    /// The peer's org, once its certificate was checked.
    org: Option<OrgId>,
    hello_sent: bool,
    pull_started: bool,
    /// When the connection was made (ms since the epoch), for the API.
    connected_at: u64,
    /// This connection's number (work started for an earlier one does not count here).
    session: u64,
    /// The last comparison found both sides equal, and nothing since says otherwise
    /// ([`checks`]).
    in_sync: bool,
    /// A pull (digest, buckets, summaries, wants) is under way.
    pulling: bool,
    /// The number of the current (or last) pull: its requests carry it.
    pull_generation: u64,
    /// Another pull is wanted when this one ends (certificates came that events waited for).
    pull_queued: bool,
    /// Answers the pull still awaits before its wants decide its end: 1 from the start to the
    /// `Buckets` answer, then one per `SummaryOf`.
    steps_awaited: usize,
    /// Counts what made the peer out of sync ([`checks`]); a comparison made before the last
    /// such change cannot say "equal".
    dirty: u64,
    /// `dirty` when the current pull started.
    dirty_at_pull: u64,
    /// When the next check is due.
    check_at: Option<Instant>,
    /// The wait before the next check after this one (doubles while not in sync).
    check_backoff: Duration,
    /// Pushes awaiting their acknowledgement, by when they were sent.
    pushes_sent: BTreeMap<Instant, usize>,
    /// This node's summaries for the peer, made when the pull started.
    ours: Vec<ScopeSummary>,
    /// The peer's heavy requests being served, and those waiting their turn ([`serve`]).
    serving: usize,
    serve_queue: VecDeque<(SyncMessage, ResponseChannel<SyncMessage>)>,
    wants: VecDeque<ScopeId>,
    wanted: HashSet<ScopeId>,
    wants_in_flight: usize,
    /// Logs whose `Want` is in flight and must be asked again when it completes (a push with
    /// unknown parents came meanwhile).
    rewant: HashSet<ScopeId>,
    /// Where the next `Want` of a log starts (the depth its last incomplete answer reached),
    /// so a holder that does not know this node's heads still makes progress.
    from_depth: HashMap<ScopeId, u64>,
    stalls: HashMap<ScopeId, u32>,
    /// Logs the peer pushed events of whose parents this node lacks: it must send them.
    owed: HashSet<ScopeId>,
    /// Requests it may still make this second (see [`REQUESTS_PER_SECOND`]).
    allowance: f64,
    last_request: Option<Instant>,
    penalty: u32,
}

/// How a batch of a peer's events went.
#[derive(Debug, Default)]
struct Verdict {
    stored: usize,
    /// Logs with events that could not enter yet (unknown parents or thread): pull them.
    missing: Vec<ScopeId>,
    /// Penalty points and why.
    penalty: u32,
    reason: Option<String>,
}

/// Work done off the loop, brought back to it.
enum Done {
    Respond(ResponseChannel<SyncMessage>, SyncMessage),
    /// The answer to a heavy request of the peer's connection number `.1` ([`serve`]): its
    /// next may start.
    Served(PeerId, u64, ResponseChannel<SyncMessage>, SyncMessage),
    RespondAndPenalise(
        ResponseChannel<SyncMessage>,
        SyncMessage,
        PeerId,
        u32,
        String,
    ),
    /// This node's summaries for pull number `.1` with the peer (`None`: the store could
    /// not be read).
    Ours(PeerId, u64, Option<Vec<ScopeSummary>>),
    /// The peer's digest (its request) compared with this node's summaries: equal or not,
    /// with the peer's `dirty` count when it asked.
    TheirDigest {
        peer: PeerId,
        session: u64,
        equal: bool,
        dirty: u64,
        ours: Vec<ScopeSummary>,
    },
    WantReady(PeerId, SyncMessage),
    Stored {
        peer: PeerId,
        scope: ScopeId,
        /// The deepest event of the answer.
        reached: u64,
        complete: bool,
        verdict: Verdict,
    },
    Pushed {
        peer: PeerId,
        verdict: Verdict,
        channel: ResponseChannel<SyncMessage>,
    },
    /// A peer's certificates were taken; new partner ones go on to this org's nodes.
    CertificatesTaken(ResponseChannel<SyncMessage>, Vec<Certificate>, usize),
    /// A fetched blob was checked and stored (or its bytes did not match its hash).
    BlobStored {
        peer: PeerId,
        blob: BlobHash,
        result: Result<(), String>,
        /// The peer sent bytes that are not the blob.
        forged: bool,
    },
    /// The blobs still missing, read from the store (by the read of this generation).
    MissingBlobs(u64, MissingWindow, Vec<(BlobHash, u64)>),
}

/// Which part of the missing blobs a read covered.
#[derive(Debug, Clone, Copy)]
struct MissingWindow {
    /// It started at the first.
    from_start: bool,
    /// The last it listed.
    last: Option<BlobHash>,
    /// It reached the last.
    to_end: bool,
}

struct Target {
    address: Multiaddr,
    next_dial: Instant,
    backoff: Duration,
}

struct Service {
    swarm: Swarm<NodeBehaviour>,
    ingest: Ingest,
    data_dir: DataDir,
    org: OrgId,
    certificate: Certificate,
    peers: HashMap<PeerId, PeerState>,
    asked: HashMap<OutboundRequestId, (PeerId, Asked)>,
    targets: HashMap<PeerId, Target>,
    configured: Vec<Multiaddr>,
    peers_file: Option<PathBuf>,
    blocked_until: HashMap<PeerId, Instant>,
    configured_partners: Vec<OrgId>,
    partners_file: Option<PathBuf>,
    partners: HashSet<OrgId>,
    origins: HashMap<EventId, PeerId>,
    done_sender: mpsc::UnboundedSender<Done>,
    listening: Vec<Multiaddr>,
    status: Status,
    blob_fetches: BlobFetches,
    /// A read of the missing blobs is under way.
    reading_missing: bool,
    /// Where the next read of the missing blobs starts (they are read a window at a time).
    missing_after: Option<BlobHash>,
    /// Connections made so far (each peer's current one is numbered by it).
    sessions: u64,
}

/// Starts replication: builds the swarm and listens (errors here stop the node from
/// starting), and returns the task that runs it until the node closes.
pub fn start(
    ingest: Ingest,
    data_dir: DataDir,
    settings: Settings,
) -> Result<impl std::future::Future<Output = ()>, ReplicationError> {
    let identity = ingest.identity().clone();
    let mut swarm = super::swarm(&identity.node_key, settings.mdns)?;
    for address in &settings.listen {
        swarm.listen_on(address.clone()).map_err(|err| {
            ReplicationError::Transport(format!("cannot listen on {address}: {err}"))
        })?;
    }
    let status = ingest.replication().clone();
    Ok(run(ingest, data_dir, settings, status, swarm))
}

async fn run(
    ingest: Ingest,
    data_dir: DataDir,
    settings: Settings,
    status: Status,
    swarm: Swarm<NodeBehaviour>,
) {
    let identity = ingest.identity().clone();
    let (done_sender, mut done) = mpsc::unbounded_channel();
    let mut service = Service {
        swarm,
        org: identity.org,
        certificate: identity.node_cert.clone(),
        ingest: ingest.clone(),
        data_dir,
        peers: HashMap::new(),
        asked: HashMap::new(),
        targets: HashMap::new(),
        configured: settings.peers,
        peers_file: settings.peers_file,
        blocked_until: HashMap::new(),
        configured_partners: settings.partners,
        partners_file: settings.partners_file,
        partners: HashSet::new(),
        origins: HashMap::new(),
        done_sender,
        listening: Vec::new(),
        status,
        blob_fetches: BlobFetches::default(),
        reading_missing: false,
        missing_after: None,
        sessions: 0,
    };
    service.load_targets();
    let mut live = ingest.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    let mut check_tick = tokio::time::interval(Duration::from_millis(250));
    check_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = service.swarm.select_next_some() => service.on_swarm_event(event),
            Some(done) = done.recv() => service.on_done(done),
            change = live.recv() => match change {
                Ok(change) => {
                    let mut changes = vec![change];
                    while changes.len() < PUSH_BATCH {
                        match live.try_recv() {
                            Ok(change) => changes.push(change),
                            Err(_) => break,
                        }
                    }
                    service.push_live(changes);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "replication fell behind the live stream; pulling from every peer");
                    service.pull_again();
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = check_tick.tick() => service.checks_due(),
            _ = tick.tick() => {
                ticks += 1;
                if ticks.is_multiple_of(5) {
                    service.load_targets();
                }
                service.dial_due();
                service.unblock_due();
                if ticks.is_multiple_of(5) {
                    // New ones are asked for when their events arrive; this is the retry.
                    service.fetch_blobs();
                }
                service.publish_status();
            }
            () = ingest.closing() => break,
        }
    }
    debug!("replication stops");
}

/// The ed25519 key a PeerId embeds (ed25519 PeerIds carry the key itself).
pub fn peer_key(peer: &PeerId) -> Option<PublicKey> {
    let multihash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let key = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let ed25519 = key.try_into_ed25519().ok()?;
    PublicKey::from_bytes(&ed25519.to_bytes()).ok()
}

/// Checks a peer's node certificate: signed by its org, for the key the connection proved,
/// valid now, and (for a node of this org) not revoked. A node of another org is a partner: it
/// gets the threads shared with its org and nothing else.
pub fn check_peer_certificate(
    certificate: &Certificate,
    peer: &PeerId,
    org: OrgId,
    revoked_from: Option<Timestamp>,
    now: Timestamp,
) -> Result<OrgId, String> {
    certificate.verify().map_err(|err| err.to_string())?;
    let body = &certificate.body;
    if crate::identity::peer_id(&body.subject).ok().as_ref() != Some(peer) {
        return Err("the certificate is for another key than the connection's".to_owned());
    }
    if body.role != CertRole::Node {
        return Err("the certificate is not a node certificate".to_owned());
    }
    // A certificate issued a moment ago by a node whose clock runs ahead is valid here too.
    let skewed = now.saturating_add_millis(threadline_protocol::limits::MAX_CLOCK_SKEW_MILLIS);
    if !certificate.is_valid_at(now) && !certificate.is_valid_at(skewed) {
        return Err("the certificate is not valid now".to_owned());
    }
    if body.org == org && revoked_from.is_some_and(|from| from <= now) {
        return Err("the node's key is revoked".to_owned());
    }
    Ok(body.org)
}

impl Service {
    fn now() -> Timestamp {
        crate::clock::now()
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<NodeBehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address
                    .clone()
                    .with(Protocol::P2p(*self.swarm.local_peer_id()));
                info!(address = %full, "replication listening");
                self.listening.push(full);
                self.publish_status();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                if let Some(target) = self.targets.get_mut(&peer_id) {
                    target.backoff = Duration::from_secs(1);
                }
                let state = self.peers.entry(peer_id).or_default();
                if state.connected_at == 0 {
                    state.connected_at = Self::now().as_millis();
                    self.sessions += 1;
                    state.session = self.sessions;
                }
                if num_established.get() == 1 && !state.hello_sent {
                    state.hello_sent = true;
                    let hello = SyncMessage::Hello {
                        certificate: self.certificate.clone(),
                    };
                    self.request(peer_id, hello, Asked::Hello);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                debug!(peer = %peer_id, "peer disconnected");
                self.peers.remove(&peer_id);
                self.asked.retain(|_, (peer, _)| *peer != peer_id);
                self.blob_fetches.peer_gone(peer_id);
                self.publish_status();
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, cause = %error, "dial failed");
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Sync(event)) => self.on_sync_event(event),
            SwarmEvent::Behaviour(NodeBehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(
                found,
            ))) => {
                for (peer, address) in found {
                    if peer != *self.swarm.local_peer_id() && !self.targets.contains_key(&peer) {
                        debug!(%peer, %address, "found a peer on the LAN");
                        self.targets.insert(
                            peer,
                            Target {
                                address: address.with(Protocol::P2p(peer)),
                                next_dial: Instant::now(),
                                backoff: Duration::from_secs(1),
                            },
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn on_sync_event(&mut self, event: request_response::Event<super::Frame, SyncMessage>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request: super::Frame::Message(request),
                    channel,
                    ..
                } => self.on_request(peer, request, channel),
                request_response::Message::Request {
                    request: super::Frame::Unreadable(reason),
                    channel,
                    ..
                } => {
                    self.refuse(channel, "unreadable frame");
                    self.penalise(peer, 50, &format!("an unreadable request: {reason}"));
                }
                request_response::Message::Request {
                    request: super::Frame::Newer(tag),
                    channel,
                    ..
                } => {
                    // A newer node's question: no offence (the request budget still counts).
                    debug!(%peer, tag, "a request of a newer protocol; refused");
                    if self.allow_request(peer) {
                        self.refuse(channel, "a request this node does not know (it is older)");
                    } else {
                        self.refuse(channel, "too many requests");
                        self.penalise(peer, 10, "a flood of requests");
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some((peer, asked)) = self.asked.remove(&request_id) {
                        self.on_response(peer, asked, response);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let asked = self.asked.remove(&request_id);
                // Not the peer's fault for sure (our own stream limits and timeouts end up
                // here too): no penalty; the step is tried again by a check.
                debug!(%peer, cause = %error, "a sync request failed");
                match asked {
                    Some((_, Asked::Blob(blob))) => self.blob_fetches.not_from(peer, blob),
                    Some((_, Asked::Want(scope))) => {
                        if let Some(state) = self.peers.get_mut(&peer) {
                            state.out_of_sync();
                        }
                        self.want_done(peer, scope);
                    }
                    Some((_, Asked::Push(sent))) => self.push_answered(peer, sent, false),
                    Some((_, Asked::Digest(n) | Asked::Buckets(n) | Asked::SummaryOf(n))) => {
                        self.pull_failed(peer, n)
                    }
                    Some((_, Asked::Hello | Asked::Certificates)) | None => {}
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                if let request_response::InboundFailure::Io(err) = &error {
                    self.penalise(peer, 50, &format!("unreadable request: {err}"));
                }
                debug!(%peer, cause = %error, "a sync request from a peer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::MissingBlobs(generation, window, missing) => {
                self.start_blob_fetches(generation, window, missing)
            }
            Done::BlobStored {
                peer,
                blob,
                result,
                forged,
            } => match result {
                Ok(()) => {
                    debug!(%peer, %blob, "blob stored");
                    self.blob_fetches.stored(blob, true);
                    self.fetch_blobs();
                }
                Err(err) if forged => {
                    self.blob_fetches.stored(blob, false);
                    self.blob_fetches.bad_bytes(peer, blob);
                    self.penalise(peer, PENALTY_LIMIT, &format!("forged blob bytes: {err}"));
                }
                Err(err) => {
                    self.blob_fetches.stored(blob, false);
                    warn!(%blob, cause = %err, "cannot store a fetched blob");
                }
            },
            Done::Respond(channel, message) => self.respond(channel, message),
            Done::Served(peer, session, channel, message) => {
                self.respond(channel, message);
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|state| state.session == session)
                {
                    self.served(peer);
                }
            }
            Done::TheirDigest {
                peer,
                session,
                equal,
                dirty,
                ours,
            } => {
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|state| state.session == session)
                {
                    self.on_their_digest(peer, equal, dirty, ours);
                }
            }
            Done::RespondAndPenalise(channel, message, peer, points, reason) => {
                self.respond(channel, message);
                self.penalise(peer, points, &reason);
            }
            Done::Ours(peer, generation, ours) => {
                let Some(state) = self.peers.get_mut(&peer) else {
                    return;
                };
                if !state.pulling || state.pull_generation != generation {
                    return;
                }
                match ours {
                    Some(ours) => self.send_digest(peer, ours),
                    None => self.pull_failed(peer, generation),
                }
            }
            Done::WantReady(peer, want) => {
                let SyncMessage::Want { scope, .. } = &want else {
                    return;
                };
                let scope = *scope;
                if self.swarm.is_connected(&peer) {
                    self.request(peer, want, Asked::Want(scope));
                } else {
                    self.want_done(peer, scope);
                }
            }
            Done::Stored {
                peer,
                scope,
                reached,
                complete,
                verdict,
            } => {
                if verdict.penalty > 0 {
                    let reason = verdict.reason.clone().unwrap_or_default();
                    self.penalise(peer, verdict.penalty, &reason);
                }
                let progress = verdict.stored > 0;
                if progress {
                    self.fetch_blobs();
                }
                let again = verdict.penalty == 0 && !complete;
                let owed = self
                    .peers
                    .get_mut(&peer)
                    .is_some_and(|state| state.owed.remove(&scope));
                if owed && !progress && complete && verdict.missing.is_empty() {
                    // It pushed events of this log, then had nothing to give for them.
                    self.penalise(peer, 25, "pushed events whose parents it does not send");
                }
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.wants_in_flight = state.wants_in_flight.saturating_sub(1);
                    state.wanted.remove(&scope);
                    let stalls = state.stalls.entry(scope).or_insert(0);
                    if progress {
                        *stalls = 0;
                    } else if again || !verdict.missing.is_empty() {
                        *stalls += 1;
                    }
                    let stalled = *stalls > STALLS_ALLOWED;
                    // Penalised once, when it is given up on.
                    let newly_stalled = *stalls == STALLS_ALLOWED + 1;
                    if again && !stalled {
                        state.from_depth.insert(scope, reached);
                    } else {
                        state.from_depth.remove(&scope);
                    }
                    let rewant = state.rewant.remove(&scope);
                    if stalled {
                        warn!(%peer, %scope, "a log makes no progress with this peer; giving up on it until it reconnects");
                    } else if again || rewant || !verdict.missing.is_empty() {
                        state.wanted.insert(scope);
                        state.wants.push_front(scope);
                    }
                    if newly_stalled {
                        self.penalise(peer, 25, "events with parents it never sends");
                    }
                }
                self.pump_wants(peer);
            }
            Done::CertificatesTaken(channel, relay, added) => {
                self.respond(channel, SyncMessage::Ack);
                if !relay.is_empty() {
                    let ours: Vec<PeerId> = self
                        .peers
                        .iter()
                        .filter(|(_, state)| state.org == Some(self.org))
                        .map(|(peer, _)| *peer)
                        .collect();
                    for peer in ours {
                        let message = SyncMessage::Certificates {
                            certificates: relay.clone(),
                        };
                        self.request(peer, message, Asked::Certificates);
                    }
                }
                if added > 0 {
                    // Events that waited for these certificates: pull again.
                    self.pull_again();
                }
            }
            Done::Pushed {
                peer,
                verdict,
                channel,
            } => {
                self.respond(channel, SyncMessage::Ack);
                if verdict.penalty > 0 {
                    let reason = verdict.reason.clone().unwrap_or_default();
                    self.penalise(peer, verdict.penalty, &reason);
                }
                if verdict.stored > 0 {
                    // Their attachments, if any, at once rather than on the next tick.
                    self.fetch_blobs();
                }
                for scope in verdict.missing {
                    if let Some(state) = self.peers.get_mut(&peer) {
                        state.owed.insert(scope);
                        state.out_of_sync();
                    }
                    self.want(peer, scope);
                }
            }
        }
    }

    fn on_join(
        &mut self,
        peer: PeerId,
        secret: [u8; 32],
        bridge_keys: Vec<(threadline_protocol::ChannelKind, PublicKey)>,
        channel: ResponseChannel<SyncMessage>,
    ) {
        let data_dir = self.data_dir.clone();
        let ingest = self.ingest.clone();
        let org = self.org;
        let done = self.done_sender.clone();
        tokio::spawn(async move {
            let now = crate::clock::now();
            let certified = async {
                let key = peer_key(&peer).ok_or("the peer's id carries no ed25519 key")?;
                let org_key = data_dir
                    .load_org_key()
                    .map_err(|_| "cannot read the org key")?
                    .ok_or("this node does not hold the org key")?;
                if bridge_keys.len() > MAX_JOIN_BRIDGES {
                    return Err("too many bridge keys");
                }
                invite::redeem(&data_dir, &secret, now).map_err(|err| match err {
                    invite::InviteError::Expired => "the invite expired",
                    _ => "unknown or already used invite",
                })?;
                let body = CertificateBody::new(
                    org,
                    key,
                    CertRole::Node,
                    now,
                    now.saturating_add_millis(NODE_CERT_VALIDITY_MILLIS),
                );
                let certificate =
                    Certificate::issue(&org_key, body).map_err(|_| "cannot issue a certificate")?;
                let mut bridge_certificates = Vec::new();
                for (channel, key) in bridge_keys {
                    bridge_certificates.push(
                        crate::data_dir::bridge_certificate_for(&org_key, org, key, channel, now)
                            .map_err(|_| "cannot issue a bridge certificate")?,
                    );
                }
                for certificate in std::iter::once(&certificate).chain(bridge_certificates.iter()) {
                    ingest
                        .change_directory(DirectoryAction::Certify(certificate.clone()))
                        .await
                        .map_err(|_| "cannot publish the certificate")?;
                }
                Ok::<_, &'static str>((certificate, bridge_certificates))
            }
            .await;
            let message = match certified {
                Ok((certificate, bridge_certificates)) => {
                    info!(%peer, "a new node joined the org with an invite");
                    Done::Respond(
                        channel,
                        SyncMessage::Joined {
                            certificate,
                            bridge_certificates,
                        },
                    )
                }
                Err(reason) => {
                    warn!(%peer, reason, "refused a join");
                    Done::RespondAndPenalise(
                        channel,
                        SyncMessage::Refused {
                            reason: reason.to_owned(),
                        },
                        peer,
                        50,
                        reason.to_owned(),
                    )
                }
            };
            let _ = done.send(message);
        });
    }
}

/// The log an event belongs to (a new thread's root names its own thread).
fn scope_of(event: &Event) -> Option<ScopeId> {
    Some(match event.signed.header.scope {
        Scope::Directory(org) => ScopeId::Directory(org),
        Scope::Thread(thread) => ScopeId::Thread(thread),
        Scope::NewThread => ScopeId::Thread(ThreadId::from_root(event.id().ok()?)),
    })
}

/// How a peer's batch went (`scopes[i]` is the log of the `i`th event): what was stored, which
/// logs lack something, and what deserves a penalty.
fn judge(results: &[Result<Submitted, IngestError>], scopes: &[ScopeId]) -> Verdict {
    let mut verdict = Verdict::default();
    for (result, scope) in results.iter().zip(scopes) {
        match result {
            Ok(Submitted::Stored(_)) => verdict.stored += 1,
            Ok(Submitted::Duplicate(_)) => {}
            Err(IngestError::Refused(err)) if err.is_retryable() => verdict.missing.push(*scope),
            Err(IngestError::UnknownThread(_)) => verdict.missing.push(*scope),
            Err(err @ IngestError::Invalid(_)) => {
                verdict.penalty = PENALTY_LIMIT;
                verdict.reason = Some(format!("a forged or malformed event: {err}"));
            }
            Err(err @ (IngestError::Refused(_) | IngestError::ForeignScope(_))) => {
                verdict.penalty = verdict.penalty.max(50);
                verdict.reason = Some(format!("an event the rules refuse: {err}"));
            }
            Err(err) => {
                // The node's own trouble (store, shutting down): not the peer's fault.
                debug!(cause = %err, "a peer's event was not stored");
            }
        }
    }
    verdict.missing.sort();
    verdict.missing.dedup();
    verdict
}
