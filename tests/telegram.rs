//! A local stand-in for the parts of Telegram's Bot API the Telegram bridge uses, for
//! end-to-end tests: no Telegram server can be reached from here. It answers what the Bot API
//! documents (<https://core.telegram.org/bots/api>): every answer is `{"ok": true, "result":
//! …}` or `{"ok": false, "error_code": …, "description": …}` with that HTTP status.
//!
//! - `POST /bot<token>/getFile` `{"file_id"}` → a `File` with its `file_path`, and
//!   `GET /file/bot<token>/<file_path>` → the bytes ([`TelegramStandin::add_file`]);
//! - `POST /bot<token>/sendMessage` (JSON: `chat_id`, `text`, `reply_parameters`) → a
//!   `Message`; an empty text is `400 Bad Request: message text is empty`, one over 4,096
//!   characters `400 Bad Request: message is too long`;
//! - `POST /bot<token>/sendPhoto` and `/sendDocument` (`multipart/form-data`: `chat_id`, the
//!   file in `photo` / `document`) → a `Message`;
//! - `POST /bot<token>/sendChatAction` → `true`.
//!
//! Another token is `401 Unauthorized`; an unknown method `404 Not Found`; a chat the test
//! marked blocked ([`TelegramStandin::block`]) `403 Forbidden: bot was blocked by the user`.
//!
//! [`samples`] builds updates from the Bot API's documented shapes (the sample updates of
//! <https://core.telegram.org/bots/webhooks#testing-your-bot-with-updates>), and
//! [`deliver_update`] posts one as Telegram does, with the secret token header.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// A call the stand-in accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The method (`sendMessage`, `sendPhoto`, `sendDocument`, `sendChatAction`).
    pub method: String,
    /// The chat.
    pub chat_id: i64,
    /// The text, for `sendMessage`.
    pub text: Option<String>,
    /// The message replied to, from `reply_parameters`.
    pub reply_to: Option<i64>,
    /// The file's bytes and name, for `sendPhoto` / `sendDocument`.
    pub file: Option<(String, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct Shared {
    token: String,
    files: HashMap<String, (String, Vec<u8>)>,
    blocked: HashSet<i64>,
    calls: Vec<Call>,
    next_message: i64,
}

/// The stand-in, on a free loopback port; stopped on drop.
#[derive(Debug)]
pub struct TelegramStandin {
    server: crate::graph::StandinServer,
    shared: Arc<Mutex<Shared>>,
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(shared: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TelegramStandin {
    /// Starts it for the bot of `token`.
    pub fn start(token: &str) -> TelegramStandin {
        let shared = Arc::new(Mutex::new(Shared {
            token: token.to_owned(),
            next_message: 500,
            ..Shared::default()
        }));
        let state = Arc::clone(&shared);
        let server = crate::graph::StandinServer::start(|_| {
            Router::new()
                .route("/{bot}/{method}", post(method))
                .route("/file/{bot}/{*path}", get(file))
                .layer(DefaultBodyLimit::max(64 << 20))
                .with_state(state)
        });
        TelegramStandin { server, shared }
    }

    /// `http://127.0.0.1:PORT`: the bridge's `api_url`.
    pub fn base_url(&self) -> String {
        self.server.base.clone()
    }

    /// A file a customer sent: its `file_id` (what an update names).
    pub fn add_file(&self, name: &str, bytes: &[u8]) -> String {
        let mut shared = lock(&self.shared);
        let id = format!("AgACAgIAAxkBAAI{}", shared.files.len());
        shared
            .files
            .insert(id.clone(), (format!("documents/{name}"), bytes.to_vec()));
        id
    }

    /// Sends to `chat` fail from now on as for a user who blocked the bot.
    pub fn block(&self, chat: i64) {
        lock(&self.shared).blocked.insert(chat);
    }

    /// Every call accepted, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.shared).calls.clone()
    }

    /// Waits until `pick` is true of the calls accepted, and returns them.
    pub fn wait_for(
        &self,
        what: &str,
        within: Duration,
        pick: impl Fn(&[Call]) -> bool,
    ) -> Vec<Call> {
        let deadline = Instant::now() + within;
        loop {
            let calls = self.calls();
            if pick(&calls) {
                return calls;
            }
            assert!(
                Instant::now() < deadline,
                "not within {within:?}: {what}; calls: {calls:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn error(status: u16, description: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        Json(json!({"ok": false, "error_code": status.as_u16(), "description": description})),
    )
        .into_response()
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn message_of(shared: &mut Shared, chat: i64, extra: Value) -> Value {
    shared.next_message += 1;
    let mut message = json!({
        "message_id": shared.next_message,
        "date": 1_767_225_600,
        "chat": {"id": chat, "type": "private"},
    });
    if let (Some(message), Some(extra)) = (message.as_object_mut(), extra.as_object()) {
        message.extend(extra.clone());
    }
    message
}

async fn method(
    State(shared): State<SharedState>,
    Path((bot, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut shared = lock(&shared);
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        return error(401, "Unauthorized");
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (params, parts) = if content_type.starts_with("multipart/form-data") {
        let Some(parts) = crate::graph::parse_multipart(&content_type, &body) else {
            return error(400, "Bad Request: can't parse multipart");
        };
        let mut params = serde_json::Map::new();
        for part in &parts {
            if part.filename.is_none() {
                params.insert(
                    part.name.clone(),
                    Value::String(String::from_utf8_lossy(&part.data).into_owned()),
                );
            }
        }
        (Value::Object(params), parts)
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(params) => (params, Vec::new()),
            Err(_) => return error(400, "Bad Request: can't parse JSON"),
        }
    };
    let chat_id = match &params["chat_id"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    match method.as_str() {
        "getFile" => {
            let Some(id) = params["file_id"].as_str() else {
                return error(400, "Bad Request: file_id is required");
            };
            match shared.files.get(id) {
                Some((path, bytes)) => ok(json!({
                    "file_id": id, "file_unique_id": format!("u{id}"),
                    "file_size": bytes.len(), "file_path": path,
                })),
                None => error(400, "Bad Request: invalid file_id"),
            }
        }
        "sendMessage" | "sendPhoto" | "sendDocument" | "sendChatAction" => {
            let Some(chat) = chat_id else {
                return error(400, "Bad Request: chat_id is empty");
            };
            if shared.blocked.contains(&chat) {
                return error(403, "Forbidden: bot was blocked by the user");
            }
            let mut call = Call {
                method: method.clone(),
                chat_id: chat,
                text: None,
                reply_to: params["reply_parameters"]["message_id"].as_i64(),
                file: None,
            };
            let answer = match method.as_str() {
                "sendChatAction" => ok(json!(true)),
                "sendMessage" => {
                    let text = params["text"].as_str().unwrap_or_default();
                    if text.is_empty() {
                        return error(400, "Bad Request: message text is empty");
                    }
                    if text.chars().count() > 4096 {
                        return error(400, "Bad Request: message is too long");
                    }
                    call.text = Some(text.to_owned());
                    let message = message_of(&mut shared, chat, json!({"text": text}));
                    ok(message)
                }
                _ => {
                    let field = if method == "sendPhoto" {
                        "photo"
                    } else {
                        "document"
                    };
                    let Some(part) = parts
                        .iter()
                        .find(|p| p.name == field && p.filename.is_some())
                    else {
                        return error(
                            400,
                            &format!("Bad Request: there is no {field} in the request"),
                        );
                    };
                    call.file =
                        Some((part.filename.clone().unwrap_or_default(), part.data.clone()));
                    let message = message_of(
                        &mut shared,
                        chat,
                        json!({field: {"file_id": "sent", "file_unique_id": "sent"}}),
                    );
                    ok(message)
                }
            };
            shared.calls.push(call);
            answer
        }
        _ => error(404, "Not Found"),
    }
}

async fn file(
    State(shared): State<SharedState>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    let shared = lock(&shared);
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        return error(401, "Unauthorized");
    }
    match shared.files.values().find(|(stored, _)| *stored == path) {
        Some((_, bytes)) => bytes.clone().into_response(),
        None => error(404, "Not Found"),
    }
}

/// Posts `update` to the bridge's webhook `url` with `secret` in
/// `X-Telegram-Bot-Api-Secret-Token` (none: no header), as Telegram does; the status and body.
pub fn deliver_update(url: &str, secret: Option<&str>, update: &[u8]) -> (u16, String) {
    let mut request = ureq::post(url).set("Content-Type", "application/json");
    if let Some(secret) = secret {
        request = request.set("X-Telegram-Bot-Api-Secret-Token", secret);
    }
    match request.send_bytes(update) {
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

/// Updates built from the Bot API's documented shapes.
pub mod samples {
    use serde_json::{json, Value};

    fn user(id: i64, first: &str) -> Value {
        json!({"id": id, "is_bot": false, "first_name": first, "last_name": "Test Lastname", "username": "Test", "language_code": "en"})
    }

    fn private_chat(id: i64, first: &str) -> Value {
        json!({"id": id, "type": "private", "first_name": first, "last_name": "Test Lastname", "username": "Test"})
    }

    /// A text message in a private chat (the docs' "Message with text").
    pub fn text(update_id: u64, user_id: i64, message_id: i64, text: &str) -> Vec<u8> {
        json!({"update_id": update_id, "message": {
            "date": 1_441_645_532, "chat": private_chat(user_id, "Test"),
            "message_id": message_id, "from": user(user_id, "Test"), "text": text,
        }})
        .to_string()
        .into_bytes()
    }

    /// A text message answering an earlier one (the docs' "Forwarded/Reply" shape).
    pub fn reply(update_id: u64, user_id: i64, message_id: i64, to: i64, text: &str) -> Vec<u8> {
        json!({"update_id": update_id, "message": {
            "date": 1_441_645_532, "chat": private_chat(user_id, "Test"),
            "message_id": message_id, "from": user(user_id, "Test"), "text": text,
            "reply_to_message": {"date": 1_441_645_000, "chat": private_chat(user_id, "Test"),
                "message_id": to, "text": "Reply to this"},
        }})
        .to_string()
        .into_bytes()
    }

    /// An edited message (the docs' "Edited message").
    pub fn edited(update_id: u64, user_id: i64, message_id: i64, text: &str) -> Vec<u8> {
        json!({"update_id": update_id, "edited_message": {
            "date": 1_441_645_532, "chat": private_chat(user_id, "Test"),
            "message_id": message_id, "from": user(user_id, "Test"), "text": text,
            "edit_date": 1_441_646_600,
        }})
        .to_string()
        .into_bytes()
    }

    /// A photo (sizes of one file, largest last) with a caption.
    pub fn photo(
        update_id: u64,
        user_id: i64,
        message_id: i64,
        file_id: &str,
        caption: &str,
    ) -> Vec<u8> {
        json!({"update_id": update_id, "message": {
            "date": 1_441_645_532, "chat": private_chat(user_id, "Test"),
            "message_id": message_id, "from": user(user_id, "Test"), "caption": caption,
            "photo": [
                {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 90, "file_size": 1000},
                {"file_id": file_id, "file_unique_id": "l", "width": 800, "height": 800, "file_size": 5000},
            ],
        }})
        .to_string()
        .into_bytes()
    }

    /// A document.
    pub fn document(
        update_id: u64,
        user_id: i64,
        message_id: i64,
        file_id: &str,
        name: &str,
        mime: &str,
    ) -> Vec<u8> {
        json!({"update_id": update_id, "message": {
            "date": 1_441_645_532, "chat": private_chat(user_id, "Test"),
            "message_id": message_id, "from": user(user_id, "Test"),
            "document": {"file_id": file_id, "file_unique_id": "d", "file_name": name, "mime_type": mime, "file_size": 3},
        }})
        .to_string()
        .into_bytes()
    }

    /// A message in a group.
    pub fn group_text(update_id: u64, user_id: i64, group_id: i64, text: &str) -> Vec<u8> {
        json!({"update_id": update_id, "message": {
            "date": 1_441_645_532, "chat": {"id": group_id, "type": "group", "title": "Shop fans"},
            "message_id": 7, "from": user(user_id, "Test"), "text": text,
        }})
        .to_string()
        .into_bytes()
    }
}
