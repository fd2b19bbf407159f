//! A negative test for every auth rule and every verification error: the event is refused with
//! the right typed error, and the thread or directory is unchanged.

use threadline_protocol::{
    auth::AuthError,
    cert::CertRole,
    channel::ChannelKind,
    dag::DagError,
    digest::Domain,
    event::{
        Content, DirectoryKind, Draft, EventKind, ReceiptKind, Scope, Status, ThreadKind,
        VerifyError,
    },
    limits::{MAX_PARENTS, MAX_TEAM_MEMBERS, MAX_TEXT_BYTES},
    name::{Label, TeamName},
    thread::IngestError,
    AgentId, Certificates, ContactId, EventId, Inserted, Signature, Thread, Timestamp,
    VerifiedEvent,
};

use crate::fixtures::{
    self, cert, handle, key, next, next_draft, sign, sign_unverified, World, NOW,
};

/// Inserts `event` into `thread` and checks that it is refused as `expect` says and that the
/// thread is exactly as before.
fn refused(
    thread: &mut Thread,
    certificates: &Certificates,
    event: VerifiedEvent,
    expect: fn(&IngestError) -> bool,
) {
    let before_state = thread.state().clone();
    let before_len = thread.dag().len();
    let before_heads = thread.dag().heads().clone();
    let err = thread
        .insert(event, certificates, NOW)
        .expect_err("event must be refused");
    assert!(expect(&err), "unexpected error: {err:?}");
    assert_eq!(thread.state(), &before_state);
    assert_eq!(thread.dag().len(), before_len);
    assert_eq!(thread.dag().heads(), &before_heads);
}

fn note(_world: &World, thread: &Thread, by: &threadline_protocol::SecretKey) -> VerifiedEvent {
    next(
        thread.dag(),
        by,
        EventKind::Thread(ThreadKind::Note),
        None,
        Some(Content::text("note")),
    )
}

#[test]
fn honest_events_are_accepted_and_folded() {
    let world = World::new();
    let mut thread = world.open_thread();
    let inbound = world.inbound(&thread, "hello, my order is late");
    let inbound_id = inbound.id();
    assert_eq!(
        thread.insert(inbound.clone(), &world.certificates, NOW),
        Ok(Inserted::New)
    );
    assert_eq!(
        thread.insert(inbound, &world.certificates, NOW),
        Ok(Inserted::Duplicate)
    );
    let reply = world.reply(&thread, "sorry, looking into it");
    thread
        .insert(reply, &world.certificates, NOW)
        .expect("reply accepted");
    let state = thread.state();
    assert_eq!(state.n_messages, 2);
    assert_eq!(
        state.route.map(|r| (r.channel, r.handle_from)),
        Some((ChannelKind::Webchat, inbound_id))
    );
    assert_eq!(thread.state(), &thread.fold_from_scratch());
}

#[test]
fn forged_signature_is_refused() {
    let world = World::new();
    let thread = world.open_thread();
    let mut event = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Note),
            None,
            Some(Content::text("x")),
        ),
    );
    let mut bytes = *event.signed.signature.as_bytes();
    bytes[10] ^= 1;
    event.signed.signature = Signature::from_bytes(bytes);
    assert!(matches!(event.verify(), Err(VerifyError::BadSignature(_))));
}

#[test]
fn altered_header_is_refused() {
    let world = World::new();
    let thread = world.open_thread();
    let mut event = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Status {
                status: Status::Pending,
            }),
            None,
            None,
        ),
    );
    event.signed.header.kind = EventKind::Thread(ThreadKind::Status {
        status: Status::Resolved,
    });
    assert!(matches!(event.verify(), Err(VerifyError::BadSignature(_))));
}

#[test]
fn signature_from_another_domain_is_refused() {
    let world = World::new();
    let thread = world.open_thread();
    let mut event = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Note),
            None,
            Some(Content::text("x")),
        ),
    );
    let header_bytes = threadline_protocol::codec::encode(&event.signed.header).expect("encodes");
    event.signed.signature = world
        .node_a
        .sign(Domain::CertificateSignature, &header_bytes);
    assert!(matches!(event.verify(), Err(VerifyError::BadSignature(_))));
}

#[test]
fn resigned_by_an_uncertified_key_is_refused() {
    let world = World::new();
    let mut thread = world.open_thread();
    let stranger = key(99);
    let event = note(&world, &thread, &stranger);
    refused(&mut thread, &world.certificates, event, |e| {
        matches!(e, IngestError::Auth(AuthError::UnknownAuthor { .. }))
    });
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let mut world = World::new();
    let expired_node = key(40);
    let future_node = key(41);
    let mut certificates = world.certificates.clone();
    certificates
        .insert(cert(
            &world.org_a,
            &expired_node,
            CertRole::Node,
            Timestamp::EPOCH,
            Timestamp::from_millis(1_000),
        ))
        .expect("verifies");
    certificates
        .insert(cert(
            &world.org_a,
            &future_node,
            CertRole::Node,
            NOW.saturating_add_millis(3_600_000),
            Timestamp::MAX,
        ))
        .expect("verifies");
    world.certificates = certificates.clone();
    let mut thread = world.open_thread();
    let event = note(&world, &thread, &expired_node);
    refused(&mut thread, &certificates, event, |e| {
        matches!(e, IngestError::Auth(AuthError::CertificateNotValid { .. }))
    });
    let event = note(&world, &thread, &future_node);
    refused(&mut thread, &certificates, event, |e| {
        matches!(e, IngestError::Auth(AuthError::CertificateNotValid { .. }))
    });
}

#[test]
fn revoked_keys_are_refused_from_the_revocation_on() {
    let world = World::new();
    let mut thread = world.open_thread();
    let mut certificates = world.certificates.clone();
    // Revoked from after the next event's time: the event is still valid.
    let first = note(&world, &thread, &world.node_a2);
    certificates.revoke(
        world.node_a2.public(),
        first.header().author_time.saturating_add_millis(1),
    );
    thread
        .insert(first, &certificates, NOW)
        .expect("before the revocation");
    let second = note(&world, &thread, &world.node_a2);
    refused(&mut thread, &certificates, second, |e| {
        matches!(e, IngestError::Auth(AuthError::Revoked { .. }))
    });
}

#[test]
fn certificate_forged_by_another_org_does_not_enter() {
    let world = World::new();
    let mut certificates = Certificates::new();
    let mut forged = cert(
        &world.org_b,
        &key(42),
        CertRole::Node,
        Timestamp::EPOCH,
        Timestamp::MAX,
    );
    forged.body.org = world.org_a_id();
    assert!(certificates.insert(forged).is_err());
}

#[test]
fn bridge_outside_its_channel_is_refused() {
    let world = World::new();
    let mut thread = world.open_thread();
    // The email bridge introduces a web chat message.
    let event = next(
        thread.dag(),
        &world.bridge_email,
        EventKind::inbound_message(ChannelKind::Webchat),
        None,
        Some(Content::text("hi").with_handle(handle("webchat:visitor-1"))),
    );
    refused(&mut thread, &world.certificates, event, |e| {
        matches!(
            e,
            IngestError::Auth(AuthError::WrongChannel {
                certified: ChannelKind::Email,
                used: ChannelKind::Webchat
            })
        )
    });
    // A receipt on another channel.
    let event = next(
        thread.dag(),
        &world.bridge_email,
        EventKind::Thread(ThreadKind::Receipt {
            target: thread.dag().root(),
            channel: ChannelKind::Sms,
            receipt: ReceiptKind::Delivered,
        }),
        None,
        None,
    );
    refused(&mut thread, &world.certificates, event, |e| {
        matches!(e, IngestError::Auth(AuthError::WrongChannel { .. }))
    });
}

#[test]
fn bridge_may_only_introduce_messages_and_receipts() {
    let world = World::new();
    let mut thread = world.open_thread();
    for kind in [
        EventKind::Thread(ThreadKind::Note),
        EventKind::outbound_message(),
        EventKind::Thread(ThreadKind::Status {
            status: Status::Resolved,
        }),
        EventKind::Thread(ThreadKind::LabelAdd {
            label: Label::new("x").expect("valid"),
        }),
    ] {
        let content = matches!(
            kind,
            EventKind::Thread(ThreadKind::Note | ThreadKind::Message { .. })
        )
        .then(|| Content::text("x"));
        let event = next(thread.dag(), &world.bridge_email, kind, None, content);
        refused(&mut thread, &world.certificates, event, |e| {
            matches!(
                e,
                IngestError::Auth(AuthError::KindNotAllowed { role: "bridge", .. })
            )
        });
    }
    // And a correct receipt is fine: on a reply routed to the bridge's channel, right under it.
    let inbound = world.inbound(&thread, "hello");
    thread
        .insert(inbound, &world.certificates, NOW)
        .expect("message accepted");
    let reply = world.reply(&thread, "hi there");
    thread
        .insert(reply, &world.certificates, NOW)
        .expect("reply accepted");
    let receipt = next(
        thread.dag(),
        &world.bridge_webchat,
        EventKind::Thread(ThreadKind::Receipt {
            target: thread
                .dag()
                .iter_ordered()
                .next_back()
                .expect("the reply")
                .id(),
            channel: ChannelKind::Webchat,
            receipt: ReceiptKind::Read,
        }),
        None,
        None,
    );
    thread
        .insert(receipt, &world.certificates, NOW)
        .expect("receipt accepted");
}

#[test]
fn handle_scoped_bridge_cannot_speak_for_another_handle() {
    let world = World::new();
    let mut thread = world.open_thread();
    let hand_off = next(
        thread.dag(),
        &world.node_a,
        EventKind::Thread(ThreadKind::HandOff {
            channel: ChannelKind::Sms,
        }),
        None,
        Some(Content::default().with_handle(handle("sms:+15550000001"))),
    );
    thread
        .insert(hand_off, &world.certificates, NOW)
        .expect("hand-off to SMS");
    let sms = |address: &str| {
        next(
            thread.dag(),
            &world.bridge_sms_scoped,
            EventKind::inbound_message(ChannelKind::Sms),
            None,
            Some(Content::text("hi").with_handle(handle(address))),
        )
    };
    let other = sms("sms:+15559999999");
    let own = sms("sms:+15550000001");
    refused(&mut thread, &world.certificates, other, |e| {
        matches!(e, IngestError::Auth(AuthError::HandleOutOfScope { .. }))
    });
    thread
        .insert(own, &world.certificates, NOW)
        .expect("in scope");
}

#[test]
fn nodes_cannot_introduce_inbound_messages() {
    let world = World::new();
    let mut thread = world.open_thread();
    let event = next(
        thread.dag(),
        &world.node_a,
        EventKind::inbound_message(ChannelKind::Webchat),
        None,
        Some(Content::text("I am the customer, honest").with_handle(handle("webchat:visitor-1"))),
    );
    refused(&mut thread, &world.certificates, event, |e| {
        matches!(
            e,
            IngestError::Auth(AuthError::KindNotAllowed { role: "node", .. })
        )
    });
}

#[test]
fn non_members_cannot_post_until_added_and_after_removal() {
    let world = World::new();
    let mut thread = world.open_thread();
    let event = note(&world, &thread, &world.node_b);
    refused(&mut thread, &world.certificates, event, |e| {
        matches!(e, IngestError::Auth(AuthError::NotAMember { .. }))
    });

    let add = next(
        thread.dag(),
        &world.node_a,
        EventKind::Thread(ThreadKind::MemberAdd {
            org: world.org_b_id(),
        }),
        None,
        None,
    );
    thread
        .insert(add, &world.certificates, NOW)
        .expect("owner adds partner");
    let event = note(&world, &thread, &world.node_b);
    thread
        .insert(event, &world.certificates, NOW)
        .expect("partner posts");

    // Only the owner changes membership or erases.
    let by_partner = next(
        thread.dag(),
        &world.node_b,
        EventKind::Thread(ThreadKind::MemberAdd {
            org: fixtures::org_id(&key(77)),
        }),
        None,
        None,
    );
    refused(&mut thread, &world.certificates, by_partner, |e| {
        matches!(e, IngestError::Auth(AuthError::NotOwner { .. }))
    });
    let erase = next(
        thread.dag(),
        &world.node_b,
        EventKind::Thread(ThreadKind::Erase {
            targets: vec![thread.dag().root()],
        }),
        None,
        None,
    );
    refused(&mut thread, &world.certificates, erase, |e| {
        matches!(e, IngestError::Auth(AuthError::NotOwner { .. }))
    });
    let remove_owner = next(
        thread.dag(),
        &world.node_a,
        EventKind::Thread(ThreadKind::MemberRemove {
            org: world.org_a_id(),
        }),
        None,
        None,
    );
    refused(&mut thread, &world.certificates, remove_owner, |e| {
        matches!(e, IngestError::Auth(AuthError::CannotRemoveOwner))
    });

    let remove = next(
        thread.dag(),
        &world.node_a,
        EventKind::Thread(ThreadKind::MemberRemove {
            org: world.org_b_id(),
        }),
        None,
        None,
    );
    thread
        .insert(remove, &world.certificates, NOW)
        .expect("owner removes partner");
    let event = note(&world, &thread, &world.node_b);
    refused(&mut thread, &world.certificates, event, |e| {
        matches!(e, IngestError::Auth(AuthError::NotAMember { .. }))
    });
}

#[test]
fn membership_is_judged_by_the_causal_past() {
    let world = World::new();
    let mut thread = world.open_thread();
    let fork_point = thread.dag().next_parents();
    let add = next(
        thread.dag(),
        &world.node_a,
        EventKind::Thread(ThreadKind::MemberAdd {
            org: world.org_b_id(),
        }),
        None,
        None,
    );
    thread
        .insert(add, &world.certificates, NOW)
        .expect("owner adds partner");
    // Org B's node posts on a branch that does not include the MemberAdd: refused even though
    // B is a member now.
    let concurrent = sign(
        &world.node_b,
        Draft::new(
            threadline_protocol::Scope::Thread(thread.id()),
            fork_point.0,
            fork_point.1,
            NOW,
            EventKind::Thread(ThreadKind::Note),
        )
        .with_content(Content::text("sneaky")),
    );
    refused(&mut thread, &world.certificates, concurrent, |e| {
        matches!(e, IngestError::Auth(AuthError::NotAMember { .. }))
    });
}

#[test]
fn a_partners_bridge_writes_nothing_in_a_shared_thread() {
    let mut world = World::new();
    let org_b = world.org_b.clone();
    let partner_bridge = threadline_protocol::SecretKey::from_seed([22; 32]);
    world.certify(
        &org_b,
        &partner_bridge,
        threadline_protocol::CertRole::Bridge {
            channel: ChannelKind::Webchat,
            handle_scope: None,
        },
    );
    let mut thread = world.open_thread();
    let add = next(
        thread.dag(),
        &world.node_a,
        EventKind::Thread(ThreadKind::MemberAdd {
            org: world.org_b_id(),
        }),
        None,
        None,
    );
    thread
        .insert(add, &world.certificates, NOW)
        .expect("owner shares the thread");
    // Org B is a member, and the thread is open to the web chat; but the customer is org A's.
    let message = next(
        thread.dag(),
        &partner_bridge,
        EventKind::inbound_message(ChannelKind::Webchat),
        None,
        Some(Content::text("hello").with_handle(handle("webchat:visitor-1"))),
    );
    refused(&mut thread, &world.certificates, message, |e| {
        matches!(
            e,
            IngestError::Auth(AuthError::NotOwner {
                kind: "thread.message.inbound",
                ..
            })
        )
    });
}

#[test]
fn agent_keys_act_only_as_their_agent() {
    let world = World::new();
    let mut thread = world.open_thread();
    let as_other = next(
        thread.dag(),
        &world.agent_key,
        EventKind::Thread(ThreadKind::Note),
        Some(AgentId::from_bytes([1; 16])),
        Some(Content::text("x")),
    );
    refused(&mut thread, &world.certificates, as_other, |e| {
        matches!(e, IngestError::Auth(AuthError::AgentMismatch))
    });
    let as_self = next(
        thread.dag(),
        &world.agent_key,
        EventKind::Thread(ThreadKind::Note),
        Some(world.agent),
        Some(Content::text("x")),
    );
    thread
        .insert(as_self, &world.certificates, NOW)
        .expect("agent acts as itself");
}

#[test]
fn a_thread_is_opened_only_by_its_own_org() {
    let world = World::new();
    let root = sign(
        &world.node_b,
        Draft::new(
            Scope::NewThread,
            vec![],
            0,
            NOW,
            EventKind::Thread(ThreadKind::Opened {
                org: world.org_a_id(),
                contact: ContactId::from_bytes([5; 16]),
                channel: ChannelKind::Email,
            }),
        ),
    );
    assert!(matches!(
        Thread::open(root, &world.certificates, NOW),
        Err(IngestError::Auth(AuthError::WrongOrg { .. }))
    ));
}

#[test]
fn unknown_parents_and_wrong_depth_are_refused() {
    let world = World::new();
    let mut thread = world.open_thread();
    let unknown = EventId::from_bytes([0xee; 32]);
    let event = sign(
        &world.node_a,
        Draft::new(
            Scope::Thread(thread.id()),
            vec![unknown],
            1,
            NOW,
            EventKind::Thread(ThreadKind::Note),
        )
        .with_content(Content::text("x")),
    );
    let before = thread.state().clone();
    let err = thread
        .insert(event, &world.certificates, NOW)
        .expect_err("refused");
    assert_eq!(
        err,
        IngestError::Dag(DagError::MissingParents {
            missing: vec![unknown]
        })
    );
    assert!(err.is_retryable());
    assert_eq!(thread.state(), &before);

    let wrong_depth = sign(
        &world.node_a,
        Draft::new(
            Scope::Thread(thread.id()),
            vec![thread.dag().root()],
            7,
            NOW,
            EventKind::Thread(ThreadKind::Note),
        )
        .with_content(Content::text("x")),
    );
    refused(&mut thread, &world.certificates, wrong_depth, |e| {
        matches!(
            e,
            IngestError::Dag(DagError::BadDepth {
                expected: 1,
                found: 7
            })
        )
    });
}

#[test]
fn events_from_the_future_wait() {
    let world = World::new();
    let mut thread = world.open_thread();
    let (parents, depth) = thread.dag().next_parents();
    let event = sign(
        &world.node_a,
        Draft::new(
            Scope::Thread(thread.id()),
            parents,
            depth,
            NOW.saturating_add_millis(3_600_000),
            EventKind::Thread(ThreadKind::Note),
        )
        .with_content(Content::text("x")),
    );
    let err = thread
        .clone()
        .insert(event.clone(), &world.certificates, NOW)
        .expect_err("refused now");
    assert!(err.is_retryable());
    refused(&mut thread, &world.certificates, event.clone(), |e| {
        matches!(e, IngestError::Auth(AuthError::FromTheFuture { .. }))
    });
    thread
        .insert(
            event,
            &world.certificates,
            NOW.saturating_add_millis(3_600_000),
        )
        .expect("accepted an hour later");
}

#[test]
fn content_must_match_its_hash() {
    let world = World::new();
    let thread = world.open_thread();
    let mut event = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Note),
            None,
            Some(Content::text("original")),
        ),
    );
    event.content = Some(Box::new(Content::text("tampered")));
    assert_eq!(event.verify(), Err(VerifyError::ContentHashMismatch));
}

#[test]
fn content_rules_and_limits_are_enforced() {
    let world = World::new();
    let thread = world.open_thread();
    // A note without content.
    let event = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Note),
            None,
            None,
        ),
    );
    assert!(matches!(
        event.verify(),
        Err(VerifyError::ContentRule {
            rule: "must have",
            ..
        })
    ));
    // Content on a status change.
    let event = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Status {
                status: Status::Open,
            }),
            None,
            Some(Content::text("x")),
        ),
    );
    assert!(matches!(
        event.verify(),
        Err(VerifyError::ContentRule {
            rule: "must not have",
            ..
        })
    ));
    // Oversize text.
    let event = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Note),
            None,
            Some(Content::text("x".repeat(MAX_TEXT_BYTES + 1))),
        ),
    );
    assert!(matches!(
        event.verify(),
        Err(VerifyError::TooLarge { what: "text", .. })
    ));
    // An inbound message whose handle is on another channel.
    let event = sign_unverified(
        &world.bridge_webchat,
        next_draft(
            thread.dag(),
            EventKind::inbound_message(ChannelKind::Webchat),
            None,
            Some(Content::text("x").with_handle(handle("email:a@b.test"))),
        ),
    );
    assert!(matches!(
        event.verify(),
        Err(VerifyError::BadContent { .. })
    ));
    // Too many parents.
    let parents: Vec<EventId> = (0..=MAX_PARENTS as u8)
        .map(|i| EventId::from_bytes([i; 32]))
        .collect();
    let event = sign_unverified(
        &world.node_a,
        Draft::new(
            Scope::Thread(thread.id()),
            parents,
            1,
            NOW,
            EventKind::Thread(ThreadKind::Status {
                status: Status::Open,
            }),
        ),
    );
    assert!(matches!(
        event.verify(),
        Err(VerifyError::TooLarge {
            what: "parents",
            ..
        })
    ));
}

#[test]
fn structure_errors_are_typed() {
    let world = World::new();
    let thread = world.open_thread();
    // Unsorted parents (not produced by Draft::sign, so built by hand and re-signed).
    let mut event = sign_unverified(
        &world.node_a,
        next_draft(
            thread.dag(),
            EventKind::Thread(ThreadKind::Status {
                status: Status::Open,
            }),
            None,
            None,
        ),
    );
    event.signed.header.parents = vec![EventId::from_bytes([2; 32]), EventId::from_bytes([1; 32])];
    let bytes = threadline_protocol::codec::encode(&event.signed.header).expect("encodes");
    event.signed.signature = world.node_a.sign(Domain::EventSignature, &bytes);
    assert!(matches!(
        event.verify(),
        Err(VerifyError::BadParents { .. })
    ));
    // A directory kind in a thread.
    let event = sign_unverified(
        &world.node_a,
        Draft::new(
            Scope::Thread(thread.id()),
            vec![thread.dag().root()],
            1,
            NOW,
            EventKind::Directory(DirectoryKind::Genesis),
        ),
    );
    assert!(matches!(
        event.verify(),
        Err(VerifyError::KindScopeMismatch { .. })
    ));
    // A root with parents.
    let event = sign_unverified(
        &world.node_a,
        Draft::new(
            Scope::NewThread,
            vec![thread.dag().root()],
            1,
            NOW,
            EventKind::Thread(ThreadKind::Opened {
                org: world.org_a_id(),
                contact: world.contact,
                channel: ChannelKind::Email,
            }),
        ),
    );
    assert!(matches!(
        event.verify(),
        Err(VerifyError::BadParents { .. })
    ));
}

#[test]
fn directory_auth_rules() {
    let world = World::new();
    let mut directory = world.directory_a();
    let contact = ContactId::from_bytes([3; 16]);
    let create = |directory: &threadline_protocol::Directory, by| {
        next(
            directory.dag(),
            by,
            EventKind::Directory(DirectoryKind::CreateContact { contact }),
            None,
            None,
        )
    };
    let stranger = key(98);
    for (by, expect) in [
        (&world.bridge_email, "bridge"),
        (&world.node_b, "other org"),
        (&stranger, "unknown"),
    ] {
        let before = directory.state().clone();
        let err = directory
            .insert(create(&directory, by), NOW)
            .expect_err("refused");
        match expect {
            "bridge" => assert!(
                matches!(
                    err,
                    IngestError::Auth(AuthError::KindNotAllowed { role: "bridge", .. })
                ),
                "{err:?}"
            ),
            // Org B's node is not certified in org A's directory.
            _ => assert!(
                matches!(err, IngestError::Auth(AuthError::UnknownAuthor { .. })),
                "{err:?}"
            ),
        }
        assert_eq!(directory.state(), &before);
    }
    // Only the org key revokes.
    let revoke = next(
        directory.dag(),
        &world.node_a,
        EventKind::Directory(DirectoryKind::Revoke {
            subject: world.node_a2.public(),
            effective_from: NOW,
        }),
        None,
        None,
    );
    assert!(matches!(
        directory.insert(revoke, NOW),
        Err(IngestError::Auth(AuthError::KindNotAllowed {
            role: "node",
            ..
        }))
    ));
    let revoke = next(
        directory.dag(),
        &world.org_a,
        EventKind::Directory(DirectoryKind::Revoke {
            subject: world.node_a2.public(),
            effective_from: NOW,
        }),
        None,
        None,
    );
    directory.insert(revoke, NOW).expect("org key revokes");
    assert_eq!(
        directory
            .certificates()
            .revoked_from(&world.node_a2.public()),
        Some(NOW)
    );
    // The revoked node can no longer write.
    let late = sign(
        &world.node_a2,
        next_draft(
            directory.dag(),
            EventKind::Directory(DirectoryKind::CreateContact { contact }),
            None,
            None,
        ),
    );
    assert!(matches!(
        directory.insert(late, NOW),
        Err(IngestError::Auth(AuthError::Revoked { .. }))
    ));
    // A node of the org writes contacts.
    directory
        .insert(create(&directory, &world.node_a), NOW)
        .expect("node creates contact");
    assert!(directory.state().contacts.contains_key(&contact));
}

#[test]
fn a_node_of_another_org_publishing_its_certificate_gains_nothing() {
    let world = World::new();
    let mut directory = world.directory_a();
    let b_cert = world
        .published
        .iter()
        .find(|c| c.body.subject == world.node_b.public())
        .expect("fixture")
        .clone();
    let event = sign_unverified(
        &world.node_b,
        next_draft(
            directory.dag(),
            EventKind::Directory(DirectoryKind::Certify {
                certificate: Box::new(b_cert),
            }),
            None,
            None,
        ),
    );
    assert!(matches!(
        event.verify(),
        Err(VerifyError::ForeignCertificate { .. })
    ));
    let genesis_b = threadline_protocol::directory::genesis(&world.org_b).expect("signs");
    let mut wrong = genesis_b.clone();
    wrong.signed.header.author_time = Timestamp::from_millis(1);
    assert!(matches!(wrong.verify(), Err(VerifyError::BadGenesis)));
    let _ = directory
        .insert(genesis_b.verify().expect("valid genesis"), NOW)
        .expect_err("another org's genesis is another log");
}

#[test]
fn batch_verification_isolates_the_bad_events() {
    let world = World::new();
    let mut thread = world.open_thread();
    let mut events = Vec::new();
    for idx in 0..8 {
        let event = world.inbound(&thread, &format!("message {idx}"));
        events.push(event.event().clone());
        thread
            .insert(event, &world.certificates, NOW)
            .expect("accepted");
    }
    let all_good = threadline_protocol::event::verify_batch(events.clone());
    assert!(all_good.iter().all(Result::is_ok));

    let mut forged = events[3].clone();
    let mut bytes = *forged.signed.signature.as_bytes();
    bytes[0] ^= 0x80;
    forged.signed.signature = Signature::from_bytes(bytes);
    events[3] = forged;
    events[5].content = Some(Box::new(
        Content::text("tampered").with_handle(handle("webchat:visitor-1")),
    ));
    let results = threadline_protocol::event::verify_batch(events);
    for (idx, result) in results.iter().enumerate() {
        match idx {
            3 => assert!(
                matches!(result, Err(VerifyError::BadSignature(_))),
                "{result:?}"
            ),
            5 => assert_eq!(result, &Err(VerifyError::ContentHashMismatch)),
            _ => assert!(result.is_ok(), "event {idx}: {result:?}"),
        }
    }
}

#[test]
fn teams_are_set_whole_and_their_members_are_checked() {
    let world = World::new();
    let mut directory = world.directory_a();
    let billing = TeamName::new("billing").expect("valid");
    let (a, b) = (AgentId::from_bytes([1; 16]), AgentId::from_bytes([2; 16]));
    let set_team = |directory: &threadline_protocol::Directory, members: Vec<AgentId>| {
        sign_unverified(
            &world.node_a,
            next_draft(
                directory.dag(),
                EventKind::Directory(DirectoryKind::SetTeam {
                    team: billing.clone(),
                    members,
                }),
                None,
                None,
            ),
        )
    };
    // Members out of order, twice, or too many: refused before anything reads them.
    for members in [
        vec![b, a],
        vec![a, a],
        (0..=MAX_TEAM_MEMBERS as u16)
            .map(|i| {
                let mut id = [0; 16];
                id[..2].copy_from_slice(&i.to_be_bytes());
                AgentId::from_bytes(id)
            })
            .collect(),
    ] {
        assert!(
            matches!(
                set_team(&directory, members).verify(),
                Err(VerifyError::BadContent { .. } | VerifyError::TooLarge { .. })
            ),
            "refused"
        );
    }
    let insert = |directory: &mut threadline_protocol::Directory, members| {
        let event = set_team(directory, members).verify().expect("verifies");
        directory.insert(event, NOW).expect("a node sets teams");
    };
    insert(&mut directory, vec![a, b]);
    assert_eq!(
        directory.state().teams.get(&billing),
        Some(&[a, b].into_iter().collect())
    );
    // The last set in linear order wins; no members removes the team.
    insert(&mut directory, vec![b]);
    assert_eq!(
        directory.state().teams.get(&billing),
        Some(&[b].into_iter().collect())
    );
    insert(&mut directory, vec![]);
    assert!(directory.state().teams.is_empty());
}
