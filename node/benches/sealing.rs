//! What encryption at rest costs (issue 17): the two AEADs the issue allows, on a record the
//! size of a message's content and on a 64 KiB attachment part, and reading a thread's events
//! back from the store (opened) per event.
//!
//! `cargo bench -p threadline-node --bench sealing`

use std::time::Instant;

use threadline_node::store::data_keys::{KeyOwner, StorageKey};
use threadline_node::store::{Store, WriteSet};
use threadline_protocol::event::{Content, Draft, EventKind, Scope, ThreadKind};
use threadline_protocol::{ChannelKind, ContactId, OrgId, ScopeId, SecretKey, ThreadId, Timestamp};

fn per_op(what: &str, n: u32, mut op: impl FnMut()) {
    let started = Instant::now();
    for _ in 0..n {
        op();
    }
    println!(
        "{what}: {:.2} µs",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}

fn ciphers() {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    let key = [9u8; 32];
    for size in [120usize, 65_536] {
        let plain = vec![7u8; size];
        let n = if size < 1000 { 100_000 } else { 2_000 };
        let aes = aes_gcm::Aes256Gcm::new((&key).into());
        let nonce = [1u8; 12];
        let sealed = aes
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: &plain,
                    aad: b"aad",
                },
            )
            .expect("seals");
        per_op(&format!("AES-256-GCM open {size} B"), n, || {
            std::hint::black_box(
                aes.decrypt(
                    (&nonce).into(),
                    Payload {
                        msg: &sealed,
                        aad: b"aad",
                    },
                )
                .expect("opens"),
            );
        });
        let xchacha = chacha20poly1305::XChaCha20Poly1305::new((&key).into());
        let nonce = [1u8; 24];
        let sealed = chacha20poly1305::aead::Aead::encrypt(
            &xchacha,
            (&nonce).into(),
            chacha20poly1305::aead::Payload {
                msg: &plain,
                aad: b"aad",
            },
        )
        .expect("seals");
        per_op(&format!("XChaCha20-Poly1305 open {size} B"), n, || {
            std::hint::black_box(
                chacha20poly1305::aead::Aead::decrypt(
                    &xchacha,
                    (&nonce).into(),
                    chacha20poly1305::aead::Payload {
                        msg: &sealed,
                        aad: b"aad",
                    },
                )
                .expect("opens"),
            );
        });
    }
}

fn store_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Store::open(&dir.path().join("store"), &StorageKey::from_bytes([3; 32])).expect("opens");
    let key = SecretKey::from_seed([1; 32]);
    let mut threads = Vec::new();
    for t in 0..1000u64 {
        let root = Draft::new(
            Scope::NewThread,
            vec![],
            0,
            Timestamp::from_millis(1_700_000_000_000 + t),
            EventKind::Thread(ThreadKind::Opened {
                org: OrgId(key.public()),
                contact: ContactId::from_bytes([1; 16]),
                channel: ChannelKind::Webchat,
            }),
        )
        .sign(&key)
        .expect("signs")
        .verify()
        .expect("verifies");
        let thread = ThreadId::from_bytes(*root.id().as_bytes());
        let mut writes = WriteSet::default();
        writes.put_event(&store, &root).expect("stages");
        let mut parent = root.id();
        for n in 0..25u64 {
            let event = Draft::new(
                Scope::Thread(thread),
                vec![parent],
                n + 1,
                Timestamp::from_millis(1_700_000_000_000 + n),
                EventKind::inbound_message(ChannelKind::Webchat),
            )
            .with_content(
                Content::text("a message of some length, as a customer would write one")
                    .with_handle("webchat:visitor-123456".parse().expect("handle")),
            )
            .sign(&key)
            .expect("signs")
            .verify()
            .expect("verifies");
            parent = event.id();
            writes.put_event(&store, &event).expect("stages");
        }
        store.commit(writes).expect("commits");
        threads.push(thread);
    }
    store.flush().expect("flushes");
    let keys = store.keys();
    let data_key = keys
        .current(KeyOwner::Thread(threads[0]))
        .expect("a thread key");
    let plain = vec![7u8; 120];
    per_op(
        "a data key seals 120 B (random nonce included)",
        100_000,
        || {
            std::hint::black_box(keys.seal(data_key, b"aad", &plain).expect("seals"));
        },
    );
    let sealed = keys.seal(data_key, b"aad", &plain).expect("seals");
    per_op("a data key opens 120 B", 100_000, || {
        std::hint::black_box(keys.open_sealed(&sealed, b"aad").expect("opens"));
    });
    for _ in 0..3 {
        let started = Instant::now();
        let mut n = 0;
        for thread in &threads {
            n += store
                .log_events(&ScopeId::Thread(*thread))
                .expect("reads")
                .len();
        }
        println!(
            "a thread's events read back, opened: {:.2} µs an event ({n} events)",
            started.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
}

fn main() {
    ciphers();
    store_reads();
}
