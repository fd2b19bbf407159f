//! The store at scale, without the pipeline: `BENCH_EVENTS` events (default 10,000,000) over
//! `BENCH_THREADS` threads (default 100,000) committed straight through `Store::commit` in
//! groups of `BENCH_BATCH` (512), each with an external key, each group flushed. Then the
//! store is opened again in a fresh process (this binary, started again), which prints how
//! long the open took and its RSS: start-up and memory at a size the pipeline bench cannot
//! reach in a bench's time (its writer reloads threads that do not fit its cache).
//!
//! The events are one real encoding (a signed web chat message) stored under synthetic ids:
//! the store neither verifies nor decodes what it appends, so what is measured is the store's
//! own cost: writing, disk, and the index it rebuilds at open.
//!
//! Run: `cargo bench -p threadline-node --bench store_scale` (`STORE_SCALE_PATH=dir` keeps the
//! store there; `STORE_SCALE_OPEN=dir` only opens one). Figures: docs/BENCHMARKS.md.

use std::time::Instant;

use threadline_node::store::{log_key, Store, TreeName, WriteSet};
use threadline_protocol::{
    event::{Content, Draft, EventKind, Scope},
    ChannelKind, EventId, ScopeId, SecretKey, ThreadId, Timestamp,
};

mod common;
use common::{env, rss_mib};

/// The storage key of the bench's store (a fixed one, so a fresh process opens it again).
fn bench_key() -> threadline_node::store::data_keys::StorageKey {
    threadline_node::store::data_keys::StorageKey::from_bytes([9; 32])
}

fn main() {
    if let Ok(path) = std::env::var("STORE_SCALE_OPEN") {
        let started = Instant::now();
        let store = Store::open(std::path::Path::new(&path), &bench_key()).expect("opens");
        let opened = started.elapsed();
        let rss = rss_mib();
        // A log is put together from the checkpoints the first time it is used: time the
        // first lookup in 1,000 threads' logs (each ~`BENCH_EVENTS / BENCH_THREADS` events).
        let n_threads = env("BENCH_THREADS", 100_000).max(1);
        let started = Instant::now();
        let mut found = 0usize;
        for n in (0..n_threads).step_by((n_threads / 1000).max(1)).take(1000) {
            let id = EventId::from_bytes(event_id(n));
            found += usize::from(store.contains_event(&thread_scope(n), &id).expect("reads"));
        }
        let first_reads = started.elapsed();
        assert_eq!(
            found,
            1000.min(n_threads),
            "every thread's first event is found"
        );
        let started = Instant::now();
        let n_events = store.n_events();
        println!(
            "fresh process: opened a store of {n_events} events in {opened:.2?}; RSS {rss:.0} MiB; \
             first lookup in 1,000 threads' logs {first_reads:.2?}; \
             counting every event {:.2?}; RSS {:.0} MiB",
            started.elapsed(),
            rss_mib()
        );
        return;
    }
    let n_events = env("BENCH_EVENTS", 10_000_000);
    let n_threads = env("BENCH_THREADS", 100_000).max(1);
    let batch = env("BENCH_BATCH", 512).max(1);
    let tmp = tempfile::tempdir().expect("tempdir");
    // `STORE_SCALE_PATH`: build the store there and keep it (to profile an open of it).
    let path = std::env::var("STORE_SCALE_PATH")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().join("store"));
    let store = Store::open(&path, &bench_key()).expect("opens");

    let key = SecretKey::from_seed([7; 32]);
    let thread = ThreadId::from_bytes([1; 32]);
    let template = Draft::new(
        Scope::Thread(thread),
        vec![EventId::from_bytes([2; 32])],
        1,
        Timestamp::from_millis(1_700_000_000_000),
        EventKind::inbound_message(ChannelKind::Webchat),
    )
    .with_content(Content::text(
        "Hello, is my order on its way? It was due on Tuesday.",
    ))
    .sign(&key)
    .expect("signs");
    let bytes = template.to_bytes().expect("encodes");
    println!(
        "{n_events} events of {} bytes over {n_threads} threads, {batch} a commit",
        bytes.len()
    );

    let started = Instant::now();
    let mut step_started = Instant::now();
    let step = (n_events / 10).max(1);
    let mut written = 0usize;
    let mut step_from = 0usize;
    while written < n_events {
        let mut writes = WriteSet::default();
        let upto = (written + batch).min(n_events);
        for n in written..upto {
            let id = event_id(n);
            let scope = thread_scope(n % n_threads);
            writes.insert(
                TreeName::Log,
                log_key(&scope, &EventId::from_bytes(id)).to_vec(),
                bytes.clone(),
            );
            // A key as the store makes them: the channel, then a SHA-256.
            let mut external = vec![channel_byte()];
            external.extend_from_slice(&<sha2::Sha256 as sha2::Digest>::digest(id));
            writes.insert(TreeName::ExternalIds, external, id.to_vec());
        }
        store.commit(writes).expect("commits");
        store.flush().expect("flushes");
        let before = written;
        written = upto;
        if written / step != before / step || written == n_events {
            let elapsed = step_started.elapsed();
            println!(
                "{written:>10} events: {:>8.0} events/s over the step; {:>7.0} MiB on disk ({:.0} bytes an event); RSS {:.0} MiB",
                (written - step_from) as f64 / elapsed.as_secs_f64().max(1e-9),
                store.size_on_disk().expect("size") as f64 / 1048576.0,
                store.size_on_disk().expect("size") as f64 / written as f64,
                rss_mib()
            );
            step_started = Instant::now();
            step_from = written;
        }
    }
    println!(
        "written: {n_events} events in {:.1?} = {:.0} events/s",
        started.elapsed(),
        n_events as f64 / started.elapsed().as_secs_f64()
    );
    drop(store);

    // Start-up, in this process (the file cache is warm) and in a fresh one.
    let started = Instant::now();
    let store = Store::open(&path, &bench_key()).expect("reopens");
    println!(
        "reopened a store in {:.2?}; RSS {:.0} MiB",
        started.elapsed(),
        rss_mib()
    );
    drop(store);
    let output = std::process::Command::new(std::env::current_exe().expect("this bench"))
        .env("STORE_SCALE_OPEN", &path)
        .output()
        .expect("runs");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(output.status.success(), "{output:?}");
}

/// The id of event `n`.
fn event_id(n: usize) -> [u8; 32] {
    let mut id = [0xeeu8; 32];
    id[..8].copy_from_slice(&(n as u64).to_be_bytes());
    id
}

/// The scope of thread `n`.
fn thread_scope(n: usize) -> ScopeId {
    let mut thread = [0u8; 32];
    thread[..8].copy_from_slice(&(n as u64).to_be_bytes());
    ScopeId::Thread(ThreadId::from_bytes(thread))
}

/// The web chat's channel byte, as the store's external keys begin.
fn channel_byte() -> u8 {
    threadline_node::store::channel_key(ChannelKind::Webchat)
}
