//! What the API answers with: JSON views of threads, events and contacts. These are the API's
//! types, apart from the protocol's, so that the protocol can change without breaking clients.

use serde::Serialize;
use threadline_protocol::{
    channel::Handle,
    event::{Direction, DirectoryKind, EventKind, Status, ThreadKind},
    thread::ThreadState,
    AgentId, ChannelKind, ContactId, Event, EventId, OrgId, PublicKey, ThreadId, Timestamp,
};

use super::ApiError;
use crate::ingest::Ingest;

/// A thread's derived state.
#[derive(Debug, Serialize)]
pub struct ThreadView {
    pub id: ThreadId,
    pub contact: ContactId,
    /// The name the contact goes by, if it has one.
    pub contact_name: Option<String>,
    pub status: &'static str,
    pub snoozed_until: Option<u64>,
    pub assignee: Option<AgentId>,
    /// Whether the assignee is an agent this node knows as revoked (its assignment stays,
    /// for someone to take over). `false` when unassigned, and for an agent of another node.
    pub assignee_revoked: bool,
    /// The team it is assigned to.
    pub team: Option<String>,
    pub opened_on: ChannelKind,
    pub opened_at: u64,
    pub route: Option<RouteView>,
    /// When replies may go out on the route's channel (`null`: no window, or no route).
    pub reply_window: Option<WindowView>,
    /// The customer withdrew consent on the route's channel (texted STOP): replies there are
    /// refused until they opt back in.
    pub opted_out: bool,
    pub labels: Vec<String>,
    pub members: Vec<OrgId>,
    pub n_messages: u64,
    pub last_activity: u64,
}

/// Where replies go.
#[derive(Debug, Serialize)]
pub struct RouteView {
    pub channel: ChannelKind,
    /// The customer's handle on it; `null` once erased.
    pub handle: Option<Handle>,
}

/// A channel's messaging window on a thread (Messenger, Instagram, WhatsApp).
#[derive(Debug, Serialize)]
pub struct WindowView {
    pub channel: ChannelKind,
    /// Whether a reply may go out now.
    pub open: bool,
    /// Until when (open).
    pub until: Option<u64>,
    /// Whether replies go out with the `HUMAN_AGENT` tag (past the first 24 hours).
    pub human_agent: bool,
    /// Why not, and what works instead (closed).
    pub reason: Option<String>,
}

impl WindowView {
    fn of(channel: ChannelKind, window: threadline_bridges::window::ReplyWindow) -> Option<Self> {
        use threadline_bridges::window::ReplyWindow;
        match window {
            ReplyWindow::Always => None,
            ReplyWindow::Open { until, human_agent } => Some(WindowView {
                channel,
                open: true,
                until: Some(until.as_millis()),
                human_agent,
                reason: None,
            }),
            ReplyWindow::Closed { .. } => Some(WindowView {
                channel,
                open: false,
                until: None,
                human_agent: false,
                reason: window.refusal(channel),
            }),
        }
    }
}

/// One event of a thread.
#[derive(Debug, Serialize)]
pub struct EventView {
    pub id: EventId,
    pub thread: Option<ThreadId>,
    pub kind: &'static str,
    pub author: PublicKey,
    pub agent: Option<AgentId>,
    pub time: u64,
    pub depth: u64,
    pub parents: Vec<EventId>,
    /// Whether the event had content that is now erased.
    pub erased: bool,
    pub text: Option<String>,
    /// A mail's text without the quoted history below it, for display; absent when nothing is
    /// quoted (`text` is always whole).
    pub display_text: Option<String>,
    pub handle: Option<Handle>,
    pub external_id: Option<String>,
    /// Files, by reference (bytes: `GET /threads/{thread}/events/{id}/attachments/{n}`).
    pub attachments: Vec<threadline_protocol::event::Attachment>,
    /// The message's subject, on channels that have one (email).
    pub subject: Option<String>,
    /// The message exactly as the app delivered it (a mail's raw bytes), by reference (bytes:
    /// `GET /threads/{thread}/events/{id}/original`).
    pub original: Option<threadline_protocol::event::Attachment>,
    /// For a reply sent as an approved message template: `{"name", "language", "parameters"}`.
    pub template: Option<threadline_protocol::event::Template>,
    /// The message of the thread this one answers (the customer quoted it, or the agent
    /// replied to it).
    pub reply_to: Option<EventId>,
    /// Kind-specific details (the new status, the assignee, the label, the receipt, ...).
    pub detail: serde_json::Value,
}

pub use crate::thread_index::status_name;

impl ThreadView {
    pub fn new(id: ThreadId, state: &ThreadState, ingest: &Ingest) -> Result<Self, ApiError> {
        let route = match state.route {
            Some(route) => Some(RouteView {
                channel: route.channel,
                handle: ingest.store().route_handle(id, state)?,
            }),
            None => None,
        };
        let opted_out = crate::consent::withdrawn_on_route(ingest, state).is_some();
        let contact_name = ingest
            .directory()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .state()
            .contact(state.contact)
            .and_then(|(_, record)| crate::contact_name::of(record));
        Ok(ThreadView {
            id,
            contact: state.contact,
            contact_name,
            status: status_name(&state.status),
            snoozed_until: match state.status {
                Status::Snoozed { until } => Some(until.as_millis()),
                _ => None,
            },
            assignee: state.assignee,
            assignee_revoked: match state.assignee {
                Some(agent) => revoked(ingest, agent)?,
                None => false,
            },
            team: state.team.as_ref().map(|team| team.to_string()),
            opened_on: state.opened_on,
            opened_at: state.opened_at.as_millis(),
            route,
            reply_window: ingest
                .reply_window(id, state)?
                .and_then(|(channel, window)| WindowView::of(channel, window)),
            opted_out,
            labels: state.labels.iter().map(|l| l.to_string()).collect(),
            members: state.members.iter().copied().collect(),
            n_messages: state.n_messages,
            last_activity: state.last_activity.as_millis(),
        })
    }
}

/// Whether `agent` is an agent of this node that was revoked.
fn revoked(ingest: &Ingest, agent: AgentId) -> Result<bool, ApiError> {
    Ok(ingest
        .store()
        .agent(&agent)?
        .is_some_and(|record| record.revoked))
}

impl EventView {
    pub fn new(id: EventId, thread: Option<ThreadId>, event: &Event) -> Self {
        let header = event.header();
        let content = event.content.as_ref();
        let detail = match &header.kind {
            EventKind::Thread(kind) => thread_detail(kind),
            EventKind::Directory(kind) => directory_detail(kind),
        };
        EventView {
            id,
            thread,
            kind: header.kind.name(),
            author: header.author,
            agent: header.agent,
            time: header.author_time.as_millis(),
            depth: header.depth,
            parents: header.parents.clone(),
            erased: header.content_hash.is_some() && content.is_none(),
            text: content.map(|c| c.text.clone()).filter(|t| !t.is_empty()),
            display_text: match header.kind {
                EventKind::Thread(ThreadKind::Message {
                    direction:
                        Direction::Inbound {
                            channel: ChannelKind::Email,
                        },
                }) => content
                    .map(|c| threadline_bridges::email::trim_quoted(&c.text))
                    .filter(|trimmed| content.is_some_and(|c| trimmed.len() < c.text.trim().len())),
                _ => None,
            },
            handle: content.and_then(|c| c.handle.clone()),
            external_id: content.and_then(|c| c.external_id.as_ref().map(|e| e.to_string())),
            attachments: content.map(|c| c.attachments.clone()).unwrap_or_default(),
            template: content.and_then(|c| c.template.as_deref().cloned()),
            reply_to: content.and_then(|c| c.reply_to),
            subject: content.and_then(|c| c.subject.as_ref().map(|s| s.to_string())),
            original: content.and_then(|c| c.original.as_deref().cloned()),
            detail,
        }
    }

    /// The author time, for sorting timelines.
    pub fn timestamp(&self) -> Timestamp {
        Timestamp::from_millis(self.time)
    }
}

fn thread_detail(kind: &ThreadKind) -> serde_json::Value {
    use serde_json::json;
    match kind {
        ThreadKind::Opened {
            org,
            contact,
            channel,
        } => {
            json!({"org": org, "contact": contact, "channel": channel})
        }
        ThreadKind::Message { direction } => match direction {
            Direction::Inbound { channel } => json!({"direction": "inbound", "channel": channel}),
            Direction::Outbound => json!({"direction": "outbound"}),
        },
        ThreadKind::Assign { assignee } => json!({"assignee": assignee}),
        ThreadKind::Status { status } => json!({
            "status": status_name(status),
            "until": match status { Status::Snoozed { until } => Some(until.as_millis()), _ => None },
        }),
        ThreadKind::HandOff { channel } => json!({"channel": channel}),
        ThreadKind::Receipt {
            target,
            channel,
            receipt,
        } => json!({
            "target": target,
            "channel": channel,
            "receipt": receipt.name(),
        }),
        ThreadKind::Read { up_to } => json!({"up_to": up_to}),
        ThreadKind::LabelAdd { label } | ThreadKind::LabelRemove { label } => {
            json!({"label": label.as_str()})
        }
        ThreadKind::MemberAdd { org } | ThreadKind::MemberRemove { org } => json!({"org": org}),
        ThreadKind::Erase { targets } => json!({"targets": targets}),
        ThreadKind::AutoReply { channel } => json!({"channel": channel}),
        ThreadKind::AssignTeam { team } => json!({"team": team.as_ref().map(|t| t.as_str())}),
        _ => json!({}),
    }
}

fn directory_detail(kind: &DirectoryKind) -> serde_json::Value {
    use serde_json::json;
    match kind {
        DirectoryKind::CreateContact { contact }
        | DirectoryKind::LinkHandle { contact }
        | DirectoryKind::UnlinkHandle { contact }
        | DirectoryKind::EraseContact { contact } => json!({"contact": contact}),
        DirectoryKind::Merge { from, into } => json!({"from": from, "into": into}),
        DirectoryKind::SetAttribute { contact, key } => {
            json!({"contact": contact, "key": key.as_str()})
        }
        DirectoryKind::Consent {
            contact,
            channel,
            granted,
        } => {
            json!({"contact": contact, "channel": channel, "granted": granted})
        }
        DirectoryKind::SetCannedReply { shortcode } => json!({"shortcode": shortcode.as_str()}),
        DirectoryKind::SetTeam { team, members } => {
            json!({"team": team.as_str(), "members": members})
        }
        _ => json!({}),
    }
}

/// Parses a value from a request body or query (a handle, a channel, an id), or answers 400
/// with what the parser said.
/// The thread filters of a query (`status`, `assignee` with `none` for unassigned, `channel`),
/// checked.
#[derive(Debug)]
pub struct ThreadFilters<'a> {
    pub status: Option<&'a str>,
    pub assignee: Option<Option<AgentId>>,
    pub channel: Option<ChannelKind>,
}

impl<'a> ThreadFilters<'a> {
    /// `400` for an unknown status or channel, or an assignee that is not an agent id.
    pub fn parse(
        status: Option<&'a str>,
        assignee: Option<&str>,
        channel: Option<&str>,
    ) -> Result<Self, ApiError> {
        if let Some(status) = status {
            if !["open", "pending", "snoozed", "resolved"].contains(&status) {
                return Err(ApiError::bad_request(format!("unknown status `{status}`")));
            }
        }
        let assignee = match assignee {
            None => None,
            Some("none") => Some(None),
            Some(text) => Some(Some(parse_field(text, "assignee")?)),
        };
        let channel = channel.map(|c| parse_field(c, "channel")).transpose()?;
        Ok(ThreadFilters {
            status,
            assignee,
            channel,
        })
    }
}

pub fn parse_field<T>(text: &str, what: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|err| ApiError::bad_request(format!("bad {what} `{text}`: {err}")))
}

/// A name of the org's vocabulary as agents type it (a canned reply's shortcode, a team, a
/// webhook): 1 to `max` lower-case letters, digits, `-` and `_`, made into `T` (`400`
/// otherwise, naming `what`).
pub fn org_name<T, E: std::fmt::Display>(
    text: &str,
    what: &str,
    max: usize,
    make: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, ApiError> {
    if !crate::limits::is_org_name(text, max) {
        return Err(ApiError::bad_request(format!(
            "bad {what} `{text}`: 1 to {max} lower-case letters, digits, `-` and `_`"
        )));
    }
    make(text).map_err(|err| ApiError::bad_request(format!("bad {what}: {err}")))
}

/// Parses an id from a path segment, or answers 404.
pub fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found(format!("no {what} `{text}`")))
}
