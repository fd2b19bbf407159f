//! The Instagram messaging bridge. Instagram messaging is part of the Messenger Platform: the
//! same webhook shape (`object: "instagram"`, `entry[].messaging[]`), the same Send API and
//! the same 24-hour window, so the bridge is [`Messenger`] run with
//! [`MetaApp::Instagram`](crate::messenger::webhook::MetaApp::Instagram). Instagram's own
//! limits are here: the shorter messages and the `ig.me` link. Handles are
//! `instagram:<IGSID>`; Instagram reports reading but not delivery, so a reply its Send API
//! took counts as delivered.

use crate::messenger::Messenger;
use crate::sdk::HandoffCode;

/// The Instagram bridge: the Messenger bridge with Instagram settings.
pub type Instagram<L> = Messenger<L>;

/// The longest text of one Instagram message; a longer reply goes as several.
pub const MAX_TEXT_CHARS: usize = 1000;

/// The `ig.me` link that opens a chat with the account `name` carrying `code` as its `ref`.
pub fn continue_link(name: &str, code: &HandoffCode) -> String {
    format!("https://ig.me/m/{name}?ref={}", code.as_str())
}
