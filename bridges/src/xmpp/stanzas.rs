//! The stanzas the XMPP bridge reads and writes, as xmpp-parsers' types. Pure: no I/O.

use sha2::{Digest as _, Sha256};
use threadline_protocol::{name::ExternalId, ChannelKind, Handle};
use xmpp_parsers::{
    chatstates::ChatState,
    displayed_markers::{Displayed, Markable},
    jid::{BareJid, Jid},
    message::{Id, Lang, Message, MessageType},
    oob::Oob,
    receipts::{Received, Request},
    stanza_error::{DefinedCondition, ErrorType, StanzaError},
    stanza_id::OriginId,
};

/// What a `<message/>` to the component means to the bridge.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A customer's message, to store.
    Text(TextMessage),
    /// The customer's client has a reply (XEP-0184): `id` is the reply's stanza id.
    Received {
        /// Who.
        handle: Handle,
        /// The reply's stanza id.
        id: String,
    },
    /// The customer has seen the replies up to this one (XEP-0333 `displayed`).
    Displayed {
        /// Who.
        handle: Handle,
        /// The reply's stanza id.
        id: String,
    },
    /// A reply could not reach the customer: the server sent it back as an error.
    Bounced {
        /// Who.
        handle: Handle,
        /// The reply's stanza id.
        id: String,
        /// The server's reason.
        reason: String,
    },
    /// The customer is typing (XEP-0085 `composing`).
    Typing {
        /// Who.
        handle: Handle,
    },
    /// Nothing for the bridge; why, for the log.
    Ignored(&'static str),
}

/// A customer's message to the component.
#[derive(Debug, Clone, PartialEq)]
pub struct TextMessage {
    /// The full JID it came from (answers go there).
    pub from: Jid,
    /// The customer: their bare JID.
    pub handle: Handle,
    /// The stanza's `id` attribute (what a receipt names).
    pub stanza_id: Option<String>,
    /// The id that makes a resend harmless: the origin-id (XEP-0359), else the stanza's id.
    pub external_id: Option<ExternalId>,
    /// The text (without a body that only repeats a file's link).
    pub body: String,
    /// Links to files (XEP-0066 out-of-band data, as XEP-0363 uploads send them).
    pub files: Vec<String>,
    /// Whether the client asked for a receipt (XEP-0184).
    pub wants_receipt: bool,
}

/// The customer handle of a JID: `xmpp:` and the bare JID in lowercase (the JID parser has
/// already applied stringprep). `None` for a JID with no local part (a server or a service,
/// never a customer).
pub fn handle_of(jid: &Jid) -> Option<Handle> {
    let bare = jid.to_bare();
    bare.node()?;
    Handle::new(ChannelKind::Xmpp, &bare.to_string().to_lowercase()).ok()
}

/// The external id for a client's message id: the id itself when it fits, else its SHA-256
/// (a long id is still told apart from every other).
pub fn external_id(id: &str) -> Option<ExternalId> {
    if id.is_empty() {
        return None;
    }
    ExternalId::new(id)
        .or_else(|_| ExternalId::new(format!("sha256:{}", hex::encode(Sha256::digest(id)))))
        .ok()
}

/// Reads a `<message/>` that the server routed to `component` (its domain or any address in
/// it).
pub fn read(mut message: Message, component: &BareJid) -> Incoming {
    let Some(from) = message.from.clone() else {
        return Incoming::Ignored("a message with no sender");
    };
    let to_us = message
        .to
        .as_ref()
        .is_some_and(|to| to.domain() == component.domain());
    if !to_us {
        return Incoming::Ignored("a message for another address");
    }
    if from.domain() == component.domain() {
        return Incoming::Ignored("a message from the component's own domain");
    }
    let Some(handle) = handle_of(&from) else {
        return Incoming::Ignored("a message from a server or service");
    };
    match message.type_ {
        MessageType::Chat | MessageType::Normal => {}
        MessageType::Error => {
            let Some(id) = message.id.take() else {
                return Incoming::Ignored("an error with no id");
            };
            let reason = match message.extract_payload::<StanzaError>() {
                Ok(Some(error)) => error
                    .texts
                    .values()
                    .next()
                    .cloned()
                    .unwrap_or_else(|| format!("{:?}", error.defined_condition)),
                _ => "the server could not deliver it".to_owned(),
            };
            return Incoming::Bounced {
                handle,
                id: id.0,
                reason: format!("the XMPP server could not deliver it: {reason}"),
            };
        }
        MessageType::Groupchat => return Incoming::Ignored("a group chat message"),
        MessageType::Headline => return Incoming::Ignored("a headline"),
    }
    let origin = message.extract_payload::<OriginId>().ok().flatten();
    let receipt_request = message.extract_payload::<Request>().ok().flatten();
    let received = message.extract_payload::<Received>().ok().flatten();
    let displayed = message.extract_payload::<Displayed>().ok().flatten();
    let state = message.extract_payload::<ChatState>().ok().flatten();
    let mut files = Vec::new();
    while let Ok(Some(oob)) = message.extract_payload::<Oob>() {
        files.push(oob.url);
    }
    let body = message
        .get_best_body_cloned(vec![])
        .map(|(_, body)| body)
        .unwrap_or_default();
    if body.is_empty() && files.is_empty() {
        if let Some(received) = received {
            return Incoming::Received {
                handle,
                id: received.id,
            };
        }
        if let Some(displayed) = displayed {
            return Incoming::Displayed {
                handle,
                id: displayed.id.0,
            };
        }
        return match state {
            Some(ChatState::Composing) => Incoming::Typing { handle },
            Some(_) => Incoming::Ignored("a chat state"),
            None => Incoming::Ignored("a message with no body"),
        };
    }
    // A file sent by upload has its link as the body too: the link is the file.
    let body = if files.iter().any(|url| url.trim() == body.trim()) {
        String::new()
    } else {
        body
    };
    let stanza_id = message.id.map(|id| id.0);
    let external_id = origin
        .map(|origin| origin.id)
        .or_else(|| stanza_id.clone())
        .as_deref()
        .and_then(external_id);
    Incoming::Text(TextMessage {
        from,
        handle,
        stanza_id,
        external_id,
        body,
        files,
        wants_receipt: receipt_request.is_some(),
    })
}

/// An agent's reply (or one of its files) from the component to `to`: a chat message with
/// `id` as its stanza id and origin-id, asking for a receipt (XEP-0184) and a displayed marker
/// (XEP-0333). A file goes as its link in the body and as out-of-band data (XEP-0066).
pub fn reply(
    component: &BareJid,
    to: &BareJid,
    id: &str,
    body: &str,
    file: Option<&str>,
) -> Message {
    let mut message = Message::chat(Some(Jid::from(to.clone())));
    message.from = Some(Jid::from(component.clone()));
    message.id = Some(Id(id.to_owned()));
    let body = file.unwrap_or(body);
    message.bodies.insert(Lang::default(), body.to_owned());
    let mut message = message
        .with_payload(OriginId { id: id.to_owned() })
        .with_payload(Request)
        .with_payload(Markable);
    if let Some(url) = file {
        message = message.with_payload(Oob {
            url: url.to_owned(),
            desc: None,
        });
    }
    message
}

/// The receipt (XEP-0184) for the customer's message `id`, once it is stored.
pub fn receipt(component: &BareJid, to: Jid, id: &str) -> Message {
    let mut message = Message::new(Some(to));
    message.type_ = MessageType::Chat;
    message.from = Some(Jid::from(component.clone()));
    message.with_payload(Received { id: id.to_owned() })
}

/// "An agent is typing" (XEP-0085) to `to`.
pub fn composing(component: &BareJid, to: &BareJid) -> Message {
    let mut message = Message::chat(Some(Jid::from(to.clone())));
    message.from = Some(Jid::from(component.clone()));
    message.with_payload(ChatState::Composing)
}

/// Why the customer's message `id` was not taken, as an error message back to them:
/// `wait` (send it again later) or `modify` (it will never be taken as it is).
pub fn refusal(component: &BareJid, to: Jid, id: Option<&str>, retry: bool, text: &str) -> Message {
    let mut message = Message::error(Some(to));
    message.from = Some(Jid::from(component.clone()));
    message.id = id.map(|id| Id(id.to_owned()));
    let (kind, condition) = if retry {
        (ErrorType::Wait, DefinedCondition::ResourceConstraint)
    } else {
        (ErrorType::Modify, DefinedCondition::NotAcceptable)
    };
    message.with_payload(StanzaError::new(kind, condition, "en", text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::minidom::Element;

    fn component() -> BareJid {
        BareJid::new("support.localhost").expect("jid")
    }

    fn message(xml: &str) -> Message {
        let element: Element = xml.parse().expect("xml");
        Message::try_from(element).expect("a message")
    }

    #[test]
    fn a_customer_message_is_read_with_its_ids_files_and_receipt_request() {
        let incoming = read(
            message(
                "<message xmlns='jabber:component:accept' from='Alice@LocalHost/phone' to='support.localhost' id='s-1' type='chat'>\
                 <body>Hello there</body>\
                 <origin-id xmlns='urn:xmpp:sid:0' id='o-1'/>\
                 <request xmlns='urn:xmpp:receipts'/>\
                 </message>",
            ),
            &component(),
        );
        let Incoming::Text(text) = incoming else {
            panic!("a text: {incoming:?}");
        };
        assert_eq!(text.handle.to_string(), "xmpp:alice@localhost");
        assert_eq!(text.from.to_string(), "alice@localhost/phone");
        assert_eq!(text.stanza_id.as_deref(), Some("s-1"));
        assert_eq!(
            text.external_id.map(|id| id.to_string()).as_deref(),
            Some("o-1")
        );
        assert_eq!(text.body, "Hello there");
        assert!(text.wants_receipt);
        assert!(text.files.is_empty());
    }

    #[test]
    fn a_file_whose_link_is_the_body_is_a_file_alone() {
        let incoming = read(
            message(
                "<message xmlns='jabber:component:accept' from='alice@localhost/a' to='support.localhost' id='s-2' type='chat'>\
                 <body>http://127.0.0.1:5280/share/x/photo.png</body>\
                 <x xmlns='jabber:x:oob'><url>http://127.0.0.1:5280/share/x/photo.png</url></x>\
                 </message>",
            ),
            &component(),
        );
        let Incoming::Text(text) = incoming else {
            panic!("a text: {incoming:?}");
        };
        assert_eq!(text.body, "");
        assert_eq!(text.files, ["http://127.0.0.1:5280/share/x/photo.png"]);
        assert_eq!(
            text.external_id.map(|id| id.to_string()).as_deref(),
            Some("s-2")
        );
    }

    #[test]
    fn receipts_markers_and_typing_are_told_apart() {
        let from = "from='alice@localhost/a' to='support.localhost'";
        let received = read(
            message(&format!(
                "<message xmlns='jabber:component:accept' {from}><received xmlns='urn:xmpp:receipts' id='r-1'/></message>"
            )),
            &component(),
        );
        assert!(matches!(received, Incoming::Received { id, .. } if id == "r-1"));
        let displayed = read(
            message(&format!(
                "<message xmlns='jabber:component:accept' {from} type='chat'><displayed xmlns='urn:xmpp:chat-markers:0' id='r-2'/></message>"
            )),
            &component(),
        );
        assert!(matches!(displayed, Incoming::Displayed { id, .. } if id == "r-2"));
        let typing = read(
            message(&format!(
                "<message xmlns='jabber:component:accept' {from} type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
            )),
            &component(),
        );
        assert!(matches!(typing, Incoming::Typing { .. }));
    }

    #[test]
    fn what_is_not_a_customer_writing_to_us_is_ignored() {
        for xml in [
            // no sender
            "<message xmlns='jabber:component:accept' to='support.localhost'><body>x</body></message>",
            // a server, not a user
            "<message xmlns='jabber:component:accept' from='localhost' to='support.localhost'><body>x</body></message>",
            // for someone else
            "<message xmlns='jabber:component:accept' from='alice@localhost/a' to='bob@localhost'><body>x</body></message>",
            // group chat and errors
            "<message xmlns='jabber:component:accept' from='alice@localhost/a' to='support.localhost' type='groupchat'><body>x</body></message>",
            // an address inside our own domain
            "<message xmlns='jabber:component:accept' from='ghost@support.localhost' to='support.localhost'><body>x</body></message>",
        ] {
            assert!(
                matches!(read(message(xml), &component()), Incoming::Ignored(_)),
                "{xml}"
            );
        }
    }

    #[test]
    fn a_reply_sent_back_as_an_error_is_a_bounce_with_the_reason() {
        let incoming = read(
            message(
                "<message xmlns='jabber:component:accept' from='nobody@localhost' to='support.localhost' id='ev-9' type='error'>\
                 <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>\
                 </message>",
            ),
            &component(),
        );
        let Incoming::Bounced { id, reason, .. } = incoming else {
            panic!("a bounce: {incoming:?}");
        };
        assert_eq!(id, "ev-9");
        assert!(reason.contains("ServiceUnavailable"), "{reason}");
    }

    #[test]
    fn a_reply_asks_for_a_receipt_and_a_marker_and_carries_its_file() {
        let to = BareJid::new("alice@localhost").expect("jid");
        let element = Element::from(reply(&component(), &to, "ev-1", "", Some("http://h/f.png")));
        let xml = String::from(&element);
        for needle in [
            "id='ev-1'",
            "from='support.localhost'",
            "to='alice@localhost'",
            "urn:xmpp:receipts",
            "urn:xmpp:chat-markers:0",
            "urn:xmpp:sid:0",
            "jabber:x:oob",
            "<body>http://h/f.png</body>",
        ] {
            assert!(xml.contains(needle), "{needle} in {xml}");
        }
    }

    #[test]
    fn a_long_client_id_is_hashed_to_fit() {
        let long = "x".repeat(ExternalId::MAX_BYTES + 1);
        let id = external_id(&long).expect("an id");
        assert!(id.as_str().starts_with("sha256:"));
        assert_ne!(external_id(&long), external_id(&format!("{long}y")));
    }
}
