//! The messaging windows: when an app lets a business write to a customer.
//!
//! Messenger, Instagram and WhatsApp let a business answer freely for 24 hours after the
//! customer's last message. Past that, Messenger and Instagram take a human agent's reply
//! for up to 7 days with the `HUMAN_AGENT` tag (for pages Meta granted it), and WhatsApp only
//! an approved template. Email and the web chat have no window. The node checks a reply
//! against its thread's window before storing it, and the bridges again before sending, so a
//! reply the app would refuse is refused up front, with the reason and the way that works.

use std::time::Duration;

use threadline_protocol::{ChannelKind, Timestamp};

/// The standard window after a customer's last message.
pub const STANDARD_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a page with the `HUMAN_AGENT` tag may answer after a customer's last message.
pub const HUMAN_AGENT_WINDOW: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Whether a reply may go to a customer on a channel now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyWindow {
    /// The channel has no window (email, web chat).
    Always,
    /// Open until `until`; `human_agent`: only as a human agent's reply (Messenger's
    /// `HUMAN_AGENT` tag), past the standard 24 hours.
    Open {
        /// When it closes.
        until: Timestamp,
        /// Whether the reply must be sent with the `HUMAN_AGENT` tag.
        human_agent: bool,
    },
    /// Closed: a free reply would be refused by the app.
    Closed {
        /// Since when (none: the customer never wrote on this channel).
        since: Option<Timestamp>,
        /// Whether it closed at the end of the `HUMAN_AGENT` tag's 7 days.
        tagged: bool,
    },
}

impl ReplyWindow {
    /// The window of `channel` at `now`, given the customer's last message there and whether
    /// the page may use the `HUMAN_AGENT` tag.
    pub fn of(
        channel: ChannelKind,
        last_customer_message: Option<Timestamp>,
        now: Timestamp,
        human_agent_tag: bool,
    ) -> ReplyWindow {
        let tagged = match channel {
            ChannelKind::Messenger | ChannelKind::Instagram => human_agent_tag,
            ChannelKind::Whatsapp => false,
            _ => return ReplyWindow::Always,
        };
        let Some(last) = last_customer_message else {
            return ReplyWindow::Closed {
                since: None,
                tagged: false,
            };
        };
        let standard = last.saturating_add_millis(millis(STANDARD_WINDOW));
        if now <= standard {
            return ReplyWindow::Open {
                until: standard,
                human_agent: false,
            };
        }
        let tagged_until = last.saturating_add_millis(millis(HUMAN_AGENT_WINDOW));
        if tagged && now <= tagged_until {
            return ReplyWindow::Open {
                until: tagged_until,
                human_agent: true,
            };
        }
        ReplyWindow::Closed {
            since: Some(if tagged { tagged_until } else { standard }),
            tagged,
        }
    }

    /// Why a free reply cannot go out now, and what works instead; `None` when it can.
    pub fn refusal(&self, channel: ChannelKind) -> Option<String> {
        let ReplyWindow::Closed { since, tagged } = self else {
            return None;
        };
        let what = match since {
            None => format!("the customer has not written on {channel}, so {channel} takes no free message to them"),
            Some(_) if channel == ChannelKind::Whatsapp => {
                "more than 24 hours have passed since the customer's last WhatsApp message".to_owned()
            }
            Some(_) => format!(
                "the customer's last {channel} message is more than {} old",
                if *tagged { "7 days" } else { "24 hours" }
            ),
        };
        let remedy = if channel == ChannelKind::Whatsapp {
            "send an approved WhatsApp template, or reply on another of the contact's channels"
        } else {
            "reply on another of the contact's channels, or wait for the customer to write again"
        };
        Some(format!("{what}: {remedy}"))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 60 * 60 * 1000;

    fn at(hours: u64) -> Timestamp {
        Timestamp::from_millis(1_767_225_600_000 + hours * HOUR)
    }

    #[test]
    fn the_standard_window_is_24_hours_after_the_customers_last_message() {
        for channel in [
            ChannelKind::Messenger,
            ChannelKind::Instagram,
            ChannelKind::Whatsapp,
        ] {
            assert_eq!(
                ReplyWindow::of(channel, Some(at(0)), at(23), false),
                ReplyWindow::Open {
                    until: at(24),
                    human_agent: false
                }
            );
            let closed = ReplyWindow::of(channel, Some(at(0)), at(25), false);
            assert_eq!(
                closed,
                ReplyWindow::Closed {
                    since: Some(at(24)),
                    tagged: false
                }
            );
            assert!(closed.refusal(channel).is_some());
            assert_eq!(
                ReplyWindow::of(channel, None, at(0), false),
                ReplyWindow::Closed {
                    since: None,
                    tagged: false
                }
            );
        }
        let whatsapp = ReplyWindow::of(ChannelKind::Whatsapp, Some(at(0)), at(25), true);
        assert!(whatsapp
            .refusal(ChannelKind::Whatsapp)
            .is_some_and(|reason| reason.contains("template")));
    }

    #[test]
    fn a_human_agent_page_answers_for_7_days_with_the_tag() {
        assert_eq!(
            ReplyWindow::of(ChannelKind::Messenger, Some(at(0)), at(25), true),
            ReplyWindow::Open {
                until: at(7 * 24),
                human_agent: true
            }
        );
        assert_eq!(
            ReplyWindow::of(ChannelKind::Messenger, Some(at(0)), at(7 * 24 + 1), true),
            ReplyWindow::Closed {
                since: Some(at(7 * 24)),
                tagged: true
            }
        );
    }

    #[test]
    fn email_and_the_web_chat_have_no_window() {
        for channel in [ChannelKind::Email, ChannelKind::Webchat] {
            let window = ReplyWindow::of(channel, None, at(1000), false);
            assert_eq!(window, ReplyWindow::Always);
            assert_eq!(window.refusal(channel), None);
        }
    }
}
