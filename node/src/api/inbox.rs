//! The agents' inbox: one page with its script and styles, served by the node (plain JS and
//! CSS, no build step). It signs in with an agent token and uses the agent API and its live
//! stream like any other client.

use axum::{
    http::header,
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Router,
};

const INDEX_HTML: &str = include_str!("../../assets/inbox/index.html");
const INBOX_JS: &str = include_str!("../../assets/inbox/inbox.js");
const INBOX_CSS: &str = include_str!("../../assets/inbox/inbox.css");

/// The inbox's routes.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/inbox") }))
        .route(
            "/inbox",
            get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/inbox/inbox.js",
            get(|| async { page("application/javascript; charset=utf-8", INBOX_JS) }),
        )
        .route(
            "/inbox/inbox.css",
            get(|| async { page("text/css; charset=utf-8", INBOX_CSS) }),
        )
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // The inbox shows customers' messages: no framing by other sites.
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}
