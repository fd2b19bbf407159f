//! The XMPP bridge against a real Prosody (Debian's package; `scripts/test` installs it), its
//! component and upload service, with customers who are real XMPP clients (slixmpp from PyPI,
//! `tests/fixtures/xmpp_customer.py`). Everything on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use threadline_tests::{
    detail, events_of_kind, eventually, field, free_port, receipts_of, threadline_ok, threads,
    venv_program, Node, ScriptedClient, Visitor,
};

const COMPONENT: &str = "support.localhost";
const SECRET: &str = "component-secret-for-tests";

/// Prosody on free loopback ports: c2s, the component port, and HTTP for the upload service
/// (`upload.localhost`, mod_http_file_share).
struct Prosody {
    dir: tempfile::TempDir,
    c2s: u16,
    component: u16,
    http: u16,
    child: Option<Child>,
}

impl Prosody {
    fn start() -> Prosody {
        assert!(
            Path::new("/usr/bin/prosody").exists(),
            "prosody is missing: run the tests with scripts/test, which installs it"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let (c2s, component, http) = (free_port(), free_port(), free_port());
        let config = include_str!("../fixtures/prosody.cfg.lua.in")
            .replace("@BASE@", &dir.path().display().to_string())
            .replace("@C2S@", &c2s.to_string())
            .replace("@COMPONENT_PORT@", &component.to_string())
            .replace("@HTTP@", &http.to_string())
            .replace("@COMPONENT@", COMPONENT)
            .replace("@SECRET@", SECRET);
        std::fs::write(dir.path().join("prosody.cfg.lua"), config).expect("config");
        let mut prosody = Prosody {
            dir,
            c2s,
            component,
            http,
            child: None,
        };
        prosody.run();
        prosody
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    fn run(&mut self) {
        let child = Command::new("/usr/bin/prosody")
            .arg("--config")
            .arg(self.config())
            .arg("-F")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prosody starts");
        self.child = Some(child);
        let component = self.component;
        eventually("prosody listens", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", component))
                .ok()
                .map(drop)
        });
    }

    fn register(&self, user: &str, password: &str) {
        let status = Command::new("/usr/bin/prosodyctl")
            .arg("--config")
            .arg(self.config())
            .args(["register", user, "localhost", password])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("prosodyctl runs");
        assert!(status.success(), "registering {user}");
    }

    /// kill -9, then a new Prosody on the same data and ports.
    fn crash_and_restart(&mut self, down_for: Duration) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaped");
        }
        std::thread::sleep(down_for);
        self.run();
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A customer's XMPP client (slixmpp, `tests/fixtures/xmpp_customer.py`).
struct Customer(ScriptedClient);

impl std::ops::Deref for Customer {
    type Target = ScriptedClient;
    fn deref(&self) -> &ScriptedClient {
        &self.0
    }
}

impl std::ops::DerefMut for Customer {
    fn deref_mut(&mut self) -> &mut ScriptedClient {
        &mut self.0
    }
}

impl Customer {
    fn connect(prosody: &Prosody, user: &str) -> Customer {
        let password = format!("{user}-password");
        prosody.register(user, &password);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/xmpp_customer.py");
        let mut command = Command::new(venv_program("python"));
        command.arg(script).args([
            &format!("{user}@localhost"),
            &password,
            "127.0.0.1",
            &prosody.c2s.to_string(),
            COMPONENT,
        ]);
        let mut customer = Customer(ScriptedClient::spawn(command));
        customer.wait_for("online", Duration::from_secs(20), |r| r["online"] == true);
        customer
    }

    /// Sends a message and waits for its receipt (the node has it durably).
    fn say(&mut self, id: &str, text: &str) {
        self.command(&json!({"send": id, "text": text}));
        self.wait_for(
            &format!("the receipt of {id}"),
            Duration::from_secs(20),
            |r| r["receipt"] == id,
        );
    }
}

/// A node whose `[xmpp]` is the Prosody's component; the admin token.
fn shop(prosody: &Prosody) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = threadline_ok(&data, &["init"]);
    threadline_tests::edit_config(&data, |text| {
        text.replacen(
            "[xmpp]\n",
            &format!(
                "[xmpp]\ncomponent = \"{COMPONENT}\"\nserver = \"127.0.0.1:{}\"\nsecret = \"{SECRET}\"\nserver_domain = \"localhost\"\nupload_service = \"upload.localhost\"\nmedia_hosts = [\"127.0.0.1:{}\"]\n",
                prosody.component, prosody.http
            ),
            1,
        )
    });
    (dir, data.clone(), field(&out, "token:"))
}

fn thread_of(node: &Node, token: &str, handle: &str) -> String {
    eventually(
        &format!("a thread of {handle}"),
        Duration::from_secs(10),
        || {
            threads(node, token).into_iter().find_map(|thread| {
                let id = thread["id"].as_str()?.to_owned();
                let shown = detail(node, token, &id);
                (shown["thread"]["route"]["handle"] == handle).then_some(id)
            })
        },
    )
}

fn inbound_texts(node: &Node, token: &str, thread: &str) -> Vec<String> {
    events_of_kind(&detail(node, token, thread), "thread.message.inbound")
        .iter()
        .map(|e| e["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn download(url: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut ureq::get(url).call().expect("download").into_reader(),
        &mut bytes,
    )
    .expect("bytes");
    bytes
}

#[test]
fn an_xmpp_customer_writes_and_gets_replies_receipts_markers_and_files() {
    let prosody = Prosody::start();
    let (_dir, data, token) = shop(&prosody);
    let node = Node::start(&data);
    let mut alice = Customer::connect(&prosody, "alice");

    // Her message is stored before she gets its receipt.
    alice.say("m1", "Hello, is my order on its way?");
    let thread = thread_of(&node, &token, "xmpp:alice@localhost");
    assert_eq!(
        inbound_texts(&node, &token, &thread),
        ["Hello, is my order on its way?"]
    );

    // The agent's reply reaches her client with the reply's id; her client's receipt and
    // her "displayed" marker become the reply's receipts.
    let (status, sent) = node.post(
        &token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "It left the warehouse this morning."}),
    );
    assert_eq!(status, 200, "{sent}");
    let reply = sent["event"].as_str().expect("event").to_owned();
    let got = alice.wait_for("the reply", Duration::from_secs(20), |r| {
        r["message"] == reply.as_str()
    });
    assert_eq!(got["body"], "It left the warehouse this morning.");
    eventually("a delivered receipt", Duration::from_secs(10), || {
        (receipts_of(&detail(&node, &token, &thread), &reply) == ["delivered"]).then_some(())
    });
    alice.command(&json!({"displayed": reply}));
    eventually("a read receipt", Duration::from_secs(10), || {
        (receipts_of(&detail(&node, &token, &thread), &reply) == ["delivered", "read"])
            .then_some(())
    });

    // A photo she uploads (XEP-0363) comes into the thread as a file.
    let photo = tempfile::NamedTempFile::new().expect("file");
    let bytes: Vec<u8> = (0..5000u32).map(|n| (n % 251) as u8).collect();
    std::fs::write(photo.path(), &bytes).expect("written");
    alice.command(&json!({"file": photo.path(), "send": "m2"}));
    alice.wait_for("the file's receipt", Duration::from_secs(20), |r| {
        r["receipt"] == "m2"
    });
    let shown = detail(&node, &token, &thread);
    let inbound = events_of_kind(&shown, "thread.message.inbound");
    let with_file = inbound.last().expect("the file's message");
    assert!(
        with_file["text"].as_str().unwrap_or("").is_empty(),
        "the link is the file: {with_file}"
    );
    let event = with_file["id"].as_str().expect("id");
    let mut stored = Vec::new();
    std::io::Read::read_to_end(
        &mut node
            .http()
            .get(&format!(
                "{}/api/v1/threads/{thread}/events/{event}/attachments/0",
                node.base
            ))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("attachment")
            .into_reader(),
        &mut stored,
    )
    .expect("bytes");
    assert_eq!(stored, bytes);

    // The agent sends it back: uploaded to Prosody's upload service, sent as a link.
    let blob = with_file["attachments"][0]["blob"].as_str().expect("blob");
    let (status, sent) = node.post(
        &token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Is this the one?", "attachments": [{"blob": blob, "name": "label.bin", "media_type": "application/octet-stream"}]}),
    );
    assert_eq!(status, 200, "{sent}");
    let reply = sent["event"].as_str().expect("event").to_owned();
    let text = alice.wait_for("the reply's text", Duration::from_secs(20), |r| {
        r["message"] == reply.as_str()
    });
    assert_eq!(text["body"], "Is this the one?");
    let file = alice.wait_for("the reply's file", Duration::from_secs(20), |r| {
        r["message"] == format!("{reply}-f0")
    });
    let url = file["oob"].as_str().expect("an out-of-band link");
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{}/", prosody.http)),
        "{url}"
    );
    assert_eq!(download(url), bytes);

    // Agents typing reach her client as a chat state.
    let (status, _) = node.post(
        &token,
        &format!("/api/v1/threads/{thread}/typing"),
        &json!({}),
    );
    assert_eq!(status, 200);
    alice.wait_for("the agent typing", Duration::from_secs(10), |r| {
        r["typing"] == true
    });

    // Her typing reaches the agents' live stream.
    let stream = node.live_stream(&token);
    alice.command(&json!({"typing": true}));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (name, data) = stream
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("her typing on the live stream");
        if name == "typing" && data["thread"] == thread.as_str() {
            break;
        }
    }

    // A forged `from` is replaced by the server with who she is: it lands on her thread.
    alice.command(&json!({"send": "m3", "text": "Signed, Bob", "from": "bob@localhost/x"}));
    alice.wait_for("the receipt of m3", Duration::from_secs(20), |r| {
        r["receipt"] == "m3"
    });
    assert_eq!(
        inbound_texts(&node, &token, &thread)
            .last()
            .map(String::as_str),
        Some("Signed, Bob")
    );
    assert_eq!(threads(&node, &token).len(), 1, "no thread for bob");
}

#[test]
fn prosody_killed_mid_stream_loses_nothing_and_shows_nothing_twice() {
    let mut prosody = Prosody::start();
    let (_dir, data, token) = shop(&prosody);
    let node = Node::start(&data);
    let mut alice = Customer::connect(&prosody, "alice");
    alice.say("m0", "first");
    let thread = thread_of(&node, &token, "xmpp:alice@localhost");

    // Messages and replies both ways while Prosody is killed and comes back.
    let mut replies = Vec::new();
    for n in 1..=30 {
        alice.command(&json!({"send": format!("m{n}"), "text": format!("message {n}")}));
        if n % 3 == 0 {
            let (status, sent) = node.post(
                &token,
                &format!("/api/v1/threads/{thread}/replies"),
                &json!({"text": format!("reply {}", n / 3)}),
            );
            assert_eq!(status, 200, "{sent}");
            replies.push(sent["event"].as_str().expect("event").to_owned());
        }
        if n == 15 {
            prosody.crash_and_restart(Duration::from_millis(500));
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    // Every message is acknowledged in the end (the client sends again what it has no
    // receipt for), and every reply reaches the client.
    for n in 0..=30 {
        alice.wait_for(
            &format!("the receipt of m{n}"),
            Duration::from_secs(60),
            |r| r["receipt"] == format!("m{n}"),
        );
    }
    for reply in &replies {
        alice.wait_for("a reply", Duration::from_secs(60), |r| {
            r["message"] == reply.as_str()
        });
    }
    alice.drain(Duration::from_secs(2));

    let mut texts = inbound_texts(&node, &token, &thread);
    texts.sort();
    let mut expected: Vec<String> = (1..=30).map(|n| format!("message {n}")).collect();
    expected.push("first".to_owned());
    expected.sort();
    assert_eq!(texts, expected, "each message once");
    // On the wire a reply in flight when the server died may go twice (the bridge cannot
    // know whether the server routed it); it carries the same origin-id both times, so the
    // client shows it once.
    for reply in &replies {
        let copies: Vec<&Value> = alice
            .seen
            .iter()
            .filter(|r| r["message"] == reply.as_str())
            .collect();
        let shown = copies.iter().filter(|r| r["duplicate"] == false).count();
        assert_eq!(
            shown, 1,
            "reply {reply} was shown {shown} times: {:?}",
            alice.seen
        );
        assert!(copies.iter().all(|r| r["body"] == copies[0]["body"]));
    }
}

#[test]
fn a_flood_or_an_oversized_message_is_refused_and_other_customers_are_not_slowed() {
    let prosody = Prosody::start();
    let (_dir, data, token) = shop(&prosody);
    let node = Node::start(&data);
    let mut mallory = Customer::connect(&prosody, "mallory");
    let mut alice = Customer::connect(&prosody, "alice");

    mallory.command(&json!({"flood": 60, "prefix": "f"}));
    let started = Instant::now();
    alice.say("a1", "Just one question");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "alice waited {:?}",
        started.elapsed()
    );
    // Each flooded message is answered: stored (its receipt) or refused (an error to wait).
    let answered = |r: &Value| {
        r["receipt"].as_str().is_some_and(|id| id.starts_with('f'))
            || r["error"].as_str().is_some_and(|id| id.starts_with('f'))
    };
    eventually(
        "every flooded message answered",
        Duration::from_secs(30),
        || {
            mallory.drain(Duration::from_millis(200));
            (mallory.seen.iter().filter(|r| answered(r)).count() == 60).then_some(())
        },
    );
    let stored = mallory
        .seen
        .iter()
        .filter(|r| r["receipt"].is_string())
        .count();
    let refused: Vec<&Value> = mallory
        .seen
        .iter()
        .filter(|r| r["error"].is_string())
        .collect();
    assert!(!refused.is_empty(), "a flood of 60 is refused in part");
    assert!(refused.iter().all(|r| r["type"] == "wait"), "{refused:?}");
    let thread = thread_of(&node, &token, "xmpp:mallory@localhost");
    assert_eq!(
        inbound_texts(&node, &token, &thread).len(),
        stored,
        "exactly what was acknowledged is stored"
    );

    // A text over the protocol's limit is refused for good (`modify`), and stores nothing.
    let alice_thread = thread_of(&node, &token, "xmpp:alice@localhost");
    alice.command(&json!({"send": "big", "text": "x".repeat(150 * 1024)}));
    let refused = alice.wait_for("the refusal", Duration::from_secs(20), |r| {
        r["error"] == "big"
    });
    assert_eq!(refused["type"], "modify", "{refused}");
    assert_eq!(
        inbound_texts(&node, &token, &alice_thread),
        ["Just one question"]
    );
}

#[test]
fn a_web_chat_continues_on_xmpp_with_its_one_time_code() {
    let prosody = Prosody::start();
    let (_dir, data, token) = shop(&prosody);
    let node = Node::start(&data);
    let mut visitor = Visitor::connect(&node, None);
    visitor.say("w1", "Can I get the invoice by chat instead?");
    let thread = threads(&node, &token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let url = visitor.continue_link("xmpp");
    let prefix = format!("xmpp:{COMPONENT}?message;body=");
    assert!(url.starts_with(&prefix), "{url}");
    let body = url[prefix.len()..]
        .replace("%20", " ")
        .replace("%28", "(")
        .replace("%29", ")");

    let mut alice = Customer::connect(&prosody, "alice");
    alice.say("c1", &body);
    // One thread still: the web chat's, now answered on XMPP.
    threadline_tests::assert_continued_on(&node, &token, &thread, "xmpp:alice@localhost");

    let (status, sent) = node.post(
        &token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Sure, here it comes."}),
    );
    assert_eq!(status, 200, "{sent}");
    let reply = sent["event"].as_str().expect("event").to_owned();
    alice.wait_for("the reply on XMPP", Duration::from_secs(20), |r| {
        r["message"] == reply.as_str()
    });

    // The code was good once: sent again by someone else, it links nothing.
    let mut mallory = Customer::connect(&prosody, "mallory");
    mallory.say("c2", &body);
    let shown = detail(&node, &token, &thread);
    assert_eq!(shown["thread"]["route"]["handle"], "xmpp:alice@localhost");
    assert_eq!(threads(&node, &token).len(), 2);
}

#[test]
fn the_xmpp_bridge_runs_on_its_own_against_the_node() {
    let prosody = Prosody::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = threadline_ok(&data, &["init"]);
    let token = field(&out, "token:");
    let (key_file, bridge_token) = threadline_tests::add_bridge(&data, "xmpp");
    let bridge_config = dir.path().join("xmpp.toml");
    std::fs::write(
        &bridge_config,
        format!(
            "[xmpp]\ncomponent = \"{COMPONENT}\"\nserver = \"127.0.0.1:{}\"\nsecret = \"{SECRET}\"\nserver_domain = \"localhost\"\n",
            prosody.component
        ),
    )
    .expect("bridge config");
    let node = Node::start(&data);
    let _bridge = Node::start_command(
        &data,
        &[
            "bridge",
            "xmpp",
            "--node",
            &node.base,
            "--token",
            &bridge_token,
            "--key-file",
            key_file.to_str().expect("utf-8 path"),
            "--config",
            bridge_config.to_str().expect("utf-8 path"),
        ],
        "xmpp bridge: component",
    );
    let mut alice = Customer::connect(&prosody, "alice");
    alice.say("m1", "Hello from a standalone bridge");
    let thread = thread_of(&node, &token, "xmpp:alice@localhost");
    assert_eq!(
        inbound_texts(&node, &token, &thread),
        ["Hello from a standalone bridge"]
    );
    let (status, sent) = node.post(
        &token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Answered through the bridge API."}),
    );
    assert_eq!(status, 200, "{sent}");
    let reply = sent["event"].as_str().expect("event").to_owned();
    alice.wait_for("the reply", Duration::from_secs(30), |r| {
        r["message"] == reply.as_str()
    });
}
