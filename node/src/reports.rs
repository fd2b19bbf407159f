//! Reports over the conversations started in a span of time: how many, by channel and day;
//! first response and resolution times (p50, p90); service level breaches; per agent. Read
//! from each thread's state and facts (`thread_facts.rs` keeps the first reply and the last
//! resolution), one record each, no log.

use std::collections::BTreeMap;

use serde::Serialize;
use threadline_protocol::{event::Status, AgentId, ChannelKind, ThreadId};

use crate::sla::SlaPolicy;
use crate::store::{Store, StoreError};
use crate::thread_index::status_name;

/// Days a report spans at most.
pub const MAX_DAYS: u64 = 366;
/// A day, in ms.
pub const DAY_MS: u64 = 86_400_000;
/// The last ms of the year 9999: a report may not span later (days would overflow).
pub const LATEST: u64 = 253_402_300_799_999;

/// One conversation started in the span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conversation {
    pub thread: ThreadId,
    /// When it started (ms since the epoch).
    pub opened_at: u64,
    /// The channel it started on.
    pub channel: ChannelKind,
    /// `open`, `pending`, `snoozed` or `resolved`.
    pub status: &'static str,
    pub assignee: Option<AgentId>,
    /// From its start to an agent's first reply (ms); `null`: not replied yet, or not known
    /// (`known: false`).
    pub first_response_ms: Option<u64>,
    /// Who replied first.
    pub first_replied_by: Option<AgentId>,
    /// From its start to its resolution (ms), if it is resolved now.
    pub resolution_ms: Option<u64>,
    /// Who resolved it.
    pub resolved_by: Option<AgentId>,
    /// The service level targets it missed (see [`crate::sla::SlaTimers::breached`]).
    pub breached: Vec<&'static str>,
    /// The customer's satisfaction rating, 1 to 5 (`[csat]`).
    pub rating: Option<u8>,
    /// Whether its first reply and resolution are known (a thread whose facts were stored
    /// before they were kept, and not written since, has them unknown).
    pub known: bool,
}

/// The conversations started in `[from, to)` (ms), oldest first.
pub fn conversations(
    store: &Store,
    policy: &SlaPolicy,
    from: u64,
    to: u64,
    now: u64,
) -> Result<Vec<Conversation>, StoreError> {
    let mut found = Vec::new();
    for entry in store.thread_states() {
        let (thread, state) = entry?;
        let opened_at = state.opened_at.as_millis();
        if opened_at < from || opened_at >= to {
            continue;
        }
        let facts = store.thread_facts(&thread)?.unwrap_or_default();
        let known = facts.knows_milestones();
        let first_reply = facts.first_reply().filter(|_| known);
        let resolved = facts
            .last_resolved()
            .filter(|_| known && matches!(state.status, Status::Resolved));
        found.push(Conversation {
            thread,
            opened_at,
            channel: state.opened_on,
            status: status_name(&state.status),
            assignee: state.assignee,
            first_response_ms: first_reply.map(|(at, _)| at.as_millis().saturating_sub(opened_at)),
            first_replied_by: first_reply.and_then(|(_, agent)| agent),
            resolution_ms: resolved.map(|(at, _)| at.as_millis().saturating_sub(opened_at)),
            resolved_by: resolved.and_then(|(_, agent)| agent),
            breached: policy.timers(&state, &facts, now).breached,
            rating: crate::csat::rating_in(&state.labels),
            known,
        });
    }
    found.sort_by_key(|c| (c.opened_at, c.thread));
    Ok(found)
}

/// The middle and the 90th percentile of some times, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Spread {
    /// How many times.
    pub count: u64,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
}

impl Spread {
    fn of(mut times: Vec<u64>) -> Self {
        times.sort_unstable();
        // The nearest rank: the smallest time with at least p of them at or below it.
        let rank = |p: u64| {
            let n = times.len() as u64;
            (n > 0).then(|| times[((n * p).div_ceil(100)).max(1) as usize - 1])
        };
        Spread {
            count: times.len() as u64,
            p50: rank(50),
            p90: rank(90),
        }
    }
}

/// The satisfaction ratings given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Satisfaction {
    /// Conversations rated.
    pub count: u64,
    /// How many gave 1, 2, 3, 4 and 5.
    pub by_score: [u64; 5],
    /// The share of ratings of 4 or 5, in percent, rounded down (`null` with none).
    pub satisfied_percent: Option<u64>,
}

/// Conversations started on a day (UTC), per channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub total: u64,
    pub channels: BTreeMap<ChannelKind, u64>,
}

/// One agent's part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentPart {
    pub agent: AgentId,
    /// Conversations the agent replied to first.
    pub first_replies: u64,
    /// The agent's first response times.
    pub first_response: Spread,
    /// Conversations the agent resolved (resolved now).
    pub resolved: u64,
}

/// A report over a span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub from: u64,
    pub to: u64,
    /// Conversations started in the span.
    pub conversations: u64,
    pub by_channel: BTreeMap<ChannelKind, u64>,
    pub by_day: Vec<Day>,
    pub first_response: Spread,
    pub resolution: Spread,
    /// Conversations that missed each target (`first_response`, `next_response`,
    /// `resolution`), as far as known.
    pub breaches: BTreeMap<&'static str, u64>,
    /// Conversations whose first reply and resolution are not known (see
    /// [`Conversation::known`]).
    pub unknown: u64,
    /// The satisfaction ratings of the conversations.
    pub csat: Satisfaction,
    pub agents: Vec<AgentPart>,
}

/// `ms` since the epoch as a time, if it is one.
fn time_of(ms: u64) -> Option<jiff::Timestamp> {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
}

fn day_of(ms: u64) -> String {
    time_of(ms)
        .map(|at| at.to_zoned(jiff::tz::TimeZone::UTC).date().to_string())
        .unwrap_or_default()
}

/// The report over `conversations`, started in `[from, to)`.
pub fn summarize(conversations: &[Conversation], from: u64, to: u64) -> Report {
    let mut by_day: Vec<Day> = Vec::new();
    let mut start = from - from % DAY_MS;
    while start < to {
        by_day.push(Day {
            day: day_of(start),
            total: 0,
            channels: BTreeMap::new(),
        });
        start += DAY_MS;
    }
    let mut by_channel = BTreeMap::new();
    let mut breaches = BTreeMap::new();
    let mut agents: BTreeMap<AgentId, (Vec<u64>, u64)> = BTreeMap::new();
    for conversation in conversations {
        *by_channel.entry(conversation.channel).or_insert(0) += 1;
        let day = ((conversation.opened_at - (from - from % DAY_MS)) / DAY_MS) as usize;
        if let Some(day) = by_day.get_mut(day) {
            day.total += 1;
            *day.channels.entry(conversation.channel).or_insert(0) += 1;
        }
        for breach in &conversation.breached {
            *breaches.entry(*breach).or_insert(0) += 1;
        }
        if let (Some(agent), Some(ms)) = (
            conversation.first_replied_by,
            conversation.first_response_ms,
        ) {
            agents.entry(agent).or_default().0.push(ms);
        }
        if let Some(agent) = conversation.resolved_by {
            agents.entry(agent).or_default().1 += 1;
        }
    }
    let mut csat = Satisfaction::default();
    for rating in conversations.iter().filter_map(|c| c.rating) {
        csat.count += 1;
        csat.by_score[usize::from(rating.clamp(1, 5)) - 1] += 1;
    }
    csat.satisfied_percent =
        (csat.count > 0).then(|| (csat.by_score[3] + csat.by_score[4]) * 100 / csat.count);
    Report {
        from,
        to,
        csat,
        conversations: conversations.len() as u64,
        by_channel,
        by_day,
        first_response: Spread::of(
            conversations
                .iter()
                .filter_map(|c| c.first_response_ms)
                .collect(),
        ),
        resolution: Spread::of(
            conversations
                .iter()
                .filter_map(|c| c.resolution_ms)
                .collect(),
        ),
        breaches,
        unknown: conversations.iter().filter(|c| !c.known).count() as u64,
        agents: agents
            .into_iter()
            .map(|(agent, (first, resolved))| AgentPart {
                agent,
                first_replies: first.len() as u64,
                first_response: Spread::of(first),
                resolved,
            })
            .collect(),
    }
}

/// The conversations as CSV (RFC 4180), a header line first; agents by name where `names`
/// has them.
pub fn csv(conversations: &[Conversation], names: &BTreeMap<AgentId, String>) -> String {
    fn field(text: &str) -> String {
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_owned()
        }
    }
    let agent = |id: Option<AgentId>| {
        id.map(|id| field(&names.get(&id).cloned().unwrap_or_else(|| id.to_string())))
            .unwrap_or_default()
    };
    let seconds = |ms: Option<u64>| ms.map(|ms| (ms / 1000).to_string()).unwrap_or_default();
    let time = |ms: u64| time_of(ms).map(|at| at.to_string()).unwrap_or_default();
    let mut out = String::from(
        "thread,opened_at,channel,status,assignee,first_response_seconds,first_replied_by,resolution_seconds,resolved_by,breached,rating\r\n",
    );
    for c in conversations {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\r\n",
            c.thread,
            time(c.opened_at),
            c.channel.as_str(),
            c.status,
            agent(c.assignee),
            if c.known {
                seconds(c.first_response_ms)
            } else {
                String::new()
            },
            agent(c.first_replied_by),
            seconds(c.resolution_ms),
            agent(c.resolved_by),
            c.breached.join(" "),
            c.rating.map(|r| r.to_string()).unwrap_or_default(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(Spread::of(vec![]), Spread::default());
        let spread = Spread::of((1..=10).rev().collect());
        assert_eq!(
            (spread.count, spread.p50, spread.p90),
            (10, Some(5), Some(9))
        );
        let one = Spread::of(vec![7]);
        assert_eq!((one.p50, one.p90), (Some(7), Some(7)));
    }

    #[test]
    fn days_are_utc_dates_and_csv_fields_are_quoted() {
        assert_eq!(day_of(1_765_065_600_000), "2025-12-07");
        let names = BTreeMap::from([(AgentId::from_bytes([1; 16]), "Lee, \"Sam\"".to_owned())]);
        let row = Conversation {
            thread: ThreadId::from_bytes([2; 32]),
            opened_at: 1_765_065_600_000,
            channel: ChannelKind::Email,
            status: "resolved",
            assignee: Some(AgentId::from_bytes([1; 16])),
            first_response_ms: Some(90_500),
            first_replied_by: Some(AgentId::from_bytes([1; 16])),
            resolution_ms: Some(3_600_000),
            resolved_by: None,
            breached: vec!["first_response"],
            rating: Some(5),
            known: true,
        };
        let text = csv(&[row], &names);
        let line = text.lines().nth(1).expect("a row");
        assert!(
            line.ends_with(",2025-12-07T00:00:00Z,email,resolved,\"Lee, \"\"Sam\"\"\",90,\"Lee, \"\"Sam\"\"\",3600,,first_response,5"),
            "{line}"
        );
    }
}
