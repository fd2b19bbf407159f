//! The derived state of an org's contact directory: a pure fold of its events in linear order.
//!
//! Rules that make replicas converge whatever order events arrive in:
//! - Operations name a contact; they act on the contact it has been merged into (its root).
//! - A handle linked to one live contact is not taken by another (first link in order wins).
//! - A merge of two contacts that already share a root does nothing, so merges never cycle.
//! - Erasure is decided over the whole log before the fold: a contact is erased when any
//!   `EraseContact` names a contact of its final merge tree, and then no event about it
//!   contributes content (handles, names, attribute values) anywhere in the fold. Replicas that
//!   still hold the erased content and replicas that never received it compute the same state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cert::Certificate;
use crate::channel::{ChannelKind, Handle};
use crate::codec::{self, EncodeError};
use crate::digest::{self, Domain};
use crate::event::{DirectoryKind, EventKind, VerifiedEvent};
use crate::id::{AgentId, ContactId, StateHash};
use crate::key::{OrgId, PublicKey};
use crate::name::{AttributeKey, Shortcode, TeamName, WebhookName};
use crate::time::Timestamp;

/// One contact as the directory knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ContactRecord {
    /// Display name, if given.
    pub display_name: Option<String>,
    /// The contact this one was merged into, if any.
    pub merged_into: Option<ContactId>,
    /// Contacts merged into this one (transitively), when this is a root.
    pub merged_from: BTreeSet<ContactId>,
    /// Handles linked to this contact (for a root: including those of merged contacts).
    pub handles: BTreeSet<Handle>,
    /// Attributes.
    pub attributes: BTreeMap<AttributeKey, String>,
    /// Consent per channel (`None`: every channel).
    pub consent: BTreeMap<Option<ChannelKind>, bool>,
    /// Whether the contact is erased.
    pub erased: bool,
}

/// An org directory's derived state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DirectoryState {
    /// The org.
    pub org: OrgId,
    /// Published certificates, by subject, in order of publication.
    pub certificates: BTreeMap<PublicKey, Vec<Certificate>>,
    /// Revocations: subject and the earliest time it is revoked from.
    pub revocations: BTreeMap<PublicKey, Timestamp>,
    /// Contacts.
    pub contacts: BTreeMap<ContactId, ContactRecord>,
    /// Which contact each handle was linked to (resolve through merges with
    /// [`DirectoryState::resolve`]).
    pub handles: BTreeMap<Handle, ContactId>,
    /// Number of events.
    pub n_events: u64,
    /// The org's canned replies: text by shortcode.
    pub canned_replies: BTreeMap<Shortcode, String>,
    /// The org's teams: their agents, by team (a team with no agents is not here).
    pub teams: BTreeMap<TeamName, BTreeSet<AgentId>>,
    /// The org's outbound webhook subscriptions: their text by name.
    pub webhooks: BTreeMap<WebhookName, String>,
}

impl DirectoryState {
    /// The empty state of `org`'s directory (right after genesis).
    pub fn new(org: OrgId) -> Self {
        DirectoryState {
            org,
            certificates: BTreeMap::new(),
            revocations: BTreeMap::new(),
            contacts: BTreeMap::new(),
            handles: BTreeMap::new(),
            n_events: 1,
            canned_replies: BTreeMap::new(),
            teams: BTreeMap::new(),
            webhooks: BTreeMap::new(),
        }
    }

    /// The contact a contact id stands for now: follows merges to the root.
    pub fn root_of(&self, contact: ContactId) -> ContactId {
        let mut current = contact;
        // Merges only ever point at a root, so chains are acyclic; the bound is a guard.
        for _ in 0..=self.contacts.len() {
            match self.contacts.get(&current).and_then(|r| r.merged_into) {
                Some(next) => current = next,
                None => return current,
            }
        }
        current
    }

    /// The live contact a handle belongs to, through merges.
    pub fn resolve(&self, handle: &Handle) -> Option<ContactId> {
        let root = self.root_of(*self.handles.get(handle)?);
        match self.contacts.get(&root) {
            Some(record) if !record.erased => Some(root),
            _ => None,
        }
    }

    /// A contact's root and every contact merged into it: all the ids that stand for the same
    /// customer (empty if the contact is unknown).
    pub fn same_customer(&self, contact: ContactId) -> Vec<ContactId> {
        match self.contact(contact) {
            Some((root, record)) => std::iter::once(root)
                .chain(record.merged_from.iter().copied())
                .collect(),
            None => Vec::new(),
        }
    }

    /// A contact's record, after following merges.
    pub fn contact(&self, contact: ContactId) -> Option<(ContactId, &ContactRecord)> {
        let root = self.root_of(contact);
        self.contacts.get(&root).map(|record| (root, record))
    }

    /// The hash replicas compare: SHA-256 over `threadline/directory-state/v1 || 0x00 ||
    /// encode(state)`.
    pub fn hash(&self) -> Result<StateHash, EncodeError> {
        Ok(StateHash::from_bytes(digest::sha256(
            Domain::DirectoryState,
            &codec::encode(self)?,
        )))
    }

    /// Applies the next event in linear order. `erased` is the set of erased contacts, decided
    /// over the whole log by [`erased_contacts`].
    pub(crate) fn apply(&mut self, event: &VerifiedEvent, erased: &BTreeSet<ContactId>) {
        self.n_events += 1;
        let EventKind::Directory(kind) = &event.header().kind else {
            return;
        };
        let content = match about(kind) {
            Some(contact) if erased.contains(&contact) => None,
            _ => event.content(),
        };
        match kind {
            DirectoryKind::Genesis => {}
            DirectoryKind::Certify { certificate } => {
                let entry = self
                    .certificates
                    .entry(certificate.body.subject)
                    .or_default();
                if !entry.contains(certificate) {
                    entry.push(Certificate::clone(certificate));
                }
            }
            DirectoryKind::Revoke {
                subject,
                effective_from,
            } => {
                let entry = self.revocations.entry(*subject).or_insert(*effective_from);
                *entry = (*entry).min(*effective_from);
            }
            DirectoryKind::CreateContact { contact } => {
                if !self.contacts.contains_key(contact) {
                    let record = ContactRecord {
                        display_name: content
                            .map(|c| c.text.clone())
                            .filter(|name| !name.is_empty()),
                        erased: erased.contains(contact),
                        ..ContactRecord::default()
                    };
                    self.contacts.insert(*contact, record);
                }
            }
            DirectoryKind::LinkHandle { contact } => {
                let Some(handle) = content.and_then(|c| c.handle.clone()) else {
                    return;
                };
                let root = self.root_of(*contact);
                if !self.is_live(root) {
                    return;
                }
                if let Some(existing) = self.handles.get(&handle) {
                    if self.is_live(self.root_of(*existing)) {
                        return;
                    }
                }
                self.handles.insert(handle.clone(), root);
                if let Some(record) = self.contacts.get_mut(&root) {
                    record.handles.insert(handle);
                }
            }
            DirectoryKind::UnlinkHandle { contact } => {
                let Some(handle) = content.and_then(|c| c.handle.as_ref()) else {
                    return;
                };
                let root = self.root_of(*contact);
                if self.resolve(handle) == Some(root) {
                    self.handles.remove(handle);
                    if let Some(record) = self.contacts.get_mut(&root) {
                        record.handles.remove(handle);
                    }
                }
            }
            DirectoryKind::Merge { from, into } => self.merge(*from, *into),
            DirectoryKind::SetCannedReply { shortcode } => {
                let Some(content) = content else {
                    return;
                };
                if content.text.is_empty() {
                    self.canned_replies.remove(shortcode);
                } else {
                    self.canned_replies
                        .insert(shortcode.clone(), content.text.clone());
                }
            }
            DirectoryKind::SetWebhook { name } => {
                let Some(content) = content else {
                    return;
                };
                if content.text.is_empty() {
                    self.webhooks.remove(name);
                } else {
                    self.webhooks.insert(name.clone(), content.text.clone());
                }
            }
            DirectoryKind::SetTeam { team, members } => {
                if members.is_empty() {
                    self.teams.remove(team);
                } else {
                    self.teams
                        .insert(team.clone(), members.iter().copied().collect());
                }
            }
            DirectoryKind::SetAttribute { contact, key } => {
                let root = self.root_of(*contact);
                let (Some(content), true) = (content, self.is_live(root)) else {
                    return;
                };
                if let Some(record) = self.contacts.get_mut(&root) {
                    if content.text.is_empty() {
                        record.attributes.remove(key);
                    } else {
                        record.attributes.insert(key.clone(), content.text.clone());
                    }
                }
            }
            DirectoryKind::Consent {
                contact,
                channel,
                granted,
            } => {
                let root = self.root_of(*contact);
                if let Some(record) = self.contacts.get_mut(&root) {
                    record.consent.insert(*channel, *granted);
                }
            }
            DirectoryKind::EraseContact { contact } => {
                let root = self.root_of(*contact);
                let mut to_clear = vec![root];
                if let Some(record) = self.contacts.get(&root) {
                    to_clear.extend(record.merged_from.iter().copied());
                }
                for id in to_clear {
                    if let Some(record) = self.contacts.get_mut(&id) {
                        record.erased = true;
                        record.display_name = None;
                        record.handles.clear();
                        record.attributes.clear();
                    }
                }
                self.handles.retain(|_, linked| !erased.contains(linked));
            }
        }
    }

    fn is_live(&self, contact: ContactId) -> bool {
        self.contacts.get(&contact).is_some_and(|r| !r.erased)
    }

    fn merge(&mut self, from: ContactId, into: ContactId) {
        let (from_root, into_root) = (self.root_of(from), self.root_of(into));
        if from_root == into_root
            || !self.contacts.contains_key(&from_root)
            || !self.contacts.contains_key(&into_root)
        {
            return;
        }
        let Some(mut merged) = self.contacts.remove(&from_root) else {
            return;
        };
        let handles = std::mem::take(&mut merged.handles);
        let merged_from = std::mem::take(&mut merged.merged_from);
        let attributes = std::mem::take(&mut merged.attributes);
        let consent = std::mem::take(&mut merged.consent);
        let display_name = merged.display_name.clone();
        let erased = merged.erased;
        merged.merged_into = Some(into_root);
        self.contacts.insert(from_root, merged);
        for handle in &handles {
            self.handles.insert(handle.clone(), into_root);
        }
        if let Some(record) = self.contacts.get_mut(&into_root) {
            record.handles.extend(handles);
            record.merged_from.insert(from_root);
            record.merged_from.extend(merged_from);
            for (key, value) in attributes {
                record.attributes.entry(key).or_insert(value);
            }
            for (channel, granted) in consent {
                record.consent.entry(channel).or_insert(granted);
            }
            if record.display_name.is_none() {
                record.display_name = display_name;
            }
            record.erased |= erased;
        }
    }
}

/// The contact an event's content is about, if any.
fn about(kind: &DirectoryKind) -> Option<ContactId> {
    match kind {
        DirectoryKind::CreateContact { contact }
        | DirectoryKind::LinkHandle { contact }
        | DirectoryKind::UnlinkHandle { contact }
        | DirectoryKind::SetAttribute { contact, .. }
        | DirectoryKind::Consent { contact, .. }
        | DirectoryKind::EraseContact { contact } => Some(*contact),
        _ => None,
    }
}

/// The contacts erased by a log: every contact in the final merge tree of a contact named by an
/// `EraseContact`. Computed from headers alone, so it does not depend on which content a replica
/// holds.
pub(crate) fn erased_contacts<'a>(
    events: impl Iterator<Item = &'a VerifiedEvent>,
) -> BTreeSet<ContactId> {
    let mut parent: BTreeMap<ContactId, ContactId> = BTreeMap::new();
    let mut named = Vec::new();
    fn find(parent: &BTreeMap<ContactId, ContactId>, mut contact: ContactId) -> ContactId {
        while let Some(next) = parent.get(&contact) {
            contact = *next;
        }
        contact
    }
    let mut all = BTreeSet::new();
    for event in events {
        let EventKind::Directory(kind) = &event.header().kind else {
            continue;
        };
        if let Some(contact) = about(kind) {
            all.insert(contact);
        }
        match kind {
            DirectoryKind::Merge { from, into } => {
                all.insert(*from);
                all.insert(*into);
                let (a, b) = (find(&parent, *from), find(&parent, *into));
                if a != b {
                    parent.insert(a, b);
                }
            }
            DirectoryKind::EraseContact { contact } => named.push(*contact),
            _ => {}
        }
    }
    if named.is_empty() {
        return BTreeSet::new();
    }
    let erased_roots: BTreeSet<ContactId> = named.iter().map(|c| find(&parent, *c)).collect();
    all.into_iter()
        .filter(|c| erased_roots.contains(&find(&parent, *c)))
        .collect()
}

/// Whether an event's content is erased under `erased`.
pub(crate) fn content_erased(event: &VerifiedEvent, erased: &BTreeSet<ContactId>) -> bool {
    match &event.header().kind {
        EventKind::Directory(kind) => about(kind).is_some_and(|c| erased.contains(&c)),
        EventKind::Thread(_) => false,
    }
}
