//! The homeserver's client-server API as the bridge's bot uses it: ruma's request and
//! response types, carried over HTTP by ureq (on a blocking thread).

use std::borrow::Cow;
use std::collections::BTreeMap;

use ruma::api::auth_scheme::{AccessToken, SendAccessToken};
use ruma::api::path_builder::VersionHistory;
use ruma::api::{
    IncomingResponseExt as _, OutgoingRequest, OutgoingRequestExt as _, SupportedVersions,
};

use crate::sdk::SendError;

/// The application service's token (`as_token` or `hs_token`). It never prints, and is
/// compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct AppserviceToken(String);

impl AppserviceToken {
    /// A token: at least 16 bytes, printable ASCII.
    pub fn new(token: impl Into<String>) -> Result<Self, String> {
        let token = token.into();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a token is at least 16 printable ASCII characters".to_owned());
        }
        Ok(AppserviceToken(token))
    }

    /// The token's text (for the registration file).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token (constant time).
    pub fn matches(&self, given: &str) -> bool {
        crate::webhook::constant_time_eq(self.0.as_bytes(), given.as_bytes())
    }
}

impl std::fmt::Debug for AppserviceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppserviceToken(…)")
    }
}

/// A call to the homeserver failed: its HTTP status (0: no answer) and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the homeserver answered {status}: {message}")]
pub struct MatrixError {
    /// The HTTP status, 0 when there was no answer.
    pub status: u16,
    /// The homeserver's `errcode` and `error`, or what went wrong.
    pub message: String,
}

impl MatrixError {
    fn local(message: impl Into<String>) -> Self {
        MatrixError {
            status: 0,
            message: message.into(),
        }
    }

    /// As a delivery's failure: worth retrying (no answer, rate limits, server errors) or not.
    pub fn send_error(&self) -> SendError {
        if self.status == 0 || self.status == 429 || self.status >= 500 {
            SendError::Retry(self.to_string())
        } else {
            SendError::Permanent(self.to_string())
        }
    }
}

/// The homeserver, called as the bridge's bot.
#[derive(Debug, Clone)]
pub struct Homeserver {
    base: String,
    token: AppserviceToken,
    versions: SupportedVersions,
    agent: ureq::Agent,
}

/// The longest answer taken (a file from the media repository).
const MAX_ANSWER_BYTES: u64 = threadline_protocol::limits::MAX_BLOB_BYTES + 64 * 1024;

impl Homeserver {
    /// The homeserver at `base` (`https://matrix.shop.example`), called with `token`.
    pub fn new(base: &str, token: AppserviceToken) -> Result<Self, String> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(format!("`{base}` is not an http(s) URL"));
        }
        // Authenticated media needs v1.11; every homeserver the bridge talks to speaks it.
        let versions = SupportedVersions::from_parts(&["v1.11".to_owned()], &BTreeMap::new());
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .build();
        Ok(Homeserver {
            base,
            token,
            versions,
            agent,
        })
    }

    /// Sends `request` as the bot and reads the answer.
    pub async fn call<R>(&self, request: R) -> Result<R::IncomingResponse, MatrixError>
    where
        R: OutgoingRequest<PathBuilder = VersionHistory, Authentication = AccessToken>
            + Send
            + 'static,
        R::IncomingResponse: Send + 'static,
    {
        let http = request
            .try_into_http_request::<Vec<u8>>(
                &self.base,
                SendAccessToken::Always(self.token.as_str()),
                Cow::Borrowed(&self.versions),
            )
            .map_err(|err| MatrixError::local(format!("cannot make the request: {err}")))?;
        let agent = self.agent.clone();
        tokio::task::spawn_blocking(move || {
            let (parts, body) = http.into_parts();
            let mut call = agent.request(parts.method.as_str(), &parts.uri.to_string());
            for (name, value) in &parts.headers {
                if let Ok(value) = value.to_str() {
                    call = call.set(name.as_str(), value);
                }
            }
            let response = match call.send_bytes(&body) {
                Ok(response) => response,
                Err(ureq::Error::Status(status, response)) => {
                    let body = response.into_string().unwrap_or_default();
                    return Err(refusal(status, &body));
                }
                Err(err) => return Err(MatrixError::local(err.to_string())),
            };
            let status = response.status();
            let mut builder = http::Response::builder().status(status);
            for name in response.headers_names() {
                if let Some(value) = response.header(&name) {
                    builder = builder.header(name.as_str(), value);
                }
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(response.into_reader(), MAX_ANSWER_BYTES),
                &mut bytes,
            )
            .map_err(|err| MatrixError::local(format!("reading the answer: {err}")))?;
            let answer = builder
                .body(bytes.as_slice())
                .map_err(|err| MatrixError::local(err.to_string()))?;
            R::IncomingResponse::try_from_http_response(answer).map_err(|err| MatrixError {
                status,
                message: format!("an answer that does not parse: {err}"),
            })
        })
        .await
        .map_err(|err| MatrixError::local(format!("the call's task failed: {err}")))?
    }
}

/// The homeserver's refusal, from its `errcode` and `error`.
fn refusal(status: u16, body: &str) -> MatrixError {
    #[derive(serde::Deserialize)]
    struct Refusal {
        errcode: Option<String>,
        error: Option<String>,
    }
    let message = match serde_json::from_str::<Refusal>(body) {
        Ok(Refusal { errcode, error }) => format!(
            "{} {}",
            errcode.unwrap_or_default(),
            error.unwrap_or_default()
        )
        .trim()
        .to_owned(),
        Err(_) => body.chars().take(200).collect(),
    };
    MatrixError { status, message }
}
