//! The audit trail: who viewed, exported or erased a contact's record, and when. Kept per
//! node in the `audit` tree, ids only (no name, handle or text: what it records outlives an
//! erasure), oldest first; `threadline audit` shows it to the node's operators.

use serde::{Deserialize, Serialize};
use threadline_protocol::{AgentId, ContactId, Timestamp};

use super::{decode, Store, StoreError, TreeName};

/// Who did it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// An agent, through the API.
    Agent(AgentId),
    /// The node's operator, on its command line.
    Operator,
    /// The retention policy (`[retention]` in config.toml).
    Retention,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Agent(agent) => write!(f, "agent {agent}"),
            Actor::Operator => f.write_str("the operator (command line)"),
            Actor::Retention => f.write_str("the retention policy"),
        }
    }
}

/// What was done with a contact's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    /// Its whole record was shown.
    Viewed,
    /// It was exported.
    Exported,
    /// It was erased.
    Erased,
}

impl AuditAction {
    /// Its name: `viewed`, `exported`, `erased`.
    pub const fn name(self) -> &'static str {
        match self {
            AuditAction::Viewed => "viewed",
            AuditAction::Exported => "exported",
            AuditAction::Erased => "erased",
        }
    }
}

/// One entry of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: AuditAction,
    /// The contact.
    pub contact: ContactId,
}

impl std::fmt::Display for AuditRecord {
    /// `2026-12-06 23:40:12 UTC  agent … viewed contact …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}  {} {} contact {}",
            utc(self.at),
            self.actor,
            self.action.name(),
            self.contact
        )
    }
}

/// A time as `YYYY-MM-DD hh:mm:ss UTC` (the proleptic Gregorian calendar), for operators.
pub fn utc(at: Timestamp) -> String {
    let secs = at.as_millis() / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

impl Store {
    /// Adds an entry to the audit trail (durable with the next flush, as a delivery's ack).
    pub fn record_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let mut key = record.at.as_millis().to_be_bytes().to_vec();
        key.extend_from_slice(&self.generate_id()?.to_be_bytes());
        self.tree(TreeName::Audit)
            .insert(key, threadline_protocol::codec::encode(record)?)?;
        Ok(())
    }

    /// The audit trail, oldest first; only `contact`'s entries when given.
    pub fn audit_trail(&self, contact: Option<ContactId>) -> Result<Vec<AuditRecord>, StoreError> {
        let mut records = Vec::new();
        for entry in self.tree(TreeName::Audit).iter() {
            let (_, value) = entry?;
            let record: AuditRecord = decode("audit", &value)?;
            if contact.is_none_or(|contact| contact == record.contact) {
                records.push(record);
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_show_as_utc_dates() {
        assert_eq!(utc(Timestamp::from_millis(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc(Timestamp::from_millis(1_765_064_412_000)),
            "2025-12-06 23:40:12 UTC"
        );
        assert_eq!(
            utc(Timestamp::from_millis(951_782_400_000)),
            "2000-02-29 00:00:00 UTC"
        );
    }
}
