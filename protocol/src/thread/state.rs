//! The derived state of a thread: a pure fold of its events' headers in linear order.
//!
//! The fold reads headers only, never content, so replicas that hold the same events agree on
//! the state whether or not they still hold erased content.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::channel::ChannelKind;
use crate::codec::{self, EncodeError};
use crate::digest::{self, Domain};
use crate::event::{Direction, EventKind, ReceiptKind, Status, ThreadKind, VerifiedEvent};
use crate::id::{AgentId, ContactId, EventId, StateHash};
use crate::key::OrgId;
use crate::name::{Label, TeamName};
use crate::time::Timestamp;

/// Where replies go: a channel, and the event whose content names the customer's handle on it
/// (an inbound message, a hand-off, or the opening event). The handle itself is erasable
/// content, so the state points at it instead of copying it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The channel.
    pub channel: ChannelKind,
    /// The event whose content holds the handle.
    pub handle_from: EventId,
}

/// Who has read a thread up to where.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Reader {
    /// The customer (from bridges' read receipts).
    Customer,
    /// An agent.
    Agent(AgentId),
}

/// A thread's derived state. Serializable so that its canonical encoding can be hashed; the
/// hash is what replicas compare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ThreadState {
    /// The owning org.
    pub owner: OrgId,
    /// The contact the thread is with.
    pub contact: ContactId,
    /// The channel the thread started on.
    pub opened_on: ChannelKind,
    /// When it was opened (author time of the root).
    pub opened_at: Timestamp,
    /// Status.
    pub status: Status,
    /// The agent it is assigned to.
    pub assignee: Option<AgentId>,
    /// Where replies go, once known.
    pub route: Option<Route>,
    /// Labels.
    pub labels: BTreeSet<Label>,
    /// Member orgs (the owner and partners it is shared with).
    pub members: BTreeSet<OrgId>,
    /// Read marks.
    pub read_marks: BTreeMap<Reader, EventId>,
    /// The best receipt for each outbound message (read > delivered > failed).
    pub receipts: BTreeMap<EventId, ReceiptKind>,
    /// Events whose content is erased.
    pub erased: BTreeSet<EventId>,
    /// Number of events.
    pub n_events: u64,
    /// Number of messages (both directions).
    pub n_messages: u64,
    /// Latest author time seen.
    pub last_activity: Timestamp,
    /// The team it is assigned to.
    pub team: Option<TeamName>,
}

impl ThreadState {
    /// The state right after the opening event, or `None` if `root` is not a thread opening.
    pub fn opened(root: &VerifiedEvent) -> Option<Self> {
        let header = root.header();
        let EventKind::Thread(ThreadKind::Opened {
            org,
            contact,
            channel,
        }) = &header.kind
        else {
            return None;
        };
        Some(ThreadState {
            owner: *org,
            contact: *contact,
            opened_on: *channel,
            opened_at: header.author_time,
            status: Status::Open,
            assignee: None,
            route: header.content_hash.map(|_| Route {
                channel: *channel,
                handle_from: root.id(),
            }),
            labels: BTreeSet::new(),
            members: BTreeSet::from([*org]),
            read_marks: BTreeMap::new(),
            receipts: BTreeMap::new(),
            erased: BTreeSet::new(),
            n_events: 1,
            n_messages: 0,
            last_activity: header.author_time,
            team: None,
        })
    }

    /// Applies the next event in linear order.
    pub fn apply(&mut self, event: &VerifiedEvent) {
        let header = event.header();
        self.n_events += 1;
        self.last_activity = self.last_activity.max(header.author_time);
        let EventKind::Thread(kind) = &header.kind else {
            return;
        };
        match kind {
            ThreadKind::Opened { .. } => {}
            ThreadKind::Message { direction } => {
                self.n_messages += 1;
                if let Direction::Inbound { channel } = direction {
                    // The customer wrote: replies go where they are now, and the thread needs
                    // the org again.
                    self.route = Some(Route {
                        channel: *channel,
                        handle_from: event.id(),
                    });
                    self.status = Status::Open;
                }
            }
            ThreadKind::Note => {}
            ThreadKind::Assign { assignee } => self.assignee = *assignee,
            ThreadKind::Status { status } => self.status = *status,
            ThreadKind::HandOff { channel } => {
                self.route = Some(Route {
                    channel: *channel,
                    handle_from: event.id(),
                })
            }
            ThreadKind::Receipt {
                target, receipt, ..
            } => {
                let best = self.receipts.entry(*target).or_insert(*receipt);
                *best = (*best).max(*receipt);
                if *receipt == ReceiptKind::Read {
                    self.read_marks.insert(Reader::Customer, *target);
                }
            }
            ThreadKind::Read { up_to } => {
                if let Some(agent) = header.agent {
                    self.read_marks.insert(Reader::Agent(agent), *up_to);
                }
            }
            ThreadKind::LabelAdd { label } => {
                self.labels.insert(label.clone());
            }
            ThreadKind::LabelRemove { label } => {
                self.labels.remove(label);
            }
            ThreadKind::MemberAdd { org } => {
                self.members.insert(*org);
            }
            ThreadKind::MemberRemove { org } => {
                self.members.remove(org);
            }
            ThreadKind::Erase { targets } => self.erased.extend(targets.iter().copied()),
            // Kept and shown, but no news for the org: no reopening, no route, no message.
            ThreadKind::AutoReply { .. } => {}
            ThreadKind::AssignTeam { team } => self.team = team.clone(),
        }
    }

    /// The hash replicas compare: SHA-256 over `threadline/thread-state/v1 || 0x00 ||
    /// encode(state)`.
    pub fn hash(&self) -> Result<StateHash, EncodeError> {
        Ok(StateHash::from_bytes(digest::sha256(
            Domain::ThreadState,
            &codec::encode(self)?,
        )))
    }
}
