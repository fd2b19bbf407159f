//! Business hours (`[business_hours]`): when the team answers, in the org's time zone, and
//! the automatic reply a customer gets for a message outside them. The reply is the node's
//! own signed message (no agent), sent through the conversation's route like any reply, once
//! per conversation in [`AWAY_REPLY_EVERY`]; only the node the message came in on sends it.

use std::collections::HashMap;

use jiff::{civil::Weekday, tz::TimeZone};
use threadline_protocol::{ThreadId, Timestamp};
use tracing::{info, warn};

use crate::ingest::{Action, Ingest};

/// A conversation gets the away reply at most once in this long (ms).
pub const AWAY_REPLY_EVERY: u64 = 12 * 3600 * 1000;

/// When the team answers, and what a customer is told outside those hours.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    /// The org's time zone.
    zone: TimeZone,
    /// Monday to Sunday: the open minutes of the day, `[start, end)`; `None`: closed.
    week: [Option<(u16, u16)>; 7],
    /// The automatic reply.
    away_message: String,
}

// Time zones compare as equal or not (jiff leaves `Eq` out for zones with no name).
impl Eq for BusinessHours {}

impl BusinessHours {
    /// From `[business_hours]`: an IANA time zone (`Europe/Berlin`), each day's hours as
    /// `HH:MM-HH:MM` (absent or empty: closed; `00:00-24:00`: all day) from Monday to Sunday,
    /// and the away message (1 to 1,000 characters).
    pub fn new(
        timezone: &str,
        days: [Option<&str>; 7],
        away_message: &str,
    ) -> Result<Self, String> {
        let zone = TimeZone::get(timezone).map_err(|err| {
            format!("timezone `{timezone}` is not a time zone like \"Europe/Berlin\": {err}")
        })?;
        let mut week = [None; 7];
        for (day, (hours, name)) in days.iter().zip(DAY_NAMES).enumerate() {
            week[day] = match hours.map(str::trim) {
                None | Some("") => None,
                Some(hours) => Some(parse_hours(hours).ok_or_else(|| {
                    format!("{name} = \"{hours}\" is not hours like \"09:00-17:00\"")
                })?),
            };
        }
        let away_message = away_message.trim();
        let n = away_message.chars().count();
        if n == 0 || n > 1000 {
            return Err(format!(
                "away_message must be 1 to 1,000 characters (it has {n})"
            ));
        }
        Ok(BusinessHours {
            zone,
            week,
            away_message: away_message.to_owned(),
        })
    }

    /// Whether the team answers at `at`.
    pub fn open_at(&self, at: Timestamp) -> bool {
        let Ok(instant) = i64::try_from(at.as_millis())
            .map_err(|_| ())
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).map_err(|_| ()))
        else {
            return false;
        };
        let local = instant.to_zoned(self.zone.clone());
        let day = match local.weekday() {
            Weekday::Monday => 0,
            Weekday::Tuesday => 1,
            Weekday::Wednesday => 2,
            Weekday::Thursday => 3,
            Weekday::Friday => 4,
            Weekday::Saturday => 5,
            Weekday::Sunday => 6,
        };
        let minute = u16::try_from(local.hour()).unwrap_or(0) * 60
            + u16::try_from(local.minute()).unwrap_or(0);
        self.week[day].is_some_and(|(start, end)| start <= minute && minute < end)
    }

    /// The automatic reply.
    pub fn away_message(&self) -> &str {
        &self.away_message
    }
}

const DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// `HH:MM-HH:MM` as minutes of the day, `[start, end)`, start before end (`24:00` ends a day).
fn parse_hours(text: &str) -> Option<(u16, u16)> {
    let (start, end) = text.split_once('-')?;
    let minute = |text: &str| -> Option<u16> {
        let (h, m) = text.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    };
    let (start, end) = (minute(start)?, minute(end)?);
    (start < end).then_some((start, end))
}

/// Answers customers' messages outside `hours` until the node closes.
pub async fn run(ingest: Ingest, hours: BusinessHours) {
    let mut live = ingest.subscribe();
    // When each conversation last got the away reply here.
    let mut replied: HashMap<ThreadId, u64> = HashMap::new();
    while let Some((thread, _)) = ingest.next_local_inbound(&mut live).await {
        let now = crate::clock::now();
        if hours.open_at(now) {
            continue;
        }
        let recently = replied
            .get(&thread)
            .is_some_and(|at| now.as_millis().saturating_sub(*at) < AWAY_REPLY_EVERY);
        if recently {
            continue;
        }
        match away_reply(&ingest, thread, &hours).await {
            Ok(true) => {
                replied.insert(thread, now.as_millis());
                replied.retain(|_, at| now.as_millis().saturating_sub(*at) < AWAY_REPLY_EVERY);
            }
            Ok(false) => {}
            Err(err) => warn!(%thread, cause = %err, "could not send the away reply"),
        }
    }
}

/// Sends the away reply on `thread` unless its route refuses replies now (the customer opted
/// out, the app's window is closed, no bridge here): `Ok(false)` then.
async fn away_reply(
    ingest: &Ingest,
    thread: ThreadId,
    hours: &BusinessHours,
) -> Result<bool, crate::ingest::IngestError> {
    let Some(state) = ingest.store().thread_state(&thread)? else {
        return Ok(false);
    };
    if let Some(refused) = crate::reply_route::refusal(ingest, thread, &state, true)? {
        info!(%thread, cause = %refused, "no away reply: the route refuses replies now");
        return Ok(false);
    }
    ingest
        .act_as_node(thread, Action::text_reply(hours.away_message()))
        .await?;
    info!(%thread, "sent the away reply");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> Timestamp {
        let instant: jiff::Timestamp = rfc3339.parse().expect("a time");
        Timestamp::from_millis(u64::try_from(instant.as_millisecond()).expect("after 1970"))
    }

    #[test]
    fn hours_are_the_org_time_zones_across_summer_time() {
        let weekdays = Some("09:00-17:00");
        let hours = BusinessHours::new(
            "Europe/Berlin",
            [
                weekdays,
                weekdays,
                weekdays,
                weekdays,
                weekdays,
                None,
                Some(""),
            ],
            "We are closed.",
        )
        .expect("valid");
        // Monday 2026-03-23 (UTC+1) and Monday 2026-03-30 (UTC+2, summer time).
        assert!(
            !hours.open_at(at("2026-03-23T07:59:00Z")),
            "08:59 in Berlin"
        );
        assert!(hours.open_at(at("2026-03-23T08:00:00Z")), "09:00 in Berlin");
        assert!(
            hours.open_at(at("2026-03-30T07:00:00Z")),
            "09:00 in Berlin, summer"
        );
        assert!(
            !hours.open_at(at("2026-03-30T15:00:00Z")),
            "17:00 in Berlin, summer"
        );
        assert!(!hours.open_at(at("2026-03-28T10:00:00Z")), "a Saturday");
        assert!(!hours.open_at(at("2026-03-29T10:00:00Z")), "a Sunday");
        let always = BusinessHours::new("UTC", [Some("00:00-24:00"); 7], "x").expect("valid");
        assert!(always.open_at(at("2026-03-29T23:59:59Z")));
    }

    #[test]
    fn bad_settings_say_which() {
        let closed = [None; 7];
        let err = BusinessHours::new("Mars/Olympus", closed, "x").expect_err("refused");
        assert!(err.contains("timezone `Mars/Olympus`"), "{err}");
        for bad in ["9-17", "17:00-09:00", "09:00-24:01", "09:60-10:00", "09:00"] {
            let mut days = [None; 7];
            days[2] = Some(bad);
            let err = BusinessHours::new("UTC", days, "x").expect_err(bad);
            assert!(err.starts_with("wednesday = "), "{err}");
        }
        let err = BusinessHours::new("UTC", closed, "  ").expect_err("empty");
        assert!(err.contains("away_message"), "{err}");
    }
}
