//! The Telegram bridge in the node: made from `[telegram]`, its webhook served by
//! `api/webhooks.rs`, driven by `bridge_host::drive` (replies as soon as they are stored,
//! agents' typing).

use std::sync::Arc;

use threadline_bridges::sdk::{Bridge, BridgeIdentity};
use threadline_bridges::telegram::Telegram;
use threadline_protocol::{ChannelKind, SecretKey};
use tracing::info;

use crate::bridge_host::LocalLink;
use crate::config::TelegramConfig;
use crate::ingest::Ingest;

/// Starts the Telegram bridge with its certified `key`; it runs until the node closes.
pub fn start(
    ingest: &Ingest,
    config: &TelegramConfig,
    key: SecretKey,
) -> Result<Arc<Telegram<LocalLink>>, String> {
    let bridge = Bridge::new(
        BridgeIdentity::new(key, ChannelKind::Telegram),
        LocalLink::builtin(ingest.clone(), ChannelKind::Telegram),
        crate::clock::now,
    );
    let telegram = Arc::new(Telegram::new(bridge, config.settings()?));
    info!(bot = ?config.bot_username, "telegram on: webhook at /webhooks/telegram");
    tokio::spawn(crate::bridge_host::drive(
        ingest.clone(),
        ChannelKind::Telegram,
        Arc::clone(&telegram),
    ));
    Ok(telegram)
}
