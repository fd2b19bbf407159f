//! The writer thread: the only code that mutates the store and the in-memory logs.

use std::sync::{Arc, PoisonError, RwLock};

use threadline_protocol::{
    channel::Handle,
    directory::DirectoryState,
    event::{self, Content, Direction, DirectoryKind, Draft, EventKind, Scope, Status, ThreadKind},
    id::BlobHash,
    limits::MAX_ERASE_TARGETS,
    ContactId, Directory, Event, EventId, Inserted, OrgId, ScopeId, Thread, ThreadId, Timestamp,
    VerifiedEvent,
};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, error, warn};

use super::thread_cache::ThreadCache;
use super::{
    Action, DirectoryAction, Ingest, IngestError, LiveEvent, Request, Resolved, Source, Submitted,
    ThreadRef, LIVE_BUFFER, MAX_BATCH, QUEUE_DEPTH,
};
use crate::contact_search::ContactSearch;
use crate::identity::Identity;
use crate::limits::Cap;
use crate::store::data_keys::KeyOwner;
use crate::store::{
    channel_key, content_owner, log_key, Delivery, Store, StoreError, StoredDelivery, TreeName,
    WriteSet,
};
use crate::thread_index::ThreadIndex;

/// Starts the writer thread over `store` and returns the handle to it. Fails if the store has
/// no directory for the node's org (run `threadline init` first) or cannot be read.
pub fn start(
    store: Store,
    identity: Identity,
    now: fn() -> Timestamp,
) -> Result<(Ingest, Running), IngestError> {
    start_with_cache(
        store,
        identity,
        now,
        crate::config::DEFAULT_THREAD_CACHE_EVENTS,
    )
}

/// [`start`], with the writer keeping up to `cache_events` events of threads in memory
/// (headers only, about 0.5 KiB each: docs/BENCHMARKS.md). The least recently used threads go
/// first; a thread not in the cache is rebuilt from the store when it is next written to
/// (~2–3 µs per event: read back as stored, not checked again).
pub fn start_with_cache(
    store: Store,
    identity: Identity,
    now: fn() -> Timestamp,
    cache_events: usize,
) -> Result<(Ingest, Running), IngestError> {
    let org = identity.org;
    let stored: Vec<VerifiedEvent> = store
        .log_events(&ScopeId::Directory(org))?
        .into_iter()
        .map(|event| Ok::<_, IngestError>(event.verify_from_store()?))
        .collect::<Result<_, _>>()?;
    let restored = Directory::restore(stored)?;
    // Admin commands on a stopped node add directory events (certificates) directly: bring
    // the directory's stored heads up to date with what was just restored.
    let mut heads = WriteSet::default();
    heads.put_heads(
        &ScopeId::Directory(org),
        restored.dag().len() as u64,
        restored.dag().heads(),
    )?;
    store.commit(heads)?;
    let contact_search = Arc::new(RwLock::new(ContactSearch::of(restored.state())));
    let directory = Arc::new(RwLock::new(restored));
    let (requests, receiver) = mpsc::channel(QUEUE_DEPTH);
    let (verified_sender, verified_receiver) = mpsc::channel(QUEUE_DEPTH);
    let writer_requests = verified_sender.clone();
    std::thread::Builder::new()
        .name("threadline-verifier".to_owned())
        .spawn(move || verify_stage(receiver, verified_sender))
        .map_err(|err| {
            IngestError::Store(StoreError::Corrupt {
                tree: "verifier",
                detail: format!("cannot start the verifier thread: {err}"),
            })
        })?;
    let (closing_sender, closing) = tokio::sync::watch::channel(false);
    let (failed_sender, failed) = tokio::sync::watch::channel(None);
    let (live, _) = broadcast::channel(LIVE_BUFFER);
    let thread_index = build_thread_index(&store)?;
    let writer = Writer {
        thread_index: Arc::clone(&thread_index),
        contact_search: Arc::clone(&contact_search),
        store: store.clone(),
        pending: WriteSet::default(),
        identity: identity.clone(),
        org,
        directory: Arc::clone(&directory),
        threads: ThreadCache::bounded(cache_events),
        partners: {
            let mut partners = threadline_protocol::Certificates::new();
            for certificate in store.partner_certificates()? {
                // Verified when stored; checked again, cheaply, as they load.
                let _ = partners.insert(certificate);
            }
            partners
        },
        live: live.clone(),
        now,
    };
    let handle = std::thread::Builder::new()
        .name("threadline-writer".to_owned())
        .spawn(move || writer.run(verified_receiver, failed_sender))
        .map_err(|err| {
            IngestError::Store(StoreError::Corrupt {
                tree: "writer",
                detail: format!("cannot start the writer thread: {err}"),
            })
        })?;
    Ok((
        Ingest {
            requests,
            writer: writer_requests,
            closing,
            live,
            directory,
            store,
            identity,
            presence: crate::presence::Presence::default(),
            replication: crate::replication_status::Status::default(),
            human_agent: Arc::default(),
            builtin_bridges: Arc::default(),
            thread_index,
            contact_search,
            message_search: Arc::new(crate::message_search::MessageSearch::new()?),
            agent_changes: Arc::default(),
            sla: Arc::default(),
            email_verification: Arc::default(),
        },
        Running {
            writer: handle,
            closing: Arc::new(closing_sender),
            failed,
        },
    ))
}

/// The thread list's index over the stored threads: built now for a store of up to
/// [`crate::thread_index::BUILD_AT_ONCE`] threads, otherwise on a thread of its own while the
/// node serves (lists read the records until it is ready).
fn build_thread_index(store: &Store) -> Result<Arc<RwLock<ThreadIndex>>, IngestError> {
    let index = Arc::new(RwLock::new(ThreadIndex::default()));
    let fill = |store: &Store, index: &RwLock<ThreadIndex>| -> Result<(), StoreError> {
        for entry in store.thread_states() {
            let (thread, state) = entry?;
            let facts = store.thread_facts(&thread)?;
            index
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert_stored(thread, &state, facts.as_ref());
        }
        index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .set_ready();
        Ok(())
    };
    let small = store
        .tree(TreeName::Threads)
        .iter()
        .keys()
        .nth(crate::thread_index::BUILD_AT_ONCE)
        .is_none();
    if small {
        fill(store, &index)?;
        return Ok(index);
    }
    let (store, building) = (store.clone(), Arc::clone(&index));
    std::thread::Builder::new()
        .name("threadline-thread-index".to_owned())
        .spawn(move || {
            let started = std::time::Instant::now();
            match fill(&store, &building) {
                Ok(()) => tracing::info!(took = ?started.elapsed(), "thread list index built"),
                Err(err) => error!(cause = %err, "the thread list index could not be built; lists read every thread"),
            }
        })
        .map_err(|err| {
            IngestError::Store(StoreError::Corrupt {
                tree: "thread index",
                detail: format!("cannot start the index thread: {err}"),
            })
        })?;
    Ok(index)
}

/// The running writer: tell it the node is closing, then wait for it once every [`Ingest`]
/// handle is dropped.
#[derive(Debug)]
pub struct Running {
    writer: std::thread::JoinHandle<()>,
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    failed: tokio::sync::watch::Receiver<Option<String>>,
}

/// Tells long-lived responses (live streams) that the node is closing.
#[derive(Debug, Clone)]
pub struct Closing(Arc<tokio::sync::watch::Sender<bool>>);

impl Closing {
    /// Signals it.
    pub fn close(&self) {
        self.0.send_replace(true);
    }
}

impl Running {
    /// A handle to signal closing.
    pub fn closing(&self) -> Closing {
        Closing(Arc::clone(&self.closing))
    }

    /// Resolves if the writer stops because the store failed to commit, with what the store
    /// said (the node must stop then: see [`IngestError::NotDurable`]). Cancel-safe.
    pub fn store_failure(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut failed = self.failed.clone();
        async move {
            let cause = failed
                .wait_for(Option::is_some)
                .await
                .map(|cause| cause.clone().unwrap_or_default());
            match cause {
                Ok(cause) => cause,
                // The writer is gone without a failure: the node is stopping anyway.
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Waits for the writer to finish the requests it has (blocks the calling thread); the
    /// store's failure if that is why it stopped.
    pub fn join(self) -> Option<String> {
        self.closing.send_replace(true);
        if self.writer.join().is_err() {
            error!("the writer thread panicked");
        }
        let failed = self.failed.borrow().clone();
        failed
    }
}

/// Waits for a request, then takes whatever else is queued, up to [`MAX_BATCH`]. `None` once
/// every sender is gone.
fn next_batch(requests: &mut mpsc::Receiver<Request>) -> Option<Vec<Request>> {
    let first = requests.blocking_recv()?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match requests.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// The verifier stage: batch-verifies the events of submissions and passes them on to the
/// writer, in order (other requests go to the writer's queue directly).
fn verify_stage(mut requests: mpsc::Receiver<Request>, writer: mpsc::Sender<Request>) {
    while let Some(mut batch) = next_batch(&mut requests) {
        let mut to_verify = Vec::new();
        let mut sizes = Vec::new();
        for request in &mut batch {
            if let Request::Submit(events, _, _) = request {
                sizes.push(events.len());
                to_verify.append(events);
            }
        }
        let mut verified = event::verify_batch(to_verify).into_iter();
        let mut sizes = sizes.into_iter();
        for request in batch {
            let request = match request {
                Request::Submit(_, source, reply) => {
                    let size = sizes.next().unwrap_or(0);
                    Request::Verified(verified.by_ref().take(size).collect(), source, reply)
                }
                other => other,
            };
            if writer.blocking_send(request).is_err() {
                return;
            }
        }
    }
}

struct Writer {
    store: Store,
    /// Everything the current batch writes, committed in one transaction at its end.
    pending: WriteSet,
    identity: Identity,
    org: OrgId,
    directory: Arc<RwLock<Directory>>,
    threads: ThreadCache,
    /// The thread list's index, kept up to date with every thread event applied.
    thread_index: Arc<RwLock<ThreadIndex>>,
    /// Contact search, kept up to date with every directory event applied.
    contact_search: Arc<RwLock<ContactSearch>>,
    /// Partner orgs' certificates (see [`Ingest::add_partner_certificates`]).
    partners: threadline_protocol::Certificates,
    live: broadcast::Sender<LiveEvent>,
    now: fn() -> Timestamp,
}

enum Answer {
    Submit(
        tokio::sync::oneshot::Sender<Vec<Result<Submitted, IngestError>>>,
        Vec<Result<Submitted, IngestError>>,
    ),
    Resolve(super::Reply<Resolved>, Result<Resolved, IngestError>),
    Act(
        super::Reply<Vec<EventId>>,
        Result<Vec<EventId>, IngestError>,
    ),
    Directory(
        super::Reply<Vec<EventId>>,
        Result<Vec<EventId>, IngestError>,
    ),
    Certificates(super::Reply<usize>, Result<usize, IngestError>),
    Records(super::Reply<usize>, Result<usize, IngestError>),
    Wake(
        super::Reply<Option<EventId>>,
        Result<Option<EventId>, IngestError>,
    ),
    Handoff(
        super::Reply<crate::store::HandoffCode>,
        Result<crate::store::HandoffCode, IngestError>,
    ),
    Continue(
        super::Reply<Option<ThreadId>>,
        Result<Option<ThreadId>, IngestError>,
    ),
}

impl Answer {
    /// The first store error among the answer's results, if any.
    fn store_error(&self) -> Option<String> {
        fn store_error<T>(result: &Result<T, IngestError>) -> Option<String> {
            match result {
                Err(err @ IngestError::Store(_)) => Some(err.to_string()),
                _ => None,
            }
        }
        match self {
            Answer::Submit(_, results) => results.iter().find_map(store_error),
            Answer::Resolve(_, result) => store_error(result),
            Answer::Act(_, result) => store_error(result),
            Answer::Directory(_, result) => store_error(result),
            Answer::Certificates(_, result) | Answer::Records(_, result) => store_error(result),
            Answer::Wake(_, result) => store_error(result),
            Answer::Handoff(_, result) => store_error(result),
            Answer::Continue(_, result) => store_error(result),
        }
    }
}

impl Writer {
    /// Takes requests until every sender is gone, or until a commit fails: then sled's state
    /// is not known (a failed write or fsync may have been partly done, and sled refuses
    /// further writes), so the writer stops and says why in `failed`, the node stops, and
    /// a restart recovers from what is on disk (its journal redoes a commit that got there).
    fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        failed: tokio::sync::watch::Sender<Option<String>>,
    ) {
        while let Some(batch) = next_batch(&mut requests) {
            if let Err(cause) = self.process(batch) {
                error!(%cause, "the store failed to commit; the writer stops and the node with it");
                failed.send_replace(Some(cause));
                return;
            }
        }
        debug!("ingest queue closed; writer stops");
    }

    /// Applies a batch of requests, commits it and answers them. `Err` when the commit or its
    /// flush failed (every request was answered with [`IngestError::NotDurable`]).
    fn process(&mut self, batch: Vec<Request>) -> Result<(), String> {
        let mut live = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        let mut sweeps = Vec::new();
        let mut backups = Vec::new();
        for request in batch {
            match request {
                Request::SweepBlobs(grace, reply) => sweeps.push((grace, reply)),
                Request::Backup(to, reply) => backups.push((to, reply)),
                Request::Wake(thread, reply) => {
                    let result = self.wake(thread, &mut live);
                    answers.push(Answer::Wake(reply, result));
                }
                Request::Records(records, reply) => {
                    let written = records.len();
                    for (tree, key, value) in records {
                        self.pending.insert(tree, key, value);
                    }
                    answers.push(Answer::Records(reply, Ok(written)));
                }
                Request::Submit(events, source, reply) => {
                    // Not through the verifier stage: verify here.
                    let verified = event::verify_batch(events);
                    let results = self.apply_verified(verified, source, &mut live);
                    answers.push(Answer::Submit(reply, results));
                }
                Request::Verified(verified, source, reply) => {
                    let results = self.apply_verified(verified, source, &mut live);
                    answers.push(Answer::Submit(reply, results));
                }
                Request::Resolve(handle, hint, customer, reply) => {
                    let result = self.resolve(handle, hint, customer, &mut live);
                    answers.push(Answer::Resolve(reply, result));
                }
                Request::Act(agent, thread, actions, reply) => {
                    // Caps first, for the request as a whole: refused, it stores nothing.
                    let result = self.labels_fit(thread, &actions).and_then(|()| {
                        actions
                            .into_iter()
                            .map(|action| self.act(agent, thread, action, &mut live))
                            .collect()
                    });
                    answers.push(Answer::Act(reply, result));
                }
                Request::Directory(action, reply) => {
                    let result = self.change_directory(action, &mut live);
                    answers.push(Answer::Directory(reply, result));
                }
                Request::EraseContents(thread, events, reply) => {
                    let result = self.erase_contents(thread, events, &mut live);
                    answers.push(Answer::Directory(reply, result));
                }
                Request::Certificates(certificates, reply) => {
                    let result = self.add_partner_certificates(certificates);
                    answers.push(Answer::Certificates(reply, result));
                }
                Request::Handoff(handle, to, reply) => {
                    let result = self.issue_handoff(&handle, to);
                    answers.push(Answer::Handoff(reply, result));
                }
                Request::Continue(handle, code, reply) => {
                    let result = self.continue_with(handle, &code, &mut live);
                    answers.push(Answer::Continue(reply, result));
                }
            }
        }

        // A store error in the middle of a request may leave memory ahead of what was staged:
        // then nothing of the batch is committed (its callers get errors and may retry).
        let mut store_failed = answers.iter().find_map(Answer::store_error);
        if store_failed.is_none() {
            // What erasures took is made unreadable everywhere it lies: its owners re-keyed.
            if let Err(err) = self.rekey_erased() {
                store_failed = Some(err.to_string());
            }
        }
        // Group commit: one atomic commit and one flush for the whole batch, then answers.
        let writes = std::mem::take(&mut self.pending);
        let released = writes.released_blobs().to_vec();
        let mut commit_failed = None;
        let flushed = match store_failed {
            Some(err) => Err(format!(
                "the batch was abandoned after a store error: {err}"
            )),
            None => self
                .store
                .commit(writes)
                .and_then(|()| self.store.flush())
                .map_err(|err| {
                    let cause = err.to_string();
                    commit_failed = Some(cause.clone());
                    cause
                }),
        };
        match &flushed {
            Ok(()) => {
                if let Err(err) = self.store.clear_journal() {
                    // The next commit replaces the journal anyway.
                    warn!(cause = %err, "cannot clear the store's journal");
                }
                // Erased attachments: their files go once the erasure is durable (what a crash
                // leaves behind here, the sweep of unused blobs takes).
                if let Err(err) = self.store.drop_unreferenced(&released) {
                    warn!(cause = %err, "cannot delete erased attachments");
                }
            }
            Err(err) => {
                error!(cause = %err, "commit or flush failed; answering the batch with errors");
                self.reset_memory();
            }
        }
        self.threads.trim();
        let not_durable = |err: &String| IngestError::NotDurable { cause: err.clone() };
        for answer in answers {
            // A caller that went away does not mind.
            let _ = match (answer, &flushed) {
                (Answer::Submit(reply, results), Ok(())) => reply.send(results).map_err(drop),
                (Answer::Submit(reply, results), Err(err)) => reply
                    .send(results.iter().map(|_| Err(not_durable(err))).collect())
                    .map_err(drop),
                (Answer::Resolve(reply, result), flushed) => reply
                    .send(durable(result, flushed, not_durable))
                    .map_err(drop),
                (Answer::Act(reply, result), flushed) => reply
                    .send(durable(result, flushed, not_durable))
                    .map_err(drop),
                (Answer::Directory(reply, result), flushed) => reply
                    .send(durable(result, flushed, not_durable))
                    .map_err(drop),
                (Answer::Certificates(reply, result) | Answer::Records(reply, result), flushed) => {
                    reply
                        .send(durable(result, flushed, not_durable))
                        .map_err(drop)
                }
                (Answer::Wake(reply, result), flushed) => reply
                    .send(durable(result, flushed, not_durable))
                    .map_err(drop),
                (Answer::Handoff(reply, result), flushed) => reply
                    .send(durable(result, flushed, not_durable))
                    .map_err(drop),
                (Answer::Continue(reply, result), flushed) => reply
                    .send(durable(result, flushed, not_durable))
                    .map_err(drop),
            };
        }
        if flushed.is_ok() {
            for event in live {
                // No subscribers is fine.
                let _ = self.live.send(event);
            }
        }
        // After the commit, and only after a good one (a failed one is applied again at the
        // next open): what this batch made refer to a file is in the store now.
        for (grace, reply) in sweeps {
            let swept = match &flushed {
                Ok(()) => self
                    .store
                    .sweep_unused_blobs(grace)
                    .map_err(IngestError::from),
                Err(err) => Err(not_durable(err)),
            };
            let _ = reply.send(swept);
        }
        // Between this batch, durable now, and the next: nothing commits while it copies.
        for (to, reply) in backups {
            let copied = match &flushed {
                Ok(()) => self.store.backup(&to).map_err(IngestError::from),
                Err(err) => Err(not_durable(err)),
            };
            let _ = reply.send(copied);
        }
        commit_failed.map_or(Ok(()), Err)
    }

    fn apply_verified(
        &mut self,
        verified: Vec<Result<VerifiedEvent, event::VerifyError>>,
        source: Source,
        live: &mut Vec<LiveEvent>,
    ) -> Vec<Result<Submitted, IngestError>> {
        verified
            .into_iter()
            .map(|result| match result {
                Ok(event) => self.apply_from(event, source, live),
                Err(err) => Err(IngestError::Invalid(err)),
            })
            .collect()
    }

    /// Authorises and stores one verified event of this node's own.
    fn apply(
        &mut self,
        event: VerifiedEvent,
        live: &mut Vec<LiveEvent>,
    ) -> Result<Submitted, IngestError> {
        self.apply_from(event, Source::Local, live)
    }

    /// Authorises and stores one verified event from `source`. A bridge's event refused here
    /// is logged with the bridge's key: a bridge that tries another channel's thread, handle
    /// or file is either broken or hostile, and its operator should hear of it.
    fn apply_from(
        &mut self,
        event: VerifiedEvent,
        source: Source,
        live: &mut Vec<LiveEvent>,
    ) -> Result<Submitted, IngestError> {
        let from_bridge = source == Source::Local && bridge_channel(&event).is_some();
        let (bridge, kind, scope) = (
            event.header().author,
            event.header().kind.name(),
            event.scope_id(),
        );
        let result = self.authorise_and_store(event, source, live);
        if let (true, Err(err)) = (from_bridge, &result) {
            let refused = matches!(
                err,
                IngestError::Refused(_)
                    | IngestError::HandleNotOfContact { .. }
                    | IngestError::AttachmentNotYours { .. }
                    | IngestError::ForeignScope(_)
            );
            if refused {
                warn!(%bridge, kind, %scope, cause = %err, "refused a bridge's event");
            }
        }
        result
    }

    fn authorise_and_store(
        &mut self,
        event: VerifiedEvent,
        source: Source,
        live: &mut Vec<LiveEvent>,
    ) -> Result<Submitted, IngestError> {
        // A duplicate by id is found by its log's DAG (in `apply_thread`/`apply_directory`);
        // by external message id, here.
        let external_key = external_id_key(&event);
        // Only for what bridges submit here: an event from a peer is in its log already
        // (another bridge of the same app may have used the same id), and refusing it would
        // fork the log.
        if let Some(key) = external_key.as_ref().filter(|_| source == Source::Local) {
            if let Some(existing) = self.pending.get(&self.store, TreeName::ExternalIds, key)? {
                let existing =
                    <[u8; 32]>::try_from(existing.as_ref()).map_err(|_| StoreError::Corrupt {
                        tree: "external_ids",
                        detail: "value is not an event id".to_owned(),
                    })?;
                return Ok(Submitted::Duplicate(EventId::from_bytes(existing)));
            }
        }
        let attachments: Vec<(BlobHash, u64)> = event
            .content()
            .map(|c| c.blobs().map(|a| (a.blob, a.size)).collect())
            .unwrap_or_default();
        let mut missing = Vec::new();
        for (blob, size) in attachments {
            let stored = self.store.blobs().size(&blob).map_err(StoreError::from)?;
            // A peer's event may claim a wrong size: the bytes are named by their hash, so a
            // stored file is the blob whatever the claim (this node's own must be exact).
            let lacking = match source {
                Source::Local => stored != Some(size),
                Source::Peer => stored.is_none(),
            };
            if lacking {
                missing.push((blob, size));
            }
        }
        // What this node's bridges and agents attach, they upload first; a peer's event may
        // come before its blobs (replication fetches them: `missing_blobs`).
        if let Some(&(blob, size)) = missing.first().filter(|_| source == Source::Local) {
            return Err(IngestError::MissingBlob { blob, size });
        }
        // A bridge refers only to files its channel sent or already holds.
        if let (Source::Local, Some(channel)) = (source, bridge_channel(&event)) {
            for attachment in event.content().into_iter().flat_map(Content::blobs) {
                if !self.store.may_attach(channel, &attachment.blob)? {
                    return Err(IngestError::AttachmentNotYours {
                        blob: attachment.blob,
                        channel,
                    });
                }
            }
        }
        let scope = event.scope_id();
        let kind = event.header().kind.name();
        let topic = crate::outbound_webhooks::Topic::of(&event.header().kind);
        let outcome = match scope {
            ScopeId::Directory(org) if org == self.org => self.apply_directory(event)?,
            ScopeId::Directory(_) => return Err(IngestError::ForeignScope(scope)),
            ScopeId::Thread(thread) => self.apply_thread(thread, event, external_key, source)?,
        };
        // Attachments not here yet: of a new event, or of content a later copy filled in.
        if matches!(outcome, Submitted::Stored(_) | Submitted::Duplicate(_)) {
            for (blob, size) in &missing {
                self.pending.insert(
                    TreeName::MissingBlobs,
                    blob.as_bytes().to_vec(),
                    size.to_be_bytes().to_vec(),
                );
            }
        }
        if let Submitted::Stored(event) = outcome {
            // This node sends its own events to the org's webhooks (a peer sends its own).
            if let (Source::Local, Some(topic), ScopeId::Thread(thread)) = (source, topic, scope) {
                self.queue_webhooks(thread, event, topic)?;
            }
            live.push(LiveEvent {
                scope,
                event,
                kind,
                local: source == Source::Local,
            });
        }
        Ok(outcome)
    }

    /// Queues `event` for each of the org's webhook subscriptions that takes `topic`, in this
    /// batch's commit.
    fn queue_webhooks(
        &mut self,
        thread: ThreadId,
        event: EventId,
        topic: crate::outbound_webhooks::Topic,
    ) -> Result<(), IngestError> {
        let subscribed = {
            let directory = self
                .directory
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if directory.state().webhooks.is_empty() {
                return Ok(());
            }
            crate::outbound_webhooks::subscribed(directory.state(), topic)
        };
        let now = (self.now)().as_millis();
        for webhook in subscribed {
            let seq = self.store.generate_id()?;
            let queued = crate::store::webhook_queue::Queued {
                webhook: webhook.to_string(),
                topic: topic as u8,
                thread,
                event,
                queued_at: now,
                attempts: 0,
                next_at: now,
            };
            self.pending.insert(
                TreeName::WebhookQueue,
                crate::store::webhook_queue::queue_key(now, seq).to_vec(),
                threadline_protocol::codec::encode(&queued).map_err(StoreError::from)?,
            );
        }
        Ok(())
    }

    fn apply_directory(&mut self, event: VerifiedEvent) -> Result<Submitted, IngestError> {
        let id = event.id();
        let now = (self.now)();
        let mut directory = self
            .directory
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let changes_erasure = matches!(
            event.header().kind,
            EventKind::Directory(DirectoryKind::Merge { .. } | DirectoryKind::EraseContact { .. })
        );
        let with_content = |directory: &Directory| -> std::collections::HashSet<EventId> {
            directory
                .dag()
                .iter_ordered()
                .filter(|e| e.content().is_some())
                .map(|e| e.id())
                .collect()
        };
        let had_content = if changes_erasure {
            with_content(&directory)
        } else {
            Default::default()
        };
        if directory.insert(event.clone(), now)? == Inserted::Duplicate {
            return Ok(Submitted::Duplicate(id));
        }
        {
            let mut search = self
                .contact_search
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            // An event that sorts before others refolds the directory from there: any contact
            // may have changed.
            let appended = directory.dag().last_key().is_some_and(|key| key.id == id);
            if appended {
                search.applied(directory.state(), &event.header().kind);
            } else {
                *search = ContactSearch::of(directory.state());
            }
        }
        let writes = &mut self.pending;
        let stored = directory.dag().get(&id).unwrap_or(&event);
        writes.put_event(&self.store, stored)?;
        writes.put_heads(
            &ScopeId::Directory(self.org),
            directory.dag().len() as u64,
            directory.dag().heads(),
        )?;
        if changes_erasure {
            // Content this event made the directory drop (an erased contact's names, handles,
            // values); what earlier erasures dropped is already gone from the store.
            let still_has = with_content(&directory);
            for erased in had_content.difference(&still_has) {
                writes.erase_content(&self.store, &ScopeId::Directory(self.org), erased)?;
            }
        }
        Ok(Submitted::Stored(id))
    }

    fn apply_thread(
        &mut self,
        thread_id: ThreadId,
        event: VerifiedEvent,
        external_key: Option<Vec<u8>>,
        source: Source,
    ) -> Result<Submitted, IngestError> {
        let id = event.id();
        let now = (self.now)();
        let directory = self
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let is_root = matches!(event.header().scope, Scope::NewThread);
        if is_root
            && (self.threads.contains(&thread_id)
                || self
                    .pending
                    .get(
                        &self.store,
                        TreeName::Log,
                        &log_key(&ScopeId::Thread(thread_id), &id),
                    )?
                    .is_some())
        {
            let erased = self.threads.contains(&thread_id)
                && self
                    .threads
                    .load(&self.store, thread_id)?
                    .state()
                    .erased
                    .contains(&id);
            fill_missing_content(&self.store, &mut self.pending, thread_id, &event, erased)?;
            return Ok(Submitted::Duplicate(id));
        }
        // This org's certificates, and for an author this org does not know, its partners'.
        let by_partner = directory
            .certificates()
            .of(&event.header().author)
            .is_empty()
            && !self.partners.of(&event.header().author).is_empty();
        let merged;
        let certificates = if by_partner {
            let mut both = directory.certificates().clone();
            both.extend(&self.partners);
            merged = both;
            &merged
        } else {
            directory.certificates()
        };
        let mut route_before = None;
        if is_root {
            let thread = Thread::open(event.clone(), certificates, now)?;
            self.threads.put(thread_id, thread);
        } else {
            let thread = self.threads.load(&self.store, thread_id)?;
            route_before = thread.state().route.map(|route| route.handle_from);
            // The handle a bridge's message comes from is the thread's customer's: never a
            // made-up or another customer's handle (the protocol checks the channel; the
            // directory, which only this org's nodes hold, the handle).
            if let (Source::Local, Some(handle)) = (source, inbound_handle(&event)) {
                let directory_state = directory.state();
                let owner = directory_state.root_of(thread.state().contact);
                if !thread.dag().contains(&id)
                    && directory_state
                        .resolve(handle)
                        .map(|contact| directory_state.root_of(contact))
                        != Some(owner)
                {
                    return Err(IngestError::HandleNotOfContact {
                        handle: handle.clone(),
                    });
                }
            }
            if thread.insert(event.clone(), certificates, now)? == Inserted::Duplicate {
                let erased = thread.state().erased.contains(&id);
                fill_missing_content(&self.store, &mut self.pending, thread_id, &event, erased)?;
                return Ok(Submitted::Duplicate(id));
            }
        }
        let facts = self.threads.facts_after(thread_id, &event)?;
        let thread = self.threads.load(&self.store, thread_id)?;
        let state = thread.state();
        let contact = state.contact;
        let writes = &mut self.pending;
        writes.put_event(&self.store, thread.dag().get(&id).unwrap_or(&event))?;
        // A peer's copy without content that was not erased: the next copy fills it in.
        if source == Source::Peer
            && event.content().is_none()
            && event.header().content_hash.is_some()
            && !state.erased.contains(&id)
        {
            writes.insert(
                TreeName::MissingContent,
                [thread_id.as_bytes().as_slice(), id.as_bytes()].concat(),
                Vec::new(),
            );
        }
        writes.put_thread_state(
            thread_id,
            state,
            thread.dag().len() as u64,
            thread.dag().heads(),
        )?;
        writes.put_thread_facts(thread_id, &facts)?;
        self.thread_index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .update(thread_id, state, Some(&facts));
        let open_key = directory.state().root_of(contact);
        let sets_route = matches!(
            event.header().kind,
            EventKind::Thread(
                ThreadKind::HandOff { .. }
                    | ThreadKind::Opened { .. }
                    | ThreadKind::Message {
                        direction: Direction::Inbound { .. }
                    }
            )
        );
        if sets_route && source == Source::Peer {
            writes.insert(
                TreeName::ReplicatedRoutes,
                [thread_id.as_bytes().as_slice(), id.as_bytes()].concat(),
                Vec::new(),
            );
        }
        match &event.header().kind {
            // Only this org's threads are where its contacts' messages go: a partner's thread
            // for a contact id it learned never takes this org's customers' messages.
            EventKind::Thread(ThreadKind::Opened { org, .. }) if *org == self.org => {
                writes.insert(
                    TreeName::ContactThreads,
                    [contact.as_bytes().as_slice(), thread_id.as_bytes()].concat(),
                    Vec::new(),
                );
                writes.insert(
                    TreeName::OpenThreads,
                    open_key.as_bytes().to_vec(),
                    thread_id.as_bytes().to_vec(),
                );
            }
            EventKind::Thread(ThreadKind::Erase { targets }) => {
                // Only this thread's events: an erasure never reaches into another log.
                for target in targets.iter().filter(|t| thread.dag().contains(t)) {
                    writes.erase_content(&self.store, &ScopeId::Thread(thread_id), target)?;
                }
            }
            EventKind::Thread(ThreadKind::Message {
                direction: Direction::Outbound,
            }) => match delivery_here(
                self.org,
                &self.store,
                writes,
                thread_id,
                thread,
                &directory,
                id,
                now,
            ) {
                Ok(mut delivery) => {
                    delivery.seq = self.store.generate_id()?;
                    let mut key = vec![channel_key(delivery.handle.channel())];
                    key.extend_from_slice(&delivery.seq.to_be_bytes());
                    let sealed = self.store.seal_delivery(&key, &delivery)?;
                    writes.insert(TreeName::Outbound, key, sealed);
                }
                Err(reason @ (NOT_QUEUED_ELSEWHERE | NOT_QUEUED_OWNER)) => {
                    debug!(thread = %thread_id, event = %id, reason, "reply stored; not queued here")
                }
                Err(reason) => {
                    warn!(thread = %thread_id, event = %id, reason, "reply stored but not queued for delivery")
                }
            },
            _ => {}
        }
        if let Some(key) = external_key {
            // The first event with an id keeps it (a peer's event may share one).
            if writes
                .get(&self.store, TreeName::ExternalIds, &key)?
                .is_none()
            {
                writes.insert(TreeName::ExternalIds, key, id.as_bytes().to_vec());
            }
        }
        // The cache keeps headers; contents are in the store (the route's handle excepted,
        // which replies read).
        let thread = self.threads.load(&self.store, thread_id)?;
        thread.release_content(&id);
        if let Some(before) = route_before {
            thread.release_content(&before);
        }
        Ok(Submitted::Stored(id))
    }

    /// The hinted thread, if it may take a message from `contact`: it exists, is this org's,
    /// and is the same customer's; with its status. Otherwise `None`, logged when the hint
    /// names another customer's thread (a forged or swapped reference: never a crossed wire).
    fn hinted_thread(
        &mut self,
        hint: &ThreadRef,
        contact: ContactId,
    ) -> Result<Option<(ThreadId, bool)>, IngestError> {
        let thread = match hint {
            ThreadRef::Thread(thread) => *thread,
            ThreadRef::Token(prefix) => {
                let found = self
                    .store
                    .tree(TreeName::Threads)
                    .scan_prefix(prefix)
                    .keys()
                    .next()
                    .transpose()?;
                match found.and_then(|key| <[u8; 32]>::try_from(key.as_ref()).ok()) {
                    Some(id) => ThreadId::from_bytes(id),
                    None => return Ok(None),
                }
            }
        };
        let state = match self.threads.load(&self.store, thread) {
            Ok(thread) => thread.state().clone(),
            Err(IngestError::UnknownThread(_)) => return Ok(None),
            Err(err) => return Err(err),
        };
        let directory = self
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let same_customer =
            directory.state().root_of(state.contact) == directory.state().root_of(contact);
        if !same_customer {
            warn!(%thread, "an inbound message names a thread of another customer; it goes to the sender's own thread");
            return Ok(None);
        }
        let takes = takes_messages(&state, (self.now)());
        Ok((state.owner == self.org).then_some((thread, takes)))
    }

    /// Gives a known contact that has no name the one the customer's app says they go by,
    /// as the `name` attribute (a contact's display name is fixed when it is created). A
    /// contact with a name, or an erased one, is left as it is.
    fn name_if_unnamed(
        &mut self,
        contact: ContactId,
        name: Option<&str>,
        live: &mut Vec<LiveEvent>,
    ) -> Result<(), IngestError> {
        let (Some(name), Ok(key)) = (
            name.map(display_name).filter(|n| !n.is_empty()),
            crate::contact_name::attribute(),
        ) else {
            return Ok(());
        };
        let root = {
            let directory = self
                .directory
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            match directory.state().contact(contact) {
                Some((root, record))
                    if !record.erased && crate::contact_name::of(record).is_none() =>
                {
                    root
                }
                _ => return Ok(()),
            }
        };
        self.sign_directory(
            DirectoryKind::SetAttribute { contact: root, key },
            Some(Content::text(name)),
            live,
        )?;
        Ok(())
    }

    fn resolve(
        &mut self,
        handle: Handle,
        hint: Option<ThreadRef>,
        customer: super::Customer,
        live: &mut Vec<LiveEvent>,
    ) -> Result<Resolved, IngestError> {
        let known = self
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .state()
            .resolve(&handle);
        if customer.automatic {
            let no_conversation = || IngestError::NoConversation {
                handle: handle.clone(),
            };
            let contact = known.ok_or_else(no_conversation)?;
            let thread = self
                .conversation_of(contact, &handle, hint.as_ref())?
                .ok_or_else(no_conversation)?;
            return self.resolved(contact, thread);
        }
        let name = customer.name;
        let contact = match known {
            Some(contact) => {
                self.name_if_unnamed(contact, name.as_deref(), live)?;
                contact
            }
            None => {
                let contact = ContactId::random(&mut rand_core::OsRng);
                let name = name
                    .map(|name| display_name(&name))
                    .filter(|n| !n.is_empty());
                self.sign_directory(
                    DirectoryKind::CreateContact { contact },
                    name.map(Content::text),
                    live,
                )?;
                self.sign_directory(
                    DirectoryKind::LinkHandle { contact },
                    Some(Content::default().with_handle(handle.clone())),
                    live,
                )?;
                contact
            }
        };
        if let Some(hint) = &hint {
            if let Some((thread, _)) = self
                .hinted_thread(hint, contact)?
                .filter(|(_, takes)| *takes)
            {
                self.admit(thread, &handle, live)?;
                return self.resolved(contact, thread);
            }
        }
        let open = self.open_thread_of(contact)?;
        let thread = match open {
            Some(thread) => thread,
            None => {
                let draft = Draft::new(
                    Scope::NewThread,
                    Vec::new(),
                    0,
                    (self.now)(),
                    EventKind::Thread(ThreadKind::Opened {
                        org: self.org,
                        contact,
                        channel: handle.channel(),
                    }),
                )
                .with_content(Content::default().with_handle(handle.clone()));
                let root = self.sign(draft)?;
                let thread = ThreadId::from_root(root.id());
                self.apply(root, live)?;
                thread
            }
        };
        self.admit(thread, &handle, live)?;
        self.resolved(contact, thread)
    }

    /// The open thread of `contact`'s customer: its own, or one of a contact merged into it
    /// (the index is keyed by the contact a thread was opened for). A resolved thread is not
    /// open, unless it waits for the customer's rating (see [`takes_messages`]).
    fn open_thread_of(&mut self, contact: ContactId) -> Result<Option<ThreadId>, IngestError> {
        let candidates = self
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .state()
            .same_customer(contact);
        for candidate in candidates {
            let Some(bytes) =
                self.pending
                    .get(&self.store, TreeName::OpenThreads, candidate.as_bytes())?
            else {
                continue;
            };
            let id = ThreadId::from_bytes(<[u8; 32]>::try_from(bytes.as_ref()).map_err(|_| {
                StoreError::Corrupt {
                    tree: "open_threads",
                    detail: "value is not a thread id".to_owned(),
                }
            })?);
            let now = (self.now)();
            if takes_messages(self.threads.load(&self.store, id)?.state(), now) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// A "continue on `to`" code for the open conversation of `handle`'s customer.
    fn issue_handoff(
        &mut self,
        handle: &Handle,
        to: threadline_protocol::ChannelKind,
    ) -> Result<crate::store::HandoffCode, IngestError> {
        let nothing = || IngestError::NothingToContinue {
            handle: handle.clone(),
        };
        let contact = self
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .state()
            .resolve(handle)
            .ok_or_else(nothing)?;
        let thread = self.open_thread_of(contact)?.ok_or_else(nothing)?;
        Ok(self
            .store
            .issue_handoff_code(contact, thread, to, (self.now)())?)
    }

    /// Spends a "continue on …" code that `handle` brought back: the handle joins the contact
    /// the code was issued for (or, if it is already another contact's, that contact and the
    /// code's become one customer: holding the code proves they are the same person), and the
    /// code's thread, if still open, is handed off to the handle. `None`: nothing linked, and
    /// the reason is logged.
    fn continue_with(
        &mut self,
        handle: Handle,
        code: &crate::store::HandoffCode,
        live: &mut Vec<LiveEvent>,
    ) -> Result<Option<ThreadId>, IngestError> {
        let grant = match self
            .store
            .redeem_handoff_code(code, handle.channel(), (self.now)())?
        {
            Ok(grant) => grant,
            Err(refused) => {
                warn!(%handle, reason = %refused, "a continue-on code links nothing");
                return Ok(None);
            }
        };
        let (root, owner, same) = {
            let directory = self
                .directory
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let Some((root, record)) = directory.state().contact(grant.contact) else {
                warn!(%handle, "a continue-on code for an unknown contact links nothing");
                return Ok(None);
            };
            if record.erased {
                warn!(%handle, "a continue-on code for an erased contact links nothing");
                return Ok(None);
            }
            let owner = directory.state().resolve(&handle);
            let same =
                owner.is_some_and(|owner| directory.state().same_customer(root).contains(&owner));
            (root, owner, same)
        };
        let linked = match (owner, same) {
            (_, true) => None,
            (None, false) => Some(DirectoryAction::LinkHandle(root, handle.clone())),
            (Some(owner), false) => Some(DirectoryAction::Merge {
                from: root,
                into: owner,
            }),
        };
        let merged = matches!(linked, Some(DirectoryAction::Merge { .. }));
        if let Some(action) = linked {
            self.change_directory(action, live)?;
        }
        let thread = self.threads.load(&self.store, grant.thread)?;
        if thread.state().status == Status::Resolved {
            return Ok(None);
        }
        self.admit(grant.thread, &handle, live)?;
        // What links the handle, on the record for the agents: possession of the code.
        let how = if merged {
            "its contact and this one are now one customer"
        } else if same {
            "it was theirs already"
        } else {
            "it is now linked to them"
        };
        let note = self
            .next_on(grant.thread, ThreadKind::Note)?
            .with_content(Content::text(format!(
                "{handle} continued this conversation: it brought back the one-time \"continue on {}\" code this customer was given, which proves it is them; {how}.",
                handle.channel()
            )));
        let note = self.sign(note)?;
        self.apply(note, live)?;
        debug!(%handle, thread = %grant.thread, "conversation continued on another channel");
        Ok(Some(grant.thread))
    }

    /// `contact`'s `thread`, with the parents and depth of the bridge's next event on it.
    fn resolved(&mut self, contact: ContactId, thread: ThreadId) -> Result<Resolved, IngestError> {
        let (parents, depth) = self.threads.load(&self.store, thread)?.dag().next_parents();
        Ok(Resolved {
            contact,
            thread,
            parents,
            depth,
        })
    }

    /// Where an automatic reply from `handle` (of `contact`) goes: the hinted thread (even a
    /// resolved one: the reply answers it), else the customer's open thread, else their latest;
    /// and only one already open to the handle's channel. `None`: nowhere, and nothing opens.
    fn conversation_of(
        &mut self,
        contact: ContactId,
        handle: &Handle,
        hint: Option<&ThreadRef>,
    ) -> Result<Option<ThreadId>, IngestError> {
        let mut candidates = Vec::new();
        if let Some(hint) = hint {
            if let Some((thread, _)) = self.hinted_thread(hint, contact)? {
                candidates.push(thread);
            }
        }
        let customer = self
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .state()
            .same_customer(contact);
        let mut theirs = Vec::new();
        for contact in customer {
            for thread in self.threads_of(contact)? {
                let state = self.threads.load(&self.store, thread)?.state();
                if state.owner == self.org {
                    theirs.push((
                        state.status != Status::Resolved,
                        state.last_activity,
                        thread,
                    ));
                }
            }
        }
        theirs.sort_unstable_by(|a, b| b.cmp(a));
        candidates.extend(theirs.into_iter().map(|(_, _, thread)| thread));
        for thread in candidates {
            let open_to_it = self
                .threads
                .load(&self.store, thread)?
                .admitted_channels()
                .contains(handle.channel());
            if open_to_it {
                return Ok(Some(thread));
            }
        }
        Ok(None)
    }

    /// Opens `thread` to the channel of `handle` (a handle of the thread's customer: the
    /// caller resolved it) if nothing in its past did: a node-signed hand-off naming the
    /// handle, without which the protocol refuses that channel's bridge in the thread. The
    /// customer writes there now, so that is where replies go.
    fn admit(
        &mut self,
        thread_id: ThreadId,
        handle: &Handle,
        live: &mut Vec<LiveEvent>,
    ) -> Result<(), IngestError> {
        let thread = self.threads.load(&self.store, thread_id)?;
        if thread.admitted_channels().contains(handle.channel()) {
            return Ok(());
        }
        let draft = self
            .next_on(
                thread_id,
                ThreadKind::HandOff {
                    channel: handle.channel(),
                },
            )?
            .with_content(Content::default().with_handle(handle.clone()));
        let event = self.sign(draft)?;
        self.apply(event, live)?;
        Ok(())
    }

    /// Whether the labels a request adds and removes, applied in order to the thread as it is
    /// now, leave it within [`Cap::ThreadLabels`] (a thread over it already may still lose
    /// labels). Checked for the whole request before any of it is applied, so a refused request
    /// stores nothing; in the writer, so concurrent requests cannot together go past it.
    fn labels_fit(&mut self, thread_id: ThreadId, actions: &[Action]) -> Result<(), IngestError> {
        if !actions.iter().any(|a| matches!(a, Action::LabelAdd(_))) {
            return Ok(());
        }
        let mut labels = self
            .threads
            .load(&self.store, thread_id)?
            .state()
            .labels
            .clone();
        let before = labels.len();
        for action in actions {
            match action {
                Action::LabelAdd(label) => {
                    labels.insert(label.clone());
                }
                Action::LabelRemove(label) => {
                    labels.remove(label);
                }
                _ => {}
            }
        }
        if labels.len() > Cap::ThreadLabels.max() && labels.len() > before {
            return Err(IngestError::Full(Cap::ThreadLabels));
        }
        Ok(())
    }

    /// A draft of this node's next event on a thread: after everything it holds of it, now.
    fn next_on(&mut self, thread_id: ThreadId, kind: ThreadKind) -> Result<Draft, IngestError> {
        let (parents, depth) = self
            .threads
            .load(&self.store, thread_id)?
            .dag()
            .next_parents();
        Ok(Draft::new(
            Scope::Thread(thread_id),
            parents,
            depth,
            (self.now)(),
            EventKind::Thread(kind),
        ))
    }

    fn act(
        &mut self,
        agent: Option<threadline_protocol::AgentId>,
        thread_id: ThreadId,
        action: Action,
        live: &mut Vec<LiveEvent>,
    ) -> Result<EventId, IngestError> {
        let thread = self.threads.load(&self.store, thread_id)?;
        let contact = thread.state().contact;
        let (parents, depth) = thread.dag().next_parents();
        // Checked here, with the route as it is when the reply is stored (not as it was when
        // the request came): a reply's files go only where its bridge sends them.
        if let Action::Reply {
            attachments,
            reply_to,
            ..
        } = &action
        {
            if let Some(answered) = reply_to {
                let inbound = thread.dag().get(answered).is_some_and(|event| {
                    matches!(
                        event.header().kind,
                        EventKind::Thread(ThreadKind::Message {
                            direction: Direction::Inbound { .. }
                        })
                    )
                });
                if !inbound {
                    return Err(IngestError::NotACustomerMessage(*answered));
                }
            }
            let route = thread.state().route.map(|route| route.channel);
            if !attachments.is_empty()
                && !route.is_some_and(|channel| super::CHANNELS_WITH_FILES.contains(&channel))
            {
                return Err(IngestError::FilesNotCarried { route });
            }
        }
        if let Action::Template(_) = &action {
            let route = thread.state().route.map(|route| route.channel);
            if !route.is_some_and(threadline_protocol::ChannelKind::has_message_templates) {
                return Err(IngestError::TemplateNotCarried { route });
            }
        }
        let (kind, content) = match action {
            Action::Reply {
                text,
                attachments,
                reply_to,
            } => {
                let mut content = attachments
                    .into_iter()
                    .fold(Content::text(text), Content::with_attachment);
                content.reply_to = reply_to;
                (
                    ThreadKind::Message {
                        direction: Direction::Outbound,
                    },
                    Some(content),
                )
            }
            Action::Template(template) => (
                ThreadKind::Message {
                    direction: Direction::Outbound,
                },
                Some(Content::default().with_template(template)),
            ),
            Action::Note(text) => (ThreadKind::Note, Some(Content::text(text))),
            Action::Assign(assignee) => (ThreadKind::Assign { assignee }, None),
            Action::AssignTeam(team) => (ThreadKind::AssignTeam { team }, None),
            Action::Status(status) => (ThreadKind::Status { status }, None),
            Action::HandOff(handle) => {
                let directory = self
                    .directory
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                let owner = directory.state().root_of(contact);
                if directory.state().resolve(&handle) != Some(owner) {
                    return Err(IngestError::HandleNotOfContact { handle });
                }
                (
                    ThreadKind::HandOff {
                        channel: handle.channel(),
                    },
                    Some(Content::default().with_handle(handle)),
                )
            }
            Action::MemberAdd(org) => {
                let members = &thread.state().members;
                if !members.contains(&org) && members.len() >= Cap::ThreadMembers.max() {
                    return Err(IngestError::Full(Cap::ThreadMembers));
                }
                (ThreadKind::MemberAdd { org }, None)
            }
            Action::MemberRemove(org) => (ThreadKind::MemberRemove { org }, None),
            Action::LabelAdd(label) => (ThreadKind::LabelAdd { label }, None),
            Action::LabelRemove(label) => (ThreadKind::LabelRemove { label }, None),
            Action::Read(up_to) => {
                if !thread.dag().contains(&up_to) {
                    return Err(IngestError::UnknownEvent(up_to));
                }
                (ThreadKind::Read { up_to }, None)
            }
        };
        let mut draft = Draft::new(
            Scope::Thread(thread_id),
            parents,
            depth,
            (self.now)(),
            EventKind::Thread(kind),
        );
        if let Some(agent) = agent {
            draft = draft.with_agent(agent);
        }
        if let Some(content) = content {
            draft = draft.with_content(content);
        }
        let event = self.sign(draft)?;
        match self.apply(event, live)? {
            Submitted::Stored(id) | Submitted::Duplicate(id) => Ok(id),
        }
    }

    fn change_directory(
        &mut self,
        action: DirectoryAction,
        live: &mut Vec<LiveEvent>,
    ) -> Result<Vec<EventId>, IngestError> {
        let exists = |writer: &Self, contact: ContactId| {
            let directory = writer
                .directory
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            match directory.state().contact(contact) {
                Some((root, record)) if !record.erased => Ok(root),
                _ => Err(IngestError::UnknownContact(contact)),
            }
        };
        match action {
            DirectoryAction::SetAttribute {
                contact,
                key,
                value,
            } => {
                let root = exists(self, contact)?;
                let full = !value.is_empty()
                    && self
                        .directory
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .state()
                        .contact(root)
                        .is_some_and(|(_, record)| {
                            !record.attributes.contains_key(&key)
                                && record.attributes.len() >= Cap::ContactAttributes.max()
                        });
                if full {
                    return Err(IngestError::Full(Cap::ContactAttributes));
                }
                Ok(vec![self.sign_directory(
                    DirectoryKind::SetAttribute { contact: root, key },
                    Some(Content::text(value)),
                    live,
                )?])
            }
            DirectoryAction::LinkHandle(contact, handle) => {
                let root = exists(self, contact)?;
                let current = self
                    .directory
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .state()
                    .resolve(&handle);
                let n_handles = self
                    .directory
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .state()
                    .contact(root)
                    .map_or(0, |(_, record)| record.handles.len());
                match current {
                    Some(owner) if owner == root => Ok(Vec::new()),
                    Some(_) => Err(IngestError::HandleNotOfContact { handle }),
                    None if n_handles >= Cap::ContactHandles.max() => {
                        Err(IngestError::Full(Cap::ContactHandles))
                    }
                    None => Ok(vec![self.sign_directory(
                        DirectoryKind::LinkHandle { contact: root },
                        Some(Content::default().with_handle(handle)),
                        live,
                    )?]),
                }
            }
            DirectoryAction::Consent {
                contact,
                channel,
                granted,
            } => {
                let root = exists(self, contact)?;
                let recorded = self
                    .directory
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .state()
                    .contact(root)
                    .and_then(|(_, record)| record.consent.get(&channel).copied());
                if recorded == Some(granted) {
                    return Ok(Vec::new());
                }
                Ok(vec![self.sign_directory(
                    DirectoryKind::Consent {
                        contact: root,
                        channel,
                        granted,
                    },
                    None,
                    live,
                )?])
            }
            DirectoryAction::SetCannedReply { shortcode, text } => {
                let current = |state: &DirectoryState| {
                    let replies = &state.canned_replies;
                    (replies.get(&shortcode).cloned(), replies.len())
                };
                let kind = DirectoryKind::SetCannedReply {
                    shortcode: shortcode.clone(),
                };
                self.set_org_text(current, kind, text, Cap::CannedReplies, live)
            }
            DirectoryAction::SetWebhook { name, text } => {
                let current = |state: &DirectoryState| {
                    let webhooks = &state.webhooks;
                    (webhooks.get(&name).cloned(), webhooks.len())
                };
                let kind = DirectoryKind::SetWebhook { name: name.clone() };
                self.set_org_text(current, kind, text, Cap::Webhooks, live)
            }
            DirectoryAction::SetTeam { team, members } => {
                let (current, n_teams) = {
                    let directory = self
                        .directory
                        .read()
                        .unwrap_or_else(PoisonError::into_inner);
                    let teams = &directory.state().teams;
                    (teams.get(&team).cloned(), teams.len())
                };
                let is_new = current.is_none();
                if current.unwrap_or_default() == members {
                    return Ok(Vec::new());
                }
                if is_new && n_teams >= Cap::Teams.max() {
                    return Err(IngestError::Full(Cap::Teams));
                }
                Ok(vec![self.sign_directory(
                    DirectoryKind::SetTeam {
                        team,
                        members: members.into_iter().collect(),
                    },
                    None,
                    live,
                )?])
            }
            DirectoryAction::Certify(certificate) => Ok(vec![self.sign_directory(
                DirectoryKind::Certify {
                    certificate: Box::new(certificate),
                },
                None,
                live,
            )?]),
            DirectoryAction::Merge { from, into } => {
                exists(self, from)?;
                exists(self, into)?;
                Ok(vec![self.sign_directory(
                    DirectoryKind::Merge { from, into },
                    None,
                    live,
                )?])
            }
            DirectoryAction::Erase(contact) => {
                let root = exists(self, contact)?;
                let members = self
                    .directory
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .state()
                    .same_customer(root);
                let mut ids = vec![self.sign_directory(
                    DirectoryKind::EraseContact { contact: root },
                    None,
                    live,
                )?];
                let mut erased_threads = std::collections::HashSet::new();
                for member in members {
                    for thread in self.threads_of(member)? {
                        ids.extend(self.erase_thread_content(thread, live)?);
                        erased_threads.insert(thread);
                    }
                }
                self.drop_deliveries(&erased_threads)?;
                Ok(ids)
            }
        }
    }

    fn add_partner_certificates(
        &mut self,
        certificates: Vec<threadline_protocol::Certificate>,
    ) -> Result<usize, IngestError> {
        let directory = self
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut added = 0;
        for certificate in certificates {
            let subject = certificate.body.subject;
            let ours = certificate.body.org == self.org
                || !directory.certificates().of(&subject).is_empty();
            if ours || self.partners.of(&subject).contains(&certificate) {
                continue;
            }
            if certificate.verify().is_err() {
                warn!(%subject, "a partner certificate does not verify; ignored");
                continue;
            }
            let bytes =
                threadline_protocol::codec::encode(&certificate).map_err(StoreError::from)?;
            let key = <sha2::Sha256 as sha2::Digest>::digest(&bytes).to_vec();
            self.pending.insert(TreeName::PartnerCerts, key, bytes);
            let _ = self.partners.insert(certificate);
            added += 1;
        }
        Ok(added)
    }

    /// The contact's threads, including those opened in the current batch.
    fn threads_of(&self, contact: ContactId) -> Result<Vec<ThreadId>, IngestError> {
        let mut threads = self.store.contact_threads(&contact)?;
        threads.extend(
            self.pending
                .staged(TreeName::ContactThreads)
                .into_iter()
                .filter_map(|(key, _)| key.strip_prefix(contact.as_bytes())?.try_into().ok())
                .map(ThreadId::from_bytes),
        );
        threads.sort_unstable();
        threads.dedup();
        Ok(threads)
    }

    /// Erases the content of every event of a thread that has content (its queued deliveries
    /// are dropped by [`Writer::drop_deliveries`]).
    fn erase_thread_content(
        &mut self,
        thread_id: ThreadId,
        live: &mut Vec<LiveEvent>,
    ) -> Result<Vec<EventId>, IngestError> {
        self.erase_contents(thread_id, Vec::new(), live)
    }

    /// Erases the content of `events` of a thread (all that have one when `events` is
    /// empty), in erasure events of at most [`MAX_ERASE_TARGETS`] each; events without
    /// content, already erased or of another log are left out.
    /// Reopens `thread` if its snooze has ended (see [`super::Ingest::wake`]).
    fn wake(
        &mut self,
        thread_id: ThreadId,
        live: &mut Vec<LiveEvent>,
    ) -> Result<Option<EventId>, IngestError> {
        let thread = self.threads.load(&self.store, thread_id)?;
        let due = matches!(
            thread.state().status,
            Status::Snoozed { until } if until <= (self.now)()
        );
        if !due {
            return Ok(None);
        }
        let draft = self.next_on(
            thread_id,
            ThreadKind::Status {
                status: Status::Open,
            },
        )?;
        let event = self.sign(draft)?;
        match self.apply(event, live)? {
            Submitted::Stored(id) => Ok(Some(id)),
            Submitted::Duplicate(_) => Ok(None),
        }
    }

    fn erase_contents(
        &mut self,
        thread_id: ThreadId,
        events: Vec<EventId>,
        live: &mut Vec<LiveEvent>,
    ) -> Result<Vec<EventId>, IngestError> {
        let thread = self.threads.load(&self.store, thread_id)?;
        // By header: the cache does not hold contents.
        let erased = &thread.state().erased;
        let wanted: std::collections::HashSet<EventId> = events.into_iter().collect();
        let mut targets: Vec<EventId> = thread
            .dag()
            .iter_ordered()
            .filter(|e| e.header().content_hash.is_some() && !erased.contains(&e.id()))
            .map(|e| e.id())
            .filter(|id| wanted.is_empty() || wanted.contains(id))
            .collect();
        targets.sort_unstable();
        let mut ids = Vec::new();
        for chunk in targets.chunks(MAX_ERASE_TARGETS) {
            let draft = self.next_on(
                thread_id,
                ThreadKind::Erase {
                    targets: chunk.to_vec(),
                },
            )?;
            let event = self.sign(draft)?;
            if let Submitted::Stored(id) = self.apply(event, live)? {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Re-keys the owners whose sealed content this batch's erasures took
    /// ([`WriteSet::rekey`]): each thread's or contact's events that keep their content are
    /// sealed again under a new key, and the old keys are destroyed once the batch is durable.
    fn rekey_erased(&mut self) -> Result<(), IngestError> {
        for owner in self.pending.erased_owners() {
            let survivors: Vec<(ScopeId, EventId)> = match owner {
                KeyOwner::Thread(thread_id) => {
                    let thread = self.threads.load(&self.store, thread_id)?;
                    let erased = &thread.state().erased;
                    thread
                        .dag()
                        .iter_ordered()
                        .filter(|e| e.header().content_hash.is_some() && !erased.contains(&e.id()))
                        .map(|e| (ScopeId::Thread(thread_id), e.id()))
                        .collect()
                }
                KeyOwner::Contact(_) | KeyOwner::Org(_) => {
                    let scope = ScopeId::Directory(self.org);
                    let directory = self
                        .directory
                        .read()
                        .unwrap_or_else(PoisonError::into_inner);
                    directory
                        .dag()
                        .iter_ordered()
                        .filter(|e| {
                            e.content().is_some()
                                && content_owner(&scope, &e.header().kind) == Some(owner)
                        })
                        .map(|e| (scope, e.id()))
                        .collect()
                }
                KeyOwner::Blob(_) => continue,
            };
            self.pending.rekey(&self.store, owner, &survivors)?;
        }
        Ok(())
    }

    /// Drops the queued deliveries of `threads` (one pass over the outbound queues).
    fn drop_deliveries(
        &mut self,
        threads: &std::collections::HashSet<ThreadId>,
    ) -> Result<(), IngestError> {
        if threads.is_empty() {
            return Ok(());
        }
        let mut queued: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for entry in self.store.tree(TreeName::Outbound).iter() {
            let (key, value) = entry.map_err(StoreError::from)?;
            queued.push((key.to_vec(), value.to_vec()));
        }
        queued.extend(self.pending.staged(TreeName::Outbound));
        for (key, value) in queued {
            let delivery: StoredDelivery = crate::store::decode("outbound", &value)?;
            if threads.contains(&delivery.thread) {
                self.pending.remove(TreeName::Outbound, key);
            }
        }
        Ok(())
    }

    /// Signs `kind`, which sets one of the org's texts (a canned reply, a webhook) to `text`
    /// (empty removes it): nothing when `current` (its text now, and how many there are)
    /// says it is that already; `cap` bounds how many there may be.
    fn set_org_text(
        &mut self,
        current: impl FnOnce(&DirectoryState) -> (Option<String>, usize),
        kind: DirectoryKind,
        text: String,
        cap: Cap,
        live: &mut Vec<LiveEvent>,
    ) -> Result<Vec<EventId>, IngestError> {
        let (current, n) = current(
            self.directory
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .state(),
        );
        if current.as_deref().unwrap_or("") == text {
            return Ok(Vec::new());
        }
        if current.is_none() && n >= cap.max() {
            return Err(IngestError::Full(cap));
        }
        Ok(vec![self.sign_directory(
            kind,
            Some(Content::text(text)),
            live,
        )?])
    }

    fn sign_directory(
        &mut self,
        kind: DirectoryKind,
        content: Option<Content>,
        live: &mut Vec<LiveEvent>,
    ) -> Result<EventId, IngestError> {
        let (parents, depth) = self
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .dag()
            .next_parents();
        let mut draft = Draft::new(
            Scope::Directory(self.org),
            parents,
            depth,
            (self.now)(),
            EventKind::Directory(kind),
        );
        if let Some(content) = content {
            draft = draft.with_content(content);
        }
        let event = self.sign(draft)?;
        match self.apply(event, live)? {
            Submitted::Stored(id) | Submitted::Duplicate(id) => Ok(id),
        }
    }

    /// After a failed commit the in-memory logs are ahead of the store: forget them and reload
    /// the directory from the store.
    fn reset_memory(&mut self) {
        self.threads.clear();
        let mut partners = threadline_protocol::Certificates::new();
        match self.store.partner_certificates() {
            Ok(stored) => {
                for certificate in stored {
                    let _ = partners.insert(certificate);
                }
                self.partners = partners;
            }
            Err(err) => error!(cause = %err, "cannot reload partner certificates"),
        }
        let stored: Result<Vec<VerifiedEvent>, IngestError> = self
            .store
            .log_events(&ScopeId::Directory(self.org))
            .map_err(IngestError::from)
            .and_then(|events| {
                events
                    .into_iter()
                    .map(|event| Ok(event.verify_from_store()?))
                    .collect()
            });
        match stored.and_then(|events| Ok(Directory::restore(events)?)) {
            Ok(directory) => {
                // One lock at a time (readers take the directory's, then the search's).
                let search = ContactSearch::of(directory.state());
                *self
                    .directory
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = directory;
                *self
                    .contact_search
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = search;
            }
            Err(err) => error!(cause = %err, "cannot reload the directory after a failed commit"),
        }
        // The list's index may hold states the store does not: read it all again.
        let mut index = ThreadIndex::default();
        let rebuilt = self.store.thread_states().try_for_each(|entry| {
            let (thread, state) = entry?;
            let facts = self.store.thread_facts(&thread)?;
            index.insert_stored(thread, &state, facts.as_ref());
            Ok::<(), StoreError>(())
        });
        match rebuilt {
            Ok(()) => {
                index.set_ready();
                *self
                    .thread_index
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = index;
            }
            Err(err) => {
                error!(cause = %err, "cannot rebuild the thread list index after a failed commit")
            }
        }
    }

    fn sign(&self, draft: Draft) -> Result<VerifiedEvent, IngestError> {
        let event: Event = draft
            .sign(&self.identity.node_key)
            .map_err(StoreError::from)?;
        // The node's own signature: checking it again would cost a verification per action;
        // structure, limits and the content hash are still checked.
        Ok(event.verify_from_store()?)
    }
}

fn durable<T>(
    result: Result<T, IngestError>,
    flushed: &Result<(), String>,
    not_durable: impl Fn(&String) -> IngestError,
) -> Result<T, IngestError> {
    match (result, flushed) {
        (Ok(_), Err(err)) => Err(not_durable(err)),
        (result, _) => result,
    }
}

/// The outbound delivery for a new reply: to the handle of the thread's route, and only if
/// that handle is linked to the thread's contact (no crossed wires). The cached thread holds
/// the route's handle: releasing contents never drops it, and the route only ever moves to the
/// event being inserted.
/// Whether this node delivers the reply `id` of `thread`, and what. The route is the one
/// as of the reply's causal past (what its author saw), not this node's current view, so
/// every node decides the same for the same reply: it is delivered by the node where the
/// route-setting event entered the org (not one that got it from a peer), once for the
/// whole org, and only by the owning org.
#[allow(clippy::too_many_arguments)]
fn delivery_here(
    org: OrgId,
    store: &Store,
    writes: &WriteSet,
    thread_id: ThreadId,
    thread: &Thread,
    directory: &Directory,
    id: EventId,
    now: Timestamp,
) -> Result<Delivery, &'static str> {
    if thread.state().owner != org {
        return Err(NOT_QUEUED_OWNER);
    }
    let route = thread
        .route_as_of(&id)
        .ok_or("the thread had no route when the reply was written")?;
    let replicated = writes
        .get(
            store,
            TreeName::ReplicatedRoutes,
            &[
                thread_id.as_bytes().as_slice(),
                route.handle_from.as_bytes(),
            ]
            .concat(),
        )
        .map_err(|_| "cannot read the route's origin")?
        .is_some();
    if replicated {
        return Err(NOT_QUEUED_ELSEWHERE);
    }
    // Erased (perhaps by an event of this same batch, not committed yet): no handle to send to.
    if thread.state().erased.contains(&route.handle_from) {
        return Err("the route's handle is erased");
    }
    // A reply a peer sent without its content (not erased) would go out empty.
    let reply = thread
        .dag()
        .get(&id)
        .ok_or("the reply is not in its thread")?;
    if reply.content().is_none() && !thread.state().erased.contains(&id) {
        return Err("the reply came without its content");
    }
    // The cache keeps the current route's content only; an older route's is in the store.
    let cached = thread
        .dag()
        .get(&route.handle_from)
        .and_then(|event| event.content())
        .and_then(|content| content.handle.clone());
    let handle = match cached {
        Some(handle) => handle,
        None => store
            .event(&ScopeId::Thread(thread_id), &route.handle_from)
            .map_err(|_| "cannot read the route's handle")?
            .and_then(|event| event.content)
            .and_then(|content| content.handle)
            .ok_or("the route's handle is erased")?,
    };
    delivery_for(thread, directory, id, handle, now)
}

/// A copy of a stored thread event arrived: if the stored one came without its content
/// (a peer's, not erased) and this one has it (verified against the header's hash), the
/// store gets it. Nothing else changes: the header, and so the state, are the same.
fn fill_missing_content(
    store: &Store,
    writes: &mut WriteSet,
    thread_id: ThreadId,
    event: &VerifiedEvent,
    erased: bool,
) -> Result<(), IngestError> {
    if event.content().is_none() {
        return Ok(());
    }
    let id = event.id();
    let key = [thread_id.as_bytes().as_slice(), id.as_bytes()].concat();
    if writes.get(store, TreeName::MissingContent, &key)?.is_none() {
        return Ok(());
    }
    if !erased {
        writes.put_event(store, event)?;
        tracing::info!(thread = %thread_id, %id, "filled in the content a peer had sent without");
    }
    writes.remove(TreeName::MissingContent, key);
    Ok(())
}

/// A reply another node delivers: the route it was written for entered the org there.
const NOT_QUEUED_ELSEWHERE: &str = "another node set the route and delivers on it";
/// A reply in a partner's thread: its owner delivers.
const NOT_QUEUED_OWNER: &str = "the owning org delivers";

/// The delivery of the reply `event` on `route`, to `handle` (the route's), if that handle is
/// still the thread's contact's.
fn delivery_for(
    thread: &Thread,
    directory: &Directory,
    event: EventId,
    handle: Handle,
    now: Timestamp,
) -> Result<Delivery, &'static str> {
    let state = thread.state();
    let owner = directory.state().root_of(state.contact);
    if directory.state().resolve(&handle) != Some(owner) {
        return Err("the route's handle is not linked to the thread's contact");
    }
    let reply = thread
        .dag()
        .get(&event)
        .ok_or("the reply is not in its thread")?;
    let text = reply.content().map(|c| c.text.clone()).unwrap_or_default();
    Ok(Delivery {
        seq: 0,
        thread: ThreadId::from_root(thread.dag().root()),
        event,
        depth: reply.header().depth,
        handle,
        text,
        queued_at: now,
    })
}

/// The external-id key of an inbound message that names one (see [`crate::store::external_id_key`]).
/// A display name as a contact keeps it: trimmed, no control characters, at most 256 bytes
/// (cut at a character boundary).
fn display_name(name: &str) -> String {
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    let mut end = clean
        .len()
        .min(threadline_protocol::limits::MAX_SHORT_STRING_BYTES);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean[..end].trim_end().to_owned()
}

/// The channel of a bridge's event: an inbound message or a receipt (only bridges make them).
fn bridge_channel(event: &VerifiedEvent) -> Option<threadline_protocol::ChannelKind> {
    match &event.header().kind {
        EventKind::Thread(
            ThreadKind::Message {
                direction: Direction::Inbound { channel },
            }
            | ThreadKind::AutoReply { channel }
            | ThreadKind::Receipt { channel, .. },
        ) => Some(*channel),
        _ => None,
    }
}

/// The customer's handle on an inbound message or automatic reply (when its content is here).
fn inbound_handle(event: &VerifiedEvent) -> Option<&Handle> {
    match &event.header().kind {
        EventKind::Thread(
            ThreadKind::Message {
                direction: Direction::Inbound { .. },
            }
            | ThreadKind::AutoReply { .. },
        ) => event.content()?.handle.as_ref(),
        _ => None,
    }
}

fn external_id_key(event: &VerifiedEvent) -> Option<Vec<u8>> {
    crate::store::external_id_key_of(&event.header().kind, event.content())
}

/// Whether a customer's next message goes to a thread in `state` at `now`: it is not
/// resolved, or it is and has waited for the customer's satisfaction rating
/// (`crate::csat`), which the message may be, for less than [`crate::csat::RATING_WAIT`].
/// Otherwise a message after the resolution starts a new conversation.
fn takes_messages(state: &threadline_protocol::ThreadState, now: Timestamp) -> bool {
    state.status != Status::Resolved
        || (crate::csat::awaits_rating(state)
            && now
                .as_millis()
                .saturating_sub(state.last_activity.as_millis())
                < crate::csat::RATING_WAIT.as_millis() as u64)
}
