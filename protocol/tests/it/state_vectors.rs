//! Golden vectors for what convergence rests on (docs/PROTOCOL.md §1, §5, §7, §9): the linear
//! order of a thread with concurrent branches; the thread state and its hash after replies,
//! receipts, read marks, labels, assignment, team, status, hand-off and erasure; the directory
//! state and its hash after contacts, links, a chain of merges, consent, an erasure,
//! certificates and a revocation, canned replies and teams; heads and summaries digests, and
//! buckets, empty ones included; and a signature the cofactored rule accepts and a cofactorless
//! verifier refuses. `protocol/tests/vectors/state.txt` is the reference; regenerate on purpose
//! with `THREADLINE_UPDATE_VECTORS=1` and review the diff.

use std::fmt::Write as _;

use curve25519_dalek::{constants::ED25519_BASEPOINT_POINT, constants::EIGHT_TORSION, Scalar};
use sha2::{Digest as _, Sha512};
use threadline_protocol::{
    channel::ChannelKind,
    codec,
    digest::Domain,
    event::{
        Content, Direction, DirectoryKind, Draft, EventKind, ReceiptKind, Scope, Status, ThreadKind,
    },
    name::{AttributeKey, Label, Shortcode, TeamName},
    sync::{bucket_digests, bucket_of, heads_digest, summaries_digest, ScopeSummary},
    AgentId, ContactId, Directory, EventId, PublicKey, ScopeId, SecretKey, Signature, Thread,
    VerifiedEvent,
};

use crate::fixtures::{handle, sign, World, NOW};

const VECTORS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/state.txt");

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An event of `thread` on `parents`, at depth one more than theirs, written at `NOW + at`.
fn on(
    thread: &Thread,
    key: &SecretKey,
    parents: &[EventId],
    at: u64,
    kind: ThreadKind,
    agent: Option<AgentId>,
    content: Option<Content>,
) -> VerifiedEvent {
    let depth = parents
        .iter()
        .filter_map(|p| thread.dag().get(p))
        .map(|p| p.header().depth)
        .max()
        .unwrap_or(0)
        + 1;
    let mut parents = parents.to_vec();
    parents.sort();
    let mut draft = Draft::new(
        Scope::Thread(thread.id()),
        parents,
        depth,
        NOW.saturating_add_millis(at),
        EventKind::Thread(kind),
    );
    if let Some(agent) = agent {
        draft = draft.with_agent(agent);
    }
    if let Some(content) = content {
        draft = draft.with_content(content);
    }
    sign(key, draft)
}

fn write_events(out: &mut String, events: &[VerifiedEvent]) {
    for event in events {
        writeln!(
            out,
            "event: {}",
            hex(&event.event().to_bytes().expect("encodes"))
        )
        .expect("write");
    }
}

/// The thread: opened on the web chat, a customer's message, a reply, then two concurrent
/// branches (a label on one node, an assignment on another, written at the same time so the
/// order falls to the ids), joined by a status event; a delivered then a read receipt, an
/// agent's read mark, a team, a hand-off to email, and an erasure of the customer's message.
fn thread_section(world: &World, out: &mut String) -> Thread {
    let mut thread = world.open_thread();
    let mut events = vec![thread.dag().iter_ordered().next().expect("root").clone()];
    let mut add = |thread: &mut Thread, event: VerifiedEvent| {
        thread
            .insert(
                event.clone(),
                &world.certificates,
                NOW.saturating_add_millis(1_000),
            )
            .expect("the vector's events are accepted");
        events.push(event);
    };
    let root = thread.dag().iter_ordered().next().expect("root").id();
    let inbound = on(
        &thread,
        &world.bridge_webchat,
        &[root],
        1,
        ThreadKind::Message {
            direction: Direction::Inbound {
                channel: ChannelKind::Webchat,
            },
        },
        None,
        Some(Content::text("Is the tent waterproof?").with_handle(handle("webchat:visitor-1"))),
    );
    add(&mut thread, inbound.clone());
    let reply = on(
        &thread,
        &world.node_a,
        &[inbound.id()],
        2,
        ThreadKind::Message {
            direction: Direction::Outbound,
        },
        Some(world.agent),
        Some(Content::text("Yes, to 3,000 mm.")),
    );
    add(&mut thread, reply.clone());
    // Two branches on the reply, the same depth and time: ordered by id.
    let label = on(
        &thread,
        &world.node_a,
        &[reply.id()],
        3,
        ThreadKind::LabelAdd {
            label: Label::new("sales").expect("valid"),
        },
        None,
        None,
    );
    let assign = on(
        &thread,
        &world.node_a2,
        &[reply.id()],
        3,
        ThreadKind::Assign {
            assignee: Some(world.agent),
        },
        None,
        None,
    );
    add(&mut thread, assign.clone());
    add(&mut thread, label.clone());
    let heads: Vec<EventId> = thread.dag().heads().iter().copied().collect();
    writeln!(out, "## thread.concurrent_heads").expect("write");
    writeln!(
        out,
        "heads: {}",
        heads
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
    .expect("write");
    writeln!(
        out,
        "heads_digest: {}\n",
        heads_digest(thread.dag().heads())
    )
    .expect("write");
    let status = on(
        &thread,
        &world.node_a,
        &[label.id(), assign.id()],
        4,
        ThreadKind::Status {
            status: Status::Pending,
        },
        None,
        None,
    );
    add(&mut thread, status.clone());
    for (n, receipt) in [ReceiptKind::Delivered, ReceiptKind::Read]
        .into_iter()
        .enumerate()
    {
        let tip = thread.dag().next_parents().0;
        let mut parents = tip;
        if !parents.contains(&reply.id()) {
            parents.push(reply.id());
        }
        let event = on(
            &thread,
            &world.bridge_webchat,
            &parents,
            5 + n as u64,
            ThreadKind::Receipt {
                target: reply.id(),
                channel: ChannelKind::Webchat,
                receipt,
            },
            None,
            None,
        );
        add(&mut thread, event);
    }
    let tip = thread.dag().next_parents().0;
    let read = on(
        &thread,
        &world.agent_key,
        &tip,
        7,
        ThreadKind::Read {
            up_to: inbound.id(),
        },
        Some(world.agent),
        None,
    );
    add(&mut thread, read);
    let tip = thread.dag().next_parents().0;
    let team = on(
        &thread,
        &world.node_a,
        &tip,
        8,
        ThreadKind::AssignTeam {
            team: Some(TeamName::new("outdoor").expect("valid")),
        },
        None,
        None,
    );
    add(&mut thread, team);
    let tip = thread.dag().next_parents().0;
    let hand_off = on(
        &thread,
        &world.node_a,
        &tip,
        9,
        ThreadKind::HandOff {
            channel: ChannelKind::Email,
        },
        None,
        Some(Content::default().with_handle(handle("email:visitor@example.com"))),
    );
    add(&mut thread, hand_off);
    let tip = thread.dag().next_parents().0;
    let erase = on(
        &thread,
        &world.node_a,
        &tip,
        10,
        ThreadKind::Erase {
            targets: vec![inbound.id()],
        },
        None,
        None,
    );
    add(&mut thread, erase);

    writeln!(out, "## thread.events").expect("write");
    writeln!(
        out,
        "# In the order a receiver takes them; the branches arrive assignment first."
    )
    .expect("write");
    write_events(out, &events);
    writeln!(
        out,
        "order: {}",
        thread
            .dag()
            .iter_ordered()
            .map(|e| e.id().to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
    .expect("write");
    let state = thread.state();
    writeln!(
        out,
        "state: {}",
        hex(&codec::encode(state).expect("encodes"))
    )
    .expect("write");
    writeln!(out, "state_hash: {}\n", state.hash().expect("hashes")).expect("write");
    thread
}

/// Org A's directory: its certificates; contacts Ana, Bo and Cy linked and merged in a chain
/// (Cy into Bo, then Bo into Ana); consent; Dee created, linked, given a detail, Eve merged into
/// her, then Dee erased (with Eve); a revocation; a canned reply and a team.
fn directory_section(world: &World, out: &mut String) -> Directory {
    let mut directory = world.directory_a();
    let mut events: Vec<VerifiedEvent> = directory.dag().iter_ordered().cloned().collect();
    let contact = |n: u8| ContactId::from_bytes([n; 16]);
    let mut step = |directory: &mut Directory,
                    key: &SecretKey,
                    kind: DirectoryKind,
                    content: Option<Content>| {
        let (parents, depth) = directory.dag().next_parents();
        let mut draft = Draft::new(
            Scope::Directory(world.org_a_id()),
            parents,
            depth,
            NOW.saturating_add_millis(depth),
            EventKind::Directory(kind),
        );
        if let Some(content) = content {
            draft = draft.with_content(content);
        }
        let event = sign(key, draft);
        directory
            .insert(event.clone(), NOW.saturating_add_millis(1_000))
            .expect("the vector's events are accepted");
        events.push(event);
    };
    let node = &world.node_a;
    for (n, name) in [(1, "Ana"), (2, "Bo"), (3, "Cy"), (4, "Dee")] {
        step(
            &mut directory,
            node,
            DirectoryKind::CreateContact {
                contact: contact(n),
            },
            Some(Content::text(name)),
        );
    }
    for (n, address) in [
        (1, "email:ana@example.com"),
        (2, "sms:+15550000002"),
        (3, "webchat:visitor-3"),
        (4, "email:dee@example.com"),
    ] {
        step(
            &mut directory,
            node,
            DirectoryKind::LinkHandle {
                contact: contact(n),
            },
            Some(Content::default().with_handle(handle(address))),
        );
    }
    step(
        &mut directory,
        node,
        DirectoryKind::SetAttribute {
            contact: contact(3),
            key: AttributeKey::new("company").expect("valid"),
        },
        Some(Content::text("Cy & Co")),
    );
    step(
        &mut directory,
        node,
        DirectoryKind::Merge {
            from: contact(3),
            into: contact(2),
        },
        None,
    );
    step(
        &mut directory,
        node,
        DirectoryKind::Merge {
            from: contact(2),
            into: contact(1),
        },
        None,
    );
    step(
        &mut directory,
        node,
        DirectoryKind::Consent {
            contact: contact(3),
            channel: Some(ChannelKind::Sms),
            granted: false,
        },
        None,
    );
    // Before Dee is erased: a detail on Dee, and Eve (a name, a handle, a detail) merged into
    // Dee. The erasure takes Eve with Dee, so none of that content is in the state, on a
    // replica that holds it or not.
    step(
        &mut directory,
        node,
        DirectoryKind::SetAttribute {
            contact: contact(4),
            key: AttributeKey::new("company").expect("valid"),
        },
        Some(Content::text("Dee Ltd")),
    );
    step(
        &mut directory,
        node,
        DirectoryKind::CreateContact {
            contact: contact(5),
        },
        Some(Content::text("Eve")),
    );
    step(
        &mut directory,
        node,
        DirectoryKind::LinkHandle {
            contact: contact(5),
        },
        Some(Content::default().with_handle(handle("sms:+15550000005"))),
    );
    step(
        &mut directory,
        node,
        DirectoryKind::SetAttribute {
            contact: contact(5),
            key: AttributeKey::new("city").expect("valid"),
        },
        Some(Content::text("Lyon")),
    );
    step(
        &mut directory,
        node,
        DirectoryKind::Merge {
            from: contact(5),
            into: contact(4),
        },
        None,
    );
    step(
        &mut directory,
        node,
        DirectoryKind::EraseContact {
            contact: contact(4),
        },
        None,
    );
    step(
        &mut directory,
        &world.org_a,
        DirectoryKind::Revoke {
            subject: world.node_a2.public(),
            effective_from: NOW.saturating_add_millis(500),
        },
        None,
    );
    // After the erasure: Fay (a name, a handle, a detail) is merged into Dee. Fay's class
    // now holds an erased contact, so Fay is in the erased set from her `CreateContact` on:
    // her content never enters the state, though it was folded before the merge arrived. A
    // fold that erased only at the `EraseContact` would keep her name and move her handle.
    step(
        &mut directory,
        node,
        DirectoryKind::CreateContact {
            contact: contact(6),
        },
        Some(Content::text("Fay")),
    );
    step(
        &mut directory,
        node,
        DirectoryKind::LinkHandle {
            contact: contact(6),
        },
        Some(Content::default().with_handle(handle("sms:+15550000006"))),
    );
    step(
        &mut directory,
        node,
        DirectoryKind::SetAttribute {
            contact: contact(6),
            key: AttributeKey::new("city").expect("valid"),
        },
        Some(Content::text("Nice")),
    );
    let fay_live = directory.state().contacts.get(&contact(6)).cloned();
    assert_eq!(
        fay_live.and_then(|record| record.display_name),
        Some("Fay".to_owned()),
        "Fay is live until the merge"
    );
    step(
        &mut directory,
        node,
        DirectoryKind::Merge {
            from: contact(6),
            into: contact(4),
        },
        None,
    );
    let fay = &directory.state().contacts[&contact(6)];
    assert!(fay.erased && fay.display_name.is_none(), "{fay:?}");
    assert!(!directory
        .state()
        .handles
        .contains_key(&handle("sms:+15550000006")));
    assert_eq!(directory.state(), &directory.fold_from_scratch());
    step(
        &mut directory,
        node,
        DirectoryKind::SetCannedReply {
            shortcode: Shortcode::new("thanks").expect("valid"),
        },
        Some(Content::text("Thanks, {contact.name}!")),
    );
    step(
        &mut directory,
        node,
        DirectoryKind::SetTeam {
            team: TeamName::new("outdoor").expect("valid"),
            members: vec![world.agent],
        },
        None,
    );
    writeln!(out, "## directory.events").expect("write");
    writeln!(
        out,
        "# The genesis, the certificates, then the steps, in order."
    )
    .expect("write");
    write_events(out, &events);
    let state = directory.state();
    writeln!(
        out,
        "state: {}",
        hex(&codec::encode(state).expect("encodes"))
    )
    .expect("write");
    writeln!(out, "state_hash: {}\n", state.hash().expect("hashes")).expect("write");
    directory
}

/// The summaries of the directory and the thread, and a second thread, their digest and buckets.
fn digests_section(world: &World, thread: &Thread, directory: &Directory, out: &mut String) {
    // Another contact's conversation, opened by the org's second node.
    let second = {
        let root = sign(
            &world.node_a2,
            Draft::new(
                Scope::NewThread,
                vec![],
                0,
                NOW,
                EventKind::Thread(ThreadKind::Opened {
                    org: world.org_a_id(),
                    contact: ContactId::from_bytes([0xc1; 16]),
                    channel: ChannelKind::Email,
                }),
            ),
        );
        Thread::open(root, &world.certificates, NOW).expect("opens")
    };
    let mut summaries: Vec<ScopeSummary> = [
        (ScopeId::Directory(world.org_a_id()), directory.dag()),
        (ScopeId::Thread(thread.id()), thread.dag()),
        (ScopeId::Thread(second.id()), second.dag()),
    ]
    .into_iter()
    .map(|(scope, dag)| ScopeSummary::new(scope, dag.len() as u64, heads_digest(dag.heads())))
    .collect();
    summaries.sort_by_key(|summary| summary.scope);
    writeln!(out, "## sync.summaries").expect("write");
    for summary in &summaries {
        writeln!(
            out,
            "summary: {} bucket={:02x}",
            hex(&codec::encode(summary).expect("encodes")),
            bucket_of(&summary.scope)
        )
        .expect("write");
    }
    writeln!(out, "summaries_digest: {}", summaries_digest(&summaries)).expect("write");
    let buckets = bucket_digests(&summaries);
    let empty = summaries_digest(&[]);
    writeln!(out, "empty_bucket_digest: {empty}").expect("write");
    for (bucket, digest) in buckets.iter().enumerate() {
        if *digest != empty {
            writeln!(out, "bucket_digest: {bucket:02x} {digest}").expect("write");
        }
    }
    writeln!(out).expect("write");
}

/// A key with a small-order component (a·B + T, T of order 8) and a signature by it that the
/// cofactored equation accepts and the cofactorless one refuses (its k is not a multiple of 8).
fn small_order_section(out: &mut String) -> (PublicKey, Vec<u8>, Signature) {
    let a = Scalar::from_bytes_mod_order([7; 32]);
    let r = Scalar::from_bytes_mod_order([9; 32]);
    let key_point = ED25519_BASEPOINT_POINT * a + EIGHT_TORSION[1];
    let key_bytes = key_point.compress().to_bytes();
    let big_r = (ED25519_BASEPOINT_POINT * r).compress().to_bytes();
    for n in 0u8.. {
        let message = format!("threadline small-order vector {n}").into_bytes();
        let signed = [Domain::EventSignature.as_str().as_bytes(), &[0], &message].concat();
        let wide: [u8; 64] = Sha512::new()
            .chain_update(big_r)
            .chain_update(key_bytes)
            .chain_update(&signed)
            .finalize()
            .into();
        let k = Scalar::from_bytes_mod_order_wide(&wide);
        if k.to_bytes()[0].is_multiple_of(8) {
            continue;
        }
        let s = r + k * a;
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&big_r);
        signature[32..].copy_from_slice(&s.to_bytes());
        writeln!(out, "## signature.small_order_component").expect("write");
        writeln!(
            out,
            "# Valid by the cofactored rule (§1); a cofactorless verifier refuses it."
        )
        .expect("write");
        writeln!(out, "domain: {}", Domain::EventSignature.as_str()).expect("write");
        writeln!(out, "key: {}", hex(&key_bytes)).expect("write");
        writeln!(out, "message: {}", hex(&message)).expect("write");
        writeln!(out, "signature: {}", hex(&signature)).expect("write");
        writeln!(out, "verdict: valid").expect("write");
        return (
            PublicKey::from_bytes(&key_bytes).expect("a mixed-order key is a valid key"),
            message,
            Signature::from_bytes(signature),
        );
    }
    unreachable!("some message has a k that is not a multiple of 8")
}

fn render() -> String {
    let world = World::new();
    let mut out = String::from(
        "# Threadline protocol v1 state vectors. Generated by protocol/tests/it/state_vectors.rs; do not edit.\n\
         # `event` lines are encode(Event) in hex, in the order a receiver takes them (with its clock at\n\
         # the vectors' time plus a second); `order` is the linear order (§5) of the thread's ids;\n\
         # `state` is encode(state) and `state_hash` its hash (§7); digests are §9's.\n\n",
    );
    let thread = thread_section(&world, &mut out);
    let directory = directory_section(&world, &mut out);
    digests_section(&world, &thread, &directory, &mut out);
    let (key, message, signature) = small_order_section(&mut out);
    // The rule this crate implements accepts it; ed25519-dalek's cofactorless check refuses it.
    key.verify(Domain::EventSignature, &message, &signature)
        .expect("valid by the cofactored rule");
    let signed = [Domain::EventSignature.as_str().as_bytes(), &[0], &message].concat();
    let dalek_key = key.verifying_key().expect("a valid key");
    let dalek_signature = ed25519_dalek::Signature::from_bytes(&signature_bytes(&signature));
    assert!(
        dalek_key.verify_strict(&signed, &dalek_signature).is_err(),
        "a cofactorless verifier refuses it"
    );
    out
}

fn signature_bytes(signature: &Signature) -> [u8; 64] {
    *signature.as_bytes()
}

#[test]
fn state_vectors_are_unchanged() {
    crate::fixtures::check_golden(VECTORS_PATH, &render());
}
