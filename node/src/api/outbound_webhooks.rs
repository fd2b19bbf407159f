//! `/api/v1/webhooks` (admins): the org's outbound webhook subscriptions and their delivery
//! log; and what a delivery carries ([`payload`]). The subscriptions are signed directory
//! events (`SetWebhook`), so every node of the org has them; each node sends the events made
//! on it (`outbound_webhooks`).

use std::sync::PoisonError;

use axum::{
    extract::{rejection::JsonRejection, Path, Query, State},
    Json,
};
use rand_core::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use threadline_protocol::{name::WebhookName, EventId, ScopeId};

use super::auth::AdminCaller;
use super::views::{EventView, ThreadView};
use super::ApiError;
use crate::ingest::{DirectoryAction, Ingest};
use crate::outbound_webhooks::{Subscription, Topic};
use crate::store::webhook_queue::Queued;

/// Longest webhook name, in bytes (lower-case letters, digits, `-` and `_`).
const MAX_NAME_BYTES: usize = 32;

/// A subscription as the API shows it.
#[derive(Debug, Serialize)]
pub struct WebhookView {
    name: String,
    url: String,
    topics: Vec<String>,
    /// What deliveries are signed with.
    secret: String,
}

fn view(name: &WebhookName, subscription: Subscription) -> WebhookView {
    WebhookView {
        name: name.to_string(),
        url: subscription.url,
        topics: subscription.topics,
        secret: subscription.secret,
    }
}

#[derive(Debug, Serialize)]
pub struct Webhooks {
    webhooks: Vec<WebhookView>,
}

/// `GET /api/v1/webhooks` (admins).
pub async fn list(
    _caller: AdminCaller,
    State(ingest): State<Ingest>,
) -> Result<Json<Webhooks>, ApiError> {
    let directory = ingest
        .directory()
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    let webhooks = directory
        .state()
        .webhooks
        .iter()
        .filter_map(|(name, text)| Some(view(name, Subscription::parse(text).ok()?)))
        .collect();
    Ok(Json(Webhooks { webhooks }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBody {
    url: String,
    topics: Vec<String>,
    /// Kept (or made, for a new subscription) when absent.
    secret: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Set {
    webhook: WebhookView,
    /// The events written: none when it was that already.
    events: Vec<EventId>,
}

/// `PUT /api/v1/webhooks/{name}` `{"url", "topics": [...], "secret"?}` (admins): adds a
/// subscription or changes it. Without a secret, a new one gets a random one and a changed
/// one keeps its own.
pub async fn set(
    _caller: AdminCaller,
    State(ingest): State<Ingest>,
    Path(name): Path<String>,
    body: Result<Json<SetBody>, JsonRejection>,
) -> Result<Json<Set>, ApiError> {
    let Json(body) = body?;
    let name = webhook_name(&name)?;
    let current = subscription(&ingest, &name);
    let secret = match (body.secret, current) {
        (Some(secret), _) => secret,
        (None, Some(current)) => current.secret,
        (None, None) => {
            let mut bytes = [0u8; 32];
            rand_core::OsRng.fill_bytes(&mut bytes);
            hex::encode(bytes)
        }
    };
    let mut topics = body.topics;
    topics.sort();
    topics.dedup();
    let subscription = Subscription {
        url: body.url,
        topics,
        secret,
    };
    subscription.check().map_err(ApiError::bad_request)?;
    let text = serde_json::to_string(&subscription)
        .map_err(|err| ApiError::internal(format!("the subscription does not encode: {err}")))?;
    let events = ingest
        .change_directory(DirectoryAction::SetWebhook {
            name: name.clone(),
            text,
        })
        .await?;
    Ok(Json(Set {
        webhook: view(&name, subscription),
        events,
    }))
}

#[derive(Debug, Serialize)]
pub struct Removed {
    events: Vec<EventId>,
}

/// `DELETE /api/v1/webhooks/{name}` (admins): nothing more is queued for it, and what is
/// queued is dropped.
pub async fn remove(
    _caller: AdminCaller,
    State(ingest): State<Ingest>,
    Path(name): Path<String>,
) -> Result<Json<Removed>, ApiError> {
    let name = webhook_name(&name)?;
    if subscription(&ingest, &name).is_none() {
        return Err(ApiError::not_found(format!("no webhook `{name}`")));
    }
    let events = ingest
        .change_directory(DirectoryAction::SetWebhook {
            name: name.clone(),
            text: String::new(),
        })
        .await?;
    // What waits here goes now (another node drops its own when it comes to send it).
    ingest.store().drop_webhook_queue(name.as_str())?;
    Ok(Json(Removed { events }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    limit: Option<usize>,
}

/// One attempt, as the API shows it.
#[derive(Debug, Serialize)]
pub struct AttemptView {
    delivery: String,
    topic: &'static str,
    thread: threadline_protocol::ThreadId,
    event: EventId,
    attempt: u32,
    at: u64,
    took_ms: u64,
    status: Option<u16>,
    error: Option<String>,
    outcome: &'static str,
    next_at: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Deliveries {
    /// Deliveries of this subscription waiting (due now or retrying later).
    queued: usize,
    /// The newest attempts first.
    attempts: Vec<AttemptView>,
}

/// `GET /api/v1/webhooks/{name}/deliveries?limit=` (admins): the delivery log.
pub async fn deliveries(
    _caller: AdminCaller,
    State(ingest): State<Ingest>,
    Path(name): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Deliveries>, ApiError> {
    let Query(query) = query?;
    let name = webhook_name(&name)?;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let attempts = ingest
        .store()
        .webhook_log(name.as_str(), limit)?
        .into_iter()
        .map(|a| AttemptView {
            delivery: crate::outbound_webhooks::delivery_id(&a.event, &a.webhook),
            topic: Topic::from_number(a.topic).map_or("unknown", Topic::name),
            thread: a.thread,
            event: a.event,
            attempt: a.attempt,
            at: a.at,
            took_ms: a.took_ms,
            status: a.status,
            error: a.error,
            outcome: a.outcome.name(),
            next_at: a.next_at,
        })
        .collect();
    Ok(Json(Deliveries {
        queued: ingest.store().webhook_queued(name.as_str())?,
        attempts,
    }))
}

/// The body of a delivery: `{id, topic, created_at, org, thread, event}`, the thread and
/// the event as the API shows them (as they are now: an erased message's text is `null`);
/// `None` when the thread or the event is no longer stored.
pub fn payload(
    ingest: &Ingest,
    queued: &Queued,
    topic: Topic,
) -> Result<Option<Vec<u8>>, ApiError> {
    let store = ingest.store();
    let (Some(state), Some(event)) = (
        store.thread_state(&queued.thread)?,
        store.event(&ScopeId::Thread(queued.thread), &queued.event)?,
    ) else {
        return Ok(None);
    };
    let body = json!({
        "id": crate::outbound_webhooks::delivery_id(&queued.event, &queued.webhook),
        "topic": topic.name(),
        "created_at": queued.queued_at,
        "org": ingest.identity().org,
        "thread": ThreadView::new(queued.thread, &state, ingest)?,
        "event": EventView::new(queued.event, Some(queued.thread), &event),
    });
    serde_json::to_vec::<Value>(&body)
        .map(Some)
        .map_err(|err| ApiError::internal(format!("the delivery does not encode: {err}")))
}

fn subscription(ingest: &Ingest, name: &WebhookName) -> Option<Subscription> {
    let directory = ingest
        .directory()
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    let text = directory.state().webhooks.get(name)?;
    Subscription::parse(text).ok()
}

/// A webhook's name: 1 to [`MAX_NAME_BYTES`] lower-case letters, digits, `-` and `_`.
fn webhook_name(text: &str) -> Result<WebhookName, ApiError> {
    super::views::org_name(text, "webhook name", MAX_NAME_BYTES, |t| {
        WebhookName::new(t)
    })
}
