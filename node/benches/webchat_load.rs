//! The web chat under load, on loopback: many visitors on WebSockets at once, each writing
//! messages and waiting for the agent's answer, while agents read the live stream and reply
//! over the HTTP API; everything durable. Checks that every message arrives exactly once and in
//! order per thread, and measures the rate and the latencies visitor→agent (a visitor sends;
//! the agent's live stream shows it) and agent→visitor (an agent's reply request; the visitor's
//! window shows it).
//!
//! Run: `cargo bench -p threadline-node --bench webchat_load` (environment: `LOAD_VISITORS`,
//! default 500; `LOAD_MESSAGES`, per visitor, default 10; `LOAD_AGENTS`, reply workers,
//! default 8). Figures: docs/BENCHMARKS.md.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use threadline_node::config::Config;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{env, percentile, BenchNode};

/// When things happened, by key, to join the two ends of each latency.
#[derive(Default)]
struct Times(Mutex<HashMap<String, Instant>>);

impl Times {
    fn mark(&self, key: String) {
        self.0.lock().expect("lock").insert(key, Instant::now());
    }
    fn latencies(&self, later: &Times) -> Vec<Duration> {
        let early = self.0.lock().expect("lock");
        let late = later.0.lock().expect("lock");
        let mut all: Vec<Duration> = early
            .iter()
            .filter_map(|(key, start)| {
                late.get(key)
                    .map(|end| end.saturating_duration_since(*start))
            })
            .collect();
        all.sort();
        all
    }
}

#[derive(Default)]
struct Clocks {
    visitor_sent: Times,
    agent_saw: Times,
    agent_replied: Times,
    visitor_saw: Times,
}

/// The next frame that is not a ping or pong (the node pings idle sockets).
async fn next_text<S>(
    socket: &mut S,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match socket.next().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return other,
        }
    }
}

fn main() {
    let n_visitors = env("LOAD_VISITORS", 500);
    let n_messages = env("LOAD_MESSAGES", 10);
    let n_agents = env("LOAD_AGENTS", 8);
    let node = BenchNode::start(false, |loopback| Config {
        webchat_builtin: true,
        // Every visitor comes from 127.0.0.1 here.
        webchat_connections_per_minute: 1_000_000,
        ..loopback
    });
    let (address, base, token) = (node.address, node.base.clone(), node.token.clone());
    let runtime = &node.runtime;
    let clocks = Arc::new(Clocks::default());

    // Agents: one reader of the live stream hands each new inbound message to a reply worker.
    let (work, jobs) = std::sync::mpsc::sync_channel::<String>(10_000);
    let jobs = Arc::new(Mutex::new(jobs));
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    {
        let (http, base, token, clocks) = (
            http.clone(),
            base.clone(),
            token.clone(),
            Arc::clone(&clocks),
        );
        std::thread::spawn(move || {
            let response = http
                .get(&format!("{base}/api/v1/stream"))
                .set("Authorization", &format!("Bearer {token}"))
                .call()
                .expect("stream");
            for line in BufReader::new(response.into_reader()).lines() {
                let Ok(line) = line else { break };
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let Ok(change) = serde_json::from_str::<Value>(data.trim()) else {
                    continue;
                };
                if change["kind"] == "thread.message.inbound" {
                    let event = change["event"].as_str().unwrap_or_default().to_owned();
                    clocks.agent_saw.mark(event.clone());
                    let thread = change["scope"]
                        .as_str()
                        .unwrap_or_default()
                        .trim_start_matches("thread:")
                        .to_owned();
                    if work.send(format!("{thread} {event}")).is_err() {
                        break;
                    }
                }
            }
        });
    }
    for _ in 0..n_agents {
        let (http, base, token, clocks, jobs) = (
            http.clone(),
            base.clone(),
            token.clone(),
            Arc::clone(&clocks),
            Arc::clone(&jobs),
        );
        std::thread::spawn(move || loop {
            let job = jobs.lock().expect("lock").recv();
            let Ok(job) = job else { break };
            let (thread, event) = job.split_once(' ').expect("thread and event");
            let text = format!("re:{event}");
            clocks.agent_replied.mark(text.clone());
            let answer = http
                .post(&format!("{base}/api/v1/threads/{thread}/replies"))
                .set("Authorization", &format!("Bearer {token}"))
                .send_json(json!({ "text": text }));
            assert!(answer.is_ok(), "reply refused: {answer:?}");
        });
    }
    std::thread::sleep(Duration::from_millis(300));

    // Visitors: each writes a message, waits for its acknowledgement and for the answer, then
    // writes the next.
    let ws = format!("ws://{address}/webchat/ws");
    let started = Instant::now();
    let sessions: Vec<(String, Vec<String>)> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for visitor in 0..n_visitors {
            let (ws, clocks) = (ws.clone(), Arc::clone(&clocks));
            tasks.push(tokio::spawn(async move {
                let (mut socket, _) = tokio_tungstenite::connect_async(ws.as_str()).await.expect("connects");
                socket.send(Message::text(json!({"type": "hello", "session": null}).to_string())).await.expect("hello");
                let mut session = String::new();
                let mut replies = Vec::new();
                let next = |socket_frame: Option<Result<Message, _>>| -> Value {
                    match socket_frame {
                        Some(Ok(Message::Text(text))) => serde_json::from_str(&text).expect("JSON"),
                        other => panic!("visitor {visitor}: socket ended: {other:?}"),
                    }
                };
                let welcome = next(next_text(&mut socket).await);
                session.push_str(welcome["session"].as_str().expect("session"));
                for k in 0..n_messages {
                    let id = format!("v{visitor}m{k}");
                    socket
                        .send(Message::text(json!({"type": "message", "id": id, "text": format!("visitor {visitor} message {k}")}).to_string()))
                        .await
                        .expect("send");
                    let sent = Instant::now();
                    let mut acked = None;
                    let mut answered = false;
                    while acked.is_none() || !answered {
                        let frame = next(next_text(&mut socket).await);
                        match frame["type"].as_str() {
                            Some("ack") => {
                                let event = frame["event"].as_str().expect("event").to_owned();
                                clocks.visitor_sent.0.lock().expect("lock").insert(event.clone(), sent);
                                acked = Some(event);
                            }
                            Some("message") if frame["from"] == "agent" => {
                                let text = frame["text"].as_str().expect("text").to_owned();
                                clocks.visitor_saw.mark(text.clone());
                                replies.push(text.clone());
                                if acked.as_ref().is_some_and(|event| text == format!("re:{event}")) {
                                    answered = true;
                                }
                            }
                            Some("error") => panic!("visitor {visitor}: {frame}"),
                            _ => {}
                        }
                    }
                }
                (session, replies)
            }));
        }
        let mut sessions = Vec::new();
        for task in tasks {
            sessions.push(task.await.expect("visitor"));
        }
        sessions
    });
    let elapsed = started.elapsed();

    // Exactly once, in order: every visitor's history, read back.
    let (mut checked, mut pushed_twice) = (0, 0);
    runtime.block_on(async {
        for (visitor, (session, replies)) in sessions.iter().enumerate() {
            let unique: std::collections::HashSet<&String> = replies.iter().collect();
            pushed_twice += replies.len() - unique.len();
            let (mut socket, _) = tokio_tungstenite::connect_async(ws.as_str())
                .await
                .expect("connects");
            socket
                .send(Message::text(
                    json!({"type": "hello", "session": session}).to_string(),
                ))
                .await
                .expect("hello");
            let Some(Ok(Message::Text(text))) = socket.next().await else {
                panic!("no welcome")
            };
            let welcome: Value = serde_json::from_str(&text).expect("JSON");
            let history = welcome["history"].as_array().expect("history");
            let mine: Vec<&str> = history
                .iter()
                .filter(|m| m["from"] == "visitor")
                .filter_map(|m| m["text"].as_str())
                .collect();
            let expected: Vec<String> = (0..n_messages)
                .map(|k| format!("visitor {visitor} message {k}"))
                .collect();
            assert_eq!(
                mine, expected,
                "visitor {visitor}: each message once, in order"
            );
            let answers = history.iter().filter(|m| m["from"] == "agent").count();
            assert_eq!(
                answers, n_messages,
                "visitor {visitor}: one answer per message"
            );
            checked += 1;
        }
    });
    node.stop();

    let total = n_visitors * n_messages;
    let to_agent = clocks.visitor_sent.latencies(&clocks.agent_saw);
    let to_visitor = clocks.agent_replied.latencies(&clocks.visitor_saw);
    println!(
        "{n_visitors} visitors × {n_messages} messages, {n_agents} agent workers: {total} visitor messages and {total} replies in {elapsed:.2?} = {:.0} messages/s (both ways, all durable)",
        2.0 * total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "visitor→agent (send → agent's live stream): p50 {:.1?} p99 {:.1?} ({} samples)",
        percentile(&to_agent, 0.5),
        percentile(&to_agent, 0.99),
        to_agent.len()
    );
    println!(
        "agent→visitor (reply request → visitor's window): p50 {:.1?} p99 {:.1?} ({} samples)",
        percentile(&to_visitor, 0.5),
        percentile(&to_visitor, 0.99),
        to_visitor.len()
    );
    println!("checked {checked} histories: every message once and in order; replies pushed twice to a window: {pushed_twice}");
}
