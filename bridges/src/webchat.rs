//! The web chat bridge: a website's visitors, talking to the org through a widget.
//!
//! The widget (served by the node, see `node/src/api/webchat.rs`) keeps a **session secret**
//! in the visitor's browser. The visitor's handle is derived from it,
//! `webchat:v-<first 16 bytes of SHA-256(secret), hex>`, so the same browser is the same
//! contact and sees its history, nothing about visitors is stored by the bridge, and knowing
//! a handle (or guessing one) gives no way to read its conversation: only the secret does.
//!
//! The widget and the node exchange JSON [`ClientFrame`]s and [`ServerFrame`]s over a
//! WebSocket. This module holds everything but the socket: sessions, the visitor's messages
//! into the node (idempotent on the widget's message id), replies out to the visitor's open
//! windows, receipts both ways, and per-visitor rate limits.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use threadline_protocol::{
    channel::{ChannelKind, Handle},
    event::{Attachment, ReceiptKind},
    id::BlobHash,
    limits::{MAX_ATTACHMENTS, MAX_TEXT_BYTES},
    name::ExternalId,
    EventId,
};
use tokio::sync::mpsc;

use crate::rate::{Allowances, TypingThrottle};
use crate::sdk::{
    Bridge, BridgeError, ConversationEntry, Delivery, HandoffCode, Identity, InboundMessage,
    LinkError, NodeLink, SendError, Sent, Submitted,
};

/// The longest message a visitor may send, in bytes (well under the protocol's limit).
pub const MAX_VISITOR_TEXT_BYTES: usize = 4 * 1024;
/// The largest file a visitor may send, in bytes.
pub const MAX_VISITOR_FILE_BYTES: usize = 10 * 1024 * 1024;
/// Files on one visitor's message.
pub const MAX_VISITOR_FILES: usize = 5;

const _: () = assert!(MAX_VISITOR_FILES <= MAX_ATTACHMENTS);
/// Frames buffered for one open window; a window that falls further behind is dropped (it
/// reconnects and reloads the history).
pub const WINDOW_BUFFER: usize = 64;
/// How long one round of deliveries waits, in all, for room in windows' buffers; a window
/// still full then is dropped.
const DELIVERY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

const _: () = assert!(MAX_VISITOR_TEXT_BYTES <= MAX_TEXT_BYTES);

/// What the widget sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// The first frame: the session secret the browser kept, if any, and the identity the
    /// website vouches for, if it signs one.
    Hello {
        /// The secret (64 hex digits), or `null` for a new visitor.
        session: Option<String>,
        /// The website's signed identity of its logged-in user.
        #[serde(default)]
        identity: Option<SignedIdentity>,
    },
    /// A message. `id` is the widget's id for it (unique per session): sending it again is
    /// harmless.
    Message {
        /// The widget's message id (1 to 64 of `[A-Za-z0-9_-]`).
        id: String,
        /// The text (may be empty when files come).
        text: String,
        /// Files uploaded first (`POST /webchat/files`), as that answered.
        #[serde(default)]
        files: Vec<UploadedFile>,
    },
    /// The visitor saw the replies up to this one.
    Read {
        /// The reply's event id (hex).
        up_to: String,
    },
    /// The visitor is typing (the widget sends it at most every few seconds while they do).
    /// A struct variant with no fields, not a unit one: serde lets a unit variant of an
    /// internally tagged enum through with any fields, whatever `deny_unknown_fields` says.
    Typing {},
    /// The visitor left an email address to be answered at (unverified: agents see it).
    Email {
        /// The address.
        address: String,
    },
    /// The visitor asks to continue the conversation on another app (one the welcome
    /// offered): the answer is a `continue_link` with a one-time code in it.
    Continue {
        /// The channel (`messenger`, `whatsapp`, `instagram`).
        channel: String,
    },
}

/// A website's statement that its logged-in user has this email address, until `expires`:
/// `signature` = hex(HMAC-SHA256(the node's `[webchat] identity_secret`, "<email>|<expires>")),
/// computed on the website's server (the secret never reaches browsers) for each page it
/// serves, like Chatwoot's identity validation but with an expiry, so that a signature seen
/// once (a cached page, a log) does not speak for the user forever.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedIdentity {
    /// The user's email address.
    pub email: String,
    /// Until when the signature holds (ms since the Unix epoch); at most a day ahead.
    pub expires: u64,
    /// hex(HMAC-SHA256(secret, "<email>|<expires>")).
    pub signature: String,
}

/// The longest a website may make a signed identity last.
pub const MAX_IDENTITY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The bytes a website signs for `email` until `expires`.
pub fn identity_message(email: &str, expires: u64) -> Vec<u8> {
    format!("{email}|{expires}").into_bytes()
}

/// A file a visitor uploaded, as the upload answers and a message names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadedFile {
    /// The bytes' hash (hex).
    pub blob: BlobHash,
    /// Their size.
    pub size: u64,
    /// The media type.
    pub media_type: String,
    /// The file's name.
    pub name: String,
    /// Proof that this visitor uploaded these bytes here (hex HMAC-SHA256 under the bridge's
    /// key of the process, over the visitor's handle, the hash and the size): a message may
    /// name only its own visitor's uploads, so knowing a file's hash opens nothing.
    pub token: String,
}

/// A file of a message, as the widget shows it (its bytes: `GET /webchat/files/{event}/{n}`,
/// `n` its place in `files`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatFile {
    /// The file's name.
    pub name: String,
    /// The media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

impl ChatFile {
    fn of(attachment: &Attachment) -> Self {
        ChatFile {
            name: attachment.name.to_string(),
            media_type: attachment.media_type.to_string(),
            size: attachment.size,
        }
    }
}

/// Why an upload or a download of a visitor's file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Bigger than [`MAX_VISITOR_FILE_BYTES`], or empty.
    #[error("a file has 1 to {MAX_VISITOR_FILE_BYTES} bytes")]
    Size,
    /// The visitor sent too much too fast.
    #[error("too many files; wait a moment")]
    RateLimited,
    /// No such file in the visitor's conversation.
    #[error("no such file in this conversation")]
    NotFound,
    /// The node could not take or give it now.
    #[error("the node is unavailable: {0}")]
    Unavailable(String),
    /// No chat window of the session is open: files go with a chat.
    #[error("open the chat first: files are sent from an open chat")]
    NotConnected,
}

/// One message of the visitor's conversation, as the widget shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// The event id (hex).
    pub event: EventId,
    /// `visitor` or `agent`.
    pub from: &'static str,
    /// The text; `null` if erased.
    pub text: Option<String>,
    /// When it was written (ms since the Unix epoch).
    pub at: u64,
    /// For a reply: `delivered`, `read` or `failed`, once known; for the visitor's message:
    /// `seen` once an agent has read it.
    pub state: Option<&'static str>,
    /// Its files.
    pub files: Vec<ChatFile>,
}

impl From<&ConversationEntry> for ChatMessage {
    fn from(entry: &ConversationEntry) -> Self {
        ChatMessage {
            event: entry.event,
            from: if entry.inbound { "visitor" } else { "agent" },
            text: entry.text.clone(),
            at: entry.at.as_millis(),
            state: if entry.inbound {
                entry.seen.then_some("seen")
            } else {
                entry.receipt.map(ReceiptKind::name)
            },
            files: entry.attachments.iter().map(ChatFile::of).collect(),
        }
    }
}

/// What the node sends the widget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The answer to `hello`: the session to keep, and the conversation so far.
    Welcome {
        /// The session secret (the same as sent, or a new one).
        session: String,
        /// The visitor's messages and the replies, oldest first.
        history: Vec<ChatMessage>,
        /// Whether an agent is at the inbox now.
        agents_online: bool,
        /// The apps the conversation can continue on (`continue` asks for a link).
        continue_on: Vec<ChannelKind>,
        /// Where the conversation went on, if its replies go to another app now (as
        /// [`ServerFrame::Moved`] said while the widget was open).
        moved: Option<ChannelKind>,
    },
    /// The link that continues the conversation on another app: good once, for 15 minutes.
    ContinueLink {
        /// The app.
        channel: ChannelKind,
        /// The link (`https://m.me/…?ref=<code>`, `https://wa.me/…?text=…<code>`).
        url: String,
    },
    /// The conversation went on in another app (the visitor's continue link came back from
    /// there): the agents' replies go to that app now, until the visitor writes here again.
    Moved {
        /// The app.
        channel: ChannelKind,
    },
    /// An agent is typing a reply.
    Typing,
    /// The email address the visitor left is recorded.
    EmailSaved {
        /// The address, as recorded.
        address: String,
    },
    /// An agent has read the visitor's messages up to this one.
    Seen {
        /// The last message read.
        up_to: EventId,
    },
    /// Agents came or all left.
    Presence {
        /// Whether an agent is at the inbox now.
        agents_online: bool,
    },
    /// A visitor's message is stored (durably).
    Ack {
        /// The widget's message id.
        id: String,
        /// The stored event.
        event: EventId,
    },
    /// A new message in the conversation (a reply, or the visitor's own from another window).
    Message(ChatMessage),
    /// A request was refused; nothing changed.
    Error {
        /// A stable code: `bad_frame`, `too_long`, `rate_limited`, `unavailable`, `refused`.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// The widget's message id, for a refused message.
        id: Option<String>,
    },
}

impl ServerFrame {
    fn error(code: &'static str, message: impl Into<String>, id: Option<String>) -> Self {
        ServerFrame::Error {
            code,
            message: message.into(),
            id,
        }
    }
}

/// A visitor's session: the secret the browser keeps, and the handle it stands for.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    secret: String,
    handle: Handle,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The session for `secret` if it is one (64 lowercase hex digits), or a new one.
    pub fn resume_or_new(secret: Option<&str>) -> Session {
        let valid = secret.filter(|s| {
            s.len() == 64
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        let secret = match valid {
            Some(secret) => secret.to_owned(),
            None => {
                let mut bytes = [0u8; 32];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
                hex::encode(bytes)
            }
        };
        let digest = Sha256::new()
            .chain_update(b"threadline/webchat-visitor/v1\0")
            .chain_update(secret.as_bytes())
            .finalize();
        let address = format!("webchat:v-{}", hex::encode(&digest[..16]));
        let handle = address
            .parse()
            .unwrap_or_else(|_| unreachable!("`webchat:v-` and hex is a valid handle"));
        Session { secret, handle }
    }

    /// The secret, for the browser to keep.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The visitor's handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

pub use crate::rate::RateLimit;

/// An open widget window of a visitor.
struct Window {
    id: u64,
    frames: mpsc::Sender<ServerFrame>,
}

/// The web chat bridge.
pub struct Webchat<L> {
    bridge: Bridge<L>,
    /// The key upload tokens are made with (random per process: an upload not named in a
    /// message before a restart is sent again).
    upload_key: [u8; 32],
    continue_on: Vec<ContinueOn>,
    identity_secret: Option<Vec<u8>>,
    windows: Mutex<HashMap<Handle, Vec<Window>>>,
    allowances: Allowances,
    typing: TypingThrottle,
    next_window: std::sync::atomic::AtomicU64,
}

/// Makes the link that carries a one-time code to an app (none if the app has no link).
pub type ContinueLinkFn = std::sync::Arc<dyn Fn(&HandoffCode) -> Option<String> + Send + Sync>;

/// An app a visitor can continue their conversation on, and how to make its link from a
/// one-time code (the app's bridge knows: `m.me/<page>?ref=<code>`, `wa.me/<number>?text=…`).
#[derive(Clone)]
pub struct ContinueOn {
    /// The app.
    pub channel: ChannelKind,
    /// The link that carries `code` there.
    pub link: ContinueLinkFn,
}

impl std::fmt::Debug for ContinueOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContinueOn")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl<L> std::fmt::Debug for Webchat<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webchat").finish_non_exhaustive()
    }
}

/// An open window's registration; dropping it closes the window for deliveries.
#[derive(Debug)]
pub struct OpenWindow {
    handle: Handle,
    id: u64,
}

impl<L: NodeLink> Webchat<L> {
    /// The bridge over `bridge` (whose identity is certified for the web chat channel);
    /// `identity_secret` checks the identities websites sign (none: they are refused).
    pub fn new(bridge: Bridge<L>, rate: RateLimit, identity_secret: Option<Vec<u8>>) -> Self {
        let mut upload_key = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut upload_key);
        Webchat {
            bridge,
            upload_key,
            continue_on: Vec::new(),
            identity_secret,
            windows: Mutex::new(HashMap::new()),
            allowances: Allowances::new(rate),
            typing: TypingThrottle::default(),
            next_window: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// The same web chat, offering visitors to continue on these apps.
    pub fn continuing_on(mut self, apps: Vec<ContinueOn>) -> Self {
        self.continue_on = apps;
        self
    }

    /// The SDK bridge underneath.
    pub fn bridge(&self) -> &Bridge<L> {
        &self.bridge
    }

    /// Answers `hello`: the session, and the conversation so far.
    pub async fn welcome(&self, session: &Session) -> ServerFrame {
        match self.bridge.link().conversation(session.handle()).await {
            Ok(entries) => ServerFrame::Welcome {
                session: session.secret().to_owned(),
                history: entries.iter().map(ChatMessage::from).collect(),
                agents_online: self.bridge.link().agents_online().await,
                continue_on: self.continue_on.iter().map(|app| app.channel).collect(),
                // The latest conversation's route, if it left the web chat.
                moved: entries
                    .iter()
                    .max_by_key(|entry| entry.at)
                    .and_then(|entry| entry.routed_to)
                    .filter(|channel| *channel != ChannelKind::Webchat),
            },
            Err(err) => ServerFrame::error("unavailable", err.to_string(), None),
        }
    }

    /// Registers a window of the visitor: replies and the visitor's own messages from other
    /// windows arrive on the returned receiver until [`Webchat::close`].
    pub fn open(&self, session: &Session) -> (OpenWindow, mpsc::Receiver<ServerFrame>) {
        let (frames, receiver) = mpsc::channel(WINDOW_BUFFER);
        let id = self
            .next_window
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(session.handle().clone())
            .or_default()
            .push(Window { id, frames });
        (
            OpenWindow {
                handle: session.handle().clone(),
                id,
            },
            receiver,
        )
    }

    /// Forgets a window.
    pub fn close(&self, window: OpenWindow) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = windows.get_mut(&window.handle) {
            open.retain(|w| w.id != window.id);
            if open.is_empty() {
                windows.remove(&window.handle);
            }
        }
    }

    /// Whether any window of `handle` is open.
    pub fn is_online(&self, handle: &Handle) -> bool {
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(handle)
    }

    /// Handles a frame from a window of `session` (not `hello`); the answer goes back to that
    /// window.
    pub async fn handle(
        &self,
        session: &Session,
        window: &OpenWindow,
        frame: ClientFrame,
    ) -> Option<ServerFrame> {
        match frame {
            ClientFrame::Hello { .. } => Some(ServerFrame::error(
                "bad_frame",
                "`hello` comes once, first",
                None,
            )),
            ClientFrame::Message { id, text, files } => {
                Some(self.message(session, window, id, text, files).await)
            }
            ClientFrame::Read { up_to } => {
                if up_to.parse::<EventId>().is_err() {
                    return Some(ServerFrame::error(
                        "bad_frame",
                        "`up_to` is an event id",
                        None,
                    ));
                }
                if !self.allowances.take(session.handle()) {
                    return Some(ServerFrame::error(
                        "rate_limited",
                        "too many requests; wait a moment",
                        None,
                    ));
                }
                self.read(session, &up_to).await
            }
            ClientFrame::Typing {} => {
                if self.typing.allow(session.handle()) {
                    self.bridge.link().customer_typing(session.handle()).await;
                }
                None
            }
            ClientFrame::Email { address } => {
                if !self.allowances.take(session.handle()) {
                    return Some(ServerFrame::error(
                        "rate_limited",
                        "too many requests; wait a moment",
                        None,
                    ));
                }
                Some(self.claimed_email(session, &address).await)
            }
            ClientFrame::Continue { channel } => {
                if !self.allowances.take(session.handle()) {
                    return Some(ServerFrame::error(
                        "rate_limited",
                        "too many requests; wait a moment",
                        None,
                    ));
                }
                Some(self.continue_link(session, &channel).await)
            }
        }
    }

    async fn message(
        &self,
        session: &Session,
        window: &OpenWindow,
        id: String,
        text: String,
        files: Vec<UploadedFile>,
    ) -> ServerFrame {
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !id_ok {
            return ServerFrame::error(
                "bad_frame",
                "a message id is 1 to 64 of A-Z a-z 0-9 - _",
                None,
            );
        }
        let text = text.trim().to_owned();
        if text.is_empty() && files.is_empty() {
            return ServerFrame::error("bad_frame", "the message is empty", Some(id));
        }
        if files.len() > MAX_VISITOR_FILES {
            return ServerFrame::error(
                "bad_frame",
                format!("a message has at most {MAX_VISITOR_FILES} files"),
                Some(id),
            );
        }
        if text.len() > MAX_VISITOR_TEXT_BYTES {
            return ServerFrame::error(
                "too_long",
                format!("a message has at most {MAX_VISITOR_TEXT_BYTES} bytes"),
                Some(id),
            );
        }
        if !self.allowances.take(session.handle()) {
            return ServerFrame::error(
                "rate_limited",
                "too many messages; wait a moment",
                Some(id),
            );
        }
        // Only this visitor's own uploads, each once.
        let mut stored: Vec<Attachment> = Vec::with_capacity(files.len());
        for file in &files {
            let token = self.upload_token(session, file.blob, file.size);
            let given = hex::decode(file.token.as_bytes()).unwrap_or_default();
            if !crate::webhook::constant_time_eq(&given, &token) {
                return ServerFrame::error(
                    "bad_frame",
                    format!(
                        "`{}` was not uploaded by this chat (POST /webchat/files first)",
                        file.name
                    ),
                    Some(id),
                );
            }
            if stored.iter().any(|a| a.blob == file.blob) {
                continue;
            }
            match uploaded_reference(file) {
                Ok(attachment) => stored.push(attachment),
                Err(err) => return ServerFrame::error("bad_frame", err, Some(id)),
            }
        }
        // Unique per channel: the visitor's handle and the widget's id for the message.
        let external_id = match ExternalId::new(format!("{}/{id}", session.handle())) {
            Ok(external_id) => external_id,
            Err(err) => return ServerFrame::error("bad_frame", err.to_string(), Some(id)),
        };
        let mut inbound = InboundMessage::new(session.handle().clone(), external_id, text.clone());
        inbound.stored = stored.clone();
        match self.bridge.receive(&inbound).await {
            Ok(submitted) => {
                // Typing after a message is news again.
                self.typing.reset(session.handle());
                if let Submitted::Stored(event) = submitted {
                    // The visitor's other windows show it too.
                    let message = ChatMessage {
                        event,
                        from: "visitor",
                        text: Some(text),
                        at: self.bridge.now().as_millis(),
                        state: None,
                        files: stored.iter().map(ChatFile::of).collect(),
                    };
                    self.push(
                        session.handle(),
                        Some(window.id),
                        &ServerFrame::Message(message),
                    );
                }
                ServerFrame::Ack {
                    id,
                    event: submitted.id(),
                }
            }
            Err(BridgeError::Refused(err)) => {
                ServerFrame::error("refused", err.to_string(), Some(id))
            }
            Err(err) => ServerFrame::error("unavailable", err.to_string(), Some(id)),
        }
    }

    async fn read(&self, session: &Session, up_to: &str) -> Option<ServerFrame> {
        let Ok(up_to) = up_to.parse::<EventId>() else {
            return Some(ServerFrame::error(
                "bad_frame",
                "`up_to` is an event id",
                None,
            ));
        };
        let conversation = match self.bridge.link().conversation(session.handle()).await {
            Ok(conversation) => conversation,
            Err(err) => return Some(ServerFrame::error("unavailable", err.to_string(), None)),
        };
        // Only a reply in the visitor's own conversation, and only once.
        let entry = conversation
            .iter()
            .find(|entry| entry.event == up_to && !entry.inbound)?;
        if entry.receipt == Some(ReceiptKind::Read) {
            return None;
        }
        match self
            .bridge
            .receipt(
                entry.thread,
                entry.event,
                entry.depth,
                ReceiptKind::Read,
                None,
            )
            .await
        {
            Ok(_) => None,
            Err(err) => Some(ServerFrame::error("unavailable", err.to_string(), None)),
        }
    }

    /// Sends the replies queued for web chat visitors to their open windows. A visitor with no
    /// open window finds the reply in the history on return; the delivery leaves the queue
    /// without a receipt. Returns how many deliveries left the queue.
    pub async fn deliver(&self, limit: usize) -> Result<usize, BridgeError> {
        // How long this round may wait, in all, for windows with no room: one slow reader
        // holds up everyone else's replies by that much at most, not that much per reply.
        let patience = std::sync::Mutex::new(DELIVERY_WAIT);
        let patience = &patience;
        self.bridge
            .deliver_pending(limit, |delivery: Delivery| async move {
                let frame = ServerFrame::Message(ChatMessage {
                    event: delivery.event,
                    from: "agent",
                    files: delivery.attachments.iter().map(ChatFile::of).collect(),
                    text: Some(delivery.text),
                    at: self.bridge.now().as_millis(),
                    state: None,
                });
                if self.push_delivery(&delivery.handle, &frame, patience).await > 0 {
                    Ok(Sent::Delivered)
                } else {
                    Err(SendError::NotConnected)
                }
            })
            .await
    }

    /// Stores a file the visitor sends (before the message that carries it), and says how to
    /// name it in that message.
    pub async fn upload(
        &self,
        session: &Session,
        name: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<UploadedFile, FileError> {
        if bytes.is_empty() || bytes.len() > MAX_VISITOR_FILE_BYTES {
            return Err(FileError::Size);
        }
        // The names, made to fit, before the bytes go (moved, not copied).
        let named = crate::sdk::InboundAttachment {
            name: name.to_owned(),
            media_type: media_type.to_owned(),
            bytes: Vec::new(),
        }
        .reference(BlobHash::of(&[]))
        .map_err(|err| FileError::Unavailable(err.to_string()))?;
        let size = bytes.len() as u64;
        let blob = self
            .bridge
            .link()
            .put_blob(bytes)
            .await
            .map_err(|err| FileError::Unavailable(err.to_string()))?;
        Ok(UploadedFile {
            blob,
            size,
            media_type: named.media_type.to_string(),
            name: named.name.to_string(),
            token: hex::encode(self.upload_token(session, blob, size)),
        })
    }

    /// Whether the visitor of `session` may upload now: a window of theirs is open (each
    /// upload rides on a chat connection, and those are limited per address), and their
    /// allowance has room. Asked before the bytes are read.
    pub fn may_upload(&self, session: &Session) -> Result<(), FileError> {
        if !self.is_online(session.handle()) {
            return Err(FileError::NotConnected);
        }
        if !self.allowances.take(session.handle()) {
            return Err(FileError::RateLimited);
        }
        Ok(())
    }

    fn upload_token(&self, session: &Session, blob: BlobHash, size: u64) -> [u8; 32] {
        let mut message = session.handle().to_string().into_bytes();
        message.push(0);
        message.extend_from_slice(blob.as_bytes());
        message.extend_from_slice(&size.to_be_bytes());
        hmac_sha256(&self.upload_key, &message)
    }

    /// File `n` of message `event` of the visitor's conversation, with its bytes (nothing of
    /// another conversation, whatever the ids).
    pub async fn file(
        &self,
        session: &Session,
        event: EventId,
        n: usize,
    ) -> Result<(Attachment, Vec<u8>), FileError> {
        let conversation = self
            .bridge
            .link()
            .conversation(session.handle())
            .await
            .map_err(|err| FileError::Unavailable(err.to_string()))?;
        let attachment = conversation
            .iter()
            .find(|entry| entry.event == event)
            .and_then(|entry| entry.attachments.get(n))
            .ok_or(FileError::NotFound)?;
        let bytes = self
            .bridge
            .link()
            .blob(attachment.blob)
            .await
            .map_err(|err| FileError::Unavailable(err.to_string()))?
            .ok_or(FileError::NotFound)?;
        Ok((attachment.clone(), bytes))
    }

    /// A link that continues the visitor's conversation on `channel`, with a new one-time code.
    async fn continue_link(&self, session: &Session, channel: &str) -> ServerFrame {
        let Some(app) = self
            .continue_on
            .iter()
            .find(|app| app.channel.as_str() == channel)
        else {
            return ServerFrame::error(
                "bad_frame",
                format!("this chat does not continue on `{channel}`"),
                None,
            );
        };
        match self
            .bridge
            .link()
            .handoff_code(session.handle(), app.channel)
            .await
        {
            Ok(code) => match (app.link)(&code) {
                Some(url) => ServerFrame::ContinueLink {
                    channel: app.channel,
                    url,
                },
                None => ServerFrame::error(
                    "unavailable",
                    format!("no {} link is configured", app.channel),
                    None,
                ),
            },
            Err(LinkError::Refused { code, .. }) if code == "no_conversation" => {
                ServerFrame::error(
                    "refused",
                    "write a message first: then the conversation can continue elsewhere",
                    None,
                )
            }
            Err(err) => ServerFrame::error("unavailable", err.to_string(), None),
        }
    }

    async fn claimed_email(&self, session: &Session, address: &str) -> ServerFrame {
        let Some(email) = email_handle(address) else {
            return ServerFrame::error(
                "bad_frame",
                format!("`{address}` is not an email address"),
                None,
            );
        };
        match self
            .bridge
            .link()
            .identify(session.handle(), Identity::Claimed(email.clone()))
            .await
        {
            Ok(()) => ServerFrame::EmailSaved {
                address: email.address().to_owned(),
            },
            Err(err) => ServerFrame::error("unavailable", err.to_string(), None),
        }
    }

    /// Checks the identity a website signed for its logged-in user and, if the signature is
    /// right, makes the visitor that user's contact (see [`Identity::Vouched`]). An error frame
    /// if it is refused; the chat goes on as an anonymous visitor's.
    pub async fn vouch(&self, session: &Session, identity: &SignedIdentity) -> Option<ServerFrame> {
        let Some(secret) = &self.identity_secret else {
            return Some(ServerFrame::error(
                "identity_refused",
                "this node checks no signed identities ([webchat] identity_secret is not set)",
                None,
            ));
        };
        let now = self.bridge.now().as_millis();
        let lifetime = u64::try_from(MAX_IDENTITY_LIFETIME.as_millis()).unwrap_or(u64::MAX);
        if identity.expires <= now || identity.expires > now.saturating_add(lifetime) {
            return Some(ServerFrame::error(
                "identity_refused",
                "the identity has expired, or expires more than a day ahead",
                None,
            ));
        }
        let expected = hmac_sha256(secret, &identity_message(&identity.email, identity.expires));
        let given = hex::decode(identity.signature.trim()).unwrap_or_default();
        if !crate::webhook::constant_time_eq(&given, &expected) {
            return Some(ServerFrame::error(
                "identity_refused",
                "the identity's signature is wrong",
                None,
            ));
        }
        let Some(email) = email_handle(&identity.email) else {
            return Some(ServerFrame::error(
                "identity_refused",
                "the identity is not an email address",
                None,
            ));
        };
        match self
            .bridge
            .link()
            .identify(session.handle(), Identity::Vouched(email))
            .await
        {
            Ok(()) => None,
            Err(err) => Some(ServerFrame::error("unavailable", err.to_string(), None)),
        }
    }

    /// Tells the visitor's open windows that the conversation continues on `channel`.
    pub fn moved(&self, handle: &Handle, channel: ChannelKind) {
        self.push(handle, None, &ServerFrame::Moved { channel });
    }

    /// Tells the visitor of `handle` that an agent is typing (if a window is open).
    pub fn agent_typing(&self, handle: &Handle) {
        self.push(handle, None, &ServerFrame::Typing);
    }

    /// Tells the visitor of `handle` that an agent read their messages up to `up_to`.
    pub fn agent_read(&self, handle: &Handle, up_to: EventId) {
        self.push(handle, None, &ServerFrame::Seen { up_to });
    }

    /// Tells every open window whether agents are at the inbox.
    pub fn presence_changed(&self, agents_online: bool) {
        let handles: Vec<Handle> = self
            .windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for handle in handles {
            self.push(&handle, None, &ServerFrame::Presence { agents_online });
        }
    }

    /// Pushes a frame to the windows of `handle` (but `except`); how many took it.
    /// Sends a reply to every open window of `handle`. A window with no room is waited for,
    /// out of `patience` (what is left of the round's [`DELIVERY_WAIT`]): a burst of replies
    /// (an agent's laptop back online with a hundred) goes to a window that is reading, at its
    /// pace; one that does not read is dropped (the widget reconnects and reloads the
    /// history). How many windows took it.
    async fn push_delivery(
        &self,
        handle: &Handle,
        frame: &ServerFrame,
        patience: &std::sync::Mutex<std::time::Duration>,
    ) -> usize {
        let windows: Vec<(u64, mpsc::Sender<ServerFrame>)> = self
            .windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(handle)
            .map(|open| {
                open.iter()
                    .map(|window| (window.id, window.frames.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut took = 0;
        let mut behind = Vec::new();
        for (id, frames) in windows {
            let sent = match frames.try_send(frame.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(frame)) => {
                    let left = *patience.lock().unwrap_or_else(PoisonError::into_inner);
                    let started = std::time::Instant::now();
                    let sent = !left.is_zero() && frames.send_timeout(frame, left).await.is_ok();
                    let mut left = patience.lock().unwrap_or_else(PoisonError::into_inner);
                    *left = left.saturating_sub(started.elapsed());
                    sent
                }
            };
            if sent {
                took += 1;
            } else {
                behind.push(id);
            }
        }
        if !behind.is_empty() {
            let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(open) = windows.get_mut(handle) {
                open.retain(|window| !behind.contains(&window.id));
                if open.is_empty() {
                    windows.remove(handle);
                }
            }
        }
        took
    }

    fn push(&self, handle: &Handle, except: Option<u64>, frame: &ServerFrame) -> usize {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(open) = windows.get_mut(handle) else {
            return 0;
        };
        let mut took = 0;
        // A window too far behind is dropped (its socket closes, the widget reconnects and
        // reloads the history); it does not count as having taken the frame.
        open.retain(|window| {
            if Some(window.id) == except {
                return !window.frames.is_closed();
            }
            match window.frames.try_send(frame.clone()) {
                Ok(()) => {
                    took += 1;
                    true
                }
                Err(_) => false,
            }
        });
        if open.is_empty() {
            windows.remove(handle);
        }
        took
    }
}

/// `email:<address>`, if `address` is one.
fn email_handle(address: &str) -> Option<Handle> {
    let address = address.trim();
    if address.contains(char::is_whitespace) || !address.contains('@') {
        return None;
    }
    format!("email:{address}").parse().ok()
}

pub use crate::webhook::hmac_sha256;

/// The channel this bridge serves.
pub const CHANNEL: ChannelKind = ChannelKind::Webchat;

/// The reference a visitor's message gives to a file it uploaded (checked as the protocol
/// checks names; the node checks that the bytes are there, of that size, and were uploaded
/// through the web chat).
fn uploaded_reference(file: &UploadedFile) -> Result<Attachment, String> {
    let meta = |text: &str, what: &str| {
        threadline_protocol::name::AttachmentMeta::new(text)
            .map_err(|err| format!("bad file {what}: {err}"))
    };
    Ok(Attachment::new(
        file.blob,
        file.size,
        meta(&file.media_type, "type")?,
        meta(&file.name, "name")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_resumed_by_its_secret_and_only_by_it() {
        let first = Session::resume_or_new(None);
        let again = Session::resume_or_new(Some(first.secret()));
        assert_eq!(first, again);
        assert_eq!(first.handle().channel(), ChannelKind::Webchat);
        // Not a secret: a new session, never the handle's.
        for bad in [
            "",
            "xyz",
            &first.handle().to_string(),
            &first.secret().to_uppercase(),
        ] {
            let other = Session::resume_or_new(Some(bad));
            assert_ne!(other.handle(), first.handle(), "{bad}");
        }
        assert_ne!(Session::resume_or_new(None).handle(), first.handle());
    }

    #[test]
    fn frames_are_strict_json() {
        let parse = |s: &str| serde_json::from_str::<ClientFrame>(s);
        assert_eq!(
            parse(r#"{"type":"message","id":"m1","text":"hi"}"#).ok(),
            Some(ClientFrame::Message {
                id: "m1".to_owned(),
                text: "hi".to_owned(),
                files: Vec::new(),
            })
        );
        assert!(parse(r#"{"type":"message","id":"m1","text":"hi","extra":1}"#).is_err());
        assert!(parse(r#"{"type":"shout"}"#).is_err());
        assert_eq!(
            parse(r#"{"type":"hello"}"#).ok(),
            Some(ClientFrame::Hello {
                session: None,
                identity: None
            })
        );
    }

    #[test]
    fn every_frame_type_refuses_unknown_fields() {
        let frames = [
            r#"{"type":"hello","session":null}"#,
            r#"{"type":"hello","session":null,"identity":{"email":"a@b.c","expires":1,"signature":"00"}}"#,
            r#"{"type":"message","id":"m1","text":"hi"}"#,
            r#"{"type":"read","up_to":"00"}"#,
            r#"{"type":"typing"}"#,
            r#"{"type":"email","address":"a@b.c"}"#,
        ];
        for frame in frames {
            assert!(
                serde_json::from_str::<ClientFrame>(frame).is_ok(),
                "{frame}"
            );
            let with_extra = format!(r#"{},"extra":1}}"#, &frame[..frame.len() - 1]);
            let err = serde_json::from_str::<ClientFrame>(&with_extra)
                .expect_err(&with_extra)
                .to_string();
            assert!(err.contains("unknown field `extra`"), "{with_extra}: {err}");
        }
        // Inside the signed identity too.
        let err = serde_json::from_str::<ClientFrame>(
            r#"{"type":"hello","session":null,"identity":{"email":"a@b.c","expires":1,"signature":"00","admin":true}}"#,
        )
        .expect_err("an unknown field of the identity")
        .to_string();
        assert!(err.contains("unknown field `admin`"), "{err}");
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
