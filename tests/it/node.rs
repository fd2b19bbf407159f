//! The node as agents and bridges meet it: the real `threadline` binary on a free loopback
//! port, driven over HTTP.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use threadline_protocol::{
    event::{Content, Draft, EventKind, Scope},
    name::ExternalId,
    ChannelKind, Event, EventId, Handle, SecretKey, ThreadId, Timestamp,
};
use threadline_tests::{edit_config, field, run_threadline, threadline_ok, Node};

/// A data folder with an org, a node, an agent and a web chat and an email bridge.
pub(crate) struct Org {
    _tmp: tempfile::TempDir,
    pub(crate) data: std::path::PathBuf,
    pub(crate) agent_token: String,
    pub(crate) webchat: Bridge,
    pub(crate) email: Bridge,
}

pub(crate) struct Bridge {
    pub(crate) key: SecretKey,
    pub(crate) token: String,
    pub(crate) channel: ChannelKind,
}

impl Org {
    pub(crate) fn new() -> Org {
        Org::made(threadline_ok)
    }

    /// An org made with the clock at `offset` (`-4h`): its agent's and bridges' certificates
    /// are valid from then, for a node started with its clock there.
    pub(crate) fn made_at(offset: &str) -> Org {
        Org::made(|data, args| threadline_tests::threadline_ok_ahead(data, args, offset))
    }

    fn made(run: impl Fn(&std::path::Path, &[&str]) -> String) -> Org {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let init = run(&data, &["init"]);
        let agent_token = field(&init, "token:");
        // These tests play the web chat bridge themselves, over the bridge API.
        edit_config(&data, |text| {
            text.replace("builtin = true", "builtin = false")
        });
        let bridge = |channel: ChannelKind| {
            bridge_of(run(&data, &["bridge", "add", channel.as_str()]), channel)
        };
        let webchat = bridge(ChannelKind::Webchat);
        let email = bridge(ChannelKind::Email);
        Org {
            _tmp: tmp,
            data,
            agent_token,
            webchat,
            email,
        }
    }

    /// Certifies another bridge (before the node starts: the CLI opens the store).
    pub(crate) fn bridge(&self, channel: ChannelKind) -> Bridge {
        add_bridge(&self.data, channel)
    }
}

pub(crate) fn add_bridge(data: &std::path::Path, channel: ChannelKind) -> Bridge {
    bridge_of(
        threadline_ok(data, &["bridge", "add", channel.as_str()]),
        channel,
    )
}

/// The bridge `bridge add` printed `out` for.
fn bridge_of(out: String, channel: ChannelKind) -> Bridge {
    let seed: [u8; 32] = hex::decode(field(&out, "bridge key:"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    Bridge {
        key: SecretKey::from_seed(seed),
        token: field(&out, "token:"),
        channel,
    }
}

pub(crate) fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    Timestamp::from_millis(millis as u64)
}

/// The bridge's inbound message, signed, as hex: resolve the handle, then sign on its thread.
pub(crate) fn inbound(
    node: &Node,
    bridge: &Bridge,
    handle: &str,
    text: &str,
    external_id: &str,
) -> (ThreadId, String) {
    inbound_at(node, bridge, handle, text, external_id, now())
}

/// [`inbound`], written at `at`.
pub(crate) fn inbound_at(
    node: &Node,
    bridge: &Bridge,
    handle: &str,
    text: &str,
    external_id: &str,
    at: Timestamp,
) -> (ThreadId, String) {
    let (status, resolved) = node.post(
        &bridge.token,
        "/api/v1/bridge/resolve",
        &json!({"handle": handle}),
    );
    assert_eq!(status, 200, "resolve: {resolved}");
    let thread: ThreadId = resolved["thread"]
        .as_str()
        .expect("thread")
        .parse()
        .expect("thread id");
    let parents: Vec<EventId> = resolved["parents"]
        .as_array()
        .expect("parents")
        .iter()
        .map(|p| p.as_str().expect("id").parse().expect("event id"))
        .collect();
    let depth = resolved["depth"].as_u64().expect("depth");
    let handle: Handle = handle.parse().expect("handle");
    let event = Draft::new(
        Scope::Thread(thread),
        parents,
        depth,
        at,
        EventKind::inbound_message(bridge.channel),
    )
    .with_content(
        Content::text(text)
            .with_handle(handle)
            .with_external_id(ExternalId::new(external_id).expect("valid id")),
    )
    .sign(&bridge.key)
    .expect("signs");
    (thread, hex::encode(event.to_bytes().expect("encodes")))
}

/// Posts a 3 MiB JSON body over a raw socket: the node answers 413 and may close the socket
/// before the body is all sent, so the body is written from another thread and a write error
/// is expected and ignored.
fn post_oversize(node: &Node, token: &str, path: &str) -> (u16, Value) {
    use std::io::{Read as _, Write as _};
    let address = node.base.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).expect("connects");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let body = format!("{{\"text\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut writer = stream.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let _ = writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(body.as_bytes()));
    });
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let json = text
        .find("\r\n\r\n")
        .and_then(|at| serde_json::from_str(text[at + 4..].trim()).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// Resolves, signs and submits one inbound message, and checks it was stored.
pub(crate) fn send(
    node: &Node,
    bridge: &Bridge,
    handle: &str,
    text: &str,
    external_id: &str,
) -> ThreadId {
    let (thread, message) = inbound(node, bridge, handle, text, external_id);
    let results = submit(node, bridge, &[message]);
    assert_eq!(results[0]["status"], "stored", "{results:?}");
    thread
}

pub(crate) fn submit(node: &Node, bridge: &Bridge, events: &[String]) -> Vec<Value> {
    let (status, answer) = node.post(
        &bridge.token,
        "/api/v1/bridge/events",
        &json!({"events": events}),
    );
    assert_eq!(status, 200, "submit: {answer}");
    answer["results"].as_array().expect("results").clone()
}

fn thread_texts(node: &Node, token: &str, thread: &ThreadId) -> Vec<(String, String)> {
    let (status, detail) = node.get(token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(status, 200, "{detail}");
    detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| {
            e["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("thread.message"))
        })
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_owned(),
                e["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn inbound_message_opens_a_thread_and_the_reply_is_queued_for_that_handle_only() {
    let org = Org::new();
    let node = Node::start(&org.data);

    // Alice writes on the web chat; Bob too.
    let (alice_thread, alice_msg) = inbound(
        &node,
        &org.webchat,
        "webchat:alice-visitor",
        "Where is my order?",
        "wc-1",
    );
    let (bob_thread, bob_msg) = inbound(
        &node,
        &org.webchat,
        "webchat:bob-visitor",
        "Do you ship to Norway?",
        "wc-2",
    );
    assert_ne!(alice_thread, bob_thread);
    let results = submit(&node, &org.webchat, &[alice_msg.clone(), bob_msg]);
    assert!(
        results.iter().all(|r| r["status"] == "stored"),
        "{results:?}"
    );

    // A retried webhook is a duplicate, stored once.
    let results = submit(&node, &org.webchat, &[alice_msg]);
    assert_eq!(results[0]["status"], "duplicate");
    let (_, again) = inbound(
        &node,
        &org.webchat,
        "webchat:alice-visitor",
        "Where is my order?",
        "wc-1",
    );
    let results = submit(&node, &org.webchat, &[again]);
    assert_eq!(
        results[0]["status"], "duplicate",
        "same external id, new signature: still a duplicate"
    );

    // The agent sees two threads, each with its own contact.
    let (status, page) = node.get(&org.agent_token, "/api/v1/threads");
    assert_eq!(status, 200);
    let threads = page["threads"].as_array().expect("threads");
    assert_eq!(threads.len(), 2);
    let contacts: BTreeSet<&str> = threads
        .iter()
        .map(|t| t["contact"].as_str().expect("contact"))
        .collect();
    assert_eq!(contacts.len(), 2);
    assert_eq!(
        thread_texts(&node, &org.agent_token, &alice_thread),
        vec![(
            "thread.message.inbound".to_owned(),
            "Where is my order?".to_owned()
        )]
    );

    // The agent replies to Alice: queued for Alice's handle on the web chat, and nothing else.
    let (status, done) = node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{alice_thread}/replies"),
        &json!({"text": "It ships today."}),
    );
    assert_eq!(status, 200, "{done}");
    let (status, queue) = node.get(&org.webchat.token, "/api/v1/bridge/deliveries");
    assert_eq!(status, 200);
    let deliveries = queue["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 1, "{queue}");
    assert_eq!(deliveries[0]["handle"], "webchat:alice-visitor");
    assert_eq!(deliveries[0]["text"], "It ships today.");
    assert_eq!(deliveries[0]["thread"], alice_thread.to_string());
    let (_, email_queue) = node.get(&org.email.token, "/api/v1/bridge/deliveries");
    assert_eq!(
        email_queue["deliveries"]
            .as_array()
            .expect("deliveries")
            .len(),
        0
    );

    // The bridge acknowledges it: the queue is empty.
    let seq = deliveries[0]["seq"].as_u64().expect("seq");
    let (status, ack) = node.post(
        &org.webchat.token,
        &format!("/api/v1/bridge/deliveries/{seq}/ack"),
        &json!({}),
    );
    assert_eq!((status, ack["acknowledged"].as_bool()), (200, Some(true)));
    let (_, queue) = node.get(&org.webchat.token, "/api/v1/bridge/deliveries");
    assert!(queue["deliveries"]
        .as_array()
        .expect("deliveries")
        .is_empty());

    // The contact record shows the handle and the thread.
    let (status, found) = node.get(&org.agent_token, "/api/v1/contacts?q=webchat:alice-visitor");
    assert_eq!(status, 200);
    let contact = found["contacts"][0]["id"]
        .as_str()
        .expect("contact id")
        .to_owned();
    let (status, record) = node.get(&org.agent_token, &format!("/api/v1/contacts/{contact}"));
    assert_eq!(status, 200);
    assert_eq!(record["handles"], json!(["webchat:alice-visitor"]));
    assert_eq!(record["threads"].as_array().expect("threads").len(), 1);
    node.stop();
}

#[test]
fn hand_off_to_a_linked_handle_routes_replies_there_and_never_to_a_stranger() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let thread = send(
        &node,
        &org.webchat,
        "webchat:carol-visitor",
        "Please email me",
        "wc-c1",
    );
    // Someone else's email exists as another contact.
    let _ = send(
        &node,
        &org.email,
        "email:mallory@example.test",
        "hi",
        "<m@x>",
    );

    let (_, found) = node.get(&org.agent_token, "/api/v1/contacts?q=webchat:carol-visitor");
    let carol = found["contacts"][0]["id"].as_str().expect("id").to_owned();
    // Handing off to Mallory's address is refused and changes nothing.
    let (status, err) = node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{thread}/handoff"),
        &json!({"handle": "email:mallory@example.test"}),
    );
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("handle_not_of_contact"))
    );
    // Linking Mallory's address to Carol is refused too.
    let (status, err) = node.post(
        &org.agent_token,
        &format!("/api/v1/contacts/{carol}/handles"),
        &json!({"handle": "email:mallory@example.test"}),
    );
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("handle_not_of_contact"))
    );

    // Carol's own address, linked first, takes the hand-off.
    let (status, _) = node.post(
        &org.agent_token,
        &format!("/api/v1/contacts/{carol}/handles"),
        &json!({"handle": "email:Carol@Example.test"}),
    );
    assert_eq!(status, 200);
    let (status, _) = node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{thread}/handoff"),
        &json!({"handle": "email:carol@example.test"}),
    );
    assert_eq!(status, 200);
    let (status, _) = node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Here is the summary by email."}),
    );
    assert_eq!(status, 200);
    let (_, queue) = node.get(&org.email.token, "/api/v1/bridge/deliveries");
    let deliveries = queue["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["handle"], "email:carol@example.test");
    let (_, queue) = node.get(&org.webchat.token, "/api/v1/bridge/deliveries");
    assert!(queue["deliveries"]
        .as_array()
        .expect("deliveries")
        .is_empty());

    // Her WhatsApp number, linked: this node has no WhatsApp bridge, so a hand-off there is
    // refused up front (its replies would never be sent), and the route stays on email.
    let (status, _) = node.post(
        &org.agent_token,
        &format!("/api/v1/contacts/{carol}/handles"),
        &json!({"handle": "whatsapp:+14155550123"}),
    );
    assert_eq!(status, 200);
    let (status, err) = node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{thread}/handoff"),
        &json!({"handle": "whatsapp:+14155550123"}),
    );
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("no_bridge")),
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("[whatsapp]")),
        "{err}"
    );
    let (_, shown) = node.get(&org.agent_token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(
        shown["thread"]["route"]["handle"],
        "email:carol@example.test"
    );
    // Once a WhatsApp bridge is added (while the node runs), the hand-off goes.
    threadline_ok(&org.data, &["bridge", "add", "whatsapp"]);
    let (status, _) = node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{thread}/handoff"),
        &json!({"handle": "whatsapp:+14155550123"}),
    );
    assert_eq!(status, 200);
    node.stop();
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let (thread, message) = inbound(
        &node,
        &org.webchat,
        "webchat:dave-visitor",
        "hello",
        "wc-d1",
    );
    submit(&node, &org.webchat, std::slice::from_ref(&message));
    let snapshot = |node: &Node| {
        let (_, page) = node.get(&org.agent_token, "/api/v1/threads");
        let (_, detail) = node.get(&org.agent_token, &format!("/api/v1/threads/{thread}"));
        (page, detail)
    };
    let before = snapshot(&node);

    let token = &org.agent_token;
    let cases: Vec<(u16, Value, &str)> = vec![
        {
            let (s, b) = node.get("thl_not_a_token", "/api/v1/threads");
            (s, b, "unauthorized")
        },
        {
            let (s, b) = node.get(&org.webchat.token, "/api/v1/threads");
            (s, b, "forbidden")
        },
        {
            let (s, b) = node.get(token, "/api/v1/threads/not-an-id");
            (s, b, "not_found")
        },
        {
            let (s, b) = node.get(token, &format!("/api/v1/threads/{}", "ab".repeat(32)));
            (s, b, "not_found")
        },
        {
            let (s, b) = node.post_raw(
                token,
                &format!("/api/v1/threads/{thread}/replies"),
                "{\"text\": ",
            );
            (s, b, "bad_request")
        },
        {
            let (s, b) = node.post(
                token,
                &format!("/api/v1/threads/{thread}/replies"),
                &json!({"text": "  "}),
            );
            (s, b, "bad_request")
        },
        {
            let (s, b) = node.post(
                token,
                &format!("/api/v1/threads/{thread}/status"),
                &json!({"status": "archived"}),
            );
            (s, b, "bad_request")
        },
        {
            let (s, b) = post_oversize(&node, token, &format!("/api/v1/threads/{thread}/replies"));
            (s, b, "too_large")
        },
        {
            let (s, b) = node.get(token, "/api/v1/threads?status=archived");
            (s, b, "bad_request")
        },
        {
            let (s, b) = node.get(token, "/api/v1/nowhere");
            (s, b, "not_found")
        },
    ];
    for (status, body, code) in cases {
        assert_eq!(
            body["error"]["code"].as_str(),
            Some(code),
            "status {status}: {body}"
        );
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }

    // A route asked with a method it does not take: 405, with the methods it takes, and the
    // same JSON error as everything else.
    for (method, path) in [
        ("DELETE", format!("/api/v1/threads/{thread}")),
        ("GET", format!("/api/v1/threads/{thread}/replies")),
        ("PUT", "/api/v1/bridge/events".to_owned()),
    ] {
        let request = node
            .http()
            .request(method, &format!("{}{path}", node.base))
            .set("Authorization", &format!("Bearer {token}"));
        let response = match request.call() {
            Err(ureq::Error::Status(_, response)) => response,
            other => panic!("{method} {path}: {other:?}"),
        };
        assert_eq!(response.status(), 405, "{method} {path}");
        let allow = response.header("Allow").unwrap_or_default().to_owned();
        let body: Value = serde_json::from_str(&response.into_string().expect("text"))
            .unwrap_or_else(|err| panic!("{method} {path}: not JSON: {err}"));
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(method)),
            "{body}"
        );
        assert!(
            !allow.is_empty() && !allow.contains(method),
            "Allow: {allow}"
        );
    }

    // Bridge-side garbage: not hex, not an event, a forged signature, another channel.
    let mut forged = hex::decode(&message).expect("hex");
    let len = forged.len();
    forged[len - 40] ^= 1; // inside the content: the hash no longer matches
    let (_, email_on_webchat) =
        inbound(&node, &org.email, "email:dave@example.test", "hi", "<d@x>");
    let results = submit(
        &node,
        &org.webchat,
        &[
            "zz".to_owned(),
            "00".to_owned(),
            hex::encode(&forged),
            email_on_webchat,
        ],
    );
    let codes: Vec<&str> = results
        .iter()
        .map(|r| r["code"].as_str().unwrap_or("stored"))
        .collect();
    assert_eq!(
        codes,
        vec!["malformed", "malformed", "invalid_event", "forbidden"],
        "{results:?}"
    );

    // Handing the web chat bridge's token to resolve an email handle is refused.
    let (status, _) = node.post(
        &org.webchat.token,
        "/api/v1/bridge/resolve",
        &json!({"handle": "email:x@y.test"}),
    );
    assert_eq!(status, 403);

    let after = snapshot(&node);
    // The email handle resolved above created a contact and thread for it (a legitimate
    // email bridge call); Dave's thread itself is unchanged.
    assert_eq!(before.1, after.1, "Dave's thread changed");
    node.stop();
}

#[test]
fn restart_keeps_everything() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let thread = send(
        &node,
        &org.webchat,
        "webchat:erin-visitor",
        "first",
        "wc-e1",
    );
    node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "answer"}),
    );
    let (status, labelled) = node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{thread}/labels"),
        &json!({"add": ["vip", "billing", "churn-risk"]}),
    );
    assert_eq!(status, 200);
    assert_eq!(labelled["events"].as_array().map(Vec::len), Some(3));
    let (status, _) = node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{thread}/labels"),
        &json!({"add": ["billing"], "remove": ["churn-risk", "billing"]}),
    );
    assert_eq!(status, 200);
    node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{thread}/status"),
        &json!({"status": "pending"}),
    );
    let (_, before) = node.get(&org.agent_token, &format!("/api/v1/threads/{thread}"));
    node.stop();

    let node = Node::start(&org.data);
    let (status, after) = node.get(&org.agent_token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(status, 200);
    assert_eq!(before, after);
    assert_eq!(after["thread"]["labels"], json!(["vip"]));
    assert_eq!(after["thread"]["status"], "pending");
    // The thread keeps growing from where it was.
    let (_, message) = inbound(
        &node,
        &org.webchat,
        "webchat:erin-visitor",
        "second",
        "wc-e2",
    );
    let results = submit(&node, &org.webchat, &[message]);
    assert_eq!(results[0]["status"], "stored");
    let texts: Vec<String> = thread_texts(&node, &org.agent_token, &thread)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(texts, vec!["first", "answer", "second"]);
    node.stop();
}

#[test]
fn kill_9_during_a_stream_of_inbound_messages_loses_nothing_acknowledged() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let base = node.base.clone();
    let (thread, _) = inbound(&node, &org.webchat, "webchat:frank-visitor", "", "unused");
    // Four writers stream messages until the node dies; each records what was acknowledged.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let acknowledged = std::sync::Arc::clone(&acknowledged);
        let stop = std::sync::Arc::clone(&stop);
        let token = org.webchat.token.clone();
        let key = org.webchat.key.clone();
        let base = base.clone();
        writers.push(std::thread::spawn(move || {
            let http = ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(10))
                .build();
            let mut idx = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && idx < 2000 {
                idx += 1;
                let text = format!("w{writer}-m{idx}");
                let resolved: Value = match http
                    .post(&format!("{base}/api/v1/bridge/resolve"))
                    .set("Authorization", &format!("Bearer {token}"))
                    .send_json(json!({"handle": "webchat:frank-visitor"}))
                    .ok()
                    .and_then(|r| r.into_json::<Value>().ok())
                {
                    Some(v) => v,
                    None => break,
                };
                let parents: Vec<EventId> = resolved["parents"]
                    .as_array()
                    .map(|ps| ps.iter().filter_map(|p| p.as_str()?.parse().ok()).collect())
                    .unwrap_or_default();
                let Some(depth) = resolved["depth"].as_u64() else {
                    break;
                };
                let event = Draft::new(
                    Scope::Thread(thread),
                    parents,
                    depth,
                    now(),
                    EventKind::inbound_message(ChannelKind::Webchat),
                )
                .with_content(
                    Content::text(text.clone())
                        .with_handle("webchat:frank-visitor".parse().expect("handle"))
                        .with_external_id(ExternalId::new(text.clone()).expect("id")),
                )
                .sign(&key)
                .expect("signs");
                let answer = http
                    .post(&format!("{base}/api/v1/bridge/events"))
                    .set("Authorization", &format!("Bearer {token}"))
                    .send_json(json!({"events": [hex::encode(event.to_bytes().expect("encodes"))]}))
                    .ok()
                    .and_then(|r| r.into_json::<Value>().ok());
                match answer {
                    Some(answer) if answer["results"][0]["status"] == "stored" => {
                        acknowledged.lock().expect("lock").push(text);
                    }
                    _ => break,
                }
            }
        }));
    }
    // Let some messages through, then crash the node mid-stream.
    while acknowledged.lock().expect("lock").len() < 40 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    node.crash();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer thread");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() >= 40);

    let node = Node::start(&org.data);
    let stored: BTreeSet<String> = thread_texts(&node, &org.agent_token, &thread)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|t| !stored.contains(*t))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost after kill -9: {lost:?}",
        lost.len()
    );
    node.stop();
}

#[test]
fn the_live_stream_shows_new_messages_without_polling() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let response = node
        .http()
        .get(&format!("{}/api/v1/stream", node.base))
        .set("Authorization", &format!("Bearer {}", org.agent_token))
        .call()
        .expect("stream opens");
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(response.into_reader()).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (thread, message) = inbound(
        &node,
        &org.webchat,
        "webchat:gina-visitor",
        "are you there?",
        "wc-g1",
    );
    let results = submit(&node, &org.webchat, &[message]);
    let stored = results[0]["id"].as_str().expect("id").to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = None;
    while std::time::Instant::now() < deadline {
        let Ok(line) = lines_rx.recv_timeout(std::time::Duration::from_secs(1)) else {
            continue;
        };
        if let Some(data) = line.strip_prefix("data:") {
            let change: Value = serde_json::from_str(data.trim()).expect("JSON data");
            if change["event"] == stored.as_str() {
                seen = Some(change);
                break;
            }
        }
    }
    let change = seen.expect("the inbound message appears on the live stream");
    assert_eq!(change["kind"], "thread.message.inbound");
    assert_eq!(change["scope"], format!("thread:{thread}"));
    // Shutting down ends the stream instead of hanging the node.
    node.stop();
}

#[test]
fn thread_list_filters_and_pages() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let mut threads = Vec::new();
    for idx in 0..7 {
        let (thread, message) = inbound(
            &node,
            &org.webchat,
            &format!("webchat:visitor-{idx}"),
            "hi",
            &format!("wc-p{idx}"),
        );
        submit(&node, &org.webchat, &[message]);
        threads.push(thread);
    }
    let _ = send(
        &node,
        &org.email,
        "email:henry@example.test",
        "hello",
        "<h@x>",
    );
    let token = &org.agent_token;
    node.post(
        token,
        &format!("/api/v1/threads/{}/status", threads[0]),
        &json!({"status": "resolved"}),
    );
    node.post(
        token,
        &format!("/api/v1/threads/{}/labels", threads[1]),
        &json!({"add": ["billing"]}),
    );
    // Commands that read the store itself need the node stopped: a clear error, no change.
    let out = threadline_tests::run_threadline(&org.data, &["check"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is in use by another process"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = |path: &str| -> Vec<String> {
        let (status, page) = node.get(token, path);
        assert_eq!(status, 200, "{page}");
        page["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .map(|t| t["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(
        ids("/api/v1/threads?status=resolved"),
        vec![threads[0].to_string()]
    );
    assert_eq!(
        ids("/api/v1/threads?label=billing"),
        vec![threads[1].to_string()]
    );
    assert_eq!(ids("/api/v1/threads?channel=email").len(), 1);
    assert_eq!(ids("/api/v1/threads?status=open").len(), 7);
    assert_eq!(ids("/api/v1/threads?assignee=none").len(), 8);

    // Pages of 3 cover every thread exactly once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/threads?limit=3&cursor={c}"),
            None => "/api/v1/threads?limit=3".to_owned(),
        };
        let (_, page) = node.get(token, &path);
        let batch = page["threads"].as_array().expect("threads");
        assert!(batch.len() <= 3);
        seen.extend(batch.iter().map(|t| {
            (
                t["last_activity"].as_u64().expect("time"),
                t["id"].as_str().expect("id").to_owned(),
            )
        }));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8);
    let unique: BTreeSet<&String> = seen.iter().map(|(_, id)| id).collect();
    assert_eq!(unique.len(), 8);
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "newest first");
    node.stop();
}

#[test]
fn contact_records_are_shown_exported_erased_and_audited_while_the_node_runs() {
    let org = Org::new();
    let node = Node::start(&org.data);
    send(
        &node,
        &org.webchat,
        "webchat:noor-visitor",
        "my number is 555 0100",
        "wc-n1",
    );
    // Shown through the running node: the same record the API gives.
    let shown = threadline_ok(&org.data, &["contact", "show", "webchat:noor-visitor"]);
    let record: Value = serde_json::from_str(&shown).expect("the record is JSON");
    let contact = record["id"].as_str().expect("id").to_owned();
    let (_, from_api) = node.get(&org.agent_token, &format!("/api/v1/contacts/{contact}"));
    assert_eq!(record["timeline"], from_api["timeline"]);
    // Exported to a folder named relative to where the command runs (not the node's).
    let here = tempfile::tempdir().expect("tempdir");
    let exported = std::process::Command::new(threadline_tests::threadline_binary())
        .current_dir(here.path())
        .arg("--data-dir")
        .arg(&org.data)
        .args(["contact", "export", &contact, "--to", "noor"])
        .output()
        .expect("runs");
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let in_archive: Value = serde_json::from_slice(
        &std::fs::read(here.path().join("noor/record.json")).expect("record.json"),
    )
    .expect("JSON");
    assert_eq!(in_archive["timeline"], record["timeline"]);
    let to = here.path().join("noor");
    threadline_ok(&org.data, &["verify-export", to.to_str().expect("utf-8")]);
    // Exporting into a folder that is not empty is refused, and nothing is written.
    let refused = run_threadline(
        &org.data,
        &[
            "contact",
            "export",
            &contact,
            "--to",
            to.to_str().expect("utf-8"),
        ],
    );
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("not empty"), "{why}");
    // A handle nobody has: said once, nothing changed.
    let unknown = run_threadline(&org.data, &["erase", "contact", "webchat:nobody"]);
    assert!(!unknown.status.success());
    let why = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        why.contains("no contact has the handle webchat:nobody"),
        "{why}"
    );
    // Retention with no policy says so.
    let retention = threadline_ok(&org.data, &["retention"]);
    assert!(retention.contains("no retention policy"), "{retention}");
    // Erased through the running node: the API stops finding it at once.
    let erased = threadline_ok(&org.data, &["erase", "contact", &contact]);
    assert!(
        erased.contains(&format!("erased contact {contact}")),
        "{erased}"
    );
    let (_, found) = node.get(&org.agent_token, "/api/v1/contacts?q=webchat:noor-visitor");
    assert_eq!(found["contacts"], json!([]));
    let (_, after) = node.get(&org.agent_token, &format!("/api/v1/contacts/{contact}"));
    assert_eq!(after["erased"], true);
    // The audit trail, read while it runs, has the operator's view, export and erasure.
    let trail = threadline_ok(&org.data, &["audit", "--contact", &contact]);
    let operator: Vec<&str> = trail
        .lines()
        .filter(|line| line.contains("operator"))
        .collect();
    assert_eq!(operator.len(), 3, "{trail}");
    assert!(operator[0].contains("viewed"), "{trail}");
    assert!(operator[1].contains("exported"), "{trail}");
    assert!(operator[2].contains("erased"), "{trail}");
    node.stop();
}

#[test]
fn contact_export_and_erasure_from_the_command_line() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let thread = send(
        &node,
        &org.webchat,
        "webchat:ivy-visitor",
        "my address is 1 Main St",
        "wc-i1",
    );
    node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Thanks Ivy"}),
    );
    let (_, queue) = node.get(&org.webchat.token, "/api/v1/bridge/deliveries");
    assert_eq!(queue["deliveries"].as_array().map(Vec::len), Some(1));
    node.stop();

    let exported = threadline_ok(&org.data, &["contact", "show", "webchat:ivy-visitor"]);
    let record: Value = serde_json::from_str(&exported).expect("the record is JSON");
    // The signed export: the same record, and a manifest the org signed, which anyone checks.
    let archive = tempfile::tempdir().expect("tempdir");
    let to = archive.path().join("ivy");
    let to_arg = to.to_str().expect("utf-8");
    let out = threadline_ok(
        &org.data,
        &["contact", "export", "webchat:ivy-visitor", "--to", to_arg],
    );
    assert!(out.contains("signed by the org key"), "{out}");
    let in_archive: Value =
        serde_json::from_slice(&std::fs::read(to.join("record.json")).expect("record.json"))
            .expect("JSON");
    assert_eq!(in_archive, record);
    let nowhere = archive.path().join("no-data-folder");
    let verified = threadline_ok(&nowhere, &["verify-export", to_arg]);
    assert!(
        verified.starts_with("verified: the export of contact"),
        "{verified}"
    );
    assert!(
        !nowhere.exists(),
        "verifying needs no data folder and makes none"
    );
    let record_file = to.join("record.json");
    let original = std::fs::read(&record_file).expect("reads");
    let tampered = String::from_utf8(original.clone())
        .expect("utf-8")
        .replace("1 Main St", "2 Main St");
    std::fs::write(&record_file, tampered).expect("writes");
    let refused = run_threadline(&nowhere, &["verify-export", to_arg]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("record.json: its bytes are not those the manifest lists"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    std::fs::write(&record_file, original).expect("writes");
    threadline_ok(&nowhere, &["verify-export", to_arg]);
    assert_eq!(record["handles"], json!(["webchat:ivy-visitor"]));
    let texts: Vec<&str> = record["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["my address is 1 Main St", "Thanks Ivy"]);

    let out = threadline_ok(&org.data, &["erase", "contact", "webchat:ivy-visitor"]);
    assert!(out.contains("erased contact"), "{out}");
    let contact = record["id"].as_str().expect("id");
    let exported = threadline_ok(&org.data, &["contact", "show", contact]);
    let record: Value = serde_json::from_str(&exported).expect("export is JSON");
    assert_eq!(record["erased"], true);
    assert_eq!(record["handles"], json!([]));
    let events = record["timeline"].as_array().expect("timeline");
    assert!(
        events
            .iter()
            .all(|e| e["text"].is_null() && e["handle"].is_null()),
        "no content survives: {events:?}"
    );
    assert!(events
        .iter()
        .filter(|e| e["kind"] == "thread.message.inbound")
        .all(|e| e["erased"] == true));
    // The headers stay: the same events, in the same order, with their ids.
    assert!(events.iter().any(|e| e["kind"] == "thread.erase"));

    // The node starts again and the erased handle now resolves to nobody: writing again makes
    // a new contact.
    let node = Node::start(&org.data);
    let (status, found) = node.get(&org.agent_token, "/api/v1/contacts?q=webchat:ivy-visitor");
    assert_eq!(status, 200);
    assert_eq!(found["contacts"], json!([]));
    // The reply that was waiting for the bridge is not delivered any more.
    let (_, queue) = node.get(&org.webchat.token, "/api/v1/bridge/deliveries");
    assert_eq!(queue["deliveries"], json!([]));
    // An agent looks at the (erased) record.
    let (status, _) = node.get(&org.agent_token, &format!("/api/v1/contacts/{contact}"));
    assert_eq!(status, 200);
    node.stop();

    // The audit trail says who viewed, exported and erased the record, and when, in order.
    let trail = threadline_ok(&org.data, &["audit", "--contact", contact]);
    let actions: Vec<&str> = trail
        .lines()
        .map(|line| {
            let (_, what) = line.split_once(" UTC  ").expect("a dated line");
            what.split(" contact ").next().expect("an action")
        })
        .collect();
    let me = threadline_ok(&org.data, &["agent", "list"]);
    let agent = me
        .split_whitespace()
        .find(|word| word.len() == 32 && word.chars().all(|c| c.is_ascii_hexdigit()))
        .expect("the agent's id");
    assert_eq!(
        actions,
        [
            "the operator (command line) viewed".to_owned(),
            "the operator (command line) exported".to_owned(),
            "the operator (command line) erased".to_owned(),
            "the operator (command line) viewed".to_owned(),
            format!("agent {agent} viewed"),
        ],
        "{trail}"
    );
    assert!(trail.lines().all(|line| line.ends_with(contact)), "{trail}");
}

#[test]
fn merging_two_contacts_gives_one_record_with_both_timelines() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let _ = send(
        &node,
        &org.webchat,
        "webchat:jack-visitor",
        "chat first",
        "wc-j1",
    );
    let _ = send(
        &node,
        &org.email,
        "email:jack@example.test",
        "then mail",
        "<j@x>",
    );
    let contact_of = |handle: &str| {
        let (_, found) = node.get(&org.agent_token, &format!("/api/v1/contacts?q={handle}"));
        found["contacts"][0]["id"].as_str().expect("id").to_owned()
    };
    let (from, into) = (
        contact_of("email:jack@example.test"),
        contact_of("webchat:jack-visitor"),
    );
    assert_ne!(from, into);
    let (status, _) = node.post(
        &org.agent_token,
        "/api/v1/contacts/merge",
        &json!({"from": from, "into": into}),
    );
    assert_eq!(status, 200);
    assert_eq!(contact_of("email:jack@example.test"), into);
    // A search by part of a handle finds the one customer, not the contact merged away.
    let (_, found) = node.get(&org.agent_token, "/api/v1/contacts?q=JACK");
    let found: Vec<&str> = found["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(found, [into.as_str()]);
    let (_, record) = node.get(&org.agent_token, &format!("/api/v1/contacts/{from}"));
    assert_eq!(
        record["id"],
        into.as_str(),
        "the merged-away id leads to the kept record"
    );
    let handles: BTreeSet<&str> = record["handles"]
        .as_array()
        .expect("handles")
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    assert_eq!(
        handles,
        BTreeSet::from(["email:jack@example.test", "webchat:jack-visitor"])
    );
    let texts: Vec<&str> = record["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["chat first", "then mail"]);
    let (status, err) = node.post(
        &org.agent_token,
        "/api/v1/contacts/merge",
        &json!({"from": into, "into": into}),
    );
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    node.stop();
}

#[test]
fn a_resolved_thread_gets_a_new_thread_and_a_reopened_one_gets_the_message() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let token = &org.agent_token;
    let first = send(&node, &org.webchat, "webchat:kim-visitor", "one", "wc-k1");

    // Resolved, then reopened by the agent: the customer's next message lands on it.
    node.post(
        token,
        &format!("/api/v1/threads/{first}/status"),
        &json!({"status": "resolved"}),
    );
    node.post(
        token,
        &format!("/api/v1/threads/{first}/status"),
        &json!({"status": "open"}),
    );
    let (again, message) = inbound(&node, &org.webchat, "webchat:kim-visitor", "two", "wc-k2");
    assert_eq!(again, first);
    submit(&node, &org.webchat, &[message]);

    // Resolved and left so: the next message opens a new thread for the same contact.
    node.post(
        token,
        &format!("/api/v1/threads/{first}/status"),
        &json!({"status": "resolved"}),
    );
    let (second, message) = inbound(&node, &org.webchat, "webchat:kim-visitor", "three", "wc-k3");
    assert_ne!(second, first);
    submit(&node, &org.webchat, &[message]);
    let (_, found) = node.get(token, "/api/v1/contacts?q=webchat:kim-visitor");
    let contact = found["contacts"][0]["id"].as_str().expect("id").to_owned();
    let (_, record) = node.get(token, &format!("/api/v1/contacts/{contact}"));
    assert_eq!(record["threads"].as_array().expect("threads").len(), 2);
    let texts: Vec<&str> = record["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["one", "two", "three"]);

    // An assign body without `assignee` (or with a misspelt field) is an error, not an
    // unassignment.
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{second}/assign"),
        &json!({"asignee": null}),
    );
    assert_eq!(status, 400);
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{second}/assign"),
        &json!({}),
    );
    assert_eq!(status, 400);
    node.stop();
}

#[test]
fn a_second_run_on_a_data_folder_in_use_fails_before_it_listens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let token = field(&threadline_ok(&data, &["init"]), "token:");
    let node = Node::start(&data);
    let second = threadline_tests::run_threadline(
        &data,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&second.stdout),
        String::from_utf8_lossy(&second.stderr),
    );
    assert!(!second.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "the data folder {} is in use by another process",
            data.display()
        )),
        "{stderr}"
    );
    assert!(!stdout.contains("listening"), "{stdout}");
    // The first node goes on as if nothing happened.
    let (status, threads) = node.get(&token, "/api/v1/threads");
    assert_eq!(status, 200, "{threads}");
    node.stop();
}

/// Runs `threadline run` on `data` expecting it to refuse to start: its standard error.
fn refused_start(data: &std::path::Path) -> String {
    let mut child = std::process::Command::new(threadline_tests::threadline_binary())
        .arg("--data-dir")
        .arg(data)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
        ])
        .env_remove("THREADLINE_DATA_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("threadline starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "a damaged node must not start");
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
                .expect("stderr reads");
            return stderr;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a node on a damaged store started and served");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_damaged_store_or_attachment_is_named_and_never_served() {
    let org = Org::new();
    let node = Node::start(&org.data);
    for idx in 0..20 {
        let handle = format!("webchat:v-damage-{idx}");
        let (_, message) = inbound(
            &node,
            &org.webchat,
            &handle,
            &format!("message {idx}"),
            &format!("dmg-{idx}"),
        );
        assert_eq!(
            submit(&node, &org.webchat, &[message])[0]["status"],
            "stored"
        );
    }
    let (status, uploaded) = node.post_raw(&org.agent_token, "/api/v1/attachments", "the invoice");
    assert_eq!(status, 200, "{uploaded}");
    let blob = uploaded["blob"].as_str().expect("blob").to_owned();
    node.stop();
    let checked = threadline_tests::run_threadline(&org.data, &["check"]);
    assert!(checked.status.success(), "{checked:?}");
    assert!(String::from_utf8_lossy(&checked.stdout).contains("ok: nothing is damaged"));

    let copy = |name: &str| {
        let to = org.data.with_file_name(name);
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(&org.data)
            .arg(&to)
            .status()
            .expect("cp runs");
        assert!(status.success());
        to
    };
    let refused_and_checked = |data: &std::path::Path, says: &str| {
        let said = refused_start(data);
        assert!(said.contains(says), "{said}");
        assert!(
            said.contains("restore the data folder from a backup"),
            "{said}"
        );
        let checked = threadline_tests::run_threadline(data, &["check"]);
        assert!(!checked.status.success(), "check passed a damaged store");
        let check_said = String::from_utf8_lossy(&checked.stderr);
        assert!(check_said.contains(says), "{check_said}");
    };

    // The store as it was, then more messages: a store whose files went back to the earlier
    // state (what sled does, silently, when the end of its log is cut off or damaged) is
    // refused, naming both commits.
    let earlier = copy("earlier");
    let node = Node::start(&org.data);
    for idx in 20..25 {
        let (_, message) = inbound(
            &node,
            &org.webchat,
            &format!("webchat:v-damage-{idx}"),
            &format!("message {idx}"),
            &format!("dmg-{idx}"),
        );
        assert_eq!(
            submit(&node, &org.webchat, &[message])[0]["status"],
            "stored"
        );
    }
    node.stop();
    std::fs::copy(
        org.data.join("store").join("commit-mark"),
        earlier.join("store").join("commit-mark"),
    )
    .expect("the later mark copied");
    refused_and_checked(&earlier, "lost acknowledged writes");

    // Cut in the middle: sled finds its records damaged.
    let data = copy("cut-middle");
    let db = data.join("store").join("db");
    let used = std::fs::read(&db)
        .expect("db reads")
        .iter()
        .rposition(|b| *b != 0)
        .expect("data") as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .expect("db opens")
        .set_len(used / 2)
        .expect("truncates");
    let said = refused_start(&data);
    assert!(
        said.contains("is damaged") || said.contains("lost acknowledged writes"),
        "{said}"
    );
    assert!(
        said.contains("restore the data folder from a backup"),
        "{said}"
    );

    // A flipped byte in the event log, or its end cut off: refused, naming the segment.
    for (name, cut) in [("flipped-event", false), ("cut-events", true)] {
        let data = copy(name);
        let segment = data.join("store").join("events").join("00000001.events");
        let mut bytes = std::fs::read(&segment).expect("segment reads");
        if cut {
            bytes.truncate(bytes.len() - 7);
        } else {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x20;
        }
        std::fs::write(&segment, bytes).expect("segment written");
        refused_and_checked(&data, &segment.display().to_string());
    }

    // A flipped byte in an attachment: the node starts (it does not read every file), but
    // `threadline check` names the file, and the bytes are never served.
    let data = copy("flipped-attachment");
    let file = data
        .join("store")
        .join("attachments")
        .join(&blob[..2])
        .join(&blob);
    let mut bytes = std::fs::read(&file).expect("attachment reads");
    bytes[3] ^= 0x20;
    std::fs::write(&file, bytes).expect("attachment written");
    let checked = threadline_tests::run_threadline(&data, &["check"]);
    assert!(!checked.status.success());
    let out = String::from_utf8_lossy(&checked.stdout);
    assert!(
        out.contains(&format!("damaged: attachments: {}", file.display())),
        "{out}"
    );
}

#[test]
fn a_request_of_several_events_stores_exactly_what_its_results_say() {
    let org = Org::new();
    let node = Node::start(&org.data);
    // Two visitors' threads; events for both in one request, with failures between them.
    let (thread_a, a1) = inbound(&node, &org.webchat, "webchat:v-batch-a", "a1", "b-a1");
    let (thread_b, b1) = inbound(&node, &org.webchat, "webchat:v-batch-b", "b1", "b-b1");
    let decode =
        |hex_text: &str| Event::from_bytes(&hex::decode(hex_text).expect("hex")).expect("decodes");
    let a1_id = decode(&a1).id().expect("id");
    // a2 follows a1 (in the same request); a lost parent's child cannot enter.
    let follow = |parent: EventId, depth: u64, text: &str| {
        let event = Draft::new(
            Scope::Thread(thread_a),
            vec![parent],
            depth,
            now(),
            EventKind::inbound_message(ChannelKind::Webchat),
        )
        .with_content(
            Content::text(text)
                .with_handle("webchat:v-batch-a".parse().expect("handle"))
                .with_external_id(ExternalId::new(format!("b-{text}")).expect("id")),
        )
        .sign(&org.webchat.key)
        .expect("signs");
        hex::encode(event.to_bytes().expect("encodes"))
    };
    let a1_depth = decode(&a1).header().depth;
    let a2 = follow(a1_id, a1_depth + 1, "a2");
    let orphan = follow(EventId::from_bytes([0x77; 32]), a1_depth + 1, "orphan");
    // A valid event whose signature a byte flip broke.
    let mut forged = hex::decode(&b1).expect("hex");
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged = hex::encode(forged);
    let batch = [
        a1.clone(),
        "not hex at all".to_owned(),
        b1.clone(),
        forged,
        orphan,
        a2,
        a1.clone(),
    ];
    let results = submit(&node, &org.webchat, &batch);
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        [
            "stored",
            "refused",
            "stored",
            "refused",
            "refused",
            "stored",
            "duplicate"
        ],
        "{results:?}"
    );
    // Exactly what the results say is stored: a1 and a2 on a's thread, b1 on b's, once each;
    // and so after a restart.
    let texts = |node: &Node, thread: &ThreadId| -> Vec<String> {
        thread_texts(node, &org.agent_token, thread)
            .into_iter()
            .map(|(_, text)| text)
            .collect()
    };
    assert_eq!(texts(&node, &thread_a), ["a1", "a2"]);
    assert_eq!(texts(&node, &thread_b), ["b1"]);
    node.stop();
    let node = Node::start(&org.data);
    assert_eq!(texts(&node, &thread_a), ["a1", "a2"]);
    assert_eq!(texts(&node, &thread_b), ["b1"]);
    node.stop();
}

#[test]
fn a_disk_that_fails_mid_request_gets_an_error_the_node_stops_and_the_retry_stores_once() {
    let org = Org::new();
    let trigger = org.data.parent().expect("tmp").join("disk-fails");
    let mut node = Node::start_with_failing_disk(&org.data, &trigger);
    let (thread_a, a1) = inbound(&node, &org.webchat, "webchat:v-fault-a", "a1", "f-a1");
    let results = submit(&node, &org.webchat, &[a1]);
    assert_eq!(results[0]["status"], "stored", "{results:?}");
    // A request of three events on two threads (the second thread is opened by the resolve,
    // before the disk fails).
    let (_, a2) = inbound(&node, &org.webchat, "webchat:v-fault-a", "a2", "f-a2");
    let (thread_b, b1) = inbound(&node, &org.webchat, "webchat:v-fault-b", "b1", "f-b1");
    let (_, a3) = inbound(&node, &org.webchat, "webchat:v-fault-a", "a3", "f-a3");
    let request = json!({"events": [a2, b1, a3]});

    // The disk fails while the request's group commit is written: no result is final, so
    // the request as a whole gets a 5xx (bridges send it again), never "stored" or "refused".
    std::fs::write(&trigger, b"").expect("trigger");
    let (status, answer) = node.post(&org.webchat.token, "/api/v1/bridge/events", &request);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
    // sled's state after a failed write is not known: the node stops, saying why.
    let exit = node
        .exit_within(std::time::Duration::from_secs(30))
        .expect("the node stops after its store failed");
    assert!(!exit.success(), "{exit}");
    assert!(
        !node
            .logged(&["the store failed to commit and the node stopped"])
            .is_empty(),
        "the node says why it stopped"
    );

    // The disk is back: the node recovers from what is on disk, and the bridge's retry stores
    // each event once (what the failed commit got to disk is a duplicate now).
    std::fs::remove_file(&trigger).expect("trigger removed");
    drop(node);
    let node = Node::start(&org.data);
    let (status, answer) = node.post(&org.webchat.token, "/api/v1/bridge/events", &request);
    assert_eq!(status, 200, "{answer}");
    for result in answer["results"].as_array().expect("results") {
        assert!(
            result["status"] == "stored" || result["status"] == "duplicate",
            "{answer}"
        );
    }
    let texts = |thread: &ThreadId| -> BTreeSet<String> {
        let texts: Vec<String> = thread_texts(&node, &org.agent_token, thread)
            .into_iter()
            .map(|(_, text)| text)
            .collect();
        let once: BTreeSet<String> = texts.iter().cloned().collect();
        assert_eq!(once.len(), texts.len(), "no message twice: {texts:?}");
        once
    };
    assert_eq!(
        texts(&thread_a),
        BTreeSet::from(["a1", "a2", "a3"].map(String::from))
    );
    assert_eq!(texts(&thread_b), BTreeSet::from(["b1".to_owned()]));
    node.stop();
}

#[test]
fn a_snoozed_thread_opens_again_when_its_time_comes() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let thread = send(
        &node,
        &org.webchat,
        "webchat:sleepy-visitor",
        "Call me back tomorrow",
        "wc-s1",
    );
    let token = &org.agent_token;
    let until = now().as_millis() + 1_500;
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{thread}/status"),
        &json!({"status": "snoozed", "until": until}),
    );
    assert_eq!(status, 200);
    let listed = |status: &str| -> Vec<String> {
        let (_, page) = node.get(token, &format!("/api/v1/threads?status={status}"));
        page["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .map(|t| t["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(listed("snoozed"), [thread.to_string()]);
    assert!(listed("open").is_empty());
    // Its time comes: the node reopens it (a status event it signs, no agent's).
    threadline_tests::eventually(
        "the thread open again",
        std::time::Duration::from_secs(20),
        || (listed("open") == [thread.to_string()]).then_some(()),
    );
    assert!(listed("snoozed").is_empty());
    let (_, shown) = node.get(token, &format!("/api/v1/threads/{thread}"));
    let reopened = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .rfind(|e| e["kind"] == "thread.status")
        .expect("a status event")
        .clone();
    assert_eq!(reopened["detail"]["status"], "open", "{reopened}");
    assert_eq!(reopened["agent"], serde_json::Value::Null);
    node.stop();
}

#[test]
fn contact_details_are_set_within_limits_and_a_merge_is_previewed_first() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let thread = send(&node, &org.webchat, "webchat:lee-1", "hello", "wc-l1");
    send(&node, &org.webchat, "webchat:lee-2", "hello again", "wc-l2");
    let contact_of = |thread: &ThreadId| {
        let (_, shown) = node.get(&org.agent_token, &format!("/api/v1/threads/{thread}"));
        shown["thread"]["contact"]
            .as_str()
            .expect("contact")
            .to_owned()
    };
    let lee = contact_of(&thread);
    let (_, found) = node.get(&org.agent_token, "/api/v1/contacts?q=webchat:lee-2");
    let other = found["contacts"][0]["id"].as_str().expect("id").to_owned();
    let path = format!("/api/v1/contacts/{lee}/attributes");
    let record = || {
        node.get(&org.agent_token, &format!("/api/v1/contacts/{lee}"))
            .1
    };
    let before = record();
    // Bad input: a clear error, nothing written.
    for (body, code) in [
        (json!({"key": "", "value": "x"}), 400),
        (json!({"key": "plan", "value": "line one\nline two"}), 400),
        (json!({"key": "plan", "value": "x".repeat(1025)}), 400),
        (json!({"key": "plan"}), 400),
    ] {
        let (status, answer) = node.post(&org.agent_token, &path, &body);
        assert_eq!(status, code, "{body}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    let (status, _) = node.post(
        &org.agent_token,
        "/api/v1/contacts/00000000000000000000000000000000/attributes",
        &json!({"key": "plan", "value": "pro"}),
    );
    assert_eq!(status, 404);
    assert_eq!(record(), before, "nothing changed");
    // Renamed by the `name` attribute: the thread list says so too.
    let (status, _) = node.post(
        &org.agent_token,
        &path,
        &json!({"key": "name", "value": "  Lee Chen "}),
    );
    assert_eq!(status, 200);
    assert_eq!(record()["display_name"], "Lee Chen");
    let (_, listed) = node.get(&org.agent_token, "/api/v1/threads");
    assert!(
        listed["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .any(|t| t["contact_name"] == "Lee Chen"),
        "{listed}"
    );
    // At most 64 attributes: the 64th fits (with `name`, 64 in all), one more is refused,
    // and changing one that is there still works.
    for n in 0..63 {
        let (status, answer) = node.post(
            &org.agent_token,
            &path,
            &json!({"key": format!("k{n}"), "value": "v"}),
        );
        assert_eq!(status, 200, "{n}: {answer}");
    }
    let (status, answer) = node.post(
        &org.agent_token,
        &path,
        &json!({"key": "one-more", "value": "v"}),
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("contact_attributes_full")),
        "{answer}"
    );
    let (status, _) = node.post(
        &org.agent_token,
        &path,
        &json!({"key": "k0", "value": "changed"}),
    );
    assert_eq!(status, 200);
    assert_eq!(record()["attributes"]["k0"], "changed");
    // The same company on both: evidence in the preview, which changes nothing.
    node.post(
        &org.agent_token,
        &format!("/api/v1/contacts/{other}/attributes"),
        &json!({"key": "k1", "value": "V"}),
    );
    let (status, preview) = node.get(
        &org.agent_token,
        &format!("/api/v1/contacts/merge?from={other}&into={lee}"),
    );
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["evidence"], json!(["Both have k1 “V”."]));
    assert_eq!(preview["into"]["display_name"], "Lee Chen");
    assert_eq!(preview["from"]["threads"], 1);
    let (_, still) = node.get(&org.agent_token, &format!("/api/v1/contacts/{other}"));
    assert_eq!(still["merged_from"], json!([]));
    assert_eq!(record()["merged_from"], json!([]));
    let (status, _) = node.get(
        &org.agent_token,
        &format!("/api/v1/contacts/merge?from={lee}&into={lee}"),
    );
    assert_eq!(status, 400);
    node.stop();
}

#[test]
fn the_thread_list_previews_each_threads_last_message() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let listed = |thread: &ThreadId| {
        let (_, page) = node.get(&org.agent_token, "/api/v1/threads");
        page["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .find(|t| t["id"] == thread.to_string())
            .expect("listed")["last_message"]
            .clone()
    };
    let long = format!("My order   never\narrived. {}", "Please help. ".repeat(20));
    let thread = send(&node, &org.webchat, "webchat:pia", &long, "wc-p1");
    let preview = listed(&thread);
    assert_eq!(preview["direction"], "inbound");
    let text = preview["text"].as_str().expect("text");
    assert!(
        text.starts_with("My order never arrived. Please help.") && text.ends_with('…'),
        "one line, cut: {text}"
    );
    assert_eq!(text.chars().count(), 121, "{text}");
    // The agent's reply is the last message; a read mark after it is not a message.
    let (status, _) = node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "On its way today"}),
    );
    assert_eq!(status, 200);
    let (_, me) = node.get(&org.agent_token, "/api/v1/me");
    let (_, shown) = node.get(&org.agent_token, &format!("/api/v1/threads/{thread}"));
    let first = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "thread.message.inbound")
        .expect("the message")["id"]
        .clone();
    node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{thread}/read"),
        &json!({"up_to": first}),
    );
    let preview = listed(&thread);
    assert_eq!(
        (&preview["direction"], &preview["text"], &preview["agent"]),
        (&json!("outbound"), &json!("On its way today"), &me["id"]),
        "{preview}"
    );
    // After a restart it is the same (kept with the thread, not in memory only).
    node.stop();
    let node = Node::start(&org.data);
    let (_, page) = node.get(&org.agent_token, "/api/v1/threads");
    assert_eq!(
        page["threads"][0]["last_message"]["text"],
        "On its way today"
    );
    // Erased: no text any more, anywhere.
    let contact = page["threads"][0]["contact"].as_str().expect("contact");
    threadline_ok(&org.data, &["erase", "contact", contact]);
    let (_, page) = node.get(&org.agent_token, "/api/v1/threads");
    let preview = &page["threads"][0]["last_message"];
    assert_eq!(preview["direction"], "outbound", "{preview}");
    assert_eq!(preview["text"], Value::Null, "{preview}");
    node.stop();
}

#[test]
fn canned_replies_are_set_changed_and_removed_with_bad_input_refused() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let list = || node.get(&org.agent_token, "/api/v1/canned-replies").1["replies"].clone();
    assert_eq!(list(), json!([]));
    for (body, why) in [
        (json!({"shortcode": "Refund", "text": "x"}), "bad shortcode"),
        (
            json!({"shortcode": "re fund", "text": "x"}),
            "bad shortcode",
        ),
        (json!({"shortcode": "", "text": "x"}), "bad shortcode"),
        (
            json!({"shortcode": "a".repeat(33), "text": "x"}),
            "bad shortcode",
        ),
        (json!({"shortcode": "refund", "text": "  "}), "empty"),
        (
            json!({"shortcode": "refund", "text": "x".repeat(4097)}),
            "at most 4096",
        ),
    ] {
        let (status, answer) = node.post(&org.agent_token, "/api/v1/canned-replies", &body);
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains(why), "{message}");
    }
    assert_eq!(list(), json!([]), "nothing was written");
    let set = |code: &str, text: &str| {
        node.post(
            &org.agent_token,
            "/api/v1/canned-replies",
            &json!({"shortcode": code, "text": text}),
        )
    };
    let (status, answer) = set("refund", "Hi {contact.name}, the refund is on its way.");
    assert_eq!(status, 200);
    assert_eq!(answer["events"].as_array().map(Vec::len), Some(1));
    // The same text again writes nothing.
    let (_, again) = set("refund", "Hi {contact.name}, the refund is on its way.");
    assert_eq!(again["events"], json!([]));
    set("hours", "We answer 9 to 5. {agent.name}");
    set("refund", "Your refund left today.");
    assert_eq!(
        list(),
        json!([
            {"shortcode": "hours", "text": "We answer 9 to 5. {agent.name}"},
            {"shortcode": "refund", "text": "Your refund left today."},
        ])
    );
    let (status, _) = node.delete(&org.agent_token, "/api/v1/canned-replies/refund");
    assert_eq!(status, 200);
    let (status, _) = node.delete(&org.agent_token, "/api/v1/canned-replies/refund");
    assert_eq!(status, 404);
    // Kept in the signed directory: the same after a restart.
    node.stop();
    let node = Node::start(&org.data);
    let (_, after) = node.get(&org.agent_token, "/api/v1/canned-replies");
    assert_eq!(
        after["replies"],
        json!([{"shortcode": "hours", "text": "We answer 9 to 5. {agent.name}"}])
    );
    // A bridge may not write them.
    let (status, _) = node.post(
        &org.webchat.token,
        "/api/v1/canned-replies",
        &json!({"shortcode": "x", "text": "y"}),
    );
    assert!(status == 401 || status == 403, "{status}");
    node.stop();
}

#[test]
fn admins_add_agents_give_them_tokens_and_roles_and_never_leave_no_admin() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let admin = &org.agent_token;
    let (_, me) = node.get(admin, "/api/v1/me");
    assert_eq!(
        me["role"], "admin",
        "the agent `init` makes is an admin: {me}"
    );
    let admin_id = me["id"].as_str().expect("id").to_owned();
    // Bad input: a clear error, no agent added.
    for (body, code) in [
        (json!({"name": "  "}), 400),
        (json!({"name": "Ana", "role": "owner"}), 400),
        (json!({"name": "Ana", "team": "x"}), 400),
    ] {
        let (status, answer) = node.post(admin, "/api/v1/agents", &body);
        assert_eq!(status, code, "{body}: {answer}");
    }
    let (_, listed) = node.get(admin, "/api/v1/agents");
    assert_eq!(listed["agents"].as_array().map(Vec::len), Some(1));
    // An agent added: its token works at once, as an agent.
    let (status, added) = node.post(admin, "/api/v1/agents", &json!({"name": "Ana"}));
    assert_eq!(status, 200, "{added}");
    let ana = added["agent"]["id"].as_str().expect("id").to_owned();
    let ana_token = added["token"].as_str().expect("token").to_owned();
    let (status, ana_me) = node.get(&ana_token, "/api/v1/me");
    assert_eq!((status, &ana_me["role"]), (200, &json!("agent")));
    // An agent may not manage agents.
    let (status, answer) = node.post(&ana_token, "/api/v1/agents", &json!({"name": "Bo"}));
    assert_eq!(status, 403, "{answer}");
    let (status, _) = node.post(
        &ana_token,
        &format!("/api/v1/agents/{admin_id}/revoke"),
        &json!({}),
    );
    assert_eq!(status, 403);
    // A new token: the old one stops, the new one works.
    let (status, reset) = node.post(admin, &format!("/api/v1/agents/{ana}/token"), &json!({}));
    assert_eq!(status, 200, "{reset}");
    let new_token = reset["token"].as_str().expect("token");
    assert_eq!(node.get(&ana_token, "/api/v1/me").0, 401);
    assert_eq!(node.get(new_token, "/api/v1/me").0, 200);
    // The only admin cannot be demoted or revoked; with a second admin, it can.
    let (status, answer) = node.post(
        admin,
        &format!("/api/v1/agents/{admin_id}/role"),
        &json!({"role": "agent"}),
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("last_admin")),
        "{answer}"
    );
    let (status, answer) = node.post(
        admin,
        &format!("/api/v1/agents/{admin_id}/revoke"),
        &json!({}),
    );
    assert_eq!(status, 409, "{answer}");
    let (status, promoted) = node.post(
        admin,
        &format!("/api/v1/agents/{ana}/role"),
        &json!({"role": "admin"}),
    );
    assert_eq!((status, &promoted["role"]), (200, &json!("admin")));
    let (status, revoked) = node.post(
        new_token,
        &format!("/api/v1/agents/{admin_id}/revoke"),
        &json!({}),
    );
    assert_eq!(
        (status, &revoked["revoked"]),
        (200, &json!(true)),
        "{revoked}"
    );
    assert_eq!(node.get(admin, "/api/v1/me").0, 401);
    let (status, _) = node.post(
        new_token,
        &format!("/api/v1/agents/{ana}/role"),
        &json!({"role": "agent"}),
    );
    assert_eq!(status, 409, "Ana is the only admin now");
    let (status, _) = node.post(
        new_token,
        "/api/v1/agents/00000000000000000000000000000000/token",
        &json!({}),
    );
    assert_eq!(status, 404);
    node.stop();
}

#[test]
fn new_conversations_go_in_turn_to_agents_at_the_inbox_within_their_cap() {
    let org = Org::new();
    edit_config(&org.data, |text| {
        text.replace("auto = false", "auto = true")
            .replace("max_open_per_agent = 0", "max_open_per_agent = 1")
    });
    let node = Node::start(&org.data);
    let admin = &org.agent_token;
    let add = |name: &str| {
        let (status, added) = node.post(admin, "/api/v1/agents", &json!({"name": name}));
        assert_eq!(status, 200, "{added}");
        (
            added["agent"]["id"].as_str().expect("id").to_owned(),
            added["token"].as_str().expect("token").to_owned(),
        )
    };
    let (bea, bea_token) = add("Bea");
    let (cy, _) = add("Cy");
    let (_, me) = node.get(admin, "/api/v1/me");
    let admin_id = me["id"].as_str().expect("id").to_owned();
    // The admin and Bea have the inbox open; Cy does not.
    let _admin_here = node.live_stream(admin);
    let _bea_here = node.live_stream(&bea_token);
    let assignee = |thread: &ThreadId| {
        let (_, shown) = node.get(admin, &format!("/api/v1/threads/{thread}"));
        shown["thread"]["assignee"].as_str().map(str::to_owned)
    };
    let assigned = |thread: &ThreadId| {
        threadline_tests::eventually("the assignment", std::time::Duration::from_secs(30), || {
            assignee(thread)
        })
    };
    let first = send(&node, &org.webchat, "webchat:rr-1", "hello", "rr-1");
    let second = send(&node, &org.webchat, "webchat:rr-2", "hello", "rr-2");
    let (a, b) = (assigned(&first), assigned(&second));
    let mut both = vec![a.clone(), b];
    both.sort();
    let mut expected = vec![admin_id.clone(), bea.clone()];
    expected.sort();
    assert_eq!(both, expected, "one each, in turn");
    // A second message in a conversation changes nothing.
    send(&node, &org.webchat, "webchat:rr-1", "still there?", "rr-1b");
    // Both at their cap: the third stays unassigned; once the first is resolved, its agent
    // gets the fourth (changes are taken in order, so the third was looked at by then).
    let third = send(&node, &org.webchat, "webchat:rr-3", "hello", "rr-3");
    let first_token = if a == admin_id {
        admin.clone()
    } else {
        bea_token.clone()
    };
    let (status, _) = node.post(
        &first_token,
        &format!("/api/v1/threads/{first}/status"),
        &json!({"status": "resolved"}),
    );
    assert_eq!(status, 200);
    let fourth = send(&node, &org.webchat, "webchat:rr-4", "hello", "rr-4");
    assert_eq!(assigned(&fourth), a);
    assert_eq!(assignee(&third), None);
    assert_eq!(assignee(&first), Some(a.clone()));
    // The assignment is the node's own event, with no agent as its author.
    let (_, shown) = node.get(admin, &format!("/api/v1/threads/{fourth}"));
    let assign = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "thread.assign")
        .expect("an assign event")
        .clone();
    assert_eq!(assign["agent"], Value::Null, "{assign}");
    let (_, listed) = node.get(admin, &format!("/api/v1/threads?assignee={cy}"));
    assert_eq!(listed["threads"], json!([]), "Cy was never at the inbox");
    node.stop();
}

#[test]
fn a_waiting_customer_shows_since_when_and_past_the_target_is_overdue() {
    let org = Org::new();
    edit_config(&org.data, |text| {
        text.replace("# reply_within_minutes = 60", "reply_within_minutes = 60")
    });
    let node = Node::start(&org.data);
    let token = &org.agent_token;
    let listed = |thread: &ThreadId| {
        let (_, page) = node.get(token, "/api/v1/threads");
        let item = page["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .find(|t| t["id"] == thread.to_string())
            .expect("listed")
            .clone();
        (item["waiting_since"].as_u64(), item["reply_due"].as_u64())
    };
    let message_time = |thread: &ThreadId, text: &str| {
        let (_, shown) = node.get(token, &format!("/api/v1/threads/{thread}"));
        shown["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["text"] == text)
            .expect("the message")["time"]
            .as_u64()
            .expect("time")
    };
    let thread = send(&node, &org.webchat, "webchat:sla-1", "first", "sla-1");
    let first = message_time(&thread, "first");
    assert_eq!(listed(&thread), (Some(first), Some(first + 3_600_000)));
    send(&node, &org.webchat, "webchat:sla-1", "second", "sla-2");
    assert_eq!(listed(&thread).0, Some(first), "waiting since the first");
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Here"}),
    );
    assert_eq!(status, 200);
    assert_eq!(listed(&thread), (None, None), "answered");
    send(&node, &org.webchat, "webchat:sla-1", "third", "sla-3");
    let third = message_time(&thread, "third");
    assert_eq!(listed(&thread).0, Some(third));
    node.stop();
    let node = Node::start(&org.data);
    let (_, page) = node.get(token, "/api/v1/threads");
    assert_eq!(page["threads"][0]["waiting_since"].as_u64(), Some(third));
    node.stop();
}

/// `GET /api/v1/search` as the inbox calls it: the messages found, as (kind, thread, text
/// of the snippet with `[found]` parts marked).
fn search_messages(node: &Node, token: &str, query: &str) -> Vec<(String, String, String)> {
    let (status, found) = node.get(token, &format!("/api/v1/search?{query}"));
    assert_eq!(status, 200, "{query}: {found}");
    found["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let snippet: String = m["snippet"]
                .as_array()
                .expect("snippet")
                .iter()
                .map(|part| {
                    let text = part["text"].as_str().expect("text");
                    if part["match"] == true {
                        format!("[{text}]")
                    } else {
                        text.to_owned()
                    }
                })
                .collect();
            (
                m["kind"].as_str().expect("kind").to_owned(),
                m["thread"]["id"].as_str().expect("thread").to_owned(),
                snippet,
            )
        })
        .collect()
}

#[test]
fn messages_are_found_by_their_words_on_every_channel_with_filters_and_not_once_erased() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let token = &org.agent_token;
    let alice = send(
        &node,
        &org.webchat,
        "webchat:alice",
        "My parcel from Zürich never arrived",
        "s-1",
    );
    let bob = send(
        &node,
        &org.email,
        "email:bob@example.com",
        "Refund for the broken café machine, please",
        "s-2",
    );
    send(&node, &org.webchat, "webchat:carol", "Hello there", "s-3");
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{alice}/replies"),
        &json!({"text": "Your parcel ships tomorrow"}),
    );
    assert_eq!(status, 200);
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{bob}/notes"),
        &json!({"text": "refund approved by finance"}),
    );
    assert_eq!(status, 200);
    let (alice, bob) = (alice.to_string(), bob.to_string());

    // Searchable within moments of being stored; newest first; the words found are marked.
    let found = threadline_tests::eventually("the reply indexed", Duration::from_secs(10), || {
        let found = search_messages(&node, token, "q=parcel");
        (found.len() == 2).then_some(found)
    });
    assert_eq!(
        found,
        vec![
            (
                "thread.message.outbound".to_owned(),
                alice.clone(),
                "Your [parcel] ships tomorrow".to_owned()
            ),
            (
                "thread.message.inbound".to_owned(),
                alice.clone(),
                "My [parcel] from Zürich never arrived".to_owned()
            ),
        ]
    );
    // Accents and case do not matter; the last word may be cut short; a note is found too.
    assert_eq!(
        search_messages(&node, token, "q=zurich")[0].2,
        "My parcel from [Zürich] never arrived"
    );
    assert_eq!(
        search_messages(&node, token, "q=CAFE")[0].2,
        "Refund for the broken [café] machine, please"
    );
    let refunds = search_messages(&node, token, "q=refu");
    assert_eq!(
        refunds
            .iter()
            .map(|f| (f.0.as_str(), f.1.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("thread.note", bob.as_str()),
            ("thread.message.inbound", bob.as_str())
        ]
    );
    // Every word must be there; a quoted phrase as written.
    assert_eq!(search_messages(&node, token, "q=parcel%20refund"), vec![]);
    assert_eq!(
        search_messages(&node, token, "q=%22broken%20caf%C3%A9%22").len(),
        1
    );
    assert_eq!(
        search_messages(&node, token, "q=%22caf%C3%A9%20broken%22"),
        vec![]
    );
    // Filters: the channel a message came on (a note has none), the thread's status, dates.
    let by_email = search_messages(&node, token, "q=refund&channel=email");
    assert_eq!(by_email.len(), 1, "{by_email:?}");
    assert_eq!(by_email[0].0, "thread.message.inbound");
    assert_eq!(
        search_messages(&node, token, "q=parcel&channel=email"),
        vec![]
    );
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{alice}/status"),
        &json!({"status": "resolved"}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        search_messages(&node, token, "q=parcel&status=open"),
        vec![]
    );
    assert_eq!(
        search_messages(&node, token, "q=parcel&status=resolved").len(),
        2
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert_eq!(
        search_messages(&node, token, &format!("q=parcel&from={}", now + 3_600_000)),
        vec![]
    );
    assert_eq!(
        search_messages(&node, token, &format!("q=parcel&to={}", now + 3_600_000)).len(),
        2
    );
    // A page at a time.
    let (_, first) = node.get(token, "/api/v1/search?q=parcel&limit=1");
    assert_eq!(first["messages"].as_array().expect("page").len(), 1);
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_owned();
    let (_, second) = node.get(
        token,
        &format!("/api/v1/search?q=parcel&limit=1&cursor={cursor}"),
    );
    assert_eq!(
        second["messages"][0]["kind"], "thread.message.inbound",
        "{second}"
    );
    assert_eq!(first["index"]["ready"], true, "{first}");

    // Bad input: a clear error.
    for (query, why) in [
        ("q=", "empty"),
        ("q=%20%20", "blank"),
        ("q=parcel&status=closed", "unknown status"),
        ("q=parcel&channel=fax", "unknown channel"),
        ("q=parcel&from=20&to=10", "from after to"),
        ("q=parcel&cursor=abc", "bad cursor"),
        ("q=parcel&assignee=bob", "bad assignee"),
        ("words=parcel", "no q"),
    ] {
        let (status, answer) = node.get(token, &format!("/api/v1/search?{query}"));
        assert_eq!(status, 400, "{why}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{why}: {answer}");
    }
    let (status, _) = node.get("thl_not_a_token", "/api/v1/search?q=parcel");
    assert_eq!(status, 401);

    // The index is in memory only: the words are on disk nowhere but sealed in the store.
    node.stop();
    assert_eq!(
        threadline_tests::holding(&org.data, "parcel"),
        Vec::<std::path::PathBuf>::new()
    );
    // Built again at start, from the store.
    let node = Node::start(&org.data);
    let found = threadline_tests::eventually("the index rebuilt", Duration::from_secs(10), || {
        let found = search_messages(&node, token, "q=parcel");
        (found.len() == 2).then_some(found)
    });
    assert_eq!(found[0].1, alice);

    // Erased: found no more, at once and after a restart.
    let (_, detail) = node.get(token, &format!("/api/v1/threads/{alice}"));
    let contact = detail["thread"]["contact"]
        .as_str()
        .expect("contact")
        .to_owned();
    threadline_ok(&org.data, &["erase", "contact", &contact]);
    assert_eq!(search_messages(&node, token, "q=parcel"), vec![]);
    assert_eq!(search_messages(&node, token, "q=zurich"), vec![]);
    node.stop();
    let node = Node::start(&org.data);
    threadline_tests::eventually("the index rebuilt", Duration::from_secs(10), || {
        let (_, found) = node.get(token, "/api/v1/search?q=cafe");
        (found["index"]["ready"] == true).then_some(())
    });
    assert_eq!(search_messages(&node, token, "q=cafe").len(), 1);
    assert_eq!(search_messages(&node, token, "q=parcel"), vec![]);
    node.stop();
}

#[test]
fn service_level_timers_show_in_the_list_and_reports_count_times_and_breaches() {
    let org = Org::made_at("-4h");
    edit_config(&org.data, |text| {
        text.replace(
            "# first_response_minutes = 30",
            "first_response_minutes = 30",
        )
        .replace("# next_response_minutes = 60", "next_response_minutes = 60")
        .replace("# resolution_minutes = 1440", "resolution_minutes = 120")
    });
    let plain = field(
        &threadline_ok(&org.data, &["agent", "add", "Plain agent"]),
        "token:",
    );
    let token = &org.agent_token;
    let three_hours_ago = Timestamp::from_millis(now().as_millis() - 3 * 3_600_000);
    // Three hours ago: Ann writes and waits; Ben writes, is answered at once and resolved.
    let node = threadline_tests::Node::start_ahead(&org.data, "-3h");
    let (ann, message) = inbound_at(
        &node,
        &org.webchat,
        "webchat:ann",
        "Hello?",
        "r-1",
        three_hours_ago,
    );
    submit(&node, &org.webchat, &[message]);
    let (ben, message) = inbound_at(
        &node,
        &org.webchat,
        "webchat:ben",
        "Hi",
        "r-2",
        three_hours_ago,
    );
    submit(&node, &org.webchat, &[message]);
    for (path, body) in [
        ("replies", json!({"text": "Hello Ben"})),
        ("status", json!({"status": "resolved"})),
    ] {
        let (status, answer) = node.post(token, &format!("/api/v1/threads/{ben}/{path}"), &body);
        assert_eq!(status, 200, "{answer}");
    }
    node.stop();

    // Now: Ann's first answer and resolution are past due; Ben met both; Cy just wrote.
    let node = Node::start(&org.data);
    let cy = send(&node, &org.webchat, "webchat:cy", "Good morning", "r-3");
    let timers = |thread: &ThreadId| {
        let (_, page) = node.get(token, "/api/v1/threads?status=open");
        let (_, resolved) = node.get(token, "/api/v1/threads?status=resolved");
        page["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .chain(resolved["threads"].as_array().expect("threads"))
            .find(|t| t["id"] == thread.to_string())
            .expect("listed")["sla"]
            .clone()
    };
    let ann_timers = timers(&ann);
    assert_eq!(
        ann_timers["breached"],
        json!(["first_response", "resolution"]),
        "{ann_timers}"
    );
    let opened = ann_timers["resolution_due"].as_u64().expect("due") - 120 * 60_000;
    assert_eq!(
        ann_timers["first_response_due"].as_u64(),
        Some(opened + 30 * 60_000)
    );
    assert_eq!(ann_timers["next_response_due"], Value::Null);
    let ben_timers = timers(&ben);
    assert_eq!(
        (
            &ben_timers["breached"],
            &ben_timers["first_response_due"],
            &ben_timers["resolution_due"]
        ),
        (&json!([]), &Value::Null, &Value::Null),
        "met and done: {ben_timers}"
    );
    let cy_timers = timers(&cy);
    assert_eq!(cy_timers["breached"], json!([]), "{cy_timers}");
    assert!(cy_timers["first_response_due"].as_u64().is_some());
    // Ann is answered now, three hours late; she writes again: the next answer is due.
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{ann}/replies"),
        &json!({"text": "Sorry!"}),
    );
    assert_eq!(status, 200);
    send(&node, &org.webchat, "webchat:ann", "Still there?", "r-4");
    let ann_timers = timers(&ann);
    assert_eq!(ann_timers["first_response_due"], Value::Null);
    assert!(
        ann_timers["next_response_due"].as_u64().is_some(),
        "{ann_timers}"
    );
    assert_eq!(
        ann_timers["breached"],
        json!(["first_response", "resolution"])
    );

    // The report: three conversations today or three hours ago, two answered, one resolved.
    let (status, report) = node.get(token, "/api/v1/reports");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["conversations"], 3, "{report}");
    assert_eq!(report["by_channel"], json!({"webchat": 3}));
    assert_eq!(
        report["by_day"].as_array().expect("days").len(),
        31,
        "30 days, started mid-day"
    );
    let days_total: u64 = report["by_day"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| d["total"].as_u64().expect("total"))
        .sum();
    assert_eq!(days_total, 3);
    assert_eq!(report["first_response"]["count"], 2);
    let p50 = report["first_response"]["p50"].as_u64().expect("p50");
    let p90 = report["first_response"]["p90"].as_u64().expect("p90");
    assert!(p50 < 60_000, "Ben was answered at once: {p50}");
    assert!(
        (3 * 3_600_000 - 120_000..3 * 3_600_000 + 120_000).contains(&p90),
        "Ann after 3 h: {p90}"
    );
    assert_eq!(report["resolution"]["count"], 1);
    assert_eq!(
        report["breaches"],
        json!({"first_response": 1, "resolution": 1})
    );
    let (_, me) = node.get(token, "/api/v1/me");
    assert_eq!(
        report["agents"],
        json!([{"agent": me["id"], "first_replies": 2, "resolved": 1,
            "first_response": {"count": 2, "p50": p50, "p90": p90}}])
    );
    // The same as CSV, a line per conversation, oldest first.
    let csv = node.get_text(token, "/api/v1/reports/conversations.csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[0].starts_with("thread,opened_at,channel,status"),
        "{csv}"
    );
    let ann_line = lines
        .iter()
        .find(|l| l.starts_with(&ann.to_string()))
        .expect("Ann's line");
    assert!(
        ann_line.ends_with(",first_response resolution,"),
        "{ann_line}"
    );
    assert!(ann_line.contains(",webchat,open,"), "{ann_line}");
    // Admins only; a bad span is refused.
    let (status, _) = node.get(&plain, "/api/v1/reports");
    assert_eq!(status, 403);
    for query in [
        "from=20&to=10",
        "from=0&to=100000000000",
        "from=18446744073700000000&to=18446744073709551615",
        "days=3",
    ] {
        let (status, answer) = node.get(token, &format!("/api/v1/reports?{query}"));
        assert_eq!(status, 400, "{query}: {answer}");
    }
    node.stop();
}

#[test]
fn automation_rules_label_assign_set_the_status_and_reply_and_round_robin_leaves_their_assignments()
{
    let org = Org::new();
    let bea = field(
        &threadline_ok(&org.data, &["agent", "add", "Bea"]),
        "agent:",
    )
    .split_whitespace()
    .next()
    .expect("id")
    .to_owned();
    edit_config(&org.data, |text| {
        format!(
            "{}
[[automation]]
name = \"mail intake\"
on = \"new_conversation\"
channel = \"email\"
add_labels = [\"email-intake\"]
reply = \"We got your mail and answer within a day.\"

[[automation]]
name = \"refunds to billing\"
on = \"message\"
text_contains = [\"refund\", \"chargeback\"]
add_labels = [\"billing\"]
assign = \"{bea}\"
status = \"pending\"

[[automation]]
on = \"message\"
label = \"vip\"
add_labels = [\"priority\"]
",
            text.replace("auto = false", "auto = true")
        )
    });
    let node = Node::start(&org.data);
    let token = &org.agent_token;
    // The admin has the inbox open: round robin assigns new conversations no rule assigned.
    let _admin_here = node.live_stream(token);
    let (_, me) = node.get(token, "/api/v1/me");
    let thread_of = |thread: &ThreadId| node.get(token, &format!("/api/v1/threads/{thread}")).1;
    // A new mail: labelled and answered by the node (no agent wrote the reply).
    let mail = send(
        &node,
        &org.email,
        "email:dora@example.com",
        "Hello, a question",
        "a-1",
    );
    let shown = threadline_tests::eventually("the mail rule", Duration::from_secs(10), || {
        let shown = thread_of(&mail);
        (shown["thread"]["labels"] == json!(["email-intake"])
            && shown["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["kind"] == "thread.message.outbound")))
        .then_some(shown)
    });
    let reply = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "thread.message.outbound")
        .expect("the reply")
        .clone();
    assert_eq!(reply["text"], "We got your mail and answer within a day.");
    assert_eq!(reply["agent"], Value::Null, "{reply}");
    // The node's own reply is no agent's answer: the customer still waits for one.
    let (_, page) = node.get(token, "/api/v1/threads");
    let listed = page["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .find(|t| t["id"] == mail.to_string())
        .expect("listed")
        .clone();
    assert!(listed["waiting_since"].is_u64(), "{listed}");
    // Its second message is not new: no second reply.
    send(
        &node,
        &org.email,
        "email:dora@example.com",
        "And another thing",
        "a-2",
    );
    // A refund on the web chat: billing, Bea, pending.
    let chat = send(
        &node,
        &org.webchat,
        "webchat:eve",
        "I want a REFUND now",
        "a-3",
    );
    let shown = threadline_tests::eventually("the refund rule", Duration::from_secs(10), || {
        let shown = thread_of(&chat);
        (shown["thread"]["status"] == "pending").then_some(shown)
    });
    assert_eq!(shown["thread"]["labels"], json!(["billing"]));
    assert_eq!(
        shown["thread"]["assignee"],
        bea.as_str(),
        "the rule's assignment stands"
    );
    // A label the thread has: the third rule.
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{chat}/labels"),
        &json!({"add": ["vip"]}),
    );
    assert_eq!(status, 200);
    send(&node, &org.webchat, "webchat:eve", "Hello again", "a-4");
    threadline_tests::eventually("the vip rule", Duration::from_secs(10), || {
        (thread_of(&chat)["thread"]["labels"] == json!(["billing", "priority", "vip"]))
            .then_some(())
    });
    // A message no rule matches: only round robin acts.
    let plain = send(&node, &org.webchat, "webchat:fay", "Just saying hi", "a-5");
    let shown = threadline_tests::eventually("round robin", Duration::from_secs(10), || {
        let shown = thread_of(&plain);
        (shown["thread"]["assignee"] == me["id"]).then_some(shown)
    });
    assert_eq!(
        (&shown["thread"]["labels"], &shown["thread"]["status"]),
        (&json!([]), &json!("open")),
        "no rule matched: only round robin acted"
    );
    let replies = thread_of(&mail)["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "thread.message.outbound")
        .count();
    assert_eq!(replies, 1, "the mail rule answers a new conversation only");
    node.stop();

    // A rule that is wrong stops the node from starting, and says which and why.
    edit_config(&org.data, |text| {
        text.replace("status = \"pending\"", "status = \"later\"")
    });
    let out = run_threadline(
        &org.data,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("automation[1].status is `later`"),
        "{stderr}"
    );
}

#[test]
fn a_resolved_conversation_asks_for_a_rating_and_the_customers_number_is_recorded() {
    let org = Org::new();
    edit_config(&org.data, |text| text.replace("ask = false", "ask = true"));
    let node = Node::start(&org.data);
    let token = &org.agent_token;
    let thread_of = |thread: &ThreadId| node.get(token, &format!("/api/v1/threads/{thread}")).1;
    let said_by_node = |thread: &ThreadId| -> Vec<String> {
        thread_of(thread)["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "thread.message.outbound" && e["agent"].is_null())
            .map(|e| e["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let resolve = |thread: &ThreadId| {
        let (status, answer) = node.post(
            token,
            &format!("/api/v1/threads/{thread}/status"),
            &json!({"status": "resolved"}),
        );
        assert_eq!(status, 200, "{answer}");
    };
    let happy = send(&node, &org.webchat, "webchat:gus", "My order?", "c-1");
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{happy}/replies"),
        &json!({"text": "Shipped today"}),
    );
    assert_eq!(status, 200);
    resolve(&happy);
    threadline_tests::eventually("the question", Duration::from_secs(10), || {
        (said_by_node(&happy)
            == vec!["How did we do? Reply with a number from 1 (poor) to 5 (great)."])
        .then_some(())
    });
    assert_eq!(thread_of(&happy)["thread"]["labels"], json!(["csat-asked"]));
    // The customer answers 5: recorded, thanked, resolved again.
    send(&node, &org.webchat, "webchat:gus", "5", "c-2");
    let shown = threadline_tests::eventually("the rating", Duration::from_secs(10), || {
        let shown = thread_of(&happy);
        (shown["thread"]["labels"] == json!(["csat-5"])).then_some(shown)
    });
    assert_eq!(shown["thread"]["status"], "resolved");
    assert_eq!(
        said_by_node(&happy).last().map(String::as_str),
        Some("Thank you for your rating!")
    );
    // Rated once: a later resolution asks nothing.
    send(&node, &org.webchat, "webchat:gus", "One more thing", "c-3");
    resolve(&happy);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        said_by_node(&happy).len(),
        2,
        "the question and the thanks only"
    );

    // A customer who answers with words: no rating; the conversation goes on, the question
    // is dropped, and a number is then just a message.
    let wordy = send(&node, &org.webchat, "webchat:hal", "Hi", "c-4");
    resolve(&wordy);
    threadline_tests::eventually("the question", Duration::from_secs(10), || {
        (said_by_node(&wordy).len() == 1).then_some(())
    });
    let same = send(
        &node,
        &org.webchat,
        "webchat:hal",
        "It was fine I guess, but option 1 or 2?",
        "c-5",
    );
    assert_eq!(
        same, wordy,
        "the answer goes to the conversation that asked"
    );
    let shown =
        threadline_tests::eventually("the question dropped", Duration::from_secs(10), || {
            let shown = thread_of(&wordy);
            (shown["thread"]["labels"] == json!([])).then_some(shown)
        });
    assert_eq!(
        shown["thread"]["status"], "open",
        "the customer's message reopened it"
    );
    send(&node, &org.webchat, "webchat:hal", "2", "c-6");
    std::thread::sleep(Duration::from_millis(500));
    let shown = thread_of(&wordy);
    assert_eq!(
        (&shown["thread"]["labels"], &shown["thread"]["status"]),
        (&json!([]), &json!("open")),
        "a number is an ordinary message now"
    );
    // Its next resolution asks again; this time a number is the rating.
    resolve(&wordy);
    threadline_tests::eventually("the question again", Duration::from_secs(10), || {
        (said_by_node(&wordy).len() == 2).then_some(())
    });
    send(&node, &org.webchat, "webchat:hal", "2", "c-7");
    threadline_tests::eventually("the rating", Duration::from_secs(10), || {
        (thread_of(&wordy)["thread"]["labels"] == json!(["csat-2"])).then_some(())
    });

    // In the report: two ratings, one of them satisfied.
    let (_, report) = node.get(token, "/api/v1/reports");
    assert_eq!(
        report["csat"],
        json!({"count": 2, "by_score": [0, 1, 0, 0, 1], "satisfied_percent": 50})
    );
    // The node's own resolution after a rating is not an agent's.
    let (_, me) = node.get(token, "/api/v1/me");
    assert_eq!(report["agents"][0]["agent"], me["id"]);
    assert_eq!(report["agents"][0]["resolved"], 2, "{report}");
    node.stop();
}

#[test]
fn each_filter_counts_the_conversations_with_messages_the_agent_has_not_read() {
    let org = Org::new();
    let bea_token = field(
        &threadline_ok(&org.data, &["agent", "add", "Bea"]),
        "token:",
    );
    let node = Node::start(&org.data);
    let token = &org.agent_token;
    let unread = |token: &str| node.get(token, "/api/v1/threads/counts").1["unread"].clone();
    let ida = send(&node, &org.webchat, "webchat:ida", "Hello", "u-1");
    let jon = send(&node, &org.webchat, "webchat:jon", "Hi", "u-2");
    assert_eq!(
        unread(token),
        json!({"mine": 0, "unassigned": 2, "open": 2, "pending": 0, "snoozed": 0, "resolved": 0, "all": 2})
    );
    // The admin reads Ida's conversation and takes Jon's: one unread left, now theirs.
    let (_, shown) = node.get(token, &format!("/api/v1/threads/{ida}"));
    let last = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .rfind(|e| e["kind"] == "thread.message.inbound")
        .expect("a message")["id"]
        .clone();
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{ida}/read"),
        &json!({"up_to": last}),
    );
    assert_eq!(status, 200);
    let (_, me) = node.get(token, "/api/v1/me");
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{jon}/assign"),
        &json!({"assignee": me["id"]}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        unread(token),
        json!({"mine": 1, "unassigned": 0, "open": 1, "pending": 0, "snoozed": 0, "resolved": 0, "all": 1})
    );
    // Each agent has their own: Bea has read nothing.
    assert_eq!(unread(&bea_token)["all"], 2);
    // Ida writes again: unread for the admin once more; after a restart the same.
    send(&node, &org.webchat, "webchat:ida", "Are you there?", "u-3");
    assert_eq!(unread(token)["all"], 2);
    node.stop();
    let node = Node::start(&org.data);
    assert_eq!(
        node.get(token, "/api/v1/threads/counts").1["unread"]["all"],
        2
    );
    node.stop();
}

#[test]
fn admins_make_teams_conversations_go_to_them_by_hand_or_by_rule_and_the_list_filters_on_them() {
    let org = Org::new();
    edit_config(&org.data, |text| {
        format!(
            "{text}
[[automation]]
on = \"message\"
text_contains = [\"invoice\"]
team = \"billing\"
"
        )
    });
    let node = Node::start(&org.data);
    let admin = &org.agent_token;
    let (_, me) = node.get(admin, "/api/v1/me");
    let me = me["id"].as_str().expect("id").to_owned();
    let (status, added) = node.post(admin, "/api/v1/agents", &json!({"name": "Cleo"}));
    assert_eq!(status, 200, "{added}");
    let (cleo, cleo_token) = (
        added["agent"]["id"].as_str().expect("id").to_owned(),
        added["token"].as_str().expect("token").to_owned(),
    );
    let teams = || node.get(&cleo_token, "/api/v1/teams").1["teams"].clone();

    // Bad input: a clear error, and no team.
    for (name, body, status, why) in [
        ("Billing", json!({"members": [me]}), 400, "bad team name"),
        ("bill ing", json!({"members": [me]}), 400, "bad team name"),
        ("billing", json!({"members": []}), 400, "at least one agent"),
        ("billing", json!({"members": ["nobody"]}), 400, "agent id"),
        (
            "billing",
            json!({"members": ["00000000000000000000000000000000"]}),
            422,
            "no agent",
        ),
    ] {
        let (got, answer) = node.put(admin, &format!("/api/v1/teams/{name}"), &body);
        assert_eq!(got, status, "{name} {body}: {answer}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains(why), "{message}");
    }
    // Only admins make teams.
    let (status, _) = node.put(
        &cleo_token,
        "/api/v1/teams/billing",
        &json!({"members": [cleo]}),
    );
    assert_eq!(status, 403);
    assert_eq!(teams(), json!([]), "nothing was written");

    let (status, answer) = node.put(
        admin,
        "/api/v1/teams/billing",
        &json!({"members": [cleo, me]}),
    );
    assert_eq!(status, 200, "{answer}");
    let mut both = vec![me.clone(), cleo.clone()];
    both.sort();
    assert_eq!(teams(), json!([{"name": "billing", "members": both}]));
    let (_, again) = node.put(
        admin,
        "/api/v1/teams/billing",
        &json!({"members": [me, cleo]}),
    );
    assert_eq!(
        again["events"],
        json!([]),
        "the same team again writes nothing"
    );
    node.put(admin, "/api/v1/teams/sales", &json!({"members": [me]}));

    // By hand: any agent gives a conversation to a team; its assignee stays.
    let question = send(
        &node,
        &org.email,
        "email:ann@example.com",
        "A question",
        "t-1",
    );
    let path = format!("/api/v1/threads/{question}");
    node.post(
        &cleo_token,
        &format!("{path}/assign"),
        &json!({"assignee": cleo}),
    );
    let (status, answer) = node.post(
        &cleo_token,
        &format!("{path}/team"),
        &json!({"team": "nope"}),
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("unknown_team"))
    );
    let (status, _) = node.post(
        &cleo_token,
        &format!("{path}/team"),
        &json!({"team": "sales"}),
    );
    assert_eq!(status, 200);
    let shown = node.get(&cleo_token, &path).1;
    assert_eq!(
        (
            shown["thread"]["team"].as_str(),
            shown["thread"]["assignee"].as_str()
        ),
        (Some("sales"), Some(cleo.as_str()))
    );
    assert!(
        shown["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["kind"] == "thread.assign_team" && e["detail"]["team"] == "sales"),
        "the change is an event of the conversation"
    );
    // By rule: a message about an invoice goes to billing.
    let invoice = send(
        &node,
        &org.email,
        "email:bo@example.com",
        "Where is my invoice?",
        "t-2",
    );
    threadline_tests::eventually(
        "the rule gives it to billing",
        Duration::from_secs(10),
        || {
            (node.get(admin, &format!("/api/v1/threads/{invoice}")).1["thread"]["team"]
                == "billing")
                .then_some(())
        },
    );
    let other = send(&node, &org.email, "email:cy@example.com", "Hello", "t-3");

    // The list filters on the team; the counts give each team's open conversations.
    let listed = |query: &str| -> Vec<String> {
        node.get(admin, &format!("/api/v1/threads?{query}")).1["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .map(|t| t["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(listed("team=billing"), vec![invoice.to_string()]);
    assert_eq!(listed("team=sales&status=open"), vec![question.to_string()]);
    assert_eq!(listed("team=support"), Vec::<String>::new());
    assert_eq!(listed("status=open").len(), 3, "{other}");
    let (_, counts) = node.get(admin, "/api/v1/threads/counts");
    assert_eq!(counts["teams"]["billing"]["open"], 1, "{counts}");
    assert_eq!(counts["teams"]["sales"]["open"], 1, "{counts}");
    // Taken from its team, a conversation leaves the team's list.
    node.post(admin, &format!("{path}/team"), &json!({"team": null}));
    assert_eq!(listed("team=sales"), Vec::<String>::new());

    // A removed team: gone from the list of teams, its conversations keep its name; kept
    // in the signed directory across a restart.
    let (status, _) = node.delete(admin, "/api/v1/teams/billing");
    assert_eq!(status, 200);
    let (status, _) = node.delete(admin, "/api/v1/teams/billing");
    assert_eq!(status, 404);
    node.stop();
    let node = Node::start(&org.data);
    let (_, after) = node.get(admin, "/api/v1/teams");
    assert_eq!(after["teams"], json!([{"name": "sales", "members": [me]}]));
    assert_eq!(
        node.get(admin, &format!("/api/v1/threads/{invoice}")).1["thread"]["team"],
        "billing"
    );
    node.stop();
}

#[test]
fn webhooks_send_each_event_signed_and_retry_until_the_receiver_takes_it_across_a_crash() {
    use threadline_tests::receiver::WebhookReceiver;
    let org = Org::new();
    let mut node = Node::start(&org.data);
    let admin = &org.agent_token;
    let secret = "s3cret-0123456789abcdef";
    let receiver = WebhookReceiver::start(secret);
    let url = receiver.url.clone();

    // Bad input: a clear error, and no subscription.
    for (body, why) in [
        (
            json!({"url": "ftp://x", "topics": ["message.created"]}),
            "url",
        ),
        (
            json!({"url": url, "topics": ["message.deleted"]}),
            "unknown topic",
        ),
        (json!({"url": url, "topics": []}), "topics"),
        (
            json!({"url": url, "topics": ["message.created"], "secret": "short"}),
            "secret",
        ),
    ] {
        let (status, answer) = node.put(admin, "/api/v1/webhooks/crm", &body);
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains(why), "{message}");
    }
    let (_, cleo) = node.post(admin, "/api/v1/agents", &json!({"name": "Cleo"}));
    let cleo = cleo["token"].as_str().expect("token").to_owned();
    let subscription = json!({"url": url, "topics": ["message.created", "conversation.status_changed"], "secret": secret});
    assert_eq!(
        node.put(&cleo, "/api/v1/webhooks/crm", &subscription).0,
        403,
        "admins only"
    );
    assert_eq!(node.get(&cleo, "/api/v1/webhooks").0, 403);
    assert_eq!(node.get(admin, "/api/v1/webhooks").1["webhooks"], json!([]));
    let (status, set) = node.put(admin, "/api/v1/webhooks/crm", &subscription);
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["webhook"]["secret"], secret);

    // The receiver fails the first try: the delivery comes again, with the same id.
    receiver.answer_next(&[500]);
    let thread = send(
        &node,
        &org.email,
        "email:ann@example.com",
        "Where is my parcel?",
        "w-1",
    );
    let got =
        threadline_tests::eventually("a delivery after a retry", Duration::from_secs(20), || {
            let got = receiver.received();
            (got.len() >= 2).then_some(got)
        });
    assert_eq!((got[0].answered, got[1].answered), (500, 200));
    assert_eq!(got[0].delivery, got[1].delivery);
    let body = &got[1].body;
    assert_eq!(got[1].topic, "message.created");
    assert_eq!(body["topic"], "message.created");
    assert_eq!(body["id"].as_str(), Some(got[1].delivery.as_str()));
    assert_eq!(body["thread"]["id"], thread.to_string());
    assert_eq!(body["event"]["kind"], "thread.message.inbound");
    assert_eq!(body["event"]["text"], "Where is my parcel?");

    // A reply and a status change are sent; a note is not subscribed to.
    let path = format!("/api/v1/threads/{thread}");
    assert_eq!(
        node.post(
            admin,
            &format!("{path}/replies"),
            &json!({"text": "On its way."})
        )
        .0,
        200
    );
    assert_eq!(
        node.post(
            admin,
            &format!("{path}/notes"),
            &json!({"text": "internal"})
        )
        .0,
        200
    );
    assert_eq!(
        node.post(
            admin,
            &format!("{path}/status"),
            &json!({"status": "resolved"})
        )
        .0,
        200
    );
    let got =
        threadline_tests::eventually("the reply and the status", Duration::from_secs(10), || {
            let got = receiver.received();
            (got.len() >= 4).then_some(got)
        });
    assert_eq!(got[2].body["event"]["text"], "On its way.");
    assert_eq!(got[2].body["event"]["kind"], "thread.message.outbound");
    assert_eq!(got[3].topic, "conversation.status_changed");
    assert_eq!(got[3].body["thread"]["status"], "resolved");
    assert!(
        got.iter().all(|r| r.signed),
        "every delivery is signed with the secret"
    );

    // The log says what happened to each attempt.
    let (_, log) = node.get(admin, "/api/v1/webhooks/crm/deliveries");
    let outcomes: Vec<&str> = log["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(
        outcomes,
        ["delivered", "delivered", "delivered", "retrying"],
        "{log}"
    );
    assert_eq!(log["attempts"][3]["status"], 500);
    assert_eq!(log["queued"], 0);

    // Nothing acknowledged is lost: killed with a delivery waiting, the node sends it after
    // its restart.
    receiver.answer_next(&[503]);
    send(
        &node,
        &org.email,
        "email:ann@example.com",
        "Hello again",
        "w-2",
    );
    let failed = threadline_tests::eventually("the refused try", Duration::from_secs(10), || {
        receiver.received().get(4).cloned()
    });
    assert_eq!(failed.answered, 503);
    node.crash();
    node = Node::start(&org.data);
    let again = threadline_tests::eventually(
        "the delivery after the restart",
        Duration::from_secs(20),
        || receiver.received().get(5).cloned(),
    );
    assert_eq!(
        (again.delivery.as_str(), again.answered),
        (failed.delivery.as_str(), 200)
    );
    assert_eq!(again.body["event"]["text"], "Hello again");

    // Removed: nothing more is sent.
    assert_eq!(node.delete(admin, "/api/v1/webhooks/crm").0, 200);
    assert_eq!(node.delete(admin, "/api/v1/webhooks/crm").0, 404);
    send(&node, &org.email, "email:bo@example.com", "Anyone?", "w-3");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.received().len(), 6);
    node.stop();
}

#[test]
fn a_slow_webhook_receiver_holds_up_only_its_own_deliveries() {
    use threadline_tests::receiver::WebhookReceiver;
    let org = Org::new();
    let node = Node::start(&org.data);
    let admin = &org.agent_token;
    let secret = "s3cret-0123456789abcdef";
    let (slow, fast) = (
        WebhookReceiver::start(secret),
        WebhookReceiver::start(secret),
    );
    slow.answer_slowly(Duration::from_secs(4));
    for (name, receiver) in [("slow", &slow), ("fast", &fast)] {
        let (status, _) = node.put(
            admin,
            &format!("/api/v1/webhooks/{name}"),
            &json!({"url": receiver.url, "topics": ["message.created"], "secret": secret}),
        );
        assert_eq!(status, 200);
    }
    for n in 0..3 {
        send(
            &node,
            &org.email,
            "email:ann@example.com",
            &format!("message {n}"),
            &format!("s-{n}"),
        );
    }
    // The fast receiver has all three while the slow one is still on its first or second.
    threadline_tests::eventually(
        "the fast receiver's deliveries",
        Duration::from_secs(6),
        || (fast.received().len() == 3).then_some(()),
    );
    assert!(
        slow.received().len() < 3,
        "the slow receiver cannot have taken all three yet"
    );
    threadline_tests::eventually(
        "the slow receiver's deliveries",
        Duration::from_secs(30),
        || (slow.received().len() == 3).then_some(()),
    );
    node.stop();
}
