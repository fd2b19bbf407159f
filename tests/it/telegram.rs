//! Telegram against a local stand-in of the Bot API (`threadline_tests::telegram`): updates
//! built from the Bot API's documented shapes, posted with the webhook's secret token, and
//! replies sent through the stand-in. No Telegram server can be reached from here.

use std::time::Duration;

use serde_json::json;
use threadline_tests::telegram::{deliver_update, samples, TelegramStandin};
use threadline_tests::{
    detail, events_of_kind, eventually, field, receipts_of, threadline_ok, threads, Node, Visitor,
};

const BOT_TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
const SECRET: &str = "telegram-secret-token_0123456789";
const CUSTOMER: i64 = 1_111_111;

struct Shop {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    token: String,
    api: TelegramStandin,
}

impl Shop {
    fn new() -> Shop {
        let api = TelegramStandin::start(BOT_TOKEN);
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = threadline_ok(&data, &["init"]);
        threadline_tests::edit_config(&data, |text| {
            text.replacen(
                "[telegram]\n",
                &format!(
                    "[telegram]\nbot_token = \"{BOT_TOKEN}\"\nsecret_token = \"{SECRET}\"\nbot_username = \"shop_support_bot\"\napi_url = \"{}\"\n",
                    api.base_url()
                ),
                1,
            )
        });
        Shop {
            token: field(&out, "token:"),
            data,
            api,
            _dir: dir,
        }
    }
}

fn webhook(node: &Node) -> String {
    format!("{}/webhooks/telegram", node.base)
}

fn inbound_texts(node: &Node, token: &str, thread: &str) -> Vec<String> {
    events_of_kind(&detail(node, token, thread), "thread.message.inbound")
        .iter()
        .map(|e| e["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn the_secret_token_guards_the_webhook_and_a_retry_storm_stores_once() {
    let shop = Shop::new();
    let node = Node::start(&shop.data);
    let update = samples::text(10_000, CUSTOMER, 1365, "Hello from Telegram");
    // Missing, wrong, one byte off: 401, nothing stored.
    let mut altered = SECRET.to_owned();
    altered.replace_range(0..1, "T");
    for secret in [
        None,
        Some("not-the-secret-token-at-all"),
        Some(altered.as_str()),
    ] {
        let (status, body) = deliver_update(&webhook(&node), secret, &update);
        assert_eq!(status, 401, "{secret:?}: {body}");
    }
    assert!(threads(&node, &shop.token).is_empty(), "nothing stored");
    // Telegram sends an update again until it gets 200: five at once store one message.
    let storm: Vec<_> = (0..5)
        .map(|_| {
            let (url, update) = (webhook(&node), update.clone());
            std::thread::spawn(move || deliver_update(&url, Some(SECRET), &update).0)
        })
        .collect();
    for delivery in storm {
        assert_eq!(delivery.join().expect("delivery"), 200);
    }
    let listed = threads(&node, &shop.token);
    assert_eq!(listed.len(), 1);
    let thread = listed[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        inbound_texts(&node, &shop.token, &thread),
        ["Hello from Telegram"]
    );
    assert_eq!(listed[0]["contact_name"], "Test Test Lastname");
    // Not JSON, or a group: refused or declined, nothing stored; the group is told once.
    assert_eq!(
        deliver_update(&webhook(&node), Some(SECRET), b"{not json").0,
        400
    );
    for n in 0..2 {
        let group = samples::group_text(10_010 + n, CUSTOMER, -4_000_000, "hi all");
        assert_eq!(deliver_update(&webhook(&node), Some(SECRET), &group).0, 200);
    }
    let told = shop
        .api
        .wait_for("the group told", Duration::from_secs(10), |calls| {
            calls.iter().any(|c| c.chat_id == -4_000_000)
        });
    assert_eq!(told.iter().filter(|c| c.chat_id == -4_000_000).count(), 1);
    assert!(told[0]
        .text
        .as_deref()
        .is_some_and(|t| t.contains("private chats only")));
    // Opening the bot (`/start` with no code) says nothing yet: nothing is stored.
    let opened = samples::text(10_020, 3_333_333, 1, "/start");
    assert_eq!(
        deliver_update(&webhook(&node), Some(SECRET), &opened).0,
        200
    );
    assert_eq!(threads(&node, &shop.token).len(), 1);
}

#[test]
fn a_telegram_customer_gets_replies_files_typing_and_their_edits_are_kept() {
    let shop = Shop::new();
    let node = Node::start(&shop.data);
    let url = webhook(&node);
    assert_eq!(
        deliver_update(
            &url,
            Some(SECRET),
            &samples::text(1, CUSTOMER, 10, "Is the tent waterproof?")
        )
        .0,
        200
    );
    let thread = threads(&node, &shop.token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // A photo and a document come in as files.
    let photo = shop.api.add_file("photo.jpg", b"\xff\xd8\xff jpeg bytes");
    let pdf = shop.api.add_file("manual.pdf", b"%PDF");
    assert_eq!(
        deliver_update(
            &url,
            Some(SECRET),
            &samples::photo(2, CUSTOMER, 11, &photo, "this one")
        )
        .0,
        200
    );
    assert_eq!(
        deliver_update(
            &url,
            Some(SECRET),
            &samples::document(3, CUSTOMER, 12, &pdf, "manual.pdf", "application/pdf")
        )
        .0,
        200
    );
    let shown = detail(&node, &shop.token, &thread);
    let inbound = events_of_kind(&shown, "thread.message.inbound");
    assert_eq!(inbound.len(), 3);
    assert_eq!(inbound[1]["text"], "this one");
    assert_eq!(inbound[1]["attachments"][0]["media_type"], "image/jpeg");
    assert_eq!(inbound[2]["attachments"][0]["name"], "manual.pdf");
    let blob = inbound[2]["attachments"][0]["blob"]
        .as_str()
        .expect("blob")
        .to_owned();

    // Her edit and her reply to her own message quote what they change.
    assert_eq!(
        deliver_update(
            &url,
            Some(SECRET),
            &samples::edited(4, CUSTOMER, 10, "Is the tent fully waterproof?")
        )
        .0,
        200
    );
    assert_eq!(
        deliver_update(
            &url,
            Some(SECRET),
            &samples::reply(5, CUSTOMER, 13, 10, "(the green one)")
        )
        .0,
        200
    );
    let inbound = events_of_kind(
        &detail(&node, &shop.token, &thread),
        "thread.message.inbound",
    );
    assert_eq!(inbound[3]["text"], "[edited] Is the tent fully waterproof?");
    assert_eq!(inbound[3]["reply_to"], inbound[0]["id"]);
    assert_eq!(inbound[4]["reply_to"], inbound[0]["id"]);

    // The agent's reply, answering her first message, and a file.
    let (status, sent) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Yes, up to 3,000 mm.", "reply_to": inbound[0]["id"], "attachments": [{"blob": blob, "name": "manual.pdf", "media_type": "application/pdf"}]}),
    );
    assert_eq!(status, 200, "{sent}");
    let reply = sent["event"].as_str().expect("event").to_owned();
    let calls = shop
        .api
        .wait_for("the reply and its file", Duration::from_secs(10), |calls| {
            calls.iter().any(|c| c.method == "sendDocument")
        });
    let text = calls
        .iter()
        .find(|c| c.method == "sendMessage")
        .expect("the text");
    assert_eq!(
        (text.chat_id, text.text.as_deref(), text.reply_to),
        (CUSTOMER, Some("Yes, up to 3,000 mm."), Some(10))
    );
    let document = calls
        .iter()
        .find(|c| c.method == "sendDocument")
        .expect("the file");
    assert_eq!(
        document
            .file
            .as_ref()
            .map(|(name, bytes)| (name.as_str(), bytes.as_slice())),
        Some(("manual.pdf", b"%PDF".as_slice()))
    );
    eventually("delivered", Duration::from_secs(10), || {
        (receipts_of(&detail(&node, &shop.token, &thread), &reply) == ["delivered"]).then_some(())
    });

    // An agent typing reaches her as a chat action.
    let (status, _) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/typing"),
        &json!({}),
    );
    assert_eq!(status, 200);
    shop.api
        .wait_for("typing", Duration::from_secs(10), |calls| {
            calls.iter().any(|c| c.method == "sendChatAction")
        });

    // She blocks the bot: the next reply fails with Telegram's reason, for the agent to see.
    shop.api.block(CUSTOMER);
    let (status, sent) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Anything else?"}),
    );
    assert_eq!(status, 200, "{sent}");
    let failed = sent["event"].as_str().expect("event").to_owned();
    let receipt = eventually("a failed receipt", Duration::from_secs(15), || {
        events_of_kind(&detail(&node, &shop.token, &thread), "thread.receipt")
            .into_iter()
            .find(|e| {
                e["detail"]["target"] == failed.as_str() && e["detail"]["receipt"] == "failed"
            })
    });
    assert_eq!(receipt["text"], "Forbidden: bot was blocked by the user");
}

#[test]
fn a_web_chat_continues_on_telegram_with_the_start_code() {
    let shop = Shop::new();
    let node = Node::start(&shop.data);
    let mut visitor = Visitor::connect(&node, None);
    visitor.say("w1", "Can I get updates on Telegram?");
    let thread = threads(&node, &shop.token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let url = visitor.continue_link("telegram");
    let code = url
        .strip_prefix("https://t.me/shop_support_bot?start=")
        .unwrap_or_else(|| panic!("a t.me link: {url}"))
        .to_owned();
    // She opens the link: Telegram sends `/start <code>`.
    let start = samples::text(20, CUSTOMER, 1, &format!("/start {code}"));
    assert_eq!(deliver_update(&webhook(&node), Some(SECRET), &start).0, 200);
    threadline_tests::assert_continued_on(
        &node,
        &shop.token,
        &thread,
        &format!("telegram:{CUSTOMER}"),
    );
    let (status, sent) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Sure, here they come."}),
    );
    assert_eq!(status, 200, "{sent}");
    shop.api
        .wait_for("the reply on Telegram", Duration::from_secs(10), |calls| {
            calls.iter().any(|c| {
                c.chat_id == CUSTOMER && c.text.as_deref() == Some("Sure, here they come.")
            })
        });
    // The code was good once: from another customer it links nothing.
    let again = samples::text(21, 2_222_222, 1, &format!("/start {code}"));
    assert_eq!(deliver_update(&webhook(&node), Some(SECRET), &again).0, 200);
    assert_eq!(
        detail(&node, &shop.token, &thread)["thread"]["route"]["handle"],
        format!("telegram:{CUSTOMER}")
    );
}

#[test]
fn the_telegram_bridge_runs_on_its_own_against_the_node() {
    let shop = Shop::new();
    // The node leaves Telegram to the standalone bridge: its section moves to the bridge's file.
    let bridge_config = threadline_tests::move_section_out(&shop.data, "telegram", "slack");
    let (key_file, bridge_token) = threadline_tests::add_bridge(&shop.data, "telegram");
    let node = Node::start(&shop.data);
    let bridge = threadline_tests::start_webhook_bridge(
        &shop.data,
        "telegram",
        &node,
        (&key_file, &bridge_token),
        &bridge_config,
        "127.0.0.1:0",
    );
    let update = samples::text(30, CUSTOMER, 1, "Hello through the bridge");
    assert_eq!(
        deliver_update(&webhook(&node), Some(SECRET), &update).0,
        404,
        "the node no longer answers for Telegram"
    );
    assert_eq!(
        deliver_update(
            &format!("{}/webhooks/telegram", bridge.base),
            Some(SECRET),
            &update
        )
        .0,
        200
    );
    let thread = threads(&node, &shop.token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        inbound_texts(&node, &shop.token, &thread),
        ["Hello through the bridge"]
    );
    let (status, _) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Answered by the bridge"}),
    );
    assert_eq!(status, 200);
    shop.api
        .wait_for("the reply", Duration::from_secs(15), |calls| {
            calls
                .iter()
                .any(|c| c.text.as_deref() == Some("Answered by the bridge"))
        });
}

#[test]
fn a_reply_on_a_channel_whose_bridge_was_removed_is_refused_up_front() {
    let shop = Shop::new();
    let address = format!("127.0.0.1:{}", threadline_tests::free_port());
    let node = Node::start_at(&shop.data, &address);
    let update = samples::text(40, CUSTOMER, 1, "Hello");
    assert_eq!(
        deliver_update(&webhook(&node), Some(SECRET), &update).0,
        200
    );
    let thread = threads(&node, &shop.token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    node.stop();
    // The operator turns Telegram off: nothing would send this thread's replies any more.
    threadline_tests::edit_config(&shop.data, |text| {
        text.replace(&format!("bot_token = \"{BOT_TOKEN}\"\n"), "")
    });
    let node = Node::start_at(&shop.data, &address);
    let (status, refused) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Are you there?"}),
    );
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("no_bridge")),
        "{refused}"
    );
    assert_eq!(
        events_of_kind(
            &detail(&node, &shop.token, &thread),
            "thread.message.outbound"
        )
        .len(),
        0,
        "nothing stored"
    );
    // A note is still fine.
    let (status, _) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/notes"),
        &json!({"text": "Telegram is off; call her instead."}),
    );
    assert_eq!(status, 200);
    node.stop();
}
