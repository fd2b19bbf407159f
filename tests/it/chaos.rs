//! Chaos, bounded: three nodes of one org (one living 3 minutes ahead of the others) take
//! writes on all of them while they are killed with SIGKILL and restarted, and paused and
//! resumed, at random; then everything comes back. The checker: the three converge (the same
//! logs, every thread with the same events and state hash), every acknowledged write is on
//! every node exactly once, and the customer got every acknowledged reply exactly once. A
//! failing run prints its seed; `THREADLINE_CHAOS_SEED=<seed>` replays the same choices
//! (the machine's timing still varies). `THREADLINE_CHAOS_SECS` sets how long the faults last.

use std::time::{Duration, Instant};

use serde_json::json;
use threadline_tests::{threadline_ok, Node, Visitor};

use crate::federation::{converged, first_node, join, texts, texts_within, thread, threads, Site};

/// A small seeded generator (xorshift64*): the same seed, the same choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One node of the test and what the chaos did to it.
struct Member {
    site: Site,
    p2p: String,
    ahead: Option<&'static str>,
    node: Option<Node>,
    /// Paused (SIGSTOP) until then.
    paused_until: Option<Instant>,
    /// Killed; restarted at then.
    down_until: Option<Instant>,
}

impl Member {
    fn start(&mut self) {
        self.node = Some(Node::start_on(&self.site.data, &self.p2p, self.ahead));
        self.down_until = None;
    }

    /// Whether it takes requests now.
    fn usable(&self) -> bool {
        self.node.is_some() && self.paused_until.is_none()
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("running")
    }

    /// Brings it back if its time came (or `all`).
    fn heal(&mut self, all: bool) {
        let now = Instant::now();
        if self.paused_until.is_some_and(|until| all || until <= now) {
            self.node().signal("CONT");
            self.paused_until = None;
        }
        if self.down_until.is_some_and(|until| all || until <= now) {
            self.start();
        }
    }
}

#[test]
fn three_nodes_under_kills_pauses_and_a_skewed_clock_converge_with_every_write_once() {
    let seed: u64 = std::env::var("THREADLINE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_nanos() as u64
        });
    let chaos_for = Duration::from_secs(
        std::env::var("THREADLINE_CHAOS_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    eprintln!("chaos seed {seed} (replay: THREADLINE_CHAOS_SEED={seed})");
    let mut rng = Rng(seed | 1);
    let mut ports = Rng(seed.rotate_left(17) | 1);
    let dir = tempfile::tempdir().expect("tempdir");
    // Ports below Linux's ephemeral range (32768-60999): a killed node's port is not taken
    // by another test's connection while it is down.
    let mut fixed_port = || loop {
        let port = 20_000 + ports.below(12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let address = |port: u16| format!("/ip4/127.0.0.1/tcp/{port}");

    let a_site = first_node(dir.path(), "a");
    let mut a = Member {
        p2p: address(fixed_port()),
        site: a_site,
        ahead: None,
        node: None,
        paused_until: None,
        down_until: None,
    };
    a.start();
    let mut members = vec![a];
    for (name, ahead) in [("b", None), ("c", Some("+3m"))] {
        let site = join(dir.path(), name, &members[0].site, members[0].node());
        let mut member = Member {
            p2p: address(fixed_port()),
            site,
            ahead,
            node: None,
            paused_until: None,
            down_until: None,
        };
        member.start();
        members.push(member);
    }
    // b also dials c: more than one path.
    let c_address = members[2].node().p2p_address(&members[2].site.token);
    threadline_ok(&members[1].site.data, &["peer", "add", &c_address]);

    // A customer on each node's web chat; Alice's thread takes the replies (a delivers them,
    // and a is paused but never killed, so what it delivered it knows it did).
    let mut alice = Visitor::connect(members[0].node(), None);
    alice.say("a0", "Alice's question");
    let mut others: Vec<Visitor> = Vec::new();
    for (i, member) in members.iter().enumerate().skip(1) {
        let mut visitor = Visitor::connect(member.node(), None);
        visitor.say(&format!("v{i}"), &format!("customer of node {i}"));
        others.push(visitor);
    }
    let ids: Vec<String> =
        threadline_tests::eventually("a has the three threads", Duration::from_secs(30), || {
            let listed = threads(members[0].node(), &members[0].site.token);
            (listed.len() == 3).then(|| {
                listed
                    .iter()
                    .map(|t| t["id"].as_str().expect("id").to_owned())
                    .collect()
            })
        });
    let alice_thread = ids
        .iter()
        .find(|id| {
            thread(members[0].node(), &members[0].site.token, id)
                .is_some_and(|detail| texts(&detail).iter().any(|t| t == "Alice's question"))
        })
        .expect("Alice's thread")
        .clone();

    // The chaos: writes on usable nodes, kills of b or c, pauses of any.
    let mut acknowledged: Vec<(String, String, bool)> = Vec::new();
    let mut alice_got: Vec<String> = Vec::new();
    let (mut kills, mut pauses) = (0, 0);
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < chaos_for {
        for member in &mut members {
            member.heal(false);
        }
        match rng.below(10) {
            0 => {
                // Kill b or c (never two at once).
                let i = 1 + rng.below(2) as usize;
                let down = members.iter().filter(|m| m.node.is_none()).count();
                if members[i].usable() && down == 0 {
                    members[i].node.take().expect("running").crash();
                    members[i].down_until =
                        Some(Instant::now() + Duration::from_millis(500 + rng.below(2500)));
                    kills += 1;
                }
            }
            1 => {
                let i = rng.below(3) as usize;
                if members[i].usable() {
                    members[i].node().signal("STOP");
                    members[i].paused_until =
                        Some(Instant::now() + Duration::from_millis(500 + rng.below(2500)));
                    pauses += 1;
                }
            }
            _ => {
                let i = rng.below(3) as usize;
                if !members[i].usable() {
                    continue;
                }
                let on = &ids[rng.below(ids.len() as u64) as usize];
                let is_reply = *on == alice_thread;
                let text = format!("w{n} from node {i}");
                n += 1;
                let path = if is_reply {
                    format!("/api/v1/threads/{on}/replies")
                } else {
                    format!("/api/v1/threads/{on}/notes")
                };
                let member = &members[i];
                if let Some((200, _)) =
                    member
                        .node()
                        .try_post(&member.site.token, &path, &json!({ "text": text }))
                {
                    acknowledged.push((on.clone(), text, is_reply));
                }
            }
        }
        // A pace the rest of the suite (two tests at a time on two cores) can live beside.
        alice_got.extend(texts_within(&mut alice, Duration::from_millis(200)));
    }
    for member in &mut members {
        member.heal(true);
    }
    eprintln!(
        "chaos for {:?}: {} writes acknowledged, {kills} kills, {pauses} pauses",
        chaos_for,
        acknowledged.len()
    );
    // Not vacuous: faults happened, and writes, replies among them, were taken.
    assert!(
        kills > 0 && pauses > 0,
        "seed {seed}: {kills} kills, {pauses} pauses"
    );
    let n_replies = acknowledged.iter().filter(|(_, _, r)| *r).count();
    assert!(
        n_replies > 0 && acknowledged.len() > n_replies,
        "seed {seed}: {} writes, {n_replies} replies",
        acknowledged.len()
    );

    // Healed: the three converge, with every acknowledged write once on each.
    fn view(m: &Member) -> (&Node, &str) {
        (m.node(), m.site.token.as_str())
    }
    converged(view(&members[0]), view(&members[1]));
    converged(view(&members[0]), view(&members[2]));
    for member in &members {
        for id in &ids {
            let detail = thread(member.node(), &member.site.token, id).expect("thread");
            let all = texts(&detail);
            for (on, text, _) in acknowledged.iter().filter(|(on, _, _)| on == id) {
                let times = all.iter().filter(|t| *t == text).count();
                assert_eq!(
                    times, 1,
                    "seed {seed}: {text} on {on} is there {times} times"
                );
            }
        }
    }
    // Alice got every acknowledged reply exactly once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let replies: Vec<&String> = acknowledged
        .iter()
        .filter(|(_, _, is_reply)| *is_reply)
        .map(|(_, text, _)| text)
        .collect();
    while Instant::now() < deadline && !replies.iter().all(|r| alice_got.contains(r)) {
        alice_got.extend(texts_within(&mut alice, Duration::from_millis(500)));
    }
    alice_got.extend(texts_within(&mut alice, Duration::from_secs(2)));
    for reply in &replies {
        let times = alice_got.iter().filter(|t| t == reply).count();
        assert_eq!(times, 1, "seed {seed}: Alice got {reply:?} {times} times");
    }
    drop(others);
}
