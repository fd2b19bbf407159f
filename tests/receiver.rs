//! A receiver of the node's outbound webhooks, as an integration runs one: an HTTP server on a
//! free loopback port that checks each delivery's signature (HMAC-SHA256 with the shared
//! secret over `<t>.<body>`, the `Threadline-Signature: t=…,v1=…` header, compared in constant
//! time) and answers with the statuses it is told to, in turn (then 200).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use hmac::{Hmac, KeyInit as _, Mac};

use crate::graph::StandinServer;

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `Threadline-Delivery`.
    pub delivery: String,
    /// `Threadline-Topic`.
    pub topic: String,
    /// The body, parsed.
    pub body: serde_json::Value,
    /// Whether the signature was the secret's over this body.
    pub signed: bool,
    /// What the receiver answered.
    pub answered: u16,
}

#[derive(Debug, Default)]
struct Shared {
    received: Vec<Received>,
    answers: VecDeque<u16>,
    /// How long to take over each answer.
    delay: std::time::Duration,
}

/// The receiver; stopped on drop.
#[derive(Debug)]
pub struct WebhookReceiver {
    /// The URL to subscribe (`http://127.0.0.1:PORT/hook`).
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    _server: StandinServer,
}

impl WebhookReceiver {
    /// A receiver that checks signatures made with `secret`.
    pub fn start(secret: &str) -> WebhookReceiver {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = (Arc::clone(&shared), secret.to_owned());
        let server = StandinServer::start(move |_| {
            Router::new()
                .route("/hook", post(receive))
                .with_state(state)
        });
        WebhookReceiver {
            url: format!("{}/hook", server.base),
            shared,
            _server: server,
        }
    }

    /// Answers the next deliveries with these statuses, in turn.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.lock().answers.extend(statuses);
    }

    /// Takes `delay` over each answer from now on (a slow integration).
    pub fn answer_slowly(&self, delay: std::time::Duration) {
        self.lock().delay = delay;
    }

    /// Every delivery received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn receive(
    State((shared, secret)): State<(Arc<Mutex<Shared>>, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let signed = verify(&secret, &header("threadline-signature"), &body);
    let delay = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .delay;
    tokio::time::sleep(delay).await;
    let mut shared = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let answered = shared.answers.pop_front().unwrap_or(200);
    shared.received.push(Received {
        delivery: header("threadline-delivery"),
        topic: header("threadline-topic"),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        signed,
        answered,
    });
    StatusCode::from_u16(answered).unwrap_or(StatusCode::OK)
}

/// Whether `header` (`t=<secs>,v1=<hex>`) signs `body` with `secret`.
fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", v)) => signature = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}
