//! The node's durable store: sled trees with big-endian binary keys.
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `meta` | `b"schema"` | schema version, u32 BE |
//! | `headers` | event id | `encode(SignedHeader)` |
//! | `content` | event id | `encode(Content)` (deleted on erasure) |
//! | `order` | scope ‖ depth BE ‖ author time BE ‖ event id | empty: each log's linear order |
//! | `heads` | scope ‖ event id | empty |
//! | `threads` | thread id | `encode(ThreadState)`: derived state, kept in step with events |
//! | `contact_threads` | contact id ‖ thread id | empty |
//! | `open_threads` | contact id | thread id: where the contact's next inbound message goes |
//! | `external_ids` | channel ‖ external id | event id: makes resubmission idempotent |
//! | `outbound` | channel ‖ sequence BE | `encode(Delivery)`: each channel's delivery queue |
//! | `tokens` | SHA-256 of the token | `encode(TokenRecord)` |
//! | `agents` | agent id | `encode(AgentRecord)` |
//!
//! A scope is 33 bytes: `0x00 ‖ org` for a directory, `0x01 ‖ thread id` for a thread.
//!
//! Writes go through [`WriteSet`]s, each committed as one sled transaction across trees, so an
//! event and its indexes are stored together or not at all. Nothing is durable until
//! [`Store::flush`]; callers acknowledge only after it (see `ingest`).

mod keys;
mod records;

use std::path::Path;

use threadline_protocol::{
    codec, event::SignedHeader, thread::ThreadState, Content, Event, EventId, ScopeId, ThreadId,
};

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

/// The trees, by index into [`Store::trees`] (the order of a transaction's views).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum TreeName {
    /// Signed headers.
    Headers = 0,
    /// Erasable content.
    Content,
    /// Linear order of each log.
    Order,
    /// Heads of each log.
    Heads,
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

const TREE_NAMES: [&str; 11] = [
    "headers",
    "content",
    "order",
    "heads",
    "threads",
    "contact_threads",
    "open_threads",
    "external_ids",
    "outbound",
    "tokens",
    "agents",
];

/// Writes to commit together.
#[derive(Debug, Default)]
pub struct WriteSet {
    ops: Vec<(TreeName, Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteSet {
    /// Sets `key` to `value` in `tree`.
    pub fn insert(&mut self, tree: TreeName, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((tree, key.into(), Some(value.into())));
    }

    /// Removes `key` from `tree`.
    pub fn remove(&mut self, tree: TreeName, key: impl Into<Vec<u8>>) {
        self.ops.push((tree, key.into(), None));
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Stages a verified event: header, content, order and heads of its log.
    pub fn put_event(
        &mut self,
        event: &threadline_protocol::VerifiedEvent,
    ) -> Result<(), StoreError> {
        let id = event.id();
        let scope = scope_key(&event.scope_id());
        self.insert(
            TreeName::Headers,
            id.as_bytes().to_vec(),
            codec::encode(&event.event().signed)?,
        );
        if let Some(content) = event.content() {
            self.insert(
                TreeName::Content,
                id.as_bytes().to_vec(),
                codec::encode(content)?,
            );
        }
        self.insert(TreeName::Order, order_key(&scope, event), Vec::new());
        for parent in &event.header().parents {
            self.remove(
                TreeName::Heads,
                [scope.as_slice(), parent.as_bytes()].concat(),
            );
        }
        self.insert(
            TreeName::Heads,
            [scope.as_slice(), id.as_bytes()].concat(),
            Vec::new(),
        );
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
                for (tree, key, value) in &writes.ops {
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
        Ok(self.tree(TreeName::Headers).contains_key(id.as_bytes())?)
    }

    /// A stored event with its content (if not erased).
    pub fn event(&self, id: &EventId) -> Result<Option<Event>, StoreError> {
        let Some(header) = self.tree(TreeName::Headers).get(id.as_bytes())? else {
            return Ok(None);
        };
        let signed: SignedHeader = decode("headers", &header)?;
        let content: Option<Content> = match self.tree(TreeName::Content).get(id.as_bytes())? {
            Some(bytes) => Some(decode("content", &bytes)?),
            None => None,
        };
        Ok(Some(Event::new(signed, content)))
    }

    /// The events of a log, in linear order.
    pub fn log_events(
        &self,
        scope: &ScopeId,
    ) -> impl Iterator<Item = Result<Event, StoreError>> + '_ {
        self.tree(TreeName::Order)
            .scan_prefix(scope_key(scope))
            .map(move |entry| {
                let (key, _) = entry?;
                let id = keys::event_id_of_order_key(&key).ok_or(StoreError::Corrupt {
                    tree: "order",
                    detail: "short key".to_owned(),
                })?;
                self.event(&id)?.ok_or(StoreError::Corrupt {
                    tree: "order",
                    detail: format!("event {id} in order but not stored"),
                })
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
        self.tree(TreeName::Headers).len()
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
