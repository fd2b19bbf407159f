//! The node's durable store: sled trees with big-endian binary keys.
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `meta` | `b"schema"` | schema version, u32 BE |
//! | `log` | scope ‖ event id | `encode(Event)`: every log's events (header and content); erasure rewrites the value without content |
//! | `threads` | thread id | `encode((ThreadState, n_events, heads))`: derived state, the log's size and its DAG heads, kept in step with events (one write per thread per batch) |
//! | `heads` | directory scope | `encode((n_events, heads))`: the directory's size and heads |
//!
//! A log's size and heads are what replication summaries are made of, without loading logs.
//! | `contact_threads` | contact id ‖ thread id | empty |
//! | `open_threads` | contact id | thread id: where the contact's next inbound message goes |
//! | `external_ids` | channel ‖ SHA-256(external id) | event id: makes resubmission idempotent |
//! | `outbound` | channel ‖ sequence BE | `encode(Delivery)`: each channel's delivery queue |
//! | `tokens` | SHA-256 of the token | `encode(TokenRecord)` |
//! | `agents` | agent id | `encode(AgentRecord)` |
//! | `replicated_routes` | thread id ‖ event id | empty: a route set by an event from another node (that node delivers on it) |
//! | `partner_certs` | SHA-256 of the certificate's encoding | `encode(Certificate)`: other orgs' certificates, for threads shared with them |
//! | `journal` | chunk number BE | the last commit's writes, `encode(Vec<(tree, key, value or removal)>)` |
//!
//! A scope is 33 bytes: `0x00 ‖ org` for a directory, `0x01 ‖ thread id` for a thread.
//!
//! There is no separate event-id index: every lookup of an event knows its log (a thread's
//! events are named inside the thread; a duplicate is found in the log's in-memory DAG), so a
//! log entry is keyed by scope and id, and a log is read back with one prefix scan and put in
//! linear order by sorting on `(depth, author time, id)` (the DAG does the same on restore).
//! One new key per event instead of two: sled spends ~15–20 µs on each new key, which is
//! most of what ingest costs (docs/BENCHMARKS.md).
//!
//! Writes are staged in a [`WriteSet`] (which also answers reads of what it staged) and
//! committed atomically across trees through a redo journal ([`Store::commit`]): the ingest
//! writer commits one per group of requests, so a group is stored whole or not at all. Nothing is durable until
//! [`Store::flush`]; callers acknowledge only after it (see `ingest`).

mod keys;
mod records;

use std::path::Path;

use threadline_protocol::{
    codec, dag::OrderKey, thread::ThreadState, Event, EventId, ScopeId, ThreadId,
};

pub use keys::{channel_key, log_key, scope_key};
pub use records::{AgentRecord, Delivery, TokenRecord, TokenRole};

/// A `threads` record: the state, the log's size and its heads.
type ThreadRecord = (ThreadState, u64, Vec<EventId>);

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
pub const SCHEMA_VERSION: u32 = 3;

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
    /// Every log's events, by scope and id.
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
}

const TREE_NAMES: [&str; 11] = [
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
        let key = log_key(&event.scope_id(), &event.id());
        self.insert(TreeName::Log, key, codec::encode(event.event())?);
        Ok(())
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
        let event: Event = decode("log", &bytes)?;
        if event.content.is_some() {
            let erased = Event::new(event.signed, None);
            self.insert(TreeName::Log, key, codec::encode(&erased)?);
        }
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

    /// Stages a thread's derived state with its log's size and heads (one write).
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
            codec::encode(&(state, n_events, heads))?,
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
        let journal = db.open_tree("journal")?;
        let store = Store { db, trees, journal };
        store.redo_journal()?;
        Ok(store)
    }

    /// A tree.
    pub fn tree(&self, name: TreeName) -> &sled::Tree {
        &self.trees[name as usize]
    }

    /// Commits a write set atomically across trees (visible at once to the writer, durable
    /// after [`Store::flush`]; readers on other threads may see one tree's part before
    /// another's).
    ///
    /// A redo journal gives the atomicity: the whole write set is first written to the
    /// `journal` tree (one atomic batch), then applied tree by tree (one atomic batch each).
    /// sled recovers a prefix of its log after a crash, so if any tree's part survived, the
    /// journal did, and [`Store::open`] applies it again (the writes are idempotent). This
    /// costs about 1 µs per message, where a sled transaction across trees (which reads every
    /// key it writes) cost 15 µs (docs/BENCHMARKS.md).
    pub fn commit(&self, writes: WriteSet) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.write_journal(&writes)?;
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
        Ok(())
    }

    /// Replaces the journal with `writes`, in one atomic batch.
    fn write_journal(&self, writes: &WriteSet) -> Result<(), StoreError> {
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
        self.journal.apply_batch(journal)?;
        Ok(())
    }

    /// Applies the journal of the last commit again (after a crash, it may be partly applied).
    fn redo_journal(&self) -> Result<(), StoreError> {
        let mut batches: Vec<sled::Batch> =
            self.trees.iter().map(|_| sled::Batch::default()).collect();
        let mut any = false;
        for entry in self.journal.iter() {
            let (_, bytes) = entry?;
            let ops: Vec<JournalOp> =
                codec::decode(&bytes, bytes.len()).map_err(|err| StoreError::Corrupt {
                    tree: "journal",
                    detail: err.to_string(),
                })?;
            for (tree, key, value) in ops {
                let batch =
                    batches
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
            for (tree, batch) in self.trees.iter().zip(batches) {
                tree.apply_batch(batch)?;
            }
            self.flush()?;
        }
        Ok(())
    }

    /// Makes everything committed so far durable (one fsync for many writers: group commit).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Forgets the journal of a commit that is durable (the removal itself becomes durable
    /// with the next flush; until then, a restart applies the journal again, harmlessly).
    pub fn clear_journal(&self) -> Result<(), StoreError> {
        self.journal.clear()?;
        Ok(())
    }

    /// A fresh monotonic id (delivery sequence numbers).
    pub fn generate_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Whether an event of `scope` is stored.
    pub fn contains_event(&self, scope: &ScopeId, id: &EventId) -> Result<bool, StoreError> {
        Ok(self.tree(TreeName::Log).contains_key(log_key(scope, id))?)
    }

    /// A stored event of `scope`, with its content (if not erased).
    pub fn event(&self, scope: &ScopeId, id: &EventId) -> Result<Option<Event>, StoreError> {
        self.tree(TreeName::Log)
            .get(log_key(scope, id))?
            .map(|bytes| decode("log", &bytes))
            .transpose()
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
        for entry in self.tree(TreeName::Log).scan_prefix(scope_key(scope)) {
            let (key, value) = entry?;
            let id = key
                .get(33..)
                .and_then(|id| <[u8; 32]>::try_from(id).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    tree: "log",
                    detail: "key is not scope ‖ event id".to_owned(),
                })?;
            let event: Event = decode("log", &value)?;
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
        self.tree(TreeName::Outbound)
            .scan_prefix([channel_key(channel)])
            .take(limit)
            .map(|entry| {
                let (_, value) = entry?;
                decode("outbound", &value)
            })
            .collect()
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

    /// A thread's derived state.
    pub fn thread_state(&self, thread: &ThreadId) -> Result<Option<ThreadState>, StoreError> {
        Ok(self.thread_record(thread)?.map(|(state, _, _)| state))
    }

    fn thread_record(&self, thread: &ThreadId) -> Result<Option<ThreadRecord>, StoreError> {
        self.tree(TreeName::Threads)
            .get(thread.as_bytes())?
            .map(|bytes| decode("threads", &bytes))
            .transpose()
    }

    /// Every thread and its state, by thread id.
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
            Ok((ThreadId::from_bytes(id), decode("threads", &value)?))
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

    /// Number of events stored (sled counts them one by one: for tests and benchmarks).
    pub fn n_events(&self) -> usize {
        self.tree(TreeName::Log).len()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A crash after the journal reached the disk but before every tree got its part: the
    /// next open applies the journal, so the commit is whole.
    #[test]
    fn reopening_applies_a_journal_whose_commit_did_not_reach_every_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writes = WriteSet::default();
        writes.insert(TreeName::Log, b"log key".to_vec(), b"event".to_vec());
        writes.insert(TreeName::ExternalIds, b"ext key".to_vec(), b"id".to_vec());
        writes.insert(
            TreeName::Outbound,
            b"big".to_vec(),
            vec![7u8; JOURNAL_CHUNK_BYTES],
        );
        {
            let store = Store::open(dir.path()).expect("opens");
            store
                .tree(TreeName::Outbound)
                .insert(b"old", b"removed by the commit")
                .expect("insert");
            writes.remove(TreeName::Outbound, b"old".to_vec());
            store.write_journal(&writes).expect("journal");
            // Only one tree got its part before the "crash".
            store
                .tree(TreeName::Log)
                .insert(b"log key", b"event")
                .expect("insert");
            store.flush().expect("flush");
        }
        let store = Store::open(dir.path()).expect("reopens");
        let get = |tree, key: &[u8]| {
            store
                .tree(tree)
                .get(key)
                .expect("reads")
                .map(|v| v.to_vec())
        };
        assert_eq!(get(TreeName::Log, b"log key"), Some(b"event".to_vec()));
        assert_eq!(get(TreeName::ExternalIds, b"ext key"), Some(b"id".to_vec()));
        assert_eq!(
            get(TreeName::Outbound, b"big").map(|v| v.len()),
            Some(JOURNAL_CHUNK_BYTES)
        );
        assert_eq!(get(TreeName::Outbound, b"old"), None);
        // A cleared journal is not applied again.
        store.clear_journal().expect("clears");
        store
            .tree(TreeName::ExternalIds)
            .remove(b"ext key")
            .expect("remove");
        store.flush().expect("flush");
        drop(store);
        let store = Store::open(dir.path()).expect("reopens");
        assert_eq!(
            store
                .tree(TreeName::ExternalIds)
                .get(b"ext key")
                .expect("reads"),
            None
        );
    }
}
