//! The event DAG of one log (a thread or a directory): a grow-only set of verified events.
//!
//! An event enters only when all its parents are present and its depth is one more than its
//! deepest parent's. The **linear order** of the log sorts events by [`OrderKey`]
//! `(depth, author_time, event_id)`. Because every parent is shallower than its children, this is
//! a topological order with ties broken by author time, then id; and because the key of an event
//! is fixed by its own header, the order of any subset is the subset of the order. An event
//! deeper than every other (the common case: a new reply) lands at the end in `O(1)`, so state
//! folds can run incrementally; one that sorts earlier (a peer's concurrent event) is placed by
//! binary search and moves the positions after it.

use std::collections::{BTreeSet, HashMap};

use crate::event::{ScopeId, VerifiedEvent};
use crate::id::EventId;
use crate::limits::MAX_PARENTS;
use crate::time::Timestamp;

/// Where an event sits in its log's linear order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    /// Depth in the DAG.
    pub depth: u64,
    /// The author's time.
    pub author_time: Timestamp,
    /// The event id.
    pub id: EventId,
}

impl OrderKey {
    /// The key of a verified event.
    pub fn of(event: &VerifiedEvent) -> Self {
        OrderKey {
            depth: event.header().depth,
            author_time: event.header().author_time,
            id: event.id(),
        }
    }
}

/// An event cannot enter the DAG (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DagError {
    /// The event belongs to another log.
    #[error("event belongs to {found}, not {expected}")]
    WrongScope {
        /// This DAG's log.
        expected: ScopeId,
        /// The event's log.
        found: ScopeId,
    },
    /// Some parents are not here: fetch them first, then retry.
    #[error("{} parent(s) unknown, first {}", missing.len(), missing[0])]
    MissingParents {
        /// The unknown parents (never empty).
        missing: Vec<EventId>,
    },
    /// The depth is not one more than the deepest parent's.
    #[error("depth is {found}, parents say {expected}")]
    BadDepth {
        /// What the parents imply.
        expected: u64,
        /// What the header says.
        found: u64,
    },
    /// A log is created from its root, and only its root has no parents.
    #[error("the first event of a log must be its root")]
    NotARoot,
}

/// The outcome of inserting an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The event is new.
    New,
    /// The event was already there; nothing changed.
    Duplicate,
}

/// A grow-only DAG of verified events of one log, with its heads and linear order.
///
/// Laid out for memory, since a node keeps many in its caches: each event boxed once, in the
/// order it entered (its *position*), found by id through a map of positions, and the linear
/// order a sorted list of positions (events almost always enter at its end).
#[derive(Debug, Clone)]
pub struct Dag {
    scope: ScopeId,
    root: EventId,
    /// Every event, by position. Boxed: an event is ~300 bytes, and a growing list of them
    /// would keep up to as much again unused.
    #[allow(clippy::vec_box)]
    events: Vec<Box<VerifiedEvent>>,
    /// Each event's position.
    positions: HashMap<EventId, usize>,
    /// Positions, in linear order.
    order: Vec<usize>,
    heads: BTreeSet<EventId>,
}

impl Dag {
    /// A DAG holding just its root.
    pub fn new(root: VerifiedEvent) -> Result<Self, DagError> {
        if !root.header().parents.is_empty() {
            return Err(DagError::NotARoot);
        }
        let id = root.id();
        Ok(Dag {
            scope: root.scope_id(),
            root: id,
            events: vec![Box::new(root)],
            positions: HashMap::from([(id, 0)]),
            order: vec![0],
            heads: BTreeSet::from([id]),
        })
    }

    /// Makes room for `additional` more events (a log read back whole).
    pub fn reserve(&mut self, additional: usize) {
        self.events.reserve_exact(additional);
        self.positions.reserve(additional);
        self.order.reserve_exact(additional);
    }

    /// Where an event sits in the order events entered (0 for the root, then one more for
    /// each event inserted): an index for data kept beside the DAG.
    pub(crate) fn position(&self, id: &EventId) -> Option<usize> {
        self.positions.get(id).copied()
    }

    /// The order key of the event at `position`.
    pub(crate) fn key_at(&self, position: usize) -> OrderKey {
        OrderKey::of(&self.events[position])
    }

    /// The log this DAG holds.
    pub fn scope(&self) -> ScopeId {
        self.scope
    }

    /// The root's id.
    pub fn root(&self) -> EventId {
        self.root
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Always false: a DAG has at least its root.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Whether the event is here.
    pub fn contains(&self, id: &EventId) -> bool {
        self.positions.contains_key(id)
    }

    /// An event by id.
    pub fn get(&self, id: &EventId) -> Option<&VerifiedEvent> {
        self.positions
            .get(id)
            .map(|&position| &*self.events[position])
    }

    /// The heads: events that are nobody's parent, ascending by id.
    pub fn heads(&self) -> &BTreeSet<EventId> {
        &self.heads
    }

    /// The last key of the linear order.
    pub fn last_key(&self) -> Option<OrderKey> {
        self.order.last().map(|&position| self.key_at(position))
    }

    /// All events in linear order.
    pub fn iter_ordered(&self) -> impl DoubleEndedIterator<Item = &VerifiedEvent> + '_ {
        self.order.iter().map(|&position| &*self.events[position])
    }

    /// Events after `key` in linear order (to stream to a peer that has everything up to it).
    pub fn iter_after(&self, key: OrderKey) -> impl Iterator<Item = &VerifiedEvent> + '_ {
        let start = self
            .order
            .partition_point(|&position| self.key_at(position) <= key);
        self.order[start..]
            .iter()
            .map(|&position| &*self.events[position])
    }

    /// Parents and depth for a new event that has seen everything here: the heads (at most
    /// [`MAX_PARENTS`], the deepest first) and one more than the deepest of them.
    pub fn next_parents(&self) -> (Vec<EventId>, u64) {
        let mut heads: Vec<&VerifiedEvent> =
            self.heads.iter().filter_map(|id| self.get(id)).collect();
        heads.sort_by_key(|event| std::cmp::Reverse(OrderKey::of(event)));
        heads.truncate(MAX_PARENTS);
        let depth = heads.iter().map(|e| e.header().depth).max().unwrap_or(0) + 1;
        let mut parents: Vec<EventId> = heads.iter().map(|e| e.id()).collect();
        parents.sort_unstable();
        (parents, depth)
    }

    /// Checks that `event` may enter: same log, parents present, depth right. `Ok(true)` means
    /// it is already here.
    pub fn check(&self, event: &VerifiedEvent) -> Result<bool, DagError> {
        if event.scope_id() != self.scope {
            return Err(DagError::WrongScope {
                expected: self.scope,
                found: event.scope_id(),
            });
        }
        if self.positions.contains_key(&event.id()) {
            return Ok(true);
        }
        let header = event.header();
        if header.parents.is_empty() {
            return Err(DagError::NotARoot);
        }
        let mut missing = Vec::new();
        let mut deepest = 0;
        for parent in &header.parents {
            match self.get(parent) {
                Some(parent) => deepest = deepest.max(parent.header().depth),
                None => missing.push(*parent),
            }
        }
        if !missing.is_empty() {
            return Err(DagError::MissingParents { missing });
        }
        if header.depth != deepest + 1 {
            return Err(DagError::BadDepth {
                expected: deepest + 1,
                found: header.depth,
            });
        }
        Ok(false)
    }

    /// Inserts an event that passed [`Dag::check`] (and the caller's auth rules).
    pub(crate) fn insert_checked(&mut self, event: VerifiedEvent) {
        let id = event.id();
        for parent in &event.header().parents {
            self.heads.remove(parent);
        }
        self.heads.insert(id);
        let key = OrderKey::of(&event);
        let position = self.events.len();
        if self.last_key().is_none_or(|last| key > last) {
            self.order.push(position);
        } else {
            let at = self
                .order
                .partition_point(|&other| self.key_at(other) < key);
            self.order.insert(at, position);
        }
        self.events.push(Box::new(event));
        self.positions.insert(id, position);
    }

    /// Drops the content of every event but `keep`.
    pub(crate) fn erase_all_content_except(&mut self, keep: Option<&EventId>) {
        for event in &mut self.events {
            if Some(&event.id()) != keep {
                event.erase_content();
            }
        }
    }

    /// Drops an event's content (erasure); the header stays.
    pub(crate) fn erase_content(&mut self, id: &EventId) {
        if let Some(&position) = self.positions.get(id) {
            self.events[position].erase_content();
        }
    }
}
