//! A local stand-in for the parts of Twilio's Programmable Messaging REST API the SMS bridge
//! uses, for end-to-end tests: no Twilio server can be reached from here. It answers as Twilio
//! documents (<https://www.twilio.com/docs/messaging/api/message-resource>); a refusal is
//! `{"code", "message", "more_info", "status"}` with that HTTP status and Twilio's error code
//! (<https://www.twilio.com/docs/api/errors>).
//!
//! - `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (form: `To`, `From` or
//!   `MessagingServiceSid`, `Body`, `MediaUrl`, `StatusCallback`), with HTTP Basic auth
//!   `AccountSid:AuthToken` (else `401`, 20003) and the stand-in's account in the path (else
//!   `404`, 20404) → `201 Created` and the Message resource; refused with `400` in Twilio's
//!   order: no `To` (21604), a `To` not in E.164 (21211), neither `From` nor
//!   `MessagingServiceSid` (21603), a `MessagingServiceSid` not `MG…` (21701), no `Body` nor
//!   `MediaUrl` (21602), a `Body` over 1,600 characters (21617), a `To` that texted STOP
//!   ([`TwilioStandin::unsubscribe`], 21610); [`TwilioStandin::fail_next`] makes the next sends
//!   fail with `429` (20429) or `500`/`503` (20500);
//! - status callbacks to a send's `StatusCallback`, signed, in order: `sent` then `delivered`;
//!   `sent` then `undelivered` (30006) for a [`TwilioStandin::landline`]; `failed` (30003) for
//!   a number [`TwilioStandin::unreachable`]
//!   (<https://www.twilio.com/docs/messaging/guides/track-outbound-message-status>);
//! - an inbound MMS's media ([`TwilioStandin::add_media`]):
//!   `GET /2010-04-01/Accounts/{AccountSid}/Messages/{MessageSid}/Media/{MediaSid}` with Basic
//!   auth → `307` to `/cdn/{MediaSid}`, which serves the bytes without auth.
//!
//! [`signature`] computes `X-Twilio-Signature` as Twilio does
//! (<https://www.twilio.com/docs/usage/security#validating-requests>); [`deliver`] posts an
//! incoming-message webhook signed with it, and [`samples`] builds one from Twilio's documented
//! parameters (<https://www.twilio.com/docs/usage/webhooks/messaging-webhooks>).

use std::collections::{HashMap, HashSet};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use serde_json::json;

/// The API version, in every path and callback.
const API_VERSION: &str = "2010-04-01";
/// When every message was created and updated (RFC 2822, as Twilio writes dates).
const DATE: &str = "Thu, 01 Jan 2026 00:00:00 +0000";
/// The number a Messaging Service sends from (its sender pool of one): the `From` of the status
/// callbacks of a send made with a `MessagingServiceSid`.
pub const SERVICE_NUMBER: &str = "+15017122661";
/// The wait before each status callback, so that it comes after the send's `201`.
const CALLBACK_DELAY: Duration = Duration::from_millis(100);

/// A message the stand-in accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct SentSms {
    /// Its `SM…` sid.
    pub sid: String,
    /// `To`.
    pub to: String,
    /// `From`, unless it went through a Messaging Service.
    pub from: Option<String>,
    /// `MessagingServiceSid`.
    pub messaging_service_sid: Option<String>,
    /// `Body` (empty for media alone).
    pub body: String,
    /// Every `MediaUrl`, in order.
    pub media_urls: Vec<String>,
    /// `StatusCallback`.
    pub status_callback: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    account_sid: String,
    auth_token: String,
    base: String,
    unsubscribed: HashSet<String>,
    landlines: HashSet<String>,
    unreachable: HashSet<String>,
    /// The status the next sends fail with, and how many more.
    failing: Option<(u16, usize)>,
    sent: Vec<SentSms>,
    requests: usize,
    callbacks: Vec<(String, String, u16)>,
    /// Media by `ME…` sid: the message's sid, the content type and the bytes.
    media: HashMap<String, (String, String, Vec<u8>)>,
    next: u64,
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(shared: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The status callbacks of one send, made in order by the callback thread.
#[derive(Debug)]
struct CallbackRun {
    url: String,
    auth_token: String,
    account_sid: String,
    sid: String,
    from: String,
    to: String,
    messaging_service_sid: Option<String>,
    /// Each `MessageStatus`, with its `ErrorCode`.
    statuses: Vec<(&'static str, Option<&'static str>)>,
}

#[derive(Debug, Clone)]
struct AppState {
    shared: SharedState,
    callbacks: mpsc::Sender<CallbackRun>,
}

/// The stand-in, on a free loopback port; stopped on drop.
#[derive(Debug)]
pub struct TwilioStandin {
    server: crate::graph::StandinServer,
    shared: SharedState,
}

impl TwilioStandin {
    /// Starts it for the account `account_sid` (`AC…`) with `auth_token`.
    pub fn start(account_sid: &str, auth_token: &str) -> TwilioStandin {
        let shared: SharedState = Arc::default();
        let (callbacks, runs) = mpsc::channel();
        let caller = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("twilio-callbacks".to_owned())
            .spawn(move || call_back(&caller, &runs))
            .expect("the callback thread starts");
        let state = AppState {
            shared: Arc::clone(&shared),
            callbacks,
        };
        let server = crate::graph::StandinServer::start(|base| {
            *lock(&state.shared) = Shared {
                account_sid: account_sid.to_owned(),
                auth_token: auth_token.to_owned(),
                base: base.to_owned(),
                ..Shared::default()
            };
            Router::new()
                .route("/2010-04-01/Accounts/{account}/Messages.json", post(send))
                .route(
                    "/2010-04-01/Accounts/{account}/Messages/{message}/Media/{media}",
                    get(media),
                )
                .route("/cdn/{media}", get(cdn))
                .with_state(state)
        });
        TwilioStandin { server, shared }
    }

    /// `http://127.0.0.1:PORT`: the bridge's API base URL (in place of
    /// `https://api.twilio.com`).
    pub fn base_url(&self) -> String {
        self.server.base.clone()
    }

    /// A file of the inbound MMS `message_sid`: its URL (what the webhook's `MediaUrlN` names).
    pub fn add_media(&self, message_sid: &str, content_type: &str, bytes: &[u8]) -> String {
        let mut shared = lock(&self.shared);
        shared.next += 1;
        let media_sid = format!("ME{:032x}", shared.next);
        shared.media.insert(
            media_sid.clone(),
            (
                message_sid.to_owned(),
                content_type.to_owned(),
                bytes.to_vec(),
            ),
        );
        format!(
            "{}/{API_VERSION}/Accounts/{}/Messages/{message_sid}/Media/{media_sid}",
            shared.base, shared.account_sid
        )
    }

    /// Sends to `number` are refused from now on as for a customer who texted STOP (21610).
    pub fn unsubscribe(&self, number: &str) {
        lock(&self.shared).unsubscribed.insert(number.to_owned());
    }

    /// Undoes [`TwilioStandin::unsubscribe`], as a customer's START does.
    pub fn resubscribe(&self, number: &str) {
        lock(&self.shared).unsubscribed.remove(number);
    }

    /// `number` is a landline: its messages are `sent`, then `undelivered` (30006).
    pub fn landline(&self, number: &str) {
        lock(&self.shared).landlines.insert(number.to_owned());
    }

    /// `number` cannot be reached: its messages are `failed` (30003).
    pub fn unreachable(&self, number: &str) {
        lock(&self.shared).unreachable.insert(number.to_owned());
    }

    /// The next `times` sends are answered with `status` (429, 500 or 503).
    pub fn fail_next(&self, status: u16, times: usize) {
        lock(&self.shared).failing = Some((status, times));
    }

    /// Every message accepted, in order.
    pub fn sent(&self) -> Vec<SentSms> {
        lock(&self.shared).sent.clone()
    }

    /// How many requests reached `Messages.json`, accepted or refused.
    pub fn requests(&self) -> usize {
        lock(&self.shared).requests
    }

    /// Every status callback made, in order: the message's sid, the `MessageStatus`, and the
    /// HTTP status it was answered with (0: no answer).
    pub fn callbacks(&self) -> Vec<(String, String, u16)> {
        lock(&self.shared).callbacks.clone()
    }

    /// Waits until `pick` is true of the messages accepted, and returns them.
    pub fn wait_for(
        &self,
        what: &str,
        within: Duration,
        pick: impl Fn(&[SentSms]) -> bool,
    ) -> Vec<SentSms> {
        let deadline = Instant::now() + within;
        loop {
            let sent = self.sent();
            if pick(&sent) {
                return sent;
            }
            assert!(
                Instant::now() < deadline,
                "not within {within:?}: {what}; sent: {sent:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Twilio's error answer.
fn refusal(status: u16, code: u32, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = Json(json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    }));
    if status == StatusCode::UNAUTHORIZED {
        let challenge = [(header::WWW_AUTHENTICATE, "Basic realm=\"Twilio API\"")];
        return (status, challenge, body).into_response();
    }
    (status, body).into_response()
}

fn unauthenticated() -> Response {
    refusal(401, 20003, "Authenticate")
}

fn not_found(path: &str) -> Response {
    refusal(
        404,
        20404,
        &format!("The requested resource {path} was not found"),
    )
}

/// Whether `headers` carry HTTP Basic auth with the account's sid and token.
fn authenticated(shared: &Shared, headers: &HeaderMap) -> bool {
    let expected = format!("{}:{}", shared.account_sid, shared.auth_token);
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .is_some_and(|credentials| credentials == expected.as_bytes())
}

/// `+` then 2 to 15 digits, the first not 0.
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

async fn send(
    State(app): State<AppState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut shared = lock(&app.shared);
    shared.requests += 1;
    if !authenticated(&shared, &headers) {
        return unauthenticated();
    }
    if account != shared.account_sid {
        return not_found(&format!("/{API_VERSION}/Accounts/{account}/Messages.json"));
    }
    if let Some((status, left)) = shared.failing {
        shared.failing = (left > 1).then_some((status, left - 1));
        if left > 0 {
            return match status {
                429 => refusal(429, 20429, "Too Many Requests"),
                500 | 503 => refusal(status, 20500, "Internal Server Error"),
                _ => {
                    let reason = StatusCode::from_u16(status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("Error");
                    refusal(status, 20000 + u32::from(status), reason)
                }
            };
        }
    }
    let params = decode_form(&body);
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let Some(to) = param("To") else {
        return refusal(400, 21604, "A 'To' phone number is required.");
    };
    if !is_e164(&to) {
        return refusal(
            400,
            21211,
            &format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    let from = param("From");
    let messaging_service_sid = param("MessagingServiceSid");
    if from.is_none() && messaging_service_sid.is_none() {
        return refusal(
            400,
            21603,
            "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
        );
    }
    if let Some(service) = messaging_service_sid.as_deref() {
        if !service.starts_with("MG") {
            return refusal(
                400,
                21701,
                &format!("The Messaging Service Sid {service} is invalid."),
            );
        }
    }
    let text = param("Body").unwrap_or_default();
    let media_urls: Vec<String> = params
        .iter()
        .filter(|(n, v)| n == "MediaUrl" && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect();
    if text.is_empty() && media_urls.is_empty() {
        return refusal(400, 21602, "Message body is required.");
    }
    if text.chars().count() > 1600 {
        return refusal(
            400,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    if shared.unsubscribed.contains(&to) {
        return refusal(400, 21610, "Attempt to send to unsubscribed recipient");
    }

    shared.next += 1;
    let sid = format!("SM{:032x}", shared.next);
    let status_callback = param("StatusCallback");
    if let Some(url) = &status_callback {
        let statuses = if shared.unreachable.contains(&to) {
            vec![("failed", Some("30003"))]
        } else if shared.landlines.contains(&to) {
            vec![("sent", None), ("undelivered", Some("30006"))]
        } else {
            vec![("sent", None), ("delivered", None)]
        };
        let run = CallbackRun {
            url: url.clone(),
            auth_token: shared.auth_token.clone(),
            account_sid: shared.account_sid.clone(),
            sid: sid.clone(),
            from: from.clone().unwrap_or_else(|| SERVICE_NUMBER.to_owned()),
            to: to.clone(),
            messaging_service_sid: messaging_service_sid.clone(),
            statuses,
        };
        // The receiver lives as long as the server: a send cannot fail.
        let _ = app.callbacks.send(run);
    }
    let account_sid = shared.account_sid.clone();
    let resource = json!({
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": text,
        "date_created": DATE,
        "date_sent": null,
        "date_updated": DATE,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "messaging_service_sid": messaging_service_sid,
        "num_media": media_urls.len().to_string(),
        "num_segments": segments(&text).to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": if messaging_service_sid.is_some() { "accepted" } else { "queued" },
        "subresource_uris": {
            "media": format!("/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Media.json"),
        },
        "to": to,
        "uri": format!("/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"),
    });
    shared.sent.push(SentSms {
        sid,
        to,
        from,
        messaging_service_sid,
        body: text,
        media_urls,
        status_callback,
    });
    (StatusCode::CREATED, Json(resource)).into_response()
}

/// Makes the status callbacks of every send, one after the other, until the server is gone.
fn call_back(shared: &SharedState, runs: &mpsc::Receiver<CallbackRun>) {
    for run in runs {
        for (status, error_code) in &run.statuses {
            std::thread::sleep(CALLBACK_DELAY);
            let mut params: Vec<(String, String)> = [
                ("AccountSid", run.account_sid.as_str()),
                ("ApiVersion", API_VERSION),
                ("From", run.from.as_str()),
                ("MessageSid", run.sid.as_str()),
                ("MessageStatus", status),
                ("SmsSid", run.sid.as_str()),
                ("SmsStatus", status),
                ("To", run.to.as_str()),
            ]
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
            if let Some(service) = &run.messaging_service_sid {
                params.push(("MessagingServiceSid".to_owned(), service.clone()));
            }
            if let Some(code) = error_code {
                params.push(("ErrorCode".to_owned(), (*code).to_owned()));
            }
            let signed = signature(&run.auth_token, &run.url, &params);
            let answer =
                post_signed(&run.url, Some(&signed), &params).map_or(0, |(status, _)| status);
            lock(shared)
                .callbacks
                .push((run.sid.clone(), (*status).to_owned(), answer));
        }
    }
}

async fn media(
    State(app): State<AppState>,
    Path((account, message, media)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let shared = lock(&app.shared);
    if !authenticated(&shared, &headers) {
        return unauthenticated();
    }
    let known = shared
        .media
        .get(&media)
        .is_some_and(|(of, _, _)| *of == message);
    if account != shared.account_sid || !known {
        return not_found(&format!(
            "/{API_VERSION}/Accounts/{account}/Messages/{message}/Media/{media}"
        ));
    }
    let location = format!("{}/cdn/{media}", shared.base);
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

async fn cdn(State(app): State<AppState>, Path(media): Path<String>) -> Response {
    match lock(&app.shared).media.get(&media) {
        Some((_, content_type, bytes)) => (
            [(header::CONTENT_TYPE, content_type.clone())],
            bytes.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// How many segments carry `body`: GSM-7 (160 septets, 153 a part when concatenated; the
/// extension table's characters take two) or else UCS-2 (70 UTF-16 units, 67 a part).
fn segments(body: &str) -> usize {
    const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
        ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";
    let septets: Option<usize> = body
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (units, single, part) = match septets {
        Some(septets) => (septets, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    if units <= single {
        1
    } else {
        units.div_ceil(part)
    }
}

/// `X-Twilio-Signature`: base64 of the HMAC-SHA1 under `auth_token` of `url` followed by every
/// parameter, sorted by name (then value), its name then its value.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Posts `params` to `url` as Twilio posts a webhook, signed over `signed_url` (the public URL
/// Twilio was given, which differs from `url` behind a proxy) with `auth_token`; the status and
/// body.
pub fn deliver(
    url: &str,
    signed_url: &str,
    auth_token: &str,
    params: &[(String, String)],
) -> (u16, String) {
    post_form(
        url,
        Some(&signature(auth_token, signed_url, params)),
        params,
    )
}

/// Posts `params` to `url` with `signature` as `X-Twilio-Signature` (`None`: no header); the
/// status and body.
pub fn post_form(url: &str, signature: Option<&str>, params: &[(String, String)]) -> (u16, String) {
    post_signed(url, signature, params).unwrap_or_else(|err| panic!("{url}: {err}"))
}

/// A form post as Twilio makes it; an error status is an answer too, `Err` is no answer.
fn post_signed(
    url: &str,
    signature: Option<&str>,
    params: &[(String, String)],
) -> Result<(u16, String), String> {
    let mut request = ureq::post(url)
        .timeout(Duration::from_secs(30))
        .set("Content-Type", "application/x-www-form-urlencoded")
        .set("User-Agent", "TwilioProxy/1.1");
    if let Some(signature) = signature {
        request = request.set("X-Twilio-Signature", signature);
    }
    match request.send_string(&encode_form(params)) {
        Ok(response) => Ok((
            response.status(),
            response.into_string().unwrap_or_default(),
        )),
        Err(ureq::Error::Status(status, response)) => {
            Ok((status, response.into_string().unwrap_or_default()))
        }
        Err(err) => Err(err.to_string()),
    }
}

/// `application/x-www-form-urlencoded`: every byte but `A-Z a-z 0-9 - _ . ~` percent-encoded,
/// a space as `+`.
fn encode_form(params: &[(String, String)]) -> String {
    fn encode(text: &str, out: &mut String) {
        for byte in text.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(char::from(byte));
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
    }
    let mut out = String::new();
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode(name, &mut out);
        out.push('=');
        encode(value, &mut out);
    }
    out
}

/// The pairs of an `application/x-www-form-urlencoded` body, in order (`+` is a space; a `%`
/// not followed by two hex digits stays as it is).
fn decode_form(body: &[u8]) -> Vec<(String, String)> {
    fn decode(text: &[u8]) -> String {
        let hex = |b: u8| char::from(b).to_digit(16);
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            match text[i] {
                b'+' => out.push(b' '),
                b'%' => match (
                    text.get(i + 1).and_then(|&b| hex(b)),
                    text.get(i + 2).and_then(|&b| hex(b)),
                ) {
                    (Some(high), Some(low)) => {
                        // Two hex digits: at most 0xFF.
                        out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                byte => out.push(byte),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(at) => (decode(&pair[..at]), decode(&pair[at + 1..])),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// Incoming-message webhooks built from the parameters Twilio documents (the sample request of
/// <https://www.twilio.com/docs/usage/webhooks/messaging-webhooks>).
pub mod samples {
    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    /// A text message from `from` to the business number `to`.
    pub fn sms(
        account_sid: &str,
        message_sid: &str,
        from: &str,
        to: &str,
        body: &str,
    ) -> Vec<(String, String)> {
        let segments = super::segments(body).to_string();
        pairs(&[
            ("ToCountry", "US"),
            ("ToState", "CA"),
            ("SmsMessageSid", message_sid),
            ("NumMedia", "0"),
            ("ToCity", "SAN FRANCISCO"),
            ("FromZip", "94105"),
            ("SmsSid", message_sid),
            ("FromState", "CA"),
            ("SmsStatus", "received"),
            ("FromCity", "SAN FRANCISCO"),
            ("Body", body),
            ("FromCountry", "US"),
            ("To", to),
            ("ToZip", "94105"),
            ("NumSegments", &segments),
            ("MessageSid", message_sid),
            ("AccountSid", account_sid),
            ("From", from),
            ("ApiVersion", super::API_VERSION),
        ])
    }

    /// A multimedia message: [`sms`] with `NumMedia` and each file's `MediaUrlN` and
    /// `MediaContentTypeN` (`media`: URL and content type, as [`super::TwilioStandin::add_media`]
    /// makes them).
    pub fn mms(
        account_sid: &str,
        message_sid: &str,
        from: &str,
        to: &str,
        body: &str,
        media: &[(String, String)],
    ) -> Vec<(String, String)> {
        let mut params = sms(account_sid, message_sid, from, to, body);
        for (name, value) in &mut params {
            if name == "NumMedia" {
                *value = media.len().to_string();
            }
        }
        for (n, (url, content_type)) in media.iter().enumerate() {
            params.push((format!("MediaContentType{n}"), content_type.clone()));
            params.push((format!("MediaUrl{n}"), url.clone()));
        }
        params
    }

    /// `params` with `OptOutType` (`STOP`, `START`, `HELP`), which Advanced Opt-Out adds to an
    /// opt-out keyword's webhook.
    pub fn with_opt_out_type(params: Vec<(String, String)>, kind: &str) -> Vec<(String, String)> {
        let mut params = params;
        params.push(("OptOutType".to_owned(), kind.to_owned()));
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    const ACCOUNT: &str = "AC00000000000000000000000000000001";
    const TOKEN: &str = "auth-token";

    fn basic(account: &str, token: &str) -> String {
        let credentials = format!("{account}:{token}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    }

    /// Posts `params` to Messages.json of `account` with `auth`: the status and JSON answer.
    fn create(
        standin: &TwilioStandin,
        account: &str,
        auth: &str,
        params: &[(&str, &str)],
    ) -> (u16, Value) {
        let url = format!(
            "{}/2010-04-01/Accounts/{account}/Messages.json",
            standin.base_url()
        );
        let answer = ureq::post(&url)
            .set("Authorization", auth)
            .set("Content-Type", "application/x-www-form-urlencoded")
            .send_string(&encode_form(&owned(params)));
        let response = match answer {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(err) => panic!("{err}"),
        };
        (
            response.status(),
            response.into_json().expect("a JSON answer"),
        )
    }

    #[test]
    fn signature_matches_twilios_published_examples() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = |caller: &str| {
            owned(&[
                ("CallSid", "CA1234567890ABCDE"),
                ("Caller", caller),
                ("Digits", "1234"),
                ("From", caller),
                ("To", "+18005551212"),
            ])
        };
        assert_eq!(
            signature("12345", url, &params("+14158675310")),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
        assert_eq!(
            signature("12345", url, &params("+14158675309")),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn forms_decode_and_round_trip() {
        assert_eq!(
            decode_form(b"To=%2B15551234567&Body=Hello+there%21&Empty=&Bare&&Bad=%zz%4"),
            owned(&[
                ("To", "+15551234567"),
                ("Body", "Hello there!"),
                ("Empty", ""),
                ("Bare", ""),
                ("Bad", "%zz%4"),
            ])
        );
        let params = owned(&[("Body", "Ça va? 1+1=2 & 😀"), ("Media Url", "a/b?c=d~e")]);
        assert_eq!(decode_form(encode_form(&params).as_bytes()), params);
    }

    #[test]
    fn segments_count_gsm7_and_ucs2() {
        assert_eq!(segments(""), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"é".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        assert_eq!(segments(&"ç".repeat(70)), 1);
        assert_eq!(segments(&"ç".repeat(71)), 2);
        assert_eq!(segments(&"😀".repeat(35)), 1);
        assert_eq!(segments(&"😀".repeat(36)), 2);
    }

    #[test]
    fn sends_are_checked_in_twilios_order() {
        let standin = TwilioStandin::start(ACCOUNT, TOKEN);
        let auth = basic(ACCOUNT, TOKEN);
        let code = |answer: (u16, Value)| (answer.0, answer.1["code"].as_u64().unwrap_or(0));
        let to = ("To", "+15558675310");
        let from = ("From", "+15017122661");
        assert_eq!(
            code(create(&standin, ACCOUNT, &basic(ACCOUNT, "wrong"), &[to])),
            (401, 20003)
        );
        assert_eq!(
            code(create(
                &standin,
                "AC00000000000000000000000000000002",
                &auth,
                &[to]
            )),
            (404, 20404)
        );
        assert_eq!(code(create(&standin, ACCOUNT, &auth, &[])), (400, 21604));
        assert_eq!(
            code(create(&standin, ACCOUNT, &auth, &[("To", "+0123")])),
            (400, 21211)
        );
        assert_eq!(code(create(&standin, ACCOUNT, &auth, &[to])), (400, 21603));
        assert_eq!(
            code(create(
                &standin,
                ACCOUNT,
                &auth,
                &[to, ("MessagingServiceSid", "XX1")]
            )),
            (400, 21701)
        );
        assert_eq!(
            code(create(&standin, ACCOUNT, &auth, &[to, from])),
            (400, 21602)
        );
        let long = "a".repeat(1601);
        assert_eq!(
            code(create(
                &standin,
                ACCOUNT,
                &auth,
                &[to, from, ("Body", &long)]
            )),
            (400, 21617)
        );
        standin.unsubscribe(to.1);
        assert_eq!(
            code(create(
                &standin,
                ACCOUNT,
                &auth,
                &[to, from, ("Body", "hi")]
            )),
            (400, 21610)
        );
        standin.resubscribe(to.1);
        standin.fail_next(429, 1);
        assert_eq!(
            code(create(
                &standin,
                ACCOUNT,
                &auth,
                &[to, from, ("Body", "hi")]
            )),
            (429, 20429)
        );
        assert!(standin.sent().is_empty());

        let (status, message) = create(&standin, ACCOUNT, &auth, &[to, from, ("Body", "hi")]);
        assert_eq!(status, 201, "{message}");
        let sid = message["sid"].as_str().expect("a sid");
        assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
        assert_eq!(message["status"], "queued");
        assert_eq!(message["from"], from.1);
        assert_eq!(message["num_segments"], "1");
        assert_eq!(
            message["uri"],
            format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json")
        );
        let (status, message) = create(
            &standin,
            ACCOUNT,
            &auth,
            &[
                to,
                ("MessagingServiceSid", "MG00000000000000000000000000000001"),
                ("MediaUrl", "https://example.com/a.png"),
            ],
        );
        assert_eq!(status, 201, "{message}");
        assert_eq!(message["status"], "accepted");
        assert_eq!(message["from"], Value::Null);
        assert_eq!(message["num_media"], "1");
        assert_eq!(standin.sent().len(), 2);
        assert_eq!(standin.requests(), 12);
    }

    #[test]
    fn media_redirects_to_the_cdn() {
        let standin = TwilioStandin::start(ACCOUNT, TOKEN);
        let url = standin.add_media("MM0001", "image/png", b"png bytes");
        let refused = ureq::get(&url).call();
        assert!(matches!(refused, Err(ureq::Error::Status(401, _))));
        let agent = ureq::AgentBuilder::new().redirects(0).build();
        let redirect = agent
            .get(&url)
            .set("Authorization", &basic(ACCOUNT, TOKEN))
            .call()
            .expect("an answer");
        assert_eq!(redirect.status(), 307);
        let location = redirect.header("Location").expect("a Location").to_owned();
        assert!(location.starts_with(&format!("{}/cdn/ME", standin.base_url())));
        let file = ureq::get(&location).call().expect("the file");
        assert_eq!(file.content_type(), "image/png");
        assert_eq!(file.into_string().expect("bytes"), "png bytes");
    }

    #[test]
    fn status_callbacks_are_signed_and_in_order() {
        /// Each callback's parameters, and whether its signature was right.
        type Seen = Vec<(Vec<(String, String)>, bool)>;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let record = Arc::clone(&seen);
        let receiver = crate::graph::StandinServer::start(move |base| {
            let url = format!("{base}/status");
            Router::new().route(
                "/status",
                post(move |headers: HeaderMap, body: Bytes| {
                    let (url, record) = (url.clone(), Arc::clone(&record));
                    async move {
                        let params = decode_form(&body);
                        let signed = headers
                            .get("x-twilio-signature")
                            .and_then(|v| v.to_str().ok())
                            == Some(signature(TOKEN, &url, &params).as_str());
                        record
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((params, signed));
                        StatusCode::NO_CONTENT
                    }
                }),
            )
        });
        let standin = TwilioStandin::start(ACCOUNT, TOKEN);
        standin.landline("+15550000002");
        standin.unreachable("+15550000003");
        let callback = format!("{}/status", receiver.base);
        for to in ["+15550000001", "+15550000002", "+15550000003"] {
            let (status, _) = create(
                &standin,
                ACCOUNT,
                &basic(ACCOUNT, TOKEN),
                &[
                    ("To", to),
                    ("From", "+15017122661"),
                    ("Body", "hi"),
                    ("StatusCallback", &callback),
                ],
            );
            assert_eq!(status, 201);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while standin.callbacks().len() < 5 {
            assert!(Instant::now() < deadline, "{:?}", standin.callbacks());
            std::thread::sleep(Duration::from_millis(20));
        }
        let sids: Vec<String> = standin.sent().into_iter().map(|s| s.sid).collect();
        let made: Vec<(String, String, u16)> = standin.callbacks();
        let expected = [
            (&sids[0], "sent"),
            (&sids[0], "delivered"),
            (&sids[1], "sent"),
            (&sids[1], "undelivered"),
            (&sids[2], "failed"),
        ]
        .map(|(sid, status)| (sid.clone(), status.to_owned(), 204));
        assert_eq!(made, expected);
        let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert!(seen.iter().all(|(_, signed)| *signed));
        let field = |params: &[(String, String)], name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(field(&seen[3].0, "ErrorCode").as_deref(), Some("30006"));
        assert_eq!(field(&seen[4].0, "ErrorCode").as_deref(), Some("30003"));
        assert_eq!(field(&seen[0].0, "ErrorCode"), None);
        assert_eq!(field(&seen[1].0, "SmsStatus").as_deref(), Some("delivered"));
    }

    #[test]
    fn samples_carry_twilios_parameters() {
        let media = vec![("https://example.com/m".to_owned(), "image/jpeg".to_owned())];
        let params = samples::with_opt_out_type(
            samples::mms(ACCOUNT, "MM1", "+15550000001", "+15017122661", "", &media),
            "STOP",
        );
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("NumMedia"), Some("1"));
        assert_eq!(get("MediaUrl0"), Some("https://example.com/m"));
        assert_eq!(get("MediaContentType0"), Some("image/jpeg"));
        assert_eq!(get("OptOutType"), Some("STOP"));
        assert_eq!(get("SmsSid"), get("MessageSid"));
        assert_eq!(params.len(), 19 + 2 + 1);
    }
}
