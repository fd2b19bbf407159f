//! Messenger, Instagram and WhatsApp against a local stand-in of Meta's Graph API
//! (`threadline_tests::graph`): webhooks built from Meta's documented samples and signed with
//! the app secret, replies sent through the stand-in's Send API and Cloud API, and the web
//! chat's "continue on …" hand-off. No Meta server can be reached from here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use threadline_tests::graph::{
    deliver_webhook, deliver_webhook_signed, hub_signature, samples, GraphStandin,
};
use threadline_tests::{
    detail, events_of_kind, eventually, field, receipts_of, threadline_ok, threads, Node, Visitor,
};

const TOKEN: &str = "EAAGm0PX4ZCpsBAtest-access-token";
const SECRET: &str = "test_app_secret";
const VERIFY: &str = "verify-token-0123456789abcdef";
const PAGE: &str = "682498302938465";
const IG_ACCOUNT: &str = "17841400000000001";
const PHONE_ID: &str = "106540352242922";
const NUMBER: &str = "15550783881";

struct Shop {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    token: String,
    graph: GraphStandin,
}

impl Shop {
    /// A shop with Messenger (link name `shop.test`), Instagram and WhatsApp, all on the
    /// Graph stand-in.
    fn new() -> Shop {
        Shop::with_human_agent(false)
    }

    fn with_human_agent(human_agent: bool) -> Shop {
        let graph = GraphStandin::start(TOKEN);
        graph.register_instagram_account(IG_ACCOUNT);
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = threadline_ok(&data, &["init"]);
        let config = data.join("config.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        let section = |name: &str, id_key: &str, id: &str, link: &str| {
            format!(
                "[{name}]\n{id_key} = \"{id}\"\nlink_name = \"{link}\"\naccess_token = \"{TOKEN}\"\napp_secret = \"{SECRET}\"\nverify_token = \"{VERIFY}\"\ngraph_url = \"{}\"\n",
                graph.base_url()
            )
        };
        // The channels' sections replace the commented examples `init` wrote.
        let cut = text.find("[whatsapp]").expect("a [whatsapp] example");
        let mut text = text[..cut].to_owned();
        text.push_str(&section("whatsapp", "phone_number_id", PHONE_ID, NUMBER));
        text.push_str(&section("messenger", "page_id", PAGE, "shop.test"));
        if human_agent {
            text.push_str("human_agent = true\n");
        }
        text.push_str(&section("instagram", "account_id", IG_ACCOUNT, "shop.test"));
        std::fs::write(&config, text).expect("config written");
        Shop {
            token: field(&out, "token:"),
            data,
            _dir: dir,
            graph,
        }
    }

    fn start(&self) -> Node {
        Node::start(&self.data)
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}

fn webhook(node: &Node, channel: &str) -> String {
    format!("{}/webhooks/{channel}", node.base)
}

fn deliver(node: &Node, channel: &str, body: &Value) -> (u16, String) {
    deliver_webhook(&webhook(node, channel), SECRET, body.to_string().as_bytes())
}

/// Every thread the agent sees.
fn reply(node: &Node, token: &str, thread: &str, text: &str) -> (u16, Value) {
    node.post(
        token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({ "text": text }),
    )
}

/// The visitor's `continue_link` for `channel`, and the code in it.
fn continue_link(visitor: &mut Visitor, channel: &str) -> (String, String) {
    let url = visitor.continue_link(channel);
    // The code is a word of its own once the link's escapes are undone.
    let plain = url
        .replace("%20", " ")
        .replace("%28", "(")
        .replace("%29", ")");
    let code = plain
        .rsplit(|c: char| !c.is_ascii_hexdigit())
        .find(|word| word.len() == 32)
        .unwrap_or_else(|| panic!("no code in {url}"))
        .to_owned();
    (url, code)
}

#[test]
fn a_web_chat_continues_on_messenger_and_the_replies_go_to_that_psid() {
    let shop = Shop::new();
    let node = shop.start();
    let mut visitor = Visitor::connect(&node, None);
    let ack = visitor.say("m1", "Do you ship the blue tent to Norway?");
    assert_eq!(ack["type"], "ack", "{ack}");
    let listed = threads(&node, &shop.token);
    assert_eq!(listed.len(), 1);
    let thread = listed[0]["id"].as_str().expect("id").to_owned();

    let (url, code) = continue_link(&mut visitor, "messenger");
    assert_eq!(url, format!("https://m.me/shop.test?ref={code}"));

    // On their phone, Messenger opens the page with the ref on the first message.
    let psid = "6193845573061202";
    let first = samples::messenger_text_with_ref(
        PAGE,
        psid,
        "m_first-from-phone",
        "Hi, it's me from the website",
        &code,
        now_ms(),
    );
    let (status, answer) = deliver(&node, "messenger", &first);
    assert_eq!(status, 200, "{answer}");
    // The web chat says where the conversation went.
    let moved = std::iter::from_fn(|| visitor.receive_within(Duration::from_secs(5)))
        .find(|frame| frame["type"] == "moved")
        .expect("a moved frame");
    assert_eq!(moved["channel"], "messenger");
    // And says it again to the visitor coming back to the page (another tab, a reload).
    let returning = Visitor::connect(&node, Some(&visitor.session));
    assert_eq!(returning.moved.as_deref(), Some("messenger"));
    drop(returning);

    // One conversation: the same thread and contact, now routed to Messenger.
    let listed = threads(&node, &shop.token);
    assert_eq!(listed.len(), 1, "no new thread: {listed:?}");
    let shown = detail(&node, &shop.token, &thread);
    let inbound: Vec<(String, String)> = events_of_kind(&shown, "thread.message.inbound")
        .iter()
        .map(|e| {
            (
                e["handle"].as_str().unwrap_or("").to_owned(),
                e["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(inbound.len(), 2, "{inbound:?}");
    assert!(inbound[0].0.starts_with("webchat:"));
    assert_eq!(
        inbound[1],
        (
            format!("messenger:{psid}"),
            "Hi, it's me from the website".to_owned()
        )
    );
    assert_eq!(shown["thread"]["route"]["channel"], "messenger");
    assert_eq!(shown["thread"]["reply_window"]["open"], true);
    // The agents see what linked the new handle: the code.
    let notes = events_of_kind(&shown, "thread.note");
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note = notes[0]["text"].as_str().expect("text");
    assert!(
        note.contains(&format!("messenger:{psid}")) && note.contains("one-time"),
        "{note}"
    );
    let contact = shown["thread"]["contact"].as_str().expect("contact");
    let (_, record) = node.get(&shop.token, &format!("/api/v1/contacts/{contact}"));
    let handles = record["handles"].to_string();
    assert!(handles.contains(&format!("messenger:{psid}")), "{record}");

    // The agent's reply goes to that PSID through the Send API, inside the window.
    let (status, sent) = reply(&node, &shop.token, &thread, "Yes, in 3 to 5 days.");
    assert_eq!(status, 200, "{sent}");
    let reply_event = sent["event"].as_str().expect("event").to_owned();
    let calls = shop.graph.wait_for_sent(1, Duration::from_secs(10));
    assert_eq!(calls[0].recipient, psid);
    assert_eq!(calls[0].sender_id, PAGE);
    assert_eq!(calls[0].body["messaging_type"], "RESPONSE");
    assert_eq!(calls[0].body["message"]["text"], "Yes, in 3 to 5 days.");

    // Messenger's delivery watermark marks it delivered; the read watermark, read.
    let watermark = now_ms() + 1000;
    let (status, _) = deliver(
        &node,
        "messenger",
        &samples::messenger_delivery(PAGE, psid, &[&calls[0].message_id], watermark),
    );
    assert_eq!(status, 200);
    let (status, _) = deliver(
        &node,
        "messenger",
        &samples::messenger_read(PAGE, psid, watermark),
    );
    assert_eq!(status, 200);
    let shown = detail(&node, &shop.token, &thread);
    let mut receipts = receipts_of(&shown, &reply_event);
    receipts.sort();
    assert_eq!(receipts, ["delivered", "read"]);

    // The same watermark again records nothing new.
    let (status, _) = deliver(
        &node,
        "messenger",
        &samples::messenger_delivery(PAGE, psid, &[], watermark),
    );
    assert_eq!(status, 200);
    assert_eq!(
        receipts_of(&detail(&node, &shop.token, &thread), &reply_event).len(),
        2
    );
    // Nothing was sent with the token anywhere but the Authorization header.
    for request in shop.graph.requests() {
        assert!(!request.query.contains(TOKEN), "{}", request.path);
    }

    // Back on the website: writing there brings the replies back to the web chat.
    let ack = visitor.say("m2", "I'm at my desk again");
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(reply(&node, &shop.token, &thread, "Welcome back!").0, 200);
    let answer = std::iter::from_fn(|| visitor.receive_within(Duration::from_secs(5)))
        .find(|frame| frame["type"] == "message" && frame["from"] == "agent")
        .expect("the reply in the web chat");
    assert_eq!(answer["text"], "Welcome back!");
    assert_eq!(shop.graph.sent().len(), 1, "nothing more went to Messenger");
    let returning = Visitor::connect(&node, Some(&visitor.session));
    assert_eq!(
        returning.moved, None,
        "the conversation is back in the web chat"
    );
}

#[test]
fn a_web_chat_continues_on_whatsapp_with_the_code_in_the_text() {
    let shop = Shop::new();
    let node = shop.start();
    let mut visitor = Visitor::connect(&node, None);
    visitor.say("m1", "Is the stove still on sale?");
    let thread = threads(&node, &shop.token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (url, code) = continue_link(&mut visitor, "whatsapp");
    assert!(
        url.starts_with(&format!("https://wa.me/{NUMBER}?text=")),
        "{url}"
    );

    let wa_id = "4915112345678";
    let text = format!("Continue my chat (code {code})");
    let message = samples::whatsapp_text(
        PHONE_ID,
        NUMBER,
        wa_id,
        "Jonas",
        "wamid.HBgLNDkxNTExMjM0NTY3OBUCABIYFjNFQjA",
        &text,
        now_ms() / 1000,
    );
    let (status, answer) = deliver(&node, "whatsapp", &message);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(threads(&node, &shop.token).len(), 1);
    let shown = detail(&node, &shop.token, &thread);
    assert_eq!(shown["thread"]["route"]["channel"], "whatsapp");
    assert_eq!(
        shown["thread"]["route"]["handle"],
        format!("whatsapp:+{wa_id}")
    );

    let (status, sent) = reply(&node, &shop.token, &thread, "It is, until Sunday.");
    assert_eq!(status, 200, "{sent}");
    let reply_event = sent["event"].as_str().expect("event").to_owned();
    let calls = shop.graph.wait_for_sent(1, Duration::from_secs(10));
    assert_eq!(calls[0].recipient, wa_id);
    assert_eq!(calls[0].sender_id, PHONE_ID);
    assert_eq!(calls[0].body["type"], "text");
    assert_eq!(calls[0].body["text"]["body"], "It is, until Sunday.");
    assert_eq!(
        calls[0].body["biz_opaque_callback_data"],
        reply_event.as_str()
    );

    // WhatsApp's statuses: sent (nothing yet), delivered, read.
    for status_name in ["sent", "delivered", "read"] {
        let status = samples::whatsapp_status(
            PHONE_ID,
            NUMBER,
            &calls[0].message_id,
            wa_id,
            status_name,
            now_ms() / 1000,
            Some(&reply_event),
            None,
        );
        assert_eq!(deliver(&node, "whatsapp", &status).0, 200);
    }
    let mut receipts = receipts_of(&detail(&node, &shop.token, &thread), &reply_event);
    receipts.sort();
    assert_eq!(receipts, ["delivered", "read"]);
}

#[test]
fn a_code_never_links_a_second_handle_another_channel_a_guess_or_after_expiry() {
    let shop = Shop::new();
    let node = shop.start();
    let mut alice = Visitor::connect(&node, None);
    alice.say("a1", "Alice here");
    let mut bob = Visitor::connect(&node, None);
    bob.say("b1", "Bob here");
    let (_, alice_code) = continue_link(&mut alice, "messenger");
    let (_, bob_code) = continue_link(&mut bob, "whatsapp");
    let contact_of = |handle: &str| -> Option<String> {
        let (_, found) = node.get(&shop.token, &format!("/api/v1/contacts?q={handle}"));
        found["contacts"]
            .as_array()
            .and_then(|list| list.first())
            .map(|c| c["id"].as_str().unwrap_or("").to_owned())
    };

    // Alice's phone uses her code: linked. Then a second account uses it again: not linked.
    let first = samples::messenger_text_with_ref(
        PAGE,
        "1001",
        "m_a1",
        "from Alice's phone",
        &alice_code,
        now_ms(),
    );
    assert_eq!(deliver(&node, "messenger", &first).0, 200);
    let second = samples::messenger_text_with_ref(
        PAGE,
        "2002",
        "m_x1",
        "someone else",
        &alice_code,
        now_ms(),
    );
    assert_eq!(deliver(&node, "messenger", &second).0, 200);
    // Bob's WhatsApp code brought back on Messenger: not linked. A guessed code: not linked.
    let other_channel =
        samples::messenger_text_with_ref(PAGE, "3003", "m_x2", "wrong app", &bob_code, now_ms());
    assert_eq!(deliver(&node, "messenger", &other_channel).0, 200);
    let guessed = samples::messenger_text_with_ref(
        PAGE,
        "4004",
        "m_x3",
        "a guess",
        &"0".repeat(32),
        now_ms(),
    );
    assert_eq!(deliver(&node, "messenger", &guessed).0, 200);

    let alice_phone = contact_of("messenger:1001").expect("linked");
    let stranger = contact_of("messenger:2002").expect("a contact of its own");
    assert_ne!(alice_phone, stranger);
    for psid in ["2002", "3003", "4004"] {
        let contact = contact_of(&format!("messenger:{psid}")).expect("its own contact");
        let (_, record) = node.get(&shop.token, &format!("/api/v1/contacts/{contact}"));
        let handles = record["handles"].as_array().expect("handles");
        assert_eq!(handles.len(), 1, "{record}");
    }
    // Five conversations: Alice's (continued), Bob's, and three strangers'.
    assert_eq!(threads(&node, &shop.token).len(), 5);
    for needles in [
        ["links nothing", "used already"],
        ["links nothing", "is for whatsapp"],
        ["links nothing", "no such code"],
    ] {
        eventually("the refusal logged", Duration::from_secs(5), || {
            (!node.logged(&needles).is_empty()).then_some(())
        });
    }

    // Bob's right code, brought back 16 minutes later (codes live 15): not linked either.
    let (_, late_code) = continue_link(&mut bob, "messenger");
    drop((alice, bob));
    node.stop();
    let later = Node::start_ahead(&shop.data, "+16m");
    let late = samples::messenger_text_with_ref(
        PAGE,
        "5005",
        "m_late",
        "Bob, later",
        &late_code,
        now_ms() + 16 * 60 * 1000,
    );
    assert_eq!(deliver(&later, "messenger", &late).0, 200);
    let (_, found) = later.get(&shop.token, "/api/v1/contacts?q=messenger:5005");
    let contact = found["contacts"][0]["id"]
        .as_str()
        .expect("its own contact");
    let (_, record) = later.get(&shop.token, &format!("/api/v1/contacts/{contact}"));
    assert_eq!(
        record["handles"],
        json!(["messenger:5005"]),
        "an expired code links nothing: {record}"
    );
    assert_eq!(threads(&later, &shop.token).len(), 6);
    eventually("the expiry logged", Duration::from_secs(5), || {
        (!later.logged(&["links nothing", "expired"]).is_empty()).then_some(())
    });
}

#[test]
fn bad_webhook_deliveries_store_nothing_and_retries_store_once() {
    let shop = Shop::new();
    let node = shop.start();
    let url = webhook(&node, "whatsapp");
    // The subscription handshake.
    let agent = node.http();
    let answer = agent
        .get(&format!(
            "{url}?hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=1158201444"
        ))
        .call()
        .expect("handshake");
    assert_eq!(answer.into_string().expect("body"), "1158201444");
    match agent
        .get(&format!(
            "{url}?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1"
        ))
        .call()
    {
        Err(ureq::Error::Status(403, _)) => {}
        other => panic!("a wrong verify token: {other:?}"),
    }

    // The issue's regression vector, computed independently.
    assert_eq!(
        hub_signature(
            SECRET,
            br#"{"object":"whatsapp_business_account","entry":[]}"#
        ),
        "sha256=dec6a680679a968e7e0319355b23599cbfc54502c0784668e9618baa0c633756"
    );
    let message = samples::whatsapp_text(
        PHONE_ID,
        NUMBER,
        "4915100000001",
        "Ana",
        "wamid.RETRY",
        "Hola",
        now_ms() / 1000,
    );
    let body = message.to_string().into_bytes();
    let good = hub_signature(SECRET, &body);
    assert_eq!(deliver_webhook_signed(&url, None, &body).0, 401);
    assert_eq!(deliver_webhook_signed(&url, Some("sha1=abc"), &body).0, 401);
    assert_eq!(
        deliver_webhook_signed(&url, Some(&hub_signature("other_secret", &body)), &body).0,
        403
    );
    let mut changed = body.clone();
    let at = changed.iter().position(|b| *b == b'H').expect("an H");
    changed[at] = b'h';
    assert_eq!(deliver_webhook_signed(&url, Some(&good), &changed).0, 403);
    let not_json = b"{\"object\": ".to_vec();
    assert_eq!(
        deliver_webhook_signed(&url, Some(&hub_signature(SECRET, &not_json)), &not_json).0,
        400
    );
    let unknown = br#"{"object":"page","entry":[]}"#.to_vec();
    assert_eq!(
        deliver_webhook_signed(&url, Some(&hub_signature(SECRET, &unknown)), &unknown).0,
        400
    );
    // Over 1 MiB: refused on its Content-Length, before the body is read.
    assert_eq!(
        threadline_tests::oversize_status(
            &node,
            "POST /webhooks/whatsapp",
            &[("X-Hub-Signature-256", &format!("sha256={}", "0".repeat(64)))],
            (1 << 20) + 1
        ),
        413
    );
    assert!(threads(&node, &shop.token).is_empty(), "nothing stored");

    // Meta retries: five deliveries of the same message at once store one message.
    let workers: Vec<_> = (0..5)
        .map(|_| {
            let (url, body, good) = (url.clone(), body.clone(), good.clone());
            std::thread::spawn(move || deliver_webhook_signed(&url, Some(&good), &body).0)
        })
        .collect();
    for worker in workers {
        assert_eq!(worker.join().expect("joined"), 200);
    }
    let listed = threads(&node, &shop.token);
    assert_eq!(listed.len(), 1);
    let thread = listed[0]["id"].as_str().expect("id");
    let shown = detail(&node, &shop.token, thread);
    assert_eq!(events_of_kind(&shown, "thread.message.inbound").len(), 1);
    // The profile name is the new contact's.
    assert_eq!(shown["thread"]["contact_name"], "Ana");
}

/// The status a POST announcing `length` bytes gets before any of its body is sent.
#[test]
fn files_come_in_from_whatsapp_and_messenger_and_go_out_to_them() {
    let shop = Shop::new();
    let node = shop.start();
    let png = b"\x89PNG\r\n\x1a\n a small picture".to_vec();
    let media = shop.graph.add_whatsapp_media(&png, "image/png");
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&png))
    };
    let message = samples::whatsapp_image(
        PHONE_ID,
        NUMBER,
        "4915100000002",
        "Lea",
        "wamid.IMG1",
        &media,
        "image/png",
        &sha,
        Some("the crack"),
        now_ms() / 1000,
    );
    assert_eq!(deliver(&node, "whatsapp", &message).0, 200);
    let thread = threads(&node, &shop.token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let shown = detail(&node, &shop.token, &thread);
    let inbound = &events_of_kind(&shown, "thread.message.inbound")[0];
    assert_eq!(inbound["text"], "the crack");
    let blob = inbound["attachments"][0]["blob"]
        .as_str()
        .expect("a file")
        .to_owned();
    let event = inbound["id"].as_str().expect("id");
    let bytes = threadline_tests::attachment(&node, &shop.token, &thread, event, 0);
    assert_eq!(bytes, png);

    // The agent answers with that file: uploaded to WhatsApp's media, then sent by its id.
    let (status, sent) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({ "text": "Here is the replacement part", "attachments": [{"blob": blob, "name": "part.png", "media_type": "image/png"}] }),
    );
    assert_eq!(status, 200, "{sent}");
    let calls = shop.graph.wait_for_sent(2, Duration::from_secs(10));
    assert_eq!(calls[0].body["type"], "text");
    assert_eq!(calls[1].body["type"], "image");
    assert!(
        calls[1].body["image"]["id"].is_string(),
        "{}",
        calls[1].body
    );

    // Messenger: the file at Meta's CDN URL comes in.
    let url = shop
        .graph
        .add_cdn_file(b"%PDF-1.4 invoice", "application/pdf");
    let message = samples::messenger_image(PAGE, "5005", "m_img", &url, now_ms());
    assert_eq!(deliver(&node, "messenger", &message).0, 200);
    let listed = threads(&node, &shop.token);
    assert_eq!(listed.len(), 2);
}

#[test]
fn an_instagram_message_lands_on_its_own_channel_and_the_reply_goes_back() {
    let shop = Shop::new();
    shop.graph
        .add_instagram_profile("6192845573061201", "Peter Chang", "peter_chang_live");
    let node = shop.start();
    for (mid, text) in [
        ("aWdfZAG1faXRlbTox", "Is the blue one back?"),
        ("aWdfZAG1faXRlbToy", "In size M?"),
    ] {
        let message = samples::instagram_text(IG_ACCOUNT, "6192845573061201", mid, text, now_ms());
        assert_eq!(deliver(&node, "instagram", &message).0, 200);
    }
    // The new contact is named from the customer's Instagram profile, asked for once.
    let profile_asks: Vec<_> = shop
        .graph
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/6192845573061201"))
        .collect();
    assert_eq!(profile_asks.len(), 1);
    assert_eq!(profile_asks[0].query, "fields=name,username");
    // A Messenger-shaped delivery at the Instagram webhook is refused.
    let wrong = samples::messenger_text(PAGE, "1", "m_1", "x", now_ms());
    assert_eq!(deliver(&node, "instagram", &wrong).0, 400);
    let listed = threads(&node, &shop.token);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["contact_name"], "Peter Chang");
    let thread = listed[0]["id"].as_str().expect("id").to_owned();
    let shown = detail(&node, &shop.token, &thread);
    assert_eq!(
        shown["thread"]["route"]["handle"],
        "instagram:6192845573061201"
    );
    let (status, _) = reply(&node, &shop.token, &thread, "It is!");
    assert_eq!(status, 200);
    let calls = shop.graph.wait_for_sent(1, Duration::from_secs(10));
    assert_eq!(calls[0].sender_id, IG_ACCOUNT);
    assert_eq!(calls[0].recipient, "6192845573061201");
    // Instagram reports no deliveries: the accepted send is the delivered receipt.
    eventually("a delivered receipt", Duration::from_secs(10), || {
        let shown = detail(&node, &shop.token, &thread);
        (events_of_kind(&shown, "thread.receipt").len() == 1).then_some(())
    });
}

#[test]
fn a_rate_limited_send_is_retried_and_a_closed_window_fails_with_its_reason() {
    let shop = Shop::new();
    let node = shop.start();
    let psid = "7007";
    shop.graph.add_messenger_profile(psid, "Ana", "Lima");
    let message = samples::messenger_text(PAGE, psid, "m_w1", "Hello?", now_ms());
    assert_eq!(deliver(&node, "messenger", &message).0, 200);
    let listed = threads(&node, &shop.token);
    // The new contact is named from the customer's Messenger profile.
    assert_eq!(listed[0]["contact_name"], "Ana Lima");
    let thread = listed[0]["id"].as_str().expect("id").to_owned();

    shop.graph.rate_limit_next(1);
    let (status, sent) = reply(&node, &shop.token, &thread, "Hi! One moment.");
    assert_eq!(status, 200, "{sent}");
    let reply_event = sent["event"].as_str().expect("event").to_owned();
    // Refused once (rate limit), then sent on the retry.
    let calls = shop.graph.wait_for_sent(1, Duration::from_secs(15));
    assert_eq!(calls[0].body["message"]["text"], "Hi! One moment.");

    // Meta's clock says the window is closed (ours still open): the documented error becomes
    // a failed receipt with the reason, and nothing is retried.
    shop.graph.close_messenger_window(psid);
    let (status, sent) = reply(&node, &shop.token, &thread, "Anything else?");
    assert_eq!(status, 200, "{sent}");
    let second = sent["event"].as_str().expect("event").to_owned();
    let reason = eventually("a failed receipt", Duration::from_secs(10), || {
        let shown = detail(&node, &shop.token, &thread);
        events_of_kind(&shown, "thread.receipt")
            .into_iter()
            .find(|e| {
                e["detail"]["target"] == second.as_str() && e["detail"]["receipt"] == "failed"
            })
            .map(|e| e["text"].as_str().unwrap_or("").to_owned())
    });
    assert!(reason.contains("messaging window"), "{reason}");
    let _ = reply_event;
}

#[test]
fn a_reply_25_hours_later_is_refused_with_its_reason_and_a_whatsapp_template_goes_out() {
    let shop = Shop::new();
    shop.graph
        .approve_whatsapp_template("order_update", "en_US", 2);
    let node = shop.start();
    let message = samples::messenger_text(PAGE, "8008", "m_old", "Are you open Sunday?", now_ms());
    assert_eq!(deliver(&node, "messenger", &message).0, 200);
    let whatsapp = samples::whatsapp_text(
        PHONE_ID,
        NUMBER,
        "4915100000009",
        "Kim",
        "wamid.OLD",
        "Hello",
        now_ms() / 1000,
    );
    assert_eq!(deliver(&node, "whatsapp", &whatsapp).0, 200);
    let listed = threads(&node, &shop.token);
    assert_eq!(listed.len(), 2);
    node.stop();

    // The same node, 25 hours later.
    let later = Node::start_ahead(&shop.data, "+25h");
    for thread in &listed {
        let id = thread["id"].as_str().expect("id");
        let shown = detail(&later, &shop.token, id);
        let window = &shown["thread"]["reply_window"];
        assert_eq!(window["open"], false, "{window}");
        let channel = window["channel"].as_str().expect("channel").to_owned();
        let (status, refused) = reply(&later, &shop.token, id, "Sorry for the wait!");
        assert_eq!(status, 409, "{refused}");
        assert_eq!(refused["error"]["code"], "window_closed");
        let reason = refused["error"]["message"].as_str().expect("message");
        assert_eq!(window["reason"], reason);
        if channel == "whatsapp" {
            assert!(reason.contains("template"), "{reason}");
        } else {
            assert!(reason.contains("24 hours"), "{reason}");
        }
        // Nothing was stored.
        let after = detail(&later, &shop.token, id);
        assert!(events_of_kind(&after, "thread.message.outbound").is_empty());
    }
    assert!(shop.graph.sent().is_empty());

    let channel_of = |thread: &Value| {
        let shown = detail(&later, &shop.token, thread["id"].as_str().expect("id"));
        shown["thread"]["route"]["channel"]
            .as_str()
            .expect("channel")
            .to_owned()
    };
    let (on_whatsapp, on_messenger): (Vec<&Value>, Vec<&Value>) = listed
        .iter()
        .partition(|thread| channel_of(thread) == "whatsapp");
    let whatsapp_thread = on_whatsapp[0]["id"].as_str().expect("id");
    let messenger_thread = on_messenger[0]["id"].as_str().expect("id");
    let template_reply = |thread: &str, body: Value| {
        later.post(
            &shop.token,
            &format!("/api/v1/threads/{thread}/replies"),
            &body,
        )
    };
    let order_update = json!({"name": "order_update", "language": "en_US",
                              "parameters": ["Kim", "1077"]});

    // Refused up front, nothing stored: a template where the app has none, a template with
    // text of its own, a name WhatsApp would never have approved, a value it would refuse.
    let (status, refused) = template_reply(messenger_thread, json!({ "template": order_update }));
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "templates_not_supported");
    for (body, says) in [
        (
            json!({"text": "Hi", "template": order_update}),
            "no text or files",
        ),
        (
            json!({"template": {"name": "Order Update", "language": "en_US"}}),
            "template name",
        ),
        (
            json!({"template": {"name": "order_update", "language": "en_US",
                                "parameters": ["Kim\nline two", "1077"]}}),
            "control characters",
        ),
    ] {
        let (status, refused) = template_reply(whatsapp_thread, body);
        assert_eq!(status, 400, "{refused}");
        let message = refused["error"]["message"].as_str().expect("message");
        assert!(message.contains(says), "{message}");
    }
    for thread in [whatsapp_thread, messenger_thread] {
        let shown = detail(&later, &shop.token, thread);
        assert!(events_of_kind(&shown, "thread.message.outbound").is_empty());
    }

    // The approved template goes out, whatever the window, and the status marks it delivered.
    let (status, sent) = template_reply(whatsapp_thread, json!({ "template": order_update }));
    assert_eq!(status, 200, "{sent}");
    let event = sent["event"].as_str().expect("event").to_owned();
    let calls = shop.graph.wait_for_sent(1, Duration::from_secs(10));
    assert_eq!(calls[0].recipient, "4915100000009");
    assert_eq!(calls[0].body["type"], "template");
    assert_eq!(calls[0].body["template"]["name"], "order_update");
    assert_eq!(calls[0].body["template"]["language"]["code"], "en_US");
    assert_eq!(
        calls[0].body["template"]["components"][0]["parameters"][1]["text"],
        "1077"
    );
    let shown = detail(&later, &shop.token, whatsapp_thread);
    let outbound = events_of_kind(&shown, "thread.message.outbound");
    assert_eq!(outbound.len(), 1);
    assert_eq!(outbound[0]["template"], order_update);
    let status = samples::whatsapp_status(
        PHONE_ID,
        NUMBER,
        &calls[0].message_id,
        "4915100000009",
        "delivered",
        now_ms() / 1000 + 25 * 3600,
        Some(&event),
        None,
    );
    assert_eq!(deliver(&later, "whatsapp", &status).0, 200);
    eventually("a delivered receipt", Duration::from_secs(10), || {
        let shown = detail(&later, &shop.token, whatsapp_thread);
        events_of_kind(&shown, "thread.receipt")
            .into_iter()
            .find(|e| {
                e["detail"]["target"] == event.as_str() && e["detail"]["receipt"] == "delivered"
            })
    });

    // A template Meta does not know fails once, with Meta's reason; it is not retried.
    let unknown = json!({"template": {"name": "order_updates", "language": "en_US"}});
    let (status, sent) = template_reply(whatsapp_thread, unknown);
    assert_eq!(status, 200, "{sent}");
    let event = sent["event"].as_str().expect("event").to_owned();
    let reason = eventually("a failed receipt", Duration::from_secs(10), || {
        let shown = detail(&later, &shop.token, whatsapp_thread);
        events_of_kind(&shown, "thread.receipt")
            .into_iter()
            .find(|e| e["detail"]["target"] == event.as_str() && e["detail"]["receipt"] == "failed")
            .map(|e| e["text"].as_str().unwrap_or("").to_owned())
    });
    assert!(reason.contains("does not exist"), "{reason}");
    let tries = shop
        .graph
        .requests()
        .into_iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("order_updates"))
        .count();
    assert_eq!(tries, 1);
}

#[test]
fn a_page_with_the_human_agent_tag_answers_after_24_hours_with_it() {
    let shop = Shop::with_human_agent(true);
    let node = shop.start();
    let message = samples::messenger_text(PAGE, "9009", "m_tag", "Any news on my order?", now_ms());
    assert_eq!(deliver(&node, "messenger", &message).0, 200);
    let thread = threads(&node, &shop.token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    node.stop();
    let later = Node::start_ahead(&shop.data, "+25h");
    let shown = detail(&later, &shop.token, &thread);
    assert_eq!(shown["thread"]["reply_window"]["open"], true);
    assert_eq!(shown["thread"]["reply_window"]["human_agent"], true);
    let (status, _) = reply(&later, &shop.token, &thread, "It ships tomorrow.");
    assert_eq!(status, 200);
    let calls = shop.graph.wait_for_sent(1, Duration::from_secs(10));
    assert_eq!(calls[0].body["messaging_type"], "MESSAGE_TAG");
    assert_eq!(calls[0].body["tag"], "HUMAN_AGENT");
}

#[test]
fn the_widget_continues_on_messenger_in_a_real_browser() {
    use crate::browser::{open_chat, write};
    let shop = Shop::new();
    let node = shop.start();
    let visitor = threadline_tests::Browser::start();
    visitor.go(&format!("{}/webchat/demo", node.base));
    open_chat(&visitor);
    write(&visitor, "Can I pick the tent up tomorrow?");
    let offered = visitor.wait_for(
        "the continue buttons",
        "const b = [...document.querySelectorAll('.tl-chat-continue-button')]; \
         return b.length && !document.querySelector('.tl-chat-continue').hidden \
             ? b.map(x => x.textContent) : null",
    );
    let offered: Vec<String> = serde_json::from_value(offered).expect("strings");
    assert!(
        offered.contains(&"Continue on Messenger".to_owned())
            && offered.contains(&"Continue on WhatsApp".to_owned()),
        "{offered:?}"
    );
    visitor.click_on(".tl-chat-continue-button[data-channel=messenger]");
    let href = visitor.wait_for(
        "the one-time link",
        "const a = document.querySelector('.tl-chat-continue-link'); return a && a.href",
    );
    let href = href.as_str().expect("a link").to_owned();
    let code = href
        .strip_prefix("https://m.me/shop.test?ref=")
        .unwrap_or_else(|| panic!("an m.me link: {href}"));
    visitor.screenshot(&threadline_tests::screenshot_dir().join("webchat-continue-link.png"));

    // The visitor opens it on their phone and sends the first message as it is.
    let first = samples::messenger_text_with_ref(
        PAGE,
        "7710045",
        "m_from-browser",
        "Hello again",
        code,
        now_ms(),
    );
    assert_eq!(deliver(&node, "messenger", &first).0, 200);
    let said = visitor.wait_for(
        "the widget to say where the conversation went",
        "const m = document.querySelector('.tl-chat-continue-moved'); return m && m.textContent",
    );
    assert!(
        said.as_str()
            .is_some_and(|s| s.contains("continues on Messenger")),
        "{said}"
    );
    visitor.screenshot(&threadline_tests::screenshot_dir().join("webchat-continued.png"));
    // And the agent's reply goes to Messenger, not to the web page.
    let thread = threads(&node, &shop.token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        reply(&node, &shop.token, &thread, "See you tomorrow!").0,
        200
    );
    let sent = shop.graph.wait_for_sent(1, Duration::from_secs(10));
    assert_eq!(sent[0].recipient, "7710045");
}

#[test]
fn an_agent_sends_a_whatsapp_template_from_the_inbox_once_the_window_has_closed() {
    let shop = Shop::new();
    shop.graph
        .approve_whatsapp_template("order_update", "en_US", 2);
    let node = shop.start();
    let message = samples::whatsapp_text(
        PHONE_ID,
        NUMBER,
        "4915100000031",
        "Kim",
        "wamid.INBOX",
        "Where is order 1077?",
        now_ms() / 1000,
    );
    assert_eq!(deliver(&node, "whatsapp", &message).0, 200);
    let thread = threads(&node, &shop.token)[0].clone();
    let contact = thread["contact"].as_str().expect("contact").to_owned();
    let (status, linked) = node.post(
        &shop.token,
        &format!("/api/v1/contacts/{contact}/handles"),
        &json!({"handle": "email:kim@example.test"}),
    );
    assert_eq!(status, 200, "{linked}");
    node.stop();

    let later = Node::start_ahead(&shop.data, "+25h");
    let agent = crate::browser::open_first_conversation(&later.base, &shop.token);
    // The agent sees why a reply cannot go, and the ways that can: a template, another channel.
    let said = agent.wait_for(
        "the closed window",
        "const w = document.getElementById('window'); \
         return !w.hidden && w.classList.contains('closed') && document.getElementById('window-text').textContent",
    );
    let said = said.as_str().expect("text").to_owned();
    assert!(said.contains("Replies on WhatsApp are closed"), "{said}");
    assert!(said.contains("approved WhatsApp template"), "{said}");
    assert_eq!(
        agent.run("return document.getElementById('send').disabled", json!([])),
        json!(true),
        "no free reply is offered"
    );
    agent.wait_for(
        "the other channel",
        "return [...document.querySelectorAll('#window-ways button')].some(b => b.textContent === 'Reply via email:kim@example.test')",
    );
    let name = agent.find("#template-name");
    agent.type_into(&name, "order_update");
    let values = agent.find("#template-values");
    agent.type_into(&values, "Kim\n1077");
    agent.screenshot(&threadline_tests::screenshot_dir().join("inbox-whatsapp-template.png"));
    agent.click_on("#template-send");

    let sent = shop.graph.wait_for_sent(1, Duration::from_secs(10));
    assert_eq!(sent[0].recipient, "4915100000031");
    assert_eq!(sent[0].body["template"]["name"], "order_update");
    assert_eq!(
        sent[0].body["template"]["components"][0]["parameters"],
        json!([{"type": "text", "text": "Kim"}, {"type": "text", "text": "1077"}])
    );
    let shown = agent.wait_for(
        "the template in the conversation",
        "const e = document.querySelector('#events .event.outbound'); return e && e.textContent",
    );
    let shown = shown.as_str().expect("text").to_owned();
    assert!(shown.contains("Template order_update (en_US)"), "{shown}");
    assert!(shown.contains("Kim · 1077"), "{shown}");
}

#[test]
fn the_whatsapp_bridge_runs_on_its_own_against_the_node() {
    let shop = Shop::new();
    shop.graph
        .approve_whatsapp_template("order_update", "en_US", 1);
    // The node leaves WhatsApp to the standalone bridge: its section moves to the bridge's file.
    let bridge_config = threadline_tests::move_section_out(&shop.data, "whatsapp", "messenger");
    let (key_file, bridge_token) = threadline_tests::add_bridge(&shop.data, "whatsapp");
    let node = shop.start();
    let bridge = threadline_tests::start_webhook_bridge(
        &shop.data,
        "whatsapp",
        &node,
        (&key_file, &bridge_token),
        &bridge_config,
        "127.0.0.1:0",
    );
    // The node itself no longer answers for WhatsApp.
    let message = samples::whatsapp_text(
        PHONE_ID,
        NUMBER,
        "4915100000077",
        "Lea",
        "wamid.STANDALONE",
        "Is my order on its way?",
        now_ms() / 1000,
    );
    assert_eq!(deliver(&node, "whatsapp", &message).0, 404);
    assert_eq!(deliver(&bridge, "whatsapp", &message).0, 200);
    assert_eq!(deliver(&bridge, "whatsapp", &message).0, 200);
    let listed = threads(&node, &shop.token);
    assert_eq!(listed.len(), 1, "stored once: {listed:?}");
    assert_eq!(listed[0]["contact_name"], "Lea");
    let thread = listed[0]["id"].as_str().expect("id").to_owned();

    // A reply and a template go out through the bridge; the status comes back through it.
    let (status, sent) = reply(&node, &shop.token, &thread, "It left today.");
    assert_eq!(status, 200, "{sent}");
    let event = sent["event"].as_str().expect("event").to_owned();
    let (status, _) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"template": {"name": "order_update", "language": "en_US", "parameters": ["Lea"]}}),
    );
    assert_eq!(status, 200);
    let calls = shop.graph.wait_for_sent(2, Duration::from_secs(15));
    assert_eq!(calls[0].body["text"]["body"], "It left today.");
    assert_eq!(calls[1].body["type"], "template");
    assert_eq!(
        calls[1].body["template"]["components"][0]["parameters"][0]["text"],
        "Lea"
    );
    let delivered = samples::whatsapp_status(
        PHONE_ID,
        NUMBER,
        &calls[0].message_id,
        "4915100000077",
        "delivered",
        now_ms() / 1000,
        Some(&event),
        None,
    );
    assert_eq!(deliver(&bridge, "whatsapp", &delivered).0, 200);
    eventually("a delivered receipt", Duration::from_secs(10), || {
        let shown = detail(&node, &shop.token, &thread);
        (receipts_of(&shown, &event) == ["delivered"]).then_some(())
    });
}

#[test]
fn a_whatsapp_reply_quotes_the_message_it_answers_and_a_customers_quote_is_kept() {
    let shop = Shop::new();
    let node = shop.start();
    let customer = "4915100000042";
    let from_customer = |wamid: &str, text: &str, quoting: Option<&str>| {
        let mut message = samples::whatsapp_text(
            PHONE_ID,
            NUMBER,
            customer,
            "Noor",
            wamid,
            text,
            now_ms() / 1000,
        );
        if let Some(quoted) = quoting {
            message["entry"][0]["changes"][0]["value"]["messages"][0]["context"] =
                json!({"from": customer, "id": quoted});
        }
        assert_eq!(deliver(&node, "whatsapp", &message).0, 200);
    };
    from_customer("wamid.Q1", "Do you have the mug in red?", None);
    from_customer("wamid.Q2", "Or in blue?", None);
    let thread = threads(&node, &shop.token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let inbound = events_of_kind(
        &detail(&node, &shop.token, &thread),
        "thread.message.inbound",
    );
    let first = inbound[0]["id"].as_str().expect("id").to_owned();

    // Only a customer's message of the thread can be answered.
    let (status, note) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/notes"),
        &json!({"text": "ask the warehouse"}),
    );
    assert_eq!(status, 200, "{note}");
    let note = note["event"].as_str().expect("event");
    let (status, refused) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Yes", "reply_to": note}),
    );
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "not_a_customer_message");

    // The agent answers the first question from the inbox: WhatsApp quotes it.
    let agent = crate::browser::open_first_conversation(&node.base, &shop.token);
    agent.wait_for(
        "the answer buttons",
        "return document.querySelectorAll('#events .event.inbound .reply-to').length === 2",
    );
    agent.run(
        "document.querySelectorAll('#events .event.inbound .reply-to')[0].click()",
        json!([]),
    );
    let replying = agent.wait_for(
        "the quote above the composer",
        "const r = document.getElementById('replying'); return !r.hidden && r.textContent",
    );
    assert!(
        replying.as_str().is_some_and(|r| r.contains("in red?")),
        "{replying}"
    );
    let compose = agent.find("#compose");
    agent.type_into(&compose, "Red is back on Monday.");
    agent.click_on("#send");
    let sent = shop.graph.wait_for_sent(1, Duration::from_secs(10));
    assert_eq!(sent[0].body["text"]["body"], "Red is back on Monday.");
    assert_eq!(sent[0].body["context"]["message_id"], "wamid.Q1");
    let outbound = eventually("the reply stored", Duration::from_secs(5), || {
        events_of_kind(
            &detail(&node, &shop.token, &thread),
            "thread.message.outbound",
        )
        .into_iter()
        .next()
    });
    assert_eq!(outbound["reply_to"], first.as_str());

    // The customer quotes their first message again: the quote is kept on the thread.
    from_customer("wamid.Q3", "Great, I'll take two", Some("wamid.Q1"));
    let shown = detail(&node, &shop.token, &thread);
    let latest = events_of_kind(&shown, "thread.message.inbound")
        .into_iter()
        .find(|e| e["external_id"] == "wamid.Q3")
        .expect("the quoting message");
    assert_eq!(latest["reply_to"], first.as_str());
    // A quote of something the node never had is no quote, and the message is kept.
    from_customer("wamid.Q4", "And this?", Some("wamid.UNKNOWN"));
    let shown = detail(&node, &shop.token, &thread);
    let unknown = events_of_kind(&shown, "thread.message.inbound")
        .into_iter()
        .find(|e| e["external_id"] == "wamid.Q4")
        .expect("the message");
    assert_eq!(unknown["reply_to"], Value::Null);
    agent.wait_for(
        "the quote in the inbox",
        "return [...document.querySelectorAll('#events .event.inbound .quote')].some(q => q.textContent.includes('in red?'))",
    );
    agent.screenshot(&threadline_tests::screenshot_dir().join("inbox-whatsapp-quote.png"));
}
