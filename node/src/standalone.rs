//! `threadline bridge webchat`: the web chat bridge on its own, for operators who keep bridges
//! apart from nodes. The same bridge code as the node's built-in one; its link is the node's
//! bridge API over HTTP, and it serves the widget and the WebSocket itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use threadline_bridges::http_link::HttpLink;
use threadline_bridges::sdk::{Bridge, BridgeIdentity, NodeLink as _};
use threadline_bridges::webchat::{RateLimit, Webchat};
use threadline_protocol::{ChannelKind, SecretKey};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::api::webchat::{router, ConnectionLimit, WebchatHost};

/// How often the standalone bridge asks its node for replies to deliver (it has no live
/// stream), and whether agents are at the inbox.
const POLL: Duration = Duration::from_millis(300);
const PRESENCE_POLL: Duration = Duration::from_secs(5);

/// What the standalone web chat needs.
#[derive(Debug)]
pub struct StandaloneWebchat {
    /// The node's base URL (`http://127.0.0.1:7420`).
    pub node: String,
    /// The bridge's token for the node's bridge API.
    pub token: String,
    /// The bridge's key, certified for the web chat.
    pub key: SecretKey,
    /// Websites allowed to embed the widget.
    pub allowed_origins: Vec<String>,
    /// The secret websites sign their users' identities with.
    pub identity_secret: Option<String>,
}

/// Serves the web chat on `listener` until `shutdown` resolves.
pub async fn run_webchat(
    settings: StandaloneWebchat,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let link = HttpLink::new(settings.node, settings.token);
    let bridge = Bridge::new(
        BridgeIdentity::new(settings.key, ChannelKind::Webchat),
        link,
        crate::clock::now,
    );
    let secret = settings.identity_secret.map(String::into_bytes);
    let webchat = Arc::new(Webchat::new(bridge, RateLimit::default(), secret));
    let (close, closing) = tokio::sync::watch::channel(false);
    let host = WebchatHost {
        webchat: Arc::clone(&webchat),
        allowed_origins: Arc::new(settings.allowed_origins),
        closing: closing.clone(),
        connections: Arc::new(ConnectionLimit::new(
            crate::config::DEFAULT_CONNECTIONS_PER_MINUTE,
        )),
    };
    let poller = tokio::spawn(poll(Arc::clone(&webchat), closing));
    let app = router(host).fallback(|| async { axum::http::StatusCode::NOT_FOUND });
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        info!("web chat bridge shutting down");
        close.send_replace(true);
    })
    .await;
    let _ = poller.await;
    served
}

async fn poll(webchat: Arc<Webchat<HttpLink>>, mut closing: tokio::sync::watch::Receiver<bool>) {
    let mut deliveries = tokio::time::interval(POLL);
    let mut presence = tokio::time::interval(PRESENCE_POLL);
    let mut agents_online = false;
    loop {
        tokio::select! {
            _ = deliveries.tick() => {
                if let Err(err) = webchat.deliver(256).await {
                    warn!(cause = %err, "web chat deliveries failed; retrying");
                }
            }
            _ = presence.tick() => {
                let now = webchat.bridge().link().agents_online().await;
                if now != agents_online {
                    agents_online = now;
                    webchat.presence_changed(now);
                }
            }
            _ = closing.changed() => break,
        }
    }
}
