//! Channels (external apps) and handles (a customer's address on one of them).

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::MAX_HANDLE_BYTES;

/// An external messaging app that a bridge connects. The order of variants is part of the
/// encoding (each is written as its index); new channels are added at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// The website chat widget served by a node.
    Webchat,
    /// Email (SMTP in, SMTP out).
    Email,
    /// WhatsApp.
    Whatsapp,
    /// Facebook Messenger.
    Messenger,
    /// Slack.
    Slack,
    /// Telegram.
    Telegram,
    /// SMS.
    Sms,
    /// Matrix.
    Matrix,
    /// XMPP.
    Xmpp,
    /// Instagram messaging (direct messages to a business's Instagram account).
    Instagram,
}

impl ChannelKind {
    /// Every channel, in encoding order.
    pub const ALL: [ChannelKind; 10] = [
        ChannelKind::Webchat,
        ChannelKind::Email,
        ChannelKind::Whatsapp,
        ChannelKind::Messenger,
        ChannelKind::Slack,
        ChannelKind::Telegram,
        ChannelKind::Sms,
        ChannelKind::Matrix,
        ChannelKind::Xmpp,
        ChannelKind::Instagram,
    ];

    /// Whether the app takes a reply as a message template it approved, where a free message
    /// is not allowed (WhatsApp).
    pub const fn has_message_templates(self) -> bool {
        matches!(self, ChannelKind::Whatsapp)
    }

    /// The lowercase name used in handles and configuration (`email`, `webchat`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webchat => "webchat",
            ChannelKind::Email => "email",
            ChannelKind::Whatsapp => "whatsapp",
            ChannelKind::Messenger => "messenger",
            ChannelKind::Slack => "slack",
            ChannelKind::Telegram => "telegram",
            ChannelKind::Sms => "sms",
            ChannelKind::Matrix => "matrix",
            ChannelKind::Xmpp => "xmpp",
            ChannelKind::Instagram => "instagram",
        }
    }
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ChannelKind {
    type Err = HandleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| HandleError::UnknownChannel {
                channel: s.to_owned(),
            })
    }
}

/// A set of channels (a bit per [`ChannelKind`]): the channels a thread is open to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChannelSet(u16);

impl ChannelSet {
    /// No channel.
    pub const EMPTY: ChannelSet = ChannelSet(0);

    /// The set with one channel.
    pub const fn only(channel: ChannelKind) -> Self {
        ChannelSet(1 << channel as u16)
    }

    /// Whether `channel` is in the set.
    pub const fn contains(self, channel: ChannelKind) -> bool {
        self.0 & (1 << channel as u16) != 0
    }

    /// The set with `channel` added.
    pub const fn with(self, channel: ChannelKind) -> Self {
        ChannelSet(self.0 | 1 << channel as u16)
    }

    /// Both sets' channels.
    pub const fn union(self, other: ChannelSet) -> Self {
        ChannelSet(self.0 | other.0)
    }

    /// The channels in the set, in encoding order.
    pub fn iter(self) -> impl Iterator<Item = ChannelKind> {
        ChannelKind::ALL
            .into_iter()
            .filter(move |channel| self.contains(*channel))
    }
}

/// A handle did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The text has no `channel:` prefix.
    #[error("handle `{text}` has no `channel:` prefix")]
    MissingChannel {
        /// The text given.
        text: String,
    },
    /// The channel is not one Threadline knows.
    #[error("unknown channel `{channel}`")]
    UnknownChannel {
        /// The channel given.
        channel: String,
    },
    /// The address is empty, too long, or has whitespace or control characters.
    #[error("invalid {channel} address: {reason}")]
    InvalidAddress {
        /// The channel.
        channel: ChannelKind,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A customer's address on one channel: `email:alice@example.com`, `whatsapp:+15551234567`.
///
/// Addresses are normalised on construction (email addresses lowercased, phone numbers without
/// spaces or dashes), so one address has one handle.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle {
    channel: ChannelKind,
    address: String,
}

impl Handle {
    /// A validated, normalised handle.
    pub fn new(channel: ChannelKind, address: &str) -> Result<Self, HandleError> {
        let invalid = |reason| HandleError::InvalidAddress { channel, reason };
        let address = match channel {
            ChannelKind::Email => address.trim().to_lowercase(),
            ChannelKind::Sms | ChannelKind::Whatsapp => address
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
                .collect(),
            _ => address.trim().to_owned(),
        };
        if address.is_empty() {
            return Err(invalid("empty"));
        }
        if address.len() > MAX_HANDLE_BYTES {
            return Err(invalid("too long"));
        }
        if address.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("contains whitespace or control characters"));
        }
        match channel {
            ChannelKind::Email => {
                let (local, domain) = address.rsplit_once('@').ok_or(invalid("no `@`"))?;
                if local.is_empty() || domain.is_empty() {
                    return Err(invalid("empty local part or domain"));
                }
            }
            ChannelKind::Sms | ChannelKind::Whatsapp => {
                let digits = address
                    .strip_prefix('+')
                    .ok_or(invalid("must start with `+`"))?;
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    return Err(invalid("must be `+` and digits"));
                }
            }
            _ => {}
        }
        Ok(Handle { channel, address })
    }

    /// The channel.
    pub fn channel(&self) -> ChannelKind {
        self.channel
    }

    /// The normalised address on that channel.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.channel, self.address)
    }
}

impl std::str::FromStr for Handle {
    type Err = HandleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (channel, address) = s
            .split_once(':')
            .ok_or_else(|| HandleError::MissingChannel { text: s.to_owned() })?;
        Handle::new(channel.parse()?, address)
    }
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            (self.channel, &self.address).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let handle = if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(de::Error::custom)?
        } else {
            let (channel, address) = <(ChannelKind, String)>::deserialize(deserializer)?;
            let handle = Handle::new(channel, &address).map_err(de::Error::custom)?;
            // A stored handle is already normalised: anything else was not made by Handle::new.
            if handle.address != address {
                return Err(de::Error::custom("handle address is not normalised"));
            }
            handle
        };
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: Result<&str, &str>) {
        let got = text
            .parse::<Handle>()
            .map(|h| h.to_string())
            .map_err(|e| e.to_string());
        assert_eq!(got.as_deref().map_err(|e| e.as_ref()), expect, "{text}");
    }

    #[test]
    fn handles_parse_and_normalise() {
        check("email:Alice@Example.COM", Ok("email:alice@example.com"));
        check("whatsapp:+1 555-123 4567", Ok("whatsapp:+15551234567"));
        check("webchat:visitor-1", Ok("webchat:visitor-1"));
        check("email:nobody", Err("invalid email address: no `@`"));
        check(
            "sms:5551234",
            Err("invalid sms address: must start with `+`"),
        );
        check("fax:123", Err("unknown channel `fax`"));
        check("alice", Err("handle `alice` has no `channel:` prefix"));
        check("webchat:", Err("invalid webchat address: empty"));
        check(
            "matrix:@a b:x",
            Err("invalid matrix address: contains whitespace or control characters"),
        );
    }

    #[test]
    fn handles_round_trip_and_refuse_unnormalised_bytes() {
        let handle: Handle = "email:a@b.test".parse().expect("valid");
        let bytes = crate::codec::encode(&handle).expect("encodes");
        assert_eq!(crate::codec::decode::<Handle>(&bytes, 1024), Ok(handle));
        let unnormalised =
            crate::codec::encode(&(ChannelKind::Email, "A@b.test")).expect("encodes");
        assert!(crate::codec::decode::<Handle>(&unnormalised, 1024).is_err());
    }
}
