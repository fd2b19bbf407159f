//! A bounded soak (issue 16): one node under the mixed load of a working day for many minutes,
//! recording each minute the data folder's size, the process's RSS and the latencies, to show
//! whether they stay flat once the cache is warm. Web chat visitors on WebSockets each write a
//! message every `SOAK_INTERVAL_MS` (without waiting for answers); agents read the live stream
//! and answer every message over the HTTP API. At the end every visitor's messages must all be
//! acknowledged, each answered exactly once, and all present in its history. The node runs in
//! this process, so RSS counts the bench's clients too; "messages" counts both ways (each
//! answer also stores its delivered receipt).
//!
//! Run: `cargo bench -p threadline-node --bench soak` (environment: `SOAK_MINUTES`, default 10;
//! `SOAK_VISITORS`, default 50; `SOAK_INTERVAL_MS`, default 1,000; `SOAK_AGENTS`, reply
//! workers, default 5; `SOAK_VISIT_MESSAGES`, messages a visitor sends before leaving and a new
//! visitor taking its place, default 0: nobody leaves; `SOAK_CACHE_EVENTS`, the node's thread
//! cache, default the node's). Figures: docs/BENCHMARKS.md.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead as _, BufReader};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use threadline_node::config::Config;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{env, percentile, rss_mib, BenchNode};

/// Latencies of the current minute, and counts since the start.
#[derive(Default)]
struct Meter {
    acks: Mutex<Vec<Duration>>,
    replies: Mutex<Vec<Duration>>,
    acked: AtomicU64,
    replied: AtomicU64,
}

impl Meter {
    fn take(latencies: &Mutex<Vec<Duration>>) -> Vec<Duration> {
        let mut taken = std::mem::take(&mut *latencies.lock().expect("lock"));
        taken.sort();
        taken
    }
}

/// The total size of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// What a visitor saw: its session, the message ids it sent, the events acknowledged, the
/// answers received.
struct Visit {
    session: String,
    sent: usize,
    acked: Vec<String>,
    answers: Vec<String>,
}

/// Opens a window on `session` and returns the time to `welcome` and its history.
async fn welcome(ws: &str, session: &str) -> (Duration, Vec<Value>) {
    let started = Instant::now();
    let (mut socket, _) = tokio_tungstenite::connect_async(ws)
        .await
        .expect("connects");
    socket
        .send(Message::text(
            json!({"type": "hello", "session": session}).to_string(),
        ))
        .await
        .expect("hello");
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                assert_eq!(frame["type"], "welcome", "{frame}");
                let took = started.elapsed();
                let history = frame["history"].as_array().cloned().unwrap_or_default();
                let _ = socket.close(None).await;
                return (took, history);
            }
            Some(Ok(_)) => continue,
            other => panic!("no welcome: {other:?}"),
        }
    }
}

/// A place visitors take one after another, and what the bench shares with them.
struct Place {
    ws: String,
    /// Its number (its session is `sessions[visitor]`).
    visitor: usize,
    /// A message every `interval`.
    interval: Duration,
    /// Messages a visitor sends before leaving; 0: until `stop`.
    messages: usize,
    stop: Arc<AtomicBool>,
    meter: Arc<Meter>,
    sessions: Arc<Mutex<Vec<Option<String>>>>,
}

/// Visitor after visitor at `place`, until `stop`.
async fn visitors_in_turn(place: Place) -> Vec<Visit> {
    // Visitors start spread over the interval, not all at once.
    tokio::time::sleep(place.interval.mul_f64((place.visitor % 50) as f64 / 50.0)).await;
    let mut visits = Vec::new();
    while !place.stop.load(Ordering::SeqCst) {
        visits.push(visit(&place).await);
    }
    visits
}

/// One visitor: a message every `interval` until `stop` (or `messages` sent, when not 0),
/// then waits for every ack and answer.
async fn visit(place: &Place) -> Visit {
    let Place {
        ws,
        visitor,
        interval,
        messages,
        stop,
        meter,
        sessions,
    } = place;
    let (visitor, interval, messages) = (*visitor, *interval, *messages);
    let (socket, _) = tokio_tungstenite::connect_async(ws.as_str())
        .await
        .expect("connects");
    let (mut sink, mut stream) = socket.split();
    sink.send(Message::text(
        json!({"type": "hello", "session": null}).to_string(),
    ))
    .await
    .expect("hello");
    let session = loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                break frame["session"].as_str().expect("session").to_owned();
            }
            Some(Ok(_)) => continue,
            other => panic!("visitor {visitor}: no welcome: {other:?}"),
        }
    };
    sessions.lock().expect("lock")[visitor] = Some(session.clone());
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let sent_count = Arc::new(AtomicU64::new(0));
    let done_sending = Arc::new(AtomicBool::new(false));
    let reader = {
        let (sent_at, meter, sent_count, done_sending) = (
            Arc::clone(&sent_at),
            Arc::clone(meter),
            Arc::clone(&sent_count),
            Arc::clone(&done_sending),
        );
        tokio::spawn(async move {
            let (mut acked, mut answers) = (Vec::new(), Vec::new());
            loop {
                let finished = done_sending.load(Ordering::SeqCst)
                    && acked.len() as u64 == sent_count.load(Ordering::SeqCst)
                    && answers.len() >= acked.len();
                if finished {
                    break;
                }
                // Waits a second at most, to see `done_sending` set.
                let frame = match tokio::time::timeout(Duration::from_secs(1), stream.next()).await
                {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        serde_json::from_str::<Value>(&text).expect("JSON")
                    }
                    Ok(Some(Ok(_))) | Err(_) => continue,
                    Ok(other) => panic!("visitor {visitor}: socket ended: {other:?}"),
                };
                match frame["type"].as_str() {
                    Some("ack") => {
                        let id = frame["id"].as_str().expect("id");
                        if let Some(sent) = sent_at.lock().expect("lock").remove(id) {
                            meter.acks.lock().expect("lock").push(sent.elapsed());
                        }
                        meter.acked.fetch_add(1, Ordering::Relaxed);
                        acked.push(frame["event"].as_str().expect("event").to_owned());
                    }
                    Some("message") if frame["from"] == "agent" => {
                        answers.push(frame["text"].as_str().expect("text").to_owned());
                    }
                    Some("error") => panic!("visitor {visitor}: {frame}"),
                    _ => {}
                }
            }
            (acked, answers, stream)
        })
    };
    let mut tick = tokio::time::interval(interval);
    let mut sent = 0;
    while !stop.load(Ordering::SeqCst) && (messages == 0 || sent < messages) {
        tick.tick().await;
        let id = format!("v{visitor}s{}m{sent}", &session[..8.min(session.len())]);
        sent_at
            .lock()
            .expect("lock")
            .insert(id.clone(), Instant::now());
        sent_count.fetch_add(1, Ordering::SeqCst);
        sink.send(Message::text(
            json!({"type": "message", "id": id, "text": format!("visitor {visitor} message {sent}")})
                .to_string(),
        ))
        .await
        .expect("send");
        sent += 1;
    }
    done_sending.store(true, Ordering::SeqCst);
    let (acked, answers, stream) = reader.await.expect("reader");
    if let Ok(mut socket) = sink.reunite(stream) {
        let _ = socket.close(None).await;
    }
    Visit {
        session,
        sent,
        acked,
        answers,
    }
}

fn main() {
    let minutes = env("SOAK_MINUTES", 10);
    let n_visitors = env("SOAK_VISITORS", 50);
    let interval = Duration::from_millis(env("SOAK_INTERVAL_MS", 1_000) as u64);
    let n_agents = env("SOAK_AGENTS", 5);
    let visit_messages = env("SOAK_VISIT_MESSAGES", 0);
    let cache_events = env(
        "SOAK_CACHE_EVENTS",
        threadline_node::config::DEFAULT_THREAD_CACHE_EVENTS,
    );
    let node = BenchNode::start(false, |loopback| Config {
        webchat_builtin: true,
        webchat_connections_per_minute: 1_000_000,
        thread_cache_events: cache_events,
        ..loopback
    });
    let (base, token) = (node.base.clone(), node.token.clone());
    let ws = format!("ws://{}/webchat/ws", node.address);
    let meter = Arc::new(Meter::default());

    // Agents: the live stream hands each inbound message to a reply worker.
    let (work, jobs) = std::sync::mpsc::sync_channel::<String>(100_000);
    let jobs = Arc::new(Mutex::new(jobs));
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    {
        let (base, token) = (base.clone(), token.clone());
        std::thread::spawn(move || {
            // No overall timeout: the stream is read for the whole soak.
            let response = ureq::AgentBuilder::new()
                .build()
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
                    let event = change["event"].as_str().unwrap_or_default();
                    let thread = change["scope"]
                        .as_str()
                        .unwrap_or_default()
                        .trim_start_matches("thread:");
                    if work.send(format!("{thread} {event}")).is_err() {
                        break;
                    }
                }
            }
        });
    }
    for _ in 0..n_agents {
        let (http, base, token, jobs, meter) = (
            http.clone(),
            base.clone(),
            token.clone(),
            Arc::clone(&jobs),
            Arc::clone(&meter),
        );
        std::thread::spawn(move || loop {
            let job = jobs.lock().expect("lock").recv();
            let Ok(job) = job else { break };
            let (thread, event) = job.split_once(' ').expect("thread and event");
            let started = Instant::now();
            let answer = http
                .post(&format!("{base}/api/v1/threads/{thread}/replies"))
                .set("Authorization", &format!("Bearer {token}"))
                .send_json(json!({ "text": format!("re:{event}") }));
            assert!(answer.is_ok(), "reply refused: {answer:?}");
            meter.replies.lock().expect("lock").push(started.elapsed());
            meter.replied.fetch_add(1, Ordering::Relaxed);
        });
    }
    std::thread::sleep(Duration::from_millis(300));

    let stop = Arc::new(AtomicBool::new(false));
    let sessions: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(vec![None; n_visitors]));
    let visitors: Vec<_> = (0..n_visitors)
        .map(|visitor| {
            node.runtime.spawn(visitors_in_turn(Place {
                ws: ws.clone(),
                visitor,
                interval,
                messages: visit_messages,
                stop: Arc::clone(&stop),
                meter: Arc::clone(&meter),
                sessions: Arc::clone(&sessions),
            }))
        })
        .collect();

    println!(
        "{n_visitors} visitors at once, a message every {interval:?} each{}; {n_agents} agents answering every message; thread cache {cache_events} events",
        match visit_messages {
            0 => String::new(),
            n => format!(", each leaving after {n} for a new one"),
        }
    );
    println!("| minute | messages stored (both ways) | data folder MiB | bytes per message | RSS MiB | ack p50 / p99 ms | reply p50 / p99 ms | GET /threads?limit=50 ms | welcome ms (history) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let started = Instant::now();
    for minute in 1..=minutes {
        std::thread::sleep(
            (started + Duration::from_secs(60 * minute as u64))
                .saturating_duration_since(Instant::now()),
        );
        let (acks, replies) = (Meter::take(&meter.acks), Meter::take(&meter.replies));
        let messages = meter.acked.load(Ordering::Relaxed) + meter.replied.load(Ordering::Relaxed);
        let disk = dir_bytes(&node.data_path());
        let mut list_times: Vec<Duration> = (0..5)
            .map(|_| {
                let started = Instant::now();
                http.get(&format!("{base}/api/v1/threads?limit=50"))
                    .set("Authorization", &format!("Bearer {token}"))
                    .call()
                    .expect("thread list");
                started.elapsed()
            })
            .collect();
        list_times.sort();
        let session = sessions.lock().expect("lock")[0].clone();
        let (welcome_time, history) = match session {
            Some(session) => node.runtime.block_on(welcome(&ws, &session)),
            None => (Duration::ZERO, Vec::new()),
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {minute} | {messages} | {:.1} | {:.0} | {:.0} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} | {:.1} ({}) |",
            disk as f64 / 1048576.0,
            disk as f64 / messages.max(1) as f64,
            rss_mib(),
            ms(percentile(&acks, 0.5)),
            ms(percentile(&acks, 0.99)),
            ms(percentile(&replies, 0.5)),
            ms(percentile(&replies, 0.99)),
            ms(list_times[2]),
            ms(welcome_time),
            history.len(),
        );
    }
    stop.store(true, Ordering::SeqCst);
    let visits: Vec<Visit> = node.runtime.block_on(async {
        let mut visits = Vec::new();
        for visitor in visitors {
            visits.extend(visitor.await.expect("visitor"));
        }
        visits
    });

    // Nothing lost: every message acknowledged, answered once, and in the visitor's history.
    let (mut sent, mut answered_twice) = (0, 0);
    for (visitor, visit) in visits.iter().enumerate() {
        assert_eq!(
            visit.acked.len(),
            visit.sent,
            "visitor {visitor}: every message acknowledged"
        );
        let answers: HashSet<&String> = visit.answers.iter().collect();
        answered_twice += visit.answers.len() - answers.len();
        for event in &visit.acked {
            assert!(
                answers.contains(&format!("re:{event}")),
                "visitor {visitor}: {event} answered"
            );
        }
        let (_, history) = node.runtime.block_on(welcome(&ws, &visit.session));
        let mine = history.iter().filter(|m| m["from"] == "visitor").count();
        assert_eq!(
            mine, visit.sent,
            "visitor {visitor}: every message in the history"
        );
        sent += visit.sent;
    }
    node.stop();
    println!(
        "{sent} visitor messages from {} visitors over {minutes} minutes: every one acknowledged, answered and in its history; answers pushed twice: {answered_twice}",
        visits.len()
    );
}
