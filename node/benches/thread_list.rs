//! The inbox's thread list with many conversations: `BENCH_THREADS` customers (default
//! 100,000) each write once on WhatsApp (signed webhook deliveries, 16 at a time), then the
//! list is asked for, as the inbox asks: the newest 50, the open ones, the unassigned ones,
//! those on one channel, a contact search, and message searches (full text). Each query runs
//! `BENCH_QUERIES` times (default 200), one at a time; the figures are their latencies over
//! HTTP on loopback. Then the node restarts, and the time until its message search index is
//! built again from the store is measured, with the memory it takes.
//!
//! Run: `cargo bench -p threadline-node --bench thread_list`. Figures: docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

/// What customers write about: each message names one (customer `n`: `TOPICS[n % 50]`).
const TOPICS: [&str; 50] = [
    "refund",
    "delivery",
    "invoice",
    "password",
    "cancellation",
    "upgrade",
    "warranty",
    "shipping",
    "discount",
    "receipt",
    "subscription",
    "login",
    "address",
    "parcel",
    "return",
    "exchange",
    "payment",
    "voucher",
    "booking",
    "appointment",
    "battery",
    "screen",
    "charger",
    "size",
    "colour",
    "stock",
    "preorder",
    "tracking",
    "customs",
    "damage",
    "missing",
    "late",
    "account",
    "email",
    "phone",
    "newsletter",
    "privacy",
    "contract",
    "pricing",
    "quote",
    "installation",
    "repair",
    "manual",
    "software",
    "update",
    "license",
    "credit",
    "loyalty",
    "gift",
    "complaint",
];

use threadline_bridges::webhook::AppSecret;

mod common;
use common::{env, percentile, BenchNode};

const SECRET: &str = "bench_app_secret";
const PHONE_ID: &str = "106540352242922";

fn main() {
    let n_threads = env("BENCH_THREADS", 100_000);
    let n_queries = env("BENCH_QUERIES", 200);
    let n_senders = 16;
    let node = BenchNode::start(false, |loopback| {
        common::with_whatsapp(loopback, PHONE_ID, SECRET)
    });
    let (base, token) = (node.base.clone(), node.token.clone());
    std::thread::sleep(Duration::from_millis(300));

    let secret = AppSecret::new(SECRET).expect("secret");
    let url = format!("{base}/webhooks/whatsapp");
    let started = Instant::now();
    let senders: Vec<_> = (0..n_senders)
        .map(|sender| {
            let (secret, url) = (secret.clone(), url.clone());
            std::thread::spawn(move || {
                let http = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(60))
                    .build();
                for customer in (sender..n_threads).step_by(n_senders) {
                    let body = common::whatsapp_delivery(
                        PHONE_ID,
                        customer,
                        &format!("wamid.LIST{customer:08}"),
                        &format!(
                            "Hello, customer {customer} here, a question about my {} for order {customer:06}x",
                            TOPICS[customer % TOPICS.len()]
                        ),
                    );
                    let answer = http
                        .post(&url)
                        .set("Content-Type", "application/json")
                        .set("X-Hub-Signature-256", &secret.hub_signature(&body))
                        .send_bytes(&body);
                    assert!(answer.is_ok(), "delivery refused: {answer:?}");
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().expect("sender");
    }
    println!(
        "{n_threads} threads opened (a contact, a handle, a thread and a message each) in {:.1?}",
        started.elapsed()
    );

    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let get = |path: &str| -> serde_json::Value {
        http.get(&format!("{base}{path}"))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap_or_else(|err| panic!("{path}: {err}"))
            .into_json()
            .expect("JSON")
    };
    let queries = [
        ("newest 50", "/api/v1/threads?limit=50".to_owned()),
        (
            "open, newest 50",
            "/api/v1/threads?status=open&limit=50".to_owned(),
        ),
        (
            "unassigned, newest 50",
            "/api/v1/threads?assignee=none&limit=50".to_owned(),
        ),
        (
            "on WhatsApp, newest 50",
            "/api/v1/threads?channel=whatsapp&limit=50".to_owned(),
        ),
        (
            "resolved (none)",
            "/api/v1/threads?status=resolved&limit=50".to_owned(),
        ),
        (
            "contact search",
            format!("/api/v1/contacts?q=Customer%20{}", n_threads / 2),
        ),
        ("filter counts", "/api/v1/threads/counts".to_owned()),
        (
            "search: one word (2%)",
            "/api/v1/search?q=refund".to_owned(),
        ),
        (
            "search: in every message",
            "/api/v1/search?q=question".to_owned(),
        ),
        (
            "search: two words, 1 hit",
            format!("/api/v1/search?q=order%20{:06}x", n_threads / 3),
        ),
        ("search: a prefix", "/api/v1/search?q=deliv".to_owned()),
        (
            "search: word + channel",
            "/api/v1/search?q=refund&channel=whatsapp".to_owned(),
        ),
        (
            "search: word, no thread kept",
            "/api/v1/search?q=refund&status=resolved".to_owned(),
        ),
        ("report, 30 days", "/api/v1/reports".to_owned()),
        (
            "filter counts, WhatsApp",
            "/api/v1/threads/counts?channel=whatsapp".to_owned(),
        ),
    ];
    // Every message is in the search index before the searches are timed.
    let indexed = Instant::now();
    while get("/api/v1/search?q=question&limit=1")["messages"]
        .as_array()
        .is_none_or(|found| found.is_empty())
        || get(&format!("/api/v1/search?q=order%20{:06}x", n_threads - 1))["messages"]
            .as_array()
            .is_none_or(|found| found.is_empty())
    {
        assert!(
            indexed.elapsed() < Duration::from_secs(120),
            "index caught up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("query                      p50        p99        max");
    for (name, path) in queries {
        let answer = get(&path);
        assert!(answer.is_object(), "{name}: {answer}");
        let mut latencies = Vec::with_capacity(n_queries);
        for _ in 0..n_queries {
            let sent = Instant::now();
            let _ = get(&path);
            latencies.push(sent.elapsed());
        }
        latencies.sort();
        println!(
            "{name:<24} {:>9.2?} {:>9.2?} {:>9.2?}",
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or_default()
        );
    }

    // The message search index, built again from the store at start.
    let node = node.restart();
    let rss_started = common::rss_mib();
    let started = Instant::now();
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let mut first_answer = None;
    let mut rss_serving = 0.0;
    let index_bytes: u64;
    loop {
        let answer = http
            .get(&format!("{}/api/v1/search?q=refund&limit=1", node.base))
            .set("Authorization", &format!("Bearer {}", node.token))
            .call();
        if let Ok(answer) = answer {
            if first_answer.is_none() {
                first_answer = Some(started.elapsed());
                rss_serving = common::rss_mib();
            }
            let answer: serde_json::Value = answer.into_json().expect("JSON");
            if answer["index"]["ready"] == true {
                index_bytes = answer["index"]["bytes"].as_u64().unwrap_or_default();
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "index rebuilt"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rebuilt = started.elapsed();
    println!(
        "restart: searches answered after {:.2?} (RSS {rss_serving:.0} MiB); index of {n_threads} messages complete after {rebuilt:.2?} ({:.0} messages/s), its segments {:.1} MiB; RSS {rss_started:.0} -> {:.0} MiB",
        first_answer.unwrap_or_default(),
        n_threads as f64 / rebuilt.as_secs_f64(),
        index_bytes as f64 / (1024.0 * 1024.0),
        common::rss_mib(),
    );
    node.stop();
}
