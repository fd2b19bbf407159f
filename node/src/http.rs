//! The HTTP server under the API and the web chat: hyper's HTTP/1 on the node's listener, with
//! the bounds `axum::serve` does not set.
//!
//! - A request's head must arrive within [`HEADER_READ_TIMEOUT`], so a client that trickles
//!   header bytes (or opens a connection and sends nothing) does not keep it forever.
//! - At most [`MAX_CONNECTIONS`] connections at once, and [`MAX_CONNECTIONS_PER_ADDRESS`] from
//!   one address (IPv6 by its /64), so one client cannot take every file descriptor. Past the
//!   total, the node stops accepting until one closes (new clients wait in the kernel's
//!   backlog); past an address's share, its new connection is closed at once.
//!
//! Request bodies, in-flight requests per token and uploads are bounded by `api::throttle`.
//! A connection upgraded to a WebSocket (the web chat) leaves these counts once upgraded: the
//! web chat bounds its own connections.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::{extract::ConnectInfo, Router};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower_service::Service as _;
use tracing::{debug, warn};

/// How long a request's head (request line and headers) may take to arrive, from when the node
/// starts waiting for it. Browsers and HTTP clients send a head in one go; ten seconds covers
/// a slow mobile link and still frees a connection that trickles.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections at once. Well under the usual descriptor limits (the replication swarm,
/// sled and the blob files need theirs), and far above what the inbox and bridges use.
pub const MAX_CONNECTIONS: usize = 4096;
/// Most connections at once from one address: a browser opens at most a handful, a bridge a
/// pool; a whole office behind one NAT still fits.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 256;
/// Pause after a failed accept (out of descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, asks every
/// connection to finish its current request, and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = PerAddress::default();
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(cause = %err, "cannot accept an HTTP connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = per_address.take(peer.ip()) else {
            debug!(%peer, "too many connections from one address; closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        // The app, with the peer's address in each request (for `ConnectInfo<SocketAddr>`).
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().call(request)
        });
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                debug!(%peer, cause = %err, "HTTP connection ended with an error");
            }
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it is closed: having them all means all closed.
    let all = u32::try_from(MAX_CONNECTIONS).expect("MAX_CONNECTIONS fits in u32");
    let _closed = connections
        .acquire_many(all)
        .await
        .expect("the connection semaphore is never closed");
    Ok(())
}

/// Connections open per address (IPv6 by its /64).
#[derive(Debug, Default, Clone)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection's place in its address's share; given back when dropped.
#[derive(Debug)]
struct AddressSlot {
    counts: PerAddress,
    address: IpAddr,
}

impl PerAddress {
    fn take(&self, address: IpAddr) -> Option<AddressSlot> {
        let address = crate::api::throttle::address_key(address);
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(address).or_insert(0);
        if *count >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: self.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_share_of_connections_and_has_them_back_when_closed() {
        let per_address = PerAddress::default();
        let one: IpAddr = "192.0.2.1".parse().expect("address");
        let other: IpAddr = "192.0.2.2".parse().expect("address");
        let slots: Vec<AddressSlot> = (0..MAX_CONNECTIONS_PER_ADDRESS)
            .map(|_| per_address.take(one).expect("within the share"))
            .collect();
        assert!(per_address.take(one).is_none(), "one past the share");
        assert!(
            per_address.take(other).is_some(),
            "another address is not held up"
        );
        drop(slots);
        assert!(per_address.take(one).is_some(), "places come back on close");
        assert!(per_address.0.lock().expect("lock").len() <= 1);
    }
}
