//! `GET /api/v1/stream`: server-sent events of what changes, so an inbox updates without
//! polling. Each message is `{"scope": "thread:<id>", "event": "<id>", "kind": "..."}`; a
//! subscriber that falls more than `ingest::LIVE_BUFFER` events behind gets a `lagged` event and
//! should reload.

use std::convert::Infallible;
use std::time::Duration;

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use tokio_stream::{wrappers::BroadcastStream, Stream, StreamExt as _};

use super::auth::AgentCaller;
use crate::ingest::Ingest;

/// Keep-alive comments keep idle connections open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn stream(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let closing = ingest.clone();
    let events = BroadcastStream::new(ingest.subscribe()).map(|item| {
        Ok(match item {
            Ok(live) => Event::default().event("change").data(
                serde_json::json!({
                    "scope": live.scope.to_string(),
                    "event": live.event,
                    "kind": live.kind,
                })
                .to_string(),
            ),
            Err(_lagged) => Event::default().event("lagged").data("{}"),
        })
    });
    // End the stream when the node shuts down, so that graceful shutdown can finish.
    let events =
        futures_util::StreamExt::take_until(events, async move { closing.closing().await });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
