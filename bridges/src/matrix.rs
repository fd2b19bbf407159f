//! The Matrix bridge: an application service of the business's homeserver. Its bot user
//! (`@support:shop.example`) is the business on Matrix; a customer opens a direct chat with
//! it.
//!
//! - **Registration**: [`MatrixSettings::registration`] writes the YAML the homeserver loads
//!   (tokens, the bridge's URL, an exclusive namespace for the bot's users, ephemeral events
//!   on so read receipts and typing arrive).
//! - **In**: the homeserver pushes transactions (`PUT /_matrix/app/v1/transactions/{txnId}`).
//!   Each is checked against the `hs_token` in constant time (401 otherwise, nothing read);
//!   its events are taken in order and the answer (`200`) comes only once every message in it
//!   is durable; a transaction the homeserver sends again is taken again and stores nothing
//!   twice (each message is idempotent on its Matrix event id; transaction ids are not
//!   trusted, since a homeserver may number them again after a restart). An invitation of the bot to a
//!   direct chat is accepted and that room becomes the customer's (kept in the bot's
//!   `m.direct`, so a restart knows it); the bot never stays in a room where a third person
//!   joined (a reply there would reach someone else). Text (with its HTML kept as the
//!   message's original), files from the media repository, edits and deletions by the
//!   customer (recorded as messages quoting what they change), read receipts and typing. An
//!   encrypted room gets a notice that end-to-end encryption is not bridged, and the agents
//!   see that a message could not be read.
//! - **Out**: replies are sent by the bot to the customer's room (a new direct chat if they
//!   left theirs), with the reply's event id as the transaction id so a resend is one message;
//!   files are uploaded to the media repository first.

pub mod client;
pub mod events;

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use ruma::api::client::{
    config::{get_global_account_data, set_global_account_data},
    media::create_content,
    membership::{join_room_by_id, leave_room},
    message::{get_message_events, send_message_event},
    receipt::create_receipt,
    room::create_room,
    typing::create_typing_event,
};
use ruma::events::direct::{DirectEventContent, OwnedDirectUserIdentifier};
use ruma::events::room::message::{
    FileMessageEventContent, ImageMessageEventContent, MessageType, RoomMessageEventContent,
};
use ruma::events::GlobalAccountDataEventType;
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedTransactionId, OwnedUserId};
use threadline_protocol::{event::ReceiptKind, name::ExternalId, Handle, Timestamp};

use crate::rate::TypingThrottle;
use crate::sdk::{
    Bridge, BridgeError, Delivery, HandoffCode, InboundAttachment, InboundMessage, NodeLink,
    SendError, Sent,
};
use crate::webhook::{attachment_bytes, continue_hint, quoted_message, record_receipt};
pub use client::{AppserviceToken, Homeserver, MatrixError};
use events::{Happening, Signal};

/// The stanza types' crate, for callers that name Matrix ids.
pub use ruma;

/// How long a transaction waits for a busy node before it is answered `503`. Longer than a
/// webhook provider's: a homeserver waits, but an application service it got a `503` from is
/// marked down and retried with its own back-off (Synapse: 2 s, doubling to 512 s).
const HOMESERVER_BACKOFF: crate::sdk::Backoff = crate::sdk::Backoff {
    first: std::time::Duration::from_millis(100),
    max: std::time::Duration::from_secs(2),
    attempts: 10,
};

/// Events read back from a room the bot joins.
const CATCH_UP: u32 = 50;
/// The largest transaction body taken (a homeserver sends at most 50 events of at most
/// 64 KiB, and ephemeral ones).
pub const MAX_TRANSACTION_BYTES: usize = 8 * 1024 * 1024;
/// What a customer in an encrypted room is told (once per room).
const NOT_ENCRYPTED: &str = "This support chat cannot read end-to-end encrypted messages yet. Please start a new direct chat with encryption turned off to reach us.";
/// What a room with a third person is told before the bot leaves.
const PRIVATE_ONLY: &str =
    "This support chat is private to one customer: the support bot leaves rooms with other people.";

/// Where the homeserver is and who the bridge is on it.
#[derive(Debug, Clone)]
pub struct MatrixSettings {
    /// The homeserver's client-server API (`https://matrix.shop.example`).
    pub homeserver: String,
    /// The homeserver's name (the part after `:` in its users' ids).
    pub server_name: OwnedServerName,
    /// The bot's user id (`@support:shop.example`).
    pub bot: OwnedUserId,
    /// The token the bridge calls the homeserver with.
    pub as_token: AppserviceToken,
    /// The token the homeserver calls the bridge with.
    pub hs_token: AppserviceToken,
}

impl MatrixSettings {
    /// The application service registration (YAML) for the homeserver: `url` is where it
    /// reaches the bridge (the node's, or the standalone bridge's, base URL).
    pub fn registration(&self, url: &str) -> String {
        let bot = self.bot.localpart();
        let server = self.server_name.as_str();
        let escape = |text: &str| {
            text.chars()
                .flat_map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        vec![c]
                    } else {
                        vec!['\\', c]
                    }
                })
                .collect::<String>()
        };
        format!(
            "# The Threadline Matrix bridge: give this file to the homeserver (Synapse: \
             app_service_config_files) and restart it.\n\
             id: threadline\n\
             url: \"{url}\"\n\
             as_token: \"{}\"\n\
             hs_token: \"{}\"\n\
             sender_localpart: \"{bot}\"\n\
             rate_limited: false\n\
             receive_ephemeral: true\n\
             namespaces:\n  users:\n    - exclusive: true\n      regex: '@{}(_.*)?:{}'\n  aliases: []\n  rooms: []\n",
            self.as_token.as_str(),
            self.hs_token.as_str(),
            escape(bot),
            escape(server),
        )
    }

    /// The matrix.to link that opens a chat with the bot, with the message to send carrying
    /// `code` (the customer sends it as their first message).
    pub fn continue_link(&self, code: &HandoffCode) -> String {
        format!(
            "https://matrix.to/#/{}?text=Continue%20my%20chat%20(code%20{})",
            self.bot,
            code.as_str()
        )
    }
}

/// Why a transaction was not taken.
#[derive(Debug, thiserror::Error)]
pub enum MatrixRefusal {
    /// No token, or not the `hs_token`: nothing was read.
    #[error("the homeserver's token is missing or wrong")]
    Unauthorized,
    /// Not a transaction.
    #[error("not a transaction: {0}")]
    BadRequest(String),
    /// The node (or the homeserver, for a file) could not take it now: the homeserver sends
    /// the transaction again later, and what of it was stored is stored once.
    #[error("not taken now: {0}")]
    Unavailable(String),
}

impl MatrixRefusal {
    /// The HTTP status and the Matrix `errcode` to answer with.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            MatrixRefusal::Unauthorized => (401, "M_FORBIDDEN"),
            MatrixRefusal::BadRequest(_) => (400, "M_BAD_JSON"),
            MatrixRefusal::Unavailable(_) => (503, "M_UNKNOWN"),
        }
    }
}

/// Which customer each direct chat is. A customer may have several (they opened a new one):
/// what they write in any is theirs, and replies go to the newest.
#[derive(Debug, Default)]
struct Rooms {
    by_customer: HashMap<OwnedUserId, OwnedRoomId>,
    by_room: HashMap<OwnedRoomId, OwnedUserId>,
}

impl Rooms {
    fn link(&mut self, customer: OwnedUserId, room: OwnedRoomId) {
        self.by_customer.insert(customer.clone(), room.clone());
        self.by_room.insert(room, customer);
    }

    fn unlink(&mut self, room: &OwnedRoomId) -> Option<OwnedUserId> {
        let customer = self.by_room.remove(room)?;
        if self.by_customer.get(&customer) == Some(room) {
            self.by_customer.remove(&customer);
            // Replies go to another of their rooms, if they have one.
            if let Some((other, _)) = self.by_room.iter().find(|(_, c)| **c == customer) {
                self.by_customer.insert(customer.clone(), other.clone());
            }
        }
        Some(customer)
    }

    /// The bot's `m.direct`: each customer's rooms, the one replies go to last.
    fn direct(&self) -> DirectEventContent {
        let mut content = DirectEventContent::default();
        for (room, customer) in &self.by_room {
            if self.by_customer.get(customer) != Some(room) {
                content
                    .entry(OwnedDirectUserIdentifier::from(customer.clone()))
                    .or_default()
                    .push(room.clone());
            }
        }
        for (customer, room) in &self.by_customer {
            content
                .entry(OwnedDirectUserIdentifier::from(customer.clone()))
                .or_default()
                .push(room.clone());
        }
        content
    }
}

/// The Matrix bridge.
#[derive(Debug)]
pub struct Matrix<L> {
    bridge: Bridge<L>,
    settings: MatrixSettings,
    homeserver: Homeserver,
    rooms: Mutex<Rooms>,
    /// Whether the rooms were read back from the homeserver (until then nothing is taken or
    /// sent: a customer's room would look like nobody's).
    loaded: std::sync::atomic::AtomicBool,
    warned: Mutex<HashSet<OwnedRoomId>>,
    typing: TypingThrottle,
}

impl<L: NodeLink> Matrix<L> {
    /// The bridge on `bridge` (certified for the Matrix channel).
    pub fn new(bridge: Bridge<L>, settings: MatrixSettings) -> Result<Self, String> {
        let homeserver = Homeserver::new(&settings.homeserver, settings.as_token.clone())?;
        Ok(Matrix {
            bridge: bridge.with_backoff(HOMESERVER_BACKOFF),
            settings,
            homeserver,
            rooms: Mutex::default(),
            loaded: std::sync::atomic::AtomicBool::new(false),
            warned: Mutex::default(),
            typing: TypingThrottle::default(),
        })
    }

    /// The bridge's SDK side.
    pub fn bridge(&self) -> &Bridge<L> {
        &self.bridge
    }

    /// The settings.
    pub fn settings(&self) -> &MatrixSettings {
        &self.settings
    }

    /// Reads which room is which customer's from the bot's `m.direct` (at start).
    pub async fn load_rooms(&self) -> Result<usize, MatrixError> {
        let request = get_global_account_data::v3::Request::new(
            self.settings.bot.clone(),
            GlobalAccountDataEventType::Direct,
        );
        let direct = match self.homeserver.call(request).await {
            Ok(response) => response
                .account_data
                .deserialize_as_unchecked::<DirectEventContent>()
                .unwrap_or_default(),
            Err(err) if err.status == 404 => DirectEventContent::default(),
            Err(err) => return Err(err),
        };
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        for (customer, list) in direct.iter() {
            let Some(user) = customer.as_user_id() else {
                continue;
            };
            // In order: the last is where replies go.
            for room in list {
                rooms.link(user.to_owned(), room.clone());
            }
        }
        self.loaded.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(rooms.by_room.len())
    }

    async fn save_rooms(&self) {
        let direct = self
            .rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .direct();
        let request =
            match set_global_account_data::v3::Request::new(self.settings.bot.clone(), &direct) {
                Ok(request) => request,
                Err(err) => {
                    tracing::warn!(cause = %err, "matrix: m.direct not encoded");
                    return;
                }
            };
        if let Err(err) = self.homeserver.call(request).await {
            tracing::warn!(cause = %err, "matrix: m.direct not saved (rooms are found again when customers write)");
        }
    }

    fn customer_of(&self, room: &OwnedRoomId) -> Option<OwnedUserId> {
        self.rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_room
            .get(room)
            .cloned()
    }

    fn handle(user: &OwnedUserId) -> Option<Handle> {
        Handle::new(threadline_protocol::ChannelKind::Matrix, user.as_str()).ok()
    }

    /// The homeserver's ping (`POST /_matrix/app/v1/ping`): `Ok` when its token is right.
    pub fn ping(&self, token: Option<&str>) -> Result<(), MatrixRefusal> {
        if token.is_some_and(|token| self.settings.hs_token.matches(token)) {
            Ok(())
        } else {
            Err(MatrixRefusal::Unauthorized)
        }
    }

    /// Takes a transaction the homeserver pushed: `token` is what it authenticated with
    /// (`Authorization: Bearer`, or the legacy `access_token` query). `Ok` once everything
    /// in it is durable (answer `200 {}`).
    pub async fn take_transaction(
        &self,
        txn_id: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<(), MatrixRefusal> {
        self.ping(token)?;
        // Every transaction is taken, even one whose id was seen: a homeserver may number
        // them again (Synapse on sqlite starts again after its highest pending id when it
        // restarts), so an id says nothing; each message is idempotent on its event id.
        if !self.loaded.load(std::sync::atomic::Ordering::SeqCst) {
            // A customer's room is known only once the rooms are read back.
            self.load_rooms().await.map_err(|err| {
                MatrixRefusal::Unavailable(format!("the rooms are not read yet: {err}"))
            })?;
        }
        let transaction = parse_transaction(txn_id, body)?;
        tracing::debug!(
            txn_id,
            events = transaction.events.len(),
            ephemeral = transaction.ephemeral.len(),
            "matrix: a transaction"
        );
        for raw in &transaction.events {
            let happening = events::read(raw, &self.settings.bot);
            tracing::debug!(?happening, "matrix: an event");
            self.take(happening).await?;
        }
        for raw in &transaction.ephemeral {
            for signal in events::read_ephemeral(raw) {
                self.signal(signal).await?;
            }
        }
        Ok(())
    }

    async fn take(&self, happening: Happening) -> Result<(), MatrixRefusal> {
        match happening {
            Happening::Invited { room, by, direct } => self.invited(room, by, direct).await,
            Happening::Joined { room, user } => {
                if self
                    .customer_of(&room)
                    .is_some_and(|customer| customer != user)
                {
                    tracing::info!(%room, "matrix: a third person joined a customer's room; the bot leaves it");
                    self.notice(&room, PRIVATE_ONLY).await;
                    self.rooms
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .unlink(&room);
                    self.save_rooms().await;
                    self.leave(&room).await;
                }
                Ok(())
            }
            Happening::Left { room, user } => {
                if self.customer_of(&room).as_ref() == Some(&user) {
                    self.rooms
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .unlink(&room);
                    self.save_rooms().await;
                    self.leave(&room).await;
                }
                Ok(())
            }
            Happening::Message {
                room,
                sender,
                event,
                text,
                formatted,
                media,
                reply_to,
            } => {
                let Some(handle) = self.customers_handle(&room, &sender) else {
                    return Ok(());
                };
                let mut message = self.message(&handle, &event, text).await?;
                if let Some(media) = media {
                    match self.download(&media).await {
                        Ok(file) => message.attachments.push(file),
                        Err(err) => {
                            tracing::warn!(cause = %err, "matrix: a file could not be fetched");
                            if err.status == 0 || err.status >= 500 {
                                return Err(MatrixRefusal::Unavailable(err.to_string()));
                            }
                            append(
                                &mut message.text,
                                &format!("[{}: could not be fetched: {err}]", media.name),
                            );
                        }
                    }
                }
                if let Some(html) = formatted {
                    message.original = Some(InboundAttachment {
                        name: "message.html".to_owned(),
                        media_type: "text/html".to_owned(),
                        bytes: html.into_bytes(),
                    });
                }
                if let Some(quoted) = reply_to.and_then(|id| ExternalId::new(id.as_str()).ok()) {
                    message.reply_to = quoted_message(&self.bridge, &handle, &quoted).await;
                }
                self.typing.reset(&handle);
                self.store(&message).await
            }
            Happening::Edit {
                room,
                sender,
                event,
                of,
                text,
            } => {
                let Some(handle) = self.customers_handle(&room, &sender) else {
                    return Ok(());
                };
                let mut message = self
                    .message(&handle, &event, format!("[edited] {text}"))
                    .await?;
                message.reply_to = self.quoted(&handle, &of).await;
                self.store(&message).await
            }
            Happening::Redaction {
                room,
                sender,
                event,
                of,
            } => {
                let Some(handle) = self.customers_handle(&room, &sender) else {
                    return Ok(());
                };
                let Some(quoted) = self.quoted(&handle, &of).await else {
                    // Not one of their messages the thread has (a reaction, a state event).
                    return Ok(());
                };
                let mut message = self
                    .message(
                        &handle,
                        &event,
                        "[deleted this message in Matrix]".to_owned(),
                    )
                    .await?;
                message.reply_to = Some(quoted);
                self.store(&message).await
            }
            Happening::Encrypted {
                room,
                sender,
                event,
            } => {
                let first = self
                    .warned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(room.clone());
                if first {
                    self.notice(&room, NOT_ENCRYPTED).await;
                }
                let Some(handle) = self.customers_handle(&room, &sender) else {
                    return Ok(());
                };
                let message = self
                    .message(
                        &handle,
                        &event,
                        "[an end-to-end encrypted message, which the Matrix bridge cannot read; the customer was asked to write without encryption]".to_owned(),
                    )
                    .await?;
                self.store(&message).await
            }
            Happening::Ignored(why) => {
                tracing::debug!(why, "matrix: event ignored");
                Ok(())
            }
        }
    }

    /// The handle of `sender` if `room` is their direct chat with the bot.
    fn customers_handle(&self, room: &OwnedRoomId, sender: &OwnedUserId) -> Option<Handle> {
        match self.customer_of(room) {
            Some(customer) if &customer == sender => Self::handle(sender),
            Some(_) => {
                tracing::warn!(%room, "matrix: a message from someone else in a customer's room; not taken");
                None
            }
            None => {
                tracing::debug!(%room, "matrix: a message in a room that is no customer's");
                None
            }
        }
    }

    /// A message of `handle` with the Matrix event id as its external id, continuing a web
    /// chat when its text carries a "continue on Matrix" code.
    async fn message(
        &self,
        handle: &Handle,
        event: &OwnedEventId,
        text: String,
    ) -> Result<InboundMessage, MatrixRefusal> {
        let external_id = ExternalId::new(event.as_str())
            .map_err(|err| MatrixRefusal::BadRequest(format!("event id {event}: {err}")))?;
        let hint = match HandoffCode::find_in(&text) {
            Some(code) => continue_hint(&self.bridge, handle, &code)
                .await
                .map_err(|err| MatrixRefusal::Unavailable(err.to_string()))?,
            None => None,
        };
        let mut message = InboundMessage::new(handle.clone(), external_id, text);
        message.thread_hint = hint;
        Ok(message)
    }

    async fn quoted(
        &self,
        handle: &Handle,
        event: &OwnedEventId,
    ) -> Option<(threadline_protocol::ThreadId, threadline_protocol::EventId)> {
        let id = ExternalId::new(event.as_str()).ok()?;
        quoted_message(&self.bridge, handle, &id).await
    }

    async fn store(&self, message: &InboundMessage) -> Result<(), MatrixRefusal> {
        match self.bridge.receive(message).await {
            Ok(_) => Ok(()),
            Err(BridgeError::GaveUp { last, .. }) => {
                Err(MatrixRefusal::Unavailable(last.to_string()))
            }
            Err(err) => {
                // Refused for good (too long, too many files): answering with an error would
                // only make the homeserver send it again for ever.
                tracing::warn!(cause = %err, "matrix: a message was refused");
                Ok(())
            }
        }
    }

    async fn invited(
        &self,
        room: OwnedRoomId,
        by: OwnedUserId,
        direct: bool,
    ) -> Result<(), MatrixRefusal> {
        if !direct {
            tracing::info!(%room, %by, "matrix: invited to a room that is not a direct chat; declined");
            self.leave(&room).await;
            return Ok(());
        }
        match self
            .homeserver
            .call(join_room_by_id::v3::Request::new(room.clone()))
            .await
        {
            Ok(_) => {}
            Err(err) if err.status == 0 || err.status >= 500 => {
                return Err(MatrixRefusal::Unavailable(err.to_string()))
            }
            Err(err) => {
                tracing::warn!(cause = %err, %room, "matrix: cannot join a customer's room");
                return Ok(());
            }
        }
        tracing::info!(%room, customer = %by, "matrix: a customer opened a direct chat");
        self.rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .link(by, room.clone());
        self.save_rooms().await;
        self.catch_up(room).await
    }

    /// Takes what the customer wrote in the room before the bot joined (the homeserver pushes
    /// only what happens once the bot is in): the last [`CATCH_UP`] events, oldest first,
    /// each stored once whatever else brings it.
    async fn catch_up(&self, room: OwnedRoomId) -> Result<(), MatrixRefusal> {
        let mut request = get_message_events::v3::Request::backward(room);
        request.limit = ruma::UInt::from(CATCH_UP);
        let history = match self.homeserver.call(request).await {
            Ok(history) => history,
            Err(err) if err.status == 0 || err.status >= 500 => {
                return Err(MatrixRefusal::Unavailable(err.to_string()))
            }
            Err(err) => {
                tracing::warn!(cause = %err, "matrix: cannot read what came before the bot joined");
                return Ok(());
            }
        };
        for raw in history.chunk.iter().rev() {
            let happening = events::read(raw, &self.settings.bot);
            if matches!(
                happening,
                Happening::Message { .. } | Happening::Edit { .. } | Happening::Encrypted { .. }
            ) {
                Box::pin(self.take(happening)).await?;
            }
        }
        Ok(())
    }

    async fn signal(&self, signal: Signal) -> Result<(), MatrixRefusal> {
        match signal {
            Signal::Read { room, user, at_ms } => {
                let Some(handle) = self.customers_handle(&room, &user) else {
                    return Ok(());
                };
                let until = Timestamp::from_millis(at_ms);
                record_receipt(
                    &self.bridge,
                    &handle,
                    |entry| entry.at <= until,
                    ReceiptKind::Read,
                    None,
                )
                .await
                .map_err(|err| MatrixRefusal::Unavailable(err.to_string()))
            }
            Signal::Typing { room, users } => {
                if let Some(customer) = self.customer_of(&room) {
                    if users.contains(&customer) {
                        if let Some(handle) = Self::handle(&customer) {
                            if self.typing.allow(&handle) {
                                self.bridge.link().customer_typing(&handle).await;
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }

    async fn notice(&self, room: &OwnedRoomId, text: &str) {
        let content = RoomMessageEventContent::notice_plain(text);
        let mut bytes = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
        let txn = OwnedTransactionId::from(format!("notice-{}", hex::encode(bytes)));
        match send_message_event::v3::Request::new(room.clone(), txn, &content) {
            Ok(request) => {
                if let Err(err) = self.homeserver.call(request).await {
                    tracing::warn!(cause = %err, %room, "matrix: a notice was not sent");
                }
            }
            Err(err) => tracing::warn!(cause = %err, "matrix: a notice not encoded"),
        }
    }

    async fn leave(&self, room: &OwnedRoomId) {
        if let Err(err) = self
            .homeserver
            .call(leave_room::v3::Request::new(room.clone()))
            .await
        {
            tracing::warn!(cause = %err, %room, "matrix: cannot leave a room");
        }
    }

    async fn download(&self, media: &events::Media) -> Result<InboundAttachment, MatrixError> {
        let request =
            ruma::api::client::authenticated_media::get_content::v1::Request::from_uri(&media.url)
                .map_err(|err| MatrixError {
                    status: 400,
                    message: format!("{}: {err}", media.url),
                })?;
        let response = self.homeserver.call(request).await?;
        Ok(InboundAttachment {
            name: media.name.clone(),
            media_type: media
                .media_type
                .clone()
                .or(response.content_type)
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
            bytes: response.file,
        })
    }

    /// Sends what is queued for Matrix (up to `limit`); how many left the queue.
    pub async fn deliver(&self, limit: usize) -> Result<usize, BridgeError> {
        if !self.loaded.load(std::sync::atomic::Ordering::SeqCst) {
            // Until the rooms are read back, a reply would open a new chat beside the
            // customer's own.
            return Ok(0);
        }
        self.bridge
            .deliver_pending(limit, |delivery| self.send(delivery))
            .await
    }

    /// The customer's room: theirs, or a new direct chat inviting them.
    async fn room_for(&self, customer: &OwnedUserId) -> Result<OwnedRoomId, SendError> {
        let known = self
            .rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_customer
            .get(customer)
            .cloned();
        if let Some(room) = known {
            return Ok(room);
        }
        let mut request = create_room::v3::Request::new();
        request.invite = vec![customer.clone()];
        request.is_direct = true;
        request.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
        let created = self
            .homeserver
            .call(request)
            .await
            .map_err(|err| err.send_error())?;
        tracing::info!(room = %created.room_id, %customer, "matrix: a direct chat opened for a reply");
        self.rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .link(customer.clone(), created.room_id.clone());
        self.save_rooms().await;
        Ok(created.room_id)
    }

    async fn send(&self, delivery: Delivery) -> Result<Sent, SendError> {
        let customer = OwnedUserId::try_from(delivery.handle.address()).map_err(|err| {
            SendError::Permanent(format!("{} is not a Matrix user: {err}", delivery.handle))
        })?;
        let room = self.room_for(&customer).await?;
        let id = delivery.event.to_string();
        if !delivery.text.is_empty() || delivery.attachments.is_empty() {
            let content = RoomMessageEventContent::text_plain(delivery.text.clone());
            self.send_content(&room, &id, &content).await?;
        }
        for (n, file) in delivery.attachments.iter().enumerate() {
            let bytes = attachment_bytes(self.bridge.link(), file).await?;
            let size = bytes.len();
            let mut upload = create_content::v3::Request::new(bytes);
            upload.filename = Some(file.name.as_str().to_owned());
            upload.content_type = Some(file.media_type.as_str().to_owned());
            let uploaded = self
                .homeserver
                .call(upload)
                .await
                .map_err(|err| err.send_error())?;
            let name = file.name.as_str().to_owned();
            let media_type = file.media_type.as_str().to_owned();
            let msgtype = if media_type.starts_with("image/") {
                let mut image = ImageMessageEventContent::plain(name, uploaded.content_uri);
                let mut info = ruma::events::room::ImageInfo::new();
                info.mimetype = Some(media_type);
                info.size = ruma::UInt::new(size as u64);
                image.info = Some(Box::new(info));
                MessageType::Image(image)
            } else {
                let mut plain = FileMessageEventContent::plain(name, uploaded.content_uri);
                let mut info = ruma::events::room::message::FileInfo::new();
                info.mimetype = Some(media_type);
                info.size = ruma::UInt::new(size as u64);
                plain.info = Some(Box::new(info));
                MessageType::File(plain)
            };
            let content = RoomMessageEventContent::new(msgtype);
            self.send_content(&room, &format!("{id}-f{n}"), &content)
                .await?;
        }
        // The room has it: that is as delivered as Matrix says; the customer's read receipt
        // comes later.
        Ok(Sent::Delivered)
    }

    async fn send_content(
        &self,
        room: &OwnedRoomId,
        txn: &str,
        content: &RoomMessageEventContent,
    ) -> Result<(), SendError> {
        let request = send_message_event::v3::Request::new(
            room.clone(),
            OwnedTransactionId::from(txn.to_owned()),
            content,
        )
        .map_err(|err| SendError::Permanent(format!("a message not encoded: {err}")))?;
        match self.homeserver.call(request).await {
            Ok(_) => Ok(()),
            Err(err) if err.status == 403 => {
                // Not in the room any more: forget it, so the next attempt opens a new chat.
                self.rooms
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .unlink(room);
                Err(SendError::Retry(err.to_string()))
            }
            Err(err) => Err(err.send_error()),
        }
    }

    /// The room of `handle`'s customer, if the bot has one with them.
    fn room_of(&self, handle: &Handle) -> Option<OwnedRoomId> {
        let customer = OwnedUserId::try_from(handle.address()).ok()?;
        self.rooms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_customer
            .get(&customer)
            .cloned()
    }

    /// Tells the customer of `handle` that an agent is typing.
    pub async fn agent_typing(&self, handle: &Handle) {
        let Some(room) = self.room_of(handle) else {
            return;
        };
        let typing = create_typing_event::v3::Typing::Yes(
            create_typing_event::v3::TypingInfo::new(std::time::Duration::from_secs(5)),
        );
        let request =
            create_typing_event::v3::Request::new(self.settings.bot.clone(), room, typing);
        if let Err(err) = self.homeserver.call(request).await {
            tracing::debug!(cause = %err, "matrix: typing not sent");
        }
    }

    /// Marks the customer's message `read` (its Matrix event id) as read by the business.
    pub async fn agent_read(&self, handle: &Handle, read: &ExternalId) {
        let (Some(room), Ok(event)) = (self.room_of(handle), OwnedEventId::try_from(read.as_str()))
        else {
            return;
        };
        let request =
            create_receipt::v3::Request::new(room, create_receipt::v3::ReceiptType::Read, event);
        if let Err(err) = self.homeserver.call(request).await {
            tracing::debug!(cause = %err, "matrix: read receipt not sent");
        }
    }
}

/// A transaction's body, read with ruma's type for it.
fn parse_transaction(
    txn_id: &str,
    body: &[u8],
) -> Result<ruma::api::appservice::event::push_events::v1::Request, MatrixRefusal> {
    use ruma::api::IncomingRequestExt as _;
    let request = http::Request::builder()
        .method(http::Method::PUT)
        .uri(format!("/_matrix/app/v1/transactions/{txn_id}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, "Bearer checked")
        .body(body)
        .map_err(|err| MatrixRefusal::BadRequest(err.to_string()))?;
    ruma::api::appservice::event::push_events::v1::Request::try_from_http_request(
        request,
        &[txn_id],
    )
    .map_err(|err| MatrixRefusal::BadRequest(err.to_string()))
}

fn append(text: &mut String, line: &str) {
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(n: u8) -> OwnedRoomId {
        OwnedRoomId::try_from(format!("!r{n}:localhost")).expect("room id")
    }

    #[test]
    fn a_customers_older_rooms_stay_theirs_and_replies_go_to_the_newest() {
        let alice = OwnedUserId::try_from("@alice:localhost").expect("user id");
        let mut rooms = Rooms::default();
        rooms.link(alice.clone(), room(1));
        rooms.link(alice.clone(), room(2));
        assert_eq!(
            rooms.by_room.get(&room(1)),
            Some(&alice),
            "the old room is still hers"
        );
        assert_eq!(rooms.by_customer.get(&alice), Some(&room(2)));
        let direct = rooms.direct();
        let listed = direct
            .get(&OwnedDirectUserIdentifier::from(alice.clone()))
            .expect("listed");
        assert_eq!(listed, &vec![room(1), room(2)], "the reply room last");
        // She leaves the newest: replies go to the other.
        rooms.unlink(&room(2));
        assert_eq!(rooms.by_customer.get(&alice), Some(&room(1)));
        rooms.unlink(&room(1));
        assert!(rooms.by_customer.is_empty() && rooms.by_room.is_empty());
    }

    #[test]
    fn the_registration_names_the_tokens_the_url_and_an_exclusive_namespace() {
        let settings = MatrixSettings {
            homeserver: "http://127.0.0.1:8008".to_owned(),
            server_name: OwnedServerName::try_from("shop.example").expect("server name"),
            bot: OwnedUserId::try_from("@support:shop.example").expect("user id"),
            as_token: AppserviceToken::new("as-token-0123456789").expect("token"),
            hs_token: AppserviceToken::new("hs-token-0123456789").expect("token"),
        };
        let yaml = settings.registration("https://node.shop.example");
        for line in [
            "url: \"https://node.shop.example\"",
            "as_token: \"as-token-0123456789\"",
            "hs_token: \"hs-token-0123456789\"",
            "sender_localpart: \"support\"",
            "receive_ephemeral: true",
            "- exclusive: true",
            "regex: '@support(_.*)?:shop\\.example'",
        ] {
            assert!(yaml.contains(line), "{line} in {yaml}");
        }
        assert!(
            !format!("{settings:?}").contains("as-token"),
            "tokens never print"
        );
    }
}
