//! The event log: every log's events, in append-only segment files under `store/events/`.
//!
//! sled 0.34 spends 15–25 µs on each new key and, when it opens a store, replays everything it
//! wrote since it last opened one (docs/BENCHMARKS.md). Events are most of what a node writes
//! and are never changed in place, so they live here instead: one record per commit, appended
//! and synced before sled takes the commit's other writes. sled keeps, with each commit, where
//! the log ends ([`LogEnd`]); at start-up whatever lies beyond that end was never
//! acknowledged and is cut off.
//!
//! Which events a log holds, and where, is kept in memory ([`index`]). A sealed segment has a
//! checkpoint of its part of that index beside it (`NNNNNNNN.index`), so start-up reads the
//! checkpoints and scans only the segment still being written; it inserts nothing per event
//! (a log's list is put together from the checkpoints when the log is first used), so a node
//! of ten million events is serving in about a second (docs/BENCHMARKS.md).
//!
//! | what | layout (integers big-endian) |
//! | --- | --- |
//! | segment `NNNNNNNN.events` | `TLEVENTS` ‖ format u32 ‖ segment number u32, then records |
//! | record | `TLRC` ‖ commit u64 ‖ entries u32 ‖ bytes of entries u32 ‖ CRC-32 of those 20 bytes u32, then its entries |
//! | entry | scope (33 bytes) ‖ event id (32) ‖ length u32 ‖ CRC-32 of scope, id, length and event u32 ‖ the event's encoding |
//! | checkpoint `NNNNNNNN.index` | `TLEVINDX` ‖ format u32 (3) ‖ segment number u32 ‖ entries u64 ‖ external keys u64, then the entries sorted by scope (in append order within one), each scope ‖ id ‖ offset u32 ‖ length u32 ‖ flags u8 (1: look it up, it may replace an earlier entry of its id), then the external keys sorted by fingerprint ([`index::fingerprint`]) and offset, each key (33 bytes) ‖ offset u32 ‖ length u32, then CRC-32 of all before u32 |
//!
//! An event written again (its content erased, or sealed again under a new key) is a new
//! entry; the index moves to it. The old entry's bytes stay in their segment, sealed under a
//! data key the erasure destroyed (`super::data_keys`).
//!
//! The index also answers which event first took an external key (an inbound message's
//! provider id, [`super::external_id_key`]): the store names the key of each event it
//! appends, and a segment scanned at start-up has its events' keys worked out again by the
//! function the store gives [`EventLog::open`] (the first event of a key keeps it, in log
//! order, as it did when they were appended).

mod index;

use index::Index;

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

const SEGMENT_MAGIC: &[u8; 8] = b"TLEVENTS";
const CHECKPOINT_MAGIC: &[u8; 8] = b"TLEVINDX";
const RECORD_MAGIC: &[u8; 4] = b"TLRC";
const FORMAT: u32 = 1;
const CHECKPOINT_FORMAT: u32 = 3;
/// The checkpoint format before entries were sorted by scope (read, and written again).
const CHECKPOINT_FORMAT_2: u32 = 2;
const CHECKPOINT_HEADER: usize = 32;
const CHECKPOINT_KEY: usize = 33 + 4 + 4;
const SEGMENT_HEADER: u64 = 16;
const RECORD_HEADER: usize = 24;
const ENTRY_HEADER: usize = 33 + 32 + 4 + 4;
/// A checkpoint entry of format 2: scope ‖ id ‖ offset ‖ length ‖ whether a key follows.
const CHECKPOINT_2_ENTRY: usize = 33 + 32 + 4 + 4 + 1;

/// A segment is sealed, and a new one begun, once it holds this many bytes (the segment being
/// written is read whole at start-up, its events decoded for their external keys).
pub const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;

/// A scope as the store keys it ([`super::scope_key`]).
pub type ScopeKey = [u8; 33];

/// An event's id and its encoding.
pub type IdAndEncoding = ([u8; 32], Vec<u8>);

/// Called with each entry a check reads: scope, id, event encoding.
pub type EntryVisitor<'a> = dyn FnMut(&ScopeKey, &[u8; 32], &[u8]) + 'a;

/// An external key as the store makes it ([`super::external_id_key`]).
pub type ExternalKey = [u8; 33];

/// Works out an event's external key from its encoding (for segments scanned at start-up).
pub type ExternalKeyOf = fn(&[u8]) -> Option<ExternalKey>;

/// An entry of a segment, for its checkpoint.
#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    scope: ScopeKey,
    id: [u8; 32],
    location: Location,
    /// The external key it took.
    external: Option<ExternalKey>,
    /// Whether it may replace an earlier entry of its id (written again, or not known).
    look_up: bool,
}

/// Where the log ends: everything before it is committed. Stored by sled with each commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogEnd {
    /// The segment being written.
    pub segment: u32,
    /// The length of its committed part, in bytes.
    pub offset: u64,
}

impl LogEnd {
    /// The end of an empty log.
    pub const START: LogEnd = LogEnd {
        segment: 1,
        offset: SEGMENT_HEADER,
    };

    /// Its 12-byte encoding.
    pub fn to_bytes(self) -> [u8; 12] {
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&self.segment.to_be_bytes());
        bytes[4..].copy_from_slice(&self.offset.to_be_bytes());
        bytes
    }

    /// Reads [`LogEnd::to_bytes`]; `None` if it is not 12 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<LogEnd> {
        let bytes: [u8; 12] = bytes.try_into().ok()?;
        let (segment, offset) = bytes.split_at(4);
        Some(LogEnd {
            segment: u32::from_be_bytes(segment.try_into().ok()?),
            offset: u64::from_be_bytes(offset.try_into().ok()?),
        })
    }
}

/// Where an entry is: its segment, its offset there and its event's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    segment: u32,
    offset: u32,
    len: u32,
}

/// Event log errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A file holds what it must not: a checksum that does not match, a record cut short, a
    /// segment missing.
    #[error("{}: {detail}", .path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An earlier append failed part way: the log takes no more until it is opened again.
    #[error("an earlier write to the event log failed; restart the node")]
    Failed,
}

/// One event to append: its scope, its id, its encoding and the external key it takes.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    /// Its log.
    pub scope: &'a ScopeKey,
    /// Its id.
    pub id: &'a [u8; 32],
    /// Its encoding.
    pub bytes: &'a [u8],
    /// The external key it takes (none if another event has it).
    pub external: Option<&'a ExternalKey>,
}

/// The append-only event log and its in-memory index. Appends come from one thread (the
/// store's commit); reads from any.
#[derive(Debug)]
pub struct EventLog {
    dir: PathBuf,
    segment_bytes: u64,
    index: RwLock<Index>,
    active: Mutex<Active>,
    /// The checkpoint of the segment sealed last, being written on a thread of its own.
    checkpointing: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The segment being written.
#[derive(Debug)]
struct Active {
    segment: u32,
    file: Arc<File>,
    len: u64,
    /// Its entries so far, for its checkpoint when it is sealed.
    entries: Vec<IndexEntry>,
    failed: bool,
}

impl EventLog {
    /// Opens the log in `dir` (created if missing), whose committed part ends at `end`:
    /// segments and bytes beyond it are removed (written, never acknowledged); anything
    /// damaged before it is an error.
    /// `external_key_of` works out an event's external key for segments read at start-up.
    pub fn open(
        dir: &Path,
        end: LogEnd,
        external_key_of: ExternalKeyOf,
    ) -> Result<EventLog, EventLogError> {
        Self::open_with(dir, end, SEGMENT_BYTES, external_key_of)
    }

    /// [`EventLog::open`] with segments sealed at `segment_bytes` (tests use small ones).
    pub fn open_with(
        dir: &Path,
        end: LogEnd,
        segment_bytes: u64,
        external_key_of: ExternalKeyOf,
    ) -> Result<EventLog, EventLogError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EventLogError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(number) = name
                .strip_suffix(".events")
                .and_then(|n| n.parse::<u32>().ok())
            {
                segments.push(number);
            } else if name.ends_with(".index.tmp") {
                // A checkpoint whose writing a stop cut short.
                remove_if_present(&entry.path())?;
            }
        }
        segments.sort_unstable();
        // Beyond the end: begun, never committed.
        for number in segments.iter().filter(|n| **n > end.segment) {
            tracing::warn!(
                segment = number,
                "removing an event segment written after the last commit"
            );
            remove_if_present(&segment_path(dir, *number))?;
            remove_if_present(&checkpoint_path(dir, *number))?;
        }
        // Sealed segments: their checkpoints read (or rebuilt) on two threads, each taking
        // half; nothing is inserted per event, and each thread sorts its half's external keys.
        let sealed: Vec<u32> = (1..end.segment).collect();
        let (first, second) = sealed.split_at(sealed.len() / 2);
        let segments = &segments;
        let (mut parts, keys) = std::thread::scope(|threads| -> Result<_, EventLogError> {
            let second =
                threads.spawn(move || read_sealed_all(dir, second, segments, external_key_of));
            let (mut parts, keys) = read_sealed_all(dir, first, segments, external_key_of)?;
            let (more_parts, more_keys) = second
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            parts.extend(more_parts);
            Ok((parts, vec![keys, more_keys]))
        })?;
        let mut files = std::collections::BTreeMap::new();
        let mut checkpoints = Vec::with_capacity(parts.len() + 1);
        for (number, file, checkpoint) in parts.drain(..) {
            files.insert(number, Arc::new(file));
            checkpoints.push(checkpoint);
        }
        let external = index::ExternalIndex::new(keys);
        // The segment being written: scanned up to the end, cut there.
        let path = segment_path(dir, end.segment);
        let file = if segments.contains(&end.segment) {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))?
        } else if end == LogEnd::START || end.offset == SEGMENT_HEADER {
            create_segment(dir, end.segment)?
        } else {
            return Err(EventLogError::Damaged {
                path,
                detail: "this segment of the event log is missing".to_owned(),
            });
        };
        let len = file.metadata().map_err(io(&path))?.len();
        if len < end.offset {
            return Err(EventLogError::Damaged {
                path,
                detail: format!(
                    "the event log is cut short: {len} bytes where {} were committed",
                    end.offset
                ),
            });
        }
        let entries = scan(
            &file,
            &path,
            end.segment,
            end.offset,
            Some(external_key_of),
            &mut |_| {},
        )?;
        if len > end.offset {
            tracing::warn!(
                segment = end.segment,
                bytes = len - end.offset,
                "cutting off events written after the last commit"
            );
            file.set_len(end.offset).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        remove_if_present(&checkpoint_path(dir, end.segment))?;
        // Its entries are a part of their own, each looked up when its log is put together
        // (`scan` marks them so: whether one replaces an earlier entry is not known without
        // its log).
        let mut bytes = Vec::with_capacity(entries.len() * index::CHECKPOINT_ENTRY);
        index::Checkpoint::encode(&entries, &mut bytes);
        checkpoints.push(index::Checkpoint::new(end.segment, bytes, entries.len()));
        let mut index = Index::new(checkpoints, external);
        index.files = files;
        for entry in &entries {
            if let Some(key) = entry.external {
                index.external.take(key, entry.id);
            }
        }
        let file = Arc::new(file);
        index.files.insert(end.segment, Arc::clone(&file));
        Ok(EventLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            index: RwLock::new(index),
            checkpointing: Mutex::new(None),
            active: Mutex::new(Active {
                segment: end.segment,
                file,
                len: end.offset,
                entries,
                failed: false,
            }),
        })
    }

    /// Appends one commit's events as one record and syncs it; answers where the log ends now
    /// (for sled to store with the commit). The events are readable once this returns.
    pub fn append(&self, commit: u64, entries: &[NewEntry<'_>]) -> Result<LogEnd, EventLogError> {
        let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        if active.failed {
            return Err(EventLogError::Failed);
        }
        if active.len >= self.segment_bytes {
            if let Err(err) = self.seal(&mut active) {
                active.failed = true;
                return Err(err);
            }
        }
        let body: usize = entries.iter().map(|e| ENTRY_HEADER + e.bytes.len()).sum();
        let mut record = Vec::with_capacity(RECORD_HEADER + body);
        record.extend_from_slice(RECORD_MAGIC);
        record.extend_from_slice(&commit.to_be_bytes());
        record.extend_from_slice(
            &u32::try_from(entries.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        record.extend_from_slice(&u32::try_from(body).unwrap_or(u32::MAX).to_be_bytes());
        let header_crc = crc32fast::hash(&record[4..20]);
        record.extend_from_slice(&header_crc.to_be_bytes());
        let mut placed = Vec::with_capacity(entries.len());
        for entry in entries {
            let offset = active.len + record.len() as u64;
            let len = u32::try_from(entry.bytes.len()).unwrap_or(u32::MAX);
            record.extend_from_slice(entry.scope);
            record.extend_from_slice(entry.id);
            record.extend_from_slice(&len.to_be_bytes());
            let mut crc = crc32fast::Hasher::new();
            crc.update(entry.scope);
            crc.update(entry.id);
            crc.update(&len.to_be_bytes());
            crc.update(entry.bytes);
            record.extend_from_slice(&crc.finalize().to_be_bytes());
            record.extend_from_slice(entry.bytes);
            placed.push(IndexEntry {
                scope: *entry.scope,
                id: *entry.id,
                location: Location {
                    segment: active.segment,
                    offset: u32::try_from(offset).unwrap_or(u32::MAX),
                    len,
                },
                external: entry.external.copied(),
                look_up: false,
            });
        }
        let path = segment_path(&self.dir, active.segment);
        let written = active
            .file
            .write_all_at(&record, active.len)
            .and_then(|()| active.file.sync_data());
        if let Err(source) = written {
            active.failed = true;
            return Err(EventLogError::Io { path, source });
        }
        active.len += record.len() as u64;
        {
            let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
            for entry in &mut placed {
                entry.look_up = !index.insert(&entry.scope, entry.id, entry.location);
                if let Some(key) = entry.external {
                    index.external.take(key, entry.id);
                }
            }
        }
        active.entries.extend(placed);
        Ok(LogEnd {
            segment: active.segment,
            offset: active.len,
        })
    }

    /// Writes the active segment's checkpoint and begins the next segment.
    /// The checkpoint is written on a thread of its own: sorting and syncing ~8 MiB took
    /// ~100 ms, which the commit that filled the segment waited for. Until it is written, the
    /// segment is scanned again if the node starts (the checkpoint is derived from it).
    fn seal(&self, active: &mut Active) -> Result<(), EventLogError> {
        self.wait_for_checkpoint();
        let (dir, number) = (self.dir.clone(), active.segment);
        let entries = std::mem::take(&mut active.entries);
        let write = move || {
            if let Err(err) = write_checkpoint(&dir, number, &encode_checkpoint(number, &entries)) {
                tracing::warn!(cause = %err, segment = number, "cannot write an event log checkpoint; the segment will be scanned at the next start");
            }
        };
        match std::thread::Builder::new()
            .name("threadline-checkpoint".to_owned())
            .spawn(write)
        {
            Ok(thread) => {
                *self
                    .checkpointing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(thread);
            }
            Err(err) => {
                tracing::warn!(cause = %err, segment = number, "cannot start writing an event log checkpoint; the segment will be scanned at the next start");
            }
        }
        let next = active.segment + 1;
        let file = Arc::new(create_segment(&self.dir, next)?);
        self.index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .files
            .insert(next, Arc::clone(&file));
        *active = Active {
            segment: next,
            file,
            len: SEGMENT_HEADER,
            entries: Vec::new(),
            failed: false,
        };
        Ok(())
    }

    /// Waits for the checkpoint being written, if one is.
    fn wait_for_checkpoint(&self) {
        let pending = self
            .checkpointing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = pending {
            let _ = thread.join();
        }
    }

    /// Where the log ends now.
    pub fn end(&self) -> LogEnd {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        LogEnd {
            segment: active.segment,
            offset: active.len,
        }
    }

    /// Events held (an event written again counts once). Puts every log together: for
    /// checks, tests and benchmarks.
    pub fn len(&self) -> usize {
        let mut len = 0;
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .every_log(&mut |_, slots| len += slots.len());
        len
    }

    /// Whether the log holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The event that took external key `key`, if any.
    pub fn external(&self, key: &[u8]) -> Result<Option<[u8; 32]>, EventLogError> {
        let Ok(key) = <&ExternalKey>::try_from(key) else {
            return Ok(None);
        };
        let (location, file) = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            match index.external.find(key) {
                None => return Ok(None),
                Some(index::Taker::Event(id)) => return Ok(Some(id)),
                Some(index::Taker::At(location)) => {
                    let Some(file) = index.files.get(&location.segment) else {
                        return Ok(None);
                    };
                    (location, Arc::clone(file))
                }
            }
        };
        self.read(&file, location).map(|(id, _)| Some(id))
    }

    /// Calls `with` with the log of `scope` (put together first if it is not yet) and the
    /// segment files.
    fn with_log<R>(
        &self,
        scope: &ScopeKey,
        with: impl FnOnce(&index::LogEntries, &std::collections::BTreeMap<u32, Arc<File>>) -> R,
    ) -> R {
        {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(log) = index.log(scope) {
                return with(log, &index.files);
            }
        }
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        let (log, files) = index.log_and_files(scope);
        with(log, files)
    }

    fn locate(&self, scope: &ScopeKey, id: &[u8; 32]) -> Option<(Location, Arc<File>)> {
        self.with_log(scope, |log, files| {
            let slot = log.slots().get(log.position(id)?)?;
            Some((
                slot.location,
                Arc::clone(files.get(&slot.location.segment)?),
            ))
        })
    }

    /// Whether `scope` holds event `id`.
    pub fn contains(&self, scope: &ScopeKey, id: &[u8; 32]) -> bool {
        self.locate(scope, id).is_some()
    }

    /// The encoding of event `id` of `scope`, if held.
    pub fn get(&self, scope: &ScopeKey, id: &[u8; 32]) -> Result<Option<Vec<u8>>, EventLogError> {
        match self.locate(scope, id) {
            None => Ok(None),
            Some((location, file)) => self.read(&file, location).map(|(_, bytes)| Some(bytes)),
        }
    }

    /// The events of `scope`, as (id, encoding), in the order they were appended.
    pub fn scope(&self, scope: &ScopeKey) -> Result<Vec<IdAndEncoding>, EventLogError> {
        let places: Vec<(Location, Arc<File>)> = self.with_log(scope, |log, files| {
            log.slots()
                .iter()
                .filter_map(|slot| {
                    Some((
                        slot.location,
                        Arc::clone(files.get(&slot.location.segment)?),
                    ))
                })
                .collect()
        });
        places
            .into_iter()
            .map(|(location, file)| self.read(&file, location))
            .collect()
    }

    /// Each scope with the number of events it holds.
    pub fn scope_sizes(&self) -> Vec<(ScopeKey, u64)> {
        let mut sizes = Vec::new();
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .every_log(&mut |scope, slots| sizes.push((*scope, slots.len() as u64)));
        sizes
    }

    /// Every event held, as its scope and id, in the order their entries were appended.
    pub fn in_order(&self) -> Vec<(ScopeKey, [u8; 32])> {
        let mut all: Vec<((u32, u32), ScopeKey, [u8; 32])> = Vec::new();
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .every_log(&mut |scope, slots| {
                all.extend(slots.iter().map(|slot| {
                    (
                        (slot.location.segment, slot.location.offset),
                        *scope,
                        slot.id,
                    )
                }));
            });
        all.sort_unstable_by_key(|(place, _, _)| *place);
        all.into_iter().map(|(_, scope, id)| (scope, id)).collect()
    }

    /// Reads one entry and checks its checksum; answers its id and the event's encoding.
    fn read(&self, file: &File, location: Location) -> Result<([u8; 32], Vec<u8>), EventLogError> {
        let path = segment_path(&self.dir, location.segment);
        let mut buf = vec![0u8; ENTRY_HEADER + location.len as usize];
        file.read_exact_at(&mut buf, u64::from(location.offset))
            .map_err(|source| EventLogError::Io {
                path: path.clone(),
                source,
            })?;
        let (id, bytes) = parse_entry(&buf).ok_or_else(|| EventLogError::Damaged {
            path,
            detail: format!(
                "the event at offset {} does not match its checksum",
                location.offset
            ),
        })?;
        Ok((id, bytes.to_vec()))
    }

    /// Reads every record of every segment up to the end and checks it, calling `each` with
    /// every entry (scope, id, event encoding); answers what is damaged, one line each (only a
    /// failure to read at all is an error).
    pub fn check(&self, each: &mut EntryVisitor<'_>) -> Result<Vec<String>, EventLogError> {
        let end = self.end();
        let mut damaged = Vec::new();
        for number in 1..=end.segment {
            let path = segment_path(&self.dir, number);
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(err) => {
                    damaged.push(format!("events: {}: {err}", path.display()));
                    continue;
                }
            };
            let len = if number == end.segment {
                end.offset
            } else {
                file.metadata()
                    .map_err(|source| EventLogError::Io {
                        path: path.clone(),
                        source,
                    })?
                    .len()
            };
            let mut visit = |entry: Entry<'_>| each(&entry.scope, &entry.id, entry.bytes);
            if let Err(err) = scan(&file, &path, number, len, None, &mut visit) {
                damaged.push(format!("events: {err}"));
            }
        }
        Ok(damaged)
    }

    /// Copies the committed log into `to` (a new folder): sealed segments and their
    /// checkpoints whole, the active one up to the end. Consistent when nothing appends
    /// meanwhile. Answers where the copy ends.
    pub fn copy_to(&self, to: &Path) -> Result<LogEnd, EventLogError> {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        self.wait_for_checkpoint();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| EventLogError::Io { path, source }
        };
        std::fs::create_dir_all(to).map_err(io(to))?;
        for number in 1..active.segment {
            let from = segment_path(&self.dir, number);
            std::fs::copy(&from, segment_path(to, number)).map_err(io(&from))?;
            let checkpoint = checkpoint_path(&self.dir, number);
            if checkpoint.exists() {
                std::fs::copy(&checkpoint, checkpoint_path(to, number)).map_err(io(&checkpoint))?;
            }
        }
        let from = segment_path(&self.dir, active.segment);
        let into = segment_path(to, active.segment);
        let mut bytes = vec![0u8; usize::try_from(active.len).unwrap_or(usize::MAX)];
        active
            .file
            .read_exact_at(&mut bytes, 0)
            .map_err(io(&from))?;
        let mut file = File::create(&into).map_err(io(&into))?;
        file.write_all(&bytes).map_err(io(&into))?;
        file.sync_all().map_err(io(&into))?;
        sync_dir(to)?;
        Ok(LogEnd {
            segment: active.segment,
            offset: active.len,
        })
    }

    /// Bytes on disk (segments and checkpoints).
    pub fn size_on_disk(&self) -> Result<u64, EventLogError> {
        let mut total = 0;
        let entries = std::fs::read_dir(&self.dir).map_err(|source| EventLogError::Io {
            path: self.dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            total += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
        Ok(total)
    }
}

impl Drop for EventLog {
    /// Lets the checkpoint being written finish.
    fn drop(&mut self) {
        self.wait_for_checkpoint();
    }
}

/// One entry as read from a segment.
struct Entry<'a> {
    scope: ScopeKey,
    id: [u8; 32],
    bytes: &'a [u8],
}

/// Splits an entry (header and event) read whole; `None` if its checksum does not match.
fn parse_entry(buf: &[u8]) -> Option<([u8; 32], &[u8])> {
    let id: [u8; 32] = buf.get(33..65)?.try_into().ok()?;
    let len = u32::from_be_bytes(buf.get(65..69)?.try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(buf.get(69..73)?.try_into().ok()?);
    let bytes = buf.get(ENTRY_HEADER..ENTRY_HEADER + len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(buf.get(..69)?);
    hasher.update(bytes);
    (hasher.finalize() == crc).then_some((id, bytes))
}

/// Reads the records of a segment from its header to `len`, checking every checksum; calls
/// `each` with every entry and answers the segment's index entries (with their external keys
/// if `external_key_of` is given). A record that does not end exactly at `len`, or any
/// mismatch, is damage.
fn scan(
    file: &File,
    path: &Path,
    number: u32,
    len: u64,
    external_key_of: Option<ExternalKeyOf>,
    each: &mut dyn FnMut(Entry<'_>),
) -> Result<Vec<IndexEntry>, EventLogError> {
    let damaged = |detail: String| EventLogError::Damaged {
        path: path.to_path_buf(),
        detail,
    };
    let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::UnexpectedEof => damaged(format!("cut short before byte {len}")),
            _ => EventLogError::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
    let mut header = Vec::with_capacity(SEGMENT_HEADER as usize);
    header.extend_from_slice(SEGMENT_MAGIC);
    header.extend_from_slice(&FORMAT.to_be_bytes());
    header.extend_from_slice(&number.to_be_bytes());
    if bytes.get(..SEGMENT_HEADER as usize) != Some(header.as_slice()) {
        return Err(damaged(format!(
            "not segment {number} of an event log (format {FORMAT})"
        )));
    }
    let mut entries = Vec::new();
    let mut at = SEGMENT_HEADER as usize;
    while at < bytes.len() {
        let record = bytes
            .get(at..at + RECORD_HEADER)
            .ok_or_else(|| damaged(format!("a record cut short at offset {at}")))?;
        let crc = u32::from_be_bytes(record[20..24].try_into().unwrap_or_default());
        if &record[..4] != RECORD_MAGIC || crc32fast::hash(&record[4..20]) != crc {
            return Err(damaged(format!("a damaged record header at offset {at}")));
        }
        let n_entries = u32::from_be_bytes(record[12..16].try_into().unwrap_or_default());
        let body = u32::from_be_bytes(record[16..20].try_into().unwrap_or_default()) as usize;
        let end = at + RECORD_HEADER + body;
        if end > bytes.len() {
            return Err(damaged(format!("a record cut short at offset {at}")));
        }
        let mut entry_at = at + RECORD_HEADER;
        for _ in 0..n_entries {
            let buf = bytes.get(entry_at..end).unwrap_or_default();
            let (id, event) = parse_entry(buf).ok_or_else(|| {
                damaged(format!(
                    "the event at offset {entry_at} does not match its checksum"
                ))
            })?;
            let scope: ScopeKey = buf[..33].try_into().unwrap_or([0; 33]);
            each(Entry {
                scope,
                id,
                bytes: event,
            });
            entries.push(IndexEntry {
                scope,
                id,
                location: Location {
                    segment: number,
                    offset: u32::try_from(entry_at).unwrap_or(u32::MAX),
                    len: u32::try_from(event.len()).unwrap_or(u32::MAX),
                },
                external: external_key_of.and_then(|key_of| key_of(event)),
                look_up: true,
            });
            entry_at += ENTRY_HEADER + event.len();
        }
        if entry_at != end {
            return Err(damaged(format!(
                "the record at offset {at} does not add up"
            )));
        }
        at = end;
    }
    Ok(entries)
}

fn segment_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number:08}.events"))
}

fn checkpoint_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("{number:08}.index"))
}

fn remove_if_present(path: &Path) -> Result<(), EventLogError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(EventLogError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn sync_dir(dir: &Path) -> Result<(), EventLogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| EventLogError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Creates segment `number` with its header, synced (and the folder).
fn create_segment(dir: &Path, number: u32) -> Result<File, EventLogError> {
    let path = segment_path(dir, number);
    let io = |source| EventLogError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io)?;
    file.write_all(SEGMENT_MAGIC).map_err(io)?;
    file.write_all(&FORMAT.to_be_bytes()).map_err(io)?;
    file.write_all(&number.to_be_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    sync_dir(dir)?;
    Ok(file)
}

/// Encodes a segment's checkpoint (format 3) from its entries.
fn encode_checkpoint(number: u32, entries: &[IndexEntry]) -> Vec<u8> {
    let mut keys: Vec<(index::SealedKey, &ExternalKey)> = entries
        .iter()
        .filter_map(|entry| {
            let key = entry.external.as_ref()?;
            Some((index::SealedKey::new(key, entry.location), key))
        })
        .collect();
    keys.sort_by_key(|(sealed, _)| sealed.order());
    let mut bytes = Vec::with_capacity(
        CHECKPOINT_HEADER
            + entries.len() * index::CHECKPOINT_ENTRY
            + keys.len() * CHECKPOINT_KEY
            + 4,
    );
    bytes.extend_from_slice(CHECKPOINT_MAGIC);
    bytes.extend_from_slice(&CHECKPOINT_FORMAT.to_be_bytes());
    bytes.extend_from_slice(&number.to_be_bytes());
    bytes.extend_from_slice(&(entries.len() as u64).to_be_bytes());
    bytes.extend_from_slice(&(keys.len() as u64).to_be_bytes());
    index::Checkpoint::encode(entries, &mut bytes);
    for (sealed, key) in keys {
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(&sealed.location.offset.to_be_bytes());
        bytes.extend_from_slice(&sealed.location.len.to_be_bytes());
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

/// Writes a sealed segment's checkpoint (to a temporary file, synced, renamed).
fn write_checkpoint(dir: &Path, number: u32, bytes: &[u8]) -> Result<(), EventLogError> {
    let path = checkpoint_path(dir, number);
    let tmp = path.with_extension("index.tmp");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EventLogError::Io { path, source }
    };
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

/// A sealed segment as start-up reads it: its number, its file and its checkpoint.
type SealedSegment = (u32, File, index::Checkpoint);

/// [`read_sealed`] for each of `numbers`, in order: each segment's file and checkpoint, and
/// their external keys (sorted).
fn read_sealed_all(
    dir: &Path,
    numbers: &[u32],
    segments: &[u32],
    external_key_of: ExternalKeyOf,
) -> Result<(Vec<SealedSegment>, index::SealedKeys), EventLogError> {
    let mut parts = Vec::with_capacity(numbers.len());
    let mut keys = index::SealedKeys::default();
    let mut scratch = Vec::new();
    for (at, number) in numbers.iter().enumerate() {
        let (file, checkpoint) = read_sealed(
            dir,
            *number,
            segments,
            external_key_of,
            &mut scratch,
            &mut keys,
        )?;
        if at == 0 {
            // Segments hold about as many keys each.
            keys.reserve(keys.len().saturating_mul(numbers.len()));
        }
        parts.push((*number, file, checkpoint));
    }
    keys.sort();
    Ok((parts, keys))
}

/// Sealed segment `number` of the log in `dir`, opened, with its checkpoint (its external
/// keys added to `keys`); the checkpoint is written again from the segment when missing or
/// damaged, or from a checkpoint of format 2. `scratch` is a buffer to reuse.
fn read_sealed(
    dir: &Path,
    number: u32,
    segments: &[u32],
    external_key_of: ExternalKeyOf,
    scratch: &mut Vec<u8>,
    keys: &mut index::SealedKeys,
) -> Result<(File, index::Checkpoint), EventLogError> {
    let path = segment_path(dir, number);
    let io = |source| EventLogError::Io {
        path: path.clone(),
        source,
    };
    if !segments.contains(&number) {
        return Err(EventLogError::Damaged {
            path,
            detail: "this segment of the event log is missing".to_owned(),
        });
    }
    let file = File::open(&path).map_err(io)?;
    if let Some(checkpoint) = read_checkpoint(dir, number, scratch, keys) {
        return Ok((file, checkpoint));
    }
    let entries = match read_checkpoint_2(dir, number) {
        Some(entries) => entries,
        None => {
            tracing::warn!(
                path = %checkpoint_path(dir, number).display(),
                "an event log checkpoint is missing or does not check; scanning its segment"
            );
            let len = file.metadata().map_err(io)?.len();
            scan(
                &file,
                &path,
                number,
                len,
                Some(external_key_of),
                &mut |_| {},
            )?
        }
    };
    write_checkpoint(dir, number, &encode_checkpoint(number, &entries))?;
    read_checkpoint(dir, number, scratch, keys)
        .map(|checkpoint| (file, checkpoint))
        .ok_or_else(|| EventLogError::Damaged {
            path: checkpoint_path(dir, number),
            detail: "a checkpoint just written does not read back".to_owned(),
        })
}

/// Reads segment `number`'s checkpoint (format 3), adding its external keys to `keys`;
/// `None` (and no key added) if it is missing, of another format, or does not check. The
/// entries are read into memory of their own, and kept; the keys through `scratch`.
fn read_checkpoint(
    dir: &Path,
    number: u32,
    scratch: &mut Vec<u8>,
    keys: &mut index::SealedKeys,
) -> Option<index::Checkpoint> {
    use std::io::Read as _;
    let mut file = File::open(checkpoint_path(dir, number)).ok()?;
    let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
    let mut header = [0u8; CHECKPOINT_HEADER];
    file.read_exact(&mut header).ok()?;
    if header.get(..8)? != CHECKPOINT_MAGIC
        || header.get(8..12)? != CHECKPOINT_FORMAT.to_be_bytes()
        || header.get(12..16)? != number.to_be_bytes()
    {
        return None;
    }
    let count = usize::try_from(u64::from_be_bytes(header.get(16..24)?.try_into().ok()?)).ok()?;
    let n_keys = usize::try_from(u64::from_be_bytes(header.get(24..32)?.try_into().ok()?)).ok()?;
    let entries_len = count.checked_mul(index::CHECKPOINT_ENTRY)?;
    let keys_len = n_keys.checked_mul(CHECKPOINT_KEY)?;
    if CHECKPOINT_HEADER
        .checked_add(entries_len)?
        .checked_add(keys_len)?
        .checked_add(4)?
        != len
    {
        return None;
    }
    let mut entries = vec![0u8; entries_len];
    file.read_exact(&mut entries).ok()?;
    scratch.resize(keys_len + 4, 0);
    file.read_exact(scratch).ok()?;
    let (key_bytes, crc) = scratch.split_at(keys_len);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    hasher.update(&entries);
    hasher.update(key_bytes);
    if hasher.finalize().to_be_bytes() != crc {
        return None;
    }
    for record in key_bytes.chunks_exact(CHECKPOINT_KEY) {
        let key: ExternalKey = record.get(..33)?.try_into().ok()?;
        let location = Location {
            segment: number,
            offset: u32::from_be_bytes(record.get(33..37)?.try_into().ok()?),
            len: u32::from_be_bytes(record.get(37..41)?.try_into().ok()?),
        };
        keys.push(index::SealedKey::new(&key, location));
    }
    Some(index::Checkpoint::new(number, entries, count))
}

/// A sealed segment's checkpoint of format 2 (before entries were sorted by scope), as
/// entries each to be looked up; `None` if it is missing, of another format or does not
/// check.
fn read_checkpoint_2(dir: &Path, number: u32) -> Option<Vec<IndexEntry>> {
    let path = checkpoint_path(dir, number);
    let bytes = std::fs::read(&path).ok()?;
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
    if crc32fast::hash(body).to_be_bytes() != crc
        || body.get(..8)? != CHECKPOINT_MAGIC
        || body.get(8..12)? != CHECKPOINT_FORMAT_2.to_be_bytes()
        || body.get(12..16)? != number.to_be_bytes()
    {
        return None;
    }
    let count = usize::try_from(u64::from_be_bytes(body.get(16..24)?.try_into().ok()?)).ok()?;
    let mut entries = Vec::with_capacity(count);
    let mut at = 24;
    for _ in 0..count {
        let chunk = body.get(at..at + CHECKPOINT_2_ENTRY)?;
        at += CHECKPOINT_2_ENTRY;
        let external = match chunk.get(73)? {
            0 => None,
            1 => {
                let key: ExternalKey = body.get(at..at + 33)?.try_into().ok()?;
                at += 33;
                Some(key)
            }
            _ => return None,
        };
        entries.push(IndexEntry {
            scope: chunk.get(..33)?.try_into().ok()?,
            id: chunk.get(33..65)?.try_into().ok()?,
            location: Location {
                segment: number,
                offset: u32::from_be_bytes(chunk.get(65..69)?.try_into().ok()?),
                len: u32::from_be_bytes(chunk.get(69..73)?.try_into().ok()?),
            },
            external,
            look_up: true,
        });
    }
    (at == body.len()).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(scope: &'a ScopeKey, id: &'a [u8; 32], bytes: &'a [u8]) -> NewEntry<'a> {
        NewEntry {
            scope,
            id,
            bytes,
            external: None,
        }
    }

    /// The tests' external keys: an event whose bytes start with a multiple of 5 takes the
    /// key of its first byte divided by 10 (so two events share each key).
    fn key_of(bytes: &[u8]) -> Option<ExternalKey> {
        let first = *bytes.first()?;
        (first % 5 == 0).then_some([first / 10; 33])
    }

    /// Appends `n` events of 100 bytes over 3 scopes, one commit each; answers the end.
    fn fill(log: &EventLog, from: u8, n: u8) -> LogEnd {
        let mut end = log.end();
        for i in from..from + n {
            let scope = [i % 3; 33];
            let id = [i; 32];
            let bytes = [i; 100];
            let key = key_of(&bytes);
            let mut new = entry(&scope, &id, &bytes);
            // The first event of a key takes it, as the store's writer decides.
            if key.is_some_and(|key| log.external(&key).expect("reads").is_none()) {
                new.external = key.as_ref();
            }
            end = log.append(u64::from(i), &[new]).expect("appends");
        }
        end
    }

    #[test]
    fn events_read_back_by_scope_and_id_across_sealed_segments_and_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open_with(dir.path(), LogEnd::START, 1024, key_of).expect("opens");
        let end = fill(&log, 0, 30);
        assert!(end.segment > 3, "small segments were sealed: {end:?}");
        let check = |log: &EventLog| {
            assert_eq!(log.len(), 30);
            assert_eq!(
                log.get(&[1; 33], &[4; 32]).expect("reads"),
                Some(vec![4; 100])
            );
            assert_eq!(
                log.get(&[0; 33], &[4; 32]).expect("reads"),
                None,
                "another scope"
            );
            let ids: Vec<u8> = log
                .scope(&[2; 33])
                .expect("reads")
                .into_iter()
                .map(|(id, bytes)| {
                    assert_eq!(bytes, vec![id[0]; 100]);
                    id[0]
                })
                .collect();
            assert_eq!(ids, [2, 5, 8, 11, 14, 17, 20, 23, 26, 29]);
            // Events 0 and 5 share key 0, 10 and 15 key 1, 20 and 25 key 2: the first keeps it.
            assert_eq!(log.external(&[0; 33]).expect("reads"), Some([0; 32]));
            assert_eq!(log.external(&[1; 33]).expect("reads"), Some([10; 32]));
            assert_eq!(log.external(&[2; 33]).expect("reads"), Some([20; 32]));
            assert_eq!(log.external(&[3; 33]).expect("reads"), None);
        };
        check(&log);
        drop(log);
        let log = EventLog::open_with(dir.path(), end, 1024, key_of).expect("reopens");
        check(&log);
        // Without checkpoints, the segments are scanned (and the checkpoints written again);
        // one whose writing was cut short leaves only its temporary file, which goes.
        drop(log);
        let cut_short = checkpoint_path(dir.path(), 1).with_extension("index.tmp");
        std::fs::write(&cut_short, b"TLEVINDX").expect("writes");
        for number in 1..end.segment {
            std::fs::remove_file(checkpoint_path(dir.path(), number)).expect("removed");
        }
        let log = EventLog::open_with(dir.path(), end, 1024, key_of).expect("reopens");
        check(&log);
        assert!(checkpoint_path(dir.path(), 1).exists());
        assert!(!cut_short.exists());
        assert!(log.check(&mut |_, _, _| {}).expect("checks").is_empty());
    }

    /// Writes segment `number`'s checkpoint as format 2 (one entry after the other, in log
    /// order, each key inline) from its scan, as a node before format 3 wrote it.
    fn write_checkpoint_2(dir: &Path, number: u32) {
        let path = segment_path(dir, number);
        let file = File::open(&path).expect("opens");
        let len = file.metadata().expect("metadata").len();
        let entries = scan(&file, &path, number, len, Some(key_of), &mut |_| {}).expect("scans");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(CHECKPOINT_MAGIC);
        bytes.extend_from_slice(&CHECKPOINT_FORMAT_2.to_be_bytes());
        bytes.extend_from_slice(&number.to_be_bytes());
        bytes.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        for entry in &entries {
            bytes.extend_from_slice(&entry.scope);
            bytes.extend_from_slice(&entry.id);
            bytes.extend_from_slice(&entry.location.offset.to_be_bytes());
            bytes.extend_from_slice(&entry.location.len.to_be_bytes());
            match entry.external {
                None => bytes.push(0),
                Some(key) => {
                    bytes.push(1);
                    bytes.extend_from_slice(&key);
                }
            }
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        std::fs::write(checkpoint_path(dir, number), bytes).expect("writes");
    }

    #[test]
    fn checkpoints_of_format_2_are_read_and_written_again_as_format_3() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open_with(dir.path(), LogEnd::START, 1024, key_of).expect("opens");
        fill(&log, 0, 20);
        log.append(99, &[entry(&[1; 33], &[4; 32], b"erased")])
            .expect("appends");
        let end = fill(&log, 20, 10);
        drop(log);
        for number in 1..end.segment {
            write_checkpoint_2(dir.path(), number);
        }
        let log = EventLog::open_with(dir.path(), end, 1024, key_of).expect("reopens");
        assert_eq!(log.len(), 30);
        assert_eq!(
            log.get(&[1; 33], &[4; 32]).expect("reads"),
            Some(b"erased".to_vec())
        );
        let ids: Vec<u8> = log
            .scope(&[1; 33])
            .expect("reads")
            .into_iter()
            .map(|(id, _)| id[0])
            .collect();
        assert_eq!(ids, [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]);
        assert_eq!(log.external(&[1; 33]).expect("reads"), Some([10; 32]));
        for number in 1..end.segment {
            let bytes = std::fs::read(checkpoint_path(dir.path(), number)).expect("reads");
            assert_eq!(
                bytes[8..12],
                CHECKPOINT_FORMAT.to_be_bytes(),
                "segment {number}"
            );
        }
    }

    #[test]
    fn what_lies_beyond_the_committed_end_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open_with(dir.path(), LogEnd::START, 1024, key_of).expect("opens");
        let committed = fill(&log, 0, 5);
        let beyond = fill(&log, 5, 20);
        assert!(beyond.segment > committed.segment);
        drop(log);
        let log = EventLog::open_with(dir.path(), committed, 1024, key_of).expect("reopens");
        assert_eq!(log.len(), 5);
        assert_eq!(log.get(&[2; 33], &[5; 32]).expect("reads"), None);
        assert!(!segment_path(dir.path(), beyond.segment).exists());
        // Appends go on from the end, and survive a reopen.
        let end = fill(&log, 100, 2);
        drop(log);
        let log = EventLog::open_with(dir.path(), end, 1024, key_of).expect("reopens");
        assert_eq!(log.len(), 7);
        assert_eq!(
            log.get(&[100 % 3; 33], &[100; 32]).expect("reads"),
            Some(vec![100; 100])
        );
    }

    #[test]
    fn an_event_written_again_replaces_the_first_in_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open_with(dir.path(), LogEnd::START, 1024, key_of).expect("opens");
        fill(&log, 0, 12);
        let end = log
            .append(99, &[entry(&[0; 33], &[3; 32], b"erased")])
            .expect("appends");
        let check = |log: &EventLog| {
            assert_eq!(log.len(), 12);
            assert_eq!(
                log.get(&[0; 33], &[3; 32]).expect("reads"),
                Some(b"erased".to_vec())
            );
            let scope = log.scope(&[0; 33]).expect("reads");
            assert_eq!(scope.len(), 4);
            assert_eq!(scope[1], ([3; 32], b"erased".to_vec()));
        };
        check(&log);
        drop(log);
        let log = EventLog::open_with(dir.path(), end, 1024, key_of).expect("reopens");
        check(&log);
        // Written a third time, then sealed away behind later events: a reopen builds the
        // index from the checkpoints and still finds it once, where it was first.
        log.append(100, &[entry(&[0; 33], &[3; 32], b"erased again")])
            .expect("appends");
        let end = fill(&log, 200, 12);
        let check = |log: &EventLog| {
            assert_eq!(log.len(), 24);
            assert_eq!(
                log.get(&[0; 33], &[3; 32]).expect("reads"),
                Some(b"erased again".to_vec())
            );
            let scope = log.scope(&[0; 33]).expect("reads");
            assert_eq!(scope.len(), 8);
            assert_eq!(scope[1], ([3; 32], b"erased again".to_vec()));
        };
        check(&log);
        let before = log.scope(&[0; 33]).expect("reads");
        drop(log);
        let log = EventLog::open_with(dir.path(), end, 1024, key_of).expect("reopens");
        check(&log);
        assert_eq!(log.scope(&[0; 33]).expect("reads"), before);
        assert!(
            end.segment > 2,
            "the events are in sealed segments: {end:?}"
        );
    }

    #[test]
    fn damage_before_the_end_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open_with(dir.path(), LogEnd::START, 1024, key_of).expect("opens");
        let end = fill(&log, 0, 30);
        drop(log);
        // A flipped byte in the segment being written.
        let active = segment_path(dir.path(), end.segment);
        let mut bytes = std::fs::read(&active).expect("reads");
        let at = bytes.len() - 10;
        bytes[at] ^= 1;
        std::fs::write(&active, &bytes).expect("writes");
        let err = EventLog::open_with(dir.path(), end, 1024, key_of).expect_err("refused");
        assert!(
            matches!(&err, EventLogError::Damaged { path, .. } if *path == active),
            "{err}"
        );
        bytes[at] ^= 1;
        std::fs::write(&active, &bytes).expect("writes");
        // Cut short.
        std::fs::write(&active, &bytes[..bytes.len() - 1]).expect("writes");
        let err = EventLog::open_with(dir.path(), end, 1024, key_of).expect_err("refused");
        assert!(err.to_string().contains("cut short"), "{err}");
        std::fs::write(&active, &bytes).expect("writes");
        // A flipped byte in a sealed segment: the node starts from its checkpoint, but reading
        // that event and checking the log say so.
        let sealed = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&sealed).expect("reads");
        let at = bytes.len() - 5;
        bytes[at] ^= 1;
        std::fs::write(&sealed, &bytes).expect("writes");
        let log =
            EventLog::open_with(dir.path(), end, 1024, key_of).expect("opens from checkpoints");
        let damaged = log.check(&mut |_, _, _| {}).expect("checks");
        assert_eq!(damaged.len(), 1, "{damaged:?}");
        assert!(
            damaged[0].contains(&sealed.display().to_string()),
            "{damaged:?}"
        );
        let read: Vec<_> = (0u8..30)
            .filter_map(|i| log.get(&[i % 3; 33], &[i; 32]).err())
            .collect();
        assert_eq!(read.len(), 1, "{read:?}");
        // A missing segment.
        drop(log);
        std::fs::remove_file(segment_path(dir.path(), 2)).expect("removed");
        let err = EventLog::open_with(dir.path(), end, 1024, key_of).expect_err("refused");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn a_copy_opens_with_the_same_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = EventLog::open_with(dir.path(), LogEnd::START, 1024, key_of).expect("opens");
        fill(&log, 0, 20);
        let copy = tempfile::tempdir().expect("tempdir");
        let end = log.copy_to(&copy.path().join("events")).expect("copies");
        let copied =
            EventLog::open_with(&copy.path().join("events"), end, 1024, key_of).expect("opens");
        assert_eq!(copied.len(), 20);
        assert_eq!(
            copied.get(&[1; 33], &[7; 32]).expect("reads"),
            Some(vec![7; 100])
        );
    }
}
