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

/// What a standalone Meta bridge (`threadline bridge whatsapp|messenger|instagram`) needs.
#[derive(Debug)]
pub struct StandaloneMeta {
    /// The node's base URL.
    pub node: String,
    /// The bridge's token for the node's bridge API.
    pub token: String,
    /// The bridge's key, certified for the channel.
    pub key: SecretKey,
    /// WhatsApp, Messenger or Instagram.
    pub channel: ChannelKind,
    /// The channel's configuration.
    pub config: crate::config::MetaConfig,
}

/// Serves a Meta bridge's webhook on `listener` and sends its replies until `shutdown`
/// resolves.
pub async fn run_meta(
    settings: StandaloneMeta,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    use threadline_bridges::messenger::webhook::MetaApp;
    let link = HttpLink::new(settings.node, settings.token);
    let bridge = Bridge::new(
        BridgeIdentity::new(settings.key, settings.channel),
        link,
        crate::clock::now,
    );
    let mut bridges = crate::api::webhooks::WebhookBridges::default();
    let (close, mut closing) = tokio::sync::watch::channel(false);
    let poller = match settings.channel {
        ChannelKind::Whatsapp => {
            let whatsapp = Arc::new(crate::meta::whatsapp(&settings.config, bridge)?);
            bridges.whatsapp = Some(Arc::clone(&whatsapp));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(POLL);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if let Err(err) = whatsapp.deliver(64).await {
                                warn!(cause = %err, "WhatsApp deliveries failed; retrying");
                            }
                        }
                        _ = closing.changed() => break,
                    }
                }
            })
        }
        ChannelKind::Messenger | ChannelKind::Instagram => {
            let app = if settings.channel == ChannelKind::Messenger {
                MetaApp::Messenger
            } else {
                MetaApp::Instagram
            };
            let messenger = Arc::new(crate::meta::messenger(app, &settings.config, bridge)?);
            if app == MetaApp::Messenger {
                bridges.messenger = Some(Arc::clone(&messenger));
            } else {
                bridges.instagram = Some(Arc::clone(&messenger));
            }
            let channel = settings.channel;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(POLL);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if let Err(err) = messenger.deliver(64).await {
                                warn!(%channel, cause = %err, "deliveries failed; retrying");
                            }
                        }
                        _ = closing.changed() => break,
                    }
                }
            })
        }
        other => return Err(format!("{other} is not one of Meta's channels")),
    };
    let app = crate::api::webhooks::router(&bridges)
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            info!("bridge shutting down");
            close.send_replace(true);
        })
        .await;
    let _ = poller.await;
    served.map_err(|err| err.to_string())
}

/// Runs the XMPP bridge against a node's bridge API until `shutdown` resolves: it keeps its
/// stream to the XMPP server and asks the node for replies to send every 300 ms.
pub async fn run_xmpp(
    node: &str,
    token: &str,
    key: SecretKey,
    config: &crate::config::XmppConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let settings = config.settings()?;
    let bridge = Bridge::new(
        BridgeIdentity::new(key, ChannelKind::Xmpp),
        HttpLink::new(node.to_owned(), token.to_owned()),
        crate::clock::now,
    );
    let xmpp = Arc::new(threadline_bridges::xmpp::Xmpp::new(bridge, settings));
    let wake = Arc::new(tokio::sync::Notify::new());
    let ticker = Arc::clone(&wake);
    let poll = async move {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            ticker.notify_one();
        }
    };
    tokio::select! {
        () = xmpp.run(wake) => {}
        () = poll => {}
        () = shutdown => info!("bridge shutting down"),
    }
    Ok(())
}

/// Runs the Matrix bridge against a node's bridge API until `shutdown` resolves: it serves the
/// homeserver's transactions on `listener` and asks the node for replies to send every 300 ms.
pub async fn run_matrix(
    node: &str,
    token: &str,
    key: SecretKey,
    config: &crate::config::MatrixConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let tokens = config
        .tokens
        .clone()
        .ok_or("matrix: a standalone bridge needs its tokens")?;
    let bridge = Bridge::new(
        BridgeIdentity::new(key, ChannelKind::Matrix),
        HttpLink::new(node.to_owned(), token.to_owned()),
        crate::clock::now,
    );
    let matrix = Arc::new(threadline_bridges::matrix::Matrix::new(
        bridge,
        config.settings(&tokens)?,
    )?);
    let (close, mut closing) = tokio::sync::watch::channel(false);
    let worker = Arc::clone(&matrix);
    let poller = tokio::spawn(async move {
        let mut wait = Duration::from_millis(500);
        while let Err(err) = worker.load_rooms().await {
            warn!(cause = %err, "matrix: cannot read the rooms yet; retrying");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = closing.changed() => return,
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(err) = worker.deliver(64).await {
                        warn!(cause = %err, "matrix: deliveries failed; retrying");
                    }
                }
                _ = closing.changed() => break,
            }
        }
    });
    let app = crate::api::matrix::router(Some(matrix))
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            info!("bridge shutting down");
            close.send_replace(true);
        })
        .await;
    let _ = poller.await;
    served.map_err(|err| err.to_string())
}
