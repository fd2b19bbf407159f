//! Automation rules (`[[automation]]` in config.toml): when a customer's message comes in on
//! this node — the first of a conversation, or any — and it matches a rule's conditions
//! (channel, words in the text, a label the thread has), the node labels, assigns (to an
//! agent or a team), changes
//! the status and replies as the rule says, with events it signs itself.
//!
//! Only the node a message came in on runs its rules (its live event is local), so two
//! nodes of an org never both act on one message. Rules run in the order written; each
//! sees the thread as the rules before it left it.

use serde::Deserialize;
use threadline_protocol::{
    event::Status,
    name::{Label, TeamName},
    AgentId, ChannelKind, EventId, ScopeId, ThreadId,
};
use tracing::{info, warn};

use crate::ingest::{Action, Ingest, IngestError};

/// When a rule is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A customer's first message, which starts a conversation.
    NewConversation,
    /// Every customer's message.
    Message,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its name, for the log (`automation[n]` when not given).
    pub name: String,
    pub on: Trigger,
    /// The message came on this channel.
    pub channel: Option<ChannelKind>,
    /// The text holds one of these (lowercased; case does not matter).
    pub text_contains: Vec<String>,
    /// The thread has this label.
    pub label: Option<Label>,
    /// Assign the thread to this agent.
    pub assign: Option<AgentId>,
    /// Give the thread to this team.
    pub team: Option<TeamName>,
    /// Add these labels.
    pub add_labels: Vec<Label>,
    /// Set this status (open, pending or resolved).
    pub status: Option<Status>,
    /// Reply this text to the customer (on the thread's route).
    pub reply: Option<String>,
}

/// A rule as written in config.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    name: Option<String>,
    on: Option<String>,
    channel: Option<String>,
    #[serde(default)]
    text_contains: Vec<String>,
    label: Option<String>,
    assign: Option<String>,
    team: Option<String>,
    #[serde(default)]
    add_labels: Vec<String>,
    status: Option<String>,
    reply: Option<String>,
}

/// The longest reply a rule may send, in bytes (a reply's text limit).
const MAX_REPLY_BYTES: usize = 4096;

impl RuleSection {
    /// The rule, or what is wrong with it (`n`: its place among the rules, from 0).
    pub fn rule(self, n: usize) -> Result<Rule, String> {
        let at = format!("automation[{n}]");
        let on = match self.on.as_deref() {
            Some("new_conversation") => Trigger::NewConversation,
            Some("message") => Trigger::Message,
            Some(other) => {
                return Err(format!(
                    "{at}.on is `{other}`: `new_conversation` or `message`"
                ))
            }
            None => {
                return Err(format!(
                    "{at}.on is not set: `new_conversation` or `message`"
                ))
            }
        };
        let label = |text: &str, key: &str| {
            Label::new(text).map_err(|err| format!("{at}.{key}: `{text}` is not a label: {err}"))
        };
        let channel = self
            .channel
            .as_deref()
            .map(|c| {
                c.parse::<ChannelKind>()
                    .map_err(|_| format!("{at}.channel: `{c}` is not a channel"))
            })
            .transpose()?;
        if self.text_contains.iter().any(|t| t.trim().is_empty()) {
            return Err(format!("{at}.text_contains has an empty text"));
        }
        let assign = self
            .assign
            .as_deref()
            .map(|a| {
                a.parse::<AgentId>().map_err(|_| {
                    format!("{at}.assign: `{a}` is not an agent id (`threadline agent list`)")
                })
            })
            .transpose()?;
        let status = match self.status.as_deref() {
            None => None,
            Some("open") => Some(Status::Open),
            Some("pending") => Some(Status::Pending),
            Some("resolved") => Some(Status::Resolved),
            Some(other) => {
                return Err(format!(
                    "{at}.status is `{other}`: `open`, `pending` or `resolved`"
                ))
            }
        };
        if let Some(reply) = &self.reply {
            if reply.trim().is_empty() || reply.len() > MAX_REPLY_BYTES {
                return Err(format!(
                    "{at}.reply must be 1 to {MAX_REPLY_BYTES} bytes of text"
                ));
            }
        }
        let rule = Rule {
            name: self.name.unwrap_or(at.clone()),
            on,
            channel,
            text_contains: self
                .text_contains
                .iter()
                .map(|t| t.trim().to_lowercase())
                .collect(),
            label: self
                .label
                .as_deref()
                .map(|l| label(l, "label"))
                .transpose()?,
            assign,
            team: self
                .team
                .as_deref()
                .map(|t| {
                    crate::limits::is_org_name(t, crate::limits::MAX_TEAM_NAME_BYTES)
                        .then(|| TeamName::new(t).ok())
                        .flatten()
                        .ok_or_else(|| {
                            format!(
                                "{at}.team: `{t}` is not a team name (1 to {} lower-case letters, digits, `-` and `_`)",
                                crate::limits::MAX_TEAM_NAME_BYTES
                            )
                        })
                })
                .transpose()?,
            add_labels: self
                .add_labels
                .iter()
                .map(|l| label(l, "add_labels"))
                .collect::<Result<_, _>>()?,
            status,
            reply: self.reply,
        };
        if rule.assign.is_none()
            && rule.team.is_none()
            && rule.add_labels.is_empty()
            && rule.status.is_none()
            && rule.reply.is_none()
        {
            return Err(format!(
                "{at} does nothing: give it assign, team, add_labels, status or reply"
            ));
        }
        Ok(rule)
    }
}

/// What a rule is matched against.
#[derive(Debug)]
pub struct Arrival<'a> {
    /// Whether the message starts its conversation.
    pub first: bool,
    pub channel: ChannelKind,
    /// Its text.
    pub text: &'a str,
    /// The thread's labels now.
    pub labels: &'a std::collections::BTreeSet<Label>,
}

impl Rule {
    /// Whether the rule applies to `arrival`.
    pub fn matches(&self, arrival: &Arrival<'_>) -> bool {
        (self.on == Trigger::Message || arrival.first)
            && self.channel.is_none_or(|c| c == arrival.channel)
            && (self.text_contains.is_empty() || {
                let text = arrival.text.to_lowercase();
                self.text_contains.iter().any(|t| text.contains(t.as_str()))
            })
            && self
                .label
                .as_ref()
                .is_none_or(|l| arrival.labels.contains(l))
    }
}

/// Runs `rules` on every customer's message that comes in on this node, then assigns a new
/// conversation no rule assigned under `[assignment]` (one after the other, so a rule's
/// assignment stands), until the node closes.
pub async fn run(ingest: Ingest, rules: Vec<Rule>, assignment: crate::assignment::Policy) {
    let mut live = ingest.subscribe();
    let mut turn = crate::assignment::Turn::default();
    while let Some((thread, event)) = ingest.next_local_inbound(&mut live).await {
        let message = match arrived(&ingest, thread, event) {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(err) => {
                warn!(%thread, cause = %err, "automation: the message could not be read");
                continue;
            }
        };
        for rule in &rules {
            if let Err(err) = apply(&ingest, rule, thread, &message).await {
                warn!(%thread, rule = %rule.name, cause = %err, "an automation rule could not act");
            }
        }
        if message.first {
            if let Err(err) =
                crate::assignment::assign_if_new(&ingest, thread, assignment, &mut turn).await
            {
                warn!(%thread, cause = %err, "could not assign a new conversation");
            }
        }
    }
}

/// A customer's message as the rules see it, read once.
struct Message {
    /// Whether it starts its conversation: written right on the thread's opening (decided
    /// from the message itself, so what the rules do, a reply say, does not change it).
    first: bool,
    channel: ChannelKind,
    text: String,
}

/// Message `event` of `thread`, if it is a customer's message.
fn arrived(
    ingest: &Ingest,
    thread: ThreadId,
    event: EventId,
) -> Result<Option<Message>, IngestError> {
    let Some(message) = ingest.store().event(&ScopeId::Thread(thread), &event)? else {
        return Ok(None);
    };
    let threadline_protocol::EventKind::Thread(threadline_protocol::event::ThreadKind::Message {
        direction: threadline_protocol::event::Direction::Inbound { channel },
    }) = message.header().kind
    else {
        return Ok(None);
    };
    let root = EventId::from_bytes(*thread.as_bytes());
    Ok(Some(Message {
        first: message.header().parents == [root],
        channel,
        text: message.content.map(|c| c.text).unwrap_or_default(),
    }))
}

/// Applies `rule` to `message` of `thread` if it matches (the thread as it is now).
async fn apply(
    ingest: &Ingest,
    rule: &Rule,
    thread: ThreadId,
    message: &Message,
) -> Result<(), IngestError> {
    let store = ingest.store();
    let Some(state) = store.thread_state(&thread)? else {
        return Ok(());
    };
    if !rule.matches(&Arrival {
        first: message.first,
        channel: message.channel,
        text: &message.text,
        labels: &state.labels,
    }) {
        return Ok(());
    }
    info!(%thread, rule = %rule.name, "automation rule matched");
    for label in &rule.add_labels {
        if !state.labels.contains(label) {
            ingest
                .act_as_node(thread, Action::LabelAdd(label.clone()))
                .await?;
        }
    }
    if let Some(agent) = rule.assign {
        let usable = store.agent(&agent)?.is_some_and(|a| !a.revoked);
        if usable {
            ingest
                .act_as_node(thread, Action::Assign(Some(agent)))
                .await?;
        } else {
            warn!(%thread, rule = %rule.name, %agent, "not assigned: no such agent here, or revoked");
        }
    }
    if let Some(team) = &rule.team {
        let known = ingest
            .directory()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .state()
            .teams
            .contains_key(team);
        if !known {
            warn!(%thread, rule = %rule.name, %team, "not given to the team: the org has no such team");
        } else if state.team.as_ref() != Some(team) {
            ingest
                .act_as_node(thread, Action::AssignTeam(Some(team.clone())))
                .await?;
        }
    }
    if let Some(status) = rule.status {
        ingest.act_as_node(thread, Action::Status(status)).await?;
    }
    if let Some(text) = &rule.reply {
        match crate::reply_route::refusal(ingest, thread, &state, true)? {
            Some(refused) => {
                info!(%thread, rule = %rule.name, cause = %refused, "no automatic reply: the route refuses replies now")
            }
            None => {
                ingest
                    .act_as_node(thread, Action::text_reply(text.as_str()))
                    .await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Result<Rule, String> {
        let section: RuleSection = toml::from_str(text).map_err(|e| e.to_string())?;
        section.rule(0)
    }

    #[test]
    fn rules_are_read_and_bad_ones_are_named() {
        let billing = rule(
            "on = \"message\"\nchannel = \"email\"\ntext_contains = [\"Refund\", \"invoice\"]\nadd_labels = [\"billing\"]\nstatus = \"pending\"\n",
        )
        .expect("a rule");
        assert_eq!(billing.name, "automation[0]");
        assert_eq!(billing.text_contains, vec!["refund", "invoice"]);
        assert_eq!(billing.status, Some(Status::Pending));
        for (text, named) in [
            ("add_labels = [\"x\"]\n", "automation[0].on is not set"),
            (
                "on = \"always\"\nadd_labels = [\"x\"]\n",
                "automation[0].on is `always`",
            ),
            ("on = \"message\"\n", "does nothing"),
            (
                "on = \"message\"\nchannel = \"fax\"\nstatus = \"open\"\n",
                "automation[0].channel",
            ),
            (
                "on = \"message\"\nstatus = \"snoozed\"\n",
                "automation[0].status",
            ),
            (
                "on = \"message\"\nassign = \"bob\"\n",
                "automation[0].assign",
            ),
            ("on = \"message\"\nreply = \" \"\n", "automation[0].reply"),
            (
                "on = \"message\"\ntext_contains = [\"\"]\nstatus = \"open\"\n",
                "empty text",
            ),
            (
                "on = \"message\"\nstatus = \"open\"\nwhen = 1\n",
                "unknown field",
            ),
        ] {
            let err = rule(text).expect_err(text);
            assert!(err.contains(named), "{text}: {err}");
        }
    }

    #[test]
    fn a_rule_matches_on_its_trigger_channel_words_and_label() {
        let billing = rule(
            "on = \"message\"\nchannel = \"email\"\ntext_contains = [\"refund\"]\nadd_labels = [\"billing\"]\n",
        )
        .expect("a rule");
        let none = std::collections::BTreeSet::new();
        let arrival = |first, channel, text| Arrival {
            first,
            channel,
            text,
            labels: &none,
        };
        assert!(billing.matches(&arrival(false, ChannelKind::Email, "A REFUND please")));
        assert!(!billing.matches(&arrival(false, ChannelKind::Webchat, "a refund please")));
        assert!(!billing.matches(&arrival(false, ChannelKind::Email, "hello")));
        let welcome = rule("on = \"new_conversation\"\nreply = \"Hi!\"\n").expect("a rule");
        assert!(welcome.matches(&arrival(true, ChannelKind::Sms, "x")));
        assert!(!welcome.matches(&arrival(false, ChannelKind::Sms, "x")));
        let vip = rule("on = \"message\"\nlabel = \"vip\"\nadd_labels = [\"priority\"]\n")
            .expect("a rule");
        let labelled = std::collections::BTreeSet::from([Label::new("vip").expect("label")]);
        assert!(!vip.matches(&arrival(false, ChannelKind::Sms, "x")));
        assert!(vip.matches(&Arrival {
            first: false,
            channel: ChannelKind::Sms,
            text: "x",
            labels: &labelled,
        }));
    }
}
