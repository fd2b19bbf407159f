//! Golden vectors: the exact bytes of one event of every kind, one certificate and one sync
//! frame, made from fixed seeds. `protocol/tests/vectors/events.txt` is the reference; this test
//! fails if a single byte changes. To change the wire format on purpose, run with
//! `THREADLINE_UPDATE_VECTORS=1`, review the diff, and bump the protocol version in
//! docs/PROTOCOL.md.

use std::fmt::Write as _;

use threadline_protocol::{
    cert::CertRole,
    channel::ChannelKind,
    codec,
    event::{
        Attachment, Content, Direction, DirectoryKind, Draft, EventKind, ReceiptKind, Scope,
        Status, Template, ThreadKind,
    },
    id::BlobHash,
    name::{
        AttachmentMeta, AttributeKey, ExternalId, Label, Shortcode, Subject, TeamName,
        TemplateLanguage, TemplateName, TemplateParameter, WebhookName,
    },
    sync::{heads_digest, ScopeSummary, SyncMessage},
    AgentId, ContactId, Event, EventId, ScopeId, SecretKey, ThreadId, Timestamp,
};

use crate::fixtures::{cert, handle, key, org_id, NOW};

const VECTORS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/events.txt");

struct Vector {
    name: &'static str,
    author_seed: u8,
    event: Event,
}

fn vectors() -> Vec<Vector> {
    let org = key(1);
    let org_b = key(2);
    let node_seed = 11;
    let bridge_seed = 13;
    let node = key(node_seed);
    let thread = Scope::Thread(ThreadId::from_bytes([0x7e; 32]));
    let directory = Scope::Directory(org_id(&org));
    let parents = vec![
        EventId::from_bytes([0x01; 32]),
        EventId::from_bytes([0x02; 32]),
    ];
    let agent = AgentId::from_bytes([0xa6; 16]);
    let contact = ContactId::from_bytes([0xc0; 16]);
    let other_contact = ContactId::from_bytes([0xc1; 16]);
    let target = EventId::from_bytes([0x03; 32]);
    let label = Label::new("billing").expect("valid");
    let email = handle("email:alice@example.com");

    let draft = |scope: Scope, kind: EventKind| Draft::new(scope, parents.clone(), 2, NOW, kind);
    let t = |kind: ThreadKind| draft(thread, EventKind::Thread(kind));
    let d = |kind: DirectoryKind| draft(directory, EventKind::Directory(kind));
    let text = |s: &str| Content::text(s);

    let mut drafts: Vec<(&'static str, u8, Draft)> = vec![
        (
            "thread.opened",
            node_seed,
            Draft::new(
                Scope::NewThread,
                vec![],
                0,
                NOW,
                EventKind::Thread(ThreadKind::Opened {
                    org: org_id(&org),
                    contact,
                    channel: ChannelKind::Email,
                }),
            )
            .with_content(Content::default().with_handle(email.clone())),
        ),
        (
            "thread.message.inbound",
            bridge_seed,
            t(ThreadKind::Message {
                direction: Direction::Inbound {
                    channel: ChannelKind::Email,
                },
            })
            .with_content(
                text("Hello, where is my order?")
                    .with_handle(email.clone())
                    .with_external_id(ExternalId::new("<m1@example.com>").expect("valid"))
                    .with_attachment(Attachment::new(
                        BlobHash::from_bytes([0xb1; 32]),
                        1234,
                        AttachmentMeta::new("image/png").expect("valid"),
                        AttachmentMeta::new("receipt.png").expect("valid"),
                    )),
            ),
        ),
        (
            "thread.message.outbound",
            node_seed,
            t(ThreadKind::Message {
                direction: Direction::Outbound,
            })
            .with_agent(agent)
            .with_content(text("It ships today.")),
        ),
        (
            "thread.note",
            node_seed,
            t(ThreadKind::Note)
                .with_agent(agent)
                .with_content(text("VIP customer")),
        ),
        (
            "thread.assign",
            node_seed,
            t(ThreadKind::Assign {
                assignee: Some(agent),
            })
            .with_agent(agent),
        ),
        (
            "thread.status",
            node_seed,
            t(ThreadKind::Status {
                status: Status::Snoozed {
                    until: NOW.saturating_add_millis(86_400_000),
                },
            }),
        ),
        (
            "thread.hand_off",
            node_seed,
            t(ThreadKind::HandOff {
                channel: ChannelKind::Whatsapp,
            })
            .with_content(Content::default().with_handle(handle("whatsapp:+15551234567"))),
        ),
        (
            "thread.receipt",
            bridge_seed,
            t(ThreadKind::Receipt {
                target,
                channel: ChannelKind::Email,
                receipt: ReceiptKind::Failed,
            })
            .with_content(text("550 mailbox unavailable")),
        ),
        (
            "thread.read",
            node_seed,
            t(ThreadKind::Read { up_to: target }).with_agent(agent),
        ),
        (
            "thread.label_add",
            node_seed,
            t(ThreadKind::LabelAdd {
                label: label.clone(),
            }),
        ),
        (
            "thread.label_remove",
            node_seed,
            t(ThreadKind::LabelRemove { label }),
        ),
        (
            "thread.member_add",
            node_seed,
            t(ThreadKind::MemberAdd {
                org: org_id(&org_b),
            }),
        ),
        (
            "thread.member_remove",
            node_seed,
            t(ThreadKind::MemberRemove {
                org: org_id(&org_b),
            }),
        ),
        (
            "thread.erase",
            node_seed,
            t(ThreadKind::Erase {
                targets: vec![target, EventId::from_bytes([0x04; 32])],
            }),
        ),
        (
            "thread.auto_reply",
            bridge_seed,
            t(ThreadKind::AutoReply {
                channel: ChannelKind::Email,
            })
            .with_content(
                text("I am out of the office until Monday.")
                    .with_handle(email.clone())
                    .with_external_id(ExternalId::new("<ooo1@example.com>").expect("valid")),
            ),
        ),
        (
            "directory.genesis",
            1,
            Draft::new(
                directory,
                vec![],
                0,
                Timestamp::EPOCH,
                EventKind::Directory(DirectoryKind::Genesis),
            ),
        ),
        (
            "directory.certify",
            1,
            d(DirectoryKind::Certify {
                certificate: Box::new(cert(
                    &org,
                    &node,
                    CertRole::Node,
                    Timestamp::EPOCH,
                    NOW.saturating_add_millis(1000),
                )),
            }),
        ),
        (
            "directory.revoke",
            1,
            d(DirectoryKind::Revoke {
                subject: key(12).public(),
                effective_from: NOW,
            }),
        ),
        (
            "directory.create_contact",
            node_seed,
            d(DirectoryKind::CreateContact { contact }).with_content(text("Alice Example")),
        ),
        (
            "directory.link_handle",
            node_seed,
            d(DirectoryKind::LinkHandle { contact })
                .with_content(Content::default().with_handle(email.clone())),
        ),
        (
            "directory.unlink_handle",
            node_seed,
            d(DirectoryKind::UnlinkHandle { contact })
                .with_content(Content::default().with_handle(email.clone())),
        ),
        (
            "directory.merge",
            node_seed,
            d(DirectoryKind::Merge {
                from: other_contact,
                into: contact,
            }),
        ),
        (
            "directory.set_attribute",
            node_seed,
            d(DirectoryKind::SetAttribute {
                contact,
                key: AttributeKey::new("company").expect("valid"),
            })
            .with_content(text("Example Ltd")),
        ),
        (
            "directory.consent",
            node_seed,
            d(DirectoryKind::Consent {
                contact,
                channel: Some(ChannelKind::Sms),
                granted: false,
            }),
        ),
        (
            "directory.erase_contact",
            node_seed,
            d(DirectoryKind::EraseContact { contact }),
        ),
        // Content V2 (tag 2): a mail with its subject and the raw message it came as.
        (
            "thread.message.inbound",
            bridge_seed,
            t(ThreadKind::Message {
                direction: Direction::Inbound {
                    channel: ChannelKind::Email,
                },
            })
            .with_content(
                text("The mug is broken.")
                    .with_handle(email)
                    .with_external_id(ExternalId::new("<m2@example.com>").expect("valid"))
                    .with_subject(Subject::new("Order 1077: broken mug").expect("valid"))
                    .with_original(Attachment::new(
                        BlobHash::from_bytes([0xe1; 32]),
                        4321,
                        AttachmentMeta::new("message/rfc822").expect("valid"),
                        AttachmentMeta::new("original.eml").expect("valid"),
                    )),
            ),
        ),
        // Instagram (channel 9, appended): a direct message by its Instagram-scoped id.
        (
            "thread.message.inbound",
            bridge_seed,
            t(ThreadKind::Message {
                direction: Direction::Inbound {
                    channel: ChannelKind::Instagram,
                },
            })
            .with_content(
                text("Is the blue one back in stock?")
                    .with_handle(handle("instagram:6192845573061201"))
                    .with_external_id(
                        ExternalId::new("aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAy")
                            .expect("valid"),
                    ),
            ),
        ),
        // Content V3 (tag 3): a WhatsApp reply as an approved template, outside the window.
        (
            "thread.message.outbound",
            node_seed,
            t(ThreadKind::Message {
                direction: Direction::Outbound,
            })
            .with_agent(agent)
            .with_content(Content::default().with_template(Template::new(
                TemplateName::new("order_update").expect("valid"),
                TemplateLanguage::new("en_US").expect("valid"),
                vec![
                    TemplateParameter::new("Ann").expect("valid"),
                    TemplateParameter::new("1077").expect("valid"),
                ],
            ))),
        ),
        // Content V3 with a reply-to: a WhatsApp message quoting an earlier one.
        (
            "thread.message.inbound",
            bridge_seed,
            t(ThreadKind::Message {
                direction: Direction::Inbound {
                    channel: ChannelKind::Whatsapp,
                },
            })
            .with_content(
                text("This one, please.")
                    .with_handle(handle("whatsapp:+4915112345678"))
                    .with_external_id(
                        ExternalId::new("wamid.HBgLNDkxNTExMjM0NTY3OBUCABIYFjNFQjA=")
                            .expect("valid"),
                    )
                    .with_reply_to(EventId::from_bytes([0x3c; 32])),
            ),
        ),
        // Directory kind 10, appended: one of the org's canned replies.
        (
            "directory.set_canned_reply",
            node_seed,
            d(DirectoryKind::SetCannedReply {
                shortcode: Shortcode::new("refund").expect("valid"),
            })
            .with_content(text(
                "Hi {contact.name}, your refund is on its way. {agent.name}",
            )),
        ),
        // Directory kind 11, appended: a team's agents.
        (
            "directory.set_team",
            node_seed,
            d(DirectoryKind::SetTeam {
                team: TeamName::new("billing").expect("valid"),
                members: vec![
                    AgentId::from_bytes([0x11; 16]),
                    AgentId::from_bytes([0x12; 16]),
                ],
            }),
        ),
        // Directory kind 12, appended: an outbound webhook subscription.
        (
            "directory.set_webhook",
            node_seed,
            d(DirectoryKind::SetWebhook {
                name: WebhookName::new("crm").expect("valid"),
            })
            .with_content(text(
                r#"{"url":"https://crm.example.com/hooks/threadline","topics":["message.created"],"secret":"5e3f"}"#,
            )),
        ),
        // Thread kind 14, appended: the thread's team.
        (
            "thread.assign_team",
            node_seed,
            t(ThreadKind::AssignTeam {
                team: Some(TeamName::new("billing").expect("valid")),
            }),
        ),
    ];
    drafts
        .drain(..)
        .map(|(name, author_seed, draft)| Vector {
            name,
            author_seed,
            event: draft
                .sign(&SecretKey::from_seed([author_seed; 32]))
                .expect("encodes"),
        })
        .collect()
}

fn render() -> String {
    let mut out = String::new();
    out.push_str(
        "# Threadline protocol v1 golden vectors. Generated by protocol/tests/it/vectors.rs; do not edit.\n\
         # Keys are ed25519 keys from 32-byte seeds: every byte of the seed is `author_seed`.\n\
         # `json` shows the event's fields (ids and keys as hex); `header` is encode(EventHeader),\n\
         # the signed message is \"threadline/event/v1\" || 0x00 || header; `event` is encode(Event);\n\
         # `id` is SHA-256(\"threadline/event-id/v1\" || 0x00 || encode(SignedHeader)).\n\n",
    );
    for vector in vectors() {
        let event = &vector.event;
        event
            .clone()
            .verify()
            .unwrap_or_else(|err| panic!("{} does not verify: {err}", vector.name));
        let bytes = event.to_bytes().expect("encodes");
        assert_eq!(
            Event::from_bytes(&bytes).as_ref(),
            Ok(event),
            "{} round-trips",
            vector.name
        );
        writeln!(out, "## {}", vector.name).expect("write to string");
        writeln!(out, "author_seed: {:02x}", vector.author_seed).expect("write to string");
        writeln!(out, "json: {}", serde_json::to_string(event).expect("json"))
            .expect("write to string");
        writeln!(
            out,
            "header: {}",
            hex(&codec::encode(&event.signed.header).expect("encodes"))
        )
        .expect("write to string");
        if let Some(content) = &event.content {
            writeln!(
                out,
                "content: {}",
                hex(&content.to_bytes().expect("encodes"))
            )
            .expect("write to string");
            writeln!(out, "content_hash: {}", content.hash().expect("hashes"))
                .expect("write to string");
        }
        writeln!(out, "signature: {}", hex(event.signed.signature.as_bytes()))
            .expect("write to string");
        writeln!(out, "event: {}", hex(&bytes)).expect("write to string");
        writeln!(out, "id: {}\n", event.id().expect("hashes")).expect("write to string");
    }

    let certificate = cert(
        &key(1),
        &key(13),
        CertRole::Bridge {
            channel: ChannelKind::Email,
            handle_scope: None,
        },
        Timestamp::EPOCH,
        NOW,
    );
    certificate.verify().expect("certificate verifies");
    writeln!(out, "## certificate.bridge").expect("write to string");
    writeln!(out, "author_seed: 01").expect("write to string");
    writeln!(
        out,
        "json: {}",
        serde_json::to_string(&certificate).expect("json")
    )
    .expect("write to string");
    writeln!(
        out,
        "body: {}",
        hex(&codec::encode(&certificate.body).expect("encodes"))
    )
    .expect("write to string");
    writeln!(
        out,
        "certificate: {}\n",
        hex(&codec::encode(&certificate).expect("encodes"))
    )
    .expect("write to string");

    let heads = [EventId::from_bytes([0x01; 32])];
    let summary = SyncMessage::Summary {
        scopes: vec![ScopeSummary::new(
            ScopeId::Thread(ThreadId::from_bytes([0x7e; 32])),
            42,
            heads_digest(&heads),
        )],
    };
    writeln!(out, "## sync.summary").expect("write to string");
    writeln!(
        out,
        "heads: {}",
        heads
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
    .expect("write to string");
    writeln!(
        out,
        "json: {}",
        serde_json::to_string(&summary).expect("json")
    )
    .expect("write to string");
    writeln!(out, "frame: {}", hex(&summary.to_bytes().expect("encodes")))
        .expect("write to string");

    // The other frames, each with a JSON view and its bytes.
    let summaries = match &summary {
        SyncMessage::Summary { scopes } => scopes.clone(),
        _ => Vec::new(),
    };
    // Two events of the vectors above (a root and the next), as a log's answer carries them.
    let sample_events: Vec<Event> = vectors().into_iter().take(2).map(|v| v.event).collect();
    let frames = [
        (
            "sync.hello",
            SyncMessage::Hello {
                certificate: certificate.clone(),
            },
        ),
        (
            "sync.digest",
            SyncMessage::Digest {
                n_scopes: 1,
                digest: threadline_protocol::sync::summaries_digest(&summaries),
            },
        ),
        (
            "sync.summary_of",
            SyncMessage::SummaryOf {
                buckets: vec![0x7e],
            },
        ),
        (
            "sync.want",
            SyncMessage::Want {
                scope: ScopeId::Thread(ThreadId::from_bytes([0x7e; 32])),
                have: heads.to_vec(),
                from_depth: 0,
                max_events: 4096,
            },
        ),
        (
            "sync.events",
            SyncMessage::Events {
                scope: ScopeId::Thread(ThreadId::from_bytes([0x7e; 32])),
                events: sample_events.clone(),
                complete: true,
            },
        ),
        (
            "sync.push",
            SyncMessage::Push {
                events: sample_events[..1].to_vec(),
            },
        ),
        (
            "sync.join",
            SyncMessage::Join {
                secret: [0x5e; 32],
                bridge_keys: vec![
                    (ChannelKind::Email, key(13).public()),
                    (ChannelKind::Webchat, key(14).public()),
                ],
            },
        ),
        (
            "sync.joined",
            SyncMessage::Joined {
                certificate: certificate.clone(),
                bridge_certificates: vec![certificate.clone()],
            },
        ),
        (
            "sync.buckets",
            SyncMessage::Buckets {
                digests: threadline_protocol::sync::bucket_digests(&summaries),
            },
        ),
        (
            "sync.certificates",
            SyncMessage::Certificates {
                certificates: vec![certificate.clone()],
            },
        ),
        (
            "sync.refused",
            SyncMessage::Refused {
                reason: "not a member of this thread".to_owned(),
            },
        ),
        ("sync.ack", SyncMessage::Ack),
        (
            "sync.want_blob",
            SyncMessage::WantBlob {
                blob: BlobHash::of(b"hello"),
                offset: 0,
            },
        ),
        (
            "sync.blob",
            SyncMessage::Blob {
                blob: BlobHash::of(b"hello"),
                size: 5,
                offset: 0,
                bytes: threadline_protocol::codec::ByteBuf(b"hello".to_vec()),
            },
        ),
        (
            "sync.no_blob",
            SyncMessage::NoBlob {
                blob: BlobHash::of(b"hello"),
            },
        ),
    ];
    for (name, frame) in frames {
        writeln!(out, "\n## {name}").expect("write to string");
        writeln!(
            out,
            "json: {}",
            serde_json::to_string(&frame).expect("json")
        )
        .expect("write to string");
        writeln!(out, "frame: {}", hex(&frame.to_bytes().expect("encodes")))
            .expect("write to string");
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn golden_vectors_are_unchanged() {
    crate::fixtures::check_golden(VECTORS_PATH, &render());
}

#[test]
fn vectors_cover_every_event_kind() {
    let names: Vec<&str> = vectors().iter().map(|v| v.name).collect();
    let kinds: Vec<&str> = vectors()
        .iter()
        .map(|v| v.event.signed.header.kind.name())
        .collect();
    assert_eq!(names, kinds, "each vector is named after its kind");
    // 16 thread kinds (inbound and outbound messages counted apart), 13 directory kinds, an
    // inbound message with content V2, one on Instagram, a reply with content V3 (a template)
    // and an inbound message with content V3 (a reply-to).
    assert_eq!(kinds.len(), 33);
}
