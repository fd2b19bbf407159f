//! No request can stall the node (issue 13): every limit at its edge (accepted) and one past it
//! (a clear error, nothing stored); a huge request refused while other writes go through;
//! slow clients holding only their own share; assignments only to active agents.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use threadline_protocol::{OrgId, SecretKey};
use threadline_tests::{eventually, field, threadline_ok, Node};

/// A data folder with an org, two agents (Ann, who ran `init`, and Bea) and an email bridge
/// (only its token: the tests resolve handles with it, and upload).
struct Org {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    ann: String,
    bea: String,
    bea_id: String,
    bridge: String,
}

impl Org {
    fn new() -> Org {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let init = threadline_ok(&data, &["init"]);
        let ann = field(&init, "token:");
        let added = threadline_ok(&data, &["agent", "add", "Bea"]);
        let bea = field(&added, "token:");
        let bea_id = field(&added, "agent:")
            .split_whitespace()
            .next()
            .expect("an agent id")
            .to_owned();
        let bridge = field(&threadline_ok(&data, &["bridge", "add", "email"]), "token:");
        Org {
            _tmp: tmp,
            data,
            ann,
            bea,
            bea_id,
            bridge,
        }
    }

    /// The open thread of `address` (created by resolving it, as a bridge does).
    fn thread(&self, node: &Node, address: &str) -> String {
        let (status, resolved) = node.post(
            &self.bridge,
            "/api/v1/bridge/resolve",
            &json!({ "handle": format!("email:{address}") }),
        );
        assert_eq!(status, 200, "resolve: {resolved}");
        resolved["thread"].as_str().expect("thread").to_owned()
    }
}

/// `GET /threads/{id}`: the thread's state and how many events it has.
fn read_back(node: &Node, token: &str, thread: &str) -> (Value, usize) {
    let (status, detail) = node.get(token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(status, 200, "{detail}");
    let n_events = detail["events"].as_array().expect("events").len();
    (detail["thread"].clone(), n_events)
}

fn labels(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("label-{n}")).collect()
}

/// Asserts a refusal: its status and stable code.
fn refused(answer: (u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
}

#[test]
fn labels_per_request_and_per_thread_at_the_edge_and_past_it() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let thread = org.thread(&node, "alice@example.com");
    let path = format!("/api/v1/threads/{thread}/labels");

    // A request: 32 labels at once are fine, 33 are refused and nothing of them is stored.
    let (status, answer) = node.post(&org.ann, &path, &json!({ "add": labels(0..32) }));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"].as_array().expect("events").len(), 32);
    let (_, n_events) = read_back(&node, &org.ann, &thread);
    refused(
        node.post(
            &org.ann,
            &path,
            &json!({ "add": labels(32..64), "remove": ["label-0"] }),
        ),
        413,
        "too_many_labels",
    );
    let (state, n_after) = read_back(&node, &org.ann, &thread);
    assert_eq!(n_after, n_events);
    assert_eq!(state["labels"].as_array().expect("labels").len(), 32);

    // A thread: 64 labels are fine, a 65th is refused, whole requests at a time.
    let (status, answer) = node.post(&org.ann, &path, &json!({ "add": labels(32..64) }));
    assert_eq!(status, 200, "{answer}");
    let (_, n_events) = read_back(&node, &org.ann, &thread);
    refused(
        node.post(&org.ann, &path, &json!({ "add": ["one-more"] })),
        422,
        "thread_labels_full",
    );
    refused(
        node.post(
            &org.ann,
            &path,
            &json!({ "add": ["one-more", "two-more"], "remove": ["label-0"] }),
        ),
        422,
        "thread_labels_full",
    );
    let (state, n_after) = read_back(&node, &org.ann, &thread);
    assert_eq!(n_after, n_events, "a refused request stores nothing");
    assert_eq!(state["labels"].as_array().expect("labels").len(), 64);
    // Swapping one label for another on a full thread is fine.
    let (status, answer) = node.post(
        &org.ann,
        &path,
        &json!({ "add": ["swapped-in"], "remove": ["label-0"] }),
    );
    assert_eq!(status, 200, "{answer}");

    // Concurrent requests cannot together go past the cap: the writer checks each against the
    // thread as it is then. Four places free, eight requests for them.
    let (status, answer) = node.post(&org.ann, &path, &json!({ "remove": labels(1..5) }));
    assert_eq!(status, 200, "{answer}");
    let outcomes: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..8)
            .map(|n| {
                let (node, token, path) = (&node, &org.ann, &path);
                scope.spawn(move || {
                    node.post(token, path, &json!({ "add": [format!("racing-{n}")] }))
                })
            })
            .collect();
        requests
            .into_iter()
            .map(|r| r.join().expect("request"))
            .collect()
    });
    let accepted = outcomes.iter().filter(|(status, _)| *status == 200).count();
    let full = outcomes
        .iter()
        .filter(|(status, answer)| {
            *status == 422 && answer["error"]["code"] == "thread_labels_full"
        })
        .count();
    assert_eq!((accepted, full), (4, 4), "{outcomes:?}");
    let (state, _) = read_back(&node, &org.ann, &thread);
    assert_eq!(state["labels"].as_array().expect("labels").len(), 64);
}

#[test]
fn thirty_thousand_labels_are_refused_at_once_while_a_note_is_stored() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let thread = org.thread(&node, "alice@example.com");
    let (_, n_events) = read_back(&node, &org.ann, &thread);
    let huge = json!({ "add": labels(0..30_000) });
    let barrier = std::sync::Barrier::new(2);
    let (big, (note, note_took)) = std::thread::scope(|scope| {
        let big = scope.spawn(|| {
            barrier.wait();
            let started = Instant::now();
            let answer = node.post(&org.ann, &format!("/api/v1/threads/{thread}/labels"), &huge);
            (answer, started.elapsed())
        });
        barrier.wait();
        let started = Instant::now();
        let note = node.post(
            &org.bea,
            &format!("/api/v1/threads/{thread}/notes"),
            &json!({ "text": "written while a huge request came in" }),
        );
        (big.join().expect("big request"), (note, started.elapsed()))
    });
    assert_eq!(note.0, 200, "{}", note.1);
    assert!(
        note_took < Duration::from_secs(2),
        "the note took {note_took:?}"
    );
    let ((status, answer), big_took) = big;
    refused((status, answer), 413, "too_many_labels");
    assert!(
        big_took < Duration::from_secs(5),
        "the refusal took {big_took:?}"
    );
    let (state, n_after) = read_back(&node, &org.ann, &thread);
    assert_eq!(n_after, n_events + 1, "the note and nothing else");
    assert_eq!(state["labels"], json!([]));
}

#[test]
fn text_members_and_bridge_events_at_the_edge_and_past_it() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let thread = org.thread(&node, "alice@example.com");
    let max_text = threadline_protocol::limits::MAX_TEXT_BYTES;

    // Text: the protocol's limit, in bytes of UTF-8.
    let notes = format!("/api/v1/threads/{thread}/notes");
    let (status, answer) = node.post(&org.ann, &notes, &json!({ "text": "x".repeat(max_text) }));
    assert_eq!(status, 200, "{answer}");
    let (_, n_events) = read_back(&node, &org.ann, &thread);
    refused(
        node.post(
            &org.ann,
            &notes,
            &json!({ "text": "x".repeat(max_text + 1) }),
        ),
        413,
        "text_too_long",
    );
    // "é" is two bytes: half as many characters fill it.
    refused(
        node.post(
            &org.ann,
            &notes,
            &json!({ "text": "é".repeat(max_text / 2 + 1) }),
        ),
        413,
        "text_too_long",
    );
    refused(
        node.post(
            &org.ann,
            &format!("/api/v1/threads/{thread}/replies"),
            &json!({ "text": "x".repeat(max_text + 1) }),
        ),
        413,
        "text_too_long",
    );
    assert_eq!(read_back(&node, &org.ann, &thread).1, n_events);

    // Members: 16 orgs, the owner included.
    let members = format!("/api/v1/threads/{thread}/members");
    let partner = |n: u8| OrgId(SecretKey::from_seed([n; 32]).public()).to_string();
    for n in 1..=15 {
        let (status, answer) = node.post(&org.ann, &members, &json!({ "org": partner(n) }));
        assert_eq!(status, 200, "partner {n}: {answer}");
    }
    let (state, n_events) = read_back(&node, &org.ann, &thread);
    assert_eq!(state["members"].as_array().expect("members").len(), 16);
    refused(
        node.post(&org.ann, &members, &json!({ "org": partner(16) })),
        422,
        "thread_members_full",
    );
    // Adding a member again adds nothing, so it is not refused.
    let (status, answer) = node.post(&org.ann, &members, &json!({ "org": partner(1) }));
    assert_eq!(status, 200, "{answer}");
    let (state, n_after) = read_back(&node, &org.ann, &thread);
    assert_eq!(n_after, n_events + 1);
    assert_eq!(state["members"].as_array().expect("members").len(), 16);

    // Events per bridge submission: 512 are taken (and answered one by one: these are not
    // events), 513 are refused whole.
    let events = |n: usize| json!({ "events": vec!["00"; n] });
    let (status, answer) = node.post(&org.bridge, "/api/v1/bridge/events", &events(512));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"].as_array().expect("results").len(), 512);
    refused(
        node.post(&org.bridge, "/api/v1/bridge/events", &events(513)),
        413,
        "too_many_events",
    );
}

#[test]
fn handles_per_contact_at_the_edge_and_past_it() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let thread = org.thread(&node, "alice@example.com");
    let (state, _) = read_back(&node, &org.ann, &thread);
    let contact = state["contact"].as_str().expect("contact").to_owned();
    let link = format!("/api/v1/contacts/{contact}/handles");
    let limit = threadline_node::limits::MAX_HANDLES_PER_CONTACT;
    // The contact has the handle it was resolved from; 255 more fill it.
    for n in 1..limit {
        let handle = format!("email:alice+{n}@example.com");
        let (status, answer) = node.post(&org.ann, &link, &json!({ "handle": handle }));
        assert_eq!(status, 200, "handle {n}: {answer}");
    }
    refused(
        node.post(
            &org.ann,
            &link,
            &json!({ "handle": "email:one-too-many@example.com" }),
        ),
        422,
        "contact_handles_full",
    );
    let (status, record) = node.get(&org.ann, &format!("/api/v1/contacts/{contact}"));
    assert_eq!(status, 200, "{record}");
    let handles = record["handles"].as_array().expect("handles");
    assert_eq!(handles.len(), limit);
    assert!(!handles.contains(&json!("email:one-too-many@example.com")));
    // Linking a handle the contact has already is not growth, and is fine.
    let (status, answer) = node.post(
        &org.ann,
        &link,
        &json!({ "handle": "email:alice+1@example.com" }),
    );
    assert_eq!(status, 200, "{answer}");
}

/// A request whose head is sent whole and whose body is not: `announced` bytes announced,
/// `sent` of them sent, the rest held back until the socket is dropped. (JSON, as far as the
/// head says: a JSON route reads the body only then.)
fn held_request(
    node: &Node,
    token: &str,
    method_path: &str,
    announced: usize,
    sent: &[u8],
) -> TcpStream {
    let address = node.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let head = format!(
        "{method_path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {announced}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("head sent");
    stream.write_all(sent).expect("body part sent");
    stream
}

/// Reads one HTTP answer from `stream`: its status and JSON body.
fn read_answer(stream: &mut TcpStream) -> (u16, Value) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let (head_end, length) = loop {
        let n = stream.read(&mut buffer).expect("an answer");
        assert!(n > 0, "closed without an answer");
        received.extend_from_slice(&buffer[..n]);
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..at]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            break (at + 4, length);
        }
    };
    while received.len() < head_end + length {
        let n = stream.read(&mut buffer).expect("the body");
        assert!(n > 0, "closed in the body");
        received.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body =
        serde_json::from_slice(&received[head_end..head_end + length]).unwrap_or(Value::Null);
    (status, body)
}

#[test]
fn slow_uploads_hold_only_their_own_slots_and_are_cut() {
    let org = Org::new();
    let node = Node::start(&org.data);
    // Four uploads that announce a megabyte and send a byte: two on Ann's token, two on the
    // bridge's, and a third on Ann's, which has no slot left.
    let mut slow: Vec<(&str, TcpStream)> = Vec::new();
    for (who, token, path) in [
        ("ann", &org.ann, "POST /api/v1/attachments"),
        ("ann", &org.ann, "POST /api/v1/attachments"),
        ("bridge", &org.bridge, "POST /api/v1/bridge/blobs"),
        ("bridge", &org.bridge, "POST /api/v1/bridge/blobs"),
        ("ann", &org.ann, "POST /api/v1/attachments"),
    ] {
        slow.push((who, held_request(&node, token, path, 1_000_000, b"x")));
    }
    let (answers, collect) = std::sync::mpsc::channel();
    let started = Instant::now();
    for (who, mut stream) in slow {
        let answers = answers.clone();
        std::thread::spawn(move || {
            let answer = read_answer(&mut stream);
            let _ = answers.send((who, answer, started.elapsed()));
        });
    }
    // The fifth finds Ann's slots taken (whichever of her three came first took them).
    let (who, answer, _) = collect
        .recv_timeout(Duration::from_secs(20))
        .expect("one upload refused at once");
    assert_eq!(who, "ann");
    refused(answer, 429, "too_many_uploads");

    // Meanwhile Bea's upload goes through at once.
    let file = vec![7u8; 256 * 1024];
    let began = Instant::now();
    let response = node
        .http()
        .post(&format!("{}/api/v1/attachments", node.base))
        .set("Authorization", &format!("Bearer {}", org.bea))
        .send_bytes(&file)
        .expect("Bea's upload is stored");
    let took = began.elapsed();
    let stored: Value = response.into_json().expect("JSON");
    assert_eq!(stored["size"], 256 * 1024, "{stored}");
    assert!(took < Duration::from_secs(1), "Bea's upload took {took:?}");

    // The four slow ones are cut for being slow, a few seconds in.
    for _ in 0..4 {
        let (_, answer, after) = collect
            .recv_timeout(Duration::from_secs(60))
            .expect("every slow upload is answered");
        refused(answer, 408, "too_slow");
        assert!(after < Duration::from_secs(40), "cut only after {after:?}");
    }
    // And Ann has her slots back.
    let (status, answer) = {
        let response = node
            .http()
            .post(&format!("{}/api/v1/attachments", node.base))
            .set("Authorization", &format!("Bearer {}", org.ann))
            .send_bytes(b"hello");
        match response {
            Ok(r) => (r.status(), r.into_json::<Value>().expect("JSON")),
            Err(ureq::Error::Status(status, r)) => (status, r.into_json().unwrap_or(Value::Null)),
            Err(err) => panic!("{err}"),
        }
    };
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn a_token_with_too_much_in_flight_is_refused_and_others_are_not() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let limit = threadline_node::limits::MAX_REQUESTS_PER_AGENT_TOKEN;
    // Ann's token: as many requests in flight as it may have (live streams stay open).
    let held: Vec<TcpStream> = (0..limit)
        .map(|_| held_request(&node, &org.ann, "GET /api/v1/stream", 0, b""))
        .collect();
    // Each stream is open once its answer's head has come.
    for stream in &held {
        let mut stream = stream.try_clone().expect("clone");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("the stream's head");
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
    }
    // One more of Ann's is refused once the node has read those heads; Bea's goes through.
    let refusal = eventually(
        "Ann's requests past her share are refused",
        Duration::from_secs(20),
        || {
            let answer = node.get(&org.ann, "/api/v1/me");
            (answer.0 == 429).then_some(answer)
        },
    );
    refused(refusal, 429, "too_many_requests");
    let (status, me) = node.get(&org.bea, "/api/v1/me");
    assert_eq!(status, 200, "{me}");
    // Closing the streams gives the places back.
    drop(held);
    eventually(
        "Ann has her share back once her streams are closed",
        Duration::from_secs(30),
        || {
            // Until the node has seen them close, a new connection is still closed at once.
            let answered = node.try_get(&org.ann, "/api/v1/me");
            answered
                .is_some_and(|(status, _)| status == 200)
                .then_some(())
        },
    );
}

#[test]
fn assignments_go_only_to_active_agents_and_a_revoked_assignee_shows() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let thread = org.thread(&node, "alice@example.com");
    let assign = format!("/api/v1/threads/{thread}/assign");
    let (_, n_events) = read_back(&node, &org.ann, &thread);

    // An agent nobody added.
    let stranger = "5a".repeat(16);
    refused(
        node.post(&org.ann, &assign, &json!({ "assignee": stranger })),
        422,
        "unknown_agent",
    );
    let (state, n_after) = read_back(&node, &org.ann, &thread);
    assert_eq!(n_after, n_events);
    assert_eq!(state["assignee"], Value::Null);

    // Bea, active.
    let (status, answer) = node.post(&org.ann, &assign, &json!({ "assignee": org.bea_id }));
    assert_eq!(status, 200, "{answer}");
    let (state, _) = read_back(&node, &org.ann, &thread);
    assert_eq!(state["assignee"], org.bea_id.as_str());
    assert_eq!(state["assignee_revoked"], false);
    node.stop();

    // Bea is revoked: her open assignment shows it, and nothing more goes to her.
    threadline_ok(&org.data, &["agent", "revoke", &org.bea_id]);
    let node = Node::start(&org.data);
    let (state, n_events) = read_back(&node, &org.ann, &thread);
    assert_eq!(state["assignee"], org.bea_id.as_str());
    assert_eq!(state["assignee_revoked"], true);
    let (status, page) = node.get(&org.ann, "/api/v1/threads");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["threads"][0]["assignee_revoked"], true, "{page}");
    refused(
        node.post(&org.ann, &assign, &json!({ "assignee": org.bea_id })),
        422,
        "agent_revoked",
    );
    assert_eq!(read_back(&node, &org.ann, &thread).1, n_events);

    // Taken over by Ann.
    let (status, me) = node.get(&org.ann, "/api/v1/me");
    assert_eq!(status, 200, "{me}");
    let (status, answer) = node.post(&org.ann, &assign, &json!({ "assignee": me["id"] }));
    assert_eq!(status, 200, "{answer}");
    let (state, _) = read_back(&node, &org.ann, &thread);
    assert_eq!(state["assignee_revoked"], false);
}

/// Whether the node closes `stream` (EOF or reset) before `within` passes, answering nothing.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut buffer = [0u8; 256];
    match stream.read(&mut buffer) {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => !matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn connections_that_trickle_their_head_or_crowd_from_one_address_are_closed() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let address = node.base.trim_start_matches("http://").to_owned();
    let timeout = threadline_node::http::HEADER_READ_TIMEOUT;

    // Half a head, then nothing: cut once the head's time is up, while others are served.
    let mut trickler = TcpStream::connect(&address).expect("connects");
    trickler
        .write_all(b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bea")
        .expect("half a head");
    let (status, me) = node.get(&org.ann, "/api/v1/me");
    assert_eq!(status, 200, "{me}");
    assert!(
        closed_within(&mut trickler, timeout * 3),
        "a head that never completes is cut"
    );

    // One address's share of connections, all idle: the next one from it is closed at once,
    // and the share comes back as they close.
    let share = threadline_node::http::MAX_CONNECTIONS_PER_ADDRESS;
    let idle: Vec<TcpStream> = (0..share)
        .map(|_| TcpStream::connect(&address).expect("connects"))
        .collect();
    let mut crowded = eventually(
        "the node has counted the idle connections",
        Duration::from_secs(20),
        || {
            let mut extra = TcpStream::connect(&address).expect("the kernel accepts");
            closed_within(&mut extra, Duration::from_millis(500)).then_some(extra)
        },
    );
    assert!(closed_within(&mut crowded, Duration::from_secs(1)));
    drop(idle);
    eventually(
        "the address has its share back once its connections close",
        Duration::from_secs(20),
        || {
            // Until the node has seen them close, a new connection is still closed at once.
            let answered = node.try_get(&org.ann, "/api/v1/me");
            answered
                .is_some_and(|(status, _)| status == 200)
                .then_some(())
        },
    );
}
