//! `/api/v1/contacts`: search, the common record with its whole cross-channel timeline,
//! linking a handle, merging two contacts.

use std::sync::PoisonError;

use axum::{
    extract::{rejection::JsonRejection, rejection::QueryRejection, Path, Query, State},
    Json,
};
use serde::{Deserialize, Serialize};
use threadline_protocol::{channel::Handle, directory::DirectoryState, ContactId, EventId};

use super::auth::AgentCaller;
use super::threads::thread_events;
use super::views::{parse_field, parse_id, EventView, ThreadView};
use super::ApiError;
use crate::ingest::{DirectoryAction, Ingest};
use crate::store::audit::{Actor, AuditAction, AuditRecord};

/// Most contacts one search returns.
const MAX_RESULTS: usize = 50;

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    /// A handle (`email:alice@example.com`) or part of a display name.
    q: String,
}

#[derive(Debug, Serialize)]
pub struct ContactSummary {
    id: ContactId,
    display_name: Option<String>,
    handles: Vec<Handle>,
}

#[derive(Debug, Serialize)]
pub struct SearchResult {
    contacts: Vec<ContactSummary>,
}

fn summary(state: &DirectoryState, id: ContactId) -> Option<ContactSummary> {
    let (root, record) = state.contact(id)?;
    (!record.erased).then(|| ContactSummary {
        id: root,
        display_name: crate::contact_name::of(record),
        handles: record.handles.iter().cloned().collect(),
    })
}

/// `GET /api/v1/contacts?q=...`.
pub async fn search(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<SearchResult>, ApiError> {
    let Query(query) = query?;
    let needle = query.q.trim();
    if needle.is_empty() {
        return Err(ApiError::bad_request("q is empty"));
    }
    let directory = ingest
        .directory()
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    let state = directory.state();
    let contacts = match needle.parse::<Handle>() {
        Ok(handle) => state
            .resolve(&handle)
            .and_then(|id| summary(state, id))
            .into_iter()
            .collect(),
        Err(_) => ingest
            .contact_search()
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .find(needle, MAX_RESULTS)
            .into_iter()
            .filter_map(|id| summary(state, id))
            .collect(),
    };
    Ok(Json(SearchResult { contacts }))
}

#[derive(Debug, Serialize)]
pub struct ContactRecordView {
    id: ContactId,
    display_name: Option<String>,
    handles: Vec<Handle>,
    attributes: std::collections::BTreeMap<String, String>,
    merged_from: Vec<ContactId>,
    erased: bool,
    /// The channels the customer withdrew consent on (texted STOP): nothing is sent to them
    /// there. `"all"` for every channel.
    opted_out: Vec<String>,
    threads: Vec<ThreadView>,
    /// Every event of every thread of the contact, on every channel, by time.
    timeline: Vec<EventView>,
}

/// `GET /api/v1/contacts/{id}`: the common record.
pub async fn show(
    caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
) -> Result<Json<ContactRecordView>, ApiError> {
    let id: ContactId = parse_id(&id, "contact")?;
    let view = record(&ingest, id)?;
    // Who looked at whose whole record, for the audit trail (`threadline audit`).
    ingest.store().record_audit(&AuditRecord {
        at: crate::clock::now(),
        actor: Actor::Agent(caller.0),
        action: AuditAction::Viewed,
        contact: id,
    })?;
    Ok(Json(view))
}

/// The common record of a contact (also used by `threadline contact export`).
pub fn record(ingest: &Ingest, id: ContactId) -> Result<ContactRecordView, ApiError> {
    let (root, record, members) = {
        let directory = ingest
            .directory()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let (root, record) = directory
            .state()
            .contact(id)
            .ok_or_else(|| ApiError::not_found(format!("no contact `{id}`")))?;
        (root, record.clone(), directory.state().same_customer(root))
    };
    let opted_out = record
        .consent
        .iter()
        .filter(|(_, granted)| !**granted)
        .map(|(channel, _)| channel.map_or_else(|| "all".to_owned(), |c| c.to_string()))
        .collect();
    let mut threads = Vec::new();
    let mut timeline = Vec::new();
    for member in members {
        for thread in ingest.store().contact_threads(&member)? {
            if let Some(state) = ingest.store().thread_state(&thread)? {
                threads.push(ThreadView::new(thread, &state, ingest)?);
            }
            timeline.extend(thread_events(ingest, thread)?);
        }
    }
    timeline.sort_by_key(|event| (event.timestamp(), event.id));
    Ok(ContactRecordView {
        id: root,
        display_name: crate::contact_name::of(&record),
        handles: record.handles.into_iter().collect(),
        attributes: record
            .attributes
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        merged_from: record.merged_from.into_iter().collect(),
        erased: record.erased,
        opted_out,
        threads,
        timeline,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    handle: String,
}

#[derive(Debug, Serialize)]
pub struct Done {
    events: Vec<EventId>,
}

/// `POST /api/v1/contacts/{id}/handles` `{"handle": "..."}`: a handle linked to another
/// contact is refused (merge the contacts instead).
pub async fn link_handle(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<LinkBody>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let id: ContactId = parse_id(&id, "contact")?;
    let Json(body) = body?;
    let handle: Handle = parse_field(&body.handle, "handle")?;
    let events = ingest
        .change_directory(DirectoryAction::LinkHandle(id, handle))
        .await?;
    Ok(Json(Done { events }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    from: String,
    into: String,
}

/// `POST /api/v1/contacts/merge` `{"from": id, "into": id}`.
pub async fn merge(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    body: Result<Json<MergeBody>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Json(body) = body?;
    let from: ContactId = parse_field(&body.from, "contact id")?;
    let into: ContactId = parse_field(&body.into, "contact id")?;
    if from == into {
        return Err(ApiError::bad_request(
            "a contact cannot be merged into itself",
        ));
    }
    let events = ingest
        .change_directory(DirectoryAction::Merge { from, into })
        .await?;
    Ok(Json(Done { events }))
}
