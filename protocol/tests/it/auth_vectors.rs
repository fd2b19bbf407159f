//! Golden vectors for the auth rule that keeps a bridge on its own channel's threads (rule 5 of
//! `protocol::auth`): one thread, the certificates a receiver knows, and a sequence of events,
//! each with the verdict every implementation must reach when it receives them in that order.
//! `protocol/tests/vectors/auth.txt` is the reference; this test fails if a byte or a verdict
//! changes. Regenerate on purpose with `THREADLINE_UPDATE_VECTORS=1` and review the diff.

use std::fmt::Write as _;

use threadline_protocol::{
    auth::AuthError,
    channel::ChannelKind,
    codec,
    event::{Content, Draft, EventKind, ReceiptKind, Scope, ThreadKind},
    thread::IngestError,
    Event, EventId, SecretKey, Thread, ThreadId, VerifiedEvent,
};

use crate::fixtures::{handle, sign, World, NOW};

const VECTORS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/auth.txt");

/// One step: what is sent and what the receiver must answer.
struct Step {
    name: &'static str,
    event: VerifiedEvent,
    /// `None`: accepted. `Some(rule)`: refused with that rule's error, changing nothing.
    refused_by: Option<&'static str>,
}

/// The name a vector gives a refusal.
fn rule_name(err: &IngestError) -> &'static str {
    match err {
        IngestError::Auth(AuthError::ChannelNotAdmitted { .. }) => "ChannelNotAdmitted",
        IngestError::Auth(AuthError::ReceiptTargetNotParent { .. }) => "ReceiptTargetNotParent",
        IngestError::Auth(AuthError::ReceiptTargetNotOutbound { .. }) => "ReceiptTargetNotOutbound",
        IngestError::Auth(AuthError::ReceiptNotOnRoute { .. }) => "ReceiptNotOnRoute",
        IngestError::Auth(AuthError::WrongChannel { .. }) => "WrongChannel",
        other => panic!("a vector step was refused by an unexpected rule: {other:?}"),
    }
}

/// Builds the scenario step by step against a reference thread, so each event's parents are
/// what an honest or hostile author would name at that point.
fn steps(world: &World) -> Vec<Step> {
    let scope = |thread: &Thread| Scope::Thread(thread.id());
    let event = |thread: &Thread,
                 key: &SecretKey,
                 parents: Vec<EventId>,
                 kind: ThreadKind,
                 content: Option<Content>,
                 agent: bool| {
        let depth = parents
            .iter()
            .filter_map(|p| thread.dag().get(p))
            .map(|p| p.header().depth)
            .max()
            .unwrap_or(0)
            + 1;
        let mut draft = Draft::new(
            scope(thread),
            parents,
            depth,
            NOW.saturating_add_millis(depth),
            EventKind::Thread(kind),
        );
        if agent {
            draft = draft.with_agent(world.agent);
        }
        if let Some(content) = content {
            draft = draft.with_content(content);
        }
        sign(key, draft)
    };
    let heads = |thread: &Thread| thread.dag().next_parents().0;
    let receipt = |target: EventId, channel: ChannelKind| ThreadKind::Receipt {
        target,
        channel,
        receipt: ReceiptKind::Delivered,
    };
    let inbound = |channel: ChannelKind| ThreadKind::Message {
        direction: threadline_protocol::event::Direction::Inbound { channel },
    };
    let outbound = || ThreadKind::Message {
        direction: threadline_protocol::event::Direction::Outbound,
    };

    let root = sign(
        &world.node_a,
        Draft::new(
            Scope::NewThread,
            vec![],
            0,
            NOW,
            EventKind::Thread(ThreadKind::Opened {
                org: world.org_a_id(),
                contact: world.contact,
                channel: ChannelKind::Webchat,
            }),
        )
        .with_content(Content::default().with_handle(handle("webchat:visitor-1"))),
    );
    let mut thread = Thread::open(root.clone(), &world.certificates, NOW).expect("root opens");
    let mut steps = vec![Step {
        name: "node opens the thread on webchat for webchat:visitor-1",
        event: root,
        refused_by: None,
    }];
    let mut push = |thread: &mut Thread, name, event: VerifiedEvent, refused_by| {
        let outcome = thread.insert(event.clone(), &world.certificates, NOW);
        match (&outcome, refused_by) {
            (Ok(_), None) => {}
            (Err(err), Some(rule)) => assert_eq!(rule_name(err), rule, "{name}"),
            _ => panic!("{name}: expected {refused_by:?}, got {outcome:?}"),
        }
        steps.push(Step {
            name,
            event,
            refused_by,
        });
    };

    let chat = event(
        &thread,
        &world.bridge_webchat,
        heads(&thread),
        inbound(ChannelKind::Webchat),
        Some(Content::text("my order is late").with_handle(handle("webchat:visitor-1"))),
        false,
    );
    let chat_id = chat.id();
    push(
        &mut thread,
        "the webchat bridge introduces the visitor's message",
        chat,
        None,
    );
    let takeover = event(
        &thread,
        &world.bridge_whatsapp,
        heads(&thread),
        inbound(ChannelKind::Whatsapp),
        Some(Content::text("route it to me").with_handle(handle("whatsapp:+19999999999"))),
        false,
    );
    push(
        &mut thread,
        "a whatsapp bridge writes into the webchat thread (takeover)",
        takeover,
        Some("ChannelNotAdmitted"),
    );
    let reply = event(
        &thread,
        &world.node_a,
        heads(&thread),
        outbound(),
        Some(Content::text("your refund code is 1077")),
        true,
    );
    let reply_id = reply.id();
    push(
        &mut thread,
        "an agent replies (routed to webchat)",
        reply,
        None,
    );
    let foreign_receipt = event(
        &thread,
        &world.bridge_whatsapp,
        vec![reply_id],
        receipt(reply_id, ChannelKind::Whatsapp),
        None,
        false,
    );
    push(
        &mut thread,
        "the whatsapp bridge writes a receipt for the webchat reply",
        foreign_receipt,
        Some("ReceiptNotOnRoute"),
    );
    let detached_receipt = event(
        &thread,
        &world.bridge_webchat,
        vec![chat_id],
        receipt(reply_id, ChannelKind::Webchat),
        None,
        false,
    );
    push(
        &mut thread,
        "a receipt whose target is not among its parents",
        detached_receipt,
        Some("ReceiptTargetNotParent"),
    );
    let receipt_on_inbound = event(
        &thread,
        &world.bridge_webchat,
        vec![chat_id],
        receipt(chat_id, ChannelKind::Webchat),
        None,
        false,
    );
    push(
        &mut thread,
        "a receipt for the customer's own message",
        receipt_on_inbound,
        Some("ReceiptTargetNotOutbound"),
    );
    let good_receipt = event(
        &thread,
        &world.bridge_webchat,
        vec![reply_id],
        receipt(reply_id, ChannelKind::Webchat),
        None,
        false,
    );
    let before_hand_off = good_receipt.id();
    push(
        &mut thread,
        "the webchat bridge writes the reply's receipt",
        good_receipt,
        None,
    );
    let hand_off = event(
        &thread,
        &world.node_a,
        heads(&thread),
        ThreadKind::HandOff {
            channel: ChannelKind::Whatsapp,
        },
        Some(Content::default().with_handle(handle("whatsapp:+15551234567"))),
        true,
    );
    push(
        &mut thread,
        "an agent hands the thread off to the customer's whatsapp",
        hand_off,
        None,
    );
    let concurrent = event(
        &thread,
        &world.bridge_whatsapp,
        vec![before_hand_off],
        inbound(ChannelKind::Whatsapp),
        Some(Content::text("hello?").with_handle(handle("whatsapp:+15551234567"))),
        false,
    );
    push(
        &mut thread,
        "a whatsapp message whose parents do not include the hand-off",
        concurrent,
        Some("ChannelNotAdmitted"),
    );
    let admitted = event(
        &thread,
        &world.bridge_whatsapp,
        heads(&thread),
        inbound(ChannelKind::Whatsapp),
        Some(Content::text("hello from whatsapp").with_handle(handle("whatsapp:+15551234567"))),
        false,
    );
    push(
        &mut thread,
        "the whatsapp bridge introduces the customer's message after the hand-off",
        admitted,
        None,
    );
    let second_reply = event(
        &thread,
        &world.node_a,
        heads(&thread),
        outbound(),
        Some(Content::text("got it")),
        true,
    );
    let second_reply_id = second_reply.id();
    push(
        &mut thread,
        "an agent replies (routed to whatsapp)",
        second_reply,
        None,
    );
    let stale_receipt = event(
        &thread,
        &world.bridge_webchat,
        vec![second_reply_id],
        receipt(second_reply_id, ChannelKind::Webchat),
        None,
        false,
    );
    push(
        &mut thread,
        "the webchat bridge writes a receipt for the whatsapp reply",
        stale_receipt,
        Some("ReceiptNotOnRoute"),
    );
    let whatsapp_receipt = event(
        &thread,
        &world.bridge_whatsapp,
        vec![second_reply_id],
        receipt(second_reply_id, ChannelKind::Whatsapp),
        None,
        false,
    );
    push(
        &mut thread,
        "the whatsapp bridge writes the whatsapp reply's receipt",
        whatsapp_receipt,
        None,
    );
    let email_auto_reply = event(
        &thread,
        &world.bridge_email,
        heads(&thread),
        ThreadKind::AutoReply {
            channel: ChannelKind::Email,
        },
        Some(Content::text("I am away").with_handle(handle("email:alice@example.com"))),
        false,
    );
    push(
        &mut thread,
        "an email bridge's automatic reply: the thread was never opened to email",
        email_auto_reply,
        Some("ChannelNotAdmitted"),
    );
    let webchat_auto_reply = event(
        &thread,
        &world.bridge_webchat,
        heads(&thread),
        ThreadKind::AutoReply {
            channel: ChannelKind::Webchat,
        },
        Some(Content::text("(away)").with_handle(handle("webchat:visitor-1"))),
        false,
    );
    push(
        &mut thread,
        "the webchat bridge's automatic reply: kept, and the route stays on whatsapp",
        webchat_auto_reply,
        None,
    );
    steps
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn render(world: &World) -> String {
    let mut out = String::new();
    out.push_str(
        "# Threadline protocol v1 auth-rule vectors: a bridge stays on its channel's threads.\n\
         # Generated by protocol/tests/it/auth_vectors.rs; do not edit.\n\
         # The receiver knows every `certificate` (encode(Certificate)) and its clock reads `now`.\n\
         # It receives the events in order (`event` is encode(Event)); `verdict` is `accept`, or\n\
         # `refuse <AuthError variant>`, and a refused event changes nothing.\n\n",
    );
    for certificate in &world.published {
        writeln!(
            out,
            "certificate: {}",
            hex(&codec::encode(certificate).expect("encodes"))
        )
        .expect("write to string");
    }
    writeln!(out, "now: {}", NOW.as_millis()).expect("write to string");
    for step in steps(world) {
        writeln!(out, "\n## {}", step.name).expect("write to string");
        writeln!(out, "id: {}", step.event.id()).expect("write to string");
        writeln!(
            out,
            "event: {}",
            hex(&step.event.event().to_bytes().expect("encodes"))
        )
        .expect("write to string");
        match step.refused_by {
            None => writeln!(out, "verdict: accept"),
            Some(rule) => writeln!(out, "verdict: refuse {rule}"),
        }
        .expect("write to string");
    }
    out
}

#[test]
fn auth_vectors_are_unchanged() {
    crate::fixtures::check_golden(VECTORS_PATH, &render(&World::new()));
}

/// What a second implementation does with the file: decode, verify, insert in order, compare.
#[test]
fn the_stored_vectors_replay_to_their_verdicts() {
    let stored =
        std::fs::read_to_string(VECTORS_PATH).expect("protocol/tests/vectors/auth.txt exists");
    let mut certificates = threadline_protocol::Certificates::new();
    let mut thread: Option<Thread> = None;
    let mut pending_event: Option<Event> = None;
    let mut n_steps = 0;
    let mut n_refused = 0;
    for line in stored.lines() {
        if let Some(text) = line.strip_prefix("certificate: ") {
            let bytes = ::hex::decode(text).expect("hex");
            certificates
                .insert(codec::decode(&bytes, bytes.len()).expect("a certificate"))
                .expect("verifies");
        } else if let Some(text) = line.strip_prefix("event: ") {
            pending_event =
                Some(Event::from_bytes(&::hex::decode(text).expect("hex")).expect("decodes"));
        } else if let Some(verdict) = line.strip_prefix("verdict: ") {
            let event = pending_event
                .take()
                .expect("an event before its verdict")
                .verify()
                .expect("verifies");
            n_steps += 1;
            let outcome = match &mut thread {
                None => Thread::open(event, &certificates, NOW).map(|opened| {
                    thread = Some(opened);
                }),
                Some(thread) => {
                    let before = thread.state().clone();
                    let result = thread.insert(event, &certificates, NOW).map(drop);
                    if result.is_err() {
                        assert_eq!(thread.state(), &before, "a refusal changes nothing");
                    }
                    result
                }
            };
            match (verdict, outcome) {
                ("accept", Ok(())) => {}
                (verdict, Err(err)) if verdict.strip_prefix("refuse ") == Some(rule_name(&err)) => {
                    n_refused += 1;
                }
                (verdict, outcome) => panic!("verdict `{verdict}`, got {outcome:?}"),
            }
        }
    }
    assert_eq!((n_steps, n_refused), (16, 7), "every step was replayed");
    let thread = thread.expect("the thread opened");
    assert_eq!(
        thread.state().route.map(|route| route.channel),
        Some(ChannelKind::Whatsapp)
    );
    assert_eq!(thread.id(), ThreadId::from_root(thread.dag().root()));
}
