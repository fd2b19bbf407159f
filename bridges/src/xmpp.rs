//! The XMPP bridge: the business's support address is an external component of its XMPP
//! server (XEP-0114, `support.<domain>`); customers on any XMPP account write to it.
//!
//! - **In**: a customer's `<message/>` to the component becomes an inbound message of
//!   `xmpp:<bare JID>`, idempotent on its origin-id (XEP-0359) or else its stanza id, so a
//!   client's resend after a reconnect is stored once. Once it is durable the client gets its
//!   receipt (XEP-0184) if it asked for one; a message not taken gets an error back (`wait`:
//!   send it again; `modify`: never as it is). Files arrive as links (XEP-0363 uploads, sent
//!   as XEP-0066 out-of-band data) and are fetched into blobs from the hosts the operator
//!   allows (`media_hosts`); a link elsewhere stays in the text. Receipts and `displayed`
//!   markers (XEP-0333) become `delivered` and `read` receipts of the replies; `composing`
//!   (XEP-0085) tells the agents the customer types. Each customer has an allowance of
//!   messages: a flood from one JID is refused without slowing the others.
//! - **Out**: an agent's reply goes from the component with the reply's event id as its
//!   stanza id and origin-id, asking for a receipt and a marker; files are uploaded to the
//!   server's upload service (XEP-0363) and sent as links. A delivery is acknowledged only
//!   once the server answered a ping sent after it (the server handles a stream's stanzas in
//!   order, so it has routed the reply); one in flight when the stream drops is sent again
//!   on the next stream with the same id.
//! - **The stream**: reconnects with jittered back-off (250 ms doubling to 30 s) whenever the
//!   server closes it or goes away, and pings the server every 30 s so a dead link is found.

pub mod stanzas;

/// The stanza types, for callers that name JIDs.
pub use xmpp_parsers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use threadline_protocol::{event::ReceiptKind, Handle};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_xmpp::connect::{DnsConfig, TcpServerConnector};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::Component;
use xmpp_parsers::{
    http_upload::{Header, SlotRequest, SlotResult},
    iq::Iq,
    jid::{BareJid, Jid},
    message::Message,
    ping::Ping,
    presence::{Presence, Type as PresenceType},
    stanza::Stanza,
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
};

use crate::rate::{Allowances, RateLimit, TypingThrottle};
use crate::sdk::{
    Bridge, BridgeError, Delivery, HandoffCode, InboundAttachment, InboundMessage, NodeLink,
    SendError, Sent,
};
use crate::webhook::{attachment_bytes, continue_hint, record_receipt};
use stanzas::{Incoming, TextMessage};

/// Deliveries sent per round.
const BATCH: usize = 64;
/// The first wait before connecting again; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between attempts to connect.
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How often the server is pinged while the stream is quiet.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// How long an answer to a request (a ping, an upload slot) may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);
/// How long a customer's worker waits for their next stanza before it ends.
const WORKER_IDLE: Duration = Duration::from_secs(60);
/// Stanzas of one customer waiting to be handled; more are refused as a flood.
const WORKER_QUEUE: usize = 32;

/// What a customer over their allowance is told.
const TOO_MANY: &str = "too many messages at once: wait a moment and send it again";

/// Each customer's allowance: 30 messages at once (a client sends what it queued during an
/// outage all at once when it is back), then four a second.
pub const CUSTOMER_RATE: RateLimit = RateLimit {
    burst: 30,
    refill: Duration::from_millis(250),
};

/// The component's shared secret (XEP-0114). It never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct ComponentSecret(String);

impl ComponentSecret {
    /// A secret; refused when empty.
    pub fn new(secret: impl Into<String>) -> Result<Self, String> {
        let secret = secret.into();
        if secret.trim().is_empty() {
            return Err("the component secret is empty".to_owned());
        }
        Ok(ComponentSecret(secret))
    }
}

impl std::fmt::Debug for ComponentSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ComponentSecret(…)")
    }
}

/// Where the component connects and what it may do.
#[derive(Debug, Clone)]
pub struct XmppSettings {
    /// The component's address, which customers write to (`support.shop.example`).
    pub component: BareJid,
    /// The server's component port, `host:port` (plain TCP: keep it on a private link).
    pub server: String,
    /// The component's secret, as the server has it.
    pub secret: ComponentSecret,
    /// The server's own domain (pinged to confirm deliveries and keep the stream alive).
    pub server_domain: BareJid,
    /// The server's upload service (XEP-0363) for agents' files; without one a reply's files
    /// fail with a reason.
    pub upload_service: Option<BareJid>,
    /// Hosts (`host` or `host:port`) whose file links are fetched into the thread; a link to
    /// any other host stays in the message as text (the bridge fetches nothing a customer
    /// names elsewhere, such as addresses inside the node's network).
    pub media_hosts: Vec<String>,
    /// Each customer's allowance of messages.
    pub rate: RateLimit,
}

impl XmppSettings {
    /// The `xmpp:` link that opens a chat with the component with `code` as the first
    /// message (RFC 5122).
    pub fn continue_link(&self, code: &HandoffCode) -> String {
        format!(
            "xmpp:{}?message;body=Continue%20my%20chat%20(code%20{})",
            self.component,
            code.as_str()
        )
    }
}

/// The live stream, as the parts of the bridge that send use it.
#[derive(Debug, Clone)]
struct StreamLink {
    out: mpsc::Sender<Stanza>,
    /// Requests waiting for the server's answer, by iq id.
    answers: Arc<Mutex<HashMap<String, oneshot::Sender<Iq>>>>,
    next_id: Arc<AtomicU64>,
}

/// The stream went away before the stanza was sent or answered.
#[derive(Debug)]
struct Disconnected;

impl StreamLink {
    async fn send(&self, stanza: impl Into<Stanza>) -> Result<(), Disconnected> {
        self.out.send(stanza.into()).await.map_err(|_| Disconnected)
    }

    /// Sends a request and waits for its answer (a result or an error).
    async fn ask(&self, mut iq: Iq) -> Result<Iq, Disconnected> {
        let id = format!("tl-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        *iq.id_mut() = id.clone();
        let (answer, answered) = oneshot::channel();
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), answer);
        let result = async {
            self.send(iq).await?;
            match tokio::time::timeout(ANSWER_WITHIN, answered).await {
                Ok(Ok(iq)) => Ok(iq),
                _ => Err(Disconnected),
            }
        }
        .await;
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        result
    }

    fn answered(&self, iq: Iq) -> Option<Iq> {
        let waiting = self
            .answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(iq.id());
        match waiting {
            Some(answer) => {
                let _ = answer.send(iq);
                None
            }
            None => Some(iq),
        }
    }
}

/// The XMPP bridge.
#[derive(Debug)]
pub struct Xmpp<L> {
    bridge: Bridge<L>,
    settings: XmppSettings,
    stream: Mutex<Option<StreamLink>>,
    allowances: Allowances,
    typing: TypingThrottle,
    http: ureq::Agent,
}

impl<L: NodeLink + 'static> Xmpp<L> {
    /// The bridge on `bridge` (a bridge certified for the XMPP channel).
    pub fn new(bridge: Bridge<L>, settings: XmppSettings) -> Self {
        let http = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .redirects(0)
            .build();
        Xmpp {
            bridge,
            allowances: Allowances::new(settings.rate),
            settings,
            stream: Mutex::new(None),
            typing: TypingThrottle::default(),
            http,
        }
    }

    /// The bridge's SDK side.
    pub fn bridge(&self) -> &Bridge<L> {
        &self.bridge
    }

    /// The settings.
    pub fn settings(&self) -> &XmppSettings {
        &self.settings
    }

    /// Whether the stream to the server is up now.
    pub fn connected(&self) -> bool {
        self.link().is_some()
    }

    fn link(&self) -> Option<StreamLink> {
        self.stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|link| !link.out.is_closed())
    }

    /// Keeps a stream to the server and serves it, for ever (drop the future to stop). Each
    /// `wake` sends what is queued at once; what is queued is also sent every 2 s.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>) {
        let mut wait = RECONNECT_FIRST;
        loop {
            match self.connect().await {
                Ok(component) => {
                    tracing::info!(component = %self.settings.component, server = %self.settings.server, "xmpp: connected");
                    wait = RECONNECT_FIRST;
                    self.serve(component, &wake).await;
                    tracing::warn!("xmpp: the stream to the server closed; connecting again");
                }
                Err(cause) => {
                    tracing::warn!(%cause, retry_in = ?wait, "xmpp: cannot connect to the server");
                }
            }
            tokio::time::sleep(jittered(wait)).await;
            wait = (wait * 2).min(RECONNECT_MAX);
        }
    }

    async fn connect(&self) -> Result<Component<TcpServerConnector>, String> {
        let address = tokio::net::lookup_host(&self.settings.server)
            .await
            .map_err(|err| format!("{}: {err}", self.settings.server))?
            .next()
            .ok_or_else(|| format!("{}: no address", self.settings.server))?;
        let timeouts = Timeouts {
            read_timeout: KEEPALIVE * 3,
            response_timeout: ANSWER_WITHIN * 2,
        };
        let jid = self.settings.component.to_string();
        let login = Component::new_plaintext(
            &jid,
            &self.settings.secret.0,
            DnsConfig::addr(&address.to_string()),
            timeouts,
        );
        match tokio::time::timeout(ANSWER_WITHIN, login).await {
            Ok(Ok(component)) => Ok(component),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("{address}: no answer to the handshake")),
        }
    }

    /// Serves one stream until it closes.
    async fn serve(self: &Arc<Self>, component: Component<TcpServerConnector>, wake: &Arc<Notify>) {
        let (mut sink, mut incoming) = component.split();
        let (out, mut outgoing) = mpsc::channel::<Stanza>(256);
        let dead = Arc::new(Notify::new());
        let link = StreamLink {
            out,
            answers: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
        };
        let writer = tokio::spawn({
            let dead = Arc::clone(&dead);
            async move {
                while let Some(stanza) = outgoing.recv().await {
                    if let Err(err) = sink.send(stanza).await {
                        tracing::warn!(cause = %err, "xmpp: cannot write to the server");
                        break;
                    }
                }
                dead.notify_one();
            }
        });
        *self.stream.lock().unwrap_or_else(PoisonError::into_inner) = Some(link.clone());
        let sender = tokio::spawn(Arc::clone(self).deliver_while_connected(Arc::clone(wake)));
        let keepalive = tokio::spawn({
            let (link, dead, domain) = (
                link.clone(),
                Arc::clone(&dead),
                self.settings.server_domain.clone(),
            );
            async move {
                loop {
                    tokio::time::sleep(KEEPALIVE).await;
                    if link.ask(ping(&domain)).await.is_err() {
                        tracing::warn!("xmpp: the server did not answer a ping");
                        dead.notify_one();
                        break;
                    }
                }
            }
        });
        // Stopped with the stream, and when the caller drops `run`.
        let _tasks = AbortOnDrop(vec![writer, sender, keepalive]);
        let mut workers: HashMap<Handle, mpsc::Sender<Incoming>> = HashMap::new();
        loop {
            tokio::select! {
                stanza = incoming.next() => match stanza {
                    Some(Stanza::Message(message)) => self.dispatch(message, &mut workers, &link),
                    Some(Stanza::Iq(iq)) => {
                        if let Some(iq) = link.answered(iq) {
                            self.answer(iq, &link).await;
                        }
                    }
                    Some(Stanza::Presence(presence)) => self.presence(presence, &link).await,
                    None => break,
                },
                () = dead.notified() => break,
            }
        }
        *self.stream.lock().unwrap_or_else(PoisonError::into_inner) = None;
        // Whoever waits for an answer learns the stream is gone.
        link.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Hands a message to its customer's worker (one per customer: their stanzas in order,
    /// customers side by side).
    fn dispatch(
        self: &Arc<Self>,
        message: Message,
        workers: &mut HashMap<Handle, mpsc::Sender<Incoming>>,
        link: &StreamLink,
    ) {
        let incoming = stanzas::read(message, &self.settings.component);
        let handle = match &incoming {
            Incoming::Text(text) => text.handle.clone(),
            Incoming::Received { handle, .. }
            | Incoming::Displayed { handle, .. }
            | Incoming::Bounced { handle, .. }
            | Incoming::Typing { handle } => handle.clone(),
            Incoming::Ignored(why) => {
                tracing::debug!(why, "xmpp: stanza ignored");
                return;
            }
        };
        let flood = |incoming: &Incoming| {
            if let Incoming::Text(text) = incoming {
                tracing::info!(%handle, "xmpp: too many messages from one customer; refused");
                refuse(&self.settings.component, link, text, true, TOO_MANY);
            }
        };
        if matches!(incoming, Incoming::Text(_)) && !self.allowances.take(&handle) {
            flood(&incoming);
            return;
        }
        if workers.len() > 4096 {
            workers.retain(|_, worker| !worker.is_closed());
        }
        let incoming = match workers.get(&handle) {
            Some(worker) => match worker.try_send(incoming) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(incoming)) => {
                    flood(&incoming);
                    return;
                }
                // Its worker ended (idle): a new one takes it.
                Err(mpsc::error::TrySendError::Closed(incoming)) => incoming,
            },
            None => incoming,
        };
        let (worker, queue) = mpsc::channel(WORKER_QUEUE);
        // A new queue has room.
        let _ = worker.try_send(incoming);
        workers.insert(handle.clone(), worker);
        tokio::spawn(Arc::clone(self).work(queue, link.clone()));
    }

    /// One customer's stanzas, in order, until they are quiet for [`WORKER_IDLE`].
    async fn work(self: Arc<Self>, mut queue: mpsc::Receiver<Incoming>, link: StreamLink) {
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(WORKER_IDLE, queue.recv()) => next,
                // The stream is gone: the client sends again what it has no receipt for.
                () = link.out.closed() => return,
            };
            match next {
                Ok(Some(incoming)) => self.take(incoming, &link).await,
                Ok(None) => return,
                Err(_) => {
                    // Closed first, so nothing is put in a queue no one will read.
                    queue.close();
                    while let Ok(incoming) = queue.try_recv() {
                        self.take(incoming, &link).await;
                    }
                    return;
                }
            }
        }
    }

    async fn take(&self, incoming: Incoming, link: &StreamLink) {
        match incoming {
            Incoming::Text(text) => self.take_text(text, link).await,
            Incoming::Received { handle, id } => {
                self.record(&handle, &id, ReceiptKind::Delivered, None, false)
                    .await;
            }
            Incoming::Displayed { handle, id } => {
                self.record(&handle, &id, ReceiptKind::Read, None, true)
                    .await;
            }
            Incoming::Bounced { handle, id, reason } => {
                self.record(&handle, &id, ReceiptKind::Failed, Some(reason), false)
                    .await;
            }
            Incoming::Typing { handle } => {
                if self.typing.allow(&handle) {
                    self.bridge.link().customer_typing(&handle).await;
                }
            }
            Incoming::Ignored(_) => {}
        }
    }

    /// Stores a customer's message, then answers with its receipt (or why it was not taken).
    async fn take_text(&self, text: TextMessage, link: &StreamLink) {
        let component = &self.settings.component;
        let mut body = text.body.clone();
        let mut attachments = Vec::new();
        for url in &text.files {
            let fetched = if self.may_fetch(url) {
                self.fetch(url)
                    .await
                    .map_err(|why| format!("[file not fetched: {url} ({why})]"))
            } else {
                Err(url.clone())
            };
            match fetched {
                Ok(file) => attachments.push(file),
                Err(line) => {
                    if !body.is_empty() {
                        body.push('\n');
                    }
                    body.push_str(&line);
                }
            }
        }
        let hint = match HandoffCode::find_in(&body) {
            Some(code) => match continue_hint(&self.bridge, &text.handle, &code).await {
                Ok(hint) => hint,
                Err(refusal) => {
                    tracing::warn!(cause = %refusal, "xmpp: a continue-on code could not be checked");
                    refuse(
                        component,
                        link,
                        &text,
                        true,
                        "the service is busy: send it again in a moment",
                    );
                    return;
                }
            },
            None => None,
        };
        let Some(external_id) = text.external_id.clone().or_else(random_id) else {
            refuse(
                component,
                link,
                &text,
                true,
                "the service is busy: send it again in a moment",
            );
            return;
        };
        let mut message = InboundMessage::new(text.handle.clone(), external_id, body);
        message.attachments = attachments;
        message.thread_hint = hint;
        match self.bridge.receive(&message).await {
            Ok(_) => {
                self.typing.reset(&text.handle);
                if let (true, Some(id)) = (text.wants_receipt, &text.stanza_id) {
                    let _ = link
                        .send(stanzas::receipt(component, text.from.clone(), id))
                        .await;
                }
            }
            Err(BridgeError::GaveUp { last, .. }) => {
                tracing::warn!(cause = %last, "xmpp: a message could not be stored; the customer is told to resend");
                refuse(
                    component,
                    link,
                    &text,
                    true,
                    "the service is busy: send it again in a moment",
                );
            }
            Err(err) => {
                tracing::warn!(cause = %err, "xmpp: a message was refused");
                refuse(component, link, &text, false, &err.to_string());
            }
        }
    }

    /// Records `kind` on the reply that the stanza id `id` names (with `up_to`, on it and
    /// every earlier reply on the handle too, as a `displayed` marker means).
    async fn record(
        &self,
        handle: &Handle,
        id: &str,
        kind: ReceiptKind,
        reason: Option<String>,
        up_to: bool,
    ) {
        // A reply's files go as `<event>-f<n>`.
        let Some(event) = id
            .split('-')
            .next()
            .and_then(|event| event.parse::<threadline_protocol::EventId>().ok())
        else {
            tracing::debug!(id, "xmpp: a receipt for a stanza that is not a reply");
            return;
        };
        let at = if up_to {
            match self.bridge.link().conversation(handle).await {
                Ok(entries) => entries
                    .iter()
                    .find(|entry| entry.event == event)
                    .map(|entry| entry.at),
                Err(err) => {
                    tracing::warn!(cause = %err, "xmpp: cannot read the conversation for a marker");
                    return;
                }
            }
        } else {
            None
        };
        let recorded = record_receipt(
            &self.bridge,
            handle,
            |entry| entry.event == event || at.is_some_and(|at| entry.at <= at),
            kind,
            reason,
        )
        .await;
        if let Err(err) = recorded {
            tracing::warn!(cause = %err, "xmpp: a receipt was not recorded");
        }
    }

    /// Answers a request addressed to the component: pings; anything else is not offered.
    async fn answer(&self, iq: Iq, link: &StreamLink) {
        let (Iq::Get {
            from, id, payload, ..
        }
        | Iq::Set {
            from, id, payload, ..
        }) = iq
        else {
            return;
        };
        let Some(from) = from else { return };
        let answer = if Ping::try_from(payload).is_ok() {
            Iq::empty_result(from, id)
        } else {
            Iq::from_error(
                id,
                StanzaError::new(
                    ErrorType::Cancel,
                    DefinedCondition::FeatureNotImplemented,
                    "en",
                    "not offered by this service",
                ),
            )
            .with_to(from)
        };
        let answer = answer.with_from(Jid::from(self.settings.component.clone()));
        let _ = link.send(answer).await;
    }

    /// Accepts a customer's subscription, and says the service is there when asked.
    async fn presence(&self, presence: Presence, link: &StreamLink) {
        let Some(from) = presence.from.clone() else {
            return;
        };
        if stanzas::handle_of(&from).is_none() {
            return;
        }
        let component = Jid::from(self.settings.component.clone());
        let bare = Jid::from(from.to_bare());
        let mut answers = Vec::new();
        match presence.type_ {
            PresenceType::Subscribe => {
                answers.push(Presence::new(PresenceType::Subscribed));
                answers.push(Presence::new(PresenceType::None));
            }
            PresenceType::Probe => answers.push(Presence::new(PresenceType::None)),
            _ => {}
        }
        for mut answer in answers {
            answer.from = Some(component.clone());
            answer.to = Some(bare.clone());
            let _ = link.send(answer).await;
        }
    }

    /// Sends what is queued while the stream is up: at once when woken, and every 2 s.
    async fn deliver_while_connected(self: Arc<Self>, wake: Arc<Notify>) {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                () = wake.notified() => {}
                _ = tick.tick() => {}
            }
            loop {
                match self.deliver(BATCH).await {
                    Ok(sent) if sent == BATCH => continue,
                    Ok(_) => break,
                    Err(err) => {
                        tracing::warn!(cause = %err, "xmpp: deliveries failed; retrying");
                        break;
                    }
                }
            }
        }
    }

    /// Sends what is queued for XMPP (up to `limit`); how many left the queue.
    pub async fn deliver(&self, limit: usize) -> Result<usize, BridgeError> {
        if !self.connected() {
            return Ok(0);
        }
        self.bridge
            .deliver_pending(limit, |delivery| self.send(delivery))
            .await
    }

    /// Tells the customer of `handle` that an agent is typing (if the stream is up).
    pub fn agent_typing(&self, handle: &Handle) {
        let (Some(link), Ok(to)) = (self.link(), handle.address().parse::<BareJid>()) else {
            return;
        };
        let _ = link
            .out
            .try_send(stanzas::composing(&self.settings.component, &to).into());
    }

    async fn send(&self, delivery: Delivery) -> Result<Sent, SendError> {
        let link = self
            .link()
            .ok_or_else(|| SendError::NotReady("the XMPP server is not connected".to_owned()))?;
        let gone = |_: Disconnected| {
            SendError::NotReady("the stream to the XMPP server closed".to_owned())
        };
        let to: BareJid = delivery.handle.address().parse().map_err(|err| {
            SendError::Permanent(format!("{} is not a JID: {err}", delivery.handle))
        })?;
        let component = &self.settings.component;
        let id = delivery.event.to_string();
        let mut links = Vec::with_capacity(delivery.attachments.len());
        for file in &delivery.attachments {
            let bytes = attachment_bytes(self.bridge.link(), file).await?;
            links.push(self.upload(&link, file, bytes).await?);
        }
        if !delivery.text.is_empty() || links.is_empty() {
            link.send(stanzas::reply(component, &to, &id, &delivery.text, None))
                .await
                .map_err(gone)?;
        }
        for (n, url) in links.iter().enumerate() {
            let file_id = format!("{id}-f{n}");
            link.send(stanzas::reply(component, &to, &file_id, "", Some(url)))
                .await
                .map_err(gone)?;
        }
        // The server handles the stream in order: its answer means it has routed the reply.
        match link.ask(ping(&self.settings.server_domain)).await {
            Ok(_) => Ok(Sent::Accepted),
            Err(gone_now) => Err(gone(gone_now)),
        }
    }

    /// Puts a reply's file on the server's upload service (XEP-0363); answers its link.
    async fn upload(
        &self,
        link: &StreamLink,
        file: &threadline_protocol::event::Attachment,
        bytes: Vec<u8>,
    ) -> Result<String, SendError> {
        let Some(service) = &self.settings.upload_service else {
            return Err(SendError::Permanent(
                "files cannot be sent over XMPP here: the bridge has no upload service ([xmpp] upload_service)".to_owned(),
            ));
        };
        let request = Iq::from_get(
            String::new(),
            SlotRequest {
                filename: file.name.as_str().to_owned(),
                size: bytes.len() as u64,
                content_type: Some(file.media_type.as_str().to_owned()),
            },
        )
        .with_to(Jid::from(service.clone()))
        .with_from(Jid::from(self.settings.component.clone()));
        let answer = link.ask(request).await.map_err(|Disconnected| {
            SendError::NotReady("the stream to the XMPP server closed".to_owned())
        })?;
        let slot = match answer {
            Iq::Result {
                payload: Some(payload),
                ..
            } => SlotResult::try_from(payload).map_err(|err| {
                SendError::Retry(format!("the upload service gave no usable slot: {err}"))
            })?,
            Iq::Error { error, .. } => {
                let why = error
                    .texts
                    .values()
                    .next()
                    .cloned()
                    .unwrap_or_else(|| format!("{:?}", error.defined_condition));
                return Err(match error.type_ {
                    ErrorType::Wait => SendError::Retry(format!("the upload service: {why}")),
                    _ => {
                        SendError::Permanent(format!("the upload service refused the file: {why}"))
                    }
                });
            }
            _ => {
                return Err(SendError::Retry(
                    "the upload service gave no slot".to_owned(),
                ))
            }
        };
        let (agent, put, headers, media_type) = (
            self.http.clone(),
            slot.put.url.clone(),
            slot.put.headers.clone(),
            file.media_type.as_str().to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            let mut request = agent.put(&put).set("Content-Type", &media_type);
            for Header { name, value } in &headers {
                request = request.set(name.as_str(), value);
            }
            request
                .send_bytes(&bytes)
                .map(drop)
                .map_err(|err| err.to_string())
        })
        .await
        .map_err(|err| SendError::Retry(format!("upload task failed: {err}")))?
        .map_err(|err| SendError::Retry(format!("the upload failed: {err}")))?;
        Ok(slot.get.url)
    }

    /// Whether a link's host is one the operator lets the bridge fetch from.
    fn may_fetch(&self, url: &str) -> bool {
        let Some(rest) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
        else {
            return false;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return false;
        }
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host);
        self.settings.media_hosts.iter().any(|allowed| {
            allowed.eq_ignore_ascii_case(authority) || allowed.eq_ignore_ascii_case(host)
        })
    }

    /// A file a customer sent as a link, at most `MAX_BLOB_BYTES`.
    async fn fetch(&self, url: &str) -> Result<InboundAttachment, String> {
        let (agent, url) = (self.http.clone(), url.to_owned());
        tokio::task::spawn_blocking(move || {
            let response = agent.get(&url).call().map_err(|err| err.to_string())?;
            let media_type = response.content_type().to_owned();
            let bytes = crate::webhook::read_file(response)?;
            let name = url
                .rsplit('/')
                .next()
                .filter(|name| !name.is_empty())
                .unwrap_or("file")
                .to_owned();
            Ok(InboundAttachment {
                name,
                media_type,
                bytes,
            })
        })
        .await
        .map_err(|err| format!("download task failed: {err}"))?
    }
}

/// An id for a message whose client gave it none (such a message is not idempotent).
fn random_id() -> Option<threadline_protocol::name::ExternalId> {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut bytes).ok()?;
    stanzas::external_id(&format!("noid-{}", hex::encode(bytes)))
}

/// Tasks of one stream, aborted when it ends.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A ping (XEP-0199) to `to`.
fn ping(to: &BareJid) -> Iq {
    Iq::from_get(String::new(), Ping).with_to(Jid::from(to.clone()))
}

/// Tells the customer their message was not taken (`retry`: they may send it again).
fn refuse(component: &BareJid, link: &StreamLink, text: &TextMessage, retry: bool, why: &str) {
    let refusal = stanzas::refusal(
        component,
        text.from.clone(),
        text.stanza_id.as_deref(),
        retry,
        why,
    );
    // Best effort: a full queue means the stream is stuck, and the client resends anyway.
    let _ = link.out.try_send(refusal.into());
}

/// `wait` give or take a quarter, so bridges that lost one server do not come back at once.
fn jittered(wait: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut byte);
    let factor = 0.75 + f64::from(byte[0]) / 510.0;
    wait.mul_f64(factor)
}
