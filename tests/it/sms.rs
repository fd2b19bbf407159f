//! SMS against a local stand-in of Twilio's Messaging API (`threadline_tests::twilio`):
//! incoming messages and status callbacks posted as Twilio posts them (forms signed with
//! `X-Twilio-Signature` over the public URL), replies sent to the stand-in's `Messages.json`.
//! No Twilio server can be reached from here.

use std::time::Duration;

use serde_json::json;
use threadline_tests::twilio::{deliver, post_form, samples, signature, TwilioStandin};
use threadline_tests::{
    detail, events_of_kind, eventually, field, free_port, receipts_of, threadline_ok, threads,
    Node, Visitor,
};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "twilio-auth-token-0123456789abcdef";
const NUMBER: &str = "+15005550006";
const CUSTOMER: &str = "+14155550100";

struct Shop {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    token: String,
    api: TwilioStandin,
    /// Where the node listens.
    listen: String,
    /// The URL Twilio is given (signs over).
    public_url: String,
}

impl Shop {
    /// A shop whose node Twilio reaches at its own address.
    fn new() -> Shop {
        let port = free_port();
        Shop::with_public_url(port, &format!("http://127.0.0.1:{port}"))
    }

    /// A shop whose node listens on `port` and that Twilio reaches at `public_url`.
    fn with_public_url(port: u16, public_url: &str) -> Shop {
        Shop::configured(port, public_url, &format!("from = \"{NUMBER}\""))
    }

    /// A shop whose `[sms]` section says who replies come from with `sender`.
    fn configured(port: u16, public_url: &str, sender: &str) -> Shop {
        let api = TwilioStandin::start(ACCOUNT, AUTH_TOKEN);
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = threadline_ok(&data, &["init"]);
        threadline_tests::edit_config(&data, |text| {
            text.replacen(
                "[sms]\n",
                &format!(
                    "[sms]\naccount_sid = \"{ACCOUNT}\"\nauth_token = \"{AUTH_TOKEN}\"\npublic_url = \"{public_url}\"\n{sender}\napi_url = \"{}\"\n",
                    api.base_url()
                ),
                1,
            )
        });
        Shop {
            token: field(&out, "token:"),
            data,
            api,
            listen: format!("127.0.0.1:{port}"),
            public_url: public_url.to_owned(),
            _dir: dir,
        }
    }

    fn start(&self) -> Node {
        Node::start_at(&self.data, &self.listen)
    }

    /// Twilio posts `params` to the node's webhook, signed over the public URL.
    fn text_in(&self, node: &Node, params: &[(String, String)]) -> (u16, String) {
        deliver(
            &format!("{}/webhooks/sms", node.base),
            &format!("{}/webhooks/sms", self.public_url),
            AUTH_TOKEN,
            params,
        )
    }
}

fn sms(sid: &str, from: &str, body: &str) -> Vec<(String, String)> {
    samples::sms(ACCOUNT, sid, from, NUMBER, body)
}

fn sid(n: u32) -> String {
    format!("SM{n:032x}")
}

fn inbound_texts(node: &Node, token: &str, thread: &str) -> Vec<String> {
    events_of_kind(&detail(node, token, thread), "thread.message.inbound")
        .iter()
        .map(|e| e["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn only_thread(node: &Node, token: &str) -> String {
    let listed = threads(node, token);
    assert_eq!(listed.len(), 1, "{listed:?}");
    listed[0]["id"].as_str().expect("id").to_owned()
}

fn reply(node: &Node, token: &str, thread: &str, text: &str) -> (u16, serde_json::Value) {
    node.post(
        token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({ "text": text }),
    )
}

/// The receipt of `kind` on `event`, once it is there.
fn receipt(node: &Node, token: &str, thread: &str, event: &str, kind: &str) -> serde_json::Value {
    eventually(
        &format!("a {kind} receipt"),
        Duration::from_secs(20),
        || {
            events_of_kind(&detail(node, token, thread), "thread.receipt")
                .into_iter()
                .find(|e| e["detail"]["target"] == event && e["detail"]["receipt"] == kind)
        },
    )
}

#[test]
fn twilios_signature_guards_the_webhook_behind_a_proxy_and_a_retry_storm_stores_once() {
    // Twilio reaches the node through a proxy: it signs over the public URL, not the node's.
    let port = free_port();
    let shop = Shop::with_public_url(port, "https://sms.shop.example/threadline");
    let node = shop.start();
    let url = format!("{}/webhooks/sms", node.base);
    let public = "https://sms.shop.example/threadline/webhooks/sms";
    let message = sms(&sid(1), CUSTOMER, "Hello, is my order shipped?");
    let good = signature(AUTH_TOKEN, public, &message);
    // Missing, another account's token, over the node's own URL, one byte off, and a body
    // changed after signing: refused, nothing stored.
    assert_eq!(post_form(&url, None, &message).0, 401);
    let wrong_token = signature("another-token", public, &message);
    let wrong_url = signature(AUTH_TOKEN, &url, &message);
    let mut one_byte = good.clone().into_bytes();
    one_byte[3] = if one_byte[3] == b'A' { b'B' } else { b'A' };
    let one_byte = String::from_utf8(one_byte).expect("ascii");
    for bad in [&wrong_token, &wrong_url, &one_byte] {
        let (status, body) = post_form(&url, Some(bad), &message);
        assert_eq!(status, 403, "{body}");
    }
    let mut altered = message.clone();
    for (name, value) in &mut altered {
        if name == "Body" {
            value.push('!');
        }
    }
    assert_eq!(post_form(&url, Some(&good), &altered).0, 403);
    assert!(threads(&node, &shop.token).is_empty(), "nothing stored");
    // Twilio's port variant of the same public URL is accepted.
    let with_port = "https://sms.shop.example:443/threadline/webhooks/sms";
    let other = sms(&sid(2), CUSTOMER, "(with the port)");
    let (status, body) = post_form(
        &url,
        Some(&signature(AUTH_TOKEN, with_port, &other)),
        &other,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Response>"), "TwiML: {body}");
    // The same message five times at once: one message.
    let storm: Vec<_> = (0..5)
        .map(|_| {
            let (url, message) = (url.clone(), message.clone());
            std::thread::spawn(move || deliver(&url, public, AUTH_TOKEN, &message).0)
        })
        .collect();
    for delivery in storm {
        assert_eq!(delivery.join().expect("delivery"), 200);
    }
    let thread = only_thread(&node, &shop.token);
    assert_eq!(
        inbound_texts(&node, &shop.token, &thread),
        ["(with the port)", "Hello, is my order shipped?"]
    );
    let shown = detail(&node, &shop.token, &thread);
    assert_eq!(
        shown["thread"]["route"]["handle"],
        format!("sms:{CUSTOMER}")
    );
    // A short code is no one to answer; another account's message is refused.
    let short = sms(&sid(3), "12345", "promo");
    assert_eq!(deliver(&url, public, AUTH_TOKEN, &short).0, 200);
    let foreign = samples::sms(
        "ACffffffffffffffffffffffffffffffff",
        &sid(4),
        CUSTOMER,
        NUMBER,
        "hi",
    );
    assert_eq!(deliver(&url, public, AUTH_TOKEN, &foreign).0, 400);
    assert_eq!(threads(&node, &shop.token).len(), 1);
    assert_eq!(inbound_texts(&node, &shop.token, &thread).len(), 2);
}

#[test]
fn an_sms_customer_gets_replies_counted_in_segments_and_their_pictures_come_in() {
    let shop = Shop::new();
    let node = shop.start();
    // An MMS: its picture is fetched with the account's credentials (through Twilio's redirect).
    let mms_sid = format!("MM{:032x}", 7);
    let picture = shop
        .api
        .add_media(&mms_sid, "image/jpeg", b"\xff\xd8\xff jpeg bytes");
    let mms = samples::mms(
        ACCOUNT,
        &mms_sid,
        CUSTOMER,
        NUMBER,
        "The box came like this",
        &[(picture, "image/jpeg".to_owned())],
    );
    let (status, body) = shop.text_in(&node, &mms);
    assert_eq!(status, 200, "{body}");
    let thread = only_thread(&node, &shop.token);
    let inbound = events_of_kind(
        &detail(&node, &shop.token, &thread),
        "thread.message.inbound",
    );
    assert_eq!(inbound[0]["text"], "The box came like this");
    assert_eq!(inbound[0]["attachments"][0]["media_type"], "image/jpeg");
    let message = inbound[0]["id"].as_str().expect("id");
    let bytes = threadline_tests::attachment(&node, &shop.token, &thread, message, 0);
    assert_eq!(bytes, b"\xff\xd8\xff jpeg bytes");

    // Before sending, the agent sees what the reply costs in segments.
    let preview = |text: &str| {
        let (status, preview) = node.post(
            &shop.token,
            &format!("/api/v1/threads/{thread}/replies/preview"),
            &json!({ "text": text }),
        );
        assert_eq!(status, 200, "{preview}");
        preview
    };
    assert_eq!(
        preview(&"a".repeat(200))["sms"],
        json!({"messages": 1, "segments": 2, "encoding": "GSM-7"})
    );
    assert_eq!(
        preview(&format!("{}ł", "a".repeat(140)))["sms"],
        json!({"messages": 1, "segments": 3, "encoding": "UCS-2"})
    );
    assert_eq!(preview("ok")["refused"], serde_json::Value::Null);

    // The reply goes from the shop's number, with a status callback; Twilio's report of its
    // delivery becomes the delivered receipt.
    let (status, sent) = reply(&node, &shop.token, &thread, "Sorry! A new one ships today.");
    assert_eq!(status, 200, "{sent}");
    let event = sent["event"].as_str().expect("event").to_owned();
    let texts = shop
        .api
        .wait_for("the reply", Duration::from_secs(10), |sent| {
            !sent.is_empty()
        });
    assert_eq!(
        (
            texts[0].to.as_str(),
            texts[0].from.as_deref(),
            texts[0].body.as_str()
        ),
        (CUSTOMER, Some(NUMBER), "Sorry! A new one ships today.")
    );
    let callback = texts[0]
        .status_callback
        .as_deref()
        .expect("a status callback");
    assert!(
        callback.starts_with(&format!("{}/webhooks/sms/status?", shop.public_url)),
        "{callback}"
    );
    receipt(&node, &shop.token, &thread, &event, "delivered");
    // A status report signed wrongly records nothing.
    let (status, _) = post_form(
        callback,
        Some("bm90IGEgc2lnbmF0dXJl"),
        &[
            ("MessageSid".to_owned(), texts[0].sid.clone()),
            ("MessageStatus".to_owned(), "failed".to_owned()),
        ],
    );
    assert_eq!(status, 403);
    assert_eq!(
        receipts_of(&detail(&node, &shop.token, &thread), &event),
        ["delivered"]
    );

    // A reply over 1,600 characters goes as two messages.
    let long = "word ".repeat(400);
    let (status, _) = reply(&node, &shop.token, &thread, &long);
    assert_eq!(status, 200);
    let texts = shop
        .api
        .wait_for("the long reply", Duration::from_secs(10), |sent| {
            sent.len() == 3
        });
    assert!(texts[1..].iter().all(|t| t.body.chars().count() <= 1600));
    assert_eq!(format!("{} {}", texts[1].body, texts[2].body), long.trim());

    // Replies by SMS carry no files (Twilio's MMS is not sent): refused up front, nothing
    // stored or sent.
    let uploaded: serde_json::Value = node
        .http()
        .post(&format!("{}/api/v1/attachments", node.base))
        .set("Authorization", &format!("Bearer {}", shop.token))
        .send_bytes(b"a label")
        .expect("upload")
        .into_json()
        .expect("json");
    let (status, answer) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({ "text": "A label", "attachments": [{ "blob": uploaded["blob"], "name": "label.pdf" }] }),
    );
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "attachments_not_supported");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(shop.api.sent().len(), 3, "nothing more went to Twilio");
}

#[test]
fn a_reply_twilio_cannot_deliver_fails_with_twilios_reason() {
    let shop = Shop::new();
    let node = shop.start();
    let landline = "+14155550111";
    shop.api.landline(landline);
    assert_eq!(
        shop.text_in(&node, &sms(&sid(1), landline, "call me")).0,
        200
    );
    let thread = only_thread(&node, &shop.token);
    let (status, sent) = reply(&node, &shop.token, &thread, "We texted you back");
    assert_eq!(status, 200, "{sent}");
    let event = sent["event"].as_str().expect("event").to_owned();
    let failed = receipt(&node, &shop.token, &thread, &event, "failed");
    assert_eq!(
        failed["text"],
        "undelivered: landline or unreachable carrier (Twilio error 30006)"
    );

    // The inbox shows the reply failed, why, and offers the customer's mobile number instead.
    let (_, shown) = node.get(&shop.token, &format!("/api/v1/threads/{thread}"));
    let contact = shown["thread"]["contact"].as_str().expect("contact");
    let mobile = "+14155550122";
    let (status, _) = node.post(
        &shop.token,
        &format!("/api/v1/contacts/{contact}/handles"),
        &json!({"handle": format!("sms:{mobile}")}),
    );
    assert_eq!(status, 200);
    let agent = crate::browser::open_first_conversation(&node.base, &shop.token);
    let failure = agent.wait_for(
        "the failed reply",
        "const f = document.querySelector('#events .event.outbound.failed .failure'); return f && f.textContent",
    );
    assert_eq!(
        failure,
        "Not delivered: undelivered: landline or unreachable carrier (Twilio error 30006)"
    );
    agent.screenshot(&threadline_tests::screenshot_dir().join("inbox-failed-reply.png"));
    agent.click_on(&format!(
        "#events .event.failed .resend[data-handle=\"sms:{mobile}\"]"
    ));
    let sent = shop
        .api
        .wait_for("the reply to the mobile", Duration::from_secs(10), |sent| {
            sent.iter().any(|m| m.to == mobile)
        });
    let resent = sent.iter().find(|m| m.to == mobile).expect("sent");
    assert_eq!(resent.body, "We texted you back");
    let (_, shown) = node.get(&shop.token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(
        shown["thread"]["route"]["handle"],
        format!("sms:{mobile}"),
        "the conversation goes on at the mobile number"
    );
}

#[test]
fn stop_opts_the_customer_out_before_any_call_to_twilio_until_start() {
    let shop = Shop::new();
    let node = shop.start();
    assert_eq!(
        shop.text_in(&node, &sms(&sid(1), CUSTOMER, "Where is my parcel?"))
            .0,
        200
    );
    let thread = only_thread(&node, &shop.token);
    // A reply Twilio cannot take now stays queued; she texts STOP meanwhile.
    shop.api.fail_next(503, 1);
    let (status, sent) = reply(&node, &shop.token, &thread, "Let me check.");
    assert_eq!(status, 200, "{sent}");
    let queued = sent["event"].as_str().expect("event").to_owned();
    eventually("the first attempt", Duration::from_secs(10), || {
        (shop.api.requests() == 1).then_some(())
    });
    assert_eq!(shop.text_in(&node, &sms(&sid(2), CUSTOMER, "STOP")).0, 200);
    // The queued reply is not sent: it fails, saying why, with no second call to Twilio (the
    // agents were told of Twilio's refusal first: "… (retrying)").
    eventually(
        "a failed receipt for the opt-out",
        Duration::from_secs(20),
        || {
            events_of_kind(&detail(&node, &shop.token, &thread), "thread.receipt")
                .into_iter()
                .find(|e| {
                    e["detail"]["target"] == queued.as_str()
                        && e["text"].as_str().is_some_and(|t| t.contains("opted out"))
                })
        },
    );
    assert_eq!(shop.api.requests(), 1);
    // The agents see it on the thread and the contact; a reply is refused up front.
    let shown = detail(&node, &shop.token, &thread);
    assert_eq!(shown["thread"]["opted_out"], true);
    let contact = shown["thread"]["contact"].as_str().expect("contact");
    let (_, record) = node.get(&shop.token, &format!("/api/v1/contacts/{contact}"));
    assert_eq!(record["opted_out"], json!(["sms"]));
    assert_eq!(
        inbound_texts(&node, &shop.token, &thread),
        ["Where is my parcel?", "STOP"]
    );
    let (status, refused) = reply(&node, &shop.token, &thread, "Are you sure?");
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "opted_out");
    let (_, preview) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies/preview"),
        &json!({ "text": "Are you sure?" }),
    );
    assert_eq!(preview["refused"]["code"], "opted_out");
    // A STOP Twilio sends again changes nothing; a note can still be written.
    assert_eq!(shop.text_in(&node, &sms(&sid(2), CUSTOMER, "STOP")).0, 200);
    let (status, _) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/notes"),
        &json!({"text": "She opted out of SMS."}),
    );
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(shop.api.requests(), 1, "nothing reached Twilio");
    // START: replies go again.
    assert_eq!(shop.text_in(&node, &sms(&sid(3), CUSTOMER, "start")).0, 200);
    assert_eq!(
        detail(&node, &shop.token, &thread)["thread"]["opted_out"],
        false
    );
    let (status, _) = reply(&node, &shop.token, &thread, "Welcome back!");
    assert_eq!(status, 200);
    shop.api
        .wait_for("the reply after START", Duration::from_secs(10), |sent| {
            sent.iter().any(|s| s.body == "Welcome back!")
        });
}

#[test]
fn twilios_own_opt_out_list_opts_the_customer_out_here_too() {
    let shop = Shop::new();
    let node = shop.start();
    let customer = "+14155550122";
    assert_eq!(shop.text_in(&node, &sms(&sid(1), customer, "hi")).0, 200);
    let thread = only_thread(&node, &shop.token);
    // She opted out with Twilio some other way (its list answers 21610).
    shop.api.unsubscribe(customer);
    let (status, sent) = reply(&node, &shop.token, &thread, "Hello!");
    assert_eq!(status, 200, "{sent}");
    let event = sent["event"].as_str().expect("event").to_owned();
    let failed = receipt(&node, &shop.token, &thread, &event, "failed");
    assert!(
        failed["text"].as_str().is_some_and(|t| t.contains("21610")),
        "{failed}"
    );
    let requests = shop.api.requests();
    eventually("the opt-out recorded", Duration::from_secs(10), || {
        (detail(&node, &shop.token, &thread)["thread"]["opted_out"] == true).then_some(())
    });
    assert_eq!(reply(&node, &shop.token, &thread, "Hello?").0, 409);
    assert_eq!(shop.api.requests(), requests);
}

#[test]
fn a_web_chat_continues_on_sms_with_the_code() {
    let shop = Shop::new();
    let node = shop.start();
    let mut visitor = Visitor::connect(&node, None);
    visitor.say("w1", "Can you text me instead?");
    let thread = only_thread(&node, &shop.token);
    let url = visitor.continue_link("sms");
    let prefilled = url
        .strip_prefix(&format!("sms:{NUMBER}?body="))
        .unwrap_or_else(|| panic!("an sms: link to the shop's number: {url}"))
        .replace("%20", " ");
    // She sends the prefilled text from her phone.
    assert_eq!(
        shop.text_in(&node, &sms(&sid(1), CUSTOMER, &prefilled)).0,
        200
    );
    threadline_tests::assert_continued_on(&node, &shop.token, &thread, &format!("sms:{CUSTOMER}"));
    let (status, _) = reply(&node, &shop.token, &thread, "Texting you now.");
    assert_eq!(status, 200);
    shop.api
        .wait_for("the reply by SMS", Duration::from_secs(10), |sent| {
            sent.iter()
                .any(|s| s.to == CUSTOMER && s.body == "Texting you now.")
        });
}

#[test]
fn the_sms_bridge_runs_on_its_own_against_the_node() {
    // Twilio reaches the standalone bridge, which listens on its own port.
    let bridge_port = free_port();
    let shop = Shop::with_public_url(free_port(), &format!("http://127.0.0.1:{bridge_port}"));
    let bridge_config = threadline_tests::move_section_out(&shop.data, "sms", "xmpp");
    let (key_file, bridge_token) = threadline_tests::add_bridge(&shop.data, "sms");
    let node = shop.start();
    let listen = format!("127.0.0.1:{bridge_port}");
    let bridge = threadline_tests::start_webhook_bridge(
        &shop.data,
        "sms",
        &node,
        (&key_file, &bridge_token),
        &bridge_config,
        &listen,
    );
    let message = sms(&sid(1), CUSTOMER, "Hello through the bridge");
    assert_eq!(
        shop.text_in(&node, &message).0,
        404,
        "the node no longer answers for SMS"
    );
    assert_eq!(shop.text_in(&bridge, &message).0, 200);
    let thread = only_thread(&node, &shop.token);
    assert_eq!(
        inbound_texts(&node, &shop.token, &thread),
        ["Hello through the bridge"]
    );
    let (status, sent) = reply(&node, &shop.token, &thread, "Answered by the bridge");
    assert_eq!(status, 200);
    let event = sent["event"].as_str().expect("event").to_owned();
    shop.api
        .wait_for("the reply", Duration::from_secs(15), |sent| {
            sent.iter().any(|s| s.body == "Answered by the bridge")
        });
    // Twilio's status report reaches the bridge, which records the receipt on the node.
    receipt(&node, &shop.token, &thread, &event, "delivered");
    // STOP through the bridge opts her out on the node.
    assert_eq!(
        shop.text_in(&bridge, &sms(&sid(2), CUSTOMER, "STOP")).0,
        200
    );
    assert_eq!(
        detail(&node, &shop.token, &thread)["thread"]["opted_out"],
        true
    );
}

#[test]
fn the_inbox_shows_an_sms_replys_segments_and_the_customers_opt_out() {
    let shop = Shop::new();
    let node = shop.start();
    assert_eq!(
        shop.text_in(&node, &sms(&sid(1), CUSTOMER, "Do you ship to Canada?"))
            .0,
        200
    );
    let agent = crate::browser::open_first_conversation(&node.base, &shop.token);
    agent.wait_for(
        "the conversation",
        "return [...document.querySelectorAll('#events .event.inbound')].some(e => e.textContent.includes('Canada'))",
    );
    // As the agent writes, the segments the reply will cost show under it.
    agent.click_on("#compose");
    let compose = agent.find("#compose");
    agent.type_into(&compose, &"Yes we do. ".repeat(15));
    let shown = agent.wait_for(
        "the segment count",
        "const s = document.getElementById('segments'); return !s.hidden && s.textContent.includes('2 SMS segments') && s.textContent",
    );
    assert_eq!(shown, json!("2 SMS segments (GSM-7)"));
    agent.type_into(&compose, "ł");
    let shown = agent.wait_for(
        "the count in UCS-2",
        "const s = document.getElementById('segments'); return s.textContent.includes('UCS-2') && s.textContent",
    );
    assert_eq!(shown, json!("3 SMS segments (UCS-2)"));
    // She texts STOP: the inbox says so at once and offers no SMS reply.
    assert_eq!(shop.text_in(&node, &sms(&sid(2), CUSTOMER, "STOP")).0, 200);
    let banner = agent.wait_for(
        "the opt-out banner",
        "const w = document.getElementById('window'); return !w.hidden && w.textContent.includes('opted out') && w.textContent",
    );
    assert!(
        banner.as_str().is_some_and(|t| t.contains("START")),
        "{banner}"
    );
    assert_eq!(
        agent.run("return document.getElementById('send').disabled", json!([])),
        json!(true)
    );
    agent.wait_for(
        "the opt-out on the contact",
        "const d = document.querySelector('#contact-attributes .opted-out'); return d && d.textContent === 'SMS (texted STOP)'",
    );
    agent.screenshot(&threadline_tests::screenshot_dir().join("inbox-sms-opted-out.png"));
    assert_eq!(shop.api.requests(), 0);
}

#[test]
fn replies_go_from_a_messaging_service_and_a_bad_sender_stops_the_node_with_the_reason() {
    let port = free_port();
    let service = format!("MG{}", "0123456789abcdef".repeat(2));
    let shop = Shop::configured(
        port,
        &format!("http://127.0.0.1:{port}"),
        &format!("messaging_service_sid = \"{service}\""),
    );
    let node = shop.start();
    assert_eq!(shop.text_in(&node, &sms(&sid(1), CUSTOMER, "hello")).0, 200);
    let thread = only_thread(&node, &shop.token);
    let (status, sent) = reply(&node, &shop.token, &thread, "Hi from the service");
    assert_eq!(status, 200, "{sent}");
    let event = sent["event"].as_str().expect("event").to_owned();
    let texts = shop
        .api
        .wait_for("the reply", Duration::from_secs(10), |sent| {
            !sent.is_empty()
        });
    assert_eq!(
        texts[0].messaging_service_sid.as_deref(),
        Some(service.as_str())
    );
    assert_eq!(texts[0].from, None);
    receipt(&node, &shop.token, &thread, &event, "delivered");
    node.stop();

    // A sender that is not a number in E.164: the node does not start, and says why.
    threadline_tests::edit_config(&shop.data, |text| {
        text.replace(
            &format!("messaging_service_sid = \"{service}\""),
            "from = \"5550006\"",
        )
    });
    let out = threadline_tests::run_threadline(&shop.data, &["run", "--listen", &shop.listen]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sms.from: `5550006` is not a phone number in E.164"),
        "{stderr}"
    );
}
