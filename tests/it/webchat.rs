//! The web chat over its WebSocket, against the real node: visitors, agents' replies, history,
//! isolation between visitors, idempotent resends, and refusals.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use threadline_tests::{edit_config, field, run_threadline, threadline_ok, Node, Visitor};

struct Site {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    agent_token: String,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = threadline_ok(&data, &["init"]);
        Site {
            agent_token: field(&out, "token:"),
            data,
            _dir: dir,
        }
    }
}

/// The web chat threads the agent sees, newest first.
fn webchat_threads(node: &Node, token: &str) -> Vec<Value> {
    let (status, list) = node.get(token, "/api/v1/threads?channel=webchat");
    assert_eq!(status, 200, "{list}");
    list["threads"].as_array().expect("threads").clone()
}

fn reply(node: &Node, token: &str, thread: &str, text: &str) -> String {
    let (status, answer) = node.post(
        token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({ "text": text }),
    );
    assert_eq!(status, 200, "{answer}");
    answer["event"].as_str().expect("event").to_owned()
}

/// The next `message` frame, skipping others.
fn next_message(visitor: &mut Visitor) -> Value {
    loop {
        let frame = visitor.receive().expect("a frame");
        if frame["type"] == "message" {
            return frame;
        }
    }
}

#[test]
fn a_visitor_and_an_agent_talk_and_the_history_survives_reloads_and_restarts() {
    let site = Site::new();
    let node = Node::start(&site.data);
    let mut visitor = Visitor::connect(&node, None);
    assert_eq!(visitor.session.len(), 64);
    assert!(visitor.history.is_empty());

    let ack = visitor.say("m1", "Hello, is the tent waterproof?");
    assert_eq!(ack["type"], "ack", "{ack}");
    let threads = webchat_threads(&node, &site.agent_token);
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0]["unread"], 1);
    let thread = threads[0]["id"].as_str().expect("id").to_owned();

    // The agent reads it: the visitor's window shows it as seen; an event of no thread is refused.
    let message = ack["event"].as_str().expect("event");
    let (status, _) = node.post(
        &site.agent_token,
        &format!("/api/v1/threads/{thread}/read"),
        &json!({ "up_to": "00".repeat(32) }),
    );
    assert_eq!(status, 404);
    let (status, read) = node.post(
        &site.agent_token,
        &format!("/api/v1/threads/{thread}/read"),
        &json!({ "up_to": message }),
    );
    assert_eq!(status, 200, "{read}");
    let seen = visitor.receive().expect("a frame");
    assert_eq!(seen, json!({"type": "seen", "up_to": message}));
    let (_, listed) = node.get(&site.agent_token, "/api/v1/threads?channel=webchat");
    assert_eq!(
        listed["threads"][0]["unread"], 0,
        "read up to the last message"
    );
    let (_, again) = node.post(
        &site.agent_token,
        &format!("/api/v1/threads/{thread}/read"),
        &json!({ "up_to": message }),
    );
    assert_eq!(again["event"], Value::Null, "read twice is read once");

    let answer = reply(&node, &site.agent_token, &thread, "Yes, up to 3000 mm.");
    let pushed = next_message(&mut visitor);
    assert_eq!(pushed["from"], "agent");
    assert_eq!(pushed["text"], "Yes, up to 3000 mm.");
    assert_eq!(pushed["event"], answer.as_str());

    // The visitor reads it: the agent sees the receipts (delivered, then read).
    visitor.send(&json!({"type": "read", "up_to": answer}));
    let mut receipts: Vec<Value> = Vec::new();
    for _ in 0..50 {
        let (_, detail) = node.get(&site.agent_token, &format!("/api/v1/threads/{thread}"));
        receipts = detail["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "thread.receipt" && e["detail"]["target"] == answer.as_str())
            .map(|e| e["detail"]["receipt"].clone())
            .collect();
        if receipts.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    receipts.sort_by_key(|r| r.to_string());
    assert_eq!(receipts, [json!("delivered"), json!("read")]);

    // Same browser, new page: same conversation.
    let session = visitor.session.clone();
    drop(visitor);
    let again = Visitor::connect(&node, Some(&session));
    let texts: Vec<(&str, &str)> = again
        .history
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap_or(""),
                m["text"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        texts,
        [
            ("visitor", "Hello, is the tent waterproof?"),
            ("agent", "Yes, up to 3000 mm.")
        ]
    );
    assert_eq!(again.history[0]["state"], "seen");
    assert_eq!(again.history[1]["state"], "read");
    drop(again);

    node.stop();
    let node = Node::start(&site.data);
    let returning = Visitor::connect(&node, Some(&session));
    assert_eq!(returning.history.len(), 2);
    node.stop();
}

#[test]
fn two_visitors_never_see_each_other() {
    let site = Site::new();
    let node = Node::start(&site.data);
    let mut ann = Visitor::connect(&node, None);
    let mut bob = Visitor::connect(&node, None);
    assert_ne!(ann.session, bob.session);
    assert_eq!(ann.say("a1", "Ann's order is 1001")["type"], "ack");
    assert_eq!(bob.say("b1", "Bob's order is 2002")["type"], "ack");
    let threads = webchat_threads(&node, &site.agent_token);
    assert_eq!(threads.len(), 2);
    // Reply to Ann's thread only.
    let ann_thread = threads
        .iter()
        .find(|t| {
            let id = t["id"].as_str().expect("id");
            let (_, detail) = node.get(&site.agent_token, &format!("/api/v1/threads/{id}"));
            detail.to_string().contains("1001")
        })
        .expect("Ann's thread")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    reply(
        &node,
        &site.agent_token,
        &ann_thread,
        "Ann, 1001 ships today",
    );
    assert_eq!(next_message(&mut ann)["text"], "Ann, 1001 ships today");
    assert_eq!(
        bob.receive_within(Duration::from_millis(1500)),
        None,
        "Bob gets nothing of Ann's"
    );

    // Bob's history is his alone; a made-up or borrowed session opens an empty conversation.
    let bob_again = Visitor::connect(&node, Some(&bob.session));
    let all = serde_json::to_string(&bob_again.history).expect("json");
    assert!(all.contains("2002") && !all.contains("1001"), "{all}");
    for guess in [
        "0".repeat(64),
        "f".repeat(64),
        ann.session.to_uppercase(),
        ann.session[..63].to_owned(),
    ] {
        let stranger = Visitor::connect(&node, Some(&guess));
        assert!(
            stranger.history.is_empty(),
            "{guess}: {:?}",
            stranger.history
        );
        assert_ne!(stranger.session, ann.session);
    }
    node.stop();
}

#[test]
fn a_message_sent_twice_is_stored_once() {
    let site = Site::new();
    let node = Node::start(&site.data);
    let mut visitor = Visitor::connect(&node, None);
    let first = visitor.say("same-id", "Do you ship to Norway?");
    // The widget resends after a reconnect, from another window of the same browser too.
    let mut other = Visitor::connect(&node, Some(&visitor.session));
    let second = other.say("same-id", "Do you ship to Norway?");
    assert_eq!(first["type"], "ack");
    assert_eq!(first["event"], second["event"]);
    let threads = webchat_threads(&node, &site.agent_token);
    assert_eq!(threads.len(), 1);
    let id = threads[0]["id"].as_str().expect("id");
    let (_, detail) = node.get(&site.agent_token, &format!("/api/v1/threads/{id}"));
    let inbound = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "thread.message.inbound")
        .count();
    assert_eq!(inbound, 1);
    node.stop();
}

#[test]
fn bad_frames_foreign_sites_and_floods_are_refused_and_change_nothing() {
    let site = Site::new();
    let node = Node::start(&site.data);
    assert_eq!(
        Visitor::connect_from(&node, None, "https://evil.example", None).err(),
        Some(403)
    );
    let mut visitor = Visitor::connect(&node, None);
    let too_long = "x".repeat(5000);
    for (frame, code) in [
        (
            json!({"type": "message", "id": "m1", "text": too_long}),
            "too_long",
        ),
        (
            json!({"type": "message", "id": "m1", "text": "   "}),
            "bad_frame",
        ),
        (
            json!({"type": "message", "id": "bad id!", "text": "hi"}),
            "bad_frame",
        ),
        (json!({"type": "message", "id": "m1"}), "bad_frame"),
        (json!({"type": "hello", "session": null}), "bad_frame"),
        (json!({"type": "read", "up_to": "nope"}), "bad_frame"),
        (json!({"type": "shout"}), "bad_frame"),
    ] {
        visitor.send(&frame);
        let answer = visitor.receive().expect("an answer");
        assert_eq!(answer["type"], "error", "{frame}: {answer}");
        assert_eq!(answer["code"], code, "{frame}: {answer}");
    }
    assert!(webchat_threads(&node, &site.agent_token).is_empty());

    // 10 at once are fine; the 11th right after is refused, and is not stored.
    for n in 0..10 {
        assert_eq!(visitor.say(&format!("f{n}"), "hello?")["type"], "ack");
    }
    let refused = visitor.say("f10", "hello??");
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    let threads = webchat_threads(&node, &site.agent_token);
    let id = threads[0]["id"].as_str().expect("id");
    let (_, detail) = node.get(&site.agent_token, &format!("/api/v1/threads/{id}"));
    assert!(!detail.to_string().contains("hello??"));
    node.stop();
}

#[test]
fn an_email_the_visitor_types_is_noted_for_agents_and_routes_nothing() {
    let site = Site::new();
    let node = Node::start(&site.data);
    let mut visitor = Visitor::connect(&node, None);
    assert_eq!(visitor.say("m1", "Please answer by email")["type"], "ack");
    visitor.send(&json!({"type": "email", "address": "not an address"}));
    assert_eq!(visitor.receive().expect("answer")["code"], "bad_frame");
    visitor.send(&json!({"type": "email", "address": "ann@example.test"}));
    let saved = visitor.receive().expect("answer");
    assert_eq!(saved["type"], "email_saved", "{saved}");
    let threads = webchat_threads(&node, &site.agent_token);
    let contact = threads[0]["contact"].as_str().expect("contact");
    let (_, record) = node.get(&site.agent_token, &format!("/api/v1/contacts/{contact}"));
    assert_eq!(record["attributes"]["unverified email"], "ann@example.test");
    // Not a handle: nothing can be sent there, and nobody's mail becomes the visitor's.
    assert_eq!(
        record["handles"].as_array().map(Vec::len),
        Some(1),
        "{record}"
    );
    node.stop();
}

#[test]
fn a_signed_identity_makes_two_browsers_one_customer_and_a_forged_one_nothing() {
    let site = Site::new();
    edit_config(&site.data, |text| {
        text.replace(
            "allowed_origins = []",
            "allowed_origins = []\nidentity_secret = \"shop-secret-0123456789\"",
        )
    });
    let node = Node::start(&site.data);
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
        + 3_600_000;
    let sign = |email: &str| {
        hex::encode(threadline_bridges::webchat::hmac_sha256(
            b"shop-secret-0123456789",
            &threadline_bridges::webchat::identity_message(email, expires),
        ))
    };

    // Alice on her laptop, logged in on the shop's site.
    let mut laptop = Visitor::connect_as(
        &node,
        None,
        json!({"email": "alice@example.test", "expires": expires, "signature": sign("alice@example.test")}),
    );
    assert!(laptop.notices.is_empty(), "{:?}", laptop.notices);
    assert_eq!(laptop.say("l1", "From my laptop")["type"], "ack");
    // Alice on her phone: another browser, the same customer.
    let mut phone = Visitor::connect_as(
        &node,
        None,
        json!({"email": "alice@example.test", "expires": expires, "signature": sign("alice@example.test")}),
    );
    assert_eq!(phone.say("p1", "From my phone")["type"], "ack");
    let (_, found) = node.get(
        &site.agent_token,
        "/api/v1/contacts?q=email:alice@example.test",
    );
    let contacts = found["contacts"].as_array().expect("contacts");
    assert_eq!(contacts.len(), 1, "{found}");
    let id = contacts[0]["id"].as_str().expect("id");
    let (_, record) = node.get(&site.agent_token, &format!("/api/v1/contacts/{id}"));
    let handles: Vec<&str> = record["handles"]
        .as_array()
        .expect("handles")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        handles.len(),
        3,
        "two browsers and the address: {handles:?}"
    );
    assert!(handles.contains(&"email:alice@example.test"));
    let timeline = record["timeline"].to_string();
    assert!(timeline.contains("From my laptop") && timeline.contains("From my phone"));

    // A forged signature links nothing.
    let mallory = Visitor::connect_as(
        &node,
        None,
        json!({"email": "alice@example.test", "expires": expires, "signature": sign("mallory@example.test")}),
    );
    assert_eq!(mallory.notices[0]["code"], "identity_refused");
    // A signature that was right but has expired speaks for nobody.
    let old = expires - 7_200_000;
    let stale = Visitor::connect_as(
        &node,
        None,
        json!({"email": "alice@example.test", "expires": old, "signature": hex::encode(
            threadline_bridges::webchat::hmac_sha256(
                b"shop-secret-0123456789",
                &threadline_bridges::webchat::identity_message("alice@example.test", old),
            )
        )}),
    );
    assert_eq!(stale.notices[0]["code"], "identity_refused");
    assert!(mallory.history.is_empty());
    let (_, found) = node.get(
        &site.agent_token,
        "/api/v1/contacts?q=email:alice@example.test",
    );
    let (_, record) = node.get(
        &site.agent_token,
        &format!(
            "/api/v1/contacts/{}",
            found["contacts"][0]["id"].as_str().expect("id")
        ),
    );
    assert_eq!(record["handles"].as_array().map(Vec::len), Some(3));
    node.stop();
}

#[test]
fn the_web_chat_runs_as_a_standalone_bridge_against_the_node() {
    let site = Site::new();
    // The node leaves its web chat queue to the standalone bridge.
    edit_config(&site.data, |text| {
        text.replace("builtin = true", "builtin = false")
    });
    let added = threadline_ok(&site.data, &["bridge", "add", "webchat"]);
    let key_file = site.data.join("webchat-bridge.key");
    std::fs::write(&key_file, field(&added, "bridge key:")).expect("key written");
    let node = Node::start(&site.data);
    let bridge = Node::start_command(
        &site.data,
        &[
            "bridge",
            "webchat",
            "--node",
            &node.base,
            "--token",
            &field(&added, "token:"),
            "--key-file",
            key_file.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
        ],
        "web chat bridge listening on ",
    );

    let mut visitor = Visitor::connect(&bridge, None);
    assert!(!visitor.agents_online);
    let ack = visitor.say("s1", "Hello through a standalone bridge");
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(
        visitor.say("s1", "Hello through a standalone bridge")["event"],
        ack["event"]
    );
    let threads = webchat_threads(&node, &site.agent_token);
    assert_eq!(threads.len(), 1);
    let thread = threads[0]["id"].as_str().expect("id").to_owned();
    reply(
        &node,
        &site.agent_token,
        &thread,
        "Answered through the node",
    );
    assert_eq!(
        next_message(&mut visitor)["text"],
        "Answered through the node"
    );

    let session = visitor.session.clone();
    drop(visitor);
    let again = Visitor::connect(&bridge, Some(&session));
    let texts: Vec<&str> = again
        .history
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(
        texts,
        [
            "Hello through a standalone bridge",
            "Answered through the node"
        ]
    );
    // The delivered receipt reaches the node.
    let delivered = (0..50).any(|_| {
        let (_, detail) = node.get(&site.agent_token, &format!("/api/v1/threads/{thread}"));
        let found = detail.to_string().contains("\"receipt\":\"delivered\"");
        if !found {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    });
    assert!(delivered);
    bridge.stop();
    node.stop();
}

#[test]
fn an_address_opening_chats_in_a_loop_is_slowed_down() {
    let site = Site::new();
    edit_config(&site.data, |text| {
        text.replace("connections_per_minute = 120", "connections_per_minute = 3")
    });
    let node = Node::start(&site.data);
    let origin = node.base.clone();
    let open: Vec<Visitor> = (0..3).map(|_| Visitor::connect(&node, None)).collect();
    assert_eq!(open.len(), 3);
    assert_eq!(
        Visitor::connect_from(&node, None, &origin, None).err(),
        Some(429),
        "the fourth new connection within the minute"
    );
    assert!(webchat_threads(&node, &site.agent_token).is_empty());
    node.stop();
}

#[test]
fn a_frame_of_any_type_with_an_unknown_field_is_refused_with_a_clear_error() {
    let site = Site::new();
    let node = Node::start(&site.data);
    let unknown = |answer: &Value| {
        answer["type"] == "error"
            && answer["code"] == "bad_frame"
            && answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("unknown field"))
    };
    // The first frame: an error that says why, then the socket closes (the widget reconnects).
    for hello in [
        json!({"type": "hello", "session": null, "extra": 1}),
        json!({"type": "hello", "session": null, "identity": {
            "email": "ann@example.test", "expires": 1, "signature": "00", "admin": true}}),
    ] {
        let answers = Visitor::refused_hello(&node, &hello);
        assert!(
            answers.len() == 1 && unknown(&answers[0]),
            "{hello}: {answers:?}"
        );
    }
    // Later frames: an error each, and the chat goes on.
    let mut visitor = Visitor::connect(&node, None);
    for frame in [
        json!({"type": "message", "id": "m1", "text": "hi", "extra": 1}),
        json!({"type": "read", "up_to": "ab".repeat(32), "extra": 1}),
        json!({"type": "typing", "extra": 1}),
        json!({"type": "email", "address": "ann@example.test", "extra": 1}),
        json!({"type": "hello", "session": null, "extra": 1}),
    ] {
        visitor.send(&frame);
        let answer = visitor.receive().expect("an answer, on an open socket");
        assert!(unknown(&answer), "{frame}: {answer}");
    }
    assert!(webchat_threads(&node, &site.agent_token).is_empty());
    assert_eq!(visitor.say("m1", "hi")["type"], "ack");

    // The web chat's routes answer a method they do not take like the API does.
    let (status, body) = node.post(&site.agent_token, "/webchat/demo", &json!({}));
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    node.stop();
}

/// The next reply (a `message` frame from an agent or the node) the visitor gets.
fn next_reply(visitor: &mut Visitor) -> Value {
    loop {
        let frame = visitor.receive().expect("a frame");
        if frame["type"] == "message" && frame["from"] == "agent" {
            return frame;
        }
    }
}

#[test]
fn outside_business_hours_a_visitor_is_told_once_and_inside_nothing() {
    let site = Site::new();
    // Half a setting: refused at start with the reason.
    edit_config(&site.data, |text| {
        text.replace("# timezone = \"Europe/Berlin\"", "timezone = \"UTC\"")
    });
    let refused = run_threadline(&site.data, &["run", "--listen", "127.0.0.1:0"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("business_hours: set both timezone and away_message"),
        "{why}"
    );
    // Closed every day: a visitor is told, once.
    let away = "Thanks! We are away now and answer from 9:00.";
    edit_config(&site.data, |text| {
        text.replace(
            "# away_message = \"Thanks for your message! We are away now and answer from 9:00.\"",
            &format!("away_message = \"{away}\""),
        )
    });
    let node = Node::start(&site.data);
    let mut visitor = Visitor::connect(&node, None);
    assert_eq!(visitor.say("m1", "Are you open?")["type"], "ack");
    assert_eq!(next_reply(&mut visitor)["text"], away);
    assert_eq!(visitor.say("m2", "Hello?")["type"], "ack");
    let threads = webchat_threads(&node, &site.agent_token);
    let thread = threads[0]["id"].as_str().expect("id").to_owned();
    let (status, _) = node.post(
        &site.agent_token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Morning! We are here now."}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        next_reply(&mut visitor)["text"],
        "Morning! We are here now.",
        "no second away reply"
    );
    let (_, detail) = node.get(&site.agent_token, &format!("/api/v1/threads/{thread}"));
    let automatic: Vec<&Value> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "thread.message.outbound" && e["text"] == away)
        .collect();
    assert_eq!(automatic.len(), 1, "{detail}");
    assert_eq!(automatic[0]["agent"], Value::Null, "the node's own reply");
    node.stop();
    // Open all week: nothing automatic.
    edit_config(&site.data, |text| {
        let mut text = text.to_owned();
        for day in [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ] {
            text = text.replace(
                &format!("# {day} = "),
                &format!("{day} = \"00:00-24:00\"\n# was "),
            );
        }
        text
    });
    let node = Node::start(&site.data);
    let mut other = Visitor::connect(&node, None);
    assert_eq!(other.say("m1", "Hi there")["type"], "ack");
    let threads = webchat_threads(&node, &site.agent_token);
    let thread = threads
        .iter()
        .find(|t| t["last_message"]["text"] == "Hi there")
        .expect("the new conversation")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    node.post(
        &site.agent_token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Hello from the team"}),
    );
    assert_eq!(next_reply(&mut other)["text"], "Hello from the team");
    node.stop();
}

/// `POST /webchat/files?name=` as the widget sends it: the answer's status and JSON.
fn upload_file(
    base: &str,
    session: &str,
    name: &str,
    media_type: &str,
    bytes: &[u8],
) -> (u16, Value) {
    let result = ureq::post(&format!("{base}/webchat/files"))
        .query("name", name)
        .set("X-Threadline-Session", session)
        .set("Content-Type", media_type)
        .send_bytes(bytes);
    match result {
        Ok(response) => (response.status(), response.into_json().expect("json")),
        Err(ureq::Error::Status(status, response)) => {
            (status, response.into_json().unwrap_or(Value::Null))
        }
        Err(err) => panic!("the upload: {err}"),
    }
}

/// `GET /webchat/files/{event}/{n}` with a session: the status and the bytes.
fn download_file(base: &str, session: &str, event: &str, n: usize) -> (u16, Vec<u8>) {
    let result = ureq::get(&format!("{base}/webchat/files/{event}/{n}"))
        .set("X-Threadline-Session", session)
        .call();
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("the download: {err}"),
    };
    let status = response.status();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).expect("bytes");
    (status, bytes)
}

/// Files both ways, through the node's own web chat and a standalone one alike.
fn files_go_both_ways(node: &Node, chat: &Node, token: &str) {
    let mut visitor = Visitor::connect(chat, None);
    // A file needs a message first? No: it is uploaded, then named in a message.
    let scan: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let (status, file) = upload_file(
        &chat.base,
        &visitor.session,
        "receipt scan.png",
        "image/png",
        &scan,
    );
    assert_eq!(status, 200, "{file}");
    assert_eq!(
        (file["size"].as_u64(), file["name"].as_str()),
        (Some(150_000), Some("receipt scan.png"))
    );
    visitor.send(&json!({"type": "message", "id": "f1", "text": "My receipt", "files": [file]}));
    let ack = visitor.receive().expect("ack");
    assert_eq!(ack["type"], "ack", "{ack}");
    let event = ack["event"].as_str().expect("event").to_owned();
    // The agent sees the file on the message, with its bytes.
    let threads = webchat_threads(node, token);
    let thread = threads[0]["id"].as_str().expect("id").to_owned();
    let shown = threadline_tests::detail(node, token, &thread);
    let message = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["id"] == event.as_str())
        .expect("the message")
        .clone();
    assert_eq!(message["attachments"][0]["name"], "receipt scan.png");
    assert_eq!(
        threadline_tests::attachment(node, token, &thread, &event, 0),
        scan
    );
    // The visitor downloads their own file; another visitor cannot, nor one without a session.
    assert_eq!(
        download_file(&chat.base, &visitor.session, &event, 0),
        (200, scan.clone())
    );
    let stranger = Visitor::connect(chat, None);
    assert_eq!(
        download_file(&chat.base, &stranger.session, &event, 0).0,
        404
    );
    assert_eq!(
        download_file(&chat.base, &visitor.session, &event, 1).0,
        404
    );
    let no_session = ureq::get(&format!("{}/webchat/files/{event}/0", chat.base)).call();
    assert!(matches!(no_session, Err(ureq::Error::Status(401, _))));
    // Too big, or empty: refused, nothing stored.
    let (status, answer) = upload_file(
        &chat.base,
        &visitor.session,
        "big.bin",
        "application/octet-stream",
        &vec![1u8; 10 * 1024 * 1024 + 1],
    );
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        upload_file(&chat.base, &visitor.session, "empty.txt", "text/plain", &[]).0,
        413
    );
    // A message naming a file this visitor did not upload is refused: another blob under
    // the token, or the file by another visitor (its hash and token known).
    let mut forged = file.clone();
    forged["blob"] = json!("11".repeat(32));
    visitor.send(&json!({"type": "message", "id": "f2", "text": "", "files": [forged]}));
    let refused = visitor.receive().expect("an answer");
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("bad_frame")),
        "{refused}"
    );
    let mut stranger = Visitor::connect(chat, None);
    stranger.send(&json!({"type": "message", "id": "s1", "text": "mine now", "files": [file]}));
    let refused = stranger.receive().expect("an answer");
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("bad_frame")),
        "{refused}"
    );
    // Uploads go with an open chat: a session with none is refused before its bytes are read.
    let (status, answer) = upload_file(&chat.base, &"ab".repeat(32), "x.txt", "text/plain", b"x");
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("not_connected")),
        "{answer}"
    );

    // The agent answers with a file: it reaches the visitor's window, and downloads.
    let label = b"%PDF-1.4 a return label".to_vec();
    let uploaded: Value = node
        .http()
        .post(&format!("{}/api/v1/attachments", node.base))
        .set("Authorization", &format!("Bearer {token}"))
        .send_bytes(&label)
        .expect("upload")
        .into_json()
        .expect("json");
    let (status, answer) = node.post(
        token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Here is the label.", "attachments": [
            {"blob": uploaded["blob"], "name": "label.pdf", "media_type": "application/pdf"}
        ]}),
    );
    assert_eq!(status, 200, "{answer}");
    let reply = next_message(&mut visitor);
    assert_eq!(
        reply["files"],
        json!([{"name": "label.pdf", "media_type": "application/pdf", "size": label.len()}])
    );
    let reply_event = reply["event"].as_str().expect("event");
    assert_eq!(
        download_file(&chat.base, &visitor.session, reply_event, 0),
        (200, label)
    );
    // And stays in the history.
    let again = Visitor::connect(chat, Some(&visitor.session));
    let files: Vec<&Value> = again.history.iter().map(|m| &m["files"]).collect();
    assert_eq!(files[0][0]["name"], "receipt scan.png");
    assert_eq!(files[1][0]["name"], "label.pdf");
}

#[test]
fn visitors_and_agents_send_each_other_files_on_the_built_in_and_the_standalone_web_chat() {
    let site = Site::new();
    let node = Node::start(&site.data);
    files_go_both_ways(&node, &node, &site.agent_token);
    node.stop();

    let site = Site::new();
    edit_config(&site.data, |text| {
        text.replace("builtin = true", "builtin = false")
    });
    let added = threadline_ok(&site.data, &["bridge", "add", "webchat"]);
    let key_file = site.data.join("webchat-bridge.key");
    std::fs::write(&key_file, field(&added, "bridge key:")).expect("key written");
    let node = Node::start(&site.data);
    let bridge = Node::start_command(
        &site.data,
        &[
            "bridge",
            "webchat",
            "--node",
            &node.base,
            "--token",
            &field(&added, "token:"),
            "--key-file",
            key_file.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
        ],
        "web chat bridge listening on ",
    );
    files_go_both_ways(&node, &bridge, &site.agent_token);
    bridge.stop();
    node.stop();
}
