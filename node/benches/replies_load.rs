//! Agent replies over HTTP: `BENCH_CONNECTIONS` clients (keep-alive, 32 per agent token, the
//! most a token may have in flight) post `POST /api/v1/threads/{id}/replies` in a closed loop
//! over `BENCH_THREADS` web chat threads for `BENCH_SECONDS`, against the real node in this
//! process (the node signs each reply, stores it durably and queues its delivery). Measures
//! the replies answered per second and their latency.
//!
//! Run: `cargo bench -p threadline-node --bench replies_load` (environment:
//! `BENCH_CONNECTIONS`, default 64; `BENCH_THREADS`, 1000; `BENCH_SECONDS`, 20). Figures:
//! docs/BENCHMARKS.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use threadline_node::{admin, clock, config::Config};
use threadline_protocol::{
    event::{Content, Draft, EventKind, Scope},
    name::ExternalId,
    ChannelKind, EventId, Handle, ThreadId,
};

mod common;
use common::{env, percentile, rss_mib, BenchNode};

fn main() {
    let n_connections = env("BENCH_CONNECTIONS", 64);
    let n_threads = env("BENCH_THREADS", 1000);
    let seconds = env("BENCH_SECONDS", 20);
    let prepared = Arc::new(Mutex::new((Vec::new(), None)));
    let keep = Arc::clone(&prepared);
    let node = BenchNode::start_prepared(
        false,
        move |data_dir| {
            let mut kept = keep.lock().expect("lock");
            for agent in 0..n_connections.div_ceil(32) {
                let added = admin::add_agent(
                    data_dir,
                    &format!("agent {agent}"),
                    threadline_node::store::AgentRole::Agent,
                    clock::now(),
                )
                .expect("agent");
                kept.0.push(added.token);
            }
            kept.1 = Some(
                admin::add_bridge(data_dir, ChannelKind::Webchat, clock::now()).expect("bridge"),
            );
        },
        |loopback| Config {
            webchat_builtin: false,
            ..loopback
        },
    );
    let (tokens, bridge) = {
        let mut kept = prepared.lock().expect("lock");
        (std::mem::take(&mut kept.0), kept.1.take().expect("bridge"))
    };
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .max_idle_connections_per_host(n_connections * 2)
        .build();
    let post = |token: &str, path: &str, body: Value| -> Value {
        http.post(&format!("{}{path}", node.base))
            .set("Authorization", &format!("Bearer {token}"))
            .send_json(body)
            .unwrap_or_else(|err| panic!("{path}: {err}"))
            .into_json()
            .expect("json")
    };

    // Threads: one visitor each, with the message that opens it.
    let started = Instant::now();
    let mut threads: Vec<ThreadId> = Vec::with_capacity(n_threads);
    for visitor in 0..n_threads {
        let handle: Handle = format!("webchat:replies-{visitor}")
            .parse()
            .expect("handle");
        let resolved = post(
            &bridge.token,
            "/api/v1/bridge/resolve",
            json!({"handle": handle.to_string()}),
        );
        let thread: ThreadId = resolved["thread"]
            .as_str()
            .expect("thread")
            .parse()
            .expect("id");
        let parents: Vec<EventId> = resolved["parents"]
            .as_array()
            .expect("parents")
            .iter()
            .map(|p| p.as_str().expect("id").parse().expect("event id"))
            .collect();
        let event = Draft::new(
            Scope::Thread(thread),
            parents,
            resolved["depth"].as_u64().expect("depth"),
            clock::now(),
            EventKind::inbound_message(ChannelKind::Webchat),
        )
        .with_content(
            Content::text("hello")
                .with_handle(handle)
                .with_external_id(ExternalId::new(format!("r-{visitor}")).expect("id")),
        )
        .sign(&bridge.key)
        .expect("signs");
        let answer = post(
            &bridge.token,
            "/api/v1/bridge/events",
            json!({"events": [hex::encode(event.to_bytes().expect("encodes"))]}),
        );
        assert_eq!(answer["results"][0]["status"], "stored", "{answer}");
        threads.push(thread);
    }
    println!(
        "{n_threads} threads opened in {:.2?}; {n_connections} connections, {} agent tokens, {seconds} s",
        started.elapsed(),
        tokens.len()
    );

    let threads = Arc::new(threads);
    let stop = Arc::new(AtomicBool::new(false));
    let rss_before = rss_mib();
    let started = Instant::now();
    let workers: Vec<_> = (0..n_connections)
        .map(|worker| {
            let (http, base, threads, stop) = (
                http.clone(),
                node.base.clone(),
                Arc::clone(&threads),
                Arc::clone(&stop),
            );
            let token = tokens[worker / 32].clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut next = worker;
                while !stop.load(Ordering::Relaxed) {
                    let thread = threads[next % threads.len()];
                    next += n_connections;
                    let sent = Instant::now();
                    let answer = http
                        .post(&format!("{base}/api/v1/threads/{thread}/replies"))
                        .set("Authorization", &format!("Bearer {token}"))
                        .send_json(json!({"text": format!("reply {next}")}));
                    // The answer is read and checked: a reply counts once the node
                    // has said which event it stored.
                    let body = match answer {
                        Ok(answer) => answer.into_string().expect("reply body"),
                        Err(err) => panic!("reply: {err}"),
                    };
                    latencies.push(sent.elapsed());
                    assert!(
                        body.contains("\"event\""),
                        "reply answered without its event: {body}"
                    );
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds as u64));
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|worker| worker.join().expect("worker"))
        .collect();
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "replies: {} answered (each durable) in {elapsed:.2?} = {:.0}/s; latency p50 {:.2?} p99 {:.2?}; RSS {rss_before:.0} -> {:.0} MiB",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        rss_mib(),
    );
    node.stop();
}
