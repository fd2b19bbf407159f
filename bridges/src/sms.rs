//! The SMS bridge, on Twilio's Programmable Messaging: customers text the business's number;
//! agents' replies go back as texts. Twilio's calls go through ureq like the other bridges'
//! (a configurable base URL, so a stand-in can take Twilio's place in tests).
//!
//! - **In**: Twilio posts each message as a form to `/webhooks/sms`, signed with
//!   `X-Twilio-Signature` over the URL it was given (the configured public URL, with the port
//!   variants Twilio's own libraries accept) and every parameter; a request that does not
//!   verify is refused (`401`/`403`) before anything of it is used. The sender's number,
//!   normalised to E.164, is the handle `sms:+…`; `MessageSid` is the message's id (a request
//!   Twilio sends again is stored once); an MMS's files are fetched (with the account's
//!   credentials, from the account's media URLs only) into blobs. A text with a "continue on
//!   SMS" code continues that web chat.
//! - **Opting out**: STOP (and its synonyms, or Twilio's `OptOutType=STOP`) is stored as the
//!   customer's message and withdraws their consent to SMS on their contact: the agents see
//!   it, the reply API refuses replies up front, and a reply queued before fails with a
//!   receipt, never reaching Twilio. START gives it back. Twilio's own opt-out list answers a
//!   send with error 21610: the bridge records the opt-out then too.
//! - **Out**: `Messages.json` from the configured number or Messaging Service, with a status
//!   callback to `/webhooks/sms/status?event=<reply>`; a reply longer than 1,600 characters
//!   goes as several messages. Twilio's status reports (signed alike) become receipts:
//!   `delivered`, `read`, and `undelivered`/`failed` with Twilio's error code and what it
//!   means. Rate limits, server errors and no answer are retried; Twilio's refusals fail the
//!   reply with its message.

pub mod text;
pub mod twilio;

use threadline_protocol::{event::ReceiptKind, name::ExternalId, ChannelKind, EventId, Handle};

use crate::sdk::{
    Bridge, BridgeError, Delivery, HandoffCode, InboundAttachment, InboundMessage, NodeLink,
    SendError, Sent,
};
use crate::webhook::{
    continue_hint, outcome, record_receipt, DeliveryError, WebhookRefusal, MAX_WEBHOOK_BYTES,
    WEBHOOK_BACKOFF,
};
use text::Keyword;
use twilio::{form_params, MessagesApi, SenderId};

/// The header Twilio signs its requests in.
pub use twilio::SIGNATURE_HEADER;

/// The path of the inbound messages' webhook.
pub const INBOUND_PATH: &str = "/webhooks/sms";
/// The path of the status callbacks.
pub const STATUS_PATH: &str = "/webhooks/sms/status";
/// The most files one MMS carries (Twilio's limit).
const MAX_MEDIA: usize = 10;

/// What the SMS bridge needs to know of the account.
#[derive(Debug, Clone)]
pub struct SmsSettings {
    /// Twilio's REST API, with the account's credentials.
    pub api: MessagesApi,
    /// Who replies come from.
    pub sender: SenderId,
    /// Where Twilio reaches the node's webhooks, as given to Twilio (`https://chat.example.com`):
    /// what requests are signed over, and where status reports go.
    pub public_url: String,
    /// The number a web chat visitor texts to continue there, if "continue on SMS" is offered.
    pub continue_number: Option<String>,
}

/// The SMS bridge.
#[derive(Debug)]
pub struct Sms<L> {
    bridge: Bridge<L>,
    settings: SmsSettings,
}

impl<L: NodeLink> Sms<L> {
    /// The bridge on `bridge` (a bridge certified for SMS).
    pub fn new(bridge: Bridge<L>, mut settings: SmsSettings) -> Self {
        settings.public_url = settings.public_url.trim_end_matches('/').to_owned();
        Sms {
            bridge: bridge.with_backoff(WEBHOOK_BACKOFF),
            settings,
        }
    }

    /// The bridge's SDK side.
    pub fn bridge(&self) -> &Bridge<L> {
        &self.bridge
    }

    /// The `sms:` link that opens the customer's messaging app with the code ready to send to
    /// the business's number, if one is configured.
    pub fn continue_link(&self, code: &HandoffCode) -> Option<String> {
        let number = self.settings.continue_number.as_deref()?;
        Some(format!(
            "sms:{number}?body=Continue%20my%20chat%20(code%20{})",
            code.as_str()
        ))
    }

    /// The URL Twilio signed a request to `path_and_query` over.
    fn signed_url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.settings.public_url)
    }

    /// The form's parameters, once its signature over the public URL is checked.
    fn verified(
        &self,
        path_and_query: &str,
        signature: Option<&[u8]>,
        body: &[u8],
    ) -> Result<Vec<(String, String)>, WebhookRefusal> {
        if body.len() > MAX_WEBHOOK_BYTES {
            return Err(DeliveryError::TooLarge { len: body.len() }.into());
        }
        let params = form_params(body);
        self.settings
            .api
            .verify(&self.signed_url(path_and_query), &params, signature)
            .map_err(WebhookRefusal::Signature)?;
        Ok(params)
    }

    /// Takes an incoming message (the form Twilio posted to `path_and_query`): its signature
    /// checked first, then the message stored. `Ok` once it is durable (answer `200`).
    pub async fn take(
        &self,
        path_and_query: &str,
        signature: Option<&[u8]>,
        body: &[u8],
    ) -> Result<(), WebhookRefusal> {
        let params = self.verified(path_and_query, signature, body)?;
        let get = |name: &str| param(&params, name);
        let malformed =
            |what: &str| WebhookRefusal::from(DeliveryError::Malformed(what.to_owned()));
        let sid = get("MessageSid")
            .or_else(|| get("SmsMessageSid"))
            .ok_or_else(|| malformed("no MessageSid"))?;
        if get("AccountSid") != Some(self.settings.api.account().as_str()) {
            return Err(malformed("a message of another account"));
        }
        let from = get("From").ok_or_else(|| malformed("no From"))?;
        let Some(handle) = sms_handle(from) else {
            // A short code or an alphanumeric sender: no one to answer.
            tracing::warn!(
                from,
                "sms: a message from a sender that is not a phone number; skipped"
            );
            return Ok(());
        };
        let external_id = ExternalId::new(sid).map_err(|_| malformed("an unusable MessageSid"))?;
        let mut body_text = get("Body").unwrap_or_default().to_owned();
        let attachments = self.media(&params, &mut body_text).await?;
        let keyword = match get("OptOutType").map(str::to_ascii_uppercase).as_deref() {
            Some("STOP") => Some(Keyword::OptOut),
            Some("START") => Some(Keyword::OptIn),
            Some("HELP") => Some(Keyword::Help),
            _ => text::keyword(&body_text),
        };
        let hint = match HandoffCode::find_in(&body_text) {
            Some(code) => continue_hint(&self.bridge, &handle, &code).await?,
            None => None,
        };
        let mut inbound = InboundMessage::new(handle.clone(), external_id, body_text);
        inbound.attachments = attachments;
        inbound.thread_hint = hint;
        outcome(self.bridge.receive(&inbound).await, "an SMS")?;
        // After the message, so that it is on the contact it withdraws from; a retry of the
        // request finds the message stored and records the consent.
        match keyword {
            Some(Keyword::OptOut) => self.consent(&handle, false).await,
            Some(Keyword::OptIn) => self.consent(&handle, true).await,
            Some(Keyword::Help) | None => Ok(()),
        }
    }

    /// Records the customer's consent on SMS.
    async fn consent(&self, handle: &Handle, granted: bool) -> Result<(), WebhookRefusal> {
        match WEBHOOK_BACKOFF
            .retry(|| self.bridge.link().consent(handle, granted))
            .await
        {
            Ok(()) => {
                tracing::info!(%handle, granted, "sms: consent recorded");
                Ok(())
            }
            Err(BridgeError::GaveUp { last, .. }) => {
                Err(WebhookRefusal::Unavailable(last.to_string()))
            }
            Err(err) => {
                tracing::warn!(%handle, cause = %err, "sms: consent refused by the node");
                Ok(())
            }
        }
    }

    /// An MMS's files. One Twilio cannot give now makes Twilio send the message again
    /// (`503`); one it refuses is noted in the text.
    async fn media(
        &self,
        params: &[(String, String)],
        text: &mut String,
    ) -> Result<Vec<InboundAttachment>, WebhookRefusal> {
        let count: usize = param(params, "NumMedia")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut attachments = Vec::new();
        for n in 0..count.min(MAX_MEDIA) {
            let Some(url) = param(params, &format!("MediaUrl{n}")) else {
                continue;
            };
            let media_type = param(params, &format!("MediaContentType{n}"))
                .unwrap_or("application/octet-stream")
                .to_owned();
            let name = format!("media-{}.{}", n + 1, extension(&media_type));
            match self.settings.api.media(url).await {
                Ok(bytes) => attachments.push(InboundAttachment {
                    name,
                    media_type,
                    bytes,
                }),
                Err(err) if err.status == 0 || err.status == 429 || err.status >= 500 => {
                    return Err(WebhookRefusal::Unavailable(err.to_string()))
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "sms: a file could not be fetched");
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!("[{name}: could not be fetched: {}]", err.message));
                }
            }
        }
        Ok(attachments)
    }

    /// Takes a status report of a reply (posted to `path_and_query`, which names the reply):
    /// its signature checked first, then a receipt recorded unless the reply has one as good.
    pub async fn take_status(
        &self,
        path_and_query: &str,
        signature: Option<&[u8]>,
        body: &[u8],
    ) -> Result<(), WebhookRefusal> {
        let params = self.verified(path_and_query, signature, body)?;
        let get = |name: &str| param(&params, name);
        let status = get("MessageStatus")
            .or_else(|| get("SmsStatus"))
            .unwrap_or("");
        let kind = match status {
            "delivered" => ReceiptKind::Delivered,
            "read" => ReceiptKind::Read,
            "undelivered" | "failed" => ReceiptKind::Failed,
            // queued, accepted, sending, sent: still on the way.
            _ => return Ok(()),
        };
        let event = path_and_query
            .split_once('?')
            .map(|(_, query)| form_params(query.as_bytes()))
            .and_then(|query| param(&query, "event").and_then(|id| id.parse::<EventId>().ok()));
        let Some(event) = event else {
            tracing::debug!("sms: a status report of a message this bridge did not send; skipped");
            return Ok(());
        };
        let Some(handle) = get("To").and_then(sms_handle) else {
            return Ok(());
        };
        let reason =
            (kind == ReceiptKind::Failed).then(|| failure_reason(status, get("ErrorCode")));
        if get("ErrorCode").and_then(|c| c.parse::<u64>().ok())
            == Some(twilio::UNSUBSCRIBED_RECIPIENT)
        {
            self.consent(&handle, false).await?;
        }
        record_receipt(
            &self.bridge,
            &handle,
            |entry| entry.event == event,
            kind,
            reason,
        )
        .await
    }

    /// Sends what is queued for SMS (up to `limit`); how many left the queue.
    pub async fn deliver(&self, limit: usize) -> Result<usize, BridgeError> {
        self.bridge
            .deliver_pending(limit, |delivery| self.send(delivery))
            .await
    }

    async fn send(&self, delivery: Delivery) -> Result<Sent, SendError> {
        if !delivery.attachments.is_empty() {
            return Err(SendError::Permanent(
                "SMS carries no files from Threadline: send them on another of the customer's channels".to_owned(),
            ));
        }
        let to = delivery.handle.address();
        let callback = format!("{}?event={}", self.signed_url(STATUS_PATH), delivery.event);
        for body in text::plan(&delivery.text).messages {
            let sent = self
                .settings
                .api
                .send(to, &self.settings.sender, &body, &callback)
                .await;
            if let Err(err) = sent {
                if err.unsubscribed() {
                    // Twilio's list says STOP: so does the contact from now on.
                    if let Err(cause) = self.bridge.link().consent(&delivery.handle, false).await {
                        tracing::warn!(cause = %cause, "sms: an opt-out Twilio knows not recorded");
                    }
                    return Err(SendError::Permanent(format!(
                        "not sent: {} opted out of SMS (Twilio error {}: {})",
                        delivery.handle,
                        twilio::UNSUBSCRIBED_RECIPIENT,
                        err.message
                    )));
                }
                return Err(err.send_error());
            }
        }
        // Twilio reports delivery (or its failure) by status callback.
        Ok(Sent::Accepted)
    }
}

/// The handle of a phone number, in E.164 (`None` for a short code or a sender name).
fn sms_handle(number: &str) -> Option<Handle> {
    text::e164(number).and_then(|n| Handle::new(ChannelKind::Sms, &n).ok())
}

/// A form parameter's value.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, value)| value.as_str())
}

/// A file name's extension for a media type.
fn extension(media_type: &str) -> &'static str {
    match media_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "video/mp4" => "mp4",
        "audio/mpeg" => "mp3",
        "text/vcard" | "text/x-vcard" => "vcf",
        "application/pdf" => "pdf",
        _ => "bin",
    }
}

/// What a failed report tells the agent: Twilio's code and what it means
/// (<https://www.twilio.com/docs/api/errors>).
fn failure_reason(status: &str, code: Option<&str>) -> String {
    let meaning = match code {
        Some("30001") => "queue overflow",
        Some("30002") => "account suspended",
        Some("30003") => "unreachable destination handset",
        Some("30004") => "message blocked",
        Some("30005") => "unknown destination handset",
        Some("30006") => "landline or unreachable carrier",
        Some("30007") => "message filtered by the carrier",
        Some("30008") => "unknown error",
        Some("21610") => "the recipient opted out (STOP)",
        _ => "",
    };
    match (code, meaning) {
        (Some(code), "") => format!("{status}: Twilio error {code}"),
        (Some(code), meaning) => format!("{status}: {meaning} (Twilio error {code})"),
        (None, _) => status.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_says_what_twilios_code_means() {
        assert_eq!(
            failure_reason("undelivered", Some("30006")),
            "undelivered: landline or unreachable carrier (Twilio error 30006)"
        );
        assert_eq!(
            failure_reason("failed", Some("39999")),
            "failed: Twilio error 39999"
        );
        assert_eq!(failure_reason("failed", None), "failed");
    }
}
