//! The Slack bridge: customers in Slack write to the business's app, in a direct message or in
//! a Slack Connect channel the app is in; agents' replies go back with `chat.postMessage`.
//!
//! - **In**: the Events API. Every request is signed: `X-Slack-Signature` = `v0=` + hex
//!   HMAC-SHA256 of `v0:<X-Slack-Request-Timestamp>:<raw body>` under the signing secret,
//!   compared in constant time, and refused when its timestamp is more than 5 minutes from the
//!   bridge's clock (injectable, for the published vector of 2018). The `url_verification`
//!   challenge is answered. A customer's `message` becomes an inbound message of
//!   `slack:<user id>` whose external id names the channel and the message (`<channel>:<ts>`,
//!   with the thread's `thread_ts`), so Slack's retries (`X-Slack-Retry-Num`) store it once;
//!   files are fetched (`url_private_download`, with the bot token) into blobs; an edit
//!   (`message_changed`) is kept as `[edited] …` quoting the message; bots' messages, the
//!   app's own posts and other subtypes are not customers' (no loops).
//! - **Out**: a reply goes to the channel of the customer's last message on the thread, in
//!   its Slack thread (`thread_ts`) when the customer wrote in one or wrote in a channel (a
//!   shared channel holds many conversations); files by `files.getUploadURLExternal`, the
//!   upload, then `files.completeUploadExternal`. Slack's `ratelimited` (429) and server
//!   errors are retried; its other errors (`channel_not_found`, `is_archived`, …) fail the
//!   reply with Slack's code.

use serde::Deserialize;
use serde_json::{json, Value};
use threadline_protocol::{name::ExternalId, ChannelKind, Handle};

use crate::sdk::{
    Bridge, BridgeError, Delivery, HandoffCode, InboundAttachment, InboundMessage, NodeLink,
    SendError, Sent,
};
use crate::webhook::{
    attachment_bytes, constant_time_eq, continue_hint, hmac_sha256, outcome, quoted_message,
    read_delivery, split_text, SignatureError, WebhookRefusal, WEBHOOK_BACKOFF,
};

/// The header of Slack's signature.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// The header of the signed timestamp.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// How far a request's timestamp may be from the bridge's clock.
pub const MAX_SKEW_SECONDS: u64 = 5 * 60;
/// Where Slack's Web API is, unless configured.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";
/// The longest text of one Slack message the bridge sends; a longer reply goes as several.
pub const MAX_TEXT_CHARS: usize = 4000;

/// The app's signing secret. It never prints.
#[derive(Clone)]
pub struct SigningSecret(String);

impl SigningSecret {
    /// A secret; refused when empty.
    pub fn new(secret: impl Into<String>) -> Result<Self, String> {
        let secret = secret.into();
        if secret.trim().is_empty() {
            return Err("the signing secret is empty".to_owned());
        }
        Ok(SigningSecret(secret))
    }

    /// Checks a request: its signature over `v0:<timestamp>:<body>` and its timestamp against
    /// `now` (seconds since the epoch).
    pub fn verify(
        &self,
        signature: Option<&[u8]>,
        timestamp: Option<&[u8]>,
        body: &[u8],
        now: u64,
    ) -> Result<(), SignatureError> {
        let signature = signature.ok_or(SignatureError::Missing {
            header: SIGNATURE_HEADER,
        })?;
        let timestamp = timestamp.ok_or(SignatureError::Missing {
            header: TIMESTAMP_HEADER,
        })?;
        let seconds: u64 = std::str::from_utf8(timestamp)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or(SignatureError::Malformed {
                header: TIMESTAMP_HEADER,
            })?;
        if seconds.abs_diff(now) > MAX_SKEW_SECONDS {
            return Err(SignatureError::Stale);
        }
        let mut base = Vec::with_capacity(body.len() + 24);
        base.extend_from_slice(b"v0:");
        base.extend_from_slice(timestamp);
        base.push(b':');
        base.extend_from_slice(body);
        let expected = format!("v0={}", hex::encode(hmac_sha256(self.0.as_bytes(), &base)));
        if constant_time_eq(expected.as_bytes(), signature) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

/// The bot token (`xoxb-…`). It never prints.
#[derive(Clone)]
pub struct BotToken(String);

impl BotToken {
    /// A token: printable ASCII.
    pub fn new(token: impl Into<String>) -> Result<Self, String> {
        let token = token.into();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a bot token is printable ASCII (xoxb-…)".to_owned());
        }
        Ok(BotToken(token))
    }
}

impl std::fmt::Debug for BotToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BotToken(…)")
    }
}

/// A Web API call that failed: Slack's `error` code (or the HTTP status), and whether it
/// passes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Slack answered {status}: {error}")]
pub struct SlackError {
    /// The HTTP status (0: no answer).
    pub status: u16,
    /// Slack's `error` (`channel_not_found`), or what went wrong.
    pub error: String,
}

impl SlackError {
    fn local(error: impl Into<String>) -> Self {
        SlackError {
            status: 0,
            error: error.into(),
        }
    }

    /// As a delivery's failure: retried when it passes (no answer, `ratelimited`, server
    /// errors), failed with Slack's code otherwise.
    pub fn send_error(&self) -> SendError {
        let passing = matches!(
            self.error.as_str(),
            "ratelimited"
                | "service_unavailable"
                | "internal_error"
                | "fatal_error"
                | "request_timeout"
        );
        if self.status == 0 || self.status == 429 || self.status >= 500 || passing {
            SendError::Retry(self.to_string())
        } else {
            SendError::Permanent(format!("Slack refused it: {}", self.error))
        }
    }
}

/// Slack's Web API.
#[derive(Debug, Clone)]
pub struct WebApi {
    base: String,
    token: BotToken,
    agent: ureq::Agent,
}

impl WebApi {
    /// The Web API at `base` (`https://slack.com/api`) with the bot's token.
    pub fn new(base: &str, token: BotToken) -> Result<Self, String> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(format!("`{base}` is not an http(s) URL"));
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .redirects(0)
            .build();
        Ok(WebApi { base, token, agent })
    }

    /// Calls `method` with a JSON body; answers Slack's answer when `ok`.
    pub async fn call(&self, method: &str, body: Value) -> Result<Value, SlackError> {
        let url = format!("{}/{method}", self.base);
        let (agent, token) = (self.agent.clone(), self.token.0.clone());
        blocking(move || {
            answer(
                agent
                    .post(&url)
                    .set("Authorization", &format!("Bearer {token}"))
                    .set("Content-Type", "application/json; charset=utf-8")
                    .send_string(&body.to_string()),
            )
        })
        .await
    }

    /// Calls `method` with form fields (the methods Slack takes only as a form).
    async fn call_form(
        &self,
        method: &str,
        fields: Vec<(String, String)>,
    ) -> Result<Value, SlackError> {
        let url = format!("{}/{method}", self.base);
        let (agent, token) = (self.agent.clone(), self.token.0.clone());
        blocking(move || {
            let pairs: Vec<(&str, &str)> = fields
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            answer(
                agent
                    .post(&url)
                    .set("Authorization", &format!("Bearer {token}"))
                    .send_form(&pairs),
            )
        })
        .await
    }

    /// A file a customer shared (its `url_private_download`, read with the bot token), at
    /// most `MAX_BLOB_BYTES`.
    pub async fn download(&self, url: &str) -> Result<Vec<u8>, SlackError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(SlackError::local("the file's URL is not http(s)"));
        }
        let (agent, token, url) = (self.agent.clone(), self.token.0.clone(), url.to_owned());
        blocking(move || {
            let response = agent
                .get(&url)
                .set("Authorization", &format!("Bearer {token}"))
                .call()
                .map_err(slack_error)?;
            crate::webhook::read_file(response).map_err(SlackError::local)
        })
        .await
    }

    /// Shares a file in `channel` (in `thread_ts`'s thread, if given): an upload URL, the
    /// bytes, then completing the upload into the channel.
    pub async fn share_file(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<(), SlackError> {
        let slot = self
            .call_form(
                "files.getUploadURLExternal",
                vec![
                    ("filename".to_owned(), name.to_owned()),
                    ("length".to_owned(), bytes.len().to_string()),
                ],
            )
            .await?;
        let (Some(upload_url), Some(file_id)) = (
            slot["upload_url"].as_str().map(str::to_owned),
            slot["file_id"].as_str().map(str::to_owned),
        ) else {
            return Err(SlackError::local(
                "files.getUploadURLExternal gave no upload_url",
            ));
        };
        let agent = self.agent.clone();
        blocking(move || {
            agent
                .post(&upload_url)
                .set("Content-Type", "application/octet-stream")
                .send_bytes(&bytes)
                .map(drop)
                .map_err(slack_error)
        })
        .await?;
        let mut complete = json!({
            "files": [{"id": file_id, "title": name}],
            "channel_id": channel,
        });
        if let Some(thread_ts) = thread_ts {
            complete["thread_ts"] = json!(thread_ts);
        }
        self.call("files.completeUploadExternal", complete)
            .await
            .map(drop)
    }
}

async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, SlackError> + Send + 'static,
) -> Result<T, SlackError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|err| SlackError::local(format!("the call's task failed: {err}")))?
}

/// Slack's answer: `{"ok": true, …}`, or its `error` (Slack answers most errors with `200`).
fn answer(response: Result<ureq::Response, ureq::Error>) -> Result<Value, SlackError> {
    let response = response.map_err(slack_error)?;
    let status = response.status();
    let body: Value = response
        .into_json()
        .map_err(|err| SlackError::local(format!("an answer that does not parse: {err}")))?;
    if body["ok"] == true {
        Ok(body)
    } else {
        Err(SlackError {
            status,
            error: body["error"].as_str().unwrap_or("unknown_error").to_owned(),
        })
    }
}

fn slack_error(err: ureq::Error) -> SlackError {
    match err {
        ureq::Error::Status(status, response) => {
            let error = response
                .into_json::<Value>()
                .ok()
                .and_then(|body| body["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("HTTP {status}"));
            SlackError { status, error }
        }
        other => SlackError::local(other.to_string()),
    }
}

/// What the Slack bridge needs to know of the app.
#[derive(Debug, Clone)]
pub struct SlackSettings {
    /// The signing secret.
    pub signing_secret: SigningSecret,
    /// The app's bot user id (`U…`), whose own posts are never a customer's, if known.
    pub bot_user: Option<String>,
    /// The business's own workspace (`T…`): in a shared channel, its members are the
    /// business's people, not customers.
    pub own_team: Option<String>,
    /// `https://slack.com/app_redirect?app=<app id>` (and `&team=`), for "continue on Slack".
    pub app_link: Option<String>,
    /// The Web API.
    pub api: WebApi,
}

/// An Events API request's body, as far as the bridge reads it.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum Envelope {
    #[serde(rename = "url_verification")]
    UrlVerification { challenge: String },
    #[serde(rename = "event_callback")]
    EventCallback { event: Value },
    #[serde(other)]
    Other,
}

/// What the bridge answers a verified request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `200` with an empty body.
    Taken,
    /// `200` with the challenge (`url_verification`).
    Challenge(String),
}

/// The Slack bridge.
#[derive(Debug)]
pub struct Slack<L> {
    bridge: Bridge<L>,
    settings: SlackSettings,
    now: fn() -> u64,
}

/// Seconds since the epoch, by the system clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl<L: NodeLink> Slack<L> {
    /// The bridge on `bridge` (certified for Slack); `now` is the clock signatures are
    /// checked against.
    pub fn new(bridge: Bridge<L>, settings: SlackSettings, now: fn() -> u64) -> Self {
        Slack {
            bridge: bridge.with_backoff(WEBHOOK_BACKOFF),
            settings,
            now,
        }
    }

    /// The bridge's SDK side.
    pub fn bridge(&self) -> &Bridge<L> {
        &self.bridge
    }

    /// The link that opens the app in Slack, with the message to send carrying `code` (Slack
    /// cannot fill in a first message: the web chat shows it).
    pub fn continue_link(&self, code: &HandoffCode) -> Option<String> {
        let app = self.settings.app_link.as_deref()?;
        let joiner = if app.contains('?') { '&' } else { '?' };
        Some(format!(
            "{app}{joiner}text=Continue%20my%20chat%20(code%20{})",
            code.as_str()
        ))
    }

    /// Takes an Events API request: its signature checked over the raw body first.
    pub async fn take(
        &self,
        signature: Option<&[u8]>,
        timestamp: Option<&[u8]>,
        body: &[u8],
    ) -> Result<Answer, WebhookRefusal> {
        self.settings
            .signing_secret
            .verify(signature, timestamp, body, (self.now)())
            .map_err(WebhookRefusal::Signature)?;
        match read_delivery::<Envelope>(body)? {
            Envelope::UrlVerification { challenge } => Ok(Answer::Challenge(challenge)),
            Envelope::EventCallback { event } => {
                self.take_event(event).await.map(|()| Answer::Taken)
            }
            Envelope::Other => Ok(Answer::Taken),
        }
    }

    async fn take_event(&self, event: Value) -> Result<(), WebhookRefusal> {
        if event["type"] != "message" {
            return Ok(());
        }
        let (message, edited) = match event["subtype"].as_str() {
            None | Some("file_share") => (event.clone(), false),
            Some("message_changed") => (event["message"].clone(), true),
            // Joins, topics, deletions of the app's own posts, bots: not a customer's words.
            Some(_) => return Ok(()),
        };
        let Some(channel) = event["channel"].as_str() else {
            return Ok(());
        };
        let Some(user) = message["user"].as_str() else {
            return Ok(());
        };
        if message.get("bot_id").is_some_and(|bot| !bot.is_null())
            || self.settings.bot_user.as_deref() == Some(user)
        {
            return Ok(());
        }
        let team = message["user_team"].as_str().or(message["team"].as_str());
        if !channel.starts_with('D') && team.is_some() && team == self.settings.own_team.as_deref()
        {
            // One of the business's own people in a shared channel.
            return Ok(());
        }
        let Ok(handle) = Handle::new(ChannelKind::Slack, user) else {
            return Ok(());
        };
        let Some(ts) = message["ts"].as_str() else {
            return Ok(());
        };
        let thread_ts = message["thread_ts"].as_str().filter(|thread| *thread != ts);
        let conversation = match thread_ts {
            Some(thread) => format!("{channel}:{ts}:{thread}"),
            None => format!("{channel}:{ts}"),
        };
        let external = if edited {
            let edited_ts = event["event_ts"]
                .as_str()
                .or(event["ts"].as_str())
                .unwrap_or(ts);
            format!("edit:{edited_ts}:{conversation}")
        } else {
            conversation.clone()
        };
        let Ok(external_id) = ExternalId::new(external) else {
            return Ok(());
        };
        let mut text = message["text"].as_str().unwrap_or_default().to_owned();
        let mut attachments = Vec::new();
        for file in message["files"].as_array().into_iter().flatten() {
            let name = file["name"].as_str().unwrap_or("file").to_owned();
            let Some(url) = file["url_private_download"].as_str() else {
                continue;
            };
            match self.settings.api.download(url).await {
                Ok(bytes) => attachments.push(InboundAttachment {
                    name,
                    media_type: file["mimetype"]
                        .as_str()
                        .unwrap_or("application/octet-stream")
                        .to_owned(),
                    bytes,
                }),
                Err(err) if err.status == 0 || err.status >= 500 => {
                    return Err(WebhookRefusal::Unavailable(err.to_string()))
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "slack: a file could not be fetched");
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!("[{name}: could not be fetched: {}]", err.error));
                }
            }
        }
        let hint = match HandoffCode::find_in(&text) {
            Some(code) => continue_hint(&self.bridge, &handle, &code).await?,
            None => None,
        };
        let reply_to = if edited {
            match ExternalId::new(conversation) {
                Ok(original) => quoted_message(&self.bridge, &handle, &original).await,
                Err(_) => None,
            }
        } else {
            None
        };
        if edited {
            text = format!("[edited] {text}");
        }
        let mut inbound = InboundMessage::new(handle, external_id, text);
        inbound.attachments = attachments;
        inbound.thread_hint = hint;
        inbound.reply_to = reply_to;
        outcome(self.bridge.receive(&inbound).await, "a message")
    }

    /// Sends what is queued for Slack (up to `limit`); how many left the queue.
    pub async fn deliver(&self, limit: usize) -> Result<usize, BridgeError> {
        self.bridge
            .deliver_pending(limit, |delivery| self.send(delivery))
            .await
    }

    /// Where a reply goes: the channel of the customer's last Slack message on the thread,
    /// and the Slack thread to answer in.
    async fn place(&self, delivery: &Delivery) -> Result<(String, Option<String>), SendError> {
        let messages = self
            .bridge
            .link()
            .thread_messages(delivery.thread)
            .await
            .map_err(|err| SendError::Retry(err.to_string()))?;
        let last = messages
            .iter()
            .rev()
            .filter(|m| m.inbound && m.channel == Some(ChannelKind::Slack))
            .find_map(|m| m.external_id.clone())
            .ok_or_else(|| {
                SendError::Permanent(
                    "the customer has not written on Slack in this conversation: there is no channel to answer in".to_owned(),
                )
            })?;
        // An edit's id is `edit:<when>:<the message's id>`.
        let last = match last.strip_prefix("edit:") {
            Some(edit) => edit.split_once(':').map_or(edit, |(_, message)| message),
            None => &last,
        };
        let mut parts = last.split(':');
        let (Some(channel), Some(ts)) = (parts.next(), parts.next()) else {
            return Err(SendError::Permanent(format!(
                "`{last}` names no Slack channel"
            )));
        };
        let thread = parts.next();
        // A direct message (D…) is answered plainly unless the customer wrote in a thread; a
        // shared channel holds many conversations, each in its own thread.
        let thread_ts = match thread {
            Some(thread) => Some(thread.to_owned()),
            None if channel.starts_with('D') => None,
            None => Some(ts.to_owned()),
        };
        Ok((channel.to_owned(), thread_ts))
    }

    async fn send(&self, delivery: Delivery) -> Result<Sent, SendError> {
        let (channel, thread_ts) = self.place(&delivery).await?;
        let api = &self.settings.api;
        for part in split_text(&delivery.text, MAX_TEXT_CHARS) {
            let mut body = json!({"channel": channel, "text": part});
            if let Some(thread_ts) = &thread_ts {
                body["thread_ts"] = json!(thread_ts);
            }
            api.call("chat.postMessage", body)
                .await
                .map_err(|err| err.send_error())?;
        }
        for file in &delivery.attachments {
            let bytes = attachment_bytes(self.bridge.link(), file).await?;
            api.share_file(&channel, thread_ts.as_deref(), file.name.as_str(), bytes)
                .await
                .map_err(|err| err.send_error())?;
        }
        // Slack tells apps nothing of delivery or reading: posted is delivered.
        Ok(Sent::Delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's "Verifying requests from Slack" example.
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const TIMESTAMP: u64 = 1_531_420_618;

    fn secret() -> SigningSecret {
        SigningSecret::new("8f742231b10e8888abcd99yyyzzz85a5").expect("secret")
    }

    #[test]
    fn the_published_vector_verifies_at_its_time() {
        let ts = TIMESTAMP.to_string();
        assert_eq!(
            secret().verify(
                Some(SIGNATURE.as_bytes()),
                Some(ts.as_bytes()),
                BODY.as_bytes(),
                TIMESTAMP + 10
            ),
            Ok(())
        );
    }

    #[test]
    fn missing_stale_altered_or_wrong_signatures_are_refused() {
        let ts = TIMESTAMP.to_string();
        let verify = |signature: Option<&str>, timestamp: Option<&str>, body: &str, now: u64| {
            secret().verify(
                signature.map(str::as_bytes),
                timestamp.map(str::as_bytes),
                body.as_bytes(),
                now,
            )
        };
        assert!(matches!(
            verify(None, Some(&ts), BODY, TIMESTAMP),
            Err(SignatureError::Missing { .. })
        ));
        assert!(matches!(
            verify(Some(SIGNATURE), None, BODY, TIMESTAMP),
            Err(SignatureError::Missing { .. })
        ));
        assert_eq!(
            verify(Some(SIGNATURE), Some(&ts), BODY, TIMESTAMP + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(Some(SIGNATURE), Some(&ts), BODY, TIMESTAMP - 301),
            Err(SignatureError::Stale)
        );
        let mut altered = BODY.to_owned();
        altered.replace_range(6..7, "X");
        assert_eq!(
            verify(Some(SIGNATURE), Some(&ts), &altered, TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
        let wrong = SIGNATURE.replace("a21", "a22");
        assert_eq!(
            verify(Some(&wrong), Some(&ts), BODY, TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: another one with the same signature does not pass.
        let later = (TIMESTAMP + 1).to_string();
        assert_eq!(
            verify(Some(SIGNATURE), Some(&later), BODY, TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify(Some(SIGNATURE), Some("soon"), BODY, TIMESTAMP),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn slacks_errors_are_sorted_into_retry_or_fail() {
        let error = |status, error: &str| SlackError {
            status,
            error: error.to_owned(),
        };
        assert!(matches!(
            error(429, "ratelimited").send_error(),
            SendError::Retry(_)
        ));
        assert!(matches!(
            error(200, "ratelimited").send_error(),
            SendError::Retry(_)
        ));
        assert!(matches!(error(503, "x").send_error(), SendError::Retry(_)));
        assert!(matches!(
            error(0, "timeout").send_error(),
            SendError::Retry(_)
        ));
        assert!(
            matches!(error(200, "channel_not_found").send_error(), SendError::Permanent(reason) if reason.contains("channel_not_found"))
        );
    }
}
