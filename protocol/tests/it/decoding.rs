//! Every decode error, on real events and sync frames: trailing bytes, truncation, oversize,
//! unknown variants, invalid values and non-canonical encodings. Decoding never panics.

use threadline_protocol::{
    codec::{self, DecodeError},
    event::{Content, EventKind, ThreadKind},
    limits::MAX_EVENT_BYTES,
    sync::SyncMessage,
    Event,
};

use crate::fixtures::{next_draft, sign_unverified, World};

fn sample_event() -> Event {
    let world = World::new();
    let thread = world.open_thread();
    sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Note),
            Some(world.agent),
            Some(Content::text("a note")),
        ),
    )
}

#[test]
fn a_valid_event_round_trips() {
    let event = sample_event();
    let bytes = event.to_bytes().expect("encodes");
    assert_eq!(Event::from_bytes(&bytes), Ok(event));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = sample_event().to_bytes().expect("encodes");
    let len = bytes.len();
    bytes.push(0);
    assert_eq!(
        Event::from_bytes(&bytes),
        Err(DecodeError::TrailingBytes {
            consumed: len,
            trailing: 1
        })
    );
}

#[test]
fn every_truncation_is_refused() {
    let bytes = sample_event().to_bytes().expect("encodes");
    for cut in 0..bytes.len() {
        let err = Event::from_bytes(&bytes[..cut]).expect_err("truncated input must fail");
        assert!(
            matches!(
                err,
                DecodeError::Truncated { .. } | DecodeError::Invalid { .. }
            ),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn oversize_input_is_refused_before_parsing() {
    let bytes = vec![0u8; MAX_EVENT_BYTES + 1];
    assert_eq!(
        Event::from_bytes(&bytes),
        Err(DecodeError::TooLarge {
            len: MAX_EVENT_BYTES + 1,
            max: MAX_EVENT_BYTES
        })
    );
}

#[test]
fn unknown_variants_are_refused() {
    // Scope is the first field of an event: tag 3 names no scope.
    let mut bytes = sample_event().to_bytes().expect("encodes");
    assert_eq!(bytes[0], 2, "a thread event's scope tag is 2");
    bytes[0] = 3;
    assert!(matches!(
        Event::from_bytes(&bytes),
        Err(DecodeError::UnknownVariant { .. })
    ));
    // A sync message tag beyond the last (NoBlob, 15).
    assert!(matches!(
        SyncMessage::from_bytes(&[16]),
        Err(DecodeError::UnknownVariant { .. })
    ));
}

#[test]
fn non_canonical_integers_are_refused() {
    // The depth (a varint < 251) rewritten as a 3-byte varint decodes in bincode, but is not the
    // canonical encoding: the protocol refuses it.
    let event = sample_event();
    let depth = event.signed.header.depth;
    assert!(depth < 251);
    let bytes = event.to_bytes().expect("encodes");
    // scope (1 tag + 32 thread id) + parents (1 length + 32 * n) then the depth byte.
    let n_parents = event.signed.header.parents.len();
    let at = 1 + 32 + 1 + 32 * n_parents;
    assert_eq!(bytes[at] as u64, depth);
    let mut widened = bytes[..at].to_vec();
    widened.extend_from_slice(&[251, depth as u8, 0]);
    widened.extend_from_slice(&bytes[at + 1..]);
    assert_eq!(Event::from_bytes(&widened), Err(DecodeError::NonCanonical));
}

#[test]
fn invalid_values_are_refused() {
    let event = sample_event();
    let bytes = event.to_bytes().expect("encodes");
    // The author key follows scope, parents and depth. A non-canonical encoding (y = p + 2)
    // is refused by the decoder.
    let n_parents = event.signed.header.parents.len();
    let at = 1 + 32 + 1 + 32 * n_parents + 1;
    let mut non_canonical_key = bytes.clone();
    let mut y = [0xffu8; 32];
    y[0] = 0xef;
    y[31] = 0x7f;
    non_canonical_key[at..at + 32].copy_from_slice(&y);
    assert!(matches!(
        Event::from_bytes(&non_canonical_key),
        Err(DecodeError::Invalid { .. })
    ));
    // A canonical encoding that is not a curve point decodes (checking it means decompressing
    // it, which verification does anyway) and then fails verification.
    let mut not_a_point = bytes.clone();
    let mut y = [0u8; 32];
    y[0] = 2;
    not_a_point[at..at + 32].copy_from_slice(&y);
    let decoded = Event::from_bytes(&not_a_point).expect("decodes");
    assert!(matches!(
        decoded.clone().verify(),
        Err(threadline_protocol::event::VerifyError::BadSignature(_))
    ));
    assert!(matches!(
        threadline_protocol::event::verify_batch(vec![decoded]).as_slice(),
        [Err(threadline_protocol::event::VerifyError::BadSignature(
            _
        ))]
    ));
    // The Option tag of the agent field must be 0 or 1.
    let mut bad_option = bytes;
    assert_eq!(bad_option[at + 32], 1);
    bad_option[at + 32] = 2;
    assert!(matches!(
        Event::from_bytes(&bad_option),
        Err(DecodeError::Invalid { .. } | DecodeError::UnknownVariant { .. })
    ));
}

#[test]
fn sync_frames_round_trip_and_are_strict() {
    let event = sample_event();
    let frame = SyncMessage::Push {
        events: vec![event],
    };
    let bytes = frame.to_bytes().expect("encodes");
    assert_eq!(SyncMessage::from_bytes(&bytes), Ok(frame));
    let mut trailing = bytes.clone();
    trailing.push(7);
    assert!(matches!(
        SyncMessage::from_bytes(&trailing),
        Err(DecodeError::TrailingBytes { .. })
    ));
    assert!(matches!(
        SyncMessage::from_bytes(&bytes[..bytes.len() - 1]),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn garbage_never_panics() {
    // A cheap deterministic sweep; the fuzz target in fuzz/ does this for real.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..512usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let _ = Event::from_bytes(&bytes);
        let _ = SyncMessage::from_bytes(&bytes);
        let _ = codec::decode::<threadline_protocol::Certificate>(&bytes, 4096);
    }
}

/// Content V2 (a subject, an original) is tag 2; the same content without either is only ever
/// written as V1, so a V2 that carries neither is refused, and only messages may carry them.
#[test]
fn content_v2_is_canonical_and_only_on_messages() {
    use threadline_protocol::{
        event::{Attachment, Direction, VerifyError},
        id::BlobHash,
        name::{AttachmentMeta, Subject},
        ChannelKind,
    };
    let note = sample_event();
    let v1 = note.to_bytes().expect("encodes");
    let content = note.content.clone().expect("content");
    let v1_content = content.to_bytes().expect("encodes");
    // A V1 event's bytes end with tag 1 and the V1 fields.
    let tag_at = v1.len() - v1_content.len() - 1;
    assert_eq!(v1[tag_at], 1);
    let mut forged = v1.clone();
    forged[tag_at] = 2;
    forged.extend_from_slice(&[0, 0]);
    assert!(
        matches!(Event::from_bytes(&forged), Err(DecodeError::Invalid { .. })),
        "{:?}",
        Event::from_bytes(&forged)
    );

    let world = World::new();
    let thread = world.open_thread();
    let original = Attachment::new(
        BlobHash::from_bytes([7; 32]),
        99,
        AttachmentMeta::new("message/rfc822").expect("valid"),
        AttachmentMeta::new("original.eml").expect("valid"),
    );
    let subject = Subject::new("Order 1077").expect("valid");
    let mail = sign_unverified(
        &world.bridge_email,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Message {
                direction: Direction::Inbound {
                    channel: ChannelKind::Email,
                },
            }),
            None,
            Some(
                Content::text("the mug is broken")
                    .with_handle(crate::fixtures::handle("email:ann@example.com"))
                    .with_subject(subject.clone())
                    .with_original(original.clone()),
            ),
        ),
    );
    let bytes = mail.to_bytes().expect("encodes");
    let back = Event::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, mail);
    let verified = back.verify().expect("verifies");
    let content = verified.content().expect("content");
    assert_eq!(content.subject, Some(subject.clone()));
    assert_eq!(content.blobs().last(), Some(&original));
    // Its hash is over V2, in its own domain: dropping the subject gives another hash.
    let mut stripped = content.clone();
    stripped.subject = None;
    assert_ne!(stripped.hash(), content.hash());

    let note_with_subject = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Note),
            Some(world.agent),
            Some(Content::text("a note").with_subject(subject)),
        ),
    );
    assert!(matches!(
        note_with_subject.verify(),
        Err(VerifyError::BadContent { .. })
    ));
}

/// Content V3 (a message template, a reply-to) is tag 3; a V3 with neither is refused as
/// non-canonical, only a reply may go as a template, and only a message answers another.
#[test]
fn content_v3_is_canonical_and_only_on_replies() {
    use threadline_protocol::{
        event::{Direction, Template, VerifyError},
        name::{TemplateLanguage, TemplateName, TemplateParameter},
        ChannelKind,
    };
    let note = sample_event();
    let v1 = note.to_bytes().expect("encodes");
    let v1_content = note
        .content
        .clone()
        .expect("content")
        .to_bytes()
        .expect("encodes");
    let tag_at = v1.len() - v1_content.len() - 1;
    // Tag 3 with the V1 fields, no subject, no original, no template and no reply-to.
    let mut forged = v1.clone();
    forged[tag_at] = 3;
    forged.extend_from_slice(&[0, 0, 0, 0]);
    assert!(
        matches!(Event::from_bytes(&forged), Err(DecodeError::Invalid { .. })),
        "{:?}",
        Event::from_bytes(&forged)
    );

    let template = Template::new(
        TemplateName::new("order_update").expect("valid"),
        TemplateLanguage::new("en_US").expect("valid"),
        vec![TemplateParameter::new("Ann").expect("valid")],
    );
    let world = World::new();
    let thread = world.open_thread();
    let reply = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Message {
                direction: Direction::Outbound,
            }),
            Some(world.agent),
            Some(Content::default().with_template(template.clone())),
        ),
    );
    let bytes = reply.to_bytes().expect("encodes");
    let back = Event::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, reply);
    let verified = back.verify().expect("verifies");
    let content = verified.content().expect("content");
    assert_eq!(content.template.as_deref(), Some(&template));
    // Its hash is over V3, in its own domain.
    let mut stripped = content.clone();
    stripped.template = None;
    assert_ne!(stripped.hash(), content.hash());

    // A customer's message never carries a template.
    let inbound = sign_unverified(
        &world.bridge_email,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Message {
                direction: Direction::Inbound {
                    channel: ChannelKind::Email,
                },
            }),
            None,
            Some(
                Content::text("hi")
                    .with_handle(crate::fixtures::handle("email:ann@example.com"))
                    .with_template(template.clone()),
            ),
        ),
    );
    assert!(matches!(
        inbound.verify(),
        Err(VerifyError::BadContent { .. })
    ));

    // A note answers nothing.
    let note_replying = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Note),
            Some(world.agent),
            Some(Content::text("see above").with_reply_to(reply.id().expect("id"))),
        ),
    );
    assert!(matches!(
        note_replying.verify(),
        Err(VerifyError::BadContent { .. })
    ));

    // Nor more than 32 placeholders' values.
    let crowded = Template::new(
        TemplateName::new("order_update").expect("valid"),
        TemplateLanguage::new("en_US").expect("valid"),
        vec![TemplateParameter::new("x").expect("valid"); 33],
    );
    let too_many = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Message {
                direction: Direction::Outbound,
            }),
            Some(world.agent),
            Some(Content::default().with_template(crowded)),
        ),
    );
    assert!(matches!(
        too_many.verify(),
        Err(VerifyError::TooLarge { .. })
    ));
}

/// Verification works out the id from the header's encoding it already made; it is the id
/// [`Event::id`] gives, by every way of verifying, for events with and without content.
#[test]
fn every_way_of_verifying_gives_the_events_id() {
    let world = World::new();
    let thread = world.open_thread();
    let with_content = sample_event();
    let without = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Read {
                up_to: thread.dag().root(),
            }),
            Some(world.agent),
            None,
        ),
    );
    for event in [with_content, without] {
        let id = event.id().expect("id");
        assert_eq!(event.clone().verify().expect("verifies").id(), id);
        assert_eq!(event.clone().verify_from_store().expect("checks").id(), id);
        let batch = threadline_protocol::event::verify_batch(vec![event.clone(), event]);
        for verified in batch {
            assert_eq!(verified.expect("verifies").id(), id);
        }
    }
}

/// A frame filled to the byte limit with events decodes: the decoder's budget is on what the
/// input holds, never below it (bincode counts 8 for a varint of one byte).
#[test]
fn a_full_frame_of_events_decodes() {
    use threadline_protocol::{
        event::Attachment, id::BlobHash, limits::MAX_TEXT_BYTES, name::AttachmentMeta,
        sync::MAX_FRAME_BYTES,
    };
    let world = World::new();
    let thread = world.open_thread();
    // Big events (long texts, many small numbers in attachments), as many as fit.
    let event = |n: u32| {
        let mut content = Content::text("x".repeat(MAX_TEXT_BYTES - 1_000));
        for a in 0..32u8 {
            content = content.with_attachment(Attachment::new(
                BlobHash::from_bytes([a; 32]),
                u64::from(a),
                AttachmentMeta::new("a").expect("valid"),
                AttachmentMeta::new(format!("{n}")).expect("valid"),
            ));
        }
        sign_unverified(
            &world.node_a,
            next_draft(
                thread.dag(),
                EventKind::Thread(ThreadKind::Note),
                Some(world.agent),
                Some(content),
            ),
        )
    };
    let mut events = Vec::new();
    let mut n = 0;
    loop {
        let next = event(n);
        events.push(next);
        let size = SyncMessage::Events {
            scope: threadline_protocol::ScopeId::Thread(thread.id()),
            events: events.clone(),
            complete: false,
        }
        .to_bytes()
        .expect("encodes")
        .len();
        if size > MAX_FRAME_BYTES - 1_024 {
            events.pop();
            break;
        }
        n += 1;
    }
    // Then one more, of the text that fills the frame to its last kilobyte.
    let scope = threadline_protocol::ScopeId::Thread(thread.id());
    let size = |events: &Vec<_>| {
        SyncMessage::Events {
            scope,
            events: events.clone(),
            complete: false,
        }
        .to_bytes()
        .expect("encodes")
        .len()
    };
    let room = MAX_FRAME_BYTES - 1_024 - size(&events);
    let filler = |len: usize| {
        sign_unverified(
            &world.node_a,
            next_draft(
                thread.dag(),
                EventKind::Thread(ThreadKind::Note),
                Some(world.agent),
                Some(Content::text("y".repeat(len))),
            ),
        )
    };
    let overhead = {
        let mut with = events.clone();
        with.push(filler(1_000));
        size(&with) - size(&events) - 1_000
    };
    events.push(filler(room - overhead));
    let frame = SyncMessage::Events {
        scope,
        events,
        complete: false,
    };
    let bytes = frame.to_bytes().expect("encodes");
    assert!(
        (MAX_FRAME_BYTES - 1_040..=MAX_FRAME_BYTES).contains(&bytes.len()),
        "full to the kilobyte the sender leaves: {}",
        bytes.len()
    );
    match SyncMessage::from_bytes(&bytes) {
        Ok(decoded) => assert!(decoded == frame, "the frame reads back as it was"),
        Err(err) => panic!("a full frame of valid events is refused: {err}"),
    }
}
