//! One conversation that goes on and on: a visitor's thread takes `BENCH_EVENTS` events
//! (default 100,000) in pairs (an agent's reply, then the web chat bridge's delivered receipt
//! for it), each acknowledged only once durable. Every `BENCH_STEP` events (default 10,000) it
//! prints the time per event over the step, the data folder's size and the process's RSS, so
//! that cost growing with the thread's length shows as a rising column.
//!
//! Run: `cargo bench -p threadline-node --bench long_thread`. Figures: docs/BENCHMARKS.md.

use std::time::Instant;

use threadline_node::{admin, clock, ingest, DataDir};
use threadline_protocol::{
    event::{Draft, EventKind, ReceiptKind, Scope, ThreadKind},
    ChannelKind, Handle,
};

mod common;
use common::{env, rss_mib};

fn main() {
    let n_events = env("BENCH_EVENTS", 100_000);
    let step = env("BENCH_STEP", 10_000).max(2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = DataDir::new(tmp.path().join("data"));
    let initialised = admin::init(&data_dir, clock::now()).expect("init");
    let agent = initialised.first_agent.agent.id;
    let bridge = admin::add_bridge(&data_dir, ChannelKind::Webchat, clock::now()).expect("bridge");
    let identity = data_dir.load_identity().expect("identity");
    let store = admin::open_store(&data_dir).expect("store");
    let (ingest, running) = ingest::start(store.clone(), identity, clock::now).expect("start");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let handle: Handle = "webchat:v-long-thread".parse().expect("handle");

    println!("events   µs/event (last step)   store MB   bytes/event   RSS MiB");
    runtime.block_on(async {
        let thread = ingest
            .resolve(handle.clone())
            .await
            .expect("resolves")
            .thread;
        let mut written = 0usize;
        let mut step_started = Instant::now();
        while written < n_events {
            let reply = ingest
                .act(
                    agent,
                    thread,
                    ingest::Action::Reply {
                        text: format!("reply {written}: the parcel left the warehouse today"),
                        attachments: Vec::new(),
                        reply_to: None,
                    },
                )
                .await
                .expect("reply");
            let next = ingest.resolve(handle.clone()).await.expect("resolves");
            let receipt = Draft::new(
                Scope::Thread(thread),
                next.parents,
                next.depth,
                clock::now(),
                EventKind::Thread(ThreadKind::Receipt {
                    target: reply,
                    channel: ChannelKind::Webchat,
                    receipt: ReceiptKind::Delivered,
                }),
            )
            .sign(&bridge.key)
            .expect("signs");
            let stored = ingest.submit(vec![receipt]).await;
            assert!(
                matches!(stored[0], Ok(ingest::Submitted::Stored(_))),
                "{:?}",
                stored[0]
            );
            written += 2;
            if written.is_multiple_of(step) || written >= n_events {
                let per_event = step_started.elapsed().as_secs_f64() * 1e6 / step as f64;
                let bytes = store.size_on_disk().expect("size");
                println!(
                    "{written:>7}   {per_event:>20.0}   {:>8.1}   {:>11.0}   {:>7.0}",
                    bytes as f64 / 1e6,
                    bytes as f64 / written as f64,
                    rss_mib()
                );
                step_started = Instant::now();
            }
        }
    });
    drop(ingest);
    running.join();
}
