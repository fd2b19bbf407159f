//! Replication between nodes over libp2p. A node's libp2p identity is its node key, so its
//! PeerId is the one `threadline identity` prints.
//!
//! - Transport: TCP, Noise (authenticated with the node key), Yamux.
//! - Behaviours: identify, ping, connection limits, the allow/block list, mDNS (optional), and
//!   request-response on [`SYNC_PROTOCOL`] carrying [`SyncMessage`]s in length-prefixed frames
//!   of at most [`MAX_FRAME_BYTES`], decoded strictly by the protocol's codec
//!   ([`codec::SyncCodec`]).
//! - [`service`]: the task that runs the sync protocol with every peer and feeds the ingest
//!   pipeline; [`logs`]: what is shared with whom and what a `Want` gets; [`blobs`]: fetching
//!   the attachment bytes events refer to; [`invite`]: one-time invites; [`join`]:
//!   `threadline init --join`.

pub mod blobs;
pub mod codec;
pub mod invite;
pub mod join;
pub mod logs;
pub mod service;

use std::time::Duration;

use libp2p::{
    allow_block_list, connection_limits, identify, mdns, noise, ping, request_response,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour},
    tcp, yamux, StreamProtocol, Swarm, SwarmBuilder,
};
use threadline_protocol::SecretKey;

pub use codec::Frame;
pub use threadline_protocol::sync::{SyncMessage, MAX_FRAME_BYTES};

/// The sync protocol's name and version on the wire.
pub const SYNC_PROTOCOL: &str = "/threadline/sync/1";
/// What identify tells peers this node speaks.
pub const IDENTIFY_PROTOCOL: &str = "/threadline/1";
/// Connections to a peer at once (one each way while dialling both ways).
const MAX_CONNECTIONS_PER_PEER: u32 = 2;
/// A connection with nothing to do stays this long (pings alone do not keep it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A sync request gets its answer within this long, or fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the swarm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The node key is not usable as a libp2p identity.
    #[error("the node key is not a libp2p ed25519 key: {0}")]
    Key(String),
    /// The transport could not be set up.
    #[error("cannot set up the transport: {0}")]
    Transport(String),
}

/// The node's libp2p behaviours.
#[derive(NetworkBehaviour)]
pub struct NodeBehaviour {
    /// Peers refused at once (a partition in tests; a hostile peer in production).
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Connection limits.
    pub limits: connection_limits::Behaviour,
    /// Who the peer is and what it speaks.
    pub identify: identify::Behaviour,
    /// Liveness.
    pub ping: ping::Behaviour,
    /// The sync protocol.
    pub sync: request_response::Behaviour<codec::SyncCodec>,
    /// Peers on the LAN, when turned on.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
}

impl std::fmt::Debug for NodeBehaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBehaviour").finish_non_exhaustive()
    }
}

/// The libp2p keypair of a node key (the same ed25519 key: the PeerId matches
/// `Identity::peer_id`).
pub fn keypair(node_key: &SecretKey) -> Result<libp2p::identity::Keypair, ReplicationError> {
    libp2p::identity::Keypair::ed25519_from_bytes(node_key.to_seed())
        .map_err(|err| ReplicationError::Key(err.to_string()))
}

/// A swarm for `node_key`, on tokio, not yet listening or dialling; with mDNS discovery when
/// `mdns` is set.
pub fn swarm(node_key: &SecretKey, mdns: bool) -> Result<Swarm<NodeBehaviour>, ReplicationError> {
    let keypair = keypair(node_key)?;
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|err| ReplicationError::Transport(err.to_string()))?
        .with_behaviour(|key| {
            let mdns = if mdns {
                Some(mdns::tokio::Behaviour::new(
                    mdns::Config::default(),
                    key.public().to_peer_id(),
                )?)
            } else {
                None
            };
            Ok(NodeBehaviour {
                blocked: allow_block_list::Behaviour::default(),
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER)),
                ),
                identify: identify::Behaviour::new(identify::Config::new(
                    IDENTIFY_PROTOCOL.to_owned(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(ping::Config::new()),
                sync: request_response::Behaviour::with_codec(
                    codec::SyncCodec,
                    [(
                        StreamProtocol::new(SYNC_PROTOCOL),
                        request_response::ProtocolSupport::Full,
                    )],
                    request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
                ),
                mdns: Toggle::from(mdns),
            })
        })
        .map_err(|err| ReplicationError::Transport(err.to_string()))?
        .with_swarm_config(|config| config.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;
    use libp2p::swarm::SwarmEvent;
    use threadline_protocol::sync::ScopeSummary;

    #[test]
    fn the_peer_id_is_the_node_identity() {
        let key = SecretKey::from_seed([3; 32]);
        let peer = keypair(&key).expect("keypair").public().to_peer_id();
        assert_eq!(
            peer.to_string(),
            crate::identity::peer_id(&key.public())
                .expect("peer id")
                .to_string()
        );
    }

    /// Two nodes with mDNS on find each other on the local network (this machine's).
    #[tokio::test]
    async fn mdns_finds_another_node_on_the_lan() {
        let mut a = swarm(&SecretKey::from_seed([4; 32]), true).expect("swarm a");
        let mut b = swarm(&SecretKey::from_seed([5; 32]), true).expect("swarm b");
        a.listen_on("/ip4/0.0.0.0/tcp/0".parse().expect("addr"))
            .expect("listen");
        b.listen_on("/ip4/0.0.0.0/tcp/0".parse().expect("addr"))
            .expect("listen");
        let b_id = *b.local_peer_id();
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                tokio::select! {
                    event = a.select_next_some() => {
                        if let SwarmEvent::Behaviour(NodeBehaviourEvent::Mdns(mdns::Event::Discovered(peers))) = event {
                            if peers.iter().any(|(peer, _)| *peer == b_id) {
                                break;
                            }
                        }
                    }
                    _ = b.select_next_some() => {}
                }
            }
        })
        .await;
        assert!(found.is_ok(), "a did not find b with mDNS within 20 s");
    }

    /// Two nodes connect over TCP + Noise + Yamux on loopback and exchange sync messages.
    #[tokio::test]
    async fn two_nodes_exchange_sync_messages_over_loopback() {
        let mut a = swarm(&SecretKey::from_seed([1; 32]), false).expect("swarm a");
        let mut b = swarm(&SecretKey::from_seed([2; 32]), false).expect("swarm b");
        b.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
            .expect("listen");
        let address = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
                break address;
            }
        };
        let b_id = *b.local_peer_id();
        a.add_peer_address(b_id, address);
        let summary = SyncMessage::Summary { scopes: Vec::new() };
        a.behaviour_mut()
            .sync
            .send_request(&b_id, summary.clone().into());
        let answer = SyncMessage::Summary {
            scopes: vec![ScopeSummary::new(
                threadline_protocol::ScopeId::Thread(threadline_protocol::ThreadId::from_bytes(
                    [7; 32],
                )),
                3,
                threadline_protocol::StateHash::from_bytes([9; 32]),
            )],
        };
        let got = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                tokio::select! {
                    event = a.select_next_some() => {
                        if let SwarmEvent::Behaviour(NodeBehaviourEvent::Sync(
                            request_response::Event::Message {
                                message: request_response::Message::Response { response, .. },
                                ..
                            },
                        )) = event
                        {
                            break response;
                        }
                    }
                    event = b.select_next_some() => {
                        if let SwarmEvent::Behaviour(NodeBehaviourEvent::Sync(
                            request_response::Event::Message {
                                message: request_response::Message::Request { request, channel, .. },
                                ..
                            },
                        )) = event
                        {
                            assert_eq!(request, codec::Frame::Message(summary.clone()));
                            b.behaviour_mut()
                                .sync
                                .send_response(channel, answer.clone())
                                .expect("response sent");
                        }
                    }
                }
            }
        })
        .await
        .expect("an answer within 20 s");
        assert_eq!(got, answer);
    }
}
