//! Decodes arbitrary bytes as events and sync frames, and feeds whatever decodes to a thread
//! and a directory, under the auth rules. Nothing may panic; every accepted event must keep the
//! incremental state equal to a fold from scratch.
//!
//! Run: `cargo +nightly fuzz run decode_and_ingest` (from the repository root).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use threadline_protocol::{
    cert::{CertRole, Certificate, CertificateBody},
    channel::ChannelKind,
    directory::{self, Directory},
    event::{verify_batch, DirectoryKind, Draft, EventKind, Scope, ThreadKind},
    sync::SyncMessage,
    Certificates, ContactId, Event, OrgId, SecretKey, Thread, Timestamp,
};

const NOW: Timestamp = Timestamp::from_millis(1_767_225_600_000);

struct World {
    org: OrgId,
    signers: Vec<SecretKey>,
    certificates: Certificates,
    thread: Thread,
    directory: Directory,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let org_key = SecretKey::from_seed([1; 32]);
        let org = OrgId(org_key.public());
        let node = SecretKey::from_seed([11; 32]);
        let bridge = SecretKey::from_seed([13; 32]);
        let agent = SecretKey::from_seed([16; 32]);
        let mut certificates = Certificates::new();
        for (key, role) in [
            (&node, CertRole::Node),
            (&bridge, CertRole::Bridge { channel: ChannelKind::Webchat, handle_scope: None }),
            (&agent, CertRole::Agent { agent: threadline_protocol::AgentId::from_bytes([0xa6; 16]) }),
        ] {
            let body = CertificateBody::new(org, key.public(), role, Timestamp::EPOCH, Timestamp::MAX);
            certificates.insert(Certificate::issue(&org_key, body).expect("encodes")).expect("verifies");
        }
        let root = Draft::new(
            Scope::NewThread,
            vec![],
            0,
            NOW,
            EventKind::Thread(ThreadKind::Opened { org, contact: ContactId::from_bytes([0xc0; 16]), channel: ChannelKind::Webchat }),
        )
        .sign(&node)
        .expect("encodes")
        .verify()
        .expect("verifies");
        let thread = Thread::open(root, &certificates, NOW).expect("opens");
        let genesis = directory::genesis(&org_key).expect("encodes").verify().expect("verifies");
        let mut directory = Directory::new(genesis).expect("root");
        // Publish the node's certificate so that node-signed directory events pass.
        let (parents, depth) = directory.dag().next_parents();
        let certify = Draft::new(
            Scope::Directory(org),
            parents,
            depth,
            NOW,
            EventKind::Directory(DirectoryKind::Certify { certificate: certificates.of(&node.public())[0].clone() }),
        )
        .sign(&org_key)
        .expect("encodes")
        .verify()
        .expect("verifies");
        directory.insert(certify, NOW).expect("certificate publishes");
        World { org, signers: vec![node, bridge, agent, org_key], certificates, thread, directory }
    })
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let mut events: Vec<Event> = Vec::new();
    if let Ok(event) = Event::from_bytes(data) {
        events.push(event);
    }
    match SyncMessage::from_bytes(data) {
        Ok(SyncMessage::Push { event }) => events.push(event),
        Ok(SyncMessage::Events { events: batch, .. }) => events.extend(batch),
        _ => {}
    }
    if events.is_empty() {
        return;
    }
    let mut thread = world.thread.clone();
    let mut directory = world.directory.clone();
    // Decoded events as they are: they must pass verification to get further.
    for verified in verify_batch(events.clone()).into_iter().flatten() {
        let _ = thread.insert(verified.clone(), &world.certificates, NOW);
        let _ = directory.insert(verified, NOW);
    }
    // The same kinds and contents re-signed by certified keys onto the current heads, so that
    // arbitrary kinds reach the auth rules, the DAG and the folds.
    for (idx, event) in events.into_iter().enumerate() {
        let header = event.signed.header;
        let signer = &world.signers[(data.len() + idx) % world.signers.len()];
        let (scope, dag) = match header.kind {
            EventKind::Directory(_) => (Scope::Directory(world.org), directory.dag()),
            EventKind::Thread(_) => (Scope::Thread(thread.id()), thread.dag()),
        };
        let (parents, depth) = dag.next_parents();
        let mut draft = Draft::new(scope, parents, depth, header.author_time, header.kind);
        draft.agent = header.agent;
        draft.content = event.content;
        let Ok(resigned) = draft.sign(signer) else { continue };
        let Ok(verified) = resigned.verify() else { continue };
        let _ = thread.insert(verified.clone(), &world.certificates, NOW);
        let _ = directory.insert(verified, NOW);
    }
    assert_eq!(thread.state(), &thread.fold_from_scratch());
    assert_eq!(directory.state(), &directory.fold_from_scratch());
});
