//! The HTTP API: JSON under `/api/v1`, for agents (threads, contacts, live stream) and for
//! bridges (resolve a handle, submit signed events, take deliveries).
//!
//! Every request carries `Authorization: Bearer <token>`. Errors are JSON
//! `{"error": {"code": "...", "message": "..."}}` with a stable `code` and a fitting HTTP
//! status; a refused request changes nothing. One file per resource under `api/`.

mod agents;
mod attachments;
pub mod auth;
mod bridge;
mod canned;
mod contacts;
mod error;
mod inbox;
pub mod matrix;
mod outbound_webhooks;
mod reports;
mod search;
mod stream;
mod teams;
mod threads;
pub mod throttle;
mod views;
pub mod webchat;
pub mod webhooks;

use axum::{extract::DefaultBodyLimit, routing::get, routing::post, Router};

pub use contacts::record as contact_record;
pub use error::ApiError;
pub use outbound_webhooks::payload as webhook_payload;

use crate::ingest::Ingest;

/// Largest request body. A batch of bridge events (hex-encoded, up to 256 KiB each) fits a few
/// large ones or many small ones; an agent's reply is far smaller.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The node's router: the API over the ingest pipeline, and the web chat when it is on.
pub fn router(
    ingest: Ingest,
    webchat: Option<webchat::WebchatHost<crate::bridge_host::LocalLink>>,
) -> Router {
    let throttle = throttle::Throttle::new(Some(ingest.store().clone()));
    let api = api_router(ingest);
    let app = match webchat {
        Some(host) => webchat::router(host).merge(api),
        None => api,
    };
    // After the merge, so that every route, the web chat's too, answers 405 in JSON.
    let app = app.method_not_allowed_fallback(error::method_not_allowed);
    // Last, so that every route is behind it: each caller's share of requests in flight, and
    // request bodies held to a minimum rate.
    app.layer(axum::middleware::from_fn_with_state(
        throttle,
        throttle::admit,
    ))
}

fn api_router(ingest: Ingest) -> Router {
    Router::new()
        .merge(inbox::router())
        .route("/api/v1/me", get(agents::me))
        .route("/api/v1/agents", get(agents::list).post(agents::add))
        .route("/api/v1/agents/{id}/revoke", post(agents::revoke))
        .route("/api/v1/agents/{id}/token", post(agents::reset_token))
        .route("/api/v1/agents/{id}/role", post(agents::set_role))
        .route("/api/v1/replication", get(agents::replication))
        .route("/api/v1/threads", get(threads::list))
        .route("/api/v1/threads/counts", get(threads::counts))
        .route("/api/v1/threads/{id}", get(threads::show))
        .route("/api/v1/threads/{id}/replies", post(threads::reply))
        .route(
            "/api/v1/threads/{id}/replies/preview",
            post(threads::preview_reply),
        )
        .route(
            "/api/v1/threads/{id}/events/{event}/attachments/{n}",
            get(attachments::download),
        )
        .route(
            "/api/v1/threads/{id}/events/{event}/original",
            get(attachments::original),
        )
        .route(
            "/api/v1/attachments",
            post(attachments::upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v1/bridge/blobs",
            post(attachments::bridge_upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v1/bridge/blobs/{blob}",
            get(attachments::bridge_download),
        )
        .route("/api/v1/threads/{id}/notes", post(threads::note))
        .route("/api/v1/threads/{id}/assign", post(threads::assign))
        .route("/api/v1/threads/{id}/team", post(threads::team))
        .route("/api/v1/teams", get(teams::list))
        .route("/api/v1/webhooks", get(outbound_webhooks::list))
        .route(
            "/api/v1/webhooks/{name}",
            axum::routing::put(outbound_webhooks::set).delete(outbound_webhooks::remove),
        )
        .route(
            "/api/v1/webhooks/{name}/deliveries",
            get(outbound_webhooks::deliveries),
        )
        .route(
            "/api/v1/teams/{name}",
            axum::routing::put(teams::set).delete(teams::remove),
        )
        .route("/api/v1/threads/{id}/status", post(threads::status))
        .route("/api/v1/threads/{id}/handoff", post(threads::hand_off))
        .route("/api/v1/threads/{id}/labels", post(threads::labels))
        .route("/api/v1/threads/{id}/typing", post(threads::typing))
        .route("/api/v1/threads/{id}/read", post(threads::read))
        .route("/api/v1/threads/{id}/members", post(threads::members))
        .route(
            "/api/v1/canned-replies",
            get(canned::list).post(canned::set),
        )
        .route(
            "/api/v1/canned-replies/{shortcode}",
            axum::routing::delete(canned::remove),
        )
        .route("/api/v1/contacts", get(contacts::search))
        .route("/api/v1/search", get(search::messages))
        .route("/api/v1/reports", get(reports::report))
        .route(
            "/api/v1/reports/conversations.csv",
            get(reports::conversations_csv),
        )
        .route(
            "/api/v1/contacts/merge",
            get(contacts::merge_preview).post(contacts::merge),
        )
        .route("/api/v1/contacts/{id}", get(contacts::show))
        .route("/api/v1/contacts/{id}/handles", post(contacts::link_handle))
        .route(
            "/api/v1/contacts/{id}/email-verification",
            post(contacts::send_email_code),
        )
        .route(
            "/api/v1/contacts/{id}/email-verification/confirm",
            post(contacts::confirm_email_code),
        )
        .route(
            "/api/v1/contacts/{id}/attributes",
            post(contacts::set_attribute),
        )
        .route("/api/v1/stream", get(stream::stream))
        .route("/api/v1/bridge/resolve", post(bridge::resolve))
        .route("/api/v1/bridge/events", post(bridge::submit))
        .route("/api/v1/bridge/deliveries", get(bridge::deliveries))
        .route("/api/v1/bridge/deliveries/{seq}/ack", post(bridge::ack))
        .route("/api/v1/bridge/conversation", get(bridge::conversation))
        .route(
            "/api/v1/bridge/threads/{id}/messages",
            get(bridge::thread_messages),
        )
        .route("/api/v1/bridge/identify", post(bridge::identify))
        .route("/api/v1/bridge/consent", post(bridge::consent))
        .route("/api/v1/bridge/typing", post(bridge::typing))
        .route("/api/v1/bridge/handoff-codes", post(bridge::handoff_code))
        .route(
            "/api/v1/bridge/handoff-codes/redeem",
            post(bridge::redeem_handoff_code),
        )
        .route("/api/v1/bridge/presence", get(bridge::presence))
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(ingest)
}
