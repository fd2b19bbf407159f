//! The outbound webhooks' queue and delivery log.
//!
//! The ingest writer queues a delivery for each subscription an event of this node matches,
//! in the same commit as the event ([`Queued`], keyed by when it is due and its sequence
//! number, [`queue_key`], so what is due is a range at the tree's start), so an
//! acknowledged event is never missing its deliveries. The delivery task takes what is due,
//! and after each attempt either removes the entry or puts it back with its next time; every
//! attempt is a line of the log ([`Attempt`], the newest [`MAX_LOG_RECORDS`] kept). An attempt
//! is logged before its entry is removed, so a crash between the two sends it again: delivery
//! is at least once, with the same delivery id.

use serde::{Deserialize, Serialize};
use threadline_protocol::{codec, EventId, ThreadId};

use super::{decode, Store, StoreError, TreeName};

/// Attempts kept in the delivery log, all subscriptions together (a few hundred more between
/// prunings).
pub const MAX_LOG_RECORDS: usize = 10_000;

/// The log is pruned once every this many attempts.
const PRUNE_EVERY: u64 = 256;

/// Attempts logged since the node started.
static LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A delivery waiting in the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// The subscription's name.
    pub webhook: String,
    /// The topic's number ([`crate::outbound_webhooks::Topic`]).
    pub topic: u8,
    /// The thread of the event.
    pub thread: ThreadId,
    /// The event.
    pub event: EventId,
    /// When it was queued (ms).
    pub queued_at: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not to be tried before (ms).
    pub next_at: u64,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed; it is tried again at `next_at`.
    Retrying,
    /// It failed the last time allowed: given up.
    Failed,
    /// Not sent: its subscription is gone, or its event or thread.
    Dropped,
}

impl Outcome {
    /// The API's name.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retrying => "retrying",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
        }
    }
}

/// One line of the delivery log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The delivery's place in this node's queue (the same on every attempt; the id receivers see is
    /// `outbound_webhooks::delivery_id`).
    pub delivery: u64,
    /// The subscription's name.
    pub webhook: String,
    /// The topic's number.
    pub topic: u8,
    /// The thread of the event.
    pub thread: ThreadId,
    /// The event.
    pub event: EventId,
    /// Which attempt (from 1).
    pub attempt: u32,
    /// When it was made (ms).
    pub at: u64,
    /// How long the receiver took to answer (ms).
    pub took_ms: u64,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// For a retry, when (ms).
    pub next_at: Option<u64>,
}

/// Deliveries due (each with its id), and when the next of the others is due.
pub type Due = (Vec<(u64, Queued)>, Option<u64>);

impl Store {
    /// The queued deliveries due by `now` (ms), earliest first, at most `limit`, each with
    /// its id; and when the next of the others is due.
    pub fn webhooks_due(&self, now: u64, limit: usize) -> Result<Due, StoreError> {
        let queue = self.tree(TreeName::WebhookQueue);
        let mut due = Vec::new();
        for entry in queue.iter() {
            let (key, value) = entry?;
            let parsed = parse_key(&key).and_then(|(next_at, seq)| {
                Ok((next_at, seq, decode::<Queued>("webhook_queue", &value)?))
            });
            let (next_at, seq, queued) = match parsed {
                Ok(parsed) => parsed,
                // Never sendable: named and taken out, so it holds up nothing behind it.
                Err(err) => {
                    tracing::error!(key = %hex::encode(&key), cause = %err, "an unreadable webhook delivery was dropped");
                    queue.remove(&key)?;
                    continue;
                }
            };
            if next_at > now || due.len() == limit {
                return Ok((due, Some(next_at)));
            }
            due.push((seq, queued));
        }
        Ok((due, None))
    }

    /// Puts delivery `seq` off until `next_at` without counting an attempt (its receiver just
    /// failed another delivery).
    pub fn defer_webhook(&self, seq: u64, queued: &Queued, next_at: u64) -> Result<(), StoreError> {
        let later = Queued {
            next_at,
            ..queued.clone()
        };
        self.requeue(seq, queued, Some(&later))
    }

    /// Takes delivery `seq` (queued as `queued`) out of the queue, or moves it to `later`'s
    /// time, in one atomic batch (a crash leaves it where it was or where it goes).
    fn requeue(&self, seq: u64, queued: &Queued, later: Option<&Queued>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.remove(&queue_key(queued.next_at, seq)[..]);
        if let Some(later) = later {
            batch.insert(&queue_key(later.next_at, seq)[..], codec::encode(later)?);
        }
        self.tree(TreeName::WebhookQueue).apply_batch(batch)?;
        Ok(())
    }

    /// Drops every delivery of `webhook` waiting here (its subscription was removed).
    pub fn drop_webhook_queue(&self, webhook: &str) -> Result<usize, StoreError> {
        let queue = self.tree(TreeName::WebhookQueue);
        let mut dropped = 0;
        for entry in queue.iter() {
            let (key, value) = entry?;
            let ours =
                decode::<Queued>("webhook_queue", &value).is_ok_and(|q| q.webhook == webhook);
            if ours {
                queue.remove(key)?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// How many deliveries of `webhook` wait in the queue.
    pub fn webhook_queued(&self, webhook: &str) -> Result<usize, StoreError> {
        let mut n = 0;
        for entry in self.tree(TreeName::WebhookQueue).iter() {
            let queued: Queued = decode("webhook_queue", &entry?.1)?;
            n += usize::from(queued.webhook == webhook);
        }
        Ok(n)
    }

    /// Records `attempt` of delivery `seq` (queued as `queued`), then removes it from the
    /// queue, or puts it back as `retry` (durable before it returns).
    pub async fn webhook_attempted(
        &self,
        seq: u64,
        queued: &Queued,
        attempt: &Attempt,
        retry: Option<&Queued>,
    ) -> Result<(), StoreError> {
        let log = self.tree(TreeName::WebhookLog);
        let mut key = attempt.at.to_be_bytes().to_vec();
        key.extend_from_slice(&self.generate_id()?.to_be_bytes());
        log.insert(key, codec::encode(attempt)?)?;
        self.requeue(seq, queued, retry)?;
        // Now and then, the oldest lines beyond the cap go (the log's keys start with the
        // time; counting them is a walk of the tree).
        if LOGGED
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(PRUNE_EVERY)
        {
            let excess = log.len().saturating_sub(MAX_LOG_RECORDS);
            for old in log.iter().keys().take(excess) {
                log.remove(old?)?;
            }
        }
        self.flush_async().await
    }

    /// The newest attempts of `webhook`, newest first, at most `limit`.
    pub fn webhook_log(&self, webhook: &str, limit: usize) -> Result<Vec<Attempt>, StoreError> {
        let mut attempts = Vec::new();
        for entry in self.tree(TreeName::WebhookLog).iter().rev() {
            let attempt: Attempt = decode("webhook_log", &entry?.1)?;
            if attempt.webhook == webhook {
                attempts.push(attempt);
                if attempts.len() == limit {
                    break;
                }
            }
        }
        Ok(attempts)
    }
}

/// A queued delivery's key: when it is due (ms), then its id, both big-endian.
pub fn queue_key(next_at: u64, seq: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&next_at.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn parse_key(key: &[u8]) -> Result<(u64, u64), StoreError> {
    let key = <[u8; 16]>::try_from(key).map_err(|_| StoreError::Corrupt {
        tree: "webhook_queue",
        detail: "key is not a time and a sequence number".to_owned(),
    })?;
    let (at, seq) = key.split_at(8);
    let number = |bytes: &[u8]| u64::from_be_bytes(<[u8; 8]>::try_from(bytes).unwrap_or_default());
    Ok((number(at), number(seq)))
}
