//! Twilio's Programmable Messaging as the SMS bridge uses it: the signature on its webhook
//! requests, and the REST API (`Messages.json` to send, media URLs to fetch an MMS's files).
//! The API's base URL is configurable, so a stand-in can take Twilio's place in tests.

use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};

use crate::sdk::SendError;
use crate::webhook::{constant_time_eq, SignatureError};

/// Where Twilio's REST API is, unless configured.
pub const DEFAULT_API_URL: &str = "https://api.twilio.com";
/// Twilio's error for a number that texted STOP: it keeps its own opt-out list.
pub const UNSUBSCRIBED_RECIPIENT: u64 = 21610;

/// The header Twilio signs its webhook requests in.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// Twilio's signature of a request: base64(HMAC-SHA1(auth token, the full URL, then every
/// POST parameter sorted by name, each as name then value)).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a request's `X-Twilio-Signature` against `url`, the public URL Twilio was given
/// (behind a proxy the request's own URL differs), and the URL with its port added or
/// removed, as Twilio's own libraries accept (Twilio may sign either form).
pub fn verify(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    given: Option<&[u8]>,
) -> Result<(), SignatureError> {
    let given = given.ok_or(SignatureError::Missing {
        header: SIGNATURE_HEADER,
    })?;
    let matches = url_variants(url)
        .iter()
        .any(|url| constant_time_eq(signature(auth_token, url, params).as_bytes(), given));
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// `url` as given, and with its scheme's default port added (or removed, if it has one).
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let default = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return variants,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (format!("{userinfo}@"), host_port),
        None => (String::new(), authority),
    };
    let other = match host_port.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{scheme}://{userinfo}{host}{tail}")
        }
        _ => format!("{scheme}://{userinfo}{host_port}:{default}{tail}"),
    };
    variants.push(other);
    variants
}

/// An Account SID: `AC` and 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSid(String);

impl AccountSid {
    /// An Account SID as Twilio writes them.
    pub fn new(sid: impl Into<String>) -> Result<Self, String> {
        let sid = sid.into();
        if !is_sid(&sid, "AC") {
            return Err(
                "an Account SID is AC and 32 hex digits (from the Twilio console)".to_owned(),
            );
        }
        Ok(AccountSid(sid))
    }

    /// The SID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `sid` is `prefix` and 32 hex digits.
pub fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The account's auth token: it signs Twilio's requests and authenticates ours. It never
/// prints.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl AuthToken {
    /// A token (not empty, printable ASCII).
    pub fn new(token: impl Into<String>) -> Result<Self, String> {
        let token = token.into();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the auth token is printable ASCII, from the Twilio console".to_owned());
        }
        Ok(AuthToken(token))
    }
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(…)")
    }
}

/// Who replies come from: a number of the account, or a Messaging Service (which picks one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderId {
    /// A phone number in E.164 (`From`).
    Number(String),
    /// A Messaging Service SID, `MG…` (`MessagingServiceSid`).
    Service(String),
}

/// A REST API call that failed: the HTTP status (0: no answer), Twilio's error code and its
/// message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Twilio answered {status}: {message}{}", code.map(|c| format!(" (error {c})")).unwrap_or_default())]
pub struct TwilioError {
    /// The HTTP status, or 0 when nothing answered.
    pub status: u16,
    /// Twilio's error code (<https://www.twilio.com/docs/api/errors>).
    pub code: Option<u64>,
    /// Twilio's message, or what went wrong.
    pub message: String,
}

impl TwilioError {
    fn local(message: impl Into<String>) -> Self {
        TwilioError {
            status: 0,
            code: None,
            message: message.into(),
        }
    }

    /// As a delivery's failure: retried when it may pass (no answer, rate limits, server
    /// errors, credentials being fixed), failed with Twilio's message otherwise.
    pub fn send_error(&self) -> SendError {
        if matches!(self.status, 0 | 401 | 429) || self.status >= 500 {
            SendError::Retry(self.to_string())
        } else {
            let code = self
                .code
                .map(|c| format!(" (Twilio error {c})"))
                .unwrap_or_default();
            SendError::Permanent(format!("{}{code}", self.message))
        }
    }

    /// Whether Twilio refused because the number texted STOP.
    pub fn unsubscribed(&self) -> bool {
        self.code == Some(UNSUBSCRIBED_RECIPIENT)
    }
}

/// A message Twilio took: its SID and status (`queued`, `accepted`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Queued {
    /// `SM…`.
    pub sid: String,
    /// Its status now.
    pub status: String,
}

/// Twilio's REST API for one account.
#[derive(Debug, Clone)]
pub struct MessagesApi {
    base: String,
    account: AccountSid,
    token: AuthToken,
    agent: ureq::Agent,
}

impl MessagesApi {
    /// The API at `base` (`https://api.twilio.com`) for `account`.
    pub fn new(base: &str, account: AccountSid, token: AuthToken) -> Result<Self, String> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(format!("`{base}` is not an http(s) URL"));
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build();
        Ok(MessagesApi {
            base,
            account,
            token,
            agent,
        })
    }

    /// The account.
    pub fn account(&self) -> &AccountSid {
        &self.account
    }

    /// Checks a webhook request's `X-Twilio-Signature` against `url`, the URL Twilio was
    /// given, and its parameters.
    pub fn verify(
        &self,
        url: &str,
        params: &[(String, String)],
        given: Option<&[u8]>,
    ) -> Result<(), SignatureError> {
        verify(&self.token.0, url, params, given)
    }

    fn authorization(&self) -> String {
        let pair = format!("{}:{}", self.account.0, self.token.0);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    /// `POST /2010-04-01/Accounts/{sid}/Messages.json`: sends `body` to `to`, Twilio's status
    /// reports going to `status_callback`.
    pub async fn send(
        &self,
        to: &str,
        from: &SenderId,
        body: &str,
        status_callback: &str,
    ) -> Result<Queued, TwilioError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base, self.account.0
        );
        let (sender_field, sender) = match from {
            SenderId::Number(number) => ("From", number.clone()),
            SenderId::Service(sid) => ("MessagingServiceSid", sid.clone()),
        };
        let form = [
            ("To", to.to_owned()),
            (sender_field, sender),
            ("Body", body.to_owned()),
            ("StatusCallback", status_callback.to_owned()),
        ];
        let request = self
            .agent
            .post(&url)
            .set("Authorization", &self.authorization());
        blocking(move || {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let response = request.send_form(&pairs).map_err(twilio_error)?;
            response
                .into_json::<Queued>()
                .map_err(|err| TwilioError::local(format!("an answer that does not parse: {err}")))
        })
        .await
    }

    /// The bytes of an MMS's file at `url`, a media URL of this account on the configured API
    /// (the credentials go nowhere else); at most 32 MiB (`MAX_BLOB_BYTES`). Twilio answers with a
    /// redirect to its CDN, which is followed.
    pub async fn media(&self, url: &str) -> Result<Vec<u8>, TwilioError> {
        let ours = format!("{}/2010-04-01/Accounts/{}/", self.base, self.account.0);
        if !url.starts_with(&ours) || url.contains("/../") {
            return Err(TwilioError::local(format!(
                "{url} is not a media URL of this account on {}",
                self.base
            )));
        }
        let request = self
            .agent
            .get(url)
            .set("Authorization", &self.authorization());
        blocking(move || {
            let response = request.call().map_err(twilio_error)?;
            crate::webhook::read_file(response).map_err(TwilioError::local)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, TwilioError> + Send + 'static,
) -> Result<T, TwilioError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|err| TwilioError::local(format!("the call's task failed: {err}")))?
}

/// Twilio's error body: `{"code", "message", "more_info", "status"}`.
#[derive(Debug, serde::Deserialize)]
struct ErrorBody {
    code: Option<u64>,
    message: String,
}

fn twilio_error(err: ureq::Error) -> TwilioError {
    match err {
        ureq::Error::Status(status, response) => match response.into_json::<ErrorBody>() {
            Ok(body) => TwilioError {
                status,
                code: body.code,
                message: body.message,
            },
            Err(_) => TwilioError {
                status,
                code: None,
                message: format!("HTTP {status}"),
            },
        },
        other => TwilioError::local(other.to_string()),
    }
}

/// A form body's parameters, decoded, in order.
pub fn form_params(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(caller: &str) -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", caller),
            ("Digits", "1234"),
            ("From", caller),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn twilios_published_vectors() {
        assert_eq!(
            signature("12345", URL, &params("+14158675310")),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
        assert_eq!(
            signature("12345", URL, &params("+14158675309")),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn a_signature_is_checked_with_and_without_the_port_and_refused_when_anything_differs() {
        let good = params("+14158675310");
        let signed = signature("12345", URL, &good);
        assert_eq!(verify("12345", URL, &good, Some(signed.as_bytes())), Ok(()));
        // Twilio signed the URL with its default port; the configured one has none, or the
        // other way round.
        let with_port = signature(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &good,
        );
        assert_eq!(
            verify("12345", URL, &good, Some(with_port.as_bytes())),
            Ok(())
        );
        assert_eq!(
            verify(
                "12345",
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &good,
                Some(signed.as_bytes())
            ),
            Ok(())
        );
        assert!(matches!(
            verify("12345", URL, &good, None),
            Err(SignatureError::Missing { .. })
        ));
        assert_eq!(
            verify("54321", URL, &good, Some(signed.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        let mut altered = good.clone();
        altered[2].1 = "1235".to_owned();
        assert_eq!(
            verify("12345", URL, &altered, Some(signed.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                &good,
                Some(signed.as_bytes())
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn sids_and_errors() {
        assert!(AccountSid::new(format!("AC{}", "0123456789abcdef".repeat(2))).is_ok());
        for bad in ["", "AC123", "MG0123456789abcdef0123456789abcdef"] {
            assert!(AccountSid::new(bad).is_err(), "{bad}");
        }
        let token = AuthToken::new("f00d").expect("token");
        assert!(!format!("{token:?}").contains("f00d"));
        let invalid = TwilioError {
            status: 400,
            code: Some(21211),
            message: "The 'To' number +1555 is not a valid phone number.".to_owned(),
        };
        assert_eq!(
            invalid.send_error(),
            SendError::Permanent(
                "The 'To' number +1555 is not a valid phone number. (Twilio error 21211)"
                    .to_owned()
            )
        );
        for status in [0, 401, 429, 500, 503] {
            let passing = TwilioError {
                status,
                code: None,
                message: String::new(),
            };
            assert!(
                matches!(passing.send_error(), SendError::Retry(_)),
                "{status}"
            );
        }
    }
}
