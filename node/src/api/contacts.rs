//! `/api/v1/contacts`: search, the common record with its whole cross-channel timeline,
//! setting an attribute (the name is the `name` attribute), linking a handle, and merging two
//! contacts, with what suggests they are one customer shown first.

use std::sync::PoisonError;

use axum::{
    extract::{rejection::JsonRejection, rejection::QueryRejection, Path, Query, State},
    Json,
};
use serde::{Deserialize, Serialize};
use threadline_protocol::{
    channel::Handle, directory::DirectoryState, name::AttributeKey, ContactId, EventId,
};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeBody {
    key: String,
    /// Empty removes the attribute.
    value: String,
}

/// `POST /api/v1/contacts/{id}/attributes` `{"key": "...", "value": "..."}`: sets an
/// attribute (`name` renames the contact), or removes it with an empty value. A value is at
/// most [`MAX_ATTRIBUTE_VALUE_BYTES`] bytes, on one line.
///
/// [`MAX_ATTRIBUTE_VALUE_BYTES`]: crate::limits::MAX_ATTRIBUTE_VALUE_BYTES
pub async fn set_attribute(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<AttributeBody>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let id: ContactId = parse_id(&id, "contact")?;
    let Json(body) = body?;
    let key: AttributeKey = AttributeKey::new(body.key.trim())
        .map_err(|err| ApiError::bad_request(format!("bad attribute key: {err}")))?;
    let value = body.value.trim();
    if value.len() > crate::limits::MAX_ATTRIBUTE_VALUE_BYTES {
        return Err(ApiError::bad_request(format!(
            "the value is {} bytes; at most {} are kept",
            value.len(),
            crate::limits::MAX_ATTRIBUTE_VALUE_BYTES
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "the value must be one line of text (no control characters)",
        ));
    }
    let events = ingest
        .change_directory(DirectoryAction::SetAttribute {
            contact: id,
            key,
            value: value.to_owned(),
        })
        .await?;
    Ok(Json(Done { events }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendCodeBody {
    /// The address to verify (`maria@example.com`).
    address: String,
}

#[derive(Debug, Serialize)]
pub struct CodeSent {
    /// Where the code went.
    sent_to: Handle,
    /// Until when it is good (ms).
    expires_at: u64,
}

/// `POST /api/v1/contacts/{id}/email-verification` `{"address"}`: mails the customer a
/// one-time code at the address ("verify this email"), to read back to the agent.
pub async fn send_email_code(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<SendCodeBody>, JsonRejection>,
) -> Result<Json<CodeSent>, ApiError> {
    let id: ContactId = parse_id(&id, "contact")?;
    let Json(body) = body?;
    let address: Handle = parse_field(&format!("email:{}", body.address.trim()), "address")?;
    let root = {
        let directory = ingest
            .directory()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let (root, record) = directory
            .state()
            .contact(id)
            .filter(|(_, record)| !record.erased)
            .ok_or_else(|| ApiError::not_found(format!("no contact `{id}`")))?;
        if record.handles.contains(&address) {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "already_linked",
                format!("{address} is a handle of this contact already"),
            ));
        }
        root
    };
    let now = crate::clock::now().as_millis();
    ingest
        .email_verification()
        .send(root, address.clone(), now)
        .await
        .map_err(verification_error)?;
    Ok(Json(CodeSent {
        sent_to: address,
        expires_at: now + crate::email_verification::CODE_LIFETIME.as_millis() as u64,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmCodeBody {
    code: String,
}

#[derive(Debug, Serialize)]
pub struct Verified {
    /// The address now linked.
    handle: Handle,
    /// The contact it is on (the one it belonged to already, which this one joined).
    contact: ContactId,
    events: Vec<EventId>,
}

/// `POST /api/v1/contacts/{id}/email-verification/confirm` `{"code"}`: the code the customer
/// read back. Right, the address becomes a handle of the contact; if it was another
/// contact's, this contact is merged into that one (the code proves they are the same
/// customer). The `unverified email` detail naming it goes.
pub async fn confirm_email_code(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(id): Path<String>,
    body: Result<Json<ConfirmCodeBody>, JsonRejection>,
) -> Result<Json<Verified>, ApiError> {
    let id: ContactId = parse_id(&id, "contact")?;
    let Json(body) = body?;
    let root = ingest
        .directory()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .state()
        .root_of(id);
    let now = crate::clock::now().as_millis();
    let handle = ingest
        .email_verification()
        .confirm(root, &body.code, now)
        .map_err(verification_error)?;
    // Who has the address now, once the code proved it.
    let owner = ingest
        .directory()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .state()
        .resolve(&handle);
    let mut events = Vec::new();
    let contact = match owner {
        Some(owner) if owner == root => root,
        Some(owner) => {
            events.extend(
                ingest
                    .change_directory(DirectoryAction::Merge {
                        from: root,
                        into: owner,
                    })
                    .await?,
            );
            owner
        }
        None => {
            events.extend(
                ingest
                    .change_directory(DirectoryAction::LinkHandle(root, handle.clone()))
                    .await?,
            );
            root
        }
    };
    // The note of the address, now a handle, goes.
    let key =
        AttributeKey::new("unverified email").map_err(|err| ApiError::internal(err.to_string()))?;
    let noted = ingest
        .directory()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .state()
        .contact(contact)
        .is_some_and(|(_, record)| {
            record.attributes.get(&key).map(String::as_str) == Some(handle.address())
        });
    if noted {
        events.extend(
            ingest
                .change_directory(DirectoryAction::SetAttribute {
                    contact,
                    key,
                    value: String::new(),
                })
                .await?,
        );
    }
    Ok(Json(Verified {
        handle,
        contact,
        events,
    }))
}

fn verification_error(err: crate::email_verification::VerificationError) -> ApiError {
    use crate::email_verification::VerificationError as E;
    use axum::http::StatusCode;
    let (status, code) = match &err {
        E::NoMail => (StatusCode::CONFLICT, "no_email"),
        E::TooSoon => (StatusCode::TOO_MANY_REQUESTS, "too_soon"),
        E::NotSent(_) => (StatusCode::BAD_GATEWAY, "mail_not_sent"),
        E::NoCode => (StatusCode::CONFLICT, "no_code"),
        E::WrongCode { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "wrong_code"),
    };
    ApiError::new(status, code, err.to_string())
}

#[derive(Debug, Deserialize)]
pub struct MergeQuery {
    from: String,
    into: String,
}

/// One side of a merge, as the agent compares them.
#[derive(Debug, Serialize)]
pub struct MergeSide {
    id: ContactId,
    display_name: Option<String>,
    handles: Vec<Handle>,
    attributes: std::collections::BTreeMap<String, String>,
    threads: usize,
}

#[derive(Debug, Serialize)]
pub struct MergePreview {
    from: MergeSide,
    into: MergeSide,
    /// Facts on record that link the two (empty: nothing does), calling `into` "this contact"
    /// and `from` "the other contact".
    evidence: Vec<String>,
}

/// `GET /api/v1/contacts/merge?from=id&into=id`: both contacts and what links them, to show
/// before `POST /api/v1/contacts/merge`. Changes nothing.
pub async fn merge_preview(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    query: Result<Query<MergeQuery>, QueryRejection>,
) -> Result<Json<MergePreview>, ApiError> {
    let Query(query) = query?;
    let from: ContactId = parse_field(&query.from, "contact id")?;
    let into: ContactId = parse_field(&query.into, "contact id")?;
    let (from, into) = {
        let directory = ingest
            .directory()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let state = directory.state();
        let live = |id: ContactId| {
            state
                .contact(id)
                .filter(|(_, record)| !record.erased)
                .map(|(root, record)| (root, record.clone(), state.same_customer(root)))
                .ok_or_else(|| ApiError::not_found(format!("no contact `{id}`")))
        };
        (live(from)?, live(into)?)
    };
    if from.0 == into.0 {
        return Err(ApiError::bad_request(
            "these are one contact already (merged before)",
        ));
    }
    // From the panel of the contact kept: "this contact", and "the other contact" merged in.
    let evidence = crate::contact_evidence::between(
        &crate::contact_evidence::Named {
            record: &from.1,
            label: "the other contact".to_owned(),
        },
        &crate::contact_evidence::Named {
            record: &into.1,
            label: "this contact".to_owned(),
        },
    );
    let side = |(id, record, members): (
        ContactId,
        threadline_protocol::directory::ContactRecord,
        Vec<ContactId>,
    )|
     -> Result<MergeSide, ApiError> {
        let mut threads = 0;
        for member in members {
            threads += ingest.store().contact_threads(&member)?.len();
        }
        Ok(MergeSide {
            id,
            display_name: crate::contact_name::of(&record),
            handles: record.handles.into_iter().collect(),
            attributes: record
                .attributes
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            threads,
        })
    };
    Ok(Json(MergePreview {
        from: side(from)?,
        into: side(into)?,
        evidence,
    }))
}
