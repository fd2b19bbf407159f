//! The bridge SDK: what every bridge uses to talk to its node.
//!
//! A bridge has its own key, certified by the org for one channel ([`BridgeIdentity`]). It
//! reaches its node through a [`NodeLink`]: in-process for the bridges built into the node, or
//! over the node's bridge API for a bridge run on its own. [`Bridge`] does the rest, the same
//! for every channel:
//!
//! - **inbound**: [`Bridge::receive`] resolves the customer's handle to its thread, signs an
//!   inbound message event onto it and submits it, retrying with back-off while the node is
//!   unavailable. The app's message id goes into the event, so a retried submission (or a
//!   webhook the app delivers twice) is stored once: the node answers it as a duplicate.
//! - **outbound**: [`Bridge::deliver_pending`] takes the replies queued for the bridge's
//!   channel, hands each to the bridge's sender, signs a receipt (delivered, or failed with the
//!   reason) and acknowledges the delivery. A delivery is acknowledged only after its outcome
//!   is known, so a crash in between sends it again (at least once to the app). A refused
//!   receipt is logged and its delivery acknowledged (it was sent); a receipt made again is a
//!   new event, and the thread keeps the best receipt per reply.

use std::future::Future;
use std::time::Duration;

use threadline_protocol::{
    channel::{ChannelKind, Handle},
    event::{Attachment, Content, Draft, EventKind, ReceiptKind, Scope, Template, ThreadKind},
    id::BlobHash,
    limits::{MAX_ATTACHMENTS, MAX_SHORT_STRING_BYTES, MAX_SUBJECT_BYTES},
    name::{AttachmentMeta, ExternalId, Subject},
    ContactId, Event, EventId, SecretKey, ThreadId, Timestamp,
};

/// A bridge's signing key and the channel it is certified for.
#[derive(Clone)]
pub struct BridgeIdentity {
    key: SecretKey,
    channel: ChannelKind,
}

impl std::fmt::Debug for BridgeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeIdentity")
            .field("key", &self.key.public())
            .field("channel", &self.channel)
            .finish()
    }
}

impl BridgeIdentity {
    /// The identity of a bridge for `channel` with `key` (certified by `threadline bridge add`).
    pub fn new(key: SecretKey, channel: ChannelKind) -> Self {
        BridgeIdentity { key, channel }
    }

    /// The channel.
    pub fn channel(&self) -> ChannelKind {
        self.channel
    }
}

/// A customer's message as the app gave it to the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// Who wrote it, on the bridge's channel.
    pub handle: Handle,
    /// The app's id for the message (Message-ID, webhook id, ...): the same message always
    /// has the same id.
    pub external_id: ExternalId,
    /// The text.
    pub text: String,
    /// Which thread the app says the message answers (a mail's `In-Reply-To`, its reply
    /// token). The node uses it only if the thread is open and belongs to the handle's contact.
    pub thread_hint: Option<ThreadHint>,
    /// Files that came with it (at most [`MAX_ATTACHMENTS`] with `stored`; stored by the
    /// node as blobs before the message is submitted).
    pub attachments: Vec<InboundAttachment>,
    /// Files whose bytes the bridge stored on the node already ([`NodeLink::put_blob`]), by
    /// reference (a web chat visitor's uploads); they come first.
    pub stored: Vec<Attachment>,
    /// The name the customer goes by on the app (a mail's display name), if it says: a new
    /// contact is given it.
    pub sender_name: Option<String>,
    /// An automatic reply (see [`Sender::automatic`]): stored as one, which shows it but
    /// neither reopens the thread nor moves its route.
    pub automatic: bool,
    /// The message's subject, on apps that have one (a mail's `Subject:`): stored cut to
    /// [`MAX_SUBJECT_BYTES`] on one line; none if empty.
    pub subject: Option<String>,
    /// The message exactly as the app delivered it (a mail's raw bytes), stored beside the
    /// faithful view so nothing the customer sent is unrecoverable.
    pub original: Option<InboundAttachment>,
    /// The earlier message it answers, `(thread, event)` (see [`Bridge::message_by_app_id`]):
    /// recorded if the message lands in that thread.
    pub reply_to: Option<(ThreadId, EventId)>,
}

impl InboundMessage {
    /// A plain text message from `handle`: no hint, files, name, subject or original.
    pub fn new(handle: Handle, external_id: ExternalId, text: impl Into<String>) -> Self {
        InboundMessage {
            handle,
            external_id,
            text: text.into(),
            thread_hint: None,
            attachments: Vec::new(),
            stored: Vec::new(),
            sender_name: None,
            automatic: false,
            subject: None,
            original: None,
            reply_to: None,
        }
    }

    /// The subject as an event carries it: control characters and runs of whitespace made
    /// one space, trimmed, cut to [`MAX_SUBJECT_BYTES`] on a character boundary.
    fn stored_subject(&self) -> Option<Subject> {
        let subject = self.subject.as_deref()?;
        let mut line = String::with_capacity(subject.len().min(MAX_SUBJECT_BYTES));
        for word in subject
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|w| !w.is_empty())
        {
            let room = MAX_SUBJECT_BYTES.saturating_sub(line.len() + usize::from(!line.is_empty()));
            if room == 0 {
                break;
            }
            if !line.is_empty() {
                line.push(' ');
            }
            let mut end = word.len().min(room);
            while !word.is_char_boundary(end) {
                end -= 1;
            }
            line.push_str(&word[..end]);
        }
        Subject::new(line.trim_end()).ok()
    }
}

/// A file a customer sent, as the app gave it.
#[derive(Clone, PartialEq, Eq)]
pub struct InboundAttachment {
    /// Its file name (made to fit [`MAX_SHORT_STRING_BYTES`]).
    pub name: String,
    /// Its media type (`image/png`).
    pub media_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for InboundAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundAttachment")
            .field("name", &self.name)
            .field("media_type", &self.media_type)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl InboundAttachment {
    /// The reference to this file once its bytes are stored as `blob`: the name and media
    /// type cut to what an event carries (a name too long keeps its end, where the extension
    /// is), or generic ones if the app gave none.
    pub fn reference(
        &self,
        blob: BlobHash,
    ) -> Result<Attachment, threadline_protocol::name::NameError> {
        let media_type = AttachmentMeta::new(fit(&self.media_type, false))
            .or_else(|_| AttachmentMeta::new("application/octet-stream"))?;
        let name = AttachmentMeta::new(fit(&self.name, true))
            .or_else(|_| AttachmentMeta::new("attachment"))?;
        Ok(Attachment::new(
            blob,
            self.bytes.len() as u64,
            media_type,
            name,
        ))
    }
}

/// `text` without control characters, cut to [`MAX_SHORT_STRING_BYTES`] on a character
/// boundary, from the end (`keep_end`) or the start.
fn fit(text: &str, keep_end: bool) -> String {
    let clean: Vec<char> = text.chars().filter(|c| !c.is_control()).collect();
    let mut kept = Vec::new();
    let mut bytes = 0;
    let chars: Box<dyn Iterator<Item = &char>> = if keep_end {
        Box::new(clean.iter().rev())
    } else {
        Box::new(clean.iter())
    };
    for c in chars {
        bytes += c.len_utf8();
        if bytes > MAX_SHORT_STRING_BYTES {
            break;
        }
        kept.push(*c);
    }
    if keep_end {
        kept.reverse();
    }
    kept.into_iter().collect::<String>().trim().to_owned()
}

/// What a bridge says of who wrote, as it resolves their handle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sender<'a> {
    /// The name the customer goes by on the app (a mail's display name): a contact created
    /// for the handle is given it.
    pub name: Option<&'a str>,
    /// An automatic reply (an out-of-office, a delivery report): it goes only to a
    /// conversation the customer already has (the hinted one, even if resolved, or their
    /// latest), open to the bridge's channel, and never opens a thread or a contact.
    pub automatic: bool,
}

/// A thread the app names for an inbound message: a hint, never trusted alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadHint {
    /// The thread's id (from one of our outbound Message-IDs).
    Thread(ThreadId),
    /// A reply token: the first [`REPLY_TOKEN_BYTES`] bytes of the thread's id.
    Token([u8; REPLY_TOKEN_BYTES]),
}

/// A one-time "continue on …" code: 128 random bits as 32 lowercase hex digits, which fit a
/// Messenger link's `ref` and any message text. It never prints.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HandoffCode(String);

impl HandoffCode {
    /// The code of 16 random bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        HandoffCode(hex::encode(bytes))
    }

    /// The code's text, to put in a link.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The code `text` is, if it is one (32 hex digits, either case).
    pub fn parse(text: &str) -> Option<HandoffCode> {
        (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| HandoffCode(text.to_ascii_lowercase()))
    }

    /// The first code in a message's text (a WhatsApp message the customer sent from the
    /// link, with the code in it).
    pub fn find_in(text: &str) -> Option<HandoffCode> {
        text.split(|c: char| !c.is_ascii_hexdigit())
            .find_map(HandoffCode::parse)
    }
}

impl std::fmt::Debug for HandoffCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandoffCode(…)")
    }
}

/// Bytes of a thread id in a reply token (128 bits: unguessable, and short enough for an
/// address's local part in base32).
pub const REPLY_TOKEN_BYTES: usize = 16;

/// Where a handle leads: its contact and open thread, and where the bridge's next event on
/// that thread goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The contact.
    pub contact: ContactId,
    /// The open thread.
    pub thread: ThreadId,
    /// Parents for the next event.
    pub parents: Vec<EventId>,
    /// Depth for the next event.
    pub depth: u64,
}

/// What became of a submitted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Stored, durably.
    Stored(EventId),
    /// Stored before (same event, or same external message id): nothing new was written.
    Duplicate(EventId),
}

impl Submitted {
    /// The stored event's id.
    pub fn id(&self) -> EventId {
        match self {
            Submitted::Stored(id) | Submitted::Duplicate(id) => *id,
        }
    }
}

/// A reply waiting for the bridge to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its place in the channel's queue (what [`NodeLink::ack`] takes).
    pub seq: u64,
    /// The thread.
    pub thread: ThreadId,
    /// The outbound message event.
    pub event: EventId,
    /// The outbound message's depth (a receipt goes right under it).
    pub depth: u64,
    /// Where it goes: a handle of the thread's contact, on the bridge's channel.
    pub handle: Handle,
    /// The text.
    pub text: String,
    /// Files the agent attached (their bytes: [`NodeLink::blob`]).
    pub attachments: Vec<Attachment>,
    /// The approved message template to send instead of text (WhatsApp outside its window).
    pub template: Option<Template>,
    /// The app's id of the customer's message this reply answers (to quote it, where the app
    /// can).
    pub reply_to: Option<ExternalId>,
    /// The customer withdrew consent to be written to on this channel (texted STOP): the
    /// bridge never sends it; it fails with a receipt saying so.
    pub opted_out: bool,
}

/// One message of a customer's conversation on one handle, as the customer may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationEntry {
    /// The thread.
    pub thread: ThreadId,
    /// The message event.
    pub event: EventId,
    /// Its depth (a receipt for it goes right under it).
    pub depth: u64,
    /// From the customer (`true`) or a reply (`false`).
    pub inbound: bool,
    /// The text; `None` if erased.
    pub text: Option<String>,
    /// When it was written.
    pub at: Timestamp,
    /// For a reply, the best receipt so far (read > delivered > failed).
    pub receipt: Option<ReceiptKind>,
    /// For the customer's message, whether an agent has read it.
    pub seen: bool,
    /// The channel the thread's replies go to now (`None`: nowhere, or erased).
    pub routed_to: Option<ChannelKind>,
    /// The app's id of the message, where it has one (the customer's messages).
    pub external_id: Option<ExternalId>,
    /// Its files, by reference (bytes: [`NodeLink::blob`]); none once erased.
    pub attachments: Vec<Attachment>,
}

/// One message of a thread, for a bridge that sends the thread's replies: what the customer
/// and the agents said, on every channel (never notes or other internal events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadMessage {
    /// The message event.
    pub event: EventId,
    /// Its depth (a receipt for it goes right under it).
    pub depth: u64,
    /// From the customer (`true`) or a reply (`false`).
    pub inbound: bool,
    /// For the customer's messages, the channel they wrote on.
    pub channel: Option<ChannelKind>,
    /// The text; `None` if erased.
    pub text: Option<String>,
    /// When it was written.
    pub at: Timestamp,
    /// The app's id of the customer's message (a mail's Message-ID).
    pub external_id: Option<String>,
    /// Files attached to it (empty if erased).
    pub attachments: Vec<Attachment>,
    /// Its subject, on apps that have one (none if erased).
    pub subject: Option<String>,
}

/// What a customer's handle is known to be, besides itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An address the customer typed in: shown to the agents on the contact (attribute
    /// `unverified <channel>`), never used to send anything, since anyone can type anything.
    Claimed(Handle),
    /// An address the bridge vouches for (a website signed it for its logged-in user): linked
    /// to the customer's contact; if it already belongs to a contact, the customer is that
    /// contact (their contact is merged into it), so the whole history is one record.
    Vouched(Handle),
}

/// Why the node did not do what the bridge asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The node cannot be reached or is shutting down: try again later.
    #[error("the node is unavailable: {0}")]
    Unavailable(String),
    /// The node refused the request: trying again will not help.
    #[error("the node refused: {code}: {message}")]
    Refused {
        /// A stable error code (see docs/API.md).
        code: String,
        /// What is wrong.
        message: String,
    },
}

/// How a bridge reaches its node: in-process for built-in bridges, over the bridge API for a
/// standalone one. Every method is one request; [`Bridge`] adds the retries.
pub trait NodeLink: Send + Sync {
    /// The contact and open thread of a handle on the bridge's channel (created when new). With
    /// a `hint`, the hinted thread instead, if it is open and the handle's contact's (never
    /// another customer's: then the handle's own thread, and the node logs the mismatch).
    /// `sender` says more of who wrote (see [`Sender`]).
    fn resolve(
        &self,
        handle: &Handle,
        hint: Option<&ThreadHint>,
        sender: Sender<'_>,
    ) -> impl Future<Output = Result<Resolved, LinkError>> + Send;

    /// Submits signed events; answers each, in order, once the stored ones are durable.
    fn submit(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<Result<Submitted, LinkError>>, LinkError>> + Send;

    /// The oldest deliveries queued for the bridge's channel.
    fn deliveries(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, LinkError>> + Send;

    /// Takes a delivery off the queue (idempotent).
    fn ack(&self, seq: u64) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// A one-time code for continuing the conversation of `handle` (a customer of the
    /// bridge's channel, who has written) on `to` ("continue on WhatsApp"): good once, for
    /// a short time, for that contact and thread. Refused (`no_conversation`) for a handle
    /// with no conversation.
    fn handoff_code(
        &self,
        handle: &Handle,
        to: ChannelKind,
    ) -> impl Future<Output = Result<HandoffCode, LinkError>> + Send;

    /// Brings back a code (see [`NodeLink::handoff_code`]) that `handle`, of the bridge's
    /// channel, sent: if it is good, the handle joins the contact it was issued for and the
    /// conversation continues here; answers that thread. `None`: the code links nothing (used,
    /// expired, for another channel, unknown, or its contact erased), the node logged why, and
    /// the message is taken as any other.
    fn continue_with(
        &self,
        handle: &Handle,
        code: &HandoffCode,
    ) -> impl Future<Output = Result<Option<ThreadId>, LinkError>> + Send;

    /// Records what `handle`'s customer is known to be (see [`Identity`]); creates the contact
    /// if it is new.
    fn identify(
        &self,
        handle: &Handle,
        identity: Identity,
    ) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Records that the customer of `handle` (of the bridge's channel) withdrew consent to be
    /// written to on the channel (`granted: false`: they texted STOP) or gave it back
    /// (`granted: true`: START). Consent is the contact's, per channel: nothing is sent to
    /// them there until they give it back. Recording what is recorded already writes nothing.
    fn consent(
        &self,
        handle: &Handle,
        granted: bool,
    ) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Tells the agents that the customer of `handle` is typing (best effort: nothing is
    /// stored, and an unknown handle is ignored).
    fn customer_typing(&self, handle: &Handle) -> impl Future<Output = ()> + Send;

    /// Whether any agent has the inbox open now (a chat shows "we are away" otherwise).
    fn agents_online(&self) -> impl Future<Output = bool> + Send;

    /// The messages exchanged on `handle` (a handle of the bridge's channel), oldest first:
    /// the customer's messages from that handle and the replies sent to it. Nothing from the
    /// customer's other handles, nothing internal. Empty for a handle the node does not know.
    fn conversation(
        &self,
        handle: &Handle,
    ) -> impl Future<Output = Result<Vec<ConversationEntry>, LinkError>> + Send;

    /// The messages of a thread whose replies go to the bridge's channel, oldest first (to
    /// quote the conversation so far, or answer the customer's last mail). Refused for a
    /// thread routed elsewhere.
    fn thread_messages(
        &self,
        thread: ThreadId,
    ) -> impl Future<Output = Result<Vec<ThreadMessage>, LinkError>> + Send;

    /// Stores an attachment's bytes durably and returns their hash (storing the same bytes
    /// again is harmless). An event may refer to a blob once this returned.
    fn put_blob(&self, bytes: Vec<u8>) -> impl Future<Output = Result<BlobHash, LinkError>> + Send;

    /// The bytes of an attachment of a thread whose replies go to the bridge's channel;
    /// `None` if the node does not have them (yet: a peer's may still be on its way).
    fn blob(
        &self,
        blob: BlobHash,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, LinkError>> + Send;
}

/// What became of a delivery the app took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The app has it for the customer: a delivered receipt is recorded now.
    Delivered,
    /// The app accepted it and will say later what became of it (a delivery or read report,
    /// or a failure, by webhook): no receipt now; the bridge records the app's report when it
    /// comes.
    Accepted,
}

/// Why a bridge could not send a delivery to the app.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Try again later (the app is down, rate limits): the delivery stays queued.
    #[error("send failed for now: {0}")]
    Retry(String),
    /// It will never work (the address does not exist): a failed receipt is recorded and the
    /// delivery leaves the queue.
    #[error("send failed: {0}")]
    Permanent(String),
    /// The bridge cannot send it yet (an attachment's bytes are still on their way from the
    /// node that has them): it stays queued and is tried again with back-off for as long as
    /// it takes. A failed receipt saying so is recorded only if it is still waiting after
    /// [`NOT_READY_NOTICE`] attempts (about a quarter of an hour).
    #[error("not ready to send: {0}")]
    NotReady(String),
    /// The customer is not reachable on this channel right now and the message needs no
    /// sending: it stays in the thread, where the customer sees it on return (a web chat
    /// visitor who left). The delivery leaves the queue with no receipt.
    #[error("customer not connected")]
    NotConnected,
}

/// A bridge's failure, after retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// The node refused (bad handle, event refused by the auth rules, ...).
    #[error(transparent)]
    Refused(LinkError),
    /// The node stayed unavailable for every attempt.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: LinkError,
    },
    /// A message could not be made into an event (text too long, ...).
    #[error("cannot make an event: {0}")]
    Event(String),
}

/// Exponential back-off between attempts: `first`, doubling up to `max`, `attempts` in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Attempts before giving up.
    pub attempts: u32,
}

impl Default for Backoff {
    /// 100 ms, 200 ms, ... up to 10 s, 10 attempts (about 40 s in all).
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(10),
            attempts: 10,
        }
    }
}

impl Backoff {
    /// Runs `attempt` until it succeeds, is refused, or the attempts run out.
    pub async fn retry<T, F, Fut>(&self, mut attempt: F) -> Result<T, BridgeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, LinkError>>,
    {
        let mut wait = self.first;
        let mut made = 0;
        loop {
            made += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(err @ LinkError::Refused { .. }) => return Err(BridgeError::Refused(err)),
                Err(last) if made >= self.attempts.max(1) => {
                    return Err(BridgeError::GaveUp {
                        attempts: made,
                        last,
                    })
                }
                Err(err) => {
                    tracing::debug!(cause = %err, ?wait, "node unavailable; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.max);
                }
            }
        }
    }
}

/// A bridge: its identity, its link to the node, and the retry policy.
#[derive(Debug)]
pub struct Bridge<L> {
    identity: BridgeIdentity,
    link: L,
    backoff: Backoff,
    now: fn() -> Timestamp,
    /// Deliveries the app refused for now: when to try each again, and whether the agents were
    /// told (one failed receipt per delivery, however many retries).
    retrying: std::sync::Mutex<std::collections::HashMap<u64, Retrying>>,
}

/// A delivery waiting to be sent again.
#[derive(Debug, Clone, Copy)]
struct Retrying {
    /// Times the app refused it for now (`SendError::Retry`): what gives up.
    refusals: u32,
    /// Times it was not ready (`SendError::NotReady`): never gives up.
    waits: u32,
    next: std::time::Instant,
}

/// Attempts at a delivery the app keeps refusing for now before it is given up (a failed
/// receipt): about an hour and a quarter of back-off.
pub const MAX_SEND_ATTEMPTS: u32 = 18;
/// Attempts at a delivery that is not ready to send (`SendError::NotReady`) after which the
/// agents are told with a failed receipt; it keeps waiting (about a quarter of an hour in).
pub const NOT_READY_NOTICE: u32 = 10;
/// The longest wait between two attempts at a delivery the app refused for now.
pub const MAX_SEND_RETRY: Duration = Duration::from_secs(300);

impl<L: NodeLink> Bridge<L> {
    /// A bridge with the default back-off, reading time from `now`.
    pub fn new(identity: BridgeIdentity, link: L, now: fn() -> Timestamp) -> Self {
        Bridge {
            identity,
            link,
            backoff: Backoff::default(),
            now,
            retrying: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The same bridge with another retry policy.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The bridge's identity.
    pub fn identity(&self) -> &BridgeIdentity {
        &self.identity
    }

    /// The time now, by the bridge's clock.
    pub fn now(&self) -> Timestamp {
        (self.now)()
    }

    /// The link to the node.
    pub fn link(&self) -> &L {
        &self.link
    }

    /// The message on `handle` that the app knows as `id` (what a customer's message quoting
    /// an earlier one names), as `(thread, event)`; `None` if there is none.
    pub async fn message_by_app_id(
        &self,
        handle: &Handle,
        id: &ExternalId,
    ) -> Result<Option<(ThreadId, EventId)>, LinkError> {
        Ok(self
            .link
            .conversation(handle)
            .await?
            .into_iter()
            .find(|entry| entry.external_id.as_ref() == Some(id))
            .map(|entry| (entry.thread, entry.event)))
    }

    /// Takes a customer's message in: the node has it durably once this returns `Ok` (as
    /// `Stored`, or `Duplicate` if it had it already). Each attempt resolves the handle again,
    /// so a retry lands on the thread that is open then.
    pub async fn receive(&self, message: &InboundMessage) -> Result<Submitted, BridgeError> {
        if message.handle.channel() != self.identity.channel {
            return Err(BridgeError::Event(format!(
                "a {} bridge cannot take a message from {}",
                self.identity.channel, message.handle
            )));
        }
        let n_files = message.attachments.len() + message.stored.len();
        if n_files > MAX_ATTACHMENTS {
            return Err(BridgeError::Event(format!(
                "{n_files} attachments; a message carries at most {MAX_ATTACHMENTS}"
            )));
        }
        self.backoff
            .retry(|| async {
                // Uploaded on every attempt: the node refuses a message whose blob it lacks
                // (as `Unavailable`), so a retry puts it back.
                let mut attachments = message.stored.clone();
                for attachment in &message.attachments {
                    attachments.push(self.upload(attachment).await?);
                }
                let original = match &message.original {
                    Some(original) => Some(self.upload(original).await?),
                    None => None,
                };
                let resolved = self
                    .link
                    .resolve(
                        &message.handle,
                        message.thread_hint.as_ref(),
                        Sender {
                            name: message.sender_name.as_deref(),
                            automatic: message.automatic,
                        },
                    )
                    .await?;
                let kind = if message.automatic {
                    EventKind::Thread(ThreadKind::AutoReply {
                        channel: self.identity.channel,
                    })
                } else {
                    EventKind::inbound_message(self.identity.channel)
                };
                let event = Draft::new(
                    Scope::Thread(resolved.thread),
                    resolved.parents,
                    resolved.depth,
                    (self.now)(),
                    kind,
                )
                .with_content({
                    let mut content = attachments.into_iter().fold(
                        Content::text(message.text.clone())
                            .with_handle(message.handle.clone())
                            .with_external_id(message.external_id.clone()),
                        Content::with_attachment,
                    );
                    content.subject = message.stored_subject();
                    content.original = original.map(Box::new);
                    content.reply_to = message
                        .reply_to
                        .filter(|(thread, _)| *thread == resolved.thread)
                        .map(|(_, event)| event);
                    content
                })
                .sign(&self.identity.key)
                .map_err(|err| LinkError::Refused {
                    code: "bad_event".to_owned(),
                    message: err.to_string(),
                })?;
                self.submit_one(event).await
            })
            .await
    }

    /// Stores a file's bytes on the node and gives its reference.
    async fn upload(&self, file: &InboundAttachment) -> Result<Attachment, LinkError> {
        let blob = self.link.put_blob(file.bytes.clone()).await?;
        file.reference(blob).map_err(|err| LinkError::Refused {
            code: "bad_event".to_owned(),
            message: err.to_string(),
        })
    }

    /// Sends what is queued for the bridge's channel (up to `limit` deliveries) with `send`,
    /// records a receipt for each and takes it off the queue. Returns how many left the queue.
    /// Those that `send` asked to retry stay queued and are tried again with back-off (1 s,
    /// doubling up to [`MAX_SEND_RETRY`]); the first such failure is recorded as a failed
    /// receipt with its reason, so the agents see it, and a later success as delivered.
    pub async fn deliver_pending<F, Fut>(&self, limit: usize, send: F) -> Result<usize, BridgeError>
    where
        F: Fn(Delivery) -> Fut,
        Fut: Future<Output = Result<Sent, SendError>>,
    {
        // Deliveries waiting to be retried do not hold up the ones behind them.
        let waiting_now = self
            .retrying
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        let deliveries = self
            .backoff
            .retry(|| self.link.deliveries(limit.saturating_add(waiting_now)))
            .await?;
        // Send each, then record every receipt in one submission, then acknowledge: a crash
        // anywhere before an acknowledgement sends that delivery again.
        let mut receipts = Vec::new();
        let mut notices = Vec::new();
        let mut settled = Vec::new();
        let now = std::time::Instant::now();
        for delivery in deliveries {
            let waiting = self
                .retrying
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&delivery.seq)
                .copied();
            if waiting.is_some_and(|w| w.next > now) {
                continue;
            }
            let (seq, thread, event, depth) = (
                delivery.seq,
                delivery.thread,
                delivery.event,
                delivery.depth,
            );
            // A template goes only where the app has templates (the route may have moved since
            // the agent wrote it); elsewhere it fails at once, with what to do instead.
            let sent = match &delivery.template {
                // A customer who opted out is never written to: refused before the app is called.
                _ if delivery.opted_out => Err(SendError::Permanent(format!(
                    "not sent: the customer opted out of {} (texted STOP); nothing goes to them there until they opt back in (START)",
                    self.identity.channel
                ))),
                Some(template) if !self.identity.channel.has_message_templates() => {
                    Err(SendError::Permanent(format!(
                        "the message template `{}` was not sent: {} has no message templates; write a reply instead",
                        template.name, self.identity.channel
                    )))
                }
                _ => send(delivery).await,
            };
            let receipt = match sent {
                Ok(Sent::Delivered) => Some((ReceiptKind::Delivered, None)),
                Ok(Sent::Accepted) => None,
                Err(SendError::Permanent(reason)) => Some((ReceiptKind::Failed, Some(reason))),
                Err(SendError::NotConnected) => None,
                Err(SendError::Retry(reason))
                    if waiting.map_or(0, |w| w.refusals) + 1 >= MAX_SEND_ATTEMPTS =>
                {
                    Some((
                        ReceiptKind::Failed,
                        Some(format!(
                            "gave up after {MAX_SEND_ATTEMPTS} attempts: {reason}"
                        )),
                    ))
                }
                Err(failure @ (SendError::Retry(_) | SendError::NotReady(_))) => {
                    let (mut refusals, mut waits) =
                        waiting.map_or((0, 0), |w| (w.refusals, w.waits));
                    // The app's first refusal is news for the agents at once; a wait for the
                    // bytes only once it is long.
                    let (reason, tell) = match failure {
                        SendError::Retry(reason) => {
                            refusals += 1;
                            (reason, refusals == 1)
                        }
                        SendError::NotReady(reason) => {
                            waits += 1;
                            (reason, waits == NOT_READY_NOTICE)
                        }
                        _ => continue,
                    };
                    let attempts = refusals + waits;
                    let wait = Duration::from_secs(1)
                        .saturating_mul(1 << attempts.min(16))
                        .min(MAX_SEND_RETRY);
                    self.retrying
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(
                            seq,
                            Retrying {
                                refusals,
                                waits,
                                next: now + wait,
                            },
                        );
                    tracing::debug!(seq, reason, attempts, "delivery stays queued");
                    if tell {
                        let reason = format!("{reason} (retrying)");
                        match self.receipt_event(
                            thread,
                            event,
                            depth,
                            ReceiptKind::Failed,
                            Some(reason),
                        ) {
                            Ok(notice) => notices.push(notice),
                            Err(err) => tracing::warn!(seq, cause = %err, "no failed receipt"),
                        }
                    }
                    continue;
                }
            };
            self.retrying
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&seq);
            match receipt {
                Some((kind, reason)) => {
                    match self.receipt_event(thread, event, depth, kind, reason) {
                        Ok(receipt) => receipts.push((seq, receipt)),
                        Err(err) => {
                            // Sent, but no receipt can be made: it leaves the queue all the same.
                            tracing::warn!(seq, cause = %err, "no receipt for a sent delivery");
                            settled.push(seq);
                        }
                    }
                }
                None => settled.push(seq),
            }
        }
        if !notices.is_empty() {
            // Best effort: the agents learn of the failure; the delivery stays queued anyway.
            if let Err(err) = self.link.submit(notices).await {
                tracing::debug!(cause = %err, "failed receipts not stored");
            }
        }
        if !receipts.is_empty() {
            // The app has these (or refused them for good): they leave the queue whatever
            // becomes of their receipts, so nothing is sent twice for a receipt's sake.
            let events: Vec<Event> = receipts.iter().map(|(_, event)| event.clone()).collect();
            match self
                .backoff
                .retry(|| self.link.submit(events.clone()))
                .await
            {
                Ok(results) => {
                    for ((seq, _), result) in receipts.iter().zip(results) {
                        if let Err(err) = result {
                            tracing::warn!(seq, cause = %err, "receipt not stored; delivery acknowledged");
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "receipts not stored; deliveries acknowledged")
                }
            }
            settled.extend(receipts.iter().map(|(seq, _)| *seq));
        }
        let mut acked = 0;
        for seq in &settled {
            // One that fails is sent again later (at least once); the others still leave.
            match self.backoff.retry(|| self.link.ack(*seq)).await {
                Ok(()) => acked += 1,
                Err(err) => tracing::warn!(seq, cause = %err, "delivery not acknowledged"),
            }
        }
        Ok(acked)
    }

    /// Records what happened to an outbound message (delivered, read by the customer, failed
    /// with a reason). The receipt goes right under the message in its thread.
    pub async fn receipt(
        &self,
        thread: ThreadId,
        target: EventId,
        target_depth: u64,
        kind: ReceiptKind,
        reason: Option<String>,
    ) -> Result<Submitted, BridgeError> {
        let event = self.receipt_event(thread, target, target_depth, kind, reason)?;
        self.backoff.retry(|| self.submit_one(event.clone())).await
    }

    fn receipt_event(
        &self,
        thread: ThreadId,
        target: EventId,
        target_depth: u64,
        kind: ReceiptKind,
        reason: Option<String>,
    ) -> Result<Event, BridgeError> {
        let mut draft = Draft::new(
            Scope::Thread(thread),
            vec![target],
            target_depth + 1,
            (self.now)(),
            EventKind::Thread(ThreadKind::Receipt {
                target,
                channel: self.identity.channel,
                receipt: kind,
            }),
        );
        if let Some(reason) = reason {
            draft = draft.with_content(Content::text(reason));
        }
        draft
            .sign(&self.identity.key)
            .map_err(|err| BridgeError::Event(err.to_string()))
    }

    async fn submit_one(&self, event: Event) -> Result<Submitted, LinkError> {
        let mut results = self.link.submit(vec![event]).await?;
        match results.pop() {
            Some(result) if results.is_empty() => result,
            _ => Err(LinkError::Unavailable(
                "the node answered a submission of one event with another count".to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick(attempts: u32) -> Backoff {
        Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(4),
            attempts,
        }
    }

    #[test]
    fn a_subject_is_stored_on_one_line_cut_to_fit() {
        let with = |subject: &str| {
            let mut message = InboundMessage::new(
                "email:a@example.test".parse().expect("handle"),
                ExternalId::new("<1@x>").expect("id"),
                "text",
            );
            message.subject = Some(subject.to_owned());
            message.stored_subject().map(|s| s.as_str().to_owned())
        };
        assert_eq!(
            with("  Order\r\n\t 1077:\u{0}  broken  ").as_deref(),
            Some("Order 1077: broken")
        );
        assert_eq!(with(" \r\n "), None);
        let long = with(&"é".repeat(MAX_SUBJECT_BYTES)).expect("kept");
        assert!(long.len() <= MAX_SUBJECT_BYTES && long.len() >= MAX_SUBJECT_BYTES - 1);
        assert!(long.chars().all(|c| c == 'é'));
    }

    #[test]
    fn an_attachment_name_is_cut_to_fit_keeping_its_extension() {
        let file = |name: &str, media_type: &str| InboundAttachment {
            name: name.to_owned(),
            media_type: media_type.to_owned(),
            bytes: vec![1, 2, 3],
        };
        let blob = BlobHash::of(&[1, 2, 3]);
        let long = format!("{}.pdf", "é".repeat(200));
        let attachment = file(&long, "application/pdf")
            .reference(blob)
            .expect("fits");
        assert!(attachment.name.as_str().ends_with("é.pdf"));
        assert!(attachment.name.as_str().len() <= MAX_SHORT_STRING_BYTES);
        assert_eq!(attachment.size, 3);
        let nameless = file("\u{7}\n", "").reference(blob).expect("fits");
        assert_eq!(nameless.name.as_str(), "attachment");
        assert_eq!(nameless.media_type.as_str(), "application/octet-stream");
    }

    #[tokio::test]
    async fn retries_while_unavailable_then_succeeds() {
        let calls = AtomicU32::new(0);
        let result = quick(5)
            .retry(|| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(LinkError::Unavailable("down".to_owned())),
                    _ => Ok("stored"),
                }
            })
            .await;
        assert_eq!(result, Ok("stored"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_last_attempt_and_says_why() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = quick(3)
            .retry(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(LinkError::Unavailable("connection refused".to_owned()))
            })
            .await;
        assert_eq!(
            result,
            Err(BridgeError::GaveUp {
                attempts: 3,
                last: LinkError::Unavailable("connection refused".to_owned()),
            })
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refusal_is_not_retried() {
        let calls = AtomicU32::new(0);
        let refused = LinkError::Refused {
            code: "forbidden".to_owned(),
            message: "wrong channel".to_owned(),
        };
        let result: Result<(), _> = quick(5)
            .retry(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(refused.clone())
            })
            .await;
        assert_eq!(result, Err(BridgeError::Refused(refused.clone())));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
