//! Helpers the bench binaries share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use threadline_node::config::Config;
use threadline_node::ingest::LiveEvent;
use threadline_node::{admin, clock, server, DataDir};
use threadline_protocol::EventId;
use tokio::sync::broadcast;

/// The allocator the `threadline` binary uses (its `main.rs`), so benches measure the same.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A count from the environment, or `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's resident memory, in MiB (0 where `/proc` cannot say).
#[allow(dead_code)] // not every bench uses every helper
pub fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The `p` quantile (0–1) of sorted durations; zero for none.
#[allow(dead_code)]
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// When each event was submitted, for [`watch_live`].
pub type SentAt = Arc<Mutex<HashMap<EventId, Instant>>>;

/// Watches a node's live stream until `n` of the events in `sent_at` have shown up (or none
/// for 30 s), and gives each one's latency from its submission.
#[allow(dead_code)] // Not every bench watches a live stream.
pub fn watch_live(
    mut stream: broadcast::Receiver<LiveEvent>,
    sent_at: SentAt,
    n: usize,
) -> tokio::task::JoinHandle<Vec<Duration>> {
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        while latencies.len() < n {
            match tokio::time::timeout(Duration::from_secs(30), stream.recv()).await {
                Ok(Ok(change)) => {
                    let received = Instant::now();
                    if let Some(sent) = sent_at.lock().expect("lock").get(&change.event) {
                        latencies.push(received - *sent);
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                _ => break,
            }
        }
        latencies
    })
}

/// `config` with the built-in WhatsApp bridge for the business number `phone_number_id`,
/// webhooks signed with `app_secret`; nothing is sent (no Graph API is reachable).
#[allow(dead_code)]
pub fn with_whatsapp(config: Config, phone_number_id: &str, app_secret: &str) -> Config {
    Config {
        whatsapp: Some(threadline_node::config::MetaConfig {
            account_id: phone_number_id.to_owned(),
            link_name: None,
            human_agent: false,
            access_token: "bench-token".to_owned(),
            app_secret: app_secret.to_owned(),
            verify_token: "bench-verify-token-0123456789".to_owned(),
            graph_url: "http://127.0.0.1:9".to_owned(),
            graph_version: "v21.0".to_owned(),
        }),
        ..config
    }
}

/// A WhatsApp `messages` webhook delivery as Meta sends it: customer number `customer` (a
/// wa_id of their own, with the profile name `Customer <n>`) writes `text` to the business
/// number `phone_number_id`, with the message id `wamid`.
#[allow(dead_code)]
pub fn whatsapp_delivery(
    phone_number_id: &str,
    customer: usize,
    wamid: &str,
    text: &str,
) -> Vec<u8> {
    let wa_id = format!("49151{customer:08}");
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": { "display_phone_number": "15550783881", "phone_number_id": phone_number_id },
                    "contacts": [{ "profile": { "name": format!("Customer {customer}") }, "wa_id": wa_id }],
                    "messages": [{
                        "from": wa_id,
                        "id": wamid,
                        "timestamp": "1767225600",
                        "type": "text",
                        "text": { "body": text }
                    }]
                }
            }]
        }]
    })
    .to_string()
    .into_bytes()
}

fn serve(
    runtime: &tokio::runtime::Runtime,
    data_dir: DataDir,
    config: Config,
    listener: tokio::net::TcpListener,
    smtp: Option<tokio::net::TcpListener>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(async move {
        server::run_with(&data_dir, &config, listener, smtp, async move {
            let _ = stopped.await;
        })
        .await
        .expect("node runs");
    });
    (stop, server)
}

/// A node in this process, on a fresh data folder, with its API on a loopback port.
#[allow(dead_code)] // Not every bench starts a node.
pub struct BenchNode {
    /// The runtime the node runs on (for the bench's own async work too).
    pub runtime: tokio::runtime::Runtime,
    /// The API's address.
    pub address: std::net::SocketAddr,
    /// `http://<address>`.
    pub base: String,
    /// The first agent's token.
    pub token: String,
    /// The email bridge's SMTP port, when started with one.
    pub smtp_port: Option<u16>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    config: Config,
    _data: tempfile::TempDir,
}

#[allow(dead_code)]
impl BenchNode {
    /// Starts a node whose config is `configure` applied to [`Config::loopback`], with an SMTP
    /// listener for the email bridge when `smtp`.
    pub fn start(smtp: bool, configure: impl FnOnce(Config) -> Config) -> BenchNode {
        BenchNode::start_prepared(smtp, |_| {}, configure)
    }

    /// [`BenchNode::start`], with `prepare` run on the initialised data folder before the
    /// node starts (to add agents and bridges).
    pub fn start_prepared(
        smtp: bool,
        prepare: impl FnOnce(&DataDir),
        configure: impl FnOnce(Config) -> Config,
    ) -> BenchNode {
        let data = tempfile::tempdir().expect("tempdir");
        let data_dir = DataDir::new(data.path().join("data"));
        let initialised = admin::init(&data_dir, clock::now()).expect("init");
        prepare(&data_dir);
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let bind = || {
            runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("listen")
        };
        let listener = bind();
        let smtp = smtp.then(bind);
        let address = listener.local_addr().expect("address");
        let smtp_port = smtp
            .as_ref()
            .map(|smtp| smtp.local_addr().expect("address").port());
        let config = configure(Config::loopback(address));
        let (stop, server) = serve(&runtime, data_dir, config.clone(), listener, smtp);
        BenchNode {
            runtime,
            address,
            base: format!("http://{address}"),
            token: initialised.first_agent.token.clone(),
            smtp_port,
            stop,
            server,
            config,
            _data: data,
        }
    }

    /// Stops the node and starts it again on the same data folder and address (without its
    /// SMTP listener).
    pub fn restart(self) -> BenchNode {
        let _ = self.stop.send(());
        self.runtime.block_on(self.server).expect("node stops");
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind(self.address))
            .expect("listen again");
        let data_dir = DataDir::new(self._data.path().join("data"));
        let (stop, server) = serve(&self.runtime, data_dir, self.config.clone(), listener, None);
        BenchNode {
            stop,
            server,
            smtp_port: None,
            ..self
        }
    }

    /// The node's data folder.
    pub fn data_path(&self) -> std::path::PathBuf {
        self._data.path().join("data")
    }

    /// Stops the node and waits until it has.
    pub fn stop(self) {
        let _ = self.stop.send(());
        self.runtime.block_on(self.server).expect("node stops");
    }
}
