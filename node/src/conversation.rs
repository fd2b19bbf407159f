//! A customer's view of a conversation on one handle: what a bridge may show the customer
//! (the web chat's history). Only the messages exchanged on that handle: the customer's own
//! messages written from it, and the replies sent while the thread's route pointed at it.
//! Nothing internal (notes, assignments, labels), nothing from the customer's other handles:
//! whoever holds one handle (a browser's session, a phone) sees only what went through it.

use std::sync::PoisonError;

use threadline_bridges::sdk::ConversationEntry;
use threadline_protocol::{
    channel::Handle,
    event::{Direction, EventKind, ThreadKind},
    thread::Reader,
    Event, ScopeId,
};

use crate::ingest::Ingest;
use crate::store::StoreError;

/// The messages exchanged on `handle`, oldest first; empty if the handle is unknown.
pub fn on_handle(ingest: &Ingest, handle: &Handle) -> Result<Vec<ConversationEntry>, StoreError> {
    let members = {
        let directory = ingest
            .directory()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match directory.state().resolve(handle) {
            Some(contact) => directory.state().same_customer(contact),
            None => return Ok(Vec::new()),
        }
    };
    let store = ingest.store();
    let mut entries: Vec<(usize, ConversationEntry)> = Vec::new();
    for member in members {
        for thread in store.contact_threads(&member)? {
            let Some(state) = store.thread_state(&thread)? else {
                continue;
            };
            let mut routed_here = false;
            let first_of_thread = entries.len();
            let mut positions = std::collections::HashMap::new();
            let events = store.log_events(&ScopeId::Thread(thread))?;
            let receipts = best_receipts(&events);
            for (position, event) in events.into_iter().enumerate() {
                let id = event.id()?;
                positions.insert(id, position);
                let Event {
                    signed, content, ..
                } = event;
                let header = &signed.header;
                let handle_is_ours = content
                    .as_ref()
                    .and_then(|c| c.handle.as_ref())
                    .is_some_and(|h| h == handle);
                let inbound = match &header.kind {
                    // The events that set the route (see the thread fold).
                    EventKind::Thread(ThreadKind::Opened { .. } | ThreadKind::HandOff { .. }) => {
                        // The route moves wherever the event says; if its content is erased,
                        // that is nowhere this handle can know of.
                        if header.content_hash.is_some() {
                            routed_here = handle_is_ours;
                        }
                        continue;
                    }
                    EventKind::Thread(ThreadKind::Message {
                        direction: Direction::Inbound { .. },
                    }) => {
                        routed_here = handle_is_ours;
                        if !handle_is_ours {
                            continue;
                        }
                        true
                    }
                    EventKind::Thread(ThreadKind::Message {
                        direction: Direction::Outbound,
                    }) if routed_here => false,
                    _ => continue,
                };
                entries.push((
                    position,
                    ConversationEntry {
                        thread,
                        event: id,
                        depth: header.depth,
                        inbound,
                        text: content.as_ref().map(|c| c.text.clone()),
                        at: header.author_time,
                        receipt: receipts.get(&id).copied(),
                        seen: false,
                        routed_to: state.route.map(|route| route.channel),
                        external_id: content.as_ref().and_then(|c| c.external_id.clone()),
                        attachments: content
                            .as_ref()
                            .map(|c| c.attachments.clone())
                            .unwrap_or_default(),
                    },
                ));
            }
            // An agent's read mark covers everything up to it in the thread's order.
            let seen_up_to = state
                .read_marks
                .iter()
                .filter(|(reader, _)| matches!(reader, Reader::Agent(_)))
                .filter_map(|(_, up_to)| positions.get(up_to))
                .max();
            if let Some(seen_up_to) = seen_up_to {
                for (position, entry) in &mut entries[first_of_thread..] {
                    entry.seen = entry.inbound && *position <= *seen_up_to;
                }
            }
        }
    }
    entries.sort_by_key(|(_, entry)| (entry.at, entry.event));
    Ok(entries.into_iter().map(|(_, entry)| entry).collect())
}

/// When the customer last wrote on `channel` in `thread` (the author time of their latest
/// message there).
pub fn last_customer_message(
    store: &crate::store::Store,
    thread: threadline_protocol::ThreadId,
    channel: threadline_protocol::ChannelKind,
) -> Result<Option<threadline_protocol::Timestamp>, StoreError> {
    let mut last = None;
    for (_, event) in store.log_with_ids(&ScopeId::Thread(thread))? {
        let header = &event.signed.header;
        if header.kind
            == (EventKind::Thread(ThreadKind::Message {
                direction: Direction::Inbound { channel },
            }))
        {
            last = last.max(Some(header.author_time));
        }
    }
    Ok(last)
}

/// The messages of `thread`, oldest first, if its route is on `channel` (a bridge of that
/// channel sends its replies); `None` otherwise.
pub fn of_thread(
    ingest: &Ingest,
    thread: threadline_protocol::ThreadId,
    channel: threadline_protocol::ChannelKind,
) -> Result<Option<Vec<threadline_bridges::sdk::ThreadMessage>>, StoreError> {
    let store = ingest.store();
    let Some(state) = store.thread_state(&thread)? else {
        return Ok(None);
    };
    if state.route.map(|route| route.channel) != Some(channel) {
        return Ok(None);
    }
    let mut messages = Vec::new();
    for (id, event) in store.log_with_ids(&ScopeId::Thread(thread))? {
        let header = &event.signed.header;
        let (inbound, on) = match &header.kind {
            EventKind::Thread(ThreadKind::Message {
                direction: Direction::Inbound { channel },
            }) => (true, Some(*channel)),
            EventKind::Thread(ThreadKind::Message {
                direction: Direction::Outbound,
            }) => (false, None),
            _ => continue,
        };
        messages.push(threadline_bridges::sdk::ThreadMessage {
            event: id,
            depth: header.depth,
            inbound,
            channel: on,
            text: event.content.as_ref().map(|c| c.text.clone()),
            at: header.author_time,
            external_id: event
                .content
                .as_ref()
                .and_then(|c| c.external_id.as_ref())
                .map(|id| id.as_str().to_owned()),
            subject: event
                .content
                .as_ref()
                .and_then(|c| c.subject.as_ref())
                .map(|s| s.to_string()),
            attachments: event.content.map(|c| c.attachments).unwrap_or_default(),
        });
    }
    Ok(Some(messages))
}

/// A queued delivery with what its reply sends besides its text.
#[derive(Debug)]
pub struct QueuedReply {
    /// The queue's record.
    pub delivery: crate::store::Delivery,
    /// The reply's files.
    pub attachments: Vec<threadline_protocol::event::Attachment>,
    /// The message template it goes as, if it is one.
    pub template: Option<threadline_protocol::event::Template>,
    /// The app's id of the customer's message it answers, if the agent chose one (and the
    /// app gave it an id).
    pub reply_to: Option<threadline_protocol::name::ExternalId>,
    /// The customer withdrew consent on the channel (an SMS STOP): it is not to be sent.
    pub opted_out: bool,
}

/// The oldest `limit` deliveries queued for `channel`, each with its reply's attachments and
/// template (none if the reply was erased meanwhile), and whether its customer opted out.
pub fn deliveries(
    store: &crate::store::Store,
    directory: &std::sync::RwLock<threadline_protocol::Directory>,
    channel: threadline_protocol::ChannelKind,
    limit: usize,
) -> Result<Vec<QueuedReply>, StoreError> {
    let mut queued = store
        .deliveries(channel, limit)?
        .into_iter()
        .map(|delivery| {
            let scope = ScopeId::Thread(delivery.thread);
            let content = store
                .event(&scope, &delivery.event)?
                .and_then(|event| event.content)
                .unwrap_or_default();
            let reply_to = match content.reply_to {
                Some(answered) => store
                    .event(&scope, &answered)?
                    .and_then(|event| event.content)
                    .and_then(|content| content.external_id),
                None => None,
            };
            Ok(QueuedReply {
                delivery,
                attachments: content.attachments,
                template: content.template.map(|template| *template),
                reply_to,
                opted_out: false,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // The directory is read once the store's reads are done: the writer waits for no I/O.
    let directory = directory
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for reply in &mut queued {
        reply.opted_out = crate::consent::withdrawn(directory.state(), &reply.delivery.handle);
    }
    Ok(queued)
}

/// Whether a bridge of `channel` may read a blob: a bridge of the channel uploaded it, an
/// event of a thread whose replies go to that channel refers to it, or a reply queued for
/// that channel (handed off meanwhile) does. A bridge sees what it sends or sent, nothing else.
pub fn blob_for_channel(
    store: &crate::store::Store,
    blob: &threadline_protocol::id::BlobHash,
    channel: threadline_protocol::ChannelKind,
) -> Result<bool, StoreError> {
    if store.uploaded_by(channel, blob)? {
        return Ok(true);
    }
    let refs = store.blob_refs(blob)?;
    for (scope, _) in &refs {
        let ScopeId::Thread(thread) = scope else {
            continue;
        };
        let routed = store
            .thread_state(thread)?
            .and_then(|state| state.route)
            .is_some_and(|route| route.channel == channel);
        if routed {
            return Ok(true);
        }
    }
    if refs.is_empty() {
        return Ok(false);
    }
    let queued = store.deliveries(channel, usize::MAX)?;
    Ok(refs
        .iter()
        .any(|(_, event)| queued.iter().any(|delivery| delivery.event == *event)))
}

/// The best receipt of each reply of a log (read > delivered > failed), as the thread's state
/// folds them (the stored state leaves them out: they grow with the thread).
fn best_receipts(
    events: &[Event],
) -> std::collections::HashMap<threadline_protocol::EventId, threadline_protocol::event::ReceiptKind>
{
    let mut best = std::collections::HashMap::new();
    for event in events {
        if let EventKind::Thread(ThreadKind::Receipt {
            target, receipt, ..
        }) = &event.signed.header.kind
        {
            let kind = best.entry(*target).or_insert(*receipt);
            *kind = (*kind).max(*receipt);
        }
    }
    best
}
