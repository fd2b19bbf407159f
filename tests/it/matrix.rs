//! The Matrix bridge against a real Synapse (from PyPI, in `target/venv`; `scripts/test`
//! installs it) loading the registration `threadline bridge matrix registration` writes, with
//! customers who are real Matrix clients (matrix-nio, `tests/fixtures/matrix_customer.py`).
//! Everything on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use threadline_tests::{
    detail, events_of_kind, eventually, field, free_port, receipts_of, threadline_ok, threads,
    venv_program, Node, ScriptedClient, Visitor,
};

const BOT: &str = "@support:localhost";

/// Synapse on a free port, with the node's registration.
struct Synapse {
    data: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Synapse {
    fn start(dir: &Path, registration: &Path, port: u16) -> Synapse {
        let data = dir.join("synapse");
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse-gen-config.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg(&data)
            .arg(port.to_string())
            .arg("WARNING")
            .env("SYNAPSE_PY", venv_program("python"))
            .env("AS_REG", registration)
            .stdout(Stdio::null())
            .status()
            .expect("the config generator runs");
        assert!(status.success(), "synapse's config");
        let mut synapse = Synapse {
            data,
            port,
            child: None,
        };
        synapse.run();
        synapse
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let child = Command::new(venv_program("python"))
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(self.data.join("homeserver.yaml"))
            .current_dir(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("synapse starts");
        self.child = Some(child);
        let url = format!("{}/_matrix/client/versions", self.url());
        eventually("synapse answers", Duration::from_secs(60), || {
            ureq::get(&url).call().ok().map(drop)
        });
    }

    fn register(&self, user: &str, password: &str) {
        let status = Command::new(venv_program("register_new_matrix_user"))
            .args([
                "-u",
                user,
                "-p",
                password,
                "--no-admin",
                "-k",
                "peers-test-secret",
            ])
            .arg(self.url())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("register_new_matrix_user runs");
        assert!(status.success(), "registering {user}");
    }

    /// kill -9, then Synapse again on the same data and port.
    fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaped");
        }
        self.run();
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A customer's Matrix client (matrix-nio, `tests/fixtures/matrix_customer.py`).
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
    fn connect(synapse: &Synapse, user: &str) -> Customer {
        let password = format!("{user}-password");
        synapse.register(user, &password);
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/matrix_customer.py");
        let mut command = Command::new(venv_program("python"));
        command.arg(script).args([
            &synapse.url(),
            &format!("@{user}:localhost"),
            &password,
            BOT,
        ]);
        let mut customer = Customer(ScriptedClient::spawn(command));
        customer.wait_for("online", Duration::from_secs(30), |r| r["online"] == true);
        customer
    }

    /// Sends a message; answers its Matrix event id once the homeserver has it.
    fn send(&mut self, label: &str, text: &str) -> String {
        self.command(&json!({"send": label, "text": text}));
        self.sent(label)
    }

    fn sent(&mut self, label: &str) -> String {
        self.wait_for(&format!("{label} sent"), Duration::from_secs(60), |r| {
            r["sent"] == label
        })["event"]
            .as_str()
            .expect("event id")
            .to_owned()
    }

    /// Opens a direct chat with the bot.
    fn open_chat(&mut self) -> String {
        self.command(&json!({"dm": true}));
        self.wait_for("the room", Duration::from_secs(30), |r| {
            r["room"].is_string()
        })["room"]
            .as_str()
            .expect("room")
            .to_owned()
    }
}

/// A node with `[matrix]`, Synapse loading its registration, and the admin token.
struct Shop {
    _dir: tempfile::TempDir,
    data: PathBuf,
    token: String,
    address: String,
    synapse: Synapse,
}

impl Shop {
    fn start() -> (Shop, Node) {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = threadline_ok(&data, &["init"]);
        // Synapse's port is known once it runs, and it needs the registration first: the
        // homeserver's URL in config.toml is fixed here, on a port chosen now.
        let synapse_port = free_port();
        threadline_tests::edit_config(&data, |text| {
            text.replacen(
                "[matrix]\n",
                &format!(
                    "[matrix]\nhomeserver = \"http://127.0.0.1:{synapse_port}\"\nserver_name = \"localhost\"\n"
                ),
                1,
            )
        });
        let address = format!("127.0.0.1:{}", free_port());
        let registration = dir.path().join("registration.yaml");
        threadline_ok(
            &data,
            &[
                "bridge",
                "matrix",
                "registration",
                "--url",
                &format!("http://{address}"),
                "--out",
                registration.to_str().expect("utf-8 path"),
            ],
        );
        let synapse = Synapse::start(dir.path(), &registration, synapse_port);
        let node = Node::start_at(&data, &address);
        let shop = Shop {
            token: field(&out, "token:"),
            data,
            address,
            synapse,
            _dir: dir,
        };
        (shop, node)
    }
}

fn thread_of(node: &Node, token: &str, handle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = threads(node, token).into_iter().find_map(|thread| {
            let id = thread["id"].as_str()?.to_owned();
            let shown = detail(node, token, &id);
            (shown["thread"]["route"]["handle"] == handle).then_some(id)
        });
        if let Some(id) = found {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no thread of {handle}; the node logged {:?}",
            node.logged(&["matrix"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn inbound(node: &Node, token: &str, thread: &str) -> Vec<Value> {
    events_of_kind(&detail(node, token, thread), "thread.message.inbound")
}

fn texts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn a_matrix_customer_chats_with_the_bot_both_ways_with_files_receipts_edits_and_deletions() {
    let (shop, node) = Shop::start();
    let token = &shop.token;
    let mut alice = Customer::connect(&shop.synapse, "alice");
    alice.open_chat();

    // Her first message lands on a thread of her Matrix id, its HTML kept as the original.
    let first = {
        alice.command(
            &json!({"send": "m1", "text": "Hello *support*", "html": "Hello <em>support</em>"}),
        );
        alice.sent("m1")
    };
    let thread = thread_of(&node, token, "matrix:@alice:localhost");
    let messages = eventually("her message", Duration::from_secs(30), || {
        let messages = inbound(&node, token, &thread);
        (!messages.is_empty()).then_some(messages)
    });
    assert_eq!(texts(&messages), ["Hello *support*"]);
    assert_eq!(messages[0]["external_id"], first.as_str());
    assert!(
        !messages[0]["original"].is_null(),
        "the HTML is kept: {}",
        messages[0]
    );

    // The agent's reply reaches her from the bot; her read receipt marks it read.
    let (status, sent) = node.post(
        token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Hi Alice, how can we help?"}),
    );
    assert_eq!(status, 200, "{sent}");
    let reply = sent["event"].as_str().expect("event").to_owned();
    let got = alice.wait_for("the reply", Duration::from_secs(30), |r| {
        r["body"] == "Hi Alice, how can we help?"
    });
    assert_eq!(got["sender"], BOT);
    eventually("delivered", Duration::from_secs(10), || {
        (receipts_of(&detail(&node, token, &thread), &reply) == ["delivered"]).then_some(())
    });
    let matrix_reply = got["message"].as_str().expect("event").to_owned();
    alice.command(&json!({"read": matrix_reply}));
    eventually("read", Duration::from_secs(30), || {
        receipts_of(&detail(&node, token, &thread), &reply)
            .contains(&"read".to_owned())
            .then_some(())
    });

    // The agent reads her message: the bot's read receipt reaches her; an agent typing too.
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{thread}/read"),
        &json!({"up_to": messages[0]["id"]}),
    );
    assert_eq!(status, 200);
    alice.wait_for("the bot's read receipt", Duration::from_secs(30), |r| {
        r["read_by"] == BOT && r["event"] == first.as_str()
    });
    let (status, _) = node.post(
        token,
        &format!("/api/v1/threads/{thread}/typing"),
        &json!({}),
    );
    assert_eq!(status, 200);
    alice.wait_for("the bot typing", Duration::from_secs(30), |r| {
        r["typing"]
            .as_array()
            .is_some_and(|users| users.contains(&json!(BOT)))
    });

    // Her typing reaches the agents' live stream.
    let stream = node.live_stream(token);
    alice.command(&json!({"typing": true}));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (name, data) = stream
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("her typing on the live stream");
        if name == "typing" && data["thread"] == thread.as_str() {
            break;
        }
    }

    // A photo from her comes in as a file; the agent's file goes to her through the media
    // repository.
    let photo = tempfile::Builder::new()
        .suffix(".png")
        .tempfile()
        .expect("file");
    let bytes: Vec<u8> = (0..4000u32).map(|n| (n % 253) as u8).collect();
    std::fs::write(photo.path(), &bytes).expect("written");
    alice.command(&json!({"image": photo.path(), "send": "m2"}));
    alice.sent("m2");
    let with_file = eventually("the photo", Duration::from_secs(30), || {
        inbound(&node, token, &thread)
            .into_iter()
            .find(|m| m["attachments"].as_array().is_some_and(|a| !a.is_empty()))
    });
    let event = with_file["id"].as_str().expect("id");
    assert_eq!(
        threadline_tests::attachment(&node, token, &thread, event, 0),
        bytes
    );
    let blob = with_file["attachments"][0]["blob"].as_str().expect("blob");
    let (status, sent) = node.post(
        token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "", "attachments": [{"blob": blob, "name": "label.png", "media_type": "image/png"}]}),
    );
    assert_eq!(status, 200, "{sent}");
    let image = alice.wait_for("the agent's image", Duration::from_secs(30), |r| {
        r["msgtype"] == "m.image" && r["sender"] == BOT
    });
    let url = image["url"].as_str().expect("an mxc url").to_owned();
    alice.command(&json!({"download": url}));
    let downloaded = alice.wait_for("the download", Duration::from_secs(30), |r| {
        r["downloaded"] == url.as_str()
    });
    assert_eq!(
        downloaded["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );

    // Her edit and her deletion are recorded, each quoting the message it changes.
    alice.command(&json!({"edit": first, "text": "Hello support!", "send": "m3"}));
    alice.sent("m3");
    alice.command(&json!({"redact": first}));
    let changes = eventually("the edit and the deletion", Duration::from_secs(30), || {
        let messages = inbound(&node, token, &thread);
        let changes: Vec<Value> = messages
            .into_iter()
            .filter(|m| m["reply_to"] == messages_first_id(&node, token, &thread))
            .collect();
        (changes.len() == 2).then_some(changes)
    });
    assert_eq!(
        texts(&changes),
        [
            "[edited] Hello support!",
            "[deleted this message in Matrix]"
        ]
    );

    // Encryption on: she is told it is not bridged, and the agents see it.
    alice.command(&json!({"encrypt": true}));
    alice.wait_for("the notice", Duration::from_secs(30), |r| {
        r["msgtype"] == "m.notice"
            && r["body"]
                .as_str()
                .is_some_and(|body| body.contains("end-to-end encrypted"))
    });
    eventually("the agents' line", Duration::from_secs(30), || {
        texts(&inbound(&node, token, &thread))
            .iter()
            .any(|text| text.contains("end-to-end encrypted"))
            .then_some(())
    });
    let _ = &shop.data;
}

fn messages_first_id(node: &Node, token: &str, thread: &str) -> Value {
    inbound(node, token, thread)
        .first()
        .map(|m| m["id"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn bad_transactions_store_nothing_and_a_retried_one_stores_once() {
    let (shop, node) = Shop::start();
    let token = &shop.token;
    let mut alice = Customer::connect(&shop.synapse, "alice");
    let room = alice.open_chat();
    alice.send("m1", "first");
    let thread = thread_of(&node, token, "matrix:@alice:localhost");
    eventually("the first message", Duration::from_secs(30), || {
        (inbound(&node, token, &thread).len() == 1).then_some(())
    });

    let tokens = std::fs::read_to_string(shop.data.join("keys/matrix-tokens")).expect("tokens");
    let hs_token = tokens
        .lines()
        .find_map(|line| line.strip_prefix("hs_token="))
        .expect("hs_token")
        .to_owned();
    let transaction = |event_id: &str, body: &str| {
        json!({"events": [{
            "type": "m.room.message", "event_id": event_id, "sender": "@alice:localhost",
            "room_id": room, "origin_server_ts": 1_800_000_000_000u64,
            "content": {"msgtype": "m.text", "body": body},
        }]})
        .to_string()
    };
    let put = |txn: &str, auth: Option<&str>, body: &str| {
        let mut request = ureq::put(&format!(
            "http://{}/_matrix/app/v1/transactions/{txn}",
            shop.address
        ))
        .set("Content-Type", "application/json");
        if let Some(auth) = auth {
            request = request.set("Authorization", &format!("Bearer {auth}"));
        }
        match request.send_string(body) {
            Ok(response) => response.status(),
            Err(ureq::Error::Status(status, _)) => status,
            Err(err) => panic!("{err}"),
        }
    };

    // Wrong or missing token: 401, nothing stored.
    let forged = transaction("$forged1", "forged message");
    assert_eq!(put("t1", Some("not-the-token-at-all"), &forged), 401);
    assert_eq!(put("t2", None, &forged), 401);
    // Not JSON, and too large: refused.
    assert_eq!(put("t3", Some(&hs_token), "{not json"), 400);
    let bearer = format!("Bearer {hs_token}");
    assert_eq!(
        threadline_tests::oversize_status(
            &node,
            "PUT /_matrix/app/v1/transactions/t4",
            &[("Authorization", &bearer)],
            9 * 1024 * 1024
        ),
        413
    );
    // A malformed event in a good transaction is skipped; the rest is taken.
    let mixed = json!({"events": [
        {"type": "m.room.message", "content": 5},
        {"type": "m.room.message", "event_id": "$good1", "sender": "@alice:localhost",
         "room_id": room, "origin_server_ts": 1_800_000_000_000u64,
         "content": {"msgtype": "m.text", "body": "second"}},
    ]})
    .to_string();
    assert_eq!(put("t5", Some(&hs_token), &mixed), 200);
    // Synapse retries a transaction: taken again, stored once; the same events in another
    // transaction too.
    assert_eq!(put("t5", Some(&hs_token), &mixed), 200);
    assert_eq!(put("t6", Some(&hs_token), &mixed), 200);
    // A message from someone else in her room is not hers: not taken.
    let intruder = json!({"events": [{
        "type": "m.room.message", "event_id": "$intruder", "sender": "@mallory:localhost",
        "room_id": room, "origin_server_ts": 1_800_000_000_000u64,
        "content": {"msgtype": "m.text", "body": "crossed wires"},
    }]})
    .to_string();
    assert_eq!(put("t7", Some(&hs_token), &intruder), 200);

    // A homeserver that restarted may use a transaction id again for new events (Synapse on
    // sqlite does): they are taken.
    assert_eq!(
        put(
            "t5",
            Some(&hs_token),
            &transaction("$after-restart", "third")
        ),
        200
    );

    assert_eq!(
        texts(&inbound(&node, token, &thread)),
        ["first", "second", "third"]
    );
    assert_eq!(threads(&node, token).len(), 1);
}

#[test]
fn synapse_killed_mid_conversation_loses_nothing_and_doubles_nothing() {
    let (mut shop, node) = Shop::start();
    let token = shop.token.clone();
    let mut alice = Customer::connect(&shop.synapse, "alice");
    alice.open_chat();
    alice.send("m0", "message 0");
    let thread = thread_of(&node, &token, "matrix:@alice:localhost");

    let mut replies = Vec::new();
    for n in 1..=12 {
        alice.command(&json!({"send": format!("m{n}"), "text": format!("message {n}")}));
        if n % 2 == 0 {
            let (status, sent) = node.post(
                &token,
                &format!("/api/v1/threads/{thread}/replies"),
                &json!({"text": format!("reply {}", n / 2)}),
            );
            assert_eq!(status, 200, "{sent}");
            replies.push(format!("reply {}", n / 2));
        }
        if n == 6 {
            shop.synapse.crash_and_restart();
        }
    }
    for n in 0..=12 {
        alice.sent(&format!("m{n}"));
    }
    let mut expected: Vec<String> = (0..=12).map(|n| format!("message {n}")).collect();
    expected.sort();
    // Generous: a homeserver that got a 503 while it restarted retries with its own back-off.
    eventually(
        "every message on the thread",
        Duration::from_secs(180),
        || {
            let mut got = texts(&inbound(&node, &token, &thread));
            got.sort();
            (got == expected).then_some(())
        },
    );
    for reply in &replies {
        alice.wait_for(reply, Duration::from_secs(180), |r| {
            r["body"] == reply.as_str()
        });
    }
    alice.drain(Duration::from_secs(3));
    for reply in &replies {
        let times = alice
            .seen
            .iter()
            .filter(|r| r["body"] == reply.as_str())
            .count();
        assert_eq!(
            times, 1,
            "{reply} reached her {times} times: {:?}",
            alice.seen
        );
    }
    let mut got = texts(&inbound(&node, &token, &thread));
    got.sort();
    assert_eq!(got, expected, "each message once");
}

#[test]
fn a_web_chat_continues_on_matrix_with_its_one_time_code() {
    let (shop, node) = Shop::start();
    let token = &shop.token;
    let mut visitor = Visitor::connect(&node, None);
    visitor.say("w1", "Could we move this to Matrix?");
    let thread = threads(&node, token)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let url = visitor.continue_link("matrix");
    let prefix = format!("https://matrix.to/#/{BOT}?text=");
    assert!(url.starts_with(&prefix), "{url}");
    let text = url[prefix.len()..]
        .replace("%20", " ")
        .replace("%28", "(")
        .replace("%29", ")");

    let mut alice = Customer::connect(&shop.synapse, "alice");
    alice.open_chat();
    alice.send("c1", &text);
    eventually(
        "the web chat's thread goes to Matrix",
        Duration::from_secs(30),
        || {
            (detail(&node, token, &thread)["thread"]["route"]["handle"]
                == "matrix:@alice:localhost")
                .then_some(())
        },
    );
    threadline_tests::assert_continued_on(&node, token, &thread, "matrix:@alice:localhost");
    let (status, sent) = node.post(
        token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Of course, here we are."}),
    );
    assert_eq!(status, 200, "{sent}");
    alice.wait_for("the reply on Matrix", Duration::from_secs(30), |r| {
        r["body"] == "Of course, here we are."
    });
}

#[test]
fn the_matrix_bridge_runs_on_its_own_against_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = threadline_ok(&data, &["init"]);
    let token = field(&out, "token:");
    let (key_file, bridge_token) = threadline_tests::add_bridge(&data, "matrix");
    // The bridge's own file, with its tokens (a standalone bridge has no data folder).
    let synapse_port = free_port();
    let bridge_port = free_port();
    let bridge_config = dir.path().join("matrix.toml");
    std::fs::write(
        &bridge_config,
        format!(
            "[matrix]\nhomeserver = \"http://127.0.0.1:{synapse_port}\"\nserver_name = \"localhost\"\nas_token = \"as-token-0123456789abcdef\"\nhs_token = \"hs-token-0123456789abcdef\"\n"
        ),
    )
    .expect("bridge config");
    let registration = dir.path().join("registration.yaml");
    threadline_ok(
        &data,
        &[
            "bridge",
            "matrix",
            "registration",
            "--config",
            bridge_config.to_str().expect("utf-8 path"),
            "--url",
            &format!("http://127.0.0.1:{bridge_port}"),
            "--out",
            registration.to_str().expect("utf-8 path"),
        ],
    );
    let synapse = Synapse::start(dir.path(), &registration, synapse_port);
    let node = Node::start(&data);
    let _bridge = Node::start_command(
        &data,
        &[
            "bridge",
            "matrix",
            "run",
            "--node",
            &node.base,
            "--token",
            &bridge_token,
            "--key-file",
            key_file.to_str().expect("utf-8 path"),
            "--config",
            bridge_config.to_str().expect("utf-8 path"),
            "--listen",
            &format!("127.0.0.1:{bridge_port}"),
        ],
        "matrix bridge listening on ",
    );
    let mut alice = Customer::connect(&synapse, "alice");
    alice.open_chat();
    alice.send("m1", "Hello from a standalone bridge");
    let thread = thread_of(&node, &token, "matrix:@alice:localhost");
    eventually("her message", Duration::from_secs(30), || {
        (texts(&inbound(&node, &token, &thread)) == ["Hello from a standalone bridge"])
            .then_some(())
    });
    let (status, sent) = node.post(
        &token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Answered through the bridge API."}),
    );
    assert_eq!(status, 200, "{sent}");
    alice.wait_for("the reply", Duration::from_secs(30), |r| {
        r["body"] == "Answered through the bridge API."
    });
}

#[test]
fn the_widget_continues_on_matrix_in_a_real_browser() {
    use crate::browser::{open_chat, write};
    let (shop, node) = Shop::start();
    let visitor = threadline_tests::Browser::start();
    visitor.go(&format!("{}/webchat/demo", node.base));
    open_chat(&visitor);
    write(&visitor, "Can we talk on Matrix?");
    visitor.wait_for(
        "the Matrix button",
        "return document.querySelector('.tl-chat-continue-button[data-channel=matrix]') \
             && !document.querySelector('.tl-chat-continue').hidden ? true : null",
    );
    visitor.click_on(".tl-chat-continue-button[data-channel=matrix]");
    let shown = visitor.wait_for(
        "the link and the message to send",
        "const a = document.querySelector('.tl-chat-continue-link'); \
         const c = document.querySelector('.tl-chat-continue-code'); \
         return a && c ? [a.href, a.textContent, c.textContent] : null",
    );
    let shown: Vec<String> = serde_json::from_value(shown).expect("strings");
    assert!(
        shown[0].starts_with(&format!("https://matrix.to/#/{BOT}")),
        "{shown:?}"
    );
    assert_eq!(shown[1], "Open Matrix to continue");
    assert!(shown[2].starts_with("Continue my chat (code "), "{shown:?}");
    visitor.screenshot(&threadline_tests::screenshot_dir().join("webchat-continue-matrix.png"));

    // The visitor sends that message to the bot from their Matrix app.
    let mut alice = Customer::connect(&shop.synapse, "alice");
    alice.open_chat();
    alice.send("c1", &shown[2]);
    let moved = visitor.wait_for(
        "the moved notice",
        "const m = document.querySelector('.tl-chat-continue-moved'); return m && m.textContent",
    );
    assert!(
        moved
            .as_str()
            .is_some_and(|s| s.contains("continues on Matrix")),
        "{moved}"
    );
    assert_eq!(threads(&node, &shop.token).len(), 1);
}

#[test]
fn a_restarted_node_keeps_the_rooms_and_a_third_person_makes_the_bot_leave() {
    let (shop, node) = Shop::start();
    let token = shop.token.clone();
    let mut alice = Customer::connect(&shop.synapse, "alice");
    let room = alice.open_chat();
    alice.send("m1", "Hello before the restart");
    let thread = thread_of(&node, &token, "matrix:@alice:localhost");

    // The node restarts: it reads the customer's room back from the bot's m.direct, so the
    // reply reaches her in the room she has (a new room would only be an invitation).
    node.stop();
    let node = Node::start_at(&shop.data, &shop.address);
    let (status, sent) = node.post(
        &token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({"text": "Answered after the restart"}),
    );
    assert_eq!(status, 200, "{sent}");
    alice.wait_for("the reply in her room", Duration::from_secs(60), |r| {
        r["body"] == "Answered after the restart"
    });

    // She invites someone else into the room: the bot says why and leaves.
    let mut mallory = Customer::connect(&shop.synapse, "mallory");
    alice.command(&json!({"invite": "@mallory:localhost"}));
    alice.wait_for("invited", Duration::from_secs(30), |r| {
        r["invited"].is_string()
    });
    mallory.command(&json!({"join": room}));
    mallory.wait_for("joined", Duration::from_secs(30), |r| {
        r["joined"].is_string()
    });
    alice.wait_for("the bot's notice", Duration::from_secs(60), |r| {
        r["msgtype"] == "m.notice"
            && r["body"]
                .as_str()
                .is_some_and(|body| body.contains("private to one customer"))
    });
    // What mallory writes there is nobody's conversation.
    mallory.send("x1", "I am not the customer");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        texts(&inbound(&node, &token, &thread)),
        ["Hello before the restart"]
    );
    assert_eq!(threads(&node, &token).len(), 1);
}
