//! Meta's channels (WhatsApp, Messenger, Instagram) in the node: their bridges made from the
//! configuration, their webhooks served on the node's HTTP server (`api::webhooks`), and
//! their replies sent as soon as they are stored.

use std::sync::Arc;

use threadline_bridges::graph::{AccessToken, GraphApi};
use threadline_bridges::messenger::webhook::MetaApp;
use threadline_bridges::messenger::{Messenger, MessengerSettings};
use threadline_bridges::sdk::{Bridge, BridgeIdentity, HandoffCode, NodeLink};
use threadline_bridges::webchat::ContinueOn;
use threadline_bridges::webhook::{AppSecret, MetaEndpoint};
use threadline_bridges::whatsapp::{Whatsapp, WhatsappSettings};
use threadline_protocol::{ChannelKind, SecretKey};
use tracing::info;

use crate::api::webhooks::WebhookBridges;
use crate::bridge_host::{drive, LocalLink};
use crate::config::MetaConfig;
use crate::ingest::Ingest;

fn graph(config: &MetaConfig) -> Result<GraphApi, String> {
    GraphApi::new(
        &config.graph_url,
        &config.graph_version,
        AccessToken::new(config.access_token.clone())?,
    )
}

fn endpoint(config: &MetaConfig) -> Result<MetaEndpoint, String> {
    let secret = AppSecret::new(&config.app_secret).map_err(|err| err.to_string())?;
    MetaEndpoint::new(secret, config.verify_token.clone())
}

/// The WhatsApp bridge of `config` on `bridge`.
pub fn whatsapp<L: NodeLink>(
    config: &MetaConfig,
    bridge: Bridge<L>,
) -> Result<Whatsapp<L>, String> {
    Ok(Whatsapp::new(
        bridge,
        WhatsappSettings {
            phone_number_id: config.account_id.clone(),
            number: config.link_name.clone(),
            endpoint: endpoint(config)?,
            graph: graph(config)?,
        },
    ))
}

/// The Messenger or Instagram bridge of `config` on `bridge`.
pub fn messenger<L: NodeLink>(
    app: MetaApp,
    config: &MetaConfig,
    bridge: Bridge<L>,
) -> Result<Messenger<L>, String> {
    Ok(Messenger::new(
        bridge,
        MessengerSettings {
            app,
            account_id: config.account_id.clone(),
            link_name: config.link_name.clone(),
            human_agent: config.human_agent,
            endpoint: endpoint(config)?,
            graph: graph(config)?,
        },
    ))
}

/// Makes the configured Meta bridges (each with its certified key) and starts sending their
/// replies; their webhooks are for the caller to serve.
pub fn start(
    ingest: &Ingest,
    configured: Vec<(ChannelKind, MetaConfig, SecretKey)>,
) -> Result<WebhookBridges<LocalLink>, String> {
    let mut bridges = WebhookBridges::default();
    for (channel, config, key) in configured {
        if config.human_agent {
            ingest.allow_human_agent(channel);
        }
        let bridge = Bridge::new(
            BridgeIdentity::new(key, channel),
            LocalLink::builtin(ingest.clone(), channel),
            crate::clock::now,
        );
        match channel {
            ChannelKind::Whatsapp => {
                let whatsapp = Arc::new(whatsapp(&config, bridge)?);
                tokio::spawn(drive(ingest.clone(), channel, Arc::clone(&whatsapp)));
                bridges.whatsapp = Some(whatsapp);
            }
            ChannelKind::Messenger | ChannelKind::Instagram => {
                let app = if channel == ChannelKind::Messenger {
                    MetaApp::Messenger
                } else {
                    MetaApp::Instagram
                };
                let bridge = Arc::new(messenger(app, &config, bridge)?);
                tokio::spawn(drive(ingest.clone(), channel, Arc::clone(&bridge)));
                if channel == ChannelKind::Messenger {
                    bridges.messenger = Some(bridge);
                } else {
                    bridges.instagram = Some(bridge);
                }
            }
            other => return Err(format!("{other} is not one of Meta's channels")),
        }
        info!(%channel, account = %config.account_id, "{channel} on: webhook at /webhooks/{channel}");
    }
    Ok(bridges)
}

/// The apps a web chat visitor can continue on: the configured Meta channels that have a
/// link name (a page username, a number).
pub fn continue_on<L: NodeLink + 'static>(bridges: &WebhookBridges<L>) -> Vec<ContinueOn> {
    let probe = HandoffCode::from_bytes([0; 16]);
    let mut apps = Vec::new();
    if let Some(whatsapp) = bridges.whatsapp.clone() {
        if whatsapp.continue_link(&probe).is_some() {
            apps.push(ContinueOn {
                channel: ChannelKind::Whatsapp,
                link: Arc::new(move |code| whatsapp.continue_link(code)),
            });
        }
    }
    for (channel, bridge) in [
        (ChannelKind::Messenger, bridges.messenger.clone()),
        (ChannelKind::Instagram, bridges.instagram.clone()),
    ] {
        if let Some(bridge) = bridge {
            if bridge.continue_link(&probe).is_some() {
                apps.push(ContinueOn {
                    channel,
                    link: Arc::new(move |code| bridge.continue_link(code)),
                });
            }
        }
    }
    apps
}
