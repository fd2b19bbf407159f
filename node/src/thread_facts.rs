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
}

/// [`ThreadFacts`] as stored before they named the last message: read as such, with no last
/// message until the thread is next written.
#[derive(Debug, Serialize, Deserialize)]
pub struct ThreadFactsWithoutLastMessage {
    inbound: u64,
    last_inbound: BTreeMap<ChannelKind, Timestamp>,
    readers: BTreeMap<AgentId, Reader>,
}

impl From<ThreadFactsWithoutLastMessage> for ThreadFacts {
    fn from(old: ThreadFactsWithoutLastMessage) -> Self {
        ThreadFacts {
            inbound: old.inbound,
            last_inbound: old.last_inbound,
            readers: old.readers,
            last_message: None,
        }
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
        let mut facts = ThreadFacts::default();
        // Each agent's last read event in the linear order, and its mark.
        let mut marks: BTreeMap<AgentId, (Place, OrderKey)> = BTreeMap::new();
        for event in dag.iter_ordered() {
            let header = event.header();
            if is_message(event) {
                facts.last_message = Some(place_of(event));
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
        if is_message(event) {
            let at = place_of(event);
            if self.last_message.is_none_or(|last| at > last) {
                self.last_message = Some(at);
            }
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

    /// The customer's messages `agent` has not read (all of them if the agent never read the
    /// thread).
    pub fn unread(&self, agent: AgentId) -> u64 {
        self.readers
            .get(&agent)
            .map_or(self.inbound, |reader| reader.unread)
    }
}

impl ThreadFacts {
    /// The last message of the thread, either way, in its linear order.
    pub fn last_message(&self) -> Option<EventId> {
        self.last_message.map(|(_, _, id)| id)
    }
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
