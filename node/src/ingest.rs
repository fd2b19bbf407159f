//! The one ingest pipeline. Every source (the agent API, bridges, and later peers) submits
//! here, and every change to the store goes through here:
//!
//! `decode → verify (batched) → authorise → store (durable) → index → fan-out`.
//!
//! Two threads, each taking requests from a bounded queue ([`QUEUE_DEPTH`]; when callers push
//! faster than the node writes, they wait: back-pressure):
//!
//! 1. the **verifier** drains up to [`MAX_BATCH`] submissions and checks all their signatures
//!    in one batch equation (the protocol's rule makes that agree with checking each alone); it
//!    is stateless, so it runs beside the writer, on the other core. Requests with no
//!    signature to check (an agent's actions, resolves, directory changes) skip it and go
//!    to the writer's queue at once: a hand-over between threads fewer for each;
//! 2. the **writer** owns the mutable state (the org's directory, a cache of threads) and the
//!    store's writes. It drains up to [`MAX_BATCH`] verified requests, authorises and applies
//!    them in order, commits the whole batch in one transaction, makes it durable with one
//!    flush (group commit), and only then answers the callers and fans out to live streams.
//!
//! So: acknowledged means durable, and one fsync serves many writers.

mod thread_cache;
mod writer;

use std::sync::{Arc, RwLock};

use threadline_protocol::{
    channel::Handle, event::Status, name::Label, AgentId, ChannelKind, ContactId, Directory, Event,
    EventId, ScopeId, ThreadId,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::identity::Identity;
use crate::store::{Store, StoreError};

pub use writer::{start, start_with_cache, Running};

/// The channels whose bridges send a reply's files (the others would drop them). XMPP sends
/// them through the server's upload service; a bridge with none fails such a reply with the
/// reason.
pub const CHANNELS_WITH_FILES: [ChannelKind; 9] = [
    ChannelKind::Webchat,
    ChannelKind::Email,
    ChannelKind::Whatsapp,
    ChannelKind::Messenger,
    ChannelKind::Instagram,
    ChannelKind::Xmpp,
    ChannelKind::Matrix,
    ChannelKind::Telegram,
    ChannelKind::Slack,
];

/// Requests waiting for the writer. Enough for bursts of many concurrent API calls; beyond it,
/// callers wait.
pub const QUEUE_DEPTH: usize = 1024;
/// Requests the writer takes per group commit. Bounds the latency one flush adds to the first
/// request of a batch, while amortising the flush over many.
pub const MAX_BATCH: usize = 512;
/// Live events buffered per subscriber; a subscriber that falls further behind is told it
/// lagged and should reload.
pub const LIVE_BUFFER: usize = 4096;

/// What a bridge says of who wrote, as it resolves their handle.
#[derive(Debug, Clone, Default)]
pub struct Customer {
    /// The name they go by on the app: a contact created for the handle is given it.
    pub name: Option<String>,
    /// An automatic reply: it goes only to a conversation the handle's contact already has,
    /// open to the handle's channel (the hinted thread, even if resolved; else the open one;
    /// else the latest), and opens nothing ([`IngestError::NoConversation`] otherwise).
    pub automatic: bool,
}

/// Why a request was refused. Refused requests change nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The event failed verification.
    #[error("invalid event: {0}")]
    Invalid(#[from] threadline_protocol::event::VerifyError),
    /// The event failed the DAG or auth rules.
    #[error("refused: {0}")]
    Refused(#[from] threadline_protocol::thread::IngestError),
    /// The message search index could not be made.
    #[error(transparent)]
    Search(#[from] crate::message_search::SearchError),
    /// The thread is not known.
    #[error("no thread {0}")]
    UnknownThread(ThreadId),
    /// The contact is not known.
    #[error("no contact {0}")]
    UnknownContact(ContactId),
    /// The event is not in the thread.
    #[error("no event {0} in this thread")]
    UnknownEvent(EventId),
    /// The event belongs to a log this node does not keep.
    #[error("this node does not keep {0}")]
    ForeignScope(ScopeId),
    /// A hand-off names a handle that is not the thread's contact's, or a link names a handle
    /// of another contact.
    #[error("{handle} is not a handle of this contact (link it to the contact first; a handle of another contact needs a merge)")]
    HandleNotOfContact {
        /// The handle.
        handle: Handle,
    },
    /// An event refers to an attachment this node does not have: upload its bytes first
    /// (they may also have been swept as unused meanwhile: upload them again).
    #[error("attachment {blob} of {size} bytes is not stored here: upload it first")]
    MissingBlob {
        /// The blob.
        blob: threadline_protocol::id::BlobHash,
        /// The size the event gives it.
        size: u64,
    },
    /// A bridge's event refers to a file that no bridge of its channel uploaded and that no
    /// thread routed to its channel holds: knowing a file's hash does not open it.
    #[error("attachment {blob} was not uploaded by a {channel} bridge and is on no {channel} thread: upload its bytes first")]
    AttachmentNotYours {
        /// The blob.
        blob: threadline_protocol::id::BlobHash,
        /// The bridge's channel.
        channel: threadline_protocol::ChannelKind,
    },
    /// An automatic reply from a handle with no conversation it may go to: it opens nothing.
    #[error("an automatic reply from {handle}, which has no conversation here open to its channel: not taken (automatic replies open nothing)")]
    NoConversation {
        /// The handle.
        handle: Handle,
    },
    /// A "continue on …" code asked for a handle with no open conversation.
    #[error("{handle} has no open conversation to continue elsewhere")]
    NothingToContinue {
        /// The handle.
        handle: Handle,
    },
    /// A reply with files on a thread whose route's bridge does not send files.
    #[error("replies on {} cannot carry files (only {}): send a link, or hand the thread off", route.map_or("no route".to_owned(), |c| c.to_string()), CHANNELS_WITH_FILES.map(|c| c.to_string()).join(", "))]
    FilesNotCarried {
        /// The thread's route.
        route: Option<threadline_protocol::ChannelKind>,
    },
    /// A reply that answers an event of the thread that is not a customer's message.
    #[error("event {0} is not a customer's message of this thread: a reply answers one")]
    NotACustomerMessage(EventId),
    /// A template reply on a thread whose route's app has no message templates.
    #[error("replies on {} cannot be message templates (only WhatsApp has them): write a reply instead", route.map_or("no route".to_owned(), |c| c.to_string()))]
    TemplateNotCarried {
        /// The thread's route.
        route: Option<threadline_protocol::ChannelKind>,
    },
    /// The action would take a thread or a contact past one of the node's caps (checked in
    /// the writer, against the state as it is when the action is applied).
    #[error("{0}")]
    Full(crate::limits::Cap),
    /// The store failed; the request may or may not be stored, and was not acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The group commit this request was part of could not be made durable (or was abandoned
    /// after a store error in it): nothing of it is acknowledged (some of it may be stored:
    /// sent again, that part is a duplicate). When the commit itself failed, the node stops
    /// after answering, so that a restart recovers from what is on disk.
    #[error("the store could not make this durable ({cause}): nothing of it is acknowledged; send it again once the node is back")]
    NotDurable {
        /// What the store said.
        cause: String,
    },
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl From<sled::Error> for IngestError {
    fn from(err: sled::Error) -> Self {
        IngestError::Store(StoreError::Sled(err))
    }
}

/// An agent's action on a thread; the node signs it for the agent.
#[derive(Debug, Clone)]
pub enum Action {
    /// A reply to the customer, delivered on the thread's route, with files whose bytes
    /// are stored already (an agent uploads them first).
    Reply {
        /// The text.
        text: String,
        /// The files.
        attachments: Vec<threadline_protocol::event::Attachment>,
        /// The customer's message of the thread it answers, if the agent chose one.
        reply_to: Option<EventId>,
    },
    /// A reply as a message template the app approved (WhatsApp outside its 24-hour window),
    /// delivered on the thread's route.
    Template(threadline_protocol::event::Template),
    /// An internal note.
    Note(String),
    /// Assign or unassign.
    Assign(Option<AgentId>),
    /// Give the thread to a team, or take it from its team.
    AssignTeam(Option<threadline_protocol::name::TeamName>),
    /// Change status.
    Status(Status),
    /// Route replies to another handle of the contact.
    HandOff(Handle),
    /// Add a label.
    LabelAdd(Label),
    /// Remove a label.
    LabelRemove(Label),
    /// The agent has read the thread up to an event of it.
    Read(EventId),
    /// Share the thread with a partner org (the owning org only).
    MemberAdd(threadline_protocol::OrgId),
    /// Stop sharing the thread with a partner org (the owning org only).
    MemberRemove(threadline_protocol::OrgId),
}

impl Action {
    /// A reply of `text` alone (no files, quoting nothing): what the node's own replies are.
    pub fn text_reply(text: impl Into<String>) -> Self {
        Action::Reply {
            text: text.into(),
            attachments: Vec::new(),
            reply_to: None,
        }
    }
}

/// A change to the contact directory, signed by the node.
#[derive(Debug, Clone)]
pub enum DirectoryAction {
    /// Link a handle to a contact.
    LinkHandle(ContactId, Handle),
    /// Merge a contact into another.
    Merge {
        /// Merged away.
        from: ContactId,
        /// Kept.
        into: ContactId,
    },
    /// Erase a contact: directory content and the content of every event of its threads.
    Erase(ContactId),
    /// Publish a certificate of this org (a node that joined with an invite).
    Certify(threadline_protocol::Certificate),
    /// Set (or, with empty text, remove) an attribute of a contact.
    SetAttribute {
        /// The contact.
        contact: ContactId,
        /// The attribute.
        key: threadline_protocol::name::AttributeKey,
        /// Its value.
        value: String,
    },
    /// Set one of the org's canned replies (empty text removes it). Nothing is written when
    /// the directory holds that already.
    SetCannedReply {
        /// Its shortcode.
        shortcode: threadline_protocol::name::Shortcode,
        /// Its text.
        text: String,
    },
    /// Set one of the org's webhook subscriptions (its JSON text; empty removes it). Nothing
    /// is written when the directory holds that already.
    SetWebhook {
        /// Its name.
        name: threadline_protocol::name::WebhookName,
        /// Its text.
        text: String,
    },
    /// Set a team's agents (none removes the team). Nothing is written when the directory
    /// holds that already.
    SetTeam {
        /// The team.
        team: threadline_protocol::name::TeamName,
        /// Its agents, in any order.
        members: std::collections::BTreeSet<AgentId>,
    },
    /// Record a contact's consent to be written to on a channel (`None`: every channel):
    /// withdrawn (a customer's STOP) or given back (START). Nothing is written when the
    /// record says so already.
    Consent {
        /// The contact.
        contact: ContactId,
        /// The channel, or every channel.
        channel: Option<ChannelKind>,
        /// Given (`true`) or withdrawn.
        granted: bool,
    },
}

/// The outcome of submitting one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Stored (durably, once the caller sees this).
    Stored(EventId),
    /// Already stored (same id, or same external message id): nothing new was written.
    Duplicate(EventId),
}

/// Where a customer's handle leads: its contact and open thread, and the parents and depth a
/// bridge puts in its next event on that thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The contact.
    pub contact: ContactId,
    /// The open thread.
    pub thread: ThreadId,
    /// Parents for the next event.
    pub parents: Vec<EventId>,
    /// Depth for the next event.
    pub depth: u64,
}

/// Something that changed, for agents' live streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEvent {
    /// The log.
    pub scope: ScopeId,
    /// The event.
    pub event: EventId,
    /// Its kind's name (`thread.message.inbound`, ...).
    pub kind: &'static str,
    /// Whether it came from this node (its bridges, agents or itself), not from a peer.
    pub local: bool,
}

type Reply<T> = oneshot::Sender<Result<T, IngestError>>;

/// A thread an inbound message says it answers (never trusted alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadRef {
    /// By id.
    Thread(ThreadId),
    /// By reply token: the first 16 bytes of its id.
    Token([u8; 16]),
}

impl From<&threadline_bridges::sdk::ThreadHint> for ThreadRef {
    fn from(hint: &threadline_bridges::sdk::ThreadHint) -> Self {
        match hint {
            threadline_bridges::sdk::ThreadHint::Thread(thread) => ThreadRef::Thread(*thread),
            threadline_bridges::sdk::ThreadHint::Token(token) => ThreadRef::Token(*token),
        }
    }
}

/// Where submitted events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A bridge or an agent of this node.
    Local,
    /// Another node (replication): a route such an event sets is delivered on by that node.
    Peer,
}

enum Request {
    Submit(
        Vec<Event>,
        Source,
        oneshot::Sender<Vec<Result<Submitted, IngestError>>>,
    ),
    /// A submission after the verifier stage.
    Verified(
        Vec<Result<threadline_protocol::VerifiedEvent, threadline_protocol::event::VerifyError>>,
        Source,
        oneshot::Sender<Vec<Result<Submitted, IngestError>>>,
    ),
    Resolve(Handle, Option<ThreadRef>, Customer, Reply<Resolved>),
    Handoff(Handle, ChannelKind, Reply<crate::store::HandoffCode>),
    Continue(Handle, crate::store::HandoffCode, Reply<Option<ThreadId>>),
    /// Actions of an agent (`None`: of the node itself, such as an automatic assignment).
    Act(Option<AgentId>, ThreadId, Vec<Action>, Reply<Vec<EventId>>),
    Directory(DirectoryAction, Reply<Vec<EventId>>),
    /// Erase the contents of some events of a thread (retention), signed by the node.
    EraseContents(ThreadId, Vec<EventId>, Reply<Vec<EventId>>),
    Certificates(Vec<threadline_protocol::Certificate>, Reply<usize>),
    /// Delete attachment files no event refers to, older than the grace (after the batch's
    /// commit, so nothing staged or acknowledged loses its file).
    SweepBlobs(std::time::Duration, Reply<usize>),
    /// Copy the store into a new folder between batches (see [`Ingest::backup`]).
    Backup(std::path::PathBuf, Reply<u64>),
    /// Write records of the admin trees (see [`Ingest::write_records`]).
    Records(Vec<crate::store::TreeRecord>, Reply<usize>),
    /// Reopen a thread whose snooze has ended (see [`Ingest::wake`]).
    Wake(ThreadId, Reply<Option<EventId>>),
}

/// The handle to the pipeline: cheap to clone, one per API task.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// To the verifier: submissions of signed events.
    requests: mpsc::Sender<Request>,
    /// To the writer: every other request (nothing to verify).
    writer: mpsc::Sender<Request>,
    closing: tokio::sync::watch::Receiver<bool>,
    live: broadcast::Sender<LiveEvent>,
    directory: Arc<RwLock<Directory>>,
    store: Store,
    identity: Identity,
    presence: crate::presence::Presence,
    replication: crate::replication_status::Status,
    /// The channels whose page may answer with the `HUMAN_AGENT` tag (see
    /// [`threadline_bridges::window`]).
    human_agent: Arc<RwLock<threadline_protocol::channel::ChannelSet>>,
    /// The channels this node's built-in bridges deliver to (see [`Ingest::delivers_to`]).
    builtin_bridges: Arc<RwLock<threadline_protocol::channel::ChannelSet>>,
    /// The thread list's index (see [`crate::thread_index`]).
    thread_index: Arc<RwLock<crate::thread_index::ThreadIndex>>,
    /// Contact search (see [`crate::contact_search`]).
    contact_search: Arc<RwLock<crate::contact_search::ContactSearch>>,
    /// Message search (see [`crate::message_search`]; kept by [`crate::message_search::run`]).
    message_search: Arc<crate::message_search::MessageSearch>,
    /// Held while an agent is revoked, demoted or given a new token: each change checks the
    /// agents as the one before left them (never no admin left).
    agent_changes: Arc<tokio::sync::Mutex<()>>,
    /// The service level targets (`[sla]`).
    sla: Arc<RwLock<crate::sla::SlaPolicy>>,
    /// The "verify this email" codes in flight.
    email_verification: Arc<crate::email_verification::EmailVerification>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Submit(..) => "Submit",
            Request::Verified(..) => "Verified",
            Request::Resolve(..) => "Resolve",
            Request::Handoff(..) => "Handoff",
            Request::Continue(..) => "Continue",
            Request::Act(..) => "Act",
            Request::Directory(..) => "Directory",
            Request::EraseContents(..) => "EraseContents",
            Request::Certificates(..) => "Certificates",
            Request::SweepBlobs(..) => "SweepBlobs",
            Request::Backup(..) => "Backup",
            Request::Records(..) => "Records",
            Request::Wake(..) => "Wake",
        })
    }
}

impl Ingest {
    /// Submits signed events (from a bridge, later from peers). Answers each, in order, once
    /// the stored ones are durable. Cancel-safe: dropping the future before it resolves leaves
    /// the events either stored or not, never half-stored.
    pub async fn submit(&self, events: Vec<Event>) -> Vec<Result<Submitted, IngestError>> {
        self.submit_from(events, Source::Local).await
    }

    /// Submits signed events from `source` (see [`Ingest::submit`]).
    pub async fn submit_from(
        &self,
        events: Vec<Event>,
        source: Source,
    ) -> Vec<Result<Submitted, IngestError>> {
        let n_events = events.len();
        let (reply, answer) = oneshot::channel();
        if self
            .requests
            .send(Request::Submit(events, source, reply))
            .await
            .is_err()
        {
            return (0..n_events)
                .map(|_| Err(IngestError::ShuttingDown))
                .collect();
        }
        answer.await.unwrap_or_else(|_| {
            (0..n_events)
                .map(|_| Err(IngestError::ShuttingDown))
                .collect()
        })
    }

    /// Resolves a customer's handle to its contact and open thread, creating either when new.
    pub async fn resolve(&self, handle: Handle) -> Result<Resolved, IngestError> {
        self.resolve_hinted(handle, None).await
    }

    /// Resolves a handle, to the hinted thread if the app named one (a mail's reference or
    /// reply token) and that thread is open and the same customer's; otherwise as
    /// [`Ingest::resolve`].
    pub async fn resolve_hinted(
        &self,
        handle: Handle,
        hint: Option<ThreadRef>,
    ) -> Result<Resolved, IngestError> {
        self.resolve_for(handle, hint, Customer::default()).await
    }

    /// [`Ingest::resolve_hinted`], with what the bridge says of who wrote (see [`Customer`]).
    pub async fn resolve_for(
        &self,
        handle: Handle,
        hint: Option<ThreadRef>,
        customer: Customer,
    ) -> Result<Resolved, IngestError> {
        self.call(|reply| Request::Resolve(handle, hint, customer, reply))
            .await
    }

    /// A one-time code for continuing the open conversation of `handle`'s customer on `to`
    /// (see [`crate::store::HandoffCode`]).
    pub async fn issue_handoff(
        &self,
        handle: Handle,
        to: ChannelKind,
    ) -> Result<crate::store::HandoffCode, IngestError> {
        self.call(|reply| Request::Handoff(handle, to, reply)).await
    }

    /// Spends a code `handle` brought back: the handle joins the code's contact and its
    /// thread continues on the handle's channel. `None`: nothing linked (logged).
    pub async fn continue_with(
        &self,
        handle: Handle,
        code: crate::store::HandoffCode,
    ) -> Result<Option<ThreadId>, IngestError> {
        self.call(|reply| Request::Continue(handle, code, reply))
            .await
    }

    /// Performs an agent's action on a thread, signed by this node for the agent.
    pub async fn act(
        &self,
        agent: AgentId,
        thread: ThreadId,
        action: Action,
    ) -> Result<EventId, IngestError> {
        let ids = self.act_all(agent, thread, vec![action]).await?;
        ids.into_iter().next().ok_or(IngestError::ShuttingDown)
    }

    /// Performs `action` on a thread as the node itself, with no agent (the automatic
    /// assignment).
    pub async fn act_as_node(
        &self,
        thread: ThreadId,
        action: Action,
    ) -> Result<EventId, IngestError> {
        let ids = self
            .call(|reply| Request::Act(None, thread, vec![action], reply))
            .await?;
        ids.into_iter().next().ok_or(IngestError::ShuttingDown)
    }

    /// [`Ingest::act_as_node`] for several actions, in order, in one request.
    pub async fn act_all_as_node(
        &self,
        thread: ThreadId,
        actions: Vec<Action>,
    ) -> Result<Vec<EventId>, IngestError> {
        self.call(|reply| Request::Act(None, thread, actions, reply))
            .await
    }

    /// Performs several actions on one thread in one request (one flush, answered together),
    /// in order. They are checked against the same thread and agent, so when the first is
    /// accepted the others are too (but for a store failure, which fails them all).
    pub async fn act_all(
        &self,
        agent: AgentId,
        thread: ThreadId,
        actions: Vec<Action>,
    ) -> Result<Vec<EventId>, IngestError> {
        self.call(|reply| Request::Act(Some(agent), thread, actions, reply))
            .await
    }

    /// Changes the contact directory, signed by this node.
    pub async fn change_directory(
        &self,
        action: DirectoryAction,
    ) -> Result<Vec<EventId>, IngestError> {
        self.call(|reply| Request::Directory(action, reply)).await
    }

    /// Erases the contents of `events` of `thread` (those that have one), with erasure
    /// events the node signs for the org, so every node erases them too (what retention
    /// policies do). Answers the erasure events' ids; none if nothing was left to erase.
    pub async fn erase_contents(
        &self,
        thread: ThreadId,
        events: Vec<EventId>,
    ) -> Result<Vec<EventId>, IngestError> {
        self.call(|reply| Request::EraseContents(thread, events, reply))
            .await
    }

    /// Adds other orgs' certificates (from a partner, or relayed by a node of this org), so
    /// that their events in threads shared with them can be authorised. Certificates of this
    /// org, and any for a key this org certifies, are ignored: this org's come from its
    /// directory. Answers how many were new.
    /// Reopens `thread` if it is snoozed until a time that has come: a status event the node
    /// signs (every node may do it; two reopenings are one state). `None` if it was not due.
    pub async fn wake(&self, thread: ThreadId) -> Result<Option<EventId>, IngestError> {
        self.call(|reply| Request::Wake(thread, reply)).await
    }

    /// Writes records of the admin trees (agents, tokens: what `threadline agent` and
    /// `threadline bridge add` change) with the next group commit; answers how many once they
    /// are durable. They take effect at once: every request reads its token from the store.
    pub async fn write_records(
        &self,
        records: Vec<crate::store::TreeRecord>,
    ) -> Result<usize, IngestError> {
        self.call(|reply| Request::Records(records, reply)).await
    }

    pub async fn add_partner_certificates(
        &self,
        certificates: Vec<threadline_protocol::Certificate>,
    ) -> Result<usize, IngestError> {
        self.call(|reply| Request::Certificates(certificates, reply))
            .await
    }

    /// Deletes the attachment files no event refers to that were last stored more than
    /// `grace` ago; how many went. In the writer, so no event that refers to a file is stored
    /// while its file goes.
    pub async fn sweep_unused_blobs(
        &self,
        grace: std::time::Duration,
    ) -> Result<usize, IngestError> {
        self.call(|reply| Request::SweepBlobs(grace, reply)).await
    }

    /// A live stream of what changes.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.live.subscribe()
    }

    /// The thread of the next customer's message that comes in on this node (not from a
    /// peer) on `live`; `None` once the node closes (see [`Ingest::next_local_of`]).
    pub async fn next_local_inbound(
        &self,
        live: &mut broadcast::Receiver<LiveEvent>,
    ) -> Option<(ThreadId, EventId)> {
        self.next_local_of(live, &["thread.message.inbound"])
            .await
            .map(|(thread, event, _)| (thread, event))
    }

    /// The next thread event of one of `kinds` made on this node (not from a peer) on
    /// `live`, with its kind; `None` once the node closes. Changes a slow reader missed are
    /// skipped: their conversations are the agents' to handle.
    pub async fn next_local_of(
        &self,
        live: &mut broadcast::Receiver<LiveEvent>,
        kinds: &[&'static str],
    ) -> Option<(ThreadId, EventId, &'static str)> {
        loop {
            let change = tokio::select! {
                () = self.closing() => return None,
                change = live.recv() => change,
            };
            match change {
                Ok(LiveEvent {
                    scope: ScopeId::Thread(thread),
                    event,
                    kind,
                    local: true,
                }) if kinds.contains(&kind) => return Some((thread, event, kind)),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Resolves when the node starts shutting down (long-lived responses end then).
    /// Cancel-safe.
    pub async fn closing(&self) {
        let mut closing = self.closing.clone();
        // An error means the sender is gone: the node is stopping too.
        let _ = closing.wait_for(|closing| *closing).await;
    }

    /// The org's contact directory (read-only use).
    pub fn directory(&self) -> &Arc<RwLock<Directory>> {
        &self.directory
    }

    /// The contact directory, read-locked (hold it briefly: the writer waits for it).
    pub fn read_directory(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.directory
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store (read-only use: all writes go through the pipeline).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Who is here right now (agents with the inbox open, typing).
    pub fn presence(&self) -> &crate::presence::Presence {
        &self.presence
    }

    /// Notes that a built-in bridge of `channel` runs in this node.
    pub fn builtin_bridge_started(&self, channel: ChannelKind) {
        let mut set = self
            .builtin_bridges
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *set = set.with(channel);
    }

    /// Whether this node has a bridge that delivers to `channel`: a built-in one, or a
    /// standalone one it gave a bridge token (which takes the channel's queue when it runs).
    pub fn delivers_to(&self, channel: ChannelKind) -> Result<bool, StoreError> {
        let builtin = self
            .builtin_bridges
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(channel);
        if builtin {
            return Ok(true);
        }
        for entry in self.store.tree(crate::store::TreeName::Tokens).iter() {
            let (_, value) = entry.map_err(StoreError::from)?;
            let token: crate::store::TokenRecord = crate::store::decode("tokens", &value)?;
            if token.role == crate::store::TokenRole::Bridge(channel) && !token.revoked {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Lets agents answer on `channel` for 7 days with the `HUMAN_AGENT` tag (the page has it).
    pub fn allow_human_agent(&self, channel: ChannelKind) {
        let mut set = self
            .human_agent
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *set = set.with(channel);
    }

    /// Whether a reply may go out now on the thread's route (see
    /// [`threadline_bridges::window::ReplyWindow`]); `None` for a thread with no route.
    pub fn reply_window(
        &self,
        thread: ThreadId,
        state: &threadline_protocol::ThreadState,
    ) -> Result<Option<(ChannelKind, threadline_bridges::window::ReplyWindow)>, StoreError> {
        let Some(route) = state.route else {
            return Ok(None);
        };
        let channel = route.channel;
        let tagged = self
            .human_agent
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(channel);
        let now = crate::clock::now();
        let window = threadline_bridges::window::ReplyWindow::of(channel, None, now, tagged);
        if window == threadline_bridges::window::ReplyWindow::Always {
            return Ok(Some((channel, window)));
        }
        let last = match self.store.thread_facts(&thread)? {
            Some(facts) => facts.last_inbound.get(&channel).copied(),
            None => crate::conversation::last_customer_message(&self.store, thread, channel)?,
        };
        Ok(Some((
            channel,
            threadline_bridges::window::ReplyWindow::of(channel, last, now, tagged),
        )))
    }

    /// What replication is doing (for the API).
    pub fn replication(&self) -> &crate::replication_status::Status {
        &self.replication
    }

    /// Copies the store into `to`, a folder that must not exist, consistently: the writer does
    /// it after a batch is durable and before it takes the next, so the copy holds every
    /// request answered before it and nothing half-done. Requests wait meanwhile. Answers the
    /// bytes copied.
    pub async fn backup(&self, to: std::path::PathBuf) -> Result<u64, IngestError> {
        self.call(|reply| Request::Backup(to, reply)).await
    }

    /// The thread list's index.
    pub fn thread_index(&self) -> &RwLock<crate::thread_index::ThreadIndex> {
        &self.thread_index
    }

    /// Message search.
    pub fn message_search(&self) -> &Arc<crate::message_search::MessageSearch> {
        &self.message_search
    }

    /// Contact search.
    pub fn contact_search(&self) -> &RwLock<crate::contact_search::ContactSearch> {
        &self.contact_search
    }

    /// Sets the service level targets (`[sla]`).
    pub fn set_sla(&self, policy: crate::sla::SlaPolicy) {
        *self
            .sla
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
    }

    /// The service level targets.
    pub fn sla(&self) -> crate::sla::SlaPolicy {
        *self
            .sla
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The "verify this email" codes ([`crate::email_verification`]).
    pub fn email_verification(&self) -> &crate::email_verification::EmailVerification {
        &self.email_verification
    }

    /// Waits for the agents to be this caller's to change (see `admin_requests`).
    pub async fn agent_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.agent_changes.lock().await
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    async fn call<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(request(reply))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        answer.await.map_err(|_| IngestError::ShuttingDown)?
    }
}
