//! `/api/v1/threads`: list with filters and cursor pagination; one thread with its events;
//! the agent's actions on a thread.

use axum::{
    extract::{rejection::JsonRejection, rejection::QueryRejection, Path, Query, State},
    http::StatusCode,
    Json,
};
use serde::{Deserialize, Serialize};
use threadline_protocol::{
    channel::Handle,
    event::Template,
    event::{Attachment, Status},
    id::BlobHash,
    limits::{MAX_ATTACHMENTS, MAX_TEMPLATE_PARAMETERS, MAX_TEXT_BYTES},
    name::{AttachmentMeta, Label, TemplateLanguage, TemplateName, TemplateParameter},
    AgentId, ChannelKind, ContactId, EventId, ScopeId, ThreadId, Timestamp,
};

use super::auth::AgentCaller;
use super::views::{parse_field, parse_id, EventView, ThreadFilters, ThreadView};
use super::ApiError;
use crate::ingest::{Action, Ingest};
use crate::limits::MAX_LABELS_PER_REQUEST;

/// Default and largest page.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 200;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    /// An agent id, or `none` for unassigned.
    assignee: Option<String>,
    /// A team's name.
    team: Option<String>,
    channel: Option<String>,
    label: Option<String>,
    contact: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// A thread in a list, with what the calling agent has not read.
#[derive(Debug, Serialize)]
pub struct ListedThread {
    #[serde(flatten)]
    thread: ThreadView,
    /// The customer's messages after the calling agent's read mark (all of them if none).
    unread: u64,
    /// The last message, shortened (`null` for a thread with none, or not written since the
    /// node kept which is last).
    last_message: Option<MessagePreview>,
    /// When the customer's first message since the last reply was written (ms): an answer
    /// is owed since then; `null` when nothing waits.
    waiting_since: Option<u64>,
    /// By when that answer is due under `[sla]`: `waiting_since` plus the first response's
    /// target before the first reply, the next response's after (ms); `null` without a
    /// target or when nothing waits.
    reply_due: Option<u64>,
    /// The thread's service level timers (`null` without targets).
    sla: Option<crate::sla::SlaTimers>,
}

/// A message as the thread list shows it.
#[derive(Debug, Serialize)]
pub struct MessagePreview {
    /// `inbound` (the customer's) or `outbound` (an agent's).
    direction: &'static str,
    /// The agent who wrote it (an outbound message).
    agent: Option<AgentId>,
    /// Its text on one line, at most [`PREVIEW_CHARS`] characters (`…` when cut), a quoted
    /// mail trimmed off, or the names of its files or its template; `null` once erased.
    text: Option<String>,
    /// When it was written, ms since the epoch.
    time: u64,
}

/// The longest preview text, in characters.
const PREVIEW_CHARS: usize = 120;

#[derive(Debug, Serialize)]
pub struct ThreadPage {
    threads: Vec<ListedThread>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountsQuery {
    channel: Option<String>,
    label: Option<String>,
}

/// What the inbox's filters hold for an agent.
#[derive(Debug, Serialize)]
pub struct Counts {
    /// The conversations of each filter.
    #[serde(flatten)]
    conversations: crate::thread_index::Tally,
    /// Those with customers' messages the agent has not read.
    unread: crate::thread_index::Tally,
    /// Each team's open conversations, and how many of them the agent has not read.
    teams: std::collections::BTreeMap<String, crate::thread_index::TeamTally>,
}

/// `GET /api/v1/threads/counts?channel=&label=`: how many conversations each of the inbox's
/// filters holds for the calling agent, and how many of them have messages the agent has not
/// read (from the thread list's index).
pub async fn counts(
    caller: AgentCaller,
    State(ingest): State<Ingest>,
    query: Result<Query<CountsQuery>, QueryRejection>,
) -> Result<Json<Counts>, ApiError> {
    let Query(query) = query?;
    let channel: Option<ChannelKind> = query
        .channel
        .as_deref()
        .map(|c| parse_field(c, "channel"))
        .transpose()?;
    let index = ingest
        .thread_index()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !index.is_ready() {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the thread list's index is still being built; try again in a moment",
        ));
    }
    let label = query.label.as_deref();
    Ok(Json(Counts {
        conversations: index.tally(caller.0, channel, label),
        unread: index.unread_tally(caller.0, channel, label),
        teams: index.team_tally(caller.0),
    }))
}

/// `GET /api/v1/threads`: most recent activity first.
pub async fn list(
    caller: AgentCaller,
    State(ingest): State<Ingest>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ThreadPage>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let ThreadFilters {
        status,
        assignee,
        channel,
    } = ThreadFilters::parse(
        query.status.as_deref(),
        query.assignee.as_deref(),
        query.channel.as_deref(),
    )?;
    let contact: Option<ContactId> = query
        .contact
        .as_deref()
        .map(|c| parse_field(c, "contact"))
        .transpose()?;
    let cursor: Option<(u64, ThreadId)> = query.cursor.as_deref().map(parse_cursor).transpose()?;

    // A merged-away contact's threads belong to the contact it was merged into: the
    // customer's threads are those of every contact merged with it.
    let contacts: Option<Vec<ContactId>> = contact.map(|c| {
        ingest
            .directory()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .state()
            .same_customer(c)
    });
    let filter = crate::thread_index::Filter {
        status,
        assignee,
        team: query.team.as_deref(),
        channel,
        label: query.label.as_deref(),
        contacts: contacts.as_deref(),
    };
    let (page, next) = {
        let index = ingest
            .thread_index()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if index.is_ready() {
            let page = index.page(&filter, cursor, limit);
            (Some(page.threads), page.next)
        } else {
            (None, None)
        }
    };
    let (page, next) = match page {
        Some(ids) => {
            let mut page = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(state) = ingest.store().thread_state(&id)? {
                    page.push((id, state));
                }
            }
            (page, next)
        }
        // The index is still being built (a large store, just started): read every record.
        None => scan(&ingest, &filter, cursor, limit)?,
    };
    let next_cursor = next.map(|(time, id)| format!("{time}.{id}"));
    let (policy, now) = (ingest.sla(), crate::clock::now().as_millis());
    let threads = page
        .iter()
        .map(|(id, state)| {
            let facts = ingest.store().thread_facts(id)?;
            let waiting_since = facts
                .as_ref()
                .and_then(|facts| facts.waiting_since())
                .map(|at| at.as_millis());
            let sla = facts
                .as_ref()
                .filter(|_| policy.is_set())
                .map(|facts| policy.timers(state, facts, now));
            Ok(ListedThread {
                waiting_since,
                // The answer owed now, the first or a next one: due its target after the
                // customer's message.
                reply_due: waiting_since
                    .zip(facts.as_ref())
                    .and_then(|(since, facts)| {
                        let within = match facts.first_reply() {
                            None => policy.first_response,
                            Some(_) => policy.next_response,
                        }?;
                        Some(since.saturating_add(within))
                    }),
                sla,
                thread: ThreadView::new(*id, state, &ingest)?,
                unread: match &facts {
                    Some(facts) => facts.unread(caller.0),
                    None => unread_off_the_log(&ingest, *id, state, caller.0)?,
                },
                last_message: match facts.and_then(|facts| facts.last_message()) {
                    Some(last) => preview(&ingest, *id, &last)?,
                    None => None,
                },
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Json(ThreadPage {
        threads,
        next_cursor,
    }))
}

/// A page of the list read off every thread record, in the index's order (newest activity
/// first, ties: greater id first), for while the index is being built.
#[allow(clippy::type_complexity)]
fn scan(
    ingest: &Ingest,
    filter: &crate::thread_index::Filter<'_>,
    cursor: Option<(u64, ThreadId)>,
    limit: usize,
) -> Result<
    (
        Vec<(ThreadId, threadline_protocol::ThreadState)>,
        Option<(u64, ThreadId)>,
    ),
    ApiError,
> {
    let mut matching = Vec::new();
    for entry in ingest.store().thread_states() {
        let (id, state) = entry?;
        let key = (state.last_activity.as_millis(), id);
        if cursor.is_some_and(|cursor| key >= cursor) || !filter.keeps_state(&state) {
            continue;
        }
        matching.push((key, state));
    }
    matching.sort_by_key(|(key, _)| std::cmp::Reverse(*key));
    let next = (matching.len() > limit)
        .then(|| matching.get(limit - 1).map(|(key, _)| *key))
        .flatten();
    let page = matching
        .into_iter()
        .take(limit)
        .map(|((_, id), state)| (id, state))
        .collect();
    Ok((page, next))
}

/// The message `id` of `thread` as the list shows it (one event read from the event log).
fn preview(
    ingest: &Ingest,
    thread: ThreadId,
    id: &EventId,
) -> Result<Option<MessagePreview>, ApiError> {
    let Some(event) = ingest.store().event(&ScopeId::Thread(thread), id)? else {
        return Ok(None);
    };
    let view = EventView::new(*id, Some(thread), &event);
    let direction = match event.header().kind {
        threadline_protocol::EventKind::Thread(
            threadline_protocol::event::ThreadKind::Message {
                direction: threadline_protocol::event::Direction::Inbound { .. },
            },
        ) => "inbound",
        _ => "outbound",
    };
    let text = event.content.as_ref().map(|content| {
        let written = view
            .display_text
            .as_deref()
            .unwrap_or(&content.text)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let text = if !written.is_empty() {
            written
        } else if let Some(template) = &content.template {
            format!("[template {}]", template.name)
        } else {
            let files: Vec<&str> = content
                .attachments
                .iter()
                .map(|a| a.name.as_str())
                .collect();
            format!("[{}]", files.join(", "))
        };
        match text.char_indices().nth(PREVIEW_CHARS) {
            Some((cut, _)) => format!("{}…", text[..cut].trim_end()),
            None => text,
        }
    });
    Ok(Some(MessagePreview {
        direction,
        agent: event.header().agent,
        text,
        time: event.header().author_time.as_millis(),
    }))
}

/// The customer's messages after `agent`'s read mark in the thread's order, from its log: for
/// a thread not written since the node kept its facts (which count them in one small read).
fn unread_off_the_log(
    ingest: &Ingest,
    thread: ThreadId,
    state: &threadline_protocol::ThreadState,
    agent: AgentId,
) -> Result<u64, ApiError> {
    let mark = state
        .read_marks
        .get(&threadline_protocol::thread::Reader::Agent(agent));
    let mut past_mark = mark.is_none();
    let mut unread = 0;
    for event in ingest.store().log_events(&ScopeId::Thread(thread))? {
        let inbound = matches!(
            event.signed.header.kind,
            threadline_protocol::EventKind::Thread(
                threadline_protocol::event::ThreadKind::Message {
                    direction: threadline_protocol::event::Direction::Inbound { .. },
                }
            )
        );
        if past_mark && inbound {
            unread += 1;
        }
        if !past_mark && Some(&event.id().map_err(|e| ApiError::internal(e.to_string()))?) == mark {
            past_mark = true;
        }
    }
    Ok(unread)
}

fn parse_cursor(text: &str) -> Result<(u64, ThreadId), ApiError> {
    let bad = || ApiError::bad_request(format!("bad cursor `{text}`"));
    let (time, id) = text.split_once('.').ok_or_else(bad)?;
    Ok((
        time.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}

#[derive(Debug, Serialize)]
pub struct ThreadDetail {
    thread: ThreadView,
    /// The hash of the derived state: equal on every replica that holds the same events.
    state_hash: String,
    events: Vec<EventView>,
}

/// `GET /api/v1/threads/{id}`: the state and every event in order.
pub async fn show(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
) -> Result<Json<ThreadDetail>, ApiError> {
    let id: ThreadId = parse_id(&id, "thread")?;
    let state = ingest
        .store()
        .thread_state(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no thread `{id}`")))?;
    let events = thread_events(&ingest, id)?;
    // The hash covers the whole state, receipts and erasures too: those are folded from the
    // log (the stored state leaves them out).
    let full = ingest
        .store()
        .full_thread_state(&id)?
        .ok_or_else(|| ApiError::not_found(format!("no thread `{id}`")))?;
    let state_hash = full
        .hash()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .to_string();
    Ok(Json(ThreadDetail {
        thread: ThreadView::new(id, &state, &ingest)?,
        state_hash,
        events,
    }))
}

/// A thread's events in linear order.
pub fn thread_events(ingest: &Ingest, id: ThreadId) -> Result<Vec<EventView>, ApiError> {
    ingest
        .store()
        .log_events(&ScopeId::Thread(id))?
        .into_iter()
        .map(|event| {
            let event_id = event.id().map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(EventView::new(event_id, Some(id), &event))
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextBody {
    text: String,
}

#[derive(Debug, Serialize)]
pub struct Done {
    event: EventId,
}

async fn act(
    ingest: &Ingest,
    caller: AgentCaller,
    id: &str,
    action: Action,
) -> Result<Json<Done>, ApiError> {
    let thread: ThreadId = parse_id(id, "thread")?;
    let event = ingest.act(caller.0, thread, action).await?;
    Ok(Json(Done { event }))
}

fn text(body: Result<Json<TextBody>, JsonRejection>) -> Result<String, ApiError> {
    let Json(body) = body?;
    if body.text.trim().is_empty() {
        return Err(ApiError::bad_request("text is empty"));
    }
    text_fits(&body.text)?;
    Ok(body.text)
}

/// `413 text_too_long` for a text over the protocol's limit (the event would be refused).
fn text_fits(text: &str) -> Result<(), ApiError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text_too_long",
            format!(
                "the text is {} bytes; at most {MAX_TEXT_BYTES} (of UTF-8)",
                text.len()
            ),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    #[serde(default)]
    text: String,
    /// Files uploaded with `POST /api/v1/attachments`.
    #[serde(default)]
    attachments: Vec<AttachmentBody>,
    /// An approved message template instead of text and files (WhatsApp).
    #[serde(default)]
    template: Option<TemplateBody>,
    /// The customer's message of the thread this reply answers (WhatsApp quotes it).
    #[serde(default)]
    reply_to: Option<String>,
}

/// A message template the app approved, filled in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    name: String,
    language: String,
    /// The values of the body's placeholders, `{{1}}` first.
    #[serde(default)]
    parameters: Vec<String>,
}

impl TemplateBody {
    /// The template, if WhatsApp would take it as written (`400` with the reason if not).
    fn parse(self) -> Result<Template, ApiError> {
        let invalid = |what: &str, err: threadline_protocol::name::NameError| {
            ApiError::bad_request(format!("template {what}: {err}"))
        };
        if self.parameters.len() > MAX_TEMPLATE_PARAMETERS {
            return Err(ApiError::bad_request(format!(
                "{} template values; at most {MAX_TEMPLATE_PARAMETERS}",
                self.parameters.len()
            )));
        }
        let parameters = self
            .parameters
            .into_iter()
            .map(|value| TemplateParameter::new(value).map_err(|err| invalid("value", err)))
            .collect::<Result<_, _>>()?;
        let template = Template::new(
            TemplateName::new(self.name).map_err(|err| invalid("name", err))?,
            TemplateLanguage::new(self.language).map_err(|err| invalid("language", err))?,
            parameters,
        );
        if let Some(problem) = threadline_bridges::whatsapp::template_problem(&template) {
            return Err(ApiError::bad_request(problem));
        }
        Ok(template)
    }
}

/// A file of a reply: an uploaded blob, with the name and type the customer sees.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentBody {
    blob: String,
    name: String,
    #[serde(default)]
    media_type: Option<String>,
}

/// `POST /api/v1/threads/{id}/replies` `{"text": "...", "attachments": [{"blob", "name",
/// "media_type"}]}`: a reply, delivered on the route. Text, files or both; or, on WhatsApp,
/// `{"template": {"name", "language", "parameters": [...]}}`: an approved template, which
/// goes whatever the messaging window.
pub async fn reply(
    caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<ReplyBody>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Json(body) = body?;
    let reply_to: Option<EventId> = body
        .reply_to
        .as_deref()
        .map(|id| parse_field(id, "reply_to"))
        .transpose()?;
    if let Some(template) = body.template {
        if !body.text.is_empty() || !body.attachments.is_empty() || reply_to.is_some() {
            return Err(ApiError::bad_request(
                "a template reply has no text or files of its own and quotes nothing: the template is the message",
            ));
        }
        let template = template.parse()?;
        reply_refusal(&ingest, &id, false)?;
        return act(&ingest, caller, &id, Action::Template(template)).await;
    }
    if body.text.trim().is_empty() && body.attachments.is_empty() {
        return Err(ApiError::bad_request("a reply needs text or attachments"));
    }
    text_fits(&body.text)?;
    if body.attachments.len() > MAX_ATTACHMENTS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_attachments",
            format!(
                "{} attachments; at most {MAX_ATTACHMENTS}",
                body.attachments.len()
            ),
        ));
    }
    let mut attachments = Vec::with_capacity(body.attachments.len());
    for file in body.attachments {
        let blob: BlobHash = parse_field(&file.blob, "blob")?;
        let meta = |text: &str, what: &str| {
            AttachmentMeta::new(text)
                .map_err(|err| ApiError::bad_request(format!("attachment {what}: {err}")))
        };
        let size = ingest
            .store()
            .blobs()
            .size(&blob)
            .map_err(|err| ApiError::internal(err.to_string()))?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "missing_attachment",
                    format!("no uploaded attachment {blob}: POST it to /api/v1/attachments first"),
                )
            })?;
        attachments.push(Attachment::new(
            blob,
            size,
            meta(
                file.media_type
                    .as_deref()
                    .unwrap_or("application/octet-stream"),
                "media type",
            )?,
            meta(&file.name, "name")?,
        ));
    }
    reply_refusal(&ingest, &id, true)?;
    act(
        &ingest,
        caller,
        &id,
        Action::Reply {
            text: body.text,
            attachments,
            reply_to,
        },
    )
    .await
}

/// What a reply of `text` would be on the thread's route: `{"channel", "sms": {"messages",
/// "segments", "encoding"} | null, "refused": {"code", "message"} | null}`.
#[derive(Debug, Serialize)]
pub struct ReplyPreview {
    /// Where it would go (`null`: the thread has no route).
    channel: Option<ChannelKind>,
    /// On SMS: the messages it goes as and the segments the carrier counts (and bills).
    sms: Option<SmsPreview>,
    /// Why it would be refused now (`opted_out`, `window_closed`), if it would.
    refused: Option<serde_json::Value>,
}

/// How a reply goes over SMS.
#[derive(Debug, Serialize)]
pub struct SmsPreview {
    messages: usize,
    segments: usize,
    /// `GSM-7`, or `UCS-2` when a character is outside GSM-7 (segments hold 70, not 160).
    encoding: &'static str,
}

/// `POST /api/v1/threads/{id}/replies/preview` `{"text"}`: what the reply would be, before it
/// is sent (the inbox shows an SMS reply's segment count as it is written). Nothing is stored.
pub async fn preview_reply(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<TextBody>, JsonRejection>,
) -> Result<Json<ReplyPreview>, ApiError> {
    let Json(body) = body?;
    text_fits(&body.text)?;
    let thread: ThreadId = parse_id(&id, "thread")?;
    let state = ingest
        .store()
        .thread_state(&thread)?
        .ok_or_else(|| ApiError::not_found(format!("no thread `{id}`")))?;
    let channel = state.route.map(|route| route.channel);
    let sms = (channel == Some(ChannelKind::Sms)).then(|| {
        let plan = threadline_bridges::sms::text::plan(&body.text);
        SmsPreview {
            messages: plan.messages.len(),
            segments: plan.segments,
            encoding: plan.encoding.name(),
        }
    });
    let refused = route_refusal(&ingest, thread, &state, true)
        .err()
        .map(|err| serde_json::json!({"code": err.code(), "message": err.message()}));
    Ok(Json(ReplyPreview {
        channel,
        sms,
        refused,
    }))
}

/// Why a reply on the thread `id` would be refused now (see [`route_refusal`]).
fn reply_refusal(ingest: &Ingest, id: &str, window: bool) -> Result<(), ApiError> {
    let thread: ThreadId = parse_id(id, "thread")?;
    match ingest.store().thread_state(&thread)? {
        Some(state) => route_refusal(ingest, thread, &state, window),
        None => Ok(()),
    }
}

/// Why a reply on `thread` (in `state`) would be refused now, before anything is stored
/// ([`crate::reply_route`]), as the API says it: `409` with the refusal's code.
fn route_refusal(
    ingest: &Ingest,
    thread: ThreadId,
    state: &threadline_protocol::ThreadState,
    window: bool,
) -> Result<(), ApiError> {
    match crate::reply_route::refusal(ingest, thread, state, window)? {
        Some(refusal) => Err(refused(refusal)),
        None => Ok(()),
    }
}

/// `409 no_bridge`: this node has no bridge of `channel`, so `what` would never be sent.
fn no_bridge(channel: ChannelKind, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "no_bridge",
        format!(
            "this node has no {channel} bridge, so {what} would never be sent: configure [{channel}] in config.toml (or run `threadline bridge {channel}` with a bridge token), or reply on another of the customer's channels"
        ),
    )
}

fn opted_out(channel: ChannelKind) -> ApiError {
    refused(crate::reply_route::RouteRefusal::OptedOut(channel))
}

/// `409` with the refusal's code and reason.
fn refused(refusal: crate::reply_route::RouteRefusal) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, refusal.code(), refusal.to_string())
}

/// `POST /api/v1/threads/{id}/notes` `{"text": "..."}`: an internal note.
pub async fn note(
    caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<TextBody>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let text = text(body)?;
    act(&ingest, caller, &id, Action::Note(text)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// An agent id, or `null` to unassign. Required: a body without it is an error, not an
    /// unassignment.
    assignee: serde_json::Value,
}

/// `POST /api/v1/threads/{id}/assign` `{"assignee": "<agent id>" | null}`.
pub async fn assign(
    caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<AssignBody>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Json(body) = body?;
    let assignee = match &body.assignee {
        serde_json::Value::Null => None,
        serde_json::Value::String(text) => Some(parse_field::<AgentId>(text, "agent id")?),
        other => {
            return Err(ApiError::bad_request(format!(
                "assignee must be an agent id or null, not {other}"
            )))
        }
    };
    if let Some(agent) = assignee {
        assignable(&ingest, agent)?;
    }
    act(&ingest, caller, &id, Action::Assign(assignee)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamBody {
    /// A team's name, or `null` to take the thread from its team. Required.
    team: serde_json::Value,
}

/// `POST /api/v1/threads/{id}/team` `{"team": "<name>" | null}`: gives the thread to one of
/// the org's teams (`422 unknown_team` otherwise), or takes it from its team. The thread's
/// assignee, if any, stays.
pub async fn team(
    caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<TeamBody>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Json(body) = body?;
    let team = match &body.team {
        serde_json::Value::Null => None,
        serde_json::Value::String(name) => Some(super::teams::known_team(&ingest, name)?),
        other => {
            return Err(ApiError::bad_request(format!(
                "team must be a team's name or null, not {other}"
            )))
        }
    };
    act(&ingest, caller, &id, Action::AssignTeam(team)).await
}

/// Whether a thread may be assigned to `agent`: an agent of this node's that is not revoked
/// (`422 unknown_agent`, `422 agent_revoked`).
pub(super) fn assignable(ingest: &Ingest, agent: AgentId) -> Result<(), ApiError> {
    let record = ingest.store().agent(&agent)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_agent",
            format!("no agent {agent} (see GET /api/v1/agents)"),
        )
    })?;
    if record.revoked {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "agent_revoked",
            format!("agent {agent} ({}) is revoked", record.name),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersBody {
    /// The partner org's id.
    org: String,
    /// `true` to stop sharing with it.
    #[serde(default)]
    remove: bool,
}

/// `POST /api/v1/threads/{id}/members` `{"org": "<org id>", "remove": false}`: shares the
/// thread with a partner org (its nodes get this thread and nothing else), or stops sharing
/// it. Only the owning org may.
pub async fn members(
    caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<MembersBody>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Json(body) = body?;
    let org = parse_field::<threadline_protocol::OrgId>(&body.org, "org id")?;
    let action = if body.remove {
        Action::MemberRemove(org)
    } else {
        Action::MemberAdd(org)
    };
    act(&ingest, caller, &id, action).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    status: String,
    /// For `snoozed`: until when, in ms since the epoch.
    until: Option<u64>,
}

/// `POST /api/v1/threads/{id}/status` `{"status": "open"|"pending"|"resolved"|"snoozed",
/// "until": ms}`.
pub async fn status(
    caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<StatusBody>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Json(body) = body?;
    let status = match (body.status.as_str(), body.until) {
        ("open", None) => Status::Open,
        ("pending", None) => Status::Pending,
        ("resolved", None) => Status::Resolved,
        ("snoozed", Some(until)) => Status::Snoozed {
            until: Timestamp::from_millis(until),
        },
        ("snoozed", None) => return Err(ApiError::bad_request("snoozed needs `until`")),
        (other, _) => {
            return Err(ApiError::bad_request(format!(
                "status must be open, pending, snoozed (with until) or resolved, not `{other}`"
            )))
        }
    };
    act(&ingest, caller, &id, Action::Status(status)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandOffBody {
    handle: String,
}

/// `POST /api/v1/threads/{id}/handoff` `{"handle": "email:alice@example.com"}`: route replies
/// to another handle of the thread's contact (a handle of anyone else is refused).
pub async fn hand_off(
    caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<HandOffBody>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Json(body) = body?;
    let handle: Handle = parse_field(&body.handle, "handle")?;
    if crate::consent::withdrawn_on_node(&ingest, &handle) {
        return Err(opted_out(handle.channel()));
    }
    // The node that sets the route delivers on it: a channel it has no bridge for would take
    // the replies and send none.
    if !ingest.delivers_to(handle.channel())? {
        return Err(no_bridge(
            handle.channel(),
            &format!("replies handed off to {handle}"),
        ));
    }
    act(&ingest, caller, &id, Action::HandOff(handle)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsBody {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct LabelsDone {
    events: Vec<EventId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadBody {
    up_to: String,
}

/// `POST /api/v1/threads/{id}/read` `{"up_to": "<event>"}`: the agent has read the thread up
/// to that event (the customer's chat shows "seen"). Answers `{"event": null}` when the agent's
/// read mark is there already.
pub async fn read(
    caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<ReadBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    let thread: ThreadId = parse_id(&id, "thread")?;
    let up_to: EventId = parse_id(&body.up_to, "event")?;
    let state = ingest
        .store()
        .thread_state(&thread)?
        .ok_or_else(|| ApiError::not_found(format!("no thread `{id}`")))?;
    let reader = threadline_protocol::thread::Reader::Agent(caller.0);
    if state.read_marks.get(&reader) == Some(&up_to) {
        return Ok(Json(serde_json::json!({ "event": null })));
    }
    let event = ingest.act(caller.0, thread, Action::Read(up_to)).await?;
    Ok(Json(serde_json::json!({ "event": event })))
}

/// `POST /api/v1/threads/{id}/typing`: the agent is typing a reply (the customer's chat shows
/// it; nothing is stored).
pub async fn typing(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let thread: ThreadId = parse_id(&id, "thread")?;
    if ingest.store().thread_state(&thread)?.is_none() {
        return Err(ApiError::not_found(format!("no thread `{id}`")));
    }
    ingest
        .presence()
        .typing(crate::presence::Typing::Agent(thread));
    Ok(Json(serde_json::json!({})))
}

/// `POST /api/v1/threads/{id}/labels` `{"add": [...], "remove": [...]}`: at most
/// [`MAX_LABELS_PER_REQUEST`] together (`413 too_many_labels`), and the thread at most
/// [`crate::limits::MAX_LABELS_PER_THREAD`] after them (`422 thread_labels_full`, checked by
/// the writer). Refused, nothing is stored.
pub async fn labels(
    caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<LabelsBody>, JsonRejection>,
) -> Result<Json<LabelsDone>, ApiError> {
    let Json(body) = body?;
    let thread: ThreadId = parse_id(&id, "thread")?;
    // Each label is an event the writer stores while other writers wait: a few per request.
    let n_labels = body.add.len() + body.remove.len();
    if n_labels > MAX_LABELS_PER_REQUEST {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_labels",
            format!(
                "{n_labels} labels to add and remove; at most {MAX_LABELS_PER_REQUEST} a request"
            ),
        ));
    }
    let parse =
        |l: &String| Label::new(l.clone()).map_err(|e| ApiError::bad_request(e.to_string()));
    let add: Vec<Label> = body.add.iter().map(parse).collect::<Result<_, _>>()?;
    let remove: Vec<Label> = body.remove.iter().map(parse).collect::<Result<_, _>>()?;
    if add.is_empty() && remove.is_empty() {
        return Err(ApiError::bad_request("nothing to add or remove"));
    }
    let actions = add
        .into_iter()
        .map(Action::LabelAdd)
        .chain(remove.into_iter().map(Action::LabelRemove))
        .collect();
    let events = ingest.act_all(caller.0, thread, actions).await?;
    Ok(Json(LabelsDone { events }))
}
