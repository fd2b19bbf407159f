//! One-time invites to join an org.
//!
//! `threadline org invite` (on a node that holds the org key) writes
//! `<data-dir>/invites/<SHA-256 of the secret, hex>` holding the invite's expiry, and prints the
//! invite: the org, the inviting node's key and address, and the secret. The new node presents
//! the secret over the authenticated connection ([`SyncMessage::Join`]); the inviting node
//! removes the file (so the invite works once), certifies the new node's key and publishes the
//! certificate in the org's directory.
//!
//! [`SyncMessage::Join`]: threadline_protocol::sync::SyncMessage::Join

use std::fs;
use std::path::PathBuf;

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use threadline_protocol::{codec, OrgId, PublicKey, Timestamp};

use crate::data_dir::DataDir;

/// What an invite string starts with.
pub const INVITE_PREFIX: &str = "threadline-invite:";
/// How long an invite stays valid unless told otherwise: one day.
pub const DEFAULT_VALIDITY_MILLIS: u64 = 24 * 3600 * 1000;

/// An invite to join an org.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The org.
    pub org: OrgId,
    /// The inviting node's key (its PeerId; the connection proves it).
    pub node: PublicKey,
    /// Where the inviting node listens for peers (a multiaddr ending in `/p2p/<PeerId>`).
    pub address: String,
    /// The one-time secret.
    pub secret: [u8; 32],
    /// Until when it can be redeemed.
    pub expires: Timestamp,
}

/// An invite could not be made, read or redeemed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// The invite text is not an invite.
    #[error("not a Threadline invite (it starts with `{INVITE_PREFIX}`): {0}")]
    Malformed(String),
    /// No such invite (never made, already used, or made on another node).
    #[error("unknown or already used invite")]
    Unknown,
    /// The invite expired.
    #[error("the invite expired")]
    Expired,
    /// The invites folder could not be used.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Invite {
    /// The invite as one line of text.
    pub fn to_text(&self) -> String {
        // Plain data of fixed shape: encoding cannot fail.
        let bytes = codec::encode(self).unwrap_or_default();
        format!("{INVITE_PREFIX}{}", hex::encode(bytes))
    }

    /// Reads an invite's text.
    pub fn from_text(text: &str) -> Result<Invite, InviteError> {
        let hex_part = text
            .trim()
            .strip_prefix(INVITE_PREFIX)
            .ok_or_else(|| InviteError::Malformed("wrong prefix".to_owned()))?;
        let bytes = hex::decode(hex_part).map_err(|e| InviteError::Malformed(e.to_string()))?;
        let invite: Invite =
            codec::decode(&bytes, 4096).map_err(|e| InviteError::Malformed(e.to_string()))?;
        invite
            .address()
            .map_err(|e| InviteError::Malformed(format!("bad address: {e}")))?;
        Ok(invite)
    }

    /// The inviting node's address.
    pub fn address(&self) -> Result<Multiaddr, libp2p::multiaddr::Error> {
        self.address.parse()
    }
}

fn invites_dir(data_dir: &DataDir) -> PathBuf {
    data_dir.root().join("invites")
}

fn invite_path(data_dir: &DataDir, secret: &[u8; 32]) -> PathBuf {
    let hash = <sha2::Sha256 as sha2::Digest>::digest(secret);
    invites_dir(data_dir).join(hex::encode(hash))
}

/// Makes an invite to this node's org at `address`, valid until `expires`, and records it in
/// the data folder (the node may be running: it reads the folder when the invite is redeemed).
pub fn create(
    data_dir: &DataDir,
    org: OrgId,
    node: PublicKey,
    address: String,
    expires: Timestamp,
) -> Result<Invite, InviteError> {
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
    let dir = invites_dir(data_dir);
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| InviteError::Io { path, source }
    };
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = invite_path(data_dir, &secret);
    fs::write(&path, expires.as_millis().to_string()).map_err(io(&path))?;
    Ok(Invite {
        org,
        node,
        address,
        secret,
        expires,
    })
}

/// Redeems the invite with `secret` at `now`: it is used up whether or not it had expired.
pub fn redeem(data_dir: &DataDir, secret: &[u8; 32], now: Timestamp) -> Result<(), InviteError> {
    let path = invite_path(data_dir, secret);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(InviteError::Unknown),
        Err(source) => return Err(InviteError::Io { path, source }),
    };
    // Removing the file is what claims the invite: of two redeemers, one removes it.
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(InviteError::Unknown),
        Err(source) => return Err(InviteError::Io { path, source }),
    }
    let expires = text
        .trim()
        .parse::<u64>()
        .map_err(|_| InviteError::Unknown)?;
    if now.as_millis() > expires {
        return Err(InviteError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadline_protocol::SecretKey;

    fn invite_in(dir: &std::path::Path, expires: u64) -> (DataDir, Invite) {
        let data_dir = DataDir::new(dir);
        let org = OrgId(SecretKey::from_seed([1; 32]).public());
        let invite = create(
            &data_dir,
            org,
            SecretKey::from_seed([2; 32]).public(),
            "/ip4/127.0.0.1/tcp/7430".to_owned(),
            Timestamp::from_millis(expires),
        )
        .expect("invite");
        (data_dir, invite)
    }

    #[test]
    fn an_invite_round_trips_as_text_and_works_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data_dir, invite) = invite_in(dir.path(), 10_000);
        let read = Invite::from_text(&invite.to_text()).expect("parses");
        assert_eq!(read, invite);
        redeem(&data_dir, &read.secret, Timestamp::from_millis(5_000)).expect("first use");
        assert!(matches!(
            redeem(&data_dir, &read.secret, Timestamp::from_millis(5_000)),
            Err(InviteError::Unknown)
        ));
    }

    #[test]
    fn expired_forged_and_garbled_invites_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data_dir, invite) = invite_in(dir.path(), 10_000);
        assert!(matches!(
            redeem(&data_dir, &[9; 32], Timestamp::from_millis(5_000)),
            Err(InviteError::Unknown)
        ));
        assert!(matches!(
            redeem(&data_dir, &invite.secret, Timestamp::from_millis(10_001)),
            Err(InviteError::Expired)
        ));
        assert!(Invite::from_text("threadline-invite:zz").is_err());
        assert!(Invite::from_text("hello").is_err());
    }
}
