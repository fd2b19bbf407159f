//! Erasable content: what an event says about a customer in words.

use serde::{Deserialize, Serialize};

use crate::channel::Handle;
use crate::codec::{self, EncodeError};
use crate::digest::{self, Domain};
use crate::id::{BlobHash, ContentHash, EventId};
use crate::name::{
    AttachmentMeta, ExternalId, Subject, TemplateLanguage, TemplateName, TemplateParameter,
};

/// The erasable part of an event, stored beside its header and checked against the header's
/// content hash. Erasure deletes it and keeps the header.
///
/// Content has three encodings (docs/PROTOCOL.md §4.1): the first four fields alone (`v1`,
/// what every content without a subject, an original, a template or a reply-to is written as,
/// byte for byte as before those fields existed), the first six (`v2`: a subject or an
/// original, nothing later), or all eight (`v3`: a template or a reply-to). [`Content::hash`] and the event's wire form
/// pick the one that fits, so one value still has exactly one encoding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Content {
    /// The text (message body, note, display name, attribute value, failure reason).
    pub text: String,
    /// Attachments, by reference.
    pub attachments: Vec<Attachment>,
    /// The external app's id for the message, if any.
    pub external_id: Option<ExternalId>,
    /// The customer's handle, where the kind needs one.
    pub handle: Option<Handle>,
    /// The message's subject, on channels that have one (email).
    pub subject: Option<Subject>,
    /// The message exactly as the app delivered it (a mail's raw bytes), kept so that nothing
    /// the customer sent is ever unrecoverable from the faithful view above.
    /// (Boxed, like the template: both are rare, and contents are kept in memory by the
    /// million.)
    pub original: Option<Box<Attachment>>,
    /// For a reply that must go as a message template the app approved (WhatsApp outside its
    /// 24-hour window): which template, in which language, with what in its placeholders.
    pub template: Option<Box<Template>>,
    /// The message of the same thread this one answers (the app shows it quoted, where it
    /// can: WhatsApp's `context`).
    pub reply_to: Option<EventId>,
}

/// A message template the app approved, filled in: what a business may send where a free
/// message is not allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Template {
    /// The template's name.
    pub name: TemplateName,
    /// The language it was approved in.
    pub language: TemplateLanguage,
    /// The values of its body's placeholders, `{{1}}` first; at most
    /// [`MAX_TEMPLATE_PARAMETERS`](crate::limits::MAX_TEMPLATE_PARAMETERS).
    pub parameters: Vec<TemplateParameter>,
}

impl Template {
    /// A filled-in template.
    pub fn new(
        name: TemplateName,
        language: TemplateLanguage,
        parameters: Vec<TemplateParameter>,
    ) -> Self {
        Template {
            name,
            language,
            parameters,
        }
    }
}

/// A file attached to a message, stored as a content-addressed blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Attachment {
    /// SHA-256 of the bytes.
    pub blob: BlobHash,
    /// Size in bytes.
    pub size: u64,
    /// Media type (`image/png`).
    pub media_type: AttachmentMeta,
    /// File name as the customer sent it.
    pub name: AttachmentMeta,
}

impl Attachment {
    /// An attachment reference.
    pub fn new(
        blob: BlobHash,
        size: u64,
        media_type: AttachmentMeta,
        name: AttachmentMeta,
    ) -> Self {
        Attachment {
            blob,
            size,
            media_type,
            name,
        }
    }
}

impl Content {
    /// Content with just text.
    pub fn text(text: impl Into<String>) -> Self {
        Content {
            text: text.into(),
            ..Content::default()
        }
    }

    /// Sets the handle.
    pub fn with_handle(mut self, handle: Handle) -> Self {
        self.handle = Some(handle);
        self
    }

    /// Sets the external id.
    pub fn with_external_id(mut self, external_id: ExternalId) -> Self {
        self.external_id = Some(external_id);
        self
    }

    /// Adds an attachment.
    pub fn with_attachment(mut self, attachment: Attachment) -> Self {
        self.attachments.push(attachment);
        self
    }

    /// Sets the subject.
    pub fn with_subject(mut self, subject: Subject) -> Self {
        self.subject = Some(subject);
        self
    }

    /// Sets the original message.
    pub fn with_original(mut self, original: Attachment) -> Self {
        self.original = Some(Box::new(original));
        self
    }

    /// Sets the message template.
    pub fn with_template(mut self, template: Template) -> Self {
        self.template = Some(Box::new(template));
        self
    }

    /// Sets the message this one answers.
    pub fn with_reply_to(mut self, message: EventId) -> Self {
        self.reply_to = Some(message);
        self
    }

    /// Every blob the content refers to: its attachments, then its original.
    pub fn blobs(&self) -> impl Iterator<Item = &Attachment> {
        self.attachments.iter().chain(self.original.as_deref())
    }

    /// The hash the header carries: SHA-256 over `threadline/content/v1 || 0x00 ||
    /// encode(v1 fields)`; for content with a subject or an original and nothing later,
    /// `threadline/content/v2 || 0x00 || encode(v2 fields)`; for content with a template or a
    /// reply-to, `threadline/content/v3 || 0x00 || encode(all fields)`.
    pub fn hash(&self) -> Result<ContentHash, EncodeError> {
        let domain = match self.wire() {
            Wire::V1(_) => Domain::Content,
            Wire::V2(_) => Domain::ContentV2,
            Wire::V3(_) => Domain::ContentV3,
        };
        Ok(ContentHash::from_bytes(digest::sha256(
            domain,
            &self.to_bytes()?,
        )))
    }

    /// The canonical bytes the hash is taken over: `encode(ContentV1)`, `encode(ContentV2)`
    /// or `encode(ContentV3)`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        match self.wire() {
            Wire::V1(v1) => codec::encode(&v1),
            Wire::V2(v2) => codec::encode(&v2),
            Wire::V3(v3) => codec::encode(&v3),
        }
    }

    /// An event's content alone as the event carries it (its encoding's version tagged, as
    /// in the event's wire form; `None` as none): what a store that keeps contents apart from
    /// headers writes.
    pub fn tagged_bytes(content: &Option<Box<Content>>) -> Result<Vec<u8>, EncodeError> {
        codec::encode(&TaggedRef(content))
    }

    /// Reads [`Content::tagged_bytes`] strictly (at most
    /// [`MAX_EVENT_BYTES`](crate::limits::MAX_EVENT_BYTES), canonical).
    pub fn from_tagged_bytes(bytes: &[u8]) -> Result<Option<Box<Content>>, codec::DecodeError> {
        let Tagged(content) = codec::decode(bytes, crate::limits::MAX_EVENT_BYTES)?;
        Ok(content)
    }

    /// [`Content::from_tagged_bytes`] without the canonical check, for bytes a store wrote and
    /// authenticated itself ([`codec::decode_own`]).
    pub fn from_own_tagged_bytes(bytes: &[u8]) -> Result<Option<Box<Content>>, codec::DecodeError> {
        let Tagged(content) = codec::decode_own(bytes, crate::limits::MAX_EVENT_BYTES)?;
        Ok(content)
    }

    fn wire(&self) -> Wire<'_> {
        if self.template.is_some() || self.reply_to.is_some() {
            return Wire::V3(V3 {
                text: &self.text,
                attachments: &self.attachments,
                external_id: &self.external_id,
                handle: &self.handle,
                subject: &self.subject,
                original: &self.original,
                template: &self.template,
                reply_to: &self.reply_to,
            });
        }
        if self.subject.is_none() && self.original.is_none() {
            Wire::V1(V1 {
                text: &self.text,
                attachments: &self.attachments,
                external_id: &self.external_id,
                handle: &self.handle,
            })
        } else {
            Wire::V2(V2 {
                text: &self.text,
                attachments: &self.attachments,
                external_id: &self.external_id,
                handle: &self.handle,
                subject: &self.subject,
                original: &self.original,
            })
        }
    }
}

/// The `v1` fields, in order, borrowed for encoding.
#[derive(Serialize)]
struct V1<'a> {
    text: &'a String,
    attachments: &'a Vec<Attachment>,
    external_id: &'a Option<ExternalId>,
    handle: &'a Option<Handle>,
}

/// The `v2` fields, in order: the `v1` fields, then the subject and the original.
#[derive(Serialize)]
struct V2<'a> {
    text: &'a String,
    attachments: &'a Vec<Attachment>,
    external_id: &'a Option<ExternalId>,
    handle: &'a Option<Handle>,
    subject: &'a Option<Subject>,
    original: &'a Option<Box<Attachment>>,
}

/// All fields, in order: the `v2` fields, then the template and the reply-to (one of them
/// `Some` in `v3`).
#[derive(Serialize)]
struct V3<'a> {
    text: &'a String,
    attachments: &'a Vec<Attachment>,
    external_id: &'a Option<ExternalId>,
    handle: &'a Option<Handle>,
    subject: &'a Option<Subject>,
    original: &'a Option<Box<Attachment>>,
    template: &'a Option<Box<Template>>,
    reply_to: &'a Option<EventId>,
}

enum Wire<'a> {
    V1(V1<'a>),
    V2(V2<'a>),
    V3(V3<'a>),
}

/// The owned `v1` fields, for decoding.
#[derive(Deserialize)]
struct OwnedV1 {
    text: String,
    attachments: Vec<Attachment>,
    external_id: Option<ExternalId>,
    handle: Option<Handle>,
}

/// The `v2` fields, owned, for decoding. The binary form always has all six.
#[derive(Deserialize)]
struct OwnedV2 {
    text: String,
    attachments: Vec<Attachment>,
    external_id: Option<ExternalId>,
    handle: Option<Handle>,
    #[serde(default)]
    subject: Option<Subject>,
    #[serde(default)]
    original: Option<Box<Attachment>>,
}

/// All fields, owned, for decoding. The binary form always has all seven; the human-readable
/// one may leave out the subject, the original, the template and the reply-to.
#[derive(Deserialize)]
struct OwnedV3 {
    text: String,
    attachments: Vec<Attachment>,
    external_id: Option<ExternalId>,
    handle: Option<Handle>,
    #[serde(default)]
    subject: Option<Subject>,
    #[serde(default)]
    original: Option<Box<Attachment>>,
    #[serde(default)]
    template: Option<Box<Template>>,
    #[serde(default)]
    reply_to: Option<EventId>,
}

impl From<OwnedV1> for Content {
    fn from(v1: OwnedV1) -> Self {
        Content {
            text: v1.text,
            attachments: v1.attachments,
            external_id: v1.external_id,
            handle: v1.handle,
            subject: None,
            original: None,
            template: None,
            reply_to: None,
        }
    }
}

impl From<OwnedV2> for Content {
    fn from(v2: OwnedV2) -> Self {
        Content {
            text: v2.text,
            attachments: v2.attachments,
            external_id: v2.external_id,
            handle: v2.handle,
            subject: v2.subject,
            original: v2.original,
            template: None,
            reply_to: None,
        }
    }
}

impl From<OwnedV3> for Content {
    fn from(v3: OwnedV3) -> Self {
        Content {
            text: v3.text,
            attachments: v3.attachments,
            external_id: v3.external_id,
            handle: v3.handle,
            subject: v3.subject,
            original: v3.original,
            template: v3.template,
            reply_to: v3.reply_to,
        }
    }
}

/// A content alone in its wire form (see [`Content::tagged_bytes`]).
#[derive(Serialize, Deserialize)]
struct Tagged(#[serde(with = "wire")] Option<Box<Content>>);

/// [`Tagged`], borrowed (encodes the same bytes).
#[derive(Serialize)]
struct TaggedRef<'a>(#[serde(serialize_with = "tagged_ref")] &'a Option<Box<Content>>);

fn tagged_ref<S: serde::Serializer>(
    content: &&Option<Box<Content>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    wire::serialize(content, serializer)
}

/// An event's `content` as it travels and is stored: tag 0 for none, 1 and the `v1` fields,
/// 2 and the `v2` fields, or 3 and all fields. Tags 0 and 1 are the bytes `Option<v1>` always
/// had, so events written before subjects, originals, templates and replies-to existed read back, and
/// hash, unchanged. Each content is written with the lowest tag that holds it; a higher tag
/// whose extra fields are all absent is refused as non-canonical.
pub(crate) mod wire {
    use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

    use super::{Content, OwnedV1, OwnedV2, OwnedV3, Wire, V1, V2, V3};

    #[derive(Serialize)]
    enum Tagged<'a> {
        None,
        V1(V1<'a>),
        V2(V2<'a>),
        V3(V3<'a>),
    }

    #[derive(Deserialize)]
    enum OwnedTagged {
        None,
        V1(OwnedV1),
        V2(OwnedV2),
        V3(OwnedV3),
    }

    pub(crate) fn serialize<S: Serializer>(
        content: &Option<Box<Content>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        // Human-readable forms (the JSON shown beside the golden vectors) show the fields,
        // or null; the tags are a detail of the binary encoding.
        if serializer.is_human_readable() {
            return match content.as_deref().map(Content::wire) {
                None => serializer.serialize_none(),
                Some(Wire::V1(v1)) => serializer.serialize_some(&v1),
                Some(Wire::V2(v2)) => serializer.serialize_some(&v2),
                Some(Wire::V3(v3)) => serializer.serialize_some(&v3),
            };
        }
        match content.as_deref().map(Content::wire) {
            None => Tagged::None,
            Some(Wire::V1(v1)) => Tagged::V1(v1),
            Some(Wire::V2(v2)) => Tagged::V2(v2),
            Some(Wire::V3(v3)) => Tagged::V3(v3),
        }
        .serialize(serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Box<Content>>, D::Error> {
        if deserializer.is_human_readable() {
            return Ok(
                Option::<OwnedV3>::deserialize(deserializer)?.map(|v3| Box::new(Content::from(v3)))
            );
        }
        Ok(match OwnedTagged::deserialize(deserializer)? {
            OwnedTagged::None => None,
            OwnedTagged::V1(v1) => Some(Box::new(v1.into())),
            OwnedTagged::V2(v2) if v2.subject.is_none() && v2.original.is_none() => {
                return Err(de::Error::custom(
                    "v2 content with neither a subject nor an original must be written as v1",
                ));
            }
            OwnedTagged::V2(v2) => Some(Box::new(v2.into())),
            OwnedTagged::V3(v3) if v3.template.is_none() && v3.reply_to.is_none() => {
                return Err(de::Error::custom(
                    "v3 content with neither a template nor a reply-to must be written as v1 or v2",
                ));
            }
            OwnedTagged::V3(v3) => Some(Box::new(v3.into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Draft, EventKind, Scope};
    use crate::{ChannelKind, SecretKey, Timestamp};

    /// The tagged bytes of a content are exactly what follows the signed header in its event's
    /// encoding, for every version of the encoding, and read back to it.
    #[test]
    fn tagged_content_is_the_events_wire_form_of_it() {
        let handle: crate::Handle = "email:ann@example.com".parse().expect("handle");
        let contents = [
            Content::text("hello").with_handle(handle.clone()),
            Content::text("with a subject")
                .with_handle(handle)
                .with_subject(Subject::new("Re: order").expect("subject")),
            Content::text("a reply").with_reply_to(EventId::from_bytes([4; 32])),
        ];
        for content in contents {
            let event = Draft::new(
                Scope::NewThread,
                Vec::new(),
                0,
                Timestamp::from_millis(1_700_000_000_000),
                EventKind::Thread(crate::event::ThreadKind::Opened {
                    org: crate::OrgId(SecretKey::from_seed([1; 32]).public()),
                    contact: crate::ContactId::from_bytes([2; 16]),
                    channel: ChannelKind::Email,
                }),
            )
            .with_content(content)
            .sign(&SecretKey::from_seed([1; 32]))
            .expect("signs");
            let tagged = Content::tagged_bytes(&event.content).expect("encodes");
            let whole = event.to_bytes().expect("encodes");
            let header = codec::encode(&event.signed).expect("encodes");
            assert_eq!(whole, [header, tagged.clone()].concat());
            assert_eq!(
                Content::from_tagged_bytes(&tagged).expect("decodes"),
                event.content
            );
            assert_eq!(
                Content::from_own_tagged_bytes(&tagged).expect("decodes"),
                event.content
            );
        }
        assert_eq!(Content::from_tagged_bytes(&[0]).expect("none"), None);
    }
}
