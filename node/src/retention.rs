//! Retention policies (`[retention]` in config.toml): what the org keeps no longer than it
//! says, worked out from the store ([`plan`]) and erased with erasure events the node signs
//! ([`apply`]), so every node of the org, and every partner a thread is shared with, erases
//! it too. `threadline retention` shows the plan (and applies it with `--apply`); a node with
//! a policy applies it at start and every hour.

use std::collections::{BTreeMap, HashMap};
use std::sync::PoisonError;

use threadline_protocol::event::Status;
use threadline_protocol::{ContactId, EventId, ScopeId, ThreadId, Timestamp};

use crate::ingest::{DirectoryAction, Ingest, IngestError};
use crate::store::audit::{utc, Actor, AuditAction, AuditRecord};
use crate::store::data_keys::KeyOwner;
use crate::store::{StoreError, TreeName};

/// A day, in milliseconds.
const DAY_MILLIS: u64 = 24 * 60 * 60 * 1000;

/// How long the org keeps what (none: for ever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Erase a contact (its record and every thread's contents) once none of its threads has
    /// had activity for this many days.
    pub inactive_contacts_days: Option<u32>,
    /// Erase the contents of messages with files (the files and the message with them: the
    /// protocol erases a content whole) this many days after they were written.
    pub attachments_days: Option<u32>,
    /// Erase the contents of a resolved thread this many days after its last activity.
    pub resolved_threads_days: Option<u32>,
}

impl Policy {
    /// Whether it erases anything at all.
    pub fn is_set(&self) -> bool {
        self.inactive_contacts_days.is_some()
            || self.attachments_days.is_some()
            || self.resolved_threads_days.is_some()
    }
}

/// What a policy erases now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Contacts inactive too long, with their last activity.
    pub contacts: Vec<(ContactId, Timestamp)>,
    /// Resolved threads kept too long, with their last activity.
    pub resolved_threads: Vec<(ThreadId, Timestamp)>,
    /// Messages with files kept too long: thread, event, when written.
    pub messages_with_files: Vec<(ThreadId, EventId, Timestamp)>,
}

impl Plan {
    /// Whether there is nothing to erase.
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
            && self.resolved_threads.is_empty()
            && self.messages_with_files.is_empty()
    }

    /// One line per thing it erases, then the counts.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (contact, last) in &self.contacts {
            lines.push(format!(
                "contact {contact}: no activity since {}",
                utc(*last)
            ));
        }
        for (thread, last) in &self.resolved_threads {
            lines.push(format!(
                "resolved thread {thread}: its contents (last activity {})",
                utc(*last)
            ));
        }
        for (thread, event, written) in &self.messages_with_files {
            lines.push(format!(
                "message {event} with files in thread {thread} (written {})",
                utc(*written)
            ));
        }
        lines.push(format!(
            "{} contacts, {} resolved threads, {} messages with files",
            self.contacts.len(),
            self.resolved_threads.len(),
            self.messages_with_files.len()
        ));
        lines
    }
}

/// The cut-off `days` before `now`.
fn before(now: Timestamp, days: u32) -> Timestamp {
    Timestamp::from_millis(
        now.as_millis()
            .saturating_sub(u64::from(days).saturating_mul(DAY_MILLIS)),
    )
}

/// What `policy` erases at `now`: this org's threads and contacts only (a partner's threads
/// are theirs to erase), and only what still has content.
pub fn plan(ingest: &Ingest, policy: &Policy, now: Timestamp) -> Result<Plan, IngestError> {
    let store = ingest.store();
    let org = ingest.identity().org;
    let mut plan = Plan::default();
    // Each live contact's last activity, over its threads (and those of contacts merged in).
    let mut last_of_contact: HashMap<ContactId, Timestamp> = HashMap::new();
    let mut resolved_before = Vec::new();
    // This org's threads (read once; the files' references below name threads by id).
    let mut owned = std::collections::HashSet::new();
    {
        let directory = ingest
            .directory()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for entry in store.thread_states() {
            let (thread, state) = entry?;
            if state.owner != org {
                continue;
            }
            owned.insert(thread);
            if let Some((root, record)) = directory.state().contact(state.contact) {
                if !record.erased {
                    let last = last_of_contact.entry(root).or_insert(state.last_activity);
                    *last = (*last).max(state.last_activity);
                }
            }
            // A thread with no data key holds no content any more.
            let has_content = store.keys().current(KeyOwner::Thread(thread)).is_some();
            if let Some(days) = policy.resolved_threads_days {
                if state.status == Status::Resolved
                    && state.last_activity < before(now, days)
                    && has_content
                {
                    resolved_before.push((thread, state.last_activity));
                }
            }
        }
    }
    if let Some(days) = policy.inactive_contacts_days {
        let mut contacts: Vec<(ContactId, Timestamp)> = last_of_contact
            .into_iter()
            .filter(|(_, last)| *last < before(now, days))
            .collect();
        contacts.sort_unstable();
        plan.contacts = contacts;
    }
    plan.resolved_threads = resolved_before;
    plan.resolved_threads.sort_unstable();
    if let Some(days) = policy.attachments_days {
        let cut = before(now, days);
        // Every event that refers to a file, from the references the store keeps.
        let mut seen = std::collections::BTreeSet::new();
        for entry in store.tree(TreeName::BlobRefs).iter().keys() {
            let key = entry.map_err(StoreError::from)?;
            let Some((ScopeId::Thread(thread), event)) =
                key.get(32..).and_then(crate::store::split_log_key)
            else {
                continue;
            };
            if !seen.insert((thread, event)) {
                continue;
            }
            if !owned.contains(&thread) {
                continue;
            }
            if let Some(stored) = store.event(&ScopeId::Thread(thread), &event)? {
                let written = stored.signed.header.author_time;
                if written < cut && stored.content.is_some() {
                    plan.messages_with_files.push((thread, event, written));
                }
            }
        }
    }
    // A thread the plan erases whole needs no message of it erased on its own.
    let whole: std::collections::HashSet<ThreadId> =
        plan.resolved_threads.iter().map(|(t, _)| *t).collect();
    plan.messages_with_files
        .retain(|(thread, _, _)| !whole.contains(thread));
    Ok(plan)
}

/// What [`apply`] signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Contacts erased.
    pub contacts: usize,
    /// Erasure events signed (thread and directory).
    pub events: usize,
}

/// Erases what `plan` names: contacts with the directory's erasure (which erases their
/// threads; each noted in the audit trail as the policy's), threads and messages with thread
/// erasures.
pub async fn apply(ingest: &Ingest, plan: &Plan, now: Timestamp) -> Result<Applied, IngestError> {
    let mut applied = Applied::default();
    for (contact, _) in &plan.contacts {
        let events = ingest
            .change_directory(DirectoryAction::Erase(*contact))
            .await?;
        ingest.store().record_audit(&AuditRecord {
            at: now,
            actor: Actor::Retention,
            action: AuditAction::Erased,
            contact: *contact,
        })?;
        applied.contacts += 1;
        applied.events += events.len();
    }
    for (thread, _) in &plan.resolved_threads {
        applied.events += ingest.erase_contents(*thread, Vec::new()).await?.len();
    }
    let mut by_thread: BTreeMap<ThreadId, Vec<EventId>> = BTreeMap::new();
    for (thread, event, _) in &plan.messages_with_files {
        by_thread.entry(*thread).or_default().push(*event);
    }
    for (thread, events) in by_thread {
        applied.events += ingest.erase_contents(thread, events).await?.len();
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_off_is_whole_days_before_now_and_never_before_1970() {
        let now = Timestamp::from_millis(10 * DAY_MILLIS + 5);
        assert_eq!(before(now, 3), Timestamp::from_millis(7 * DAY_MILLIS + 5));
        assert_eq!(before(now, 30), Timestamp::from_millis(0));
        assert!(!Policy::default().is_set());
    }
}
