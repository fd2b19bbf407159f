//! `GET /api/v1/search`: full-text search of messages (see [`crate::message_search`]).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use threadline_protocol::{AgentId, EventId, ScopeId, ThreadId};

use super::auth::AgentCaller;
use super::error::ApiError;
use super::views::{ThreadFilters, ThreadView};
use crate::ingest::Ingest;
use crate::message_search::{MessageQuery, Progress, MAX_QUERY_WORDS};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// The longest query, in bytes.
const MAX_QUERY_BYTES: usize = 512;
/// Characters of a message shown around what was found.
const SNIPPET_CHARS: usize = 160;
/// Index hits read per round while filters on the thread (status, assignee, label) drop some.
const ROUND: usize = 200;
/// Index hits read for one page at most: a page may come back short, with a cursor to go on.
const MAX_SCANNED: usize = 2_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The words.
    q: String,
    channel: Option<String>,
    status: Option<String>,
    /// An agent id, or `none`.
    assignee: Option<String>,
    /// A team's name.
    team: Option<String>,
    label: Option<String>,
    /// Written at or after (ms since the epoch).
    from: Option<u64>,
    /// Written before (ms since the epoch).
    to: Option<u64>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// A part of a snippet.
#[derive(Debug, Serialize)]
pub struct SnippetPart {
    text: String,
    /// Whether this part is what the query found.
    #[serde(rename = "match")]
    found: bool,
}

/// A message found.
#[derive(Debug, Serialize)]
pub struct FoundMessage {
    /// The message's event.
    event: EventId,
    /// Its kind (`thread.message.inbound`, `thread.message.outbound`, `thread.note`,
    /// `thread.auto_reply`).
    kind: &'static str,
    /// When it was written (ms since the epoch).
    time: u64,
    /// The agent who wrote it.
    agent: Option<AgentId>,
    /// Its text around what was found.
    snippet: Vec<SnippetPart>,
    /// Its thread, as now.
    thread: ThreadView,
}

#[derive(Debug, Serialize)]
pub struct SearchResult {
    messages: Vec<FoundMessage>,
    /// Pass as `cursor` for more; `null` when there is no more.
    next_cursor: Option<String>,
    /// Whether the index holds every message yet (it is built at each start).
    index: Progress,
}

/// `GET /api/v1/search?q=&channel=&status=&assignee=&label=&from=&to=&cursor=&limit=`:
/// messages of every thread with all the words of `q` (the last may be the start of a word;
/// `"quoted phrases"` match as written), newest first.
pub async fn messages(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<SearchResult>, ApiError> {
    let Query(query) = query?;
    let text = query.q.trim();
    if text.is_empty() {
        return Err(ApiError::bad_request(
            "q is empty: give words to search for",
        ));
    }
    if text.len() > MAX_QUERY_BYTES {
        return Err(ApiError::bad_request(format!(
            "q is {} bytes; at most {MAX_QUERY_BYTES} (and {MAX_QUERY_WORDS} words are used)",
            text.len()
        )));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let ThreadFilters {
        status,
        assignee,
        channel,
    } = ThreadFilters::parse(
        query.status.as_deref(),
        query.assignee.as_deref(),
        query.channel.as_deref(),
    )?;
    if let (Some(from), Some(to)) = (query.from, query.to) {
        if from >= to {
            return Err(ApiError::bad_request("from must be before to"));
        }
    }
    let mut offset: usize = match query.cursor.as_deref() {
        None => 0,
        Some(cursor) => cursor.parse().map_err(|_| {
            ApiError::bad_request(format!("cursor `{cursor}` is not one this search gave"))
        })?,
    };
    // The thread's filters are read from the thread as it is now.
    let thread_filter = crate::thread_index::Filter {
        status,
        assignee,
        team: query.team.as_deref(),
        channel: None,
        label: query.label.as_deref(),
        contacts: None,
    };
    let message_query = MessageQuery {
        text: text.to_owned(),
        channel,
        from: query.from,
        until: query.to,
    };
    let search = ingest.message_search();
    let mut messages = Vec::new();
    let mut scanned = 0;
    let mut more = true;
    while messages.len() < limit && scanned < MAX_SCANNED && more {
        let hits = search
            .hits(&message_query, offset, ROUND)
            .map_err(|err| ApiError::internal(err.to_string()))?;
        more = hits.len() == ROUND;
        for hit in hits {
            offset += 1;
            scanned += 1;
            if let Some(found) = found(&ingest, &thread_filter, text, hit.thread, hit.event)? {
                messages.push(found);
                if messages.len() == limit {
                    break;
                }
            }
        }
    }
    // More may follow when the page is full or the scan stopped short of the end.
    let next_cursor = (more || messages.len() == limit).then(|| offset.to_string());
    Ok(Json(SearchResult {
        messages,
        next_cursor,
        index: search.progress(),
    }))
}

/// A hit as shown, read from the store (so a message erased since it was indexed is not
/// shown), if its thread passes `filter`.
fn found(
    ingest: &Ingest,
    filter: &crate::thread_index::Filter<'_>,
    text: &str,
    thread: ThreadId,
    id: EventId,
) -> Result<Option<FoundMessage>, ApiError> {
    // The thread's filters from the thread list's index (no read), once it is built.
    let kept = ingest
        .thread_index()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keeps(&thread, filter);
    if kept == Some(false) {
        return Ok(None);
    }
    let Some(state) = ingest.store().thread_state(&thread)? else {
        return Ok(None);
    };
    if kept.is_none() && !filter.keeps_state(&state) {
        return Ok(None);
    }
    let Some(event) = ingest.store().event(&ScopeId::Thread(thread), &id)? else {
        return Ok(None);
    };
    let Some(content) = &event.content else {
        return Ok(None);
    };
    let mut words = content.text.clone();
    if let Some(subject) = &content.subject {
        words = format!("{subject}\n{words}");
    }
    let snippet = ingest
        .message_search()
        .snippet(text, &words, SNIPPET_CHARS)
        .into_iter()
        .map(|(text, found)| SnippetPart { text, found })
        .collect();
    let header = event.header();
    Ok(Some(FoundMessage {
        event: id,
        kind: header.kind.name(),
        time: header.author_time.as_millis(),
        agent: header.agent,
        snippet,
        thread: ThreadView::new(thread, &state, ingest)?,
    }))
}
