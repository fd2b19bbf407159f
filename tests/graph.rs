//! A local stand-in for the parts of Meta's Graph API (v21.0) that the Messenger, Instagram and
//! WhatsApp bridges use, for end-to-end tests: no Meta server can be reached from here. It
//! answers what Meta documents (requests, answers and error bodies), not shapes of its own.
//!
//! [`GraphStandin`] is an HTTP server on a free loopback port, on its own thread and tokio
//! runtime; its API is synchronous, like the tests. It serves:
//!
//! - `POST /{version}/{page-or-ig-id}/messages` and `POST /{version}/me/messages`: the Messenger
//!   and Instagram Send API (a JSON body, form fields, or `multipart/form-data` with a
//!   `filedata` file for an attachment upload), including `sender_action`;
//! - `POST /{version}/{phone-number-id}/messages` with `messaging_product: "whatsapp"`: the
//!   WhatsApp Cloud API's messages (and marking a message read with `status: "read"`);
//! - `POST /{version}/{phone-number-id}/media`: a WhatsApp media upload;
//! - `GET` and `DELETE /{version}/{media-id}`, and the media's download URL (token required,
//!   as on `lookaside.fbsbx.com`);
//! - CDN-like file URLs such as Messenger and Instagram webhooks carry (no token).
//!
//! Every Graph request must carry the access token (the query's `access_token`, a form field, or
//! `Authorization: Bearer`/`OAuth`). Every error is Graph's body, `{"error": {"message", "type",
//! "code", "error_subcode"?, "error_data"?, "fbtrace_id"}}`, with the HTTP status Graph uses.
//! A test can rate-limit the next sends ([`GraphStandin::rate_limit_next`]), close a
//! recipient's 24-hour window ([`GraphStandin::close_messenger_window`]), and read back every
//! accepted send ([`GraphStandin::sent`]) and every request ([`GraphStandin::requests`]).
//!
//! [`samples`] builds webhook deliveries from Meta's documented samples, and [`hub_signature`],
//! [`deliver_webhook`] and [`deliver_webhook_signed`] sign and post them as Meta does.
//!
//! # Sources
//!
//! - Send API: <https://developers.facebook.com/docs/messenger-platform/reference/send-api/>,
//!   its errors: <https://developers.facebook.com/docs/messenger-platform/reference/send-api/error-codes>
//!   and <https://developers.facebook.com/docs/messenger-platform/error-codes>.
//! - Graph errors: <https://developers.facebook.com/docs/graph-api/guides/error-handling>.
//! - Cloud API messages: <https://developers.facebook.com/documentation/business-messaging/whatsapp/messages/send-messages/>,
//!   media: <https://developers.facebook.com/documentation/business-messaging/whatsapp/reference/media/media-api>,
//!   errors (codes, titles, HTTP statuses): <https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes>.
//! - Webhooks: <https://developers.facebook.com/docs/messenger-platform/reference/webhook-events/>
//!   (`messages`, `message_deliveries`, `message_reads`, `message_echoes`,
//!   `messaging_referrals`, `messaging_postbacks`), Instagram's messaging webhooks, and
//!   WhatsApp's <https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/>
//!   (text, image, status).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State as AxumState};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Router;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

/// Which of Meta's apps a send was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    /// A Facebook Page's Send API (any sender id not registered as an Instagram account).
    Messenger,
    /// An Instagram professional account (registered with
    /// [`GraphStandin::register_instagram_account`]).
    Instagram,
    /// The WhatsApp Cloud API (`messaging_product: "whatsapp"`).
    Whatsapp,
}

/// A send the stand-in accepted.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The app it was for.
    pub app: App,
    /// The page id, Instagram account id or phone-number id from the path (`me` resolved with
    /// [`GraphStandin::set_me`], else `"me"`).
    pub sender_id: String,
    /// The PSID or IGSID (`recipient.id`), or for WhatsApp the `to` number's digits (its wa_id).
    pub recipient: String,
    /// The request's parameters as one JSON object: the JSON body as sent, or the form or
    /// multipart fields (`recipient` and `message` parsed from their JSON text). Never the token.
    pub body: Value,
    /// Files of a multipart request, `(content type, bytes)`, in order (Messenger's `filedata`).
    pub files: Vec<(String, Vec<u8>)>,
    /// The message id the stand-in answered: `m_…` (Messenger), `aWdfZ…` (Instagram, whose ids
    /// are base64 of `ig_…`), `wamid.HBg…` (WhatsApp).
    pub message_id: String,
}

/// A request the stand-in received, whatever it answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, such as `/v21.0/106540352242922/messages`.
    pub path: String,
    /// The raw query string, without the `?` (empty if none).
    pub query: String,
    /// Every header but `Authorization`, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The HTTP status the stand-in answered.
    pub status: u16,
}

/// The stand-in's server; it stops when dropped.
pub struct GraphStandin {
    base: String,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    server: Option<std::thread::JoinHandle<()>>,
}

/// The largest request body read: WhatsApp's largest media (documents) are 100 MB, plus room for
/// the multipart framing. Larger bodies get axum's plain 413, not a Graph error.
const MAX_BODY_BYTES: usize = 101 << 20;

/// How long open connections get to finish once the stand-in is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The Send API's limit on `message.text` (characters).
const MESSENGER_TEXT_LIMIT: usize = 2000;

/// The Cloud API's limit on `text.body` (characters).
const WHATSAPP_TEXT_LIMIT: usize = 4096;

/// The Cloud API's limit on `biz_opaque_callback_data` (characters).
const CALLBACK_DATA_LIMIT: usize = 512;

/// Where WhatsApp media is downloaded from (`https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=…`).
const MEDIA_DOWNLOAD_PATH: &str = "/whatsapp_business/attachments/";

/// Where Messenger and Instagram files are served from (`https://scontent.xx.fbcdn.net/v/…`).
const CDN_PREFIX: &str = "/cdn/v/t1.15752-9/";

impl GraphStandin {
    /// Starts it on a free loopback port; Graph requests must carry `access_token` (query
    /// `access_token=`, a form field, or `Authorization: Bearer`), else Graph's code-104 (none)
    /// or code-190 (another) error.
    pub fn start(access_token: &str) -> GraphStandin {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port for Graph");
        listener
            .set_nonblocking(true)
            .expect("the listener can be non-blocking, as tokio needs");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let base = format!("http://{address}");
        let shared = Arc::new(Shared {
            access_token: access_token.to_owned(),
            base: base.clone(),
            state: Mutex::new(State::default()),
        });
        let app = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server = std::thread::Builder::new()
            .name("graph-standin".to_owned())
            .spawn(move || serve(listener, app, stopped))
            .expect("the stand-in's thread starts");
        GraphStandin {
            base,
            shared,
            stop,
            server: Some(server),
        }
    }

    /// `http://127.0.0.1:PORT`: a bridge's Graph base URL; paths start with a version such as
    /// `v21.0` (any `v<digits>.<digits>`).
    pub fn base_url(&self) -> String {
        self.base.clone()
    }

    /// Every send the stand-in accepted, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.shared.lock().sent.clone()
    }

    /// Waits (polling, up to `within`) until at least `n` sends were accepted, and returns them
    /// all. Panics on timeout, with the requests received so far.
    pub fn wait_for_sent(&self, n: usize, within: Duration) -> Vec<Sent> {
        let deadline = Instant::now() + within;
        loop {
            let sent = self.sent();
            if sent.len() >= n {
                return sent;
            }
            if Instant::now() >= deadline {
                let requests: Vec<String> = self
                    .requests()
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {} -> {}: {}",
                            r.method,
                            r.path,
                            r.status,
                            String::from_utf8_lossy(&r.body[..r.body.len().min(300)])
                        )
                    })
                    .collect();
                let sent: Vec<String> = sent
                    .iter()
                    .map(|s| format!("{:?} {} -> {}: {}", s.app, s.sender_id, s.recipient, s.body))
                    .collect();
                panic!(
                    "Graph stand-in: waited {within:?} for {n} sends, got {}:\n{}\nrequests:\n{}",
                    sent.len(),
                    sent.join("\n"),
                    requests.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every request received, refused ones included, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// Stores `bytes` as WhatsApp media (as if a customer had sent them) and returns its media
    /// id. `GET /{version}/{media-id}` then answers `{"messaging_product", "url", "mime_type",
    /// "sha256" (hex), "file_size", "id"}`, and the `url` answers the bytes to the token.
    pub fn add_whatsapp_media(&self, bytes: &[u8], mime_type: &str) -> String {
        self.shared
            .lock()
            .store_media(bytes.to_vec(), mime_type, None)
    }

    /// WhatsApp media by id, as uploaded or added: `(bytes, mime type)`.
    pub fn whatsapp_media(&self, media_id: &str) -> Option<(Vec<u8>, String)> {
        self.shared
            .lock()
            .media
            .get(media_id)
            .map(|media| (media.bytes.clone(), media.mime_type.clone()))
    }

    /// Stores `bytes` and returns a URL on the stand-in serving them with `mime_type` and no
    /// token, as Meta's CDN URLs in Messenger and Instagram webhooks do.
    pub fn add_cdn_file(&self, bytes: &[u8], mime_type: &str) -> String {
        let name = format!("{}_{}_n", random_digits(15), random_digits(17));
        let extension = match mime_type {
            "image/png" => ".png",
            "image/jpeg" => ".jpg",
            "image/gif" => ".gif",
            "video/mp4" => ".mp4",
            "audio/mpeg" => ".mp3",
            "application/pdf" => ".pdf",
            _ => "",
        };
        let file = format!("{name}{extension}");
        let url = format!(
            "{}{CDN_PREFIX}{file}?_nc_cat=1&_nc_sid=b5f5d1&oh=00_{}&oe={:X}",
            self.base,
            random_string(URL_SAFE, 40),
            unix_seconds() + 3 * 86_400
        );
        self.shared.lock().cdn.insert(
            file,
            StoredFile {
                bytes: bytes.to_vec(),
                mime_type: mime_type.to_owned(),
            },
        );
        url
    }

    /// Makes `id` an Instagram account: sends from it are [`App::Instagram`]. Every other
    /// sender id is a Facebook Page.
    pub fn register_instagram_account(&self, id: &str) {
        self.shared.lock().instagram_accounts.insert(id.to_owned());
    }

    /// What `me` in `/{version}/me/messages` stands for: the page or Instagram account the
    /// token belongs to. Until set, such sends have the sender id `"me"` (a Page).
    pub fn set_me(&self, id: &str) {
        self.shared.lock().me = Some(id.to_owned());
    }

    /// From now on, Messenger and Instagram sends to `recipient` (a PSID or IGSID) answer the
    /// documented window error (HTTP 400, code 10, subcode 2018278), unless they are
    /// `messaging_type: MESSAGE_TAG` with `tag: HUMAN_AGENT`.
    pub fn close_messenger_window(&self, recipient: &str) {
        self.shared
            .lock()
            .closed_windows
            .insert(recipient.to_owned());
    }

    /// Gives the Messenger customer `psid` a profile (`first_name`, `last_name`, `profile_pic`)
    /// for the User Profile API, `GET /{PSID}?fields=…`.
    pub fn add_messenger_profile(&self, psid: &str, first_name: &str, last_name: &str) {
        let profile = json!({
            "first_name": first_name,
            "last_name": last_name,
            "profile_pic": format!("{}{CDN_PREFIX}{psid}.jpg", self.base),
        });
        self.add_profile(psid, profile);
    }

    /// Gives the Instagram customer `igsid` a profile (`name`, `username`, `profile_pic`) for
    /// Instagram's User Profile API, `GET /{IGSID}?fields=…`.
    pub fn add_instagram_profile(&self, igsid: &str, name: &str, username: &str) {
        let profile = json!({
            "name": name,
            "username": username,
            "profile_pic": format!("{}{CDN_PREFIX}{igsid}.jpg", self.base),
        });
        self.add_profile(igsid, profile);
    }

    fn add_profile(&self, id: &str, profile: Value) {
        if let Value::Object(fields) = profile {
            self.shared.lock().profiles.insert(id.to_owned(), fields);
        }
    }

    /// Approves a WhatsApp message template `name` in `language` whose body has `placeholders`
    /// variables (`{{1}}` …). A template message naming any other gets Meta's 132001 (HTTP 404),
    /// one with another number of body values 132000.
    pub fn approve_whatsapp_template(&self, name: &str, language: &str, placeholders: usize) {
        self.shared
            .lock()
            .templates
            .insert((name.to_owned(), language.to_owned()), placeholders);
    }

    /// Undoes [`GraphStandin::close_messenger_window`] (the customer wrote again).
    pub fn open_messenger_window(&self, recipient: &str) {
        self.shared.lock().closed_windows.remove(recipient);
    }

    /// The next `n` sends (any app) answer the documented rate-limit error, HTTP 400: Messenger
    /// and Instagram code 613, WhatsApp code 130429 (`Rate limit hit`). Uploads, sender actions
    /// and marking read are not sends.
    pub fn rate_limit_next(&self, n: usize) {
        self.shared.lock().rate_limited += n;
    }
}

impl std::fmt::Debug for GraphStandin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphStandin")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Drop for GraphStandin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// `sha256=<hex HMAC-SHA256(app_secret, body)>`, the `X-Hub-Signature-256` Meta sends,
/// computed here with the hmac and sha2 crates (independently of Threadline's code).
pub fn hub_signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs `body` to `url` as Meta delivers a webhook (`Content-Type: application/json`, a
/// correct `X-Hub-Signature-256`); returns the status and the answer's text, whatever the
/// status. Panics only if no HTTP answer came.
pub fn deliver_webhook(url: &str, app_secret: &str, body: &[u8]) -> (u16, String) {
    deliver_webhook_signed(url, Some(&hub_signature(app_secret, body)), body)
}

/// [`deliver_webhook`] with `signature` as the `X-Hub-Signature-256` header (`None`: no header).
pub fn deliver_webhook_signed(url: &str, signature: Option<&str>, body: &[u8]) -> (u16, String) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut request = agent
        .post(url)
        .set("Content-Type", "application/json")
        .set("User-Agent", "facebookexternalua");
    if let Some(signature) = signature {
        request = request.set("X-Hub-Signature-256", signature);
    }
    let response = match request.send_bytes(body) {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("delivering a webhook to {url} got no HTTP answer: {err}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    (status, text)
}

/// Webhook deliveries built from Meta's documented samples: the same field names, nesting and
/// types (Messenger and Instagram `timestamp`s are numbers of milliseconds; WhatsApp's are
/// strings of Unix seconds), with the ids given. Deliveries are unsigned JSON values; sign and
/// post them with [`deliver_webhook`](super::deliver_webhook).
pub mod samples {
    use serde_json::{json, Value};
    use sha2::{Digest as _, Sha256};

    /// The WhatsApp Business Account id in WhatsApp deliveries' `entry[].id` (the value in Meta's
    /// examples).
    pub const WHATSAPP_BUSINESS_ACCOUNT_ID: &str = "102290129340398";

    /// The `app_id` of the app that sent an echoed message (the value in Meta's example).
    pub const ECHO_APP_ID: u64 = 1_517_776_481_860_111;

    /// The `errors[].href` of WhatsApp statuses (as Meta sends it).
    pub const WHATSAPP_ERROR_CODES_URL: &str =
        "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/";

    /// A failed WhatsApp status's error for a free-form message outside the 24-hour window
    /// (`code`, `title`, `details`), for [`whatsapp_status`]. The Cloud API accepts such a send
    /// and reports this afterwards, by webhook.
    pub const RE_ENGAGEMENT: (i64, &str, &str) = (
        131_047,
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
    );

    /// A customer's text to a Page (`messages`).
    pub fn messenger_text(
        page_id: &str,
        psid: &str,
        mid: &str,
        text: &str,
        timestamp_ms: u64,
    ) -> Value {
        from_customer(
            "page",
            page_id,
            psid,
            timestamp_ms,
            "message",
            json!({"mid": mid, "text": text}),
        )
    }

    /// A customer's text with the `ref` of the m.me link that opened the conversation, as
    /// `message.referral` (`source: "SHORTLINK"`, `type: "OPEN_THREAD"`). Meta documents this
    /// `referral` object on `messaging_referrals` (an existing thread, [`messenger_referral`])
    /// and on the Get Started postback (a new thread, [`messenger_get_started`]).
    pub fn messenger_text_with_ref(
        page_id: &str,
        psid: &str,
        mid: &str,
        text: &str,
        referral_ref: &str,
        timestamp_ms: u64,
    ) -> Value {
        from_customer(
            "page",
            page_id,
            psid,
            timestamp_ms,
            "message",
            json!({"mid": mid, "text": text, "referral": shortlink(referral_ref)}),
        )
    }

    /// An m.me link with `ref` opened in an existing conversation (`messaging_referrals`).
    pub fn messenger_referral(
        page_id: &str,
        psid: &str,
        referral_ref: &str,
        timestamp_ms: u64,
    ) -> Value {
        from_customer(
            "page",
            page_id,
            psid,
            timestamp_ms,
            "referral",
            shortlink(referral_ref),
        )
    }

    /// The Get Started button in a new conversation (`messaging_postbacks`), with the m.me
    /// link's `ref` if it came from one.
    pub fn messenger_get_started(
        page_id: &str,
        psid: &str,
        mid: &str,
        payload: &str,
        referral_ref: Option<&str>,
        timestamp_ms: u64,
    ) -> Value {
        let mut postback = json!({"mid": mid, "title": "Get Started", "payload": payload});
        if let Some(referral_ref) = referral_ref {
            postback["referral"] = shortlink(referral_ref);
        }
        from_customer("page", page_id, psid, timestamp_ms, "postback", postback)
    }

    /// A customer's image (`messages` with `attachments[{type: "image", payload: {url}}]`).
    pub fn messenger_image(
        page_id: &str,
        psid: &str,
        mid: &str,
        url: &str,
        timestamp_ms: u64,
    ) -> Value {
        from_customer(
            "page",
            page_id,
            psid,
            timestamp_ms,
            "message",
            json!({
                "mid": mid,
                "attachments": [{"type": "image", "payload": {"url": url}}],
            }),
        )
    }

    /// The Page's messages up to `watermark_ms` (and those in `mids`) were delivered
    /// (`message_deliveries`). As in Meta's sample, the event has no `timestamp` of its own,
    /// and `mids` is left out when empty ("may not be present").
    pub fn messenger_delivery(
        page_id: &str,
        psid: &str,
        mids: &[&str],
        watermark_ms: u64,
    ) -> Value {
        let mut delivery = json!({"watermark": watermark_ms});
        if !mids.is_empty() {
            delivery["mids"] = json!(mids);
        }
        page(
            "page",
            page_id,
            watermark_ms,
            json!({
                "sender": {"id": psid},
                "recipient": {"id": page_id},
                "delivery": delivery,
            }),
        )
    }

    /// The customer read the Page's messages up to `watermark_ms` (`message_reads`; the event's
    /// `timestamp` is the watermark).
    pub fn messenger_read(page_id: &str, psid: &str, watermark_ms: u64) -> Value {
        from_customer(
            "page",
            page_id,
            psid,
            watermark_ms,
            "read",
            json!({"watermark": watermark_ms}),
        )
    }

    /// The echo of a message the Page sent (`message_echoes`: `is_echo: true`, the sender is
    /// the Page).
    pub fn messenger_echo(
        page_id: &str,
        psid: &str,
        mid: &str,
        text: &str,
        timestamp_ms: u64,
    ) -> Value {
        page(
            "page",
            page_id,
            timestamp_ms,
            json!({
                "sender": {"id": page_id},
                "recipient": {"id": psid},
                "timestamp": timestamp_ms,
                "message": {"is_echo": true, "app_id": ECHO_APP_ID, "mid": mid, "text": text},
            }),
        )
    }

    /// A customer's text to an Instagram account (`object: "instagram"`).
    pub fn instagram_text(
        ig_account_id: &str,
        igsid: &str,
        mid: &str,
        text: &str,
        timestamp_ms: u64,
    ) -> Value {
        from_customer(
            "instagram",
            ig_account_id,
            igsid,
            timestamp_ms,
            "message",
            json!({"mid": mid, "text": text}),
        )
    }

    /// A customer's WhatsApp text (`messages[{from, id, timestamp, type: "text", text{body}}]`
    /// with `contacts[{profile{name}, wa_id}]`).
    pub fn whatsapp_text(
        phone_number_id: &str,
        display_phone_number: &str,
        wa_id: &str,
        profile_name: &str,
        wamid: &str,
        text: &str,
        timestamp_s: u64,
    ) -> Value {
        whatsapp_message(
            phone_number_id,
            display_phone_number,
            wa_id,
            profile_name,
            json!({
                "from": wa_id,
                "id": wamid,
                "timestamp": timestamp_s.to_string(),
                "type": "text",
                "text": {"body": text},
            }),
        )
    }

    /// A customer's WhatsApp image (`type: "image"`, `image{caption?, mime_type, sha256, id}`).
    #[allow(clippy::too_many_arguments)]
    pub fn whatsapp_image(
        phone_number_id: &str,
        display_phone_number: &str,
        wa_id: &str,
        profile_name: &str,
        wamid: &str,
        media_id: &str,
        mime_type: &str,
        sha256_hex: &str,
        caption: Option<&str>,
        timestamp_s: u64,
    ) -> Value {
        let mut image = json!({"mime_type": mime_type, "sha256": sha256_hex, "id": media_id});
        if let Some(caption) = caption {
            image["caption"] = json!(caption);
        }
        whatsapp_message(
            phone_number_id,
            display_phone_number,
            wa_id,
            profile_name,
            json!({
                "from": wa_id,
                "id": wamid,
                "timestamp": timestamp_s.to_string(),
                "type": "image",
                "image": image,
            }),
        )
    }

    /// A status of a message the business sent (`statuses[{id, status, timestamp,
    /// recipient_id, biz_opaque_callback_data?, conversation?, pricing?, errors?}]`). `status`
    /// is `sent`, `delivered`, `read` or `failed`; `conversation` and `pricing` come with `sent`
    /// and `delivered`, as in v21.0; `error` (`code`, `title`, `details`) gives `errors[]`.
    #[allow(clippy::too_many_arguments)]
    pub fn whatsapp_status(
        phone_number_id: &str,
        display_phone_number: &str,
        wamid: &str,
        recipient_wa_id: &str,
        status: &str,
        timestamp_s: u64,
        biz_opaque_callback_data: Option<&str>,
        error: Option<(i64, &str, &str)>,
    ) -> Value {
        let mut entry = json!({
            "id": wamid,
            "status": status,
            "timestamp": timestamp_s.to_string(),
            "recipient_id": recipient_wa_id,
        });
        if let Some(data) = biz_opaque_callback_data {
            entry["biz_opaque_callback_data"] = json!(data);
        }
        if status == "sent" || status == "delivered" {
            // One conversation per business number and customer: the same id in every status.
            let conversation_id = hex::encode(Sha256::digest(
                format!("{phone_number_id}/{recipient_wa_id}").as_bytes(),
            ))[..32]
                .to_owned();
            let mut conversation = json!({"id": conversation_id, "origin": {"type": "service"}});
            if status == "sent" {
                conversation["expiration_timestamp"] = json!((timestamp_s + 86_400).to_string());
            }
            entry["conversation"] = conversation;
            entry["pricing"] =
                json!({"billable": true, "pricing_model": "CBP", "category": "service"});
        }
        if let Some((code, title, details)) = error {
            entry["errors"] = json!([{
                "code": code,
                "title": title,
                "message": title,
                "error_data": {"details": details},
                "href": WHATSAPP_ERROR_CODES_URL,
            }]);
        }
        whatsapp_value(
            phone_number_id,
            display_phone_number,
            json!({"statuses": [entry]}),
        )
    }

    /// Several deliveries of the same `object` as one: their `entry` lists concatenated, as
    /// Meta batches them. Panics if `deliveries` is empty or mixes objects.
    pub fn batch(deliveries: &[Value]) -> Value {
        let object = deliveries
            .first()
            .map(|first| first["object"].clone())
            .expect("a batch of at least one delivery");
        let mut entries = Vec::new();
        for delivery in deliveries {
            assert_eq!(delivery["object"], object, "a batch holds one object");
            entries.extend(
                delivery["entry"]
                    .as_array()
                    .expect("a delivery has an entry list")
                    .iter()
                    .cloned(),
            );
        }
        json!({"object": object, "entry": entries})
    }

    fn shortlink(referral_ref: &str) -> Value {
        json!({"ref": referral_ref, "source": "SHORTLINK", "type": "OPEN_THREAD"})
    }

    /// A Messenger or Instagram delivery of one `messaging` event.
    /// A delivery of one messaging event from `customer` to the account, at `timestamp_ms`,
    /// carrying `key: value` (`message`, `postback`, `referral`, `read`).
    fn from_customer(
        object: &str,
        account_id: &str,
        customer: &str,
        timestamp_ms: u64,
        key: &str,
        value: Value,
    ) -> Value {
        let mut event = json!({
            "sender": {"id": customer},
            "recipient": {"id": account_id},
            "timestamp": timestamp_ms,
        });
        event[key] = value;
        page(object, account_id, timestamp_ms, event)
    }

    fn page(object: &str, account_id: &str, time_ms: u64, messaging: Value) -> Value {
        json!({
            "object": object,
            "entry": [{"id": account_id, "time": time_ms, "messaging": [messaging]}],
        })
    }

    fn whatsapp_message(
        phone_number_id: &str,
        display_phone_number: &str,
        wa_id: &str,
        profile_name: &str,
        message: Value,
    ) -> Value {
        whatsapp_value(
            phone_number_id,
            display_phone_number,
            json!({
                "contacts": [{"profile": {"name": profile_name}, "wa_id": wa_id}],
                "messages": [message],
            }),
        )
    }

    /// A WhatsApp delivery of one `messages` change whose value holds `fields`.
    fn whatsapp_value(phone_number_id: &str, display_phone_number: &str, fields: Value) -> Value {
        let mut value = json!({
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": display_phone_number,
                "phone_number_id": phone_number_id,
            },
        });
        if let (Some(value), Some(fields)) = (value.as_object_mut(), fields.as_object()) {
            value.extend(fields.clone());
        }
        json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": WHATSAPP_BUSINESS_ACCOUNT_ID,
                "changes": [{"value": value, "field": "messages"}],
            }],
        })
    }
}

/// What the server's handler and the test's side share.
struct Shared {
    access_token: String,
    base: String,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take the server down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    sent: Vec<Sent>,
    requests: Vec<Recorded>,
    /// WhatsApp media by media id.
    media: HashMap<String, StoredMedia>,
    /// CDN files by file name.
    cdn: HashMap<String, StoredFile>,
    instagram_accounts: HashSet<String>,
    closed_windows: HashSet<String>,
    /// Customers' profiles by PSID or IGSID: their fields.
    profiles: HashMap<String, Map<String, Value>>,
    /// Approved WhatsApp templates: `(name, language code)` → placeholders in the body.
    templates: HashMap<(String, String), usize>,
    rate_limited: usize,
    me: Option<String>,
}

struct StoredMedia {
    bytes: Vec<u8>,
    mime_type: String,
    /// The `hash` in its download URL.
    url_hash: String,
    /// The phone-number id it was uploaded to, if any.
    phone_number_id: Option<String>,
}

struct StoredFile {
    bytes: Vec<u8>,
    mime_type: String,
}

impl State {
    fn store_media(
        &mut self,
        bytes: Vec<u8>,
        mime_type: &str,
        phone_number_id: Option<&str>,
    ) -> String {
        let id = random_digits(16);
        self.media.insert(
            id.clone(),
            StoredMedia {
                bytes,
                mime_type: mime_type.to_owned(),
                url_hash: random_string(URL_SAFE, 32),
                phone_number_id: phone_number_id.map(str::to_owned),
            },
        );
        id
    }

    /// Takes one of the rate-limited sends, if any is left.
    fn take_rate_limit(&mut self) -> bool {
        if self.rate_limited == 0 {
            return false;
        }
        self.rate_limited -= 1;
        true
    }
}

/// A stand-in's HTTP server on a free loopback port, on a thread of its own (the Telegram and
/// Slack stand-ins'); stopped on drop.
#[derive(Debug)]
pub(crate) struct StandinServer {
    /// `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    stop: tokio::sync::watch::Sender<bool>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl StandinServer {
    /// Serves the router `app` makes, given the server's base URL (for links it hands out).
    pub(crate) fn start(app: impl FnOnce(&str) -> Router) -> StandinServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.set_nonblocking(true).expect("non-blocking");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let app = app(&base);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server = std::thread::spawn(move || serve(listener, app, stopped));
        StandinServer {
            base,
            stop,
            server: Some(server),
        }
    }
}

impl Drop for StandinServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// Runs the server until `stopped` says so (or its sender is gone), then gives open connections
/// [`SHUTDOWN_GRACE`].
pub(crate) fn serve(
    listener: std::net::TcpListener,
    app: Router,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the stand-in");
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("tokio takes the bound listener");
        let mut graceful = stopped.clone();
        let mut grace = stopped;
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|stop| *stop).await;
        });
        tokio::select! {
            result = server => {
                if let Err(err) = result {
                    eprintln!("Graph stand-in: the server failed: {err}");
                }
            }
            () = async move {
                let _ = grace.wait_for(|stop| *stop).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {}
        }
    });
}

/// Every request: answered by [`route`], then recorded.
async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Request {
        method: &method,
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &headers,
        body: &body,
    };
    let answer = route(&shared, &request);
    let recorded = Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: headers
            .iter()
            .filter(|(name, _)| *name != axum::http::header::AUTHORIZATION)
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        status: answer.status,
    };
    shared.lock().requests.push(recorded);
    answer.into_response()
}

struct Request<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

impl Request<'_> {
    fn content_type(&self) -> &str {
        self.headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    /// The token of `Authorization: Bearer …` or `Authorization: OAuth …`.
    fn header_token(&self) -> Option<&str> {
        let value = self
            .headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let (scheme, token) = value.split_once(' ')?;
        (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
            .then(|| token.trim())
    }
}

/// An HTTP answer.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: u16, value: &Value) -> Answer {
        Answer {
            status,
            headers: vec![("content-type", "application/json; charset=UTF-8".to_owned())],
            body: value.to_string().into_bytes(),
        }
    }

    fn bytes(bytes: Vec<u8>, mime_type: &str) -> Answer {
        Answer {
            status: 200,
            headers: vec![
                ("content-type", mime_type.to_owned()),
                ("content-length", bytes.len().to_string()),
            ],
            body: bytes,
        }
    }

    fn empty(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn into_response(self) -> Response {
        let mut builder = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value.as_str());
        }
        builder
            .body(Body::from(self.body))
            .expect("the stand-in's statuses and headers are valid")
    }
}

/// A Graph error, answered as `{"error": {...}}`.
#[derive(Debug)]
struct GraphError {
    status: u16,
    message: String,
    kind: &'static str,
    code: i64,
    subcode: Option<i64>,
    /// WhatsApp's `{"messaging_product": "whatsapp", "details": …}` (boxed, as it is rare).
    error_data: Option<Box<Value>>,
    /// `WWW-Authenticate` (OAuth errors).
    authenticate: Option<Box<str>>,
}

impl GraphError {
    /// Graph's code-100 error for a Send API parameter: `(#100) <message>`.
    fn param(message: impl std::fmt::Display) -> GraphError {
        GraphError::oauth(400, 100, format!("(#100) {message}"))
    }

    fn oauth(status: u16, code: i64, message: String) -> GraphError {
        GraphError {
            status,
            message,
            kind: "OAuthException",
            code,
            subcode: None,
            error_data: None,
            authenticate: None,
        }
    }

    /// A Cloud API error: the code's title in `message` and what went wrong in
    /// `error_data.details`, as Meta's WhatsApp error syntax has it (no subcode since v16.0).
    fn whatsapp(code: i64, title: &str, details: impl Into<String>) -> GraphError {
        GraphError {
            error_data: Some(Box::new(
                json!({"messaging_product": "whatsapp", "details": details.into()}),
            )),
            ..GraphError::oauth(400, code, format!("(#{code}) {title}"))
        }
    }

    /// 131008: a required parameter is missing.
    fn whatsapp_missing(details: impl Into<String>) -> GraphError {
        GraphError::whatsapp(131_008, "Required parameter is missing", details)
    }

    /// 131009: a parameter's value is not valid.
    fn whatsapp_invalid(details: impl Into<String>) -> GraphError {
        GraphError::whatsapp(131_009, "Parameter value is not valid", details)
    }

    /// Graph's answer for a method a node does not have, or a node that does not exist.
    fn unsupported(method: &Method, id: &str) -> GraphError {
        GraphError {
            kind: "GraphMethodException",
            subcode: Some(33),
            ..GraphError::oauth(
                400,
                100,
                format!(
                    "Unsupported {} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api",
                    method.as_str().to_ascii_lowercase()
                ),
            )
        }
    }

    fn unknown_path(path: &str) -> GraphError {
        GraphError::oauth(400, 2500, format!("Unknown path components: {path}"))
    }

    fn answer(self) -> Answer {
        let mut error = Map::new();
        error.insert("message".to_owned(), json!(self.message));
        error.insert("type".to_owned(), json!(self.kind));
        error.insert("code".to_owned(), json!(self.code));
        if let Some(subcode) = self.subcode {
            error.insert("error_subcode".to_owned(), json!(subcode));
        }
        if let Some(data) = self.error_data {
            error.insert("error_data".to_owned(), *data);
        }
        error.insert("fbtrace_id".to_owned(), json!(random_string(URL_SAFE, 23)));
        let mut answer = Answer::json(self.status, &json!({ "error": error }));
        if let Some(value) = self.authenticate {
            answer.headers.push(("www-authenticate", value.into()));
        }
        answer
    }
}

/// A multipart part.
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) data: Vec<u8>,
}

fn route(shared: &Shared, request: &Request<'_>) -> Answer {
    if let Some(file) = request.path.strip_prefix(CDN_PREFIX) {
        return cdn_file(shared, request.method, file);
    }
    if request.path == MEDIA_DOWNLOAD_PATH {
        return media_download(shared, request);
    }
    let mut segments = request.path.split('/').filter(|s| !s.is_empty());
    if !segments.next().is_some_and(is_version) {
        return GraphError::unknown_path(request.path).answer();
    }
    let rest: Vec<&str> = segments.collect();
    let (mut params, files) = match read_params(request) {
        Ok(read) => read,
        Err(error) => return error.answer(),
    };
    let body_token = match params.remove("access_token") {
        Some(Value::String(token)) => Some(token),
        _ => None,
    };
    let whatsapp = match rest.as_slice() {
        [_, "media"] => true,
        [_, "messages"] => params.contains_key("messaging_product"),
        [id] => shared.lock().media.contains_key(*id),
        _ => false,
    };
    if let Err(error) = check_token(shared, request, body_token.as_deref(), whatsapp) {
        return error.answer();
    }
    let result = match (request.method, rest.as_slice()) {
        (&Method::POST, [node, "messages"]) if whatsapp => whatsapp_send(shared, node, params),
        (&Method::POST, [node, "messages"]) => messenger_send(shared, node, params, files),
        (&Method::POST, [node, "media"]) => whatsapp_upload(shared, node, &params, files),
        (&Method::GET, [id]) if shared.lock().profiles.contains_key(*id) => {
            profile(shared, id, params.get("fields"))
        }
        (&Method::GET, [id]) => media_lookup(shared, id, params.get("phone_number_id")),
        (&Method::DELETE, [id]) => media_delete(shared, id),
        (method, [id]) => Err(GraphError::unsupported(method, id)),
        (method, [id, "messages" | "media"]) => Err(GraphError::unsupported(method, id)),
        (_, [_, ..]) => Err(GraphError::unknown_path(request.path)),
        (method, []) => Err(GraphError::unsupported(method, "")),
    };
    result.unwrap_or_else(GraphError::answer)
}

/// `v<digits>.<digits>`, such as `v21.0`.
fn is_version(segment: &str) -> bool {
    segment.strip_prefix('v').is_some_and(|number| {
        number.split_once('.').is_some_and(|(major, minor)| {
            !major.is_empty()
                && !minor.is_empty()
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor.bytes().all(|b| b.is_ascii_digit())
        })
    })
}

/// The token must be given (104 if not) and be the right one (190 if not). Graph answers these
/// with HTTP 400; the Cloud API's error table gives them HTTP 401.
fn check_token(
    shared: &Shared,
    request: &Request<'_>,
    body_token: Option<&str>,
    whatsapp: bool,
) -> Result<(), GraphError> {
    let query_token = query_pairs(request.query)
        .into_iter()
        .find(|(name, _)| name == "access_token")
        .map(|(_, value)| value);
    let given = request
        .header_token()
        .map(str::to_owned)
        .or(query_token)
        .or_else(|| body_token.map(str::to_owned));
    let status = if whatsapp { 401 } else { 400 };
    match given {
        Some(token) if token == shared.access_token => Ok(()),
        Some(_) => {
            let message = "Invalid OAuth access token - Cannot parse access token";
            Err(GraphError {
                authenticate: Some(
                    format!("OAuth \"Facebook Platform\" \"invalid_token\" \"{message}\"").into(),
                ),
                ..GraphError::oauth(status, 190, message.to_owned())
            })
        }
        None => {
            let message = "An access token is required to request this resource.";
            Err(GraphError {
                authenticate: Some(
                    format!("OAuth \"Facebook Platform\" \"invalid_request\" \"{message}\"").into(),
                ),
                ..GraphError::oauth(status, 104, message.to_owned())
            })
        }
    }
}

/// The request's parameters (query, then a JSON, form or multipart body) and its files.
fn read_params(request: &Request<'_>) -> Result<(Map<String, Value>, Vec<Part>), GraphError> {
    let mut params = Map::new();
    for (name, value) in query_pairs(request.query) {
        params.insert(name, form_value(value));
    }
    let content_type = request.content_type().to_ascii_lowercase();
    let mut files = Vec::new();
    if request.body.is_empty() {
        // Parameters in the query only.
    } else if content_type.starts_with("application/json") {
        match serde_json::from_slice::<Value>(request.body) {
            Ok(Value::Object(body)) => params.extend(body),
            _ => {
                return Err(GraphError::param(
                    "Invalid parameter: the request body is not a JSON object",
                ))
            }
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let body = String::from_utf8_lossy(request.body);
        for (name, value) in query_pairs(&body) {
            params.insert(name, form_value(value));
        }
    } else if content_type.starts_with("multipart/form-data") {
        let parts = parse_multipart(request.content_type(), request.body)
            .ok_or_else(|| GraphError::param("Invalid parameter: malformed multipart body"))?;
        for part in parts {
            if part.filename.is_some() || part.content_type.is_some() {
                files.push(part);
            } else {
                let value = String::from_utf8_lossy(&part.data).into_owned();
                params.insert(part.name, form_value(value));
            }
        }
    }
    Ok((params, files))
}

/// A form value: JSON if it is a JSON object or array (`recipient`, `message`), else text.
fn form_value(value: String) -> Value {
    let trimmed = value.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(parsed) = serde_json::from_str(trimmed) {
            return parsed;
        }
    }
    Value::String(value)
}

/// `a=1&b=x%20y` as decoded pairs.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex_value = |byte: u8| char::from(byte).to_digit(16);
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        let escaped = match bytes.get(idx..idx + 3) {
            Some([b'%', high, low]) => hex_value(*high).zip(hex_value(*low)),
            _ => None,
        };
        match (bytes[idx], escaped) {
            (_, Some((high, low))) => {
                decoded.push(u8::try_from(high * 16 + low).expect("two hex digits are a byte"));
                idx += 3;
            }
            (b'+', None) => {
                decoded.push(b' ');
                idx += 1;
            }
            (byte, None) => {
                decoded.push(byte);
                idx += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// A `multipart/form-data` body (RFC 7578), or `None` if it is malformed.
pub(crate) fn parse_multipart(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    let boundary = content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.trim().split_once('=')?;
        name.eq_ignore_ascii_case("boundary")
            .then(|| value.trim_matches('"').to_owned())
    })?;
    let delimiter = format!("--{boundary}").into_bytes();
    let next_delimiter = [b"\r\n".as_slice(), &delimiter].concat();
    let start = find(body, &delimiter)?;
    let mut rest = &body[start + delimiter.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        let content = &rest[head_end + 4..];
        let end = find(content, &next_delimiter)?;
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            data: content[..end].to_vec(),
        };
        for line in head.split("\r\n") {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("content-disposition") {
                for param in value.split(';').skip(1) {
                    if let Some((key, value)) = param.trim().split_once('=') {
                        let value = value.trim().trim_matches('"').to_owned();
                        match key.trim() {
                            "name" => part.name = value,
                            "filename" => part.filename = Some(value),
                            _ => {}
                        }
                    }
                }
            } else if name.trim().eq_ignore_ascii_case("content-type") {
                part.content_type = Some(value.trim().to_owned());
            }
        }
        parts.push(part);
        rest = &content[end + next_delimiter.len()..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The Send API (Messenger and Instagram).
fn messenger_send(
    shared: &Shared,
    node: &str,
    params: Map<String, Value>,
    files: Vec<Part>,
) -> Result<Answer, GraphError> {
    let mut state = shared.lock();
    let sender_id = if node == "me" {
        state.me.clone().unwrap_or_else(|| "me".to_owned())
    } else {
        node.to_owned()
    };
    let app = if state.instagram_accounts.contains(&sender_id) {
        App::Instagram
    } else {
        App::Messenger
    };
    let recipient = match params.get("recipient") {
        None => return Err(GraphError::param("The parameter recipient is required")),
        Some(recipient) => match &recipient["id"] {
            Value::String(id) if !id.is_empty() => id.clone(),
            Value::Number(id) => id.to_string(),
            _ => {
                return Err(GraphError::param(
                    "Param recipient[id] must be a valid ID string (e.g., \"123\")",
                ))
            }
        },
    };
    if let Some(action) = params.get("sender_action") {
        if params.contains_key("message") {
            return Err(GraphError::param(
                "Cannot send both message and state at the same time.",
            ));
        }
        return match action.as_str() {
            Some("typing_on" | "typing_off" | "mark_seen") => {
                Ok(Answer::json(200, &json!({ "recipient_id": recipient })))
            }
            _ => Err(GraphError::param(format!(
                "Param sender_action must be one of {{typing_on, typing_off, mark_seen}} - got {action}"
            ))),
        };
    }
    if state.take_rate_limit() {
        return Err(GraphError::oauth(
            400,
            613,
            "(#613) Calls to this api have exceeded the rate limit.".to_owned(),
        ));
    }
    let messaging_type = match params.get("messaging_type") {
        None => return Err(GraphError::param("The parameter messaging_type is required")),
        Some(value) => match value.as_str() {
            Some(kind @ ("RESPONSE" | "UPDATE" | "MESSAGE_TAG")) => kind,
            _ => {
                return Err(GraphError::param(format!(
                    "Param messaging_type must be one of {{RESPONSE, UPDATE, MESSAGE_TAG}} - got {value}"
                )))
            }
        },
    };
    let tag = params.get("tag").and_then(Value::as_str);
    if messaging_type == "MESSAGE_TAG" {
        match tag {
            None => return Err(GraphError::param("The parameter tag is required")),
            Some(
                "CONFIRMED_EVENT_UPDATE" | "POST_PURCHASE_UPDATE" | "ACCOUNT_UPDATE"
                | "HUMAN_AGENT" | "CUSTOMER_FEEDBACK",
            ) => {}
            Some(other) => {
                return Err(GraphError::param(format!(
                    "Param tag must be one of {{CONFIRMED_EVENT_UPDATE, POST_PURCHASE_UPDATE, ACCOUNT_UPDATE, HUMAN_AGENT, CUSTOMER_FEEDBACK}} - got \"{other}\""
                )))
            }
        }
    }
    let message = match params.get("message") {
        None => return Err(GraphError::param("The parameter message is required")),
        Some(Value::Object(message)) => message,
        Some(_) => return Err(GraphError::param("Param message must be a JSON object")),
    };
    let has_file = files.iter().any(|file| file.name == "filedata");
    let mut reusable = false;
    match (message.get("text"), message.get("attachment")) {
        (None, None) => {
            return Err(GraphError::param(
                "Message cannot be empty, must provide valid attachment or text",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(GraphError::param(
                "Only one of message[text] and message[attachment] may be given",
            ))
        }
        (Some(text), None) => {
            let Some(text) = text.as_str().filter(|text| !text.is_empty()) else {
                return Err(GraphError::param(
                    "Param message[text] must be a non-empty UTF-8 encoded string",
                ));
            };
            if text.chars().count() > MESSENGER_TEXT_LIMIT {
                return Err(GraphError::param(format!(
                    "Length of param message[text] must be less than or equal to {MESSENGER_TEXT_LIMIT}"
                )));
            }
            if has_file {
                return Err(GraphError::param(
                    "A filedata upload needs message[attachment]",
                ));
            }
        }
        (None, Some(attachment)) => {
            let kind = attachment["type"].as_str().unwrap_or("");
            if !matches!(kind, "image" | "audio" | "video" | "file" | "template") {
                return Err(GraphError::param(format!(
                    "Param message[attachment][type] must be one of {{image, audio, video, file, template}} - got \"{kind}\""
                )));
            }
            let payload = &attachment["payload"];
            if !payload.is_object() {
                return Err(GraphError::param(
                    "The parameter message[attachment][payload] is required",
                ));
            }
            reusable = payload["is_reusable"] == true;
            if kind != "template" {
                let sources = usize::from(payload["url"].is_string())
                    + usize::from(payload["attachment_id"].is_string())
                    + usize::from(has_file);
                if sources != 1 {
                    return Err(GraphError::param(
                        "An attachment needs exactly one of payload[url], payload[attachment_id] or a filedata upload",
                    ));
                }
                if let Some(url) = payload["url"].as_str() {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(GraphError::param(
                            "Param message[attachment][payload][url] must be a valid URL",
                        ));
                    }
                }
            }
        }
    }
    let human_agent = messaging_type == "MESSAGE_TAG" && tag == Some("HUMAN_AGENT");
    if state.closed_windows.contains(&recipient) && !human_agent {
        return Err(GraphError {
            subcode: Some(2_018_278),
            ..GraphError::oauth(
                400,
                10,
                "(#10) This message is sent outside of allowed window. Learn more about the new policy here: https://developers.facebook.com/docs/messenger-platform/policy-overview".to_owned(),
            )
        });
    }
    let message_id = match app {
        App::Instagram => format!(
            "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQx{}ZDZD",
            random_string(ALPHANUMERIC, 80)
        ),
        _ => format!("m_{}", random_string(URL_SAFE, 86)),
    };
    let mut answer = json!({"recipient_id": recipient, "message_id": message_id});
    if reusable {
        answer["attachment_id"] = json!(random_digits(16));
    }
    state.sent.push(Sent {
        app,
        sender_id,
        recipient,
        body: Value::Object(params),
        files: files
            .into_iter()
            .map(|file| {
                (
                    file.content_type
                        .unwrap_or_else(|| "application/octet-stream".to_owned()),
                    file.data,
                )
            })
            .collect(),
        message_id,
    });
    Ok(Answer::json(200, &answer))
}

/// The Cloud API's messages (and marking a message read).
fn whatsapp_send(
    shared: &Shared,
    node: &str,
    params: Map<String, Value>,
) -> Result<Answer, GraphError> {
    let mut state = shared.lock();
    if params["messaging_product"] != "whatsapp" {
        return Err(GraphError::whatsapp_invalid(format!(
            "Param messaging_product must be \"whatsapp\" - got {}",
            params["messaging_product"]
        )));
    }
    if let Some(status) = params.get("status") {
        if status != "read" {
            return Err(GraphError::whatsapp_invalid(format!(
                "Param status must be \"read\" - got {status}"
            )));
        }
        if !params.get("message_id").is_some_and(Value::is_string) {
            return Err(GraphError::whatsapp_missing(
                "The parameter message_id is required.",
            ));
        }
        return Ok(Answer::json(200, &json!({"success": true})));
    }
    if state.take_rate_limit() {
        return Err(GraphError::whatsapp(
            130_429,
            "Rate limit hit",
            "Cloud API message throughput has been reached.",
        ));
    }
    if let Some(kind) = params.get("recipient_type") {
        if kind != "individual" && kind != "group" {
            return Err(GraphError::whatsapp_invalid(format!(
                "Param recipient_type must be one of {{individual, group}} - got {kind}"
            )));
        }
    }
    let to = match params.get("to") {
        None => {
            return Err(GraphError::whatsapp_missing(
                "The parameter to is required.",
            ))
        }
        Some(to) => to
            .as_str()
            .ok_or_else(|| GraphError::whatsapp_invalid("Param to must be a string."))?,
    };
    let wa_id: String = to.chars().filter(char::is_ascii_digit).collect();
    if wa_id.is_empty() {
        return Err(GraphError::whatsapp_invalid(format!(
            "Param to must be a phone number - got \"{to}\""
        )));
    }
    let kind = match params.get("type") {
        None => "text",
        Some(kind) => kind
            .as_str()
            .ok_or_else(|| GraphError::whatsapp_invalid("Param type must be a string."))?,
    };
    match kind {
        "text" => {
            let body = params
                .get("text")
                .and_then(|text| text.get("body"))
                .ok_or_else(|| {
                    GraphError::whatsapp_missing("The parameter text['body'] is required.")
                })?;
            let Some(body) = body.as_str().filter(|body| !body.is_empty()) else {
                return Err(GraphError::whatsapp_invalid(
                    "Param text['body'] must be a non-empty string.",
                ));
            };
            if body.chars().count() > WHATSAPP_TEXT_LIMIT {
                return Err(GraphError::whatsapp_invalid(format!(
                    "Param text['body'] must be at most {WHATSAPP_TEXT_LIMIT} characters long."
                )));
            }
            if let Some(preview) = params["text"].get("preview_url") {
                if !preview.is_boolean() {
                    return Err(GraphError::whatsapp_invalid(
                        "Param text['preview_url'] must be a boolean.",
                    ));
                }
            }
        }
        "image" | "audio" | "video" | "document" | "sticker" => {
            let media = params.get(kind).ok_or_else(|| {
                GraphError::whatsapp_missing(format!("The parameter {kind} is required."))
            })?;
            match (media.get("id"), media.get("link")) {
                (None, None) => {
                    return Err(GraphError::whatsapp_missing(format!(
                        "Param {kind} must have either 'id' or 'link'."
                    )))
                }
                (Some(_), Some(_)) => {
                    return Err(GraphError::whatsapp_invalid(format!(
                        "Param {kind} must have only one of 'id' or 'link'."
                    )))
                }
                (Some(id), None) => {
                    if !id.as_str().is_some_and(|id| state.media.contains_key(id)) {
                        return Err(GraphError::whatsapp_invalid(format!(
                            "Param {kind}['id'] is not a valid media id - got {id}"
                        )));
                    }
                }
                (None, Some(link)) => {
                    if !link.as_str().is_some_and(|link| {
                        link.starts_with("https://") || link.starts_with("http://")
                    }) {
                        return Err(GraphError::whatsapp_invalid(format!(
                            "Param {kind}['link'] must be an http(s) URL - got {link}"
                        )));
                    }
                }
            }
        }
        "template" => {
            let template = params.get("template").ok_or_else(|| {
                GraphError::whatsapp_missing("The parameter template is required.")
            })?;
            if !template["name"].is_string() {
                return Err(GraphError::whatsapp_missing(
                    "The parameter template['name'] is required.",
                ));
            }
            if !template["language"]["code"].is_string() {
                return Err(GraphError::whatsapp_missing(
                    "The parameter template['language']['code'] is required.",
                ));
            }
            check_template(&state, template)?;
        }
        "reaction" => {
            let reaction = params.get("reaction").ok_or_else(|| {
                GraphError::whatsapp_missing("The parameter reaction is required.")
            })?;
            if !reaction["message_id"].is_string() || !reaction["emoji"].is_string() {
                return Err(GraphError::whatsapp_missing(
                    "The parameters reaction['message_id'] and reaction['emoji'] are required.",
                ));
            }
        }
        "interactive" | "location" | "contacts" => {
            if !params.get(kind).is_some_and(|v| v.is_object() || v.is_array()) {
                return Err(GraphError::whatsapp_missing(format!(
                    "The parameter {kind} is required."
                )));
            }
        }
        other => {
            return Err(GraphError::whatsapp(
                100,
                "Invalid parameter",
                format!(
                    "Param type must be one of {{audio, contacts, document, image, interactive, location, reaction, sticker, template, text, video}} - got \"{other}\"."
                ),
            ))
        }
    }
    if let Some(context) = params.get("context") {
        if !context["message_id"].is_string() {
            return Err(GraphError::whatsapp_missing(
                "The parameter context['message_id'] is required.",
            ));
        }
    }
    if let Some(data) = params.get("biz_opaque_callback_data") {
        if data
            .as_str()
            .is_none_or(|data| data.chars().count() > CALLBACK_DATA_LIMIT)
        {
            return Err(GraphError::whatsapp_invalid(format!(
                "Param biz_opaque_callback_data must be a string of at most {CALLBACK_DATA_LIMIT} characters."
            )));
        }
    }
    let message_id = format!("wamid.HBgL{}A=", random_string(ALPHANUMERIC, 46));
    let mut message = json!({ "id": message_id });
    if kind == "template" {
        message["message_status"] = json!("accepted");
    }
    let answer = json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": wa_id}],
        "messages": [message],
    });
    state.sent.push(Sent {
        app: App::Whatsapp,
        sender_id: node.to_owned(),
        recipient: wa_id,
        body: Value::Object(params),
        files: Vec::new(),
        message_id,
    });
    Ok(Answer::json(200, &answer))
}

/// A template message's template against the approved ones: 132001 (HTTP 404) for a name and
/// language that were never approved, 132000 when the body's values do not match its
/// placeholders, 131009 for a value that is not `{"type": "text", "text": "<non-empty>"}`.
fn check_template(state: &State, template: &Value) -> Result<(), GraphError> {
    let name = template["name"].as_str().unwrap_or_default();
    let language = template["language"]["code"].as_str().unwrap_or_default();
    let Some(&expected) = state.templates.get(&(name.to_owned(), language.to_owned())) else {
        return Err(GraphError {
            status: 404,
            ..GraphError::whatsapp(
                132_001,
                "Template name does not exist in the translation",
                format!("template name ({name}) does not exist in {language}"),
            )
        });
    };
    let mut values = Vec::new();
    if let Some(components) = template.get("components") {
        let Some(components) = components.as_array() else {
            return Err(GraphError::whatsapp_invalid(
                "Param template['components'] must be an array.",
            ));
        };
        for component in components.iter().filter(|c| c["type"] == "body") {
            values.extend(
                component["parameters"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    }
    if values.len() != expected {
        return Err(GraphError::whatsapp(
            132_000,
            "Number of parameters does not match the expected number of params",
            format!(
                "body: number of localizable_params ({}) does not match the expected number of params ({expected})",
                values.len()
            ),
        ));
    }
    for value in &values {
        if value["type"] != "text" || value["text"].as_str().is_none_or(str::is_empty) {
            return Err(GraphError::whatsapp_invalid(format!(
                "Param template['components'][0]['parameters'] must be text values - got {value}"
            )));
        }
    }
    Ok(())
}

/// `GET /{PSID or IGSID}?fields=a,b`: the asked fields of a customer's profile and its `id`
/// (`first_name,last_name,profile_pic` when none are asked); Graph's code-100 error for a field
/// the profile does not have.
fn profile(shared: &Shared, id: &str, fields: Option<&Value>) -> Result<Answer, GraphError> {
    let state = shared.lock();
    let stored = state
        .profiles
        .get(id)
        .ok_or_else(|| GraphError::unsupported(&Method::GET, id))?;
    let asked = fields
        .and_then(Value::as_str)
        .unwrap_or("first_name,last_name,profile_pic");
    let mut answer = Map::new();
    for field in asked.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let value = stored.get(field).ok_or_else(|| {
            GraphError::param(format!(
                "Tried accessing nonexisting field ({field}) on node type (User)"
            ))
        })?;
        answer.insert(field.to_owned(), value.clone());
    }
    answer.insert("id".to_owned(), json!(id));
    Ok(Answer::json(200, &Value::Object(answer)))
}

/// `POST /{phone-number-id}/media`: multipart `messaging_product`, `type` and `file`.
fn whatsapp_upload(
    shared: &Shared,
    node: &str,
    params: &Map<String, Value>,
    files: Vec<Part>,
) -> Result<Answer, GraphError> {
    match params.get("messaging_product") {
        None => {
            return Err(GraphError::whatsapp_missing(
                "The parameter messaging_product is required.",
            ))
        }
        Some(product) if product != "whatsapp" => {
            return Err(GraphError::whatsapp_invalid(format!(
                "Param messaging_product must be \"whatsapp\" - got {product}"
            )))
        }
        Some(_) => {}
    }
    let Some(file) = files.into_iter().find(|file| file.name == "file") else {
        return Err(GraphError::whatsapp_missing(
            "The parameter file is required.",
        ));
    };
    let Some(mime_type) = params.get("type").and_then(Value::as_str) else {
        return Err(GraphError::whatsapp_missing(
            "The parameter type is required.",
        ));
    };
    let id = shared.lock().store_media(file.data, mime_type, Some(node));
    Ok(Answer::json(200, &json!({ "id": id })))
}

/// `GET /{media-id}`: the media's URL and what it is. With `phone_number_id`, only media of
/// that number (media added by the test belong to every number).
fn media_lookup(
    shared: &Shared,
    id: &str,
    phone_number_id: Option<&Value>,
) -> Result<Answer, GraphError> {
    let state = shared.lock();
    let media = state
        .media
        .get(id)
        .filter(|media| match (phone_number_id, &media.phone_number_id) {
            (Some(asked), Some(owner)) => asked.as_str() == Some(owner.as_str()),
            _ => true,
        })
        .ok_or_else(|| GraphError::unsupported(&Method::GET, id))?;
    let url = format!(
        "{}{MEDIA_DOWNLOAD_PATH}?mid={id}&ext={}&hash={}",
        shared.base,
        unix_seconds(),
        media.url_hash
    );
    Ok(Answer::json(
        200,
        &json!({
            "messaging_product": "whatsapp",
            "url": url,
            "mime_type": media.mime_type,
            "sha256": hex::encode(Sha256::digest(&media.bytes)),
            // A string, as in Meta's documented example ("303833").
            "file_size": media.bytes.len().to_string(),
            "id": id,
        }),
    ))
}

/// `DELETE /{media-id}`.
fn media_delete(shared: &Shared, id: &str) -> Result<Answer, GraphError> {
    match shared.lock().media.remove(id) {
        Some(_) => Ok(Answer::json(200, &json!({"success": true}))),
        None => Err(GraphError::unsupported(&Method::DELETE, id)),
    }
}

/// A media URL: the bytes to a request with the token, 401 without it, 404 for an unknown URL.
fn media_download(shared: &Shared, request: &Request<'_>) -> Answer {
    if request.method != Method::GET {
        return Answer::empty(405);
    }
    if request.header_token() != Some(shared.access_token.as_str()) {
        return Answer::empty(401);
    }
    let params: HashMap<String, String> = query_pairs(request.query).into_iter().collect();
    let state = shared.lock();
    let found = params.get("mid").and_then(|id| state.media.get(id));
    match found {
        Some(media) if params.get("hash") == Some(&media.url_hash) => {
            Answer::bytes(media.bytes.clone(), &media.mime_type)
        }
        _ => Answer::empty(404),
    }
}

/// A CDN file: no token needed.
fn cdn_file(shared: &Shared, method: &Method, file: &str) -> Answer {
    if method != Method::GET {
        return Answer::empty(405);
    }
    match shared.lock().cdn.get(file) {
        Some(stored) => Answer::bytes(stored.bytes.clone(), &stored.mime_type),
        None => Answer::empty(404),
    }
}

const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Random enough for ids in tests (not for secrets): std's randomly keyed hasher over a
/// counter and the clock.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |now| now.as_nanos()),
    );
    hasher.finish()
}

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut text = String::with_capacity(len);
    let mut bits = 0;
    let mut pool = 0;
    for _ in 0..len {
        if bits < 8 {
            pool = random_u64();
            bits = 64;
        }
        let idx = usize::try_from(pool & 0xff).expect("a byte fits a usize") % alphabet.len();
        text.push(char::from(alphabet[idx]));
        pool >>= 8;
        bits -= 8;
    }
    text
}

/// `len` decimal digits, the first not zero (Graph ids are numbers).
fn random_digits(len: usize) -> String {
    let mut digits = random_string(b"0123456789", len);
    digits.replace_range(0..1, &random_string(b"123456789", 1));
    digits
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |now| now.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "EAAGm0PX4ZCpsBA-standin-test";
    const PHONE_ID: &str = "106540352242922";
    const PAGE: &str = "682498302938465";

    /// `(status, JSON answer)` of a POST with a JSON body and `token` as Bearer (if any).
    fn post(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = ureq::post(url);
        if let Some(token) = token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        read(request.send_json(body))
    }

    fn read(result: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
        let response = match result {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(err) => panic!("no answer: {err}"),
        };
        let status = response.status();
        let text = response.into_string().expect("a text answer");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn whatsapp_text(to: &str, body: &str) -> Value {
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": false, "body": body},
            "biz_opaque_callback_data": "event-1",
        })
    }

    /// The error's `(code, subcode)`, checking the documented error body around them.
    fn error_codes(answer: &Value) -> (i64, Option<i64>) {
        let error = &answer["error"];
        assert!(error["message"].is_string(), "{answer}");
        assert!(error["type"].is_string(), "{answer}");
        assert!(
            error["fbtrace_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{answer}"
        );
        (
            error["code"].as_i64().expect("a numeric code"),
            error["error_subcode"].as_i64(),
        )
    }

    #[test]
    fn a_whatsapp_text_is_accepted_recorded_and_answered_as_documented() {
        let graph = GraphStandin::start(TOKEN);
        let url = format!("{}/v21.0/{PHONE_ID}/messages", graph.base_url());
        let (status, answer) = post(&url, Some(TOKEN), &whatsapp_text("+49 151 1234 5678", "Hi"));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["messaging_product"], "whatsapp");
        assert_eq!(
            answer["contacts"],
            json!([{"input": "+49 151 1234 5678", "wa_id": "4915112345678"}])
        );
        let id = answer["messages"][0]["id"].as_str().expect("an id");
        assert!(id.starts_with("wamid.HBg"), "{id}");

        let sent = graph.wait_for_sent(1, Duration::from_secs(5));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].app, App::Whatsapp);
        assert_eq!(sent[0].sender_id, PHONE_ID);
        assert_eq!(sent[0].recipient, "4915112345678");
        assert_eq!(sent[0].message_id, id);
        assert_eq!(sent[0].body["text"]["body"], "Hi");
        let recorded = graph.requests();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].status, 200);
        assert!(recorded[0]
            .headers
            .iter()
            .all(|(name, _)| name != "authorization"));
    }

    #[test]
    fn a_wrong_or_missing_token_gets_graphs_oauth_errors_and_sends_nothing() {
        let graph = GraphStandin::start(TOKEN);
        let url = format!("{}/v21.0/{PHONE_ID}/messages", graph.base_url());
        let (status, answer) = post(&url, Some("EAAG-wrong"), &whatsapp_text("1555", "x"));
        assert_eq!(status, 401, "{answer}");
        assert_eq!(error_codes(&answer), (190, None));
        assert_eq!(answer["error"]["type"], "OAuthException");
        assert_eq!(
            answer["error"]["message"],
            "Invalid OAuth access token - Cannot parse access token"
        );
        let (status, answer) = post(&url, None, &whatsapp_text("1555", "x"));
        assert_eq!(status, 401, "{answer}");
        assert_eq!(error_codes(&answer), (104, None));
        // Messenger's Send API answers the same errors with HTTP 400.
        let messenger = format!("{}/v21.0/{PAGE}/messages", graph.base_url());
        let body = json!({"recipient": {"id": "1"}, "messaging_type": "RESPONSE", "message": {"text": "x"}});
        let (status, answer) = post(&messenger, Some("EAAG-wrong"), &body);
        assert_eq!((status, error_codes(&answer)), (400, (190, None)));
        // The token in the query works too.
        let (status, _) = post(&format!("{messenger}?access_token={TOKEN}"), None, &body);
        assert_eq!(status, 200);
        assert_eq!(graph.sent().len(), 1);
        let statuses: Vec<u16> = graph.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [401, 401, 400, 200]);
    }

    #[test]
    fn rate_limited_sends_get_each_apps_documented_error_then_pass() {
        let graph = GraphStandin::start(TOKEN);
        graph.rate_limit_next(2);
        let whatsapp = format!("{}/v21.0/{PHONE_ID}/messages", graph.base_url());
        let (status, answer) = post(&whatsapp, Some(TOKEN), &whatsapp_text("1555", "x"));
        assert_eq!((status, error_codes(&answer)), (400, (130_429, None)));
        assert_eq!(answer["error"]["message"], "(#130429) Rate limit hit");
        assert_eq!(
            answer["error"]["error_data"],
            json!({"messaging_product": "whatsapp", "details": "Cloud API message throughput has been reached."})
        );
        let messenger = format!("{}/v21.0/{PAGE}/messages", graph.base_url());
        let body = json!({"recipient": {"id": "7"}, "messaging_type": "RESPONSE", "message": {"text": "x"}});
        let (status, answer) = post(&messenger, Some(TOKEN), &body);
        assert_eq!((status, error_codes(&answer)), (400, (613, None)));
        assert!(graph.sent().is_empty());
        assert_eq!(post(&messenger, Some(TOKEN), &body).0, 200);
        assert_eq!(
            post(&whatsapp, Some(TOKEN), &whatsapp_text("1555", "x")).0,
            200
        );
        assert_eq!(graph.sent().len(), 2);
    }

    #[test]
    fn a_closed_window_refuses_all_but_the_human_agent_tag() {
        let graph = GraphStandin::start(TOKEN);
        graph.register_instagram_account("17841400000000001");
        graph.close_messenger_window("7");
        let messenger = format!("{}/v21.0/{PAGE}/messages", graph.base_url());
        let response = json!({"recipient": {"id": "7"}, "messaging_type": "RESPONSE", "message": {"text": "x"}});
        let (status, answer) = post(&messenger, Some(TOKEN), &response);
        assert_eq!((status, error_codes(&answer)), (400, (10, Some(2_018_278))));
        let tagged = json!({"recipient": {"id": "7"}, "messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT", "message": {"text": "x"}});
        let (status, answer) = post(&messenger, Some(TOKEN), &tagged);
        assert_eq!(status, 200, "{answer}");
        assert!(answer["message_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("m_")));
        assert_eq!(answer["recipient_id"], "7");
        let instagram = format!("{}/v21.0/17841400000000001/messages", graph.base_url());
        let (status, _) = post(&instagram, Some(TOKEN), &response);
        assert_eq!(status, 400);
        graph.open_messenger_window("7");
        assert_eq!(post(&instagram, Some(TOKEN), &response).0, 200);
        let apps: Vec<App> = graph.sent().iter().map(|sent| sent.app).collect();
        assert_eq!(apps, [App::Messenger, App::Instagram]);
    }

    #[test]
    fn bad_sends_get_the_parameter_errors() {
        let graph = GraphStandin::start(TOKEN);
        let messenger = format!("{}/v21.0/{PAGE}/messages", graph.base_url());
        let whatsapp = format!("{}/v21.0/{PHONE_ID}/messages", graph.base_url());
        let cases = [
            (
                &messenger,
                json!({"messaging_type": "RESPONSE", "message": {"text": "x"}}),
                100,
            ),
            (
                &messenger,
                json!({"recipient": {"id": "1"}, "messaging_type": "RESPONSE"}),
                100,
            ),
            (
                &messenger,
                json!({"recipient": {"id": "1"}, "messaging_type": "NOW", "message": {"text": "x"}}),
                100,
            ),
            (
                &messenger,
                json!({"recipient": {"id": "1"}, "messaging_type": "RESPONSE", "message": {"text": "x".repeat(2001)}}),
                100,
            ),
            (
                &whatsapp,
                json!({"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}}),
                131_008,
            ),
            (
                &whatsapp,
                json!({"messaging_product": "whatsapp", "to": "1555", "type": "image", "image": {"id": "404"}}),
                131_009,
            ),
            (
                &whatsapp,
                json!({"messaging_product": "whatsapp", "to": "1555", "type": "hologram"}),
                100,
            ),
        ];
        for (url, body, code) in cases {
            let (status, answer) = post(url, Some(TOKEN), &body);
            assert_eq!(
                (status, error_codes(&answer).0),
                (400, code),
                "{body} -> {answer}"
            );
        }
        assert!(graph.sent().is_empty());
    }

    #[test]
    fn whatsapp_media_is_uploaded_looked_up_and_downloaded_with_the_token_only() {
        let graph = GraphStandin::start(TOKEN);
        let boundary = "standin-boundary";
        let mut body = Vec::new();
        for (name, value) in [("messaging_product", "whatsapp"), ("type", "image/png")] {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
        );
        let png = b"\x89PNG\r\n\x1a\n--not-the-boundary\r\n".to_vec();
        body.extend_from_slice(&png);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let (status, uploaded) = read(
            ureq::post(&format!("{}/v21.0/{PHONE_ID}/media", graph.base_url()))
                .set("Authorization", &format!("Bearer {TOKEN}"))
                .set(
                    "Content-Type",
                    &format!("multipart/form-data; boundary={boundary}"),
                )
                .send_bytes(&body),
        );
        assert_eq!(status, 200, "{uploaded}");
        let id = uploaded["id"].as_str().expect("a media id");
        assert_eq!(
            graph.whatsapp_media(id),
            Some((png.clone(), "image/png".to_owned()))
        );

        let (status, lookup) = read(
            ureq::get(&format!("{}/v21.0/{id}", graph.base_url()))
                .set("Authorization", &format!("Bearer {TOKEN}"))
                .call(),
        );
        assert_eq!(status, 200, "{lookup}");
        assert_eq!(lookup["messaging_product"], "whatsapp");
        assert_eq!(lookup["mime_type"], "image/png");
        assert_eq!(lookup["sha256"], hex::encode(Sha256::digest(&png)));
        assert_eq!(lookup["file_size"], png.len().to_string());
        assert_eq!(lookup["id"], id);
        let media_url = lookup["url"].as_str().expect("a url");
        match ureq::get(media_url).call() {
            Err(ureq::Error::Status(401, _)) => {}
            other => panic!("a download without the token: {other:?}"),
        }
        let response = ureq::get(media_url)
            .set("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .expect("the download");
        assert_eq!(response.content_type(), "image/png");
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).expect("bytes");
        assert_eq!(bytes, png);

        // The CDN needs no token.
        let url = graph.add_cdn_file(b"%PDF-1.4", "application/pdf");
        let response = ureq::get(&url).call().expect("a CDN file");
        assert_eq!(response.content_type(), "application/pdf");
        // An unknown media id is Graph's unsupported-request error.
        let (status, answer) = read(
            ureq::get(&format!("{}/v21.0/999", graph.base_url()))
                .set("Authorization", &format!("Bearer {TOKEN}"))
                .call(),
        );
        assert_eq!((status, error_codes(&answer)), (400, (100, Some(33))));
    }

    #[test]
    fn a_messenger_upload_records_its_file() {
        let graph = GraphStandin::start(TOKEN);
        let boundary = "b0undary";
        let fields = [
            ("recipient", r#"{"id":"9"}"#),
            (
                "message",
                r#"{"attachment":{"type":"file","payload":{"is_reusable":true}}}"#,
            ),
            ("messaging_type", "RESPONSE"),
        ];
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
            );
        }
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"filedata\"; filename=\"a.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\r\n--{boundary}--\r\n").as_bytes(),
        );
        let (status, answer) = read(
            ureq::post(&format!("{}/v21.0/me/messages", graph.base_url()))
                .set("Authorization", &format!("OAuth {TOKEN}"))
                .set(
                    "Content-Type",
                    &format!("multipart/form-data; boundary={boundary}"),
                )
                .send_bytes(&body),
        );
        assert_eq!(status, 200, "{answer}");
        assert!(answer["attachment_id"].is_string(), "{answer}");
        let sent = graph.sent();
        assert_eq!(sent[0].sender_id, "me");
        assert_eq!(sent[0].recipient, "9");
        assert_eq!(sent[0].body["message"]["attachment"]["type"], "file");
        assert_eq!(
            sent[0].files,
            [("application/pdf".to_owned(), b"%PDF-1.4".to_vec())]
        );
    }

    #[test]
    fn webhooks_are_signed_as_meta_signs_them() {
        assert_eq!(
            hub_signature(
                "test_app_secret",
                br#"{"object":"whatsapp_business_account","entry":[]}"#
            ),
            "sha256=dec6a680679a968e7e0319355b23599cbfc54502c0784668e9618baa0c633756"
        );
        // Delivered to the stand-in (which has no webhook: a Graph error), to see the headers.
        let graph = GraphStandin::start(TOKEN);
        let body = samples::whatsapp_text(
            PHONE_ID,
            "15550783881",
            "16505551234",
            "Sheena",
            "wamid.X",
            "Hi",
            1_749_416_383,
        );
        let bytes = body.to_string().into_bytes();
        let (status, _) = deliver_webhook(&format!("{}/hook", graph.base_url()), "s3cret", &bytes);
        assert_eq!(status, 400);
        let (status, _) =
            deliver_webhook_signed(&format!("{}/hook", graph.base_url()), None, &bytes);
        assert_eq!(status, 400);
        let requests = graph.requests();
        let signature = |r: &Recorded| {
            r.headers
                .iter()
                .find(|(name, _)| name == "x-hub-signature-256")
                .map(|(_, value)| value.clone())
        };
        assert_eq!(
            signature(&requests[0]),
            Some(hub_signature("s3cret", &bytes))
        );
        assert_eq!(signature(&requests[1]), None);
        assert_eq!(requests[0].body, bytes);
    }

    #[test]
    fn samples_keep_metas_field_types() {
        let text = samples::whatsapp_text(
            PHONE_ID,
            "15550783881",
            "16505551234",
            "Sheena",
            "wamid.X",
            "Hi",
            1_749_416_383,
        );
        let value = &text["entry"][0]["changes"][0]["value"];
        assert_eq!(text["object"], "whatsapp_business_account");
        assert_eq!(value["messages"][0]["timestamp"], "1749416383");
        assert_eq!(value["metadata"]["phone_number_id"], PHONE_ID);
        assert_eq!(value["contacts"][0]["profile"]["name"], "Sheena");
        let status = samples::whatsapp_status(
            PHONE_ID,
            "15550783881",
            "wamid.X",
            "16505551234",
            "failed",
            1_683_871_427,
            Some("event-1"),
            Some(samples::RE_ENGAGEMENT),
        );
        let entry = &status["entry"][0]["changes"][0]["value"]["statuses"][0];
        assert_eq!(entry["errors"][0]["code"], 131_047);
        assert_eq!(entry["biz_opaque_callback_data"], "event-1");
        assert!(entry.get("pricing").is_none());

        let message = samples::messenger_text(PAGE, "123", "m_1", "hello", 1_458_692_752_478);
        assert_eq!(
            message["entry"][0]["messaging"][0]["timestamp"],
            1_458_692_752_478_u64
        );
        let delivery = samples::messenger_delivery(PAGE, "123", &[], 1_458_668_856_253);
        assert!(delivery["entry"][0]["messaging"][0]["delivery"]
            .get("mids")
            .is_none());
        let batch = samples::batch(&[message.clone(), samples::messenger_read(PAGE, "123", 2)]);
        assert_eq!(batch["entry"].as_array().map(Vec::len), Some(2));
        assert_eq!(batch["object"], "page");
    }

    #[test]
    fn percent_decoding_and_versions() {
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%7B%22id%22%3A%221%22%7D"), r#"{"id":"1"}"#);
        assert!(is_version("v21.0"));
        assert!(!is_version("v21") && !is_version("21.0") && !is_version("v.0"));
    }
}
