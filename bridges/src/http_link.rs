//! The link of a standalone bridge: the node's bridge API over HTTP, with the bridge's token
//! (docs/API.md, "Bridge API"). Each call is one request; [`crate::sdk::Bridge`] retries.

use std::time::Duration;

use serde_json::{json, Value};
use threadline_protocol::{
    channel::Handle,
    event::{Attachment, ReceiptKind, Template},
    id::BlobHash,
    limits::MAX_BLOB_BYTES,
    name::ExternalId,
    Event, EventId, ThreadId, Timestamp,
};

use crate::sdk::{
    ConversationEntry, Delivery, HandoffCode, Identity, LinkError, NodeLink, Resolved, Submitted,
};

/// Requests give up after this long (the node answers submissions once they are durable).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The bridge API of a node at `base` (`http://127.0.0.1:7420`), as a bridge with `token`.
#[derive(Clone)]
pub struct HttpLink {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for HttpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLink")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl HttpLink {
    /// The link to the node at `base` with the bridge token `token`.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        HttpLink {
            base: base.into().trim_end_matches('/').to_owned(),
            token: token.into(),
            agent: ureq::AgentBuilder::new().timeout(TIMEOUT).build(),
        }
    }

    /// One request with a JSON body (or none) and a JSON answer; see [`HttpLink::send`].
    async fn call(
        &self,
        method: &'static str,
        path: String,
        body: Option<Value>,
    ) -> Result<Value, LinkError> {
        let body = match body {
            Some(body) => Body::Json(body),
            None => Body::Empty,
        };
        self.send(method, path, body, |response| {
            response
                .into_json::<Value>()
                .map_err(|err| LinkError::Unavailable(format!("unreadable answer: {err}")))
        })
        .await
    }

    /// One request, on a blocking thread; `read` makes the answer of a success, and the
    /// node's error becomes a [`LinkError`] (unavailable: connection failures, 5xx,
    /// `not_yet`, `missing_attachment`; refused: the rest).
    async fn send<T: Send + 'static>(
        &self,
        method: &'static str,
        path: String,
        body: Body,
        read: impl FnOnce(ureq::Response) -> Result<T, LinkError> + Send + 'static,
    ) -> Result<T, LinkError> {
        let (agent, url, token) = (
            self.agent.clone(),
            format!("{}/api/v1{path}", self.base),
            self.token.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let request = agent
                .request(method, &url)
                .set("Authorization", &format!("Bearer {token}"));
            let result = match body {
                Body::Json(body) => request.send_json(body),
                Body::Bytes(bytes) => request
                    .set("Content-Type", "application/octet-stream")
                    .send_bytes(&bytes),
                Body::Empty => request.call(),
            };
            match result {
                Ok(response) => read(response),
                Err(ureq::Error::Status(status, response)) => {
                    let body: Value = response.into_json().unwrap_or(Value::Null);
                    let code = body["error"]["code"]
                        .as_str()
                        .unwrap_or("unknown")
                        .to_owned();
                    let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
                    // 429: too much of this bridge's in flight at the node; soon it is not.
                    if status >= 500
                        || status == 429
                        || code == "not_yet"
                        || code == "missing_attachment"
                    {
                        Err(LinkError::Unavailable(format!(
                            "{status} {code}: {message}"
                        )))
                    } else {
                        Err(LinkError::Refused { code, message })
                    }
                }
                Err(err) => Err(LinkError::Unavailable(err.to_string())),
            }
        })
        .await
        .map_err(|err| LinkError::Unavailable(format!("request task failed: {err}")))?
    }
}

/// What a request carries.
enum Body {
    Empty,
    Json(Value),
    Bytes(Vec<u8>),
}

/// The attachments under `attachments` in a delivery or a message (none if absent).
fn attachments(value: &Value) -> Result<Vec<Attachment>, LinkError> {
    match &value["attachments"] {
        Value::Null => Ok(Vec::new()),
        list => serde_json::from_value(list.clone())
            .map_err(|err| LinkError::Unavailable(format!("unreadable attachments: {err}"))),
    }
}

fn template(value: &Value) -> Result<Option<Template>, LinkError> {
    match &value["template"] {
        Value::Null => Ok(None),
        template => serde_json::from_value(template.clone())
            .map(Some)
            .map_err(|err| LinkError::Unavailable(format!("unreadable template: {err}"))),
    }
}

fn field<T: std::str::FromStr>(value: &Value, name: &str) -> Result<T, LinkError> {
    value[name]
        .as_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            LinkError::Unavailable(format!("the node's answer has no valid `{name}`: {value}"))
        })
}

/// The list under `name` in the node's answer.
fn list<'a>(answer: &'a Value, name: &str) -> Result<&'a Vec<Value>, LinkError> {
    answer[name]
        .as_array()
        .ok_or_else(|| LinkError::Unavailable(format!("no {name}: {answer}")))
}

fn ids(value: &Value) -> Result<Vec<EventId>, LinkError> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str()?.parse().ok())
                .collect()
        })
        .ok_or_else(|| LinkError::Unavailable(format!("not a list of ids: {value}")))
}

fn query(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl NodeLink for HttpLink {
    async fn resolve(
        &self,
        handle: &Handle,
        hint: Option<&crate::sdk::ThreadHint>,
        sender: crate::sdk::Sender<'_>,
    ) -> Result<Resolved, LinkError> {
        let mut body = json!({ "handle": handle.to_string() });
        if let Some(name) = sender.name {
            body["name"] = json!(name);
        }
        if sender.automatic {
            body["automatic"] = json!(true);
        }
        match hint {
            Some(crate::sdk::ThreadHint::Thread(thread)) => {
                body["thread"] = json!(thread.to_string());
            }
            Some(crate::sdk::ThreadHint::Token(token)) => {
                body["token"] = json!(hex::encode(token));
            }
            None => {}
        }
        let answer = self
            .call("POST", "/bridge/resolve".to_owned(), Some(body))
            .await?;
        Ok(Resolved {
            contact: field(&answer, "contact")?,
            thread: field(&answer, "thread")?,
            parents: ids(&answer["parents"])?,
            depth: answer["depth"]
                .as_u64()
                .ok_or_else(|| LinkError::Unavailable("no depth".to_owned()))?,
        })
    }

    async fn submit(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<Result<Submitted, LinkError>>, LinkError> {
        let encoded = events
            .iter()
            .map(|event| event.to_bytes().map(hex::encode))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| LinkError::Refused {
                code: "malformed".to_owned(),
                message: err.to_string(),
            })?;
        let answer = self
            .call(
                "POST",
                "/bridge/events".to_owned(),
                Some(json!({ "events": encoded })),
            )
            .await?;
        let results = list(&answer, "results")?;
        Ok(results
            .iter()
            .map(|result| match result["status"].as_str() {
                Some("stored") => Ok(Submitted::Stored(field(result, "id")?)),
                Some("duplicate") => Ok(Submitted::Duplicate(field(result, "id")?)),
                _ => {
                    let code = result["code"].as_str().unwrap_or("refused").to_owned();
                    let message = result["message"].as_str().unwrap_or("").to_owned();
                    // `missing_attachment`: the retry uploads it again.
                    if code == "not_yet" || code == "missing_attachment" {
                        Err(LinkError::Unavailable(message))
                    } else {
                        Err(LinkError::Refused { code, message })
                    }
                }
            })
            .collect())
    }

    async fn deliveries(&self, limit: usize) -> Result<Vec<Delivery>, LinkError> {
        let answer = self
            .call("GET", format!("/bridge/deliveries?limit={limit}"), None)
            .await?;
        list(&answer, "deliveries")?
            .iter()
            .map(|d| {
                Ok(Delivery {
                    seq: d["seq"]
                        .as_u64()
                        .ok_or_else(|| LinkError::Unavailable("no seq".to_owned()))?,
                    thread: field::<ThreadId>(d, "thread")?,
                    event: field(d, "event")?,
                    depth: d["depth"]
                        .as_u64()
                        .ok_or_else(|| LinkError::Unavailable("no depth".to_owned()))?,
                    handle: field(d, "handle")?,
                    text: d["text"].as_str().unwrap_or_default().to_owned(),
                    attachments: attachments(d)?,
                    template: template(d)?,
                    reply_to: d["reply_to"]
                        .as_str()
                        .and_then(|id| ExternalId::new(id).ok()),
                    opted_out: d["opted_out"].as_bool().unwrap_or(false),
                })
            })
            .collect()
    }

    async fn ack(&self, seq: u64) -> Result<(), LinkError> {
        self.call(
            "POST",
            format!("/bridge/deliveries/{seq}/ack"),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    async fn handoff_code(
        &self,
        handle: &Handle,
        to: threadline_protocol::ChannelKind,
    ) -> Result<HandoffCode, LinkError> {
        let answer = self
            .call(
                "POST",
                "/bridge/handoff-codes".to_owned(),
                Some(json!({ "handle": handle.to_string(), "channel": to.as_str() })),
            )
            .await?;
        answer["code"]
            .as_str()
            .and_then(HandoffCode::parse)
            .ok_or_else(|| LinkError::Unavailable("the node's answer has no code".to_owned()))
    }

    async fn continue_with(
        &self,
        handle: &Handle,
        code: &HandoffCode,
    ) -> Result<Option<ThreadId>, LinkError> {
        let answer = self
            .call(
                "POST",
                "/bridge/handoff-codes/redeem".to_owned(),
                Some(json!({ "handle": handle.to_string(), "code": code.as_str() })),
            )
            .await?;
        match &answer["thread"] {
            Value::Null => Ok(None),
            thread => thread
                .as_str()
                .and_then(|text| text.parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    LinkError::Unavailable("the node's answer has no thread id".to_owned())
                }),
        }
    }

    async fn identify(&self, handle: &Handle, identity: Identity) -> Result<(), LinkError> {
        let body = match identity {
            Identity::Claimed(claimed) => {
                json!({ "handle": handle.to_string(), "claimed": claimed.to_string() })
            }
            Identity::Vouched(vouched) => {
                json!({ "handle": handle.to_string(), "vouched": vouched.to_string() })
            }
        };
        self.call("POST", "/bridge/identify".to_owned(), Some(body))
            .await
            .map(drop)
    }

    async fn consent(&self, handle: &Handle, granted: bool) -> Result<(), LinkError> {
        let body = json!({ "handle": handle.to_string(), "granted": granted });
        self.call("POST", "/bridge/consent".to_owned(), Some(body))
            .await
            .map(drop)
    }

    async fn customer_typing(&self, handle: &Handle) {
        // Best effort: a lost typing signal is nothing.
        let _ = self
            .call(
                "POST",
                "/bridge/typing".to_owned(),
                Some(json!({ "handle": handle.to_string() })),
            )
            .await;
    }

    async fn agents_online(&self) -> bool {
        self.call("GET", "/bridge/presence".to_owned(), None)
            .await
            .is_ok_and(|answer| answer["agents_online"] == true)
    }

    async fn thread_messages(
        &self,
        thread: threadline_protocol::ThreadId,
    ) -> Result<Vec<crate::sdk::ThreadMessage>, LinkError> {
        let answer = self
            .call("GET", format!("/bridge/threads/{thread}/messages"), None)
            .await?;
        list(&answer, "messages")?
            .iter()
            .map(|m| {
                Ok(crate::sdk::ThreadMessage {
                    event: field(m, "event")?,
                    depth: m["depth"].as_u64().unwrap_or(0),
                    inbound: m["inbound"] == true,
                    channel: m["channel"].as_str().and_then(|c| c.parse().ok()),
                    text: m["text"].as_str().map(str::to_owned),
                    at: Timestamp::from_millis(m["at"].as_u64().unwrap_or(0)),
                    external_id: m["external_id"].as_str().map(str::to_owned),
                    attachments: attachments(m)?,
                    subject: m["subject"].as_str().map(str::to_owned),
                })
            })
            .collect()
    }

    async fn put_blob(&self, bytes: Vec<u8>) -> Result<BlobHash, LinkError> {
        let answer = self
            .send(
                "POST",
                "/bridge/blobs".to_owned(),
                Body::Bytes(bytes),
                |r| {
                    r.into_json::<Value>()
                        .map_err(|err| LinkError::Unavailable(format!("unreadable answer: {err}")))
                },
            )
            .await?;
        field(&answer, "blob")
    }

    async fn blob(&self, blob: BlobHash) -> Result<Option<Vec<u8>>, LinkError> {
        let read = |response: ureq::Response| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(response.into_reader(), MAX_BLOB_BYTES + 1),
                &mut bytes,
            )
            .map_err(|err| LinkError::Unavailable(format!("reading attachment: {err}")))?;
            Ok(Some(bytes))
        };
        match self
            .send("GET", format!("/bridge/blobs/{blob}"), Body::Empty, read)
            .await
        {
            Err(LinkError::Refused { code, .. }) if code == "not_found" => Ok(None),
            other => other,
        }
    }

    async fn conversation(&self, handle: &Handle) -> Result<Vec<ConversationEntry>, LinkError> {
        let answer = self
            .call(
                "GET",
                format!("/bridge/conversation?handle={}", query(&handle.to_string())),
                None,
            )
            .await?;
        list(&answer, "messages")?
            .iter()
            .map(|m| {
                Ok(ConversationEntry {
                    thread: field(m, "thread")?,
                    event: field(m, "event")?,
                    depth: m["depth"].as_u64().unwrap_or(0),
                    inbound: m["inbound"] == true,
                    text: m["text"].as_str().map(str::to_owned),
                    at: Timestamp::from_millis(m["at"].as_u64().unwrap_or(0)),
                    receipt: m["receipt"].as_str().and_then(ReceiptKind::from_name),
                    seen: m["seen"] == true,
                    routed_to: m["routed_to"].as_str().and_then(|c| c.parse().ok()),
                    external_id: m["external_id"]
                        .as_str()
                        .and_then(|id| ExternalId::new(id).ok()),
                    attachments: attachments(m)?,
                })
            })
            .collect()
    }
}
