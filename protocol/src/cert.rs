//! Certificates: the org key vouches for a node, bridge or agent key.
//!
//! A certificate is a [`CertificateBody`] signed by the org key in the domain
//! `threadline/cert/v1`. It is self-authenticating: anyone holding the org's id can check it.
//! Revocation is a `Revoke` event in the org's directory log, not part of the certificate.

use serde::{Deserialize, Serialize};

use crate::channel::{ChannelKind, Handle};
use crate::codec::{self, EncodeError};
use crate::digest::Domain;
use crate::id::AgentId;
use crate::key::{BadSignature, OrgId, PublicKey, SecretKey, Signature};
use crate::time::Timestamp;

/// What a certified key may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CertRole {
    /// A node of the org (a NodeCert): signs housekeeping and its agents' actions; its key is
    /// its libp2p identity.
    Node,
    /// A bridge (a BridgeCert): may introduce inbound messages and receipts on one channel,
    /// optionally for one customer handle only.
    Bridge {
        /// The channel the bridge speaks for.
        channel: ChannelKind,
        /// When set, the only customer handle the bridge may introduce messages from.
        handle_scope: Option<Handle>,
    },
    /// An agent with a device key of their own (an AgentCert).
    Agent {
        /// The agent this key belongs to.
        agent: AgentId,
    },
}

/// The signed part of a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CertificateBody {
    /// The org that issues it; its key signs.
    pub org: OrgId,
    /// The key being certified.
    pub subject: PublicKey,
    /// What the key may do.
    pub role: CertRole,
    /// First moment the certificate is valid.
    pub not_before: Timestamp,
    /// Last moment the certificate is valid (its expiry).
    pub not_after: Timestamp,
}

impl CertificateBody {
    /// A certificate body.
    pub fn new(
        org: OrgId,
        subject: PublicKey,
        role: CertRole,
        not_before: Timestamp,
        not_after: Timestamp,
    ) -> Self {
        CertificateBody {
            org,
            subject,
            role,
            not_before,
            not_after,
        }
    }
}

/// A certificate: a body and the org key's signature over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Certificate {
    /// What is certified.
    pub body: CertificateBody,
    /// The org key's signature over `threadline/cert/v1 || 0x00 || encode(body)`.
    pub signature: Signature,
}

/// A certificate is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The signature is not the org key's.
    #[error("certificate for {subject} has a bad signature: {source}")]
    BadSignature {
        /// The certified key.
        subject: PublicKey,
        /// Details.
        #[source]
        source: BadSignature,
    },
    /// `not_after` is before `not_before`.
    #[error("certificate for {subject} expires before it starts")]
    EmptyValidity {
        /// The certified key.
        subject: PublicKey,
    },
    /// The body could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl Certificate {
    /// Signs `body` with the org key. The body's `org` must be that key's org id, otherwise the
    /// result does not verify.
    pub fn issue(org_key: &SecretKey, body: CertificateBody) -> Result<Self, EncodeError> {
        let signature = org_key.sign(Domain::CertificateSignature, &codec::encode(&body)?);
        Ok(Certificate { body, signature })
    }

    /// Checks the org key's signature and that the validity window is not empty.
    pub fn verify(&self) -> Result<(), CertError> {
        if self.body.not_after < self.body.not_before {
            return Err(CertError::EmptyValidity {
                subject: self.body.subject,
            });
        }
        let bytes = codec::encode(&self.body)?;
        self.body
            .org
            .0
            .verify(Domain::CertificateSignature, &bytes, &self.signature)
            .map_err(|source| CertError::BadSignature {
                subject: self.body.subject,
                source,
            })
    }

    /// Whether `at` is inside the validity window.
    pub fn is_valid_at(&self, at: Timestamp) -> bool {
        self.body.not_before <= at && at <= self.body.not_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(org: &SecretKey) -> CertificateBody {
        CertificateBody::new(
            OrgId(org.public()),
            SecretKey::from_seed([9; 32]).public(),
            CertRole::Node,
            Timestamp::from_millis(10),
            Timestamp::from_millis(20),
        )
    }

    #[test]
    fn a_certificate_verifies_only_under_its_org() {
        let org = SecretKey::from_seed([1; 32]);
        let cert = Certificate::issue(&org, body(&org)).expect("issues");
        assert_eq!(cert.verify(), Ok(()));
        assert!(cert.is_valid_at(Timestamp::from_millis(20)));
        assert!(!cert.is_valid_at(Timestamp::from_millis(21)));

        let other_org = SecretKey::from_seed([2; 32]);
        let forged = Certificate::issue(&other_org, body(&org)).expect("issues");
        assert!(matches!(
            forged.verify(),
            Err(CertError::BadSignature { .. })
        ));
    }

    #[test]
    fn an_event_signature_is_not_a_certificate_signature() {
        let org = SecretKey::from_seed([1; 32]);
        let body = body(&org);
        let bytes = codec::encode(&body).expect("encodes");
        let signature = org.sign(Domain::EventSignature, &bytes);
        let cert = Certificate { body, signature };
        assert!(matches!(cert.verify(), Err(CertError::BadSignature { .. })));
    }
}
