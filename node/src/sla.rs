//! Service level targets (`[sla]`): how soon a new conversation gets its first answer, how
//! soon each later customer message is answered, and how soon a conversation is resolved; each
//! thread's timers against them, for the thread list, and whether a conversation met them, for
//! reports.

use serde::Serialize;
use threadline_protocol::{event::Status, ThreadState};

use crate::thread_facts::ThreadFacts;

/// The org's targets, in ms (`None`: no target).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlaPolicy {
    /// From a conversation's start to an agent's first reply.
    pub first_response: Option<u64>,
    /// From a customer's message (the first since the last reply) to the next reply.
    pub next_response: Option<u64>,
    /// From a conversation's start to its resolution.
    pub resolution: Option<u64>,
}

/// A thread's timers now: when each pending target is due, and which have passed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SlaTimers {
    /// When the first reply is due (ms); `null` once an agent replied, while resolved, or
    /// without a target.
    pub first_response_due: Option<u64>,
    /// When the reply to the waiting customer is due (ms); `null` when nothing waits for a
    /// next reply (only an agent's reply answers; the node's own do not), while resolved, or
    /// without a target.
    pub next_response_due: Option<u64>,
    /// When the conversation is to be resolved (ms); `null` once resolved, or without a
    /// target.
    pub resolution_due: Option<u64>,
    /// The targets missed so far: `first_response` (replied late, or not yet and due),
    /// `next_response` (due and not yet answered), `resolution` (resolved late, or not yet and
    /// due).
    pub breached: Vec<&'static str>,
}

impl SlaPolicy {
    /// Whether any target is set.
    pub fn is_set(&self) -> bool {
        self.first_response.is_some() || self.next_response.is_some() || self.resolution.is_some()
    }

    /// The timers of a thread in `state` with `facts`, at `now` (ms); none for facts stored
    /// before they kept the first reply and the resolution.
    pub fn timers(&self, state: &ThreadState, facts: &ThreadFacts, now: u64) -> SlaTimers {
        if !facts.knows_milestones() {
            return SlaTimers::default();
        }
        let opened = state.opened_at.as_millis();
        let first_reply = facts.first_reply().map(|(at, _)| at.as_millis());
        // A resolved conversation owes nothing: no timer runs, none is missed from then on.
        let resolved = matches!(state.status, Status::Resolved);
        let mut timers = SlaTimers::default();
        if let Some(within) = self.first_response {
            let due = opened.saturating_add(within);
            match first_reply {
                None if resolved => {}
                None => {
                    timers.first_response_due = Some(due);
                    if now > due {
                        timers.breached.push("first_response");
                    }
                }
                Some(at) if at > due => timers.breached.push("first_response"),
                Some(_) => {}
            }
        }
        if let (Some(within), Some(_), Some(since), false) = (
            self.next_response,
            first_reply,
            facts.waiting_since(),
            resolved,
        ) {
            let due = since.as_millis().saturating_add(within);
            timers.next_response_due = Some(due);
            if now > due {
                timers.breached.push("next_response");
            }
        }
        if let Some(within) = self.resolution {
            let due = opened.saturating_add(within);
            if resolved {
                if facts
                    .last_resolved()
                    .is_some_and(|(at, _)| at.as_millis() > due)
                {
                    timers.breached.push("resolution");
                }
            } else {
                timers.resolution_due = Some(due);
                if now > due {
                    timers.breached.push("resolution");
                }
            }
        }
        timers
    }
}
