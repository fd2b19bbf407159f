//! What the thread list shows of a thread and its derived state does not keep: how many of
//! the customer's messages each agent has not read, when the customer last wrote on each
//! channel (for the messaging windows), and which message is the last (the list's preview
//! reads its text, sealed in the event log like every content). Reading either off the log costs the whole log, and a
//! list shows 50 threads; so the ingest writer keeps them up to date as events arrive, a
//! record of bounded size per thread (its channels, its readers), stored beside the thread's
//! state (`thread_facts` tree).
//!
//! Unread counts follow the log's linear order, as read marks do: a customer's message is
//! unread by an agent when it comes after the agent's mark in that order, whatever order the
//! events reached this node in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use threadline_protocol::{
    dag::OrderKey,
    event::{Direction, EventKind, ThreadKind},
    AgentId, ChannelKind, Dag, EventId, Timestamp, VerifiedEvent,
};

/// A place in a log's linear order (an [`OrderKey`], stored).
type Place = (u64, Timestamp, EventId);

fn place(key: OrderKey) -> Place {
    (key.depth, key.author_time, key.id)
}

fn place_of(event: &VerifiedEvent) -> Place {
    place(OrderKey::of(event))
}

/// A thread's facts for the thread list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadFacts {
    /// The customer's messages in the thread.
    pub inbound: u64,
    /// When the customer last wrote, per channel.
    pub last_inbound: BTreeMap<ChannelKind, Timestamp>,
    /// Each agent who has read the thread: their mark, and what is unread after it.
    readers: BTreeMap<AgentId, Reader>,
    /// The last message (either way) in the linear order.
    last_message: Option<Place>,
    /// The customer's first message since an agent last replied (in the linear order), and
    /// when it was written: what an answer is owed for.
    unanswered: Option<(Place, Timestamp)>,
    /// The first reply an agent wrote (the first outbound message with an agent, in the
    /// linear order), and who wrote it: the first response, for the SLA and reports.
    first_reply: Option<(Place, Option<AgentId>)>,
    /// The last change of status to resolved by an agent, in the linear order, and who (the
    /// node's own, after a satisfaction rating or by a rule, do not count).
    last_resolved: Option<(Place, Option<AgentId>)>,
    /// Whether the two above are known: `false` for facts stored before they were kept
    /// (until the thread is next loaded whole).
    milestones: bool,
}

/// [`ThreadFacts`] as stored before they kept the first reply and the last resolution
/// (version 3).
#[derive(Debug, Serialize, Deserialize)]
pub struct ThreadFactsV3 {
    inbound: u64,
    last_inbound: BTreeMap<ChannelKind, Timestamp>,
    readers: BTreeMap<AgentId, Reader>,
    last_message: Option<Place>,
    unanswered: Option<(Place, Timestamp)>,
}

/// [`ThreadFacts`] as stored before they named the last message (version 1).
#[derive(Debug, Serialize, Deserialize)]
pub struct ThreadFactsV1 {
    inbound: u64,
    last_inbound: BTreeMap<ChannelKind, Timestamp>,
    readers: BTreeMap<AgentId, Reader>,
}

/// [`ThreadFacts`] as stored before they kept the unanswered message (version 2).
#[derive(Debug, Serialize, Deserialize)]
pub struct ThreadFactsV2 {
    inbound: u64,
    last_inbound: BTreeMap<ChannelKind, Timestamp>,
    readers: BTreeMap<AgentId, Reader>,
    last_message: Option<Place>,
}

impl ThreadFacts {
    /// A stored record, of this version or an earlier one (what an earlier one lacks stays
    /// unknown until the thread is next written).
    pub fn decode_stored(bytes: &[u8]) -> Result<Self, crate::store::StoreError> {
        use crate::store::decode;
        decode("thread_facts", bytes).or_else(|err| {
            decode::<ThreadFactsV3>("thread_facts", bytes)
                .map(|old| ThreadFacts {
                    inbound: old.inbound,
                    last_inbound: old.last_inbound,
                    readers: old.readers,
                    last_message: old.last_message,
                    unanswered: old.unanswered,
                    ..ThreadFacts::default()
                })
                .or_else(|_| {
                    decode::<ThreadFactsV2>("thread_facts", bytes).map(|old| ThreadFacts {
                        inbound: old.inbound,
                        last_inbound: old.last_inbound,
                        readers: old.readers,
                        last_message: old.last_message,
                        ..ThreadFacts::default()
                    })
                })
                .or_else(|_| {
                    decode::<ThreadFactsV1>("thread_facts", bytes).map(|old| ThreadFacts {
                        inbound: old.inbound,
                        last_inbound: old.last_inbound,
                        readers: old.readers,
                        ..ThreadFacts::default()
                    })
                })
                .map_err(|_| err)
        })
    }
}

/// What each agent has not read of a thread ([`ThreadFacts::unread_counts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnreadCounts {
    /// The customer's messages: unread for an agent who never read the thread.
    inbound: u64,
    /// Each agent who read it, and what is unread after their mark.
    readers: Box<[(AgentId, u64)]>,
}

impl UnreadCounts {
    /// The customer's messages `agent` has not read.
    pub fn of(&self, agent: AgentId) -> u64 {
        self.readers
            .iter()
            .find(|(reader, _)| *reader == agent)
            .map_or(self.inbound, |(_, unread)| *unread)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Reader {
    /// The agent's read event that counts: the last of theirs in the linear order.
    read_event: Place,
    /// The event it marks as read up to.
    mark: Place,
    /// The customer's messages after the mark.
    unread: u64,
}

impl ThreadFacts {
    /// The facts of a whole thread, from its DAG.
    pub fn of(dag: &Dag) -> Self {
        let mut facts = ThreadFacts {
            milestones: true,
            ..ThreadFacts::default()
        };
        // Each agent's last read event in the linear order, and its mark.
        let mut marks: BTreeMap<AgentId, (Place, OrderKey)> = BTreeMap::new();
        for event in dag.iter_ordered() {
            let header = event.header();
            facts.note_milestones(event);
            if is_message(event) {
                facts.last_message = Some(place_of(event));
                if is_inbound(event) {
                    if facts.unanswered.is_none() {
                        facts.unanswered = Some((place_of(event), header.author_time));
                    }
                } else if is_answer(event) {
                    facts.unanswered = None;
                }
            }
            match &header.kind {
                EventKind::Thread(ThreadKind::Message {
                    direction: Direction::Inbound { channel },
                }) => {
                    facts.inbound += 1;
                    let last = facts
                        .last_inbound
                        .entry(*channel)
                        .or_insert(header.author_time);
                    *last = (*last).max(header.author_time);
                }
                EventKind::Thread(ThreadKind::Read { up_to }) => {
                    if let (Some(agent), Some(marked)) = (header.agent, dag.get(up_to)) {
                        marks.insert(agent, (place_of(event), OrderKey::of(marked)));
                    }
                }
                _ => {}
            }
        }
        for (agent, (read_event, mark)) in marks {
            let unread = dag.iter_after(mark).filter(|e| is_inbound(e)).count() as u64;
            facts.readers.insert(
                agent,
                Reader {
                    read_event,
                    mark: place(mark),
                    unread,
                },
            );
        }
        facts
    }

    /// Takes in `event`, which has just entered `dag`.
    pub fn insert(&mut self, dag: &Dag, event: &VerifiedEvent) {
        let header = event.header();
        self.note_milestones(event);
        if is_message(event) {
            let at = place_of(event);
            if self.last_message.is_none_or(|last| at > last) {
                self.last_message = Some(at);
            }
            self.answer_after(dag, event, at);
        }
        match &header.kind {
            EventKind::Thread(ThreadKind::Message {
                direction: Direction::Inbound { channel },
            }) => {
                self.inbound += 1;
                let last = self
                    .last_inbound
                    .entry(*channel)
                    .or_insert(header.author_time);
                *last = (*last).max(header.author_time);
                let at = place_of(event);
                for reader in self.readers.values_mut() {
                    if at > reader.mark {
                        reader.unread += 1;
                    }
                }
            }
            EventKind::Thread(ThreadKind::Read { up_to }) => {
                let (Some(agent), Some(marked)) = (header.agent, dag.get(up_to)) else {
                    return;
                };
                let read_event = place_of(event);
                if self
                    .readers
                    .get(&agent)
                    .is_some_and(|reader| reader.read_event >= read_event)
                {
                    return;
                }
                let mark = OrderKey::of(marked);
                let unread = dag.iter_after(mark).filter(|e| is_inbound(e)).count() as u64;
                self.readers.insert(
                    agent,
                    Reader {
                        read_event,
                        mark: place(mark),
                        unread,
                    },
                );
            }
            _ => {}
        }
    }

    /// Every agent's unread count at once, compact, for the thread list's index.
    pub fn unread_counts(&self) -> UnreadCounts {
        UnreadCounts {
            inbound: self.inbound,
            readers: self
                .readers
                .iter()
                .map(|(agent, reader)| (*agent, reader.unread))
                .collect(),
        }
    }

    /// The customer's messages `agent` has not read (all of them if the agent never read the
    /// thread).
    pub fn unread(&self, agent: AgentId) -> u64 {
        self.readers
            .get(&agent)
            .map_or(self.inbound, |reader| reader.unread)
    }
}

impl ThreadFacts {
    /// Takes in `event` for the first reply and the last resolution (in any order: each
    /// keeps the earliest or latest place in the linear order).
    fn note_milestones(&mut self, event: &VerifiedEvent) {
        let header = event.header();
        let at = place_of(event);
        match header.kind {
            EventKind::Thread(ThreadKind::Message {
                direction: Direction::Outbound,
            }) if header.agent.is_some()
                && self.first_reply.is_none_or(|(first, _)| at < first) =>
            {
                self.first_reply = Some((at, header.agent));
            }
            EventKind::Thread(ThreadKind::Status {
                status: threadline_protocol::event::Status::Resolved,
            }) if header.agent.is_some()
                && self.last_resolved.is_none_or(|(last, _)| at > last) =>
            {
                self.last_resolved = Some((at, header.agent));
            }
            _ => {}
        }
    }

    /// Whether [`ThreadFacts::first_reply`] and [`ThreadFacts::last_resolved`] are known
    /// (facts stored by an earlier version lack them).
    pub fn knows_milestones(&self) -> bool {
        self.milestones
    }

    /// When an agent first replied, and who.
    pub fn first_reply(&self) -> Option<(Timestamp, Option<AgentId>)> {
        self.first_reply.map(|((_, at, _), agent)| (at, agent))
    }

    /// When an agent last resolved the thread, and who (it may have been reopened since).
    pub fn last_resolved(&self) -> Option<(Timestamp, Option<AgentId>)> {
        self.last_resolved.map(|((_, at, _), agent)| (at, agent))
    }

    /// The last message of the thread, either way, in its linear order.
    pub fn last_message(&self) -> Option<EventId> {
        self.last_message.map(|(_, _, id)| id)
    }

    /// When the customer's first message since the last reply was written: an answer is
    /// owed since then (`None`: nothing is waiting).
    pub fn waiting_since(&self) -> Option<Timestamp> {
        self.unanswered.map(|(_, at)| at)
    }

    /// Takes in message `event` for the unanswered message: the first inbound one after the
    /// last reply in the linear order. Events may arrive out of that order, so what comes
    /// after `event` (usually nothing) is looked at.
    fn answer_after(&mut self, dag: &Dag, event: &VerifiedEvent, at: Place) {
        let key = OrderKey::of(event);
        if is_inbound(event) {
            let before_first = self.unanswered.is_none_or(|(first, _)| at < first);
            if before_first && !dag.iter_after(key).any(is_answer) {
                self.unanswered = Some((at, event.header().author_time));
            }
        } else if is_answer(event) && self.unanswered.is_some_and(|(first, _)| first < at) {
            // Nothing after the first unanswered message was a reply until this one, so what
            // is unanswered now is the first inbound message after it.
            self.unanswered = dag
                .iter_after(key)
                .find(|e| is_inbound(e))
                .map(|e| (place_of(e), e.header().author_time));
        }
    }
}

/// An agent's reply: what answers the customer (the node's own messages — an away reply, a
/// rule's, a survey's question — do not).
fn is_answer(event: &VerifiedEvent) -> bool {
    is_message(event) && !is_inbound(event) && event.header().agent.is_some()
}

fn is_message(event: &VerifiedEvent) -> bool {
    matches!(
        event.header().kind,
        EventKind::Thread(ThreadKind::Message { .. })
    )
}

fn is_inbound(event: &VerifiedEvent) -> bool {
    matches!(
        event.header().kind,
        EventKind::Thread(ThreadKind::Message {
            direction: Direction::Inbound { .. }
        })
    )
}
