//! Events: a signed header plus erasable content.
//!
//! # Protocol flow
//! 1. An author fills a [`Draft`] (scope, parents, depth, kind, content) and signs it:
//!    [`Draft::sign`] computes the content hash, puts it in the [`EventHeader`] and signs the
//!    header in the domain `threadline/event/v1`.
//! 2. The [`Event`] travels: signed header plus content (or no content once erased).
//! 3. A receiver runs [`Event::verify`] (or [`verify_batch`]): structure, size limits, content
//!    hash, signature. The result is a [`VerifiedEvent`] with its [`EventId`]; only verified
//!    events can enter a [`Dag`](crate::dag::Dag), and the auth rules
//!    ([`crate::auth`]) run there.

mod content;
mod kind;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use content::{Attachment, Content, Template};
pub use kind::{Direction, DirectoryKind, EventKind, ReceiptKind, Status, ThreadKind};

use crate::codec::{self, DecodeError, EncodeError};
use crate::digest::{self, Domain};
use crate::id::{AgentId, ContentHash, EventId, ThreadId};
use crate::key::{BadSignature, OrgId, PublicKey, SecretKey, Signature};
use crate::limits::{
    MAX_ATTACHMENTS, MAX_ERASE_TARGETS, MAX_EVENT_BYTES, MAX_PARENTS, MAX_TEAM_MEMBERS,
    MAX_TEXT_BYTES,
};
use crate::time::Timestamp;
use crate::verify;
use kind::ContentRule;

/// Which log an event belongs to, as written in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// The contact directory of an org.
    Directory(OrgId),
    /// The root of a new thread; the thread's id is this event's id.
    NewThread,
    /// An existing thread.
    Thread(ThreadId),
}

/// Which log an event belongs to, resolved: a thread root names its own thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScopeId {
    /// An org's contact directory.
    Directory(OrgId),
    /// A thread.
    Thread(ThreadId),
}

impl std::fmt::Display for ScopeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScopeId::Directory(org) => write!(f, "directory:{org}"),
            ScopeId::Thread(thread) => write!(f, "thread:{thread}"),
        }
    }
}

/// The signed part of an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventHeader {
    /// The log it belongs to.
    pub scope: Scope,
    /// Ids of the heads the author saw: sorted ascending, no duplicates, empty only for a root.
    pub parents: Vec<EventId>,
    /// 0 for a root, otherwise one more than the deepest parent.
    pub depth: u64,
    /// The signing key (certified by an org, or the org key itself).
    pub author: PublicKey,
    /// The agent the action is for, when a node signs for an agent it authenticated.
    pub agent: Option<AgentId>,
    /// When the author says it made the event.
    pub author_time: Timestamp,
    /// What the event says.
    pub kind: EventKind,
    /// SHA-256 of the content, when the event has content.
    pub content_hash: Option<ContentHash>,
}

/// A header and the author's signature over `threadline/event/v1 || 0x00 || encode(header)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SignedHeader {
    /// The header.
    pub header: EventHeader,
    /// The author's signature.
    pub signature: Signature,
}

/// An event as it travels and is stored: the signed header and, unless erased, its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// The signed header.
    pub signed: SignedHeader,
    /// The content, or `None` when the event has none or it was erased. (Boxed: events are
    /// kept in memory by the million, many without content or with it dropped.)
    #[serde(with = "content::wire")]
    pub content: Option<Box<Content>>,
}

/// An event to be signed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Draft {
    /// The log.
    pub scope: Scope,
    /// Parents (sorted and deduplicated by [`Draft::sign`]).
    pub parents: Vec<EventId>,
    /// Depth: one more than the deepest parent, 0 for a root.
    pub depth: u64,
    /// The agent the action is for.
    pub agent: Option<AgentId>,
    /// The author's time.
    pub author_time: Timestamp,
    /// The kind.
    pub kind: EventKind,
    /// The content.
    pub content: Option<Content>,
}

/// An event that passed [`Event::verify`]: well-formed, within limits, content matching its
/// hash, signature valid. Not serializable: to send it, turn it back into an [`Event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEvent {
    id: EventId,
    event: Event,
}

/// Why an event is not well-formed or not validly signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature does not verify.
    #[error(transparent)]
    BadSignature(#[from] BadSignature),
    /// The content does not match the header's hash.
    #[error("content does not match the header's content hash")]
    ContentHashMismatch,
    /// The kind has no content but the header names a content hash, or the reverse.
    #[error("{kind} events {rule} content")]
    ContentRule {
        /// The kind.
        kind: &'static str,
        /// "must have" or "must not have".
        rule: &'static str,
    },
    /// The content lacks what the kind needs (a handle on the right channel).
    #[error("{kind} content is invalid: {reason}")]
    BadContent {
        /// The kind.
        kind: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The kind does not belong in the scope (a directory kind in a thread, a root kind that is
    /// not a root).
    #[error("{kind} does not belong in a {scope} scope")]
    KindScopeMismatch {
        /// The kind.
        kind: &'static str,
        /// The scope.
        scope: &'static str,
    },
    /// Parents are not strictly ascending, or a root has parents, or a non-root has none.
    #[error("bad parents: {reason}")]
    BadParents {
        /// What is wrong.
        reason: &'static str,
    },
    /// A root's depth is not 0.
    #[error("a root must have depth 0, has {depth}")]
    BadRootDepth {
        /// The depth given.
        depth: u64,
    },
    /// A field is over its size limit.
    #[error("{what} is {len}, limit is {max}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A directory genesis that is not the org key's canonical genesis.
    #[error("a directory genesis must be signed by the org key at time 0, with no agent")]
    BadGenesis,
    /// A certificate published in another org's directory.
    #[error("certificate of org {cert_org} published in the directory of {directory}")]
    ForeignCertificate {
        /// The certificate's org.
        cert_org: OrgId,
        /// The directory's org.
        directory: OrgId,
    },
    /// The event could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl Draft {
    /// A draft with no agent and no content.
    pub fn new(
        scope: Scope,
        parents: Vec<EventId>,
        depth: u64,
        author_time: Timestamp,
        kind: EventKind,
    ) -> Self {
        Draft {
            scope,
            parents,
            depth,
            agent: None,
            author_time,
            kind,
            content: None,
        }
    }

    /// Sets the agent the action is for.
    pub fn with_agent(mut self, agent: AgentId) -> Self {
        self.agent = Some(agent);
        self
    }

    /// Sets the content.
    pub fn with_content(mut self, content: Content) -> Self {
        self.content = Some(content);
        self
    }

    /// Signs the draft with `key`: sorts and deduplicates the parents, hashes the content into
    /// the header and signs the header.
    pub fn sign(mut self, key: &SecretKey) -> Result<Event, EncodeError> {
        self.parents.sort_unstable();
        self.parents.dedup();
        let content_hash = self.content.as_ref().map(Content::hash).transpose()?;
        let header = EventHeader {
            scope: self.scope,
            parents: self.parents,
            depth: self.depth,
            author: key.public(),
            agent: self.agent,
            author_time: self.author_time,
            kind: self.kind,
            content_hash,
        };
        let signature = key.sign(Domain::EventSignature, &codec::encode(&header)?);
        Ok(Event {
            signed: SignedHeader { header, signature },
            content: self.content.map(Box::new),
        })
    }
}

impl Event {
    /// An event from its signed header and content (as read back from storage).
    pub fn new(signed: SignedHeader, content: Option<Content>) -> Self {
        Event {
            signed,
            content: content.map(Box::new),
        }
    }

    /// [`Event::new`] with the content already boxed (as [`Content::from_tagged_bytes`] gives
    /// it).
    pub fn from_parts(signed: SignedHeader, content: Option<Box<Content>>) -> Self {
        Event { signed, content }
    }

    /// Decodes one event from its canonical bytes (at most [`MAX_EVENT_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_EVENT_BYTES)
    }

    /// The canonical bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        codec::encode(self)
    }

    /// The header.
    pub fn header(&self) -> &EventHeader {
        &self.signed.header
    }

    /// The event id: SHA-256 over `threadline/event-id/v1 || 0x00 || encode(signed header)`.
    pub fn id(&self) -> Result<EventId, EncodeError> {
        Ok(EventId::from_bytes(digest::sha256(
            Domain::EventId,
            &codec::encode(&self.signed)?,
        )))
    }

    /// Checks structure, limits, content hash and signature.
    pub fn verify(self) -> Result<VerifiedEvent, VerifyError> {
        let header_bytes = self.check_all_but_signature()?;
        let header = &self.signed.header;
        header.author.verify(
            Domain::EventSignature,
            &header_bytes,
            &self.signed.signature,
        )?;
        let id = id_of(&header_bytes, &self.signed.signature)?;
        Ok(VerifiedEvent { id, event: self })
    }

    /// For events read back from a node's own store, which verified them before storing them:
    /// checks structure, limits and the content hash (so a corrupted record is caught) but not
    /// the signature, which costs 40–80 µs and was checked on the way in.
    pub fn verify_from_store(self) -> Result<VerifiedEvent, VerifyError> {
        let header_bytes = self.check_all_but_signature()?;
        let id = id_of(&header_bytes, &self.signed.signature)?;
        Ok(VerifiedEvent { id, event: self })
    }

    /// Everything [`Event::verify`] checks except the signature; returns the header's encoding.
    fn check_all_but_signature(&self) -> Result<Vec<u8>, VerifyError> {
        check_structure(&self.signed.header)?;
        let rule = self.signed.header.kind.content_rule();
        let kind = self.signed.header.kind.name();
        match (rule, &self.signed.header.content_hash) {
            (ContentRule::Required, None) => {
                return Err(VerifyError::ContentRule {
                    kind,
                    rule: "must have",
                })
            }
            (ContentRule::Forbidden, Some(_)) => {
                return Err(VerifyError::ContentRule {
                    kind,
                    rule: "must not have",
                })
            }
            _ => {}
        }
        match (&self.content, &self.signed.header.content_hash) {
            (Some(_), None) => {
                return Err(VerifyError::ContentRule {
                    kind,
                    rule: "must not have",
                })
            }
            (Some(content), Some(hash)) => {
                check_content(&self.signed.header.kind, content)?;
                if content.hash()? != *hash {
                    return Err(VerifyError::ContentHashMismatch);
                }
            }
            // Content absent: never sent, or erased. The header alone still verifies.
            (None, _) => {}
        }
        let len = codec::encode(self)?.len();
        if len > MAX_EVENT_BYTES {
            return Err(VerifyError::TooLarge {
                what: "encoded event",
                len,
                max: MAX_EVENT_BYTES,
            });
        }
        Ok(codec::encode(&self.signed.header)?)
    }
}

/// Verifies many events, in input order, with the same verdicts as [`Event::verify`] on each.
///
/// The signatures of all well-formed events are checked in one batch equation (about twice as
/// fast per signature as one at a time, more when one author signs many, as a bridge does);
/// if the batch fails, each is checked alone, so one bad event never refuses the others. The
/// acceptance rule is the same for both ways (see `verify.rs`), so a replica's verdict on an
/// event does not depend on the batch it arrived in.
pub fn verify_batch(events: Vec<Event>) -> Vec<Result<VerifiedEvent, VerifyError>> {
    let mut keys: HashMap<PublicKey, Option<verify::Key>> = HashMap::new();
    let mut checked: Vec<Result<(Event, verify::Prepared, EventId), VerifyError>> = events
        .into_iter()
        .map(|event| {
            let header_bytes = event.check_all_but_signature()?;
            let author = event.signed.header.author;
            let bad = || {
                VerifyError::BadSignature(BadSignature {
                    signer: author,
                    domain: Domain::EventSignature.as_str(),
                })
            };
            let key = keys
                .entry(author)
                .or_insert_with(|| verify::Key::new(&author))
                .ok_or_else(bad)?;
            let prepared = verify::prepare(
                &key,
                &digest::separated(Domain::EventSignature, &header_bytes),
                &event.signed.signature,
            )
            .ok_or_else(bad)?;
            let id = id_of(&header_bytes, &event.signed.signature)?;
            Ok((event, prepared, id))
        })
        .collect();
    let prepared: Vec<verify::Prepared> = checked
        .iter()
        .filter_map(|result| result.as_ref().ok().map(|(_, prepared, _)| *prepared))
        .collect();
    let all_good = verify::check_batch(&prepared);
    checked
        .drain(..)
        .map(|result| {
            let (event, prepared, id) = result?;
            if !all_good && !verify::check_one(&prepared) {
                return Err(VerifyError::BadSignature(BadSignature {
                    signer: event.signed.header.author,
                    domain: Domain::EventSignature.as_str(),
                }));
            }
            Ok(VerifiedEvent { id, event })
        })
        .collect()
}

/// [`Event::id`] from the header's encoding, which verification has made already: a
/// [`SignedHeader`] encodes as its fields in order, the header then the signature.
fn id_of(header_bytes: &[u8], signature: &Signature) -> Result<EventId, EncodeError> {
    let signature_bytes = codec::encode(signature)?;
    Ok(EventId::from_bytes(digest::sha256_parts(
        Domain::EventId,
        &[header_bytes, &signature_bytes],
    )))
}

fn check_structure(header: &EventHeader) -> Result<(), VerifyError> {
    let kind_name = header.kind.name();
    let is_root = match (&header.scope, &header.kind) {
        (Scope::Directory(org), EventKind::Directory(kind)) => match kind {
            DirectoryKind::Genesis => {
                if header.author != org.0
                    || header.author_time != Timestamp::EPOCH
                    || header.agent.is_some()
                {
                    return Err(VerifyError::BadGenesis);
                }
                true
            }
            DirectoryKind::Certify { certificate } => {
                if certificate.body.org != *org {
                    return Err(VerifyError::ForeignCertificate {
                        cert_org: certificate.body.org,
                        directory: *org,
                    });
                }
                false
            }
            _ => false,
        },
        (Scope::NewThread, EventKind::Thread(ThreadKind::Opened { .. })) => true,
        (Scope::Thread(_), EventKind::Thread(kind)) => {
            if matches!(kind, ThreadKind::Opened { .. }) {
                return Err(VerifyError::KindScopeMismatch {
                    kind: kind_name,
                    scope: "thread (opened must use the new-thread scope)",
                });
            }
            false
        }
        (scope, _) => {
            return Err(VerifyError::KindScopeMismatch {
                kind: kind_name,
                scope: match scope {
                    Scope::Directory(_) => "directory",
                    Scope::NewThread => "new thread",
                    Scope::Thread(_) => "thread",
                },
            })
        }
    };
    if is_root {
        if !header.parents.is_empty() {
            return Err(VerifyError::BadParents {
                reason: "a root has no parents",
            });
        }
        if header.depth != 0 {
            return Err(VerifyError::BadRootDepth {
                depth: header.depth,
            });
        }
    } else {
        if header.parents.is_empty() {
            return Err(VerifyError::BadParents {
                reason: "only a root has no parents",
            });
        }
        if header.depth == 0 {
            return Err(VerifyError::BadParents {
                reason: "only a root has depth 0",
            });
        }
    }
    if header.parents.len() > MAX_PARENTS {
        return Err(VerifyError::TooLarge {
            what: "parents",
            len: header.parents.len(),
            max: MAX_PARENTS,
        });
    }
    if !strictly_ascending(&header.parents) {
        return Err(VerifyError::BadParents {
            reason: "parents must be sorted ascending with no duplicates",
        });
    }
    if let EventKind::Thread(ThreadKind::Erase { targets }) = &header.kind {
        if targets.is_empty() || targets.len() > MAX_ERASE_TARGETS {
            return Err(VerifyError::TooLarge {
                what: "erase targets",
                len: targets.len(),
                max: MAX_ERASE_TARGETS,
            });
        }
        if !strictly_ascending(targets) {
            return Err(VerifyError::BadContent {
                kind: kind_name,
                reason: "targets must be sorted ascending with no duplicates",
            });
        }
    }
    if let EventKind::Directory(DirectoryKind::SetTeam { members, .. }) = &header.kind {
        if members.len() > MAX_TEAM_MEMBERS {
            return Err(VerifyError::TooLarge {
                what: "team members",
                len: members.len(),
                max: MAX_TEAM_MEMBERS,
            });
        }
        if !strictly_ascending(members) {
            return Err(VerifyError::BadContent {
                kind: kind_name,
                reason: "members must be sorted ascending with no duplicates",
            });
        }
    }
    Ok(())
}

fn strictly_ascending<T: Ord>(ids: &[T]) -> bool {
    ids.windows(2).all(|pair| pair[0] < pair[1])
}

fn check_content(kind: &EventKind, content: &Content) -> Result<(), VerifyError> {
    if content.text.len() > MAX_TEXT_BYTES {
        return Err(VerifyError::TooLarge {
            what: "text",
            len: content.text.len(),
            max: MAX_TEXT_BYTES,
        });
    }
    if content.attachments.len() > MAX_ATTACHMENTS {
        return Err(VerifyError::TooLarge {
            what: "attachments",
            len: content.attachments.len(),
            max: MAX_ATTACHMENTS,
        });
    }
    if let Some(attachment) = content
        .blobs()
        .find(|a| a.size > crate::limits::MAX_BLOB_BYTES)
    {
        return Err(VerifyError::TooLarge {
            what: "attachment",
            len: usize::try_from(attachment.size).unwrap_or(usize::MAX),
            max: usize::try_from(crate::limits::MAX_BLOB_BYTES).unwrap_or(usize::MAX),
        });
    }
    let name = kind.name();
    let is_message = matches!(
        kind,
        EventKind::Thread(ThreadKind::Message { .. } | ThreadKind::AutoReply { .. })
    );
    if !is_message && (content.subject.is_some() || content.original.is_some()) {
        return Err(VerifyError::BadContent {
            kind: name,
            reason: "only messages have a subject or an original",
        });
    }
    if content.reply_to.is_some() && !matches!(kind, EventKind::Thread(ThreadKind::Message { .. }))
    {
        return Err(VerifyError::BadContent {
            kind: name,
            reason: "only a message answers another",
        });
    }
    if let Some(template) = &content.template {
        let outbound = matches!(
            kind,
            EventKind::Thread(ThreadKind::Message {
                direction: Direction::Outbound
            })
        );
        if !outbound {
            return Err(VerifyError::BadContent {
                kind: name,
                reason: "only a reply goes as a message template",
            });
        }
        if template.parameters.len() > crate::limits::MAX_TEMPLATE_PARAMETERS {
            return Err(VerifyError::TooLarge {
                what: "template parameters",
                len: template.parameters.len(),
                max: crate::limits::MAX_TEMPLATE_PARAMETERS,
            });
        }
    }
    let handle_on = |channel| match &content.handle {
        Some(handle) if handle.channel() == channel => Ok(()),
        Some(_) => Err(VerifyError::BadContent {
            kind: name,
            reason: "the handle is on another channel",
        }),
        None => Err(VerifyError::BadContent {
            kind: name,
            reason: "a handle is required",
        }),
    };
    match kind {
        EventKind::Thread(ThreadKind::Message {
            direction: Direction::Inbound { channel },
        })
        | EventKind::Thread(ThreadKind::HandOff { channel })
        | EventKind::Thread(ThreadKind::AutoReply { channel }) => handle_on(*channel),
        EventKind::Thread(ThreadKind::Opened { channel, .. }) if content.handle.is_some() => {
            handle_on(*channel)
        }
        EventKind::Directory(DirectoryKind::LinkHandle { .. })
        | EventKind::Directory(DirectoryKind::UnlinkHandle { .. }) => {
            if content.handle.is_none() {
                return Err(VerifyError::BadContent {
                    kind: name,
                    reason: "a handle is required",
                });
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

impl VerifiedEvent {
    /// An event a node verified before storing it, read back from its own store with the id
    /// it was stored under. Nothing is checked: the store's checksums and authenticated
    /// encryption already cover every byte (a damaged record fails there). For anything that
    /// did not come out of such a store, use [`Event::verify`].
    pub fn from_own_store(id: EventId, event: Event) -> VerifiedEvent {
        VerifiedEvent { id, event }
    }

    /// The event id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The header.
    pub fn header(&self) -> &EventHeader {
        &self.event.signed.header
    }

    /// The content, if present.
    pub fn content(&self) -> Option<&Content> {
        self.event.content.as_deref()
    }

    /// The log this event belongs to.
    pub fn scope_id(&self) -> ScopeId {
        match self.header().scope {
            Scope::Directory(org) => ScopeId::Directory(org),
            Scope::NewThread => ScopeId::Thread(ThreadId::from_root(self.id)),
            Scope::Thread(thread) => ScopeId::Thread(thread),
        }
    }

    /// The event as it travels.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// Back to the travelling form.
    pub fn into_event(self) -> Event {
        self.event
    }

    /// Drops the content (erasure). The header, and so the id, stay.
    pub fn erase_content(&mut self) {
        self.event.content = None;
    }
}
