//! Who is here right now: ephemeral signals that are not events and are never stored. How many
//! agents have the inbox open (its live stream), and who is typing in which thread.

use std::sync::atomic::{AtomicUsize, Ordering};
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
    agents: Arc<AtomicUsize>,
    agents_online: Arc<watch::Sender<bool>>,
    typing: broadcast::Sender<Typing>,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            agents: Arc::new(AtomicUsize::new(0)),
            agents_online: Arc::new(watch::channel(false).0),
            typing: broadcast::channel(TYPING_BUFFER).0,
        }
    }
}

/// An agent with the inbox open; dropping it says the agent left.
#[derive(Debug)]
pub struct AgentHere(Presence);

impl Drop for AgentHere {
    fn drop(&mut self) {
        let left = self.0.agents.fetch_sub(1, Ordering::AcqRel) - 1;
        self.0.agents_online.send_replace(left > 0);
    }
}

impl Presence {
    /// An agent opened the inbox (its live stream), until the guard drops.
    pub fn agent_arrived(&self) -> AgentHere {
        self.agents.fetch_add(1, Ordering::AcqRel);
        self.agents_online.send_replace(true);
        AgentHere(self.clone())
    }

    /// Whether any agent has the inbox open.
    pub fn agents_online(&self) -> bool {
        *self.agents_online.borrow()
    }

    /// Changes of [`Presence::agents_online`].
    pub fn watch_agents_online(&self) -> watch::Receiver<bool> {
        self.agents_online.subscribe()
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
