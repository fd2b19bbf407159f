//! Who is here right now: ephemeral signals that are not events and are never stored. How many
//! agents have the inbox open (its live stream), and who is typing in which thread.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use threadline_protocol::{AgentId, ThreadId};
use tokio::sync::{broadcast, watch};

/// Typing signals buffered per listener; a slow listener just misses some.
const TYPING_BUFFER: usize = 256;

/// Someone is typing in a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typing {
    /// The customer, in their thread.
    Customer(ThreadId),
    /// An agent, in a thread.
    Agent(ThreadId),
}

/// The node's presence hub; cheap to clone.
#[derive(Debug, Clone)]
pub struct Presence {
    /// Agents at the inbox; changed only through `send_modify`, so that counting and telling
    /// are one step.
    agents: Arc<watch::Sender<usize>>,
    /// Which agents those are, with how many inboxes each has open.
    here: Arc<Mutex<BTreeMap<AgentId, usize>>>,
    typing: broadcast::Sender<Typing>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            agents: Arc::new(watch::channel(0).0),
            here: Arc::default(),
            typing: broadcast::channel(TYPING_BUFFER).0,
        }
    }
}

/// An agent with the inbox open; dropping it says the agent left.
#[derive(Debug)]
pub struct AgentHere(Presence, AgentId);

impl Drop for AgentHere {
    fn drop(&mut self) {
        {
            let mut here = self.0.here.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(open) = here.get_mut(&self.1) {
                *open -= 1;
                if *open == 0 {
                    here.remove(&self.1);
                }
            }
        }
        self.0
            .agents
            .send_modify(|agents| *agents = agents.saturating_sub(1));
    }
}

impl Presence {
    /// `agent` opened the inbox (its live stream), until the guard drops.
    pub fn agent_arrived(&self, agent: AgentId) -> AgentHere {
        *self
            .here
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(agent)
            .or_default() += 1;
        self.agents.send_modify(|agents| *agents += 1);
        AgentHere(self.clone(), agent)
    }

    /// The agents with the inbox open now, in id order.
    pub fn agents_here(&self) -> Vec<AgentId> {
        self.here
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect()
    }

    /// Whether any agent has the inbox open.
    pub fn agents_online(&self) -> bool {
        *self.agents.borrow() > 0
    }

    /// Changes of the number of agents at the inbox (see [`Presence::agents_online`]).
    pub fn watch_agents(&self) -> watch::Receiver<usize> {
        self.agents.subscribe()
    }

    /// Says someone is typing (no one listening is fine).
    pub fn typing(&self, typing: Typing) {
        let _ = self.typing.send(typing);
    }

    /// Typing signals from now on.
    pub fn subscribe_typing(&self) -> broadcast::Receiver<Typing> {
        self.typing.subscribe()
    }
}
