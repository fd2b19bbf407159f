//! The Messenger bridge, which also serves Instagram messaging (the same webhook and Send API
//! shape): customers write to the business's Facebook page or Instagram account; agents'
//! replies go back through the Send API.
//!
//! - **In**: a signed delivery ([`webhook`]) is checked first, then each customer message
//!   becomes an inbound message of `messenger:<PSID>` (or `instagram:<IGSID>`): text, files
//!   downloaded from the URLs Meta gives, reactions as a line of text; idempotent on the
//!   `mid`; the name on the customer's profile (User Profile API) names a new contact. A link's `ref` (`m.me/<page>?ref=<code>`, on the first message, a referral or a
//!   Get Started postback) that is a "continue on Messenger" code continues the web chat
//!   conversation it was issued for. Delivery and read watermarks become receipts of the
//!   replies sent before them; echoes of the page's own messages are skipped.
//! - **Out**: replies go to `/{page-id}/messages` (`messaging_type: RESPONSE`) inside the
//!   24-hour window; past it, with the `HUMAN_AGENT` tag for up to 7 days where the page has
//!   it; otherwise the reply fails at once with the reason (see [`crate::window`]). Files are
//!   uploaded with the message (`filedata`).

pub mod webhook;

use threadline_protocol::{event::ReceiptKind, name::ExternalId, ChannelKind, Handle, Timestamp};

use crate::graph::{GraphApi, Upload};
use crate::sdk::{
    Bridge, BridgeError, Delivery, HandoffCode, InboundAttachment, InboundMessage, NodeLink,
    SendError, Sent,
};
use crate::webhook::{
    attachment_bytes, continue_hint, last_customer_message, outcome, quoted_message,
    record_receipt, split_text, MetaEndpoint, WebhookRefusal, WEBHOOK_BACKOFF,
};
use crate::window::ReplyWindow;
use webhook::{Messaging, MessagingEvent, MetaApp, MetaAttachment};

/// The longest text of one Messenger message (Instagram's: [`crate::instagram::MAX_TEXT_CHARS`]);
/// a longer reply goes as several.
pub const MAX_TEXT_CHARS: usize = 2000;

/// What the Messenger (or Instagram) bridge needs to know of the page (or account).
#[derive(Debug, Clone)]
pub struct MessengerSettings {
    /// Messenger or Instagram.
    pub app: MetaApp,
    /// The page's id (Messenger) or the Instagram professional account's id.
    pub account_id: String,
    /// The page's username or id for `m.me` links (Messenger), or the Instagram username
    /// (for `ig.me` links).
    pub link_name: Option<String>,
    /// Whether Meta granted the page the `HUMAN_AGENT` tag (agents may then answer for 7 days).
    pub human_agent: bool,
    /// The webhook's app secret and verify token.
    pub endpoint: MetaEndpoint,
    /// The Graph API, with the page's access token.
    pub graph: GraphApi,
}

impl MessengerSettings {
    /// The channel: messenger or instagram.
    pub fn channel(&self) -> ChannelKind {
        match self.app {
            MetaApp::Messenger => ChannelKind::Messenger,
            MetaApp::Instagram => ChannelKind::Instagram,
        }
    }
}

/// How many customers' profiles a bridge remembers having asked for before it starts over.
const PROFILES_ASKED: usize = 100_000;

/// The Messenger (or Instagram) bridge.
#[derive(Debug)]
pub struct Messenger<L> {
    bridge: Bridge<L>,
    settings: MessengerSettings,
    /// The customers whose profile was asked for already (the name only names a new
    /// contact, so it is asked for once per customer while the bridge runs).
    profiles_asked: std::sync::Mutex<std::collections::HashSet<Handle>>,
}

impl<L: NodeLink> Messenger<L> {
    /// The bridge on `bridge` (a bridge certified for the settings' channel).
    pub fn new(bridge: Bridge<L>, settings: MessengerSettings) -> Self {
        Messenger {
            bridge: bridge.with_backoff(WEBHOOK_BACKOFF),
            settings,
            profiles_asked: std::sync::Mutex::default(),
        }
    }

    /// The bridge's SDK side.
    pub fn bridge(&self) -> &Bridge<L> {
        &self.bridge
    }

    /// The webhook endpoint (for the subscription handshake).
    pub fn endpoint(&self) -> &MetaEndpoint {
        &self.settings.endpoint
    }

    /// The `m.me` (or `ig.me`) link that opens a chat with the page carrying `code` as its
    /// `ref`, if the page's link name is configured.
    pub fn continue_link(&self, code: &HandoffCode) -> Option<String> {
        let name = self.settings.link_name.as_deref()?;
        Some(match self.settings.app {
            MetaApp::Messenger => format!("https://m.me/{name}?ref={}", code.as_str()),
            MetaApp::Instagram => crate::instagram::continue_link(name, code),
        })
    }

    fn handle(&self, id: &str) -> Option<Handle> {
        Handle::new(self.settings.channel(), id).ok()
    }

    /// Takes a webhook delivery: its signature checked over the raw `body` first, then each
    /// item stored. `Ok` once everything in it is durable (answer `200`).
    pub async fn take(&self, signature: Option<&[u8]>, body: &[u8]) -> Result<(), WebhookRefusal> {
        self.settings.endpoint.verify(signature, body)?;
        let (app, events) = webhook::parse(body)?;
        if app != self.settings.app {
            return Err(WebhookRefusal::Delivery(
                crate::webhook::DeliveryError::UnknownObject(match app {
                    MetaApp::Messenger => "page".to_owned(),
                    MetaApp::Instagram => "instagram".to_owned(),
                }),
            ));
        }
        for event in events {
            let to_us = event.recipient == self.settings.account_id;
            let echo = matches!(event.what, Messaging::Echo { .. });
            if !to_us && !echo {
                tracing::warn!(recipient = %event.recipient, "a {} item for another account; skipped", self.settings.channel());
                continue;
            }
            self.take_item(event).await?;
        }
        Ok(())
    }

    async fn take_item(&self, event: MessagingEvent) -> Result<(), WebhookRefusal> {
        let Some(handle) = self.handle(&event.sender) else {
            tracing::warn!(
                "a {} item from an unusable id; skipped",
                self.settings.channel()
            );
            return Ok(());
        };
        let at = event
            .timestamp
            .map_or_else(|| self.bridge.now(), Timestamp::from_millis);
        match event.what {
            Messaging::Message {
                mid,
                text,
                attachments,
                referral,
                reply_to,
                ..
            } => {
                self.take_message(handle, mid, text, attachments, referral, reply_to)
                    .await
            }
            Messaging::Referral { reference }
            | Messaging::Postback {
                referral: Some(reference),
                ..
            } => match HandoffCode::parse(&reference) {
                Some(code) => continue_hint(&self.bridge, &handle, &code).await.map(drop),
                None => Ok(()),
            },
            Messaging::Delivery { mids, watermark } => {
                let watermark = Timestamp::from_millis(watermark);
                let _ = mids;
                record_receipt(
                    &self.bridge,
                    &handle,
                    |entry| entry.at <= watermark,
                    ReceiptKind::Delivered,
                    None,
                )
                .await
            }
            Messaging::Read { watermark, .. } => {
                let watermark = watermark.map_or(at, Timestamp::from_millis);
                record_receipt(
                    &self.bridge,
                    &handle,
                    |entry| entry.at <= watermark,
                    ReceiptKind::Read,
                    None,
                )
                .await
            }
            Messaging::Reaction {
                emoji: Some(emoji),
                mid,
            } => {
                let Ok(external_id) = ExternalId::new(format!("reaction:{mid}:{emoji}")) else {
                    return Ok(());
                };
                let message =
                    InboundMessage::new(handle, external_id, format!("[reacted {emoji}]"));
                outcome(self.bridge.receive(&message).await, "a reaction")
            }
            Messaging::Echo { .. }
            | Messaging::Postback { .. }
            | Messaging::Reaction { .. }
            | Messaging::Other => Ok(()),
        }
    }

    async fn take_message(
        &self,
        handle: Handle,
        mid: String,
        text: Option<String>,
        files: Vec<MetaAttachment>,
        referral: Option<String>,
        reply_to: Option<String>,
    ) -> Result<(), WebhookRefusal> {
        let Ok(external_id) = ExternalId::new(&mid) else {
            tracing::warn!("a message with an unusable id; skipped");
            return Ok(());
        };
        let mut text = text.unwrap_or_default();
        let mut attachments = Vec::new();
        for file in files {
            let Some(url) = file.url else {
                continue;
            };
            match self.settings.graph.download_public(&url).await {
                Ok((bytes, media_type)) => attachments.push(InboundAttachment {
                    name: file.kind.clone(),
                    media_type,
                    bytes,
                }),
                Err(err) => {
                    tracing::warn!(cause = %err, "a file could not be fetched");
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!(
                        "[{}: could not be fetched: {}]",
                        file.kind, err.message
                    ));
                }
            }
        }
        let code = referral
            .as_deref()
            .and_then(HandoffCode::parse)
            .or_else(|| HandoffCode::find_in(&text));
        let hint = match code {
            Some(code) => continue_hint(&self.bridge, &handle, &code).await?,
            None => None,
        };
        let name = self.profile_name(&handle).await;
        let reply_to = match reply_to.as_deref().map(ExternalId::new) {
            Some(Ok(quoted)) => quoted_message(&self.bridge, &handle, &quoted).await,
            _ => None,
        };
        let mut message = InboundMessage::new(handle, external_id, text);
        message.attachments = attachments;
        message.thread_hint = hint;
        message.sender_name = name;
        message.reply_to = reply_to;
        outcome(self.bridge.receive(&message).await, "a message")
    }

    /// The customer's name from their profile, the first time they write while the bridge
    /// runs (it names a new contact; later messages need not ask). A profile Graph cannot give
    /// is asked for again next time only if no answer came at all.
    async fn profile_name(&self, handle: &Handle) -> Option<String> {
        let asked = |handle: &Handle| {
            let mut asked = self
                .profiles_asked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if asked.len() >= PROFILES_ASKED {
                asked.clear();
            }
            !asked.insert(handle.clone())
        };
        if asked(handle) {
            return None;
        }
        let instagram = self.settings.app == MetaApp::Instagram;
        match self
            .settings
            .graph
            .profile_name(handle.address(), instagram)
            .await
        {
            Ok(name) => name,
            Err(err) => {
                tracing::debug!(cause = %err, "no profile name for a customer");
                if err.status == 0 {
                    self.profiles_asked
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(handle);
                }
                None
            }
        }
    }

    /// Sends what is queued for the channel (up to `limit`); how many left the queue.
    pub async fn deliver(&self, limit: usize) -> Result<usize, BridgeError> {
        self.bridge
            .deliver_pending(limit, |delivery| self.send(delivery))
            .await
    }

    async fn send(&self, delivery: Delivery) -> Result<Sent, SendError> {
        let channel = self.settings.channel();
        let link = self.bridge.link();
        let last = last_customer_message(link, &delivery, channel).await?;
        let window = ReplyWindow::of(channel, last, self.bridge.now(), self.settings.human_agent);
        let tagged = match window {
            ReplyWindow::Open { human_agent, .. } => human_agent,
            ReplyWindow::Always => false,
            ReplyWindow::Closed { .. } => {
                return Err(SendError::Permanent(
                    window.refusal(channel).unwrap_or_default(),
                ))
            }
        };
        let (messaging_type, tag) = if tagged {
            ("MESSAGE_TAG", Some("HUMAN_AGENT"))
        } else {
            ("RESPONSE", None)
        };
        let recipient = serde_json::json!({ "id": delivery.handle.address() });
        let node = self.settings.account_id.as_str();
        let graph = &self.settings.graph;
        let max = match self.settings.app {
            MetaApp::Messenger => MAX_TEXT_CHARS,
            MetaApp::Instagram => crate::instagram::MAX_TEXT_CHARS,
        };
        for part in split_text(&delivery.text, max) {
            let mut body = serde_json::json!({
                "recipient": recipient,
                "messaging_type": messaging_type,
                "message": { "text": part },
            });
            if let Some(tag) = tag {
                body["tag"] = serde_json::json!(tag);
            }
            graph
                .post_message(node, body)
                .await
                .map_err(|err| err.send_error())?;
        }
        for file in &delivery.attachments {
            let bytes = attachment_bytes(link, file).await?;
            let message = serde_json::json!({
                "attachment": {
                    "type": attachment_kind(file.media_type.as_str()),
                    "payload": { "is_reusable": false },
                }
            });
            let mut fields = vec![
                ("recipient", recipient.to_string()),
                ("message", message.to_string()),
                ("messaging_type", messaging_type.to_owned()),
            ];
            if let Some(tag) = tag {
                fields.push(("tag", tag.to_owned()));
            }
            graph
                .post_multipart(
                    node,
                    "messages",
                    fields,
                    "filedata",
                    Upload {
                        name: file.name.as_str(),
                        media_type: file.media_type.as_str(),
                        bytes: &bytes,
                    },
                )
                .await
                .map_err(|err| err.send_error())?;
        }
        Ok(match self.settings.app {
            // Messenger reports delivery by webhook (message_deliveries).
            MetaApp::Messenger => Sent::Accepted,
            // Instagram reports only reading: accepted is as delivered as it gets.
            MetaApp::Instagram => Sent::Delivered,
        })
    }
}

/// The Send API's attachment type for a file of `media_type`.
fn attachment_kind(media_type: &str) -> &'static str {
    match media_type.split('/').next() {
        Some("image") => "image",
        Some("audio") => "audio",
        Some("video") => "video",
        _ => "file",
    }
}
