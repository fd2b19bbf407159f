//! The XMPP and Matrix bridges with the real server in the loop, beside the same load between
//! plain users of that server, so the bridge's cost is a ratio.
//!
//! - **XMPP** (Prosody, as in the tests): `BENCH_SENDERS` customers each send `BENCH_MESSAGES`
//!   messages asking for a receipt, `BENCH_WINDOW` in flight each. Plain: to another user,
//!   whose client answers each with its receipt. Bridge: to the component, which answers once
//!   the message is durable (the inbox's live stream has it at that flush). Measured: messages
//!   a second, and send → receipt.
//! - **Matrix** (Synapse, as in the tests): `BENCH_MATRIX_SENDERS` users each send
//!   `BENCH_MATRIX_MESSAGES` messages, one after the other. Plain: in a room with another
//!   user, who sees them through `/sync`. Bridge: in a direct chat with the bot; seen when the
//!   inbox's live stream (`/api/v1/stream`) has them. Measured: messages a second, and send →
//!   seen.
//!
//! Run: `cargo bench -p threadline-node --bench chat_bridges` (`BENCH_BRIDGE=xmpp|matrix` for
//! one). Needs what `scripts/test` installs (prosody; Synapse in `target/venv`). Figures:
//! docs/BENCHMARKS.md.

use std::collections::HashMap;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use threadline_node::config::{Config, MatrixConfig, MatrixTokens, XmppConfig};

mod common;
use common::{env, percentile, BenchNode};

const COMPONENT: &str = "support.localhost";
const SECRET: &str = "component-secret-for-bench";

fn main() {
    let which = std::env::var("BENCH_BRIDGE").unwrap_or_default();
    if which != "matrix" {
        xmpp();
    }
    if which != "xmpp" {
        matrix();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn venv(program: &str) -> PathBuf {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../target/venv/bin/{program}"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/test once",
        path.display()
    );
    path
}

/// A server process, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn report(what: &str, n: usize, elapsed: Duration, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{what}: {n} messages in {:.2}s = {:.0}/s; latency p50 {:.1}ms p99 {:.1}ms",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
}

// ---------------------------------------------------------------------------------- XMPP

fn xmpp() {
    let senders = env("BENCH_SENDERS", 20);
    let per_sender = env("BENCH_MESSAGES", 200);
    let window = env("BENCH_WINDOW", 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let (c2s, component, http) = (free_port(), free_port(), free_port());
    let config = std::fs::read_to_string(fixture("prosody.cfg.lua.in"))
        .expect("template")
        .replace("@BASE@", &dir.path().display().to_string())
        .replace("@C2S@", &c2s.to_string())
        .replace("@COMPONENT_PORT@", &component.to_string())
        .replace("@HTTP@", &http.to_string())
        .replace("@COMPONENT@", COMPONENT)
        .replace("@SECRET@", SECRET);
    let config_path = dir.path().join("prosody.cfg.lua");
    std::fs::write(&config_path, config).expect("config");
    let _prosody = Server(
        Command::new("prosody")
            .arg("--config")
            .arg(&config_path)
            .arg("-F")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prosody starts (apt-get install prosody)"),
    );
    wait_for_port(component);
    let users: Vec<String> = (0..senders)
        .map(|n| format!("s{n}"))
        .chain(["sink".to_owned()])
        .collect();
    for user in &users {
        let status = Command::new("prosodyctl")
            .arg("--config")
            .arg(&config_path)
            .args(["register", user, "localhost", "bench-password"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("prosodyctl");
        assert!(status.success());
    }
    let node = BenchNode::start(false, |loopback| Config {
        xmpp: Some(XmppConfig {
            component: COMPONENT.to_owned(),
            server: format!("127.0.0.1:{component}"),
            secret: SECRET.to_owned(),
            server_domain: "localhost".to_owned(),
            upload_service: None,
            media_hosts: Vec::new(),
            // The bench's customers send far more than a person types.
            rate: threadline_bridges::rate::RateLimit {
                burst: u32::MAX,
                refill: Duration::from_nanos(1),
            },
        }),
        ..loopback
    });
    std::thread::sleep(Duration::from_secs(1));
    let total = senders * per_sender;
    for (label, to) in [
        ("xmpp plain (user to user)", "sink@localhost"),
        ("xmpp bridge (into durable thread events)", COMPONENT),
    ] {
        let sink = (label.contains("plain")).then(|| {
            let sink = node.runtime.spawn(answer_receipts(c2s));
            std::thread::sleep(Duration::from_millis(500));
            sink
        });
        let started = Instant::now();
        let latencies: Vec<Duration> = node.runtime.block_on(async {
            let runs: Vec<_> = (0..senders)
                .map(|n| {
                    tokio::spawn(send_for_receipts(
                        c2s,
                        format!("s{n}"),
                        to.to_owned(),
                        per_sender,
                        window,
                    ))
                })
                .collect();
            let mut all = Vec::new();
            for run in runs {
                all.extend(run.await.expect("sender"));
            }
            all
        });
        let elapsed = started.elapsed();
        assert_eq!(latencies.len(), total, "every message receipted");
        report(label, total, elapsed, latencies);
        if let Some(sink) = sink {
            sink.abort();
        }
    }
    // The bridge stored each message once.
    let agent = ureq::AgentBuilder::new().build();
    let mut stored = 0;
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{}/api/v1/threads?limit=200&cursor={c}", node.base),
            None => format!("{}/api/v1/threads?limit=200", node.base),
        };
        let page: serde_json::Value = agent
            .get(&url)
            .set("Authorization", &format!("Bearer {}", node.token))
            .call()
            .expect("threads")
            .into_json()
            .expect("json");
        for thread in page["threads"].as_array().expect("threads") {
            stored += thread["n_messages"].as_u64().unwrap_or(0) as usize;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(stored, total, "each message stored once");
}

/// A customer's XMPP client, written by hand for the bench: the bridge's crates build their
/// stanzas in the component namespace (one build of xmpp-parsers serves both), so this one
/// speaks c2s as plain text: stream, SASL PLAIN (loopback, the server allows it), bind,
/// presence, then messages.
struct C2s {
    reader: tokio::io::ReadHalf<tokio::net::TcpStream>,
    writer: tokio::io::WriteHalf<tokio::net::TcpStream>,
    buffer: String,
}

impl C2s {
    async fn online(c2s: u16, user: &str) -> C2s {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", c2s))
            .await
            .expect("connects");
        let (reader, writer) = tokio::io::split(stream);
        let mut client = C2s {
            reader,
            writer,
            buffer: String::new(),
        };
        let header = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
        client.write(header).await;
        client.read_until("</stream:features>").await;
        let plain = base64(format!("\0{user}\0bench-password").as_bytes());
        client
            .write(&format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
            ))
            .await;
        client.read_until("<success").await;
        client.write(header).await;
        client.read_until("</stream:features>").await;
        client.write("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource></bind></iq>").await;
        client.read_until("</iq>").await;
        client.write("<presence/>").await;
        client.buffer.clear();
        client
    }

    async fn write(&mut self, text: &str) {
        use tokio::io::AsyncWriteExt as _;
        self.writer
            .write_all(text.as_bytes())
            .await
            .expect("written");
    }

    async fn read_more(&mut self) -> bool {
        use tokio::io::AsyncReadExt as _;
        let mut chunk = [0u8; 16384];
        match self.reader.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffer.push_str(&String::from_utf8_lossy(&chunk[..n]));
                true
            }
        }
    }

    async fn read_until(&mut self, needle: &str) {
        while !self.buffer.contains(needle) {
            assert!(
                self.read_more().await,
                "the server closed the stream before {needle}"
            );
        }
        if let Some(at) = self.buffer.find(needle) {
            self.buffer.drain(..at + needle.len());
        }
    }

    /// The next whole `<message>` stanza read.
    async fn next_message(&mut self) -> Option<String> {
        loop {
            if let Some(start) = self.buffer.find("<message") {
                let rest = &self.buffer[start..];
                let end = match (rest.find("</message>"), rest.find("/>")) {
                    (Some(close), _) => Some(close + "</message>".len()),
                    _ => None,
                };
                if let Some(end) = end {
                    let stanza = rest[..end].to_owned();
                    self.buffer.drain(..start + end);
                    return Some(stanza);
                }
            }
            if !self.read_more().await {
                return None;
            }
        }
    }
}

/// An attribute of the first tag named `tag` in `xml` (either quote).
fn attribute(xml: &str, tag: &str, name: &str) -> Option<String> {
    let at = xml.find(&format!("<{tag}"))?;
    let head = &xml[at..at + xml[at..].find('>')?];
    for quote in ['\'', '"'] {
        let key = format!(" {name}={quote}");
        if let Some(start) = head.find(&key) {
            let value = &head[start + key.len()..];
            return Some(value[..value.find(quote)?].to_owned());
        }
    }
    None
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The plain case's receiver: answers every message that asks with its receipt.
async fn answer_receipts(c2s: u16) {
    let mut client = C2s::online(c2s, "sink").await;
    while let Some(message) = client.next_message().await {
        if !message.contains("urn:xmpp:receipts") || message.contains("<received") {
            continue;
        }
        let (Some(from), Some(id)) = (
            attribute(&message, "message", "from"),
            attribute(&message, "message", "id"),
        ) else {
            continue;
        };
        client
            .write(&format!("<message to='{from}' type='chat'><received xmlns='urn:xmpp:receipts' id='{id}'/></message>"))
            .await;
    }
}

/// One customer: `n` messages to `to`, `window` in flight, each until its receipt; answers
/// the send → receipt times.
async fn send_for_receipts(
    c2s: u16,
    user: String,
    to: String,
    n: usize,
    window: usize,
) -> Vec<Duration> {
    let mut client = C2s::online(c2s, &user).await;
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(n);
    let mut next = 0;
    while latencies.len() < n {
        while next < n && next - latencies.len() < window {
            let id = format!("{user}-{next}");
            sent_at.insert(id.clone(), Instant::now());
            client
                .write(&format!("<message to='{to}' id='{id}' type='chat'><body>bench message {next}</body><request xmlns='urn:xmpp:receipts'/></message>"))
                .await;
            next += 1;
        }
        let message = tokio::time::timeout(Duration::from_secs(60), client.next_message())
            .await
            .unwrap_or_else(|_| panic!("{user}: a receipt did not come"))
            .unwrap_or_else(|| panic!("{user}: the server closed the stream"));
        if let Some(id) = attribute(&message, "received", "id") {
            if let Some(at) = sent_at.remove(&id) {
                latencies.push(at.elapsed());
            }
        }
    }
    latencies
}

// -------------------------------------------------------------------------------- Matrix

fn matrix() {
    let senders = env("BENCH_MATRIX_SENDERS", 10);
    let per_sender = env("BENCH_MATRIX_MESSAGES", 100);
    let dir = tempfile::tempdir().expect("tempdir");
    let synapse_port = free_port();
    let homeserver = format!("http://127.0.0.1:{synapse_port}");
    let tokens = MatrixTokens {
        as_token: "bench-as-token-0123456789abcdef".to_owned(),
        hs_token: "bench-hs-token-0123456789abcdef".to_owned(),
    };
    let matrix_config = MatrixConfig {
        homeserver: homeserver.clone(),
        server_name: "localhost".to_owned(),
        bot: "support".to_owned(),
        tokens: Some(tokens.clone()),
    };
    let node = BenchNode::start(false, |loopback| Config {
        matrix: Some(matrix_config.clone()),
        ..loopback
    });
    let registration = dir.path().join("registration.yaml");
    std::fs::write(
        &registration,
        matrix_config
            .settings(&tokens)
            .expect("settings")
            .registration(&node.base),
    )
    .expect("registration");
    let data = dir.path().join("synapse");
    let status = Command::new("bash")
        .arg(fixture("synapse-gen-config.sh"))
        .arg(&data)
        .arg(synapse_port.to_string())
        .arg("WARNING")
        .env("SYNAPSE_PY", venv("python"))
        .env("AS_REG", &registration)
        .stdout(Stdio::null())
        .status()
        .expect("config");
    assert!(status.success());
    let _synapse = Server(
        Command::new(venv("python"))
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(data.join("homeserver.yaml"))
            .current_dir(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("synapse"),
    );
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let versions = format!("{homeserver}/_matrix/client/versions");
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(&versions).call().is_err() {
        assert!(Instant::now() < deadline, "synapse did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let users: Vec<String> = (0..senders)
        .map(|n| format!("s{n}"))
        .chain(["sink".to_owned()])
        .collect();
    let mut tokens_of = HashMap::new();
    for user in &users {
        let status = Command::new(venv("register_new_matrix_user"))
            .args([
                "-u",
                user,
                "-p",
                "bench-password",
                "--no-admin",
                "-k",
                "peers-test-secret",
            ])
            .arg(&homeserver)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("register");
        assert!(status.success());
        let login: serde_json::Value = http
            .post(&format!("{homeserver}/_matrix/client/v3/login"))
            .send_json(serde_json::json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": "bench-password"}))
            .expect("login")
            .into_json()
            .expect("json");
        tokens_of.insert(
            user.clone(),
            login["access_token"].as_str().expect("token").to_owned(),
        );
    }
    let call =
        |method: &str, user: &str, path: &str, body: serde_json::Value| -> serde_json::Value {
            http.request(method, &format!("{homeserver}{path}"))
                .set("Authorization", &format!("Bearer {}", tokens_of[user]))
                .send_json(body)
                .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
                .into_json()
                .expect("json")
        };
    let total = senders * per_sender;

    // Plain: each sender in a room with the sink, who syncs.
    let mut plain_rooms = Vec::new();
    for n in 0..senders {
        let room = call(
            "POST",
            &format!("s{n}"),
            "/_matrix/client/v3/createRoom",
            serde_json::json!({"invite": ["@sink:localhost"], "preset": "trusted_private_chat"}),
        )["room_id"]
            .as_str()
            .expect("room")
            .to_owned();
        call(
            "POST",
            "sink",
            &format!("/_matrix/client/v3/join/{room}"),
            serde_json::json!({}),
        );
        plain_rooms.push(room);
    }
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let syncing = {
        let (seen, homeserver, token) = (
            Arc::clone(&seen),
            homeserver.clone(),
            tokens_of["sink"].clone(),
        );
        std::thread::spawn(move || sync_bodies(&homeserver, &token, &seen, total))
    };
    let (elapsed, latencies) = send_all(
        &http,
        &homeserver,
        &tokens_of,
        &plain_rooms,
        per_sender,
        &seen,
        total,
    );
    report("matrix plain (user to user)", total, elapsed, latencies);
    syncing.join().expect("sync");

    // Bridge: each sender in a direct chat with the bot; seen on the node's live stream.
    let mut bot_rooms = Vec::new();
    for n in 0..senders {
        let room = call("POST", &format!("s{n}"), "/_matrix/client/v3/createRoom", serde_json::json!({"invite": ["@support:localhost"], "is_direct": true, "preset": "trusted_private_chat"}))["room_id"]
            .as_str()
            .expect("room")
            .to_owned();
        bot_rooms.push(room);
    }
    for (n, room) in bot_rooms.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let members = call(
                "GET",
                &format!("s{n}"),
                &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
                serde_json::Value::Null,
            );
            if members["joined"].get("@support:localhost").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "the bot did not join");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watching = {
        let (seen, base, token) = (Arc::clone(&seen), node.base.clone(), node.token.clone());
        std::thread::spawn(move || watch_inbox(&base, &token, &seen, total))
    };
    std::thread::sleep(Duration::from_millis(300));
    let (elapsed, latencies) = send_all(
        &http,
        &homeserver,
        &tokens_of,
        &bot_rooms,
        per_sender,
        &seen,
        total,
    );
    report(
        "matrix bridge (into durable thread events)",
        total,
        elapsed,
        latencies,
    );
    watching.join().expect("watch");
}

/// Every sender sends its messages one after the other; answers the time until the last was
/// seen and each one's send → seen.
fn send_all(
    http: &ureq::Agent,
    homeserver: &str,
    tokens: &HashMap<String, String>,
    rooms: &[String],
    per_sender: usize,
    seen: &Arc<Mutex<HashMap<String, Instant>>>,
    total: usize,
) -> (Duration, Vec<Duration>) {
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let started = Instant::now();
    let threads: Vec<_> = rooms
        .iter()
        .enumerate()
        .map(|(n, room)| {
            let (http, homeserver, token, room, sent_at) = (
                http.clone(),
                homeserver.to_owned(),
                tokens[&format!("s{n}")].clone(),
                room.clone(),
                Arc::clone(&sent_at),
            );
            std::thread::spawn(move || {
                for k in 0..per_sender {
                    let body = format!("bench s{n} {k} {}", started.elapsed().as_nanos());
                    sent_at.lock().expect("lock").insert(body.clone(), Instant::now());
                    http.put(&format!("{homeserver}/_matrix/client/v3/rooms/{room}/send/m.room.message/b{n}-{k}-{}", started.elapsed().as_nanos()))
                        .set("Authorization", &format!("Bearer {token}"))
                        .send_json(serde_json::json!({"msgtype": "m.text", "body": body}))
                        .expect("sent");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("sender");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.lock().expect("lock").len() < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} seen",
            seen.lock().expect("lock").len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = seen.lock().expect("lock");
    let sent_at = sent_at.lock().expect("lock");
    let last = seen.values().max().copied().unwrap_or(started);
    let latencies = sent_at
        .iter()
        .filter_map(|(body, at)| {
            seen.get(body)
                .map(|seen| seen.saturating_duration_since(*at))
        })
        .collect();
    (last - started, latencies)
}

/// The plain case's receiver: `/sync` until `total` bench messages were seen.
fn sync_bodies(
    homeserver: &str,
    token: &str,
    seen: &Mutex<HashMap<String, Instant>>,
    total: usize,
) {
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let mut since: Option<String> = None;
    while seen.lock().expect("lock").len() < total {
        let mut url = format!("{homeserver}/_matrix/client/v3/sync?timeout=10000");
        if let Some(since) = &since {
            url.push_str(&format!("&since={since}"));
        }
        let sync: serde_json::Value = http
            .get(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("sync")
            .into_json()
            .expect("json");
        let now = Instant::now();
        since = sync["next_batch"].as_str().map(str::to_owned);
        if let Some(rooms) = sync["rooms"]["join"].as_object() {
            for room in rooms.values() {
                for event in room["timeline"]["events"].as_array().into_iter().flatten() {
                    if let Some(body) = event["content"]["body"].as_str() {
                        if body.starts_with("bench ") {
                            seen.lock()
                                .expect("lock")
                                .entry(body.to_owned())
                                .or_insert(now);
                        }
                    }
                }
            }
        }
    }
}

/// The bridge case's receiver: the inbox's live stream; each inbound message's text is read
/// once it is seen (the stream gives ids).
fn watch_inbox(base: &str, token: &str, seen: &Mutex<HashMap<String, Instant>>, total: usize) {
    let http = ureq::AgentBuilder::new().build();
    let stream = http
        .get(&format!("{base}/api/v1/stream"))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("stream");
    let mut arrived: Vec<(String, String, Instant)> = Vec::new();
    let mut kind = String::new();
    for line in std::io::BufReader::new(stream.into_reader()).lines() {
        let Ok(line) = line else { break };
        if let Some(name) = line.strip_prefix("event: ") {
            kind = name.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            if kind != "change" {
                continue;
            }
            let change: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            if change["kind"] == "thread.message.inbound" {
                let scope = change["scope"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches("thread:")
                    .to_owned();
                let event = change["event"].as_str().unwrap_or_default().to_owned();
                arrived.push((scope, event, Instant::now()));
                if arrived.len() >= total {
                    break;
                }
            }
        }
    }
    // Texts by event id, one thread at a time.
    let mut texts: HashMap<String, String> = HashMap::new();
    let mut read = std::collections::HashSet::new();
    for (thread, _, _) in &arrived {
        if !read.insert(thread.clone()) {
            continue;
        }
        let detail: serde_json::Value = http
            .get(&format!("{base}/api/v1/threads/{thread}"))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("thread")
            .into_json()
            .expect("json");
        for event in detail["events"].as_array().into_iter().flatten() {
            if let (Some(id), Some(text)) = (event["id"].as_str(), event["text"].as_str()) {
                texts.insert(id.to_owned(), text.to_owned());
            }
        }
    }
    let mut seen = seen.lock().expect("lock");
    for (_, event, at) in arrived {
        if let Some(text) = texts.get(&event) {
            seen.entry(text.clone()).or_insert(at);
        }
    }
}
