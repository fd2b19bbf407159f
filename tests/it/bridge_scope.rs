//! A certified bridge of one channel, with its own key and token, tries what issue 13's attacker
//! did against a web chat visitor's thread: sign its way in with a made-up handle, read the
//! conversation, post receipts on the visitor's replies, and use another customer's file by
//! naming its hash. Each is refused, stores nothing and is logged with the bridge's key; the
//! honest path (the customer's own linked WhatsApp number) still continues the thread.

use std::time::Duration;

use serde_json::{json, Value};
use threadline_protocol::{
    event::{Attachment, Content, Draft, EventKind, ReceiptKind, Scope, ThreadKind},
    id::BlobHash,
    name::{AttachmentMeta, ExternalId},
    ChannelKind, EventId, Handle, ThreadId,
};
use threadline_tests::{eventually, Node};

use crate::node::{now, send, submit, Bridge, Org};

/// `POST /bridge/resolve`: the handle's thread, and the parents and depth of the next event.
pub(crate) fn resolve(node: &Node, bridge: &Bridge, handle: &str) -> (ThreadId, Vec<EventId>, u64) {
    let (status, resolved) = node.post(
        &bridge.token,
        "/api/v1/bridge/resolve",
        &json!({ "handle": handle }),
    );
    assert_eq!(status, 200, "{resolved}");
    (
        resolved["thread"]
            .as_str()
            .expect("thread")
            .parse()
            .expect("id"),
        resolved["parents"]
            .as_array()
            .expect("parents")
            .iter()
            .map(|p| p.as_str().expect("id").parse().expect("id"))
            .collect(),
        resolved["depth"].as_u64().expect("depth"),
    )
}

fn thread(node: &Node, token: &str, thread: &ThreadId) -> Value {
    let (status, detail) = node.get(token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(status, 200, "{detail}");
    detail
}

fn events_of(detail: &Value) -> Vec<Value> {
    detail["events"].as_array().expect("events").clone()
}

/// The thread's newest event id and depth: what a bridge that read the thread would name.
fn head(detail: &Value) -> (EventId, u64) {
    let last = events_of(detail).last().expect("an event").clone();
    (
        last["id"].as_str().expect("id").parse().expect("event id"),
        last["depth"].as_u64().expect("depth"),
    )
}

pub(crate) fn signed(
    bridge: &Bridge,
    thread: ThreadId,
    parents: Vec<EventId>,
    depth: u64,
    kind: EventKind,
    content: Option<Content>,
) -> String {
    let mut draft = Draft::new(Scope::Thread(thread), parents, depth, now(), kind);
    if let Some(content) = content {
        draft = draft.with_content(content);
    }
    let event = draft.sign(&bridge.key).expect("signs");
    hex::encode(event.to_bytes().expect("encodes"))
}

pub(crate) fn message(text: &str, handle: &str, external_id: &str) -> Content {
    Content::text(text)
        .with_handle(handle.parse::<Handle>().expect("handle"))
        .with_external_id(ExternalId::new(external_id).expect("id"))
}

fn refused(results: &[Value]) -> (String, String) {
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["status"], "refused", "{results:?}");
    (
        results[0]["code"].as_str().expect("code").to_owned(),
        results[0]["message"].as_str().expect("message").to_owned(),
    )
}

pub(crate) fn upload(node: &Node, bridge: &Bridge, bytes: &[u8]) -> BlobHash {
    let response = node
        .http()
        .post(&format!("{}/api/v1/bridge/blobs", node.base))
        .set("Authorization", &format!("Bearer {}", bridge.token))
        .send_bytes(bytes)
        .expect("upload taken");
    let stored: Value = response.into_json().expect("JSON");
    stored["blob"]
        .as_str()
        .expect("blob")
        .parse()
        .expect("hash")
}

pub(crate) fn with_file(content: Content, blob: BlobHash, size: usize) -> Content {
    content.with_attachment(Attachment::new(
        blob,
        size as u64,
        AttachmentMeta::new("image/jpeg").expect("meta"),
        AttachmentMeta::new("photo.jpg").expect("meta"),
    ))
}

fn download_status(node: &Node, bridge: &Bridge, blob: &BlobHash) -> u16 {
    match node
        .http()
        .get(&format!("{}/api/v1/bridge/blobs/{blob}", node.base))
        .set("Authorization", &format!("Bearer {}", bridge.token))
        .call()
    {
        Ok(response) => response.status(),
        Err(ureq::Error::Status(status, _)) => status,
        Err(err) => panic!("download failed: {err}"),
    }
}

fn deliveries(node: &Node, bridge: &Bridge) -> Vec<Value> {
    let (status, queue) = node.get(&bridge.token, "/api/v1/bridge/deliveries");
    assert_eq!(status, 200, "{queue}");
    queue["deliveries"].as_array().expect("deliveries").clone()
}

fn reply(node: &Node, token: &str, thread: &ThreadId, text: &str) -> EventId {
    let (status, answer) = node.post(
        token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({ "text": text }),
    );
    assert_eq!(status, 200, "{answer}");
    answer["event"]
        .as_str()
        .expect("event id")
        .parse()
        .expect("id")
}

fn logged_refusal(node: &Node, bridge: &Bridge, what: &str) {
    let key = bridge.key.public().to_string();
    eventually(what, Duration::from_secs(10), || {
        (!node.logged(&["refused a bridge's event", &key]).is_empty()).then_some(())
    });
}

#[test]
fn a_bridge_cannot_take_over_read_or_receipt_another_channels_thread_nor_use_anothers_file() {
    let org = Org::new();
    let whatsapp = org.bridge(ChannelKind::Whatsapp);
    let sms = org.bridge(ChannelKind::Sms);
    let node = Node::start(&org.data);
    let agent = org.agent_token.as_str();

    // A web chat visitor and an agent's reply with a refund code.
    let visitor = "webchat:visitor-1";
    let chat = send(
        &node,
        &org.webchat,
        visitor,
        "My mug arrived broken",
        "wc-1",
    );
    let reply_id = reply(&node, agent, &chat, "Sorry! Your refund code is R-1077.");
    let before = thread(&node, agent, &chat);
    assert_eq!(before["thread"]["route"]["channel"], "webchat", "{before}");
    let n_events = events_of(&before).len();

    // 1. The WhatsApp bridge signs a message into the visitor's thread from a made-up number.
    let (parents, depth) = head(&before);
    let takeover = signed(
        &whatsapp,
        chat,
        vec![parents],
        depth + 1,
        EventKind::inbound_message(ChannelKind::Whatsapp),
        Some(message(
            "route replies to me",
            "whatsapp:+19999999999",
            "wa-evil-1",
        )),
    );
    let (code, text) = refused(&submit(&node, &whatsapp, &[takeover]));
    assert_eq!(code, "handle_not_of_contact", "{text}");
    logged_refusal(
        &node,
        &whatsapp,
        "the takeover is logged with the bridge's key",
    );

    // 2. Even with a number that is the visitor's (an agent linked it), the bridge cannot
    //    write until the org opens the thread to WhatsApp: the protocol's rule, on every node.
    let (_, found) = node.get(agent, &format!("/api/v1/contacts?q={visitor}"));
    let contact = found["contacts"][0]["id"]
        .as_str()
        .expect("contact")
        .to_owned();
    let own_number = "whatsapp:+15551234567";
    let (status, linked) = node.post(
        agent,
        &format!("/api/v1/contacts/{contact}/handles"),
        &json!({ "handle": own_number }),
    );
    assert_eq!(status, 200, "{linked}");
    let direct = signed(
        &whatsapp,
        chat,
        vec![parents],
        depth + 1,
        EventKind::inbound_message(ChannelKind::Whatsapp),
        Some(message(
            "hi, it's me on WhatsApp",
            own_number,
            "wa-direct-1",
        )),
    );
    let (code, text) = refused(&submit(&node, &whatsapp, &[direct]));
    assert_eq!(code, "refused", "{text}");
    assert!(text.contains("not open to whatsapp"), "{text}");

    // 3. Reading: the thread's messages and the visitor's conversation stay closed to it.
    let (status, answer) = node.get(
        &whatsapp.token,
        &format!("/api/v1/bridge/threads/{chat}/messages"),
    );
    assert_eq!(status, 403, "{answer}");
    assert!(!answer.to_string().contains("R-1077"));
    let (status, answer) = node.get(
        &whatsapp.token,
        &format!("/api/v1/bridge/conversation?handle={visitor}"),
    );
    assert_eq!(status, 403, "{answer}");
    assert!(deliveries(&node, &whatsapp).is_empty());

    // 4. A "delivered" receipt on the web chat reply.
    let receipt = signed(
        &whatsapp,
        chat,
        vec![reply_id],
        depth + 1,
        EventKind::Thread(ThreadKind::Receipt {
            target: reply_id,
            channel: ChannelKind::Whatsapp,
            receipt: ReceiptKind::Delivered,
        }),
        None,
    );
    let (code, text) = refused(&submit(&node, &whatsapp, &[receipt]));
    assert_eq!(code, "refused", "{text}");
    assert!(text.contains("routed to webchat"), "{text}");

    // Nothing of it was stored: same events, same route, no receipt on the reply.
    let after = thread(&node, agent, &chat);
    assert_eq!(events_of(&after).len(), n_events, "{after}");
    assert_eq!(after["thread"]["route"], before["thread"]["route"]);
    assert!(
        !after.to_string().contains("\"delivered\""),
        "no receipt was stored: {after}"
    );

    // 5. Files: a WhatsApp customer sends a photo; the SMS bridge names its hash.
    let photo = b"\xff\xd8\xff\xe0 a WhatsApp customer's photo".to_vec();
    let blob = upload(&node, &whatsapp, &photo);
    let (wa_thread, parents, depth) = resolve(&node, &whatsapp, "whatsapp:+15550000002");
    let content = with_file(
        message("here is the damage", "whatsapp:+15550000002", "wa-photo-1"),
        blob,
        photo.len(),
    );
    let message_hex = signed(
        &whatsapp,
        wa_thread,
        parents,
        depth,
        EventKind::inbound_message(ChannelKind::Whatsapp),
        Some(content),
    );
    let results = submit(&node, &whatsapp, &[message_hex]);
    assert_eq!(results[0]["status"], "stored", "{results:?}");
    assert_eq!(download_status(&node, &whatsapp, &blob), 200);

    let (sms_thread, parents, depth) = resolve(&node, &sms, "sms:+15550000003");
    let borrowed = signed(
        &sms,
        sms_thread,
        parents,
        depth,
        EventKind::inbound_message(ChannelKind::Sms),
        Some(with_file(
            message("look what I found", "sms:+15550000003", "sms-1"),
            blob,
            photo.len(),
        )),
    );
    let (code, text) = refused(&submit(&node, &sms, &[borrowed]));
    assert_eq!(code, "attachment_not_yours", "{text}");
    logged_refusal(
        &node,
        &sms,
        "the borrowed file is logged with the SMS bridge's key",
    );
    assert_eq!(download_status(&node, &sms, &blob), 404);
    let sms_detail = thread(&node, agent, &sms_thread);
    assert!(
        !sms_detail.to_string().contains(&blob.to_string()),
        "{sms_detail}"
    );

    // 6. The honest path: the visitor writes from their own linked WhatsApp number. The node
    //    opens the thread to WhatsApp as it resolves the number, and the thread continues
    //    there: the next reply goes to that number and nowhere else.
    let continued = send(
        &node,
        &whatsapp,
        own_number,
        "It's me, now on WhatsApp",
        "wa-1",
    );
    assert_eq!(continued, chat, "the same thread continues");
    let detail = thread(&node, agent, &chat);
    assert_eq!(detail["thread"]["route"]["channel"], "whatsapp", "{detail}");
    let second = reply(&node, agent, &chat, "Got it, the refund is on its way.");
    let queued = deliveries(&node, &whatsapp);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["handle"], own_number);
    assert_eq!(queued[0]["event"], second.to_string());
    assert!(
        deliveries(&node, &org.webchat)
            .iter()
            .all(|d| d["event"] != second.to_string()),
        "the web chat bridge does not get the WhatsApp reply"
    );
    // Now the thread is WhatsApp's, its receipt on that reply is taken.
    let detail = thread(&node, agent, &chat);
    let second_depth = events_of(&detail)
        .iter()
        .find(|e| e["id"] == second.to_string())
        .and_then(|e| e["depth"].as_u64())
        .expect("the reply");
    let receipt = signed(
        &whatsapp,
        chat,
        vec![second],
        second_depth + 1,
        EventKind::Thread(ThreadKind::Receipt {
            target: second,
            channel: ChannelKind::Whatsapp,
            receipt: ReceiptKind::Delivered,
        }),
        None,
    );
    let results = submit(&node, &whatsapp, &[receipt]);
    assert_eq!(results[0]["status"], "stored", "{results:?}");
    node.stop();
}
