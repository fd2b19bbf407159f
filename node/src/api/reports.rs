//! `GET /api/v1/reports` and `GET /api/v1/reports/conversations.csv` (admins): see
//! [`crate::reports`].

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::AdminCaller;
use super::error::ApiError;
use crate::ingest::Ingest;
use crate::reports::{Conversation, Report, DAY_MS, LATEST, MAX_DAYS};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanQuery {
    /// From (ms since the epoch, included); default: 30 days before `to`.
    from: Option<u64>,
    /// To (ms since the epoch, not included); default: now.
    to: Option<u64>,
}

/// The conversations started in the query's span, read off the store on a blocking thread.
async fn conversations(
    ingest: &Ingest,
    query: SpanQuery,
) -> Result<(Vec<Conversation>, u64, u64), ApiError> {
    let now = crate::clock::now().as_millis();
    let to = query.to.unwrap_or(now);
    let from = query.from.unwrap_or_else(|| to.saturating_sub(30 * DAY_MS));
    if from >= to {
        return Err(ApiError::bad_request("from must be before to"));
    }
    if to > LATEST {
        return Err(ApiError::bad_request(format!(
            "to must be at most {LATEST} (ms since the epoch)"
        )));
    }
    if to - from > MAX_DAYS * DAY_MS {
        return Err(ApiError::bad_request(format!(
            "a report spans at most {MAX_DAYS} days"
        )));
    }
    let (store, policy) = (ingest.store().clone(), ingest.sla());
    let found = tokio::task::spawn_blocking(move || {
        crate::reports::conversations(&store, &policy, from, to, now)
    })
    .await
    .map_err(|err| ApiError::internal(err.to_string()))??;
    Ok((found, from, to))
}

/// `GET /api/v1/reports?from=&to=`: the report over the conversations started in the span.
pub async fn report(
    _caller: AdminCaller,
    State(ingest): State<Ingest>,
    query: Result<Query<SpanQuery>, QueryRejection>,
) -> Result<Json<Report>, ApiError> {
    let Query(query) = query?;
    let (found, from, to) = conversations(&ingest, query).await?;
    Ok(Json(crate::reports::summarize(&found, from, to)))
}

/// `GET /api/v1/reports/conversations.csv?from=&to=`: one line per conversation started in
/// the span, as a download.
pub async fn conversations_csv(
    _caller: AdminCaller,
    State(ingest): State<Ingest>,
    query: Result<Query<SpanQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let (found, _, _) = conversations(&ingest, query).await?;
    let names = ingest
        .store()
        .agents()?
        .into_iter()
        .map(|agent| (agent.id, agent.name))
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"conversations.csv\"",
            ),
        ],
        crate::reports::csv(&found, &names),
    )
        .into_response())
}
