//! Inbound mail under load: `LOAD_MAILS` mails (default 10,000) from `LOAD_SENDERS` customers
//! (default 1,000) over `LOAD_SESSIONS` concurrent SMTP sessions (default 50) into a node with
//! the email bridge on, on loopback. Each session sends its mails one after another; the time
//! from the end of `DATA` to the `250` is when the mail is durable and in the inbox (the `250`
//! waits for the group commit that also feeds the agents' live stream). Then every customer's
//! thread is read back through the agent API: each mail must be there exactly once.
//!
//! `LOAD_ATTACHMENT_BYTES` (default 0) gives each mail a file of that size (different bytes
//! for each, base64 in the mail as a mail client sends it): the `250` then also waits for the
//! file to be stored as a blob, and the read-back checks each message refers to its file.
//!
//! Run: `cargo bench -p threadline-node --bench email_load`. Figures: docs/BENCHMARKS.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use threadline_node::config::Config;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

mod common;
use common::{env, percentile, BenchNode};

/// Reads one SMTP reply (all its lines) and returns its code.
async fn reply(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> u16 {
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.expect("read");
        assert!(n > 0, "the server closed the session");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .expect("a reply code");
        }
    }
}

/// A mail's body: plain text, or multipart with a file of `attachment` bytes.
fn body(mail: usize, sender: usize, attachment: usize) -> String {
    let head = format!(
        "From: Customer {sender} <customer{sender}@example.test>\r\nTo: support@shop.test\r\nSubject: order {mail}\r\nMessage-ID: <load-{mail}@example.test>\r\n"
    );
    let text = format!("Mail number {mail} from customer {sender}.");
    if attachment == 0 {
        return format!("{head}\r\n{text}\r\n.\r\n");
    }
    // Bytes that differ for every mail, so every file is a blob of its own.
    let mut bytes = vec![0u8; attachment];
    let mut state = (mail as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for byte in &mut bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = (state >> 24) as u8;
    }
    let encoded = base64(&bytes);
    let mut lines = String::new();
    for chunk in encoded.as_bytes().chunks(76) {
        lines.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        lines.push_str("\r\n");
    }
    format!(
        "{head}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n{text}\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"order-{mail}.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{lines}--b--\r\n.\r\n"
    )
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn session(port: u16, mails: Vec<(usize, usize)>, attachment: usize) -> Vec<Duration> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    assert_eq!(reply(&mut reader).await, 220);
    write.write_all(b"EHLO load\r\n").await.expect("write");
    assert_eq!(reply(&mut reader).await, 250);
    let mut latencies = Vec::with_capacity(mails.len());
    for (mail, sender) in mails {
        let commands = format!(
            "MAIL FROM:<customer{sender}@example.test>\r\nRCPT TO:<support@shop.test>\r\nDATA\r\n"
        );
        write.write_all(commands.as_bytes()).await.expect("write");
        assert_eq!(reply(&mut reader).await, 250);
        assert_eq!(reply(&mut reader).await, 250);
        assert_eq!(reply(&mut reader).await, 354);
        let body = body(mail, sender, attachment);
        write.write_all(body.as_bytes()).await.expect("write");
        let sent = Instant::now();
        let code = reply(&mut reader).await;
        latencies.push(sent.elapsed());
        assert_eq!(code, 250, "mail {mail} refused");
    }
    write.write_all(b"QUIT\r\n").await.expect("write");
    latencies
}

fn main() {
    let n_mails = env("LOAD_MAILS", 10_000);
    let n_senders = env("LOAD_SENDERS", 1_000);
    let n_sessions = env("LOAD_SESSIONS", 50);
    let attachment = env("LOAD_ATTACHMENT_BYTES", 0);
    let node = BenchNode::start(true, |loopback| Config {
        email_address: Some("support@shop.test".to_owned()),
        ..loopback
    });
    let (base, token) = (node.base.clone(), node.token.clone());
    let smtp_port = node.smtp_port.expect("an SMTP listener");
    let runtime = &node.runtime;

    // Spread the mails over the sessions; each customer's mails in order within a session.
    let mut per_session: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n_sessions];
    for mail in 0..n_mails {
        let sender = mail % n_senders;
        per_session[sender % n_sessions].push((mail, sender));
    }
    let started = Instant::now();
    let mut latencies: Vec<Duration> = runtime.block_on(async {
        let tasks: Vec<_> = per_session
            .into_iter()
            .map(|mails| tokio::spawn(session(smtp_port, mails, attachment)))
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("session"));
        }
        all
    });
    let took = started.elapsed();
    latencies.sort();
    println!(
        "{n_mails} mails ({}) from {n_senders} customers over {n_sessions} SMTP sessions in {took:.1?}: {:.0} mails/s; end of DATA -> 250 (durable, in the inbox) p50 {:.2?} p99 {:.2?} max {:.2?}",
        if attachment == 0 { "text only".to_owned() } else { format!("each with a {attachment}-byte file") },
        n_mails as f64 / took.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );

    // Every mail once, on its sender's thread.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let get = |path: &str| -> serde_json::Value {
        agent
            .get(&format!("{base}/api/v1{path}"))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("GET")
            .into_json()
            .expect("json")
    };
    let mut threads = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(cursor) => get(&format!("/threads?channel=email&limit=200&cursor={cursor}")),
            None => get("/threads?channel=email&limit=200"),
        };
        for thread in page["threads"].as_array().expect("threads") {
            threads.push(thread["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut by_sender: HashMap<String, usize> = HashMap::new();
    let mut total = 0;
    for thread in &threads {
        let detail = get(&format!("/threads/{thread}"));
        for event in detail["events"].as_array().expect("events") {
            if event["kind"] == "thread.message.inbound" {
                let handle = event["handle"].as_str().expect("handle").to_owned();
                let text = event["text"].as_str().expect("text");
                let sender = handle.trim_start_matches("email:customer");
                let sender = sender.split('@').next().expect("sender");
                assert!(
                    text.ends_with(&format!("from customer {sender}.")),
                    "a mail on the wrong thread: {text} on {handle}'s"
                );
                if attachment > 0 {
                    let files = event["attachments"].as_array().expect("attachments");
                    assert_eq!(files.len(), 1, "the mail's file: {event}");
                    assert_eq!(files[0]["size"], attachment);
                }
                *by_sender.entry(handle).or_default() += 1;
                total += 1;
            }
        }
    }
    assert_eq!(total, n_mails, "every mail exactly once");
    assert_eq!(threads.len(), n_senders, "one thread per customer");
    assert!(by_sender.values().all(|n| *n == n_mails / n_senders));
    println!(
        "checked: {total} mails on {} threads, each once, each on its sender's thread",
        threads.len()
    );
    node.stop();
}
