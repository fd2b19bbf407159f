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
    /// How the widget looks.
    pub look: crate::api::webchat::WidgetLook,
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
        allowed_origins: Arc::new(crate::api::webchat::Origins::new(settings.allowed_origins)),
        closing: closing.clone(),
        connections: Arc::new(ConnectionLimit::new(
            crate::config::DEFAULT_CONNECTIONS_PER_MINUTE,
        )),
        look: Arc::new(settings.look),
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

/// A webhook channel's configuration, for its standalone bridge.
#[derive(Debug)]
pub enum WebhookChannel {
    /// WhatsApp, Messenger or Instagram.
    Meta(ChannelKind, crate::config::MetaConfig),
    /// Telegram.
    Telegram(crate::config::TelegramConfig),
    /// Slack.
    Slack(crate::config::SlackConfig),
    /// SMS (Twilio).
    Sms(crate::config::SmsConfig),
}

/// What a standalone webhook bridge (`threadline bridge
/// whatsapp|messenger|instagram|telegram|slack|sms`) needs.
#[derive(Debug)]
pub struct StandaloneWebhook {
    /// The node's base URL.
    pub node: String,
    /// The bridge's token for the node's bridge API.
    pub token: String,
    /// The bridge's key, certified for the channel.
    pub key: SecretKey,
    /// The channel and its configuration.
    pub channel: WebhookChannel,
}

/// Serves a webhook bridge on `listener` and sends its replies until `shutdown` resolves.
pub async fn run_webhook(
    settings: StandaloneWebhook,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    use threadline_bridges::messenger::webhook::MetaApp;
    let channel = match &settings.channel {
        WebhookChannel::Meta(channel, _) => *channel,
        WebhookChannel::Telegram(_) => ChannelKind::Telegram,
        WebhookChannel::Slack(_) => ChannelKind::Slack,
        WebhookChannel::Sms(_) => ChannelKind::Sms,
    };
    let link = HttpLink::new(settings.node, settings.token);
    let bridge = Bridge::new(
        BridgeIdentity::new(settings.key, channel),
        link,
        crate::clock::now,
    );
    let mut bridges = crate::api::webhooks::WebhookBridges::default();
    let (close, closing) = tokio::sync::watch::channel(false);
    let poller = match settings.channel {
        WebhookChannel::Meta(ChannelKind::Whatsapp, config) => {
            let whatsapp = Arc::new(crate::meta::whatsapp(&config, bridge)?);
            bridges.whatsapp = Some(Arc::clone(&whatsapp));
            poll_deliveries(closing, channel, move || {
                let whatsapp = Arc::clone(&whatsapp);
                async move { whatsapp.deliver(64).await }
            })
        }
        WebhookChannel::Meta(ChannelKind::Messenger | ChannelKind::Instagram, config) => {
            let app = if channel == ChannelKind::Messenger {
                MetaApp::Messenger
            } else {
                MetaApp::Instagram
            };
            let messenger = Arc::new(crate::meta::messenger(app, &config, bridge)?);
            if app == MetaApp::Messenger {
                bridges.messenger = Some(Arc::clone(&messenger));
            } else {
                bridges.instagram = Some(Arc::clone(&messenger));
            }
            poll_deliveries(closing, channel, move || {
                let messenger = Arc::clone(&messenger);
                async move { messenger.deliver(64).await }
            })
        }
        WebhookChannel::Meta(other, _) => {
            return Err(format!("{other} is not one of Meta's channels"))
        }
        WebhookChannel::Telegram(config) => {
            let telegram = Arc::new(threadline_bridges::telegram::Telegram::new(
                bridge,
                config.settings()?,
            ));
            bridges.telegram = Some(Arc::clone(&telegram));
            poll_deliveries(closing, channel, move || {
                let telegram = Arc::clone(&telegram);
                async move { telegram.deliver(64).await }
            })
        }
        WebhookChannel::Slack(config) => {
            let slack = Arc::new(threadline_bridges::slack::Slack::new(
                bridge,
                config.settings()?,
                threadline_bridges::slack::unix_now,
            ));
            bridges.slack = Some(Arc::clone(&slack));
            poll_deliveries(closing, channel, move || {
                let slack = Arc::clone(&slack);
                async move { slack.deliver(64).await }
            })
        }
        WebhookChannel::Sms(config) => {
            let sms = Arc::new(threadline_bridges::sms::Sms::new(
                bridge,
                config.settings()?,
            ));
            bridges.sms = Some(Arc::clone(&sms));
            poll_deliveries(closing, channel, move || {
                let sms = Arc::clone(&sms);
                async move { sms.deliver(64).await }
            })
        }
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

/// Asks the node for the channel's replies to send every [`POLL`] (a standalone bridge has no
/// live stream) until `closing` changes.
fn poll_deliveries<F, Fut>(
    mut closing: tokio::sync::watch::Receiver<bool>,
    channel: ChannelKind,
    deliver: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<usize, threadline_bridges::sdk::BridgeError>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(err) = deliver().await {
                        warn!(%channel, cause = %err, "deliveries failed; retrying");
                    }
                }
                _ = closing.changed() => break,
            }
        }
    })
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
