//! Node records kept in the store. They are part of the on-disk schema (hence serializable,
//! through the protocol's codec) and of nothing else.

use serde::{Deserialize, Serialize};
use threadline_protocol::{
    channel::{ChannelKind, Handle},
    codec::ByteBuf,
    event::SignedHeader,
    AgentId, EventId, ThreadId, Timestamp,
};

use super::data_keys::Sealed;

/// An event as the event log keeps it: the signed header in the clear (every replica
/// verifies the DAG from headers, which name no customer), the content sealed under its
/// owner's data key, and the external key it names (already a hash: [`super::external_id_key`]),
/// which start-up reads without opening the content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The signed header.
    pub signed: SignedHeader,
    /// The content's encoding, sealed; `None` when the event has none or it was erased.
    pub content: Option<Sealed>,
    /// The external key the event names, if any.
    pub external: Option<ByteBuf>,
}

/// A queued delivery as the `outbound` tree keeps it: its thread in the clear (so a thread's
/// deliveries are found without opening them), the [`Delivery`] sealed under the thread's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDelivery {
    /// The thread.
    pub thread: ThreadId,
    /// The delivery's encoding, sealed.
    pub sealed: Sealed,
}

/// A message waiting for a bridge to deliver it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Sequence number in its channel's queue.
    pub seq: u64,
    /// The thread.
    pub thread: ThreadId,
    /// The outbound message event.
    pub event: EventId,
    /// Its depth (a bridge's receipt goes right under it).
    pub depth: u64,
    /// Where it goes: a handle linked to the thread's contact, checked when queued.
    pub handle: Handle,
    /// The text.
    pub text: String,
    /// When it was queued.
    pub queued_at: Timestamp,
}

/// What a token lets its bearer do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenRole {
    /// An agent using the agent API.
    Agent(AgentId),
    /// A bridge using the bridge API for one channel.
    Bridge(ChannelKind),
}

/// A token, stored under the SHA-256 of its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The role.
    pub role: TokenRole,
    /// When it was made.
    pub created_at: Timestamp,
    /// Revoked tokens are kept, so that `agent list` shows them.
    pub revoked: bool,
}

/// An agent of the org.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent's id.
    pub id: AgentId,
    /// Display name.
    pub name: String,
    /// When added.
    pub created_at: Timestamp,
    /// Whether revoked.
    pub revoked: bool,
    /// What the agent may do.
    pub role: AgentRole,
}

/// What an agent may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentRole {
    /// Work in the inbox, and manage agents (add, revoke, reset a token, change a role).
    Admin,
    /// Work in the inbox.
    Agent,
}

impl AgentRole {
    /// `admin` or `agent`.
    pub fn name(self) -> &'static str {
        match self {
            AgentRole::Admin => "admin",
            AgentRole::Agent => "agent",
        }
    }

    /// The role a name names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "admin" => Some(AgentRole::Admin),
            "agent" => Some(AgentRole::Agent),
            _ => None,
        }
    }
}

/// [`AgentRecord`] as stored before agents had roles: every agent could do everything then,
/// so it reads as an admin.
#[derive(Debug, Serialize, Deserialize)]
pub struct AgentRecordBeforeRoles {
    id: AgentId,
    name: String,
    created_at: Timestamp,
    revoked: bool,
}

impl From<AgentRecordBeforeRoles> for AgentRecord {
    fn from(old: AgentRecordBeforeRoles) -> Self {
        AgentRecord {
            id: old.id,
            name: old.name,
            created_at: old.created_at,
            revoked: old.revoked,
            role: AgentRole::Admin,
        }
    }
}
