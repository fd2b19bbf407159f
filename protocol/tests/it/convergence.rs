//! Convergence properties: random event sets from several authors, delivered to several
//! replicas in random orders with duplicates (and, for erased events, sometimes without their
//! content), always give the same heads, linear order, derived state and state hash.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use threadline_protocol::{
    channel::ChannelKind,
    dag::DagError,
    event::{
        Content, Direction, DirectoryKind, Draft, EventKind, ReceiptKind, Scope, Status, ThreadKind,
    },
    name::{AttributeKey, Label, Shortcode, TeamName, WebhookName},
    thread::IngestError,
    AgentId, ContactId, EventId, SecretKey, Thread, Timestamp, VerifiedEvent,
};

use crate::fixtures::{handle, sign, World, NOW};

/// One step of a random history: who acts, what they do, which existing events they name as
/// parents, and how far their clock is off.
#[derive(Clone, Debug)]
struct Op {
    actor: u8,
    action: u8,
    parent_picks: Vec<u16>,
    time_jitter: u16,
    extra: u16,
}

fn op() -> impl Strategy<Value = Op> {
    (
        any::<u8>(),
        any::<u8>(),
        prop::collection::vec(any::<u16>(), 1..4),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(actor, action, parent_picks, time_jitter, extra)| Op {
            actor,
            action,
            parent_picks,
            time_jitter,
            extra,
        })
}

/// How each replica receives the events: a sort key per delivery, and which deliveries are
/// duplicated.
fn delivery() -> impl Strategy<Value = (Vec<u32>, Vec<bool>, bool)> {
    (
        prop::collection::vec(any::<u32>(), 128),
        prop::collection::vec(any::<bool>(), 128),
        any::<bool>(),
    )
}

/// Picks parents among `accepted` and returns (parents, depth).
fn parents_of(accepted: &[VerifiedEvent], picks: &[u16]) -> (Vec<EventId>, u64) {
    let chosen: BTreeSet<usize> = picks.iter().map(|p| *p as usize % accepted.len()).collect();
    let depth = chosen
        .iter()
        .map(|i| accepted[*i].header().depth)
        .max()
        .unwrap_or(0)
        + 1;
    (chosen.iter().map(|i| accepted[*i].id()).collect(), depth)
}

/// Delivers `events` in the order `keys` gives (with duplicates), retrying events whose parents
/// are not there yet, as a node does. Returns what each `insert` refused for good.
fn deliver<F>(
    events: &[VerifiedEvent],
    (keys, dups, strip): &(Vec<u32>, Vec<bool>, bool),
    erased: &BTreeSet<EventId>,
    mut insert: F,
) where
    F: FnMut(VerifiedEvent) -> Result<(), IngestError>,
{
    let mut order: Vec<(u32, usize)> = Vec::new();
    for (idx, _) in events.iter().enumerate() {
        order.push((keys[idx % keys.len()], idx));
        if dups[idx % dups.len()] {
            order.push((keys[(idx * 7 + 3) % keys.len()], idx));
        }
    }
    order.sort();
    let mut pending: Vec<VerifiedEvent> = order
        .into_iter()
        .map(|(_, idx)| {
            let mut event = events[idx].clone();
            // A replica that got the event from a peer that had already erased it.
            if *strip && erased.contains(&event.id()) {
                event.erase_content();
            }
            event
        })
        .collect();
    loop {
        let before = pending.len();
        let mut still_pending = Vec::new();
        for event in pending {
            if let Err(IngestError::Dag(DagError::MissingParents { .. })) = insert(event.clone()) {
                still_pending.push(event);
            }
        }
        pending = still_pending;
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
}

fn thread_history(world: &World, ops: &[Op]) -> (Thread, Vec<VerifiedEvent>) {
    let mut reference = world.open_thread();
    let root = reference.dag().iter_ordered().next().expect("root").clone();
    let mut accepted = vec![root];
    let mut all = Vec::new();
    let labels = ["billing", "vip", "bug"];
    for op in ops {
        let (mut parents, mut depth) = parents_of(&accepted, &op.parent_picks);
        let time = NOW.saturating_add_millis(u64::from(op.time_jitter % 64));
        let pick_target = |extra: u16| accepted[extra as usize % accepted.len()].id();
        let nodes: [&SecretKey; 2] = [&world.node_a, &world.node_a2];
        let node = nodes[op.actor as usize % 2];
        let (key, kind, agent, content): (
            &SecretKey,
            ThreadKind,
            Option<AgentId>,
            Option<Content>,
        ) = match op.action % 15 {
            0 => (
                &world.bridge_webchat,
                ThreadKind::Message {
                    direction: Direction::Inbound {
                        channel: ChannelKind::Webchat,
                    },
                },
                None,
                Some(
                    Content::text(format!("chat {}", op.extra))
                        .with_handle(handle("webchat:visitor-1")),
                ),
            ),
            1 => (
                &world.bridge_email,
                ThreadKind::Message {
                    direction: Direction::Inbound {
                        channel: ChannelKind::Email,
                    },
                },
                None,
                Some(
                    Content::text(format!("mail {}", op.extra))
                        .with_handle(handle("email:alice@example.com")),
                ),
            ),
            2 => (
                node,
                ThreadKind::Message {
                    direction: Direction::Outbound,
                },
                Some(world.agent),
                Some(Content::text("reply")),
            ),
            3 => (
                &world.agent_key,
                ThreadKind::Note,
                Some(world.agent),
                Some(Content::text("note")),
            ),
            4 if op.extra % 3 == 0 => (
                node,
                ThreadKind::AssignTeam {
                    team: (op.extra % 2 == 0).then(|| TeamName::new("billing").expect("valid")),
                },
                None,
                None,
            ),
            4 => (
                node,
                ThreadKind::Assign {
                    assignee: (op.extra % 2 == 0).then_some(world.agent),
                },
                None,
                None,
            ),
            5 => (
                node,
                ThreadKind::Status {
                    status: [
                        Status::Open,
                        Status::Pending,
                        Status::Resolved,
                        Status::Snoozed {
                            until: Timestamp::from_millis(u64::from(op.extra)),
                        },
                    ][op.extra as usize % 4],
                },
                None,
                None,
            ),
            6 => (
                node,
                ThreadKind::HandOff {
                    channel: ChannelKind::Email,
                },
                None,
                Some(Content::default().with_handle(handle("email:alice@example.com"))),
            ),
            7 => (
                node,
                ThreadKind::LabelAdd {
                    label: Label::new(labels[op.extra as usize % 3]).expect("valid"),
                },
                None,
                None,
            ),
            8 => (
                node,
                ThreadKind::LabelRemove {
                    label: Label::new(labels[op.extra as usize % 3]).expect("valid"),
                },
                None,
                None,
            ),
            9 => (
                &world.node_a,
                ThreadKind::MemberAdd {
                    org: world.org_b_id(),
                },
                None,
                None,
            ),
            10 => (
                &world.node_a,
                ThreadKind::MemberRemove {
                    org: world.org_b_id(),
                },
                None,
                None,
            ),
            11 => (
                &world.node_b,
                ThreadKind::Note,
                None,
                Some(Content::text("partner note")),
            ),
            12 => (
                &world.node_a,
                ThreadKind::Erase {
                    targets: vec![pick_target(op.extra)],
                },
                None,
                None,
            ),
            13 => (
                &world.bridge_webchat,
                ThreadKind::AutoReply {
                    channel: ChannelKind::Webchat,
                },
                None,
                Some(Content::text("away").with_handle(handle("webchat:visitor-1"))),
            ),
            _ => (
                &world.bridge_webchat,
                ThreadKind::Receipt {
                    target: pick_target(op.extra),
                    channel: ChannelKind::Webchat,
                    receipt: [
                        ReceiptKind::Failed,
                        ReceiptKind::Delivered,
                        ReceiptKind::Read,
                    ][op.extra as usize % 3],
                },
                None,
                None,
            ),
        };
        // A receipt goes right under its target (the auth rules want the target a parent).
        if let ThreadKind::Receipt { target, .. } = &kind {
            if !parents.contains(target) {
                let target_depth = accepted
                    .iter()
                    .find(|e| e.id() == *target)
                    .map_or(0, |e| e.header().depth);
                parents.push(*target);
                parents.sort_unstable();
                depth = depth.max(target_depth + 1);
            }
        }
        let mut draft = Draft::new(
            Scope::Thread(reference.id()),
            parents,
            depth,
            time,
            EventKind::Thread(kind),
        );
        if let Some(agent) = agent {
            draft = draft.with_agent(agent);
        }
        if let Some(content) = content {
            draft = draft.with_content(content);
        }
        let event = sign(key, draft);
        all.push(event.clone());
        if reference
            .insert(event.clone(), &world.certificates, NOW)
            .is_ok()
        {
            accepted.push(event);
        }
    }
    (reference, all)
}

fn erased_in(thread: &Thread) -> BTreeSet<EventId> {
    thread.state().erased.clone()
}

fn snapshot(
    thread: &Thread,
) -> (
    Vec<EventId>,
    BTreeSet<EventId>,
    threadline_protocol::StateHash,
    BTreeMap<EventId, bool>,
) {
    (
        thread.dag().iter_ordered().map(|e| e.id()).collect(),
        thread.dag().heads().clone(),
        thread.state().hash().expect("hashes"),
        thread
            .dag()
            .iter_ordered()
            .map(|e| (e.id(), e.content().is_some()))
            .collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn thread_replicas_converge(ops in prop::collection::vec(op(), 1..40), deliveries in prop::collection::vec(delivery(), 3)) {
        let world = World::new();
        let (reference, events) = thread_history(&world, &ops);
        let erased = erased_in(&reference);
        let expected = snapshot(&reference);
        prop_assert_eq!(reference.state(), &reference.fold_from_scratch());
        // A node restarting rebuilds the thread from its store without re-running auth.
        let stored = reference.dag().iter_ordered().map(|e| e.event().clone().verify_from_store().expect("stored event checks"));
        let restored = Thread::restore(stored).expect("restores");
        prop_assert_eq!(&snapshot(&restored), &expected);
        for delivery in &deliveries {
            let mut replica = world.open_thread();
            deliver(&events, delivery, &erased, |event| replica.insert(event, &world.certificates, NOW).map(|_| ()));
            prop_assert_eq!(&snapshot(&replica), &expected);
            prop_assert_eq!(replica.state(), &replica.fold_from_scratch());
            // Erased content is gone everywhere, and every stored header still verifies.
            for event in replica.dag().iter_ordered() {
                if erased.contains(&event.id()) {
                    prop_assert!(event.content().is_none());
                }
                prop_assert!(event.event().clone().verify().is_ok());
            }
        }
    }

    #[test]
    fn directory_replicas_converge(ops in prop::collection::vec(op(), 1..40), deliveries in prop::collection::vec(delivery(), 3)) {
        let world = World::new();
        let contacts: Vec<ContactId> = (0..4u8).map(|i| ContactId::from_bytes([i + 1; 16])).collect();
        let handles = ["email:alice@example.com", "sms:+15550000001", "webchat:visitor-9"];
        let mut reference = world.directory_a();
        let mut all: Vec<VerifiedEvent> = reference.dag().iter_ordered().skip(1).cloned().collect();
        let mut accepted: Vec<VerifiedEvent> = reference.dag().iter_ordered().cloned().collect();
        for op in &ops {
            let (parents, depth) = parents_of(&accepted, &op.parent_picks);
            let time = NOW.saturating_add_millis(u64::from(op.time_jitter % 64));
            let contact = contacts[op.extra as usize % contacts.len()];
            let other = contacts[(op.extra as usize / 4) % contacts.len()];
            let some_handle = handle(handles[(op.extra as usize / 16) % handles.len()]);
            let (kind, content) = match op.action % 8 {
                0 | 1 => (DirectoryKind::CreateContact { contact }, Some(Content::text(format!("name {}", op.extra % 5)))),
                2 | 3 => (DirectoryKind::LinkHandle { contact }, Some(Content::default().with_handle(some_handle))),
                4 => (DirectoryKind::UnlinkHandle { contact }, Some(Content::default().with_handle(some_handle))),
                5 => (DirectoryKind::Merge { from: contact, into: other }, None),
                6 => (DirectoryKind::SetAttribute { contact, key: AttributeKey::new("company").expect("valid") }, Some(Content::text(format!("co {}", op.extra % 3)))),
                _ => match op.extra % 4 {
                    0 => (DirectoryKind::EraseContact { contact }, None),
                    // A canned reply set, changed or removed (empty text), concurrently on two nodes.
                    1 => (DirectoryKind::SetCannedReply { shortcode: Shortcode::new("thanks").expect("valid") }, Some(Content::text(["", "Thanks!", "Thank you"][op.extra as usize / 4 % 3]))),
                    // A webhook set, changed or removed, concurrently.
                    3 => (DirectoryKind::SetWebhook { name: WebhookName::new("crm").expect("valid") }, Some(Content::text(["", "{\"url\":\"https://a.example\"}", "{\"url\":\"https://b.example\"}"][op.extra as usize / 4 % 3]))),
                    // A team's members set, changed or emptied (the team removed), concurrently.
                    2 => (DirectoryKind::SetTeam { team: TeamName::new("billing").expect("valid"), members: [vec![], vec![AgentId::from_bytes([1; 16])], vec![AgentId::from_bytes([1; 16]), AgentId::from_bytes([2; 16])]][op.extra as usize / 4 % 3].clone() }, None),
                    _ => (DirectoryKind::Consent { contact, channel: None, granted: op.extra % 2 == 0 }, None),
                },
            };
            let author = [&world.node_a, &world.node_a2][op.actor as usize % 2];
            let mut draft = Draft::new(Scope::Directory(world.org_a_id()), parents, depth, time, EventKind::Directory(kind));
            if let Some(content) = content {
                draft = draft.with_content(content);
            }
            let event = sign(author, draft);
            all.push(event.clone());
            if reference.insert(event.clone(), NOW).is_ok() {
                accepted.push(event);
            }
        }
        prop_assert_eq!(reference.state(), &reference.fold_from_scratch());
        // Content the reference dropped because its contact is erased.
        let erased: BTreeSet<EventId> = reference.dag().iter_ordered().filter(|e| e.content().is_none() && e.header().content_hash.is_some()).map(|e| e.id()).collect();
        let expected_hash = reference.state().hash().expect("hashes");
        let restored = threadline_protocol::Directory::restore(reference.dag().iter_ordered().cloned()).expect("restores");
        prop_assert_eq!(restored.state(), reference.state());
        for delivery in &deliveries {
            let mut replica = world.directory_a();
            deliver(&all, delivery, &erased, |event| replica.insert(event, NOW).map(|_| ()));
            prop_assert_eq!(replica.state().hash().expect("hashes"), expected_hash);
            prop_assert_eq!(replica.state(), &replica.fold_from_scratch());
            // No crossed wires: a handle resolves to one live contact that lists it.
            for handle in replica.state().handles.keys() {
                if let Some(contact) = replica.state().resolve(handle) {
                    let (_, record) = replica.state().contact(contact).expect("resolved contact exists");
                    prop_assert!(record.handles.contains(handle));
                    prop_assert!(!record.erased);
                }
            }
            for event in replica.dag().iter_ordered() {
                if erased.contains(&event.id()) {
                    prop_assert!(event.content().is_none());
                }
            }
        }
    }
}

#[test]
fn concurrent_merges_in_opposite_directions_converge() {
    let world = World::new();
    let mut directory = world.directory_a();
    let (a, b) = (
        ContactId::from_bytes([1; 16]),
        ContactId::from_bytes([2; 16]),
    );
    for contact in [a, b] {
        let event = crate::fixtures::next(
            directory.dag(),
            &world.node_a,
            EventKind::Directory(DirectoryKind::CreateContact { contact }),
            None,
            None,
        );
        directory.insert(event, NOW).expect("created");
    }
    let (parents, depth) = directory.dag().next_parents();
    let a_into_b = sign(
        &world.node_a,
        Draft::new(
            Scope::Directory(world.org_a_id()),
            parents.clone(),
            depth,
            NOW,
            EventKind::Directory(DirectoryKind::Merge { from: a, into: b }),
        ),
    );
    let b_into_a = sign(
        &world.node_a2,
        Draft::new(
            Scope::Directory(world.org_a_id()),
            parents,
            depth,
            NOW,
            EventKind::Directory(DirectoryKind::Merge { from: b, into: a }),
        ),
    );
    let mut one = directory.clone();
    let mut two = directory;
    one.insert(a_into_b.clone(), NOW).expect("merge");
    one.insert(b_into_a.clone(), NOW).expect("merge");
    two.insert(b_into_a, NOW).expect("merge");
    two.insert(a_into_b, NOW).expect("merge");
    assert_eq!(one.state(), two.state());
    // Exactly one of the two survives as the root, and both ids resolve to it.
    let root = one.state().root_of(a);
    assert_eq!(one.state().root_of(b), root);
    assert!(one.state().contacts[&root].merged_into.is_none());
}

#[test]
fn a_handle_stays_with_its_first_contact() {
    let world = World::new();
    let mut directory = world.directory_a();
    let (a, b) = (
        ContactId::from_bytes([1; 16]),
        ContactId::from_bytes([2; 16]),
    );
    let email = handle("email:alice@example.com");
    for contact in [a, b] {
        let create = crate::fixtures::next(
            directory.dag(),
            &world.node_a,
            EventKind::Directory(DirectoryKind::CreateContact { contact }),
            None,
            None,
        );
        directory.insert(create, NOW).expect("created");
    }
    for contact in [a, b] {
        let link = crate::fixtures::next(
            directory.dag(),
            &world.node_a,
            EventKind::Directory(DirectoryKind::LinkHandle { contact }),
            None,
            Some(Content::default().with_handle(email.clone())),
        );
        directory.insert(link, NOW).expect("accepted");
    }
    assert_eq!(directory.state().resolve(&email), Some(a));
    assert!(directory.state().contacts[&b].handles.is_empty());
    // Erasing A frees nothing for B retroactively, and A's handle no longer resolves.
    let erase = crate::fixtures::next(
        directory.dag(),
        &world.node_a,
        EventKind::Directory(DirectoryKind::EraseContact { contact: a }),
        None,
        None,
    );
    directory.insert(erase, NOW).expect("erased");
    assert!(directory.state().contacts[&a].erased);
    assert!(directory.state().contacts[&a].handles.is_empty());
    let stored_link = directory
        .dag()
        .iter_ordered()
        .find(|e| matches!(e.header().kind, EventKind::Directory(DirectoryKind::LinkHandle { contact }) if contact == a))
        .expect("link event is kept");
    assert!(
        stored_link.content().is_none(),
        "erased contact's content is dropped"
    );
}
