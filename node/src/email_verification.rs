//! "Verify this email": an agent sends a customer a one-time code at an address the customer
//! gave (the web chat's `unverified email`); the customer reads it back to the agent, and the
//! address becomes a handle of the customer's contact (or the contact joins the one that
//! address already belongs to: the code proves it is the same person).
//!
//! A code is 6 digits, good for [`CODE_LIFETIME`] and [`MAX_TRIES`] wrong tries, one at a time
//! per contact, a new one at most every [`RESEND_AFTER`]. Codes live in memory only (a restart
//! forgets them: send another); only their SHA-256 is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rand_core::RngCore as _;
use threadline_bridges::email::EmailOutbound;
use threadline_protocol::{channel::Handle, ContactId};

/// How long a code is good for.
pub const CODE_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Wrong codes before a code is void.
pub const MAX_TRIES: u32 = 5;
/// How soon another code may be sent for the same contact.
pub const RESEND_AFTER: Duration = Duration::from_secs(60);

/// A code sent for a contact (or being sent): kept after it is used up, void, until the next
/// may go, so a spent or voided code does not let another out at once.
#[derive(Debug, Clone)]
struct Pending {
    address: Handle,
    /// `None` while the mail is on its way, and once the code is used up or void.
    code_hash: Option<[u8; 32]>,
    sent_at: u64,
    tries_left: u32,
}

impl Pending {
    /// Whether it may be forgotten at `now`: its code is over and another may go.
    fn forgettable(&self, now: u64) -> bool {
        let age = now.saturating_sub(self.sent_at);
        age > CODE_LIFETIME.as_millis() as u64 && age > RESEND_AFTER.as_millis() as u64
    }
}

/// Why a code was not sent, or not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerificationError {
    /// This node sends no mail (no `[email]` relay).
    #[error("this node sends no email: set [email] address and relay to send codes")]
    NoMail,
    /// A code was sent moments ago.
    #[error("a code was sent to this contact less than a minute ago; wait, then send another")]
    TooSoon,
    /// The relay did not take the mail.
    #[error("the mail was not sent: {0}")]
    NotSent(String),
    /// No code waits for the contact (none sent, used, expired, or too many wrong tries).
    #[error("no code waits for this contact: send one")]
    NoCode,
    /// The code is not the one sent.
    #[error("that is not the code sent ({tries_left} tries left)")]
    WrongCode {
        /// Tries left before the code is void.
        tries_left: u32,
    },
}

/// The codes in flight, and the mail they go out by.
#[derive(Debug, Default)]
pub struct EmailVerification {
    mail: OnceLock<Arc<EmailOutbound>>,
    pending: Mutex<HashMap<ContactId, Pending>>,
}

fn hash(code: &str) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(code.as_bytes()).into()
}

impl EmailVerification {
    /// Codes go out through `mail` (the email bridge's relay).
    pub fn set_mail(&self, mail: Arc<EmailOutbound>) {
        let _ = self.mail.set(mail);
    }

    /// Sends `contact` a new code at `address` (`now` in ms); a code sent before is void.
    pub async fn send(
        &self,
        contact: ContactId,
        address: Handle,
        now: u64,
    ) -> Result<(), VerificationError> {
        let mail = self.mail.get().ok_or(VerificationError::NoMail)?;
        // The slot is taken before the mail goes: a second send (a double click, another
        // agent) waits its turn instead of sending a second code.
        {
            let mut pending = self.lock();
            pending.retain(|_, p| !p.forgettable(now));
            let recent = pending
                .get(&contact)
                .is_some_and(|p| now.saturating_sub(p.sent_at) < RESEND_AFTER.as_millis() as u64);
            if recent {
                return Err(VerificationError::TooSoon);
            }
            pending.insert(
                contact,
                Pending {
                    address: address.clone(),
                    code_hash: None,
                    sent_at: now,
                    tries_left: MAX_TRIES,
                },
            );
        }
        let code = format!("{:06}", rand_core::OsRng.next_u32() % 1_000_000);
        if let Err(err) = mail
            .send_code(address.address(), &code, CODE_LIFETIME)
            .await
        {
            // Not sent: the slot is free again.
            self.lock().remove(&contact);
            return Err(VerificationError::NotSent(err.to_string()));
        }
        if let Some(entry) = self.lock().get_mut(&contact) {
            if entry.sent_at == now && entry.address == address {
                entry.code_hash = Some(hash(&code));
            }
        }
        Ok(())
    }

    /// The address `code` proves for `contact` (the code is then used up).
    pub fn confirm(
        &self,
        contact: ContactId,
        code: &str,
        now: u64,
    ) -> Result<Handle, VerificationError> {
        let mut pending = self.lock();
        let Some(entry) = pending.get_mut(&contact) else {
            return Err(VerificationError::NoCode);
        };
        let Some(code_hash) = entry.code_hash else {
            return Err(VerificationError::NoCode);
        };
        if now.saturating_sub(entry.sent_at) > CODE_LIFETIME.as_millis() as u64 {
            entry.code_hash = None;
            return Err(VerificationError::NoCode);
        }
        let given = hash(code.trim());
        if threadline_bridges::webhook::constant_time_eq(&given, &code_hash) {
            entry.code_hash = None;
            return Ok(entry.address.clone());
        }
        entry.tries_left = entry.tries_left.saturating_sub(1);
        let tries_left = entry.tries_left;
        if tries_left == 0 {
            entry.code_hash = None;
        }
        Err(VerificationError::WrongCode { tries_left })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContactId, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_code(code: &str, sent_at: u64) -> (EmailVerification, ContactId) {
        let verification = EmailVerification::default();
        let contact = ContactId::from_bytes([3; 16]);
        verification.lock().insert(
            contact,
            Pending {
                address: "email:maria@example.test".parse().expect("handle"),
                code_hash: Some(hash(code)),
                sent_at,
                tries_left: MAX_TRIES,
            },
        );
        (verification, contact)
    }

    #[test]
    fn five_wrong_codes_void_the_code_and_the_right_one_works_once() {
        let (verification, contact) = with_code("123456", 1_000);
        for left in (1..MAX_TRIES).rev() {
            assert_eq!(
                verification.confirm(contact, "000000", 2_000),
                Err(VerificationError::WrongCode { tries_left: left })
            );
        }
        assert_eq!(
            verification.confirm(contact, "000000", 2_000),
            Err(VerificationError::WrongCode { tries_left: 0 })
        );
        assert_eq!(
            verification.confirm(contact, "123456", 2_000),
            Err(VerificationError::NoCode),
            "void after five wrong tries"
        );
        let (verification, contact) = with_code("123456", 1_000);
        assert!(verification.confirm(contact, " 123456 ", 2_000).is_ok());
        assert_eq!(
            verification.confirm(contact, "123456", 2_000),
            Err(VerificationError::NoCode),
            "used up"
        );
        // The used-up code still holds the slot: no new code within the minute.
        assert!(!verification.lock()[&contact].forgettable(2_000));
    }

    #[test]
    fn a_code_expires() {
        let (verification, contact) = with_code("123456", 1_000);
        let late = 1_000 + CODE_LIFETIME.as_millis() as u64 + 1;
        assert_eq!(
            verification.confirm(contact, "123456", late),
            Err(VerificationError::NoCode)
        );
        assert!(verification.lock()[&contact].forgettable(late));
    }
}
