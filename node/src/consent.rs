//! Consent to be written to: a customer who texts STOP to the business's SMS number has
//! withdrawn it on SMS, and nothing goes to them there until they text START. Consent is kept
//! on the contact's directory record, per channel (the protocol's `Consent` event), so every
//! node of the org enforces it: the reply API refuses a reply up front, and a reply queued
//! before the STOP fails with a receipt instead of reaching the provider.

use threadline_protocol::{
    directory::DirectoryState, thread::ThreadState, ChannelKind, ContactId, Handle,
};

use crate::ingest::Ingest;

/// Whether `contact` withdrew consent on `channel`: its record says so for that channel, or,
/// with nothing said for it, for every channel.
pub fn withdrawn_by(directory: &DirectoryState, contact: ContactId, channel: ChannelKind) -> bool {
    let Some((_, record)) = directory.contact(contact) else {
        return false;
    };
    let said = record
        .consent
        .get(&Some(channel))
        .or_else(|| record.consent.get(&None));
    said == Some(&false)
}

/// Whether the customer of `handle` withdrew consent on the handle's channel.
pub fn withdrawn(directory: &DirectoryState, handle: &Handle) -> bool {
    directory
        .resolve(handle)
        .is_some_and(|contact| withdrawn_by(directory, contact, handle.channel()))
}

/// The channel of the thread's route, if its customer withdrew consent there (the route
/// goes to a handle of the thread's contact, so the contact's consent is what counts).
pub fn withdrawn_on_route(ingest: &Ingest, state: &ThreadState) -> Option<ChannelKind> {
    let channel = state.route?.channel;
    withdrawn_by(ingest.read_directory().state(), state.contact, channel).then_some(channel)
}

/// [`withdrawn`], reading the node's directory.
pub fn withdrawn_on_node(ingest: &Ingest, handle: &Handle) -> bool {
    withdrawn(ingest.read_directory().state(), handle)
}
