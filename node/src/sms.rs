//! The SMS bridge in the node: made from `[sms]`, its webhooks (incoming messages and status
//! callbacks) served by `api/webhooks.rs`, driven by `bridge_host::drive` (replies as soon as
//! they are stored).

use std::sync::Arc;

use threadline_bridges::sdk::{Bridge, BridgeIdentity};
use threadline_bridges::sms::Sms;
use threadline_protocol::{ChannelKind, SecretKey};
use tracing::info;

use crate::bridge_host::LocalLink;
use crate::config::SmsConfig;
use crate::ingest::Ingest;

/// Starts the SMS bridge with its certified `key`; it runs until the node closes.
pub fn start(
    ingest: &Ingest,
    config: &SmsConfig,
    key: SecretKey,
) -> Result<Arc<Sms<LocalLink>>, String> {
    let bridge = Bridge::new(
        BridgeIdentity::new(key, ChannelKind::Sms),
        LocalLink::builtin(ingest.clone(), ChannelKind::Sms),
        crate::clock::now,
    );
    let sms = Arc::new(Sms::new(bridge, config.settings()?));
    info!(
        webhook = format!("{}/webhooks/sms", config.public_url.trim_end_matches('/')),
        "sms on"
    );
    tokio::spawn(crate::bridge_host::drive(
        ingest.clone(),
        ChannelKind::Sms,
        Arc::clone(&sms),
    ));
    Ok(sms)
}
