//! Automatic assignment (`[assignment] auto`): each new conversation that comes in on this
//! node goes to one of the agents with the inbox open, in turn (round robin, in agent id
//! order), skipping those who have `max_open_per_agent` open conversations already. With
//! nobody free, it stays unassigned for whoever takes it.
//!
//! Only the node a conversation came in on assigns it (its live event is local), so two nodes
//! of an org never both assign the same conversation. The assignment is a signed `Assign`
//! event of the node (no agent), which replicates like any other.

use threadline_protocol::{event::Status, AgentId, ThreadId};
use tracing::info;

use crate::ingest::{Action, Ingest};
use crate::thread_index::Filter;

/// `[assignment]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Assign new conversations automatically.
    pub auto: bool,
    /// The most open conversations an agent is given (0: no cap).
    pub max_open_per_agent: usize,
}

/// Whose turn it is next (see [`assign_if_new`]).
#[derive(Debug, Default)]
pub struct Turn(usize);

/// Assigns new conversation `thread` under `policy` if it is still unassigned and not
/// resolved. Called for each conversation's first message that comes in on this node, after
/// the automation rules (`automation::run`), so a rule's assignment stands.
pub async fn assign_if_new(
    ingest: &Ingest,
    thread: ThreadId,
    policy: Policy,
    Turn(turn): &mut Turn,
) -> Result<(), crate::ingest::IngestError> {
    if !policy.auto {
        return Ok(());
    }
    let Some(state) = ingest.store().thread_state(&thread)? else {
        return Ok(());
    };
    if state.assignee.is_some() || state.status == Status::Resolved {
        return Ok(());
    }
    let here = ingest.presence().agents_here();
    let Some(agent) = next_agent(&here, *turn, |agent| open_of(ingest, agent), policy) else {
        info!(%thread, "no agent free for a new conversation; it stays unassigned");
        return Ok(());
    };
    *turn = here.iter().position(|a| *a == agent).map_or(0, |i| i + 1);
    ingest
        .act_as_node(thread, Action::Assign(Some(agent)))
        .await?;
    info!(%thread, %agent, "assigned a new conversation");
    Ok(())
}

/// The open conversations assigned to `agent`.
fn open_of(ingest: &Ingest, agent: AgentId) -> usize {
    ingest
        .thread_index()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .count(&Filter {
            status: Some("open"),
            assignee: Some(Some(agent)),
            ..Filter::default()
        })
}

/// The agent whose turn it is: the first of `here` from position `turn` on (wrapping round)
/// with fewer than the cap of open conversations.
fn next_agent(
    here: &[AgentId],
    turn: usize,
    open_of: impl Fn(AgentId) -> usize,
    policy: Policy,
) -> Option<AgentId> {
    (0..here.len())
        .map(|i| here[(turn + i) % here.len()])
        .find(|agent| policy.max_open_per_agent == 0 || open_of(*agent) < policy.max_open_per_agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(n: u8) -> AgentId {
        AgentId::from_bytes([n; 16])
    }

    #[test]
    fn turns_go_round_and_skip_agents_at_their_cap() {
        let here = [agent(1), agent(2), agent(3)];
        let capped = Policy {
            auto: true,
            max_open_per_agent: 2,
        };
        let open = |a: AgentId| if a == agent(2) { 2 } else { 0 };
        assert_eq!(next_agent(&here, 0, open, capped), Some(agent(1)));
        assert_eq!(
            next_agent(&here, 1, open, capped),
            Some(agent(3)),
            "2 is full"
        );
        assert_eq!(
            next_agent(&here, 3, open, capped),
            Some(agent(1)),
            "wraps round"
        );
        let uncapped = Policy {
            auto: true,
            max_open_per_agent: 0,
        };
        assert_eq!(next_agent(&here, 1, open, uncapped), Some(agent(2)));
        assert_eq!(
            next_agent(&here, 0, |_| 2, capped),
            None,
            "everyone is full"
        );
        assert_eq!(next_agent(&[], 0, open, capped), None, "nobody is here");
    }
}
