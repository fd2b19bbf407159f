//! The Telegram bridge: customers write to the business's bot in a private chat; agents'
//! replies go back through the Bot API. Telegram's types are frankenstein's; the calls go
//! through ureq like the other bridges' (a configurable base URL, so a stand-in can take
//! Telegram's place in tests).
//!
//! - **In**: a webhook update is taken only if it carries `X-Telegram-Bot-Api-Secret-Token`
//!   equal (constant time) to the `secret_token` given to `setWebhook`: else `401`, nothing
//!   read. A private chat's message becomes an inbound message of `telegram:<user id>`, its
//!   external id the message id (Telegram sends an update again until it gets `200`: the
//!   message is stored once); photos and documents are fetched (`getFile`, then the file) into
//!   blobs; an edit is kept as a message `[edited] …` quoting the one it changes; a reply to an
//!   earlier message quotes it. `/start <code>` (the `t.me/<bot>?start=<code>` link) continues
//!   a web chat. Groups, supergroups and channels are not customer channels: the chat is told
//!   so once, nothing is stored.
//! - **Out**: `sendMessage` (split at 4,096 characters), `sendPhoto` / `sendDocument` for
//!   files, quoting the customer's message a reply answers; an agent typing sends
//!   `sendChatAction typing`. Telegram's `429` (with `retry_after`) and server errors are
//!   retried; other refusals (`403 Forbidden: bot was blocked by the user`) fail the reply
//!   with Telegram's description. Telegram tells bots nothing of delivery or reading: a reply
//!   the API took is recorded as delivered.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use frankenstein::types::{ChatType, Message};
use frankenstein::updates::{Update, UpdateContent};
use serde::de::DeserializeOwned;
use threadline_protocol::{name::ExternalId, ChannelKind, Handle};

use crate::graph::Upload;
use crate::sdk::{
    Bridge, BridgeError, Delivery, HandoffCode, InboundAttachment, InboundMessage, NodeLink,
    SendError, Sent,
};
use crate::webhook::{
    attachment_bytes, constant_time_eq, continue_hint, outcome, quoted_message, read_delivery,
    split_text, SignatureError, WebhookRefusal, WEBHOOK_BACKOFF,
};

/// The header Telegram puts the webhook's secret token in.
pub const SECRET_TOKEN_HEADER: &str = "x-telegram-bot-api-secret-token";
/// The longest text of one Telegram message; a longer reply goes as several.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Where the Bot API is, unless configured.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";
/// What a group is told (once) when someone writes there.
const PRIVATE_ONLY: &str =
    "This bot answers in private chats only: open a chat with the bot to write to us.";

/// The bot's token (`123456:ABC…`). It never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct BotToken(String);

impl BotToken {
    /// A token: `<bot id>:<secret>`, printable ASCII with no `/`.
    pub fn new(token: impl Into<String>) -> Result<Self, String> {
        let token = token.into();
        let well_formed = token.split_once(':').is_some_and(|(id, secret)| {
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !secret.is_empty()
        }) && token.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
        if !well_formed {
            return Err("a bot token looks like 123456789:AAH… (from @BotFather)".to_owned());
        }
        Ok(BotToken(token))
    }
}

impl std::fmt::Debug for BotToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BotToken(…)")
    }
}

/// The webhook's secret token (`setWebhook`'s `secret_token`): 1–256 of `A-Z a-z 0-9 _ -`.
/// It never prints and is compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    /// A secret token as Telegram allows them; at least 16 characters here.
    pub fn new(token: impl Into<String>) -> Result<Self, String> {
        let token = token.into();
        if token.len() < 16
            || token.len() > 256
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("a secret token is 16 to 256 of A-Z, a-z, 0-9, `_` and `-`".to_owned());
        }
        Ok(SecretToken(token))
    }

    /// Checks the header a webhook request carries.
    pub fn verify(&self, given: Option<&[u8]>) -> Result<(), SignatureError> {
        let given = given.ok_or(SignatureError::Missing {
            header: SECRET_TOKEN_HEADER,
        })?;
        if constant_time_eq(self.0.as_bytes(), given) {
            Ok(())
        } else {
            Err(SignatureError::WrongToken)
        }
    }
}

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretToken(…)")
    }
}

/// A Bot API call that failed: Telegram's `error_code` (or the HTTP status; 0: no answer),
/// its description, and how long it asked to wait.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Telegram answered {code}: {description}")]
pub struct TelegramError {
    /// Telegram's `error_code`, the HTTP status, or 0 when nothing answered.
    pub code: u64,
    /// Telegram's `description`, or what went wrong.
    pub description: String,
    /// `parameters.retry_after`, for a `429`.
    pub retry_after: Option<u64>,
}

impl TelegramError {
    fn local(description: impl Into<String>) -> Self {
        TelegramError {
            code: 0,
            description: description.into(),
            retry_after: None,
        }
    }

    /// As a delivery's failure: retried when it passes (no answer, flood control, server
    /// errors), failed with Telegram's description otherwise.
    pub fn send_error(&self) -> SendError {
        if self.code == 0 || self.code == 429 || self.code >= 500 {
            SendError::Retry(self.to_string())
        } else {
            SendError::Permanent(self.description.clone())
        }
    }
}

/// The Bot API.
#[derive(Debug, Clone)]
pub struct BotApi {
    base: String,
    token: BotToken,
    agent: ureq::Agent,
}

impl BotApi {
    /// The Bot API at `base` (`https://api.telegram.org`) for the bot of `token`.
    pub fn new(base: &str, token: BotToken) -> Result<Self, String> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(format!("`{base}` is not an http(s) URL"));
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build();
        Ok(BotApi { base, token, agent })
    }

    /// Calls `method` with `params` as JSON; answers its `result`.
    pub async fn call<P, R>(&self, method: &'static str, params: &P) -> Result<R, TelegramError>
    where
        P: serde::Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        let body =
            serde_json::to_vec(params).map_err(|err| TelegramError::local(err.to_string()))?;
        let url = format!("{}/bot{}/{method}", self.base, self.token.0);
        let agent = self.agent.clone();
        blocking(move || {
            read_result(
                agent
                    .post(&url)
                    .set("Content-Type", "application/json")
                    .send_bytes(&body),
            )
        })
        .await
    }

    /// Sends a file with `method` (`sendPhoto`, `sendDocument`) as multipart, its bytes in
    /// `field`.
    pub async fn send_file(
        &self,
        method: &'static str,
        fields: Vec<(&'static str, String)>,
        field: &'static str,
        file: Upload<'_>,
    ) -> Result<Message, TelegramError> {
        let boundary = format!("threadline-{:016x}", crate::graph::rand_boundary());
        let body = crate::graph::multipart(&boundary, &fields, field, &file);
        let url = format!("{}/bot{}/{method}", self.base, self.token.0);
        let agent = self.agent.clone();
        blocking(move || {
            read_result(
                agent
                    .post(&url)
                    .set(
                        "Content-Type",
                        &format!("multipart/form-data; boundary={boundary}"),
                    )
                    .send_bytes(&body),
            )
        })
        .await
    }

    /// A file a customer sent: `getFile` for its path, then its bytes (at most
    /// `MAX_BLOB_BYTES`).
    pub async fn file(&self, file_id: &str) -> Result<Vec<u8>, TelegramError> {
        let params = frankenstein::methods::GetFileParams::builder()
            .file_id(file_id)
            .build();
        let file: frankenstein::types::File = self.call("getFile", &params).await?;
        let path = file
            .file_path
            .filter(|path| !path.is_empty() && !path.split('/').any(|part| part == ".."))
            .ok_or_else(|| TelegramError::local("getFile gave no usable file_path"))?;
        let url = format!("{}/file/bot{}/{path}", self.base, self.token.0);
        let agent = self.agent.clone();
        blocking(move || {
            let response = agent.get(&url).call().map_err(telegram_error)?;
            crate::webhook::read_file(response).map_err(TelegramError::local)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, TelegramError> + Send + 'static,
) -> Result<T, TelegramError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|err| TelegramError::local(format!("the call's task failed: {err}")))?
}

/// The Bot API's answer: `{"ok": true, "result": …}`, or its error.
fn read_result<R: DeserializeOwned>(
    answer: Result<ureq::Response, ureq::Error>,
) -> Result<R, TelegramError> {
    let response = answer.map_err(telegram_error)?;
    let parsed: frankenstein::response::MethodResponse<R> = response
        .into_json()
        .map_err(|err| TelegramError::local(format!("an answer that does not parse: {err}")))?;
    Ok(parsed.result)
}

fn telegram_error(err: ureq::Error) -> TelegramError {
    match err {
        ureq::Error::Status(status, response) => {
            match response.into_json::<frankenstein::response::ErrorResponse>() {
                Ok(error) => TelegramError {
                    code: error.error_code,
                    description: error.description,
                    retry_after: error.parameters.and_then(|p| p.retry_after).map(u64::from),
                },
                Err(_) => TelegramError {
                    code: u64::from(status),
                    description: format!("HTTP {status}"),
                    retry_after: None,
                },
            }
        }
        other => TelegramError::local(other.to_string()),
    }
}

/// What the Telegram bridge needs to know of the bot.
#[derive(Debug, Clone)]
pub struct TelegramSettings {
    /// The webhook's secret token.
    pub secret: SecretToken,
    /// The bot's username (for `t.me` links), if "continue on Telegram" is offered.
    pub bot_username: Option<String>,
    /// The Bot API.
    pub api: BotApi,
}

/// The Telegram bridge.
#[derive(Debug)]
pub struct Telegram<L> {
    bridge: Bridge<L>,
    settings: TelegramSettings,
    /// Group chats told already that the bot answers private chats only.
    told: Mutex<HashSet<i64>>,
}

impl<L: NodeLink> Telegram<L> {
    /// The bridge on `bridge` (a bridge certified for Telegram).
    pub fn new(bridge: Bridge<L>, settings: TelegramSettings) -> Self {
        Telegram {
            bridge: bridge.with_backoff(WEBHOOK_BACKOFF),
            settings,
            told: Mutex::default(),
        }
    }

    /// The bridge's SDK side.
    pub fn bridge(&self) -> &Bridge<L> {
        &self.bridge
    }

    /// The `t.me` link that opens the bot with `code` as its start parameter, if the bot's
    /// username is configured.
    pub fn continue_link(&self, code: &HandoffCode) -> Option<String> {
        let bot = self.settings.bot_username.as_deref()?;
        Some(format!("https://t.me/{bot}?start={}", code.as_str()))
    }

    fn handle(user: i64) -> Option<Handle> {
        Handle::new(ChannelKind::Telegram, &user.to_string()).ok()
    }

    /// Takes a webhook update: its secret token checked first, then the update stored.
    /// `Ok` once it is durable (answer `200`).
    pub async fn take(&self, secret: Option<&[u8]>, body: &[u8]) -> Result<(), WebhookRefusal> {
        self.settings
            .secret
            .verify(secret)
            .map_err(WebhookRefusal::Signature)?;
        let update: Update = read_delivery(body)?;
        match update.content {
            UpdateContent::Message(message) => self.take_message(*message, false).await,
            UpdateContent::EditedMessage(message) => self.take_message(*message, true).await,
            _ => Ok(()),
        }
    }

    async fn take_message(&self, message: Message, edited: bool) -> Result<(), WebhookRefusal> {
        if message.chat.type_field != ChatType::Private {
            self.private_only(message.chat.id).await;
            return Ok(());
        }
        let Some(user) = message.from.as_ref().filter(|user| !user.is_bot) else {
            return Ok(());
        };
        let Some(handle) = Self::handle(i64::try_from(user.id).unwrap_or(message.chat.id)) else {
            return Ok(());
        };
        let mut text = message
            .text
            .clone()
            .or_else(|| message.caption.clone())
            .unwrap_or_default();
        // `/start <code>`: the t.me link's start parameter continues a web chat.
        if let Some(start) = text.strip_prefix("/start") {
            let parameter = start.trim();
            if let Some(code) = HandoffCode::parse(parameter) {
                return continue_hint(&self.bridge, &handle, &code).await.map(drop);
            }
            if parameter.is_empty() {
                // Opening the bot: nothing said yet.
                return Ok(());
            }
        }
        let external = if edited {
            format!(
                "edit:{}:{}",
                message.message_id,
                message.edit_date.unwrap_or(message.date)
            )
        } else {
            format!("msg:{}", message.message_id)
        };
        let Ok(external_id) = ExternalId::new(external) else {
            return Ok(());
        };
        let mut attachments = Vec::new();
        let mut files = Vec::new();
        if let Some(largest) = message.photo.as_ref().and_then(|sizes| sizes.last()) {
            files.push((
                largest.file_id.clone(),
                "photo.jpg".to_owned(),
                "image/jpeg".to_owned(),
            ));
        }
        if let Some(document) = &message.document {
            files.push((
                document.file_id.clone(),
                document
                    .file_name
                    .clone()
                    .unwrap_or_else(|| "document".to_owned()),
                document
                    .mime_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".to_owned()),
            ));
        }
        for (file_id, name, media_type) in files {
            match self.settings.api.file(&file_id).await {
                Ok(bytes) => attachments.push(InboundAttachment {
                    name,
                    media_type,
                    bytes,
                }),
                Err(err) if err.code == 0 || err.code >= 500 => {
                    return Err(WebhookRefusal::Unavailable(err.to_string()))
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "telegram: a file could not be fetched");
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!(
                        "[{name}: could not be fetched: {}]",
                        err.description
                    ));
                }
            }
        }
        let quoted = if edited {
            Some(format!("msg:{}", message.message_id))
        } else {
            message
                .reply_to_message
                .as_ref()
                .map(|earlier| format!("msg:{}", earlier.message_id))
        };
        let reply_to = match quoted.map(ExternalId::new) {
            Some(Ok(quoted)) => quoted_message(&self.bridge, &handle, &quoted).await,
            _ => None,
        };
        if edited {
            text = format!("[edited] {text}");
        }
        let name = [
            user.first_name.as_str(),
            user.last_name.as_deref().unwrap_or(""),
        ]
        .join(" ")
        .trim()
        .to_owned();
        let mut inbound = InboundMessage::new(handle, external_id, text);
        inbound.attachments = attachments;
        inbound.reply_to = reply_to;
        inbound.sender_name = (!name.is_empty()).then_some(name);
        outcome(self.bridge.receive(&inbound).await, "a message")
    }

    /// Tells a group (once while the bridge runs) that the bot answers private chats only.
    async fn private_only(&self, chat: i64) {
        let first = self
            .told
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(chat);
        if !first {
            return;
        }
        let params = frankenstein::methods::SendMessageParams::builder()
            .chat_id(chat)
            .text(PRIVATE_ONLY)
            .build();
        if let Err(err) = self
            .settings
            .api
            .call::<_, Message>("sendMessage", &params)
            .await
        {
            tracing::warn!(cause = %err, "telegram: a group could not be told");
        }
    }

    /// Sends what is queued for Telegram (up to `limit`); how many left the queue.
    pub async fn deliver(&self, limit: usize) -> Result<usize, BridgeError> {
        self.bridge
            .deliver_pending(limit, |delivery| self.send(delivery))
            .await
    }

    async fn send(&self, delivery: Delivery) -> Result<Sent, SendError> {
        let chat: i64 = delivery.handle.address().parse().map_err(|_| {
            SendError::Permanent(format!("{} is not a Telegram chat", delivery.handle))
        })?;
        let api = &self.settings.api;
        let reply_to = delivery
            .reply_to
            .as_ref()
            .and_then(|id| id.as_str().strip_prefix("msg:")?.parse::<i32>().ok())
            .map(|message_id| {
                frankenstein::types::ReplyParameters::builder()
                    .message_id(message_id)
                    .allow_sending_without_reply(true)
                    .build()
            });
        for (n, part) in split_text(&delivery.text, MAX_TEXT_CHARS)
            .into_iter()
            .enumerate()
        {
            let params = frankenstein::methods::SendMessageParams::builder()
                .chat_id(chat)
                .text(part)
                .maybe_reply_parameters(if n == 0 { reply_to.clone() } else { None })
                .build();
            api.call::<_, Message>("sendMessage", &params)
                .await
                .map_err(|err| err.send_error())?;
        }
        for file in &delivery.attachments {
            let bytes = attachment_bytes(self.bridge.link(), file).await?;
            let (method, field) = if file.media_type.as_str().starts_with("image/") {
                ("sendPhoto", "photo")
            } else {
                ("sendDocument", "document")
            };
            api.send_file(
                method,
                vec![("chat_id", chat.to_string())],
                field,
                Upload {
                    name: file.name.as_str(),
                    media_type: file.media_type.as_str(),
                    bytes: &bytes,
                },
            )
            .await
            .map_err(|err| err.send_error())?;
        }
        // Telegram tells bots nothing of delivery: taken is as delivered as it gets.
        Ok(Sent::Delivered)
    }

    /// Tells the customer of `handle` that an agent is typing (`sendChatAction`).
    pub async fn agent_typing(&self, handle: &Handle) {
        let Ok(chat) = handle.address().parse::<i64>() else {
            return;
        };
        let params = frankenstein::methods::SendChatActionParams::builder()
            .chat_id(chat)
            .action(frankenstein::types::ChatAction::Typing)
            .build();
        if let Err(err) = self
            .settings
            .api
            .call::<_, bool>("sendChatAction", &params)
            .await
        {
            tracing::debug!(cause = %err, "telegram: typing not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_token_must_be_there_and_exactly_the_same() {
        let secret = SecretToken::new("secret-token-0123456789").expect("token");
        assert!(secret.verify(Some(b"secret-token-0123456789")).is_ok());
        let missing = secret.verify(None).expect_err("missing");
        let wrong = secret
            .verify(Some(b"secret-token-0123456788"))
            .expect_err("one byte");
        let short = secret.verify(Some(b"secret-token")).expect_err("shorter");
        for err in [missing, wrong, short] {
            assert_eq!(err.status(), 401, "{err}");
        }
        assert!(SecretToken::new("short").is_err());
        assert!(SecretToken::new("has spaces in it, not allowed").is_err());
        assert!(!format!("{secret:?}").contains("0123"), "it never prints");
    }

    #[test]
    fn a_bot_token_is_checked_and_never_printed() {
        let token = BotToken::new("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw").expect("token");
        assert!(!format!("{token:?}").contains("AAH"));
        for bad in ["", "no-colon", ":secret", "12a:secret", "123:", "123:a/b"] {
            assert!(BotToken::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_docs_sample_updates_parse_with_the_types() {
        // https://core.telegram.org/bots/webhooks#testing-your-bot-with-updates
        let text: Update = serde_json::from_str(r#"{"update_id":10000,
"message":{"date":1441645532,"chat":{"last_name":"Test Lastname","id":1111111,"first_name":"Test","username":"Test","type":"private"},
"message_id":1365,"from":{"last_name":"Test Lastname","id":1111111,"first_name":"Test","username":"Test","is_bot":false},"text":"/start"}}"#)
            .expect("a text update");
        assert!(matches!(text.content, UpdateContent::Message(_)));
        let edited: Update = serde_json::from_str(r#"{"update_id":10000,
"edited_message":{"date":1441645532,"chat":{"last_name":"Test Lastname","type":"private","id":1111111,"first_name":"Test","username":"Test"},
"message_id":1365,"from":{"last_name":"Test Lastname","id":1111111,"first_name":"Test","username":"Test","is_bot":false},"text":"Edited text","edit_date":1441646600}}"#)
            .expect("an edited update");
        assert!(matches!(edited.content, UpdateContent::EditedMessage(_)));
    }
}
