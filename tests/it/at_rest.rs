//! Encryption at rest (issue 17): nothing a customer wrote, no handle and no file's bytes are
//! anywhere in a data folder in the clear; an erasure destroys the keys, so even a copy of the
//! store from before it cannot show the erased contact; a missing or wrong storage key is
//! refused and changes nothing.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use threadline_protocol::{event::EventKind, ThreadId};
use threadline_tests::{
    edit_config, files_under, holding, run_threadline, run_threadline_with, threadline_ok, Node,
};

use crate::bridge_scope::{message, resolve, signed, upload, with_file};
use crate::node::{send, submit, Org};

/// A customer's message with a file (uploaded first), on their thread; answers the thread.
fn send_with_file(
    node: &Node,
    bridge: &crate::node::Bridge,
    handle: &str,
    caption: &str,
    external_id: &str,
    file: &[u8],
) -> ThreadId {
    let blob = upload(node, bridge, file);
    let (thread, parents, depth) = resolve(node, bridge, handle);
    let results = submit(
        node,
        bridge,
        &[signed(
            bridge,
            thread,
            parents,
            depth,
            EventKind::inbound_message(bridge.channel),
            Some(with_file(
                message(caption, handle, external_id),
                blob,
                file.len(),
            )),
        )],
    );
    assert_eq!(results[0]["status"], "stored", "{results:?}");
    thread
}

fn copy_dir(from: &Path, to: &Path) {
    for (path, bytes) in files_under(from) {
        let target = to.join(path.strip_prefix(from).expect("under"));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("creates");
        std::fs::write(target, bytes).expect("copies");
    }
}

fn texts(node: &Node, token: &str, thread: &ThreadId) -> Vec<Value> {
    let (status, detail) = node.get(token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(status, 200, "{detail}");
    detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| {
            e["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("thread.message"))
        })
        .map(|e| e["text"].clone())
        .collect()
}

/// A workload that touches every kind of stored record (messages, a file, a reply queued for
/// delivery, a handle linked by an agent), a scan of the whole data folder for each thing the
/// customers wrote, then an erasure: afterwards the erased customer is unreadable even from
/// a copy of the store taken before it, while the other customer is untouched.
#[test]
fn nothing_a_customer_wrote_is_stored_in_the_clear_and_an_erasure_shreds_it_for_good() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let ivy = "webchat:ivy-canary-7f3a";
    let ivy_thread = send(
        &node,
        &org.webchat,
        ivy,
        "IVY-SECRET-91c2 my address is 1 Main St",
        "wc-i1",
    );
    let file: Vec<u8> = b"IVY-PASSPORT-SCAN-5d1e "
        .iter()
        .copied()
        .cycle()
        .take(200_000)
        .collect();
    let thread = send_with_file(
        &node,
        &org.webchat,
        ivy,
        "IVY-CAPTION-33b0 here is my passport",
        "wc-i2",
        &file,
    );
    assert_eq!(thread, ivy_thread);
    let (status, _) = node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{ivy_thread}/replies"),
        &json!({"text": "IVY-REPLY-0b7d thanks, we got it"}),
    );
    assert_eq!(status, 200);
    let (_, found) = node.get(&org.agent_token, &format!("/api/v1/contacts?q={ivy}"));
    let ivy_contact = found["contacts"][0]["id"].as_str().expect("id").to_owned();
    let (status, linked) = node.post(
        &org.agent_token,
        &format!("/api/v1/contacts/{ivy_contact}/handles"),
        &json!({"handle": "email:ivy-canary-mail@example.test"}),
    );
    assert_eq!(status, 200, "{linked}");
    let jon = "webchat:jon-canary-44aa";
    let jon_thread = send(&node, &org.webchat, jon, "JON-TEXT-e19f hello", "wc-j1");
    let (_, queue) = node.get(&org.webchat.token, "/api/v1/bridge/deliveries");
    assert_eq!(queue["deliveries"].as_array().map(Vec::len), Some(1));
    node.stop();

    let ivy_secrets = [
        "ivy-canary-7f3a",
        "IVY-SECRET-91c2",
        "IVY-PASSPORT-SCAN-5d1e",
        "IVY-CAPTION-33b0",
        "IVY-REPLY-0b7d",
        "ivy-canary-mail",
    ];
    for secret in ivy_secrets
        .iter()
        .chain(&["jon-canary-44aa", "JON-TEXT-e19f"])
    {
        assert_eq!(
            holding(&org.data, secret),
            Vec::<PathBuf>::new(),
            "{secret}"
        );
    }

    // A copy of the store from before the erasure (a backup, a disk image).
    let before = tempfile::tempdir().expect("tempdir");
    copy_dir(&org.data.join("store"), before.path());

    let out = threadline_ok(&org.data, &["erase", "contact", ivy]);
    assert!(out.contains("erased contact"), "{out}");
    for secret in ivy_secrets {
        assert_eq!(
            holding(&org.data, secret),
            Vec::<PathBuf>::new(),
            "{secret}"
        );
    }
    let node = Node::start(&org.data);
    assert!(texts(&node, &org.agent_token, &ivy_thread)
        .iter()
        .all(Value::is_null));
    assert_eq!(
        texts(&node, &org.agent_token, &jon_thread),
        vec![json!("JON-TEXT-e19f hello")]
    );
    let (_, queue) = node.get(&org.webchat.token, "/api/v1/bridge/deliveries");
    assert_eq!(
        queue["deliveries"],
        json!([]),
        "the reply is never sent now"
    );
    node.stop();

    // The old store put back, with the keys as they are now: every record of it is there,
    // sealed, but what Ivy wrote no longer opens, and Jon's still does.
    let store = org.data.join("store");
    let keys = std::fs::read(store.join("data-keys")).expect("keys");
    std::fs::remove_dir_all(&store).expect("removes");
    copy_dir(before.path(), &store);
    std::fs::write(store.join("data-keys"), keys).expect("keys back");
    let node = Node::start(&org.data);
    let ivy_texts = texts(&node, &org.agent_token, &ivy_thread);
    assert_eq!(ivy_texts.len(), 3, "the headers are all there");
    assert!(ivy_texts.iter().all(Value::is_null), "{ivy_texts:?}");
    assert_eq!(
        texts(&node, &org.agent_token, &jon_thread),
        vec![json!("JON-TEXT-e19f hello")]
    );
    let (_, contact) = node.get(&org.agent_token, &format!("/api/v1/contacts/{ivy_contact}"));
    let shown = contact.to_string();
    assert!(!shown.contains("ivy-canary"), "{shown}");
    let (status, _) = node.get(
        &org.agent_token,
        &format!("/api/v1/threads/{ivy_thread}/events/{}/attachments/0", {
            let (_, detail) = node.get(&org.agent_token, &format!("/api/v1/threads/{ivy_thread}"));
            detail["events"]
                .as_array()
                .expect("events")
                .iter()
                .filter(|e| e["kind"] == "thread.message.inbound")
                .nth(1)
                .and_then(|e| e["id"].as_str())
                .expect("the message with the file")
                .to_owned()
        }),
    );
    assert_eq!(status, 404, "the file does not open");
    let (_, queue) = node.get(&org.webchat.token, "/api/v1/bridge/deliveries");
    assert_eq!(
        queue["deliveries"],
        json!([]),
        "the old queue entry does not open"
    );
    node.stop();
}

/// The storage key: kept in `keys/storage.key` by default; a node without it, or with another
/// one, refuses to start with an error that says so, and changes nothing; named by
/// `THREADLINE_STORAGE_KEY_FILE` (kept off the disk the data is on), it opens the same store.
#[test]
fn a_missing_or_wrong_storage_key_is_refused_and_changes_nothing() {
    let org = Org::new();
    let node = Node::start(&org.data);
    let thread = send(&node, &org.webchat, "webchat:kim", "KIM-TEXT-9a01", "wc-k1");
    node.stop();
    let key_file = org.data.join("keys/storage.key");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let moved = elsewhere.path().join("storage.key");
    std::fs::rename(&key_file, &moved).expect("moves the key away");
    let before = files_under(&org.data);

    let out = run_threadline(&org.data, &["check"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("storage.key is missing") && stderr.contains("THREADLINE_STORAGE_KEY_FILE"),
        "{stderr}"
    );
    assert!(
        files_under(&org.data) == before,
        "a refused start changes nothing"
    );

    let wrong = "ab".repeat(32);
    let out = run_threadline_with(&org.data, &["check"], &[("THREADLINE_STORAGE_KEY", &wrong)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("storage key does not open"), "{stderr}");
    assert!(
        files_under(&org.data) == before,
        "a refused start changes nothing"
    );

    let moved = moved.to_str().expect("utf-8 path");
    let node = Node::start_command_with(
        &org.data,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
        "threadline listening on ",
        &[("THREADLINE_STORAGE_KEY_FILE", moved)],
    );
    assert_eq!(
        texts(&node, &org.agent_token, &thread),
        vec![json!("KIM-TEXT-9a01")]
    );
    node.stop();
    assert!(!key_file.exists(), "the key stays where it was put");
}

/// Retention policies (`[retention]`): nothing is due while the conversations are recent; 40
/// days on, the resolved conversation is; 70 days on, the message with a file too; applied,
/// they are erased (and nothing else), and a node running 200 days on erases the contacts no
/// longer active by itself, noting it in the audit trail.
#[test]
fn retention_policies_erase_what_is_due_and_nothing_else() {
    let org = Org::new();
    edit_config(&org.data, |text| {
        text.replace(
            "# erase_inactive_contacts_after_days = 730",
            "erase_inactive_contacts_after_days = 100",
        )
        .replace(
            "# erase_attachments_after_days = 180",
            "erase_attachments_after_days = 60",
        )
        .replace(
            "# erase_resolved_threads_after_days = 365",
            "erase_resolved_threads_after_days = 30",
        )
    });
    let node = Node::start(&org.data);
    let done = send(&node, &org.webchat, "webchat:done-1", "DONE-TEXT", "wc-d1");
    let (status, _) = node.post(
        &org.agent_token,
        &format!("/api/v1/threads/{done}/status"),
        &json!({"status": "resolved"}),
    );
    assert_eq!(status, 200);
    let file_handle = "webchat:file-1";
    let with_file_thread = send(&node, &org.webchat, file_handle, "FILE-INTRO", "wc-f1");
    let bytes = b"FILE-BYTES-0042".repeat(100);
    send_with_file(
        &node,
        &org.webchat,
        file_handle,
        "FILE-CAPTION",
        "wc-f2",
        &bytes,
    );
    let kept = send(&node, &org.webchat, "webchat:kept-1", "KEPT-TEXT", "wc-k1");
    node.stop();

    let due = |offset: &str| -> Vec<String> {
        let out = threadline_tests::threadline_ok_ahead(&org.data, &["retention"], offset);
        out.lines().map(|line| line.trim().to_owned()).collect()
    };
    let now = due("+0d");
    assert!(
        now.contains(&"0 contacts, 0 resolved threads, 0 messages with files".to_owned()),
        "{now:?}"
    );
    let later = due("+40d");
    assert!(
        later.contains(&"0 contacts, 1 resolved threads, 0 messages with files".to_owned()),
        "{later:?}"
    );
    assert!(later
        .iter()
        .any(|l| l.starts_with(&format!("resolved thread {done}"))));
    let later = due("+70d");
    assert!(
        later.contains(&"0 contacts, 1 resolved threads, 1 messages with files".to_owned()),
        "{later:?}"
    );
    assert!(later
        .iter()
        .any(|l| l.starts_with("message ") && l.contains(&with_file_thread.to_string())));
    // A dry run erased nothing.
    assert_eq!(due("+70d"), later);

    let out = threadline_tests::threadline_ok_ahead(&org.data, &["retention", "--apply"], "+70d");
    assert!(out.contains("erased: 0 contacts"), "{out}");
    assert!(
        due("+70d").contains(&"0 contacts, 0 resolved threads, 0 messages with files".to_owned()),
        "applied: nothing left due"
    );
    let node = Node::start(&org.data);
    assert!(texts(&node, &org.agent_token, &done)
        .iter()
        .all(Value::is_null));
    assert_eq!(
        texts(&node, &org.agent_token, &with_file_thread),
        vec![json!("FILE-INTRO"), Value::Null],
        "only the message with the file"
    );
    assert_eq!(
        texts(&node, &org.agent_token, &kept),
        vec![json!("KEPT-TEXT")]
    );
    node.stop();
    for secret in ["DONE-TEXT", "FILE-BYTES-0042", "FILE-CAPTION"] {
        assert_eq!(
            holding(&org.data, secret),
            Vec::<PathBuf>::new(),
            "{secret}"
        );
    }

    // A node living 200 days on applies the policy by itself: every contact is inactive.
    let node = Node::start_ahead(&org.data, "+200d");
    threadline_tests::eventually(
        "the node erases the inactive contacts",
        std::time::Duration::from_secs(30),
        || {
            // The contact gone from search, and its messages' texts (the contact search
            // changes as the writer applies the erasure, the texts once it is committed).
            let (_, found) = node.get(&org.agent_token, "/api/v1/contacts?q=webchat:kept-1");
            let erased = found["contacts"].as_array().is_some_and(Vec::is_empty)
                && texts(&node, &org.agent_token, &kept)
                    .iter()
                    .all(Value::is_null);
            erased.then_some(())
        },
    );
    node.stop();
    let trail = threadline_ok(&org.data, &["audit"]);
    assert_eq!(
        trail
            .lines()
            .filter(|line| line.contains("the retention policy erased contact"))
            .count(),
        3,
        "{trail}"
    );
}

/// `init` with `THREADLINE_STORAGE_KEY_FILE` makes the key there, never in the data folder,
/// and the node opens its store with it.
#[test]
fn a_new_data_folder_can_keep_its_storage_key_elsewhere_from_the_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let key = tmp.path().join("elsewhere").join("storage.key");
    let key_arg = key.to_str().expect("utf-8");
    let out = run_threadline_with(
        &data,
        &["init"],
        &[("THREADLINE_STORAGE_KEY_FILE", key_arg)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&key).expect("made").trim().len(),
        64
    );
    assert!(!data.join("keys/storage.key").exists());
    // Without it, the store does not open; with it, it does.
    let refused = run_threadline(&data, &["check"]);
    assert!(!refused.status.success());
    let checked = run_threadline_with(
        &data,
        &["check"],
        &[("THREADLINE_STORAGE_KEY_FILE", key_arg)],
    );
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}
