//! The data folder of a node.
//!
//! ```text
//! <data-dir>/
//!   VERSION          layout version ("1")
//!   identity.toml    public facts: org id, node id, PeerId (safe to share)
//!   keys/org.key     the org key's seed, hex (mode 0600); move it offline once the org has
//!                    more nodes
//!   keys/node.key    the node key's seed, hex (mode 0600)
//!   keys/node.cert   the org's certificate for the node key, hex of its canonical encoding
//!   keys/storage.key the key that wraps the store's data keys, hex (mode 0600), unless the
//!                    environment gives it (`admin::storage_key`)
//!   config.toml      the node's configuration (see `config`)
//!   peers            peers added with `threadline peer add`, one multiaddr a line
//!   partners         partner orgs added with `threadline partner add`, one org id a line
//!   invites/         one-time invites not yet used (`threadline org invite`)
//!   store/           the sled store (see `store`)
//! ```
//!
//! `init` writes everything into a temporary folder beside the target and renames it into place,
//! so a crash leaves either no data folder or a complete one.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use threadline_protocol::{
    cert::{CertRole, Certificate, CertificateBody},
    codec, OrgId, SecretKey, Timestamp,
};

use crate::identity::Identity;

/// The layout version this build reads and writes.
pub const LAYOUT_VERSION: u32 = 1;

/// How long a node certificate made by `init` is valid: one year. Renewal is a new
/// certificate from the org key; expiry bounds the damage of a stolen node key that nobody
/// revoked.
pub const NODE_CERT_VALIDITY_MILLIS: u64 = 365 * 24 * 3600 * 1000;

/// How long a bridge certificate is valid (`bridge add`, a built-in bridge's key, a joining
/// node's bridges).
pub const BRIDGE_CERT_VALIDITY_MILLIS: u64 = 365 * 24 * 3600 * 1000;

/// The org's certificate for the bridge key `key` on `channel`, valid from `now` for
/// [`BRIDGE_CERT_VALIDITY_MILLIS`].
pub fn bridge_certificate_for(
    org_key: &SecretKey,
    org: OrgId,
    key: threadline_protocol::PublicKey,
    channel: threadline_protocol::ChannelKind,
    now: Timestamp,
) -> Result<Certificate, codec::EncodeError> {
    Certificate::issue(
        org_key,
        CertificateBody::new(
            org,
            key,
            CertRole::Bridge {
                channel,
                handle_scope: None,
            },
            now,
            now.saturating_add_millis(BRIDGE_CERT_VALIDITY_MILLIS),
        ),
    )
}

/// A node's data folder.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// `init` could not create a data folder. Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// The folder exists and is not empty.
    #[error("{path} already exists and is not empty; refusing to overwrite it")]
    AlreadyExists {
        /// The folder.
        path: PathBuf,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The certificate could not be encoded.
    #[error("cannot encode the node certificate: {0}")]
    Encode(#[from] codec::EncodeError),
}

/// A data folder could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The folder is not a node's data folder: `init` (or the first `run`) never made it.
    #[error(
        "{} is not a Threadline data folder: make one with `threadline init` (or `threadline run`), or name another with --data-dir",
        .data_dir.display()
    )]
    NotADataFolder {
        /// The folder.
        data_dir: PathBuf,
    },
    /// A file's contents are invalid.
    #[error("{path} is invalid: {reason}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl DataDir {
    /// The data folder at `root` (nothing is read yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a new org and node in an absent or empty folder: org key, node key, and the
    /// org's certificate for the node key, valid from `now` for
    /// [`NODE_CERT_VALIDITY_MILLIS`]. `prepare` then runs on the folder while it still has its
    /// temporary name (to create the store, say); only if it succeeds is the folder renamed into
    /// place, so a crash or a failure leaves either no folder or a complete one.
    pub fn init<R, T, E>(
        &self,
        rng: &mut R,
        now: Timestamp,
        prepare: impl FnOnce(&DataDir, &Identity, &SecretKey) -> Result<T, E>,
    ) -> Result<(Identity, T), E>
    where
        R: rand_core::CryptoRngCore,
        E: From<InitError>,
    {
        let org_key = SecretKey::generate(rng);
        let node_key = SecretKey::generate(rng);
        let org = OrgId(org_key.public());
        let body = CertificateBody::new(
            org,
            node_key.public(),
            CertRole::Node,
            now,
            now.saturating_add_millis(NODE_CERT_VALIDITY_MILLIS),
        );
        let node_cert = Certificate::issue(&org_key, body).map_err(InitError::from)?;
        let identity = Identity {
            org,
            node_key,
            node_cert,
        };

        self.create(identity, Some(&org_key), |staging, identity| {
            prepare(staging, identity, &org_key)
        })
    }

    /// Creates the data folder of a node that joined an existing org: its identity (the org's
    /// certificate for its key came from the inviting node), no org key. `prepare` runs as for
    /// [`DataDir::init`].
    pub fn init_joined<T, E>(
        &self,
        identity: Identity,
        prepare: impl FnOnce(&DataDir, &Identity) -> Result<T, E>,
    ) -> Result<(Identity, T), E>
    where
        E: From<InitError>,
    {
        self.create(identity, None, prepare)
    }

    fn create<T, E>(
        &self,
        identity: Identity,
        org_key: Option<&SecretKey>,
        prepare: impl FnOnce(&DataDir, &Identity) -> Result<T, E>,
    ) -> Result<(Identity, T), E>
    where
        E: From<InitError>,
    {
        let is_empty = match fs::read_dir(&self.root) {
            Ok(mut entries) => entries.next().is_none(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => true,
            Err(source) => {
                return Err(InitError::Io {
                    path: self.root.clone(),
                    source,
                }
                .into())
            }
        };
        if !is_empty {
            return Err(InitError::AlreadyExists {
                path: self.root.clone(),
            }
            .into());
        }
        let staging = staging_path(&self.root);
        let prepared = write_layout(&staging, org_key, &identity)
            .map_err(E::from)
            .and_then(|()| prepare(&DataDir::new(&staging), &identity));
        let result = prepared.and_then(|prepared| {
            // An empty target folder is replaced; rename cannot replace a non-empty one.
            let io = |source| InitError::Io {
                path: self.root.clone(),
                source,
            };
            if self.root.exists() {
                fs::remove_dir(&self.root).map_err(io)?;
            }
            fs::rename(&staging, &self.root).map_err(io)?;
            sync_parent(&self.root).map_err(io)?;
            Ok(prepared)
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result.map(|prepared| (identity, prepared))
    }

    /// The key that wraps the store's data keys, unless it comes from the environment
    /// (`admin::storage_key`).
    pub fn storage_key_path(&self) -> PathBuf {
        self.root.join("keys").join("storage.key")
    }

    /// The Matrix application service's tokens (`threadline bridge matrix registration`
    /// makes them).
    pub fn matrix_tokens_path(&self) -> PathBuf {
        self.root.join("keys").join("matrix-tokens")
    }

    /// The sled store's folder.
    pub fn store_path(&self) -> PathBuf {
        self.root.join("store")
    }

    /// Where `threadline backup` asks a running node for a backup (a `<name>.request` file
    /// naming the folder to back up into) and the node answers (`<name>.done`).
    pub fn backup_requests_path(&self) -> PathBuf {
        self.root.join("backup-requests")
    }

    /// Where `threadline agent …` and `threadline bridge add` ask a running node to carry
    /// them out (see `admin_requests.rs`).
    pub fn admin_requests_path(&self) -> PathBuf {
        self.root.join("admin-requests")
    }

    /// Creates `to` for a backup of this folder: refused if it exists (a backup never
    /// overwrites anything) or is inside this folder (it would copy itself).
    pub fn claim_backup_folder(&self, to: &Path) -> Result<(), String> {
        let root = fs::canonicalize(&self.root)
            .map_err(|err| format!("{}: {err}", self.root.display()))?;
        let parent = to
            .parent()
            .and_then(|parent| fs::canonicalize(parent).ok())
            .ok_or_else(|| format!("{}: its parent folder does not exist", to.display()))?;
        if parent.starts_with(&root) {
            return Err(format!(
                "{} is inside the data folder: back up somewhere else",
                to.display()
            ));
        }
        fs::create_dir(to).map_err(|err| match err.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{} exists already: back up into a new folder", to.display())
            }
            _ => format!("cannot create {}: {err}", to.display()),
        })
    }

    /// Copies everything in the folder but the store (keys, configuration, identity, lists)
    /// into `to`, creating it: what a backup holds besides the store. These files are written
    /// only by admin commands, never by the running node's writer.
    pub fn copy_besides_store(&self, to: &Path) -> std::io::Result<()> {
        let skip = [
            self.store_path(),
            self.backup_requests_path(),
            self.admin_requests_path(),
        ];
        let mut pending = vec![(self.root.clone(), to.to_path_buf())];
        while let Some((dir, into)) = pending.pop() {
            fs::create_dir_all(&into)?;
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let source = entry.path();
                if skip.contains(&source) {
                    continue;
                }
                let target = into.join(entry.file_name());
                if entry.file_type()?.is_dir() {
                    pending.push((source, target));
                } else {
                    fs::copy(&source, &target)?;
                }
            }
        }
        Ok(())
    }

    /// The entries of a list file (`peers`, `partners`): one a line, blank lines and `#`
    /// comments skipped; none if the file does not exist.
    pub fn read_list(path: &Path) -> Vec<String> {
        Self::try_read_list(path).unwrap_or_default()
    }

    /// [`DataDir::read_list`], saying when the file exists but cannot be read (a missing
    /// file is an empty list).
    pub fn try_read_list(path: &Path) -> std::io::Result<Vec<String>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned)
                .collect()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    /// Appends an entry to a list file (created if absent).
    pub fn append_to_list(path: &Path, entry: &str) -> Result<(), InitError> {
        let io = |source| InitError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        writeln!(file, "{entry}").map_err(io)
    }

    /// Removes every line equal to `entry` from a list file (rewritten whole, atomically);
    /// answers whether there was one.
    pub fn remove_from_list(path: &Path, entry: &str) -> Result<bool, InitError> {
        let io = |source| InitError::Io {
            path: path.to_owned(),
            source,
        };
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(io(err)),
        };
        let kept: Vec<&str> = text.lines().filter(|line| line.trim() != entry).collect();
        if kept.len() == text.lines().count() {
            return Ok(false);
        }
        let staged = path.with_extension("new");
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        fs::write(&staged, body).map_err(io)?;
        fs::rename(&staged, path).map_err(io)?;
        Ok(true)
    }

    /// The file of peers added with `threadline peer add` (one multiaddr a line).
    pub fn peers_path(&self) -> PathBuf {
        self.root.join("peers")
    }

    /// The file of partner orgs added with `threadline partner add` (one org id a line).
    pub fn partners_path(&self) -> PathBuf {
        self.root.join("partners")
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// The org key, if this node holds it.
    pub fn load_org_key(&self) -> Result<Option<SecretKey>, LoadError> {
        let path = self.root.join("keys/org.key");
        if !path.exists() {
            return Ok(None);
        }
        read_key(&path).map(Some)
    }

    /// The key of the built-in bridge for `channel`, if the node has one
    /// (`keys/bridge-<channel>.key`).
    pub fn load_builtin_bridge_key(
        &self,
        channel: threadline_protocol::ChannelKind,
    ) -> Result<Option<SecretKey>, LoadError> {
        let path = self.builtin_bridge_key_path(channel);
        if !path.exists() {
            return Ok(None);
        }
        read_key(&path).map(Some)
    }

    /// Writes the key of the built-in bridge for `channel` (readable by the owner only; never
    /// overwrites).
    pub fn save_builtin_bridge_key(
        &self,
        channel: threadline_protocol::ChannelKind,
        key: &SecretKey,
    ) -> Result<(), InitError> {
        let path = self.builtin_bridge_key_path(channel);
        write_file(&path, &hex::encode(key.to_seed()), true)?;
        sync_parent(&path).map_err(|source| InitError::Io { path, source })
    }

    fn builtin_bridge_key_path(&self, channel: threadline_protocol::ChannelKind) -> PathBuf {
        self.root.join(format!("keys/bridge-{channel}.key"))
    }

    /// Loads the node's identity and checks that its certificate is the org's, for its key.
    pub fn load_identity(&self) -> Result<Identity, LoadError> {
        let version_path = self.root.join("VERSION");
        let version = match read(&version_path) {
            Err(LoadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::NotADataFolder {
                    data_dir: self.root.clone(),
                })
            }
            other => other?,
        };
        if version.trim() != LAYOUT_VERSION.to_string() {
            return Err(LoadError::Invalid {
                path: version_path,
                reason: format!("layout version {} is not {LAYOUT_VERSION}", version.trim()),
            });
        }
        let node_key = read_key(&self.root.join("keys/node.key"))?;
        let cert_path = self.root.join("keys/node.cert");
        let invalid_cert = |reason: String| LoadError::Invalid {
            path: cert_path.clone(),
            reason,
        };
        let cert_bytes =
            hex::decode(read(&cert_path)?.trim()).map_err(|e| invalid_cert(e.to_string()))?;
        let node_cert: Certificate =
            codec::decode(&cert_bytes, 4096).map_err(|e| invalid_cert(e.to_string()))?;
        node_cert
            .verify()
            .map_err(|e| invalid_cert(e.to_string()))?;
        if node_cert.body.subject != node_key.public() {
            return Err(invalid_cert("certifies another key".to_owned()));
        }
        Ok(Identity {
            org: node_cert.body.org,
            node_key,
            node_cert,
        })
    }
}

/// Makes a rename in the folder durable (fsync of the parent folder).
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

fn staging_path(root: &Path) -> PathBuf {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "threadline-data".to_owned());
    root.with_file_name(format!(".{name}.init-{}", std::process::id()))
}

fn write_layout(
    dir: &Path,
    org_key: Option<&SecretKey>,
    identity: &Identity,
) -> Result<(), InitError> {
    let keys = dir.join("keys");
    fs::create_dir_all(&keys).map_err(|source| InitError::Io {
        path: keys.clone(),
        source,
    })?;
    write_file(&dir.join("VERSION"), &format!("{LAYOUT_VERSION}\n"), false)?;
    if let Some(org_key) = org_key {
        write_file(
            &keys.join("org.key"),
            &format!("{}\n", hex::encode(org_key.to_seed())),
            true,
        )?;
    }
    write_file(
        &keys.join("node.key"),
        &format!("{}\n", hex::encode(identity.node_key.to_seed())),
        true,
    )?;
    write_file(
        &keys.join("node.cert"),
        &format!("{}\n", hex::encode(codec::encode(&identity.node_cert)?)),
        false,
    )?;
    let public = format!(
        "# Public identity of this node: safe to share with peers.\n\
         org = \"{}\"\nnode = \"{}\"\npeer_id = \"{}\"\n",
        identity.org,
        identity.node_id(),
        identity.peer_id()
    );
    write_file(&dir.join("identity.toml"), &public, false)?;
    write_file(
        &dir.join("config.toml"),
        crate::config::DEFAULT_CONFIG,
        false,
    )?;
    Ok(())
}

/// Writes a new secret file (readable by its owner only), synced, with its folder.
pub fn write_secret(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    write_file(path, contents, true).map_err(|err| match err {
        InitError::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })?;
    sync_parent(path)
}

fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), InitError> {
    let io = |source| InitError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn read(path: &Path) -> Result<String, LoadError> {
    fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_key(path: &Path) -> Result<SecretKey, LoadError> {
    let text = read(path)?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| LoadError::Invalid {
            path: path.to_owned(),
            reason: "not 32 bytes of hex".to_owned(),
        })?;
    Ok(SecretKey::from_seed(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load_gives_the_same_identity() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path().join("data"));
        let now = Timestamp::from_millis(1_767_225_600_000);
        let (created, ()) = dir
            .init(
                &mut rand_core::OsRng,
                now,
                |_, _, _| Ok::<(), InitError>(()),
            )
            .expect("init");
        let loaded = dir.load_identity().expect("load");
        assert_eq!(loaded.org, created.org);
        assert_eq!(loaded.node_id(), created.node_id());
        assert_eq!(loaded.node_cert, created.node_cert);
        assert!(loaded.node_cert.is_valid_at(now));
    }

    #[test]
    fn init_refuses_a_non_empty_folder_and_changes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("data");
        fs::create_dir(&path).expect("mkdir");
        fs::write(path.join("notes.txt"), "mine").expect("write");
        let err = DataDir::new(&path)
            .init(&mut rand_core::OsRng, Timestamp::EPOCH, |_, _, _| {
                Ok::<(), InitError>(())
            })
            .expect_err("refused");
        assert!(matches!(err, InitError::AlreadyExists { .. }));
        assert_eq!(
            fs::read_to_string(path.join("notes.txt")).expect("read"),
            "mine"
        );
        assert_eq!(fs::read_dir(&path).expect("list").count(), 1);
        assert_eq!(
            fs::read_dir(tmp.path()).expect("list").count(),
            1,
            "no staging left"
        );
    }

    #[test]
    fn a_failed_preparation_leaves_no_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("data");
        let err = DataDir::new(&path)
            .init(&mut rand_core::OsRng, Timestamp::EPOCH, |_, _, _| {
                Err::<(), InitError>(InitError::AlreadyExists {
                    path: PathBuf::from("simulated failure"),
                })
            })
            .expect_err("prepare failed");
        assert!(err.to_string().contains("simulated failure"));
        assert!(!path.exists());
        assert_eq!(
            fs::read_dir(tmp.path()).expect("list").count(),
            0,
            "no staging left"
        );
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::new(tmp.path().join("data"));
        dir.init(&mut rand_core::OsRng, Timestamp::EPOCH, |_, _, _| {
            Ok::<(), InitError>(())
        })
        .expect("init");
        let other = hex::encode(SecretKey::from_seed([5; 32]).to_seed());
        fs::write(tmp.path().join("data/keys/node.key"), other).expect("write");
        let err = dir.load_identity().expect_err("refused");
        assert!(err.to_string().contains("certifies another key"), "{err}");
    }
}
