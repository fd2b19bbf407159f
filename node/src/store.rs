//! The node's durable store: sled trees with big-endian binary keys.
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `meta` | `b"schema"` | schema version, u32 BE |
//! | `meta` | `b"commits"` | commits made, u64 BE (written last in each commit; [`COMMIT_MARK`] notes it once durable) |
//! | `log` | scope ‖ event id | empty since schema 5 (the events of schema 4 and earlier, moved to the event log when opened) |
//! | `threads` | thread id | `encode((ThreadState, n_events, heads))`: derived state without its per-message maps (`receipts` and `erased` are written empty: see [`Store::thread_state`]), the log's size and its DAG heads, kept in step with events (one write per thread per batch, of a size that does not grow with the thread); a record written before teams has no `team` and reads as none |
//! | `heads` | directory scope | `encode((n_events, heads))`: the directory's size and heads |
//!
//! A log's size and heads are what replication summaries are made of, without loading logs.
//! | `contact_threads` | contact id ‖ thread id | empty |
//! | `open_threads` | contact id | thread id: where the contact's next inbound message goes |
//! | `external_ids` | – | unused since the event log's index keeps each external key's event (channel ‖ SHA-256(sender's address ‖ 0 ‖ external id), [`external_id_key`]: makes resubmission idempotent); emptied at open |
//! | `outbound` | channel ‖ sequence BE | `encode(StoredDelivery)`: each channel's delivery queue, each [`Delivery`] sealed under its thread's data key |
//! | `tokens` | SHA-256 of the token | `encode(TokenRecord)` |
//! | `agents` | agent id | `encode(AgentRecord)` (a record from before agents had roles reads as an admin's: [`decode_agent`]) |
//! | `replicated_routes` | thread id ‖ event id | empty: a route set by an event from another node (that node delivers on it) |
//! | `partner_certs` | SHA-256 of the certificate's encoding | `encode(Certificate)`: other orgs' certificates, for threads shared with them |
//! | `blob_refs` | blob hash ‖ scope ‖ event id | empty: the events that refer to an attachment's blob |
//! | `missing_blobs` | blob hash | size, u64 BE: blobs referred to by events from peers and not here yet (replication fetches them) |
//! | `blob_uploads` | blob hash ‖ channel | empty: a bridge of the channel uploaded the blob |
//! | `thread_facts` | thread id | `encode(ThreadFacts)`: unread counts per agent, the customer's last message per channel, the thread's last message, the customer's first message since the last reply (`thread_facts.rs`; records of earlier versions are read without what they lacked); absent for a thread not written since they were kept |
//! | `handoff_codes` | SHA-256 of a "continue on …" code | `encode(CodeRecord)`: its grant (contact, thread, channel, expiry) and whether it was spent |
//! | `journal` | chunk number BE | the last commit's writes, `encode(Vec<(tree, key, value or removal)>)` |
//! | `journal` | `b"events_end"` | where the event log ended after the last commit ([`LogEnd`]) |
//! | `meta` | `b"events_end"` | where the event log ends ([`LogEnd`]): written with every commit, before its counter |
//! | `retired_keys` | data key number BE | empty: a data key an erasure retired, destroyed once the commit is durable (again at open, should a crash come first) |
//! | `audit` | time ms BE ‖ sequence BE | `encode(AuditRecord)`: who viewed, exported or erased a contact's record ([`audit`]) |
//! | `webhook_queue` | due time ms BE ‖ delivery id BE | `encode(Queued)`: an outbound webhook delivery waiting ([`webhook_queue`]) |
//! | `webhook_log` | time ms BE ‖ sequence BE | `encode(Attempt)`: one attempt to deliver, the newest 10,000 kept |
//! | `missing_content` | thread id ‖ event id | empty: a thread event a peer sent without its content though it was not erased; the next copy with its content fills it in |
//! | `meta` | `b"key_owners"` | `encode(Vec<(key number, owner bytes)>)`: the data keys given to owners since `data-keys` was last synced (at most a pool's worth), written with every commit while there are any: what finishes a rewrite of a slot a crash cut short |
//!
//! Encryption at rest ([`data_keys`]): what a customer wrote or that names them is sealed
//! under a data key of its thread, contact or attachment (the org's own for its canned
//! replies), kept wrapped in `data-keys`;
//! erasing destroys the keys.
//!
//! Every log's events (header and content) are not in sled: they are in the event log
//! ([`event_log`]), append-only segment files in `events/`, one record per commit, with an
//! index in memory, each a [`StoredEvent`] (the content sealed). An erasure writes the event
//! again without its content, and re-keys its owner: what survives is sealed again under a
//! new key, and the old keys are destroyed, which makes every old copy unreadable.
//!
//! Attachment bytes are files under `attachments/` in the store's directory ([`BlobStore`]).
//!
//! A scope is 33 bytes: `0x00 ‖ org` for a directory, `0x01 ‖ thread id` for a thread.
//!
//! A log is read back from the event log's index and put in linear order by sorting on
//! `(depth, author time, id)` (the DAG does the same on restore).
//!
//! Writes are staged in a [`WriteSet`] (which also answers reads of what it staged) and
//! committed atomically across the event log and the trees ([`Store::commit`]): the ingest
//! writer commits one per group of requests, so a group is stored whole or not at all. Nothing is durable until
//! [`Store::flush`]; callers acknowledge only after it (see `ingest`).

pub mod audit;
mod blobs;
pub mod data_keys;
pub mod event_log;
mod handoff_codes;
mod keys;
mod records;
pub mod webhook_queue;

use std::path::Path;

use threadline_protocol::{
    codec, dag::OrderKey, id::BlobHash, thread::ThreadState, ChannelKind, Content, Event, EventId,
    ScopeId, ThreadId,
};

pub use blobs::{BlobError, BlobStore, UNUSED_BLOB_GRACE};
use data_keys::{DataKeys, DataKeysError, KeyNumber, KeyOwner, StorageKey};
use event_log::{EventLog, EventLogError, LogEnd, NewEntry};
pub use handoff_codes::{CodeRefused, HandoffCode, HandoffGrant, HANDOFF_CODE_LIFETIME_MILLIS};
pub use keys::{
    blob_ref_key, channel_key, external_id_key, external_id_key_of, log_key, scope_key,
    split_log_key,
};
pub use records::{
    AgentRecord, AgentRecordBeforeRoles, AgentRole, Delivery, StoredDelivery, StoredEvent,
    TokenRecord, TokenRole,
};

/// A `threads` record: the state (per-message maps empty), the log's size and its heads.
type ThreadRecord = (ThreadState, u64, Vec<EventId>);

/// A thread's state encoded as the `threads` tree keeps it: field by field as [`ThreadState`]
/// encodes, with `receipts` and `erased` empty, without copying the state. A record written
/// so decodes as a `ThreadState` (a test holds the two in step).
struct StoredThreadState<'a>(&'a ThreadState);

impl serde::Serialize for StoredThreadState<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let state = self.0;
        let none: std::collections::BTreeMap<EventId, threadline_protocol::event::ReceiptKind> =
            std::collections::BTreeMap::new();
        let nothing_erased: std::collections::BTreeSet<EventId> = std::collections::BTreeSet::new();
        let mut fields = serializer.serialize_struct("ThreadState", 16)?;
        fields.serialize_field("owner", &state.owner)?;
        fields.serialize_field("contact", &state.contact)?;
        fields.serialize_field("opened_on", &state.opened_on)?;
        fields.serialize_field("opened_at", &state.opened_at)?;
        fields.serialize_field("status", &state.status)?;
        fields.serialize_field("assignee", &state.assignee)?;
        fields.serialize_field("route", &state.route)?;
        fields.serialize_field("labels", &state.labels)?;
        fields.serialize_field("members", &state.members)?;
        fields.serialize_field("read_marks", &state.read_marks)?;
        fields.serialize_field("receipts", &none)?;
        fields.serialize_field("erased", &nothing_erased)?;
        fields.serialize_field("n_events", &state.n_events)?;
        fields.serialize_field("n_messages", &state.n_messages)?;
        fields.serialize_field("last_activity", &state.last_activity)?;
        fields.serialize_field("team", &state.team)?;
        fields.end()
    }
}

/// A thread's state as a `threads` record written before teams has it: [`ThreadState`]'s
/// fields up to `last_activity`, without `team`.
#[derive(serde::Serialize, serde::Deserialize)]
struct ThreadStateBeforeTeams {
    owner: threadline_protocol::OrgId,
    contact: threadline_protocol::ContactId,
    opened_on: ChannelKind,
    opened_at: threadline_protocol::Timestamp,
    status: threadline_protocol::event::Status,
    assignee: Option<threadline_protocol::AgentId>,
    route: Option<threadline_protocol::thread::Route>,
    labels: std::collections::BTreeSet<threadline_protocol::name::Label>,
    members: std::collections::BTreeSet<threadline_protocol::OrgId>,
    read_marks: std::collections::BTreeMap<threadline_protocol::thread::Reader, EventId>,
    receipts: std::collections::BTreeMap<EventId, threadline_protocol::event::ReceiptKind>,
    erased: std::collections::BTreeSet<EventId>,
    n_events: u64,
    n_messages: u64,
    last_activity: threadline_protocol::Timestamp,
}

/// A `threads` record, of either layout: today's, or one written before teams (read with no
/// team; rewritten in today's layout with the thread's next event). The two never read as
/// each other: today's has bytes past the older one's end.
fn decode_thread_record(bytes: &[u8]) -> Result<ThreadRecord, StoreError> {
    decode("threads", bytes).or_else(|err| {
        let Ok((before, n_events, heads)) =
            decode::<(ThreadStateBeforeTeams, u64, Vec<EventId>)>("threads", bytes)
        else {
            return Err(err);
        };
        // The same fields, then no team: the bytes of today's state.
        let no_team: Option<threadline_protocol::name::TeamName> = None;
        let state = codec::encode(&(before, no_team))
            .map_err(|err| StoreError::Corrupt {
                tree: "threads",
                detail: err.to_string(),
            })
            .and_then(|bytes| decode("threads", &bytes))?;
        Ok((state, n_events, heads))
    })
}

/// What replication needs of a thread: who may have it, its size and heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSummary {
    /// The thread.
    pub thread: ThreadId,
    /// Its member orgs.
    pub members: std::collections::BTreeSet<threadline_protocol::OrgId>,
    /// Events held.
    pub n_events: u64,
    /// Its heads, ascending.
    pub heads: Vec<EventId>,
}

/// The on-disk schema this build reads and writes. sled's own format may change before its
/// 1.0 and need a migration; so may ours: a store with another version is refused.
///
/// Version 6 sealed what customers wrote under data keys (encryption at rest); version 5
/// moved the events from the `log` tree to the event log; version 4 keyed external ids by
/// sender too and added the blob trees. Stores of versions 3 to 5 are migrated when opened
/// ([`Store::open`]).
pub const SCHEMA_VERSION: u32 = 6;

/// The key of [`LogEnd`] in `meta` and in the journal.
const EVENTS_END: &[u8] = b"events_end";

/// The key in `meta` of the data keys given to owners since `data-keys` was last synced.
const KEY_OWNERS: &[u8] = b"key_owners";

/// The data keys' file in the store's folder ([`data_keys`]).
pub const DATA_KEYS: &str = "data-keys";

/// The suffix of the folder a store of schema 5 or earlier is sealed into, beside it
/// ([`Store::seal_into`]).
const SEALING: &str = "sealing";

/// The suffix the store being replaced by its sealed copy takes for a moment.
const UNSEALED: &str = "unsealed";

/// `path` with `.suffix` added to its last part.
fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

fn io_damage(path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Damaged {
        path: path.to_path_buf(),
        detail: err.to_string(),
    }
}

/// Finishes or undoes what a sealing migration interrupted left: the sealed copy is put in
/// place if the store was already moved aside; the old store is removed once the copy is in
/// place; an unfinished copy is removed (it is made again).
fn finish_sealing(path: &Path) -> Result<(), StoreError> {
    let (sealing, unsealed) = (sibling(path, SEALING), sibling(path, UNSEALED));
    if !path.exists() && sealing.exists() && unsealed.exists() {
        std::fs::rename(&sealing, path).map_err(|err| io_damage(path, err))?;
        sync_parent(path)?;
    }
    for leftover in [&unsealed, &sealing] {
        if leftover.exists() && path.exists() {
            std::fs::remove_dir_all(leftover).map_err(|err| io_damage(leftover, err))?;
        }
    }
    Ok(())
}

/// Opens sled at `path`, waiting up to a second for its lock: a store just closed in this
/// process can hold it a moment longer (sled's background writers finish after the last
/// handle is dropped), and sled then refuses with only the words "could not acquire lock".
/// Still held after that, it is another process's: [`StoreError::Locked`].
fn open_sled(
    path: &Path,
    error: impl Fn(sled::Error) -> StoreError,
) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match sled::Config::new().path(path).open() {
            Err(sled::Error::Io(io)) if io.to_string().contains("acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.map_err(error),
        }
    }
}

/// Puts the sealed copy in the store's place: the store moves aside, the copy takes its name
/// (each rename atomic; [`finish_sealing`] completes either step after a crash), then the old
/// store is removed.
fn swap_in_sealed(path: &Path, sealing: &Path) -> Result<(), StoreError> {
    let unsealed = sibling(path, UNSEALED);
    std::fs::rename(path, &unsealed).map_err(|err| io_damage(path, err))?;
    sync_parent(path)?;
    std::fs::rename(sealing, path).map_err(|err| io_damage(path, err))?;
    sync_parent(path)?;
    std::fs::remove_dir_all(&unsealed).map_err(|err| io_damage(&unsealed, err))?;
    tracing::info!(
        store = %path.display(),
        "sealed the store (schema {SCHEMA_VERSION}: encryption at rest); the unsealed copy is deleted"
    );
    Ok(())
}

fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| io_damage(parent, err))
}

/// What a content's seal is bound to: its event.
fn content_aad(id: &EventId) -> [u8; 40] {
    let mut aad = [0u8; 40];
    aad[..8].copy_from_slice(b"content\0");
    aad[8..].copy_from_slice(id.as_bytes());
    aad
}

/// Whose data key seals an event's content: its thread's, or for a directory event the
/// contact's it is about (the org's for its canned replies). `None` for kinds that carry no content.
pub fn content_owner(scope: &ScopeId, kind: &threadline_protocol::EventKind) -> Option<KeyOwner> {
    use threadline_protocol::event::DirectoryKind as D;
    match (scope, kind) {
        (ScopeId::Thread(thread), _) => Some(KeyOwner::Thread(*thread)),
        (
            ScopeId::Directory(_),
            threadline_protocol::EventKind::Directory(
                D::CreateContact { contact }
                | D::LinkHandle { contact }
                | D::UnlinkHandle { contact }
                | D::SetAttribute { contact, .. }
                | D::Consent { contact, .. }
                | D::EraseContact { contact },
            ),
        ) => Some(KeyOwner::Contact(*contact)),
        (
            ScopeId::Directory(org),
            threadline_protocol::EventKind::Directory(
                D::SetCannedReply { .. } | D::SetWebhook { .. },
            ),
        ) => Some(KeyOwner::Org(*org)),
        _ => None,
    }
}

/// One write in the journal: tree number, key, value (`None`: removal).
type JournalOp = (u8, codec::ByteBuf, Option<codec::ByteBuf>);

/// A journal record holds about this many bytes of writes (one commit needs several). sled
/// writes a value over a quarter of its 512 KiB segment as a separate blob file, which costs
/// ~13 µs per message in the journal; records this size stay in its log (~2 µs per message).
const JOURNAL_CHUNK_BYTES: usize = 32 * 1024;

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled failed (I/O, corruption).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// The storage key is missing or unreadable.
    #[error("storage key: {detail}")]
    StorageKey {
        /// What is wrong, and what to do.
        detail: String,
    },
    /// Sealing or opening what is stored encrypted failed (a wrong storage key, a data key or
    /// sealed bytes changed on disk).
    #[error("store: {0}")]
    Sealing(#[from] DataKeysError),
    /// The folder is not a node's data folder: `init` (or the first `run`) never made it.
    #[error(
        "{} is not a Threadline data folder: make one with `threadline init` (or `threadline run`), or name another with --data-dir",
        .data_dir.display()
    )]
    NotADataFolder {
        /// The folder.
        data_dir: std::path::PathBuf,
    },
    /// Another process (a running node, an admin command) holds the data folder's store:
    /// sled lets one process at a time open it.
    #[error(
        "the data folder {} is in use by another process (a running node?); stop it first",
        .data_dir.display()
    )]
    InUse {
        /// The data folder.
        data_dir: std::path::PathBuf,
    },
    /// Another process holds the store's lock (sled lets one process at a time open a
    /// store); [`crate::admin::open_store`] names the data folder instead ([`Self::InUse`]).
    #[error("the store {} is in use by another process", .path.display())]
    Locked {
        /// The store's folder.
        path: std::path::PathBuf,
    },
    /// The store was written by another schema version.
    #[error("store schema version is {found}, this build reads {SCHEMA_VERSION}")]
    Schema {
        /// The version found.
        found: u32,
    },
    /// A stored value does not decode.
    #[error("corrupt {tree} record: {detail}")]
    Corrupt {
        /// The tree.
        tree: &'static str,
        /// What failed.
        detail: String,
    },
    /// A value could not be encoded.
    #[error(transparent)]
    Encode(#[from] codec::EncodeError),
    /// The attachment files failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The event log's files could not be read or written.
    #[error("store: {0}")]
    Events(EventLogError),
    /// sled found its files damaged (a checksum that does not match, a record cut short).
    #[error("the store in {} is damaged ({detail}): restore the data folder from a backup (docs/OPERATIONS.md)", .path.display())]
    Damaged {
        /// The store's folder.
        path: std::path::PathBuf,
        /// What sled found.
        detail: String,
    },
    /// The store recovered to an earlier commit than one it had acknowledged as durable: its
    /// files lost writes (cut short, or a damaged record ended sled's recovery early).
    #[error("the store in {} lost acknowledged writes: it recovered to commit {recovered}, but commit {acknowledged} had been made durable; restore the data folder from a backup (docs/OPERATIONS.md). If this store was itself just restored from a backup, delete {} and start again", .path.display(), .path.join(COMMIT_MARK).display())]
    LostWrites {
        /// The store's folder.
        path: std::path::PathBuf,
        /// The last commit made durable, as the commit mark says.
        acknowledged: u64,
        /// The last commit the store holds.
        recovered: u64,
    },
}

impl From<EventLogError> for StoreError {
    fn from(err: EventLogError) -> Self {
        match err {
            EventLogError::Damaged { path, detail } => StoreError::Damaged { path, detail },
            other => StoreError::Events(other),
        }
    }
}

/// What [`Store::check`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Log entries read.
    pub events: u64,
    /// Thread records read.
    pub threads: u64,
    /// Attachment files read.
    pub attachments: u64,
    /// What is damaged, one line each (empty: nothing).
    pub damaged: Vec<String>,
}

/// The file beside sled's where the store notes, after every flush, the last commit made
/// durable: if sled ever recovers to an earlier one, writes were lost (see
/// [`StoreError::LostWrites`]). It is written without an fsync of its own, after sled's, so it
/// never says more than sled has (a lost update to it only weakens the check once).
pub const COMMIT_MARK: &str = "commit-mark";

/// Mixed into the commit mark's second half, so a torn or foreign file reads as no mark.
const COMMIT_MARK_CHECK: u64 = 0x5448_5245_4144_4c4e;

/// The trees, by index into [`Store::tree`] (and the order of a transaction's views).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum TreeName {
    /// Every log's events, by scope and id: staged here, stored in the event log (the sled
    /// tree of that name is what schema 4 and earlier used).
    Log = 0,
    /// Derived thread states.
    Threads,
    /// Contact → threads index.
    ContactThreads,
    /// Contact → open thread.
    OpenThreads,
    /// External message ids.
    ExternalIds,
    /// Outbound delivery queues.
    Outbound,
    /// Token hashes.
    Tokens,
    /// Agents.
    Agents,
    /// Each log's size and heads.
    Heads,
    /// `thread ‖ event` of route-setting events that came from another node: replies on such a
    /// route are delivered by the node that set it, not here.
    ReplicatedRoutes,
    /// Certificates of partner orgs (for threads shared with them).
    PartnerCerts,
    /// `blob ‖ scope ‖ event`: which events refer to a blob.
    BlobRefs,
    /// Blobs that events from peers refer to and this node does not have yet.
    MissingBlobs,
    /// `blob ‖ channel`: a bridge of the channel uploaded the blob (so its events may refer to
    /// it; see [`Store::may_attach`]).
    BlobUploads,
    /// `SHA-256(code)` → the grant of a one-time "continue on …" code (see
    /// [`Store::issue_handoff_code`]).
    HandoffCodes,
    /// Thread id → what the thread list needs and the state does not keep
    /// ([`crate::thread_facts::ThreadFacts`]).
    ThreadFacts,
    /// Data keys retired by a commit, to destroy once it is durable.
    RetiredKeys,
    /// The audit trail ([`audit`]).
    Audit,
    /// Outbound webhook deliveries waiting ([`webhook_queue`]).
    WebhookQueue,
    /// The outbound webhooks' delivery log ([`webhook_queue`]).
    WebhookLog,
    /// `thread ‖ event` of thread events a peer sent without their content (not erased):
    /// the first copy with it fills it in.
    MissingContent,
}

const TREE_NAMES: [&str; 21] = [
    "log",
    "threads",
    "contact_threads",
    "open_threads",
    "external_ids",
    "outbound",
    "tokens",
    "agents",
    "heads",
    "replicated_routes",
    "partner_certs",
    "blob_refs",
    "missing_blobs",
    "blob_uploads",
    "handoff_codes",
    "thread_facts",
    "retired_keys",
    "audit",
    "webhook_queue",
    "webhook_log",
    "missing_content",
];

/// A record to write into a tree (the admin trees: agents, tokens): tree, key, value.
pub type TreeRecord = (TreeName, Vec<u8>, Vec<u8>);

/// Writes to commit together. The last write to a key wins; [`WriteSet::get`] reads through
/// the staged writes to the store, so a writer sees its own uncommitted changes.
#[derive(Debug, Default)]
pub struct WriteSet {
    ops: std::collections::HashMap<(TreeName, Vec<u8>), Option<Vec<u8>>>,
    /// Blobs an erasure stopped referring to: deleted after the commit if nothing else does.
    released: Vec<BlobHash>,
    /// Whose sealed content an erasure took (each is re-keyed before the commit).
    erased_owners: std::collections::HashSet<KeyOwner>,
    /// Data keys to destroy once the commit is durable.
    retired: Vec<KeyNumber>,
}

impl WriteSet {
    /// Sets `key` to `value` in `tree`.
    pub fn insert(&mut self, tree: TreeName, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.insert((tree, key.into()), Some(value.into()));
    }

    /// Removes `key` from `tree`.
    pub fn remove(&mut self, tree: TreeName, key: impl Into<Vec<u8>>) {
        self.ops.insert((tree, key.into()), None);
    }

    /// Number of staged writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The values staged in `tree` (not removals).
    pub fn staged(&self, tree: TreeName) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.ops
            .iter()
            .filter(|((staged_tree, _), _)| *staged_tree == tree)
            .filter_map(|((_, key), value)| Some((key.clone(), value.clone()?)))
            .collect()
    }

    /// The value of `key` in `tree` as it will be after commit.
    pub fn get(
        &self,
        store: &Store,
        tree: TreeName,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.ops.get(&(tree, key.to_vec())) {
            Some(staged) => Ok(staged.clone()),
            None if tree == TreeName::Log => store.log_entry(key),
            None if tree == TreeName::ExternalIds => {
                Ok(store.events.external(key)?.map(|id| id.to_vec()))
            }
            None => Ok(store.tree(tree).get(key)?.map(|value| value.to_vec())),
        }
    }

    /// Stages a verified event in its log (its content sealed), with the references of its
    /// attachments.
    pub fn put_event(
        &mut self,
        store: &Store,
        event: &threadline_protocol::VerifiedEvent,
    ) -> Result<(), StoreError> {
        let (scope, id) = (event.scope_id(), event.id());
        self.insert(
            TreeName::Log,
            log_key(&scope, &id),
            store.seal_event(&scope, &id, event.event())?,
        );
        for attachment in event.content().into_iter().flat_map(Content::blobs) {
            self.insert(
                TreeName::BlobRefs,
                blob_ref_key(&attachment.blob, &scope, &id),
                Vec::new(),
            );
        }
        Ok(())
    }

    /// Blobs erasures in this write set stopped referring to.
    pub fn released_blobs(&self) -> &[BlobHash] {
        &self.released
    }

    /// Stages the erasure of an event's content (its header stays). Unknown ids are ignored.
    pub fn erase_content(
        &mut self,
        store: &Store,
        scope: &ScopeId,
        id: &EventId,
    ) -> Result<(), StoreError> {
        let key = log_key(scope, id);
        let Some(bytes) = self.get(store, TreeName::Log, &key)? else {
            return Ok(());
        };
        let stored: StoredEvent = decode("log", &bytes)?;
        let Some(sealed) = &stored.content else {
            return Ok(());
        };
        if let Some(content) = store.open_content(id, sealed)? {
            for attachment in content.blobs() {
                self.remove(
                    TreeName::BlobRefs,
                    blob_ref_key(&attachment.blob, scope, id),
                );
                self.released.push(attachment.blob);
            }
        }
        if let Some(owner) = store.keys.owner_of(sealed.key) {
            self.erased_owners.insert(owner);
        }
        let erased = StoredEvent {
            signed: stored.signed,
            content: None,
            external: None,
        };
        self.insert(TreeName::Log, key, codec::encode(&erased)?);
        Ok(())
    }

    /// Whose sealed content erasures in this write set took: each must be
    /// [re-keyed](WriteSet::rekey) before the commit.
    pub fn erased_owners(&self) -> Vec<KeyOwner> {
        self.erased_owners.iter().copied().collect()
    }

    /// Re-keys `owner` after an erasure: the content of `survivors` (its events whose content
    /// stays) is sealed again under a new key, its queued deliveries too (a thread's; those of
    /// events not surviving are dropped), and every older key of the owner is retired, to be
    /// destroyed once the commit is durable. With no survivors the owner is left without a
    /// key. Either way nothing sealed under its old keys can be read afterwards, wherever a
    /// copy of it lies.
    pub fn rekey(
        &mut self,
        store: &Store,
        owner: KeyOwner,
        survivors: &[(ScopeId, EventId)],
    ) -> Result<(), StoreError> {
        self.erased_owners.remove(&owner);
        let old = store.keys.keys_of(owner);
        if old.is_empty() {
            return Ok(());
        }
        let new = if survivors.is_empty() {
            None
        } else {
            Some(store.keys.new_key(owner)?)
        };
        for (scope, id) in survivors {
            let key = log_key(scope, id);
            let Some(bytes) = self.get(store, TreeName::Log, &key)? else {
                continue;
            };
            let mut stored: StoredEvent = decode("log", &bytes)?;
            let (Some(sealed), Some(new)) = (&stored.content, new) else {
                continue;
            };
            if !old.contains(&sealed.key) {
                continue;
            }
            let aad = content_aad(id);
            stored.content = match store.keys.open_sealed(sealed, &aad)? {
                Some(plain) => Some(store.keys.seal(new, &aad, &plain)?),
                None => None,
            };
            self.insert(TreeName::Log, key, codec::encode(&stored)?);
        }
        if let KeyOwner::Thread(thread) = owner {
            let surviving: std::collections::HashSet<EventId> =
                survivors.iter().map(|(_, id)| *id).collect();
            let mut queued: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for entry in store.tree(TreeName::Outbound).iter() {
                let (key, value) = entry?;
                queued.push((key.to_vec(), value.to_vec()));
            }
            queued.extend(self.staged(TreeName::Outbound));
            for (key, value) in queued {
                let stored: StoredDelivery = decode("outbound", &value)?;
                if stored.thread != thread {
                    continue;
                }
                let delivery = store.open_delivery(&key, &stored)?;
                match (delivery, new) {
                    (Some(delivery), Some(new)) if surviving.contains(&delivery.event) => {
                        let sealed = store.keys.seal(new, &key, &codec::encode(&delivery)?)?;
                        let stored = StoredDelivery { thread, sealed };
                        self.insert(TreeName::Outbound, key, codec::encode(&stored)?);
                    }
                    _ => self.remove(TreeName::Outbound, key),
                }
            }
        }
        self.retired.extend(old);
        Ok(())
    }

    /// Stages the directory's size and heads (a thread's go with its state).
    pub fn put_heads(
        &mut self,
        scope: &ScopeId,
        n_events: u64,
        heads: &std::collections::BTreeSet<EventId>,
    ) -> Result<(), StoreError> {
        let heads: Vec<EventId> = heads.iter().copied().collect();
        self.insert(
            TreeName::Heads,
            scope_key(scope).to_vec(),
            codec::encode(&(n_events, heads))?,
        );
        Ok(())
    }

    /// Stages a thread's facts for the thread list (one write, of bounded size).
    pub fn put_thread_facts(
        &mut self,
        thread: ThreadId,
        facts: &crate::thread_facts::ThreadFacts,
    ) -> Result<(), StoreError> {
        self.insert(
            TreeName::ThreadFacts,
            thread.as_bytes().to_vec(),
            codec::encode(facts)?,
        );
        Ok(())
    }

    /// Stages a thread's derived state with its log's size and heads (one write). The
    /// state's `receipts` and `erased`, which grow with the thread, are written empty, so the
    /// write costs the same on the thread's millionth event as on its first.
    pub fn put_thread_state(
        &mut self,
        thread: ThreadId,
        state: &ThreadState,
        n_events: u64,
        heads: &std::collections::BTreeSet<EventId>,
    ) -> Result<(), StoreError> {
        let heads: Vec<EventId> = heads.iter().copied().collect();
        self.insert(
            TreeName::Threads,
            thread.as_bytes().to_vec(),
            codec::encode(&(StoredThreadState(state), n_events, heads))?,
        );
        Ok(())
    }
}

/// The node's sled database.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    /// The redo journal of the last commit (see [`Store::commit`]).
    journal: sled::Tree,
    /// The schema version and the commit counter.
    meta: sled::Tree,
    /// Commits made so far (stored in `meta`, noted in [`COMMIT_MARK`] once durable).
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The commit mark file.
    mark: std::sync::Arc<std::fs::File>,
    blobs: BlobStore,
    /// Every log's events.
    events: std::sync::Arc<EventLog>,
    /// The data keys what customers wrote is sealed under.
    keys: std::sync::Arc<DataKeys>,
    /// Keys retired by commits not yet flushed: destroyed by the next flush.
    retiring: std::sync::Arc<std::sync::Mutex<Vec<KeyNumber>>>,
    /// Above every queued delivery's sequence number at open (see [`Store::generate_id`]).
    seq_floor: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Which change of the unsynced key assignments `meta` records ([`KEY_OWNERS`]).
    key_owners_recorded: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Where the store is.
    path: std::path::PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `path` (sled's files, the event log in `path/events`,
    /// the data keys in `path/data-keys`, attachments in `path/attachments`), with the
    /// storage key that wraps its data keys: a wrong key is refused, and changes nothing. A
    /// store of schema version 3 to 5 is migrated to this one (sealed: see
    /// [`Store::seal_into`]).
    pub fn open(path: &Path, storage: &StorageKey) -> Result<Self, StoreError> {
        finish_sealing(path)?;
        let (store, found) = Self::open_found(path, storage)?;
        if found >= 6 {
            store.destroy_retired_keys()?;
            return Ok(store);
        }
        let sealing = sibling(path, SEALING);
        store.seal_into(&sealing, storage)?;
        drop(store);
        swap_in_sealed(path, &sealing)?;
        let (store, _) = Self::open_found(path, storage)?;
        Ok(store)
    }

    /// Opens the store as it is (migrating versions 3 and 4 to 5 in place); answers the
    /// schema version it found.
    fn open_found(path: &Path, storage: &StorageKey) -> Result<(Self, u32), StoreError> {
        let damaged = |err: sled::Error| match err {
            sled::Error::Corruption { .. } => StoreError::Damaged {
                path: path.to_path_buf(),
                detail: "sled read a record whose checksum does not match".to_owned(),
            },
            other => StoreError::Sled(other),
        };
        let keys_path = path.join(DATA_KEYS);
        // The storage key is checked before anything else is opened: a wrong one changes
        // nothing.
        let held_keys = keys_path.exists();
        if held_keys {
            DataKeys::check(&keys_path, storage)?;
        }
        let db = open_sled(path, damaged)?;
        let meta = db.open_tree("meta").map_err(damaged)?;
        let found = match meta.get(b"schema")? {
            None => {
                // A new store: its keys' file first, so that a store without one is never new.
                if !held_keys {
                    DataKeys::open(&keys_path, storage)?;
                }
                meta.insert(b"schema", &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
                SCHEMA_VERSION
            }
            Some(bytes) => <[u8; 4]>::try_from(bytes.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    tree: "meta",
                    detail: "schema version is not 4 bytes".to_owned(),
                })?,
        };
        if !(3..=SCHEMA_VERSION).contains(&found) {
            return Err(StoreError::Schema { found });
        }
        let trees = TREE_NAMES
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()?;
        let journal = db.open_tree("journal")?;
        let redone = redo_journal(&trees, &journal, &meta)?;
        let recorded: Vec<(KeyNumber, KeyOwner)> = match meta.get(KEY_OWNERS)? {
            None => Vec::new(),
            Some(bytes) => {
                let listed: Vec<(u64, codec::ByteBuf)> = decode("meta", &bytes)?;
                listed
                    .into_iter()
                    .map(|(key, owner)| {
                        KeyOwner::from_bytes(&owner.0)
                            .map(|owner| (KeyNumber(key), owner))
                            .ok_or_else(|| StoreError::Corrupt {
                                tree: "meta",
                                detail: "key_owners names no owner".to_owned(),
                            })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let keys = match keys_path.exists() {
            true => DataKeys::open_recorded(&keys_path, storage, &recorded)?,
            false if found >= 6 => {
                return Err(StoreError::Damaged {
                    path: path.to_path_buf(),
                    detail: format!(
                        "{} is missing: without it nothing customers wrote can be read",
                        keys_path.display()
                    ),
                })
            }
            // A store from before encryption at rest: its keys begin here.
            false => DataKeys::open(&keys_path, storage)?,
        };
        // Every slot is synced now: the record of who got which is no longer needed.
        if !recorded.is_empty() {
            meta.remove(KEY_OWNERS)?;
        }
        let keys = std::sync::Arc::new(keys);
        let blobs = BlobStore::open(&path.join("attachments"), keys.clone())?;
        let recovered = match meta.get(b"commits").map_err(damaged)? {
            None => 0,
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    tree: "meta",
                    detail: "the commit counter is not 8 bytes".to_owned(),
                })?,
        };
        let mark_path = path.join(COMMIT_MARK);
        if let Some(acknowledged) = read_commit_mark(&mark_path)? {
            if acknowledged > recovered {
                return Err(StoreError::LostWrites {
                    path: path.to_path_buf(),
                    acknowledged,
                    recovered,
                });
            }
        }
        let mark = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&mark_path)
            .map_err(|err| StoreError::Sled(sled::Error::Io(err)))?;
        let events_dir = path.join("events");
        let events_end = if found < 5 {
            // Migrating: whatever an interrupted migration left is written again.
            match std::fs::remove_dir_all(&events_dir) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Events(EventLogError::Io {
                        path: events_dir,
                        source,
                    }))
                }
            }
            LogEnd::START
        } else {
            match meta.get(EVENTS_END).map_err(damaged)? {
                None => LogEnd::START,
                Some(bytes) => LogEnd::from_bytes(&bytes).ok_or_else(|| StoreError::Corrupt {
                    tree: "meta",
                    detail: "the event log's end is not 12 bytes".to_owned(),
                })?,
            }
        };
        let mut seq_floor = 0u64;
        if let Some(outbound) = trees.get(TreeName::Outbound as usize) {
            for channel in 0..=u8::MAX {
                if let Some((key, _)) = outbound.scan_prefix([channel]).next_back().transpose()? {
                    let seq = key
                        .get(1..9)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map_or(0, u64::from_be_bytes);
                    seq_floor = seq_floor.max(seq.saturating_add(1));
                }
            }
        }
        // The webhook queue's keys end with their sequence number (after the due time).
        if let Some(queue) = trees.get(TreeName::WebhookQueue as usize) {
            for key in queue.iter().keys() {
                let seq = key?
                    .get(8..16)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, u64::from_be_bytes);
                seq_floor = seq_floor.max(seq.saturating_add(1));
            }
        }
        let external_key_of = if found >= 6 {
            external_key_of_stored
        } else {
            external_key_of_event
        };
        let events = EventLog::open(&events_dir, events_end, external_key_of)?;
        let store = Store {
            db,
            trees,
            journal,
            meta: meta.clone(),
            commits: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(recovered)),
            mark: std::sync::Arc::new(mark),
            blobs,
            events: std::sync::Arc::new(events),
            keys,
            retiring: std::sync::Arc::default(),
            seq_floor: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(seq_floor)),
            key_owners_recorded: std::sync::Arc::default(),
            path: path.to_path_buf(),
        };
        if redone {
            store.flush()?;
        }
        if found == 3 {
            store.migrate_from_3()?;
        }
        if found < 5 {
            store.migrate_from_4()?;
        } else if !store.tree(TreeName::Log).is_empty() {
            // A migration stopped after it was done and before the old tree was emptied.
            store.tree(TreeName::Log).clear()?;
            store.flush()?;
        }
        if !store.tree(TreeName::ExternalIds).is_empty() {
            // Kept by the event log's index now.
            store.tree(TreeName::ExternalIds).clear()?;
            store.flush()?;
        }
        Ok((store, found))
    }

    /// Version 4 → 5: the events move from the `log` tree to the event log (in records of a few
    /// thousand), then the schema and the log's end are stored together, then the tree is
    /// emptied. Stopped part way, it starts again from the tree at the next open.
    fn migrate_from_4(&self) -> Result<(), StoreError> {
        let mut chunk: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut end = self.events.end();
        let mut moved = 0u64;
        let mut append = |chunk: &mut Vec<(Vec<u8>, Vec<u8>)>| -> Result<(), StoreError> {
            let externals: Vec<Option<[u8; 33]>> = chunk
                .iter()
                .map(|(_, value)| external_key_of_event(value))
                .collect();
            let entries = chunk
                .iter()
                .zip(&externals)
                .map(|((key, value), external)| {
                    // The first event of a key keeps it (the index sees to that).
                    Ok(NewEntry {
                        external: external.as_ref(),
                        ..log_entry_of(key, value)?
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            end = self.events.append(self.commits(), &entries)?;
            moved += chunk.len() as u64;
            chunk.clear();
            Ok(())
        };
        for entry in self.tree(TreeName::Log).iter() {
            let (key, value) = entry?;
            chunk.push((key.to_vec(), value.to_vec()));
            if chunk.len() == 4096 {
                append(&mut chunk)?;
            }
        }
        if !chunk.is_empty() {
            append(&mut chunk)?;
        }
        let mut batch = sled::Batch::default();
        batch.insert(EVENTS_END, &end.to_bytes());
        batch.insert(b"schema", &5u32.to_be_bytes());
        self.meta.apply_batch(batch)?;
        self.flush()?;
        self.tree(TreeName::Log).clear()?;
        self.flush()?;
        tracing::info!(
            events = moved,
            "moved the store's events to its event log (schema 5)"
        );
        Ok(())
    }

    /// Version 5 → 6: a sealed copy of this store is made in `to` (a new folder): every tree
    /// but the retired ones copied (queued deliveries sealed), every event appended again in
    /// the order it was (its content sealed), every attachment sealed, then the commit
    /// counter and its mark. [`Store::open`] then puts it in this store's place and deletes
    /// this one, so no unsealed copy is left behind, not even sled's old values.
    fn seal_into(&self, to: &Path, storage: &StorageKey) -> Result<(), StoreError> {
        let (sealed, _) = Store::open_found(to, storage)?;
        for (number, name) in TREE_NAMES.iter().enumerate() {
            if number == TreeName::Log as usize || number == TreeName::ExternalIds as usize {
                continue;
            }
            let (Some(from), Some(into)) = (self.trees.get(number), sealed.trees.get(number))
            else {
                continue;
            };
            let mut batch = sled::Batch::default();
            for entry in from.iter() {
                let (key, value) = entry?;
                if number == TreeName::Outbound as usize {
                    let delivery: Delivery = decode("outbound", &value)?;
                    batch.insert(key.as_ref(), sealed.seal_delivery(&key, &delivery)?);
                } else {
                    batch.insert(key, value);
                }
            }
            into.apply_batch(batch)?;
            tracing::debug!(tree = name, "copied into the sealed store");
        }
        let commits = self.commits();
        type Entry = ([u8; 33], [u8; 32], Vec<u8>, Option<[u8; 33]>);
        let mut chunk: Vec<Entry> = Vec::new();
        let mut end = sealed.events.end();
        let mut append = |chunk: &mut Vec<Entry>| -> Result<(), StoreError> {
            sealed.keys.sync()?;
            let entries: Vec<NewEntry<'_>> = chunk
                .iter()
                .map(|(scope, id, bytes, external)| NewEntry {
                    scope,
                    id,
                    bytes,
                    external: external.as_ref(),
                })
                .collect();
            end = sealed.events.append(commits, &entries)?;
            chunk.clear();
            Ok(())
        };
        let mut moved = 0u64;
        for (scope_bytes, id_bytes) in self.events.in_order() {
            let Some(bytes) = self.events.get(&scope_bytes, &id_bytes)? else {
                continue;
            };
            let event: Event = decode("log", &bytes)?;
            let (scope, id) = keys::split_log_key(&[scope_bytes.as_slice(), &id_bytes].concat())
                .ok_or_else(|| StoreError::Corrupt {
                    tree: "log",
                    detail: "an event log entry of no scope".to_owned(),
                })?;
            // The key it took, if it was the first to name it.
            let external = match external_key_of_event(&bytes) {
                Some(key) if self.events.external(&key)? == Some(id_bytes) => Some(key),
                _ => None,
            };
            chunk.push((
                scope_bytes,
                id_bytes,
                sealed.seal_event(&scope, &id, &event)?,
                external,
            ));
            moved += 1;
            if chunk.len() == 4096 {
                append(&mut chunk)?;
            }
        }
        if !chunk.is_empty() {
            append(&mut chunk)?;
        }
        let mut sealed_blobs = 0u64;
        for (blob, _) in self.blobs.list()? {
            let path = self.blobs.path(&blob);
            let bytes = std::fs::read(&path).map_err(|err| io_damage(&path, err))?;
            let found = BlobHash::of(&bytes);
            if found != blob {
                return Err(BlobError::HashMismatch {
                    expected: blob,
                    found,
                }
                .into());
            }
            sealed.blobs.put(&bytes)?;
            sealed_blobs += 1;
        }
        let mut meta = sled::Batch::default();
        meta.insert(EVENTS_END, &end.to_bytes());
        meta.insert(b"commits", &commits.to_be_bytes());
        meta.insert(b"schema", &SCHEMA_VERSION.to_be_bytes());
        sealed.meta.apply_batch(meta)?;
        sealed
            .commits
            .store(commits, std::sync::atomic::Ordering::SeqCst);
        sealed.keys.sync()?;
        sealed.flush()?;
        tracing::info!(
            events = moved,
            attachments = sealed_blobs,
            "sealed a copy of the store (schema {SCHEMA_VERSION})"
        );
        Ok(())
    }

    /// Version 3 → 4: attachments have references, rebuilt from the logs. (Version 4 also
    /// keyed external ids by sender; since version 5 they are worked out from the events
    /// themselves, and those of erased messages are gone with their content: an erased
    /// message resubmitted is a new message, as its sender is forgotten.)
    fn migrate_from_3(&self) -> Result<(), StoreError> {
        let mut writes = WriteSet::default();
        for entry in self.tree(TreeName::Log).iter() {
            let (key, value) = entry?;
            let event: Event = decode("log", &value)?;
            let Some(content) = &event.content else {
                continue;
            };
            let (scope, id) = keys::split_log_key(&key).ok_or_else(|| StoreError::Corrupt {
                tree: "log",
                detail: "key is not scope ‖ event id".to_owned(),
            })?;
            for attachment in content.blobs() {
                writes.insert(
                    TreeName::BlobRefs,
                    blob_ref_key(&attachment.blob, &scope, &id),
                    Vec::new(),
                );
            }
        }
        self.commit(writes)?;
        self.flush()?;
        self.meta.insert(b"schema", &4u32.to_be_bytes())?;
        self.flush()?;
        self.clear_journal()
    }

    /// The attachment files.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The events that refer to a blob, by log.
    pub fn blob_refs(&self, blob: &BlobHash) -> Result<Vec<(ScopeId, EventId)>, StoreError> {
        self.tree(TreeName::BlobRefs)
            .scan_prefix(blob.as_bytes())
            .map(|entry| {
                let (key, _) = entry?;
                key.get(32..)
                    .and_then(keys::split_log_key)
                    .ok_or_else(|| StoreError::Corrupt {
                        tree: "blob_refs",
                        detail: "key is not blob ‖ scope ‖ event id".to_owned(),
                    })
            })
            .collect()
    }

    /// Records, durably, that a bridge of `channel` uploaded `blob`: having sent the bytes, its
    /// events may refer to them.
    pub fn record_upload(&self, channel: ChannelKind, blob: &BlobHash) -> Result<(), StoreError> {
        let mut key = blob.as_bytes().to_vec();
        key.push(keys::channel_key(channel));
        self.tree(TreeName::BlobUploads).insert(key, &[])?;
        self.flush()
    }

    /// Whether an event a bridge of `channel` introduces may refer to `blob`: a bridge of the
    /// channel uploaded it, or an event of a thread routed to the channel refers to it already
    /// (a file the customer sent before, on this channel). A hash alone opens nothing.
    pub fn may_attach(&self, channel: ChannelKind, blob: &BlobHash) -> Result<bool, StoreError> {
        if self.uploaded_by(channel, blob)? {
            return Ok(true);
        }
        for (scope, _) in self.blob_refs(blob)? {
            let ScopeId::Thread(thread) = scope else {
                continue;
            };
            let routed = self
                .thread_state(&thread)?
                .and_then(|state| state.route)
                .is_some_and(|route| route.channel == channel);
            if routed {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether a bridge of `channel` uploaded `blob`.
    pub fn uploaded_by(&self, channel: ChannelKind, blob: &BlobHash) -> Result<bool, StoreError> {
        let mut key = blob.as_bytes().to_vec();
        key.push(keys::channel_key(channel));
        Ok(self.tree(TreeName::BlobUploads).contains_key(key)?)
    }

    fn forget_uploads(&self, blob: &BlobHash) -> Result<(), StoreError> {
        let uploads = self.tree(TreeName::BlobUploads);
        for key in uploads.scan_prefix(blob.as_bytes()).keys() {
            uploads.remove(key?)?;
        }
        Ok(())
    }

    /// Deletes each of `blobs` that no event refers to any more (after the erasure that
    /// released them is durable).
    pub fn drop_unreferenced(&self, blobs: &[BlobHash]) -> Result<(), StoreError> {
        for blob in blobs {
            if self
                .tree(TreeName::BlobRefs)
                .scan_prefix(blob.as_bytes())
                .next()
                .is_none()
            {
                self.tree(TreeName::MissingBlobs).remove(blob.as_bytes())?;
                self.forget_uploads(blob)?;
                self.blobs.remove(blob)?;
            }
        }
        Ok(())
    }

    /// Deletes the blobs no event refers to that were last stored more than `grace` ago
    /// (uploads whose message never came, or an erasure interrupted by a crash). Returns how
    /// many went. Only the ingest writer calls it (`Ingest::sweep_unused_blobs`), between
    /// commits, so no event that refers to a file is stored while the file goes.
    pub fn sweep_unused_blobs(&self, grace: std::time::Duration) -> Result<usize, StoreError> {
        let mut swept = 0;
        let now = std::time::SystemTime::now();
        let old = |modified: std::time::SystemTime| {
            now.duration_since(modified).is_ok_and(|age| age > grace)
        };
        for (blob, modified) in self.blobs.list()? {
            if old(modified)
                && self
                    .tree(TreeName::BlobRefs)
                    .scan_prefix(blob.as_bytes())
                    .next()
                    .is_none()
                // Uploaded again since the listing (for a message on its way): kept.
                && self.blobs.modified(&blob)?.is_some_and(old)
            {
                self.forget_uploads(&blob)?;
                self.blobs.remove(&blob)?;
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Blobs that events from peers refer to and that are not here yet, with their sizes: at
    /// most `limit`, in hash order, after `after` (from the first with `None`).
    pub fn missing_blobs(
        &self,
        after: Option<&BlobHash>,
        limit: usize,
    ) -> Result<Vec<(BlobHash, u64)>, StoreError> {
        let tree = self.tree(TreeName::MissingBlobs);
        let entries = match after {
            Some(after) => tree.range((
                std::ops::Bound::Excluded(after.as_bytes().to_vec()),
                std::ops::Bound::Unbounded,
            )),
            None => tree.iter(),
        };
        entries
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                let blob = <[u8; 32]>::try_from(key.as_ref()).map(BlobHash::from_bytes);
                let size = <[u8; 8]>::try_from(value.as_ref()).map(u64::from_be_bytes);
                match (blob, size) {
                    (Ok(blob), Ok(size)) => Ok((blob, size)),
                    _ => Err(StoreError::Corrupt {
                        tree: "missing_blobs",
                        detail: "not a blob hash and a size".to_owned(),
                    }),
                }
            })
            .collect()
    }

    /// A missing blob is here now (or no event wants it any more).
    pub fn blob_found(&self, blob: &BlobHash) -> Result<(), StoreError> {
        self.tree(TreeName::MissingBlobs).remove(blob.as_bytes())?;
        Ok(())
    }

    /// A tree.
    pub fn tree(&self, name: TreeName) -> &sled::Tree {
        &self.trees[name as usize]
    }

    /// Commits a write set atomically across the event log and the trees (visible at once to
    /// the writer, durable after [`Store::flush`]; readers on other threads may see one
    /// part before another).
    ///
    /// The commit's events are appended to the event log as one record and synced first. A
    /// redo journal gives the atomicity of the rest: the other writes, with where the event
    /// log now ends, are written to the `journal` tree (one atomic batch), then applied tree by
    /// tree (one atomic batch each), then the log's end and the commit counter. sled recovers
    /// a prefix of its log after a crash, so if any tree's part survived, the journal did, and
    /// [`Store::open`] applies it again (the writes are idempotent); if the journal did not
    /// survive, the event log is cut back to the end sled has, and the commit is gone whole
    /// (it was never acknowledged: that waits for the flush). The journal costs about 1 µs
    /// per message, where a sled transaction across trees (which reads every key it writes)
    /// cost 15 µs (docs/BENCHMARKS.md).
    pub fn commit(&self, mut writes: WriteSet) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let commit = self.commits.load(std::sync::atomic::Ordering::SeqCst) + 1;
        let retired = std::mem::take(&mut writes.retired);
        // Keys given to owners since `data-keys` was last synced: recorded with the commit
        // (their slots' rewrites are not synced; see `data_keys`).
        let (changes, assigned) = self.keys.unsynced_assignments();
        for key in &retired {
            writes.insert(
                TreeName::RetiredKeys,
                key.0.to_be_bytes().to_vec(),
                Vec::new(),
            );
        }
        let mut events: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        // Event id → the external key it takes (the event log's index keeps those).
        let mut externals: std::collections::HashMap<Vec<u8>, [u8; 33]> =
            std::collections::HashMap::new();
        writes.ops.retain(|(tree, key), value| match tree {
            TreeName::Log => {
                if let Some(value) = value.take() {
                    events.push((key.clone(), value));
                }
                false
            }
            TreeName::ExternalIds => {
                if let (Some(id), Ok(key)) = (value.take(), <[u8; 33]>::try_from(key.as_slice())) {
                    externals.insert(id, key);
                }
                false
            }
            _ => true,
        });
        // Appended in a stable order (the write set's is a hash map's). Should a peer's event
        // and one of this node's share an external key in one commit, the key may go to the
        // other of the two when the log is read again at start-up: both carry that id, and a
        // resubmission is still answered as a duplicate.
        events.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let end = if events.is_empty() {
            self.events.end()
        } else {
            let entries = events
                .iter()
                .map(|(key, value)| {
                    let entry = log_entry_of(key, value)?;
                    Ok(NewEntry {
                        external: externals.get(entry.id.as_slice()),
                        ..entry
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            self.events.append(commit, &entries)?
        };
        // Written when it changed (a durable list stays true until the file is synced).
        let recorded = self
            .key_owners_recorded
            .load(std::sync::atomic::Ordering::SeqCst);
        let key_owners = if changes == recorded || assigned.is_empty() {
            None
        } else {
            let listed: Vec<(u64, codec::ByteBuf)> = assigned
                .iter()
                .map(|(key, owner)| (key.0, codec::ByteBuf(owner.to_bytes().to_vec())))
                .collect();
            Some(codec::encode(&listed)?)
        };
        self.write_journal(&writes, end, key_owners.as_deref())?;
        let mut batches: Vec<sled::Batch> =
            self.trees.iter().map(|_| sled::Batch::default()).collect();
        for ((tree, key), value) in writes.ops {
            match value {
                Some(value) => batches[tree as usize].insert(key, value),
                None => batches[tree as usize].remove(key),
            }
        }
        for (tree, batch) in self.trees.iter().zip(batches) {
            tree.apply_batch(batch)?;
        }
        // After the commit's writes: sled recovers a prefix of what was written, so a
        // recovered counter means every write before it was recovered too.
        // The counter is stored before it is published, so a flush on another thread never
        // notes a commit sled does not hold yet. (Only the ingest writer commits.)
        let mut meta = sled::Batch::default();
        meta.insert(EVENTS_END, &end.to_bytes());
        match &key_owners {
            Some(listed) => meta.insert(KEY_OWNERS, listed.as_slice()),
            None if assigned.is_empty() && changes != recorded => meta.remove(KEY_OWNERS),
            None => {}
        }
        meta.insert(b"commits", &commit.to_be_bytes());
        self.meta.apply_batch(meta)?;
        self.commits
            .store(commit, std::sync::atomic::Ordering::SeqCst);
        self.retiring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(retired);
        self.key_owners_recorded
            .store(changes, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Replaces the journal with `writes`, the event log's `end` and the data keys given to
    /// owners and not yet synced, in one atomic batch.
    fn write_journal(
        &self,
        writes: &WriteSet,
        end: LogEnd,
        key_owners: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut journal = sled::Batch::default();
        // What a failed clear left behind must not be applied again with this commit.
        for key in self.journal.iter().keys() {
            journal.remove(key?);
        }
        let mut chunk: Vec<JournalOp> = Vec::new();
        let mut chunk_bytes = 0;
        let mut n_chunks: u32 = 0;
        for ((tree, key), value) in &writes.ops {
            chunk_bytes += key.len() + value.as_ref().map_or(0, Vec::len) + 16;
            chunk.push((
                *tree as u8,
                codec::ByteBuf(key.clone()),
                value.clone().map(codec::ByteBuf),
            ));
            if chunk_bytes >= JOURNAL_CHUNK_BYTES {
                journal.insert(&n_chunks.to_be_bytes(), codec::encode(&chunk)?);
                n_chunks += 1;
                chunk.clear();
                chunk_bytes = 0;
            }
        }
        if !chunk.is_empty() {
            journal.insert(&n_chunks.to_be_bytes(), codec::encode(&chunk)?);
        }
        journal.insert(EVENTS_END, &end.to_bytes());
        if let Some(listed) = key_owners {
            journal.insert(KEY_OWNERS, listed);
        }
        self.journal.apply_batch(journal)?;
        Ok(())
    }

    /// Makes everything committed so far durable (one fsync for many writers: group commit).
    pub fn flush(&self) -> Result<(), StoreError> {
        let committed = self.commits.load(std::sync::atomic::Ordering::SeqCst);
        let retiring = std::mem::take(
            &mut *self
                .retiring
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.db.flush()?;
        write_commit_mark(&self.mark, committed)?;
        if !retiring.is_empty() {
            // The commits that retired them are durable: nothing readable needs them.
            self.keys.destroy(&retiring)?;
            let mut done = sled::Batch::default();
            for key in &retiring {
                done.remove(&key.0.to_be_bytes());
            }
            self.tree(TreeName::RetiredKeys).apply_batch(done)?;
        }
        Ok(())
    }

    /// Destroys the keys that durable commits retired and a crash kept from being destroyed
    /// (at open).
    fn destroy_retired_keys(&self) -> Result<(), StoreError> {
        let mut retired = Vec::new();
        for key in self.tree(TreeName::RetiredKeys).iter().keys() {
            let key = key?;
            let number = <[u8; 8]>::try_from(key.as_ref()).map_err(|_| StoreError::Corrupt {
                tree: "retired_keys",
                detail: "a key that is not 8 bytes".to_owned(),
            })?;
            retired.push(KeyNumber(u64::from_be_bytes(number)));
        }
        if retired.is_empty() {
            return Ok(());
        }
        self.keys.destroy(&retired)?;
        self.tree(TreeName::RetiredKeys).clear()?;
        self.db.flush()?;
        Ok(())
    }

    /// The data keys.
    pub fn keys(&self) -> &DataKeys {
        &self.keys
    }

    /// An event as the event log keeps it: its content sealed under its owner's current key
    /// (made if it has none), with the external key it names.
    fn seal_event(
        &self,
        scope: &ScopeId,
        id: &EventId,
        event: &Event,
    ) -> Result<Vec<u8>, StoreError> {
        let kind = &event.signed.header.kind;
        let content = match &event.content {
            None => None,
            Some(_) => {
                let owner = content_owner(scope, kind).ok_or_else(|| StoreError::Corrupt {
                    tree: "log",
                    detail: format!("a {} event with content has no key to seal it", kind.name()),
                })?;
                let key = self.keys.current_or_new(owner)?;
                Some(self.keys.seal(
                    key,
                    &content_aad(id),
                    &Content::tagged_bytes(&event.content)?,
                )?)
            }
        };
        /// [`StoredEvent`], borrowing the header (the same encoding).
        #[derive(serde::Serialize)]
        struct Stored<'a> {
            signed: &'a threadline_protocol::event::SignedHeader,
            content: Option<data_keys::Sealed>,
            external: Option<codec::ByteBuf>,
        }
        let stored = Stored {
            signed: &event.signed,
            content,
            external: external_id_key_of(kind, event.content.as_deref()).map(codec::ByteBuf),
        };
        Ok(codec::encode(&stored)?)
    }

    /// An event's content, opened; `None` if its key was destroyed (erased).
    fn open_content(
        &self,
        id: &EventId,
        sealed: &data_keys::Sealed,
    ) -> Result<Option<Box<Content>>, StoreError> {
        let Some(plain) = self.keys.open_sealed(sealed, &content_aad(id))? else {
            return Ok(None);
        };
        // The AEAD tag authenticated what this store sealed: no canonical check again.
        let content = Content::from_own_tagged_bytes(&plain)
            .ok()
            .flatten()
            .ok_or_else(|| StoreError::Corrupt {
                tree: "log",
                detail: format!("event {id}'s content does not decode"),
            })?;
        Ok(Some(content))
    }

    /// A stored event, its content opened (none if erased).
    fn open_event(&self, id: &EventId, bytes: &[u8]) -> Result<Event, StoreError> {
        // Checked by the event log's CRC as it was read; the header's signature by whoever
        // verifies the event.
        let stored: StoredEvent =
            codec::decode_own(bytes, codec::MAX_MESSAGE_BYTES).map_err(|err| {
                StoreError::Corrupt {
                    tree: "log",
                    detail: err.to_string(),
                }
            })?;
        let content = match &stored.content {
            None => None,
            Some(sealed) => self.open_content(id, sealed)?,
        };
        Ok(Event::from_parts(stored.signed, content))
    }

    /// A delivery as the `outbound` tree keeps it under `key`, sealed under its thread's key.
    pub fn seal_delivery(&self, key: &[u8], delivery: &Delivery) -> Result<Vec<u8>, StoreError> {
        let data_key = self
            .keys
            .current_or_new(KeyOwner::Thread(delivery.thread))?;
        let sealed = self.keys.seal(data_key, key, &codec::encode(delivery)?)?;
        Ok(codec::encode(&StoredDelivery {
            thread: delivery.thread,
            sealed,
        })?)
    }

    /// A queued delivery, opened; `None` if its thread's key was destroyed (erased).
    pub fn open_delivery(
        &self,
        key: &[u8],
        stored: &StoredDelivery,
    ) -> Result<Option<Delivery>, StoreError> {
        match self.keys.open_sealed(&stored.sealed, key)? {
            None => Ok(None),
            Some(plain) => Ok(Some(decode("outbound", &plain)?)),
        }
    }

    /// Reads everything back and checks it: every log entry decodes, is filed under its own
    /// id and scope and matches its content hash; every thread's and directory's size is its
    /// log's; every attachment file hashes to its name. What is damaged is named in the
    /// report; only a failure to read at all is an error.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        let mut damaged_events = Vec::new();
        let damaged_files = self.events.check(&mut |scope, id, bytes| {
            let id = EventId::from_bytes(*id);
            let event: Event = match self.open_event(&id, bytes) {
                Ok(event) => event,
                Err(err) => {
                    damaged_events.push(format!("log: event {id}: {err}"));
                    return;
                }
            };
            match event.verify_from_store() {
                Ok(verified)
                    if verified.id() == id && scope_key(&verified.scope_id()) == *scope => {}
                Ok(_) => {
                    damaged_events.push(format!("log: the entry filed as {id} holds another event"))
                }
                Err(err) => damaged_events.push(format!("log: event {id}: {err}")),
            }
        })?;
        report.damaged.extend(damaged_files);
        report.damaged.extend(damaged_events);
        // What is sealed and meant to be read must have its key: an erasure rewrites an event
        // without its content (and drops its deliveries) before it destroys a key, so a live
        // record sealed under a key that is gone is a key lost to damage, not an erasure.
        for (scope, id) in self.events.in_order() {
            let Some(bytes) = self.events.get(&scope, &id)? else {
                continue;
            };
            let Ok(stored) = codec::decode_own::<StoredEvent>(&bytes, codec::MAX_MESSAGE_BYTES)
            else {
                continue; // named above
            };
            if let Some(sealed) = &stored.content {
                if !self.keys.holds(sealed.key) {
                    report.damaged.push(format!(
                        "data-keys: event {}'s content is sealed under data key {}, which is gone",
                        EventId::from_bytes(id),
                        sealed.key.0
                    ));
                }
            }
        }
        for entry in self.tree(TreeName::Outbound).iter() {
            let (_, value) = entry?;
            match decode::<StoredDelivery>("outbound", &value) {
                Ok(stored) if !self.keys.holds(stored.sealed.key) => report.damaged.push(format!(
                    "data-keys: a delivery of thread {} is sealed under data key {}, which is gone",
                    stored.thread, stored.sealed.key.0
                )),
                Ok(_) => {}
                Err(err) => report.damaged.push(format!("outbound: {err}")),
            }
        }
        report.events = self.events.len() as u64;
        let sizes: std::collections::HashMap<[u8; 33], u64> =
            self.events.scope_sizes().into_iter().collect();
        for entry in self.thread_records() {
            match entry {
                Ok((thread, (_, n_events, _))) => {
                    report.threads += 1;
                    let held = sizes
                        .get(&scope_key(&ScopeId::Thread(thread)))
                        .copied()
                        .unwrap_or(0);
                    if held != n_events {
                        report.damaged.push(format!(
                            "threads: thread {thread} counts {n_events} events, its log holds {held}"
                        ));
                    }
                }
                Err(err) => report.damaged.push(format!("threads: {err}")),
            }
        }
        for entry in self.tree(TreeName::Heads).iter() {
            let (key, value) = entry?;
            let counted: Result<(u64, Vec<EventId>), _> = decode("heads", &value);
            // A heads key is a scope key: read it as a log key's first part.
            let scope = keys::split_log_key(&[key.as_ref(), &[0u8; 32]].concat()).map(|(s, _)| s);
            match (scope, counted) {
                (Some(scope), Ok((n_events, _))) => {
                    let held = sizes.get(&scope_key(&scope)).copied().unwrap_or(0);
                    if held != n_events {
                        report.damaged.push(format!(
                            "heads: {scope} counts {n_events} events, its log holds {held}"
                        ));
                    }
                }
                (_, Err(err)) => report.damaged.push(format!("heads: {err}")),
                (None, _) => report
                    .damaged
                    .push("heads: a key that is not a scope".to_owned()),
            }
        }
        for (blob, _) in self.blobs.list()? {
            report.attachments += 1;
            match self.blobs.read(&blob) {
                Ok(_) => {}
                Err(err) => report.damaged.push(format!(
                    "attachments: {}: {err}",
                    self.blobs.path(&blob).display()
                )),
            }
        }
        Ok(report)
    }

    /// Copies the store into `to` (a new, empty folder): every tree, key by key, into a new
    /// sled store there, then the event log's segments up to its end, then its commit mark,
    /// then the attachment files (copied: a backup
    /// must not share the live files' bytes), then the data keys (sealed as they are: the
    /// copy needs the same storage key). Consistent when nothing commits meanwhile: the
    /// ingest writer calls it between batches ([`crate::ingest::Ingest::backup`]), an admin
    /// command on a store no node holds. Writes outside the writer (a delivery acknowledged,
    /// an upload recorded) touch one key each and land in the copy or not, whole. Answers the
    /// bytes of attachments copied.
    pub fn backup(&self, to: &Path) -> Result<u64, StoreError> {
        let io = |what: &str, path: &Path, err: std::io::Error| StoreError::Corrupt {
            tree: "backup",
            detail: format!("{what} {}: {err}", path.display()),
        };
        self.flush()?;
        let copy = sled::Config::new().path(to).open()?;
        for name in self.db.tree_names() {
            let from = self.db.open_tree(&name)?;
            let into = copy.open_tree(&name)?;
            let mut batch = sled::Batch::default();
            let mut staged = 0;
            for entry in from.iter() {
                let (key, value) = entry?;
                batch.insert(key, value);
                staged += 1;
                if staged == 10_000 {
                    into.apply_batch(std::mem::take(&mut batch))?;
                    staged = 0;
                }
            }
            into.apply_batch(batch)?;
        }
        copy.flush()?;
        let copied_commits = copy
            .open_tree("meta")?
            .get(b"commits")?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        drop(copy);
        self.events.copy_to(&to.join("events"))?;
        let mark = std::fs::File::create(to.join(COMMIT_MARK))
            .map_err(|err| io("create", &to.join(COMMIT_MARK), err))?;
        write_commit_mark(&mark, copied_commits)?;
        mark.sync_all()
            .map_err(|err| io("sync", &to.join(COMMIT_MARK), err))?;
        let mut bytes = 0;
        let attachments = self.path.join("attachments");
        let mut pending = vec![(attachments.clone(), to.join("attachments"))];
        while let Some((dir, into)) = pending.pop() {
            std::fs::create_dir_all(&into).map_err(|err| io("create", &into, err))?;
            for entry in std::fs::read_dir(&dir).map_err(|err| io("list", &dir, err))? {
                let entry = entry.map_err(|err| io("list", &dir, err))?;
                let (source, target) = (entry.path(), into.join(entry.file_name()));
                let kind = entry.file_type().map_err(|err| io("stat", &source, err))?;
                if kind.is_dir() {
                    // Uploads under way are not attachments yet.
                    if source != attachments.join("tmp") {
                        pending.push((source, target));
                    }
                    continue;
                }
                match std::fs::copy(&source, &target) {
                    Ok(copied) => bytes += copied,
                    // Swept or erased since it was listed: nothing refers to it any more.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(io("copy", &source, err)),
                }
            }
        }
        // Last: it holds the key of every attachment copied (keys are only ever added
        // meanwhile; the writer, which destroys them, is the caller).
        self.keys.copy_to(&to.join(DATA_KEYS))?;
        Ok(bytes)
    }

    /// The commits made so far (see [`COMMIT_MARK`]).
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Forgets the journal of a commit that is durable (the removal itself becomes durable
    /// with the next flush; until then, a restart applies the journal again, harmlessly).
    pub fn clear_journal(&self) -> Result<(), StoreError> {
        self.journal.clear()?;
        Ok(())
    }

    /// A fresh monotonic id (delivery sequence numbers): above every delivery queued, also
    /// in a store copied into a new sled database (a backup, the sealing migration), whose
    /// own id generator starts again from zero.
    pub fn generate_id(&self) -> Result<u64, StoreError> {
        let floor = self
            .seq_floor
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Both strictly increase, so their maximum does.
        Ok(self.db.generate_id()?.max(floor))
    }

    /// Whether an event of `scope` is stored.
    pub fn contains_event(&self, scope: &ScopeId, id: &EventId) -> Result<bool, StoreError> {
        Ok(self.events.contains(&scope_key(scope), id.as_bytes()))
    }

    /// A stored event of `scope`, with its content (if not erased).
    pub fn event(&self, scope: &ScopeId, id: &EventId) -> Result<Option<Event>, StoreError> {
        self.events
            .get(&scope_key(scope), id.as_bytes())?
            .map(|bytes| self.open_event(id, &bytes))
            .transpose()
    }

    /// The stored encoding of the event a `log` key (scope ‖ event id) names.
    fn log_entry(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (Some(scope), Some(id)) = (
            key.get(..33).and_then(|s| <&[u8; 33]>::try_from(s).ok()),
            key.get(33..).and_then(|s| <&[u8; 32]>::try_from(s).ok()),
        ) else {
            return Ok(None);
        };
        Ok(self.events.get(scope, id)?)
    }

    /// The events of a log, in linear order (which puts parents first).
    pub fn log_events(&self, scope: &ScopeId) -> Result<Vec<Event>, StoreError> {
        Ok(self
            .log_with_ids(scope)?
            .into_iter()
            .map(|(_, event)| event)
            .collect())
    }

    /// The events of a log with their ids, in linear order.
    pub fn log_with_ids(&self, scope: &ScopeId) -> Result<Vec<(EventId, Event)>, StoreError> {
        let mut events = Vec::new();
        for (id, value) in self.events.scope(&scope_key(scope))? {
            let event = self.open_event(&EventId::from_bytes(id), &value)?;
            let order = OrderKey {
                depth: event.signed.header.depth,
                author_time: event.signed.header.author_time,
                id: EventId::from_bytes(id),
            };
            events.push((order, event));
        }
        events.sort_unstable_by_key(|(order, _)| *order);
        Ok(events
            .into_iter()
            .map(|(order, event)| (order.id, event))
            .collect())
    }

    /// The events of a log in linear order, as verified when they were stored (read back
    /// under the ids they were stored under; the event log's checksums and the contents'
    /// authenticated encryption catch damage): what the writer loads a thread from.
    pub fn verified_log(
        &self,
        scope: &ScopeId,
    ) -> Result<Vec<threadline_protocol::VerifiedEvent>, StoreError> {
        Ok(self
            .log_with_ids(scope)?
            .into_iter()
            .map(|(id, event)| threadline_protocol::VerifiedEvent::from_own_store(id, event))
            .collect())
    }

    /// A log's size and heads, as stored with its last event.
    pub fn heads(&self, scope: &ScopeId) -> Result<Option<(u64, Vec<EventId>)>, StoreError> {
        match scope {
            ScopeId::Thread(thread) => Ok(self
                .thread_record(thread)?
                .map(|(_, n_events, heads)| (n_events, heads))),
            ScopeId::Directory(_) => self
                .tree(TreeName::Heads)
                .get(scope_key(scope))?
                .map(|bytes| decode("heads", &bytes))
                .transpose(),
        }
    }

    /// The handle a thread's replies go to now (`state` is its state): `None` with no route
    /// or once the route's handle is erased.
    pub fn route_handle(
        &self,
        thread: ThreadId,
        state: &ThreadState,
    ) -> Result<Option<threadline_protocol::channel::Handle>, StoreError> {
        let Some(route) = state.route else {
            return Ok(None);
        };
        Ok(self
            .event(&ScopeId::Thread(thread), &route.handle_from)?
            .and_then(|event| event.content)
            .and_then(|content| content.handle))
    }

    /// The threads opened for `contact` (not those of contacts merged into it).
    pub fn contact_threads(
        &self,
        contact: &threadline_protocol::ContactId,
    ) -> Result<Vec<ThreadId>, StoreError> {
        self.tree(TreeName::ContactThreads)
            .scan_prefix(contact.as_bytes())
            .map(|entry| {
                let (key, _) = entry?;
                key.get(16..)
                    .and_then(|id| <[u8; 32]>::try_from(id).ok())
                    .map(ThreadId::from_bytes)
                    .ok_or_else(|| StoreError::Corrupt {
                        tree: "contact_threads",
                        detail: "key is not contact ‖ thread".to_owned(),
                    })
            })
            .collect()
    }

    /// The thread where `contact`'s next message goes, if it has one (it may be resolved
    /// since: check its state).
    pub fn open_thread(
        &self,
        contact: &threadline_protocol::ContactId,
    ) -> Result<Option<ThreadId>, StoreError> {
        self.tree(TreeName::OpenThreads)
            .get(contact.as_bytes())?
            .map(|bytes| {
                <[u8; 32]>::try_from(bytes.as_ref())
                    .map(ThreadId::from_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        tree: "open_threads",
                        detail: "value is not a thread id".to_owned(),
                    })
            })
            .transpose()
    }

    /// The oldest `limit` deliveries queued for `channel`.
    pub fn deliveries(
        &self,
        channel: threadline_protocol::ChannelKind,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut deliveries = Vec::new();
        for entry in self
            .tree(TreeName::Outbound)
            .scan_prefix([channel_key(channel)])
        {
            if deliveries.len() == limit {
                break;
            }
            let (key, value) = entry?;
            let stored: StoredDelivery = decode("outbound", &value)?;
            // One whose thread was erased is never sent (the erasure drops it too).
            if let Some(delivery) = self.open_delivery(&key, &stored)? {
                deliveries.push(delivery);
            }
        }
        Ok(deliveries)
    }

    /// Takes a delivery off its channel's queue; whether it was there. Durable after the next
    /// flush ([`Store::flush_async`]).
    pub fn ack_delivery(
        &self,
        channel: threadline_protocol::ChannelKind,
        seq: u64,
    ) -> Result<bool, StoreError> {
        let mut key = vec![channel_key(channel)];
        key.extend_from_slice(&seq.to_be_bytes());
        Ok(self.tree(TreeName::Outbound).remove(key)?.is_some())
    }

    /// Flushes without blocking the calling task's thread.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// A thread's derived state as stored: all of it but the per-message maps, `receipts`
    /// and `erased`, which are empty here (they grow with the thread; read them off the log,
    /// as [`Store::full_thread_state`] does).
    pub fn thread_state(&self, thread: &ThreadId) -> Result<Option<ThreadState>, StoreError> {
        Ok(self.thread_record(thread)?.map(|(state, _, _)| state))
    }

    fn thread_record(&self, thread: &ThreadId) -> Result<Option<ThreadRecord>, StoreError> {
        self.tree(TreeName::Threads)
            .get(thread.as_bytes())?
            .map(|bytes| decode_thread_record(&bytes))
            .transpose()
    }

    /// Agent `id` of this node, if there is one.
    pub fn agent(
        &self,
        id: &threadline_protocol::AgentId,
    ) -> Result<Option<AgentRecord>, StoreError> {
        self.tree(TreeName::Agents)
            .get(id.as_bytes())?
            .map(|bytes| decode_agent(&bytes))
            .transpose()
    }

    /// Every agent of this node, revoked ones too, in id order.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.tree(TreeName::Agents)
            .iter()
            .map(|entry| decode_agent(&entry?.1))
            .collect()
    }

    /// A thread's facts for the thread list; `None` for a thread the node has not written
    /// since it began keeping them (read those off the log).
    pub fn thread_facts(
        &self,
        thread: &ThreadId,
    ) -> Result<Option<crate::thread_facts::ThreadFacts>, StoreError> {
        let Some(bytes) = self.tree(TreeName::ThreadFacts).get(thread.as_bytes())? else {
            return Ok(None);
        };
        // Written by an earlier version: read as such.
        crate::thread_facts::ThreadFacts::decode_stored(&bytes).map(Some)
    }

    /// A thread's whole derived state, `receipts` and `erased` included: a fold of its log
    /// (as costly as reading the log).
    pub fn full_thread_state(&self, thread: &ThreadId) -> Result<Option<ThreadState>, StoreError> {
        let events = self
            .log_events(&ScopeId::Thread(*thread))?
            .into_iter()
            .map(|event| {
                event
                    .verify_from_store()
                    .map_err(|err| StoreError::Corrupt {
                        tree: "log",
                        detail: format!("an event of thread {thread}: {err}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if events.is_empty() {
            return Ok(None);
        }
        let restored =
            threadline_protocol::Thread::restore(events).map_err(|err| StoreError::Corrupt {
                tree: "log",
                detail: format!("thread {thread} does not fold: {err}"),
            })?;
        Ok(Some(restored.state().clone()))
    }

    /// Every thread and its state (as [`Store::thread_state`] has it), by thread id.
    pub fn thread_states(
        &self,
    ) -> impl Iterator<Item = Result<(ThreadId, ThreadState), StoreError>> + '_ {
        self.thread_records()
            .map(|record| record.map(|(id, (state, _, _))| (id, state)))
    }

    /// Every thread's members, size and heads, by thread id (for replication summaries).
    pub fn thread_summaries(&self) -> impl Iterator<Item = Result<ThreadSummary, StoreError>> + '_ {
        self.thread_records().map(|record| {
            record.map(|(thread, (state, n_events, heads))| ThreadSummary {
                thread,
                members: state.members,
                n_events,
                heads,
            })
        })
    }

    /// Every thread's record, by thread id.
    fn thread_records(
        &self,
    ) -> impl Iterator<Item = Result<(ThreadId, ThreadRecord), StoreError>> + '_ {
        self.tree(TreeName::Threads).iter().map(|entry| {
            let (key, value) = entry?;
            let id = <[u8; 32]>::try_from(key.as_ref()).map_err(|_| StoreError::Corrupt {
                tree: "threads",
                detail: "key is not a thread id".to_owned(),
            })?;
            Ok((ThreadId::from_bytes(id), decode_thread_record(&value)?))
        })
    }

    /// The certificates of partner orgs this node knows.
    pub fn partner_certificates(
        &self,
    ) -> Result<Vec<threadline_protocol::Certificate>, StoreError> {
        self.tree(TreeName::PartnerCerts)
            .iter()
            .map(|entry| {
                let (_, value) = entry?;
                decode("partner_certs", &value)
            })
            .collect()
    }

    /// Whether a route-setting event of `thread` came from another node.
    pub fn is_replicated_route(
        &self,
        thread: &ThreadId,
        event: &EventId,
    ) -> Result<bool, StoreError> {
        Ok(self
            .tree(TreeName::ReplicatedRoutes)
            .contains_key([thread.as_bytes().as_slice(), event.as_bytes()].concat())?)
    }

    /// Number of events stored (counted one by one: for tests and benchmarks).
    pub fn n_events(&self) -> usize {
        self.events.len()
    }

    /// Size on disk, in bytes (sled's files and the event log's).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()? + self.events.size_on_disk()?)
    }
}

/// Applies the journal of the last commit again (after a crash, it may be partly applied),
/// with the event log's end it recorded; answers whether there was anything to apply (the
/// caller flushes then).
fn redo_journal(
    trees: &[sled::Tree],
    journal: &sled::Tree,
    meta: &sled::Tree,
) -> Result<bool, StoreError> {
    let mut batches: Vec<sled::Batch> = trees.iter().map(|_| sled::Batch::default()).collect();
    let mut any = false;
    let mut end = None;
    let mut key_owners = None;
    for entry in journal.iter() {
        let (key, bytes) = entry?;
        if key.as_ref() == EVENTS_END {
            end = Some(bytes);
            continue;
        }
        if key.as_ref() == KEY_OWNERS {
            key_owners = Some(bytes);
            continue;
        }

        let ops: Vec<JournalOp> =
            codec::decode(&bytes, bytes.len()).map_err(|err| StoreError::Corrupt {
                tree: "journal",
                detail: err.to_string(),
            })?;
        for (tree, key, value) in ops {
            let batch = batches
                .get_mut(usize::from(tree))
                .ok_or_else(|| StoreError::Corrupt {
                    tree: "journal",
                    detail: format!("no tree number {tree}"),
                })?;
            match value {
                Some(value) => batch.insert(key.0, value.0),
                None => batch.remove(key.0),
            }
            any = true;
        }
    }
    if any {
        for (tree, batch) in trees.iter().zip(batches) {
            tree.apply_batch(batch)?;
        }
    }
    if let Some(end) = end {
        meta.insert(EVENTS_END, end)?;
        any = true;
    }
    if let Some(listed) = key_owners {
        meta.insert(KEY_OWNERS, listed)?;
        any = true;
    }

    Ok(any)
}

/// An event log entry of a `log` key (scope ‖ event id) and the event's encoding.
fn log_entry_of<'a>(key: &'a [u8], value: &'a [u8]) -> Result<NewEntry<'a>, StoreError> {
    let not_a_key = || StoreError::Corrupt {
        tree: "log",
        detail: "key is not scope ‖ event id".to_owned(),
    };
    Ok(NewEntry {
        scope: key
            .get(..33)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(not_a_key)?,
        id: key
            .get(33..)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(not_a_key)?,
        bytes: value,
        external: None,
    })
}

/// The external key a stored event names (an inbound message that names its provider's id);
/// `None` for other events and ones that do not decode (the event log's checks name those).
fn external_key_of_stored(bytes: &[u8]) -> Option<[u8; 33]> {
    let stored: StoredEvent = codec::decode(bytes, codec::MAX_MESSAGE_BYTES).ok()?;
    stored.external?.0.try_into().ok()
}

/// [`external_key_of_stored`] for an event stored unsealed (schema 5 and earlier), worked
/// out from its content.
fn external_key_of_event(bytes: &[u8]) -> Option<[u8; 33]> {
    let event: Event = codec::decode(bytes, codec::MAX_MESSAGE_BYTES).ok()?;
    external_id_key_of(&event.signed.header.kind, event.content.as_deref())?
        .try_into()
        .ok()
}

/// Decodes a stored record.
pub fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    codec::decode(bytes, codec::MAX_MESSAGE_BYTES).map_err(|err| StoreError::Corrupt {
        tree,
        detail: err.to_string(),
    })
}

/// An `agents` record (one written before agents had roles reads as an admin's).
pub fn decode_agent(bytes: &[u8]) -> Result<AgentRecord, StoreError> {
    decode("agents", bytes).or_else(|err| {
        decode::<AgentRecordBeforeRoles>("agents", bytes)
            .map(Into::into)
            .map_err(|_| err)
    })
}

/// The commit the mark file says was made durable; `None` if there is no file yet or it does
/// not read as a mark (torn, foreign).
fn read_commit_mark(path: &Path) -> Result<Option<u64>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(StoreError::Sled(sled::Error::Io(err))),
    };
    if bytes.is_empty() {
        return Ok(None);
    }
    let Ok(bytes) = <[u8; 16]>::try_from(bytes.as_slice()) else {
        tracing::warn!(path = %path.display(), "the commit mark is not a mark; ignored");
        return Ok(None);
    };
    let (commit, check) = bytes.split_at(8);
    let commit = u64::from_be_bytes(commit.try_into().unwrap_or_default());
    let check = u64::from_be_bytes(check.try_into().unwrap_or_default());
    if commit ^ COMMIT_MARK_CHECK != check {
        tracing::warn!(path = %path.display(), "the commit mark is torn; ignored");
        return Ok(None);
    }
    Ok(Some(commit))
}

fn write_commit_mark(file: &std::fs::File, commit: u64) -> Result<(), StoreError> {
    use std::os::unix::fs::FileExt as _;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&commit.to_be_bytes());
    bytes[8..].copy_from_slice(&(commit ^ COMMIT_MARK_CHECK).to_be_bytes());
    file.write_all_at(&bytes, 0)
        .map_err(|err| StoreError::Sled(sled::Error::Io(err)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadline_protocol::{
        channel::Handle,
        event::{Attachment, Content, Draft, EventKind, Scope},
        name::{AttachmentMeta, ExternalId},
        ChannelKind, SecretKey, Timestamp, VerifiedEvent,
    };

    /// The storage key of the tests' stores.
    pub(crate) fn test_storage_key() -> StorageKey {
        StorageKey::from_bytes([7; 32])
    }

    /// An agent stored before agents had roles reads as an admin (every agent could do
    /// everything then).
    #[test]
    fn agents_stored_before_roles_read_as_admins() {
        let id = threadline_protocol::AgentId::from_bytes([4; 16]);
        let old = codec::encode(&(id, "maria".to_owned(), Timestamp::from_millis(7), false))
            .expect("encodes");
        let agent = decode_agent(&old).expect("reads");
        assert_eq!(
            (agent.id, agent.name.as_str(), agent.revoked, agent.role),
            (id, "maria", false, AgentRole::Admin)
        );
        let now = AgentRecord {
            role: AgentRole::Agent,
            ..agent
        };
        assert_eq!(
            decode_agent(&codec::encode(&now).expect("encodes")).expect("reads"),
            now
        );
        assert!(decode_agent(&[1, 2, 3]).is_err());
    }

    /// A thread's facts as stored before they named the last message still read (with no last
    /// message), so the list works across the upgrade.
    #[test]
    fn thread_facts_written_before_the_last_message_was_kept_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &test_storage_key()).expect("opens");
        let thread = ThreadId::from_bytes([5; 32]);
        let old: crate::thread_facts::ThreadFactsV1 = codec::decode(
            &codec::encode(&(
                3u64,
                std::collections::BTreeMap::<ChannelKind, Timestamp>::new(),
                std::collections::BTreeMap::<threadline_protocol::AgentId, ()>::new(),
            ))
            .expect("encodes"),
            1 << 20,
        )
        .expect("the old layout");
        store
            .tree(TreeName::ThreadFacts)
            .insert(thread.as_bytes(), codec::encode(&old).expect("encodes"))
            .expect("writes");
        let facts = store.thread_facts(&thread).expect("reads").expect("there");
        assert_eq!(facts.inbound, 3);
        assert_eq!(facts.last_message(), None);
        assert_eq!(
            facts.unread(threadline_protocol::AgentId::from_bytes([1; 16])),
            3
        );
        // Version 2: with the last message, without the unanswered one.
        let message = EventId::from_bytes([6; 32]);
        let v2 = codec::encode(&(
            2u64,
            std::collections::BTreeMap::<ChannelKind, Timestamp>::new(),
            std::collections::BTreeMap::<threadline_protocol::AgentId, ()>::new(),
            Some((4u64, Timestamp::from_millis(9), message)),
        ))
        .expect("encodes");
        store
            .tree(TreeName::ThreadFacts)
            .insert(thread.as_bytes(), v2)
            .expect("writes");
        let facts = store.thread_facts(&thread).expect("reads").expect("there");
        assert_eq!((facts.inbound, facts.last_message()), (2, Some(message)));
        assert_eq!(facts.waiting_since(), None);
        // Bytes that are neither layout are an error, not facts.
        store
            .tree(TreeName::ThreadFacts)
            .insert(thread.as_bytes(), &[0xff, 0xff][..])
            .expect("writes");
        assert!(store.thread_facts(&thread).is_err());
    }

    /// A `threads` record written before teams reads with no team; today's reads back with
    /// its team; bytes of neither layout are an error.
    #[test]
    fn thread_records_written_before_teams_still_read() {
        let key = SecretKey::from_seed([3; 32]);
        let root = Draft::new(
            Scope::NewThread,
            Vec::new(),
            0,
            Timestamp::from_millis(5),
            EventKind::Thread(threadline_protocol::event::ThreadKind::Opened {
                org: threadline_protocol::OrgId(key.public()),
                contact: threadline_protocol::ContactId::from_bytes([1; 16]),
                channel: ChannelKind::Email,
            }),
        )
        .sign(&key)
        .expect("signs")
        .verify()
        .expect("verifies");
        let mut state = ThreadState::opened(&root).expect("an opening");
        let heads = vec![root.id()];
        let before = ThreadStateBeforeTeams {
            owner: state.owner,
            contact: state.contact,
            opened_on: state.opened_on,
            opened_at: state.opened_at,
            status: state.status,
            assignee: state.assignee,
            route: state.route,
            labels: state.labels.clone(),
            members: state.members.clone(),
            read_marks: state.read_marks.clone(),
            receipts: state.receipts.clone(),
            erased: state.erased.clone(),
            n_events: state.n_events,
            n_messages: state.n_messages,
            last_activity: state.last_activity,
        };
        let old = codec::encode(&(before, 1u64, heads.clone())).expect("encodes");
        assert_eq!(
            decode_thread_record(&old).expect("reads"),
            (state.clone(), 1, heads.clone())
        );
        state.team = Some(threadline_protocol::name::TeamName::new("billing").expect("valid"));
        let now =
            codec::encode(&(StoredThreadState(&state), 1u64, heads.clone())).expect("encodes");
        assert_eq!(
            decode_thread_record(&now).expect("reads"),
            (state, 1, heads)
        );
        assert!(decode_thread_record(&now[..now.len() - 1]).is_err());
    }

    /// An upload no event refers to goes once it is older than the grace; a referenced blob
    /// stays; an erasure releases its blobs, which go at once if nothing else refers to them.
    #[test]
    fn blobs_nobody_refers_to_are_swept_and_erased_ones_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &test_storage_key()).expect("opens");
        let used = store.blobs().put(b"used").expect("stores");
        let unused = store.blobs().put(b"unused").expect("stores");
        let scope = ScopeId::Thread(ThreadId::from_bytes([3; 32]));
        let event = EventId::from_bytes([4; 32]);
        let mut writes = WriteSet::default();
        writes.insert(
            TreeName::BlobRefs,
            blob_ref_key(&used, &scope, &event),
            Vec::new(),
        );
        store.commit(writes).expect("commits");
        let grace = std::time::Duration::from_secs(3600);
        assert_eq!(store.sweep_unused_blobs(grace).expect("sweeps"), 0, "young");
        assert_eq!(
            store
                .sweep_unused_blobs(std::time::Duration::ZERO)
                .expect("sweeps"),
            1
        );
        assert_eq!(store.blobs().size(&unused).expect("stat"), None);
        assert_eq!(store.blobs().size(&used).expect("stat"), Some(4));
        // Released but still referred to: kept; no longer referred to: deleted.
        store.drop_unreferenced(&[used]).expect("drops");
        assert_eq!(store.blobs().size(&used).expect("stat"), Some(4));
        let mut writes = WriteSet::default();
        writes.remove(TreeName::BlobRefs, blob_ref_key(&used, &scope, &event));
        store.commit(writes).expect("commits");
        store.drop_unreferenced(&[used]).expect("drops");
        assert_eq!(store.blobs().size(&used).expect("stat"), None);
    }

    /// A store of schema version 3 keyed external ids by id alone and had no attachment
    /// references: opening it rebuilds both from the logs.
    #[test]
    fn a_version_3_store_is_migrated_when_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let thread = ThreadId::from_bytes([7; 32]);
        let scope = ScopeId::Thread(thread);
        let sender = Handle::new(ChannelKind::Email, "ada@example.org").expect("handle");
        let external = ExternalId::new("<m1@example.org>").expect("id");
        let blob = BlobHash::of(b"photo");
        let event = Draft::new(
            Scope::Thread(thread),
            vec![EventId::from_bytes([1; 32])],
            1,
            Timestamp::from_millis(1),
            EventKind::inbound_message(ChannelKind::Email),
        )
        .with_content(
            Content::text("hello")
                .with_handle(sender.clone())
                .with_external_id(external.clone())
                .with_attachment(Attachment::new(
                    blob,
                    5,
                    AttachmentMeta::new("image/png").expect("meta"),
                    AttachmentMeta::new("photo.png").expect("meta"),
                )),
        )
        .sign(&SecretKey::from_seed([9; 32]))
        .expect("signs");
        let id = event.id().expect("id");
        {
            let store = Store::open(dir.path(), &test_storage_key()).expect("opens");
            let old_key = [vec![channel_key(ChannelKind::Email)], vec![0xaa; 32]].concat();
            store
                .tree(TreeName::ExternalIds)
                .insert(old_key, id.as_bytes().to_vec())
                .expect("insert");
            store
                .tree(TreeName::Log)
                .insert(log_key(&scope, &id), codec::encode(&event).expect("encode"))
                .expect("insert");
            store
                .db
                .open_tree("meta")
                .and_then(|meta| meta.insert(b"schema", &3u32.to_be_bytes()))
                .expect("schema 3");
            store.flush().expect("flush");
        }
        let store = Store::open(dir.path(), &test_storage_key()).expect("migrates");
        let key = external_id_key(ChannelKind::Email, &sender, &external);
        assert_eq!(
            store.events.external(&key).expect("reads"),
            Some(*id.as_bytes())
        );
        assert!(
            store.tree(TreeName::ExternalIds).is_empty(),
            "the old keys are gone"
        );
        assert_eq!(store.blob_refs(&blob).expect("reads"), vec![(scope, id)]);
        drop(store);
        // Version 5 now: opening again changes nothing.
        let store = Store::open(dir.path(), &test_storage_key()).expect("opens");
        assert_eq!(
            store.events.external(&key).expect("reads"),
            Some(*id.as_bytes())
        );
        assert_eq!(store.n_events(), 1);
    }

    /// A crash after the journal reached the disk but before every tree got its part: the
    /// next open applies the journal, so the commit is whole.
    #[test]
    fn reopening_applies_a_journal_whose_commit_did_not_reach_every_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writes = WriteSet::default();
        writes.insert(TreeName::Tokens, b"ext key".to_vec(), b"id".to_vec());
        writes.insert(
            TreeName::Outbound,
            b"big".to_vec(),
            vec![7u8; JOURNAL_CHUNK_BYTES],
        );
        {
            let store = Store::open(dir.path(), &test_storage_key()).expect("opens");
            store
                .tree(TreeName::Outbound)
                .insert(b"old", b"removed by the commit")
                .expect("insert");
            writes.remove(TreeName::Outbound, b"old".to_vec());
            store
                .write_journal(&writes, store.events.end(), None)
                .expect("journal");
            // Only one tree got its part before the "crash".
            store
                .tree(TreeName::Tokens)
                .insert(b"ext key", b"id")
                .expect("insert");
            store.flush().expect("flush");
        }
        let store = Store::open(dir.path(), &test_storage_key()).expect("reopens");
        let get = |tree, key: &[u8]| {
            store
                .tree(tree)
                .get(key)
                .expect("reads")
                .map(|v| v.to_vec())
        };
        assert_eq!(get(TreeName::Tokens, b"ext key"), Some(b"id".to_vec()));
        assert_eq!(
            get(TreeName::Outbound, b"big").map(|v| v.len()),
            Some(JOURNAL_CHUNK_BYTES)
        );
        assert_eq!(get(TreeName::Outbound, b"old"), None);
        // A cleared journal is not applied again.
        store.clear_journal().expect("clears");
        store
            .tree(TreeName::Tokens)
            .remove(b"ext key")
            .expect("remove");
        store.flush().expect("flush");
        drop(store);
        let store = Store::open(dir.path(), &test_storage_key()).expect("reopens");
        assert_eq!(
            store.tree(TreeName::Tokens).get(b"ext key").expect("reads"),
            None
        );
    }

    /// A signed event of its own thread, for the event log tests.
    fn thread_event(seed: u8) -> Event {
        let key = SecretKey::from_seed([seed; 32]);
        Draft::new(
            Scope::NewThread,
            Vec::new(),
            0,
            Timestamp::from_millis(1_700_000_000_000 + u64::from(seed)),
            EventKind::Thread(threadline_protocol::event::ThreadKind::Opened {
                org: threadline_protocol::OrgId(key.public()),
                contact: threadline_protocol::ContactId::from_bytes([seed; 16]),
                channel: ChannelKind::Webchat,
            }),
        )
        .sign(&key)
        .expect("signs")
    }

    /// An inbound web chat message on the thread `root` opened, after it, signed by the key
    /// of `seed`, at `millis`.
    fn message_on(root: &VerifiedEvent, seed: u8, millis: u64, content: Content) -> VerifiedEvent {
        Draft::new(
            Scope::Thread(ThreadId::from_bytes(*root.id().as_bytes())),
            vec![root.id()],
            1,
            Timestamp::from_millis(millis),
            EventKind::inbound_message(ChannelKind::Webchat),
        )
        .with_content(content)
        .sign(&SecretKey::from_seed([seed; 32]))
        .expect("signs")
        .verify()
        .expect("verifies")
    }

    /// `text` from the web chat visitor `webchat:visitor`.
    fn visitor_text(text: &str) -> Content {
        Content::text(text).with_handle("webchat:visitor".parse::<Handle>().expect("handle"))
    }

    /// Erasing part of a thread re-keys it: the erased content is gone, the rest is sealed
    /// again under a new key, and the old key is destroyed once the commit is durable, so the
    /// thread's old records (a copy from before) open to nothing; erasing the rest leaves the
    /// thread with no key at all.
    #[test]
    fn erasing_part_of_a_thread_re_keys_it_and_old_copies_no_longer_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &test_storage_key()).expect("opens");
        let root = thread_event(9).verify().expect("verifies");
        let thread = ThreadId::from_bytes(*root.id().as_bytes());
        let scope = ScopeId::Thread(thread);
        let messages: Vec<VerifiedEvent> = (0..3u64)
            .map(|n| {
                message_on(
                    &root,
                    9,
                    1_700_000_000_100 + n,
                    visitor_text(&format!("secret {n}")),
                )
            })
            .collect();
        let mut writes = WriteSet::default();
        for event in std::iter::once(&root).chain(&messages) {
            writes.put_event(&store, event).expect("stages");
        }
        store.commit(writes).expect("commits");
        store.flush().expect("flushes");
        let owner = KeyOwner::Thread(thread);
        let old = store.keys().current(owner).expect("a key");
        let copies: Vec<(EventId, Vec<u8>)> = messages
            .iter()
            .map(|m| {
                let bytes = store
                    .events
                    .get(&scope_key(&scope), m.id().as_bytes())
                    .expect("reads")
                    .expect("there");
                assert!(!bytes.windows(6).any(|w| w == b"secret"), "sealed");
                (m.id(), bytes)
            })
            .collect();
        let text = |store: &Store, id: &EventId| {
            store
                .event(&scope, id)
                .expect("reads")
                .expect("there")
                .content
                .map(|c| c.text.clone())
        };

        let mut writes = WriteSet::default();
        writes
            .erase_content(&store, &scope, &messages[0].id())
            .expect("erases");
        assert_eq!(writes.erased_owners(), vec![owner]);
        let survivors: Vec<(ScopeId, EventId)> =
            messages[1..].iter().map(|m| (scope, m.id())).collect();
        writes.rekey(&store, owner, &survivors).expect("re-keys");
        store.commit(writes).expect("commits");
        assert!(store.keys().holds(old), "kept until the commit is durable");
        store.flush().expect("flushes");
        assert!(!store.keys().holds(old));
        let new = store.keys().current(owner).expect("a new key");
        assert_ne!(new, old);
        assert_eq!(text(&store, &messages[0].id()), None);
        assert_eq!(text(&store, &messages[1].id()), Some("secret 1".to_owned()));
        assert_eq!(text(&store, &messages[2].id()), Some("secret 2".to_owned()));
        for (id, bytes) in &copies {
            assert_eq!(store.open_event(id, bytes).expect("reads").content, None);
        }
        drop(store);

        let store = Store::open(dir.path(), &test_storage_key()).expect("reopens");
        assert_eq!(text(&store, &messages[1].id()), Some("secret 1".to_owned()));
        let mut writes = WriteSet::default();
        for m in &messages[1..] {
            writes
                .erase_content(&store, &scope, &m.id())
                .expect("erases");
        }
        writes.rekey(&store, owner, &[]).expect("re-keys");
        store.commit(writes).expect("commits");
        store.flush().expect("flushes");
        assert!(store.keys().keys_of(owner).is_empty());
        assert!(messages.iter().all(|m| text(&store, &m.id()).is_none()));
        let report = store.check().expect("checks");
        assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    }

    /// Events committed and flushed are read back after a reopen, with the threads' records;
    /// an event appended to the event log by a commit that sled never took (the crash came
    /// between the two) is cut off at the next open, and the store checks clean.
    #[test]
    fn events_of_a_commit_sled_never_took_are_cut_off_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = thread_event(1).verify().expect("verifies");
        let lost = thread_event(2).verify().expect("verifies");
        {
            let store = Store::open(dir.path(), &test_storage_key()).expect("opens");
            let mut writes = WriteSet::default();
            writes.put_event(&store, &kept).expect("stages");
            store.commit(writes).expect("commits");
            store.flush().expect("flush");
            let key = log_key(&lost.scope_id(), &lost.id());
            let bytes = codec::encode(lost.event()).expect("encodes");
            store
                .events
                .append(99, &[log_entry_of(&key, &bytes).expect("entry")])
                .expect("appends");
            assert!(store
                .contains_event(&lost.scope_id(), &lost.id())
                .expect("reads"));
        }
        let store = Store::open(dir.path(), &test_storage_key()).expect("reopens");
        assert_eq!(store.n_events(), 1);
        assert_eq!(
            store.event(&kept.scope_id(), &kept.id()).expect("reads"),
            Some(kept.event().clone())
        );
        assert!(!store
            .contains_event(&lost.scope_id(), &lost.id())
            .expect("reads"));
        assert!(
            !store
                .contains_event(&lost.scope_id(), &kept.id())
                .expect("reads"),
            "another log"
        );
        let report = store.check().expect("checks");
        assert_eq!(report.events, 1);
        assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    }

    /// Keys an erasure retired are destroyed once its commit is durable; should the node
    /// stop in between (the commit durable, the keys not yet destroyed), the next open
    /// destroys them.
    #[test]
    fn keys_retired_by_a_durable_commit_are_destroyed_at_the_next_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opened = thread_event(6).verify().expect("verifies");
        let thread = ThreadId::from_bytes(*opened.id().as_bytes());
        let root = message_on(&opened, 6, 1_700_000_000_700, visitor_text("to be erased"));
        let owner = KeyOwner::Thread(thread);
        let old = {
            let store = Store::open(dir.path(), &test_storage_key()).expect("opens");
            let mut writes = WriteSet::default();
            writes.put_event(&store, &opened).expect("stages");
            writes.put_event(&store, &root).expect("stages");
            store.commit(writes).expect("commits");
            store.flush().expect("flushes");
            let old = store.keys().current(owner).expect("a key");
            let mut writes = WriteSet::default();
            writes
                .erase_content(&store, &root.scope_id(), &root.id())
                .expect("erases");
            writes.rekey(&store, owner, &[]).expect("re-keys");
            store.commit(writes).expect("commits");
            // Durable, and stopped before the flush that destroys the keys.
            store.db.flush().expect("sled flushes");
            assert!(store.keys().holds(old));
            old
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        let store = Store::open(dir.path(), &test_storage_key()).expect("reopens");
        assert!(!store.keys().holds(old));
        assert!(store.tree(TreeName::RetiredKeys).is_empty());
        assert_eq!(
            store
                .event(&root.scope_id(), &root.id())
                .expect("reads")
                .and_then(|e| e.content),
            None
        );
    }

    /// A new thread's key is given to it without syncing `data-keys`: should the slot's
    /// rewrite be lost in a crash (here: put back as it was made ahead), the commit's record
    /// in `meta` gives the key back to its thread at open, and what was sealed opens.
    #[test]
    fn a_key_whose_slot_rewrite_was_lost_is_given_back_from_the_commits_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let event = thread_event(8).verify().expect("verifies");
        let thread = ThreadId::from_bytes(*event.id().as_bytes());
        let message = message_on(
            &event,
            8,
            1_700_000_000_900,
            visitor_text("kept through a crash"),
        );
        let key = {
            let store = Store::open(dir.path(), &test_storage_key()).expect("opens");
            let mut writes = WriteSet::default();
            writes.put_event(&store, &event).expect("stages");
            writes.put_event(&store, &message).expect("stages");
            store.commit(writes).expect("commits");
            store.flush().expect("flushes");
            // As the writer does after every flush: the record must outlive the journal.
            store.clear_journal().expect("clears");
            store.flush().expect("flushes");
            store
                .keys()
                .current(KeyOwner::Thread(thread))
                .expect("a key")
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        let path = dir.path().join(DATA_KEYS);
        let mut bytes = std::fs::read(&path).expect("reads");
        let at = 128 * (key.0 as usize + 1);
        bytes[at] = 2;
        bytes[at + 1..at + 34].fill(0);
        std::fs::write(&path, &bytes).expect("writes");
        let store = Store::open(dir.path(), &test_storage_key()).expect("reopens");
        assert_eq!(store.keys().current(KeyOwner::Thread(thread)), Some(key));
        assert_eq!(
            store
                .event(&message.scope_id(), &message.id())
                .expect("reads")
                .and_then(|e| e.content)
                .map(|c| c.text.clone()),
            Some("kept through a crash".to_owned())
        );
        assert!(store.check().expect("checks").damaged.is_empty());
        drop(store);
        // A key lost to damage (its slot zeroed) is not an erasure: `check` names it.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut bytes = std::fs::read(&path).expect("reads");
        bytes[at..at + 128].fill(0);
        std::fs::write(&path, &bytes).expect("writes");
        let store = Store::open(dir.path(), &test_storage_key()).expect("reopens");
        let damaged = store.check().expect("checks").damaged;
        assert!(
            damaged.iter().any(|line| line.contains(&format!(
                "event {}'s content is sealed under data key {}, which is gone",
                message.id(),
                key.0
            ))),
            "{damaged:?}"
        );
    }

    /// A store as schema 5 wrote it, unsealed, in `path`: a thread's opening and a message
    /// in the event log, an attachment file and a queued delivery, all in the clear.
    fn unsealed_store(path: &Path) -> (Vec<VerifiedEvent>, BlobHash, Delivery) {
        let root = thread_event(5).verify().expect("verifies");
        let thread = ThreadId::from_bytes(*root.id().as_bytes());
        let message = message_on(
            &root,
            5,
            1_700_000_000_500,
            Content::text("PLAIN-TEXT-6b1f").with_handle(
                "webchat:plain-handle-2c9d"
                    .parse::<Handle>()
                    .expect("handle"),
            ),
        );
        let events = vec![root, message];
        let file = b"PLAIN-FILE-BYTES-4e77".to_vec();
        let blob = BlobHash::of(&file);
        let delivery = Delivery {
            seq: 7,
            thread,
            event: events[1].id(),
            depth: 2,
            handle: "webchat:plain-handle-2c9d".parse().expect("handle"),
            text: "PLAIN-REPLY-a0c3".to_owned(),
            queued_at: Timestamp::from_millis(1_700_000_000_600),
        };
        let store = Store::open(path, &test_storage_key()).expect("opens");
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = events
            .iter()
            .map(|e| {
                (
                    log_key(&e.scope_id(), &e.id()).to_vec(),
                    codec::encode(e.event()).expect("encodes"),
                )
            })
            .collect();
        let entries: Vec<NewEntry<'_>> = encoded
            .iter()
            .map(|(key, bytes)| log_entry_of(key, bytes).expect("entry"))
            .collect();
        let end = store.events.append(1, &entries).expect("appends");
        let mut key = vec![channel_key(ChannelKind::Webchat)];
        key.extend_from_slice(&delivery.seq.to_be_bytes());
        let outbound = store.tree(TreeName::Outbound);
        outbound
            .insert(key, codec::encode(&delivery).expect("encodes"))
            .expect("queues");
        let blob_path = store.blobs().path(&blob);
        std::fs::create_dir_all(blob_path.parent().expect("shard")).expect("shard");
        std::fs::write(&blob_path, &file).expect("writes");
        store.meta.insert(EVENTS_END, &end.to_bytes()).expect("end");
        store
            .meta
            .insert(b"schema", &5u32.to_be_bytes())
            .expect("schema");
        store
            .meta
            .insert(b"commits", &1u64.to_be_bytes())
            .expect("commits");
        store.flush().expect("flush");
        drop(store);
        std::fs::remove_file(path.join(DATA_KEYS)).expect("no keys then");
        (events, blob, delivery)
    }

    fn holding(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("lists") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    pending.push(path);
                } else if std::fs::read(&path)
                    .expect("reads")
                    .windows(needle.len())
                    .any(|w| w == needle)
                {
                    found.push(path);
                }
            }
        }
        found
    }

    /// A store of schema 5 is sealed at open: its events, attachment and queued delivery read
    /// back the same, and nothing of them is left in the clear anywhere in its folder (sled's
    /// old values included: the store is a new copy). Stopped part way, whether while the
    /// copy is made or between the two renames that put it in place, it finishes at the next
    /// open.
    #[test]
    fn a_schema_5_store_is_sealed_at_open_and_an_interrupted_sealing_finishes() {
        let secrets: [&[u8]; 4] = [
            b"PLAIN-TEXT-6b1f",
            b"plain-handle-2c9d",
            b"PLAIN-FILE-BYTES-4e77",
            b"PLAIN-REPLY-a0c3",
        ];
        let read_back = |path: &Path, events: &[VerifiedEvent], blob, delivery: &Delivery| {
            let store = Store::open(path, &test_storage_key()).expect("opens");
            for event in events {
                assert_eq!(
                    store.event(&event.scope_id(), &event.id()).expect("reads"),
                    Some(event.event().clone())
                );
            }
            assert_eq!(
                store.blobs().read(&blob).expect("reads").as_deref(),
                Some(&b"PLAIN-FILE-BYTES-4e77"[..])
            );
            assert_eq!(
                store.deliveries(ChannelKind::Webchat, 10).expect("reads"),
                vec![delivery.clone()]
            );
            assert_ne!(store.generate_id().expect("id"), delivery.seq);
            assert!(store.generate_id().expect("id") > delivery.seq);
            assert!(store.check().expect("checks").damaged.is_empty());
            drop(store);
            for secret in secrets {
                assert!(
                    holding(path, secret).is_empty(),
                    "{} in {:?}",
                    String::from_utf8_lossy(secret),
                    holding(path, secret)
                );
            }
        };

        // Straight through, with a copy an earlier attempt left half made.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        let (events, blob, delivery) = unsealed_store(&path);
        assert!(!holding(&path, b"PLAIN-TEXT-6b1f").is_empty(), "unsealed");
        std::fs::create_dir_all(sibling(&path, SEALING)).expect("creates");
        std::fs::write(sibling(&path, SEALING).join("db"), b"half").expect("writes");
        read_back(&path, &events, blob, &delivery);
        assert!(!sibling(&path, SEALING).exists() && !sibling(&path, UNSEALED).exists());

        // Stopped between the renames: the store moved aside, the copy not yet in place.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        let (events, blob, delivery) = unsealed_store(&path);
        {
            let (store, found) = Store::open_found(&path, &test_storage_key()).expect("opens");
            assert_eq!(found, 5);
            store
                .seal_into(&sibling(&path, SEALING), &test_storage_key())
                .expect("seals");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::rename(&path, sibling(&path, UNSEALED)).expect("moves aside");
        read_back(&path, &events, blob, &delivery);
        assert!(!sibling(&path, SEALING).exists() && !sibling(&path, UNSEALED).exists());
    }

    /// A store of schema 4 (events in the `log` tree) is migrated at open: its events move
    /// to the event log, and a migration stopped part way starts again.
    #[test]
    fn a_schema_4_store_moves_its_events_to_the_event_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events: Vec<VerifiedEvent> = (1..=5)
            .map(|seed| thread_event(seed).verify().expect("verifies"))
            .collect();
        {
            let store = Store::open(dir.path(), &test_storage_key()).expect("opens");
            for event in &events {
                store
                    .tree(TreeName::Log)
                    .insert(
                        log_key(&event.scope_id(), &event.id()),
                        codec::encode(event.event()).expect("encode"),
                    )
                    .expect("insert");
            }
            store
                .meta
                .insert(b"schema", &4u32.to_be_bytes())
                .expect("schema 4");
            store.flush().expect("flush");
        }
        // An earlier attempt left a partial event log behind.
        std::fs::write(
            dir.path().join("events").join("00000002.events"),
            b"partial",
        )
        .expect("writes");
        let store = Store::open(dir.path(), &test_storage_key()).expect("migrates");
        assert_eq!(store.n_events(), 5);
        assert!(store.tree(TreeName::Log).is_empty());
        for event in &events {
            assert_eq!(
                store.log_events(&event.scope_id()).expect("reads"),
                vec![event.event().clone()]
            );
        }
        drop(store);
        let store = Store::open(dir.path(), &test_storage_key()).expect("opens");
        assert_eq!(store.n_events(), 5);
        assert!(store.check().expect("checks").damaged.is_empty());
    }
}
