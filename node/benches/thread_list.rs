//! The inbox's thread list with many conversations: `BENCH_THREADS` customers (default
//! 100,000) each write once on WhatsApp (signed webhook deliveries, 16 at a time), then the
//! list is asked for, as the inbox asks: the newest 50, the open ones, the unassigned ones,
//! those on one channel, and a contact search. Each query runs `BENCH_QUERIES` times (default
//! 200), one at a time; the figures are their latencies over HTTP on loopback.
//!
//! Run: `cargo bench -p threadline-node --bench thread_list`. Figures: docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

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
                        &format!("customer {customer} asks"),
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
            "filter counts, WhatsApp",
            "/api/v1/threads/counts?channel=whatsapp".to_owned(),
        ),
    ];
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
    node.stop();
}
