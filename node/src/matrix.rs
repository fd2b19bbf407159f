//! The Matrix bridge in the node: made from `[matrix]` with its tokens, its rooms read back
//! from the homeserver, its replies sent as soon as they are stored, agents' typing and read
//! marks relayed. `api/matrix.rs` serves the homeserver's transactions.

use std::sync::Arc;
use std::time::Duration;

use threadline_bridges::matrix::Matrix;
use threadline_bridges::sdk::{Bridge, BridgeIdentity};
use threadline_protocol::{ChannelKind, SecretKey};
use tracing::{info, warn};

use crate::bridge_host::LocalLink;
use crate::config::{MatrixConfig, MatrixTokens};
use crate::data_dir::DataDir;
use crate::ingest::Ingest;

/// The tokens: from the configuration (or the environment), else from `keys/matrix-tokens`.
pub fn tokens(data_dir: &DataDir, config: &MatrixConfig) -> Result<MatrixTokens, String> {
    if let Some(tokens) = &config.tokens {
        return Ok(tokens.clone());
    }
    let path = data_dir.matrix_tokens_path();
    let text = std::fs::read_to_string(&path).map_err(|err| {
        format!(
            "matrix: no tokens ({}: {err}); run `threadline bridge matrix registration` first",
            path.display()
        )
    })?;
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .map(|value| value.trim().to_owned())
            .ok_or_else(|| format!("matrix: {} has no {key}", path.display()))
    };
    Ok(MatrixTokens {
        as_token: value("as_token")?,
        hs_token: value("hs_token")?,
    })
}

/// The registration YAML for the homeserver, which reaches the bridge at `url`; makes the
/// tokens (in `keys/matrix-tokens`) the first time.
pub fn registration(
    data_dir: &DataDir,
    config: &MatrixConfig,
    url: &str,
) -> Result<String, String> {
    let path = data_dir.matrix_tokens_path();
    if config.tokens.is_none() && !path.exists() {
        let token = || {
            let mut bytes = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
            hex::encode(bytes)
        };
        crate::data_dir::write_secret(
            &path,
            &format!("as_token={}\nhs_token={}\n", token(), token()),
        )
        .map_err(|err| format!("cannot write {}: {err}", path.display()))?;
    }
    let settings = config.settings(&tokens(data_dir, config)?)?;
    Ok(settings.registration(url))
}

/// Starts the Matrix bridge with its certified `key`; it runs until the node closes.
pub fn start(
    ingest: &Ingest,
    config: &MatrixConfig,
    tokens: &MatrixTokens,
    key: SecretKey,
) -> Result<Arc<Matrix<LocalLink>>, String> {
    let bridge = Bridge::new(
        BridgeIdentity::new(key, ChannelKind::Matrix),
        LocalLink::builtin(ingest.clone(), ChannelKind::Matrix),
        crate::clock::now,
    );
    let matrix = Arc::new(Matrix::new(bridge, config.settings(tokens)?)?);
    info!(homeserver = %config.homeserver, bot = %matrix.settings().bot, "matrix on");
    tokio::spawn(load_rooms(ingest.clone(), Arc::clone(&matrix)));
    tokio::spawn(crate::bridge_host::drive(
        ingest.clone(),
        ChannelKind::Matrix,
        Arc::clone(&matrix),
    ));
    Ok(matrix)
}

/// Reads the rooms back from the homeserver, trying again while it is not up.
async fn load_rooms(ingest: Ingest, matrix: Arc<Matrix<LocalLink>>) {
    let mut wait = Duration::from_millis(500);
    loop {
        match matrix.load_rooms().await {
            Ok(rooms) => {
                info!(rooms, "matrix: customers' rooms read from the homeserver");
                return;
            }
            Err(err) => warn!(cause = %err, "matrix: cannot read the rooms yet; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = ingest.closing() => return,
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}
