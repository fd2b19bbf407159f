//! The email bridge against a real mail client (swaks, from Debian): mail for the support
//! address lands on the sender's thread; replies thread by their references or reply token,
//! but only ever onto the sender's own thread.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use threadline_tests::{field, threadline_ok, Node};

const SUPPORT: &str = "support@shop.test";

struct Shop {
    _dir: tempfile::TempDir,
    data: PathBuf,
    token: String,
}

impl Shop {
    fn new() -> Shop {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = threadline_ok(&data, &["init"]);
        let config = data.join("config.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        let text = text.replace(
            "# address = \"support@shop.example\"",
            &format!("address = \"{SUPPORT}\""),
        );
        std::fs::write(&config, text).expect("config written");
        Shop {
            token: field(&out, "token:"),
            data,
            _dir: dir,
        }
    }

    fn start(&self) -> (Node, u16) {
        let node = Node::start_command(
            &self.data,
            &[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--p2p-listen",
                "/ip4/127.0.0.1/tcp/0",
                "--smtp-listen",
                "127.0.0.1:0",
            ],
            "threadline listening on ",
        );
        let port = node
            .banner
            .iter()
            .find_map(|line| {
                let rest = line.strip_prefix("email: SMTP listening on ")?;
                rest.split_whitespace()
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .expect("the node says where SMTP listens");
        (node, port)
    }
}

/// Sends a mail with swaks; true if the server took it.
fn swaks(port: u16, from: &str, to: &str, headers: &[&str], body: &str) -> (bool, String) {
    let mut command = Command::new("swaks");
    command
        .args(["-S", "--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--from", from, "--to", to, "--body", body]);
    for header in headers {
        command.args(["--header", header]);
    }
    let output = command
        .output()
        .expect("swaks runs (apt-get install swaks)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn email_threads(node: &Node, token: &str) -> Vec<Value> {
    let (status, list) = node.get(token, "/api/v1/threads?channel=email");
    assert_eq!(status, 200, "{list}");
    list["threads"].as_array().expect("threads").clone()
}

fn texts(node: &Node, token: &str, thread: &str) -> Vec<String> {
    let (status, detail) = node.get(token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(status, 200, "{detail}");
    detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "thread.message.inbound")
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .collect()
}

fn thread_of(node: &Node, token: &str, handle: &str) -> String {
    email_threads(node, token)
        .iter()
        .find(|t| t["route"]["handle"] == handle)
        .and_then(|t| t["id"].as_str())
        .expect("a thread for the handle")
        .to_owned()
}

#[test]
fn mail_lands_on_the_senders_thread_once_and_replies_never_cross_wires() {
    let shop = Shop::new();
    let (node, port) = shop.start();

    let (taken, log) = swaks(
        port,
        "alice@example.test",
        SUPPORT,
        &[
            "Subject: Where is my parcel?",
            "Message-Id: <a1@example.test>",
        ],
        "It never arrived.",
    );
    assert!(taken, "{log}");
    let alice_thread = thread_of(&node, &shop.token, "email:alice@example.test");
    assert_eq!(
        texts(&node, &shop.token, &alice_thread),
        ["It never arrived."]
    );

    // The same mail again (a retrying server): stored once.
    let (taken, log) = swaks(
        port,
        "alice@example.test",
        SUPPORT,
        &[
            "Subject: Where is my parcel?",
            "Message-Id: <a1@example.test>",
        ],
        "It never arrived.",
    );
    assert!(taken, "{log}");
    assert_eq!(texts(&node, &shop.token, &alice_thread).len(), 1);

    // Bob forges a reply onto Alice's thread: her thread's reply token and a reference that
    // names it. It lands on Bob's own thread.
    let alice_id: threadline_protocol::ThreadId = alice_thread.parse().expect("thread id");
    let token = threadline_bridges::email::reply_token(&alice_id);
    let forged_reference = threadline_bridges::email::message_id(
        &alice_id,
        &threadline_protocol::EventId::from_bytes([7; 32]),
        "shop.test",
    );
    let (taken, log) = swaks(
        port,
        "bob@example.test",
        &format!("support+{token}@shop.test"),
        &[
            "Subject: Re: Where is my parcel?",
            &format!("In-Reply-To: {forged_reference}"),
        ],
        "Send it to me instead.",
    );
    assert!(taken, "{log}");
    assert_eq!(
        texts(&node, &shop.token, &alice_thread),
        ["It never arrived."]
    );
    let bob_thread = thread_of(&node, &shop.token, "email:bob@example.test");
    assert_ne!(bob_thread, alice_thread);
    assert_eq!(
        texts(&node, &shop.token, &bob_thread),
        ["Send it to me instead."]
    );

    // Alice's real reply, by her reply token, lands on her thread.
    let (taken, log) = swaks(
        port,
        "alice@example.test",
        &format!("support+{token}@shop.test"),
        &["Subject: Re: Where is my parcel?"],
        "Any news?",
    );
    assert!(taken, "{log}");
    assert_eq!(
        texts(&node, &shop.token, &alice_thread),
        ["It never arrived.", "Any news?"]
    );

    // Mail for anyone else here is refused at RCPT, and nothing is stored.
    let (taken, log) = swaks(port, "carol@example.test", "sales@shop.test", &[], "Hi");
    assert!(!taken, "{log}");
    assert!(log.contains("550 5.1.1"), "{log}");
    assert_eq!(email_threads(&node, &shop.token).len(), 2);
}
