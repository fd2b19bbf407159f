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

[webchat]
# The node's own web chat bridge (the widget and its WebSocket). Turn it off when a standalone
# web chat bridge serves this org's web chat queue instead (two would share one queue).
builtin = true
# New chat connections allowed per client address per minute. Behind a proxy every visitor
# has the proxy's address: raise it there.
connections_per_minute = 120
# Websites allowed to embed the chat widget (their origins, like \"https://shop.example\").
# Pages served by the node itself are always allowed.
allowed_origins = []

[replication]
# Where this node listens for its org's other nodes (libp2p multiaddrs). Loopback only by
# default: give a routable address (\"/ip4/0.0.0.0/tcp/7430\") for nodes on other machines.
# THREADLINE_P2P_LISTEN and `threadline run --p2p-listen` override it.
listen = [\"/ip4/127.0.0.1/tcp/7430\"]
# Peers to stay connected to, each ending in /p2p/<PeerId> (`threadline peer add` adds more,
# in the data folder's `peers` file).
peers = []
# Find the org's nodes on the local network with mDNS.
mdns = false
# Partner orgs (org ids) whose nodes may connect to get the threads shared with them
# (`threadline partner add` adds more, in the data folder's `partners` file).
partners = []

[email]
# The support address customers write to. The built-in email bridge is on when it is set.
# address = \"support@shop.example\"
# Where the node takes mail for it (SMTP; THREADLINE_SMTP_LISTEN and `run --smtp-listen`
# override it). Put it behind your MX, or point the MX at it.
smtp_listen = \"127.0.0.1:2525\"
# Where replies are sent from: an SMTP relay URL (smtp://host:port; ?tls=required for STARTTLS;
# smtps:// for TLS; user:password@ for AUTH). THREADLINE_SMTP_RELAY overrides it (keep the
# password there rather than here). No relay: replies wait in the email queue.
# relay = \"smtp://127.0.0.1:587?tls=required\"
# A certificate (PEM file) to trust for the relay, besides the usual web roots: the private
# CA that signed the relay's certificate, or a self-signed one made as a server certificate
# (CA:FALSE; one made as a CA is refused as a server's own certificate).
# relay_ca = \"/etc/threadline/relay-ca.pem\"
# The name replies are signed with (From: NAME <address>); by default the address's domain.
# name = \"Shop\"
# The authserv-id of your MX (RFC 8601). When set, only mail whose Authentication-Results
# from that MX says dmarc=pass is taken: the sender is who the From: says. Other mail is
# refused (550 5.7.1). Unset, the From: is taken on trust: only do that behind an MX that
# rejects mail failing DMARC.
# authserv_id = \"mx.shop.example\"
# An existing mailbox to take mail from as well, polled over IMAP (imaps://user:password@host/
# MAILBOX; imap:// is plain, for a server on this host). THREADLINE_IMAP overrides it (keep
# the password there). Taken mail is marked with the keyword $Threadline, never deleted.
# imap = \"imaps://support%40shop.example:PASSWORD@imap.shop.example/INBOX\"
# How often the mailbox is polled, in seconds.
imap_poll_seconds = 30
";

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the HTTP API listens.
    pub api_listen: SocketAddr,
    /// Origins (`scheme://host[:port]`) allowed to open the web chat, besides the node's own.
    pub webchat_origins: Vec<String>,
    /// Whether the node runs its own web chat bridge.
    pub webchat_builtin: bool,
    /// The secret websites sign their logged-in users' identities with, if any.
    pub webchat_identity_secret: Option<String>,
    /// New chat connections allowed per client address per minute.
    pub webchat_connections_per_minute: u32,
    /// Where replication listens.
    pub replication_listen: Vec<libp2p::Multiaddr>,
    /// Peers to stay connected to.
    pub replication_peers: Vec<libp2p::Multiaddr>,
    /// Whether to find peers on the LAN with mDNS.
    pub replication_mdns: bool,
    /// Partner orgs whose nodes may connect.
    pub replication_partners: Vec<threadline_protocol::OrgId>,
    /// The support address of the built-in email bridge (off when `None`).
    pub email_address: Option<String>,
    /// Where the email bridge takes mail (SMTP).
    pub email_smtp_listen: SocketAddr,
    /// The SMTP relay replies go through (a lettre URL), if any.
    pub email_relay: Option<String>,
    /// The name replies are signed with.
    pub email_name: Option<String>,
    /// The MX whose `Authentication-Results` must say `dmarc=pass` (any From: is taken on
    /// trust when `None`).
    pub email_authserv_id: Option<String>,
    /// A certificate file to trust for the relay.
    pub email_relay_ca: Option<std::path::PathBuf>,
    /// An existing mailbox to poll over IMAP too.
    pub email_imap: Option<threadline_bridges::email::imap::MailboxUrl>,
    /// How often it is polled.
    pub email_imap_poll: std::time::Duration,
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
    /// A value is of the right type but not acceptable.
    #[error("{path} is invalid: {detail}")]
    BadValue {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        detail: String,
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
    #[serde(default)]
    webchat: WebchatSection,
    #[serde(default)]
    replication: ReplicationSection,
    #[serde(default)]
    email: EmailSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailSection {
    #[serde(default)]
    address: Option<String>,
    #[serde(default = "default_smtp_listen")]
    smtp_listen: SocketAddr,
    #[serde(default)]
    relay: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    authserv_id: Option<String>,
    #[serde(default)]
    relay_ca: Option<std::path::PathBuf>,
    #[serde(default)]
    imap: Option<String>,
    #[serde(default = "default_imap_poll_seconds")]
    imap_poll_seconds: u64,
}

fn default_imap_poll_seconds() -> u64 {
    30
}

impl Default for EmailSection {
    fn default() -> Self {
        EmailSection {
            address: None,
            smtp_listen: default_smtp_listen(),
            relay: None,
            name: None,
            authserv_id: None,
            relay_ca: None,
            imap: None,
            imap_poll_seconds: default_imap_poll_seconds(),
        }
    }
}

fn default_smtp_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2525))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicationSection {
    #[serde(default = "default_p2p_listen")]
    listen: Vec<String>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default)]
    mdns: bool,
    #[serde(default)]
    partners: Vec<String>,
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            listen: default_p2p_listen(),
            peers: Vec::new(),
            mdns: false,
            partners: Vec::new(),
        }
    }
}

/// Where replication listens unless configured.
pub const DEFAULT_P2P_LISTEN: &str = "/ip4/127.0.0.1/tcp/7430";

fn default_p2p_listen() -> Vec<String> {
    vec![DEFAULT_P2P_LISTEN.to_owned()]
}

/// Parses a peer's address: a multiaddr that ends with `/p2p/<PeerId>`.
pub fn peer_address(text: &str) -> Result<libp2p::Multiaddr, String> {
    let address: libp2p::Multiaddr = text
        .trim()
        .parse()
        .map_err(|err| format!("`{text}` is not a multiaddr: {err}"))?;
    if crate::identity::peer_of(&address).is_none() {
        return Err(format!(
            "`{text}` does not end with /p2p/<PeerId> (`threadline identity` prints a node's PeerId)"
        ));
    }
    Ok(address)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebchatSection {
    #[serde(default = "yes")]
    builtin: bool,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default)]
    identity_secret: Option<String>,
    #[serde(default = "connections_per_minute")]
    connections_per_minute: u32,
}

fn connections_per_minute() -> u32 {
    DEFAULT_CONNECTIONS_PER_MINUTE
}

/// New chat connections per client address per minute, unless configured.
pub const DEFAULT_CONNECTIONS_PER_MINUTE: u32 = 120;

impl Default for WebchatSection {
    fn default() -> Self {
        WebchatSection {
            builtin: true,
            allowed_origins: Vec::new(),
            identity_secret: None,
            connections_per_minute: DEFAULT_CONNECTIONS_PER_MINUTE,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    listen: SocketAddr,
}

/// The shortest identity secret accepted: anyone who can guess it can speak for any user.
pub const MIN_IDENTITY_SECRET_BYTES: usize = 16;

/// Checks a web chat identity secret; `None` when none is set (an empty value is none).
pub fn identity_secret(secret: Option<String>) -> Result<Option<String>, String> {
    match secret.filter(|secret| !secret.is_empty()) {
        Some(secret) if secret.len() < MIN_IDENTITY_SECRET_BYTES => Err(format!(
            "the web chat identity secret has {} bytes; use at least {MIN_IDENTITY_SECRET_BYTES} random ones",
            secret.len()
        )),
        secret => Ok(secret),
    }
}

/// Checks an origin for the web chat allow-list (`https://shop.example`, no path).
pub fn check_origin(origin: &str) -> Result<(), String> {
    let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
        && !origin.ends_with('/')
        && origin
            .split("://")
            .nth(1)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{origin}` is not an origin like `https://shop.example`"
        ))
    }
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
        let bad = |detail: String| ConfigError::BadValue {
            path: path.to_owned(),
            detail,
        };
        for origin in &file.webchat.allowed_origins {
            check_origin(origin).map_err(|e| bad(format!("webchat.allowed_origins: {e}")))?;
        }
        let identity_secret = identity_secret(file.webchat.identity_secret)
            .map_err(|e| bad(format!("webchat.identity_secret: {e}")))?;
        let replication_listen = file
            .replication
            .listen
            .iter()
            .map(|text| {
                text.parse::<libp2p::Multiaddr>()
                    .map_err(|err| bad(format!("replication.listen: `{text}`: {err}")))
            })
            .collect::<Result<_, _>>()?;
        let replication_peers = file
            .replication
            .peers
            .iter()
            .map(|text| peer_address(text).map_err(|e| bad(format!("replication.peers: {e}"))))
            .collect::<Result<_, _>>()?;
        let email_address = match file.email.address {
            Some(address) => {
                let address = address.trim().to_lowercase();
                let valid = format!("email:{address}")
                    .parse::<threadline_protocol::Handle>()
                    .is_ok()
                    && !address.contains('+');
                if !valid {
                    return Err(bad(format!(
                        "email.address: `{address}` is not a plain address like support@shop.example"
                    )));
                }
                Some(address)
            }
            None => None,
        };
        let replication_partners = file
            .replication
            .partners
            .iter()
            .map(|text| {
                text.trim()
                    .parse::<threadline_protocol::OrgId>()
                    .map_err(|_| bad(format!("replication.partners: `{text}` is not an org id")))
            })
            .collect::<Result<_, _>>()?;
        let email_imap = std::env::var("THREADLINE_IMAP")
            .ok()
            .filter(|url| !url.is_empty())
            .or(file.email.imap)
            .map(|url| {
                url.parse::<threadline_bridges::email::imap::MailboxUrl>()
                    .map_err(|err| bad(format!("email.imap: {err}")))
            })
            .transpose()?;
        if email_imap.is_some() && email_address.is_none() {
            return Err(bad(
                "email.imap needs email.address (the support address the mail is for)".to_owned(),
            ));
        }
        if file.email.imap_poll_seconds == 0 {
            return Err(bad("email.imap_poll_seconds must be at least 1".to_owned()));
        }
        Ok(Config {
            replication_partners,
            email_imap,
            email_imap_poll: std::time::Duration::from_secs(file.email.imap_poll_seconds),
            email_address,
            email_smtp_listen: file.email.smtp_listen,
            email_relay: std::env::var("THREADLINE_SMTP_RELAY")
                .ok()
                .filter(|url| !url.is_empty())
                .or(file.email.relay),
            email_name: file.email.name,
            email_authserv_id: file.email.authserv_id.filter(|id| !id.trim().is_empty()),
            email_relay_ca: file.email.relay_ca,
            replication_listen,
            replication_peers,
            replication_mdns: file.replication.mdns,
            api_listen: listen.unwrap_or(file.api.listen),
            webchat_origins: file.webchat.allowed_origins,
            webchat_builtin: file.webchat.builtin,
            webchat_identity_secret: identity_secret,
            webchat_connections_per_minute: file.webchat.connections_per_minute,
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
        assert_eq!(
            config.replication_listen,
            vec![DEFAULT_P2P_LISTEN
                .parse::<libp2p::Multiaddr>()
                .expect("addr")]
        );
        assert!(config.replication_peers.is_empty() && !config.replication_mdns);
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
        std::fs::write(
            &path,
            "[api]\nlisten = \"127.0.0.1:1\"\n[webchat]\nallowed_origins = [\"shop.example/\"]\n",
        )
        .expect("write");
        let err = Config::load(&path, None).expect_err("invalid origin");
        assert!(err.to_string().contains("shop.example/"), "{err}");
        std::fs::write(
            &path,
            "[api]\nlisten = \"127.0.0.1:1\"\n[replication]\npeers = [\"/ip4/127.0.0.1/tcp/7430\"]\n",
        )
        .expect("write");
        let err = Config::load(&path, None).expect_err("a peer without its PeerId");
        assert!(err.to_string().contains("/p2p/<PeerId>"), "{err}");
    }
}
