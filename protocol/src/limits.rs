//! Size limits. Every one is checked before an event is stored, from any source.

/// Largest encoded event (signed header plus content). Big enough for a long email body with
/// its attachment references, small enough that a batch of events fits a sync frame.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Largest `Content::text`, in bytes of UTF-8. A long email is well under this.
pub const MAX_TEXT_BYTES: usize = 128 * 1024;
/// Attachments on one event. Attachments are references to blobs, so this bounds the header
/// size, not the bytes attached.
pub const MAX_ATTACHMENTS: usize = 32;
/// Size of one attachment's bytes (a blob). Bigger than any mail a server takes (those stop at
/// 10 to 50 MiB encoded, about a third less decoded).
pub const MAX_BLOB_BYTES: u64 = 32 * 1024 * 1024;
/// Parents of one event. A node names the heads it saw; more than this many concurrent heads
/// means something is wrong, and a node merges heads in steps of this size.
pub const MAX_PARENTS: usize = 32;
/// Events named by one erasure event. Erasing more takes several erasure events.
pub const MAX_ERASE_TARGETS: usize = 4096;
/// Agents in one team (a `SetTeam` names them all: 16 bytes each).
pub const MAX_TEAM_MEMBERS: usize = 1024;
/// Length of a label, an attribute key, an external message id or an attachment's media type or
/// name, in bytes.
pub const MAX_SHORT_STRING_BYTES: usize = 256;
/// Length of a message's subject, in bytes. RFC 5322 lines stop at 998 characters; a
/// folded subject can be longer, and bridges cut it to fit at a character boundary.
pub const MAX_SUBJECT_BYTES: usize = 1024;
/// Values of one message template's placeholders.
pub const MAX_TEMPLATE_PARAMETERS: usize = 32;
/// Length of one template placeholder's value, in bytes (WhatsApp takes 1,024 characters in a
/// template's body).
pub const MAX_TEMPLATE_PARAMETER_BYTES: usize = 1024;
/// Length of a handle's address, in bytes (an email address is at most 254).
pub const MAX_HANDLE_BYTES: usize = 320;
/// How far in the future an event's author time may be, compared with the receiver's clock,
/// before it is refused (and may be retried later). Five minutes tolerates ordinary clock skew
/// without letting an author pin itself at the end of every thread's order.
pub const MAX_CLOCK_SKEW_MILLIS: u64 = 5 * 60 * 1000;
