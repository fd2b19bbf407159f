//! Signed WhatsApp webhook deliveries under load, on loopback, into a node with its built-in
//! WhatsApp bridge: many senders POST deliveries built like Meta's, each signed with the app
//! secret, a fifth of them a second delivery of a message already sent (Meta retries). Checks
//! that every message is stored exactly once and measures the rate and the latency of a
//! delivery's answer (`200` comes only once the message is durable, at the same flush that
//! tells the inbox's live stream).
//!
//! Run: `cargo bench -p threadline-node --bench webhook_load` (environment: `LOAD_DELIVERIES`,
//! default 10,000; `LOAD_SENDERS`, concurrent connections, default 16; `LOAD_CUSTOMERS`,
//! default 1,000; `LOAD_PROVIDER`, `whatsapp` (default), `telegram` (updates with the
//! webhook's secret token), `slack` (Events API requests signed with the signing secret) or
//! `sms` (Twilio's forms signed with `X-Twilio-Signature`)). Figures: docs/BENCHMARKS.md.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use threadline_bridges::webhook::AppSecret;

mod common;
use common::{env, percentile, BenchNode};

const SECRET: &str = "bench_app_secret";
const PHONE_ID: &str = "106540352242922";
const TELEGRAM_SECRET: &str = "bench-telegram-secret-token";
const SLACK_SECRET: &str = "bench-slack-signing-secret";
const TWILIO_ACCOUNT: &str = "AC0000000000000000000000000000beef";
const TWILIO_TOKEN: &str = "bench-twilio-auth-token";
const TWILIO_PUBLIC_URL: &str = "https://sms.bench.example";

/// An incoming SMS as Twilio posts it (the documented parameters), and its signature.
fn twilio_form(customer: usize, message: usize, text: &str) -> (Vec<u8>, String) {
    let params: Vec<(String, String)> = [
        ("MessageSid", format!("SM{customer:016x}{message:016x}")),
        ("SmsMessageSid", format!("SM{customer:016x}{message:016x}")),
        ("AccountSid", TWILIO_ACCOUNT.to_owned()),
        ("From", format!("+1415{:07}", customer)),
        ("To", "+15005550006".to_owned()),
        ("Body", text.to_owned()),
        ("NumMedia", "0".to_owned()),
        ("NumSegments", "1".to_owned()),
        ("SmsStatus", "received".to_owned()),
        ("ApiVersion", "2010-04-01".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let signature = threadline_bridges::sms::twilio::signature(
        TWILIO_TOKEN,
        &format!("{TWILIO_PUBLIC_URL}/webhooks/sms"),
        &params,
    );
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish()
        .into_bytes();
    (body, signature)
}

/// A Slack Events API `message.im` request: customer `customer` (a DM of their own) writes
/// `text` as their message number `message`.
fn slack_event(customer: usize, message: usize, text: &str) -> Vec<u8> {
    let ts = format!("1767225600.{message:06}");
    serde_json::json!({
        "token": "bench", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
        "event_id": format!("Ev{customer}x{message}"), "event_time": 1_767_225_600,
        "event": {
            "type": "message", "channel": format!("D{customer:08}"), "user": format!("U{customer:08}"),
            "text": text, "ts": ts, "event_ts": ts, "channel_type": "im",
        }
    })
    .to_string()
    .into_bytes()
}

/// A Telegram update as the Bot API sends it: customer `customer` (a private chat of their
/// own) writes `text` as their message number `message`.
fn telegram_update(customer: usize, message: usize, text: &str) -> Vec<u8> {
    let user = 100_000 + customer;
    serde_json::json!({
        "update_id": customer * 100_000 + message,
        "message": {
            "message_id": message + 1,
            "date": 1_767_225_600,
            "chat": {"id": user, "type": "private", "first_name": format!("Customer {customer}")},
            "from": {"id": user, "is_bot": false, "first_name": format!("Customer {customer}")},
            "text": text,
        }
    })
    .to_string()
    .into_bytes()
}

fn main() {
    let n_deliveries = env("LOAD_DELIVERIES", 10_000);
    let n_senders = env("LOAD_SENDERS", 16);
    let n_customers = env("LOAD_CUSTOMERS", 1_000);
    let provider = std::env::var("LOAD_PROVIDER").unwrap_or_default();
    let telegram = provider == "telegram";
    let slack = provider == "slack";
    let sms = provider == "sms";
    let node = BenchNode::start(false, |loopback| {
        if sms {
            threadline_node::config::Config {
                sms: Some(threadline_node::config::SmsConfig {
                    account_sid: TWILIO_ACCOUNT.to_owned(),
                    auth_token: TWILIO_TOKEN.to_owned(),
                    public_url: TWILIO_PUBLIC_URL.to_owned(),
                    from: Some("+15005550006".to_owned()),
                    messaging_service_sid: None,
                    continue_number: None,
                    // Nothing is sent: no REST API is reachable.
                    api_url: "http://127.0.0.1:9".to_owned(),
                }),
                ..loopback
            }
        } else if slack {
            threadline_node::config::Config {
                slack: Some(threadline_node::config::SlackConfig {
                    bot_token: "xoxb-bench".to_owned(),
                    signing_secret: SLACK_SECRET.to_owned(),
                    bot_user: None,
                    team_id: None,
                    app_link: None,
                    // Nothing is sent: no Web API is reachable.
                    api_url: "http://127.0.0.1:9/api".to_owned(),
                }),
                ..loopback
            }
        } else if telegram {
            threadline_node::config::Config {
                telegram: Some(threadline_node::config::TelegramConfig {
                    bot_token: "123456789:AAHbenchbenchbench".to_owned(),
                    secret_token: TELEGRAM_SECRET.to_owned(),
                    bot_username: None,
                    // Nothing is sent: no Bot API is reachable.
                    api_url: "http://127.0.0.1:9".to_owned(),
                }),
                ..loopback
            }
        } else {
            common::with_whatsapp(loopback, PHONE_ID, SECRET)
        }
    });
    let (base, token) = (node.base.clone(), node.token.clone());
    std::thread::sleep(Duration::from_millis(300));

    // The deliveries: each customer's messages in order, then one in five sent again.
    let unique = n_deliveries - n_deliveries / 5;
    let mut plan: Vec<(usize, usize)> = (0..unique)
        .map(|i| (i % n_customers, i / n_customers))
        .collect();
    for i in 0..n_deliveries / 5 {
        let again = plan[(i * 7919) % unique];
        plan.push(again);
    }
    // Senders take the plan round-robin, so retries run alongside first deliveries.
    let secret = AppSecret::new(SECRET).expect("secret");
    let url = if sms {
        format!("{base}/webhooks/sms")
    } else if slack {
        format!("{base}/webhooks/slack")
    } else if telegram {
        format!("{base}/webhooks/telegram")
    } else {
        format!("{base}/webhooks/whatsapp")
    };
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n_deliveries)));
    let started = Instant::now();
    let senders: Vec<_> = (0..n_senders)
        .map(|sender| {
            let mine: Vec<(usize, usize)> = plan
                .iter()
                .skip(sender)
                .step_by(n_senders)
                .copied()
                .collect();
            let (secret, url, latencies) = (secret.clone(), url.clone(), Arc::clone(&latencies));
            std::thread::spawn(move || {
                let http = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(60))
                    .build();
                let mut mine_latencies = Vec::with_capacity(mine.len());
                for (customer, message) in mine {
                    let text = format!("customer {customer} message {message}");
                    let (body, header, value) = if sms {
                        let (body, signature) = twilio_form(customer, message, &text);
                        (body, "X-Twilio-Signature", signature)
                    } else if slack {
                        let body = slack_event(customer, message, &text);
                        (body, "X-Slack-Signature", String::new())
                    } else if telegram {
                        let body = telegram_update(customer, message, &text);
                        (
                            body,
                            "X-Telegram-Bot-Api-Secret-Token",
                            TELEGRAM_SECRET.to_owned(),
                        )
                    } else {
                        let body = common::whatsapp_delivery(
                            PHONE_ID,
                            customer,
                            &format!("wamid.BENCH{customer:06}x{message:04}"),
                            &text,
                        );
                        let signature = secret.hub_signature(&body);
                        (body, "X-Hub-Signature-256", signature)
                    };
                    let sent = Instant::now();
                    let content_type = if sms {
                        "application/x-www-form-urlencoded"
                    } else {
                        "application/json"
                    };
                    let mut request = http.post(&url).set("Content-Type", content_type);
                    if slack {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .expect("after 1970")
                            .as_secs();
                        let mut base = format!("v0:{now}:").into_bytes();
                        base.extend_from_slice(&body);
                        let signature = format!(
                            "v0={}",
                            hex::encode(threadline_bridges::webhook::hmac_sha256(
                                SLACK_SECRET.as_bytes(),
                                &base
                            ))
                        );
                        request = request
                            .set("X-Slack-Request-Timestamp", &now.to_string())
                            .set(header, &signature);
                    } else {
                        request = request.set(header, &value);
                    }
                    let answer = request.send_bytes(&body);
                    assert!(answer.is_ok(), "delivery refused: {answer:?}");
                    mine_latencies.push(sent.elapsed());
                }
                latencies.lock().expect("lock").extend(mine_latencies);
            })
        })
        .collect();
    for sender in senders {
        sender.join().expect("sender");
    }
    let elapsed = started.elapsed();

    // Exactly once: every thread holds its customer's messages, each once.
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let mut stored = 0usize;
    let mut texts = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = format!("{base}/api/v1/threads?limit=200");
        if let Some(cursor) = &cursor {
            request.push_str(&format!("&cursor={cursor}"));
        }
        let page: serde_json::Value = http
            .get(&request)
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("threads")
            .into_json()
            .expect("JSON");
        for thread in page["threads"].as_array().expect("threads") {
            let id = thread["id"].as_str().expect("id");
            let detail: serde_json::Value = http
                .get(&format!("{base}/api/v1/threads/{id}"))
                .set("Authorization", &format!("Bearer {token}"))
                .call()
                .expect("thread")
                .into_json()
                .expect("JSON");
            for event in detail["events"].as_array().expect("events") {
                if event["kind"] == "thread.message.inbound" {
                    stored += 1;
                    let text = event["text"].as_str().expect("text").to_owned();
                    assert!(texts.insert(text.clone()), "stored twice: {text}");
                }
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(stored, unique, "every message stored exactly once");
    node.stop();

    let mut latencies = Arc::try_unwrap(latencies)
        .expect("senders done")
        .into_inner()
        .expect("lock");
    latencies.sort();
    println!(
        "{n_deliveries} signed deliveries ({unique} messages, {} retries) from {n_senders} senders to {n_customers} customers' threads in {elapsed:.2?} = {:.0} deliveries/s",
        n_deliveries - unique,
        n_deliveries as f64 / elapsed.as_secs_f64()
    );
    println!(
        "webhook → durable and in the inbox (POST → 200): p50 {:.1?} p99 {:.1?} max {:.1?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    println!("checked: {stored} messages stored, each exactly once");
}
