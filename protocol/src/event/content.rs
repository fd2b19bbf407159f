//! Erasable content: what an event says about a customer in words.

use serde::{Deserialize, Serialize};

use crate::channel::Handle;
use crate::codec::{self, EncodeError};
use crate::digest::{self, Domain};
use crate::id::{BlobHash, ContentHash};
use crate::name::{AttachmentMeta, ExternalId};

/// The erasable part of an event, stored beside its header and checked against the header's
/// content hash. Erasure deletes it and keeps the header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

    /// The hash the header carries: SHA-256 over `threadline/content/v1 || 0x00 ||
    /// encode(content)`.
    pub fn hash(&self) -> Result<ContentHash, EncodeError> {
        Ok(ContentHash::from_bytes(digest::sha256(
            Domain::Content,
            &codec::encode(self)?,
        )))
    }
}
