//! The full ingest pipeline under load, with durability on: signed inbound messages from many
//! handles, submitted concurrently, each acknowledged only once flushed to disk.
//!
//! Run: `cargo bench -p threadline-node --bench pipeline` (environment: `BENCH_MESSAGES`,
//! default 200,000; `BENCH_HANDLES`, default 10,000; `BENCH_CONCURRENCY`, default 256;
//! `BENCH_RATE`, default 5,000 per second for the latency run). Figures: docs/BENCHMARKS.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use threadline_node::{admin, clock, ingest, DataDir};
use threadline_protocol::{
    event::{Content, Draft, EventKind, Scope},
    name::ExternalId,
    ChannelKind, Event, EventId, Handle, ScopeId, SecretKey,
};

mod common;
use common::{env, percentile, rss_mib};

struct Chain {
    handle: Handle,
    thread: threadline_protocol::ThreadId,
    parents: Vec<EventId>,
    depth: u64,
}

/// Pre-signs `n` messages spread over the chains, each on its chain's previous message.
fn sign_messages(key: &SecretKey, chains: &mut [Chain], n: usize, tag: &str) -> Vec<Vec<Event>> {
    let mut per_chain: Vec<Vec<Event>> = (0..chains.len()).map(|_| Vec::new()).collect();
    for idx in 0..n {
        let chain_idx = idx % chains.len();
        let chain = &mut chains[chain_idx];
        let event = Draft::new(
            Scope::Thread(chain.thread),
            chain.parents.clone(),
            chain.depth,
            clock::now(),
            EventKind::inbound_message(ChannelKind::Webchat),
        )
        .with_content(
            Content::text(format!("message {idx} from {}", chain.handle))
                .with_handle(chain.handle.clone())
                .with_external_id(ExternalId::new(format!("{tag}-{idx}")).expect("valid")),
        )
        .sign(key)
        .expect("signs");
        chain.parents = vec![event.id().expect("id")];
        chain.depth += 1;
        per_chain[chain_idx].push(event);
    }
    per_chain
}

fn main() {
    if let Ok(path) = std::env::var("PIPELINE_WARM") {
        warm_in_a_fresh_process(std::path::Path::new(&path));
        return;
    }
    let n_messages = env("BENCH_MESSAGES", 200_000);
    let n_handles = env("BENCH_HANDLES", 10_000);
    let concurrency = env("BENCH_CONCURRENCY", 256);
    let rate = env("BENCH_RATE", 5_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = DataDir::new(tmp.path().join("data"));
    admin::init(&data_dir, clock::now()).expect("init");
    let bridge = admin::add_bridge(&data_dir, ChannelKind::Webchat, clock::now()).expect("bridge");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let identity = data_dir.load_identity().expect("identity");
    let store = admin::open_store(&data_dir).expect("store");
    let (ingest, running) =
        ingest::start(store.clone(), identity.clone(), clock::now).expect("start");
    let rss_start = rss_mib();

    // Contacts and threads for every handle (durable too).
    let started = Instant::now();
    let mut chains: Vec<Chain> = runtime.block_on(async {
        let mut chains = Vec::with_capacity(n_handles);
        for idx in 0..n_handles {
            let handle: Handle = format!("webchat:visitor-{idx}").parse().expect("handle");
            let resolved = ingest.resolve(handle.clone()).await.expect("resolves");
            chains.push(Chain {
                handle,
                thread: resolved.thread,
                parents: resolved.parents,
                depth: resolved.depth,
            });
        }
        chains
    });
    println!(
        "resolved {n_handles} new handles (contact + link + thread each) in {:.2?}",
        started.elapsed()
    );

    // Latency at a fixed rate: submit->ack and submit->live stream.
    let n_paced = (rate * 10).min(n_messages);
    let per_chain = sign_messages(&bridge.key, &mut chains, n_paced, "r");
    let mut schedule: Vec<(usize, Event)> = Vec::new();
    let mut cursor = vec![0usize; per_chain.len()];
    for idx in 0..n_paced {
        let chain = idx % per_chain.len();
        schedule.push((idx, per_chain[chain][cursor[chain]].clone()));
        cursor[chain] += 1;
    }
    let (ack, live) = runtime.block_on(async {
        let stream = ingest.subscribe();
        let sent_at: common::SentAt = Arc::default();
        let watcher = common::watch_live(stream, Arc::clone(&sent_at), n_paced);
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let start = Instant::now();
        let mut tasks = Vec::new();
        // Threads' messages must go in order: one task per chain, each sleeping until its slot.
        let mut by_chain: HashMap<usize, Vec<(usize, Event)>> = HashMap::new();
        for (idx, event) in schedule {
            by_chain
                .entry(idx % per_chain.len())
                .or_default()
                .push((idx, event));
        }
        for (_, events) in by_chain {
            let ingest = ingest.clone();
            let sent_at = Arc::clone(&sent_at);
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for (idx, event) in events {
                    let slot = start + interval * idx as u32;
                    tokio::time::sleep_until(slot.into()).await;
                    let sent = Instant::now();
                    sent_at
                        .lock()
                        .expect("lock")
                        .insert(event.id().expect("id"), sent);
                    let result = ingest.submit(vec![event]).await;
                    assert!(matches!(result[0], Ok(ingest::Submitted::Stored(_))));
                    mine.push(sent.elapsed());
                }
                mine
            }));
        }
        let mut ack = Vec::new();
        for task in tasks {
            ack.extend(task.await.expect("task"));
        }
        let live = watcher.await.expect("watcher");
        (ack, live)
    });
    let (mut ack, mut live) = (ack, live);
    ack.sort();
    live.sort();
    println!(
        "at {rate}/s for {n_paced} messages: submit->ack p50 {:.2?} p99 {:.2?}; submit->live stream p50 {:.2?} p99 {:.2?} ({} seen)",
        percentile(&ack, 0.50),
        percentile(&ack, 0.99),
        percentile(&live, 0.50),
        percentile(&live, 0.99),
        live.len()
    );

    // Throughput: every message submitted alone by one of `concurrency` submitters.
    let started = Instant::now();
    let per_chain = sign_messages(&bridge.key, &mut chains, n_messages, "t");
    println!(
        "signed {n_messages} messages in {:.2?} (bridge side, not measured below)",
        started.elapsed()
    );
    let mut lanes: Vec<Vec<Event>> = (0..concurrency).map(|_| Vec::new()).collect();
    for (idx, events) in per_chain.into_iter().enumerate() {
        lanes[idx % concurrency].extend(events);
    }
    let ack_latencies = Arc::new(Mutex::new(Vec::with_capacity(n_messages)));
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for lane in lanes {
            let ingest = ingest.clone();
            let latencies = Arc::clone(&ack_latencies);
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::with_capacity(lane.len());
                for event in lane {
                    let sent = Instant::now();
                    let result = ingest.submit(vec![event]).await;
                    assert!(
                        matches!(result[0], Ok(ingest::Submitted::Stored(_))),
                        "{:?}",
                        result[0]
                    );
                    mine.push(sent.elapsed());
                }
                latencies.lock().expect("lock").extend(mine);
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
    });
    let elapsed = started.elapsed();
    let mut latencies = ack_latencies.lock().expect("lock").clone();
    latencies.sort();
    println!(
        "throughput: {n_messages} durable messages in {elapsed:.2?} = {:.0}/s with {concurrency} concurrent submitters; submit->ack p50 {:.2?} p99 {:.2?}",
        n_messages as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );

    let total = store.n_events();
    let disk = store.size_on_disk().expect("size");
    let events_dir = data_dir.store_path().join("events");
    let event_log: u64 = std::fs::read_dir(&events_dir)
        .expect("event log")
        .map(|entry| entry.expect("entry").metadata().expect("metadata").len())
        .sum();
    let rss_end = rss_mib();
    let data_keys = std::fs::metadata(
        data_dir
            .store_path()
            .join(threadline_node::store::DATA_KEYS),
    )
    .map_or(0, |meta| meta.len());
    println!(
        "store: {} data keys held ({:.1} MiB of data-keys file)",
        store.keys().len(),
        data_keys as f64 / 1048576.0
    );
    println!(
        "store: event log {:.1} MiB ({:.0} bytes per event), sled {:.1} MiB",
        event_log as f64 / 1048576.0,
        event_log as f64 / total as f64,
        (disk - event_log) as f64 / 1048576.0
    );
    println!(
        "store: {total} events, {:.1} MiB on disk = {:.0} MiB per million events; process RSS {:.0} MiB -> {:.0} MiB",
        disk as f64 / 1048576.0,
        disk as f64 / 1048576.0 / (total as f64 / 1e6),
        rss_start,
        rss_end
    );

    // Reopen: no replay of threads.
    drop(ingest);
    running.join();
    store.flush().expect("flush");
    drop(store);
    let started = Instant::now();
    let store = admin::open_store(&data_dir).expect("store");
    let opened = started.elapsed();
    let (ingest, running) =
        ingest::start(store.clone(), identity.clone(), clock::now).expect("start");
    let reopened = started.elapsed();
    println!("reopen: sled opened the store in {opened:.2?}");
    let sample = chains[0].thread;
    let state = store.thread_state(&sample).expect("read").expect("state");
    println!(
        "reopen: store of {} events open and serving in {reopened:.2?} (sample thread has {} events)",
        store.n_events(),
        state.n_events
    );
    let _ = ScopeId::Thread(sample);
    drop(ingest);
    running.join();
    drop(store);

    // Again: sled 0.34 writes its page-table snapshot only when it opens a store, and replays
    // its log from that snapshot, so this open starts from the one the first reopen wrote.
    let started = Instant::now();
    let store = admin::open_store(&data_dir).expect("store");
    let opened = started.elapsed();
    let (ingest, running) = ingest::start(store.clone(), identity, clock::now).expect("start");
    println!(
        "second reopen: sled opened the store in {opened:.2?}, serving in {:.2?}; RSS {:.0} MiB",
        started.elapsed(),
        rss_mib()
    );

    // What the writer pays for a thread not in its cache: read its log (the events as
    // verified when stored) and rebuild the DAG (as `ThreadCache::load` does).
    let sample: Vec<_> = chains.iter().take(1000).map(|chain| chain.thread).collect();
    let (mut read, mut rebuilt, mut n_events) = (Duration::ZERO, Duration::ZERO, 0usize);
    for thread in &sample {
        let started = Instant::now();
        let verified = store
            .verified_log(&ScopeId::Thread(*thread))
            .expect("reads");
        read += started.elapsed();
        n_events += verified.len();
        let started = Instant::now();
        threadline_protocol::thread::Thread::restore(verified).expect("restores");
        rebuilt += started.elapsed();
    }
    let per_event = |total: Duration| total.as_secs_f64() * 1e6 / n_events.max(1) as f64;
    println!(
        "cold thread loads: {} threads of {} events on average: {:.0} µs a thread; per event: read {:.1} µs, rebuilt {:.1} µs",
        sample.len(),
        n_events / sample.len().max(1),
        (read + rebuilt).as_secs_f64() * 1e6 / sample.len().max(1) as f64,
        per_event(read),
        per_event(rebuilt)
    );
    drop(ingest);
    running.join();
    drop(store);

    // A node as it runs after a restart: a fresh process that opens the store and loads every
    // thread into the writer's cache (as the first message to each would).
    let output = std::process::Command::new(std::env::current_exe().expect("this bench"))
        .env("PIPELINE_WARM", data_dir.root())
        .env("BENCH_HANDLES", n_handles.to_string())
        .output()
        .expect("runs");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(output.status.success(), "{output:?}");
}

/// Opens the node's store at `data` in this (fresh) process, resolves every bench handle (which
/// loads its thread into the writer's cache) and reports the time and the memory that takes.
fn warm_in_a_fresh_process(data: &std::path::Path) {
    let n_handles = env("BENCH_HANDLES", 10_000);
    let data_dir = DataDir::new(data.to_path_buf());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let identity = data_dir.load_identity().expect("identity");
    let started = Instant::now();
    let store = admin::open_store(&data_dir).expect("store");
    let (ingest, running) = ingest::start(store.clone(), identity, clock::now).expect("start");
    let opened = started.elapsed();
    let rss_open = rss_mib();
    let started = Instant::now();
    runtime.block_on(async {
        for idx in 0..n_handles {
            let handle: Handle = format!("webchat:visitor-{idx}").parse().expect("handle");
            ingest.resolve(handle).await.expect("resolves");
        }
    });
    let warmed = started.elapsed();
    let n_events = store.n_events();
    let rss_warm = rss_mib();
    println!(
        "fresh process: {n_events} events open and serving in {opened:.2?} (RSS {rss_open:.0} MiB); \
         {n_handles} threads loaded into the writer's cache in {warmed:.2?}; RSS {rss_warm:.0} MiB \
         = {:.0} MiB per million events",
        rss_warm / (n_events as f64 / 1e6)
    );
    drop(ingest);
    running.join();
}
