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
use std::sync::{Arc, PoisonError, RwLock};
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
use crate::ingest::{DirectoryAction, Ingest, IngestError, LiveEvent, Source, Submitted};

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
    /// Whether the first reconciliation with it has finished.
    pub in_sync: bool,
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

    fn set(&self, view: StatusView) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = view;
    }
}

/// What this node asked a peer (to read the answer).
#[derive(Debug, Clone)]
enum Asked {
    Hello,
    Digest,
    Buckets,
    SummaryOf,
    Want(ScopeId),
    Push,
    Certificates,
    Blob(BlobHash),
}

#[derive(Debug, Default)]
struct PeerState {
    /// The peer's org, once its certificate was checked.
    org: Option<OrgId>,
    hello_sent: bool,
    pull_started: bool,
    in_sync: bool,
    /// This node's summaries for the peer, made when the pull started.
    ours: Vec<ScopeSummary>,
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
    RespondAndPenalise(
        ResponseChannel<SyncMessage>,
        SyncMessage,
        PeerId,
        u32,
        String,
    ),
    Ours(PeerId, Vec<ScopeSummary>),
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
    };
    service.load_targets();
    let mut live = ingest.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
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
            _ = tick.tick() => {
                ticks += 1;
                if ticks % 5 == 0 {
                    service.load_targets();
                }
                service.dial_due();
                service.unblock_due();
                if ticks % 5 == 0 {
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

/// The PeerId a multiaddr ends with.
pub fn peer_of(address: &Multiaddr) -> Option<PeerId> {
    address.iter().find_map(|protocol| match protocol {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
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
                // here too): no penalty, the step is retried on the next pull.
                debug!(%peer, cause = %error, "a sync request failed");
                if let Some((_, Asked::Blob(blob))) = asked {
                    self.blob_fetches.not_from(peer, blob);
                }
                if let Some((_, Asked::Want(scope))) = asked {
                    if let Some(state) = self.peers.get_mut(&peer) {
                        state.wants_in_flight = state.wants_in_flight.saturating_sub(1);
                        state.wanted.remove(&scope);
                    }
                    self.pump_wants(peer);
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

    fn request(&mut self, peer: PeerId, message: SyncMessage, asked: Asked) {
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, message.into());
        self.asked.insert(id, (peer, asked));
    }

    fn respond(&mut self, channel: ResponseChannel<SyncMessage>, message: SyncMessage) {
        // The peer may have gone; nothing to do then.
        let _ = self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, message);
    }

    fn refuse(&mut self, channel: ResponseChannel<SyncMessage>, reason: &str) {
        self.respond(
            channel,
            SyncMessage::Refused {
                reason: reason.to_owned(),
            },
        );
    }

    /// Checks a peer's `Hello`. Refused: the reason, and the penalty (none for a valid node of
    /// an org that is not a partner: it is only disconnected).
    fn verify_hello(
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

    fn refuse_hello(&mut self, peer: PeerId, reason: &str, points: u32) {
        warn!(%peer, reason, "refused a peer's Hello");
        if points > 0 {
            self.penalise(peer, points, reason);
        } else {
            self.peers.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn on_request(
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
            (SyncMessage::Digest { .. }, Some(peer_org)) => {
                self.answer_with_summaries(channel, peer_org, |ours| SyncMessage::Digest {
                    n_scopes: ours.len() as u64,
                    digest: summaries_digest(ours.iter()),
                });
            }
            (SyncMessage::Buckets { .. }, Some(peer_org)) => {
                self.answer_with_summaries(channel, peer_org, |ours| SyncMessage::Buckets {
                    digests: bucket_digests(ours),
                });
            }
            (SyncMessage::SummaryOf { buckets }, Some(peer_org)) => {
                let buckets: HashSet<u8> = buckets.into_iter().collect();
                self.answer_with_summaries(channel, peer_org, move |ours| SyncMessage::Summary {
                    scopes: ours
                        .iter()
                        .filter(|s| {
                            buckets.contains(&threadline_protocol::sync::bucket_of(&s.scope))
                        })
                        .cloned()
                        .collect(),
                });
            }
            (
                SyncMessage::Want {
                    scope,
                    have,
                    from_depth,
                    max_events,
                },
                Some(peer_org),
            ) => {
                let store = self.ingest.store().clone();
                let our_org = self.org;
                let done = self.done_sender.clone();
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
                    let _ = done.send(Done::Respond(channel, answer));
                });
            }
            (SyncMessage::Push { events }, Some(peer_org)) => {
                self.on_push(peer, peer_org, events, channel);
            }
            (SyncMessage::WantBlob { blob, offset }, Some(peer_org)) => {
                let store = self.ingest.store().clone();
                let our_org = self.org;
                let done = self.done_sender.clone();
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
                    let _ = done.send(Done::Respond(channel, answer));
                });
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

    /// Token bucket per peer: [`REQUESTS_PER_SECOND`], bursts of twice that.
    fn allow_request(&mut self, peer: PeerId) -> bool {
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

    /// Answers with something made of this node's summaries for `peer_org`.
    fn answer_with_summaries(
        &mut self,
        channel: ResponseChannel<SyncMessage>,
        peer_org: OrgId,
        make: impl FnOnce(&[ScopeSummary]) -> SyncMessage + Send + 'static,
    ) {
        let store = self.ingest.store().clone();
        let our_org = self.org;
        let done = self.done_sender.clone();
        tokio::task::spawn_blocking(move || {
            let answer = match logs::shared_summaries(&store, our_org, peer_org) {
                Ok(ours) => make(&ours),
                Err(err) => SyncMessage::Refused {
                    reason: format!("cannot read the store: {err}"),
                },
            };
            let _ = done.send(Done::Respond(channel, answer));
        });
    }

    /// A peer's certificate checked out: pull from it, once per connection.
    fn accept(&mut self, peer: PeerId, org: OrgId) {
        let state = self.peers.entry(peer).or_default();
        if state.org.is_none() {
            info!(%peer, %org, "peer connected");
        }
        state.org = Some(org);
        if !state.pull_started {
            state.pull_started = true;
            self.send_certificates(peer, org);
            self.start_pull(peer, org);
        }
    }

    /// Sends a peer the certificates it may need for shared threads: to a partner, this org's;
    /// to a node of this org, the partners' this node knows.
    fn send_certificates(&mut self, peer: PeerId, peer_org: OrgId) {
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

    fn start_pull(&mut self, peer: PeerId, peer_org: OrgId) {
        let store = self.ingest.store().clone();
        let our_org = self.org;
        let done = self.done_sender.clone();
        tokio::task::spawn_blocking(move || {
            match logs::shared_summaries(&store, our_org, peer_org) {
                Ok(ours) => {
                    let _ = done.send(Done::Ours(peer, ours));
                }
                Err(err) => warn!(cause = %err, "cannot summarise the store for a peer"),
            }
        });
    }

    fn pull_again(&mut self) {
        let peers: Vec<(PeerId, OrgId)> = self
            .peers
            .iter()
            .filter_map(|(peer, state)| Some((*peer, state.org?)))
            .collect();
        for (peer, org) in peers {
            self.start_pull(peer, org);
        }
    }

    fn on_response(&mut self, peer: PeerId, asked: Asked, response: SyncMessage) {
        match (asked, response) {
            (Asked::Hello, SyncMessage::Hello { certificate }) => {
                match self.verify_hello(peer, &certificate) {
                    Ok(org) => self.accept(peer, org),
                    Err((reason, points)) => self.refuse_hello(peer, &reason, points),
                }
            }
            (Asked::Digest, SyncMessage::Digest { n_scopes, digest }) => {
                let Some(state) = self.peers.get_mut(&peer) else {
                    return;
                };
                if n_scopes == state.ours.len() as u64 && digest == summaries_digest(&state.ours) {
                    debug!(%peer, scopes = n_scopes, "in sync");
                    state.in_sync = true;
                } else {
                    let digests = bucket_digests(&state.ours);
                    self.request(peer, SyncMessage::Buckets { digests }, Asked::Buckets);
                }
            }
            (Asked::Buckets, SyncMessage::Buckets { digests }) => {
                let Some(state) = self.peers.get_mut(&peer) else {
                    return;
                };
                if digests.len() != N_BUCKETS {
                    self.penalise(peer, 50, "a Buckets answer of the wrong size");
                    return;
                }
                let ours = bucket_digests(&state.ours);
                let buckets: Vec<u8> = (0..N_BUCKETS)
                    .filter(|&i| ours[i] != digests[i])
                    .filter_map(|i| u8::try_from(i).ok())
                    .collect();
                if buckets.is_empty() {
                    state.in_sync = true;
                } else {
                    // A few buckets an answer, so a summary fits its frame even with millions
                    // of threads.
                    for chunk in buckets.chunks(SUMMARY_BUCKETS_PER_REQUEST) {
                        let buckets = chunk.to_vec();
                        self.request(peer, SyncMessage::SummaryOf { buckets }, Asked::SummaryOf);
                    }
                }
            }
            (Asked::SummaryOf, SyncMessage::Summary { scopes }) => {
                let Some(state) = self.peers.get_mut(&peer) else {
                    return;
                };
                let ours: BTreeMap<ScopeId, &ScopeSummary> =
                    state.ours.iter().map(|s| (s.scope, s)).collect();
                let mut differing: Vec<ScopeId> = scopes
                    .iter()
                    .filter(|theirs| theirs.n_events > 0)
                    .filter(|theirs| {
                        ours.get(&theirs.scope)
                            .is_none_or(|mine| mine.heads_digest != theirs.heads_digest)
                    })
                    .map(|theirs| theirs.scope)
                    .collect();
                // The directory first: it brings the certificates thread events need.
                differing.sort_by_key(|scope| !matches!(scope, ScopeId::Directory(_)));
                for scope in differing {
                    self.want(peer, scope);
                }
                if let Some(state) = self.peers.get_mut(&peer) {
                    if state.wants.is_empty() && state.wants_in_flight == 0 {
                        state.in_sync = true;
                    }
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
                self.want_done(peer, scope);
            }
            (Asked::Push | Asked::Certificates, SyncMessage::Ack) => {}
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
                // A joining node refuses everything until it has its certificate.
                debug!(%peer, ?asked, reason, "a peer refused a request");
            }
            (asked, _) => {
                self.penalise(peer, 50, &format!("a wrong answer to {asked:?}"));
            }
        }
    }

    /// Queues a `Want` for `scope` from `peer` (once at a time per log).
    fn want(&mut self, peer: PeerId, scope: ScopeId) {
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

    fn pump_wants(&mut self, peer: PeerId) {
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
                    state.in_sync = true;
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

    fn want_done(&mut self, peer: PeerId, scope: ScopeId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.wants_in_flight = state.wants_in_flight.saturating_sub(1);
            state.wanted.remove(&scope);
        }
        self.pump_wants(peer);
    }

    /// Stores a peer's events (from a `Want`) through the pipeline.
    fn store_events(&mut self, peer: PeerId, scope: ScopeId, events: Vec<Event>, complete: bool) {
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

    fn on_push(
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
    fn check_events(
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

    fn remember_origins(&mut self, peer: PeerId, events: &[Event]) {
        if self.origins.len() > ORIGINS_KEPT {
            self.origins.clear();
        }
        for event in events {
            if let Ok(id) = event.id() {
                self.origins.insert(id, peer);
            }
        }
    }

    /// Asks peers for missing blobs, if fewer than the most are on their way: reads the
    /// missing ones off the loop, then [`Service::start_blob_fetches`].
    fn fetch_blobs(&mut self) {
        if self.reading_missing || self.blob_fetches.active() >= super::blobs::MAX_FETCHES {
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

    fn start_blob_fetches(
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
            Done::RespondAndPenalise(channel, message, peer, points, reason) => {
                self.respond(channel, message);
                self.penalise(peer, points, &reason);
            }
            Done::Ours(peer, ours) => {
                let Some(state) = self.peers.get_mut(&peer) else {
                    return;
                };
                let digest = SyncMessage::Digest {
                    n_scopes: ours.len() as u64,
                    digest: summaries_digest(&ours),
                };
                state.ours = ours;
                state.in_sync = false;
                self.request(peer, digest, Asked::Digest);
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
                    if stalled {
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
                    }
                    self.want(peer, scope);
                }
            }
        }
    }

    /// Pushes what was just stored to every peer that may hold it.
    fn push_live(&mut self, changes: Vec<LiveEvent>) {
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
            let mut batch = Vec::new();
            let mut bytes = 0;
            for event in events {
                let size = threadline_protocol::codec::encode(&event)
                    .map(|b| b.len())
                    .unwrap_or(0);
                if !batch.is_empty() && bytes + size > PUSH_BYTES {
                    self.request(
                        peer,
                        SyncMessage::Push {
                            events: std::mem::take(&mut batch),
                        },
                        Asked::Push,
                    );
                    bytes = 0;
                }
                bytes += size;
                batch.push(event);
            }
            if !batch.is_empty() {
                self.request(peer, SyncMessage::Push { events: batch }, Asked::Push);
            }
        }
        if revoked {
            self.drop_revoked();
        }
    }

    /// Disconnects peers whose keys were just revoked.
    fn drop_revoked(&mut self) {
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
                        crate::admin::bridge_certificate_for(&org_key, org, key, channel, now)
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

    fn penalise(&mut self, peer: PeerId, points: u32, reason: &str) {
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

    fn block(&mut self, peer: PeerId, duration: Duration) {
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

    fn unblock_due(&mut self) {
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

    /// Reads the configured peers and partners, and their files, into the dial targets and
    /// the partner set.
    fn load_targets(&mut self) {
        let mut partners: HashSet<OrgId> = self.configured_partners.iter().copied().collect();
        if let Some(path) = &self.partners_file {
            partners.extend(
                DataDir::read_list(path)
                    .iter()
                    .filter_map(|line| line.parse::<OrgId>().ok()),
            );
        }
        self.partners = partners;
        let mut addresses = self.configured.clone();
        if let Some(path) = &self.peers_file {
            addresses.extend(
                DataDir::read_list(path)
                    .iter()
                    .filter_map(|line| line.parse::<Multiaddr>().ok()),
            );
        }
        for address in addresses {
            let Some(peer) = peer_of(&address) else {
                continue;
            };
            if peer == *self.swarm.local_peer_id() {
                continue;
            }
            self.targets.entry(peer).or_insert_with(|| Target {
                address,
                next_dial: Instant::now(),
                backoff: Duration::from_secs(1),
            });
        }
    }

    fn dial_due(&mut self) {
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

    fn publish_status(&self) {
        let mut peers: Vec<PeerView> = self
            .peers
            .iter()
            .map(|(peer, state)| PeerView {
                peer_id: peer.to_string(),
                org: state.org.map(|org| org.to_string()),
                in_sync: state.in_sync,
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
