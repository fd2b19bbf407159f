//! The WhatsApp Cloud API bridge: customers write to the business's WhatsApp number; agents'
//! replies go back through the Cloud API.
//!
//! - **In**: a signed `messages` webhook delivery ([`webhook`]) is checked first, then each
//!   customer message becomes an inbound message of `whatsapp:+<wa_id>` (text, a file fetched
//!   by its media id, a reaction as a line of text), with their profile name for a new
//!   contact, idempotent on the `wamid`. A message carrying a "continue on WhatsApp" code
//!   continues the web chat conversation it was issued for. `statuses` become receipts of the
//!   replies they name (the bridge sends each reply with its event id as
//!   `biz_opaque_callback_data`). The delivery is answered `200` once all of it is durable.
//! - **Out**: replies go to `/{phone-number-id}/messages`, files uploaded first to
//!   `/{phone-number-id}/media`, only inside the 24-hour window (see [`crate::window`]);
//!   outside it a reply fails at once with the reason and what works instead. A reply that is
//!   an approved template ([`Template`]) goes whatever the window, as a `template` message.

pub mod webhook;

use threadline_protocol::{
    event::{ReceiptKind, Template},
    ChannelKind, EventId, Handle,
};

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
use threadline_protocol::name::ExternalId;
use webhook::{InboundWhatsapp, StatusUpdate, WhatsappBody, WhatsappEvent};

/// The longest text of one WhatsApp message; a longer reply goes as several.
pub const MAX_TEXT_CHARS: usize = 4096;
/// The longest template name WhatsApp takes.
pub const MAX_TEMPLATE_NAME_CHARS: usize = 512;

/// Why WhatsApp would refuse `template` as written, if it would: a name of lowercase letters,
/// digits and underscores; a language code such as `en` or `en_US`; placeholder values without
/// more than four spaces in a row (WhatsApp's error 132018; control characters, tabs and new
/// lines cannot be in a [`TemplateParameter`](threadline_protocol::name::TemplateParameter)).
pub fn template_problem(template: &Template) -> Option<String> {
    let name = template.name.as_str();
    if name.chars().count() > MAX_TEMPLATE_NAME_CHARS
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Some(format!(
            "`{name}` is not a WhatsApp template name: lowercase letters, digits and underscores, at most {MAX_TEMPLATE_NAME_CHARS}"
        ));
    }
    let language = template.language.as_str();
    let mut parts = language.split('_');
    let base_ok = parts.next().is_some_and(|base| {
        (2..=3).contains(&base.len()) && base.chars().all(|c| c.is_ascii_lowercase())
    });
    let rest_ok = parts.all(|part| {
        !part.is_empty() && part.len() <= 4 && part.chars().all(|c| c.is_ascii_alphanumeric())
    });
    if !(base_ok && rest_ok) {
        return Some(format!(
            "`{language}` is not a WhatsApp template language code (like `en` or `en_US`)"
        ));
    }
    if let Some(value) = template
        .parameters
        .iter()
        .find(|value| value.as_str().contains("     "))
    {
        return Some(format!(
            "the template value `{value}` has more than four spaces in a row, which WhatsApp refuses"
        ));
    }
    None
}

/// What the WhatsApp bridge needs to know of the business's number.
#[derive(Debug, Clone)]
pub struct WhatsappSettings {
    /// The Cloud API's id of the business's number (`metadata.phone_number_id`).
    pub phone_number_id: String,
    /// The number itself in international form, digits only (for `wa.me` links).
    pub number: Option<String>,
    /// The webhook's app secret and verify token.
    pub endpoint: MetaEndpoint,
    /// The Graph API.
    pub graph: GraphApi,
}

/// The WhatsApp bridge.
#[derive(Debug)]
pub struct Whatsapp<L> {
    bridge: Bridge<L>,
    settings: WhatsappSettings,
}

impl<L: NodeLink> Whatsapp<L> {
    /// The bridge on `bridge` (a bridge certified for WhatsApp).
    pub fn new(bridge: Bridge<L>, settings: WhatsappSettings) -> Self {
        Whatsapp {
            bridge: bridge.with_backoff(WEBHOOK_BACKOFF),
            settings,
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

    /// The `wa.me` link that opens a chat with the business with `code` in the first message,
    /// if the number is configured.
    pub fn continue_link(&self, code: &HandoffCode) -> Option<String> {
        let number = self.settings.number.as_deref()?;
        Some(format!(
            "https://wa.me/{number}?text=Continue%20my%20chat%20(code%20{})",
            code.as_str()
        ))
    }

    /// Takes a webhook delivery: its signature checked over the raw `body` first, then each
    /// message and status stored. `Ok` once everything in it is durable (answer `200`).
    pub async fn take(&self, signature: Option<&[u8]>, body: &[u8]) -> Result<(), WebhookRefusal> {
        self.settings.endpoint.verify(signature, body)?;
        let events = webhook::parse(body)?;
        for event in events {
            match event {
                WhatsappEvent::Message(message) => {
                    if message.phone_number_id != self.settings.phone_number_id {
                        tracing::warn!(
                            number = %message.phone_number_id,
                            "a WhatsApp message for another number; skipped"
                        );
                        continue;
                    }
                    self.take_message(message).await?;
                }
                WhatsappEvent::Status(status) => self.take_status(status).await?,
            }
        }
        Ok(())
    }

    async fn take_message(&self, message: InboundWhatsapp) -> Result<(), WebhookRefusal> {
        let Ok(handle) = Handle::new(ChannelKind::Whatsapp, &format!("+{}", message.from)) else {
            tracing::warn!("a WhatsApp message from an id that is not a number; skipped");
            return Ok(());
        };
        let Ok(external_id) = ExternalId::new(&message.id) else {
            tracing::warn!("a WhatsApp message with an unusable id; skipped");
            return Ok(());
        };
        let mut text = String::new();
        let mut attachments = Vec::new();
        match &message.body {
            WhatsappBody::Text(body) => text.push_str(body),
            WhatsappBody::Media {
                kind,
                media_id,
                caption,
                filename,
                ..
            } => {
                match self.settings.graph.whatsapp_media(media_id).await {
                    Ok((bytes, media_type)) => attachments.push(InboundAttachment {
                        name: filename.clone().unwrap_or_else(|| kind.clone()),
                        media_type,
                        bytes,
                    }),
                    // The message is kept (its caption, and what was lost), never the retry.
                    Err(err) => {
                        tracing::warn!(cause = %err, "a WhatsApp file could not be fetched");
                        text.push_str(&format!(
                            "[{kind}: could not be fetched from WhatsApp: {}]",
                            err.message
                        ));
                    }
                }
                if let Some(caption) = caption {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(caption);
                }
            }
            WhatsappBody::Reaction { emoji, .. } if emoji.is_empty() => return Ok(()),
            WhatsappBody::Reaction { emoji, .. } => {
                text.push_str(&format!("[reacted {emoji}]"));
            }
            WhatsappBody::Other { kind } => {
                text.push_str(&format!(
                    "[a WhatsApp {kind} message, which Threadline does not show]"
                ));
            }
        }
        let hint = match HandoffCode::find_in(&text) {
            Some(code) => continue_hint(&self.bridge, &handle, &code).await?,
            None => None,
        };
        let reply_to = match message.reply_to.as_deref().map(ExternalId::new) {
            Some(Ok(quoted)) => quoted_message(&self.bridge, &handle, &quoted).await,
            _ => None,
        };
        let mut inbound = InboundMessage::new(handle, external_id, text);
        inbound.attachments = attachments;
        inbound.sender_name = message.profile_name;
        inbound.thread_hint = hint;
        inbound.reply_to = reply_to;
        outcome(self.bridge.receive(&inbound).await, "a WhatsApp message")
    }

    /// A status of a reply: a receipt on it, unless it has as good a one already.
    async fn take_status(&self, status: StatusUpdate) -> Result<(), WebhookRefusal> {
        let kind = match status.status.as_str() {
            "delivered" => ReceiptKind::Delivered,
            "read" => ReceiptKind::Read,
            "failed" => ReceiptKind::Failed,
            // `sent`: on WhatsApp's servers, not yet the customer's phone.
            _ => return Ok(()),
        };
        let Some(event) = status
            .callback_data
            .as_deref()
            .and_then(|data| data.parse::<EventId>().ok())
        else {
            tracing::debug!("a WhatsApp status of a message this bridge did not send; skipped");
            return Ok(());
        };
        let Ok(handle) = Handle::new(ChannelKind::Whatsapp, &format!("+{}", status.recipient_id))
        else {
            return Ok(());
        };
        let reason = (!status.errors.is_empty()).then(|| status.errors.join("; "));
        record_receipt(
            &self.bridge,
            &handle,
            |entry| entry.event == event,
            kind,
            reason,
        )
        .await
    }

    /// Sends what is queued for WhatsApp (up to `limit`); how many left the queue.
    pub async fn deliver(&self, limit: usize) -> Result<usize, BridgeError> {
        self.bridge
            .deliver_pending(limit, |delivery| self.send(delivery))
            .await
    }

    async fn send(&self, delivery: Delivery) -> Result<Sent, SendError> {
        let to = delivery.handle.address().trim_start_matches('+').to_owned();
        let node = self.settings.phone_number_id.as_str();
        let graph = &self.settings.graph;
        let callback = delivery.event.to_string();
        // An approved template goes whatever the window.
        if let Some(template) = &delivery.template {
            if let Some(problem) = template_problem(template) {
                return Err(SendError::Permanent(problem));
            }
            graph
                .post_message(node, template_message(&to, template, &callback))
                .await
                .map_err(|err| err.send_error())?;
            return Ok(Sent::Accepted);
        }
        let link = self.bridge.link();
        let last = last_customer_message(link, &delivery, ChannelKind::Whatsapp).await?;
        let window = ReplyWindow::of(ChannelKind::Whatsapp, last, self.bridge.now(), false);
        if let Some(reason) = window.refusal(ChannelKind::Whatsapp) {
            return Err(SendError::Permanent(reason));
        }
        // The first message of the reply quotes the customer's message it answers.
        let mut context = delivery
            .reply_to
            .as_ref()
            .map(|quoted| serde_json::json!({ "message_id": quoted.as_str() }));
        for part in split_text(&delivery.text, MAX_TEXT_CHARS) {
            let mut body = serde_json::json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": "text",
                "text": { "preview_url": false, "body": part },
                "biz_opaque_callback_data": callback,
            });
            if let Some(context) = context.take() {
                body["context"] = context;
            }
            graph
                .post_message(node, body)
                .await
                .map_err(|err| err.send_error())?;
        }
        for file in &delivery.attachments {
            let bytes = attachment_bytes(link, file).await?;
            let uploaded = graph
                .post_multipart(
                    node,
                    "media",
                    vec![
                        ("messaging_product", "whatsapp".to_owned()),
                        ("type", file.media_type.as_str().to_owned()),
                    ],
                    "file",
                    Upload {
                        name: file.name.as_str(),
                        media_type: file.media_type.as_str(),
                        bytes: &bytes,
                    },
                )
                .await
                .map_err(|err| err.send_error())?;
            let media_id = uploaded["id"]
                .as_str()
                .ok_or_else(|| SendError::Retry("the media upload answered no id".to_owned()))?;
            let kind = media_kind(file.media_type.as_str());
            let mut media = serde_json::json!({ "id": media_id });
            if kind == "document" {
                media["filename"] = serde_json::json!(file.name.as_str());
            }
            let mut body = serde_json::json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": to,
                "type": kind,
                "biz_opaque_callback_data": callback,
            });
            body[kind] = media;
            if let Some(context) = context.take() {
                body["context"] = context;
            }
            graph
                .post_message(node, body)
                .await
                .map_err(|err| err.send_error())?;
        }
        // WhatsApp reports delivery and reading by webhook.
        Ok(Sent::Accepted)
    }
}

/// The Cloud API's message for `template` to `to`: its name, its language, and its values as
/// the body's text parameters, `{{1}}` first.
fn template_message(to: &str, template: &Template, callback: &str) -> serde_json::Value {
    let mut body = serde_json::json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": template.name.as_str(),
            "language": { "code": template.language.as_str() },
        },
        "biz_opaque_callback_data": callback,
    });
    if !template.parameters.is_empty() {
        let parameters: Vec<serde_json::Value> = template
            .parameters
            .iter()
            .map(|value| serde_json::json!({ "type": "text", "text": value.as_str() }))
            .collect();
        body["template"]["components"] =
            serde_json::json!([{ "type": "body", "parameters": parameters }]);
    }
    body
}

/// WhatsApp's message type for a file of `media_type`.
fn media_kind(media_type: &str) -> &'static str {
    match media_type.split('/').next() {
        Some("image") => "image",
        Some("audio") => "audio",
        Some("video") => "video",
        _ => "document",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use threadline_protocol::name::{TemplateLanguage, TemplateName, TemplateParameter};

    fn template(name: &str, language: &str, values: &[&str]) -> Template {
        Template::new(
            TemplateName::new(name).expect("valid"),
            TemplateLanguage::new(language).expect("valid"),
            values
                .iter()
                .map(|v| TemplateParameter::new(*v).expect("valid"))
                .collect(),
        )
    }

    #[test]
    fn a_template_goes_as_the_cloud_apis_template_message() {
        let body = template_message(
            "15551234567",
            &template("order_update", "en_US", &["Ann", "1077"]),
            "ab12",
        );
        assert_eq!(
            body,
            serde_json::json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "15551234567",
                "type": "template",
                "template": {
                    "name": "order_update",
                    "language": { "code": "en_US" },
                    "components": [{ "type": "body", "parameters": [
                        { "type": "text", "text": "Ann" },
                        { "type": "text", "text": "1077" },
                    ]}],
                },
                "biz_opaque_callback_data": "ab12",
            })
        );
        // No placeholders: no components.
        let plain = template_message("1", &template("hello_world", "en_US", &[]), "x");
        assert!(plain["template"].get("components").is_none());
    }

    #[test]
    fn templates_whatsapp_would_refuse_are_named_before_sending() {
        assert_eq!(
            template_problem(&template("order_update", "en_US", &["Ann"])),
            None
        );
        assert_eq!(
            template_problem(&template("hello_world", "pt_BR", &[])),
            None
        );
        assert_eq!(
            template_problem(&template("hello_world", "zh_Hant_HK", &[])),
            None
        );
        assert!(template_problem(&template("Order Update", "en_US", &[]))
            .is_some_and(|p| p.contains("template name")));
        assert!(template_problem(&template("order_update", "english", &[]))
            .is_some_and(|p| p.contains("language")));
        assert!(
            template_problem(&template("order_update", "en_US", &["a      b"]))
                .is_some_and(|p| p.contains("four spaces"))
        );
    }

    #[test]
    fn files_go_as_the_matching_whatsapp_type() {
        assert_eq!(media_kind("image/png"), "image");
        assert_eq!(media_kind("audio/ogg"), "audio");
        assert_eq!(media_kind("video/mp4"), "video");
        assert_eq!(media_kind("application/pdf"), "document");
    }
}
