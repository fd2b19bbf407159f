//! The bridge API: resolve a customer's handle to its thread, submit signed events, take
//! outbound deliveries and acknowledge them.
//!
//! A bridge signs its events with its own certified key (the auth rules check the key's
//! channel); its token only opens this API, for one channel.

use axum::{
    extract::{rejection::JsonRejection, rejection::QueryRejection, Path, Query, State},
    Json,
};
use serde::{Deserialize, Serialize};
use threadline_protocol::{
    channel::Handle,
    event::{Direction, EventKind, ThreadKind},
    ContactId, Event, EventId, ThreadId,
};

use super::auth::BridgeCaller;
use super::views::parse_field;
use super::ApiError;
use crate::bridge_host::LocalLink;
use crate::ingest::{Ingest, IngestError, Submitted};
use threadline_bridges::sdk::{Identity, LinkError, NodeLink as _};
use threadline_protocol::event::ReceiptKind;

/// Most events per submission (`413 too_many_events` past it). The writer verifies and stores
/// a submission's events while other writers wait: 512 is a few tens of milliseconds of its
/// time, and a bridge catching up sends the rest in further requests.
const MAX_EVENTS_PER_SUBMIT: usize = 512;
/// Most deliveries per take.
const MAX_DELIVERIES: usize = 512;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    handle: String,
    /// The thread the app says the message answers (hex id).
    #[serde(default)]
    thread: Option<String>,
    /// A reply token naming the thread (hex of 16 bytes).
    #[serde(default)]
    token: Option<String>,
    /// The name the customer goes by on the app (a mail's display name), for a new contact.
    #[serde(default)]
    name: Option<String>,
    /// An automatic reply: only to a conversation the customer already has (never opens one).
    #[serde(default)]
    automatic: bool,
}

#[derive(Debug, Serialize)]
pub struct ResolveAnswer {
    contact: ContactId,
    thread: ThreadId,
    parents: Vec<EventId>,
    depth: u64,
}

/// `POST /api/v1/bridge/resolve` `{"handle": "..."}`: the contact and open thread of a handle
/// on the bridge's channel (both created when new), and the parents and depth for the bridge's
/// next event on that thread.
pub async fn resolve(
    BridgeCaller(channel): BridgeCaller,
    State(ingest): State<Ingest>,
    body: Result<Json<ResolveBody>, JsonRejection>,
) -> Result<Json<ResolveAnswer>, ApiError> {
    let Json(body) = body?;
    let handle: Handle = parse_field(&body.handle, "handle")?;
    if handle.channel() != channel {
        return Err(ApiError::forbidden(format!(
            "a {channel} bridge cannot resolve a {} handle",
            handle.channel()
        )));
    }
    let hint = match (&body.thread, &body.token) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give a thread or a token, not both".to_owned(),
            ))
        }
        (Some(thread), None) => Some(crate::ingest::ThreadRef::Thread(parse_field(
            thread, "thread",
        )?)),
        (None, Some(token)) => {
            let bytes = hex::decode(token)
                .ok()
                .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("`{token}` is not a 16-byte reply token in hex"))
                })?;
            Some(crate::ingest::ThreadRef::Token(bytes))
        }
        (None, None) => None,
    };
    let customer = crate::ingest::Customer {
        name: body.name,
        automatic: body.automatic,
    };
    let resolved = ingest.resolve_for(handle, hint, customer).await?;
    Ok(Json(ResolveAnswer {
        contact: resolved.contact,
        thread: resolved.thread,
        parents: resolved.parents,
        depth: resolved.depth,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// Events, each the hex of its canonical encoding.
    events: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SubmitResult {
    Stored { id: EventId },
    Duplicate { id: EventId },
    Refused { code: &'static str, message: String },
}

#[derive(Debug, Serialize)]
pub struct SubmitAnswer {
    results: Vec<SubmitResult>,
}

/// `POST /api/v1/bridge/events` `{"events": ["<hex>", ...]}`: answers once every stored
/// event is durable, one result per event, in order. Only inbound messages and receipts on the
/// bridge's channel are taken.
pub async fn submit(
    BridgeCaller(channel): BridgeCaller,
    State(ingest): State<Ingest>,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> Result<Json<SubmitAnswer>, ApiError> {
    let Json(body) = body?;
    if body.events.is_empty() {
        return Err(ApiError::bad_request("no events"));
    }
    if body.events.len() > MAX_EVENTS_PER_SUBMIT {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            format!(
                "{} events; at most {MAX_EVENTS_PER_SUBMIT} a request",
                body.events.len()
            ),
        ));
    }
    let mut results: Vec<Option<SubmitResult>> = Vec::with_capacity(body.events.len());
    let mut decoded = Vec::new();
    for text in &body.events {
        let event = hex::decode(text)
            .map_err(|e| format!("not hex: {e}"))
            .and_then(|bytes| Event::from_bytes(&bytes).map_err(|e| e.to_string()));
        match event {
            Ok(event) if on_channel(&event, channel) => {
                decoded.push(event);
                results.push(None);
            }
            Ok(event) => {
                let kind = event.header().kind.name();
                tracing::warn!(
                    bridge = %event.header().author,
                    %channel,
                    kind,
                    "refused a bridge's event: not an inbound message or receipt on its channel"
                );
                results.push(Some(SubmitResult::Refused {
                    code: "forbidden",
                    message: format!(
                        "a {channel} bridge may submit only inbound messages, automatic replies and receipts on {channel}, not {kind}"
                    ),
                }));
            }
            Err(message) => results.push(Some(SubmitResult::Refused {
                code: "malformed",
                message,
            })),
        }
    }
    let mut outcomes = ingest.submit(decoded).await;
    // A store failure fails the whole group commit: no result of the request is final, so the
    // request as a whole gets the error (5xx: the bridge sends it again).
    let failed = outcomes.iter().position(|outcome| {
        matches!(
            outcome,
            Err(IngestError::Store(_) | IngestError::NotDurable { .. } | IngestError::ShuttingDown)
        )
    });
    if let Some(Err(err)) = failed.map(|index| outcomes.swap_remove(index)) {
        return Err(ApiError::from(err));
    }
    let mut outcomes = outcomes.into_iter();
    let results = results
        .into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| match outcomes.next() {
                Some(Ok(Submitted::Stored(id))) => SubmitResult::Stored { id },
                Some(Ok(Submitted::Duplicate(id))) => SubmitResult::Duplicate { id },
                Some(Err(err)) => {
                    let err = ApiError::from(err);
                    SubmitResult::Refused {
                        code: err.code(),
                        message: err.message().to_owned(),
                    }
                }
                None => SubmitResult::Refused {
                    code: "internal",
                    message: "no outcome".to_owned(),
                },
            })
        })
        .collect();
    Ok(Json(SubmitAnswer { results }))
}

fn on_channel(event: &Event, channel: threadline_protocol::ChannelKind) -> bool {
    match &event.header().kind {
        EventKind::Thread(ThreadKind::Message {
            direction: Direction::Inbound { channel: used },
        })
        | EventKind::Thread(ThreadKind::AutoReply { channel: used })
        | EventKind::Thread(ThreadKind::Receipt { channel: used, .. }) => *used == channel,
        _ => false,
    }
}

#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct DeliveryView {
    seq: u64,
    thread: ThreadId,
    event: EventId,
    depth: u64,
    handle: Handle,
    text: String,
    attachments: Vec<threadline_protocol::event::Attachment>,
    /// The approved message template the reply goes as, or `null`.
    template: Option<threadline_protocol::event::Template>,
    /// The app's id of the customer's message the reply answers, or `null`.
    reply_to: Option<threadline_protocol::name::ExternalId>,
    /// The customer withdrew consent on the channel (texted STOP): not to be sent.
    opted_out: bool,
    queued_at: u64,
}

#[derive(Debug, Serialize)]
pub struct DeliveriesAnswer {
    deliveries: Vec<DeliveryView>,
}

/// `GET /api/v1/bridge/deliveries?limit=N`: the oldest queued deliveries of the bridge's
/// channel. They stay queued until acknowledged (at-least-once).
pub async fn deliveries(
    BridgeCaller(channel): BridgeCaller,
    State(ingest): State<Ingest>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<DeliveriesAnswer>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_DELIVERIES);
    let queued =
        crate::conversation::deliveries(ingest.store(), ingest.directory(), channel, limit)?;
    let deliveries = queued
        .into_iter()
        .map(|queued| DeliveryView {
            opted_out: queued.opted_out,
            seq: queued.delivery.seq,
            thread: queued.delivery.thread,
            event: queued.delivery.event,
            depth: queued.delivery.depth,
            handle: queued.delivery.handle,
            text: queued.delivery.text,
            attachments: queued.attachments,
            template: queued.template,
            reply_to: queued.reply_to,
            queued_at: queued.delivery.queued_at.as_millis(),
        })
        .collect();
    Ok(Json(DeliveriesAnswer { deliveries }))
}

#[derive(Debug, Serialize)]
pub struct AckAnswer {
    acknowledged: bool,
}

/// `POST /api/v1/bridge/deliveries/{seq}/ack`: the bridge sent it; it leaves the queue
/// (idempotent).
pub async fn ack(
    BridgeCaller(channel): BridgeCaller,
    State(ingest): State<Ingest>,
    Path(seq): Path<String>,
) -> Result<Json<AckAnswer>, ApiError> {
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::not_found(format!("no delivery `{seq}`")))?;
    let removed = ingest.store().ack_delivery(channel, seq)?;
    ingest.store().flush_async().await?;
    Ok(Json(AckAnswer {
        acknowledged: removed,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandleQuery {
    handle: String,
}

/// A handle of the caller's channel, or a clear refusal.
fn own_handle(channel: threadline_protocol::ChannelKind, text: &str) -> Result<Handle, ApiError> {
    let handle: Handle = parse_field(text, "handle")?;
    if handle.channel() != channel {
        return Err(ApiError::forbidden(format!(
            "a {channel} bridge cannot speak for {handle}"
        )));
    }
    Ok(handle)
}

fn link_refusal(err: LinkError) -> ApiError {
    match err {
        LinkError::Unavailable(message) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            message,
        ),
        LinkError::Refused { code, message } => match code.as_str() {
            "forbidden" => ApiError::forbidden(message),
            "not_found" => ApiError::not_found(message),
            "handle_not_of_contact" => ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "handle_not_of_contact",
                message,
            ),
            _ => ApiError::bad_request(message),
        },
    }
}

#[derive(Debug, Serialize)]
pub struct ConversationView {
    messages: Vec<ConversationMessage>,
}

#[derive(Debug, Serialize)]
pub struct ConversationMessage {
    thread: ThreadId,
    event: EventId,
    depth: u64,
    inbound: bool,
    text: Option<String>,
    at: u64,
    receipt: Option<&'static str>,
    seen: bool,
    /// The channel the thread's replies go to now.
    routed_to: Option<threadline_protocol::ChannelKind>,
    /// The app's id of the message, if it has one.
    external_id: Option<threadline_protocol::name::ExternalId>,
    /// Its files, by reference.
    attachments: Vec<threadline_protocol::event::Attachment>,
}

/// `GET /api/v1/bridge/conversation?handle=H`: the messages exchanged on a handle of the
/// bridge's channel (the customer's own view; see `conversation.rs`).
pub async fn conversation(
    BridgeCaller(channel): BridgeCaller,
    State(ingest): State<Ingest>,
    query: Result<Query<HandleQuery>, QueryRejection>,
) -> Result<Json<ConversationView>, ApiError> {
    let Query(query) = query?;
    let handle = own_handle(channel, &query.handle)?;
    let messages = crate::conversation::on_handle(&ingest, &handle)?
        .into_iter()
        .map(|entry| ConversationMessage {
            thread: entry.thread,
            event: entry.event,
            depth: entry.depth,
            inbound: entry.inbound,
            text: entry.text,
            at: entry.at.as_millis(),
            receipt: entry.receipt.map(ReceiptKind::name),
            seen: entry.seen,
            routed_to: entry.routed_to,
            external_id: entry.external_id,
            attachments: entry.attachments,
        })
        .collect();
    Ok(Json(ConversationView { messages }))
}

#[derive(Debug, Serialize)]
pub struct ThreadMessageView {
    event: threadline_protocol::EventId,
    depth: u64,
    inbound: bool,
    channel: Option<threadline_protocol::ChannelKind>,
    text: Option<String>,
    at: u64,
    external_id: Option<String>,
    attachments: Vec<threadline_protocol::event::Attachment>,
    subject: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ThreadMessagesView {
    messages: Vec<ThreadMessageView>,
}

/// `GET /api/v1/bridge/threads/{id}/messages`: a thread's messages, for the bridge its replies
/// go to (refused for a thread routed to another channel).
pub async fn thread_messages(
    BridgeCaller(channel): BridgeCaller,
    State(ingest): State<Ingest>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<ThreadMessagesView>, ApiError> {
    let thread: threadline_protocol::ThreadId = parse_field(&id, "thread")?;
    let messages = crate::conversation::of_thread(&ingest, thread, channel)?
        .ok_or_else(|| ApiError::forbidden(format!("thread {thread} is not routed to {channel}")))?
        .into_iter()
        .map(|m| ThreadMessageView {
            event: m.event,
            depth: m.depth,
            inbound: m.inbound,
            channel: m.channel,
            text: m.text,
            at: m.at.as_millis(),
            external_id: m.external_id,
            attachments: m.attachments,
            subject: m.subject,
        })
        .collect();
    Ok(Json(ThreadMessagesView { messages }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifyBody {
    handle: String,
    /// An address the customer typed (noted, unverified).
    claimed: Option<String>,
    /// An address the bridge vouches for (linked, or the customer's contact merged into its).
    vouched: Option<String>,
}

/// `POST /api/v1/bridge/identify` `{"handle", "claimed" | "vouched"}`: what the customer of a
/// handle is known to be (see the SDK's `Identity`).
pub async fn identify(
    BridgeCaller(channel): BridgeCaller,
    State(ingest): State<Ingest>,
    body: Result<Json<IdentifyBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    let handle = own_handle(channel, &body.handle)?;
    let identity = match (body.claimed, body.vouched) {
        (Some(claimed), None) => Identity::Claimed(parse_field(&claimed, "claimed")?),
        (None, Some(vouched)) => Identity::Vouched(parse_field(&vouched, "vouched")?),
        _ => return Err(ApiError::bad_request("give one of `claimed` and `vouched`")),
    };
    LocalLink::new(ingest, channel)
        .identify(&handle, identity)
        .await
        .map_err(link_refusal)?;
    Ok(Json(serde_json::json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    handle: String,
    /// Given back (`true`: START) or withdrawn (`false`: STOP).
    granted: bool,
}

/// `POST /api/v1/bridge/consent` `{"handle", "granted"}`: the customer of a handle of the
/// bridge's channel withdrew consent to be written to there, or gave it back (see the SDK's
/// `NodeLink::consent`).
pub async fn consent(
    BridgeCaller(channel): BridgeCaller,
    State(ingest): State<Ingest>,
    body: Result<Json<ConsentBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    let handle = own_handle(channel, &body.handle)?;
    LocalLink::new(ingest, channel)
        .consent(&handle, body.granted)
        .await
        .map_err(link_refusal)?;
    Ok(Json(serde_json::json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffCodeBody {
    handle: String,
    /// The channel the conversation is to continue on.
    channel: String,
}

/// `POST /api/v1/bridge/handoff-codes` `{"handle", "channel"}`: a one-time code for continuing
/// the open conversation of a customer of the bridge's channel on another channel:
/// `{"code"}` (`404 no_conversation` for a handle with none).
pub async fn handoff_code(
    BridgeCaller(channel): BridgeCaller,
    State(ingest): State<Ingest>,
    body: Result<Json<HandoffCodeBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    let handle = own_handle(channel, &body.handle)?;
    let to: threadline_protocol::ChannelKind = parse_field(&body.channel, "channel")?;
    let code = LocalLink::new(ingest, channel)
        .handoff_code(&handle, to)
        .await
        .map_err(link_refusal)?;
    Ok(Json(serde_json::json!({ "code": code.as_str() })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    handle: String,
    code: String,
}

/// `POST /api/v1/bridge/handoff-codes/redeem` `{"handle", "code"}`: a code a customer of the
/// bridge's channel brought back. `{"thread"}`: the conversation continues there; `{"thread":
/// null}`: the code links nothing (why is in the node's log).
pub async fn redeem_handoff_code(
    BridgeCaller(channel): BridgeCaller,
    State(ingest): State<Ingest>,
    body: Result<Json<RedeemBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    let handle = own_handle(channel, &body.handle)?;
    let code = threadline_bridges::sdk::HandoffCode::parse(&body.code)
        .ok_or_else(|| ApiError::bad_request("`code` is not a code (32 hex digits)"))?;
    let thread = LocalLink::new(ingest, channel)
        .continue_with(&handle, &code)
        .await
        .map_err(link_refusal)?;
    Ok(Json(serde_json::json!({ "thread": thread })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypingBody {
    handle: String,
}

/// `POST /api/v1/bridge/typing` `{"handle"}`: the customer is typing (agents see it).
pub async fn typing(
    BridgeCaller(channel): BridgeCaller,
    State(ingest): State<Ingest>,
    body: Result<Json<TypingBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    let handle = own_handle(channel, &body.handle)?;
    LocalLink::new(ingest, channel)
        .customer_typing(&handle)
        .await;
    Ok(Json(serde_json::json!({})))
}

/// `GET /api/v1/bridge/presence`: `{"agents_online"}`.
pub async fn presence(
    BridgeCaller(_): BridgeCaller,
    State(ingest): State<Ingest>,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "agents_online": ingest.presence().agents_online() }))
}
