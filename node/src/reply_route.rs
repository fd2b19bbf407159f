//! Whether a reply may go out on a thread's route now, checked before anything is stored: the
//! customer did not withdraw consent there (an SMS STOP), the node that set the route can
//! deliver on it, and the app's messaging window is open. The reply API refuses with it
//! (`409`), and the node's own replies (the away reply) are not sent when it says no.

use threadline_protocol::{thread::ThreadState, ChannelKind, ThreadId};

use crate::ingest::Ingest;
use crate::store::StoreError;

/// Why a reply may not go out on a route now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteRefusal {
    /// The customer opted out of the channel.
    #[error("the customer opted out of {0} (texted STOP): nothing is sent to them there until they opt back in (START); reply on another of their channels, or write a note")]
    OptedOut(ChannelKind),
    /// This node set the route and has no bridge of its channel.
    #[error("this node has no {0} bridge, so replies there would never be sent: configure [{0}] in config.toml (or run `threadline bridge {0}` with a bridge token), or reply on another of the customer's channels")]
    NoBridge(ChannelKind),
    /// The app's window is closed (why, and what works instead).
    #[error("{0}")]
    WindowClosed(String),
}

impl RouteRefusal {
    /// The API's stable error code for it.
    pub fn code(&self) -> &'static str {
        match self {
            RouteRefusal::OptedOut(_) => "opted_out",
            RouteRefusal::NoBridge(_) => "no_bridge",
            RouteRefusal::WindowClosed(_) => "window_closed",
        }
    }
}

/// Why a reply on `thread` (in `state`) would be refused now, if it would; the messaging
/// window is checked only with `window` (a template may go when a reply may not).
pub fn refusal(
    ingest: &Ingest,
    thread: ThreadId,
    state: &ThreadState,
    window: bool,
) -> Result<Option<RouteRefusal>, StoreError> {
    if let Some(channel) = crate::consent::withdrawn_on_route(ingest, state) {
        return Ok(Some(RouteRefusal::OptedOut(channel)));
    }
    // The node that set the route delivers on it: if that is this node and it has no bridge
    // of the channel any more (its section was removed), the reply would never be sent.
    if let Some(route) = state.route {
        if !ingest.delivers_to(route.channel)?
            && !ingest
                .store()
                .is_replicated_route(&thread, &route.handle_from)?
        {
            return Ok(Some(RouteRefusal::NoBridge(route.channel)));
        }
    }
    if window {
        if let Some((channel, window)) = ingest.reply_window(thread, state)? {
            if let Some(reason) = window.refusal(channel) {
                return Ok(Some(RouteRefusal::WindowClosed(reason)));
            }
        }
    }
    Ok(None)
}
