//! A node's identity: its org, its node key and certificate, and the libp2p PeerId of the node
//! key.

use libp2p_identity::PeerId;
use threadline_protocol::{Certificate, NodeId, OrgId, PublicKey, SecretKey};

/// The keys and certificate a node runs with.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The org this node belongs to.
    pub org: OrgId,
    /// The node key (also the libp2p identity).
    pub node_key: SecretKey,
    /// The org's certificate for the node key.
    pub node_cert: Certificate,
}

impl Identity {
    /// The node's id (its public key).
    pub fn node_id(&self) -> NodeId {
        NodeId(self.node_key.public())
    }

    /// The node's libp2p PeerId.
    pub fn peer_id(&self) -> PeerId {
        peer_id(&self.node_key.public())
            .expect("the public half of a secret key is a valid ed25519 public key")
    }
}

/// The PeerId a multiaddr ends with.
pub fn peer_of(address: &libp2p::Multiaddr) -> Option<PeerId> {
    address.iter().find_map(|protocol| match protocol {
        libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// The libp2p PeerId of an ed25519 public key: libp2p and Threadline use the same key, so a
/// node's PeerId proves its node key in the Noise handshake. Fails if the bytes are not a
/// valid ed25519 point (a key decoded from a peer is not checked until it verifies something).
pub fn peer_id(key: &PublicKey) -> Result<PeerId, libp2p_identity::DecodingError> {
    let ed25519 = libp2p_identity::ed25519::PublicKey::try_from_bytes(key.as_bytes())?;
    Ok(libp2p_identity::PublicKey::from(ed25519).to_peer_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_matches_libp2p_for_the_same_secret() {
        let seed = [7u8; 32];
        let ours = SecretKey::from_seed(seed);
        let libp2p = libp2p_identity::Keypair::ed25519_from_bytes(seed).expect("32-byte seed");
        assert_eq!(
            peer_id(&ours.public()).expect("valid key"),
            libp2p.public().to_peer_id()
        );
    }
}
