//! Hosting built-in bridges: the in-process [`NodeLink`], straight onto the ingest pipeline
//! and the store. A built-in bridge runs the same SDK code as a standalone one; only its link
//! differs (no HTTP, no token: it is part of the node).

use threadline_bridges::sdk::{self, LinkError, NodeLink};
use threadline_protocol::{channel::Handle, id::BlobHash, ChannelKind, Event};

use crate::api::ApiError;
use crate::ingest::{DirectoryAction, Ingest, IngestError, Submitted};
use crate::store::{BlobError, StoreError};
use threadline_protocol::name::AttributeKey;

/// The link of a bridge running inside the node, for one channel.
#[derive(Debug, Clone)]
pub struct LocalLink {
    ingest: Ingest,
    channel: ChannelKind,
}

impl LocalLink {
    /// The link of a bridge of `channel` to `ingest` (a standalone bridge's request, through
    /// the bridge API).
    pub fn new(ingest: Ingest, channel: ChannelKind) -> Self {
        LocalLink { ingest, channel }
    }

    /// The link of this node's built-in bridge of `channel`: the node delivers to `channel`
    /// from now on (see [`Ingest::delivers_to`]).
    pub fn builtin(ingest: Ingest, channel: ChannelKind) -> Self {
        ingest.builtin_bridge_started(channel);
        LocalLink { ingest, channel }
    }

    /// The pipeline behind the link.
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }
}

/// The node's error as a bridge sees it: "try again" for what passes (the node is stopping,
/// the store failed, an event's parents have not arrived yet), "refused" with the API's code
/// for the rest.
fn link_error(err: IngestError) -> LinkError {
    let retryable = match &err {
        // A missing attachment is uploaded again by the retry.
        IngestError::ShuttingDown
        | IngestError::Store(_)
        | IngestError::NotDurable { .. }
        | IngestError::MissingBlob { .. } => true,
        IngestError::Refused(inner) => inner.is_retryable(),
        _ => false,
    };
    if retryable {
        return LinkError::Unavailable(err.to_string());
    }
    let message = err.to_string();
    LinkError::Refused {
        code: ApiError::from(err).code().to_owned(),
        message,
    }
}

impl LocalLink {
    /// Refuses a handle of another channel than the bridge's.
    fn own(&self, handle: &Handle) -> Result<(), LinkError> {
        if handle.channel() == self.channel {
            return Ok(());
        }
        Err(LinkError::Refused {
            code: "forbidden".to_owned(),
            message: format!("a {} bridge cannot speak for {handle}", self.channel),
        })
    }

    /// The contact of a handle that has none yet (made with its first thread, as when the
    /// customer writes).
    async fn contact_for(
        &self,
        handle: &Handle,
    ) -> Result<threadline_protocol::ContactId, LinkError> {
        Ok(self
            .ingest
            .resolve(handle.clone())
            .await
            .map_err(link_error)?
            .contact)
    }
}

impl NodeLink for LocalLink {
    async fn resolve(
        &self,
        handle: &Handle,
        hint: Option<&sdk::ThreadHint>,
        sender: sdk::Sender<'_>,
    ) -> Result<sdk::Resolved, LinkError> {
        if handle.channel() != self.channel {
            return Err(LinkError::Refused {
                code: "forbidden".to_owned(),
                message: format!(
                    "a {} bridge cannot resolve a {} handle",
                    self.channel,
                    handle.channel()
                ),
            });
        }
        let resolved = self
            .ingest
            .resolve_for(
                handle.clone(),
                hint.map(crate::ingest::ThreadRef::from),
                crate::ingest::Customer {
                    name: sender.name.map(str::to_owned),
                    automatic: sender.automatic,
                },
            )
            .await
            .map_err(link_error)?;
        Ok(sdk::Resolved {
            contact: resolved.contact,
            thread: resolved.thread,
            parents: resolved.parents,
            depth: resolved.depth,
        })
    }

    async fn submit(
        &self,
        events: Vec<Event>,
    ) -> Result<Vec<Result<sdk::Submitted, LinkError>>, LinkError> {
        Ok(self
            .ingest
            .submit(events)
            .await
            .into_iter()
            .map(|result| match result {
                Ok(Submitted::Stored(id)) => Ok(sdk::Submitted::Stored(id)),
                Ok(Submitted::Duplicate(id)) => Ok(sdk::Submitted::Duplicate(id)),
                Err(err) => Err(link_error(err)),
            })
            .collect())
    }

    async fn deliveries(&self, limit: usize) -> Result<Vec<sdk::Delivery>, LinkError> {
        let unavailable = |err: crate::store::StoreError| LinkError::Unavailable(err.to_string());
        let queued = crate::conversation::deliveries(
            self.ingest.store(),
            self.ingest.directory(),
            self.channel,
            limit,
        )
        .map_err(unavailable)?;
        Ok(queued
            .into_iter()
            .map(|queued| sdk::Delivery {
                opted_out: queued.opted_out,
                seq: queued.delivery.seq,
                thread: queued.delivery.thread,
                event: queued.delivery.event,
                depth: queued.delivery.depth,
                handle: queued.delivery.handle,
                text: queued.delivery.text,
                attachments: queued.attachments,
                template: queued.template,
                reply_to: queued.reply_to,
            })
            .collect())
    }

    async fn put_blob(&self, bytes: Vec<u8>) -> Result<BlobHash, LinkError> {
        let store = self.ingest.store().clone();
        let channel = self.channel;
        let put = move || -> Result<BlobHash, LinkError> {
            let blob = store.blobs().put(&bytes).map_err(|err| match err {
                BlobError::TooLarge { .. } => LinkError::Refused {
                    code: "too_large".to_owned(),
                    message: err.to_string(),
                },
                err => LinkError::Unavailable(err.to_string()),
            })?;
            // Only the channel that sent the bytes may refer to them.
            store
                .record_upload(channel, &blob)
                .map_err(|err| LinkError::Unavailable(err.to_string()))?;
            Ok(blob)
        };
        tokio::task::spawn_blocking(put)
            .await
            .unwrap_or_else(|err| {
                Err(LinkError::Unavailable(format!(
                    "storing task failed: {err}"
                )))
            })
    }

    async fn blob(&self, blob: BlobHash) -> Result<Option<Vec<u8>>, LinkError> {
        let store = self.ingest.store().clone();
        let channel = self.channel;
        let read = tokio::task::spawn_blocking(move || {
            if !crate::conversation::blob_for_channel(&store, &blob, channel)? {
                return Ok(None);
            }
            store.blobs().read(&blob).map_err(StoreError::from)
        });
        match read.await {
            Ok(result) => result.map_err(|err| LinkError::Unavailable(err.to_string())),
            Err(err) => Err(LinkError::Unavailable(format!(
                "reading task failed: {err}"
            ))),
        }
    }

    async fn conversation(
        &self,
        handle: &Handle,
    ) -> Result<Vec<sdk::ConversationEntry>, LinkError> {
        if handle.channel() != self.channel {
            return Err(LinkError::Refused {
                code: "forbidden".to_owned(),
                message: format!("a {} bridge cannot read {handle}", self.channel),
            });
        }
        crate::conversation::on_handle(&self.ingest, handle)
            .map_err(|err| LinkError::Unavailable(err.to_string()))
    }

    async fn thread_messages(
        &self,
        thread: threadline_protocol::ThreadId,
    ) -> Result<Vec<sdk::ThreadMessage>, LinkError> {
        crate::conversation::of_thread(&self.ingest, thread, self.channel)
            .map_err(|err| LinkError::Unavailable(err.to_string()))?
            .ok_or_else(|| LinkError::Refused {
                code: "forbidden".to_owned(),
                message: format!("thread {thread} is not routed to {}", self.channel),
            })
    }

    async fn handoff_code(
        &self,
        handle: &Handle,
        to: ChannelKind,
    ) -> Result<sdk::HandoffCode, LinkError> {
        self.own(handle)?;
        self.ingest
            .issue_handoff(handle.clone(), to)
            .await
            .map_err(link_error)
    }

    async fn continue_with(
        &self,
        handle: &Handle,
        code: &sdk::HandoffCode,
    ) -> Result<Option<threadline_protocol::ThreadId>, LinkError> {
        self.own(handle)?;
        self.ingest
            .continue_with(handle.clone(), code.clone())
            .await
            .map_err(link_error)
    }

    /// Only email addresses can be claimed or vouched for: a bridge speaks for its own
    /// channel's customers, and an address is what websites know of their users. Nothing is
    /// written when the directory already says what the identity says (a logged-in visitor's
    /// every page load), and no thread is opened for a visitor who has not written.
    async fn identify(&self, handle: &Handle, identity: sdk::Identity) -> Result<(), LinkError> {
        let refused = |message: String| LinkError::Refused {
            code: "forbidden".to_owned(),
            message,
        };
        if handle.channel() != self.channel {
            return Err(refused(format!(
                "a {} bridge cannot speak for {handle}",
                self.channel
            )));
        }
        let address = match &identity {
            sdk::Identity::Claimed(address) | sdk::Identity::Vouched(address) => address,
        };
        if address.channel() != ChannelKind::Email {
            return Err(refused(format!(
                "only email addresses can be claimed or vouched for, not {address}"
            )));
        }
        let (customer, owner) = {
            let directory = self
                .ingest
                .directory()
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                directory.state().resolve(handle),
                directory.state().resolve(address),
            )
        };
        let action = match (identity, customer, owner) {
            (sdk::Identity::Vouched(_), Some(customer), Some(owner)) if customer == owner => {
                return Ok(())
            }
            // A new browser of a known customer: it joins them, no new contact.
            (sdk::Identity::Vouched(_), None, Some(owner)) => {
                DirectoryAction::LinkHandle(owner, handle.clone())
            }
            (sdk::Identity::Vouched(_), Some(customer), Some(owner)) => DirectoryAction::Merge {
                from: customer,
                into: owner,
            },
            (sdk::Identity::Vouched(address), customer, None) => {
                let customer = match customer {
                    Some(customer) => customer,
                    None => self.contact_for(handle).await?,
                };
                DirectoryAction::LinkHandle(customer, address)
            }
            (sdk::Identity::Claimed(address), customer, _) => {
                let customer = match customer {
                    Some(customer) => customer,
                    None => self.contact_for(handle).await?,
                };
                DirectoryAction::SetAttribute {
                    contact: customer,
                    key: AttributeKey::new(format!("unverified {}", address.channel()))
                        .map_err(|err| refused(err.to_string()))?,
                    value: address.address().to_owned(),
                }
            }
        };
        self.ingest
            .change_directory(action)
            .await
            .map(drop)
            .map_err(link_error)
    }

    async fn consent(&self, handle: &Handle, granted: bool) -> Result<(), LinkError> {
        self.own(handle)?;
        let known = self
            .ingest
            .directory()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .state()
            .resolve(handle);
        let contact = match known {
            Some(contact) => contact,
            None => self.contact_for(handle).await?,
        };
        self.ingest
            .change_directory(DirectoryAction::Consent {
                contact,
                channel: Some(self.channel),
                granted,
            })
            .await
            .map(drop)
            .map_err(link_error)
    }

    async fn customer_typing(&self, handle: &Handle) {
        // The thread the customer's next message goes to (as `resolve` finds it).
        let candidates = {
            let directory = self
                .ingest
                .directory()
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match directory.state().resolve(handle) {
                Some(contact) => directory.state().same_customer(contact),
                None => return,
            }
        };
        let store = self.ingest.store();
        let open = candidates.iter().find_map(|contact| {
            let thread = store.open_thread(contact).ok()??;
            let state = store.thread_state(&thread).ok()??;
            (state.status != threadline_protocol::event::Status::Resolved).then_some(thread)
        });
        if let Some(thread) = open {
            self.ingest
                .presence()
                .typing(crate::presence::Typing::Customer(thread));
        }
    }

    async fn agents_online(&self) -> bool {
        self.ingest.presence().agents_online()
    }

    /// Durable with the node's next flush, not before: a crash in between delivers the reply
    /// again (deliveries are at least once; the receipt that came first is kept).
    async fn ack(&self, seq: u64) -> Result<(), LinkError> {
        self.ingest
            .store()
            .ack_delivery(self.channel, seq)
            .map(drop)
            .map_err(|err| LinkError::Unavailable(err.to_string()))
    }
}

/// A built-in bridge as the node drives it ([`drive`]).
pub trait Driven: Send + Sync + 'static {
    /// Sends up to `limit` queued replies; how many left the queue.
    fn deliver(
        &self,
        limit: usize,
    ) -> impl std::future::Future<Output = Result<usize, sdk::BridgeError>> + Send;

    /// An agent types in a thread whose replies go to `handle`.
    fn agent_typing(&self, _handle: &Handle) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }

    /// An agent read the thread whose replies go to `handle`, up to `up_to`.
    fn agent_read(
        &self,
        _handle: &Handle,
        _up_to: threadline_protocol::EventId,
    ) -> impl std::future::Future<Output = ()> + Send {
        async {}
    }
}

/// Replies sent per round of [`drive`].
const DELIVERY_BATCH: usize = 64;

/// Drives a built-in bridge of `channel` until the node closes: its replies sent as soon as
/// they are stored (and every 2 s: retries), in rounds while rounds come back full; agents'
/// typing and read marks in the threads routed to `channel` passed on.
pub async fn drive<B: Driven>(ingest: Ingest, channel: ChannelKind, bridge: std::sync::Arc<B>) {
    use crate::presence::Typing;
    use tokio::sync::broadcast::error::RecvError;
    let mut changes = ingest.subscribe();
    let mut typing = ingest.presence().subscribe_typing();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    let routed = |thread| {
        crate::server::route_handle(&ingest, thread).filter(|handle| handle.channel() == channel)
    };
    loop {
        let deliver = tokio::select! {
            change = changes.recv() => match change {
                Ok(change) if change.kind == "thread.message.outbound" => true,
                Ok(change) if change.kind == "thread.read" => {
                    if let Some((thread, threadline_protocol::event::ThreadKind::Read { up_to })) =
                        crate::server::thread_event(&ingest, change.scope, change.event)
                    {
                        if let Some(handle) = routed(thread) {
                            bridge.agent_read(&handle, up_to).await;
                        }
                    }
                    false
                }
                Ok(_) => false,
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => break,
            },
            signal = typing.recv() => match signal {
                Ok(Typing::Agent(thread)) => {
                    if let Some(handle) = routed(thread) {
                        bridge.agent_typing(&handle).await;
                    }
                    false
                }
                Ok(Typing::Customer(_)) | Err(RecvError::Lagged(_)) => false,
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => true,
            () = ingest.closing() => break,
        };
        if !deliver {
            continue;
        }
        loop {
            match bridge.deliver(DELIVERY_BATCH).await {
                Ok(sent) if sent == DELIVERY_BATCH => continue,
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(%channel, cause = %err, "deliveries failed; retrying");
                    break;
                }
            }
        }
    }
}

impl Driven for threadline_bridges::whatsapp::Whatsapp<LocalLink> {
    async fn deliver(&self, limit: usize) -> Result<usize, sdk::BridgeError> {
        threadline_bridges::whatsapp::Whatsapp::deliver(self, limit).await
    }
}

impl Driven for threadline_bridges::messenger::Messenger<LocalLink> {
    async fn deliver(&self, limit: usize) -> Result<usize, sdk::BridgeError> {
        threadline_bridges::messenger::Messenger::deliver(self, limit).await
    }
}

impl Driven for threadline_bridges::slack::Slack<LocalLink> {
    async fn deliver(&self, limit: usize) -> Result<usize, sdk::BridgeError> {
        threadline_bridges::slack::Slack::deliver(self, limit).await
    }
}

impl Driven for threadline_bridges::sms::Sms<LocalLink> {
    async fn deliver(&self, limit: usize) -> Result<usize, sdk::BridgeError> {
        threadline_bridges::sms::Sms::deliver(self, limit).await
    }
}

impl Driven for threadline_bridges::telegram::Telegram<LocalLink> {
    async fn deliver(&self, limit: usize) -> Result<usize, sdk::BridgeError> {
        threadline_bridges::telegram::Telegram::deliver(self, limit).await
    }

    async fn agent_typing(&self, handle: &Handle) {
        threadline_bridges::telegram::Telegram::agent_typing(self, handle).await;
    }
}

impl Driven for threadline_bridges::matrix::Matrix<LocalLink> {
    async fn deliver(&self, limit: usize) -> Result<usize, sdk::BridgeError> {
        threadline_bridges::matrix::Matrix::deliver(self, limit).await
    }

    async fn agent_typing(&self, handle: &Handle) {
        threadline_bridges::matrix::Matrix::agent_typing(self, handle).await;
    }

    /// The bot marks the customer's message read in the room, by its Matrix event id.
    async fn agent_read(&self, handle: &Handle, up_to: threadline_protocol::EventId) {
        let Ok(entries) = self.bridge().link().conversation(handle).await else {
            return;
        };
        let read = entries
            .iter()
            .find(|entry| entry.event == up_to)
            .and_then(|entry| entry.external_id.clone());
        if let Some(read) = read {
            threadline_bridges::matrix::Matrix::agent_read(self, handle, &read).await;
        }
    }
}
