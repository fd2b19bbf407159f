//! Contact search by part of a name, a handle or a detail, in memory: each live contact's
//! searchable text (its name, handles and attribute values, lowercased) is kept ready, packed
//! one after another in one buffer, so a search is one substring scan of that buffer (SIMD,
//! `memchr::memmem`) and nothing else. A contact whose text changes gets a new slot at the
//! end; the old one is skipped, and the buffer is compacted once half of it is skipped.
//!
//! The ingest writer refreshes the contacts a directory event names as it applies the event
//! at the end of the directory's order; an event from a peer that sorts earlier (the directory
//! folds again from there) rebuilds all of it, as does the node's start and a failed commit
//! that makes the writer reload the directory.

use std::collections::HashMap;

use threadline_protocol::{
    directory::DirectoryState,
    event::{DirectoryKind, EventKind},
    ContactId,
};

/// Ends each text in the buffer; never part of a needle, so no match spans two texts.
const END: u8 = 0;

/// What searches read.
#[derive(Debug, Default)]
pub struct ContactSearch {
    /// Each live contact's text (not merged away, not erased: its name, handles' addresses
    /// and attribute values, lowercased, a line each), each ended by [`END`], and the texts
    /// of earlier slots not compacted away yet.
    packed: Vec<u8>,
    /// Where each text starts in `packed`, in order, with its contact; `None` once replaced
    /// or removed.
    slots: Vec<(usize, Option<ContactId>)>,
    /// Each live contact's slot.
    slot_of: HashMap<ContactId, usize>,
    /// Bytes of `packed` in slots no longer used.
    skipped: usize,
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
        self.remove(id);
        let Some(record) = directory.contacts.get(&id) else {
            return;
        };
        if record.merged_into.is_some() || record.erased {
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
        self.slot_of.insert(id, self.slots.len());
        self.slots.push((self.packed.len(), Some(id)));
        self.packed
            .extend(text.bytes().filter(|b| *b != END).chain([END]));
        if self.skipped > (1 << 20) && self.skipped * 2 > self.packed.len() {
            self.compact();
        }
    }

    /// Leaves `id`'s slot to be skipped.
    fn remove(&mut self, id: ContactId) {
        let Some(slot) = self.slot_of.remove(&id) else {
            return;
        };
        let start = self.slots[slot].0;
        let end = self
            .slots
            .get(slot + 1)
            .map_or(self.packed.len(), |next| next.0);
        self.slots[slot].1 = None;
        self.skipped += end - start;
    }

    /// Packs the live texts again, without the skipped ones.
    fn compact(&mut self) {
        let mut packed = Vec::with_capacity(self.packed.len() - self.skipped);
        let mut slots = Vec::with_capacity(self.slot_of.len());
        for (i, (start, id)) in self.slots.iter().enumerate() {
            let Some(id) = id else {
                continue;
            };
            let end = self
                .slots
                .get(i + 1)
                .map_or(self.packed.len(), |next| next.0);
            self.slot_of.insert(*id, slots.len());
            slots.push((packed.len(), Some(*id)));
            packed.extend_from_slice(&self.packed[*start..end]);
        }
        self.packed = packed;
        self.slots = slots;
        self.skipped = 0;
    }

    /// Up to `limit` live contacts whose name, a handle or a detail contains `needle` (any
    /// case), in id order.
    pub fn find(&self, needle: &str, limit: usize) -> Vec<ContactId> {
        let needle = needle.to_lowercase();
        if needle.is_empty() || needle.bytes().any(|b| b == END) {
            return Vec::new();
        }
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(at) = self.packed.get(from..).and_then(|rest| finder.find(rest)) {
            let at = from + at;
            // The slot the match is in; the search goes on from the next one.
            let slot = self.slots.partition_point(|(start, _)| *start <= at) - 1;
            if let Some(id) = self.slots[slot].1 {
                found.push(id);
            }
            from = self
                .slots
                .get(slot + 1)
                .map_or(self.packed.len(), |next| next.0);
        }
        found.sort_unstable();
        found.truncate(limit);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadline_protocol::{channel::Handle, directory::ContactRecord, OrgId, SecretKey};

    fn directory(contacts: &[(u8, &str, &[&str])]) -> DirectoryState {
        let mut state = DirectoryState::new(OrgId(SecretKey::from_seed([1; 32]).public()));
        for (n, name, handles) in contacts {
            let mut record = ContactRecord::default();
            record.display_name = Some((*name).to_owned());
            for handle in *handles {
                record
                    .handles
                    .insert(handle.parse::<Handle>().expect("handle"));
            }
            state
                .contacts
                .insert(ContactId::from_bytes([*n; 16]), record);
        }
        state
    }

    fn ids(found: &[ContactId]) -> Vec<u8> {
        found.iter().map(|id| id.as_bytes()[0]).collect()
    }

    #[test]
    fn a_search_finds_names_and_handles_once_each_in_id_order_and_follows_changes() {
        let mut state = directory(&[
            (3, "Maria Lopez", &["email:maria@example.com"]),
            (1, "Mario Rossi", &["sms:+15550100"]),
            (2, "Ann", &["webchat:v-maria"]),
        ]);
        let mut search = ContactSearch::of(&state);
        assert_eq!(ids(&search.find("MARI", 10)), [1, 2, 3]);
        assert_eq!(
            ids(&search.find("maria", 10)),
            [2, 3],
            "once each, in id order"
        );
        assert_eq!(ids(&search.find("maria", 1)), [2]);
        assert_eq!(ids(&search.find("+1555", 10)), [1]);
        assert!(search.find("\0", 10).is_empty());
        // No match spans two contacts' texts.
        assert!(search.find("rossi\0", 10).is_empty());
        // Renamed, then removed: the old texts are not found any more, through compaction too.
        for round in 0..3000 {
            let record = state
                .contacts
                .get_mut(&ContactId::from_bytes([3; 16]))
                .expect("3");
            record.display_name = Some(format!("Maria Vega {round} {}", "x".repeat(500)));
            search.refresh(&state, ContactId::from_bytes([3; 16]));
        }
        assert!(search.find("lopez", 10).is_empty());
        assert_eq!(ids(&search.find("vega 2999", 10)), [3]);
        assert!(search.find("vega 2998", 10).is_empty());
        assert!(
            search.packed.len() < 4 << 20,
            "compacted: {}",
            search.packed.len()
        );
        state.contacts.remove(&ContactId::from_bytes([3; 16]));
        search.refresh(&state, ContactId::from_bytes([3; 16]));
        assert_eq!(ids(&search.find("maria", 10)), [2]);
    }
}
