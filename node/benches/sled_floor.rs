//! The floor that sled sets for the node's ingest: writes shaped like one inbound message's
//! (a ~400-byte log entry, an ~80-byte id index entry, a 32-byte external id entry and a
//! ~250-byte thread state), 256 messages per group commit, one flush per group, one thread.
//! No protocol work at all: what is left is sled.
//!
//! Run: `cargo bench -p threadline-node --bench sled_floor`. Figures: docs/BENCHMARKS.md.

use std::time::Instant;

use sled::transaction::{ConflictableTransactionError, Transactional};

const MESSAGES: u64 = 200_000;
const GROUP: u64 = 256;
const THREADS: u64 = 10_000;

fn run(mode: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled opens");
    let trees: Vec<sled::Tree> = (0..4)
        .map(|i| db.open_tree(format!("t{i}")).expect("tree"))
        .collect();
    let log_value = vec![7u8; 400];
    let started = Instant::now();
    let mut first = 0u64;
    while first < MESSAGES {
        let end = (first + GROUP).min(MESSAGES);
        let log_key = |k: u64| {
            [
                &(k % THREADS).to_be_bytes()[..],
                &k.to_be_bytes()[..],
                &[1u8; 60][..],
            ]
            .concat()
        };
        match mode {
            "4 writes per message, one transaction per group" => {
                let refs: Vec<&sled::Tree> = trees.iter().collect();
                refs.as_slice()
                    .transaction(|views| {
                        for k in first..end {
                            views[0].insert(log_key(k), log_value.as_slice())?;
                            views[1].insert(&k.to_be_bytes()[..], &[9u8; 80][..])?;
                            views[2].insert(&(k ^ 0x5555).to_be_bytes()[..], &[1u8; 32][..])?;
                            views[3].insert(&(k % THREADS).to_be_bytes()[..], &[2u8; 250][..])?;
                        }
                        Ok::<(), ConflictableTransactionError<()>>(())
                    })
                    .expect("transaction");
            }
            "4 writes per message, no transaction" => {
                for k in first..end {
                    trees[0]
                        .insert(log_key(k), log_value.as_slice())
                        .expect("insert");
                    trees[1]
                        .insert(&k.to_be_bytes()[..], &[9u8; 80][..])
                        .expect("insert");
                    trees[2]
                        .insert(&(k ^ 0x5555).to_be_bytes()[..], &[1u8; 32][..])
                        .expect("insert");
                    trees[3]
                        .insert(&(k % THREADS).to_be_bytes()[..], &[2u8; 250][..])
                        .expect("insert");
                }
            }
            _ => {
                for k in first..end {
                    trees[0]
                        .insert(log_key(k), log_value.as_slice())
                        .expect("insert");
                }
            }
        }
        db.flush().expect("flush");
        first = end;
    }
    let elapsed = started.elapsed();
    println!(
        "{mode}: {MESSAGES} messages in {elapsed:.2?} = {:.0}/s ({:.1} µs per message)",
        MESSAGES as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / MESSAGES as f64
    );
}

fn main() {
    run("4 writes per message, one transaction per group");
    run("4 writes per message, no transaction");
    run("1 write per message");
}
