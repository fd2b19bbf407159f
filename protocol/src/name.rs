//! Short validated strings that appear in signed headers or content: labels, attribute keys,
//! external message ids, attachment metadata, subjects, message templates.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::{MAX_SHORT_STRING_BYTES, MAX_SUBJECT_BYTES, MAX_TEMPLATE_PARAMETER_BYTES};

/// A short string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty.
    #[error("{kind} is empty")]
    Empty {
        /// Which kind of name.
        kind: &'static str,
    },
    /// Longer than its limit ([`MAX_SHORT_STRING_BYTES`], or [`MAX_SUBJECT_BYTES`] for a
    /// subject).
    #[error("{kind} is {len} bytes, limit is {max}")]
    TooLong {
        /// Which kind of name.
        kind: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Contains control characters.
    #[error("{kind} contains control characters")]
    ControlCharacters {
        /// Which kind of name.
        kind: &'static str,
    },
}

fn validate(kind: &'static str, text: &str, max: usize) -> Result<(), NameError> {
    if text.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if text.len() > max {
        return Err(NameError::TooLong {
            kind,
            len: text.len(),
            max,
        });
    }
    if text.chars().any(char::is_control) {
        return Err(NameError::ControlCharacters { kind });
    }
    Ok(())
}

macro_rules! short_string {
    ($(#[$meta:meta])* $name:ident) => {
        short_string!($(#[$meta])* $name, MAX_SHORT_STRING_BYTES);
    };
    ($(#[$meta:meta])* $name:ident, $max:expr) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The most bytes a value may have.
            pub const MAX_BYTES: usize = $max;

            /// A validated value: non-empty, at most [`Self::MAX_BYTES`], no control characters.
            pub fn new(text: impl Into<String>) -> Result<Self, NameError> {
                let text = text.into();
                validate(stringify!($name), &text, $max)?;
                Ok($name(text))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $name::new(String::deserialize(deserializer)?).map_err(de::Error::custom)
            }
        }
    };
}

short_string!(
    /// A label on a thread (`billing`, `vip`). Labels are org vocabulary, not personal data, so
    /// they live in signed headers.
    Label
);
short_string!(
    /// The key of a contact attribute (`name`, `company`); the value is erasable content.
    AttributeKey
);
short_string!(
    /// The shortcode of a canned reply (`refund`), which agents type to insert its text; the
    /// text is the content of the event that sets it.
    Shortcode
);
short_string!(
    /// The name of a team of agents (`billing`): the org's vocabulary, like a label, so it
    /// lives in signed headers.
    TeamName
);
short_string!(
    /// The name of one of the org's outbound webhook subscriptions (`crm`); what it sends
    /// where is the content of the event that sets it.
    WebhookName
);
short_string!(
    /// The id an external app gave a message (an email Message-ID, a WhatsApp message id). It
    /// makes resubmission idempotent.
    ExternalId
);
short_string!(
    /// A media type or file name of an attachment.
    AttachmentMeta
);
short_string!(
    /// The subject line of a message, on channels that have one (email): at most
    /// [`MAX_SUBJECT_BYTES`], on one line.
    Subject,
    MAX_SUBJECT_BYTES
);
short_string!(
    /// The name of a message template the app approved (WhatsApp's `order_update`).
    TemplateName
);
short_string!(
    /// The language of a message template, as the app names it (`en_US`, `pt_BR`).
    TemplateLanguage
);
short_string!(
    /// A value put into a message template's placeholder (`{{1}}`): one line, at most
    /// [`MAX_TEMPLATE_PARAMETER_BYTES`].
    TemplateParameter,
    MAX_TEMPLATE_PARAMETER_BYTES
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_validated_on_construction_and_decoding() {
        assert_eq!(
            Label::new("vip").map(|l| l.to_string()),
            Ok("vip".to_owned())
        );
        assert_eq!(Label::new(""), Err(NameError::Empty { kind: "Label" }));
        assert_eq!(
            Label::new("x".repeat(257)).map_err(|e| e.to_string()),
            Err("Label is 257 bytes, limit is 256".to_owned())
        );
        assert_eq!(
            ExternalId::new("a\nb"),
            Err(NameError::ControlCharacters { kind: "ExternalId" })
        );
        let bad = crate::codec::encode("").expect("encodes");
        assert!(crate::codec::decode::<Label>(&bad, 1024).is_err());
    }
}
