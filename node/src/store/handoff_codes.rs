//! One-time codes that continue a conversation on another channel ("continue on WhatsApp").
//!
//! A web chat visitor asks to continue on their phone; the node issues a code bound to their
//! contact, their thread and the channel, good once and for a short time. The code travels in
//! a link (`m.me/<page>?ref=<code>`, `wa.me/<number>?text=…<code>`) and comes back in the
//! customer's first message there: whoever brings it back holds the link the visitor was
//! given, so their new handle may join the visitor's contact and thread. The store keeps only
//! the SHA-256 of each code, and a code is spent by an atomic compare-and-swap, so two
//! messages carrying it link at most one handle.

use rand_core::RngCore as _;
use serde::{Deserialize, Serialize};
pub use threadline_bridges::sdk::HandoffCode;
use threadline_protocol::{ChannelKind, ContactId, ThreadId, Timestamp};

use super::{decode, Store, StoreError, TreeName};
use threadline_protocol::codec;

/// How long a code is good for: long enough to open the app on a phone and send a first
/// message, short enough that a code seen over a shoulder is soon worthless.
pub const HANDOFF_CODE_LIFETIME_MILLIS: u64 = 15 * 60 * 1000;

/// The store's key for a code: its SHA-256 (the code itself is never stored).
fn code_key(code: &HandoffCode) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(code.as_str().as_bytes()).into()
}

/// What a code was issued for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffGrant {
    /// The visitor's contact.
    pub contact: ContactId,
    /// The conversation that continues.
    pub thread: ThreadId,
    /// The channel it continues on.
    pub channel: ChannelKind,
    /// Until when the code is good.
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct CodeRecord {
    grant: HandoffGrant,
    spent: bool,
}

/// Why a code brought back links nothing. The message that carried it is taken as any other
/// (a new customer's, if the handle is new), and the attempt is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeRefused {
    /// No such code was issued (or it was forgotten after it expired).
    #[error("no such code")]
    Unknown,
    /// The code was used already.
    #[error("the code was used already")]
    Spent,
    /// The code's time is up.
    #[error("the code has expired")]
    Expired,
    /// The code is for another channel.
    #[error("the code is for {0}")]
    OtherChannel(ChannelKind),
}

impl Store {
    /// Issues a code for continuing `thread` of `contact` on `channel`, good until
    /// `now + HANDOFF_CODE_LIFETIME_MILLIS`. Expired codes are forgotten on the way.
    pub fn issue_handoff_code(
        &self,
        contact: ContactId,
        thread: ThreadId,
        channel: ChannelKind,
        now: Timestamp,
    ) -> Result<HandoffCode, StoreError> {
        self.forget_expired_codes(now)?;
        let mut bytes = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut bytes);
        let code = HandoffCode::from_bytes(bytes);
        let record = CodeRecord {
            grant: HandoffGrant {
                contact,
                thread,
                channel,
                expires_at: now.saturating_add_millis(HANDOFF_CODE_LIFETIME_MILLIS),
            },
            spent: false,
        };
        self.tree(TreeName::HandoffCodes)
            .insert(code_key(&code), codec::encode(&record)?)?;
        self.flush()?;
        Ok(code)
    }

    /// Spends `code`, brought back on `channel` at `now`: what it was issued for, once. Of two
    /// concurrent redemptions, one gets the grant and the other [`CodeRefused::Spent`].
    pub fn redeem_handoff_code(
        &self,
        code: &HandoffCode,
        channel: ChannelKind,
        now: Timestamp,
    ) -> Result<Result<HandoffGrant, CodeRefused>, StoreError> {
        let tree = self.tree(TreeName::HandoffCodes);
        let key = code_key(code);
        let Some(current) = tree.get(key)? else {
            return Ok(Err(CodeRefused::Unknown));
        };
        let record: CodeRecord = decode("handoff_codes", &current)?;
        if record.spent {
            return Ok(Err(CodeRefused::Spent));
        }
        if record.grant.channel != channel {
            return Ok(Err(CodeRefused::OtherChannel(record.grant.channel)));
        }
        if now > record.grant.expires_at {
            return Ok(Err(CodeRefused::Expired));
        }
        let spent = CodeRecord {
            spent: true,
            ..record.clone()
        };
        match tree.compare_and_swap(key, Some(current), Some(codec::encode(&spent)?))? {
            Ok(()) => {
                self.flush()?;
                Ok(Ok(record.grant))
            }
            // Another redemption spent it between the read and the swap.
            Err(_) => Ok(Err(CodeRefused::Spent)),
        }
    }

    fn forget_expired_codes(&self, now: Timestamp) -> Result<(), StoreError> {
        let tree = self.tree(TreeName::HandoffCodes);
        for entry in tree.iter() {
            let (key, value) = entry?;
            let record: CodeRecord = decode("handoff_codes", &value)?;
            if now > record.grant.expires_at {
                tree.remove(key)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::test_storage_key;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &test_storage_key()).expect("opens");
        (dir, store)
    }

    #[test]
    fn a_code_is_good_once_on_its_channel_until_it_expires() {
        let (_dir, store) = store();
        let contact = ContactId::from_bytes([1; 16]);
        let thread = ThreadId::from_bytes([2; 32]);
        let now = Timestamp::from_millis(1_000_000);
        let code = store
            .issue_handoff_code(contact, thread, ChannelKind::Whatsapp, now)
            .expect("issued");
        assert_eq!(HandoffCode::parse(code.as_str()), Some(code.clone()));
        assert_eq!(format!("{code:?}"), "HandoffCode(…)");

        // On another channel it links nothing, and is not spent by trying.
        assert_eq!(
            store
                .redeem_handoff_code(&code, ChannelKind::Messenger, now)
                .expect("store"),
            Err(CodeRefused::OtherChannel(ChannelKind::Whatsapp))
        );
        let grant = store
            .redeem_handoff_code(&code, ChannelKind::Whatsapp, now)
            .expect("store")
            .expect("redeemed");
        assert_eq!((grant.contact, grant.thread), (contact, thread));
        assert_eq!(
            store
                .redeem_handoff_code(&code, ChannelKind::Whatsapp, now)
                .expect("store"),
            Err(CodeRefused::Spent)
        );

        // A guess, and an expired code.
        let guess = HandoffCode::parse(&"0".repeat(32)).expect("a code's shape");
        assert_eq!(
            store
                .redeem_handoff_code(&guess, ChannelKind::Whatsapp, now)
                .expect("store"),
            Err(CodeRefused::Unknown)
        );
        let late = store
            .issue_handoff_code(contact, thread, ChannelKind::Messenger, now)
            .expect("issued");
        let after = now.saturating_add_millis(HANDOFF_CODE_LIFETIME_MILLIS + 1);
        assert_eq!(
            store
                .redeem_handoff_code(&late, ChannelKind::Messenger, after)
                .expect("store"),
            Err(CodeRefused::Expired)
        );
        // Expired codes are forgotten when the next is issued.
        store
            .issue_handoff_code(contact, thread, ChannelKind::Messenger, after)
            .expect("issued");
        assert_eq!(
            store
                .redeem_handoff_code(&late, ChannelKind::Messenger, after)
                .expect("store"),
            Err(CodeRefused::Unknown)
        );
    }

    #[test]
    fn two_redemptions_at_once_link_one() {
        let (_dir, store) = store();
        let now = Timestamp::from_millis(1_000_000);
        for _ in 0..20 {
            let code = store
                .issue_handoff_code(
                    ContactId::from_bytes([1; 16]),
                    ThreadId::from_bytes([2; 32]),
                    ChannelKind::Messenger,
                    now,
                )
                .expect("issued");
            let granted = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            store
                                .redeem_handoff_code(&code, ChannelKind::Messenger, now)
                                .expect("store")
                                .is_ok()
                        })
                    })
                    .collect();
                racers
                    .into_iter()
                    .map(|racer| racer.join().expect("joins"))
                    .filter(|ok| *ok)
                    .count()
            });
            assert_eq!(granted, 1);
        }
    }

    #[test]
    fn a_code_is_found_in_a_message_text() {
        let code = "0123456789abcdef0123456789abcdef";
        let text = format!("Hi! Continue my chat: {} thanks", code.to_uppercase());
        assert_eq!(
            HandoffCode::find_in(&text).map(|c| c.as_str().to_owned()),
            Some(code.to_owned())
        );
        assert_eq!(HandoffCode::find_in("no code here, deadbeef"), None);
        assert_eq!(HandoffCode::parse("0123"), None);
    }
}
