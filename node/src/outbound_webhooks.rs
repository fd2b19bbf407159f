//! Outbound webhooks: the org's subscriptions (`SetWebhook` directory events, so every node
//! of the org has them) and their delivery.
//!
//! Each event is sent by the node it was made on (its bridges', agents' or its own events,
//! not those replicated from a peer), so an org's nodes never both send it. The ingest writer
//! queues a delivery per matching subscription in the event's own commit
//! (`store::webhook_queue`); [`run`] posts them: JSON, signed with the subscription's secret
//! (HMAC-SHA256 over `<unix seconds>.<body>`, in `Threadline-Signature: t=…,v1=<hex>`),
//! retried with back-off and jitter on anything but a 2xx, each attempt logged.

use std::time::Duration;

use rand_core::RngCore as _;
use serde::{Deserialize, Serialize};
use threadline_protocol::{
    directory::DirectoryState,
    event::{Direction, EventKind, ThreadKind},
    name::WebhookName,
};
use tracing::{debug, warn};

use crate::ingest::Ingest;
use crate::store::webhook_queue::{Attempt, Outcome, Queued};

/// What a subscription may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// A conversation began (`thread.opened`).
    ConversationCreated = 0,
    /// A customer's message or a reply (`thread.message.*`).
    MessageCreated = 1,
    /// An internal note (`thread.note`).
    NoteCreated = 2,
    /// The status changed (`thread.status`).
    StatusChanged = 3,
    /// The assignee or the team changed (`thread.assign`, `thread.assign_team`).
    Assigned = 4,
    /// A label was added or removed.
    LabelsChanged = 5,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 6] = [
        Topic::ConversationCreated,
        Topic::MessageCreated,
        Topic::NoteCreated,
        Topic::StatusChanged,
        Topic::Assigned,
        Topic::LabelsChanged,
    ];

    /// The topic of an event of `kind`, if it has one.
    pub fn of(kind: &EventKind) -> Option<Topic> {
        let EventKind::Thread(kind) = kind else {
            return None;
        };
        Some(match kind {
            ThreadKind::Opened { .. } => Topic::ConversationCreated,
            ThreadKind::Message {
                direction: Direction::Inbound { .. } | Direction::Outbound,
            } => Topic::MessageCreated,
            ThreadKind::Note => Topic::NoteCreated,
            ThreadKind::Status { .. } => Topic::StatusChanged,
            ThreadKind::Assign { .. } | ThreadKind::AssignTeam { .. } => Topic::Assigned,
            ThreadKind::LabelAdd { .. } | ThreadKind::LabelRemove { .. } => Topic::LabelsChanged,
            _ => return None,
        })
    }

    /// Its name in subscriptions and deliveries.
    pub fn name(self) -> &'static str {
        match self {
            Topic::ConversationCreated => "conversation.created",
            Topic::MessageCreated => "message.created",
            Topic::NoteCreated => "note.created",
            Topic::StatusChanged => "conversation.status_changed",
            Topic::Assigned => "conversation.assigned",
            Topic::LabelsChanged => "conversation.labels_changed",
        }
    }

    /// The topic of a name.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The topic of a stored number.
    pub fn from_number(number: u8) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| *t as u8 == number)
    }
}

/// A subscription: where to, what, and the secret deliveries are signed with. Its JSON is the
/// text of the `SetWebhook` event that sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// `http://` or `https://`.
    pub url: String,
    /// Topic names.
    pub topics: Vec<String>,
    /// The HMAC key.
    pub secret: String,
}

/// The longest subscription URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

impl Subscription {
    /// The subscription a `SetWebhook` text holds, checked.
    pub fn parse(text: &str) -> Result<Subscription, String> {
        let subscription: Subscription =
            serde_json::from_str(text).map_err(|err| format!("not a subscription: {err}"))?;
        subscription.check()?;
        Ok(subscription)
    }

    /// Whether it is one a node can send: an http(s) URL, known topics, a secret.
    pub fn check(&self) -> Result<(), String> {
        let scheme_ok = self.url.starts_with("https://") || self.url.starts_with("http://");
        if !scheme_ok || self.url.len() > MAX_URL_BYTES || self.url.contains(char::is_whitespace) {
            return Err(format!(
                "url must be an http:// or https:// URL of at most {MAX_URL_BYTES} bytes"
            ));
        }
        if self.topics.is_empty() {
            return Err("topics is empty: name at least one".to_owned());
        }
        if let Some(unknown) = self.topics.iter().find(|t| Topic::from_name(t).is_none()) {
            let known: Vec<&str> = Topic::ALL.iter().map(|t| t.name()).collect();
            return Err(format!(
                "unknown topic `{unknown}`: one of {}",
                known.join(", ")
            ));
        }
        if self.secret.len() < 16 || self.secret.len() > 256 {
            return Err("secret must be 16 to 256 bytes".to_owned());
        }
        Ok(())
    }

    /// Whether it takes `topic`.
    pub fn wants(&self, topic: Topic) -> bool {
        self.topics.iter().any(|t| t == topic.name())
    }
}

/// The subscriptions of the org that take `topic` (a subscription whose text does not read,
/// written by a newer node say, takes nothing).
pub fn subscribed(directory: &DirectoryState, topic: Topic) -> Vec<WebhookName> {
    directory
        .webhooks
        .iter()
        .filter(|(_, text)| Subscription::parse(text).is_ok_and(|s| s.wants(topic)))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Attempts per delivery before it is given up: about 23 hours after the first.
pub const MAX_ATTEMPTS: u32 = 13;
/// A delivery still not made this long after its event is given up, attempts or not (one
/// held back behind a failing one of its receiver is never attempted).
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The wait after the first failure; each next wait is three times the last (2 s, 6 s, 18 s,
/// ...), up to [`MAX_WAIT`], with ±20 % jitter: 23.5 hours over [`MAX_ATTEMPTS`].
const FIRST_WAIT: Duration = Duration::from_secs(2);
const MAX_WAIT: Duration = Duration::from_secs(6 * 3600);
/// How long a receiver may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries looked at in the queue per round.
const ROUND: usize = 256;
/// Deliveries one subscription's task takes at a time.
const PER_TASK: usize = 32;

/// The wait before attempt `attempts + 1`, after `attempts` failures, jittered.
fn wait_after(attempts: u32) -> Duration {
    let base = FIRST_WAIT
        .saturating_mul(3u32.saturating_pow(attempts.saturating_sub(1)))
        .min(MAX_WAIT);
    let jitter = 0.8 + 0.4 * (f64::from(rand_core::OsRng.next_u32()) / f64::from(u32::MAX));
    base.mul_f64(jitter)
}

/// Sends the queued deliveries as they fall due, until the node closes: each subscription's
/// due deliveries in a task of their own (at most [`PER_TASK`] at a time), so a slow or dead
/// receiver holds up only its own; the queue is looked at again whenever a task ends,
/// something is stored here, or the next delivery falls due.
pub async fn run(ingest: Ingest) {
    let mut live = ingest.subscribe();
    let agent = ureq::AgentBuilder::new()
        .timeout(TIMEOUT)
        .user_agent(concat!("threadline/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut sending: tokio::task::JoinSet<()> = tokio::task::JoinSet::new();
    // The subscriptions a task is sending for, by task.
    let mut busy: std::collections::HashMap<tokio::task::Id, String> =
        std::collections::HashMap::new();
    loop {
        let now = crate::clock::now().as_millis();
        let (due, next) = match ingest.store().webhooks_due(now, ROUND) {
            Ok(found) => found,
            Err(err) => {
                warn!(cause = %err, "the webhook queue could not be read");
                (Vec::new(), Some(now + 5_000))
            }
        };
        let mut groups: Vec<(String, Vec<(u64, Queued)>)> = Vec::new();
        for (seq, queued) in due {
            if busy.values().any(|w| *w == queued.webhook) {
                continue;
            }
            match groups.iter_mut().find(|(w, _)| *w == queued.webhook) {
                Some((_, list)) if list.len() < PER_TASK => list.push((seq, queued)),
                Some(_) => {}
                None => groups.push((queued.webhook.clone(), vec![(seq, queued)])),
            }
        }
        for (webhook, deliveries) in groups {
            let (ingest, agent) = (ingest.clone(), agent.clone());
            let task = sending.spawn(async move {
                if !deliver_in_turn(&ingest, &agent, deliveries).await {
                    // The store refuses: not in a tight loop.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            busy.insert(task.id(), webhook);
        }
        // Until a task ends, the next one is due, something new is stored here, or the node
        // closes.
        let wait = next.map_or(Duration::from_secs(60), |at| {
            Duration::from_millis(at.saturating_sub(crate::clock::now().as_millis()))
        });
        tokio::select! {
            () = ingest.closing() => return,
            Some(done) = sending.join_next_with_id(), if !sending.is_empty() => {
                let task = match done {
                    Ok((task, ())) => task,
                    Err(err) => {
                        warn!(cause = %err, "a webhook task failed");
                        err.id()
                    }
                };
                busy.remove(&task);
            }
            () = tokio::time::sleep(wait) => {}
            change = live.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = change {
                    return;
                }
            }
        }
    }
}

/// One subscription's due deliveries, in order; once one fails (the receiver is down or
/// slow), the rest wait with it until its retry, uncounted. Whether any was recorded.
async fn deliver_in_turn(
    ingest: &Ingest,
    agent: &ureq::Agent,
    deliveries: Vec<(u64, Queued)>,
) -> bool {
    let mut recorded = false;
    let mut failing_until = None;
    for (seq, queued) in deliveries {
        let now = crate::clock::now().as_millis();
        let too_old = now.saturating_sub(queued.queued_at) >= MAX_AGE.as_millis() as u64;
        let result = match failing_until {
            Some(_) if too_old => give_up(ingest, seq, &queued, now).await,
            Some(at) => ingest
                .store()
                .defer_webhook(seq, &queued, at)
                .map(|()| None),
            None => attempt(ingest, agent, seq, queued).await,
        };
        match result {
            Ok(retry_at) => {
                recorded = true;
                failing_until = failing_until.or(retry_at);
            }
            Err(err) => {
                warn!(delivery = seq, cause = %err, "a webhook delivery could not be recorded")
            }
        }
    }
    recorded
}

/// The id of the delivery of `event` to `webhook`: the same on every attempt and on every node
/// (hex of 16 bytes of SHA-256 over both).
pub fn delivery_id(event: &threadline_protocol::EventId, webhook: &str) -> String {
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut hasher, b"threadline/webhook-delivery\0");
    sha2::Digest::update(&mut hasher, event.as_bytes());
    sha2::Digest::update(&mut hasher, webhook.as_bytes());
    hex::encode(&sha2::Digest::finalize(hasher)[..16])
}

/// One attempt of delivery `seq`, recorded; when it is to be tried again, when.
async fn attempt(
    ingest: &Ingest,
    agent: &ureq::Agent,
    seq: u64,
    queued: Queued,
) -> Result<Option<u64>, crate::store::StoreError> {
    let started = crate::clock::now().as_millis();
    let mut record = Attempt {
        delivery: seq,
        webhook: queued.webhook.clone(),
        topic: queued.topic,
        thread: queued.thread,
        event: queued.event,
        attempt: queued.attempts + 1,
        at: started,
        took_ms: 0,
        status: None,
        error: None,
        outcome: Outcome::Dropped,
        next_at: None,
    };
    let subscription = WebhookName::new(queued.webhook.as_str())
        .ok()
        .and_then(|name| ingest.read_directory().state().webhooks.get(&name).cloned())
        .and_then(|text| Subscription::parse(&text).ok());
    let topic = Topic::from_number(queued.topic);
    let (Some(subscription), Some(topic)) = (subscription, topic) else {
        record.error = Some("the subscription was removed".to_owned());
        return dropped(ingest, seq, &queued, &record).await;
    };
    if !subscription.wants(topic) {
        record.error = Some("the subscription no longer takes this topic".to_owned());
        return dropped(ingest, seq, &queued, &record).await;
    }
    let body = match crate::api::webhook_payload(ingest, &queued, topic) {
        Ok(Some(body)) => body,
        Ok(None) => {
            record.error = Some("its conversation is gone".to_owned());
            return dropped(ingest, seq, &queued, &record).await;
        }
        Err(err) => {
            warn!(delivery = seq, cause = %err, "a webhook delivery could not be made");
            record.error = Some(format!("could not be made: {err}"));
            return retry_or_fail(ingest, seq, queued, record).await;
        }
    };
    let timestamp = started / 1000;
    let signature = sign(&subscription.secret, timestamp, &body);
    let request = agent
        .post(&subscription.url)
        .set("Content-Type", "application/json")
        .set(
            "Threadline-Delivery",
            &delivery_id(&queued.event, &queued.webhook),
        )
        .set("Threadline-Topic", topic.name())
        .set(
            "Threadline-Signature",
            &format!("t={timestamp},v1={signature}"),
        );
    // The receiver's status, or what went wrong and the status if it answered.
    let sent = tokio::task::spawn_blocking(move || match request.send_bytes(&body) {
        Ok(response) => Ok(response.status()),
        Err(ureq::Error::Status(status, _)) => {
            Err((Some(status), format!("the receiver answered {status}")))
        }
        Err(err) => Err((None, err.to_string())),
    })
    .await;
    record.took_ms = crate::clock::now().as_millis().saturating_sub(started);
    match sent {
        Ok(Ok(status)) => {
            record.status = Some(status);
            record.outcome = Outcome::Delivered;
            debug!(delivery = seq, webhook = %queued.webhook, "webhook delivered");
            ingest
                .store()
                .webhook_attempted(seq, &queued, &record, None)
                .await
                .map(|()| None)
        }
        Ok(Err((status, error))) => {
            record.status = status;
            record.error = Some(error);
            retry_or_fail(ingest, seq, queued, record).await
        }
        Err(err) => {
            record.error = Some(format!("the request's task failed: {err}"));
            retry_or_fail(ingest, seq, queued, record).await
        }
    }
}

/// Gives up a delivery held back past [`MAX_AGE`] behind a failing one of its receiver.
async fn give_up(
    ingest: &Ingest,
    seq: u64,
    queued: &Queued,
    now: u64,
) -> Result<Option<u64>, crate::store::StoreError> {
    let record = Attempt {
        delivery: seq,
        webhook: queued.webhook.clone(),
        topic: queued.topic,
        thread: queued.thread,
        event: queued.event,
        attempt: queued.attempts,
        at: now,
        took_ms: 0,
        status: None,
        error: Some("its receiver failed for a day: given up".to_owned()),
        outcome: Outcome::Failed,
        next_at: None,
    };
    warn!(delivery = seq, webhook = %queued.webhook, "a webhook delivery was given up after a day");
    ingest
        .store()
        .webhook_attempted(seq, queued, &record, None)
        .await
        .map(|()| None)
}

/// Records a delivery not sent (`record` says why) and takes it out of the queue.
async fn dropped(
    ingest: &Ingest,
    seq: u64,
    queued: &Queued,
    record: &Attempt,
) -> Result<Option<u64>, crate::store::StoreError> {
    ingest
        .store()
        .webhook_attempted(seq, queued, record, None)
        .await
        .map(|()| None)
}

/// Puts a failed delivery back for later (and says when), or gives it up after
/// [`MAX_ATTEMPTS`].
async fn retry_or_fail(
    ingest: &Ingest,
    seq: u64,
    queued: Queued,
    mut record: Attempt,
) -> Result<Option<u64>, crate::store::StoreError> {
    let attempts = queued.attempts + 1;
    let too_old = record.at.saturating_sub(queued.queued_at) >= MAX_AGE.as_millis() as u64;
    if attempts >= MAX_ATTEMPTS || too_old {
        record.outcome = Outcome::Failed;
        warn!(delivery = seq, webhook = %queued.webhook, attempts, cause = record.error.as_deref().unwrap_or(""), "a webhook delivery was given up");
        return ingest
            .store()
            .webhook_attempted(seq, &queued, &record, None)
            .await
            .map(|()| None);
    }
    let next_at = record.at + u64::try_from(wait_after(attempts).as_millis()).unwrap_or(u64::MAX);
    record.outcome = Outcome::Retrying;
    record.next_at = Some(next_at);
    let retry = Queued {
        attempts,
        next_at,
        ..queued.clone()
    };
    ingest
        .store()
        .webhook_attempted(seq, &queued, &record, Some(&retry))
        .await
        .map(|()| Some(next_at))
}

/// The signature of a delivery: HMAC-SHA256 with the secret over `<timestamp>.<body>`, hex.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    hex::encode(threadline_bridges::webhook::hmac_sha256(
        secret.as_bytes(),
        &message,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_checked_and_topics_named() {
        let good = Subscription {
            url: "https://crm.example.com/hook".to_owned(),
            topics: vec!["message.created".to_owned()],
            secret: "0123456789abcdef".to_owned(),
        };
        assert_eq!(good.check(), Ok(()));
        for (bad, why) in [
            (
                Subscription {
                    url: "ftp://x".to_owned(),
                    ..good.clone()
                },
                "url",
            ),
            (
                Subscription {
                    topics: vec![],
                    ..good.clone()
                },
                "topics",
            ),
            (
                Subscription {
                    topics: vec!["message.deleted".to_owned()],
                    ..good.clone()
                },
                "unknown topic",
            ),
            (
                Subscription {
                    secret: "short".to_owned(),
                    ..good.clone()
                },
                "secret",
            ),
        ] {
            assert!(bad.check().is_err_and(|e| e.contains(why)), "{bad:?}");
        }
        for topic in Topic::ALL {
            assert_eq!(Topic::from_name(topic.name()), Some(topic));
            assert_eq!(Topic::from_number(topic as u8), Some(topic));
        }
    }

    #[test]
    fn waits_grow_threefold_with_jitter_and_stop_at_the_cap() {
        for (attempts, base) in [(1, 2.0), (2, 6.0), (3, 18.0), (9, 13_122.0), (12, 21_600.0)] {
            let wait = wait_after(attempts).as_secs_f64();
            assert!(
                (base * 0.8..=base * 1.2).contains(&wait),
                "{attempts}: {wait}"
            );
        }
    }

    /// The waits over every attempt add up to about 23 hours (the documented promise).
    #[test]
    fn a_delivery_is_tried_for_about_a_day() {
        let unjittered: f64 = (1..MAX_ATTEMPTS)
            .map(|n| {
                FIRST_WAIT
                    .saturating_mul(3u32.saturating_pow(n - 1))
                    .min(MAX_WAIT)
                    .as_secs_f64()
            })
            .sum();
        assert!(
            (22.0..24.0).contains(&(unjittered / 3600.0)),
            "{unjittered}"
        );
    }

    /// The id receivers see is the same for an event and a subscription, whichever node sends
    /// it, and differs between subscriptions.
    #[test]
    fn delivery_ids_name_the_event_and_the_subscription() {
        let event = threadline_protocol::EventId::from_bytes([7; 32]);
        assert_eq!(delivery_id(&event, "crm"), delivery_id(&event, "crm"));
        assert_ne!(delivery_id(&event, "crm"), delivery_id(&event, "bi"));
        assert_eq!(delivery_id(&event, "crm").len(), 32);
    }

    /// The signature a receiver checks, against a value worked out apart (Python's
    /// `hmac.new(b"0123456789abcdef", b"1700000000.{}", "sha256").hexdigest()`).
    #[test]
    fn the_signature_is_hmac_sha256_over_the_timestamp_and_body() {
        assert_eq!(
            sign("0123456789abcdef", 1_700_000_000, b"{}"),
            "e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
    }
}
