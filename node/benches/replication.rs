//! Replication between two nodes of one org, in one process, over loopback TCP through a
//! byte-counting proxy:
//!
//! 1. catch-up: node A holds `BENCH_EVENTS` events (default 1,000,000) over `BENCH_THREADS`
//!    threads (default 10,000); node B joins and pulls them all. Events per second, and bytes
//!    on the wire per event (both directions).
//! 2. in-sync reconnect: B restarts; bytes exchanged until it is in sync again (transport
//!    handshakes included).
//! 3. live: A takes `BENCH_RATE` new events per second (default 1,000) for 10 s; latency from
//!    A's submit to B's live stream, p50 and p99.
//! 4. attachments: A takes `BENCH_FILES` messages (default 100), each with a file of
//!    `BENCH_FILE_BYTES` (default 1,000,000); time until B has fetched every file (whole and
//!    hash-checked), MB/s and bytes on the wire per file byte.
//!
//! Run: `cargo bench -p threadline-node --bench replication`. Figures: docs/BENCHMARKS.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use threadline_node::{
    admin, clock, ingest,
    replication::{self, logs},
    DataDir,
};
use threadline_protocol::{
    event::{Content, Draft, EventKind, Scope},
    name::ExternalId,
    sync::summaries_digest,
    ChannelKind, Event, EventId, Handle, SecretKey, StateHash, ThreadId,
};

mod common;
use common::{env, percentile};

struct Chain {
    handle: Handle,
    thread: ThreadId,
    parents: Vec<EventId>,
    depth: u64,
}

fn message(key: &SecretKey, chain: &mut Chain, tag: &str) -> Event {
    message_with(key, chain, tag, None)
}

/// A customer's message on `chain`, with a file if given.
fn message_with(
    key: &SecretKey,
    chain: &mut Chain,
    tag: &str,
    file: Option<threadline_protocol::event::Attachment>,
) -> Event {
    let content = Content::text(format!("message {tag} from {}", chain.handle))
        .with_handle(chain.handle.clone())
        .with_external_id(ExternalId::new(tag.to_owned()).expect("valid"));
    let event = Draft::new(
        Scope::Thread(chain.thread),
        chain.parents.clone(),
        chain.depth,
        clock::now(),
        EventKind::inbound_message(ChannelKind::Webchat),
    )
    .with_content(match file {
        Some(file) => content.with_attachment(file),
        None => content,
    })
    .sign(key)
    .expect("signs");
    chain.parents = vec![event.id().expect("id")];
    chain.depth += 1;
    event
}

/// A running node: its pipeline and its replication task.
struct Running {
    ingest: ingest::Ingest,
    writer: ingest::Running,
    replication: tokio::task::JoinHandle<()>,
    store: threadline_node::store::Store,
}

fn start(runtime: &tokio::runtime::Runtime, data_dir: &DataDir) -> Running {
    let identity = data_dir.load_identity().expect("identity");
    let store = admin::open_store(data_dir).expect("store");
    let (ingest, writer) = ingest::start(store.clone(), identity, clock::now).expect("start");
    let settings = replication::service::Settings {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        peers: Vec::new(),
        peers_file: Some(data_dir.peers_path()),
        mdns: false,
        partners: Vec::new(),
        partners_file: None,
    };
    let task = {
        let _guard = runtime.enter();
        replication::service::start(ingest.clone(), data_dir.clone(), settings).expect("start")
    };
    let replication = runtime.spawn(task);
    Running {
        ingest,
        writer,
        replication,
        store,
    }
}

fn stop(runtime: &tokio::runtime::Runtime, node: Running) {
    node.writer.closing().close();
    runtime
        .block_on(node.replication)
        .expect("replication task");
    drop(node.ingest);
    node.writer.join();
    node.store.flush().expect("flush");
}

fn digest(store: &threadline_node::store::Store, org: threadline_protocol::OrgId) -> StateHash {
    let summaries = logs::shared_summaries(store, org, org).expect("summaries");
    summaries_digest(&summaries)
}

/// A TCP proxy to `target` that counts the bytes it carries, both ways.
async fn proxy(target: std::net::SocketAddr, bytes: Arc<AtomicU64>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let bytes = Arc::clone(&bytes);
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (mut ri, mut wi) = inbound.into_split();
                let (mut ro, mut wo) = outbound.into_split();
                let up = {
                    let bytes = Arc::clone(&bytes);
                    async move { copy_counting(&mut ri, &mut wo, &bytes).await }
                };
                let down = async move { copy_counting(&mut ro, &mut wi, &bytes).await };
                let _ = tokio::join!(up, down);
            });
        }
    });
    address
}

async fn copy_counting(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    bytes: &AtomicU64,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn main() {
    let n_events = env("BENCH_EVENTS", 1_000_000);
    let n_threads = env("BENCH_THREADS", 10_000);
    let rate = env("BENCH_RATE", 1_000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let a_dir = DataDir::new(tmp.path().join("a"));
    admin::init(&a_dir, clock::now()).expect("init");
    let bridge = admin::add_bridge(&a_dir, ChannelKind::Webchat, clock::now()).expect("bridge");
    let org = a_dir.load_identity().expect("identity").org;
    let a = start(&runtime, &a_dir);

    // A's history: contacts and threads, then messages, through its pipeline.
    let started = Instant::now();
    let mut chains: Vec<Chain> = runtime.block_on(async {
        let mut chains = Vec::with_capacity(n_threads);
        for idx in 0..n_threads {
            let handle: Handle = format!("webchat:visitor-{idx}").parse().expect("handle");
            let resolved = a.ingest.resolve(handle.clone()).await.expect("resolves");
            chains.push(Chain {
                handle,
                thread: resolved.thread,
                parents: resolved.parents,
                depth: resolved.depth,
            });
        }
        chains
    });
    let n_messages = n_events.saturating_sub(n_threads * 4).max(n_threads);
    let per_chain = n_messages / n_threads;
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for group in chains.chunks_mut(n_threads.div_ceil(8)) {
            let mut group: Vec<Chain> = group
                .iter()
                .map(|c| Chain {
                    handle: c.handle.clone(),
                    thread: c.thread,
                    parents: c.parents.clone(),
                    depth: c.depth,
                })
                .collect();
            let ingest = a.ingest.clone();
            let key = bridge.key.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..per_chain {
                    let events: Vec<Event> = group
                        .iter_mut()
                        .map(|chain| message(&key, chain, &format!("h{round}-{}", chain.handle)))
                        .collect();
                    for batch in events.chunks(256) {
                        for result in ingest.submit(batch.to_vec()).await {
                            assert!(matches!(result, Ok(ingest::Submitted::Stored(_))));
                        }
                    }
                }
                group
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("task"));
        }
        chains = all;
    });
    let held = a.store.n_events();
    println!(
        "node A holds {held} events over {n_threads} threads (built in {:.1?})",
        started.elapsed()
    );

    // B joins through the counting proxy.
    let a_listen = loop {
        if let Some(address) = a.ingest.replication().view().listening.first() {
            break address.clone();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let a_multiaddr: libp2p::Multiaddr = a_listen.parse().expect("multiaddr");
    let a_peer = threadline_node::identity::peer_of(&a_multiaddr).expect("peer id");
    let a_port = a_multiaddr
        .iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("port");
    let wire = Arc::new(AtomicU64::new(0));
    let proxy_address = runtime.block_on(proxy(
        std::net::SocketAddr::from(([127, 0, 0, 1], a_port)),
        Arc::clone(&wire),
    ));
    let via_proxy = format!("/ip4/127.0.0.1/tcp/{}/p2p/{a_peer}", proxy_address.port());
    let invite = admin::invite(
        &a_dir,
        via_proxy.clone(),
        clock::now().saturating_add_millis(3_600_000),
    )
    .expect("invite");
    let joined = runtime
        .block_on(replication::join::join(
            &invite,
            clock::now(),
            Duration::from_secs(60),
        ))
        .expect("join");
    let b_dir = DataDir::new(tmp.path().join("b"));
    admin::init_joined(&b_dir, joined, &via_proxy, clock::now()).expect("init joined");

    // 1. Catch-up.
    let target = digest(&a.store, org);
    wire.store(0, Ordering::Relaxed);
    let started = Instant::now();
    let b = start(&runtime, &b_dir);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if digest(&b.store, org) == target {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "catch-up stalled"
        );
    }
    let took = started.elapsed();
    let bytes = wire.load(Ordering::Relaxed);
    println!(
        "catch-up: {held} events in {took:.1?}: {:.0} events/s; {bytes} bytes on the wire, {:.0} bytes/event",
        held as f64 / took.as_secs_f64(),
        bytes as f64 / held as f64
    );

    // 2. In-sync reconnect.
    stop(&runtime, b);
    wire.store(0, Ordering::Relaxed);
    let b = start(&runtime, &b_dir);
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let view = b.ingest.replication().view();
        if view.peers.iter().any(|peer| peer.in_sync) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no reconnect");
    }
    // Let anything still in flight arrive.
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "in-sync reconnect with {n_threads} threads: {} bytes on the wire, both directions, handshakes included (in sync after {:.1?})",
        wire.load(Ordering::Relaxed),
        started.elapsed()
    );

    // 3. Live latency at a fixed rate.
    let n_live = rate * 10;
    let (latencies, seen) = runtime.block_on(async {
        let stream = b.ingest.subscribe();
        let sent_at: common::SentAt = Arc::default();
        let watcher = common::watch_live(stream, Arc::clone(&sent_at), n_live);
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let begin = Instant::now();
        let n_chains = chains.len();
        for idx in 0..n_live {
            tokio::time::sleep_until((begin + interval * idx as u32).into()).await;
            let chain = &mut chains[idx % n_chains];
            let event = message(&bridge.key, chain, &format!("live-{idx}"));
            let id = event.id().expect("id");
            sent_at.lock().expect("lock").insert(id, Instant::now());
            let ingest = a.ingest.clone();
            tokio::spawn(async move {
                let result = ingest.submit(vec![event]).await;
                assert!(matches!(result[0], Ok(ingest::Submitted::Stored(_))));
            });
        }
        let mut latencies = watcher.await.expect("watcher");
        latencies.sort();
        let seen = latencies.len();
        (latencies, seen)
    });
    println!(
        "live at {rate}/s for {n_live} events: A submit -> B live stream p50 {:.2?} p99 {:.2?} ({seen} seen)",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    );

    // 4. Attachments: messages with files on A; B fetches the files.
    let n_files = env("BENCH_FILES", 100);
    let file_bytes = env("BENCH_FILE_BYTES", 1_000_000);
    let wire_before = wire.load(Ordering::Relaxed);
    let started = Instant::now();
    let blobs: Vec<threadline_protocol::id::BlobHash> = runtime.block_on(async {
        let mut blobs = Vec::with_capacity(n_files);
        for idx in 0..n_files {
            let bytes: Vec<u8> = (0..file_bytes)
                .map(|i| (i as u64).wrapping_mul(idx as u64 + 7).to_le_bytes()[1])
                .collect();
            let blob = a.ingest.store().blobs().put(&bytes).expect("stored");
            // As the bridge API does when the bridge uploads it.
            a.ingest
                .store()
                .record_upload(threadline_protocol::ChannelKind::Webchat, &blob)
                .expect("upload recorded");
            let n_chains = chains.len();
            let file = threadline_protocol::event::Attachment::new(
                blob,
                bytes.len() as u64,
                threadline_protocol::name::AttachmentMeta::new("application/pdf").expect("valid"),
                threadline_protocol::name::AttachmentMeta::new(format!("{idx}.pdf"))
                    .expect("valid"),
            );
            let event = message_with(
                &bridge.key,
                &mut chains[idx % n_chains],
                &format!("file-{idx}"),
                Some(file),
            );
            let result = a.ingest.submit(vec![event]).await;
            assert!(
                matches!(result[0], Ok(ingest::Submitted::Stored(_))),
                "{result:?}"
            );
            blobs.push(blob);
        }
        blobs
    });
    let b_store = b.ingest.store().clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !blobs
        .iter()
        .all(|blob| b_store.blobs().size(blob).ok().flatten() == Some(file_bytes as u64))
    {
        assert!(Instant::now() < deadline, "B never got every file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let total = (n_files * file_bytes) as f64;
    println!(
        "attachments: {n_files} files of {file_bytes} bytes on A -> all on B in {took:.2?}: {:.1} MB/s; {:.3} wire bytes per file byte",
        total / took.as_secs_f64() / 1e6,
        (wire.load(Ordering::Relaxed) - wire_before) as f64 / total,
    );
    stop(&runtime, b);
    stop(&runtime, a);
}
