//! The email bridge against a real mail client (swaks, from Debian): mail for the support
//! address lands on the sender's thread; replies thread by their references or reply token,
//! but only ever onto the sender's own thread.

use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::Duration;

use serde_json::{json, Value};
use threadline_tests::{eventually, field, threadline_ok, Node, Visitor};

const SUPPORT: &str = "support@shop.test";

struct Shop {
    _dir: tempfile::TempDir,
    data: PathBuf,
    token: String,
}

impl Shop {
    fn new() -> Shop {
        Shop::with_relay(None)
    }

    /// A shop whose replies go out through the SMTP relay on `relay_port`.
    fn with_relay(relay_port: Option<u16>) -> Shop {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = threadline_ok(&data, &["init"]);
        let config = data.join("config.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        let mut text = text.replace(
            "# address = \"support@shop.example\"",
            &format!("address = \"{SUPPORT}\""),
        );
        if let Some(port) = relay_port {
            text = text.replace(
                "# relay = \"smtp://127.0.0.1:587?tls=required\"",
                &format!("relay = \"smtp://127.0.0.1:{port}\"\nname = \"Shop\""),
            );
        }
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

/// Another node of a shop's org, joined with an invite, running.
struct SecondNode {
    _dir: tempfile::TempDir,
    data: PathBuf,
    token: String,
    node: Node,
}

impl Shop {
    /// Joins a second node to the org of the running `node` and starts it.
    fn join_second_node(&self, node: &Node) -> SecondNode {
        let address = node.p2p_address(&self.token);
        let invite = threadline_ok(&self.data, &["org", "invite", "--address", &address]);
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("second");
        let joined = threadline_ok(&data, &["init", "--join", invite.trim()]);
        SecondNode {
            token: field(&joined, "token:"),
            node: Node::start(&data),
            data,
            _dir: dir,
        }
    }
}

/// Sends a mail with swaks; true if the server took it.
fn swaks(port: u16, from: &str, to: &str, headers: &[&str], body: &str) -> (bool, String) {
    let mut command = Command::new("swaks");
    command
        .args(["-S", "--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--from", from, "--to", to, "--body", body]);
    for header in headers {
        // swaks's --header replaces the first line with that name, even in the body (a MIME
        // part's Content-Type); swaks adds no Content-Type of its own, so add that one.
        let flag = if header.starts_with("Content-Type:") {
            "--add-header"
        } else {
            "--header"
        };
        command.args([flag, header]);
    }
    let output = command
        .output()
        .expect("swaks runs (scripts/test installs it)");
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
            "Date: Mon, 30 Nov 2026 10:00:00 +0000",
        ],
        "It never arrived.",
    );
    assert!(taken, "{log}");
    let alice_thread = thread_of(&node, &shop.token, "email:alice@example.test");
    assert_eq!(
        texts(&node, &shop.token, &alice_thread),
        ["It never arrived."]
    );

    // The same mail again, byte for byte (a retrying server): stored once.
    let (taken, log) = swaks(
        port,
        "alice@example.test",
        SUPPORT,
        &[
            "Subject: Where is my parcel?",
            "Message-Id: <a1@example.test>",
            "Date: Mon, 30 Nov 2026 10:00:00 +0000",
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

    // Another mail that reuses her first Message-ID (clients do): it is not a duplicate.
    let (taken, log) = swaks(
        port,
        "alice@example.test",
        SUPPORT,
        &[
            "Subject: Where is my parcel?",
            "Message-Id: <a1@example.test>",
            "Date: Mon, 30 Nov 2026 11:00:00 +0000",
        ],
        "It is order 1077.",
    );
    assert!(taken, "{log}");
    assert_eq!(
        texts(&node, &shop.token, &alice_thread),
        ["It never arrived.", "Any news?", "It is order 1077."]
    );
    // The log says a Message-ID came again with other content.
    eventually(
        "the log line on the reused Message-ID",
        Duration::from_secs(10),
        || {
            (node
                .logged(&["reuses a Message-ID with other content", "a1@example.test"])
                .len()
                == 1)
                .then_some(())
        },
    );

    // Mail for anyone else here is refused at RCPT, and nothing is stored.
    let (taken, log) = swaks(port, "carol@example.test", "sales@shop.test", &[], "Hi");
    assert!(!taken, "{log}");
    assert!(log.contains("550 5.1.1"), "{log}");
    assert_eq!(email_threads(&node, &shop.token).len(), 2);
}

/// aiosmtpd (from PyPI, in `target/venv`; `scripts/test` installs it) capturing mail into a Maildir:
/// the shop's outbound relay in these tests.
struct Relay {
    child: std::process::Child,
    port: u16,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn start() -> Relay {
        Relay::start_on(threadline_tests::free_port())
    }

    fn start_on(port: u16) -> Relay {
        let binary = std::env::var_os("THREADLINE_AIOSMTPD")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/aiosmtpd")
            });
        assert!(
            binary.exists(),
            "{} is missing: run the tests with scripts/test, which installs aiosmtpd there",
            binary.display()
        );
        Relay::spawn(port, |maildir| {
            let mut command = Command::new(&binary);
            command
                .args(["-n", "-u", "-l", &format!("127.0.0.1:{port}")])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(maildir);
            command
        })
    }

    /// A relay that requires STARTTLS (with the self-signed certificate in
    /// `tests/fixtures/relay-tls`) and AUTH as `user`/`password`.
    fn start_with_auth(user: &str, password: &str) -> Relay {
        let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing (scripts/test makes it)",
            python.display()
        );
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let port = threadline_tests::free_port();
        Relay::spawn(port, |maildir| {
            let mut command = Command::new(&python);
            command
                .arg(fixtures.join("relay_auth.py"))
                .arg(port.to_string())
                .arg(fixtures.join("relay-tls/cert.pem"))
                .arg(fixtures.join("relay-tls/key.pem"))
                .arg(maildir)
                .args([user, password]);
            command
        })
    }

    /// Runs the relay `command` makes for a Maildir, and waits until it listens on `port`.
    fn spawn(port: u16, command: impl FnOnce(&std::path::Path) -> Command) -> Relay {
        let dir = tempfile::tempdir().expect("tempdir");
        let maildir = dir.path().join("mail");
        let child = command(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the relay starts");
        eventually("the relay listens", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Relay {
            child,
            port,
            maildir,
            _dir: dir,
        }
    }

    /// The mails captured so far, oldest first.
    fn mails(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| std::fs::read_to_string(path).ok())
            .collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A header's value in a captured mail (unfolded).
fn header(mail: &str, name: &str) -> Option<String> {
    let head = mail.split("\n\n").next()?;
    let unfolded = head
        .replace("\r\n", "\n")
        .replace("\n ", " ")
        .replace("\n\t", " ");
    unfolded.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

#[test]
fn a_web_chat_is_handed_off_to_email_and_the_customer_answers_by_mail() {
    let relay = Relay::start();
    let shop = Shop::with_relay(Some(relay.port));
    let (node, port) = shop.start();
    // A second node of the same org (the federation issue), joined before the conversation.
    let SecondNode {
        token: second_token,
        node: second_node,
        _dir: _second,
        ..
    } = shop.join_second_node(&node);

    // 1. A visitor writes in the web chat.
    let mut visitor = Visitor::connect(&node, None);
    visitor.say("w1", "Hi, my order 123 is late");
    let (_, list) = node.get(&shop.token, "/api/v1/threads?channel=webchat");
    let thread = list["threads"][0]["id"]
        .as_str()
        .expect("thread")
        .to_owned();
    let contact = list["threads"][0]["contact"]
        .as_str()
        .expect("contact")
        .to_owned();

    // 2. The agent links the address the visitor gave and hands the thread off to email; the
    //    reply goes out by mail, with the chat quoted.
    let (status, answer) = node.post(
        &shop.token,
        &format!("/api/v1/contacts/{contact}/handles"),
        &json!({ "handle": "email:alice@example.test" }),
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/handoff"),
        &json!({ "handle": "email:alice@example.test" }),
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({ "text": "We are on it, Alice. More by mail." }),
    );
    assert_eq!(status, 200, "{answer}");
    let first = eventually(
        "the reply reaches the relay",
        Duration::from_secs(30),
        || relay.mails().into_iter().next(),
    );
    assert!(
        header(&first, "To").is_some_and(|to| to.contains("alice@example.test")),
        "{first}"
    );
    assert!(
        header(&first, "From").is_some_and(|f| f.contains(SUPPORT)),
        "{first}"
    );
    let thread_id: threadline_protocol::ThreadId = thread.parse().expect("thread id");
    let token = threadline_bridges::email::reply_token(&thread_id);
    assert!(
        header(&first, "Reply-To")
            .is_some_and(|r| r.contains(&format!("support+{token}@shop.test"))),
        "{first}"
    );
    let message_id = header(&first, "Message-ID").expect("a Message-ID");
    assert!(
        message_id.starts_with(&format!("<{thread}.")),
        "{message_id}"
    );
    assert!(
        first.contains("We are on it, Alice. More by mail."),
        "{first}"
    );
    assert!(
        first.contains("> Hi, my order 123 is late"),
        "the chat is quoted: {first}"
    );

    // 3. The customer answers from their mail client: same thread, same contact, in order.
    let (taken, log) = swaks(
        port,
        "alice@example.test",
        &format!("support+{token}@shop.test"),
        &[
            "Subject: Re: Your conversation with Shop",
            &format!("In-Reply-To: {message_id}"),
            "Message-Id: <a2@example.test>",
        ],
        "Thanks! Still waiting though.\n\nOn Sat, 28 Nov 2026, Shop wrote:\n> We are on it, Alice. More by mail.",
    );
    assert!(taken, "{log}");
    let (_, detail) = node.get(&shop.token, &format!("/api/v1/threads/{thread}"));
    let inbound: Vec<&Value> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "thread.message.inbound")
        .collect();
    assert_eq!(inbound.len(), 2, "{detail}");
    assert_eq!(inbound[0]["text"], "Hi, my order 123 is late");
    // The mail is kept whole; the quoted history is trimmed for display only.
    let mail_text = inbound[1]["text"].as_str().expect("text");
    assert!(
        mail_text.starts_with("Thanks! Still waiting though.")
            && mail_text.contains("> We are on it, Alice. More by mail."),
        "{mail_text}"
    );
    assert_eq!(inbound[1]["display_text"], "Thanks! Still waiting though.");

    // 4. The agent's next reply goes out by mail, threaded under the customer's.
    let (status, _) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({ "text": "It ships today." }),
    );
    assert_eq!(status, 200);
    let second = eventually(
        "the second reply reaches the relay",
        Duration::from_secs(30),
        || relay.mails().into_iter().nth(1),
    );
    assert_eq!(
        header(&second, "In-Reply-To").as_deref(),
        Some("<a2@example.test>")
    );
    assert!(second.contains("It ships today."), "{second}");
    assert!(
        second.contains("> Thanks! Still waiting though.") && !second.contains("> > We are on it"),
        "the customer's mail is quoted without its own quoted history: {second}"
    );
    assert_eq!(relay.mails().len(), 2, "each reply is sent once");

    // 5. The contact record has both handles and the whole timeline.
    let (_, record) = node.get(&shop.token, &format!("/api/v1/contacts/{contact}"));
    let handles = record["handles"].to_string();
    assert!(handles.contains("email:alice@example.test"), "{record}");
    assert!(handles.contains("webchat:"), "{record}");
    let timeline = record["timeline"].to_string();
    for text in [
        "Hi, my order 123 is late",
        "We are on it, Alice. More by mail.",
        "Thanks! Still waiting though.",
        "It ships today.",
    ] {
        assert!(
            timeline.contains(text),
            "{text} is on the timeline: {record}"
        );
    }

    // On the second node of the org: the same thread and the same record.
    // (Both read at the same moment: the last reply's receipt may still be arriving.)
    eventually(
        "the second node has it all",
        Duration::from_secs(30),
        || {
            let (_, here) = node.get(&shop.token, &format!("/api/v1/threads/{thread}"));
            let (status, there) =
                second_node.get(&second_token, &format!("/api/v1/threads/{thread}"));
            (status == 200
                && there["state_hash"] == here["state_hash"]
                && there["events"] == here["events"])
                .then_some(())
        },
    );
    // The same record there too (the last reply's receipt may still be on its way: compare
    // the two nodes' records as they are at the same moment, until they agree).
    let (second_record, record) = eventually(
        "the second node has the same contact record",
        Duration::from_secs(30),
        || {
            let (_, here) = node.get(&shop.token, &format!("/api/v1/contacts/{contact}"));
            let (status, there) =
                second_node.get(&second_token, &format!("/api/v1/contacts/{contact}"));
            (status == 200 && there["timeline"] == here["timeline"]).then_some((there, here))
        },
    );
    assert_eq!(second_record["handles"], record["handles"]);
    // The second node sent nothing: the first set the route and delivered, once each.
    assert_eq!(relay.mails().len(), 2);
}

fn detail_len(node: &Node, token: &str, thread: &str) -> Option<usize> {
    let (_, detail) = node.get(token, &format!("/api/v1/threads/{thread}"));
    detail["events"].as_array().map(Vec::len)
}

#[test]
fn two_customers_with_swapped_forged_or_stripped_replies_never_cross() {
    let relay = Relay::start();
    let shop = Shop::with_relay(Some(relay.port));
    let (node, port) = shop.start();
    for (who, id) in [("alice", "a1"), ("bob", "b1")] {
        let (taken, log) = swaks(
            port,
            &format!("{who}@example.test"),
            SUPPORT,
            &[&format!("Message-Id: <{id}@example.test>")],
            &format!("{who} asks a question"),
        );
        assert!(taken, "{log}");
    }
    let alice = thread_of(&node, &shop.token, "email:alice@example.test");
    let bob = thread_of(&node, &shop.token, "email:bob@example.test");
    for (thread, text) in [(&alice, "Answer for Alice"), (&bob, "Answer for Bob")] {
        let (status, _) = node.post(
            &shop.token,
            &format!("/api/v1/threads/{thread}/replies"),
            &json!({ "text": text }),
        );
        assert_eq!(status, 200);
    }
    let mails = eventually("both answers are sent", Duration::from_secs(30), || {
        let mails = relay.mails();
        (mails.len() == 2).then_some(mails)
    });
    for mail in &mails {
        let to = header(mail, "To").expect("To");
        if mail.contains("Answer for Alice") {
            assert!(
                to.contains("alice@example.test") && !to.contains("bob"),
                "{mail}"
            );
        } else {
            assert!(
                to.contains("bob@example.test") && !to.contains("alice"),
                "{mail}"
            );
        }
    }
    let token_of =
        |thread: &str| threadline_bridges::email::reply_token(&thread.parse().expect("thread id"));
    let id_of = |text: &str| {
        mails
            .iter()
            .find(|m| m.contains(text))
            .and_then(|m| header(m, "Message-ID"))
            .expect("a Message-ID")
    };
    // Alice answers with Bob's token and Bob's Message-ID (swapped); Bob answers with every
    // header stripped; a stranger forges Alice's token and reference.
    let (taken, log) = swaks(
        port,
        "alice@example.test",
        &format!("support+{}@shop.test", token_of(&bob)),
        &[&format!("In-Reply-To: {}", id_of("Answer for Bob"))],
        "alice, swapped",
    );
    assert!(taken, "{log}");
    let (taken, log) = swaks(port, "bob@example.test", SUPPORT, &[], "bob, stripped");
    assert!(taken, "{log}");
    let (taken, log) = swaks(
        port,
        "mallory@example.test",
        &format!("support+{}@shop.test", token_of(&alice)),
        &[&format!("In-Reply-To: {}", id_of("Answer for Alice"))],
        "mallory, forged",
    );
    assert!(taken, "{log}");
    assert_eq!(
        texts(&node, &shop.token, &alice),
        ["alice asks a question", "alice, swapped"]
    );
    assert_eq!(
        texts(&node, &shop.token, &bob),
        ["bob asks a question", "bob, stripped"]
    );
    let mallory = thread_of(&node, &shop.token, "email:mallory@example.test");
    assert_eq!(texts(&node, &shop.token, &mallory), ["mallory, forged"]);

    // Bob's mailbox bounces the answer: a delivery report marks that reply failed, on Bob's
    // thread, and is no customer's message.
    let bounced = id_of("Answer for Bob");
    let report = format!(
        "This is a delivery status report.\r\n--x\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\nStatus: 5.1.1\r\n--x\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {bounced}\r\nTo: bob@example.test\r\n--x--\r\n"
    );
    // A forged report (a real sender, not the null one of a bounce) changes nothing.
    let (taken, log) = swaks(
        port,
        "mallory@example.test",
        SUPPORT,
        &[
            "Subject: Undelivered Mail Returned to Sender",
            "Content-Type: multipart/report; report-type=delivery-status; boundary=x",
        ],
        &report,
    );
    assert!(taken, "{log}");
    let failed_receipts = |thread: &str| -> usize {
        let (_, detail) = node.get(&shop.token, &format!("/api/v1/threads/{thread}"));
        detail["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "thread.receipt" && e["detail"]["receipt"] == "failed")
            .count()
    };
    assert_eq!(failed_receipts(&bob), 0);
    let (taken, log) = swaks(
        port,
        "<>",
        SUPPORT,
        &[
            "From: Mail Delivery System <mailer-daemon@example.test>",
            "Subject: Undelivered Mail Returned to Sender",
            "Content-Type: multipart/report; report-type=delivery-status; boundary=x",
        ],
        &report,
    );
    assert!(taken, "{log}");
    let (_, detail) = node.get(&shop.token, &format!("/api/v1/threads/{bob}"));
    let failed: Vec<&Value> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "thread.receipt" && e["detail"]["receipt"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{detail}");
    assert!(email_threads(&node, &shop.token)
        .iter()
        .all(|t| t["route"]["handle"] != "email:mailer-daemon@example.test"));
}

#[test]
fn a_relay_that_is_down_gives_a_failed_receipt_then_the_reply_goes_out_once_it_is_back() {
    let port = threadline_tests::free_port();
    let shop = Shop::with_relay(Some(port));
    let (node, smtp) = shop.start();
    let (taken, log) = swaks(smtp, "alice@example.test", SUPPORT, &[], "Hello?");
    assert!(taken, "{log}");
    let thread = thread_of(&node, &shop.token, "email:alice@example.test");
    let (status, _) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({ "text": "Sorry for the wait" }),
    );
    assert_eq!(status, 200);
    let receipts = |kind: &str| -> usize {
        let (_, detail) = node.get(&shop.token, &format!("/api/v1/threads/{thread}"));
        detail["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "thread.receipt" && e["detail"]["receipt"] == kind)
            .count()
    };
    // The relay is down: the agent sees a failed receipt, once, and the reply stays queued.
    eventually("a failed receipt", Duration::from_secs(30), || {
        (receipts("failed") == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        receipts("failed"),
        1,
        "one failed receipt, however many retries"
    );
    // The relay comes back: the reply goes out, once, and is marked delivered.
    let relay = Relay::start_on(port);
    let mail = eventually("the reply goes out", Duration::from_secs(60), || {
        relay.mails().into_iter().next()
    });
    assert!(mail.contains("Sorry for the wait"), "{mail}");
    eventually("a delivered receipt", Duration::from_secs(30), || {
        (receipts("delivered") == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(relay.mails().len(), 1, "sent once");
}

/// `GET` of raw bytes with a bearer token: the status and the body.
fn get_bytes(node: &Node, token: &str, path: &str) -> (u16, Vec<u8>) {
    let result = node
        .http()
        .get(&format!("{}{path}", node.base))
        .set("Authorization", &format!("Bearer {token}"))
        .call();
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("GET {path}: {err}"),
    };
    let status = response.status();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).expect("body");
    (status, bytes)
}

/// Some bytes that compress badly, as a photo's would.
fn photo_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Where a node keeps an attachment's bytes.
fn blob_file(data: &std::path::Path, blob: &str) -> PathBuf {
    data.join("store/attachments").join(&blob[..2]).join(blob)
}

#[test]
fn attachments_are_kept_as_blobs_replicated_sent_by_mail_and_erased_everywhere() {
    let relay = Relay::start();
    let shop = Shop::with_relay(Some(relay.port));
    let (node, port) = shop.start();
    let SecondNode {
        data: second_data,
        token: second_token,
        node: second_node,
        _dir: _second,
    } = shop.join_second_node(&node);
    // The office dials the laptop too, so they meet again after the office restarts.
    threadline_ok(
        &shop.data,
        &["peer", "add", &second_node.p2p_address(&second_token)],
    );

    // A customer mails two files: a photo bigger than one sync chunk (1 MiB), and a note.
    let files = tempfile::tempdir().expect("tempdir");
    let photo = photo_bytes(1_500_000);
    let photo_path = files.path().join("broken-vase.jpg");
    std::fs::write(&photo_path, &photo).expect("write");
    let note = "Order 123, delivered broken.\n".as_bytes().to_vec();
    let note_path = files.path().join("order.txt");
    std::fs::write(&note_path, &note).expect("write");
    let output = Command::new("swaks")
        .args(["-S", "--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--from", "alice@example.test", "--to", SUPPORT])
        .args(["--header", "Subject: Broken vase"])
        .args(["--body", "Photos attached."])
        .args(["--attach-type", "image/jpeg", "--attach"])
        .arg(&photo_path)
        .args(["--attach-type", "text/plain", "--attach"])
        .arg(&note_path)
        .output()
        .expect("swaks runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    // On the node that took the mail: one message with both files, by hash, size and name.
    let thread = thread_of(&node, &shop.token, "email:alice@example.test");
    let (_, detail) = node.get(&shop.token, &format!("/api/v1/threads/{thread}"));
    let message = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "thread.message.inbound")
        .expect("the mail")
        .clone();
    assert_eq!(message["text"], "Photos attached.");
    let event = message["id"].as_str().expect("id").to_owned();
    let attachments = message["attachments"].as_array().expect("attachments");
    assert_eq!(attachments.len(), 2, "{message}");
    let photo_hash = threadline_protocol::id::BlobHash::of(&photo).to_string();
    assert_eq!(attachments[0]["name"], "broken-vase.jpg");
    assert_eq!(attachments[0]["media_type"], "image/jpeg");
    assert_eq!(attachments[0]["size"], photo.len());
    assert_eq!(attachments[0]["blob"], photo_hash.as_str());
    assert_eq!(attachments[1]["name"], "order.txt");
    let download = format!("/api/v1/threads/{thread}/events/{event}/attachments");
    assert_eq!(
        get_bytes(&node, &shop.token, &format!("{download}/0")),
        (200, photo.clone())
    );
    assert_eq!(
        get_bytes(&node, &shop.token, &format!("{download}/1")),
        (200, note.clone())
    );
    assert_eq!(
        get_bytes(&node, &shop.token, &format!("{download}/2")).0,
        404
    );

    // The other node of the org fetches the bytes too, whole and checked.
    let fetched = eventually("the laptop has the photo", Duration::from_secs(30), || {
        let (status, bytes) = get_bytes(&second_node, &second_token, &format!("{download}/0"));
        (status == 200).then_some(bytes)
    });
    assert_eq!(fetched, photo);
    // And the mail as it came, which holds the files too.
    let original_hash = message["original"]["blob"]
        .as_str()
        .expect("the original is kept")
        .to_owned();
    let original = eventually(
        "the laptop has the original",
        Duration::from_secs(30),
        || {
            let (status, bytes) = get_bytes(
                &second_node,
                &second_token,
                &format!("/api/v1/threads/{thread}/events/{event}/original"),
            );
            (status == 200).then_some(bytes)
        },
    );
    assert_eq!(
        threadline_protocol::id::BlobHash::of(&original).to_string(),
        original_hash
    );

    // A reply naming a file nobody uploaded is refused and changes nothing.
    let before = detail_len(&node, &shop.token, &thread);
    let (status, answer) = second_node.post(
        &second_token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({ "text": "See the label", "attachments": [
            { "blob": "ab".repeat(32), "name": "label.pdf" }
        ]}),
    );
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "missing_attachment");
    assert_eq!(detail_len(&second_node, &second_token, &thread), before);

    // An agent on the laptop uploads a label and replies with it; the office, where the
    // customer's mail came in, sends the reply with the file (fetched from the laptop).
    let label = photo_bytes(40_000);
    let uploaded: Value = second_node
        .http()
        .post(&format!("{}/api/v1/attachments", second_node.base))
        .set("Authorization", &format!("Bearer {second_token}"))
        .send_bytes(&label)
        .expect("upload")
        .into_json()
        .expect("json");
    assert_eq!(uploaded["size"], label.len());
    // Over the limit: a clear 413, nothing stored.
    let too_big = vec![7u8; 32 * 1024 * 1024 + 1];
    let refused = second_node
        .http()
        .post(&format!("{}/api/v1/attachments", second_node.base))
        .set("Authorization", &format!("Bearer {second_token}"))
        .send_bytes(&too_big);
    match refused {
        Err(ureq::Error::Status(413, response)) => {
            let body: Value = response.into_json().expect("a JSON error");
            assert_eq!(body["error"]["code"], "too_large", "{body}");
        }
        other => panic!("an upload over 32 MiB must be refused with 413: {other:?}"),
    }
    let big_hash = threadline_protocol::id::BlobHash::of(&too_big).to_string();
    assert!(!blob_file(&second_data, &big_hash).exists());
    let (status, answer) = second_node.post(
        &second_token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({ "text": "Here is a return label.", "attachments": [
            { "blob": uploaded["blob"], "name": "return-label.pdf", "media_type": "application/pdf" }
        ]}),
    );
    assert_eq!(status, 200, "{answer}");
    let mail = eventually(
        "the reply reaches the relay",
        Duration::from_secs(60),
        || relay.mails().into_iter().next(),
    );
    let sent = threadline_bridges::email::InboundMail::parse(mail.as_bytes()).expect("a mail");
    assert!(sent.text.contains("Here is a return label."), "{mail}");
    assert!(
        sent.text.contains("[attachment: broken-vase.jpg, 1.5 MB]"),
        "earlier files are named in the quote: {}",
        sent.text
    );
    assert_eq!(
        sent.attachments.len(),
        1,
        "only the reply's own file is sent"
    );
    assert_eq!(sent.attachments[0].name, "return-label.pdf");
    assert_eq!(sent.attachments[0].media_type, "application/pdf");
    assert_eq!(sent.attachments[0].bytes, label);
    let label_hash = uploaded["blob"].as_str().expect("blob").to_owned();
    assert!(blob_file(&shop.data, &label_hash).exists());

    // The customer's export (right of access) has their files too.
    node.stop();
    let export = tempfile::tempdir().expect("tempdir");
    let archive = export.path().join("alice");
    threadline_ok(
        &shop.data,
        &[
            "contact",
            "export",
            "email:alice@example.test",
            "--to",
            archive.to_str().expect("utf-8"),
        ],
    );
    threadline_ok(
        &shop.data,
        &["verify-export", archive.to_str().expect("utf-8")],
    );
    let files_dir = archive.join("files");
    let exported = |hash: &str, name: &str| {
        std::fs::read(files_dir.join(format!("{}-{name}", &hash[..12]))).expect("exported file")
    };
    assert_eq!(exported(&photo_hash, "broken-vase.jpg"), photo);
    assert_eq!(exported(&label_hash, "return-label.pdf"), label);

    // Erasing the customer erases their files, on every node.
    let out = threadline_ok(
        &shop.data,
        &["erase", "contact", "email:alice@example.test"],
    );
    assert!(out.contains("erased contact"), "{out}");
    for blob in [&photo_hash, &label_hash, &original_hash] {
        assert!(!blob_file(&shop.data, blob).exists(), "{blob} is gone here");
    }
    let (node, _) = shop.start();
    eventually(
        "the laptop erases the files too",
        Duration::from_secs(30),
        || {
            [&photo_hash, &label_hash, &original_hash]
                .iter()
                .all(|blob| !blob_file(&second_data, blob).exists())
                .then_some(())
        },
    );
    for (node, token) in [(&node, &shop.token), (&second_node, &second_token)] {
        assert_eq!(get_bytes(node, token, &format!("{download}/0")).0, 404);
        let (_, detail) = node.get(token, &format!("/api/v1/threads/{thread}"));
        let message = detail["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["id"] == event.as_str())
            .expect("the header stays")
            .clone();
        assert_eq!(message["erased"], true);
        assert_eq!(message["attachments"], json!([]));
        assert_eq!(message["subject"], Value::Null);
        assert_eq!(message["original"], Value::Null);
        assert_eq!(
            get_bytes(
                node,
                token,
                &format!("/api/v1/threads/{thread}/events/{event}/original")
            )
            .0,
            404
        );
    }
    // Nothing of the customer is left in either data folder, in any file: not their address,
    // their words or their files' bytes (sealed all along, and the keys are gone).
    node.stop();
    second_node.stop();
    for data in [&shop.data, &second_data] {
        for secret in [
            &b"alice@example.test"[..],
            b"Photos attached.",
            b"Broken vase",
            b"Order 123, delivered broken.",
            &photo[700_000..700_032],
        ] {
            assert_eq!(
                threadline_tests::holding(data, secret),
                Vec::<PathBuf>::new(),
                "{} in {}",
                String::from_utf8_lossy(secret),
                data.display()
            );
        }
    }
}

#[test]
fn with_an_authserv_id_only_mail_that_passed_dmarc_at_the_mx_is_taken() {
    let shop = Shop::new();
    let config = shop.data.join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "# authserv_id = \"mx.shop.example\"",
        "authserv_id = \"mx.shop.test\"",
    );
    std::fs::write(&config, text).expect("config written");
    let (node, port) = shop.start();

    // No verdict, a failed one, or a "pass" from a server that is not the MX: refused.
    for (headers, found) in [
        (vec![], "dmarc=nothing"),
        (
            vec!["Authentication-Results: mx.shop.test; dmarc=fail header.from=example.test"],
            "dmarc=fail",
        ),
        (
            vec!["Authentication-Results: mail.example.test; dmarc=pass"],
            "dmarc=nothing",
        ),
    ] {
        let (taken, log) = swaks(port, "alice@example.test", SUPPORT, &headers, "Forged?");
        assert!(!taken, "{log}");
        assert!(
            log.contains("550 5.7.1 the sender is not authenticated"),
            "{log}"
        );
        assert!(log.contains(found), "{log}");
    }
    assert!(
        email_threads(&node, &shop.token).is_empty(),
        "nothing stored"
    );

    let (taken, log) = swaks(
        port,
        "alice@example.test",
        SUPPORT,
        &["Authentication-Results: mx.shop.test;\n\tspf=pass smtp.mailfrom=example.test;\n\tdmarc=pass (p=reject) header.from=example.test"],
        "Hello, really me",
    );
    assert!(taken, "{log}");
    let thread = thread_of(&node, &shop.token, "email:alice@example.test");
    assert_eq!(texts(&node, &shop.token, &thread), ["Hello, really me"]);
}

/// The inbox in a real browser: a mail shows its subject and its new text with its quoted
/// history one click away, its file and its original source download whole, and an agent
/// attaches a file to a reply.
#[test]
fn the_inbox_shows_a_mails_files_and_quoted_text_and_attaches_files_to_replies() {
    let shop = Shop::new();
    let (node, port) = shop.start();
    let files = tempfile::tempdir().expect("tempdir");
    let receipt = photo_bytes(30_000);
    let receipt_path = files.path().join("receipt.png");
    std::fs::write(&receipt_path, &receipt).expect("write");
    let output = Command::new("swaks")
        .args(["-S", "--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--from", "alice@example.test", "--to", SUPPORT])
        .args(["--header", "Subject: Refund"])
        .args([
            "--body",
            "Where is my refund?\n\nOn Fri, 27 Nov 2026, Shop wrote:\n> Your refund is on its way.",
        ])
        .args(["--attach-type", "image/png", "--attach"])
        .arg(&receipt_path)
        .output()
        .expect("swaks runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let thread = thread_of(&node, &shop.token, "email:alice@example.test");

    let agent = crate::browser::open_first_conversation(&node.base, &shop.token);
    let shown = agent.wait_for(
        "the mail",
        "const e = document.querySelector('#events .event.inbound'); return e && e.querySelector('.text').textContent",
    );
    assert_eq!(
        shown,
        json!("Where is my refund?"),
        "the quoted history is folded"
    );
    agent.click_on("#events .event.inbound .quoted");
    let whole = agent.wait_for(
        "the quoted history",
        "const t = document.querySelector('#events .event.inbound .text').textContent; return t.includes('> Your refund is on its way.') && t",
    );
    assert!(whole
        .as_str()
        .is_some_and(|t| t.starts_with("Where is my refund?")));

    // The file's button downloads its bytes, whole, with the agent's token.
    let label = agent.wait_for(
        "the attachment",
        "const b = document.querySelector('#events .event.inbound .attachment'); return b && b.textContent",
    );
    assert_eq!(label, json!("receipt.png (30 KB)"));
    agent.run(
        "window.__saved = []; const make = URL.createObjectURL; URL.createObjectURL = b => { window.__saved.push(b.size); return make(b); };",
        json!([]),
    );
    agent.click_on("#events .event.inbound .attachment");
    let saved = agent.wait_for("the download", "return window.__saved[0]");
    assert_eq!(saved, json!(receipt.len()));

    // The mail's subject heads it, and its source, exactly as it came, is one click away.
    let subject = agent.run(
        "return document.querySelector('#events .event.inbound .subject').textContent",
        json!([]),
    );
    assert_eq!(subject, json!("Refund"));
    let (_, detail) = node.get(&shop.token, &format!("/api/v1/threads/{thread}"));
    let mail = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "thread.message.inbound")
        .expect("the mail")
        .clone();
    let source = get_bytes(
        &node,
        &shop.token,
        &format!(
            "/api/v1/threads/{thread}/events/{}/original",
            mail["id"].as_str().expect("id")
        ),
    );
    assert_eq!(source.0, 200);
    let source = String::from_utf8_lossy(&source.1).into_owned();
    assert!(
        source.contains("Subject: Refund") && source.contains("Content-Type: image/png"),
        "the original is the mail's source: {source}"
    );
    assert_eq!(mail["original"]["size"], json!(source.len()));
    agent.click_on("#events .event.inbound .original");
    let saved = agent.wait_for("the original's download", "return window.__saved[1]");
    assert_eq!(saved, json!(source.len()));

    // The agent attaches a file to a reply.
    let label_bytes = photo_bytes(5_000);
    let label_path = files.path().join("return-label.pdf");
    std::fs::write(&label_path, &label_bytes).expect("write");
    let picker = agent.find("#attach");
    agent.type_into(&picker, label_path.to_str().expect("utf-8 path"));
    let compose = agent.find("#compose");
    agent.type_into(&compose, "Here is your return label.");
    agent.click_on("#send");
    agent.wait_for(
        "the reply with its file",
        "return [...document.querySelectorAll('#events .event.outbound .attachment')].some(b => b.textContent.includes('return-label.pdf'))",
    );
    // The thread was drawn again with the reply; the history the agent unfolded stays open.
    let mail = agent.run(
        "return document.querySelector('#events .event.inbound .text').textContent",
        json!([]),
    );
    assert!(
        mail.as_str()
            .is_some_and(|t| t.contains("> Your refund is on its way.")),
        "{mail}"
    );
    let (_, detail) = node.get(&shop.token, &format!("/api/v1/threads/{thread}"));
    let reply = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "thread.message.outbound")
        .expect("the reply")
        .clone();
    assert_eq!(reply["text"], "Here is your return label.");
    assert_eq!(reply["attachments"][0]["name"], "return-label.pdf");
    let id = reply["id"].as_str().expect("id");
    assert_eq!(
        get_bytes(
            &node,
            &shop.token,
            &format!("/api/v1/threads/{thread}/events/{id}/attachments/0")
        ),
        (200, label_bytes)
    );
    agent.screenshot(&threadline_tests::screenshot_dir().join("inbox-attachments.png"));
}

/// Dovecot (Debian's `dovecot-imapd`; `scripts/test` installs it) serving one mailbox on a free
/// loopback port, plain IMAP with a password: an existing mailbox the node polls.
struct Dovecot {
    port: u16,
    config: PathBuf,
    master: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Dovecot {
    const USER: &'static str = "support@shop.test";
    const PASSWORD: &'static str = "mailbox secret";

    fn start() -> Dovecot {
        assert!(
            std::path::Path::new("/usr/sbin/dovecot").exists(),
            "dovecot is missing: run the tests with scripts/test, which installs dovecot-imapd"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let home = root.join("home");
        std::fs::create_dir_all(&home).expect("home");
        // Mail is kept by an unprivileged user (dovecot refuses root's).
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let passwd = root.join("passwd");
        std::fs::write(
            &passwd,
            format!("{}:{{PLAIN}}{}\n", Dovecot::USER, Dovecot::PASSWORD),
        )
        .expect("passwd");
        let port = threadline_tests::free_port();
        let r = root.display();
        let config = root.join("dovecot.conf");
        std::fs::write(
            &config,
            format!(
                "protocols = imap
listen = 127.0.0.1
base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{r}/home/%u/Maildir
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={r}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
",
                passwd.display()
            ),
        )
        .expect("config");
        let master = Command::new("/usr/sbin/dovecot")
            .args(["-F", "-c"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dovecot starts");
        eventually("dovecot listens", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Dovecot {
            port,
            config,
            master,
            _dir: dir,
        }
    }

    /// Delivers a mail into the mailbox as the mail server would (Dovecot's LDA).
    fn deliver(&self, from: &str, mail: &str) {
        let mut lda = Command::new("/usr/lib/dovecot/dovecot-lda")
            .arg("-c")
            .arg(&self.config)
            .args(["-d", Dovecot::USER, "-f", from])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("dovecot-lda runs");
        std::io::Write::write_all(lda.stdin.as_mut().expect("stdin"), mail.as_bytes())
            .expect("mail written");
        drop(lda.stdin.take());
        assert!(lda.wait().expect("lda exits").success(), "delivered");
    }

    /// The flags of every message in the mailbox, by Message-ID (a plain IMAP session).
    fn flags(&self) -> String {
        use std::io::{BufRead as _, Write as _};
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
        let mut writer = stream;
        let mut line = String::new();
        reader.read_line(&mut line).expect("greeting");
        let mut transcript = String::new();
        for (tag, command) in [
            (
                "a1",
                format!("LOGIN {} \"{}\"", Dovecot::USER, Dovecot::PASSWORD),
            ),
            ("a2", "SELECT INBOX".to_owned()),
            (
                "a3",
                "FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])".to_owned(),
            ),
            ("a4", "LOGOUT".to_owned()),
        ] {
            write!(writer, "{tag} {command}\r\n").expect("write");
            loop {
                line.clear();
                if reader.read_line(&mut line).expect("read") == 0 {
                    break;
                }
                transcript.push_str(&line);
                if line.starts_with(tag) {
                    break;
                }
            }
        }
        transcript
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.master.id().to_string()])
            .status();
        let _ = self.master.wait();
    }
}

#[test]
fn mail_in_an_existing_mailbox_is_taken_over_imap_once_and_marked() {
    let dovecot = Dovecot::start();
    let shop = Shop::new();
    let config = shop.data.join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text
        .replace(
            "imap_poll_seconds = 30",
            &format!(
                "imap = \"imap://support%40shop.test:mailbox%20secret@127.0.0.1:{}/INBOX\"\nimap_poll_seconds = 1",
                dovecot.port
            ),
        );
    std::fs::write(&config, text).expect("config written");
    // A mail already waiting is taken when the node starts.
    dovecot.deliver(
        "alice@example.test",
        "From: Alice <alice@example.test>\r\nTo: support@shop.test\r\nSubject: Order 9\r\nMessage-ID: <imap-1@example.test>\r\n\r\nWhere is order 9?\r\n",
    );
    let (node, _) = shop.start();
    // The thread is opened (and listed) a moment before the mail is stored on it.
    let thread = eventually("the waiting mail is taken", Duration::from_secs(30), || {
        email_threads(&node, &shop.token)
            .iter()
            .find(|t| t["route"]["handle"] == "email:alice@example.test")
            .and_then(|t| t["id"].as_str().map(str::to_owned))
            .filter(|thread| !texts(&node, &shop.token, thread).is_empty())
    });
    assert_eq!(texts(&node, &shop.token, &thread), ["Where is order 9?"]);

    // New mail comes while the node runs: taken at the next poll, on the same thread.
    dovecot.deliver(
        "alice@example.test",
        "From: Alice <alice@example.test>\r\nTo: support@shop.test\r\nSubject: Re: Order 9\r\nMessage-ID: <imap-2@example.test>\r\n\r\nAnd a second question.\r\n",
    );
    eventually("the new mail is taken", Duration::from_secs(30), || {
        (texts(&node, &shop.token, &thread).len() == 2).then_some(())
    });
    // Each is marked as taken, not deleted and not marked read for the people using it.
    let messages = eventually("both are marked", Duration::from_secs(30), || {
        let flags = dovecot.flags();
        let messages: Vec<String> = flags
            .lines()
            .filter(|line| line.contains(" FETCH (FLAGS ("))
            .map(str::to_owned)
            .collect();
        (messages.len() == 2 && messages.iter().all(|m| m.contains("$Threadline")))
            .then_some(messages)
    });
    assert!(
        messages.iter().all(|m| !m.contains("\\Seen")),
        "still unread for people: {messages:?}"
    );

    // A restart does not take them again.
    node.stop();
    let (node, _) = shop.start();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        texts(&node, &shop.token, &thread),
        ["Where is order 9?", "And a second question."]
    );
}

#[test]
fn replies_go_out_through_a_relay_that_requires_starttls_and_auth() {
    let relay = Relay::start_with_auth("shop", "relay secret");
    let ca = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/relay-tls/cert.pem");
    // One shop trusts the relay's certificate; the other does not (and must not send).
    let shop_with = |trust: bool| {
        let shop = Shop::new();
        let config = shop.data.join("config.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        let mut relay_lines = format!(
            "relay = \"smtp://shop:relay%20secret@localhost:{}?tls=required\"",
            relay.port
        );
        if trust {
            relay_lines.push_str(&format!("\nrelay_ca = \"{}\"", ca.display()));
        }
        let text = text.replace(
            "# relay = \"smtp://127.0.0.1:587?tls=required\"",
            &relay_lines,
        );
        std::fs::write(&config, text).expect("config written");
        shop
    };
    for trust in [true, false] {
        let shop = shop_with(trust);
        let (node, port) = shop.start();
        let from = if trust {
            "alice@example.test"
        } else {
            "bob@example.test"
        };
        let (taken, log) = swaks(port, from, SUPPORT, &[], "Hello?");
        assert!(taken, "{log}");
        let thread = thread_of(&node, &shop.token, &format!("email:{from}"));
        let (status, answer) = node.post(
            &shop.token,
            &format!("/api/v1/threads/{thread}/replies"),
            &json!({ "text": format!("Hello {from}") }),
        );
        assert_eq!(status, 200, "{answer}");
        if trust {
            let mail = eventually(
                "the reply reaches the relay",
                Duration::from_secs(30),
                || relay.mails().into_iter().next(),
            );
            assert!(mail.contains("Hello alice@example.test"), "{mail}");
        } else {
            // An untrusted certificate: nothing is sent, and the agents see why.
            let reason = eventually("a failed receipt", Duration::from_secs(30), || {
                let (_, detail) = node.get(&shop.token, &format!("/api/v1/threads/{thread}"));
                detail["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .find(|e| e["kind"] == "thread.receipt" && e["detail"]["receipt"] == "failed")
                    .and_then(|e| e["text"].as_str().map(str::to_owned))
            });
            assert!(reason.to_lowercase().contains("certificate"), "{reason}");
            assert_eq!(relay.mails().len(), 1, "only the trusted shop's reply");
        }
    }
}

/// CPython's email test corpus (Debian's `libpython3.11-testsuite`; `scripts/test` installs it).
const EMAIL_CORPUS: &str = "/usr/lib/python3.11/test/test_email/data";

/// Whitespace runs made one space, NULs dropped (as `email_corpus_parts.py` does).
fn normalised(text: &str) -> String {
    text.replace('\0', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The customers' messages (and automatic replies) of every email thread not in `seen`, with
/// their thread.
fn new_inbound(
    node: &Node,
    token: &str,
    seen: &mut std::collections::BTreeSet<String>,
) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    let (status, list) = node.get(token, "/api/v1/threads?channel=email&limit=500");
    assert_eq!(status, 200, "{list}");
    for thread in list["threads"].as_array().expect("threads") {
        let id = thread["id"].as_str().expect("id");
        let (_, detail) = node.get(token, &format!("/api/v1/threads/{id}"));
        for event in detail["events"].as_array().expect("events") {
            let event_id = event["id"].as_str().expect("event id").to_owned();
            let customers = ["thread.message.inbound", "thread.auto_reply"];
            if customers.iter().any(|kind| event["kind"] == *kind) && seen.insert(event_id) {
                found.push((id.to_owned(), event.clone()));
            }
        }
    }
    found
}

#[test]
fn every_mail_of_the_cpython_corpus_is_refused_clearly_or_kept_whole() {
    assert!(
        Path::new(EMAIL_CORPUS).is_dir(),
        "{EMAIL_CORPUS} is missing: run the tests with scripts/test, which installs libpython3.11-testsuite"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/email_corpus_parts.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(EMAIL_CORPUS)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let expected = expected.as_object().expect("an object per mail");
    assert!(expected.len() >= 40, "the corpus has its mails");

    let shop = Shop::new();
    let (node, port) = shop.start();
    let mut seen = std::collections::BTreeSet::new();
    let (mut n_kept, mut n_refused) = (0, 0);
    for (name, parts) in expected {
        let path = format!("{EMAIL_CORPUS}/{name}");
        let output = Command::new("swaks")
            .args(["-S", "--server", "127.0.0.1", "--port", &port.to_string()])
            .args(["--from", "corpus@example.test", "--to", SUPPORT])
            .args(["--data", &format!("@{path}")])
            .output()
            .expect("swaks runs");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let stored = new_inbound(&node, &shop.token, &mut seen);
        if !output.status.success() {
            // A clear permanent refusal with its reason, and nothing stored.
            assert!(
                log.lines().any(|line| line.starts_with("<** 5")),
                "{name}: refused without a 5xx: {log}"
            );
            assert!(stored.is_empty(), "{name}: refused but stored {stored:?}");
            n_refused += 1;
            continue;
        }
        assert_eq!(
            stored.len(),
            1,
            "{name}: a 250 stores one message: {stored:?}"
        );
        let (thread, event) = &stored[0];
        // The subject, as Python decodes it.
        assert_eq!(
            event["subject"].as_str().map(normalised),
            parts["subject"].as_str().map(str::to_owned),
            "{name}: the subject"
        );
        // The mail exactly as it came (line ends aside: swaks sends CRLF), one click away.
        let original = get_bytes(
            &node,
            &shop.token,
            &format!(
                "/api/v1/threads/{thread}/events/{}/original",
                event["id"].as_str().expect("id")
            ),
        );
        let sent = std::fs::read(&path).expect("corpus file");
        assert_eq!(original.0, 200, "{name}: the original downloads");
        assert_eq!(
            String::from_utf8_lossy(&original.1)
                .replace("\r\n", "\n")
                .trim_end(),
            String::from_utf8_lossy(&sent)
                .replace("\r\n", "\n")
                .trim_end(),
            "{name}: the original is the mail as sent"
        );
        let text = normalised(event["text"].as_str().unwrap_or_default());
        for part in parts["top"].as_array().expect("top") {
            let part = part.as_str().expect("text");
            assert!(
                text.contains(part),
                "{name}: a text part is missing.\n part: {part}\n kept: {text}"
            );
        }
        let attachments = event["attachments"].as_array().expect("attachments");
        let mut files_text = String::new();
        for (n, attachment) in attachments.iter().enumerate() {
            let event_id = event["id"].as_str().expect("id");
            let response = node
                .http()
                .get(&format!(
                    "{}/api/v1/threads/{thread}/events/{event_id}/attachments/{n}",
                    node.base
                ))
                .set("Authorization", &format!("Bearer {}", shop.token))
                .call()
                .unwrap_or_else(|err| panic!("{name}: attachment {attachment} downloads: {err}"));
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).expect("bytes");
            files_text.push_str(&String::from_utf8_lossy(&bytes));
            files_text.push(' ');
        }
        let files_text = normalised(&files_text);
        for part in parts["nested"].as_array().expect("nested") {
            let part = part.as_str().expect("text");
            assert!(
                text.contains(part) || files_text.contains(part),
                "{name}: a forwarded message's text is neither kept nor attached: {part}"
            );
        }
        for file in parts["files"].as_array().expect("files") {
            let file = file.as_str().expect("name");
            assert!(
                attachments.iter().any(|a| a["name"] == file),
                "{name}: the file {file} is missing: {attachments:?}"
            );
        }
        n_kept += 1;
    }
    assert!(
        n_kept >= 30,
        "most of the corpus is kept ({n_kept} kept, {n_refused} refused)"
    );
}

#[test]
fn a_new_customer_by_mail_gets_the_display_name_of_their_mail() {
    let shop = Shop::new();
    let (node, port) = shop.start();
    let (taken, log) = swaks(
        port,
        "juergen@example.test",
        SUPPORT,
        &[
            "From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.test>",
            "Subject: Bestellung",
        ],
        "Wo ist mein Paket?",
    );
    assert!(taken, "{log}");
    let (status, found) = node.get(&shop.token, "/api/v1/contacts?q=email:juergen@example.test");
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        found["contacts"][0]["display_name"], "Jürgen Müller",
        "{found}"
    );
    let (_, list) = node.get(&shop.token, "/api/v1/threads?channel=email");
    assert_eq!(
        list["threads"][0]["contact_name"], "Jürgen Müller",
        "{list}"
    );

    // A customer whose first mail said no name gets the one a later mail says, once: a
    // contact's name is not changed by whatever the next mail's From: claims.
    let name_of = |address: &str| {
        let (status, found) = node.get(&shop.token, &format!("/api/v1/contacts?q=email:{address}"));
        assert_eq!(status, 200, "{found}");
        found["contacts"][0]["display_name"].clone()
    };
    let (taken, log) = swaks(
        port,
        "ann@example.test",
        SUPPORT,
        &[],
        "First, with no name.",
    );
    assert!(taken, "{log}");
    assert_eq!(name_of("ann@example.test"), Value::Null);
    for (from, text) in [
        ("Ann Lee <ann@example.test>", "Now with my name."),
        ("Someone Else <ann@example.test>", "And another."),
    ] {
        let (taken, log) = swaks(
            port,
            "ann@example.test",
            SUPPORT,
            &[&format!("From: {from}")],
            text,
        );
        assert!(taken, "{log}");
    }
    assert_eq!(name_of("ann@example.test"), "Ann Lee");
    // The name is found by search, and shown on the contact's record.
    let (_, found) = node.get(&shop.token, "/api/v1/contacts?q=ann%20lee");
    assert_eq!(found["contacts"][0]["display_name"], "Ann Lee", "{found}");
}

#[test]
fn robots_reopen_nothing_open_nothing_and_a_report_marks_its_reply_failed() {
    let shop = Shop::new();
    let (node, port) = shop.start();
    let (taken, log) = swaks(port, "alice@example.test", SUPPORT, &[], "Is it shipped?");
    assert!(taken, "{log}");
    let thread = thread_of(&node, &shop.token, "email:alice@example.test");
    let (status, answer) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/replies"),
        &json!({ "text": "Yes, on Monday." }),
    );
    assert_eq!(status, 200, "{answer}");
    let reply: threadline_protocol::EventId = answer["event"]
        .as_str()
        .expect("event")
        .parse()
        .expect("id");
    let (status, answer) = node.post(
        &shop.token,
        &format!("/api/v1/threads/{thread}/status"),
        &json!({ "status": "resolved" }),
    );
    assert_eq!(status, 200, "{answer}");
    let thread_id: threadline_protocol::ThreadId = thread.parse().expect("id");
    let our_id = threadline_bridges::email::message_id(&thread_id, &reply, "shop.test");
    let state = |node: &Node| {
        let (_, detail) = node.get(&shop.token, &format!("/api/v1/threads/{thread}"));
        detail
    };

    // Alice's out-of-office answers our reply on the resolved thread: kept there, shown as an
    // automatic reply, and the thread stays resolved (no unread message, no new thread).
    let (taken, log) = swaks(
        port,
        "alice@example.test",
        SUPPORT,
        &[
            "Subject: Out of office: Re: Is it shipped?",
            "Auto-Submitted: auto-replied",
            &format!("In-Reply-To: {our_id}"),
        ],
        "I am away until Monday.",
    );
    assert!(taken, "{log}");
    let detail = state(&node);
    assert_eq!(detail["thread"]["status"], "resolved", "{detail}");
    let auto: Vec<&Value> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "thread.auto_reply")
        .collect();
    assert_eq!(auto.len(), 1, "{detail}");
    assert_eq!(auto[0]["text"], "I am away until Monday.");
    assert_eq!(texts(&node, &shop.token, &thread), ["Is it shipped?"]);
    assert_eq!(email_threads(&node, &shop.token).len(), 1);
    let (_, list) = node.get(&shop.token, "/api/v1/threads?status=resolved");
    let summary = list["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .find(|t| t["id"] == thread.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    // Unread: Alice's one message (nobody read it), not her automatic reply.
    assert_eq!(summary["unread"], 1, "{list}");

    // A stranger's auto-reply: refused with a 5xx, no contact, no thread.
    let (taken, log) = swaks(
        port,
        "robot@example.test",
        SUPPORT,
        &["Auto-Submitted: auto-replied", "Precedence: auto_reply"],
        "Thank you for your message.",
    );
    assert!(!taken, "{log}");
    assert!(log.lines().any(|l| l.starts_with("<** 5")), "{log}");
    let (_, found) = node.get(&shop.token, "/api/v1/contacts?q=email:robot@example.test");
    assert_eq!(
        found["contacts"].as_array().map(Vec::len),
        Some(0),
        "{found}"
    );

    // A bounce of our reply that also says Auto-Submitted: still a report, which marks the
    // reply failed and opens nothing.
    let report = format!(
        "This is a delivery status report.\r\n--x\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\nStatus: 5.2.2\r\n--x\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {our_id}\r\nTo: alice@example.test\r\n--x--\r\n"
    );
    let (taken, log) = swaks(
        port,
        "<>",
        SUPPORT,
        &[
            "From: Mail Delivery System <mailer-daemon@example.test>",
            "Subject: Undelivered Mail Returned to Sender",
            "Auto-Submitted: auto-replied",
            "Content-Type: multipart/report; report-type=delivery-status; boundary=x",
        ],
        &report,
    );
    assert!(taken, "{log}");
    let detail = state(&node);
    assert!(
        detail["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["kind"] == "thread.receipt"
                && e["detail"]["receipt"] == "failed"
                && e["detail"]["target"] == reply.to_string()),
        "{detail}"
    );
    assert_eq!(email_threads(&node, &shop.token).len(), 1);
}

#[test]
fn an_agent_verifies_a_visitors_email_with_a_code_sent_by_mail() {
    let relay = Relay::start();
    let shop = Shop::with_relay(Some(relay.port));
    let (node, _) = shop.start();
    let mut visitor = Visitor::connect(&node, None);
    assert_eq!(visitor.say("m1", "Where is my order?")["type"], "ack");
    visitor.send(&json!({"type": "email", "address": "maria@example.test"}));
    assert_eq!(visitor.receive().expect("answer")["type"], "email_saved");
    let agent = crate::browser::open_first_conversation(&node.base, &shop.token);
    agent.wait_for(
        "the address to verify",
        "return !!document.querySelector('#contact-attributes .verify')",
    );
    agent.click_on("#contact-attributes .verify");
    agent.wait_for(
        "the code's form",
        "return !document.getElementById('verify-form').hidden && document.getElementById('verify-status').textContent.includes('maria@example.test')",
    );
    // The code arrives by mail, through the shop's relay.
    let mail = eventually("the code's mail", Duration::from_secs(20), || {
        relay
            .mails()
            .into_iter()
            .find(|m| header(m, "To").is_some_and(|to| to.contains("maria@example.test")))
    });
    let code: String = mail
        .split("Your code is ")
        .nth(1)
        .expect("the code in the body")
        .chars()
        .take(6)
        .collect();
    assert!(code.chars().all(|c| c.is_ascii_digit()), "{mail}");
    assert!(header(&mail, "Subject").is_some_and(|s| s.contains(&code)));
    // A wrong code says so; the right one makes the address the customer's.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let input = agent.find("#verify-code");
    agent.type_into(&input, &format!("{wrong}\u{E007}"));
    agent.wait_for(
        "the refusal",
        "return document.getElementById('contact-error').textContent.includes('4 tries left')",
    );
    agent.run(
        "document.getElementById('verify-code').value = ''",
        json!([]),
    );
    agent.type_into(&input, &format!("{code}\u{E007}"));
    agent.wait_for(
        "the address among the handles, no longer a note",
        "return [...document.querySelectorAll('#contact-handles li')].some(h => h.textContent === 'email:maria@example.test') && !document.getElementById('contact-attributes').textContent.includes('unverified') && document.getElementById('verify-form').hidden",
    );
    agent.screenshot(&threadline_tests::screenshot_dir().join("inbox-verify-email.png"));
    // The conversation may now go to email; the code is used up.
    let thread = node.get(&shop.token, "/api/v1/threads").1["threads"][0].clone();
    let contact = thread["contact"].as_str().expect("contact");
    let (status, answer) = node.post(
        &shop.token,
        &format!("/api/v1/contacts/{contact}/email-verification/confirm"),
        &json!({"code": code}),
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("no_code"))
    );
    let (status, _) = node.post(
        &shop.token,
        &format!(
            "/api/v1/threads/{}/handoff",
            thread["id"].as_str().expect("id")
        ),
        &json!({"handle": "email:maria@example.test"}),
    );
    assert_eq!(status, 200);
    // Verified already: no second code.
    let (status, answer) = node.post(
        &shop.token,
        &format!("/api/v1/contacts/{contact}/email-verification"),
        &json!({"address": "maria@example.test"}),
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("already_linked"))
    );
    node.stop();
}

#[test]
fn a_code_is_refused_without_mail_and_for_a_bad_address() {
    let shop = Shop::new();
    let (node, _) = shop.start();
    let mut visitor = Visitor::connect(&node, None);
    assert_eq!(visitor.say("m1", "Hello")["type"], "ack");
    let thread = node.get(&shop.token, "/api/v1/threads").1["threads"][0].clone();
    let contact = thread["contact"].as_str().expect("contact");
    let path = format!("/api/v1/contacts/{contact}/email-verification");
    let (status, answer) = node.post(&shop.token, &path, &json!({"address": "not an address"}));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = node.post(&shop.token, &path, &json!({"address": "ann@example.test"}));
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("no_email")),
        "no relay: {answer}"
    );
    let (status, answer) = node.post(
        &shop.token,
        &format!("{path}/confirm"),
        &json!({"code": "123456"}),
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("no_code"))
    );
    node.stop();
}
