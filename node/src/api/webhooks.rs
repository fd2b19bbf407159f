//! The webhook routes of the webhook bridges: `/webhooks/whatsapp`, `/webhooks/messenger` and
//! `/webhooks/instagram`, each a `GET` for the subscription handshake and a `POST` for
//! deliveries, `/webhooks/telegram` (a `POST` of updates, with the secret token) and
//! `/webhooks/slack` (the Events API, signed; its `url_verification` answered), and
//! `/webhooks/sms` and `/webhooks/sms/status` (Twilio's forms: incoming messages and status
//! callbacks, signed over the URL and parameters). A delivery's raw body goes to its bridge as
//! received: the signature is checked before anything is used, and the answer is `200` only
//! once everything in it is durable (`503` asks the provider to deliver it again).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::{
    body::{to_bytes, Body, Bytes},
    extract::{Query, Request, State},
    http::{header::CONTENT_LENGTH, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, MethodRouter},
    Router,
};
use threadline_bridges::instagram::Instagram;
use threadline_bridges::messenger::Messenger;
use threadline_bridges::sdk::NodeLink;
use threadline_bridges::slack::{
    Answer as SlackAnswer, Slack, SIGNATURE_HEADER as SLACK_SIGNATURE,
    TIMESTAMP_HEADER as SLACK_TIMESTAMP,
};
use threadline_bridges::sms::{Sms, SIGNATURE_HEADER as TWILIO_SIGNATURE};
use threadline_bridges::telegram::{Telegram, SECRET_TOKEN_HEADER};
use threadline_bridges::webhook::{
    MetaEndpoint, WebhookRefusal, HUB_SIGNATURE_HEADER, MAX_WEBHOOK_BYTES,
};
use threadline_bridges::whatsapp::Whatsapp;
use tracing::warn;

/// The webhook bridges a server runs (each optional).
#[derive(Debug)]
pub struct WebhookBridges<L> {
    /// WhatsApp.
    pub whatsapp: Option<Arc<Whatsapp<L>>>,
    /// Messenger.
    pub messenger: Option<Arc<Messenger<L>>>,
    /// Instagram.
    pub instagram: Option<Arc<Instagram<L>>>,
    /// Telegram.
    pub telegram: Option<Arc<Telegram<L>>>,
    /// Slack.
    pub slack: Option<Arc<Slack<L>>>,
    /// SMS (Twilio).
    pub sms: Option<Arc<Sms<L>>>,
}

impl<L> Default for WebhookBridges<L> {
    fn default() -> Self {
        WebhookBridges {
            whatsapp: None,
            messenger: None,
            instagram: None,
            telegram: None,
            slack: None,
            sms: None,
        }
    }
}

impl<L> Clone for WebhookBridges<L> {
    fn clone(&self) -> Self {
        WebhookBridges {
            whatsapp: self.whatsapp.clone(),
            messenger: self.messenger.clone(),
            instagram: self.instagram.clone(),
            telegram: self.telegram.clone(),
            slack: self.slack.clone(),
            sms: self.sms.clone(),
        }
    }
}

/// The routes of the configured bridges (none for those that are not).
pub fn router<L: NodeLink + 'static>(bridges: &WebhookBridges<L>) -> Router {
    let mut router = Router::new();
    if let Some(bridge) = &bridges.whatsapp {
        router = router.route(
            "/webhooks/whatsapp",
            meta_route("whatsapp", bridge.endpoint(), Arc::clone(bridge), |bridge, headers, body| async move {
                bridge.take(signature(&headers), &body).await
            }),
        );
    }
    for (what, bridge) in [
        ("messenger", &bridges.messenger),
        ("instagram", &bridges.instagram),
    ] {
        if let Some(bridge) = bridge {
            router =
                router.route(
                    &format!("/webhooks/{what}"),
                    meta_route(
                        what,
                        bridge.endpoint(),
                        Arc::clone(bridge),
                        |bridge, headers, body| async move {
                            bridge.take(signature(&headers), &body).await
                        },
                    ),
                );
        }
    }
    if let Some(bridge) = &bridges.telegram {
        let bridge = Arc::clone(bridge);
        router = router.route(
            "/webhooks/telegram",
            post(move |request: Request| {
                let bridge = Arc::clone(&bridge);
                async move {
                    match raw_delivery(request).await {
                        Ok((headers, body)) => {
                            let secret = headers
                                .get(SECRET_TOKEN_HEADER)
                                .map(|value| value.as_bytes());
                            answer("telegram", bridge.take(secret, &body).await)
                        }
                        Err(refused) => refused,
                    }
                }
            }),
        );
    }
    if let Some(bridge) = &bridges.slack {
        let bridge = Arc::clone(bridge);
        router = router.route(
            "/webhooks/slack",
            post(move |request: Request| {
                let bridge = Arc::clone(&bridge);
                async move {
                    let (headers, body) = match raw_delivery(request).await {
                        Ok(delivery) => delivery,
                        Err(refused) => return refused,
                    };
                    let header = |name: &str| headers.get(name).map(|value| value.as_bytes());
                    let taken = bridge
                        .take(header(SLACK_SIGNATURE), header(SLACK_TIMESTAMP), &body)
                        .await;
                    match taken {
                        Ok(SlackAnswer::Challenge(challenge)) => {
                            (StatusCode::OK, challenge).into_response()
                        }
                        Ok(SlackAnswer::Taken) => answer("slack", Ok(())),
                        Err(refusal) => answer("slack", Err(refusal)),
                    }
                }
            }),
        );
    }
    if let Some(bridge) = &bridges.sms {
        for (path, status) in [
            (threadline_bridges::sms::INBOUND_PATH, false),
            (threadline_bridges::sms::STATUS_PATH, true),
        ] {
            let bridge = Arc::clone(bridge);
            router = router.route(
                path,
                post(move |request: Request| {
                    let bridge = Arc::clone(&bridge);
                    async move {
                        let path_and_query = request
                            .uri()
                            .path_and_query()
                            .map_or_else(|| path.to_owned(), |p| p.as_str().to_owned());
                        let (headers, body) = match raw_delivery(request).await {
                            Ok(delivery) => delivery,
                            Err(refused) => return refused,
                        };
                        let signature = headers.get(TWILIO_SIGNATURE).map(|v| v.as_bytes());
                        let taken = if status {
                            bridge.take_status(&path_and_query, signature, &body).await
                        } else {
                            bridge.take(&path_and_query, signature, &body).await
                        };
                        match taken {
                            // Twilio reads the answer as TwiML: an empty response sends nothing.
                            Ok(()) => (
                                StatusCode::OK,
                                [(axum::http::header::CONTENT_TYPE, "text/xml")],
                                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
                            )
                                .into_response(),
                            Err(refusal) => answer("sms", Err(refusal)),
                        }
                    }
                }),
            );
        }
    }
    router
}

/// A bridge's webhook: `GET` the subscription handshake, `POST` a delivery, whose raw body
/// `take` hands to the bridge.
fn meta_route<B, Taken>(
    what: &'static str,
    endpoint: &MetaEndpoint,
    bridge: Arc<B>,
    take: fn(Arc<B>, HeaderMap, Bytes) -> Taken,
) -> MethodRouter
where
    B: Send + Sync + 'static,
    Taken: Future<Output = Result<(), WebhookRefusal>> + Send + 'static,
{
    get(handshake)
        .post(move |request: Request| async move {
            match raw_delivery(request).await {
                Ok((headers, body)) => answer(what, take(bridge, headers, body).await),
                Err(refused) => refused,
            }
        })
        .with_state(endpoint.clone())
}

/// A delivery's headers and raw body, or `413` for one over [`MAX_WEBHOOK_BYTES`].
async fn raw_delivery(request: Request) -> Result<(HeaderMap, Bytes), Response> {
    raw_body(request, MAX_WEBHOOK_BYTES).await
}

/// A request's headers and raw body, or `413` for one over `limit` bytes: refused on its
/// `Content-Length` before any of the body is read, or once the bytes read pass it.
pub(crate) async fn raw_body(
    request: Request,
    limit: usize,
) -> Result<(HeaderMap, Bytes), Response> {
    let too_large = |cause: &str| {
        warn!(limit, cause, "a pushed body refused");
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a delivery is at most {limit} bytes"),
        )
            .into_response()
    };
    let (parts, body): (_, Body) = request.into_parts();
    let announced = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(too_large("its Content-Length is over the limit"));
    }
    match to_bytes(body, limit).await {
        Ok(bytes) => Ok((parts.headers, bytes)),
        // Over the limit, or the sender hung up mid-body (then nobody reads the answer).
        Err(err) => Err(too_large(&err.to_string())),
    }
}

fn signature(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(HUB_SIGNATURE_HEADER)
        .map(|value| value.as_bytes())
}

/// `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`: the challenge, or `403`.
async fn handshake(
    State(endpoint): State<MetaEndpoint>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match endpoint.challenge(
        query.get("hub.mode").map(String::as_str),
        query.get("hub.verify_token").map(String::as_str),
        query.get("hub.challenge").map(String::as_str),
    ) {
        Ok(challenge) => (StatusCode::OK, challenge.to_owned()).into_response(),
        Err(err) => {
            warn!(cause = %err, "webhook subscription handshake refused");
            (StatusCode::FORBIDDEN, err.to_string()).into_response()
        }
    }
}

fn answer(what: &str, taken: Result<(), WebhookRefusal>) -> Response {
    match taken {
        Ok(()) => (StatusCode::OK, "EVENT_RECEIVED").into_response(),
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
            match &refusal {
                WebhookRefusal::Unavailable(_) => {
                    warn!(webhook = what, cause = %refusal, "delivery not taken; the provider will retry")
                }
                _ => warn!(webhook = what, cause = %refusal, "delivery refused"),
            }
            (status, refusal.to_string()).into_response()
        }
    }
}
