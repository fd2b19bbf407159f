//! The Matrix bridge's application-service routes: the homeserver pushes transactions to
//! `PUT /_matrix/app/v1/transactions/{txnId}` (and the legacy `/transactions/{txnId}`) and
//! pings `POST /_matrix/app/v1/ping`. The answer is `200 {}` only once everything in a
//! transaction is durable; `503` asks the homeserver to send it again.

use std::collections::HashMap;
use std::sync::Arc;

use axum::{
    extract::{Path, Query, Request},
    http::{header::AUTHORIZATION, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{post, put},
    Json, Router,
};
use threadline_bridges::matrix::{Matrix, MatrixRefusal, MAX_TRANSACTION_BYTES};
use threadline_bridges::sdk::NodeLink;
use tracing::warn;

/// The routes of the Matrix bridge, if it runs.
pub fn router<L: NodeLink + 'static>(matrix: Option<Arc<Matrix<L>>>) -> Router {
    let Some(matrix) = matrix else {
        return Router::new();
    };
    let pushed = {
        let matrix = Arc::clone(&matrix);
        move |Path(txn_id): Path<String>,
              Query(query): Query<HashMap<String, String>>,
              request: Request| {
            let matrix = Arc::clone(&matrix);
            async move {
                let (headers, body) =
                    match super::webhooks::raw_body(request, MAX_TRANSACTION_BYTES).await {
                        Ok(delivery) => delivery,
                        Err(refused) => return refused,
                    };
                let token = token(&headers, &query);
                answer(matrix.take_transaction(&txn_id, token, &body).await)
            }
        }
    };
    let ping = move |Query(query): Query<HashMap<String, String>>, headers: HeaderMap| {
        let matrix = Arc::clone(&matrix);
        async move { answer(matrix.ping(token(&headers, &query))) }
    };
    Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", put(pushed.clone()))
        .route("/transactions/{txn_id}", put(pushed))
        .route("/_matrix/app/v1/ping", post(ping))
}

/// The homeserver's token: `Authorization: Bearer`, or the legacy `access_token` query.
fn token<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .or_else(|| query.get("access_token").map(String::as_str))
}

fn answer(taken: Result<(), MatrixRefusal>) -> Response {
    match taken {
        Ok(()) => (StatusCode::OK, Json(serde_json::json!({}))).into_response(),
        Err(refusal) => {
            let (status, errcode) = refusal.status();
            warn!(cause = %refusal, "matrix: a transaction not taken");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            let body = serde_json::json!({ "errcode": errcode, "error": refusal.to_string() });
            (status, Json(body)).into_response()
        }
    }
}
