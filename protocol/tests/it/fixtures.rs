//! A small world of orgs, nodes, bridges and agents with fixed keys, and helpers to make events.

use threadline_protocol::{
    cert::{CertRole, Certificate, CertificateBody},
    channel::{ChannelKind, Handle},
    directory::{self, Directory},
    event::{Content, DirectoryKind, Draft, Event, EventKind, Scope, ThreadKind},
    AgentId, Certificates, ContactId, Dag, OrgId, SecretKey, Thread, Timestamp, VerifiedEvent,
};

/// "Now" in every test: 2026-01-01T00:00:00Z.
pub const NOW: Timestamp = Timestamp::from_millis(1_767_225_600_000);
/// Certificates in the world are valid for this long after [`NOW`].
pub const ONE_YEAR_MILLIS: u64 = 365 * 24 * 3600 * 1000;

pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

pub fn org_id(key: &SecretKey) -> OrgId {
    OrgId(key.public())
}

pub fn handle(text: &str) -> Handle {
    text.parse().expect("test handle is valid")
}

/// Fixed keys: org A (seed 1) with two nodes, an email bridge, a webchat bridge, a handle-scoped
/// SMS bridge, a WhatsApp bridge and an agent key; org B (seed 2) with one node.
#[derive(Debug)]
pub struct World {
    pub org_a: SecretKey,
    pub org_b: SecretKey,
    pub node_a: SecretKey,
    pub node_a2: SecretKey,
    pub node_b: SecretKey,
    pub bridge_email: SecretKey,
    pub bridge_webchat: SecretKey,
    pub bridge_sms_scoped: SecretKey,
    pub bridge_whatsapp: SecretKey,
    pub agent_key: SecretKey,
    pub agent: AgentId,
    pub contact: ContactId,
    pub certificates: Certificates,
    pub published: Vec<Certificate>,
}

impl World {
    pub fn new() -> Self {
        let org_a = key(1);
        let org_b = key(2);
        let agent = AgentId::from_bytes([0xa6; 16]);
        let mut world = World {
            node_a: key(11),
            node_a2: key(12),
            node_b: key(21),
            bridge_email: key(13),
            bridge_webchat: key(14),
            bridge_sms_scoped: key(15),
            bridge_whatsapp: key(17),
            agent_key: key(16),
            agent,
            contact: ContactId::from_bytes([0xc0; 16]),
            certificates: Certificates::new(),
            published: Vec::new(),
            org_a,
            org_b,
        };
        let a = world.org_a.clone();
        let b = world.org_b.clone();
        world.certify(&a, &world.node_a.clone(), CertRole::Node);
        world.certify(&a, &world.node_a2.clone(), CertRole::Node);
        world.certify(&b, &world.node_b.clone(), CertRole::Node);
        world.certify(
            &a,
            &world.bridge_email.clone(),
            CertRole::Bridge {
                channel: ChannelKind::Email,
                handle_scope: None,
            },
        );
        world.certify(
            &a,
            &world.bridge_webchat.clone(),
            CertRole::Bridge {
                channel: ChannelKind::Webchat,
                handle_scope: None,
            },
        );
        world.certify(
            &a,
            &world.bridge_sms_scoped.clone(),
            CertRole::Bridge {
                channel: ChannelKind::Sms,
                handle_scope: Some(handle("sms:+15550000001")),
            },
        );
        world.certify(
            &a,
            &world.bridge_whatsapp.clone(),
            CertRole::Bridge {
                channel: ChannelKind::Whatsapp,
                handle_scope: None,
            },
        );
        world.certify(&a, &world.agent_key.clone(), CertRole::Agent { agent });
        world
    }

    pub fn certify(&mut self, org: &SecretKey, subject: &SecretKey, role: CertRole) -> Certificate {
        let certificate = cert(
            org,
            subject,
            role,
            Timestamp::EPOCH,
            NOW.saturating_add_millis(ONE_YEAR_MILLIS),
        );
        self.certificates
            .insert(certificate.clone())
            .expect("fixture certificate verifies");
        self.published.push(certificate.clone());
        certificate
    }

    pub fn org_a_id(&self) -> OrgId {
        org_id(&self.org_a)
    }

    pub fn org_b_id(&self) -> OrgId {
        org_id(&self.org_b)
    }

    /// A thread of org A with [`World::contact`], opened by node A on the web chat.
    pub fn open_thread(&self) -> Thread {
        let root = sign(
            &self.node_a,
            Draft::new(
                Scope::NewThread,
                vec![],
                0,
                NOW,
                EventKind::Thread(ThreadKind::Opened {
                    org: self.org_a_id(),
                    contact: self.contact,
                    channel: ChannelKind::Webchat,
                }),
            ),
        );
        Thread::open(root, &self.certificates, NOW).expect("fixture thread opens")
    }

    /// An inbound web chat message from `webchat:visitor-1`.
    pub fn inbound(&self, thread: &Thread, text: &str) -> VerifiedEvent {
        next(
            thread.dag(),
            &self.bridge_webchat,
            EventKind::inbound_message(ChannelKind::Webchat),
            None,
            Some(Content::text(text).with_handle(handle("webchat:visitor-1"))),
        )
    }

    /// An agent's reply, signed by node A for the world's agent.
    pub fn reply(&self, thread: &Thread, text: &str) -> VerifiedEvent {
        next(
            thread.dag(),
            &self.node_a,
            EventKind::outbound_message(),
            Some(self.agent),
            Some(Content::text(text)),
        )
    }

    /// Org A's directory with every certificate of the world published in it.
    pub fn directory_a(&self) -> Directory {
        let genesis = directory::genesis(&self.org_a).expect("genesis signs");
        let mut directory =
            Directory::new(genesis.verify().expect("genesis verifies")).expect("genesis is a root");
        for certificate in self
            .published
            .iter()
            .filter(|c| c.body.org == self.org_a_id())
        {
            let event = next(
                directory.dag(),
                &self.org_a,
                EventKind::Directory(DirectoryKind::Certify {
                    certificate: Box::new(certificate.clone()),
                }),
                None,
                None,
            );
            directory.insert(event, NOW).expect("certificate publishes");
        }
        directory
    }
}

pub fn cert(
    org: &SecretKey,
    subject: &SecretKey,
    role: CertRole,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Certificate {
    Certificate::issue(
        org,
        CertificateBody::new(org_id(org), subject.public(), role, not_before, not_after),
    )
    .expect("certificate encodes")
}

pub fn sign(key: &SecretKey, draft: Draft) -> VerifiedEvent {
    sign_unverified(key, draft)
        .verify()
        .expect("fixture event verifies")
}

pub fn sign_unverified(key: &SecretKey, draft: Draft) -> Event {
    draft.sign(key).expect("fixture event encodes")
}

/// An event after everything in `dag`, at [`NOW`] plus its depth in milliseconds.
pub fn next(
    dag: &Dag,
    key: &SecretKey,
    kind: EventKind,
    agent: Option<AgentId>,
    content: Option<Content>,
) -> VerifiedEvent {
    sign(key, next_draft(dag, kind, agent, content))
}

pub fn next_draft(
    dag: &Dag,
    kind: EventKind,
    agent: Option<AgentId>,
    content: Option<Content>,
) -> Draft {
    let (parents, depth) = dag.next_parents();
    let scope = match dag.scope() {
        threadline_protocol::ScopeId::Directory(org) => Scope::Directory(org),
        threadline_protocol::ScopeId::Thread(thread) => Scope::Thread(thread),
    };
    let mut draft = Draft::new(
        scope,
        parents,
        depth,
        NOW.saturating_add_millis(depth),
        kind,
    );
    if let Some(agent) = agent {
        draft = draft.with_agent(agent);
    }
    if let Some(content) = content {
        draft = draft.with_content(content);
    }
    draft
}

/// Compares `rendered` with the golden file at `path` (writing it first when
/// `THREADLINE_UPDATE_VECTORS` is set), naming the first line that differs.
pub fn check_golden(path: &str, rendered: &str) {
    if std::env::var_os("THREADLINE_UPDATE_VECTORS").is_some() {
        std::fs::write(path, rendered).expect("write vectors");
    }
    let stored = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{path}: {err}"));
    if stored != rendered {
        let first_diff = stored
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .map(|line| line + 1);
        panic!(
            "{path} changed (first differing line: {first_diff:?}). If the protocol changed on purpose, run with THREADLINE_UPDATE_VECTORS=1 and review the diff."
        );
    }
}
