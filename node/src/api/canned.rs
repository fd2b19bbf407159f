//! `/api/v1/canned-replies`: the org's canned replies, which agents insert by shortcode. Each
//! is a signed directory event (`SetCannedReply`), so every node of the org has them. The text
//! may hold `{contact.name}` and `{agent.name}`, which the inbox fills in when it inserts it.

use std::sync::PoisonError;

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    Json,
};
use serde::{Deserialize, Serialize};
use threadline_protocol::{name::Shortcode, EventId};

use super::auth::AgentCaller;
use super::ApiError;
use crate::ingest::{DirectoryAction, Ingest};
use crate::limits::{MAX_CANNED_REPLY_BYTES, MAX_SHORTCODE_BYTES};

/// One canned reply.
#[derive(Debug, Serialize)]
pub struct CannedReply {
    shortcode: String,
    text: String,
}

#[derive(Debug, Serialize)]
pub struct CannedReplies {
    /// By shortcode.
    replies: Vec<CannedReply>,
}

/// `GET /api/v1/canned-replies`.
pub async fn list(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
) -> Result<Json<CannedReplies>, ApiError> {
    let directory = ingest
        .directory()
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    let replies = directory
        .state()
        .canned_replies
        .iter()
        .map(|(shortcode, text)| CannedReply {
            shortcode: shortcode.to_string(),
            text: text.clone(),
        })
        .collect();
    Ok(Json(CannedReplies { replies }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBody {
    shortcode: String,
    text: String,
}

#[derive(Debug, Serialize)]
pub struct Done {
    events: Vec<EventId>,
}

/// `POST /api/v1/canned-replies` `{"shortcode": "refund", "text": "..."}`: adds a canned
/// reply or changes its text.
pub async fn set(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    body: Result<Json<SetBody>, JsonRejection>,
) -> Result<Json<Done>, ApiError> {
    let Json(body) = body?;
    let shortcode = shortcode(&body.shortcode)?;
    let text = body.text.trim();
    if text.is_empty() {
        return Err(ApiError::bad_request(
            "the text is empty (DELETE /api/v1/canned-replies/{shortcode} removes a reply)",
        ));
    }
    if text.len() > MAX_CANNED_REPLY_BYTES {
        return Err(ApiError::bad_request(format!(
            "the text is {} bytes; a canned reply has at most {MAX_CANNED_REPLY_BYTES}",
            text.len()
        )));
    }
    let events = ingest
        .change_directory(DirectoryAction::SetCannedReply {
            shortcode,
            text: text.to_owned(),
        })
        .await?;
    Ok(Json(Done { events }))
}

/// `DELETE /api/v1/canned-replies/{shortcode}`.
pub async fn remove(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path(code): Path<String>,
) -> Result<Json<Done>, ApiError> {
    let shortcode = shortcode(&code)?;
    let known = ingest
        .directory()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .state()
        .canned_replies
        .contains_key(&shortcode);
    if !known {
        return Err(ApiError::not_found(format!("no canned reply `{code}`")));
    }
    let events = ingest
        .change_directory(DirectoryAction::SetCannedReply {
            shortcode,
            text: String::new(),
        })
        .await?;
    Ok(Json(Done { events }))
}

/// A shortcode as agents type it after `/`: 1 to [`MAX_SHORTCODE_BYTES`] lower-case letters,
/// digits, `-` and `_`.
fn shortcode(text: &str) -> Result<Shortcode, ApiError> {
    super::views::org_name(text, "shortcode", MAX_SHORTCODE_BYTES, |t| {
        Shortcode::new(t)
    })
}
