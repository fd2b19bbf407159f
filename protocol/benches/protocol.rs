//! Criterion benchmarks of the protocol's hot paths: signing, verification (single and
//! batched), encoding, and inserting events into a thread with its state fold.
//!
//! Run: `cargo bench -p threadline-protocol --bench protocol`. Figures: docs/BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use threadline_protocol::{
    cert::{CertRole, Certificate, CertificateBody},
    channel::ChannelKind,
    event::{self, Content, Draft, EventKind, Scope, ThreadKind},
    AgentId, Certificates, ContactId, Event, OrgId, SecretKey, Thread, Timestamp, VerifiedEvent,
};

const NOW: Timestamp = Timestamp::from_millis(1_767_225_600_000);

struct Setup {
    node: SecretKey,
    bridge: SecretKey,
    certificates: Certificates,
    org: OrgId,
}

fn setup() -> Setup {
    let org_key = SecretKey::from_seed([1; 32]);
    let org = OrgId(org_key.public());
    let node = SecretKey::from_seed([2; 32]);
    let bridge = SecretKey::from_seed([3; 32]);
    let mut certificates = Certificates::new();
    for (key, role) in [
        (&node, CertRole::Node),
        (
            &bridge,
            CertRole::Bridge {
                channel: ChannelKind::Webchat,
                handle_scope: None,
            },
        ),
    ] {
        let body = CertificateBody::new(org, key.public(), role, Timestamp::EPOCH, Timestamp::MAX);
        let certificate = Certificate::issue(&org_key, body).expect("encodes");
        certificates.insert(certificate).expect("verifies");
    }
    Setup {
        node,
        bridge,
        certificates,
        org,
    }
}

fn root(setup: &Setup) -> VerifiedEvent {
    Draft::new(
        Scope::NewThread,
        vec![],
        0,
        NOW,
        EventKind::Thread(ThreadKind::Opened {
            org: setup.org,
            contact: ContactId::from_bytes([9; 16]),
            channel: ChannelKind::Webchat,
        }),
    )
    .sign(&setup.node)
    .expect("encodes")
    .verify()
    .expect("verifies")
}

/// A linear conversation of `n` events after the root: alternating customer messages (signed by
/// the bridge) and agent replies (signed by the node).
fn conversation(setup: &Setup, n: usize) -> (VerifiedEvent, Vec<Event>) {
    let root = root(setup);
    let thread = match root.scope_id() {
        threadline_protocol::ScopeId::Thread(thread) => thread,
        threadline_protocol::ScopeId::Directory(_) => unreachable!("a thread root"),
    };
    let handle: threadline_protocol::Handle = "webchat:visitor-1".parse().expect("valid");
    let agent = AgentId::from_bytes([7; 16]);
    let mut parent = root.id();
    let mut events = Vec::with_capacity(n);
    for idx in 0..n {
        let depth = idx as u64 + 1;
        let time = NOW.saturating_add_millis(depth);
        let draft = if idx % 2 == 0 {
            Draft::new(
                Scope::Thread(thread),
                vec![parent],
                depth,
                time,
                EventKind::inbound_message(ChannelKind::Webchat),
            )
            .with_content(
                Content::text(format!("customer message {idx}")).with_handle(handle.clone()),
            )
        } else {
            Draft::new(
                Scope::Thread(thread),
                vec![parent],
                depth,
                time,
                EventKind::outbound_message(),
            )
            .with_agent(agent)
            .with_content(Content::text(format!("agent reply {idx}")))
        };
        let key = if idx % 2 == 0 {
            &setup.bridge
        } else {
            &setup.node
        };
        let event = draft.sign(key).expect("encodes");
        parent = event.id().expect("encodes");
        events.push(event);
    }
    (root, events)
}

fn signing(c: &mut Criterion) {
    let setup = setup();
    let (_, events) = conversation(&setup, 1024);
    let sample = events[1].clone();
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| {
        let draft = Draft::new(
            sample.signed.header.scope,
            sample.signed.header.parents.clone(),
            sample.signed.header.depth,
            NOW,
            EventKind::outbound_message(),
        )
        .with_content(Content::text("agent reply"));
        b.iter(|| draft.clone().sign(&setup.node).expect("encodes"))
    });
    group.bench_function("verify", |b| {
        b.iter_batched(
            || sample.clone(),
            |event| event.verify().expect("verifies"),
            BatchSize::SmallInput,
        )
    });
    let bytes = sample.to_bytes().expect("encodes");
    group.bench_function("encode", |b| b.iter(|| sample.to_bytes().expect("encodes")));
    group.bench_function("decode", |b| {
        b.iter(|| Event::from_bytes(&bytes).expect("decodes"))
    });
    group.finish();

    let mut group = c.benchmark_group("verify_batch");
    for size in [64usize, 1024] {
        group.throughput(Throughput::Elements(size as u64));
        let batch: Vec<Event> = events[..size].to_vec();
        group.bench_with_input(BenchmarkId::from_parameter(size), &batch, |b, batch| {
            b.iter_batched(
                || batch.clone(),
                |batch| {
                    let results = event::verify_batch(batch);
                    assert!(results.iter().all(Result::is_ok));
                    results
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn thread_insert(c: &mut Criterion) {
    let setup = setup();
    let mut group = c.benchmark_group("thread_insert_and_fold");
    group.sample_size(10);
    for size in [10_000usize, 100_000] {
        let (root, events) = conversation(&setup, size);
        let verified: Vec<VerifiedEvent> = event::verify_batch(events)
            .into_iter()
            .map(|r| r.expect("verifies"))
            .collect();
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(size),
            &verified,
            |b, verified| {
                b.iter_batched(
                    || (root.clone(), verified.clone()),
                    |(root, verified)| {
                        let mut thread =
                            Thread::open(root, &setup.certificates, NOW).expect("opens");
                        for event in verified {
                            thread
                                .insert(event, &setup.certificates, NOW)
                                .expect("inserts");
                        }
                        assert_eq!(thread.state().n_events, size as u64 + 1);
                        thread
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();

    let (root, events) = conversation(&setup, 100_000);
    let mut thread = Thread::open(root, &setup.certificates, NOW).expect("opens");
    for event in event::verify_batch(events) {
        thread
            .insert(event.expect("verifies"), &setup.certificates, NOW)
            .expect("inserts");
    }
    let mut group = c.benchmark_group("thread_fold_from_scratch");
    group.sample_size(10);
    group.throughput(Throughput::Elements(100_001));
    group.bench_function("100000", |b| b.iter(|| thread.fold_from_scratch()));
    group.finish();
}

criterion_group!(benches, signing, thread_insert);
criterion_main!(benches);
