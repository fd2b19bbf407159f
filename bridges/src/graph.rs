//! Meta's Graph API, as the Messenger, Instagram and WhatsApp bridges use it: sending messages,
//! uploading and fetching media, and reading its errors.
//!
//! The base URL and API version are configuration (`https://graph.facebook.com`, `v21.0`), so
//! a proxy or the tests' stand-in can take Meta's place. The access token goes in the
//! `Authorization` header only, never in a URL, and never in a log or an error message.
//!
//! Errors are read from Graph's documented error body (`{"error": {"message", "type", "code",
//! "error_subcode", "fbtrace_id"}}`) and sorted into what a bridge can do about them
//! ([`GraphError::send_error`]): rate limits and passing failures are tried again with
//! back-off; a closed messaging window and every other refusal fail the reply with Meta's
//! message.

use std::time::Duration;

use serde_json::Value;

use crate::sdk::SendError;

/// How long one Graph request may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a customer's profile may take: it only names a new contact, and the webhook waits.
const PROFILE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest file a bridge downloads from Meta (the node's own limit on a file).
pub const MAX_MEDIA_BYTES: u64 = threadline_protocol::limits::MAX_BLOB_BYTES;

/// A Graph API access token (a page token, or a WhatsApp system user's token). It never
/// prints.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// A token; refused if empty.
    pub fn new(token: impl Into<String>) -> Result<Self, String> {
        let token = token.into();
        if token.trim().is_empty() {
            return Err("the access token is empty".to_owned());
        }
        Ok(AccessToken(token))
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(…)")
    }
}

/// Where the Graph API is and how to call it.
#[derive(Clone, Debug)]
pub struct GraphApi {
    base: String,
    version: String,
    token: AccessToken,
    agent: ureq::Agent,
}

/// What Graph answered instead of a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Graph API {status}: {message} (code {code}{})", subcode.map(|s| format!(", subcode {s}")).unwrap_or_default())]
pub struct GraphError {
    /// The HTTP status (0: no answer at all).
    pub status: u16,
    /// Graph's error code (0 when there was no error body).
    pub code: i64,
    /// Graph's error subcode.
    pub subcode: Option<i64>,
    /// Graph's message (or what went wrong on the way).
    pub message: String,
}

/// Graph's codes for "too many calls, slow down": 4 (app), 17 (user), 32 (page), 613 (calls
/// to this API), 80001–80009 (business use case), 130429 (WhatsApp throughput), 131048
/// (WhatsApp spam rate limit), 131056 (WhatsApp pair rate limit).
const RATE_LIMIT_CODES: [i64; 8] = [4, 17, 32, 613, 130429, 131048, 131056, 80001];

impl GraphError {
    /// Whether Graph said to slow down (HTTP 429 or a rate-limit code).
    pub fn is_rate_limit(&self) -> bool {
        self.status == 429
            || RATE_LIMIT_CODES.contains(&self.code)
            || (80001..=80009).contains(&self.code)
    }

    /// Whether Graph refused because the customer's messaging window is closed: Messenger's
    /// code 10 / subcode 2018278, or WhatsApp's 131047 (re-engagement message).
    pub fn is_window_closed(&self) -> bool {
        (self.code == 10 && self.subcode == Some(2018278)) || self.code == 131047
    }

    /// What a bridge does about it: try again later (rate limits, Graph's passing failures
    /// (codes 1 and 2, 5xx), no answer, a refused token the operator can replace), or fail the
    /// reply for good with Graph's message.
    pub fn send_error(&self) -> SendError {
        if self.is_window_closed() {
            return SendError::Permanent(format!(
                "outside the customer's messaging window: {} (code {})",
                self.message, self.code
            ));
        }
        // 190: a token Graph cannot use; 104: none reached it. The operator fixes the
        // configuration, and the reply goes then.
        if matches!(self.code, 104 | 190) {
            return SendError::Retry(format!(
                "the Graph API refused the access token (code {}): replace it in the bridge's configuration",
                self.code
            ));
        }
        let passing = self.status == 0 || self.status >= 500 || matches!(self.code, 1 | 2);
        if self.is_rate_limit() || passing {
            SendError::Retry(self.to_string())
        } else {
            SendError::Permanent(self.to_string())
        }
    }
}

/// A file to send: its bytes and what it is.
#[derive(Debug, Clone)]
pub struct Upload<'a> {
    /// The file name.
    pub name: &'a str,
    /// Its media type.
    pub media_type: &'a str,
    /// Its bytes.
    pub bytes: &'a [u8],
}

impl GraphApi {
    /// The Graph API at `base` (`https://graph.facebook.com`), version `version` (`v21.0`),
    /// called with `token`.
    pub fn new(base: &str, version: &str, token: AccessToken) -> Result<Self, String> {
        let base = base.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(format!("`{base}` is not an http(s) URL"));
        }
        let valid_version = version
            .strip_prefix('v')
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(major, minor)| {
                !major.is_empty()
                    && !minor.is_empty()
                    && major.bytes().all(|b| b.is_ascii_digit())
                    && minor.bytes().all(|b| b.is_ascii_digit())
            });
        if !valid_version {
            return Err(format!("`{version}` is not a Graph API version like v21.0"));
        }
        Ok(GraphApi {
            base: base.to_owned(),
            version: version.to_owned(),
            token,
            agent: ureq::AgentBuilder::new().timeout(TIMEOUT).build(),
        })
    }

    /// `POST /{version}/{node}/messages` with a JSON body; Graph's answer.
    pub async fn post_message(&self, node: &str, body: Value) -> Result<Value, GraphError> {
        let url = self.url(&format!("{node}/messages"))?;
        self.blocking(move |agent, token| {
            read_json(
                agent
                    .post(&url)
                    .set("Authorization", &format!("Bearer {}", token.0))
                    .send_json(body),
            )
        })
        .await
    }

    /// `POST /{version}/{node}/{edge}` as `multipart/form-data`: text `fields`, then `file`
    /// under `file_field` (Messenger's `filedata`, WhatsApp's `file`).
    pub async fn post_multipart(
        &self,
        node: &str,
        edge: &str,
        fields: Vec<(&'static str, String)>,
        file_field: &'static str,
        file: Upload<'_>,
    ) -> Result<Value, GraphError> {
        let url = self.url(&format!("{node}/{edge}"))?;
        let boundary = format!("threadline-{:016x}", rand_boundary());
        let body = multipart(&boundary, &fields, file_field, &file);
        self.blocking(move |agent, token| {
            read_json(
                agent
                    .post(&url)
                    .set("Authorization", &format!("Bearer {}", token.0))
                    .set(
                        "Content-Type",
                        &format!("multipart/form-data; boundary={boundary}"),
                    )
                    .send_bytes(&body),
            )
        })
        .await
    }

    /// A WhatsApp media file by its id: `GET /{version}/{media-id}` for its URL, then its
    /// bytes from there (with the token), checked against the SHA-256 Graph gives, and at most
    /// [`MAX_MEDIA_BYTES`]. Answers the bytes and their media type.
    pub async fn whatsapp_media(&self, media_id: &str) -> Result<(Vec<u8>, String), GraphError> {
        let url = self.url(media_id)?;
        let (agent, token) = (self.agent.clone(), self.token.clone());
        let lookup = self
            .blocking(move |agent, token| {
                read_json(
                    agent
                        .get(&url)
                        .set("Authorization", &format!("Bearer {}", token.0))
                        .call(),
                )
            })
            .await?;
        let local = |message: String| GraphError {
            status: 0,
            code: 0,
            subcode: None,
            message,
        };
        let file_url = lookup["url"]
            .as_str()
            .ok_or_else(|| local("the media lookup gave no url".to_owned()))?
            .to_owned();
        let mime_type = lookup["mime_type"]
            .as_str()
            .unwrap_or("application/octet-stream")
            .to_owned();
        let sha256 = lookup["sha256"].as_str().map(str::to_owned);
        let bytes = tokio::task::spawn_blocking(move || {
            download(
                agent
                    .get(&file_url)
                    .set("Authorization", &format!("Bearer {}", token.0)),
            )
        })
        .await
        .map_err(|err| local(format!("download task failed: {err}")))??;
        if let Some(expected) = sha256 {
            let actual = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
            if !hex::encode(actual).eq_ignore_ascii_case(&expected) {
                return Err(local(format!(
                    "media {media_id}: the bytes do not match the SHA-256 WhatsApp gave"
                )));
            }
        }
        Ok((bytes, mime_type))
    }

    /// The name a Messenger or Instagram customer goes by, from the User Profile API:
    /// `GET /{version}/{PSID}?fields=first_name,last_name` (Messenger) or
    /// `GET /{version}/{IGSID}?fields=name,username` (Instagram). `Ok(None)` when the profile
    /// has no name.
    pub async fn profile_name(
        &self,
        id: &str,
        instagram: bool,
    ) -> Result<Option<String>, GraphError> {
        let fields = if instagram {
            "name,username"
        } else {
            "first_name,last_name"
        };
        let url = format!("{}?fields={fields}", self.url(id)?);
        let profile = self
            .blocking(move |agent, token| {
                read_json(
                    agent
                        .get(&url)
                        .timeout(PROFILE_TIMEOUT)
                        .set("Authorization", &format!("Bearer {}", token.0))
                        .call(),
                )
            })
            .await?;
        let text = |field: &str| {
            profile[field]
                .as_str()
                .map(str::trim)
                .filter(|value| !value.is_empty())
        };
        let name = if instagram {
            text("name").or_else(|| text("username")).map(str::to_owned)
        } else {
            match (text("first_name"), text("last_name")) {
                (Some(first), Some(last)) => Some(format!("{first} {last}")),
                (first, last) => first.or(last).map(str::to_owned),
            }
        };
        Ok(name)
    }

    /// A file a Messenger or Instagram webhook points at (a CDN URL: no token is sent), at
    /// most [`MAX_MEDIA_BYTES`]. Answers the bytes and the media type the server gave.
    pub async fn download_public(&self, url: &str) -> Result<(Vec<u8>, String), GraphError> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(GraphError {
                status: 0,
                code: 0,
                subcode: None,
                message: "the attachment's URL is not http(s)".to_owned(),
            });
        }
        let (agent, url) = (self.agent.clone(), url.to_owned());
        tokio::task::spawn_blocking(move || {
            let response = agent.get(&url).call().map_err(graph_error)?;
            let media_type = response.content_type().to_owned();
            let bytes = read_limited(response)?;
            Ok((bytes, media_type))
        })
        .await
        .map_err(|err| GraphError {
            status: 0,
            code: 0,
            subcode: None,
            message: format!("download task failed: {err}"),
        })?
    }

    fn url(&self, path: &str) -> Result<String, GraphError> {
        // Ids are Graph's (digits, or `me`): nothing that could leave the path.
        if path.is_empty() || path.split('/').any(|part| part.is_empty() || part == "..") {
            return Err(GraphError {
                status: 0,
                code: 0,
                subcode: None,
                message: format!("`{path}` is not a Graph path"),
            });
        }
        let escaped: String = path
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
            .collect();
        Ok(format!("{}/{}/{escaped}", self.base, self.version))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&ureq::Agent, &AccessToken) -> Result<T, GraphError> + Send + 'static,
    ) -> Result<T, GraphError> {
        let (agent, token) = (self.agent.clone(), self.token.clone());
        tokio::task::spawn_blocking(move || call(&agent, &token))
            .await
            .map_err(|err| GraphError {
                status: 0,
                code: 0,
                subcode: None,
                message: format!("request task failed: {err}"),
            })?
    }
}

pub(crate) fn rand_boundary() -> u64 {
    let mut bytes = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    u64::from_le_bytes(bytes)
}

/// A `multipart/form-data` body (RFC 7578).
pub(crate) fn multipart(
    boundary: &str,
    fields: &[(&'static str, String)],
    file_field: &str,
    file: &Upload<'_>,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(file.bytes.len() + 512);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    let filename: String = file
        .name
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '\\'))
        .collect();
    let media_type: String = file
        .media_type
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .collect();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"{filename}\"\r\nContent-Type: {media_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file.bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// Graph's answer as JSON, or its error.
fn read_json(result: Result<ureq::Response, ureq::Error>) -> Result<Value, GraphError> {
    let response = result.map_err(graph_error)?;
    response.into_json().map_err(|err| GraphError {
        status: 200,
        code: 0,
        subcode: None,
        message: format!("unreadable answer: {err}"),
    })
}

fn download(request: ureq::Request) -> Result<Vec<u8>, GraphError> {
    read_limited(request.call().map_err(graph_error)?)
}

fn read_limited(response: ureq::Response) -> Result<Vec<u8>, GraphError> {
    crate::webhook::read_file(response).map_err(|message| GraphError {
        status: 200,
        code: 0,
        subcode: None,
        message,
    })
}

/// A failed call as a [`GraphError`]: Graph's error body when it sent one.
fn graph_error(err: ureq::Error) -> GraphError {
    match err {
        ureq::Error::Status(status, response) => {
            let body: Value = response.into_json().unwrap_or(Value::Null);
            let error = &body["error"];
            GraphError {
                status,
                code: error["code"].as_i64().unwrap_or(0),
                subcode: error["error_subcode"].as_i64(),
                message: error["message"]
                    .as_str()
                    .unwrap_or("no error message")
                    .to_owned(),
            }
        }
        // A transport error names the URL, never the token (it is in a header).
        ureq::Error::Transport(transport) => GraphError {
            status: 0,
            code: 0,
            subcode: None,
            message: transport.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: u16, code: i64, subcode: Option<i64>) -> GraphError {
        GraphError {
            status,
            code,
            subcode,
            message: "m".to_owned(),
        }
    }

    #[test]
    fn errors_are_sorted_into_what_a_bridge_can_do() {
        let retry = |e: GraphError| matches!(e.send_error(), SendError::Retry(_));
        assert!(retry(error(400, 613, None)));
        assert!(retry(error(429, 130429, None)));
        assert!(retry(error(400, 80004, Some(2446079))));
        assert!(retry(error(500, 1, None)));
        assert!(retry(error(0, 0, None)));
        assert!(retry(error(401, 190, None)));
        let window = error(400, 10, Some(2018278)).send_error();
        assert!(
            matches!(&window, SendError::Permanent(reason) if reason.contains("messaging window")),
            "{window:?}"
        );
        assert!(matches!(
            error(400, 131047, None).send_error(),
            SendError::Permanent(_)
        ));
        assert!(matches!(
            error(400, 100, None).send_error(),
            SendError::Permanent(_)
        ));
    }

    #[test]
    fn the_token_never_prints_and_urls_stay_in_graph() {
        let token = AccessToken::new("EAAG-secret").expect("token");
        let api = GraphApi::new("http://127.0.0.1:9/", "v21.0", token).expect("api");
        assert!(!format!("{api:?}").contains("EAAG-secret"));
        assert_eq!(
            api.url("123/messages").expect("url"),
            "http://127.0.0.1:9/v21.0/123/messages"
        );
        assert!(api.url("../oauth").is_err());
        assert!(GraphApi::new("ftp://x", "v21.0", AccessToken::new("t").expect("t")).is_err());
        assert!(GraphApi::new("http://x", "21", AccessToken::new("t").expect("t")).is_err());
        assert!(AccessToken::new(" ").is_err());
    }

    #[test]
    fn a_multipart_body_has_each_field_and_the_file() {
        let body = multipart(
            "b",
            &[("messaging_product", "whatsapp".to_owned())],
            "file",
            &Upload {
                name: "a\"b.png",
                media_type: "image/png",
                bytes: b"PNG",
            },
        );
        let text = String::from_utf8(body).expect("utf-8");
        assert_eq!(
            text,
            "--b\r\nContent-Disposition: form-data; name=\"messaging_product\"\r\n\r\nwhatsapp\r\n\
             --b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"ab.png\"\r\nContent-Type: image/png\r\n\r\nPNG\r\n--b--\r\n"
        );
    }
}
