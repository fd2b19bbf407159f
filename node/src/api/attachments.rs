//! Attachment bytes: agents and bridges upload them before the event that refers to them
//! (`POST /api/v1/attachments`, `POST /api/v1/bridge/blobs`, raw bytes in, `{blob, size}`
//! out), and read them back: an agent any event's, by thread, event and position; a bridge
//! those of the threads whose replies go to its channel.
//!
//! Bytes are served as downloads (`Content-Disposition: attachment`, `nosniff`), except a few
//! image types shown inline: a customer's file never runs as a page of the node's origin.

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use threadline_protocol::{event::Attachment, id::BlobHash, EventId, ScopeId, ThreadId};

use super::auth::{AgentCaller, BridgeCaller};
use super::throttle::{is_too_slow, Admission};
use super::views::parse_id;
use super::ApiError;
use crate::ingest::Ingest;
use crate::store::{BlobError, StoreError};

/// Media types an inbox may show inline (raster images: no scripts in them).
const INLINE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
/// The longest reading an upload may take, once it has its turn (it must also keep up the
/// minimum rate of every request body: see [`super::throttle`]).
const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// Bytes read from a file per part of a download (downloads are streamed).
const DOWNLOAD_PART: usize = 64 * 1024;

/// What an upload stored.
#[derive(Debug, Serialize)]
pub struct Stored {
    /// The blob's hash, to put in an attachment.
    blob: BlobHash,
    /// Its size in bytes.
    size: u64,
}

/// Reads an upload (each at most the protocol's limit; in one of the caller's upload slots,
/// within the node's upload memory) and stores it, off the async threads.
async fn store_blob(
    ingest: &Ingest,
    admission: &Admission,
    headers: &HeaderMap,
    body: Body,
) -> Result<Json<Stored>, ApiError> {
    let max = threadline_protocol::limits::MAX_BLOB_BYTES;
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let too_large = || {
        ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("an attachment is at most {max} bytes"),
        )
    };
    // What the upload announces, to reserve that much (no more than the limit: an upload over
    // it is read up to the limit and refused then, so that a client that writes its whole
    // body before it reads an answer still gets it).
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let _turn = admission.upload(announced, max).await?;
    // A client that stalls is cut (the minimum rate), and so gives its turn up.
    let read = tokio::time::timeout(UPLOAD_TIMEOUT, axum::body::to_bytes(body, limit));
    let bytes = read
        .await
        .map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the upload took longer than {UPLOAD_TIMEOUT:?}"),
            )
        })?
        .map_err(|err| {
            let source = std::error::Error::source(&err);
            if source.is_some_and(|source| source.is::<http_body_util::LengthLimitError>()) {
                too_large()
            } else if is_too_slow(&err) {
                ApiError::too_slow()
            } else {
                ApiError::bad_request(format!("the upload was cut short: {err}"))
            }
        })?;
    let store = ingest.store().clone();
    let size = bytes.len() as u64;
    let stored = tokio::task::spawn_blocking(move || store.blobs().put(&bytes))
        .await
        .map_err(|err| ApiError::internal(format!("storing task failed: {err}")))?;
    match stored {
        Ok(blob) => Ok(Json(Stored { blob, size })),
        Err(err @ BlobError::TooLarge { .. }) => Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            err.to_string(),
        )),
        Err(err) => Err(ApiError::internal(err.to_string())),
    }
}

/// `POST /api/v1/attachments` (raw bytes): an agent's file, for a reply's `attachments`.
pub async fn upload(
    _caller: AgentCaller,
    admission: Admission,
    State(ingest): State<Ingest>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Stored>, ApiError> {
    store_blob(&ingest, &admission, &headers, body).await
}

/// `POST /api/v1/bridge/blobs` (raw bytes): a customer's file, before the message that
/// carries it.
pub async fn bridge_upload(
    BridgeCaller(channel): BridgeCaller,
    admission: Admission,
    State(ingest): State<Ingest>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Stored>, ApiError> {
    let stored = store_blob(&ingest, &admission, &headers, body).await?;
    // Only the channel that sent the bytes may refer to them (a hash alone opens nothing).
    let store = ingest.store().clone();
    let blob = stored.blob;
    tokio::task::spawn_blocking(move || store.record_upload(channel, &blob))
        .await
        .map_err(|err| ApiError::internal(format!("recording task failed: {err}")))??;
    Ok(stored)
}

/// `GET /api/v1/threads/{id}/events/{event}/attachments/{n}`: the `n`th file of an event.
/// `404` for no such attachment (or an erased one); `503 not_yet` while its bytes are still
/// on their way from the node that has them.
pub async fn download(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path((thread, event, n)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let thread: ThreadId = parse_id(&thread, "thread")?;
    let event: EventId = parse_id(&event, "event")?;
    let missing = || ApiError::not_found(format!("no attachment `{n}` on event {event}"));
    let n: usize = n.parse().map_err(|_| missing())?;
    let attachment = ingest
        .store()
        .event(&ScopeId::Thread(thread), &event)?
        .and_then(|event| event.content)
        .and_then(|content| content.attachments.into_iter().nth(n))
        .ok_or_else(missing)?;
    serve_stored(&ingest, attachment).await
}

/// `GET /api/v1/threads/{id}/events/{event}/original`: a message exactly as the app delivered
/// it (a mail's raw bytes, `message/rfc822`), always as a download. `404` for a message kept
/// without one (or erased); `503 not_yet` as for an attachment.
pub async fn original(
    _caller: AgentCaller,
    State(ingest): State<Ingest>,
    Path((thread, event)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let thread: ThreadId = parse_id(&thread, "thread")?;
    let event: EventId = parse_id(&event, "event")?;
    let original = ingest
        .store()
        .event(&ScopeId::Thread(thread), &event)?
        .and_then(|event| event.content)
        .and_then(|content| content.original.map(|original| *original))
        .ok_or_else(|| ApiError::not_found(format!("no original kept for event {event}")))?;
    serve_stored(&ingest, original).await
}

/// The bytes of a stored file, or `503 not_yet` while they are on their way from a peer.
async fn serve_stored(ingest: &Ingest, attachment: Attachment) -> Result<Response, ApiError> {
    let bytes = open_blob(ingest, attachment.blob).await?.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_yet",
            format!(
                "attachment {} is not on this node yet (it is fetched from the node that has it)",
                attachment.blob
            ),
        )
    })?;
    Ok(serve(&attachment, bytes))
}

/// `GET /api/v1/bridge/blobs/{hash}`: a file of a thread whose replies go to the bridge's
/// channel (`404` for any other, as for one the node does not have).
pub async fn bridge_download(
    BridgeCaller(channel): BridgeCaller,
    State(ingest): State<Ingest>,
    Path(blob): Path<String>,
) -> Result<Response, ApiError> {
    let blob: BlobHash = parse_id(&blob, "blob")?;
    let store = ingest.store().clone();
    let allowed = tokio::task::spawn_blocking(move || {
        crate::conversation::blob_for_channel(&store, &blob, channel)
    })
    .await
    .map_err(|err| ApiError::internal(format!("reading task failed: {err}")))??;
    let not_found = || ApiError::not_found(format!("no attachment {blob} for {channel}"));
    if !allowed {
        return Err(not_found());
    }
    let body = open_blob(&ingest, blob).await?.ok_or_else(not_found)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

/// A blob's bytes as a streamed body (a part at a time, opened as it is read: not the whole
/// file in memory).
async fn open_blob(ingest: &Ingest, blob: BlobHash) -> Result<Option<Body>, ApiError> {
    let store = ingest.store().clone();
    let first = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.blobs().read_range(&blob, 0, DOWNLOAD_PART))
            .await
            .map_err(|err| ApiError::internal(format!("reading task failed: {err}")))?
            .map_err(StoreError::from)?
    };
    let Some((size, first)) = first else {
        return Ok(None);
    };
    let parts = futures_util::stream::unfold(
        (Some(first), first_len(size), store),
        move |(ready, offset, store)| async move {
            if let Some(part) = ready {
                return Some((Ok::<_, std::io::Error>(part), (None, offset, store)));
            }
            if offset >= size {
                return None;
            }
            let reader = store.clone();
            let read = tokio::task::spawn_blocking(move || {
                reader.blobs().read_range(&blob, offset, DOWNLOAD_PART)
            })
            .await;
            match read {
                Ok(Ok(Some((_, part)))) if !part.is_empty() => {
                    let next = offset + part.len() as u64;
                    Some((Ok(part), (None, next, store)))
                }
                Ok(Ok(_)) => None,
                Ok(Err(err)) => Some((Err(std::io::Error::other(err)), (None, size, store))),
                Err(err) => Some((Err(std::io::Error::other(err)), (None, size, store))),
            }
        },
    );
    Ok(Some(Body::from_stream(parts)))
}

/// Where the second part of a download starts.
fn first_len(size: u64) -> u64 {
    size.min(DOWNLOAD_PART as u64)
}

/// The bytes of `attachment` as a response: its media type if it is one shown inline, else
/// a download under its name.
pub(crate) fn serve(attachment: &Attachment, bytes: Body) -> Response {
    let media_type = attachment.media_type.as_str().to_ascii_lowercase();
    let inline = INLINE_TYPES.contains(&media_type.as_str());
    let content_type = if inline {
        media_type
    } else {
        "application/octet-stream".to_owned()
    };
    // RFC 6266: an ASCII fallback and the UTF-8 name, percent-encoded.
    let name = attachment.name.as_str();
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let disposition = format!(
        "{}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}",
        if inline { "inline" } else { "attachment" }
    );
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    let value = |text: String| {
        HeaderValue::from_str(&text)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
    };
    headers.insert(header::CONTENT_TYPE, value(content_type));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition)
            .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    response
}
