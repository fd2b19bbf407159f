//! `threadline run`: the node's services over one data folder.

use std::future::Future;

use tokio::net::TcpListener;
use tracing::info;

use crate::admin;
use crate::api;
use crate::data_dir::{DataDir, LoadError};
use crate::ingest::{self, IngestError};
use crate::store::StoreError;

/// The node stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data folder could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ingest pipeline could not start.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// Serving HTTP failed.
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs the node on `listener` until `shutdown` resolves, then stops cleanly: stops taking
/// requests, finishes the ones in flight (live streams end), lets the writer drain its queue,
/// and flushes the store.
pub async fn run(
    data_dir: &DataDir,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let identity = data_dir.load_identity()?;
    let store = admin::open_store(data_dir)?;
    let (ingest, running) = ingest::start(store.clone(), identity, crate::clock::now)?;
    let app = api::router(ingest.clone());
    let closing = running.closing();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            info!("shutting down");
            closing.close();
        })
        .await;
    drop(ingest);
    running.join();
    store.flush()?;
    info!("stopped");
    result.map_err(ServerError::Http)
}
