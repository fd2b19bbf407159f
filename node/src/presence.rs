//! Who is here right now: ephemeral signals that are not events and are never stored. How many
//! agents have the inbox open (its live stream), and who is typing in which thread.

use std::sync::Arc;

use threadline_protocol::ThreadId;
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
    typing: broadcast::Sender<Typing>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            agents: Arc::new(watch::channel(0).0),
            typing: broadcast::channel(TYPING_BUFFER).0,
        }
    }
}

/// An agent with the inbox open; dropping it says the agent left.
#[derive(Debug)]
pub struct AgentHere(Presence);

impl Drop for AgentHere {
    fn drop(&mut self) {
        self.0
            .agents
            .send_modify(|agents| *agents = agents.saturating_sub(1));
    }
}

impl Presence {
    /// An agent opened the inbox (its live stream), until the guard drops.
    pub fn agent_arrived(&self) -> AgentHere {
        self.agents.send_modify(|agents| *agents += 1);
        AgentHere(self.clone())
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
