//! A thread: its DAG, its derived state, and ingestion under the auth rules.

mod state;

use std::collections::BTreeSet;
use std::sync::Arc;

pub use state::{Reader, Route, ThreadState};

use crate::auth::{self, AuthError, Certificates, ReceiptTarget, ThreadContext};
use crate::channel::{ChannelKind, ChannelSet};
use crate::dag::{Dag, DagError, Inserted, OrderKey};
use crate::event::{Direction, EventKind, ThreadKind, VerifiedEvent};
use crate::id::{EventId, ThreadId};
use crate::key::OrgId;
use crate::time::Timestamp;

/// Why an event was not taken into a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The DAG refuses it (wrong log, unknown parents, bad depth).
    #[error(transparent)]
    Dag(#[from] DagError),
    /// An auth rule refuses it.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The log's first event is not a root of the right kind.
    #[error("a {expected} must start with its root event, got {found}")]
    NotARoot {
        /// The log kind.
        expected: &'static str,
        /// The event kind.
        found: &'static str,
    },
}

impl IngestError {
    /// Whether the same event may be accepted later: its parents are missing (fetch them), its
    /// author's certificate has not arrived, or its time is ahead of our clock. Anything else is
    /// final, and a peer that sent it is misbehaving.
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Dag(DagError::MissingParents { .. }) => true,
            IngestError::Auth(err) => err.is_retryable(),
            _ => false,
        }
    }
}

/// One thread: the DAG of its events and its derived state, kept up to date as events arrive.
#[derive(Debug, Clone)]
pub struct Thread {
    dag: Dag,
    state: ThreadState,
    /// For each event, by its [`Dag::position`], what the auth rules need of its strict
    /// causal past.
    past: Vec<Past>,
}

/// What an event's strict causal past (everything reachable through its parents) says about
/// the thread, as the auth rules need it. Computed from the parents' own `Past` in O(parents),
/// so every replica derives the same value from the same event, in any delivery order.
#[derive(Clone, Debug)]
struct Past {
    /// The membership-changing events (the root included), sorted by order key. Almost every
    /// event shares one `Arc`.
    members: Arc<[(OrderKey, EventId)]>,
    /// The channels the org opened the thread on or handed it off to.
    admitted: ChannelSet,
    /// The route-setting event with the highest order key, by its [`Dag::position`]: where
    /// the org's replies went as of this event (the linear fold of the past ends on it).
    route: Option<(usize, ChannelKind)>,
}

impl Past {
    fn of_root() -> Self {
        Past {
            members: Arc::from(Vec::new()),
            admitted: ChannelSet::EMPTY,
            route: None,
        }
    }
}

/// The channel a thread is opened on or handed off to by `event`, if it does either.
fn admits(event: &VerifiedEvent) -> Option<ChannelKind> {
    match &event.header().kind {
        EventKind::Thread(ThreadKind::Opened { channel, .. } | ThreadKind::HandOff { channel }) => {
            Some(*channel)
        }
        _ => None,
    }
}

/// The channel `event` routes replies to, if it sets the route (the same events as
/// [`ThreadState::apply`] moves the route on).
fn routes_to(event: &VerifiedEvent) -> Option<ChannelKind> {
    let header = event.header();
    match &header.kind {
        EventKind::Thread(ThreadKind::Opened { channel, .. }) => {
            header.content_hash.map(|_| *channel)
        }
        EventKind::Thread(ThreadKind::HandOff { channel })
        | EventKind::Thread(ThreadKind::Message {
            direction: Direction::Inbound { channel },
        }) => Some(*channel),
        _ => None,
    }
}

impl Thread {
    /// Starts a thread from its opening event.
    pub fn open(
        root: VerifiedEvent,
        certificates: &Certificates,
        now: Timestamp,
    ) -> Result<Self, IngestError> {
        let Some(state) = ThreadState::opened(&root) else {
            return Err(IngestError::NotARoot {
                expected: "thread",
                found: root.header().kind.name(),
            });
        };
        auth::check_thread_event(&root, None, certificates, now)?;
        let dag = Dag::new(root)?;
        Ok(Thread {
            dag,
            state,
            past: vec![Past::of_root()],
        })
    }

    /// The thread id.
    pub fn id(&self) -> ThreadId {
        ThreadId::from_root(self.dag.root())
    }

    /// The DAG.
    pub fn dag(&self) -> &Dag {
        &self.dag
    }

    /// The derived state.
    pub fn state(&self) -> &ThreadState {
        &self.state
    }

    /// Checks and inserts one verified event. Events must come parents first; an event whose
    /// parents are missing is refused with a retryable error and changes nothing.
    pub fn insert(
        &mut self,
        event: VerifiedEvent,
        certificates: &Certificates,
        now: Timestamp,
    ) -> Result<Inserted, IngestError> {
        if self.dag.check(&event)? {
            return Ok(Inserted::Duplicate);
        }
        let past = self.causal_past(&event);
        let members = self.members_of(&past.members);
        let context = ThreadContext {
            owner: self.state.owner,
            members: &members,
            admitted: past.admitted,
            receipt_target: self.receipt_target(&event),
        };
        auth::check_thread_event(&event, Some(context), certificates, now)?;

        self.insert_authorised(event, past);
        Ok(Inserted::New)
    }

    /// Rebuilds a thread from events read back from the node's own store, parents first (the
    /// linear order is). They passed the auth rules before they were stored, so only the DAG
    /// rules run again.
    pub fn restore(events: impl IntoIterator<Item = VerifiedEvent>) -> Result<Self, IngestError> {
        let mut events = events.into_iter();
        let root = events.next().ok_or(IngestError::NotARoot {
            expected: "thread",
            found: "nothing",
        })?;
        let Some(state) = ThreadState::opened(&root) else {
            return Err(IngestError::NotARoot {
                expected: "thread",
                found: root.header().kind.name(),
            });
        };
        let mut dag = Dag::new(root)?;
        dag.reserve(events.size_hint().0);
        let mut thread = Thread {
            dag,
            state,
            past: vec![Past::of_root()],
        };
        for event in events {
            if thread.dag.check(&event)? {
                continue;
            }
            let past = thread.causal_past(&event);
            thread.insert_authorised(event, past);
        }
        Ok(thread)
    }

    fn insert_authorised(&mut self, mut event: VerifiedEvent, past: Past) {
        let id = event.id();
        if self.state.erased.contains(&id) {
            event.erase_content();
        }
        let key = OrderKey::of(&event);
        let appended = self.dag.last_key().is_none_or(|last| key > last);
        let erase_targets = match &event.header().kind {
            EventKind::Thread(ThreadKind::Erase { targets }) => targets.clone(),
            _ => Vec::new(),
        };
        self.past.push(past);
        if appended {
            self.state.apply(&event);
            self.dag.insert_checked(event);
        } else {
            self.dag.insert_checked(event);
            self.state = self.fold_from_scratch();
        }
        for target in erase_targets {
            self.dag.erase_content(&target);
        }
    }

    /// Drops the content this thread holds of event `id`, for a holder that keeps contents
    /// elsewhere (a node's store), unless the route reads its handle there. The fold and the
    /// auth rules read headers only, and the content of the event being inserted; the route
    /// moves only to an event being inserted (the last route-setting event in linear order),
    /// so its handle stays held. Afterwards [`Dag::get`] gives that event without content, as
    /// it gives an erased one.
    pub fn release_content(&mut self, id: &EventId) {
        if self
            .state
            .route
            .is_some_and(|route| route.handle_from == *id)
        {
            return;
        }
        self.dag.erase_content(id);
    }

    /// [`Thread::release_content`] for every event.
    pub fn release_all_content(&mut self) {
        let keep = self.state.route.map(|route| route.handle_from);
        self.dag.erase_all_content_except(keep.as_ref());
    }

    /// The state computed from scratch over every event in linear order. Equal to
    /// [`Thread::state`] at all times; tests and start-up checks compare the two.
    pub fn fold_from_scratch(&self) -> ThreadState {
        let mut events = self.dag.iter_ordered();
        let mut state = events
            .next()
            .and_then(ThreadState::opened)
            .expect("a thread's DAG starts with its opening event");
        for event in events {
            state.apply(event);
        }
        state
    }

    /// The channels the org has opened this thread to, as of the parents a new event takes
    /// ([`Dag::next_parents`]): a bridge of another channel may introduce a message only after
    /// a node or agent hands the thread off to its channel (see [`auth::check_thread_event`]).
    pub fn admitted_channels(&self) -> ChannelSet {
        self.dag
            .next_parents()
            .0
            .iter()
            .filter_map(|head| Some((self.past_of(head)?, self.dag.get(head)?)))
            .fold(ChannelSet::EMPTY, |set, (past, head)| {
                let set = set.union(past.admitted);
                admits(head).map_or(set, |channel| set.with(channel))
            })
    }

    /// The route as of the stored event `id`: the route-setting event latest in linear order
    /// among its strict ancestors (§6 rule 5), as a [`Route`]. Every replica answers the
    /// same for the same event, whatever else it holds: where a reply goes is decided by what
    /// its author saw, so nodes with different views never deliver it twice or not at all.
    pub fn route_as_of(&self, id: &EventId) -> Option<Route> {
        let (position, channel) = self.past_of(id)?.route?;
        Some(Route {
            channel,
            handle_from: self.dag.key_at(position).id,
        })
    }

    /// For a receipt, its target as the auth rules see it: `None` unless the target is one of
    /// the receipt's parents.
    fn receipt_target(&self, event: &VerifiedEvent) -> Option<ReceiptTarget> {
        let EventKind::Thread(ThreadKind::Receipt { target, .. }) = &event.header().kind else {
            return None;
        };
        if !event.header().parents.contains(target) {
            return None;
        }
        let target_event = self.dag.get(target)?;
        Some(ReceiptTarget {
            outbound: matches!(
                target_event.header().kind,
                EventKind::Thread(ThreadKind::Message {
                    direction: Direction::Outbound
                })
            ),
            routed_to: self
                .past_of(target)
                .and_then(|past| past.route)
                .map(|(_, channel)| channel),
        })
    }

    /// What the auth rules need of an event's strict causal past.
    fn past_of(&self, id: &EventId) -> Option<&Past> {
        self.past.get(self.dag.position(id)?)
    }

    fn causal_past(&self, event: &VerifiedEvent) -> Past {
        let parents = &event.header().parents;
        let mut admitted = ChannelSet::EMPTY;
        let mut route: Option<(OrderKey, ChannelKind)> = None;
        for parent in parents {
            let Some(parent_event) = self.dag.get(parent) else {
                continue;
            };
            if let Some(past) = self.past_of(parent) {
                admitted = admitted.union(past.admitted);
                let past_route = past
                    .route
                    .map(|(position, channel)| (self.dag.key_at(position), channel));
                route = route.max(past_route);
            }
            if let Some(channel) = admits(parent_event) {
                admitted = admitted.with(channel);
            }
            if let Some(channel) = routes_to(parent_event) {
                route = route.max(Some((OrderKey::of(parent_event), channel)));
            }
        }
        Past {
            members: self.causal_member_events(parents),
            admitted,
            route: route.and_then(|(key, channel)| Some((self.dag.position(&key.id)?, channel))),
        }
    }

    fn causal_member_events(&self, parents: &[EventId]) -> Arc<[(OrderKey, EventId)]> {
        let mut shared: Option<&Arc<[(OrderKey, EventId)]>> = None;
        let mut all_same = true;
        let mut any_member_parent = false;
        for parent in parents {
            if let Some(past) = self.past_of(parent) {
                match shared {
                    None => shared = Some(&past.members),
                    Some(first) => all_same &= Arc::ptr_eq(first, &past.members),
                }
            }
            if let Some(parent_event) = self.dag.get(parent) {
                any_member_parent |= changes_membership(parent_event);
            }
        }
        if let (Some(shared), true, false) = (shared, all_same, any_member_parent) {
            return Arc::clone(shared);
        }
        let mut union: BTreeSet<(OrderKey, EventId)> = BTreeSet::new();
        for parent in parents {
            if let Some(past) = self.past_of(parent) {
                union.extend(past.members.iter().copied());
            }
            if let Some(parent_event) = self.dag.get(parent) {
                if changes_membership(parent_event) {
                    union.insert((OrderKey::of(parent_event), *parent));
                }
            }
        }
        union.into_iter().collect::<Vec<_>>().into()
    }

    fn members_of(&self, past: &[(OrderKey, EventId)]) -> BTreeSet<OrgId> {
        let mut members = BTreeSet::from([self.state.owner]);
        for (_, id) in past {
            match self.dag.get(id).map(|e| &e.header().kind) {
                Some(EventKind::Thread(ThreadKind::MemberAdd { org })) => {
                    members.insert(*org);
                }
                Some(EventKind::Thread(ThreadKind::MemberRemove { org })) => {
                    members.remove(org);
                }
                _ => {}
            }
        }
        members
    }
}

fn changes_membership(event: &VerifiedEvent) -> bool {
    matches!(
        event.header().kind,
        EventKind::Thread(ThreadKind::MemberAdd { .. } | ThreadKind::MemberRemove { .. })
    )
}
