//! Auth rules: who may append what. Pure functions over the event, the certificates the caller
//! knows and the caller's `now`.
//!
//! Every event, from any source, passes these after [`Event::verify`](crate::event::Event::verify)
//! and before it is stored:
//!
//! 1. The author is the org key of the directory it writes, or holds a certificate of an org
//!    that is valid at the event's author time and not revoked at or before it.
//! 2. The author time is not more than [`MAX_CLOCK_SKEW_MILLIS`] after `now`.
//! 3. The author's role allows the kind: a bridge introduces only inbound messages, automatic
//!    replies and receipts on its own channel (and handle scope); nodes and agents do the rest;
//!    an agent key acts only as its own agent; only the org key revokes.
//! 4. Thread events: the author's org is a member of the thread as of the event's causal past;
//!    only the owning org changes membership or erases; the owner cannot be removed.
//! 5. A bridge stays on its own org's threads and its channel's: it introduces a message only
//!    into a thread of its org whose causal past opens it on the bridge's channel or hands it
//!    off there (a node or agent, which checked that the customer's handle is the thread's
//!    contact's, signed that); its receipt names an outbound message among its parents whose
//!    reply was routed to its channel.

use std::collections::BTreeMap;

use crate::cert::{CertError, CertRole, Certificate};
use crate::channel::{ChannelKind, ChannelSet, Handle};
use crate::event::{Direction, DirectoryKind, EventKind, ThreadKind, VerifiedEvent};
use crate::key::{OrgId, PublicKey};
use crate::limits::MAX_CLOCK_SKEW_MILLIS;
use crate::time::Timestamp;

/// The certificates and revocations a node knows, from the directories it holds. Only verified
/// certificates get in.
#[derive(Clone, Debug, Default)]
pub struct Certificates {
    by_subject: BTreeMap<PublicKey, Vec<Certificate>>,
    revoked_from: BTreeMap<PublicKey, Timestamp>,
}

/// Who signed an event, as the auth rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor<'a> {
    /// The org key itself.
    OrgKey(OrgId),
    /// A certified key.
    Certified {
        /// The org that certified it.
        org: OrgId,
        /// What it may do.
        role: &'a CertRole,
    },
}

impl Actor<'_> {
    /// The org the actor belongs to.
    pub fn org(&self) -> OrgId {
        match self {
            Actor::OrgKey(org) | Actor::Certified { org, .. } => *org,
        }
    }

    fn role_name(&self) -> &'static str {
        match self {
            Actor::OrgKey(_) => "org key",
            Actor::Certified { role, .. } => match role {
                CertRole::Node => "node",
                CertRole::Bridge { .. } => "bridge",
                CertRole::Agent { .. } => "agent",
            },
        }
    }
}

/// An event breaks an auth rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No certificate is known for the author. Retry once the author's directory has synced.
    #[error("no certificate known for author {author}")]
    UnknownAuthor {
        /// The author.
        author: PublicKey,
    },
    /// The author's certificates are not valid at the author time.
    #[error("author {author} has no certificate valid at {at}")]
    CertificateNotValid {
        /// The author.
        author: PublicKey,
        /// The event's author time.
        at: Timestamp,
    },
    /// The author's key is revoked from a time at or before the event's author time.
    #[error("author {author} is revoked from {effective_from}")]
    Revoked {
        /// The author.
        author: PublicKey,
        /// When the revocation took effect.
        effective_from: Timestamp,
    },
    /// The author time is too far in the future. Retry later.
    #[error("author time {author_time} is after now ({now}) plus the allowed skew")]
    FromTheFuture {
        /// The event's time.
        author_time: Timestamp,
        /// The receiver's now.
        now: Timestamp,
    },
    /// The author's role may not make this kind of event.
    #[error("a {role} may not make {kind} events")]
    KindNotAllowed {
        /// The author's role.
        role: &'static str,
        /// The event kind.
        kind: &'static str,
    },
    /// A bridge acted on a channel it is not certified for.
    #[error("bridge certified for {certified} acted on {used}")]
    WrongChannel {
        /// The certificate's channel.
        certified: ChannelKind,
        /// The event's channel.
        used: ChannelKind,
    },
    /// A handle-scoped bridge introduced a message from another handle.
    #[error("bridge scoped to {scope} introduced a message from another handle")]
    HandleOutOfScope {
        /// The bridge's scope.
        scope: Handle,
    },
    /// An agent key acted as another agent.
    #[error("an agent key may act only as its own agent")]
    AgentMismatch,
    /// The author's org is not a member of the thread.
    #[error("org {org} is not a member of the thread")]
    NotAMember {
        /// The author's org.
        org: OrgId,
    },
    /// Only the owning org may do this.
    #[error("only the owning org {owner} may make {kind} events, not {org}")]
    NotOwner {
        /// The author's org.
        org: OrgId,
        /// The owning org.
        owner: OrgId,
        /// The event kind.
        kind: &'static str,
    },
    /// The owning org cannot leave its own thread.
    #[error("the owning org cannot be removed from its thread")]
    CannotRemoveOwner,
    /// A thread opened for another org, or a directory written by another org's key.
    #[error("author of org {author_org} wrote for org {target}")]
    WrongOrg {
        /// The author's org.
        author_org: OrgId,
        /// The org written for.
        target: OrgId,
    },
    /// A bridge wrote into a thread that its org never opened on, or handed off to, the
    /// bridge's channel.
    #[error("the thread is not open to {channel}: no node or agent opened it there or handed it off there")]
    ChannelNotAdmitted {
        /// The bridge's channel.
        channel: ChannelKind,
    },
    /// A receipt's target is not one of its parents.
    #[error("a receipt's target {target} must be one of its parents")]
    ReceiptTargetNotParent {
        /// The target.
        target: crate::id::EventId,
    },
    /// A receipt names something other than an outbound message.
    #[error("a receipt's target {target} is not an outbound message")]
    ReceiptTargetNotOutbound {
        /// The target.
        target: crate::id::EventId,
    },
    /// A bridge wrote a receipt for a reply routed to another channel.
    #[error("a {channel} bridge may not write a receipt for a reply routed to {}", routed_to.map_or("no channel", ChannelKind::as_str))]
    ReceiptNotOnRoute {
        /// The bridge's channel.
        channel: ChannelKind,
        /// Where the reply was routed.
        routed_to: Option<ChannelKind>,
    },
    /// A published certificate does not verify.
    #[error("published certificate is invalid: {0}")]
    BadCertificate(#[from] CertError),
}

impl AuthError {
    /// Whether the same event may pass later (once certificates sync or the clock catches up).
    /// Other auth errors are final, and a peer that sends such an event is misbehaving.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AuthError::UnknownAuthor { .. } | AuthError::FromTheFuture { .. }
        )
    }
}

impl Certificates {
    /// No certificates.
    pub fn new() -> Self {
        Certificates::default()
    }

    /// Adds a certificate after checking its signature. Adding the same certificate twice is a
    /// no-op.
    pub fn insert(&mut self, certificate: Certificate) -> Result<(), CertError> {
        certificate.verify()?;
        let entry = self.by_subject.entry(certificate.body.subject).or_default();
        if !entry.contains(&certificate) {
            entry.push(certificate);
        }
        Ok(())
    }

    /// Revokes a key from a time on (the earliest revocation wins).
    pub fn revoke(&mut self, subject: PublicKey, effective_from: Timestamp) {
        let entry = self.revoked_from.entry(subject).or_insert(effective_from);
        *entry = (*entry).min(effective_from);
    }

    /// Adds every certificate and revocation of `other`.
    pub fn extend(&mut self, other: &Certificates) {
        for (subject, certificates) in &other.by_subject {
            let entry = self.by_subject.entry(*subject).or_default();
            for certificate in certificates {
                if !entry.contains(certificate) {
                    entry.push(certificate.clone());
                }
            }
        }
        for (subject, from) in &other.revoked_from {
            self.revoke(*subject, *from);
        }
    }

    /// The certificates of a key.
    pub fn of(&self, subject: &PublicKey) -> &[Certificate] {
        self.by_subject
            .get(subject)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// When a key is revoked from, if it is.
    pub fn revoked_from(&self, subject: &PublicKey) -> Option<Timestamp> {
        self.revoked_from.get(subject).copied()
    }

    /// Rules 1 and 2 for a certified author: its certificate valid at `at`, not revoked, `at` not
    /// in the future.
    pub fn authorize(
        &self,
        author: &PublicKey,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<Actor<'_>, AuthError> {
        check_clock(at, now)?;
        let certificates = self.of(author);
        if certificates.is_empty() {
            return Err(AuthError::UnknownAuthor { author: *author });
        }
        if let Some(effective_from) = self.revoked_from(author) {
            if effective_from <= at {
                return Err(AuthError::Revoked {
                    author: *author,
                    effective_from,
                });
            }
        }
        let certificate = certificates.iter().find(|c| c.is_valid_at(at)).ok_or(
            AuthError::CertificateNotValid {
                author: *author,
                at,
            },
        )?;
        Ok(Actor::Certified {
            org: certificate.body.org,
            role: &certificate.body.role,
        })
    }
}

fn check_clock(at: Timestamp, now: Timestamp) -> Result<(), AuthError> {
    if at > now.saturating_add_millis(MAX_CLOCK_SKEW_MILLIS) {
        return Err(AuthError::FromTheFuture {
            author_time: at,
            now,
        });
    }
    Ok(())
}

/// What the thread knows about itself when it checks a new event.
#[derive(Clone, Copy, Debug)]
pub struct ThreadContext<'a> {
    /// The owning org (from the root).
    pub owner: OrgId,
    /// The member orgs as of the event's causal past.
    pub members: &'a std::collections::BTreeSet<OrgId>,
    /// The channels the thread was opened on or handed off to in the event's causal past.
    pub admitted: ChannelSet,
    /// For a receipt whose target is one of its parents: that target.
    pub receipt_target: Option<ReceiptTarget>,
}

/// A receipt's target, as the auth rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptTarget {
    /// Whether it is an outbound message.
    pub outbound: bool,
    /// The thread's route channel as of the target (where the reply was sent).
    pub routed_to: Option<ChannelKind>,
}

/// Rules 1–4 for a thread event. `context` is `None` for a thread's root.
pub fn check_thread_event(
    event: &VerifiedEvent,
    context: Option<ThreadContext<'_>>,
    certificates: &Certificates,
    now: Timestamp,
) -> Result<(), AuthError> {
    let header = event.header();
    let actor = certificates.authorize(&header.author, header.author_time, now)?;
    let EventKind::Thread(kind) = &header.kind else {
        return Err(AuthError::KindNotAllowed {
            role: actor.role_name(),
            kind: header.kind.name(),
        });
    };
    let kind_name = header.kind.name();
    let not_allowed = AuthError::KindNotAllowed {
        role: actor.role_name(),
        kind: kind_name,
    };
    let Actor::Certified { org, role } = actor else {
        return Err(not_allowed);
    };
    match role {
        CertRole::Bridge {
            channel,
            handle_scope,
        } => {
            if header.agent.is_some() {
                return Err(AuthError::AgentMismatch);
            }
            let used = match kind {
                ThreadKind::Message {
                    direction: Direction::Inbound { channel: used },
                }
                | ThreadKind::AutoReply { channel: used } => {
                    if let (Some(scope), Some(content)) = (handle_scope, event.content()) {
                        if content.handle.as_ref() != Some(scope) {
                            return Err(AuthError::HandleOutOfScope {
                                scope: scope.clone(),
                            });
                        }
                    }
                    *used
                }
                ThreadKind::Receipt { channel: used, .. } => *used,
                _ => return Err(not_allowed),
            };
            if used != *channel {
                return Err(AuthError::WrongChannel {
                    certified: *channel,
                    used,
                });
            }
        }
        CertRole::Node | CertRole::Agent { .. } => {
            let bridge_only = matches!(
                kind,
                ThreadKind::Receipt { .. }
                    | ThreadKind::AutoReply { .. }
                    | ThreadKind::Message {
                        direction: Direction::Inbound { .. }
                    }
            );
            if bridge_only {
                return Err(not_allowed);
            }
            if let CertRole::Agent { agent } = role {
                if matches!(kind, ThreadKind::Opened { .. }) {
                    return Err(not_allowed);
                }
                if header.agent != Some(*agent) {
                    return Err(AuthError::AgentMismatch);
                }
            }
        }
    }
    match (kind, context) {
        (ThreadKind::Opened { org: owner, .. }, _) => {
            if *owner != org {
                return Err(AuthError::WrongOrg {
                    author_org: org,
                    target: *owner,
                });
            }
        }
        (_, None) => return Err(not_allowed),
        (kind, Some(context)) => {
            if !context.members.contains(&org) {
                return Err(AuthError::NotAMember { org });
            }
            let owner_only = matches!(
                kind,
                ThreadKind::MemberAdd { .. }
                    | ThreadKind::MemberRemove { .. }
                    | ThreadKind::Erase { .. }
            );
            if owner_only && org != context.owner {
                return Err(AuthError::NotOwner {
                    org,
                    owner: context.owner,
                    kind: kind_name,
                });
            }
            if let ThreadKind::MemberRemove { org: removed } = kind {
                if *removed == context.owner {
                    return Err(AuthError::CannotRemoveOwner);
                }
            }
            if let CertRole::Bridge { channel, .. } = role {
                // The customer is the owning org's (its directory links the handles): a
                // partner's bridge has no one to speak for in a shared thread.
                if org != context.owner {
                    return Err(AuthError::NotOwner {
                        org,
                        owner: context.owner,
                        kind: kind_name,
                    });
                }
                check_bridge_scope(kind, *channel, &context)?;
            }
        }
    }
    Ok(())
}

/// Rule 5: a bridge's message goes only into a thread open to its channel, and its receipt
/// only onto a reply routed to its channel.
fn check_bridge_scope(
    kind: &ThreadKind,
    channel: ChannelKind,
    context: &ThreadContext<'_>,
) -> Result<(), AuthError> {
    match kind {
        ThreadKind::Message { .. } | ThreadKind::AutoReply { .. }
            if !context.admitted.contains(channel) =>
        {
            Err(AuthError::ChannelNotAdmitted { channel })
        }
        ThreadKind::Receipt { target, .. } => match context.receipt_target {
            None => Err(AuthError::ReceiptTargetNotParent { target: *target }),
            Some(ReceiptTarget {
                outbound: false, ..
            }) => Err(AuthError::ReceiptTargetNotOutbound { target: *target }),
            Some(ReceiptTarget { routed_to, .. }) if routed_to != Some(channel) => {
                Err(AuthError::ReceiptNotOnRoute { channel, routed_to })
            }
            Some(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Rules 1–3 for an event of `org`'s directory. `certificates` are the directory's own.
pub fn check_directory_event(
    event: &VerifiedEvent,
    org: OrgId,
    certificates: &Certificates,
    now: Timestamp,
) -> Result<(), AuthError> {
    let header = event.header();
    let EventKind::Directory(kind) = &header.kind else {
        return Err(AuthError::KindNotAllowed {
            role: "directory author",
            kind: header.kind.name(),
        });
    };
    if let DirectoryKind::Certify { certificate } = kind {
        certificate.verify()?;
    }
    if header.author == org.0 {
        // The org key may write anything in its own directory.
        return check_clock(header.author_time, now);
    }
    let actor = match kind {
        // A certificate proves itself: its subject may publish it before anyone knows it.
        DirectoryKind::Certify { certificate } if certificate.body.subject == header.author => {
            check_clock(header.author_time, now)?;
            Actor::Certified {
                org: certificate.body.org,
                role: &certificate.body.role,
            }
        }
        _ => certificates.authorize(&header.author, header.author_time, now)?,
    };
    if actor.org() != org {
        return Err(AuthError::WrongOrg {
            author_org: actor.org(),
            target: org,
        });
    }
    let allowed = match actor {
        Actor::OrgKey(_) => true,
        Actor::Certified { role, .. } => match role {
            CertRole::Bridge { .. } => false,
            CertRole::Node | CertRole::Agent { .. } => {
                !matches!(kind, DirectoryKind::Revoke { .. } | DirectoryKind::Genesis)
            }
        },
    };
    if !allowed {
        return Err(AuthError::KindNotAllowed {
            role: actor.role_name(),
            kind: header.kind.name(),
        });
    }
    if let Actor::Certified {
        role: CertRole::Agent { agent },
        ..
    } = actor
    {
        if header.agent != Some(*agent) {
            return Err(AuthError::AgentMismatch);
        }
    }
    Ok(())
}
