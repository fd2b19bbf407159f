//! Slack against a local stand-in of the Web API (`threadline_tests::slack`): Events API
//! requests built from Slack's documented examples and signed as Slack signs them, replies
//! and files posted to the stand-in. No Slack server can be reached from here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use threadline_tests::slack::{deliver_event, samples, sign, SlackStandin};
use threadline_tests::{
    detail, events_of_kind, eventually, field, receipts_of, threadline_ok, threads, Node, Visitor,
};

const BOT_TOKEN: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";
const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const CUSTOMER: &str = "U2147483697";
const DM: &str = "D024BE91L";

struct Shop {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    token: String,
    api: SlackStandin,
}

impl Shop {
    fn new() -> Shop {
        let api = SlackStandin::start(BOT_TOKEN);
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = threadline_ok(&data, &["init"]);
        threadline_tests::edit_config(&data, |text| {
            text.replacen(
                "[slack]\n",
                &format!(
                    "[slack]\nbot_token = \"{BOT_TOKEN}\"\nsigning_secret = \"{SECRET}\"\nbot_user = \"U0BOT\"\nteam_id = \"T0001\"\napp_link = \"https://slack.com/app_redirect?app=A0001\"\napi_url = \"{}\"\n",
                    api.api_url()
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

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Posts `body` signed now, as Slack does.
fn deliver(node: &Node, body: &[u8]) -> (u16, String) {
    let ts = now();
    deliver_event(
        &format!("{}/webhooks/slack", node.base),
        Some(&sign(SECRET, ts, body)),
        Some(ts),
        body,
    )
}

fn inbound(node: &Node, token: &str, thread: &str) -> Vec<serde_json::Value> {
    events_of_kind(&detail(node, token, thread), "thread.message.inbound")
}

#[test]
fn slack_requests_are_verified_and_retries_and_bots_store_nothing_twice() {
    let shop = Shop::new();
    let node = Node::start(&shop.data);
    let url = format!("{}/webhooks/slack", node.base);
    // The URL verification handshake answers the challenge.
    let (status, body) = deliver(
        &node,
        &samples::url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    );
    // Missing, wrong, stale, altered: refused, nothing stored.
    let event = samples::im(
        CUSTOMER,
        DM,
        "1355517523.000005",
        "Hello hello can you hear me?",
    );
    let ts = now();
    let good = sign(SECRET, ts, &event);
    let mut altered = event.clone();
    altered[20] ^= 1;
    for (signature, timestamp, body) in [
        (None, Some(ts), event.clone()),
        (Some(good.clone()), None, event.clone()),
        (
            Some(sign("another-secret", ts, &event)),
            Some(ts),
            event.clone(),
        ),
        (
            Some(sign(SECRET, ts - 301, &event)),
            Some(ts - 301),
            event.clone(),
        ),
        (Some(good.clone()), Some(ts), altered),
    ] {
        let (status, answer) = deliver_event(&url, signature.as_deref(), timestamp, &body);
        assert!(status == 401 || status == 403, "{status}: {answer}");
    }
    assert!(threads(&node, &shop.token).is_empty(), "nothing stored");
    // Slack retries (X-Slack-Retry-Num): five at once store one message.
    let storm: Vec<_> = (0..5)
        .map(|_| {
            let (url, event) = (url.clone(), event.clone());
            std::thread::spawn(move || {
                let ts = now();
                deliver_event(&url, Some(&sign(SECRET, ts, &event)), Some(ts), &event).0
            })
        })
        .collect();
    for delivery in storm {
        assert_eq!(delivery.join().expect("delivery"), 200);
    }
    // A bot's message and the app's own post are not customers'.
    assert_eq!(
        deliver(&node, &samples::bot(DM, "1355517524.000001", "I am a bot")).0,
        200
    );
    assert_eq!(
        deliver(
            &node,
            &samples::im("U0BOT", DM, "1355517525.000001", "our own post")
        )
        .0,
        200
    );
    let listed = threads(&node, &shop.token);
    assert_eq!(listed.len(), 1);
    let thread = listed[0]["id"].as_str().expect("id").to_owned();
    let messages = inbound(&node, &shop.token, &thread);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["text"], "Hello hello can you hear me?");
    assert_eq!(messages[0]["handle"], format!("slack:{CUSTOMER}"));
}

#[test]
fn a_slack_customer_gets_replies_and_files_and_a_shared_channel_is_answered_in_its_thread() {
    let shop = Shop::new();
    let node = Node::start(&shop.data);
    assert_eq!(
        deliver(
            &node,
            &samples::im(CUSTOMER, DM, "1700000000.000100", "Where is my order?")
        )
        .0,
        200
    );
    let thread = threads(&node, &shop.token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // A file she shares comes in; her edit quotes the message it changes.
    let png = b"\x89PNG slack".to_vec();
    let file_url = shop.api.add_file(&png);
    assert_eq!(
        deliver(
            &node,
            &samples::file_share(CUSTOMER, DM, "1700000000.000200", "receipt.png", &file_url)
        )
        .0,
        200
    );
    assert_eq!(
        deliver(
            &node,
            &samples::changed(
                CUSTOMER,
                DM,
                "1700000000.000100",
                "1700000001.000001",
                "Where is my order #42?"
            )
        )
        .0,
        200
    );
    let messages = inbound(&node, &shop.token, &thread);
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1]["attachments"][0]["name"], "receipt.png");
    assert_eq!(messages[2]["text"], "[edited] Where is my order #42?");
    assert_eq!(messages[2]["reply_to"], messages[0]["id"]);
    let blob = messages[1]["attachments"][0]["blob"]
        .as_str()
        .expect("blob")
        .to_owned();

    // The agent's reply and file go to her DM, not in a thread.
    let (status, sent) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "It ships today.", "attachments": [{"blob": blob, "name": "label.png", "media_type": "image/png"}]}),
    );
    assert_eq!(status, 200, "{sent}");
    let reply = sent["event"].as_str().expect("event").to_owned();
    let posts = shop
        .api
        .wait_for("the reply and its file", Duration::from_secs(10), |posts| {
            posts.len() >= 2
        });
    assert_eq!(
        (
            posts[0].channel.as_str(),
            posts[0].text.as_str(),
            posts[0].thread_ts.as_deref()
        ),
        (DM, "It ships today.", None)
    );
    assert_eq!(
        (posts[1].text.as_str(), posts[1].file.as_deref()),
        ("label.png", Some(png.as_slice()))
    );
    eventually("delivered", Duration::from_secs(10), || {
        (receipts_of(&detail(&node, &shop.token, &thread), &reply) == ["delivered"]).then_some(())
    });

    // In a Slack Connect channel, another customer is answered in the thread of their message;
    // the business's own people there are not customers.
    let shared = "C0SHARED1";
    let mut own = serde_json::from_slice::<serde_json::Value>(&samples::channel(
        "U0AGENT",
        shared,
        "1700000099.000001",
        "our colleague",
    ))
    .expect("json");
    own["event"]["user_team"] = json!("T0001");
    assert_eq!(deliver(&node, own.to_string().as_bytes()).0, 200);
    assert_eq!(
        deliver(
            &node,
            &samples::channel(
                "W0PARTNER",
                shared,
                "1700000100.000300",
                "Hi from the partner team"
            )
        )
        .0,
        200
    );
    assert_eq!(
        threads(&node, &shop.token).len(),
        2,
        "no thread for our colleague"
    );
    let partner_thread = threads(&node, &shop.token)
        .into_iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .find(|id| *id != thread)
        .expect("a second thread");
    let (status, _) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{partner_thread}/replies"),
        &json!({"text": "Hello partner"}),
    );
    assert_eq!(status, 200);
    let posts = shop
        .api
        .wait_for("the threaded reply", Duration::from_secs(10), |posts| {
            posts.len() >= 3
        });
    assert_eq!(
        (posts[2].channel.as_str(), posts[2].thread_ts.as_deref()),
        (shared, Some("1700000100.000300"))
    );

    // An archived channel: the reply fails with Slack's error, for the agent to see.
    shop.api.archive(shared);
    let (status, sent) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{partner_thread}/replies"),
        &json!({"text": "Still there?"}),
    );
    assert_eq!(status, 200);
    let failed = sent["event"].as_str().expect("event").to_owned();
    let receipt = eventually("a failed receipt", Duration::from_secs(15), || {
        events_of_kind(
            &detail(&node, &shop.token, &partner_thread),
            "thread.receipt",
        )
        .into_iter()
        .find(|e| e["detail"]["target"] == failed.as_str() && e["detail"]["receipt"] == "failed")
    });
    assert_eq!(receipt["text"], "Slack refused it: is_archived");
}

#[test]
fn a_web_chat_continues_on_slack_with_the_code_in_the_first_message() {
    let shop = Shop::new();
    let node = Node::start(&shop.data);
    let mut visitor = Visitor::connect(&node, None);
    visitor.say("w1", "Our team is on Slack");
    let thread = threads(&node, &shop.token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let url = visitor.continue_link("slack");
    let prefix = "https://slack.com/app_redirect?app=A0001&text=";
    assert!(url.starts_with(prefix), "{url}");
    let text = url[prefix.len()..]
        .replace("%20", " ")
        .replace("%28", "(")
        .replace("%29", ")");
    assert_eq!(
        deliver(
            &node,
            &samples::im(CUSTOMER, DM, "1700000200.000001", &text)
        )
        .0,
        200
    );
    threadline_tests::assert_continued_on(
        &node,
        &shop.token,
        &thread,
        &format!("slack:{CUSTOMER}"),
    );
    let (status, _) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Welcome to Slack"}),
    );
    assert_eq!(status, 200);
    shop.api
        .wait_for("the reply in Slack", Duration::from_secs(10), |posts| {
            posts
                .iter()
                .any(|p| p.channel == DM && p.text == "Welcome to Slack")
        });
}

#[test]
fn the_slack_bridge_runs_on_its_own_against_the_node() {
    let shop = Shop::new();
    let bridge_config = threadline_tests::move_section_out(&shop.data, "slack", "sms");
    let (key_file, bridge_token) = threadline_tests::add_bridge(&shop.data, "slack");
    let node = Node::start(&shop.data);
    let bridge = threadline_tests::start_webhook_bridge(
        &shop.data,
        "slack",
        &node,
        (&key_file, &bridge_token),
        &bridge_config,
        "127.0.0.1:0",
    );
    let event = samples::im(
        CUSTOMER,
        DM,
        "1700000300.000001",
        "Hello through the bridge",
    );
    assert_eq!(
        deliver(&node, &event).0,
        404,
        "the node no longer answers for Slack"
    );
    assert_eq!(deliver(&bridge, &event).0, 200);
    let thread = threads(&node, &shop.token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        inbound(&node, &shop.token, &thread)[0]["text"],
        "Hello through the bridge"
    );
    let (status, _) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Answered by the bridge"}),
    );
    assert_eq!(status, 200);
    shop.api
        .wait_for("the reply", Duration::from_secs(15), |posts| {
            posts.iter().any(|p| p.text == "Answered by the bridge")
        });
}
