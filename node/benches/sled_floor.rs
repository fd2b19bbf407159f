//! The floor that sled sets for the node's ingest: writes shaped like one inbound message's
//! (a ~400-byte log entry under a 65-byte `scope ‖ id` key, a 33-byte external id key with a
//! 32-byte value, a ~250-byte thread state overwritten in place, over 10,000 threads), 512
//! messages per group commit, one flush per group, one thread. No protocol work at all: what is
//! left is sled.
//!
//! Run: `cargo bench -p threadline-node --bench sled_floor`. Figures: docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use sled::transaction::{ConflictableTransactionError, Transactional};

const MESSAGES: u64 = 200_000;
const GROUP: u64 = 512;
const THREADS: u64 = 10_000;
const JOURNAL_CHUNK: usize = 64 * 1024;

fn spread(k: u64) -> [u8; 8] {
    k.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes()
}

/// `0x01 ‖ thread (32 bytes) ‖ event id (32 bytes)`.
fn log_key(k: u64) -> Vec<u8> {
    let mut key = vec![1u8];
    key.extend_from_slice(&spread(k % THREADS));
    key.extend_from_slice(&[3u8; 24]);
    key.extend_from_slice(&spread(k ^ 0xabcdef));
    key.extend_from_slice(&[4u8; 24]);
    key
}

/// `channel ‖ SHA-256(external id)`.
fn external_key(k: u64) -> Vec<u8> {
    let mut key = vec![1u8];
    key.extend_from_slice(&spread(k ^ 0x5555));
    key.extend_from_slice(&[5u8; 24]);
    key
}

fn state_key(k: u64) -> Vec<u8> {
    let mut key = spread(k % THREADS).to_vec();
    key.extend_from_slice(&[3u8; 24]);
    key
}

/// A log keyed by a global sequence, and each thread's list of `(id prefix, sequence)` in
/// records of 128 entries rewritten as they grow (what finds a thread's events and an event by
/// id), with or without the external-id tree; the thread state and the journal as the node.
fn sequenced(
    trees: &[sled::Tree],
    journal: &sled::Tree,
    group: std::ops::Range<u64>,
    external_ids: bool,
) {
    let log_value = [7u8; 400];
    if external_ids {
        for k in group.clone() {
            trees[1].get(external_key(k)).expect("get");
        }
    }
    let mut record = Vec::with_capacity(group.clone().count() * 700);
    for k in group.clone() {
        record.extend_from_slice(&k.to_be_bytes());
        record.extend_from_slice(&log_value);
        if external_ids {
            record.extend_from_slice(&external_key(k));
        }
        record.extend_from_slice(&[2u8; 250]);
    }
    let mut batch = sled::Batch::default();
    for (idx, chunk) in record.chunks(JOURNAL_CHUNK).enumerate() {
        batch.insert(&(idx as u32).to_be_bytes()[..], chunk);
    }
    journal.apply_batch(batch).expect("journal");
    let (mut log, mut external, mut state, mut lists) = (
        sled::Batch::default(),
        sled::Batch::default(),
        sled::Batch::default(),
        sled::Batch::default(),
    );
    let mut chunks: std::collections::HashMap<Vec<u8>, Vec<u8>> = Default::default();
    for k in group {
        log.insert(&k.to_be_bytes()[..], &log_value[..]);
        if external_ids {
            external.insert(external_key(k), &[1u8; 32][..]);
        }
        state.insert(state_key(k), &[2u8; 250][..]);
        let mut key = state_key(k);
        key.extend_from_slice(&((k / THREADS / 128) as u32).to_be_bytes());
        let mut chunk = match chunks.remove(&key) {
            Some(chunk) => chunk,
            None => trees[3]
                .get(&key)
                .expect("get")
                .map(|v| v.to_vec())
                .unwrap_or_default(),
        };
        chunk.extend_from_slice(&spread(k));
        chunk.extend_from_slice(&k.to_be_bytes());
        chunks.insert(key, chunk);
    }
    for (key, chunk) in chunks {
        lists.insert(key, chunk);
    }
    for (tree, batch) in [&trees[0], &trees[1], &trees[2], &trees[3]]
        .into_iter()
        .zip([log, external, state, lists])
    {
        tree.apply_batch(batch).expect("batch");
    }
}

fn run(mode: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled opens");
    let trees: Vec<sled::Tree> = (0..4)
        .map(|i| db.open_tree(format!("t{i}")).expect("tree"))
        .collect();
    let journal = db.open_tree("journal").expect("tree");
    let log_value = vec![7u8; 400];
    let mut writing = Duration::ZERO;
    let mut flushing = Duration::ZERO;
    let started = Instant::now();
    let mut first = 0u64;
    while first < MESSAGES {
        let end = (first + GROUP).min(MESSAGES);
        let write_started = Instant::now();
        match mode {
            "log + external id + state, per-tree batches and a redo journal (the node)"
            | "log + external id + state, per-tree batches, no journal" => {
                for k in first..end {
                    // The duplicate check reads the external id first.
                    trees[1].get(external_key(k)).expect("get");
                }
                if mode.contains("redo journal") {
                    let mut record = Vec::with_capacity(((end - first) * 600) as usize);
                    for k in first..end {
                        record.extend_from_slice(&log_key(k));
                        record.extend_from_slice(&log_value);
                        record.extend_from_slice(&external_key(k));
                        record.extend_from_slice(&[2u8; 250]);
                    }
                    // In records under sled's blob threshold (segment size / 4), like the node.
                    let mut batch = sled::Batch::default();
                    for (idx, chunk) in record.chunks(JOURNAL_CHUNK).enumerate() {
                        batch.insert(&(idx as u32).to_be_bytes()[..], chunk);
                    }
                    journal.apply_batch(batch).expect("journal");
                }
                let mut batches = [
                    sled::Batch::default(),
                    sled::Batch::default(),
                    sled::Batch::default(),
                ];
                for k in first..end {
                    batches[0].insert(log_key(k), log_value.as_slice());
                    batches[1].insert(external_key(k), &[1u8; 32][..]);
                    batches[2].insert(state_key(k), &[2u8; 250][..]);
                }
                for (tree, batch) in trees.iter().zip(batches) {
                    tree.apply_batch(batch).expect("batch");
                }
            }
            "sequenced log + scope chunks + external id + state, journal" => {
                sequenced(&trees, &journal, first..end, true);
            }
            "sequenced log + scope chunks + state, journal (external ids elsewhere)" => {
                sequenced(&trees, &journal, first..end, false);
            }
            "log + id index + external id + state, one multi-tree transaction (schema 1)" => {
                for k in first..end {
                    trees[1].get(external_key(k)).expect("get");
                    trees[3].get(spread(k)).expect("get");
                }
                let refs: Vec<&sled::Tree> = trees.iter().collect();
                refs.as_slice()
                    .transaction(|views| {
                        for k in first..end {
                            views[0].insert(log_key(k), log_value.as_slice())?;
                            views[1].insert(external_key(k), &[1u8; 32][..])?;
                            views[2].insert(state_key(k), &[2u8; 250][..])?;
                            views[3].insert(&spread(k)[..], &[9u8; 81][..])?;
                        }
                        Ok::<(), ConflictableTransactionError<()>>(())
                    })
                    .expect("transaction");
            }
            "log entry only" => {
                let mut batch = sled::Batch::default();
                for k in first..end {
                    batch.insert(log_key(k), log_value.as_slice());
                }
                trees[0].apply_batch(batch).expect("batch");
            }
            "state overwrite only" => {
                let mut batch = sled::Batch::default();
                for k in first..end {
                    batch.insert(state_key(k), &[2u8; 250][..]);
                }
                trees[2].apply_batch(batch).expect("batch");
            }
            other => unreachable!("{other}"),
        }
        let flush_started = Instant::now();
        db.flush().expect("flush");
        writing += flush_started - write_started;
        flushing += flush_started.elapsed();
        first = end;
    }
    let elapsed = started.elapsed();
    drop(trees);
    drop(journal);
    drop(db);
    let disk = on_disk(dir.path());
    let per_message = |d: Duration| d.as_secs_f64() * 1e6 / MESSAGES as f64;
    println!(
        "{mode}: {:.0} msgs/s; {:.1} µs per message writing, {:.1} µs flushing; {} bytes on disk per message",
        MESSAGES as f64 / elapsed.as_secs_f64(),
        per_message(writing),
        per_message(flushing),
        disk / MESSAGES,
    );
}

/// Bytes of the files under `path`.
fn on_disk(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => on_disk(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    // `FLOOR_ONLY="mode;mode"`: just those.
    if let Ok(only) = std::env::var("FLOOR_ONLY") {
        for mode in only.split(';') {
            run(mode);
        }
        return;
    }
    run("log + external id + state, per-tree batches and a redo journal (the node)");
    run("log + external id + state, per-tree batches, no journal");
    run("log + id index + external id + state, one multi-tree transaction (schema 1)");
    run("log entry only");
    run("state overwrite only");
}
