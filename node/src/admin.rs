//! Administration on a stopped node's data folder: creating the org's first node (`init`),
//! agents and their tokens, bridges and their keys.
//!
//! These write the store directly, so they need the node stopped (sled holds an exclusive
//! lock on the store while the node runs; the error says so).

use rand_core::RngCore as _;
use threadline_protocol::{
    cert::{CertRole, Certificate},
    directory,
    event::{DirectoryKind, Draft, EventKind, Scope},
    AgentId, ChannelKind, Directory, OrgId, ScopeId, SecretKey, Timestamp,
};

use crate::api::auth::token_hash;
use crate::data_dir::{DataDir, InitError, LoadError};
use crate::identity::Identity;
use crate::store::data_keys::StorageKey;
use crate::store::{
    AgentRecord, AgentRole, Store, StoreError, TokenRecord, TokenRole, TreeName, TreeRecord,
    WriteSet,
};

pub use crate::data_dir::BRIDGE_CERT_VALIDITY_MILLIS;

/// Administration failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Creating the data folder failed.
    #[error(transparent)]
    Init(#[from] InitError),
    /// Loading the data folder failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The org key is not on this node (it is needed to certify bridges and nodes, and to
    /// remove nodes).
    #[error("the org key is not in {path}; {needed_for} needs the org key (run it on the node that holds it)")]
    NoOrgKey {
        /// Where it was looked for.
        path: std::path::PathBuf,
        /// What needed it.
        needed_for: &'static str,
    },
    /// No node of the org has this key.
    #[error("no node of this org has the key {0}")]
    UnknownNode(threadline_protocol::PublicKey),
    /// No agent with this id.
    #[error("no agent {0}")]
    UnknownAgent(AgentId),
    /// The change would leave no active admin.
    #[error("agent {0} is the only admin left: make another agent an admin first (`threadline agent add NAME --admin`, or `threadline agent role ID admin`)")]
    LastAdmin(AgentId),
    /// An event could not be made.
    #[error("{0}")]
    Event(String),
    /// A command on customers' records failed.
    #[error(transparent)]
    Operator(#[from] crate::operator::OperatorError),
}

/// A new agent and the token it signs in with (shown once; the store keeps its hash).
#[derive(Debug)]
pub struct NewAgent {
    /// The agent.
    pub agent: AgentRecord,
    /// The bearer token.
    pub token: String,
}

/// A new bridge: its key (for a standalone bridge process), its certificate and its token.
#[derive(Debug)]
pub struct NewBridge {
    /// The bridge's signing key.
    pub key: SecretKey,
    /// The org's certificate for it.
    pub certificate: Certificate,
    /// The bearer token for the bridge API.
    pub token: String,
}

/// What `init` made.
#[derive(Debug)]
pub struct Initialised {
    /// The node's identity.
    pub identity: Identity,
    /// The first agent and its token.
    pub first_agent: NewAgent,
}

/// Creates the org, the node, the store with the org's directory (genesis and the node's
/// certificate), and a first agent named `admin`.
pub fn init(data_dir: &DataDir, now: Timestamp) -> Result<Initialised, AdminError> {
    let (identity, first_agent) =
        data_dir.init(&mut rand_core::OsRng, now, |staging, identity, org_key| {
            let store = open_new_store(staging)?;
            let genesis = directory::genesis(org_key)
                .map_err(|e| AdminError::Event(e.to_string()))?
                .verify()
                .map_err(|e| AdminError::Event(e.to_string()))?;
            let mut directory =
                Directory::new(genesis.clone()).map_err(|e| AdminError::Event(e.to_string()))?;
            let mut writes = WriteSet::default();
            writes.put_event(&store, &genesis)?;
            let certify = certify_event(&directory, org_key, identity.node_cert.clone(), now)?;
            directory
                .insert(certify.clone(), now)
                .map_err(|e| AdminError::Event(e.to_string()))?;
            writes.put_event(&store, &certify)?;
            store.commit(writes)?;
            let first_agent = add_agent_to(&store, "admin", AgentRole::Admin, now)?;
            store.flush()?;
            Ok::<_, AdminError>(first_agent)
        })?;
    Ok(Initialised {
        identity,
        first_agent,
    })
}

/// Creates the data folder of a node that joined an org (`init --join`): its identity, the
/// org's directory it was given, the inviting node as its first peer, and a first agent.
pub fn init_joined(
    data_dir: &DataDir,
    joined: crate::replication::join::Joined,
    inviter: &str,
    now: Timestamp,
) -> Result<Initialised, AdminError> {
    let identity = Identity {
        org: joined.certificate.body.org,
        node_key: joined.node_key,
        node_cert: joined.certificate,
    };
    let events = joined.directory;
    let bridge_keys = joined.bridge_keys;
    let (identity, first_agent) = data_dir.init_joined(identity, |staging, identity| {
        for (channel, key) in &bridge_keys {
            staging.save_builtin_bridge_key(*channel, key)?;
        }
        let store = open_new_store(staging)?;
        let directory = Directory::restore(events.iter().cloned())
            .map_err(|e| AdminError::Event(e.to_string()))?;
        let mut writes = WriteSet::default();
        for event in &events {
            writes.put_event(&store, event)?;
        }
        writes.put_heads(
            &ScopeId::Directory(identity.org),
            directory.dag().len() as u64,
            directory.dag().heads(),
        )?;
        store.commit(writes)?;
        let first_agent = add_agent_to(&store, "admin", AgentRole::Admin, now)?;
        store.flush()?;
        let peers = staging.peers_path();
        std::fs::write(&peers, format!("# added by init --join\n{inviter}\n")).map_err(
            |source| InitError::Io {
                path: peers,
                source,
            },
        )?;
        Ok::<_, AdminError>(first_agent)
    })?;
    Ok(Initialised {
        identity,
        first_agent,
    })
}

/// Removes a node from the org: the org key revokes its key from `now`, in the directory
/// (replicated to every node, which then refuse it). The node must be stopped.
pub fn remove_node(
    data_dir: &DataDir,
    node: threadline_protocol::PublicKey,
    now: Timestamp,
) -> Result<(), AdminError> {
    let identity = data_dir.load_identity()?;
    let org_key = data_dir
        .load_org_key()?
        .ok_or_else(|| AdminError::NoOrgKey {
            path: data_dir.root().join("keys/org.key"),
            needed_for: "removing a node",
        })?;
    let store = open_store(data_dir)?;
    let directory = load_directory(&store, identity.org)?;
    let is_node = directory
        .certificates()
        .of(&node)
        .iter()
        .any(|cert| cert.body.role == CertRole::Node);
    if !is_node {
        return Err(AdminError::UnknownNode(node));
    }
    let (parents, depth) = directory.dag().next_parents();
    let revoke = Draft::new(
        Scope::Directory(identity.org),
        parents,
        depth,
        now,
        EventKind::Directory(DirectoryKind::Revoke {
            subject: node,
            effective_from: now,
        }),
    )
    .sign(&org_key)
    .map_err(|e| AdminError::Event(e.to_string()))?
    .verify()
    .map_err(|e| AdminError::Event(e.to_string()))?;
    let mut writes = WriteSet::default();
    writes.put_event(&store, &revoke)?;
    store.commit(writes)?;
    store.flush()?;
    Ok(())
}

/// Makes a one-time invite for a new node of the org (`threadline org invite`), to redeem at
/// `address` (this node's replication address, with its PeerId) before `expires`. Works while
/// the node runs.
pub fn invite(
    data_dir: &DataDir,
    address: String,
    expires: Timestamp,
) -> Result<crate::replication::invite::Invite, AdminError> {
    let identity = data_dir.load_identity()?;
    if data_dir.load_org_key()?.is_none() {
        return Err(AdminError::NoOrgKey {
            path: data_dir.root().join("keys/org.key"),
            needed_for: "inviting a node",
        });
    }
    crate::replication::invite::create(
        data_dir,
        identity.org,
        identity.node_key.public(),
        address,
        expires,
    )
    .map_err(|e| AdminError::Event(e.to_string()))
}

/// The environment variable naming a file that holds the storage key (instead of
/// `storage.key` in the data folder).
pub const STORAGE_KEY_FILE_VAR: &str = "THREADLINE_STORAGE_KEY_FILE";

/// The environment variable holding the storage key itself (64 hex digits).
pub const STORAGE_KEY_VAR: &str = "THREADLINE_STORAGE_KEY";

/// The key that wraps the store's data keys (docs/OPERATIONS.md, "Encryption at rest"): from
/// [`STORAGE_KEY_VAR`], else the file [`STORAGE_KEY_FILE_VAR`] names, else `keys/storage.key`
/// in the data folder; the file is made (readable by its owner only) for a store that has no
/// data keys yet. A store that has them and no key to open them is refused.
pub fn storage_key(data_dir: &DataDir) -> Result<StorageKey, StoreError> {
    let refused = |detail: String| StoreError::StorageKey { detail };
    if let Ok(text) = std::env::var(STORAGE_KEY_VAR) {
        return StorageKey::from_hex(&text)
            .ok_or_else(|| refused(format!("{STORAGE_KEY_VAR} is not 64 hex digits")));
    }
    let (path, external) = match std::env::var_os(STORAGE_KEY_FILE_VAR) {
        Some(path) => (std::path::PathBuf::from(path), true),
        None => (data_dir.storage_key_path(), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => StorageKey::from_hex(&text)
            .ok_or_else(|| refused(format!("{} does not hold 64 hex digits", path.display()))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let keys = data_dir.store_path().join(crate::store::DATA_KEYS);
            if keys.exists() {
                let named = if external {
                    format!(" (named by {STORAGE_KEY_FILE_VAR})")
                } else {
                    String::new()
                };
                return Err(refused(format!(
                    "{}{named} is missing, and without it nothing customers wrote can be read: \
                     put the key back, or name it with {STORAGE_KEY_FILE_VAR} or {STORAGE_KEY_VAR}",
                    path.display()
                )));
            }
            // A store with no data keys yet: its key is made where it was asked for.
            let key = StorageKey::generate();
            crate::data_dir::write_secret(&path, &format!("{}\n", key.to_hex()))
                .map_err(|err| refused(format!("cannot write {}: {err}", path.display())))?;
            Ok(key)
        }
        Err(err) => Err(refused(format!("cannot read {}: {err}", path.display()))),
    }
}

/// Opens the data folder's store, with a clear error ([`StoreError::InUse`]) when another
/// process holds it ([`Store::open`] waits a moment for a lock first).
pub fn open_store(data_dir: &DataDir) -> Result<Store, StoreError> {
    // A folder `init` never made (or an empty one) gets nothing written into it: no key, no
    // half-made store that `run` and `init` would then refuse.
    if !data_dir.config_path().exists() {
        return Err(StoreError::NotADataFolder {
            data_dir: data_dir.root().to_path_buf(),
        });
    }
    open_new_store(data_dir)
}

/// [`open_store`] for a data folder being made (`init`'s staging folder).
fn open_new_store(data_dir: &DataDir) -> Result<Store, StoreError> {
    let storage = storage_key(data_dir)?;
    Store::open(&data_dir.store_path(), &storage).map_err(|err| match err {
        StoreError::Locked { .. } => StoreError::InUse {
            data_dir: data_dir.root().to_path_buf(),
        },
        other => other,
    })
}

/// Adds an agent with `role` and returns its token.
pub fn add_agent(
    data_dir: &DataDir,
    name: &str,
    role: AgentRole,
    now: Timestamp,
) -> Result<NewAgent, AdminError> {
    let store = open_store(data_dir)?;
    let agent = add_agent_to(&store, name, role, now)?;
    store.flush()?;
    Ok(agent)
}

fn add_agent_to(
    store: &Store,
    name: &str,
    role: AgentRole,
    now: Timestamp,
) -> Result<NewAgent, AdminError> {
    let (agent, records) = agent_records(name, role, now)?;
    store.commit(write_set(records))?;
    Ok(agent)
}

/// The records as one write set.
fn write_set(records: Vec<TreeRecord>) -> WriteSet {
    let mut writes = WriteSet::default();
    for (tree, key, value) in records {
        writes.insert(tree, key, value);
    }
    writes
}

/// A new agent and its first token, as the records to write.
pub fn agent_records(
    name: &str,
    role: AgentRole,
    now: Timestamp,
) -> Result<(NewAgent, Vec<TreeRecord>), AdminError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_AGENT_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(AdminError::Event(format!(
            "an agent's name is 1 to {MAX_AGENT_NAME_CHARS} characters on one line"
        )));
    }
    let agent = AgentRecord {
        id: AgentId::random(&mut rand_core::OsRng),
        name: name.to_owned(),
        created_at: now,
        revoked: false,
        role,
    };
    let (token, token_record) = token_records(agent.id, now)?;
    let records = vec![
        (
            TreeName::Agents,
            agent.id.as_bytes().to_vec(),
            encode(&agent)?,
        ),
        token_record,
    ];
    Ok((NewAgent { agent, token }, records))
}

/// Longest agent name, in characters.
pub const MAX_AGENT_NAME_CHARS: usize = 100;

/// A new token for agent `id`, and its record.
fn token_records(id: AgentId, now: Timestamp) -> Result<(String, TreeRecord), AdminError> {
    let token = new_token();
    let record = (
        TreeName::Tokens,
        token_hash(&token).to_vec(),
        encode(&TokenRecord {
            role: TokenRole::Agent(id),
            created_at: now,
            revoked: false,
        })?,
    );
    Ok((token, record))
}

/// The agent `id` of `store`.
pub fn agent(store: &Store, id: AgentId) -> Result<AgentRecord, AdminError> {
    store.agent(&id)?.ok_or(AdminError::UnknownAgent(id))
}

/// What giving agent `id` a new token writes: every token it had revoked, and the new one
/// (shown once).
pub fn reset_token_records(
    store: &Store,
    id: AgentId,
    now: Timestamp,
) -> Result<(String, Vec<TreeRecord>), AdminError> {
    let agent = agent(store, id)?;
    if agent.revoked {
        return Err(AdminError::Event(format!(
            "agent {id} is revoked: add a new agent instead"
        )));
    }
    let mut records = revoked_tokens(store, id)?;
    let (token, record) = token_records(id, now)?;
    records.push(record);
    Ok((token, records))
}

/// What giving agent `id` `role` writes (never demoting the only active admin).
pub fn role_records(
    store: &Store,
    id: AgentId,
    role: AgentRole,
) -> Result<Vec<TreeRecord>, AdminError> {
    if role != AgentRole::Admin {
        keeps_an_admin(store, id)?;
    }
    let mut agent = agent(store, id)?;
    agent.role = role;
    Ok(vec![(
        TreeName::Agents,
        id.as_bytes().to_vec(),
        encode(&agent)?,
    )])
}

/// Refuses to revoke or demote `id` when it is the only active admin.
fn keeps_an_admin(store: &Store, id: AgentId) -> Result<(), AdminError> {
    if active_admins(store)? == [id] {
        return Err(AdminError::LastAdmin(id));
    }
    Ok(())
}

/// The active admins of `store`.
pub fn active_admins(store: &Store) -> Result<Vec<AgentId>, AdminError> {
    Ok(agents(store)?
        .into_iter()
        .filter(|a| !a.revoked && a.role == AgentRole::Admin)
        .map(|a| a.id)
        .collect())
}

/// Every agent.
pub fn list_agents(data_dir: &DataDir) -> Result<Vec<AgentRecord>, AdminError> {
    agents(&open_store(data_dir)?)
}

/// Every agent of `store`.
pub fn agents(store: &Store) -> Result<Vec<AgentRecord>, AdminError> {
    Ok(store.agents()?)
}

/// Revokes an agent and every token of it.
pub fn revoke_agent(data_dir: &DataDir, id: AgentId) -> Result<(), AdminError> {
    change_stopped(data_dir, |store| Ok(((), revoke_records(store, id)?)))
}

/// Makes the change `change` works out on a stopped node's store, durably, and answers what
/// it says.
pub fn change_stopped<T>(
    data_dir: &DataDir,
    change: impl FnOnce(&Store) -> Result<(T, Vec<TreeRecord>), AdminError>,
) -> Result<T, AdminError> {
    let store = open_store(data_dir)?;
    let (answer, records) = change(&store)?;
    store.commit(write_set(records))?;
    store.flush()?;
    Ok(answer)
}

/// What revoking agent `id` and every token of it writes (not the only active admin).
pub fn revoke_records(store: &Store, id: AgentId) -> Result<Vec<TreeRecord>, AdminError> {
    keeps_an_admin(store, id)?;
    let mut agent = agent(store, id)?;
    agent.revoked = true;
    let mut records = vec![(TreeName::Agents, id.as_bytes().to_vec(), encode(&agent)?)];
    records.extend(revoked_tokens(store, id)?);
    Ok(records)
}

/// Every token of agent `id` not yet revoked, revoked.
fn revoked_tokens(store: &Store, id: AgentId) -> Result<Vec<TreeRecord>, AdminError> {
    let mut records = Vec::new();
    for entry in store.tree(TreeName::Tokens).iter() {
        let (key, value) = entry.map_err(StoreError::from)?;
        let mut token: TokenRecord = crate::store::decode("tokens", &value)?;
        if token.role == TokenRole::Agent(id) && !token.revoked {
            token.revoked = true;
            records.push((TreeName::Tokens, key.to_vec(), encode(&token)?));
        }
    }
    Ok(records)
}

/// A built-in bridge's certificate is renewed at start when it has less than this left.
const RENEW_BEFORE_MILLIS: u64 = 30 * 24 * 3600 * 1000;

/// The key of the node's built-in bridge for `channel`: the one it has, or a new one certified
/// now if the node holds the org key (written to `keys/bridge-<channel>.key` and published in
/// the directory through `store`, before the pipeline starts). `None` when the node has no key
/// and cannot certify one (the org key is kept elsewhere: run `threadline bridge add` where it
/// is, and copy the key in).
pub fn builtin_bridge_key(
    data_dir: &DataDir,
    store: &Store,
    channel: ChannelKind,
    now: Timestamp,
) -> Result<Option<SecretKey>, AdminError> {
    let identity = data_dir.load_identity()?;
    let directory = load_directory(store, identity.org)?;
    let existing = data_dir.load_builtin_bridge_key(channel)?;
    if let Some(key) = &existing {
        let certified = directory
            .certificates()
            .of(&key.public())
            .iter()
            .any(|cert| {
                cert.body.role
                    == CertRole::Bridge {
                        channel,
                        handle_scope: None,
                    }
                    && cert.body.not_after > now.saturating_add_millis(RENEW_BEFORE_MILLIS)
            });
        if certified {
            return Ok(existing);
        }
    }
    let Some(org_key) = data_dir.load_org_key()? else {
        return Ok(existing);
    };
    // The key is written before its certificate is stored: a key whose certificate did not
    // make it is certified on the next start.
    let key = match existing {
        Some(key) => key,
        None => {
            let key = SecretKey::generate(&mut rand_core::OsRng);
            data_dir
                .save_builtin_bridge_key(channel, &key)
                .map_err(|e| AdminError::Event(e.to_string()))?;
            key
        }
    };
    let certificate = bridge_certificate(&org_key, identity.org, &key, channel, now)?;
    let certify = certify_event(&directory, &org_key, certificate, now)?;
    let mut writes = WriteSet::default();
    writes.put_event(store, &certify)?;
    store.commit(writes)?;
    store.flush()?;
    Ok(Some(key))
}

/// Creates a bridge for a channel: a key, the org's certificate for it (published in the
/// directory) and a token for the bridge API.
pub fn add_bridge(
    data_dir: &DataDir,
    channel: ChannelKind,
    now: Timestamp,
) -> Result<NewBridge, AdminError> {
    let identity = data_dir.load_identity()?;
    let (org_key, new, records) = new_bridge(data_dir, channel, now)?;
    let store = open_store(data_dir)?;
    let directory = load_directory(&store, identity.org)?;
    let certify = certify_event(&directory, &org_key, new.certificate.clone(), now)?;
    let mut writes = write_set(records);
    writes.put_event(&store, &certify)?;
    store.commit(writes)?;
    store.flush()?;
    Ok(new)
}

/// A new bridge for `channel` (its key, the org's certificate for it, a token) and the
/// records of its token; the certificate is yet to be published. Needs the org key, which is
/// given back to sign with.
pub fn new_bridge(
    data_dir: &DataDir,
    channel: ChannelKind,
    now: Timestamp,
) -> Result<(SecretKey, NewBridge, Vec<TreeRecord>), AdminError> {
    let identity = data_dir.load_identity()?;
    let org_key = data_dir
        .load_org_key()?
        .ok_or_else(|| AdminError::NoOrgKey {
            path: data_dir.root().join("keys/org.key"),
            needed_for: "certifying a bridge",
        })?;
    let key = SecretKey::generate(&mut rand_core::OsRng);
    let certificate = bridge_certificate(&org_key, identity.org, &key, channel, now)?;
    let token = new_token();
    let records = vec![(
        TreeName::Tokens,
        token_hash(&token).to_vec(),
        encode(&TokenRecord {
            role: TokenRole::Bridge(channel),
            created_at: now,
            revoked: false,
        })?,
    )];
    Ok((
        org_key,
        NewBridge {
            key,
            certificate,
            token,
        },
        records,
    ))
}

fn load_directory(store: &Store, org: OrgId) -> Result<Directory, AdminError> {
    let events = store
        .log_events(&ScopeId::Directory(org))?
        .into_iter()
        .map(|event| {
            event
                .verify_from_store()
                .map_err(|e| AdminError::Event(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Directory::restore(events).map_err(|e| AdminError::Event(e.to_string()))
}

fn certify_event(
    directory: &Directory,
    org_key: &SecretKey,
    certificate: Certificate,
    now: Timestamp,
) -> Result<threadline_protocol::VerifiedEvent, AdminError> {
    let (parents, depth) = directory.dag().next_parents();
    Draft::new(
        Scope::Directory(OrgId(org_key.public())),
        parents,
        depth,
        now,
        EventKind::Directory(DirectoryKind::Certify {
            certificate: Box::new(certificate),
        }),
    )
    .sign(org_key)
    .map_err(|e| AdminError::Event(e.to_string()))?
    .verify()
    .map_err(|e| AdminError::Event(e.to_string()))
}

/// The org's certificate for a bridge key on `channel`, valid from `now` for
/// [`BRIDGE_CERT_VALIDITY_MILLIS`].
fn bridge_certificate(
    org_key: &SecretKey,
    org: OrgId,
    key: &SecretKey,
    channel: ChannelKind,
    now: Timestamp,
) -> Result<Certificate, AdminError> {
    crate::data_dir::bridge_certificate_for(org_key, org, key.public(), channel, now)
        .map_err(|e| AdminError::Event(e.to_string()))
}

/// A bearer token: `thl_` and 32 random bytes in hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    format!("thl_{}", hex::encode(bytes))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(threadline_protocol::codec::encode(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_in_use_is_refused_with_the_data_folder_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = DataDir::new(tmp.path().join("data"));
        init(&data_dir, Timestamp::from_millis(1)).expect("init");
        let _held = open_store(&data_dir).expect("the first open");
        // sled's lock is an flock: a second open, even from this process, is refused.
        let err = open_store(&data_dir).expect_err("the folder is in use");
        assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "the data folder {} is in use by another process (a running node?); stop it first",
                data_dir.root().display()
            )
        );
    }

    #[test]
    fn a_folder_never_made_by_init_is_refused_and_left_as_it_was() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = DataDir::new(tmp.path().join("data"));
        std::fs::create_dir(data_dir.root()).expect("an empty folder");
        let err = add_agent(
            &data_dir,
            "maria",
            AgentRole::Agent,
            Timestamp::from_millis(1),
        )
        .expect_err("refused");
        assert!(err.to_string().contains("threadline init"), "{err}");
        assert_eq!(
            std::fs::read_dir(data_dir.root()).expect("dir").count(),
            0,
            "nothing written"
        );
        assert!(
            init(&data_dir, Timestamp::from_millis(1)).is_ok(),
            "init still works"
        );
    }
}
