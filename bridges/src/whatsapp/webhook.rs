//! The WhatsApp Cloud API's `messages` webhook, read: what a signed delivery says, as typed
//! events, before anything is stored.
//!
//! A delivery is `{"object": "whatsapp_business_account", "entry": [{"id", "changes": [{"field",
//! "value"}]}]}`; a `value` of field `messages` carries the customers' `messages` (with their
//! `contacts`, whose `profile.name` is what they go by) or the `statuses` of the business's
//! messages. Other fields (template reviews, quality updates) are not about conversations and
//! are skipped. A delivery that is not JSON of that shape is refused whole.

use serde::Deserialize;

use crate::webhook::{read_delivery, DeliveryError};

/// One thing a delivery says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhatsappEvent {
    /// A customer's message to the business's number `phone_number_id`.
    Message(InboundWhatsapp),
    /// What happened to a message the business sent.
    Status(StatusUpdate),
}

/// A customer's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundWhatsapp {
    /// The business number it was sent to (the `metadata.phone_number_id`).
    pub phone_number_id: String,
    /// The customer's WhatsApp id (their number, digits only).
    pub from: String,
    /// Their profile name, if the delivery gives it.
    pub profile_name: Option<String>,
    /// The message id (`wamid.…`): the same message always has it, however often it is sent.
    pub id: String,
    /// Unix seconds.
    pub timestamp: u64,
    /// The message this one answers, if the customer replied to one (`context.id`).
    pub reply_to: Option<String>,
    /// What it says.
    pub body: WhatsappBody,
}

/// What a customer's message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhatsappBody {
    /// Text.
    Text(String),
    /// A file kept by WhatsApp under `media_id` (fetched with the media lookup).
    Media {
        /// `image`, `audio`, `video`, `document` or `sticker`.
        kind: String,
        /// The media id.
        media_id: String,
        /// Its type as WhatsApp says.
        mime_type: Option<String>,
        /// The SHA-256 WhatsApp gives (base64 or hex as sent), checked against the download.
        sha256: Option<String>,
        /// The caption, if any.
        caption: Option<String>,
        /// The file name (documents).
        filename: Option<String>,
    },
    /// An emoji reaction to one of the business's messages (`emoji` empty: removed).
    Reaction {
        /// The message reacted to.
        message_id: String,
        /// The emoji.
        emoji: String,
    },
    /// A message type the bridge does not take apart (a location, a contact card, an
    /// unsupported type): kept as a line saying what it was, so nothing passes silently.
    Other {
        /// The `type`.
        kind: String,
    },
}

/// A status of a message the business sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    /// The business's message (`wamid.…`).
    pub id: String,
    /// The customer it went to.
    pub recipient_id: String,
    /// `sent`, `delivered`, `read` or `failed` (anything else as sent).
    pub status: String,
    /// Unix seconds.
    pub timestamp: u64,
    /// Why it failed, as WhatsApp says (`code: title`), for a failed one.
    pub errors: Vec<String>,
    /// What the business attached to the message when it sent it (the bridge puts the
    /// message's event id there).
    pub callback_data: Option<String>,
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
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    field: String,
    value: serde_json::Value,
}

#[derive(Deserialize)]
struct MessagesValue {
    metadata: Metadata,
    #[serde(default)]
    contacts: Vec<Contact>,
    #[serde(default)]
    messages: Vec<RawMessage>,
    #[serde(default)]
    statuses: Vec<RawStatus>,
}

#[derive(Deserialize)]
struct Metadata {
    phone_number_id: String,
}

#[derive(Deserialize)]
struct Contact {
    wa_id: String,
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawMessage {
    from: String,
    id: String,
    timestamp: String,
    #[serde(rename = "type")]
    kind: String,
    context: Option<Context>,
    text: Option<Text>,
    reaction: Option<Reaction>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct Context {
    id: Option<String>,
}

#[derive(Deserialize)]
struct Text {
    body: String,
}

#[derive(Deserialize)]
struct Reaction {
    message_id: String,
    #[serde(default)]
    emoji: String,
}

#[derive(Deserialize)]
struct Media {
    id: String,
    mime_type: Option<String>,
    sha256: Option<String>,
    caption: Option<String>,
    filename: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    id: String,
    status: String,
    timestamp: String,
    recipient_id: String,
    #[serde(default)]
    errors: Vec<RawError>,
    biz_opaque_callback_data: Option<String>,
}

#[derive(Deserialize)]
struct RawError {
    code: Option<i64>,
    title: Option<String>,
    message: Option<String>,
}

const MEDIA_KINDS: [&str; 5] = ["image", "audio", "video", "document", "sticker"];

/// Reads a delivery's raw body (after its signature was checked) into its events, in order.
pub fn parse(body: &[u8]) -> Result<Vec<WhatsappEvent>, DeliveryError> {
    let delivery: Delivery = read_delivery(body)?;
    let malformed = |err: serde_json::Error| DeliveryError::Malformed(err.to_string());
    if delivery.object != "whatsapp_business_account" {
        return Err(DeliveryError::UnknownObject(delivery.object));
    }
    let mut events = Vec::new();
    for change in delivery.entry.into_iter().flat_map(|e| e.changes) {
        if change.field != "messages" {
            continue;
        }
        let value: MessagesValue = serde_json::from_value(change.value).map_err(malformed)?;
        let name_of = |wa_id: &str| {
            value
                .contacts
                .iter()
                .find(|c| c.wa_id == wa_id)
                .and_then(|c| c.profile.as_ref())
                .and_then(|p| p.name.clone())
                .filter(|n| !n.trim().is_empty())
        };
        for message in &value.messages {
            events.push(WhatsappEvent::Message(InboundWhatsapp {
                phone_number_id: value.metadata.phone_number_id.clone(),
                from: message.from.clone(),
                profile_name: name_of(&message.from),
                id: message.id.clone(),
                timestamp: seconds(&message.timestamp)?,
                reply_to: message.context.as_ref().and_then(|c| c.id.clone()),
                body: body_of(message)?,
            }));
        }
        for status in value.statuses {
            events.push(WhatsappEvent::Status(StatusUpdate {
                timestamp: seconds(&status.timestamp)?,
                errors: status
                    .errors
                    .iter()
                    .map(|e| {
                        let text = e.title.as_deref().or(e.message.as_deref()).unwrap_or("");
                        match e.code {
                            Some(code) => format!("{code}: {text}"),
                            None => text.to_owned(),
                        }
                    })
                    .collect(),
                id: status.id,
                status: status.status,
                recipient_id: status.recipient_id,
                callback_data: status.biz_opaque_callback_data,
            }));
        }
    }
    Ok(events)
}

fn body_of(message: &RawMessage) -> Result<WhatsappBody, DeliveryError> {
    let missing = |what: &str| {
        DeliveryError::Malformed(format!("a {} message without its `{what}`", message.kind))
    };
    Ok(match message.kind.as_str() {
        "text" => WhatsappBody::Text(
            message
                .text
                .as_ref()
                .ok_or_else(|| missing("text"))?
                .body
                .clone(),
        ),
        "reaction" => {
            let reaction = message
                .reaction
                .as_ref()
                .ok_or_else(|| missing("reaction"))?;
            WhatsappBody::Reaction {
                message_id: reaction.message_id.clone(),
                emoji: reaction.emoji.clone(),
            }
        }
        kind if MEDIA_KINDS.contains(&kind) => {
            let media: Media = message
                .rest
                .get(kind)
                .cloned()
                .map(serde_json::from_value)
                .ok_or_else(|| missing(kind))?
                .map_err(|err| DeliveryError::Malformed(err.to_string()))?;
            WhatsappBody::Media {
                kind: kind.to_owned(),
                media_id: media.id,
                mime_type: media.mime_type,
                sha256: media.sha256,
                caption: media.caption,
                filename: media.filename,
            }
        }
        other => WhatsappBody::Other {
            kind: other.to_owned(),
        },
    })
}

fn seconds(text: &str) -> Result<u64, DeliveryError> {
    text.parse()
        .map_err(|_| DeliveryError::Malformed(format!("timestamp `{text}` is not Unix seconds")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::MAX_WEBHOOK_BYTES;

    /// Meta's documented sample of a text message (messages webhook reference).
    const TEXT: &str = r#"{
      "object": "whatsapp_business_account",
      "entry": [{
        "id": "102290129340398",
        "changes": [{
          "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
            "messages": [{
              "from": "16505551234",
              "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
              "timestamp": "1749416383",
              "type": "text",
              "text": {"body": "Does it come in another color?"}
            }]
          },
          "field": "messages"
        }]
      }]
    }"#;

    #[test]
    fn the_documented_text_message_reads_with_its_profile_name() {
        let events = parse(TEXT.as_bytes()).expect("parses");
        assert_eq!(
            events,
            vec![WhatsappEvent::Message(InboundWhatsapp {
                phone_number_id: "106540352242922".to_owned(),
                from: "16505551234".to_owned(),
                profile_name: Some("Sheena Nelson".to_owned()),
                id: "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=".to_owned(),
                timestamp: 1_749_416_383,
                reply_to: None,
                body: WhatsappBody::Text("Does it come in another color?".to_owned()),
            })]
        );
    }

    #[test]
    fn media_reactions_replies_and_unknown_types_read() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
          "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
          "contacts":[{"profile":{"name":"Sheena Nelson"},"wa_id":"16505551234"}],
          "messages":[
            {"from":"16505551234","id":"wamid.I1","timestamp":"1749416400","type":"image",
             "context":{"from":"15550783881","id":"wamid.OURS"},
             "image":{"caption":"The box","mime_type":"image/jpeg","sha256":"abc=","id":"1003383421387256"}},
            {"from":"16505551234","id":"wamid.D1","timestamp":"1749416401","type":"document",
             "document":{"filename":"invoice.pdf","mime_type":"application/pdf","sha256":"def=","id":"2003"}},
            {"from":"16505551234","id":"wamid.R1","timestamp":"1749416402","type":"reaction",
             "reaction":{"message_id":"wamid.OURS","emoji":"\ud83d\udc4d"}},
            {"from":"16505551234","id":"wamid.U1","timestamp":"1749416403","type":"unsupported",
             "errors":[{"code":131051,"title":"Message type unknown"}],"unsupported":{"type":"poll_update"}}
          ]}}]}]}"#;
        let events = parse(body.as_bytes()).expect("parses");
        let bodies: Vec<&WhatsappBody> = events
            .iter()
            .map(|e| match e {
                WhatsappEvent::Message(m) => &m.body,
                WhatsappEvent::Status(s) => panic!("no status here: {s:?}"),
            })
            .collect();
        assert_eq!(
            bodies[0],
            &WhatsappBody::Media {
                kind: "image".to_owned(),
                media_id: "1003383421387256".to_owned(),
                mime_type: Some("image/jpeg".to_owned()),
                sha256: Some("abc=".to_owned()),
                caption: Some("The box".to_owned()),
                filename: None,
            }
        );
        assert!(
            matches!(events[0], WhatsappEvent::Message(ref m) if m.reply_to.as_deref() == Some("wamid.OURS"))
        );
        assert!(
            matches!(bodies[1], WhatsappBody::Media { filename: Some(f), .. } if f == "invoice.pdf")
        );
        assert_eq!(
            bodies[2],
            &WhatsappBody::Reaction {
                message_id: "wamid.OURS".to_owned(),
                emoji: "👍".to_owned()
            }
        );
        assert_eq!(
            bodies[3],
            &WhatsappBody::Other {
                kind: "unsupported".to_owned()
            }
        );
    }

    #[test]
    fn statuses_read_with_their_errors() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"1314702302917944","changes":[{"field":"messages","value":{
          "messaging_product":"whatsapp","metadata":{"display_phone_number":"15556459128","phone_number_id":"590968830767958"},
          "statuses":[
            {"id":"wamid.A","status":"delivered","timestamp":"1750857384","recipient_id":"5516992318222",
             "conversation":{"id":"a75d","origin":{"type":"service"}},"pricing":{"billable":true,"pricing_model":"CBP","category":"service"}},
            {"id":"wamid.B","status":"failed","timestamp":"1683871427","recipient_id":"919999999999",
             "errors":[{"code":131047,"title":"Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
                        "href":"https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]}
          ]}}]}]}"#;
        let events = parse(body.as_bytes()).expect("parses");
        assert_eq!(
            events[1],
            WhatsappEvent::Status(StatusUpdate {
                id: "wamid.B".to_owned(),
                recipient_id: "919999999999".to_owned(),
                status: "failed".to_owned(),
                timestamp: 1_683_871_427,
                errors: vec!["131047: Message failed to send because more than 24 hours have passed since the customer last replied to this number.".to_owned()],
                callback_data: None,
            })
        );
        assert!(
            matches!(&events[0], WhatsappEvent::Status(s) if s.status == "delivered" && s.errors.is_empty())
        );
    }

    #[test]
    fn bad_deliveries_are_refused_whole_and_other_fields_skipped() {
        assert!(matches!(parse(b"{"), Err(DeliveryError::Malformed(_))));
        assert!(matches!(
            parse(br#"{"object":"page","entry":[]}"#),
            Err(DeliveryError::UnknownObject(o)) if o == "page"
        ));
        assert!(matches!(
            parse(&vec![b' '; MAX_WEBHOOK_BYTES + 1]),
            Err(DeliveryError::TooLarge { .. })
        ));
        // A text message without its text, a timestamp that is not a number: refused.
        let no_text = TEXT.replace(
            r#""text": {"body": "Does it come in another color?"}"#,
            r#""x": 1"#,
        );
        assert!(matches!(
            parse(no_text.as_bytes()),
            Err(DeliveryError::Malformed(_))
        ));
        let bad_time = TEXT.replace("1749416383", "yesterday");
        assert!(matches!(
            parse(bad_time.as_bytes()),
            Err(DeliveryError::Malformed(_))
        ));
        // A template review is not about a conversation.
        let review = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"message_template_status_update","value":{"event":"APPROVED","message_template_id":1}}]}]}"#;
        assert_eq!(parse(review.as_bytes()), Ok(vec![]));
        assert_eq!(
            parse(br#"{"object":"whatsapp_business_account","entry":[]}"#),
            Ok(vec![])
        );
    }
}
