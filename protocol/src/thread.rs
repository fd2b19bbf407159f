//! A thread: its DAG, its derived state, and ingestion under the auth rules.

mod state;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

pub use state::{Reader, Route, ThreadState};

use crate::auth::{self, AuthError, Certificates, ThreadContext};
use crate::dag::{Dag, DagError, Inserted, OrderKey};
use crate::event::{EventKind, ThreadKind, VerifiedEvent};
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
    /// For each event, the membership-changing events in its strict causal past (the root
    /// included), sorted by order key. Almost every event shares one `Arc`.
    member_past: HashMap<EventId, Arc<[(OrderKey, EventId)]>>,
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
        let root_id = root.id();
        let dag = Dag::new(root)?;
        let mut member_past = HashMap::new();
        member_past.insert(root_id, Arc::from(Vec::new()));
        Ok(Thread {
            dag,
            state,
            member_past,
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
        let past = self.causal_member_events(&event);
        let members = self.members_of(&past);
        let context = ThreadContext {
            owner: self.state.owner,
            members: &members,
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
        let root_id = root.id();
        let mut thread = Thread {
            dag: Dag::new(root)?,
            state,
            member_past: HashMap::from([(root_id, Arc::from(Vec::new()))]),
        };
        for event in events {
            if thread.dag.check(&event)? {
                continue;
            }
            let past = thread.causal_member_events(&event);
            thread.insert_authorised(event, past);
        }
        Ok(thread)
    }

    fn insert_authorised(&mut self, mut event: VerifiedEvent, past: Arc<[(OrderKey, EventId)]>) {
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
        self.member_past.insert(id, past);
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

    fn causal_member_events(&self, event: &VerifiedEvent) -> Arc<[(OrderKey, EventId)]> {
        let parents = &event.header().parents;
        let mut shared: Option<&Arc<[(OrderKey, EventId)]>> = None;
        let mut all_same = true;
        let mut any_member_parent = false;
        for parent in parents {
            if let Some(past) = self.member_past.get(parent) {
                match shared {
                    None => shared = Some(past),
                    Some(first) => all_same &= Arc::ptr_eq(first, past),
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
            if let Some(past) = self.member_past.get(parent) {
                union.extend(past.iter().copied());
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
