//! What an event says: the kinds of thread events and of directory events.
//!
//! Kinds live in the signed header and cannot be erased, so they carry no personal data:
//! customers appear only as [`ContactId`]s here, and handles, text and attribute values go in the
//! erasable [`Content`](super::Content). The order of variants is part of the encoding.

use serde::{Deserialize, Serialize};

use crate::cert::Certificate;
use crate::channel::ChannelKind;
use crate::id::{AgentId, ContactId, EventId};
use crate::key::{OrgId, PublicKey};
use crate::name::{AttributeKey, Label, Shortcode, TeamName, WebhookName};
use crate::time::Timestamp;

/// The kind of an event: a thread event or a directory event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// An event of a thread (a conversation).
    Thread(ThreadKind),
    /// An event of an org's contact directory.
    Directory(DirectoryKind),
}

/// Which way a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// From a customer, introduced by the bridge of `channel`. Content carries the customer's
    /// handle on that channel.
    Inbound {
        /// The channel the customer wrote on.
        channel: ChannelKind,
    },
    /// From the org (an agent's reply), delivered on the thread's route.
    Outbound,
}

/// A thread's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    /// Waiting for the org.
    Open,
    /// Waiting for the customer.
    Pending,
    /// Hidden until a time, then open again.
    Snoozed {
        /// When the snooze ends.
        until: Timestamp,
    },
    /// Done.
    Resolved,
}

/// What a bridge says about an outbound message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReceiptKind {
    /// Sending failed (content carries the reason). Ranks lowest: a later success wins.
    Failed,
    /// The app accepted it for the customer.
    Delivered,
    /// The customer read it.
    Read,
}

impl ReceiptKind {
    /// Every receipt kind, lowest rank first.
    pub const ALL: [ReceiptKind; 3] = [
        ReceiptKind::Failed,
        ReceiptKind::Delivered,
        ReceiptKind::Read,
    ];

    /// Its name in JSON views and APIs: `failed`, `delivered`, `read`.
    pub const fn name(self) -> &'static str {
        match self {
            ReceiptKind::Failed => "failed",
            ReceiptKind::Delivered => "delivered",
            ReceiptKind::Read => "read",
        }
    }

    /// The kind with this [`ReceiptKind::name`].
    pub fn from_name(name: &str) -> Option<ReceiptKind> {
        ReceiptKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// The events of a thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ThreadKind {
    /// Opens a thread: the root, with no parents. Its id is the thread's id.
    Opened {
        /// The owning org: only it changes membership or erases.
        org: OrgId,
        /// The contact the thread is with.
        contact: ContactId,
        /// The channel it started on. Optional content carries the customer's handle.
        channel: ChannelKind,
    },
    /// A message. Content: text, attachments, external id; for inbound, the handle.
    Message {
        /// Inbound or outbound.
        direction: Direction,
    },
    /// An internal note for agents; never delivered to the customer. Content: text.
    Note,
    /// Assigns the thread to an agent, or unassigns it.
    Assign {
        /// The new assignee.
        assignee: Option<AgentId>,
    },
    /// Changes the status.
    Status {
        /// The new status.
        status: Status,
    },
    /// Routes replies to another channel. Content carries the handle to route to.
    HandOff {
        /// The channel to route to.
        channel: ChannelKind,
    },
    /// A bridge's receipt for an outbound message. Content (optional) carries a failure reason.
    Receipt {
        /// The outbound message.
        target: EventId,
        /// The bridge's channel.
        channel: ChannelKind,
        /// What happened.
        receipt: ReceiptKind,
    },
    /// An agent has read the thread up to an event.
    Read {
        /// The last event read.
        up_to: EventId,
    },
    /// Adds a label.
    LabelAdd {
        /// The label.
        label: Label,
    },
    /// Removes a label.
    LabelRemove {
        /// The label.
        label: Label,
    },
    /// Shares the thread with another org (owning org only).
    MemberAdd {
        /// The partner org.
        org: OrgId,
    },
    /// Stops sharing the thread with an org (owning org only; the owner stays).
    MemberRemove {
        /// The partner org.
        org: OrgId,
    },
    /// Erases the content of events (owning org only). Headers stay, so the DAG stays
    /// verifiable; every replica drops the content.
    Erase {
        /// The events whose content is erased, sorted ascending, no duplicates.
        targets: Vec<EventId>,
    },
    /// An automatic reply from the customer's side (an out-of-office, a delivery report),
    /// introduced by the bridge of `channel`. Content: text and the handle, as an inbound
    /// message. Unlike one, it neither reopens the thread nor moves its route, and it is never
    /// answered.
    AutoReply {
        /// The channel it came on.
        channel: ChannelKind,
    },
    /// Assigns the thread to a team of agents, or takes it from its team. Independent of
    /// [`ThreadKind::Assign`]: a thread may have a team and an agent.
    AssignTeam {
        /// The new team.
        team: Option<TeamName>,
    },
}

/// The events of an org's contact directory (one log per org, replicated among its own nodes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DirectoryKind {
    /// The root of the directory: signed by the org key, author time 0, no content. Because
    /// ed25519 signatures are deterministic, every node derives the same genesis event.
    Genesis,
    /// Publishes a certificate of this org.
    Certify {
        /// The certificate (self-authenticating). Boxed: it is several times the size of every
        /// other kind, and kinds are kept in memory by the million.
        certificate: Box<Certificate>,
    },
    /// Revokes a key (org key only). Its events with author time at or after `effective_from`
    /// are refused.
    Revoke {
        /// The revoked key.
        subject: PublicKey,
        /// From when.
        effective_from: Timestamp,
    },
    /// Creates a contact. Optional content: display name as text.
    CreateContact {
        /// The new contact.
        contact: ContactId,
    },
    /// Links a handle (in content) to a contact. A handle already linked to another live contact
    /// stays where it is (first link in the log's order wins): never a crossed wire.
    LinkHandle {
        /// The contact.
        contact: ContactId,
    },
    /// Unlinks a handle (in content) from a contact.
    UnlinkHandle {
        /// The contact.
        contact: ContactId,
    },
    /// Merges one contact into another: the same customer.
    Merge {
        /// The contact merged away.
        from: ContactId,
        /// The contact that remains.
        into: ContactId,
    },
    /// Sets an attribute; the value is the content's text (empty text removes it).
    SetAttribute {
        /// The contact.
        contact: ContactId,
        /// The attribute.
        key: AttributeKey,
    },
    /// Records consent to be contacted (on one channel, or on all when `channel` is `None`).
    Consent {
        /// The contact.
        contact: ContactId,
        /// The channel, or all.
        channel: Option<ChannelKind>,
        /// Granted or withdrawn.
        granted: bool,
    },
    /// Erases a contact (and every contact merged with it): its handles and attributes are
    /// dropped and the content of every directory event about it is erased.
    EraseContact {
        /// The contact.
        contact: ContactId,
    },
    /// Sets one of the org's canned replies: the text agents insert by its shortcode, with
    /// `{contact.name}` and `{agent.name}` filled in when inserted. The text is the content's
    /// (empty text removes the reply).
    SetCannedReply {
        /// Its shortcode.
        shortcode: Shortcode,
    },
    /// Sets a team's members (sorted ascending, no duplicates, at most
    /// [`crate::limits::MAX_TEAM_MEMBERS`]); no members removes the team.
    SetTeam {
        /// The team.
        team: TeamName,
        /// Its agents.
        members: Vec<AgentId>,
    },
    /// Sets one of the org's outbound webhook subscriptions: the content's text says where
    /// to and what (the node's format; the protocol keeps it as text); empty text removes it.
    SetWebhook {
        /// Its name.
        name: WebhookName,
    },
}

/// Whether a kind's event carries content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContentRule {
    Required,
    Optional,
    Forbidden,
}

impl EventKind {
    /// A customer's message arriving on `channel` (introduced by that channel's bridge).
    pub fn inbound_message(channel: ChannelKind) -> Self {
        EventKind::Thread(ThreadKind::Message {
            direction: Direction::Inbound { channel },
        })
    }

    /// The org's reply to the customer.
    pub fn outbound_message() -> Self {
        EventKind::Thread(ThreadKind::Message {
            direction: Direction::Outbound,
        })
    }

    /// A short name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Thread(kind) => match kind {
                ThreadKind::Opened { .. } => "thread.opened",
                ThreadKind::Message {
                    direction: Direction::Inbound { .. },
                } => "thread.message.inbound",
                ThreadKind::Message {
                    direction: Direction::Outbound,
                } => "thread.message.outbound",
                ThreadKind::Note => "thread.note",
                ThreadKind::Assign { .. } => "thread.assign",
                ThreadKind::Status { .. } => "thread.status",
                ThreadKind::HandOff { .. } => "thread.hand_off",
                ThreadKind::Receipt { .. } => "thread.receipt",
                ThreadKind::Read { .. } => "thread.read",
                ThreadKind::LabelAdd { .. } => "thread.label_add",
                ThreadKind::LabelRemove { .. } => "thread.label_remove",
                ThreadKind::MemberAdd { .. } => "thread.member_add",
                ThreadKind::MemberRemove { .. } => "thread.member_remove",
                ThreadKind::Erase { .. } => "thread.erase",
                ThreadKind::AutoReply { .. } => "thread.auto_reply",
                ThreadKind::AssignTeam { .. } => "thread.assign_team",
            },
            EventKind::Directory(kind) => match kind {
                DirectoryKind::Genesis => "directory.genesis",
                DirectoryKind::Certify { .. } => "directory.certify",
                DirectoryKind::Revoke { .. } => "directory.revoke",
                DirectoryKind::CreateContact { .. } => "directory.create_contact",
                DirectoryKind::LinkHandle { .. } => "directory.link_handle",
                DirectoryKind::UnlinkHandle { .. } => "directory.unlink_handle",
                DirectoryKind::Merge { .. } => "directory.merge",
                DirectoryKind::SetAttribute { .. } => "directory.set_attribute",
                DirectoryKind::Consent { .. } => "directory.consent",
                DirectoryKind::EraseContact { .. } => "directory.erase_contact",
                DirectoryKind::SetCannedReply { .. } => "directory.set_canned_reply",
                DirectoryKind::SetTeam { .. } => "directory.set_team",
                DirectoryKind::SetWebhook { .. } => "directory.set_webhook",
            },
        }
    }

    pub(crate) fn content_rule(&self) -> ContentRule {
        match self {
            EventKind::Thread(kind) => match kind {
                ThreadKind::Message { .. }
                | ThreadKind::Note
                | ThreadKind::HandOff { .. }
                | ThreadKind::AutoReply { .. } => ContentRule::Required,
                ThreadKind::Opened { .. } | ThreadKind::Receipt { .. } => ContentRule::Optional,
                _ => ContentRule::Forbidden,
            },
            EventKind::Directory(kind) => match kind {
                DirectoryKind::LinkHandle { .. }
                | DirectoryKind::UnlinkHandle { .. }
                | DirectoryKind::SetAttribute { .. }
                | DirectoryKind::SetCannedReply { .. }
                | DirectoryKind::SetWebhook { .. } => ContentRule::Required,
                DirectoryKind::CreateContact { .. } => ContentRule::Optional,
                _ => ContentRule::Forbidden,
            },
        }
    }
}

#[cfg(test)]
mod receipt_names {
    use super::ReceiptKind;

    #[test]
    fn every_receipt_kind_reads_back_from_its_name_and_nothing_else_does() {
        for kind in ReceiptKind::ALL {
            assert_eq!(ReceiptKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(ReceiptKind::from_name("Delivered"), None);
        assert_eq!(ReceiptKind::from_name(""), None);
    }
}
