//! `GET /api/v1/stream`: server-sent events of what changes, so an inbox updates without
//! polling. Each `change` is `{"scope": "thread:<id>", "event": "<id>", "kind": "..."}`; a
//! subscriber that falls more than `ingest::LIVE_BUFFER` events behind gets a `lagged` event and
//! should reload. `typing` (`{"thread": "<id>"}`) says a customer is typing there. An open
//! stream counts as an agent at the inbox (customers' chats say when nobody is).

use std::convert::Infallible;
use std::time::Duration;

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use tokio_stream::{wrappers::BroadcastStream, Stream, StreamExt as _};

use super::auth::AgentCaller;
use crate::ingest::Ingest;
use crate::presence::Typing;

/// Keep-alive comments keep idle connections open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn stream(
    AgentCaller(agent): AgentCaller,
    State(ingest): State<Ingest>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let closing = ingest.clone();
    let here = ingest.presence().agent_arrived(agent);
    let typing =
        BroadcastStream::new(ingest.presence().subscribe_typing()).filter_map(
            |signal| match signal {
                Ok(Typing::Customer(thread)) => Some(Ok(Event::default()
                    .event("typing")
                    .data(serde_json::json!({ "thread": thread }).to_string()))),
                _ => None,
            },
        );
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
    let events = futures_util::stream::select(events, typing);
    // End the stream when the node shuts down, so that graceful shutdown can finish. The agent
    // is at the inbox as long as the stream is open.
    let events = futures_util::StreamExt::take_until(events, async move {
        closing.closing().await;
        drop(here);
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
