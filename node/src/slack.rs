//! The Slack bridge in the node: made from `[slack]`, its Events API requests served by
//! `api/webhooks.rs`, its replies sent as soon as they are stored.

use std::sync::Arc;

use threadline_bridges::sdk::{Bridge, BridgeIdentity};
use threadline_bridges::slack::Slack;
use threadline_protocol::{ChannelKind, SecretKey};
use tracing::info;

use crate::bridge_host::LocalLink;
use crate::config::SlackConfig;
use crate::ingest::Ingest;

/// Starts the Slack bridge with its certified `key`; it runs until the node closes.
pub fn start(
    ingest: &Ingest,
    config: &SlackConfig,
    key: SecretKey,
) -> Result<Arc<Slack<LocalLink>>, String> {
    let bridge = Bridge::new(
        BridgeIdentity::new(key, ChannelKind::Slack),
        LocalLink::builtin(ingest.clone(), ChannelKind::Slack),
        crate::clock::now,
    );
    let slack = Arc::new(Slack::new(
        bridge,
        config.settings()?,
        threadline_bridges::slack::unix_now,
    ));
    info!("slack on: Events API at /webhooks/slack");
    tokio::spawn(crate::bridge_host::drive(
        ingest.clone(),
        ChannelKind::Slack,
        Arc::clone(&slack),
    ));
    Ok(slack)
}
