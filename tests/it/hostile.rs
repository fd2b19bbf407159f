//! Hostile peers against a real node process: an in-process libp2p peer that speaks the sync
//! protocol (or garbage) and misbehaves. Each kind of misbehaviour is refused before storage,
//! the peer is penalised and disconnected, and an honest node of the org keeps syncing.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_util::StreamExt as _;
use libp2p::{request_response, swarm::SwarmEvent, Multiaddr, PeerId, StreamProtocol, Swarm};
use serde_json::Value;
use threadline_node::replication::{self, NodeBehaviour, NodeBehaviourEvent, SyncMessage};
use threadline_protocol::{
    cert::{CertRole, Certificate, CertificateBody},
    event::{Content, Draft, EventKind, Scope, ThreadKind},
    Event, EventId, OrgId, SecretKey, ThreadId, Timestamp,
};
use threadline_tests::{eventually, field, threadline_ok, Node, Visitor};

const SYNC: Duration = Duration::from_secs(30);

fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    Timestamp::from_millis(millis as u64)
}

/// A node certificate for `key` from `org_key`.
fn node_cert(org_key: &SecretKey, key: &SecretKey) -> Certificate {
    let body = CertificateBody::new(
        OrgId(org_key.public()),
        key.public(),
        CertRole::Node,
        now(),
        now().saturating_add_millis(3_600_000),
    );
    Certificate::issue(org_key, body).expect("certificate")
}

/// A peer run by the test: it says Hello with `certificate`, answers the node's requests with
/// nothing, and sends what the test tells it to.
struct Rogue {
    swarm: Swarm<NodeBehaviour>,
    node: PeerId,
    certificate: Certificate,
    /// Whether it answers the node's Hello with its certificate (not while joining).
    says_hello: bool,
}

impl Rogue {
    async fn connect(key: &SecretKey, certificate: Certificate, address: &str) -> Rogue {
        let mut rogue = Rogue::dial(key, certificate, address);
        rogue.hello().await;
        rogue
    }

    /// A member in good standing: it joins the org with a real invite first.
    async fn join(key: &SecretKey, invite: &str, address: &str) -> Rogue {
        let invite =
            threadline_node::replication::invite::Invite::from_text(invite).expect("invite");
        let placeholder = node_cert(key, key);
        let mut rogue = Rogue::dial(key, placeholder, address);
        rogue.says_hello = false;
        let joined = rogue
            .ask(SyncMessage::Join {
                secret: invite.secret,
                bridge_keys: Vec::new(),
            })
            .await
            .expect("an answer to Join");
        let SyncMessage::Joined { certificate, .. } = joined else {
            panic!("not joined: {joined:?}");
        };
        rogue.certificate = certificate;
        rogue.says_hello = true;
        rogue.hello().await;
        rogue
    }

    fn dial(key: &SecretKey, certificate: Certificate, address: &str) -> Rogue {
        let mut swarm = replication::swarm(key, false).expect("swarm");
        let address: Multiaddr = address.parse().expect("multiaddr");
        let node = threadline_node::identity::peer_of(&address).expect("peer id");
        swarm.add_peer_address(node, address);
        swarm.dial(node).expect("dial");
        Rogue {
            swarm,
            node,
            certificate,
            says_hello: true,
        }
    }

    async fn hello(&mut self) {
        let rogue = self;
        let hello = SyncMessage::Hello {
            certificate: rogue.certificate.clone(),
        };
        let answer = rogue.ask(hello).await.expect("an answer to Hello");
        assert!(matches!(answer, SyncMessage::Hello { .. }), "{answer:?}");
    }

    /// Sends one request and waits for its answer (`Err` when the connection fails or closes).
    async fn ask(&mut self, message: SyncMessage) -> Result<SyncMessage, String> {
        self.ask_all(vec![message])
            .await
            .pop()
            .unwrap_or_else(|| Err("no answer".to_owned()))
    }

    /// Sends every request at once and waits for all their answers, in the order sent.
    async fn ask_all(&mut self, messages: Vec<SyncMessage>) -> Vec<Result<SyncMessage, String>> {
        let ids: Vec<request_response::OutboundRequestId> = messages
            .into_iter()
            .map(|message| {
                self.swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&self.node, message.into())
            })
            .collect();
        let mut answers: std::collections::HashMap<_, Result<SyncMessage, String>> =
            std::collections::HashMap::new();
        let mut gone = false;
        let wait = tokio::time::timeout(SYNC, async {
            while answers.len() < ids.len() {
                match self.swarm.select_next_some().await {
                    SwarmEvent::Behaviour(NodeBehaviourEvent::Sync(event)) => match event {
                        request_response::Event::Message {
                            message:
                                request_response::Message::Response {
                                    request_id,
                                    response,
                                },
                            ..
                        } => {
                            answers.insert(request_id, Ok(response));
                        }
                        request_response::Event::Message {
                            message:
                                request_response::Message::Request {
                                    request: replication::Frame::Message(request),
                                    channel,
                                    ..
                                },
                            ..
                        } => self.answer(request, channel),
                        request_response::Event::OutboundFailure {
                            request_id, error, ..
                        } => {
                            answers.insert(request_id, Err(error.to_string()));
                        }
                        _ => {}
                    },
                    SwarmEvent::ConnectionClosed {
                        num_established: 0, ..
                    } => {
                        gone = true;
                        return;
                    }
                    _ => {}
                }
            }
        });
        let _ = wait.await;
        let unanswered = if gone { "disconnected" } else { "no answer" };
        ids.iter()
            .map(|id| {
                answers
                    .remove(id)
                    .unwrap_or_else(|| Err(unanswered.to_owned()))
            })
            .collect()
    }

    /// Answers one of the node's requests as an empty-handed peer would.
    fn answer(
        &mut self,
        request: SyncMessage,
        channel: request_response::ResponseChannel<SyncMessage>,
    ) {
        let answer = match request {
            SyncMessage::Hello { .. } if self.says_hello => SyncMessage::Hello {
                certificate: self.certificate.clone(),
            },
            SyncMessage::Hello { .. } => SyncMessage::Refused {
                reason: "joining".to_owned(),
            },
            SyncMessage::Want { scope, .. } => SyncMessage::Events {
                scope,
                events: Vec::new(),
                complete: true,
            },
            SyncMessage::Digest { .. } => SyncMessage::Digest {
                n_scopes: 0,
                digest: threadline_protocol::sync::summaries_digest([]),
            },
            SyncMessage::Buckets { .. } => SyncMessage::Buckets {
                digests: threadline_protocol::sync::bucket_digests(&[]),
            },
            SyncMessage::SummaryOf { .. } => SyncMessage::Summary { scopes: Vec::new() },
            _ => SyncMessage::Ack,
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, answer);
    }

    /// Serves the node's requests for a while.
    async fn serve_for(&mut self, duration: Duration) {
        let _ = tokio::time::timeout(duration, async {
            loop {
                if let SwarmEvent::Behaviour(NodeBehaviourEvent::Sync(
                    request_response::Event::Message {
                        message:
                            request_response::Message::Request {
                                request: replication::Frame::Message(request),
                                channel,
                                ..
                            },
                        ..
                    },
                )) = self.swarm.select_next_some().await
                {
                    self.answer(request, channel);
                }
            }
        })
        .await;
    }

    /// Whether the node closes the connection (or refuses it) within a few seconds, answering
    /// its requests meanwhile.
    async fn is_cut_off(&mut self) -> bool {
        let wait = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if !self.swarm.is_connected(&self.node) {
                    return true;
                }
                match self.swarm.select_next_some().await {
                    SwarmEvent::ConnectionClosed { .. } if !self.swarm.is_connected(&self.node) => {
                        return true;
                    }
                    SwarmEvent::Behaviour(NodeBehaviourEvent::Sync(
                        request_response::Event::Message {
                            message:
                                request_response::Message::Request {
                                    request: replication::Frame::Message(request),
                                    channel,
                                    ..
                                },
                            ..
                        },
                    )) => self.answer(request, channel),
                    _ => {}
                }
            }
        });
        wait.await.unwrap_or(false)
    }
}

/// A codec that writes whatever bytes it is given: garbage on the sync protocol.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut bytes = Vec::new();
        io.read_to_end(&mut bytes).await?;
        Ok(bytes)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut bytes = Vec::new();
        io.read_to_end(&mut bytes).await?;
        Ok(bytes)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&request).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&response).await?;
        io.close().await
    }
}

/// Sends raw bytes as sync requests from a fresh peer; true when the node cuts it off.
async fn send_garbage(address: &str, frames: &[Vec<u8>]) -> bool {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("transport")
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                RawCodec,
                [(
                    StreamProtocol::new(replication::SYNC_PROTOCOL),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default(),
            )
        })
        .expect("behaviour")
        .build();
    let address: Multiaddr = address.parse().expect("multiaddr");
    let node = threadline_node::identity::peer_of(&address).expect("peer id");
    swarm.add_peer_address(node, address);
    swarm.dial(node).expect("dial");
    for frame in frames {
        swarm.behaviour_mut().send_request(&node, frame.clone());
    }
    let wait = tokio::time::timeout(Duration::from_secs(20), async {
        let mut failures = 0;
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionClosed {
                    num_established: 0, ..
                } => return true,
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                    failures += 1;
                    if failures == frames.len() && !swarm.is_connected(&node) {
                        return true;
                    }
                }
                _ => {}
            }
        }
    });
    wait.await.unwrap_or(false)
}

fn thread_head(node: &Node, token: &str, thread: &str) -> (EventId, u64) {
    let (status, detail) = node.get(token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(status, 200, "{detail}");
    let last = detail["events"]
        .as_array()
        .expect("events")
        .last()
        .expect("an event")
        .clone();
    (
        last["id"].as_str().expect("id").parse().expect("event id"),
        last["depth"].as_u64().expect("depth"),
    )
}

fn thread_events(node: &Node, token: &str, thread: &str) -> Value {
    let (status, detail) = node.get(token, &format!("/api/v1/threads/{thread}"));
    assert_eq!(status, 200, "{detail}");
    detail["events"].clone()
}

fn lists(node: &Node, token: &str, peer: &PeerId) -> bool {
    node.replication(token)["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .any(|p| p["peer_id"] == peer.to_string().as_str())
}

#[test]
fn hostile_peers_are_refused_cut_off_and_honest_ones_keep_syncing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let office_data = dir.path().join("office");
    let office_token = field(&threadline_ok(&office_data, &["init"]), "token:");
    let office = Node::start(&office_data);
    let address = office.p2p_address(&office_token);
    let invite = threadline_ok(&office_data, &["org", "invite", "--address", &address]);
    let laptop_data = dir.path().join("laptop");
    let laptop_token = field(
        &threadline_ok(&laptop_data, &["init", "--join", invite.trim()]),
        "token:",
    );
    let laptop = Node::start(&laptop_data);

    let mut alice = Visitor::connect(&office, None);
    alice.say("a1", "Hello");
    let thread: String = eventually("the laptop has the thread", SYNC, || {
        let (_, list) = laptop.get(&laptop_token, "/api/v1/threads");
        list["threads"][0]["id"].as_str().map(str::to_owned)
    });
    let thread_id: ThreadId = thread.parse().expect("thread id");
    let before = thread_events(&office, &office_token, &thread);

    // The org key, as a compromised member node would have had its certificate made.
    let org_key = SecretKey::from_seed(
        hex::decode(
            std::fs::read_to_string(office_data.join("keys/org.key"))
                .expect("key")
                .trim(),
        )
        .expect("hex")
        .try_into()
        .expect("32 bytes"),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (head, depth) = thread_head(&office, &office_token, &thread);
        let member_event = |key: &SecretKey, kind: EventKind, text: &str| -> Event {
            Draft::new(Scope::Thread(thread_id), vec![head], depth + 1, now(), kind)
                .with_content(Content::text(text))
                .sign(key)
                .expect("signs")
        };

        // 1. A forged event: a member's note whose signature does not match.
        let key = SecretKey::generate(&mut rand_core::OsRng);
        let mut rogue = Rogue::connect(&key, node_cert(&org_key, &key), &address).await;
        let mut forged = member_event(&key, EventKind::Thread(ThreadKind::Note), "forged");
        forged.content = Some(Box::new(Content::text("changed after signing")));
        let answer = rogue
            .ask(SyncMessage::Push {
                events: vec![forged],
            })
            .await;
        assert!(
            matches!(answer, Err(_) | Ok(SyncMessage::Ack)),
            "{answer:?}"
        );
        assert!(rogue.is_cut_off().await, "a forger is disconnected");
        assert!(!lists(&office, &office_token, rogue.swarm.local_peer_id()));

        // 2. A re-signed event from a member in good standing: a customer's message claimed by
        //    a node key (only bridges may introduce those).
        let key = SecretKey::generate(&mut rand_core::OsRng);
        let invite = threadline_ok(&office_data, &["org", "invite", "--address", &address]);
        let mut rogue = Rogue::join(&key, invite.trim(), &address).await;
        for i in 0..2 {
            let resigned = Draft::new(
                Scope::Thread(thread_id),
                vec![head],
                depth + 1,
                now(),
                EventKind::inbound_message(threadline_protocol::ChannelKind::Webchat),
            )
            .with_content(
                Content::text(format!("re-signed {i}"))
                    .with_handle("webchat:someone".parse().expect("handle")),
            )
            .sign(&key)
            .expect("signs");
            let _ = rogue
                .ask(SyncMessage::Push {
                    events: vec![resigned],
                })
                .await;
        }
        assert!(
            rogue.is_cut_off().await,
            "a peer breaking the auth rules is disconnected"
        );

        // 3. Another org's node (not a partner) asks for the office's directory and a thread
        //    without a Hello, then says Hello: it gets nothing, and is cut off.
        let stranger_org = SecretKey::generate(&mut rand_core::OsRng);
        let key = SecretKey::generate(&mut rand_core::OsRng);
        let mut rogue = Rogue::dial(&key, node_cert(&stranger_org, &key), &address);
        rogue.says_hello = false;
        let office_org = OrgId(org_key.public());
        for scope in [
            threadline_protocol::ScopeId::Directory(office_org),
            threadline_protocol::ScopeId::Thread(thread_id),
        ] {
            let want = rogue
                .ask(SyncMessage::Want {
                    scope,
                    have: Vec::new(),
                    from_depth: 0,
                    max_events: 100,
                })
                .await
                .expect("an answer");
            assert!(
                matches!(&want, SyncMessage::Refused { .. }),
                "a stranger learns nothing: {want:?}"
            );
        }
        let hello = SyncMessage::Hello {
            certificate: rogue.certificate.clone(),
        };
        let answer = rogue.ask(hello).await;
        assert!(
            matches!(&answer, Ok(SyncMessage::Refused { .. }) | Err(_)),
            "{answer:?}"
        );
        assert!(rogue.is_cut_off().await, "a stranger is disconnected");

        // 4. Events with parents it never sends, from a member in good standing.
        let key = SecretKey::generate(&mut rand_core::OsRng);
        let invite = threadline_ok(&office_data, &["org", "invite", "--address", &address]);
        let mut rogue = Rogue::join(&key, invite.trim(), &address).await;
        for i in 0..5u8 {
            let orphan = Draft::new(
                Scope::Thread(thread_id),
                vec![EventId::from_bytes([i + 1; 32])],
                depth + 5,
                now(),
                EventKind::Thread(ThreadKind::Note),
            )
            .with_content(Content::text("orphan"))
            .sign(&key)
            .expect("signs");
            if rogue
                .ask(SyncMessage::Push {
                    events: vec![orphan],
                })
                .await
                .is_err()
            {
                break;
            }
            rogue.serve_for(Duration::from_millis(300)).await;
        }
        assert!(
            rogue.is_cut_off().await,
            "a peer sending orphans forever is disconnected"
        );

        // 5. Garbage and oversize frames, before any Hello.
        assert!(
            send_garbage(
                &address,
                &[
                    vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
                    vec![0, 0, 0, 3, 9, 9, 9]
                ]
            )
            .await,
            "a peer sending garbage frames is disconnected"
        );
    });

    // Nothing of it was stored (the only change is the members who joined, in the
    // directory), and the honest node still syncs.
    assert_eq!(thread_events(&office, &office_token, &thread), before);
    alice.say("a2", "Still there?");
    eventually("the laptop gets the new message", SYNC, || {
        let (_, detail) = laptop.get(&laptop_token, &format!("/api/v1/threads/{thread}"));
        detail["events"]
            .as_array()?
            .iter()
            .any(|e| e["text"] == "Still there?")
            .then_some(())
    });
    let peers = office.replication(&office_token)["peers"].clone();
    assert_eq!(peers.as_array().expect("peers").len(), 1, "{peers}");
    assert_eq!(peers[0]["penalty"], 0, "{peers}");
}

#[test]
fn a_partner_gets_the_attachments_of_the_threads_shared_with_it_and_no_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let office_data = dir.path().join("office");
    let office_token = field(&threadline_ok(&office_data, &["init"]), "token:");
    let partner_org = SecretKey::generate(&mut rand_core::OsRng);
    let partner_org_id = OrgId(partner_org.public());
    threadline_ok(
        &office_data,
        &["partner", "add", &partner_org_id.to_string()],
    );
    // A standalone email bridge, over the bridge API (HttpLink): customers' mails with files.
    let added = threadline_ok(&office_data, &["bridge", "add", "email"]);
    let bridge_key: [u8; 32] = hex::decode(field(&added, "bridge key:"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let bridge_token = field(&added, "token:");
    let office = Node::start(&office_data);
    let address = office.p2p_address(&office_token);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let bridge = threadline_bridges::sdk::Bridge::new(
        threadline_bridges::sdk::BridgeIdentity::new(
            SecretKey::from_seed(bridge_key),
            threadline_protocol::ChannelKind::Email,
        ),
        threadline_bridges::http_link::HttpLink::new(office.base.clone(), bridge_token),
        now,
    );
    let mail_with = |from: &str, id: &str, file: &[u8]| {
        let mut message = threadline_bridges::sdk::InboundMessage::new(
            format!("email:{from}").parse().expect("handle"),
            threadline_protocol::name::ExternalId::new(id).expect("id"),
            "My invoice",
        );
        message.attachments = vec![threadline_bridges::sdk::InboundAttachment {
            name: "invoice.pdf".to_owned(),
            media_type: "application/pdf".to_owned(),
            bytes: file.to_vec(),
        }];
        runtime.block_on(bridge.receive(&message)).expect("stored");
    };
    let alice_file = b"alice's invoice".to_vec();
    let bob_file = b"bob's invoice".to_vec();
    mail_with("alice@example.test", "<a1@example.test>", &alice_file);
    mail_with("bob@example.test", "<b1@example.test>", &bob_file);
    let alice_blob = threadline_protocol::id::BlobHash::of(&alice_file);
    let bob_blob = threadline_protocol::id::BlobHash::of(&bob_file);
    let (_, list) = office.get(&office_token, "/api/v1/threads");
    let alices = list["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .find(|t| t["route"]["handle"] == "email:alice@example.test")
        .and_then(|t| t["id"].as_str())
        .expect("Alice's thread")
        .to_owned();
    let (_, detail) = office.get(&office_token, &format!("/api/v1/threads/{alices}"));
    assert!(
        detail.to_string().contains(&alice_blob.to_string()),
        "the bridge's upload is on the message: {detail}"
    );

    runtime.block_on(async {
        let key = SecretKey::generate(&mut rand_core::OsRng);
        let mut partner = Rogue::connect(&key, node_cert(&partner_org, &key), &address).await;
        // Nothing is shared yet: no blob, not even whether it exists.
        for blob in [alice_blob, bob_blob] {
            let answer = partner
                .ask(SyncMessage::WantBlob { blob, offset: 0 })
                .await
                .expect("an answer");
            assert_eq!(answer, SyncMessage::NoBlob { blob });
        }

        // The office shares Alice's thread: its file, and nothing else.
        let (status, answer) = office.post(
            &office_token,
            &format!("/api/v1/threads/{alices}/members"),
            &serde_json::json!({ "org": partner_org_id.to_string() }),
        );
        assert_eq!(status, 200, "{answer}");
        let answer = partner
            .ask(SyncMessage::WantBlob {
                blob: alice_blob,
                offset: 0,
            })
            .await
            .expect("an answer");
        assert_eq!(
            answer,
            SyncMessage::Blob {
                blob: alice_blob,
                size: alice_file.len() as u64,
                offset: 0,
                bytes: threadline_protocol::codec::ByteBuf(alice_file.clone()),
            }
        );
        let answer = partner
            .ask(SyncMessage::WantBlob {
                blob: bob_blob,
                offset: 0,
            })
            .await
            .expect("an answer");
        assert_eq!(answer, SyncMessage::NoBlob { blob: bob_blob });
        // Asking is not an offence: the partner is still connected.
        assert!(!partner.is_cut_off().await);
    });
}

/// A member node that asks for much at once (90 `Want`s of a thread at one go) is served a few
/// at a time, with 64 more waiting their turn; the rest are refused as busy (it may ask again),
/// it stays connected, and an honest node of the org keeps getting new messages meanwhile.
#[test]
fn a_greedy_member_is_served_a_few_at_a_time_and_the_others_keep_syncing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let office_data = dir.path().join("office");
    let office_token = field(&threadline_ok(&office_data, &["init"]), "token:");
    let office = Node::start(&office_data);
    let address = office.p2p_address(&office_token);
    let invite =
        |data: &std::path::Path| threadline_ok(data, &["org", "invite", "--address", &address]);
    let laptop_data = dir.path().join("laptop");
    let laptop_invite = invite(&office_data);
    let laptop_token = field(
        &threadline_ok(&laptop_data, &["init", "--join", laptop_invite.trim()]),
        "token:",
    );
    let laptop = Node::start(&laptop_data);
    let mut alice = Visitor::connect(&office, None);
    alice.say("a1", "Hello");
    let thread: String = eventually("the laptop has the thread", SYNC, || {
        let (_, list) = laptop.get(&laptop_token, "/api/v1/threads");
        list["threads"][0]["id"].as_str().map(str::to_owned)
    });
    let thread_id: ThreadId = thread.parse().expect("thread id");
    // A log of some size, so that each answer takes a moment to read.
    for n in 0..200 {
        let (status, answer) = office.post(
            &office_token,
            &format!("/api/v1/threads/{thread}/notes"),
            &serde_json::json!({ "text": format!("note {n}: {}", "x".repeat(200)) }),
        );
        assert_eq!(status, 200, "{answer}");
    }
    let greedy_invite = invite(&office_data);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let key = SecretKey::generate(&mut rand_core::OsRng);
        let mut greedy = Rogue::join(&key, greedy_invite.trim(), &address).await;
        let want = SyncMessage::Want {
            scope: threadline_protocol::ScopeId::Thread(thread_id),
            have: Vec::new(),
            from_depth: 0,
            max_events: 4096,
        };
        let asking = greedy.ask_all(vec![want; 90]);
        // Meanwhile Alice writes again: the honest laptop gets it.
        let honest = tokio::task::spawn_blocking(move || {
            alice.say("a2", "Are you there?");
            alice
        });
        let answers = asking.await;
        let events = answers
            .iter()
            .filter(|a| matches!(a, Ok(SyncMessage::Events { events, .. }) if !events.is_empty()))
            .count();
        let busy = answers
            .iter()
            .filter(
                |a| matches!(a, Ok(SyncMessage::Refused { reason }) if reason.starts_with("busy")),
            )
            .count();
        // 4 served at once and 64 waiting: at least 68 answered; what came while the queue
        // was full refused as busy, nothing else.
        eprintln!("a greedy member's 90 Wants: {events} served, {busy} refused as busy");
        assert_eq!(events + busy, 90, "{answers:?}");
        assert!(events >= 68 && busy > 0, "served {events}, busy {busy}");
        assert!(!greedy.is_cut_off().await, "asking much is not an offence");
        let _alice = honest.await.expect("alice");
    });
    eventually("the laptop gets Alice's new message", SYNC, || {
        let events = thread_events(&laptop, &laptop_token, &thread);
        events
            .as_array()?
            .iter()
            .any(|e| e["text"] == "Are you there?")
            .then_some(())
    });
}

/// A member that sends an event without its content (not erased: it just left it out) does
/// not make the content lost for good: the event is kept, and the first copy with the content,
/// from any peer, fills it in (checked against the header's hash).
#[test]
fn content_a_peer_left_out_is_filled_in_by_the_next_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let office_data = dir.path().join("office");
    let office_token = field(&threadline_ok(&office_data, &["init"]), "token:");
    let office = Node::start(&office_data);
    let address = office.p2p_address(&office_token);
    let mut alice = Visitor::connect(&office, None);
    alice.say("a1", "Hello");
    let (_, list) = office.get(&office_token, "/api/v1/threads");
    let thread = list["threads"][0]["id"]
        .as_str()
        .expect("thread")
        .to_owned();
    let thread_id: ThreadId = thread.parse().expect("thread id");
    let invite = threadline_ok(&office_data, &["org", "invite", "--address", &address]);
    let note_text = |events: &Value, id: &str| -> Option<Option<String>> {
        events
            .as_array()?
            .iter()
            .find(|e| e["id"] == id)
            .map(|e| e["text"].as_str().map(str::to_owned))
    };

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let key = SecretKey::generate(&mut rand_core::OsRng);
        let mut member = Rogue::join(&key, invite.trim(), &address).await;
        let (head, depth) = thread_head(&office, &office_token, &thread);
        let note = Draft::new(
            Scope::Thread(thread_id),
            vec![head],
            depth + 1,
            now(),
            EventKind::Thread(ThreadKind::Note),
        )
        .with_content(Content::text("the customer's order number is 1077"))
        .sign(&key)
        .expect("signs");
        let id = note.id().expect("id").to_string();
        let mut stripped = note.clone();
        stripped.content = None;
        let answer = member
            .ask(SyncMessage::Push {
                events: vec![stripped],
            })
            .await
            .expect("an answer");
        assert!(matches!(answer, SyncMessage::Ack), "{answer:?}");
        let events = thread_events(&office, &office_token, &thread);
        assert_eq!(
            note_text(&events, &id),
            Some(None),
            "kept, without its text"
        );

        let answer = member
            .ask(SyncMessage::Push { events: vec![note] })
            .await
            .expect("an answer");
        assert!(matches!(answer, SyncMessage::Ack), "{answer:?}");
        let events = thread_events(&office, &office_token, &thread);
        assert_eq!(
            note_text(&events, &id),
            Some(Some("the customer's order number is 1077".to_owned())),
            "filled in by the copy with it"
        );
        assert!(
            !member.is_cut_off().await,
            "leaving content out is no offence"
        );
    });
    // It stays after a restart (it is in the store, not only in a cache).
    office.stop();
    let office = Node::start(&office_data);
    let events = thread_events(&office, &office_token, &thread);
    assert!(
        events
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["text"] == "the customer's order number is 1077"),
        "{events}"
    );
}
