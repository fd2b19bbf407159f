//! The node's own limits: how much one request may ask for, how much a thread or a contact may
//! hold through this node's API, and how long and how much one caller may hold the node.
//!
//! These are node policy, not protocol rules (those are `threadline_protocol::limits`, and
//! hold for every event from every source). A node enforces these on what its agents and
//! bridges ask of it, so that no request can stall the node; events replicated from peers are
//! not held to them (a replica refusing what another node stored would diverge).
//!
//! How a refusal looks in the API (docs/API.md): `413` when the request itself is over a limit,
//! `422` when it would take a thread or a contact past its cap, `429` when the caller has too
//! much in flight, `408` when a body comes too slowly, `503 busy` when the uploads in flight
//! fill the node's upload memory.

use std::time::Duration;

/// Labels one `POST /threads/{id}/labels` may add and remove together. Each is an event the
/// writer signs and stores while every other writer waits; 32 is more than any person tags at
/// once and keeps one request's work to a few milliseconds.
pub const MAX_LABELS_PER_REQUEST: usize = 32;
/// Labels a thread may carry (added through this node). Labels sort and filter an inbox; a
/// thread with more is not sorted by them any more, and every view of the thread lists them
/// all.
pub const MAX_LABELS_PER_THREAD: usize = 64;
/// Orgs a thread may be shared with, the owner included. Every member org's nodes get every
/// event of the thread; a conversation shared with more than a handful of partners is a
/// mailing list.
pub const MAX_MEMBERS_PER_THREAD: usize = 16;
/// Handles that linking (by an agent, or a bridge vouching for a customer) may give one
/// contact. A customer has a few addresses and a handle per browser they chatted from;
/// a contact with hundreds is a shared inbox or an abuse, and every view of the contact lists
/// them all. Merging two contacts is not refused by it (a merge joins what is there).
pub const MAX_HANDLES_PER_CONTACT: usize = 256;

/// Attributes a contact may have (an agent's notes on a customer: a company, a plan, a
/// phone number). Every view of the contact lists them all.
pub const MAX_ATTRIBUTES_PER_CONTACT: usize = 64;

/// Longest attribute value an agent may set through the API, in bytes.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;

/// Canned replies an org may have (every inbox loads them all).
pub const MAX_CANNED_REPLIES: usize = 500;

/// Longest canned reply, in bytes.
pub const MAX_CANNED_REPLY_BYTES: usize = 4096;

/// Teams an org may have (every inbox lists them all).
pub const MAX_TEAMS: usize = 200;

/// Outbound webhook subscriptions an org may have.
pub const MAX_WEBHOOKS: usize = 20;

/// Whether `text` is a name of the org's vocabulary as agents type it (a canned reply's
/// shortcode, a team, a webhook): 1 to `max` lower-case ASCII letters, digits, `-` and `_`.
pub fn is_org_name(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Longest team name, in bytes (lower-case letters, digits, `-` and `_`).
pub const MAX_TEAM_NAME_BYTES: usize = 32;

/// Longest shortcode of a canned reply, in bytes (lower-case letters, digits, `-` and `_`).
pub const MAX_SHORTCODE_BYTES: usize = 32;

/// Requests one agent token may have in flight (from headers to the end of the answer, a live
/// stream included). A person's inbox needs a few: a live stream per tab and the requests of a
/// click; 32 leaves room for many tabs and a script, and keeps one token from holding the
/// node's memory with a pile of half-sent bodies.
pub const MAX_REQUESTS_PER_AGENT_TOKEN: usize = 32;
/// Requests one bridge token may have in flight. A bridge speaks for all its channel's
/// customers at once (a standalone web chat sends each visitor's message as it comes), so it
/// gets more room than a person.
pub const MAX_REQUESTS_PER_BRIDGE_TOKEN: usize = 256;
/// Requests one address may have in flight without a valid token (the inbox's and the web
/// chat's files, the web chat's WebSocket handshake, refused requests). Those are answered at
/// once, so 64 is a flood, not a page load. Behind a reverse proxy every visitor shares the
/// proxy's address: it is still 64 at the same instant, not per minute. Loopback is not exempt.
pub const MAX_REQUESTS_PER_ADDRESS: usize = 64;

/// How long a request body may take to start flowing before [`MIN_BODY_BYTES_PER_SEC`] holds.
/// Covers a slow start and a client that waits for `100 Continue`.
pub const BODY_GRACE: Duration = Duration::from_secs(5);
/// The least a request body must average after [`BODY_GRACE`], or it is cut with `408
/// too_slow`. The slowest mobile uplinks still in use do about 30 KiB/s; a client that sends a
/// byte and holds the connection is cut a few seconds in.
pub const MIN_BODY_BYTES_PER_SEC: u64 = 16 * 1024;

/// Uploads one token may have in flight. A bridge sends a message's files one after the other
/// and an agent attaches a few; two at once is enough for either, and a token that holds its
/// slots with slow uploads holds nobody else's.
pub const UPLOADS_PER_TOKEN: usize = 2;
/// Bytes of uploads the node holds in memory at once (an upload is read whole, then stored).
/// Each upload reserves what its `Content-Length` announces (the largest attachment if it
/// announces nothing) before it is read: four of the largest files, or many small ones.
pub const UPLOAD_MEMORY_BYTES: u64 = 4 * threadline_protocol::limits::MAX_BLOB_BYTES;
/// How long an upload waits for room in [`UPLOAD_MEMORY_BYTES`] before it is answered
/// `503 busy` (retry later). Room comes back as uploads finish or are cut for being slow.
pub const UPLOAD_QUEUE_WAIT: Duration = Duration::from_secs(30);

/// A cap of a thread or a contact, which an action would take it past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cap {
    /// [`MAX_LABELS_PER_THREAD`].
    ThreadLabels,
    /// [`MAX_MEMBERS_PER_THREAD`].
    ThreadMembers,
    /// [`MAX_HANDLES_PER_CONTACT`].
    ContactHandles,
    /// [`MAX_ATTRIBUTES_PER_CONTACT`].
    ContactAttributes,
    /// [`MAX_CANNED_REPLIES`].
    CannedReplies,
    /// [`MAX_TEAMS`].
    Teams,
    /// [`MAX_WEBHOOKS`].
    Webhooks,
}

impl Cap {
    /// The cap's value.
    pub fn max(self) -> usize {
        match self {
            Cap::ThreadLabels => MAX_LABELS_PER_THREAD,
            Cap::ThreadMembers => MAX_MEMBERS_PER_THREAD,
            Cap::ContactHandles => MAX_HANDLES_PER_CONTACT,
            Cap::ContactAttributes => MAX_ATTRIBUTES_PER_CONTACT,
            Cap::CannedReplies => MAX_CANNED_REPLIES,
            Cap::Teams => MAX_TEAMS,
            Cap::Webhooks => MAX_WEBHOOKS,
        }
    }

    /// The API's stable error code for it.
    pub fn code(self) -> &'static str {
        match self {
            Cap::ThreadLabels => "thread_labels_full",
            Cap::ThreadMembers => "thread_members_full",
            Cap::ContactHandles => "contact_handles_full",
            Cap::ContactAttributes => "contact_attributes_full",
            Cap::CannedReplies => "canned_replies_full",
            Cap::Teams => "teams_full",
            Cap::Webhooks => "webhooks_full",
        }
    }

    /// What it counts, for messages.
    fn what(self) -> &'static str {
        match self {
            Cap::ThreadLabels => "labels per thread",
            Cap::ThreadMembers => "member orgs per thread (the owner included)",
            Cap::ContactHandles => "handles per contact",
            Cap::ContactAttributes => "attributes per contact",
            Cap::CannedReplies => "canned replies per org",
            Cap::Teams => "teams per org",
            Cap::Webhooks => "webhook subscriptions per org",
        }
    }
}

impl std::fmt::Display for Cap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at most {} {}", self.max(), self.what())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_says_its_value_and_what_it_counts() {
        assert_eq!(
            Cap::ThreadLabels.to_string(),
            "at most 64 labels per thread"
        );
        assert_eq!(
            Cap::ContactHandles.to_string(),
            "at most 256 handles per contact"
        );
    }
}
