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
    /// The link for the built-in bridge of `channel`.
    pub fn new(ingest: Ingest, channel: ChannelKind) -> Self {
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
        Ok(
            crate::conversation::deliveries(self.ingest.store(), self.channel, limit)
                .map_err(unavailable)?
                .into_iter()
                .map(|queued| sdk::Delivery {
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
                .collect(),
        )
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
