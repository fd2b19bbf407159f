//! The name a contact goes by: its `name` attribute, which an agent sets (renaming the
//! contact) and the node sets from what a customer's app says (a mail's display name) when a
//! contact it already had has no name; or else the display name it was created with.

use threadline_protocol::{
    directory::ContactRecord,
    name::{AttributeKey, NameError},
};

/// The attribute that names a contact created without a name.
pub const ATTRIBUTE: &str = "name";

/// The `name` attribute's key.
pub fn attribute() -> Result<AttributeKey, NameError> {
    AttributeKey::new(ATTRIBUTE)
}

/// The contact's name, if it has one (an erased contact has none): its `name` attribute (set
/// by an agent, or by the node when the contact had no name), else the name it was created
/// with.
pub fn of(record: &ContactRecord) -> Option<String> {
    if record.erased {
        return None;
    }
    record
        .attributes
        .iter()
        .find(|(key, name)| key.as_str() == ATTRIBUTE && !name.is_empty())
        .map(|(_, name)| name.clone())
        .or_else(|| record.display_name.clone())
}
