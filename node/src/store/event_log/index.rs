//! The event log's index in memory: which events each log holds and where, and which event took
//! each external key.
//!
//! Start-up reads the sealed segments' checkpoints and keeps their entries as they are on disk,
//! sorted by scope ([`Checkpoint`]); nothing is inserted per event. A log's list is put together
//! from them the first time the log is read or written ([`Index::log_mut`]), a few binary
//! searches per sealed segment, and kept. External keys are the one lookup that cannot wait
//! for a log: the sealed segments' keys are merged into one sorted array at start-up (each
//! checkpoint holds them sorted), and keys taken since go into a map.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::{Arc, OnceLock};

use super::{ExternalKey, IndexEntry, Location, ScopeKey};

/// A log of more entries than this is searched through a map from id to position, built the
/// first time it is searched; a shorter one by a scan.
const SCAN_LIMIT: usize = 48;

/// One event of a log: its id and where its entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    pub id: [u8; 32],
    pub location: Location,
}

/// A log's events in the order they were first appended (an event written again keeps its
/// place; its location moves).
#[derive(Debug, Default)]
pub(super) struct LogEntries {
    slots: Vec<Slot>,
    /// The first 8 bytes of each id → the position of the first id with them (logs longer
    /// than [`SCAN_LIMIT`]).
    positions: OnceLock<HashMap<u64, u32>>,
}

fn prefix(id: &[u8; 32]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&id[..8]);
    u64::from_le_bytes(bytes)
}

impl LogEntries {
    /// The events, in order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Where event `id` is in the list.
    pub fn position(&self, id: &[u8; 32]) -> Option<usize> {
        if self.slots.len() <= SCAN_LIMIT {
            return self.slots.iter().position(|slot| slot.id == *id);
        }
        let positions = self.positions.get_or_init(|| {
            let mut positions = HashMap::with_capacity(self.slots.len());
            for (at, slot) in self.slots.iter().enumerate() {
                positions
                    .entry(prefix(&slot.id))
                    .or_insert(u32::try_from(at).unwrap_or(u32::MAX));
            }
            positions
        });
        let at = *positions.get(&prefix(id))? as usize;
        if self.slots.get(at).is_some_and(|slot| slot.id == *id) {
            Some(at)
        } else {
            // Two ids of this log begin with the same 8 bytes.
            self.slots.iter().position(|slot| slot.id == *id)
        }
    }

    /// Adds an event, or moves it if the log holds it already (`look_up`: it may); answers
    /// whether it was new.
    pub fn add(&mut self, slot: Slot, look_up: bool) -> bool {
        if look_up {
            if let Some(at) = self.position(&slot.id) {
                if let Some(held) = self.slots.get_mut(at) {
                    held.location = slot.location;
                }
                return false;
            }
        }
        let at = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(slot);
        if let Some(positions) = self.positions.get_mut() {
            positions.entry(prefix(&slot.id)).or_insert(at);
        }
        true
    }
}

/// The byte length of an entry of a [`Checkpoint`]: scope ‖ id ‖ offset u32 ‖ length u32 ‖
/// flags u8.
pub(super) const CHECKPOINT_ENTRY: usize = 33 + 32 + 4 + 4 + 1;

/// Flag of a checkpoint entry that may replace an earlier entry of its id (it was written
/// again, or it is not known): it is looked up before it is added.
pub(super) const LOOK_UP: u8 = 1;

/// A segment's index entries as its checkpoint holds them: sorted by scope, in append order
/// within a scope, [`CHECKPOINT_ENTRY`] bytes each.
#[derive(Debug, Default)]
pub(super) struct Checkpoint {
    segment: u32,
    bytes: Vec<u8>,
    count: usize,
}

impl Checkpoint {
    /// `bytes`: `count` entries of [`CHECKPOINT_ENTRY`] bytes, of `segment` (the caller has
    /// checked they are there; [`Checkpoint::encode`] wrote them sorted).
    pub fn new(segment: u32, bytes: Vec<u8>, count: usize) -> Checkpoint {
        Checkpoint {
            segment,
            bytes,
            count,
        }
    }

    /// Encodes a segment's entries into a checkpoint's entry bytes, sorted by scope (stable:
    /// in append order within one).
    pub fn encode(entries: &[IndexEntry], out: &mut Vec<u8>) {
        let mut sorted: Vec<&IndexEntry> = entries.iter().collect();
        sorted.sort_by_key(|entry| entry.scope);
        for entry in sorted {
            out.extend_from_slice(&entry.scope);
            out.extend_from_slice(&entry.id);
            out.extend_from_slice(&entry.location.offset.to_be_bytes());
            out.extend_from_slice(&entry.location.len.to_be_bytes());
            out.push(if entry.look_up { LOOK_UP } else { 0 });
        }
    }

    fn record(&self, at: usize) -> &[u8] {
        let from = at * CHECKPOINT_ENTRY;
        self.bytes
            .get(from..from + CHECKPOINT_ENTRY)
            .unwrap_or_default()
    }

    fn scope_at(&self, at: usize) -> &[u8] {
        self.record(at).get(..33).unwrap_or_default()
    }

    fn entry_at(&self, at: usize) -> Option<(ScopeKey, Slot, bool)> {
        let record = self.record(at);
        let scope: ScopeKey = record.get(..33)?.try_into().ok()?;
        let id: [u8; 32] = record.get(33..65)?.try_into().ok()?;
        let offset = u32::from_be_bytes(record.get(65..69)?.try_into().ok()?);
        let len = u32::from_be_bytes(record.get(69..73)?.try_into().ok()?);
        let look_up = record.get(73)? & LOOK_UP != 0;
        let location = Location {
            segment: self.segment,
            offset,
            len,
        };
        Some((scope, Slot { id, location }, look_up))
    }

    /// The entries of `scope`, in append order, with whether each is to be looked up.
    fn of<'a>(&'a self, scope: &'a ScopeKey) -> impl Iterator<Item = (Slot, bool)> + 'a {
        let from = partition_point(self.count, |at| self.scope_at(at) < scope.as_slice());
        (from..self.count).map_while(move |at| match self.entry_at(at) {
            Some((held, slot, look_up)) if held == *scope => Some((slot, look_up)),
            _ => None,
        })
    }

    /// Every entry, by scope.
    fn iter(&self) -> impl Iterator<Item = (ScopeKey, Slot, bool)> + '_ {
        (0..self.count).filter_map(|at| self.entry_at(at))
    }
}

/// The first index in `0..count` for which `before` is false (`before` true, then false).
fn partition_point(count: usize, before: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, count);
    while low < high {
        let middle = low + (high - low) / 2;
        if before(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

/// An external key of a sealed segment: its fingerprint and its event's entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct SealedKey {
    fingerprint: (u64, u64),
    pub location: Location,
}

impl SealedKey {
    pub fn new(key: &ExternalKey, location: Location) -> SealedKey {
        SealedKey {
            fingerprint: fingerprint(key),
            location,
        }
    }

    /// The order checkpoints keep their keys in: by fingerprint, then where their event is.
    pub fn order(&self) -> ((u64, u64), u32, u32) {
        (
            self.fingerprint,
            self.location.segment,
            self.location.offset,
        )
    }
}

/// 128 bits of an external key: 120 of its SHA-256 (bytes 1–15) and the channel (byte 0),
/// so that keys spread evenly by their first bits. Two keys that share one share a hash
/// prefix of 120 bits: not a case to plan for.
pub(super) fn fingerprint(key: &ExternalKey) -> (u64, u64) {
    let mut high = [0u8; 8];
    high.copy_from_slice(&key[1..9]);
    let mut low = [0u8; 8];
    low[..7].copy_from_slice(&key[9..16]);
    low[7] = key[0];
    (u64::from_be_bytes(high), u64::from_be_bytes(low))
}

/// Which event took an external key.
pub(super) enum Taker {
    /// This one.
    Event([u8; 32]),
    /// The event whose entry is there (read it for its id).
    At(Location),
}

/// Shards of sealed keys, by the first 8 bits of their fingerprints.
const SHARDS: usize = 256;

/// External keys of some sealed segments, in [`SHARDS`] shards, each sorted by fingerprint
/// (the first of a key first).
#[derive(Debug)]
pub(super) struct SealedKeys {
    shards: Vec<Vec<SealedKey>>,
}

impl Default for SealedKeys {
    fn default() -> SealedKeys {
        SealedKeys {
            shards: (0..SHARDS).map(|_| Vec::new()).collect(),
        }
    }
}

impl SealedKeys {
    fn shard(fingerprint: (u64, u64)) -> usize {
        (fingerprint.0 >> 56) as usize
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(Vec::len).sum()
    }

    /// Room for about `n` more keys.
    pub fn reserve(&mut self, n: usize) {
        let each = n / SHARDS + n / SHARDS / 8;
        for shard in &mut self.shards {
            shard.reserve(each);
        }
    }

    /// Adds a key; keys come in log order, or one segment's keys sorted after another's.
    pub fn push(&mut self, key: SealedKey) {
        if let Some(shard) = self.shards.get_mut(Self::shard(key.fingerprint)) {
            shard.push(key);
        }
    }

    /// Sorts each shard (stable: the segments' sorted runs are merged and the first of a key
    /// stays first).
    pub fn sort(&mut self) {
        for shard in &mut self.shards {
            shard.sort_by_key(|key| key.fingerprint);
        }
    }

    fn find(&self, key: &ExternalKey) -> Option<Location> {
        let wanted = fingerprint(key);
        let shard = self.shards.get(Self::shard(wanted))?;
        let at = shard.partition_point(|key| key.fingerprint < wanted);
        shard
            .get(at)
            .filter(|key| key.fingerprint == wanted)
            .map(|key| key.location)
    }
}

/// Which event first took each external key.
#[derive(Debug, Default)]
pub(super) struct ExternalIndex {
    /// The sealed segments' keys at start-up, in parts of consecutive segments (oldest first),
    /// each sorted ([`SealedKeys::sort`]): no map is filled per key at start-up.
    sealed: Vec<SealedKeys>,
    /// Keys taken since.
    recent: HashMap<ExternalKey, [u8; 32]>,
}

impl ExternalIndex {
    /// From the sealed segments' keys, in parts of consecutive segments, oldest first.
    pub fn new(sealed: Vec<SealedKeys>) -> ExternalIndex {
        ExternalIndex {
            sealed,
            recent: HashMap::new(),
        }
    }

    /// The event that took `key`, if one did.
    pub fn find(&self, key: &ExternalKey) -> Option<Taker> {
        if let Some(location) = self.sealed.iter().find_map(|part| part.find(key)) {
            return Some(Taker::At(location));
        }
        self.recent.get(key).copied().map(Taker::Event)
    }

    /// Event `id` takes `key`, unless another took it first.
    pub fn take(&mut self, key: ExternalKey, id: [u8; 32]) {
        if self.find(&key).is_none() {
            self.recent.insert(key, id);
        }
    }
}

/// Which events each log holds and where, and the open segment files.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// The checkpoints of the segments sealed when the log was opened, oldest first, and
    /// then the entries of the segment being written then (every one to be looked up).
    parts: Vec<Checkpoint>,
    /// Logs put together so far (and kept up to date as events are appended).
    logs: HashMap<ScopeKey, LogEntries>,
    /// Each external key's event.
    pub external: ExternalIndex,
    /// Every segment, open.
    pub files: BTreeMap<u32, Arc<File>>,
}

impl Index {
    /// An index of `parts` (checkpoints, oldest first) and `external`.
    pub fn new(parts: Vec<Checkpoint>, external: ExternalIndex) -> Index {
        Index {
            parts,
            logs: HashMap::new(),
            external,
            files: BTreeMap::new(),
        }
    }

    /// The log of `scope` if it has been put together.
    pub fn log(&self, scope: &ScopeKey) -> Option<&LogEntries> {
        self.logs.get(scope)
    }

    /// The log of `scope`, put together from the checkpoints the first time.
    pub fn log_mut(&mut self, scope: &ScopeKey) -> &mut LogEntries {
        put_together(&mut self.logs, &self.parts, scope)
    }

    /// [`Index::log_mut`], with the segment files.
    pub fn log_and_files(&mut self, scope: &ScopeKey) -> (&LogEntries, &BTreeMap<u32, Arc<File>>) {
        (
            put_together(&mut self.logs, &self.parts, scope),
            &self.files,
        )
    }

    /// Adds an event appended (or moves one written again); answers whether it was new.
    pub fn insert(&mut self, scope: &ScopeKey, id: [u8; 32], location: Location) -> bool {
        self.log_mut(scope).add(Slot { id, location }, true)
    }

    /// Every log, put together (those not yet are not kept): for checks and copies, which
    /// read everything anyway.
    pub fn every_log(&self, each: &mut dyn FnMut(&ScopeKey, &[Slot])) {
        let mut rest: HashMap<ScopeKey, LogEntries> = HashMap::new();
        for part in &self.parts {
            for (scope, slot, look_up) in part.iter() {
                if !self.logs.contains_key(&scope) {
                    rest.entry(scope).or_default().add(slot, look_up);
                }
            }
        }
        for (scope, log) in self.logs.iter().chain(rest.iter()) {
            each(scope, log.slots());
        }
    }
}

/// The log of `scope` in `logs`, put together from `parts` if it is not there yet.
fn put_together<'a>(
    logs: &'a mut HashMap<ScopeKey, LogEntries>,
    parts: &[Checkpoint],
    scope: &ScopeKey,
) -> &'a mut LogEntries {
    match logs.entry(*scope) {
        MapEntry::Occupied(held) => held.into_mut(),
        MapEntry::Vacant(vacant) => {
            let mut log = LogEntries::default();
            for part in parts {
                for (slot, look_up) in part.of(scope) {
                    log.add(slot, look_up);
                }
            }
            vacant.insert(log)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u32, offset: u32) -> Location {
        Location {
            segment,
            offset,
            len: 1,
        }
    }

    #[test]
    fn a_long_log_finds_its_ids_through_the_map_even_when_prefixes_collide() {
        let mut log = LogEntries::default();
        for i in 0..200u32 {
            let mut id = [0u8; 32];
            // Every pair shares its first 8 bytes.
            id[..4].copy_from_slice(&(i / 2).to_le_bytes());
            id[31] = (i % 2) as u8;
            assert!(log.add(
                Slot {
                    id,
                    location: at(1, i)
                },
                true
            ));
        }
        for i in 0..200u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&(i / 2).to_le_bytes());
            id[31] = (i % 2) as u8;
            assert_eq!(log.position(&id), Some(i as usize));
        }
        // Written again: it keeps its place.
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&7u32.to_le_bytes());
        id[31] = 1;
        assert!(!log.add(
            Slot {
                id,
                location: at(2, 9)
            },
            true
        ));
        assert_eq!(log.slots().len(), 200);
        assert_eq!(log.slots()[15].location, at(2, 9));
        assert_eq!(log.position(&[9; 32]), None);
    }

    #[test]
    fn external_keys_answer_the_first_event_that_took_them() {
        let key = |n: u8| {
            let mut key = [0u8; 33];
            key[0] = 2;
            key[1] = n;
            key[20] = n;
            key
        };
        // Three sealed segments, each's keys sorted, in two parts; key 5 taken in each (the
        // first stays).
        let segment = |number: u32, keys: &[(u8, u32)]| {
            let mut keys: Vec<SealedKey> = keys
                .iter()
                .map(|(n, offset)| SealedKey::new(&key(*n), at(number, *offset)))
                .collect();
            keys.sort_by_key(SealedKey::order);
            keys
        };
        let mut first = SealedKeys::default();
        let mut second = SealedKeys::default();
        for key in segment(1, &[(200, 20), (5, 10)]) {
            first.push(key);
        }
        for key in segment(2, &[(5, 10), (1, 30)]) {
            first.push(key);
        }
        for key in segment(3, &[(5, 5), (9, 30)]) {
            second.push(key);
        }
        first.sort();
        second.sort();
        let mut index = ExternalIndex::new(vec![first, second]);
        let located = |index: &ExternalIndex, n: u8| match index.find(&key(n)) {
            Some(Taker::At(location)) => Some(location),
            _ => None,
        };
        assert_eq!(located(&index, 5), Some(at(1, 10)));
        assert_eq!(located(&index, 200), Some(at(1, 20)));
        assert_eq!(located(&index, 1), Some(at(2, 30)));
        assert_eq!(located(&index, 9), Some(at(3, 30)));
        assert!(index.find(&key(6)).is_none());
        // The same hash under another channel is another key.
        let mut other = key(5);
        other[0] = 3;
        assert!(index.find(&other).is_none());
        index.take(other, [1; 32]);
        index.take(other, [2; 32]);
        index.take(key(5), [3; 32]);
        assert!(matches!(index.find(&other), Some(Taker::Event(id)) if id == [1; 32]));
        assert_eq!(located(&index, 5), Some(at(1, 10)));
    }
}
