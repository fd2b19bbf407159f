//! A local stand-in for the parts of Slack's Web API the Slack bridge uses, for end-to-end
//! tests: no Slack server can be reached from here. It answers as Slack documents
//! (<https://api.slack.com/web>): `200` with `{"ok": true, …}` or `{"ok": false, "error": …}`.
//!
//! - `POST /api/chat.postMessage` (JSON: `channel`, `text`, `thread_ts`);
//! - `POST /api/files.getUploadURLExternal` (form: `filename`, `length`) → an `upload_url`
//!   on the stand-in and a `file_id`; `POST` of the bytes there; then
//!   `POST /api/files.completeUploadExternal` (JSON: `files`, `channel_id`, `thread_ts`);
//! - `GET` of a customer's file (`url_private_download`), with the bot token.
//!
//! Another token is `invalid_auth`; a channel the test archived ([`SlackStandin::archive`])
//! `is_archived`. [`sign`] and [`deliver_event`] sign and post Events API requests as Slack
//! does, and [`samples`] builds them from Slack's documented examples.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{KeyInit as _, Mac as _};
use serde_json::{json, Value};

/// A message or file the stand-in accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Post {
    /// The channel.
    pub channel: String,
    /// The text (a message), or the file's title (a file).
    pub text: String,
    /// The thread it went into.
    pub thread_ts: Option<String>,
    /// The file's bytes, for a file.
    pub file: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Shared {
    token: String,
    base: String,
    archived: HashSet<String>,
    customer_files: HashMap<String, Vec<u8>>,
    uploads: HashMap<String, Vec<u8>>,
    posts: Vec<Post>,
    next: u64,
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(shared: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stand-in, on a free loopback port; stopped on drop.
#[derive(Debug)]
pub struct SlackStandin {
    server: crate::graph::StandinServer,
    shared: SharedState,
}

impl SlackStandin {
    /// Starts it for the bot of `token`.
    pub fn start(token: &str) -> SlackStandin {
        let shared: SharedState = Arc::default();
        let state = Arc::clone(&shared);
        let server = crate::graph::StandinServer::start(|base| {
            *lock(&state) = Shared {
                token: token.to_owned(),
                base: base.to_owned(),
                ..Shared::default()
            };
            Router::new()
                .route("/api/{method}", post(method))
                .route("/upload/{file}", post(upload))
                .route("/files/{file}", get(customer_file))
                .with_state(state)
        });
        SlackStandin { server, shared }
    }

    /// `http://127.0.0.1:PORT/api`: the bridge's `api_url`.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.server.base)
    }

    /// A file a customer shared: its `url_private_download`.
    pub fn add_file(&self, bytes: &[u8]) -> String {
        let mut shared = lock(&self.shared);
        shared.next += 1;
        let id = format!("F0{}", shared.next);
        shared.customer_files.insert(id.clone(), bytes.to_vec());
        format!("{}/files/{id}", self.server.base)
    }

    /// Posts to `channel` fail from now on with `is_archived`.
    pub fn archive(&self, channel: &str) {
        lock(&self.shared).archived.insert(channel.to_owned());
    }

    /// Every message and file posted, in order.
    pub fn posts(&self) -> Vec<Post> {
        lock(&self.shared).posts.clone()
    }

    /// Waits until `pick` is true of the posts, and returns them.
    pub fn wait_for(
        &self,
        what: &str,
        within: Duration,
        pick: impl Fn(&[Post]) -> bool,
    ) -> Vec<Post> {
        let deadline = Instant::now() + within;
        loop {
            let posts = self.posts();
            if pick(&posts) {
                return posts;
            }
            assert!(
                Instant::now() < deadline,
                "not within {within:?}: {what}; posts: {posts:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn refused(error: &str) -> Response {
    Json(json!({"ok": false, "error": error})).into_response()
}

fn authorised(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        == Some(shared.token.as_str())
}

async fn method(
    State(shared): State<SharedState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut shared = lock(&shared);
    if !authorised(&shared, &headers) {
        return refused("invalid_auth");
    }
    let form = |name: &str| {
        String::from_utf8_lossy(&body)
            .split('&')
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")).map(str::to_owned))
    };
    let params: Value = serde_json::from_slice(&body).unwrap_or_default();
    match method.as_str() {
        "chat.postMessage" => {
            let (Some(channel), Some(text)) = (params["channel"].as_str(), params["text"].as_str())
            else {
                return refused("invalid_arguments");
            };
            if text.is_empty() {
                return refused("no_text");
            }
            if shared.archived.contains(channel) {
                return refused("is_archived");
            }
            shared.next += 1;
            let ts = format!("1767225600.{:06}", shared.next);
            shared.posts.push(Post {
                channel: channel.to_owned(),
                text: text.to_owned(),
                thread_ts: params["thread_ts"].as_str().map(str::to_owned),
                file: None,
            });
            Json(json!({"ok": true, "channel": channel, "ts": ts, "message": {"text": text, "ts": ts}})).into_response()
        }
        "files.getUploadURLExternal" => {
            let (Some(_filename), Some(_length)) = (form("filename"), form("length")) else {
                return refused("invalid_arguments");
            };
            shared.next += 1;
            let id = format!("F1{}", shared.next);
            Json(json!({"ok": true, "upload_url": format!("{}/upload/{id}", shared.base), "file_id": id})).into_response()
        }
        "files.completeUploadExternal" => {
            let Some(channel) = params["channel_id"].as_str() else {
                return refused("invalid_arguments");
            };
            if shared.archived.contains(channel) {
                return refused("is_archived");
            }
            let mut done = Vec::new();
            for file in params["files"].as_array().into_iter().flatten() {
                let id = file["id"].as_str().unwrap_or_default();
                let Some(bytes) = shared.uploads.remove(id) else {
                    return refused("file_not_found");
                };
                let post = Post {
                    channel: channel.to_owned(),
                    text: file["title"].as_str().unwrap_or_default().to_owned(),
                    thread_ts: params["thread_ts"].as_str().map(str::to_owned),
                    file: Some(bytes),
                };
                shared.posts.push(post);
                done.push(json!({"id": id}));
            }
            Json(json!({"ok": true, "files": done})).into_response()
        }
        _ => refused("unknown_method"),
    }
}

async fn upload(
    State(shared): State<SharedState>,
    Path(file): Path<String>,
    body: Bytes,
) -> Response {
    let len = body.len();
    lock(&shared).uploads.insert(file, body.to_vec());
    format!("OK - {len}").into_response()
}

async fn customer_file(
    State(shared): State<SharedState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let shared = lock(&shared);
    if !authorised(&shared, &headers) {
        return (axum::http::StatusCode::FORBIDDEN, "").into_response();
    }
    match shared.customer_files.get(&file) {
        Some(bytes) => bytes.clone().into_response(),
        None => (axum::http::StatusCode::NOT_FOUND, "").into_response(),
    }
}

/// `v0=` + hex HMAC-SHA256 of `v0:<timestamp>:<body>` under `secret`, as Slack signs.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts an Events API request to `url` with `signature` and `timestamp` headers (`None`: not
/// sent); the status and body.
pub fn deliver_event(
    url: &str,
    signature: Option<&str>,
    timestamp: Option<u64>,
    body: &[u8],
) -> (u16, String) {
    let mut request = ureq::post(url).set("Content-Type", "application/json");
    if let Some(signature) = signature {
        request = request.set("X-Slack-Signature", signature);
    }
    if let Some(timestamp) = timestamp {
        request = request.set("X-Slack-Request-Timestamp", &timestamp.to_string());
    }
    match request.send_bytes(body) {
        Ok(response) => (
            response.status(),
            response.into_string().unwrap_or_default(),
        ),
        Err(ureq::Error::Status(status, response)) => {
            (status, response.into_string().unwrap_or_default())
        }
        Err(err) => panic!("{url}: {err}"),
    }
}

/// Events built from Slack's documented examples (`message.im`, `message.channels`,
/// `url_verification`).
pub mod samples {
    use serde_json::{json, Value};

    fn callback(event: Value, event_id: &str) -> Vec<u8> {
        json!({
            "token": "XXYYZZ", "team_id": "T0001", "api_app_id": "A0001",
            "event": event, "type": "event_callback", "event_id": event_id,
            "event_time": 1_355_517_523, "authed_users": ["U0001"],
        })
        .to_string()
        .into_bytes()
    }

    /// A direct message to the app.
    pub fn im(user: &str, channel: &str, ts: &str, text: &str) -> Vec<u8> {
        callback(
            json!({"type": "message", "channel": channel, "user": user, "text": text, "ts": ts, "event_ts": ts, "channel_type": "im"}),
            &format!("Ev{}", ts.replace('.', "")),
        )
    }

    /// A message in a (Slack Connect) channel.
    pub fn channel(user: &str, channel: &str, ts: &str, text: &str) -> Vec<u8> {
        callback(
            json!({"type": "message", "channel": channel, "user": user, "text": text, "ts": ts, "event_ts": ts, "channel_type": "channel"}),
            &format!("Ev{}", ts.replace('.', "")),
        )
    }

    /// A direct message sharing a file.
    pub fn file_share(user: &str, channel: &str, ts: &str, name: &str, url: &str) -> Vec<u8> {
        callback(
            json!({"type": "message", "subtype": "file_share", "channel": channel, "user": user, "text": "", "ts": ts, "event_ts": ts, "channel_type": "im",
                "files": [{"id": "F0", "name": name, "mimetype": "image/png", "url_private_download": url}]}),
            &format!("Ev{}", ts.replace('.', "")),
        )
    }

    /// A bot's message (`bot_id` set).
    pub fn bot(channel: &str, ts: &str, text: &str) -> Vec<u8> {
        callback(
            json!({"type": "message", "subtype": "bot_message", "channel": channel, "bot_id": "B0001", "text": text, "ts": ts, "event_ts": ts}),
            &format!("Ev{}", ts.replace('.', "")),
        )
    }

    /// An edit of a direct message.
    pub fn changed(user: &str, channel: &str, ts: &str, edited_at: &str, text: &str) -> Vec<u8> {
        callback(
            json!({"type": "message", "subtype": "message_changed", "channel": channel, "ts": edited_at, "event_ts": edited_at, "channel_type": "im",
                "message": {"type": "message", "user": user, "text": text, "ts": ts, "edited": {"user": user, "ts": edited_at}}}),
            &format!("Ev{}", edited_at.replace('.', "")),
        )
    }

    /// The URL verification handshake.
    pub fn url_verification(challenge: &str) -> Vec<u8> {
        json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge, "type": "url_verification"})
            .to_string()
            .into_bytes()
    }
}
