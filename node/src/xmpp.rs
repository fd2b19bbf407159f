//! The XMPP bridge in the node: made from `[xmpp]`, its stream kept up, its replies sent as
//! soon as they are stored, agents' typing relayed to the customer.

use std::sync::Arc;

use threadline_bridges::sdk::{Bridge, BridgeIdentity};
use threadline_bridges::xmpp::Xmpp;
use threadline_protocol::{ChannelKind, SecretKey};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tracing::info;

use crate::bridge_host::LocalLink;
use crate::config::XmppConfig;
use crate::ingest::Ingest;
use crate::presence::Typing;

/// Starts the XMPP bridge of `config` with its certified `key`; it runs until the node
/// closes.
pub fn start(
    ingest: &Ingest,
    config: &XmppConfig,
    key: SecretKey,
) -> Result<Arc<Xmpp<LocalLink>>, String> {
    let settings = config.settings()?;
    let bridge = Bridge::new(
        BridgeIdentity::new(key, ChannelKind::Xmpp),
        LocalLink::builtin(ingest.clone(), ChannelKind::Xmpp),
        crate::clock::now,
    );
    let xmpp = Arc::new(Xmpp::new(bridge, settings));
    let wake = Arc::new(Notify::new());
    info!(component = %config.component, server = %config.server, "xmpp on");
    let (running, closing) = (Arc::clone(&xmpp), ingest.clone());
    let runner_wake = Arc::clone(&wake);
    tokio::spawn(async move {
        tokio::select! {
            () = running.run(runner_wake) => {}
            () = closing.closing() => {}
        }
    });
    tokio::spawn(relay(ingest.clone(), Arc::clone(&xmpp), wake));
    Ok(xmpp)
}

/// Wakes the bridge when a reply is stored, and tells customers an agent types in their
/// thread. Ends when the node closes.
async fn relay(ingest: Ingest, xmpp: Arc<Xmpp<LocalLink>>, wake: Arc<Notify>) {
    let mut changes = ingest.subscribe();
    let mut typing = ingest.presence().subscribe_typing();
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) if change.kind != "thread.message.outbound" => {}
                Ok(_) | Err(RecvError::Lagged(_)) => wake.notify_one(),
                Err(RecvError::Closed) => break,
            },
            signal = typing.recv() => match signal {
                Ok(Typing::Agent(thread)) => {
                    if let Some(handle) = crate::server::route_handle(&ingest, thread) {
                        if handle.channel() == ChannelKind::Xmpp {
                            xmpp.agent_typing(&handle);
                        }
                    }
                }
                Ok(Typing::Customer(_)) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            () = ingest.closing() => break,
        }
    }
}
