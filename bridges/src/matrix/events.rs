//! What the events a homeserver pushes mean to the bridge, read with ruma's types. Pure: no
//! I/O.

use ruma::api::appservice::event::push_events::v1::EphemeralData;
use ruma::events::receipt::ReceiptType;
use ruma::events::room::member::MembershipState;
use ruma::events::room::message::{MessageType, Relation, RoomMessageEventContent};
use ruma::events::room::MediaSource;
use ruma::events::{
    AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, MessageLikeEvent, StateEvent,
};
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, UserId};

/// A file a customer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Where the media repository keeps it.
    pub url: OwnedMxcUri,
    /// Its name.
    pub name: String,
    /// Its media type, if the client gave one.
    pub media_type: Option<String>,
}

/// What one timeline event means.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    /// The bot was invited to a room.
    Invited {
        /// The room.
        room: OwnedRoomId,
        /// Who invited it.
        by: OwnedUserId,
        /// Whether the inviter marked it a direct chat.
        direct: bool,
    },
    /// Someone other than the bot joined a room.
    Joined {
        /// The room.
        room: OwnedRoomId,
        /// Who.
        user: OwnedUserId,
    },
    /// Someone left a room (or was made to).
    Left {
        /// The room.
        room: OwnedRoomId,
        /// Who.
        user: OwnedUserId,
    },
    /// A message: text, a notice or an emote, or a file.
    Message {
        /// The room.
        room: OwnedRoomId,
        /// Who wrote.
        sender: OwnedUserId,
        /// Its event id (the idempotency key).
        event: OwnedEventId,
        /// The text (a file's caption or name for a file).
        text: String,
        /// The HTML the client sent beside the text, if any.
        formatted: Option<String>,
        /// The file, for `m.image`, `m.file`, `m.audio` and `m.video`.
        media: Option<Media>,
        /// The message it answers, if any.
        reply_to: Option<OwnedEventId>,
    },
    /// The sender changed an earlier message of theirs.
    Edit {
        /// The room.
        room: OwnedRoomId,
        /// Who.
        sender: OwnedUserId,
        /// The edit's event id.
        event: OwnedEventId,
        /// The message edited.
        of: OwnedEventId,
        /// Its new text.
        text: String,
    },
    /// The sender deleted (redacted) an earlier event.
    Redaction {
        /// The room.
        room: OwnedRoomId,
        /// Who.
        sender: OwnedUserId,
        /// The redaction's event id.
        event: OwnedEventId,
        /// The event deleted.
        of: OwnedEventId,
    },
    /// An end-to-end encrypted message, or encryption turned on: the bridge cannot read it.
    Encrypted {
        /// The room.
        room: OwnedRoomId,
        /// Who.
        sender: OwnedUserId,
        /// Its event id.
        event: OwnedEventId,
    },
    /// Nothing for the bridge; why, for the log.
    Ignored(&'static str),
}

/// What one ephemeral event means.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// `user` has read the room up to a moment (ms since the epoch).
    Read {
        /// The room.
        room: OwnedRoomId,
        /// Who.
        user: OwnedUserId,
        /// When the receipt was made.
        at_ms: u64,
    },
    /// These users are typing in the room now.
    Typing {
        /// The room.
        room: OwnedRoomId,
        /// Who.
        users: Vec<OwnedUserId>,
    },
}

/// Reads a pushed timeline event. `bot` is the bridge's user; events it sent are ignored.
pub fn read(raw: &Raw<AnyTimelineEvent>, bot: &UserId) -> Happening {
    let Ok(event) = raw.deserialize() else {
        return Happening::Ignored("an event that does not parse");
    };
    if event.sender() == bot {
        return Happening::Ignored("the bot's own event");
    }
    match event {
        AnyTimelineEvent::State(AnyStateEvent::RoomMember(StateEvent::Original(member))) => {
            let room = member.room_id;
            let user = member.state_key;
            match member.content.membership {
                MembershipState::Invite if user == bot => Happening::Invited {
                    room,
                    by: member.sender,
                    direct: member.content.is_direct.unwrap_or(false),
                },
                MembershipState::Join if user != bot => Happening::Joined { room, user },
                MembershipState::Leave | MembershipState::Ban => Happening::Left { room, user },
                _ => Happening::Ignored("a membership change"),
            }
        }
        AnyTimelineEvent::State(AnyStateEvent::RoomEncryption(StateEvent::Original(state))) => {
            Happening::Encrypted {
                room: state.room_id,
                sender: state.sender,
                event: state.event_id,
            }
        }
        AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomEncrypted(
            MessageLikeEvent::Original(encrypted),
        )) => Happening::Encrypted {
            room: encrypted.room_id,
            sender: encrypted.sender,
            event: encrypted.event_id,
        },
        AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomRedaction(
            ruma::events::room::redaction::RoomRedactionEvent::Original(redaction),
        )) => match redaction.redacts.or(redaction.content.redacts) {
            Some(of) => Happening::Redaction {
                room: redaction.room_id,
                sender: redaction.sender,
                event: redaction.event_id,
                of,
            },
            None => Happening::Ignored("a redaction of nothing"),
        },
        AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(
            MessageLikeEvent::Original(message),
        )) => read_message(
            message.room_id,
            message.sender,
            message.event_id,
            message.content,
        ),
        _ => Happening::Ignored("an event the bridge does not take"),
    }
}

fn read_message(
    room: OwnedRoomId,
    sender: OwnedUserId,
    event: OwnedEventId,
    content: RoomMessageEventContent,
) -> Happening {
    let reply_to = match &content.relates_to {
        Some(Relation::Replacement(replacement)) => {
            let text = replacement.new_content.msgtype.body().to_owned();
            return Happening::Edit {
                room,
                sender,
                event,
                of: replacement.event_id.clone(),
                text,
            };
        }
        Some(Relation::Reply(reply)) => Some(reply.in_reply_to.event_id.clone()),
        _ => None,
    };
    let file = |body: &str, filename: Option<&String>, source: &MediaSource, mimetype| {
        match source {
            MediaSource::Plain(url) => Some(Media {
                url: url.clone(),
                name: filename.cloned().unwrap_or_else(|| body.to_owned()),
                media_type: mimetype,
            }),
            // An encrypted file: its key is in an encrypted room the bridge cannot read.
            MediaSource::Encrypted(_) => None,
        }
    };
    let (text, formatted, media) = match &content.msgtype {
        MessageType::Text(text) => (
            text.body.clone(),
            text.formatted.as_ref().map(|f| f.body.clone()),
            None,
        ),
        MessageType::Notice(notice) => (
            notice.body.clone(),
            notice.formatted.as_ref().map(|f| f.body.clone()),
            None,
        ),
        MessageType::Emote(emote) => (
            format!("* {}", emote.body),
            emote.formatted.as_ref().map(|f| f.body.clone()),
            None,
        ),
        MessageType::Image(image) => {
            let media = file(
                &image.body,
                image.filename.as_ref(),
                &image.source,
                image.info.as_ref().and_then(|i| i.mimetype.clone()),
            );
            (caption(&image.body, image.filename.as_ref()), None, media)
        }
        MessageType::File(f) => {
            let media = file(
                &f.body,
                f.filename.as_ref(),
                &f.source,
                f.info.as_ref().and_then(|i| i.mimetype.clone()),
            );
            (caption(&f.body, f.filename.as_ref()), None, media)
        }
        MessageType::Audio(audio) => {
            let media = file(
                &audio.body,
                audio.filename.as_ref(),
                &audio.source,
                audio.info.as_ref().and_then(|i| i.mimetype.clone()),
            );
            (caption(&audio.body, audio.filename.as_ref()), None, media)
        }
        MessageType::Video(video) => {
            let media = file(
                &video.body,
                video.filename.as_ref(),
                &video.source,
                video.info.as_ref().and_then(|i| i.mimetype.clone()),
            );
            (caption(&video.body, video.filename.as_ref()), None, media)
        }
        other => (other.body().to_owned(), None, None),
    };
    Happening::Message {
        room,
        sender,
        event,
        text,
        formatted,
        media,
        reply_to,
    }
}

/// A file's caption: its body when the client sent a file name apart (the body is then the
/// caption), else nothing (the body is only the name).
fn caption(body: &str, filename: Option<&String>) -> String {
    match filename {
        Some(name) if name != body => body.to_owned(),
        _ => String::new(),
    }
}

/// Reads a pushed ephemeral event (MSC2409): read receipts and typing.
pub fn read_ephemeral(raw: &Raw<EphemeralData>) -> Vec<Signal> {
    let Ok(data) = raw.deserialize() else {
        return Vec::new();
    };
    match data {
        EphemeralData::Receipt(receipt) => {
            let mut signals = Vec::new();
            for receipts in receipt.content.0.values() {
                for (kind, users) in receipts {
                    if !matches!(kind, ReceiptType::Read | ReceiptType::ReadPrivate) {
                        continue;
                    }
                    for (user, read) in users {
                        let at_ms = read.ts.map_or(0, |ts| u64::from(ts.0));
                        signals.push(Signal::Read {
                            room: receipt.room_id.clone(),
                            user: user.clone(),
                            at_ms,
                        });
                    }
                }
            }
            signals
        }
        EphemeralData::Typing(typing) => vec![Signal::Typing {
            room: typing.room_id,
            users: typing.content.user_ids,
        }],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot() -> OwnedUserId {
        "@support:localhost".try_into().expect("user id")
    }

    fn raw(json: serde_json::Value) -> Raw<AnyTimelineEvent> {
        Raw::from_json(serde_json::value::to_raw_value(&json).expect("json"))
    }

    fn event(kind: &str, content: serde_json::Value) -> Raw<AnyTimelineEvent> {
        raw(serde_json::json!({
            "type": kind, "content": content, "event_id": "$e1", "sender": "@alice:localhost",
            "room_id": "!r:localhost", "origin_server_ts": 1_700_000_000_000u64,
        }))
    }

    #[test]
    fn an_invite_of_the_bot_is_read_with_its_direct_flag() {
        let invite = raw(serde_json::json!({
            "type": "m.room.member", "state_key": "@support:localhost", "event_id": "$i",
            "sender": "@alice:localhost", "room_id": "!r:localhost", "origin_server_ts": 1,
            "content": {"membership": "invite", "is_direct": true},
        }));
        assert_eq!(
            read(&invite, &bot()),
            Happening::Invited {
                room: "!r:localhost".try_into().expect("room"),
                by: "@alice:localhost".try_into().expect("user"),
                direct: true,
            }
        );
    }

    #[test]
    fn text_with_html_a_reply_an_edit_and_a_file_are_told_apart() {
        let text = event(
            "m.room.message",
            serde_json::json!({"msgtype": "m.text", "body": "hi *there*",
                "format": "org.matrix.custom.html", "formatted_body": "hi <em>there</em>",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$earlier"}}}),
        );
        let Happening::Message {
            text,
            formatted,
            reply_to,
            media,
            ..
        } = read(&text, &bot())
        else {
            panic!("a message");
        };
        assert_eq!(text, "hi *there*");
        assert_eq!(formatted.as_deref(), Some("hi <em>there</em>"));
        assert_eq!(
            reply_to.map(|id| id.to_string()).as_deref(),
            Some("$earlier")
        );
        assert!(media.is_none());

        let edit = event(
            "m.room.message",
            serde_json::json!({"msgtype": "m.text", "body": "* fixed",
                "m.new_content": {"msgtype": "m.text", "body": "fixed"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}}),
        );
        let Happening::Edit { of, text, .. } = read(&edit, &bot()) else {
            panic!("an edit");
        };
        assert_eq!((of.as_str(), text.as_str()), ("$orig", "fixed"));

        let image = event(
            "m.room.message",
            serde_json::json!({"msgtype": "m.image", "body": "cat.png",
                "url": "mxc://localhost/abc", "info": {"mimetype": "image/png"}}),
        );
        let Happening::Message { text, media, .. } = read(&image, &bot()) else {
            panic!("a file");
        };
        assert_eq!(text, "", "the body is only the file's name");
        let media = media.expect("media");
        assert_eq!(media.url.as_str(), "mxc://localhost/abc");
        assert_eq!(media.name, "cat.png");
        assert_eq!(media.media_type.as_deref(), Some("image/png"));
    }

    #[test]
    fn encryption_redactions_the_bots_own_and_broken_events() {
        let encrypted = event(
            "m.room.encrypted",
            serde_json::json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x",
                "sender_key": "k", "device_id": "D", "session_id": "s"}),
        );
        assert!(matches!(
            read(&encrypted, &bot()),
            Happening::Encrypted { .. }
        ));
        let redaction = raw(serde_json::json!({
            "type": "m.room.redaction", "redacts": "$gone", "content": {"redacts": "$gone"},
            "event_id": "$x", "sender": "@alice:localhost", "room_id": "!r:localhost",
            "origin_server_ts": 1,
        }));
        assert!(
            matches!(read(&redaction, &bot()), Happening::Redaction { of, .. } if of.as_str() == "$gone")
        );
        let own = raw(serde_json::json!({
            "type": "m.room.message", "content": {"msgtype": "m.text", "body": "x"},
            "event_id": "$o", "sender": "@support:localhost", "room_id": "!r:localhost",
            "origin_server_ts": 1,
        }));
        assert!(matches!(read(&own, &bot()), Happening::Ignored(_)));
        let broken = raw(serde_json::json!({"type": "m.room.message", "content": 5}));
        assert!(matches!(read(&broken, &bot()), Happening::Ignored(_)));
    }
}
