//! Contact search by part of a name, a handle or a detail, in memory: each live contact's
//! searchable text (its name, handles and attribute values, lowercased) is kept ready, so a
//! search reads that text and nothing else, with one substring searcher built per query.
//!
//! The ingest writer refreshes the contacts a directory event names as it applies the event
//! at the end of the directory's order; an event from a peer that sorts earlier (the directory
//! folds again from there) rebuilds all of it, as does the node's start and a failed commit
//! that makes the writer reload the directory.

use std::collections::BTreeMap;

use threadline_protocol::{
    directory::DirectoryState,
    event::{DirectoryKind, EventKind},
    ContactId,
};

/// What searches read.
#[derive(Debug, Default)]
pub struct ContactSearch {
    /// Each live contact (not merged away, not erased): its name, handles' addresses and
    /// attribute values, lowercased, a line each.
    texts: BTreeMap<ContactId, String>,
}

impl ContactSearch {
    /// Every live contact of `directory`.
    pub fn of(directory: &DirectoryState) -> Self {
        let mut search = ContactSearch::default();
        for id in directory.contacts.keys() {
            search.refresh(directory, *id);
        }
        search
    }

    /// Takes in a directory event just applied to `directory`: the contacts it names are
    /// read again.
    pub fn applied(&mut self, directory: &DirectoryState, kind: &EventKind) {
        let EventKind::Directory(kind) = kind else {
            return;
        };
        match kind {
            DirectoryKind::CreateContact { contact }
            | DirectoryKind::LinkHandle { contact }
            | DirectoryKind::UnlinkHandle { contact }
            | DirectoryKind::SetAttribute { contact, .. }
            | DirectoryKind::EraseContact { contact } => {
                // An erasure covers every contact merged with it.
                for id in directory.same_customer(*contact) {
                    self.refresh(directory, id);
                }
                self.refresh(directory, *contact);
            }
            DirectoryKind::Merge { from, into } => {
                // Both sides, and whatever either had merged in before.
                let mut named = directory.same_customer(*into);
                named.extend(directory.same_customer(*from));
                named.extend([*from, *into]);
                for id in named {
                    self.refresh(directory, id);
                }
            }
            _ => {}
        }
    }

    fn refresh(&mut self, directory: &DirectoryState, id: ContactId) {
        let Some(record) = directory.contacts.get(&id) else {
            self.texts.remove(&id);
            return;
        };
        if record.merged_into.is_some() || record.erased {
            self.texts.remove(&id);
            return;
        }
        let mut text = crate::contact_name::of(record)
            .map(|name| name.to_lowercase())
            .unwrap_or_default();
        for handle in &record.handles {
            text.push('\n');
            text.push_str(&handle.address().to_lowercase());
        }
        for value in record.attributes.values() {
            text.push('\n');
            text.push_str(&value.to_lowercase());
        }
        self.texts.insert(id, text);
    }

    /// Up to `limit` live contacts whose name, a handle or a detail contains `needle` (any
    /// case), in id order.
    pub fn find(&self, needle: &str, limit: usize) -> Vec<ContactId> {
        let needle = needle.to_lowercase();
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        self.texts
            .iter()
            .filter(|(_, text)| finder.find(text.as_bytes()).is_some())
            .map(|(id, _)| *id)
            .take(limit)
            .collect()
    }
}
