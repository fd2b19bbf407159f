//! The Telegram bridge in the node: made from `[telegram]`, its webhook served by
//! `api/webhooks.rs`, its replies sent as soon as they are stored, agents' typing relayed.

use std::sync::Arc;
use std::time::Duration;

use threadline_bridges::sdk::{Bridge, BridgeIdentity};
use threadline_bridges::telegram::Telegram;
use threadline_protocol::{ChannelKind, SecretKey};
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use crate::bridge_host::LocalLink;
use crate::config::TelegramConfig;
use crate::ingest::Ingest;
use crate::presence::Typing;

/// Deliveries sent per round.
const BATCH: usize = 64;

/// Starts the Telegram bridge with its certified `key`; it runs until the node closes.
pub fn start(
    ingest: &Ingest,
    config: &TelegramConfig,
    key: SecretKey,
) -> Result<Arc<Telegram<LocalLink>>, String> {
    let bridge = Bridge::new(
        BridgeIdentity::new(key, ChannelKind::Telegram),
        LocalLink::new(ingest.clone(), ChannelKind::Telegram),
        crate::clock::now,
    );
    let telegram = Arc::new(Telegram::new(bridge, config.settings()?));
    info!(bot = ?config.bot_username, "telegram on: webhook at /webhooks/telegram");
    tokio::spawn(relay(ingest.clone(), Arc::clone(&telegram)));
    Ok(telegram)
}

/// Sends replies as soon as they are stored (and every 2 s: retries), and relays agents'
/// typing. Ends when the node closes.
async fn relay(ingest: Ingest, telegram: Arc<Telegram<LocalLink>>) {
    let mut changes = ingest.subscribe();
    let mut typing = ingest.presence().subscribe_typing();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let deliver = tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => change.kind == "thread.message.outbound",
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => break,
            },
            signal = typing.recv() => {
                match signal {
                    Ok(Typing::Agent(thread)) => {
                        if let Some(handle) = crate::server::route_handle(&ingest, thread) {
                            if handle.channel() == ChannelKind::Telegram {
                                telegram.agent_typing(&handle).await;
                            }
                        }
                    }
                    Ok(Typing::Customer(_)) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
                false
            }
            _ = tick.tick() => true,
            () = ingest.closing() => break,
        };
        if !deliver {
            continue;
        }
        loop {
            match telegram.deliver(BATCH).await {
                Ok(sent) if sent == BATCH => continue,
                Ok(_) => break,
                Err(err) => {
                    warn!(cause = %err, "telegram: deliveries failed; retrying");
                    break;
                }
            }
        }
    }
}
