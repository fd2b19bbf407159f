//! `threadline init --join <invite>`: a new node redeems an invite with the inviting node and
//! takes the org's directory from it. Threads follow when the node runs (catch-up).

use std::time::Duration;

use futures_util::StreamExt as _;
use libp2p::{request_response, swarm::SwarmEvent, PeerId};
use threadline_protocol::{
    cert::CertRole,
    sync::{SyncMessage, MAX_EVENTS_PER_WANT},
    Certificate, ChannelKind, Directory, ScopeId, SecretKey, Timestamp, VerifiedEvent,
};

use super::{invite::Invite, NodeBehaviourEvent};

/// What joining brought.
#[derive(Debug)]
pub struct Joined {
    /// The new node's key.
    pub node_key: SecretKey,
    /// The org's certificate for it.
    pub certificate: Certificate,
    /// Keys of the node's built-in bridges, certified with it (the web chat's).
    pub bridge_keys: Vec<(ChannelKind, SecretKey)>,
    /// The org's directory, verified and authorised, in linear order.
    pub directory: Vec<VerifiedEvent>,
}

/// Joining failed; nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The inviting node could not be reached or stopped answering.
    #[error("cannot reach the inviting node: {0}")]
    Unreachable(String),
    /// The inviting node refused.
    #[error("the inviting node refused: {0}")]
    Refused(String),
    /// The inviting node answered something wrong.
    #[error("the inviting node answered wrongly: {0}")]
    BadAnswer(String),
    /// Setting up the transport failed.
    #[error(transparent)]
    Transport(#[from] super::ReplicationError),
}

/// Redeems `invite`: connects to the inviting node (which the connection proves), gets a
/// certificate for a new node key, then the org's whole directory. Gives up after `timeout`.
pub async fn join(invite: &Invite, now: Timestamp, timeout: Duration) -> Result<Joined, JoinError> {
    tokio::time::timeout(timeout, join_inner(invite, now))
        .await
        .map_err(|_| JoinError::Unreachable(format!("no answer within {} s", timeout.as_secs())))?
}

async fn join_inner(invite: &Invite, now: Timestamp) -> Result<Joined, JoinError> {
    let node_key = SecretKey::generate(&mut rand_core::OsRng);
    let mut swarm = super::swarm(&node_key, false)?;
    let address = invite
        .address()
        .map_err(|err| JoinError::BadAnswer(format!("the invite's address: {err}")))?;
    let inviter = crate::identity::peer_id(&invite.node)
        .map_err(|err| JoinError::BadAnswer(format!("the invite's node key: {err}")))?;
    swarm.add_peer_address(inviter, address.clone());
    swarm
        .dial(inviter)
        .map_err(|err| JoinError::Unreachable(format!("{address}: {err}")))?;

    let mut exchange = Exchange {
        swarm: &mut swarm,
        inviter,
        certificate: None,
    };
    let webchat_key = SecretKey::generate(&mut rand_core::OsRng);
    let answer = exchange
        .ask(SyncMessage::Join {
            secret: invite.secret,
            bridge_keys: vec![(ChannelKind::Webchat, webchat_key.public())],
        })
        .await?;
    let certificate = match answer {
        SyncMessage::Joined {
            certificate,
            bridge_certificates,
        } => {
            let certified = bridge_certificates.iter().any(|cert| {
                cert.verify().is_ok()
                    && cert.body.org == invite.org
                    && cert.body.subject == webchat_key.public()
            });
            if !certified {
                return Err(JoinError::BadAnswer(
                    "no certificate for the web chat bridge's key".to_owned(),
                ));
            }
            certificate
        }
        SyncMessage::Refused { reason } => return Err(JoinError::Refused(reason)),
        other => return Err(JoinError::BadAnswer(format!("{other:?}"))),
    };
    certificate
        .verify()
        .map_err(|err| JoinError::BadAnswer(format!("the certificate: {err}")))?;
    let body = &certificate.body;
    if body.org != invite.org || body.subject != node_key.public() || body.role != CertRole::Node {
        return Err(JoinError::BadAnswer(
            "the certificate is not this org's node certificate for this node's key".to_owned(),
        ));
    }
    exchange.certificate = Some(certificate.clone());

    match exchange
        .ask(SyncMessage::Hello {
            certificate: certificate.clone(),
        })
        .await?
    {
        SyncMessage::Hello {
            certificate: theirs,
        } => {
            let org =
                super::service::check_peer_certificate(&theirs, &inviter, invite.org, None, now)
                    .map_err(JoinError::BadAnswer)?;
            if org != invite.org {
                return Err(JoinError::BadAnswer(
                    "the inviting node is not of the invite's org".to_owned(),
                ));
            }
        }
        SyncMessage::Refused { reason } => return Err(JoinError::Refused(reason)),
        other => return Err(JoinError::BadAnswer(format!("{other:?}"))),
    }

    let scope = ScopeId::Directory(invite.org);
    let mut directory: Option<Directory> = None;
    let mut events = Vec::new();
    loop {
        let have = directory
            .as_ref()
            .map(|d| d.dag().heads().iter().copied().collect())
            .unwrap_or_default();
        let answer = exchange
            .ask(SyncMessage::Want {
                scope,
                have,
                from_depth: 0,
                max_events: MAX_EVENTS_PER_WANT,
            })
            .await?;
        let (batch, complete) = match answer {
            SyncMessage::Events {
                scope: got,
                events,
                complete,
            } if got == scope => (events, complete),
            SyncMessage::Refused { reason } => return Err(JoinError::Refused(reason)),
            other => return Err(JoinError::BadAnswer(format!("{other:?}"))),
        };
        let n_new = batch.len();
        for event in batch {
            let event = event
                .verify()
                .map_err(|err| JoinError::BadAnswer(format!("a directory event: {err}")))?;
            match &mut directory {
                None => {
                    directory = Some(Directory::new(event.clone()).map_err(|err| {
                        JoinError::BadAnswer(format!("the directory's root: {err}"))
                    })?);
                }
                Some(directory) => {
                    directory
                        .insert(event.clone(), now)
                        .map_err(|err| JoinError::BadAnswer(format!("a directory event: {err}")))?;
                }
            }
            events.push(event);
        }
        if complete || n_new == 0 {
            break;
        }
    }
    let directory =
        directory.ok_or_else(|| JoinError::BadAnswer("the org's directory is empty".to_owned()))?;
    if directory.org() != invite.org {
        return Err(JoinError::BadAnswer(
            "the directory is another org's".to_owned(),
        ));
    }
    Ok(Joined {
        node_key,
        certificate,
        bridge_keys: vec![(ChannelKind::Webchat, webchat_key)],
        directory: events,
    })
}

/// One request at a time to the inviting node, answering its own requests meanwhile.
struct Exchange<'a> {
    swarm: &'a mut libp2p::Swarm<super::NodeBehaviour>,
    inviter: PeerId,
    certificate: Option<Certificate>,
}

impl Exchange<'_> {
    async fn ask(&mut self, message: SyncMessage) -> Result<SyncMessage, JoinError> {
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&self.inviter, message.into());
        loop {
            match self.swarm.select_next_some().await {
                SwarmEvent::Behaviour(NodeBehaviourEvent::Sync(event)) => match event {
                    request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    } if request_id == id => return Ok(response),
                    request_response::Event::Message {
                        message:
                            request_response::Message::Request {
                                request, channel, ..
                            },
                        ..
                    } => {
                        // The inviting node says Hello too; a joining node has nothing to share.
                        let answer = match (request, &self.certificate) {
                            (
                                super::Frame::Message(SyncMessage::Hello { .. }),
                                Some(certificate),
                            ) => SyncMessage::Hello {
                                certificate: certificate.clone(),
                            },
                            _ => SyncMessage::Refused {
                                reason: "this node is joining".to_owned(),
                            },
                        };
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, answer);
                    }
                    request_response::Event::OutboundFailure {
                        request_id, error, ..
                    } if request_id == id => {
                        return Err(JoinError::Unreachable(error.to_string()));
                    }
                    _ => {}
                },
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    return Err(JoinError::Unreachable(error.to_string()));
                }
                _ => {}
            }
        }
    }
}
