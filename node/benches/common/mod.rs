//! Helpers the bench binaries share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use threadline_node::ingest::LiveEvent;
use threadline_protocol::EventId;
use tokio::sync::broadcast;

/// A count from the environment, or `default`.
pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0–1) of sorted durations; zero for none.
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
