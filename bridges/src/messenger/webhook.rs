//! The Messenger Platform's webhook (and Instagram messaging's, which has the same shape), read:
//! what a signed delivery says, as typed events, before anything is stored.
//!
//! A delivery is `{"object": "page" | "instagram", "entry": [{"id", "time", "messaging": [...]}]}`;
//! each `messaging` item has a `sender.id` (the customer's page-scoped id, PSID, or the page
//! itself for an echo), a `recipient.id`, a `timestamp` in milliseconds and one of `message`,
//! `delivery`, `read`, `referral`, `postback` or `reaction`. Echoes of the page's own messages
//! are read as such, so the bridge can skip them. A delivery that is not JSON of that shape is
//! refused whole.

use serde::Deserialize;

use crate::webhook::{read_delivery, DeliveryError};

/// Which app a delivery is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaApp {
    /// Messenger (`object: page`).
    Messenger,
    /// Instagram messaging (`object: instagram`).
    Instagram,
}

/// One `messaging` item, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagingEvent {
    /// The customer (their page- or Instagram-scoped id); for an echo, the page.
    pub sender: String,
    /// The page (or account); for an echo, the customer.
    pub recipient: String,
    /// Milliseconds since the Unix epoch (Meta's delivery reports carry none).
    pub timestamp: Option<u64>,
    /// What happened.
    pub what: Messaging,
}

/// What a `messaging` item says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Messaging {
    /// A customer's message.
    Message {
        /// The message id (`mid`): the same message always has it.
        mid: String,
        /// Its text, if any.
        text: Option<String>,
        /// Files, by the URL Meta serves them from (downloaded by the bridge).
        attachments: Vec<MetaAttachment>,
        /// The message it answers, if the customer replied to one.
        reply_to: Option<String>,
        /// The `ref` of the link the customer came by, if the message carries one.
        referral: Option<String>,
    },
    /// An echo of a message the page sent (by this bridge or another app): not the customer's.
    Echo {
        /// Its id.
        mid: String,
    },
    /// The page's messages up to `watermark` (ms), and those named, were delivered.
    Delivery {
        /// The messages named, if any.
        mids: Vec<String>,
        /// Everything sent before this time was delivered.
        watermark: u64,
    },
    /// The customer read the page's messages up to `watermark` (ms; Messenger), or up to the
    /// message `mid` (Instagram's `messaging_seen`), or up to the event's time if neither.
    Read {
        /// Everything sent before this time was read.
        watermark: Option<u64>,
        /// The last message read.
        mid: Option<String>,
    },
    /// The customer opened the conversation by a link with `ref` (an `m.me/<page>?ref=…`
    /// link) in a conversation that already existed.
    Referral {
        /// The link's `ref`.
        reference: String,
    },
    /// The customer pressed a button (Get Started), possibly having come by a link.
    Postback {
        /// The button's title.
        title: Option<String>,
        /// The link's `ref`, if they came by one.
        referral: Option<String>,
    },
    /// A reaction to one of the page's messages (`emoji` none: removed).
    Reaction {
        /// The message reacted to.
        mid: String,
        /// The emoji.
        emoji: Option<String>,
    },
    /// An item of a kind the bridge does not read (kept in the log, never guessed at).
    Other,
}

/// A file a customer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaAttachment {
    /// `image`, `video`, `audio`, `file`, `fallback`, ...
    pub kind: String,
    /// Where Meta serves it from, if it has bytes (a `fallback` may have none).
    pub url: Option<String>,
}

#[derive(Deserialize)]
struct Delivery {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    messaging: Vec<RawMessaging>,
}

#[derive(Deserialize)]
struct Party {
    id: String,
}

#[derive(Deserialize)]
struct RawMessaging {
    sender: Party,
    recipient: Party,
    timestamp: Option<u64>,
    message: Option<RawMessage>,
    delivery: Option<RawDelivery>,
    read: Option<RawRead>,
    referral: Option<RawReferral>,
    postback: Option<RawPostback>,
    reaction: Option<RawReaction>,
}

#[derive(Deserialize)]
struct RawMessage {
    mid: String,
    text: Option<String>,
    #[serde(default)]
    is_echo: bool,
    #[serde(default)]
    attachments: Vec<RawAttachment>,
    reply_to: Option<RawReplyTo>,
    referral: Option<RawReferral>,
}

#[derive(Deserialize)]
struct RawAttachment {
    #[serde(rename = "type")]
    kind: String,
    payload: Option<RawPayload>,
}

#[derive(Deserialize)]
struct RawPayload {
    url: Option<String>,
}

#[derive(Deserialize)]
struct RawReplyTo {
    mid: Option<String>,
}

#[derive(Deserialize)]
struct RawDelivery {
    #[serde(default)]
    mids: Vec<String>,
    watermark: u64,
}

#[derive(Deserialize)]
struct RawRead {
    /// Messenger's: everything before it was read.
    watermark: Option<u64>,
    /// Instagram's `messaging_seen`: the last message read.
    mid: Option<String>,
}

#[derive(Deserialize)]
struct RawReferral {
    #[serde(rename = "ref")]
    reference: Option<String>,
}

#[derive(Deserialize)]
struct RawPostback {
    title: Option<String>,
    referral: Option<RawReferral>,
}

#[derive(Deserialize)]
struct RawReaction {
    mid: String,
    emoji: Option<String>,
}

/// Reads a delivery's raw body (after its signature was checked) into its app and its
/// events, in order.
pub fn parse(body: &[u8]) -> Result<(MetaApp, Vec<MessagingEvent>), DeliveryError> {
    let delivery: Delivery = read_delivery(body)?;
    let app = match delivery.object.as_str() {
        "page" => MetaApp::Messenger,
        "instagram" => MetaApp::Instagram,
        _ => return Err(DeliveryError::UnknownObject(delivery.object)),
    };
    let events = delivery
        .entry
        .into_iter()
        .flat_map(|entry| entry.messaging)
        .map(|item| MessagingEvent {
            sender: item.sender.id,
            recipient: item.recipient.id,
            timestamp: item.timestamp,
            what: what(
                item.message,
                item.delivery,
                item.read,
                item.referral,
                item.postback,
                item.reaction,
            ),
        })
        .collect();
    Ok((app, events))
}

fn what(
    message: Option<RawMessage>,
    delivery: Option<RawDelivery>,
    read: Option<RawRead>,
    referral: Option<RawReferral>,
    postback: Option<RawPostback>,
    reaction: Option<RawReaction>,
) -> Messaging {
    if let Some(message) = message {
        if message.is_echo {
            return Messaging::Echo { mid: message.mid };
        }
        return Messaging::Message {
            mid: message.mid,
            text: message.text,
            attachments: message
                .attachments
                .into_iter()
                .map(|a| MetaAttachment {
                    kind: a.kind,
                    url: a.payload.and_then(|p| p.url),
                })
                .collect(),
            reply_to: message.reply_to.and_then(|r| r.mid),
            referral: message.referral.and_then(|r| r.reference),
        };
    }
    if let Some(delivery) = delivery {
        return Messaging::Delivery {
            mids: delivery.mids,
            watermark: delivery.watermark,
        };
    }
    if let Some(read) = read {
        return Messaging::Read {
            watermark: read.watermark,
            mid: read.mid,
        };
    }
    if let Some(reference) = referral.and_then(|r| r.reference) {
        return Messaging::Referral { reference };
    }
    if let Some(postback) = postback {
        return Messaging::Postback {
            title: postback.title,
            referral: postback.referral.and_then(|r| r.reference),
        };
    }
    if let Some(reaction) = reaction {
        return Messaging::Reaction {
            mid: reaction.mid,
            emoji: reaction.emoji,
        };
    }
    Messaging::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::MAX_WEBHOOK_BYTES;

    fn one(body: &str) -> MessagingEvent {
        let (_, mut events) = parse(body.as_bytes()).expect("parses");
        assert_eq!(events.len(), 1, "{events:?}");
        events.remove(0)
    }

    fn page(item: &str) -> String {
        format!(
            r#"{{"object":"page","entry":[{{"id":"682498302938465","time":1518479195594,"messaging":[{item}]}}]}}"#
        )
    }

    /// Meta's documented samples (messages webhook reference), in a delivery.
    #[test]
    fn the_documented_text_reply_and_attachment_messages_read() {
        let text = one(&page(
            r#"{"sender":{"id":"1254459154682919"},"recipient":{"id":"682498302938465"},"timestamp":1458692752478,
                "message":{"mid":"mid.1457764197618:41d102a3e1ae206a38","text":"hello, world!","quick_reply":{"payload":"X"}}}"#,
        ));
        assert_eq!(text.sender, "1254459154682919");
        assert_eq!(text.timestamp, Some(1_458_692_752_478));
        assert_eq!(
            text.what,
            Messaging::Message {
                mid: "mid.1457764197618:41d102a3e1ae206a38".to_owned(),
                text: Some("hello, world!".to_owned()),
                attachments: vec![],
                reply_to: None,
                referral: None,
            }
        );
        let reply = one(&page(
            r#"{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":1458692752478,
                "message":{"mid":"m_1457764197618:41d102a3e1ae206a38","text":"hello, world!",
                           "reply_to":{"mid":"m_1fTq8oLumEyIp3Q2MR-aY7IfLZDamVrALniheU","is_self_reply":false}}}"#,
        ));
        assert!(
            matches!(reply.what, Messaging::Message { reply_to: Some(ref r), .. } if r == "m_1fTq8oLumEyIp3Q2MR-aY7IfLZDamVrALniheU")
        );
        let photo = one(&page(
            r#"{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":1518479195308,
                "message":{"mid":"mid.$cAAJdkrCd2ORnva8ErFhjGm0X_Q_c",
                           "attachments":[{"type":"image","payload":{"url":"https://scontent.example/photo.jpg"}},{"type":"fallback"}]}}"#,
        ));
        assert_eq!(
            photo.what,
            Messaging::Message {
                mid: "mid.$cAAJdkrCd2ORnva8ErFhjGm0X_Q_c".to_owned(),
                text: None,
                attachments: vec![
                    MetaAttachment {
                        kind: "image".to_owned(),
                        url: Some("https://scontent.example/photo.jpg".to_owned())
                    },
                    MetaAttachment {
                        kind: "fallback".to_owned(),
                        url: None
                    },
                ],
                reply_to: None,
                referral: None,
            }
        );
    }

    #[test]
    fn echoes_receipts_referrals_postbacks_and_reactions_read() {
        let echo = one(&page(
            r#"{"sender":{"id":"PAGE"},"recipient":{"id":"PSID"},"timestamp":1,
                "message":{"is_echo":true,"app_id":1517776481860111,"mid":"mid.E","text":"ours"}}"#,
        ));
        assert_eq!(
            echo.what,
            Messaging::Echo {
                mid: "mid.E".to_owned()
            }
        );
        let delivered = one(&page(
            r#"{"sender":{"id":"PSID"},"recipient":{"id":"PAGE"},"timestamp":1458668856463,
                "delivery":{"mids":["mid.1458668856218:ed81099e15d3f4f233"],"watermark":1458668856253}}"#,
        ));
        assert_eq!(
            delivered.what,
            Messaging::Delivery {
                mids: vec!["mid.1458668856218:ed81099e15d3f4f233".to_owned()],
                watermark: 1_458_668_856_253
            }
        );
        let read = one(&page(
            r#"{"sender":{"id":"PSID"},"recipient":{"id":"PAGE"},"timestamp":1458668856463,"read":{"watermark":1458668856253}}"#,
        ));
        assert_eq!(
            read.what,
            Messaging::Read {
                watermark: Some(1_458_668_856_253),
                mid: None,
            }
        );
        // Instagram's messaging_seen names the last message read.
        let (app, seen) = parse(
            br#"{"object":"instagram","entry":[{"id":"IGID","time":1569262486134,"messaging":[
                {"sender":{"id":"IGSID"},"recipient":{"id":"IGID"},"timestamp":1569262485349,
                 "read":{"mid":"aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQx"}}]}]}"#,
        )
        .expect("parses");
        assert_eq!(app, MetaApp::Instagram);
        assert_eq!(
            seen[0].what,
            Messaging::Read {
                watermark: None,
                mid: Some("aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQx".to_owned()),
            }
        );
        let referral = one(&page(
            r#"{"sender":{"id":"PSID"},"recipient":{"id":"PAGE"},"timestamp":1458692752478,
                "referral":{"ref":"c0de-42","source":"SHORTLINK","type":"OPEN_THREAD"}}"#,
        ));
        assert_eq!(
            referral.what,
            Messaging::Referral {
                reference: "c0de-42".to_owned()
            }
        );
        let postback = one(&page(
            r#"{"sender":{"id":"PSID"},"recipient":{"id":"PAGE"},"timestamp":1527459824,
                "postback":{"mid":"m_X","title":"Get Started","payload":"GET_STARTED",
                            "referral":{"ref":"c0de-42","source":"SHORTLINK","type":"OPEN_THREAD"}}}"#,
        ));
        assert_eq!(
            postback.what,
            Messaging::Postback {
                title: Some("Get Started".to_owned()),
                referral: Some("c0de-42".to_owned())
            }
        );
        let reaction = one(&page(
            r#"{"sender":{"id":"PSID"},"recipient":{"id":"PAGE"},"timestamp":1,
                "reaction":{"mid":"m_OURS","action":"react","reaction":"love","emoji":"\u2764"}}"#,
        ));
        assert_eq!(
            reaction.what,
            Messaging::Reaction {
                mid: "m_OURS".to_owned(),
                emoji: Some("❤".to_owned())
            }
        );
        let other = one(&page(
            r#"{"sender":{"id":"PSID"},"recipient":{"id":"PAGE"},"timestamp":1,"optin":{"ref":"x"}}"#,
        ));
        assert_eq!(other.what, Messaging::Other);
    }

    #[test]
    fn instagram_has_the_same_shape_and_bad_deliveries_are_refused_whole() {
        let body = r#"{"object":"instagram","entry":[{"id":"IGID","time":1,"messaging":[
            {"sender":{"id":"IGSID"},"recipient":{"id":"IGID"},"timestamp":1,"message":{"mid":"aWdf","text":"hi"}}]}]}"#;
        let (app, events) = parse(body.as_bytes()).expect("parses");
        assert_eq!(app, MetaApp::Instagram);
        assert_eq!(events.len(), 1);
        assert!(matches!(parse(b"[]"), Err(DeliveryError::Malformed(_))));
        assert!(matches!(
            parse(br#"{"object":"whatsapp_business_account","entry":[]}"#),
            Err(DeliveryError::UnknownObject(_))
        ));
        // A messaging item without its sender, or with a timestamp that is not a number.
        assert!(matches!(
            parse(
                page(r#"{"recipient":{"id":"2"},"timestamp":1,"message":{"mid":"m"}}"#).as_bytes()
            ),
            Err(DeliveryError::Malformed(_))
        ));
        assert!(matches!(
            parse(page(r#"{"sender":{"id":"1"},"recipient":{"id":"2"},"timestamp":"soon","message":{"mid":"m"}}"#).as_bytes()),
            Err(DeliveryError::Malformed(_))
        ));
        assert!(matches!(
            parse(&vec![b' '; MAX_WEBHOOK_BYTES + 1]),
            Err(DeliveryError::TooLarge { .. })
        ));
        assert_eq!(
            parse(br#"{"object":"page","entry":[]}"#),
            Ok((MetaApp::Messenger, vec![]))
        );
    }
}
