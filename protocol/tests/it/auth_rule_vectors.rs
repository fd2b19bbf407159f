//! Golden vectors for every other refusal of §6's table (`auth.txt` covers rule 5): clock,
//! unknown, revoked and expired authors, roles, the agent field, handle scope, membership and
//! owner-only kinds judged by the causal past, the DAG's own checks, and a directory's rules
//! (self-published certificates, bridges, the org key's `Revoke`, another org's keys).
//! `protocol/tests/vectors/auth_rules.txt` is the reference; this test fails if a byte or a
//! verdict changes. Regenerate on purpose with `THREADLINE_UPDATE_VECTORS=1`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use threadline_protocol::{
    auth::AuthError,
    cert::{CertRole, Certificate},
    channel::ChannelKind,
    codec,
    dag::DagError,
    directory::{self, Directory},
    event::{Content, Direction, DirectoryKind, Draft, EventKind, Scope, ThreadKind},
    name::AttributeKey,
    thread::IngestError,
    AgentId, Certificates, ContactId, Event, EventId, OrgId, PublicKey, ScopeId, SecretKey, Thread,
    ThreadId, Timestamp, VerifiedEvent,
};

use crate::fixtures::{cert, handle, key, sign, World, NOW, ONE_YEAR_MILLIS};

const VECTORS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/auth_rules.txt");

/// The name a vector gives a refusal: the reference's variant.
fn rule_name(err: &IngestError) -> &'static str {
    match err {
        IngestError::NotARoot { .. } | IngestError::Dag(DagError::NotARoot) => "NotARoot",
        IngestError::Dag(DagError::WrongScope { .. }) => "WrongScope",
        IngestError::Dag(DagError::MissingParents { .. }) => "MissingParents",
        IngestError::Dag(DagError::BadDepth { .. }) => "BadDepth",
        IngestError::Auth(auth) => match auth {
            AuthError::UnknownAuthor { .. } => "UnknownAuthor",
            AuthError::CertificateNotValid { .. } => "CertificateNotValid",
            AuthError::Revoked { .. } => "Revoked",
            AuthError::FromTheFuture { .. } => "FromTheFuture",
            AuthError::KindNotAllowed { .. } => "KindNotAllowed",
            AuthError::WrongChannel { .. } => "WrongChannel",
            AuthError::HandleOutOfScope { .. } => "HandleOutOfScope",
            AuthError::AgentMismatch => "AgentMismatch",
            AuthError::NotAMember { .. } => "NotAMember",
            AuthError::NotOwner { .. } => "NotOwner",
            AuthError::CannotRemoveOwner => "CannotRemoveOwner",
            AuthError::WrongOrg { .. } => "WrongOrg",
            AuthError::ChannelNotAdmitted { .. } => "ChannelNotAdmitted",
            AuthError::ReceiptTargetNotParent { .. } => "ReceiptTargetNotParent",
            AuthError::ReceiptTargetNotOutbound { .. } => "ReceiptTargetNotOutbound",
            AuthError::ReceiptNotOnRoute { .. } => "ReceiptNotOnRoute",
            AuthError::BadCertificate(_) => "BadCertificate",
            other => panic!("a refusal with no vector name: {other:?}"),
        },
        other => panic!("a refusal with no vector name: {other:?}"),
    }
}

/// The receiver: the certificates and revocations it knows for threads, its clock, and the
/// logs it holds. A directory's events are judged by that directory's own certificates.
struct Receiver {
    certificates: Certificates,
    threads: BTreeMap<ScopeId, Thread>,
    directories: BTreeMap<ScopeId, Directory>,
}

impl Receiver {
    /// Judges one event as §6 says; a refusal changes nothing.
    fn receive(&mut self, event: VerifiedEvent) -> Result<(), IngestError> {
        let scope = event.scope_id();
        match (event.header().scope, &event.header().kind) {
            (Scope::NewThread, _) => {
                let thread = Thread::open(event, &self.certificates, NOW)?;
                self.threads.insert(scope, thread);
                Ok(())
            }
            (Scope::Directory(_), EventKind::Directory(DirectoryKind::Genesis))
                if !self.directories.contains_key(&scope) =>
            {
                self.directories.insert(scope, Directory::new(event)?);
                Ok(())
            }
            (Scope::Thread(_), _) => {
                let thread = self.threads.get_mut(&scope).expect("the thread is open");
                let before = thread.state().clone();
                let outcome = thread.insert(event, &self.certificates, NOW).map(drop);
                if outcome.is_err() {
                    assert_eq!(thread.state(), &before, "a refusal changes nothing");
                }
                outcome
            }
            (Scope::Directory(_), _) => {
                let directory = self
                    .directories
                    .get_mut(&scope)
                    .expect("the directory has its genesis");
                let before = directory.state().clone();
                let outcome = directory.insert(event, NOW).map(drop);
                if outcome.is_err() {
                    assert_eq!(directory.state(), &before, "a refusal changes nothing");
                }
                outcome
            }
        }
    }
}

/// The keys this file adds to the [`World`].
struct Extra {
    /// A node of org A, revoked from `NOW + 5` ms.
    node_revoked: SecretKey,
    /// A node of org A whose certificate ended a millisecond before `NOW`.
    node_expired: SecretKey,
    /// Org B's web chat bridge.
    bridge_b: SecretKey,
    /// A key nobody certified.
    stranger: SecretKey,
    /// A node of org A whose certificate ended a millisecond before `NOW` and that is also
    /// revoked from `NOW - 10` ms: both rules fail for its events.
    node_revoked_expired: SecretKey,
    certificates: Vec<Certificate>,
    revocations: Vec<(PublicKey, Timestamp)>,
}

const REVOKED_FROM: Timestamp = NOW.saturating_add_millis(5);

fn extra(world: &World) -> Extra {
    let node_revoked = key(31);
    let node_expired = key(32);
    let bridge_b = key(33);
    let node_revoked_expired = key(35);
    let until = NOW.saturating_add_millis(ONE_YEAR_MILLIS);
    let certificates = vec![
        cert(
            &world.org_a,
            &node_revoked,
            CertRole::Node,
            Timestamp::EPOCH,
            until,
        ),
        cert(
            &world.org_a,
            &node_expired,
            CertRole::Node,
            Timestamp::EPOCH,
            Timestamp::from_millis(NOW.as_millis() - 1),
        ),
        cert(
            &world.org_a,
            &node_revoked_expired,
            CertRole::Node,
            Timestamp::EPOCH,
            Timestamp::from_millis(NOW.as_millis() - 1),
        ),
        cert(
            &world.org_b,
            &bridge_b,
            CertRole::Bridge {
                channel: ChannelKind::Webchat,
                handle_scope: None,
            },
            Timestamp::EPOCH,
            until,
        ),
    ];
    Extra {
        revocations: vec![
            (node_revoked.public(), REVOKED_FROM),
            (
                node_revoked_expired.public(),
                Timestamp::from_millis(NOW.as_millis() - 10),
            ),
        ],
        node_revoked_expired,
        node_revoked,
        node_expired,
        bridge_b,
        stranger: key(34),
        certificates,
    }
}

/// One step: what is sent and the verdict (`None`: accepted).
struct Step {
    name: &'static str,
    event: VerifiedEvent,
    refused_by: Option<&'static str>,
}

/// How an event is made: its log, author, parents, time, kind, agent field and content.
struct Make<'a> {
    scope: Scope,
    key: &'a SecretKey,
    parents: Vec<EventId>,
    depth: Option<u64>,
    time: Option<Timestamp>,
    kind: EventKind,
    agent: Option<AgentId>,
    content: Option<Content>,
}

impl<'a> Make<'a> {
    fn new(scope: Scope, key: &'a SecretKey, parents: Vec<EventId>, kind: EventKind) -> Self {
        Make {
            scope,
            key,
            parents,
            depth: None,
            time: None,
            kind,
            agent: None,
            content: None,
        }
    }
    fn agent(mut self, agent: AgentId) -> Self {
        self.agent = Some(agent);
        self
    }
    fn content(mut self, content: Content) -> Self {
        self.content = Some(content);
        self
    }
    fn at(mut self, time: Timestamp) -> Self {
        self.time = Some(time);
        self
    }
    fn depth(mut self, depth: u64) -> Self {
        self.depth = Some(depth);
        self
    }
    /// Signs it; depth (unless set) is one more than the deepest parent's in `depths`, and the
    /// time (unless set) `NOW` plus the depth in milliseconds.
    fn sign(self, depths: &BTreeMap<EventId, u64>) -> VerifiedEvent {
        let depth = self.depth.unwrap_or_else(|| {
            self.parents
                .iter()
                .map(|p| depths.get(p).copied().unwrap_or(0))
                .max()
                .map_or(0, |d| d + 1)
        });
        let mut draft = Draft::new(
            self.scope,
            self.parents,
            depth,
            self.time.unwrap_or(NOW.saturating_add_millis(depth)),
            self.kind,
        );
        if let Some(agent) = self.agent {
            draft = draft.with_agent(agent);
        }
        if let Some(content) = self.content {
            draft = draft.with_content(content);
        }
        sign(self.key, draft)
    }
}

/// The scenario as it is built: each step is judged by the reference when it is added.
struct Scenario {
    receiver: Receiver,
    depths: BTreeMap<EventId, u64>,
    steps: Vec<Step>,
}

impl Scenario {
    fn sign(&self, make: Make) -> VerifiedEvent {
        make.sign(&self.depths)
    }

    fn send(
        &mut self,
        name: &'static str,
        make: Make,
        refused_by: Option<&'static str>,
    ) -> EventId {
        let event = self.sign(make);
        self.send_signed(name, event, refused_by)
    }

    fn send_signed(
        &mut self,
        name: &'static str,
        event: VerifiedEvent,
        refused_by: Option<&'static str>,
    ) -> EventId {
        let (id, depth) = (event.id(), event.header().depth);
        let outcome = self.receiver.receive(event.clone());
        match (&outcome, refused_by) {
            (Ok(()), None) => {
                self.depths.insert(id, depth);
            }
            (Err(err), Some(rule)) => assert_eq!(rule_name(err), rule, "{name}"),
            _ => panic!("{name}: expected {refused_by:?}, got {outcome:?}"),
        }
        self.steps.push(Step {
            name,
            event,
            refused_by,
        });
        id
    }
}

/// The certificates and revocations the receiver knows for threads: the world's, then this
/// file's, in that order (the order §6 rule 2 reads them in).
fn receiver_certificates(world: &World, extra: &Extra) -> Certificates {
    let mut certificates = world.certificates.clone();
    for certificate in &extra.certificates {
        certificates
            .insert(certificate.clone())
            .expect("certificate verifies");
    }
    for (subject, from) in &extra.revocations {
        certificates.revoke(*subject, *from);
    }
    certificates
}

fn note() -> EventKind {
    EventKind::Thread(ThreadKind::Note)
}

fn inbound(channel: ChannelKind) -> EventKind {
    EventKind::Thread(ThreadKind::Message {
        direction: Direction::Inbound { channel },
    })
}

fn outbound() -> EventKind {
    EventKind::Thread(ThreadKind::Message {
        direction: Direction::Outbound,
    })
}

fn text_from(text: &str, from: &str) -> Content {
    Content::text(text).with_handle(handle(from))
}

/// The scenario: a thread's steps, then a directory's.
fn steps(world: &World, extra: &Extra) -> Vec<Step> {
    let mut s = Scenario {
        receiver: Receiver {
            certificates: receiver_certificates(world, extra),
            threads: BTreeMap::new(),
            directories: BTreeMap::new(),
        },
        depths: BTreeMap::new(),
        steps: Vec::new(),
    };
    thread_steps(&mut s, world, extra);
    directory_steps(&mut s, world, extra);
    s.steps
}

fn thread_steps(s: &mut Scenario, world: &World, extra: &Extra) {
    let (org_a, org_b) = (world.org_a_id(), world.org_b_id());
    let opened = |org: OrgId| {
        EventKind::Thread(ThreadKind::Opened {
            org,
            contact: world.contact,
            channel: ChannelKind::Email,
        })
    };
    let alice = || Content::default().with_handle(handle("email:alice@example.com"));

    // Roots.
    s.send(
        "an agent key opens a thread",
        Make::new(Scope::NewThread, &world.agent_key, vec![], opened(org_a))
            .agent(world.agent)
            .content(alice()),
        Some("KindNotAllowed"),
    );
    s.send(
        "node B opens a thread naming org A",
        Make::new(Scope::NewThread, &world.node_b, vec![], opened(org_a)).content(alice()),
        Some("WrongOrg"),
    );
    let root = s.send(
        "node A opens a thread on email for email:alice@example.com",
        Make::new(Scope::NewThread, &world.node_a, vec![], opened(org_a)).content(alice()),
        None,
    );
    let t = Scope::Thread(ThreadId::from_root(root));
    let mut head = root;

    // Rule 1: the clock.
    s.send(
        "a note 5 minutes and 1 ms ahead of the receiver's clock",
        Make::new(t, &world.node_a, vec![head], note())
            .content(Content::text("a note"))
            .at(NOW.saturating_add_millis(300_001)),
        Some("FromTheFuture"),
    );
    head = s.send(
        "a note exactly 5 minutes ahead",
        Make::new(t, &world.node_a, vec![head], note())
            .content(Content::text("a note"))
            .at(NOW.saturating_add_millis(300_000)),
        None,
    );

    // Rule 2: the author.
    s.send(
        "a note by a key nobody certified",
        Make::new(t, &extra.stranger, vec![head], note()).content(Content::text("a note")),
        Some("UnknownAuthor"),
    );
    s.send(
        "a note by a node whose certificate ended before the note's time",
        Make::new(t, &extra.node_expired, vec![head], note()).content(Content::text("a note")),
        Some("CertificateNotValid"),
    );
    head = s.send(
        "a note by the same node dated inside its certificate's window (the last ms)",
        Make::new(t, &extra.node_expired, vec![head], note())
            .content(Content::text("a note"))
            .at(Timestamp::from_millis(NOW.as_millis() - 1)),
        None,
    );
    s.send(
        "a note by a node revoked from NOW+5, dated NOW+5",
        Make::new(t, &extra.node_revoked, vec![head], note())
            .content(Content::text("a note"))
            .at(REVOKED_FROM),
        Some("Revoked"),
    );
    head = s.send(
        "a note by the revoked node dated NOW+4, before its revocation",
        Make::new(t, &extra.node_revoked, vec![head], note())
            .content(Content::text("a note"))
            .at(NOW.saturating_add_millis(4)),
        None,
    );

    // Rule 3: roles, the agent field, the handle scope.
    s.send(
        "the email bridge writes a note",
        Make::new(t, &world.bridge_email, vec![head], note()).content(Content::text("a note")),
        Some("KindNotAllowed"),
    );
    s.send(
        "the email bridge's inbound message with an agent field",
        Make::new(
            t,
            &world.bridge_email,
            vec![head],
            inbound(ChannelKind::Email),
        )
        .agent(world.agent)
        .content(text_from("hi", "email:alice@example.com")),
        Some("AgentMismatch"),
    );
    s.send(
        "a node writes an inbound message",
        Make::new(t, &world.node_a, vec![head], inbound(ChannelKind::Email))
            .content(text_from("hi", "email:alice@example.com")),
        Some("KindNotAllowed"),
    );
    s.send(
        "the agent key replies naming another agent",
        Make::new(t, &world.agent_key, vec![head], outbound())
            .agent(AgentId::from_bytes([0xb7; 16]))
            .content(Content::text("hello")),
        Some("AgentMismatch"),
    );
    s.send(
        "the agent key replies with no agent field",
        Make::new(t, &world.agent_key, vec![head], outbound()).content(Content::text("hello")),
        Some("AgentMismatch"),
    );
    head = s.send(
        "the agent key replies naming its own agent",
        Make::new(t, &world.agent_key, vec![head], outbound())
            .agent(world.agent)
            .content(Content::text("hello")),
        None,
    );
    s.send(
        "the SMS bridge scoped to sms:+15550000001 introduces a message from another number",
        Make::new(
            t,
            &world.bridge_sms_scoped,
            vec![head],
            inbound(ChannelKind::Sms),
        )
        .content(text_from("hi", "sms:+15550000002")),
        Some("HandleOutOfScope"),
    );
    let mut without_content = s.sign(
        Make::new(
            t,
            &world.bridge_sms_scoped,
            vec![head],
            inbound(ChannelKind::Sms),
        )
        .content(text_from("hi", "sms:+15550000002")),
    );
    without_content.erase_content();
    s.send_signed(
        "the same message sent without its content: no scope check, and sms is not admitted",
        without_content,
        Some("ChannelNotAdmitted"),
    );
    s.send(
        "the email bridge's message with the wrong depth",
        Make::new(
            t,
            &world.bridge_email,
            vec![head],
            inbound(ChannelKind::Email),
        )
        .depth(99)
        .content(text_from("hi", "email:alice@example.com")),
        Some("BadDepth"),
    );
    s.send(
        "a note naming a parent the receiver does not hold",
        Make::new(
            t,
            &world.node_a,
            vec![EventId::from_bytes([0x5a; 32])],
            note(),
        )
        .content(Content::text("a note"))
        .depth(1),
        Some("MissingParents"),
    );
    head = s.send(
        "the email bridge introduces alice's message",
        Make::new(
            t,
            &world.bridge_email,
            vec![head],
            inbound(ChannelKind::Email),
        )
        .content(text_from("hi", "email:alice@example.com")),
        None,
    );

    // Rule 4: membership and the owner's kinds, by the causal past.
    s.send(
        "node B writes a note in a thread not shared with org B",
        Make::new(t, &world.node_b, vec![head], note()).content(Content::text("a note")),
        Some("NotAMember"),
    );
    s.send(
        "node B shares the thread with its own org",
        Make::new(
            t,
            &world.node_b,
            vec![head],
            EventKind::Thread(ThreadKind::MemberAdd { org: org_b }),
        ),
        Some("NotAMember"),
    );
    let before_share = head;
    head = s.send(
        "node A shares the thread with org B",
        Make::new(
            t,
            &world.node_a,
            vec![head],
            EventKind::Thread(ThreadKind::MemberAdd { org: org_b }),
        ),
        None,
    );
    s.send(
        "node B writes a note whose parents are before the share",
        Make::new(t, &world.node_b, vec![before_share], note()).content(Content::text("a note")),
        Some("NotAMember"),
    );
    head = s.send(
        "node B writes a note after the share",
        Make::new(t, &world.node_b, vec![head], note()).content(Content::text("a note")),
        None,
    );
    s.send(
        "node B erases the customer's message",
        Make::new(
            t,
            &world.node_b,
            vec![head],
            EventKind::Thread(ThreadKind::Erase {
                targets: vec![before_share],
            }),
        ),
        Some("NotOwner"),
    );
    s.send(
        "node B stops the sharing",
        Make::new(
            t,
            &world.node_b,
            vec![head],
            EventKind::Thread(ThreadKind::MemberRemove { org: org_b }),
        ),
        Some("NotOwner"),
    );
    s.send(
        "node A removes its own org",
        Make::new(
            t,
            &world.node_a,
            vec![head],
            EventKind::Thread(ThreadKind::MemberRemove { org: org_a }),
        ),
        Some("CannotRemoveOwner"),
    );
    s.send(
        "org B's web chat bridge writes in the thread shared with org B",
        Make::new(
            t,
            &extra.bridge_b,
            vec![head],
            inbound(ChannelKind::Webchat),
        )
        .content(text_from("hi", "webchat:visitor-9")),
        Some("NotOwner"),
    );
    let shared = head;
    head = s.send(
        "node A stops sharing the thread with org B",
        Make::new(
            t,
            &world.node_a,
            vec![head],
            EventKind::Thread(ThreadKind::MemberRemove { org: org_b }),
        ),
        None,
    );
    s.send(
        "node B writes a note after the removal",
        Make::new(t, &world.node_b, vec![head], note()).content(Content::text("a note")),
        Some("NotAMember"),
    );
    s.send(
        "node B writes a note concurrent with the removal (its parents are before it)",
        Make::new(t, &world.node_b, vec![shared], note()).content(Content::text("a note")),
        None,
    );

    // Two checks fail at once: the first in §6's table names the refusal.
    s.send(
        "two fail: a node revoked and out of its certificate's window (Revoked first)",
        Make::new(t, &extra.node_revoked_expired, vec![head], note())
            .content(Content::text("a note")),
        Some("Revoked"),
    );
    s.send(
        "two fail: the email bridge writes a note with an agent field (AgentMismatch first)",
        Make::new(t, &world.bridge_email, vec![head], note())
            .agent(world.agent)
            .content(Content::text("a note")),
        Some("AgentMismatch"),
    );
    s.send(
        "two fail: the scoped SMS bridge writes an email message for another handle (the scope first)",
        Make::new(
            t,
            &world.bridge_sms_scoped,
            vec![head],
            inbound(ChannelKind::Email),
        )
        .content(text_from("hi", "email:alice@example.com")),
        Some("HandleOutOfScope"),
    );
    s.send(
        "the scoped SMS bridge's automatic reply for another number",
        Make::new(
            t,
            &world.bridge_sms_scoped,
            vec![head],
            EventKind::Thread(ThreadKind::AutoReply {
                channel: ChannelKind::Sms,
            }),
        )
        .content(text_from("away", "sms:+15550000002")),
        Some("HandleOutOfScope"),
    );
    s.send(
        "two fail: org B's bridge writes after the thread stopped being shared (NotAMember first)",
        Make::new(
            t,
            &extra.bridge_b,
            vec![head],
            inbound(ChannelKind::Webchat),
        )
        .content(text_from("hi", "webchat:visitor-9")),
        Some("NotAMember"),
    );
    s.send(
        "two fail: node B, still a member, removes the owner (NotOwner first)",
        Make::new(
            t,
            &world.node_b,
            vec![shared],
            EventKind::Thread(ThreadKind::MemberRemove { org: org_a }),
        ),
        Some("NotOwner"),
    );
}

fn directory_steps(s: &mut Scenario, world: &World, extra: &Extra) {
    let org_a = world.org_a_id();
    let d = Scope::Directory(org_a);
    let certify = |certificate: &Certificate| {
        EventKind::Directory(DirectoryKind::Certify {
            certificate: Box::new(certificate.clone()),
        })
    };
    let published = |subject: &SecretKey| {
        world
            .published
            .iter()
            .find(|c| c.body.subject == subject.public())
            .expect("the world certifies it")
            .clone()
    };
    let create = |n: u8| {
        EventKind::Directory(DirectoryKind::CreateContact {
            contact: ContactId::from_bytes([n; 16]),
        })
    };
    let genesis = directory::genesis(&world.org_a)
        .expect("genesis signs")
        .verify()
        .expect("genesis verifies");
    let mut head = s.send_signed("org A's directory genesis", genesis, None);
    s.send(
        "node A creates a contact before its certificate is in the directory",
        Make::new(d, &world.node_a, vec![head], create(1)),
        Some("UnknownAuthor"),
    );
    head = s.send(
        "the org key publishes node A's certificate",
        Make::new(
            d,
            &world.org_a,
            vec![head],
            certify(&published(&world.node_a)),
        ),
        None,
    );
    head = s.send(
        "node A creates a contact",
        Make::new(d, &world.node_a, vec![head], create(1)),
        None,
    );
    s.send(
        "node A revokes node A2",
        Make::new(
            d,
            &world.node_a,
            vec![head],
            EventKind::Directory(DirectoryKind::Revoke {
                subject: world.node_a2.public(),
                effective_from: NOW,
            }),
        ),
        Some("KindNotAllowed"),
    );
    s.send(
        "the email bridge publishes its own certificate",
        Make::new(
            d,
            &world.bridge_email,
            vec![head],
            certify(&published(&world.bridge_email)),
        ),
        Some("KindNotAllowed"),
    );
    s.send(
        "the agent publishes its own certificate with no agent field",
        Make::new(
            d,
            &world.agent_key,
            vec![head],
            certify(&published(&world.agent_key)),
        ),
        Some("AgentMismatch"),
    );
    head = s.send(
        "the agent publishes its own certificate",
        Make::new(
            d,
            &world.agent_key,
            vec![head],
            certify(&published(&world.agent_key)),
        )
        .agent(world.agent),
        None,
    );
    let attribute = EventKind::Directory(DirectoryKind::SetAttribute {
        contact: ContactId::from_bytes([1; 16]),
        key: AttributeKey::new("plan").expect("a valid key"),
    });
    s.send(
        "the agent sets an attribute naming another agent",
        Make::new(d, &world.agent_key, vec![head], attribute.clone())
            .agent(AgentId::from_bytes([0xb7; 16]))
            .content(Content::text("gold")),
        Some("AgentMismatch"),
    );
    head = s.send(
        "the agent sets an attribute",
        Make::new(d, &world.agent_key, vec![head], attribute)
            .agent(world.agent)
            .content(Content::text("gold")),
        None,
    );
    s.send(
        "org B's key writes in org A's directory",
        Make::new(d, &world.org_b, vec![head], create(2)),
        Some("UnknownAuthor"),
    );
    let mut forged = published(&world.node_a2);
    forged.body.not_after = NOW.saturating_add_millis(10 * ONE_YEAR_MILLIS);
    s.send(
        "the org key publishes a certificate whose signature does not match its body",
        Make::new(d, &world.org_a, vec![head], certify(&forged)),
        Some("BadCertificate"),
    );
    s.send(
        "two fail: the forged certificate, dated 5 minutes and 1 ms ahead (BadCertificate first)",
        Make::new(d, &world.org_a, vec![head], certify(&forged))
            .at(NOW.saturating_add_millis(300_001)),
        Some("BadCertificate"),
    );
    s.send(
        "two fail: the agent revokes a key naming another agent (KindNotAllowed first)",
        Make::new(
            d,
            &world.agent_key,
            vec![head],
            EventKind::Directory(DirectoryKind::Revoke {
                subject: world.node_a2.public(),
                effective_from: NOW,
            }),
        )
        .agent(AgentId::from_bytes([0xb7; 16])),
        Some("KindNotAllowed"),
    );
    let expired = extra
        .certificates
        .iter()
        .find(|c| c.body.subject == extra.node_expired.public())
        .expect("the expired node's certificate")
        .clone();
    head = s.send(
        "a node publishes its own certificate, ended before the event's time (a certificate proves itself: no window check)",
        Make::new(d, &extra.node_expired, vec![head], certify(&expired)),
        None,
    );
    s.send(
        "the org key writes 5 minutes and 1 ms ahead",
        Make::new(d, &world.org_a, vec![head], create(3)).at(NOW.saturating_add_millis(300_001)),
        Some("FromTheFuture"),
    );
    let revoke_from = NOW.saturating_add_millis(10);
    head = s.send(
        "the org key revokes node A from NOW+10",
        Make::new(
            d,
            &world.org_a,
            vec![head],
            EventKind::Directory(DirectoryKind::Revoke {
                subject: world.node_a.public(),
                effective_from: revoke_from,
            }),
        ),
        None,
    );
    s.send(
        "node A creates a contact dated NOW+10",
        Make::new(d, &world.node_a, vec![head], create(4)).at(revoke_from),
        Some("Revoked"),
    );
    s.send(
        "node A creates a contact dated NOW+9, before its revocation",
        Make::new(d, &world.node_a, vec![head], create(4)).at(NOW.saturating_add_millis(9)),
        None,
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn render(world: &World) -> String {
    let extra = extra(world);
    let mut out = String::new();
    out.push_str(
        "# Threadline protocol v1 auth-rule vectors: every refusal of §6's table but rule 5's\n\
         # (auth.txt). Generated by protocol/tests/it/auth_rule_vectors.rs; do not edit.\n\
         # For thread events the receiver knows every `certificate` (encode(Certificate)), in this\n\
         # order, and every `revoked` key (public key, effective_from in ms); its clock reads `now`.\n\
         # A directory's events are judged by the certificates published in that directory only.\n\
         # It receives the events in order (`event` is encode(Event)); each goes to the log its\n\
         # scope names (`NewThread`: a new thread; a directory: its `Genesis` first). `verdict` is\n\
         # `accept`, or `refuse <variant>` (§6's table), and a refused event changes nothing.\n\n",
    );
    let certificates = world.published.iter().chain(&extra.certificates);
    for certificate in certificates {
        writeln!(
            out,
            "certificate: {}",
            hex(&codec::encode(certificate).expect("encodes"))
        )
        .expect("write to string");
    }
    for (subject, from) in &extra.revocations {
        writeln!(
            out,
            "revoked: {} {}",
            hex(subject.as_bytes()),
            from.as_millis()
        )
        .expect("write to string");
    }
    writeln!(out, "now: {}", NOW.as_millis()).expect("write to string");
    for step in steps(world, &extra) {
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
fn auth_rule_vectors_are_unchanged() {
    crate::fixtures::check_golden(VECTORS_PATH, &render(&World::new()));
}

/// What a second implementation does with the file: read the receiver's knowledge, decode,
/// verify, route each event to its log, compare the verdicts.
#[test]
fn the_stored_rule_vectors_replay_to_their_verdicts() {
    let stored = std::fs::read_to_string(VECTORS_PATH)
        .expect("protocol/tests/vectors/auth_rules.txt exists");
    let mut receiver = Receiver {
        certificates: Certificates::new(),
        threads: BTreeMap::new(),
        directories: BTreeMap::new(),
    };
    let mut pending: Option<Event> = None;
    let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
    for line in stored.lines() {
        if let Some(text) = line.strip_prefix("certificate: ") {
            let bytes = ::hex::decode(text).expect("hex");
            receiver
                .certificates
                .insert(codec::decode(&bytes, bytes.len()).expect("a certificate"))
                .expect("verifies");
        } else if let Some(text) = line.strip_prefix("revoked: ") {
            let (subject, from) = text.split_once(' ').expect("key and time");
            let subject: [u8; 32] = ::hex::decode(subject)
                .expect("hex")
                .try_into()
                .expect("32 bytes");
            receiver.certificates.revoke(
                PublicKey::from_bytes(&subject).expect("a key"),
                Timestamp::from_millis(from.parse().expect("ms")),
            );
        } else if let Some(text) = line.strip_prefix("event: ") {
            pending = Some(Event::from_bytes(&::hex::decode(text).expect("hex")).expect("decodes"));
        } else if let Some(verdict) = line.strip_prefix("verdict: ") {
            let event = pending
                .take()
                .expect("an event before its verdict")
                .verify()
                .expect("verifies");
            let got = match receiver.receive(event) {
                Ok(()) => "accept".to_owned(),
                Err(err) => format!("refuse {}", rule_name(&err)),
            };
            assert_eq!(got, verdict);
            *verdicts.entry(verdict).or_default() += 1;
        }
    }
    let refusals: Vec<&str> = verdicts
        .keys()
        .filter_map(|v| v.strip_prefix("refuse "))
        .collect();
    assert_eq!(
        refusals,
        [
            "AgentMismatch",
            "BadCertificate",
            "BadDepth",
            "CannotRemoveOwner",
            "CertificateNotValid",
            "ChannelNotAdmitted",
            "FromTheFuture",
            "HandleOutOfScope",
            "KindNotAllowed",
            "MissingParents",
            "NotAMember",
            "NotOwner",
            "Revoked",
            "UnknownAuthor",
            "WrongOrg",
        ],
        "every rule the file is for has a vector"
    );
    assert_eq!(
        verdicts.values().sum::<usize>(),
        58,
        "every step was replayed"
    );
    assert_eq!(receiver.threads.len(), 1);
    assert_eq!(receiver.directories.len(), 1);
}
