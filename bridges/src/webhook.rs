//! What every webhook bridge shares, written once: the provider's signature over the raw body,
//! checked in constant time before anything is parsed, and the subscription handshake.
//!
//! Meta (Messenger, Instagram, WhatsApp Cloud API) signs each delivery with
//! `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body under the app secret>` and
//! verifies a webhook URL with `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`.

use hmac::{KeyInit as _, Mac as _};
use threadline_protocol::{
    event::ReceiptKind, name::ExternalId, ChannelKind, EventId, Handle, ThreadId, Timestamp,
};

use crate::sdk::{Bridge, BridgeError, Delivery, HandoffCode, NodeLink, SendError, ThreadHint};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a delivery's signature was not accepted. Nothing of its body may be parsed or stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The request carries no signature header.
    #[error("the request is not signed (no {header} header)")]
    Missing {
        /// The header looked for.
        header: &'static str,
    },
    /// The header is not `sha256=` and 64 hex digits.
    #[error("the {header} header is not `sha256=` and 64 hex digits")]
    Malformed {
        /// The header read.
        header: &'static str,
    },
    /// The signature is not the body's under the secret (a wrong secret, or a changed body).
    #[error("the signature does not match the body")]
    Mismatch,
    /// The shared secret token the request carries is not the bridge's (Telegram's
    /// `X-Telegram-Bot-Api-Secret-Token`).
    #[error("the secret token is wrong")]
    WrongToken,
    /// The signed timestamp is too far from the bridge's clock (a replayed request).
    #[error("the request's timestamp is more than 5 minutes from now")]
    Stale,
}

impl SignatureError {
    /// The HTTP status to answer with: `401` when the request is not signed at all, `403` when
    /// it is signed wrongly.
    pub fn status(&self) -> u16 {
        match self {
            SignatureError::Missing { .. }
            | SignatureError::Malformed { .. }
            | SignatureError::WrongToken
            | SignatureError::Stale => 401,
            SignatureError::Mismatch => 403,
        }
    }
}

/// The header Meta signs its webhook deliveries in.
pub const HUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// An app secret, the key of a provider's webhook signatures. Its `Debug` never shows it.
#[derive(Clone)]
pub struct AppSecret {
    /// The HMAC keyed with the secret, cloned for each delivery.
    keyed: HmacSha256,
}

/// An app secret that cannot key an HMAC (an empty one: a webhook would accept anything).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the app secret is empty")]
pub struct EmptySecret;

impl AppSecret {
    /// A secret from its bytes (Meta's app secret is the text as shown in the app dashboard).
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, EmptySecret> {
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(EmptySecret);
        }
        Ok(AppSecret {
            keyed: HmacSha256::new(&block_key(secret).into()),
        })
    }

    /// Checks `X-Hub-Signature-256` (`header`, as received) against the raw `body`, in
    /// constant time.
    pub fn verify_hub_signature(
        &self,
        header: Option<&[u8]>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing {
            header: HUB_SIGNATURE_HEADER,
        })?;
        let malformed = SignatureError::Malformed {
            header: HUB_SIGNATURE_HEADER,
        };
        let hex_digest = header.strip_prefix(b"sha256=").ok_or(malformed.clone())?;
        let mut expected = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut expected).map_err(|_| malformed)?;
        let mut mac = self.keyed.clone();
        mac.update(body);
        mac.verify_slice(&expected)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// The `X-Hub-Signature-256` value of `body` (what a provider sends; for tests and for
    /// signing stand-in deliveries).
    pub fn hub_signature(&self, body: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for AppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppSecret(…)")
    }
}

/// The most bytes of a webhook delivery read (Meta's are a few KiB; a batch of 1,000 messages
/// stays well under this).
pub const MAX_WEBHOOK_BYTES: usize = 1 << 20;

/// Why a delivery whose signature was good was refused (answer `400`; nothing of it is
/// stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// Over [`MAX_WEBHOOK_BYTES`].
    #[error("the body is {len} bytes, at most {MAX_WEBHOOK_BYTES} are read")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not JSON of the provider's documented shape.
    #[error("not a webhook delivery of the documented shape: {0}")]
    Malformed(String),
    /// `object` names an app this bridge does not take.
    #[error("object `{0}` is not one this bridge takes")]
    UnknownObject(String),
}

/// A delivery's body as JSON of type `T`, refused whole if too large or not of that shape.
pub fn read_delivery<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DeliveryError> {
    if body.len() > MAX_WEBHOOK_BYTES {
        return Err(DeliveryError::TooLarge { len: body.len() });
    }
    serde_json::from_slice(body).map_err(|err| DeliveryError::Malformed(err.to_string()))
}

/// Why a subscription handshake was refused (answer `403`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// `hub.mode` is not `subscribe`.
    #[error("hub.mode is not `subscribe`")]
    NotSubscribe,
    /// `hub.verify_token` is missing or not the configured one.
    #[error("hub.verify_token is not this webhook's")]
    WrongToken,
    /// `hub.challenge` is missing, empty, longer than 256 bytes or not printable ASCII.
    #[error("hub.challenge is missing or not a short printable string")]
    BadChallenge,
}

/// The subscription handshake (`GET` with `hub.mode`, `hub.verify_token`, `hub.challenge`,
/// already URL-decoded): the challenge to echo as the body of a `200`, if the mode is
/// `subscribe` and the token is `verify_token` (compared in constant time).
pub fn subscription_challenge<'a>(
    mode: Option<&str>,
    token: Option<&str>,
    challenge: Option<&'a str>,
    verify_token: &str,
) -> Result<&'a str, HandshakeError> {
    if mode != Some("subscribe") {
        return Err(HandshakeError::NotSubscribe);
    }
    let token = token.ok_or(HandshakeError::WrongToken)?;
    if !constant_time_eq(token.as_bytes(), verify_token.as_bytes()) {
        return Err(HandshakeError::WrongToken);
    }
    // Echoed back as the body: only a short printable value, never markup from a stranger.
    challenge
        .filter(|c| !c.is_empty() && c.len() <= 256 && c.bytes().all(|b| b.is_ascii_graphic()))
        .filter(|c| !c.contains(['<', '>', '&', '"', '\'']))
        .ok_or(HandshakeError::BadChallenge)
}

/// A webhook endpoint of a Meta app: the app secret its deliveries are signed with and the
/// token its subscription handshake must carry.
#[derive(Clone)]
pub struct MetaEndpoint {
    secret: AppSecret,
    verify_token: String,
}

impl std::fmt::Debug for MetaEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetaEndpoint(…)")
    }
}

impl MetaEndpoint {
    /// The endpoint with `secret` and `verify_token` (refused if the token is empty: any
    /// handshake would pass).
    pub fn new(secret: AppSecret, verify_token: impl Into<String>) -> Result<Self, String> {
        let verify_token = verify_token.into();
        if verify_token.is_empty() {
            return Err("the verify token is empty".to_owned());
        }
        Ok(MetaEndpoint {
            secret,
            verify_token,
        })
    }

    /// The subscription handshake: the challenge to echo, or why not.
    pub fn challenge<'a>(
        &self,
        mode: Option<&str>,
        token: Option<&str>,
        challenge: Option<&'a str>,
    ) -> Result<&'a str, HandshakeError> {
        subscription_challenge(mode, token, challenge, &self.verify_token)
    }

    /// Checks a delivery's `X-Hub-Signature-256` over its raw body.
    pub fn verify(&self, signature: Option<&[u8]>, body: &[u8]) -> Result<(), WebhookRefusal> {
        self.secret
            .verify_hub_signature(signature, body)
            .map_err(WebhookRefusal::Signature)
    }
}

/// Why a webhook bridge did not take a delivery, and so what the provider is answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRefusal {
    /// Unsigned or wrongly signed: nothing of it was read.
    #[error(transparent)]
    Signature(SignatureError),
    /// Signed, but not a delivery this bridge takes: nothing of it was stored.
    #[error(transparent)]
    Delivery(DeliveryError),
    /// The node could not store it now: the provider sends it again later, and what of it
    /// was stored already is stored once.
    #[error("the node is unavailable: {0}")]
    Unavailable(String),
}

impl WebhookRefusal {
    /// The HTTP status to answer: 401/403 for signatures, 400 for a bad delivery, 503 (the
    /// provider retries) when the node could not store it.
    pub fn status(&self) -> u16 {
        match self {
            WebhookRefusal::Signature(err) => err.status(),
            WebhookRefusal::Delivery(DeliveryError::TooLarge { .. }) => 413,
            WebhookRefusal::Delivery(_) => 400,
            WebhookRefusal::Unavailable(_) => 503,
        }
    }
}

impl From<DeliveryError> for WebhookRefusal {
    fn from(err: DeliveryError) -> Self {
        WebhookRefusal::Delivery(err)
    }
}

/// How a webhook bridge retries the node while the provider waits for its answer: briefly
/// (Meta waits a few seconds), then `503` so the provider delivers again later.
pub const WEBHOOK_BACKOFF: crate::sdk::Backoff = crate::sdk::Backoff {
    first: std::time::Duration::from_millis(50),
    max: std::time::Duration::from_millis(400),
    attempts: 5,
};

/// What became of one item of a delivery, for the bridge's answer: any item the node could
/// not take now makes the whole delivery be answered `503` (the provider sends it all again;
/// the items stored already are stored once, by their ids).
pub fn outcome(
    result: Result<crate::sdk::Submitted, crate::sdk::BridgeError>,
    what: &str,
) -> Result<(), WebhookRefusal> {
    use crate::sdk::BridgeError;
    match result {
        Ok(_) => Ok(()),
        Err(BridgeError::GaveUp { last, .. }) => {
            Err(WebhookRefusal::Unavailable(format!("{what}: {last}")))
        }
        // Sending it again would not help: it is logged and the delivery is taken.
        Err(err) => {
            tracing::warn!(cause = %err, "{what}: refused by the node; skipped");
            Ok(())
        }
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`: what a website signs a web chat visitor's
/// identity with, and what Meta signs deliveries with.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new(&block_key(key).into());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// A key as HMAC uses it: one SHA-256 block, the key hashed first if longer, zero-padded. Keyed
/// this way, HMAC takes any key and cannot fail.
fn block_key(key: &[u8]) -> [u8; 64] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&<sha2::Sha256 as sha2::Digest>::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    block
}

/// Equality of two byte strings in time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The earlier message a customer's message quotes, by the app's id of it, if the node has it
/// on this handle (the customer's own messages; replies carry no app id). A node that cannot
/// answer now loses only the quote, never the message.
pub async fn quoted_message<L: NodeLink>(
    bridge: &Bridge<L>,
    handle: &Handle,
    quoted: &ExternalId,
) -> Option<(ThreadId, EventId)> {
    match bridge.message_by_app_id(handle, quoted).await {
        Ok(found) => found,
        Err(err) => {
            tracing::warn!(cause = %err, "the quoted message could not be looked up");
            None
        }
    }
}

/// The thread a "continue on …" code leads to, if it links the handle (the node logs why not).
pub async fn continue_hint<L: NodeLink>(
    bridge: &Bridge<L>,
    handle: &Handle,
    code: &HandoffCode,
) -> Result<Option<ThreadHint>, WebhookRefusal> {
    let thread = WEBHOOK_BACKOFF
        .retry(|| bridge.link().continue_with(handle, code))
        .await;
    match thread {
        Ok(thread) => Ok(thread.map(ThreadHint::Thread)),
        Err(BridgeError::GaveUp { last, .. }) => Err(WebhookRefusal::Unavailable(last.to_string())),
        Err(err) => {
            tracing::warn!(cause = %err, "a continue-on code was refused");
            Ok(None)
        }
    }
}

/// Records `kind` on each reply to `handle` that `pick` chooses and that has no receipt as
/// good yet (a provider's report delivered twice records nothing new).
pub async fn record_receipt<L: NodeLink>(
    bridge: &Bridge<L>,
    handle: &Handle,
    pick: impl Fn(&crate::sdk::ConversationEntry) -> bool,
    kind: ReceiptKind,
    reason: Option<String>,
) -> Result<(), WebhookRefusal> {
    let entries = match WEBHOOK_BACKOFF
        .retry(|| bridge.link().conversation(handle))
        .await
    {
        Ok(entries) => entries,
        Err(BridgeError::GaveUp { last, .. }) => {
            return Err(WebhookRefusal::Unavailable(last.to_string()))
        }
        Err(err) => {
            tracing::warn!(cause = %err, "cannot read the conversation for a receipt");
            return Ok(());
        }
    };
    for entry in entries.iter().filter(|e| !e.inbound && pick(e)) {
        let better = match (entry.receipt, kind) {
            (None, _) => true,
            // A failure after a success is news; the thread keeps the best of them anyway.
            (Some(_), ReceiptKind::Failed) => false,
            (Some(had), new) => rank(new) > rank(had),
        };
        if better {
            let result = bridge
                .receipt(entry.thread, entry.event, entry.depth, kind, reason.clone())
                .await;
            outcome(result, "a receipt")?;
        }
    }
    Ok(())
}

fn rank(kind: ReceiptKind) -> u8 {
    match kind {
        ReceiptKind::Failed => 0,
        ReceiptKind::Delivered => 1,
        ReceiptKind::Read => 2,
    }
}

/// When the customer last wrote on `channel` in the delivery's thread.
pub async fn last_customer_message<L: NodeLink>(
    link: &L,
    delivery: &Delivery,
    channel: ChannelKind,
) -> Result<Option<Timestamp>, SendError> {
    let messages = link
        .thread_messages(delivery.thread)
        .await
        .map_err(|err| SendError::Retry(err.to_string()))?;
    Ok(messages
        .iter()
        .filter(|m| m.inbound && m.channel == Some(channel))
        .map(|m| m.at)
        .max())
}

/// An attachment's bytes from the node (not there yet: the delivery waits).
pub async fn attachment_bytes<L: NodeLink>(
    link: &L,
    file: &threadline_protocol::event::Attachment,
) -> Result<Vec<u8>, SendError> {
    match link.blob(file.blob).await {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => Err(SendError::NotReady(format!(
            "attachment {} is not on this node yet",
            file.name.as_str()
        ))),
        Err(err) => Err(SendError::NotReady(err.to_string())),
    }
}

/// The body of a file a bridge downloads from its app, at most [`MAX_BLOB_BYTES`]: what a
/// blob holds. The error says what went wrong.
///
/// [`MAX_BLOB_BYTES`]: threadline_protocol::limits::MAX_BLOB_BYTES
pub fn read_file(response: ureq::Response) -> Result<Vec<u8>, String> {
    use threadline_protocol::limits::MAX_BLOB_BYTES;
    let too_large = || format!("the file is larger than {MAX_BLOB_BYTES} bytes");
    // Refused on its announced length before any of it is read.
    if response
        .header("Content-Length")
        .and_then(|length| length.parse::<u64>().ok())
        .is_some_and(|length| length > MAX_BLOB_BYTES)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(response.into_reader(), MAX_BLOB_BYTES + 1),
        &mut bytes,
    )
    .map_err(|err| format!("download cut short: {err}"))?;
    if bytes.len() as u64 > MAX_BLOB_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// `text` in parts of at most `max` characters, cut at a line or word break where one is near;
/// none for an empty text.
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if rest.chars().count() <= max {
            parts.push(rest.to_owned());
            break;
        }
        let hard = rest
            .char_indices()
            .nth(max)
            .map_or(rest.len(), |(index, _)| index);
        let cut = rest[..hard]
            .rfind('\n')
            .or_else(|| rest[..hard].rfind(' '))
            .filter(|&at| at > hard / 2)
            .unwrap_or(hard);
        parts.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_replies_are_split_at_breaks_and_nothing_is_lost() {
        assert!(split_text("  ", 10).is_empty());
        assert_eq!(split_text("short", 10), vec!["short"]);
        let parts = split_text("one two three four five", 10);
        assert_eq!(parts, vec!["one two", "three four", "five"]);
        let long = "é".repeat(25);
        let parts = split_text(&long, 10);
        assert_eq!(parts.concat(), long);
        assert!(parts.iter().all(|p| p.chars().count() <= 10));
    }

    /// The regression vector of issue 15 (a WhatsApp delivery with no entries).
    const SECRET: &str = "test_app_secret";
    const BODY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[]}"#;
    const SIGNATURE: &str =
        "sha256=dec6a680679a968e7e0319355b23599cbfc54502c0784668e9618baa0c633756";

    #[test]
    fn the_published_vector_verifies_and_one_changed_byte_does_not() {
        let secret = AppSecret::new(SECRET).expect("a secret");
        assert_eq!(secret.hub_signature(BODY), SIGNATURE);
        assert_eq!(
            secret.verify_hub_signature(Some(SIGNATURE.as_bytes()), BODY),
            Ok(())
        );
        for n in 0..BODY.len() {
            let mut changed = BODY.to_vec();
            changed[n] ^= 1;
            assert_eq!(
                secret.verify_hub_signature(Some(SIGNATURE.as_bytes()), &changed),
                Err(SignatureError::Mismatch),
                "byte {n} changed"
            );
        }
        assert_eq!(
            AppSecret::new("another_secret")
                .expect("a secret")
                .verify_hub_signature(Some(SIGNATURE.as_bytes()), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_and_malformed_signatures_are_401_and_wrong_ones_403() {
        let secret = AppSecret::new(SECRET).expect("a secret");
        let missing = secret
            .verify_hub_signature(None, BODY)
            .expect_err("unsigned");
        assert_eq!(missing.status(), 401);
        for header in [
            "",
            "sha256=",
            "sha1=dec6a680679a968e7e0319355b23599cbfc54502",
            "dec6a680679a968e7e0319355b23599cbfc54502c0784668e9618baa0c633756",
            "sha256=dec6a680679a968e7e0319355b23599cbfc54502c0784668e9618baa0c63375",
            "sha256=zec6a680679a968e7e0319355b23599cbfc54502c0784668e9618baa0c633756",
            "sha256=dec6a680679a968e7e0319355b23599cbfc54502c0784668e9618baa0c633756 ",
        ] {
            let refused = secret
                .verify_hub_signature(Some(header.as_bytes()), BODY)
                .expect_err(header);
            assert_eq!(refused.status(), 401, "{header:?}: {refused}");
        }
        let wrong = SIGNATURE.replace("dec6", "dec7");
        let refused = secret
            .verify_hub_signature(Some(wrong.as_bytes()), BODY)
            .expect_err("wrong");
        assert_eq!(refused.status(), 403);
        assert_eq!(format!("{secret:?}"), "AppSecret(…)");
        assert!(
            AppSecret::new("").is_err(),
            "an empty secret would accept anything"
        );
    }

    #[test]
    fn the_handshake_echoes_the_challenge_only_for_the_right_token() {
        let ok = subscription_challenge(
            Some("subscribe"),
            Some("my-verify-token"),
            Some("1158201444"),
            "my-verify-token",
        );
        assert_eq!(ok, Ok("1158201444"));
        assert_eq!(
            subscription_challenge(
                Some("subscribe"),
                Some("nope"),
                Some("1"),
                "my-verify-token"
            ),
            Err(HandshakeError::WrongToken)
        );
        assert_eq!(
            subscription_challenge(Some("subscribe"), None, Some("1"), "my-verify-token"),
            Err(HandshakeError::WrongToken)
        );
        assert_eq!(
            subscription_challenge(
                Some("unsubscribe"),
                Some("my-verify-token"),
                Some("1"),
                "my-verify-token"
            ),
            Err(HandshakeError::NotSubscribe)
        );
        for challenge in [None, Some(""), Some("<script>"), Some("a b")] {
            assert_eq!(
                subscription_challenge(
                    Some("subscribe"),
                    Some("my-verify-token"),
                    challenge,
                    "my-verify-token"
                ),
                Err(HandshakeError::BadChallenge),
                "{challenge:?}"
            );
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
