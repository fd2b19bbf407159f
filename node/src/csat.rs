//! Satisfaction surveys (`[csat]`): when an agent resolves a conversation on this node, the
//! node asks the customer, on their channel, to rate it from 1 to 5. A reply that is just
//! such a number is the rating: the node labels the thread `csat-<n>` and resolves it again
//! (the customer's message reopened it). Labels are signed thread events, so the rating is on
//! the thread on every node, and reports count it (`reports.rs`).
//!
//! The thread carries `csat-asked` while the node waits for a rating, and takes the
//! customer's next message though it is resolved, for up to [`RATING_WAIT`] (otherwise a
//! message after a resolution starts a new conversation). A message that is not a rating
//! takes the label off: the conversation goes on, and its next resolution asks again. A
//! thread rated once is not asked again. Only the node where the agent resolved asks, and only the node the
//! rating came in on records it.

use threadline_protocol::{
    event::{Direction, Status, ThreadKind},
    name::Label,
    EventId, EventKind, ScopeId, ThreadId,
};
use tracing::{info, warn};

use crate::ingest::{Action, Ingest, IngestError};

/// The label of a thread waiting for its rating.
pub const ASKED: &str = "csat-asked";
/// How long after the question a resolved thread takes the customer's next message as a
/// possible rating; after that a message starts a new conversation.
pub const RATING_WAIT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// The prefix of a rating's label (`csat-1` … `csat-5`).
const RATED: &str = "csat-";

/// `[csat]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    /// What the customer is asked.
    pub question: String,
    /// What the customer is told after rating (`None`: nothing).
    pub thanks: Option<String>,
}

/// The default question.
pub const QUESTION: &str = "How did we do? Reply with a number from 1 (poor) to 5 (great).";

/// Whether a thread in `state` waits for its rating: the customer's next message goes to it
/// though it is resolved (the ingest writer asks this), so a rating lands where it was asked.
pub fn awaits_rating(state: &threadline_protocol::ThreadState) -> bool {
    state.labels.iter().any(|label| label.as_str() == ASKED)
}

/// The rating a customer's message gives, if it is just a number from 1 to 5 (`4`, ` 5! `).
pub fn rating_of(text: &str) -> Option<u8> {
    let text = text.trim().trim_end_matches(['.', '!']).trim();
    match text.as_bytes() {
        [digit @ b'1'..=b'5'] => Some(digit - b'0'),
        _ => None,
    }
}

/// The rating a thread's labels hold (`csat-n`).
pub fn rating_in<'a>(labels: impl IntoIterator<Item = &'a Label>) -> Option<u8> {
    labels.into_iter().find_map(|label| {
        let n = label.as_str().strip_prefix(RATED)?;
        rating_of(n)
    })
}

/// The labels the survey sets.
struct Labels {
    asked: Label,
    /// `csat-1` … `csat-5`.
    rated: Vec<Label>,
}

impl Labels {
    fn new() -> Result<Self, threadline_protocol::name::NameError> {
        Ok(Labels {
            asked: Label::new(ASKED)?,
            rated: (1..=5)
                .map(|n| Label::new(format!("{RATED}{n}")))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Asks and records ratings under `survey` until the node closes.
pub async fn run(ingest: Ingest, survey: Survey) {
    let labels = match Labels::new() {
        Ok(labels) => labels,
        Err(err) => {
            warn!(cause = %err, "satisfaction surveys are off: their labels are refused");
            return;
        }
    };
    let mut live = ingest.subscribe();
    while let Some((thread, event, kind)) = ingest
        .next_local_of(&mut live, &["thread.status", "thread.message.inbound"])
        .await
    {
        let done = if kind == "thread.status" {
            ask(&ingest, &survey, &labels, thread, event).await
        } else {
            record(&ingest, &survey, &labels, thread, event).await
        };
        if let Err(err) = done {
            warn!(%thread, cause = %err, "satisfaction survey");
        }
    }
}

/// Asks for a rating if `event` is an agent resolving `thread`, not asked or rated before.
async fn ask(
    ingest: &Ingest,
    survey: &Survey,
    labels: &Labels,
    thread: ThreadId,
    event: EventId,
) -> Result<(), IngestError> {
    let store = ingest.store();
    let Some(status) = store.event(&ScopeId::Thread(thread), &event)? else {
        return Ok(());
    };
    let by_agent = status.header().agent.is_some();
    let resolved = matches!(
        status.header().kind,
        EventKind::Thread(ThreadKind::Status {
            status: Status::Resolved
        })
    );
    let Some(state) = store.thread_state(&thread)? else {
        return Ok(());
    };
    let asked_before = state.labels.contains(&labels.asked) || rating_in(&state.labels).is_some();
    if !by_agent || !resolved || asked_before || state.status != Status::Resolved {
        return Ok(());
    }
    if let Some(refused) = crate::reply_route::refusal(ingest, thread, &state, true)? {
        info!(%thread, cause = %refused, "no satisfaction survey: the route refuses replies now");
        return Ok(());
    }
    ingest
        .act_all_as_node(
            thread,
            vec![
                Action::LabelAdd(labels.asked.clone()),
                Action::text_reply(survey.question.as_str()),
            ],
        )
        .await?;
    info!(%thread, "asked for a satisfaction rating");
    Ok(())
}

/// Records the rating if `event` is a customer's message giving one to a thread that asked.
async fn record(
    ingest: &Ingest,
    survey: &Survey,
    labels: &Labels,
    thread: ThreadId,
    event: EventId,
) -> Result<(), IngestError> {
    let store = ingest.store();
    let Some(state) = store.thread_state(&thread)? else {
        return Ok(());
    };
    if !awaits_rating(&state) {
        return Ok(());
    }
    let Some(message) = store.event(&ScopeId::Thread(thread), &event)? else {
        return Ok(());
    };
    let inbound = matches!(
        message.header().kind,
        EventKind::Thread(ThreadKind::Message {
            direction: Direction::Inbound { .. }
        })
    );
    if !inbound {
        return Ok(());
    }
    let Some(rating) = message.content.as_ref().and_then(|c| rating_of(&c.text)) else {
        // The customer wrote something else: the conversation goes on, and the question is
        // dropped (a lone number later is a message like any other).
        ingest
            .act_as_node(thread, Action::LabelRemove(labels.asked.clone()))
            .await?;
        info!(%thread, "the customer answered the survey with words: no rating");
        return Ok(());
    };
    let Some(rated) = labels.rated.get(usize::from(rating) - 1) else {
        return Ok(());
    };
    let mut actions = vec![
        Action::LabelAdd(rated.clone()),
        Action::LabelRemove(labels.asked.clone()),
        Action::Status(Status::Resolved),
    ];
    if let Some(thanks) = &survey.thanks {
        if crate::reply_route::refusal(ingest, thread, &state, true)?.is_none() {
            actions.push(Action::text_reply(thanks.as_str()));
        }
    }
    ingest.act_all_as_node(thread, actions).await?;
    info!(%thread, rating, "recorded a satisfaction rating");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rating_is_a_lone_number_from_one_to_five() {
        for (text, rating) in [
            ("5", Some(5)),
            (" 1 ", Some(1)),
            ("4!", Some(4)),
            ("3.", Some(3)),
            ("0", None),
            ("6", None),
            ("45", None),
            ("5 stars", None),
            ("I give it a 5", None),
            ("", None),
        ] {
            assert_eq!(rating_of(text), rating, "{text:?}");
        }
        let labels = [
            Label::new("billing").expect("label"),
            Label::new("csat-4").expect("label"),
        ];
        assert_eq!(rating_in(&labels), Some(4));
        assert_eq!(rating_in(&labels[..1]), None);
    }
}
