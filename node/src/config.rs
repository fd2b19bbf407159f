//! The node's configuration: `config.toml` in the data folder, then environment variables,
//! then command-line flags (each overriding the one before). Validated when loaded.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// The file `init` writes.
pub const DEFAULT_CONFIG: &str = "\
# Threadline node configuration.
# THREADLINE_API_LISTEN and `threadline run --listen` override what is set here.

[api]
# Where the HTTP API listens. Loopback only by default: put a TLS-terminating proxy in front
# of it to serve customers and agents from elsewhere.
listen = \"127.0.0.1:7420\"
";

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the HTTP API listens.
    pub api_listen: SocketAddr,
}

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path} is invalid: {source}")]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        #[source]
        source: toml::de::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    api: ApiSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    listen: SocketAddr,
}

impl Config {
    /// Loads `path`, then applies `listen` (from the environment or the command line) if given.
    pub fn load(path: &Path, listen: Option<SocketAddr>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|source| ConfigError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        Ok(Config {
            api_listen: listen.unwrap_or(file.api.listen),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_loads_and_flags_override_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, DEFAULT_CONFIG).expect("write");
        let config = Config::load(&path, None).expect("loads");
        assert_eq!(config.api_listen, "127.0.0.1:7420".parse().expect("addr"));
        let other: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(
            Config::load(&path, Some(other)).expect("loads").api_listen,
            other
        );
    }

    #[test]
    fn unknown_keys_and_bad_addresses_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[api]\nlisten = \"nowhere\"\n").expect("write");
        let err = Config::load(&path, None).expect_err("invalid");
        assert!(err.to_string().contains("is invalid"), "{err}");
        std::fs::write(&path, "[api]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").expect("write");
        assert!(Config::load(&path, None).is_err());
    }
}
