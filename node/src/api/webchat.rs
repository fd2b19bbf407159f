//! The web chat, served by the node: the widget's files, a demo page, and the WebSocket the
//! widget talks over. The bridge logic is `threadline_bridges::webchat`; this is the socket.
//!
//! - `GET /webchat/widget.js`, `/webchat/widget.css`: the widget (plain JS and CSS, no build
//!   step). A website adds `<script src="https://NODE/webchat/widget.js" async></script>`.
//! - `GET /webchat/demo`: a page with the widget on it.
//! - `GET /webchat/ws`: the WebSocket. Its first frame is `hello`; then messages and read
//!   marks go up, replies and acks come down. Only pages from the node itself and from the
//!   origins in `[webchat] allowed_origins` may open it.

use std::sync::Arc;
use std::time::Duration;

use axum::{
    extract::{
        ws::{Message, WebSocket, WebSocketUpgrade},
        ConnectInfo, State,
    },
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use threadline_bridges::webchat::{ClientFrame, ServerFrame, Session, Webchat};
use tracing::debug;

use super::ApiError;
use threadline_bridges::sdk::NodeLink;

/// Largest frame a widget may send.
const MAX_FRAME_BYTES: usize = 16 * 1024;
/// Time a new socket has to say `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The server pings every open socket this often (browsers answer by themselves)...
const PING_EVERY: Duration = Duration::from_secs(30);
/// ...and closes one it has heard nothing from for this long.
const SILENT_FOR: Duration = Duration::from_secs(75);

const WIDGET_JS: &str = include_str!("../../assets/webchat/widget.js");
const WIDGET_CSS: &str = include_str!("../../assets/webchat/widget.css");
const DEMO_HTML: &str = include_str!("../../assets/webchat/demo.html");

/// New chat connections allowed per client address: `per_minute` at once, then one every
/// `60 / per_minute` seconds. A script opening sessions in a loop (each a new contact once it
/// writes) is slowed to that pace; a browser connects once per page.
#[derive(Debug)]
pub struct ConnectionLimit {
    per_minute: u32,
    buckets:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (f64, std::time::Instant)>>,
}

impl ConnectionLimit {
    /// At most `per_minute` new connections a minute per address.
    pub fn new(per_minute: u32) -> Self {
        ConnectionLimit {
            per_minute: per_minute.max(1),
            buckets: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn allow(&self, address: std::net::IpAddr) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let burst = f64::from(self.per_minute);
        if buckets.len() > 10_000 {
            // Forget addresses that have their whole allowance back.
            buckets.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(60));
        }
        let (tokens, at) = buckets.entry(address).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * burst / 60.0).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the web chat routes share: the bridge (in the node, or standalone over the bridge
/// API), the origins allowed besides the server's own, and when to close the sockets.
#[derive(Debug)]
pub struct WebchatHost<L> {
    /// The bridge.
    pub webchat: Arc<Webchat<L>>,
    /// Origins allowed besides the node's own.
    pub allowed_origins: Arc<Origins>,
    /// Turns `true` when the server is shutting down.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// New connections per client address.
    pub connections: Arc<ConnectionLimit>,
    /// How the widget looks and greets.
    pub look: Arc<WidgetLook>,
}

impl<L> Clone for WebchatHost<L> {
    fn clone(&self) -> Self {
        WebchatHost {
            webchat: Arc::clone(&self.webchat),
            allowed_origins: Arc::clone(&self.allowed_origins),
            closing: self.closing.clone(),
            connections: Arc::clone(&self.connections),
            look: Arc::clone(&self.look),
        }
    }
}

/// How the widget looks and greets (`[webchat]` title, greeting, color, position), served at
/// `/webchat/settings` for the widget to read as it loads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WidgetLook {
    /// The panel's title.
    pub title: String,
    /// What the empty chat says.
    pub greeting: String,
    /// The accent colour, `#rrggbb`.
    pub color: String,
    /// Which corner of the page: `right` or `left`.
    pub position: String,
}

impl Default for WidgetLook {
    fn default() -> Self {
        WidgetLook {
            title: "Chat with us".to_owned(),
            greeting: "Ask us anything. We usually answer within minutes; if we are away, we will answer here later.".to_owned(),
            color: "#2563eb".to_owned(),
            position: "right".to_owned(),
        }
    }
}

impl WidgetLook {
    /// Longest title, in characters.
    pub const MAX_TITLE_CHARS: usize = 60;
    /// Longest greeting, in characters.
    pub const MAX_GREETING_CHARS: usize = 500;

    /// The look with each value given checked: a title of 1 to 60 characters and a greeting
    /// of 1 to 500, on one line each; a colour `#rrggbb`; a position `right` or `left`.
    pub fn new(
        title: Option<String>,
        greeting: Option<String>,
        color: Option<String>,
        position: Option<String>,
    ) -> Result<Self, String> {
        let default = WidgetLook::default();
        let text = |what: &str, value: Option<String>, max: usize, default: String| {
            let Some(value) = value else {
                return Ok(default);
            };
            let value = value.trim().to_owned();
            let n = value.chars().count();
            if n == 0 || n > max || value.chars().any(char::is_control) {
                return Err(format!(
                    "{what} must be 1 to {max} characters on one line (it has {n})"
                ));
            }
            Ok(value)
        };
        let color = match color {
            None => default.color,
            Some(color) => {
                let hex = color.strip_prefix('#').unwrap_or("");
                if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("color `{color}` is not a colour like \"#2563eb\""));
                }
                color.to_ascii_lowercase()
            }
        };
        let position = match position.as_deref() {
            None => default.position,
            Some(side @ ("right" | "left")) => side.to_owned(),
            Some(other) => {
                return Err(format!(
                    "position `{other}` is neither \"right\" nor \"left\""
                ))
            }
        };
        Ok(WidgetLook {
            title: text("title", title, Self::MAX_TITLE_CHARS, default.title)?,
            greeting: text(
                "greeting",
                greeting,
                Self::MAX_GREETING_CHARS,
                default.greeting,
            )?,
            color,
            position,
        })
    }
}

/// The sites whose pages may open the chat besides the node's own (`[webchat]
/// allowed_origins`), and those refused so far (each logged once, so that the operator learns
/// which site to allow, and a hostile page cannot flood the log).
#[derive(Debug, Default)]
pub struct Origins {
    allowed: Vec<String>,
    refused: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Refused origins remembered for logging (past this, refusals go unlogged).
const MAX_REFUSED_ORIGINS_LOGGED: usize = 64;

impl Origins {
    /// These origins allowed (`https://shop.example`).
    pub fn new(allowed: Vec<String>) -> Self {
        Origins {
            allowed,
            refused: std::sync::Mutex::default(),
        }
    }

    /// Whether a request with these headers comes from a page that may open the chat; a
    /// refused origin is logged the first time.
    fn check(&self, headers: &HeaderMap) -> bool {
        if origin_allowed(headers, &self.allowed) {
            return true;
        }
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        let mut refused = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if refused.len() < MAX_REFUSED_ORIGINS_LOGGED && refused.insert(origin.to_owned()) {
            tracing::warn!(
                origin,
                "web chat: a page of {origin} tried to open the chat and was refused; add it to [webchat] allowed_origins if it is your site"
            );
        }
        false
    }
}

/// The web chat's routes.
pub fn router<L: NodeLink + 'static>(host: WebchatHost<L>) -> Router {
    Router::new()
        .route("/webchat/widget.js", get(widget_js))
        .route("/webchat/allowed", get(allowed::<L>))
        .route("/webchat/settings", get(settings::<L>))
        .route("/webchat/widget.css", get(widget_css))
        .route("/webchat/demo", get(demo))
        .route("/webchat/ws", get(socket::<L>))
        .route(
            "/webchat/files",
            axum::routing::post(upload::<L>)
                .options(preflight::<L>)
                .layer(axum::extract::DefaultBodyLimit::max(
                    threadline_bridges::webchat::MAX_VISITOR_FILE_BYTES + 1,
                )),
        )
        .route(
            "/webchat/files/{event}/{n}",
            get(download::<L>).options(preflight::<L>),
        )
        .with_state(host)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn widget_js() -> Response {
    asset("application/javascript; charset=utf-8", WIDGET_JS)
}

async fn widget_css() -> Response {
    asset("text/css; charset=utf-8", WIDGET_CSS)
}

async fn demo() -> Response {
    asset("text/html; charset=utf-8", DEMO_HTML)
}

/// Whether a page of `origin` may open the socket: the node's own pages (the origin's host is
/// the `Host` the request came to), or an allowed origin. A request without `Origin` is not
/// from a browser page and is let through (a browser always sends it on WebSockets).
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let own = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|host| {
            origin.strip_prefix("http://") == Some(host)
                || origin.strip_prefix("https://") == Some(host)
        });
    own || allowed.iter().any(|a| a == origin)
}

/// `GET /webchat/allowed`: `{"allowed"}`, whether the calling page's site may open the chat,
/// readable from any site (a browser cannot read why a WebSocket was refused), so the widget
/// can say that the chat is not available there instead of reconnecting for ever.
async fn allowed<L: NodeLink + 'static>(
    State(host): State<WebchatHost<L>>,
    headers: HeaderMap,
) -> Response {
    let allowed = host.allowed_origins.check(&headers);
    (
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        axum::Json(serde_json::json!({ "allowed": allowed })),
    )
        .into_response()
}

/// `GET /webchat/settings`: how the widget looks (public, read by pages of any site).
async fn settings<L: NodeLink + 'static>(State(host): State<WebchatHost<L>>) -> Response {
    (
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        axum::Json(host.look.as_ref().clone()),
    )
        .into_response()
}

/// The header the widget sends its session secret in, for files (never in a URL, where logs
/// would keep it).
const SESSION_HEADER: &str = "x-threadline-session";

/// The visitor's session from [`SESSION_HEADER`]: a secret of the right form (64 hex digits;
/// whether a chat of it is open is the upload's question).
fn file_session(headers: &HeaderMap) -> Result<threadline_bridges::webchat::Session, ApiError> {
    let secret = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            s.len() == 64
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no_session",
                "send the chat's session in X-Threadline-Session",
            )
        })?;
    Ok(threadline_bridges::webchat::Session::resume_or_new(Some(
        secret,
    )))
}

/// A page of another site may read the answer (called only for an allowed one).
fn cors(headers: &HeaderMap, mut response: Response) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN).cloned() {
        let answers = response.headers_mut();
        answers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        answers.insert(header::VARY, axum::http::HeaderValue::from_static("Origin"));
    }
    response
}

/// The answer to a browser's preflight of the file routes: from an allowed site, the session
/// header may be sent.
async fn preflight<L: NodeLink + 'static>(
    State(host): State<WebchatHost<L>>,
    headers: HeaderMap,
) -> Response {
    if !host.allowed_origins.check(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let answers = response.headers_mut();
    answers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        axum::http::HeaderValue::from_static("GET, POST"),
    );
    answers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        axum::http::HeaderValue::from_static("x-threadline-session, content-type"),
    );
    answers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        axum::http::HeaderValue::from_static("600"),
    );
    cors(&headers, response)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// The file's name.
    name: String,
}

fn file_error(err: threadline_bridges::webchat::FileError) -> ApiError {
    use threadline_bridges::webchat::FileError as E;
    let (status, code) = match &err {
        E::Size => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        E::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        E::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        E::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        E::NotConnected => (StatusCode::CONFLICT, "not_connected"),
    };
    ApiError::new(status, code, err.to_string())
}

/// `POST /webchat/files?name=<file name>` (the bytes as the body, their type as
/// `Content-Type`, the session in `X-Threadline-Session`): stores a file a visitor sends, and
/// answers how the next message names it (`{blob, size, media_type, name, token}`). The site,
/// the session (with a chat open) and its allowance are checked before the body is read.
async fn upload<L: NodeLink + 'static>(
    State(host): State<WebchatHost<L>>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> Response {
    let allowed = host.allowed_origins.check(&headers);
    let answer = async {
        if !allowed {
            return Err(not_allowed());
        }
        let session = file_session(&headers)?;
        let axum::extract::Query(query) = query?;
        host.webchat.may_upload(&session).map_err(file_error)?;
        let limit = threadline_bridges::webchat::MAX_VISITOR_FILE_BYTES;
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| file_error(threadline_bridges::webchat::FileError::Size))?;
        let media_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream");
        host.webchat
            .upload(&session, &query.name, media_type, Vec::from(bytes))
            .await
            .map_err(file_error)
    }
    .await;
    let response = match answer {
        Ok(file) => axum::Json(file).into_response(),
        Err(err) => err.into_response(),
    };
    if allowed {
        cors(&headers, response)
    } else {
        response
    }
}

fn not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "this site may not open the chat (see [webchat] allowed_origins)",
    )
}

/// `GET /webchat/files/{event}/{n}` (the session in `X-Threadline-Session`): file `n` of a
/// message of the visitor's own conversation, as a download (an image inline).
async fn download<L: NodeLink + 'static>(
    State(host): State<WebchatHost<L>>,
    headers: HeaderMap,
    axum::extract::Path((event, n)): axum::extract::Path<(String, usize)>,
) -> Response {
    let allowed = host.allowed_origins.check(&headers);
    let answer = async {
        if !allowed {
            return Err(not_allowed());
        }
        let session = file_session(&headers)?;
        let event: threadline_protocol::EventId = event
            .parse()
            .map_err(|_| ApiError::not_found(format!("no message `{event}`")))?;
        let (attachment, bytes) = host
            .webchat
            .file(&session, event, n)
            .await
            .map_err(file_error)?;
        Ok(super::attachments::serve(
            &attachment,
            axum::body::Body::from(bytes),
        ))
    }
    .await;
    let response = match answer {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    if allowed {
        cors(&headers, response)
    } else {
        response
    }
}

async fn socket<L: NodeLink + 'static>(
    State(host): State<WebchatHost<L>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !host.connections.allow(peer.ip()) {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            "too many new chat connections from this address; try again in a minute",
        )
        .into_response();
    }
    if !host.allowed_origins.check(&headers) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this site may not open the chat (see [webchat] allowed_origins)",
        )
        .into_response();
    }
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| serve(socket, host.webchat, host.closing))
}

fn text(frame: &ServerFrame) -> Message {
    Message::Text(
        serde_json::to_string(frame)
            .unwrap_or_else(|_| {
                r#"{"type":"error","code":"internal","message":"cannot encode","id":null}"#
                    .to_owned()
            })
            .into(),
    )
}

async fn serve<L: NodeLink>(
    mut socket: WebSocket,
    webchat: Arc<Webchat<L>>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let hello = tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await;
    let session = match hello {
        Ok(Some(Ok(Message::Text(body)))) => match serde_json::from_str::<ClientFrame>(&body) {
            Ok(ClientFrame::Hello { session, identity }) => {
                let session = Session::resume_or_new(session.as_deref());
                if let Some(identity) = identity {
                    if let Some(refused) = webchat.vouch(&session, &identity).await {
                        if socket.send(text(&refused)).await.is_err() {
                            return;
                        }
                    }
                }
                session
            }
            refused => {
                let message = match refused {
                    // Not JSON, an unknown type or field, a missing or mistyped one.
                    Err(err) => format!("the first frame is `hello`: {err}"),
                    Ok(_) => "the first frame is `hello`".to_owned(),
                };
                let _ = socket
                    .send(text(&ServerFrame::Error {
                        code: "bad_frame",
                        message,
                        id: None,
                    }))
                    .await;
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        },
        _ => return,
    };
    if *closing.borrow() {
        return;
    }
    // The window opens before the history is read, so that a reply stored meanwhile is pushed
    // (after `welcome`; the widget ignores one it already shows) rather than missed.
    let (window, mut pushed) = webchat.open(&session);
    let welcome = webchat.welcome(&session).await;
    let welcomed = matches!(welcome, ServerFrame::Welcome { .. });
    if socket.send(text(&welcome)).await.is_err() || !welcomed {
        // Without its history the widget cannot start: it reconnects, with back-off.
        webchat.close(window);
        let _ = socket.send(Message::Close(None)).await;
        return;
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                // A socket silent for this long is gone (a phone that left the network
                // without closing): close it, so replies are not reported delivered to it.
                if heard.elapsed() > SILENT_FOR {
                    break;
                }
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => {
                heard = tokio::time::Instant::now();
                let frame = match incoming {
                    Some(Ok(Message::Text(body))) => serde_json::from_str::<ClientFrame>(&body),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        let _ = socket.send(text(&ServerFrame::Error {
                            code: "bad_frame",
                            message: "frames are JSON text".to_owned(),
                            id: None,
                        })).await;
                        continue;
                    }
                    _ => break,
                };
                let answer = match frame {
                    Ok(frame) => webchat.handle(&session, &window, frame).await,
                    Err(err) => Some(ServerFrame::Error {
                        code: "bad_frame",
                        message: err.to_string(),
                        id: None,
                    }),
                };
                if let Some(answer) = answer {
                    if socket.send(text(&answer)).await.is_err() {
                        break;
                    }
                }
            }
            frame = pushed.recv() => {
                let Some(frame) = frame else { break };
                if socket.send(text(&frame)).await.is_err() {
                    break;
                }
            }
            // Only `true` is ever sent: any change means the server is closing.
            _ = closing.changed() => break,
        }
    }
    webchat.close(window);
    let _ = socket.send(Message::Close(None)).await;
    debug!("web chat window closed");
}
