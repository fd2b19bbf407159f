//! The node's durable store: sled trees with big-endian binary keys.
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `meta` | `b"schema"` | schema version, u32 BE |
//! | `log` | scope ‖ depth BE ‖ author time BE ‖ event id | `encode(Event)`: every log's events in linear order; erasure rewrites the value without content |
//! | `events` | event id | the event's `log` key |
//! | `threads` | thread id | `encode(ThreadState)`: derived state, kept in step with events |
//! | `contact_threads` | contact id ‖ thread id | empty |
//! | `open_threads` | contact id | thread id: where the contact's next inbound message goes |
//! | `external_ids` | channel ‖ SHA-256(external id) | event id: makes resubmission idempotent |
//! | `outbound` | channel ‖ sequence BE | `encode(Delivery)`: each channel's delivery queue |
//! | `tokens` | SHA-256 of the token | `encode(TokenRecord)` |
//! | `agents` | agent id | `encode(AgentRecord)` |
//!
//! A scope is 33 bytes: `0x00 ‖ org` for a directory, `0x01 ‖ thread id` for a thread.
//!
//! Writes are staged in a [`WriteSet`] (which also answers reads of what it staged) and
//! committed as one sled transaction across trees: the ingest writer commits one per group of
//! requests, so a group is stored whole or not at all. Nothing is durable until
//! [`Store::flush`]; callers acknowledge only after it (see `ingest`).

mod keys;
mod records;

use std::path::Path;

use threadline_protocol::{codec, thread::ThreadState, Event, EventId, ScopeId, ThreadId};

pub use keys::{order_key, scope_key};
pub use records::{AgentRecord, Delivery, TokenRecord, TokenRole};

/// The on-disk schema this build reads and writes. sled's own format may change before its
/// 1.0 and need a migration; so may ours: a store with another version is refused.
pub const SCHEMA_VERSION: u32 = 1;

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled failed (I/O, corruption, or the store is open in another process).
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
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
}

/// The trees, by index into [`Store::tree`] (and the order of a transaction's views).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum TreeName {
    /// Every log's events in linear order.
    Log = 0,
    /// Event id → log key.
    Events,
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
}

const TREE_NAMES: [&str; 9] = [
    "log",
    "events",
    "threads",
    "contact_threads",
    "open_threads",
    "external_ids",
    "outbound",
    "tokens",
    "agents",
];

/// Writes to commit together. The last write to a key wins; [`WriteSet::get`] reads through
/// the staged writes to the store, so a writer sees its own uncommitted changes.
#[derive(Debug, Default)]
pub struct WriteSet {
    ops: std::collections::HashMap<(TreeName, Vec<u8>), Option<Vec<u8>>>,
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
            None => Ok(store.tree(tree).get(key)?.map(|value| value.to_vec())),
        }
    }

    /// Stages a verified event in its log, with its id index.
    pub fn put_event(
        &mut self,
        event: &threadline_protocol::VerifiedEvent,
    ) -> Result<(), StoreError> {
        let key = order_key(&scope_key(&event.scope_id()), event);
        self.insert(TreeName::Log, key.clone(), codec::encode(event.event())?);
        self.insert(TreeName::Events, event.id().as_bytes().to_vec(), key);
        Ok(())
    }

    /// Stages the erasure of an event's content (its header stays). Unknown ids are ignored.
    pub fn erase_content(&mut self, store: &Store, id: &EventId) -> Result<(), StoreError> {
        let Some(key) = self.get(store, TreeName::Events, id.as_bytes())? else {
            return Ok(());
        };
        let Some(bytes) = self.get(store, TreeName::Log, &key)? else {
            return Ok(());
        };
        let event: Event = decode("log", &bytes)?;
        if event.content.is_some() {
            let erased = Event::new(event.signed, None);
            self.insert(TreeName::Log, key, codec::encode(&erased)?);
        }
        Ok(())
    }

    /// Stages a thread's derived state.
    pub fn put_thread_state(
        &mut self,
        thread: ThreadId,
        state: &ThreadState,
    ) -> Result<(), StoreError> {
        self.insert(
            TreeName::Threads,
            thread.as_bytes().to_vec(),
            codec::encode(state)?,
        );
        Ok(())
    }
}

/// The node's sled database.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    trees: Vec<sled::Tree>,
}

impl Store {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(path).open()?;
        let meta = db.open_tree("meta")?;
        match meta.get(b"schema")? {
            None => {
                meta.insert(b"schema", &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        tree: "meta",
                        detail: "schema version is not 4 bytes".to_owned(),
                    })?;
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema { found });
                }
            }
        }
        let trees = TREE_NAMES
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Store { db, trees })
    }

    /// A tree.
    pub fn tree(&self, name: TreeName) -> &sled::Tree {
        &self.trees[name as usize]
    }

    /// Commits a write set atomically across trees (visible at once, durable after
    /// [`Store::flush`]).
    pub fn commit(&self, writes: WriteSet) -> Result<(), StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
        if writes.is_empty() {
            return Ok(());
        }
        let trees: Vec<&sled::Tree> = self.trees.iter().collect();
        trees
            .as_slice()
            .transaction(|views| {
                for ((tree, key), value) in &writes.ops {
                    let view = &views[*tree as usize];
                    match value {
                        Some(value) => {
                            view.insert(key.as_slice(), value.as_slice())?;
                        }
                        None => {
                            view.remove(key.as_slice())?;
                        }
                    }
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|err| match err {
                TransactionError::Storage(err) => StoreError::Sled(err),
                TransactionError::Abort(()) => StoreError::Corrupt {
                    tree: "transaction",
                    detail: "aborted".to_owned(),
                },
            })
    }

    /// Makes everything committed so far durable (one fsync for many writers: group commit).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// A fresh monotonic id (delivery sequence numbers).
    pub fn generate_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Whether an event is stored.
    pub fn contains_event(&self, id: &EventId) -> Result<bool, StoreError> {
        Ok(self.tree(TreeName::Events).contains_key(id.as_bytes())?)
    }

    /// A stored event with its content (if not erased).
    pub fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        let Some(key) = self.tree(TreeName::Events).get(id.as_bytes())? else {
            return Ok(None);
        };
        let bytes = self
            .tree(TreeName::Log)
            .get(&key)?
            .ok_or(StoreError::Corrupt {
                tree: "events",
                detail: format!("event {id} indexed but not in the log"),
            })?;
        Ok(Some(decode("log", &bytes)?))
    }

    /// The events of a log, in linear order.
    pub fn log_events(
        &self,
        scope: &ScopeId,
    ) -> impl Iterator<Item = Result<Event, StoreError>> + '_ {
        self.tree(TreeName::Log)
            .scan_prefix(scope_key(scope))
            .map(|entry| {
                let (_, value) = entry?;
                decode("log", &value)
            })
    }

    /// A thread's derived state.
    pub fn thread_state(&self, thread: &ThreadId) -> Result<Option<ThreadState>, StoreError> {
        self.tree(TreeName::Threads)
            .get(thread.as_bytes())?
            .map(|bytes| decode("threads", &bytes))
            .transpose()
    }

    /// Every thread and its state, by thread id.
    pub fn thread_states(
        &self,
    ) -> impl Iterator<Item = Result<(ThreadId, ThreadState), StoreError>> + '_ {
        self.tree(TreeName::Threads).iter().map(|entry| {
            let (key, value) = entry?;
            let id = <[u8; 32]>::try_from(key.as_ref()).map_err(|_| StoreError::Corrupt {
                tree: "threads",
                detail: "key is not a thread id".to_owned(),
            })?;
            Ok((ThreadId::from_bytes(id), decode("threads", &value)?))
        })
    }

    /// Number of events stored.
    pub fn n_events(&self) -> usize {
        self.tree(TreeName::Events).len()
    }

    /// Size on disk, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
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
