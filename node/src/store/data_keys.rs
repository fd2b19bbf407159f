//! Encryption at rest: the data keys that seal what customers wrote, one per thread, per
//! contact and per attachment, and the storage key that wraps them (crypto-shredding).
//!
//! Everything that names a customer or is theirs (events' contents, queued deliveries,
//! attachment bytes) is stored sealed with AES-256-GCM under a **data key** of its
//! owner ([`KeyOwner`]). Data keys are random, and kept in one file, `store/data-keys`, each
//! wrapped (sealed) by the node's **storage key**, which is not in that file: it is
//! `storage.key` in the data folder, or a file or value from the environment so that the disk
//! alone reveals nothing (`admin::storage_key`). Erasing destroys the data keys: their slots
//! in this file are overwritten with zeros in place and synced, so what was sealed under them
//! (in the event log, sled's old values, a copy of a file) can no longer be read by anyone.
//!
//! | what | layout (integers big-endian) |
//! | --- | --- |
//! | header (128 bytes) | `TLDKEYS1` ‖ format u32 ‖ 0u32 ‖ durable slots u64 ‖ check nonce (12) ‖ check (the storage key seals [`CHECK_PLAINTEXT`], 32) ‖ zeros |
//! | slot *n* (128 bytes at 128 × (*n* + 1)) | 1 (given) or 2 (made ahead) ‖ owner kind u8 ‖ owner id (32) (zeros when made ahead) ‖ nonce (12) ‖ wrapped key (48, the slot's number as AAD) ‖ zeros ‖ CRC-32 of the 124 bytes before u32; a destroyed slot is all zeros |
//!
//! A slot's number is the key's number ([`KeyNumber`]), which what is sealed names. Slots are
//! only ever appended, never reused, so a number names one key for ever. Keys are made ahead,
//! [`POOL`] at a time: written, synced, then counted in the header, synced; at open, slots past
//! that count were never synced (nothing uses them) and are cut off. Giving a key to an owner
//! rewrites its slot's owner, not its key, without a sync: the store records the assignment
//! with the commit that uses the key (in sled's `meta`, until this file is next synced), and an open finishes a rewrite a
//! crash cut short from that record; an attachment's key is synced before the file is
//! written. So a new conversation's commit syncs nothing here.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::RngCore as _;
use serde::{Deserialize, Serialize};
use threadline_protocol::{codec::ByteBuf, id::BlobHash, ContactId, OrgId, PublicKey, ThreadId};

const MAGIC: &[u8; 8] = b"TLDKEYS1";
const FORMAT: u32 = 1;
const SLOT: u64 = 128;
const NONCE: usize = 12;
const KEY: usize = 32;
const TAG: usize = 16;
/// What the storage key seals in the header, so that a wrong key is told at open.
const CHECK_PLAINTEXT: &[u8; 16] = b"threadline keys\0";
/// Unwrapped keys kept in memory (ready ciphers, ~1 KiB each); past this the cache starts
/// again.
const CACHE_KEYS: usize = 16_384;
/// Keys made ahead at once (one sync for them all), so that a new conversation's commit
/// needs no sync of this file.
const POOL: u64 = 64;
/// A slot's first byte: a key given to its owner.
const TAG_ASSIGNED: u8 = 1;
/// A slot's first byte: a key made ahead, no one's yet.
const TAG_POOL: u8 = 2;

/// The key that wraps every data key of a node. Not stored in the store.
#[derive(Clone)]
pub struct StorageKey([u8; KEY]);

impl std::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageKey(..)")
    }
}

impl StorageKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut key = [0u8; KEY];
        rand_core::OsRng.fill_bytes(&mut key);
        StorageKey(key)
    }

    /// A key of these bytes.
    pub fn from_bytes(bytes: [u8; KEY]) -> Self {
        StorageKey(bytes)
    }

    /// Reads the 64 hex digits of [`StorageKey::to_hex`] (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(StorageKey(bytes.try_into().ok()?))
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.0).into())
    }
}

/// Whose data a key seals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyOwner {
    /// A thread: its events' contents and its queued deliveries.
    Thread(ThreadId),
    /// A contact: the contents of the directory events about it (names, handles, values).
    Contact(ContactId),
    /// An attachment's bytes.
    Blob(BlobHash),
    /// The org's own texts in its directory (canned replies): no customer's, never erased.
    Org(OrgId),
}

impl KeyOwner {
    /// Its 33 bytes: kind (1 thread, 2 contact, 3 attachment, 4 org), then the id (a
    /// contact's padded with zeros; an org's is its key).
    pub fn to_bytes(self) -> [u8; 33] {
        let (kind, id) = match self {
            KeyOwner::Thread(thread) => (1, *thread.as_bytes()),
            KeyOwner::Contact(contact) => {
                let mut id = [0u8; 32];
                id[..16].copy_from_slice(contact.as_bytes());
                (2, id)
            }
            KeyOwner::Blob(blob) => (3, *blob.as_bytes()),
            KeyOwner::Org(org) => (4, *org.0.as_bytes()),
        };
        let mut bytes = [0u8; 33];
        bytes[0] = kind;
        bytes[1..].copy_from_slice(&id);
        bytes
    }

    /// Reads [`KeyOwner::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let id: [u8; 32] = bytes.get(1..33)?.try_into().ok()?;
        match bytes.first()? {
            1 => Some(KeyOwner::Thread(ThreadId::from_bytes(id))),
            2 => Some(KeyOwner::Contact(ContactId::from_bytes(
                id.get(..16)?.try_into().ok()?,
            ))),
            3 => Some(KeyOwner::Blob(BlobHash::from_bytes(id))),
            4 => Some(KeyOwner::Org(OrgId(PublicKey::from_bytes(&id).ok()?))),
            _ => None,
        }
    }
}

/// A data key's number: its slot in `data-keys`, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyNumber(pub u64);

/// Bytes sealed under a data key: which key, the nonce, the ciphertext with its tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The data key.
    pub key: KeyNumber,
    /// A random nonce.
    pub nonce: [u8; NONCE],
    /// The ciphertext and its tag.
    pub ciphertext: ByteBuf,
}

/// Encryption at rest failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataKeysError {
    /// Reading or writing the keys' file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The storage key given is not the one the data keys were wrapped with.
    #[error("the storage key does not open {}: it is not the key this data folder was written with (see docs/OPERATIONS.md, \"Encryption at rest\")", .path.display())]
    WrongStorageKey {
        /// The keys' file.
        path: PathBuf,
    },
    /// The keys' file holds what it must not.
    #[error("{}: {detail}", .path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Sealed bytes do not open under their key: changed on disk, or not ours.
    #[error("sealed bytes under data key {key} do not open: they were changed on disk")]
    Tampered {
        /// The key they name.
        key: u64,
    },
}

/// The data keys: the file of wrapped keys and which owner has which.
pub struct DataKeys {
    path: PathBuf,
    file: File,
    wrapping: Aes256Gcm,
    state: Mutex<State>,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("path", &self.path)
            .field("held", &self.len())
            .finish_non_exhaustive()
    }
}

/// A key made ahead: its number, its slot as written, its bytes.
type Pooled = (KeyNumber, [u8; SLOT as usize], [u8; KEY]);

#[derive(Default)]
struct State {
    /// Slots written (destroyed ones included): the next key's number.
    slots: u64,
    /// Keys made ahead and synced, not yet anyone's.
    pool: Vec<Pooled>,
    /// Keys given to owners since the file was last synced ([`DataKeys::unsynced_assignments`]).
    assigned: Vec<(KeyNumber, KeyOwner)>,
    /// Changes of `assigned` so far (to tell a list that changed from one that did not).
    assigned_changes: u64,
    /// Whether a slot was written since the file was last synced.
    unsynced: bool,
    /// Each owner's newest key.
    current: HashMap<KeyOwner, KeyNumber>,
    /// Each owner's older keys still held (between a re-key and its retirement).
    older: HashMap<KeyOwner, Vec<KeyNumber>>,
    /// Each held key's owner.
    owners: HashMap<KeyNumber, KeyOwner>,
    /// Unwrapped keys, ready.
    cache: HashMap<KeyNumber, Arc<Aes256Gcm>>,
}

impl State {
    fn take(&mut self, key: KeyNumber, owner: KeyOwner) {
        self.owners.insert(key, owner);
        match self.current.get(&owner) {
            Some(current) if *current > key => self.older.entry(owner).or_default().push(key),
            _ => {
                if let Some(previous) = self.current.insert(owner, key) {
                    self.older.entry(owner).or_default().push(previous);
                }
            }
        }
    }

    fn cache(&mut self, key: KeyNumber, cipher: Arc<Aes256Gcm>) {
        if self.cache.len() >= CACHE_KEYS {
            self.cache.clear();
        }
        self.cache.insert(key, cipher);
    }
}

/// A slot holding `owner`'s key (or a key made ahead, with `owner` none), its CRC set.
fn slot_of(tag: u8, owner: Option<KeyOwner>, nonce_and_wrapped: &[u8]) -> [u8; SLOT as usize] {
    let mut slot = [0u8; SLOT as usize];
    slot[0] = tag;
    if let Some(owner) = owner {
        slot[1..34].copy_from_slice(&owner.to_bytes());
    }
    slot[34..34 + NONCE + KEY + TAG].copy_from_slice(nonce_and_wrapped);
    let crc = crc32fast::hash(&slot[..124]);
    slot[124..].copy_from_slice(&crc.to_be_bytes());
    slot
}

impl DataKeys {
    /// Whether `storage` is the key of the file at `path`, read only: refused with
    /// [`DataKeysError::WrongStorageKey`] if not (so a wrong key is told before anything is
    /// written anywhere).
    pub fn check(path: &Path, storage: &StorageKey) -> Result<(), DataKeysError> {
        let file = File::open(path).map_err(|source| DataKeysError::Io {
            path: path.to_owned(),
            source,
        })?;
        check_header(path, &file, &storage.cipher()).map(drop)
    }

    /// [`DataKeys::open_recorded`] with no assignment recorded elsewhere.
    pub fn open(path: &Path, storage: &StorageKey) -> Result<DataKeys, DataKeysError> {
        Self::open_recorded(path, storage, &[])
    }

    /// Opens `path` with `storage` (creating it when missing): refused with
    /// [`DataKeysError::WrongStorageKey`] if the key is not the file's. `recorded` are the
    /// keys the store's commits gave to owners ([`DataKeys::take_assigned`]): a slot whose
    /// assignment a crash cut short is given to its owner again. Slots past the header's count
    /// were never synced (nothing uses them) and are cut off; keys made ahead and not given
    /// are the pool again. Everything it finds is synced before it answers.
    pub fn open_recorded(
        path: &Path,
        storage: &StorageKey,
        recorded: &[(KeyNumber, KeyOwner)],
    ) -> Result<DataKeys, DataKeysError> {
        let io = |source| DataKeysError::Io {
            path: path.to_owned(),
            source,
        };
        let damaged = |detail: String| DataKeysError::Damaged {
            path: path.to_owned(),
            detail,
        };
        let wrapping = storage.cipher();
        let exists = path.exists();
        let file = {
            use std::os::unix::fs::OpenOptionsExt as _;
            // Wrapped, but readable by the node's user only all the same.
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(io)?
        };
        if !exists || file.metadata().map_err(io)?.len() == 0 {
            let mut header = [0u8; SLOT as usize];
            header[..8].copy_from_slice(MAGIC);
            header[8..12].copy_from_slice(&FORMAT.to_be_bytes());
            let mut nonce = [0u8; NONCE];
            rand_core::OsRng.fill_bytes(&mut nonce);
            let check = wrapping
                .encrypt(Nonce::from_slice(&nonce), &CHECK_PLAINTEXT[..])
                .map_err(|_| damaged("cannot seal the check value".to_owned()))?;
            header[24..36].copy_from_slice(&nonce);
            header[36..68].copy_from_slice(&check);
            file.write_all_at(&header, 0).map_err(io)?;
            file.sync_all().map_err(io)?;
            if let Some(dir) = path.parent() {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        }
        let len = file.metadata().map_err(io)?.len();
        let counted = check_header(path, &file, &wrapping)?;
        let written = len / SLOT - 1;
        if written < counted {
            return Err(damaged(format!(
                "{counted} keys were made durable, the file holds {written}"
            )));
        }
        if len != SLOT * (counted + 1) {
            // Written and never synced: nothing durable was sealed under them.
            file.set_len(SLOT * (counted + 1)).map_err(io)?;
        }
        let recorded: HashMap<KeyNumber, KeyOwner> = recorded.iter().copied().collect();
        let mut state = State {
            slots: counted,
            ..State::default()
        };
        let mut rewrites: Vec<(KeyNumber, [u8; SLOT as usize])> = Vec::new();
        let mut chunk = vec![0u8; (SLOT as usize) * 8192];
        let mut number = 0u64;
        while number < counted {
            let n = (counted - number).min(8192);
            let bytes = &mut chunk[..(n * SLOT) as usize];
            file.read_exact_at(bytes, SLOT * (number + 1)).map_err(io)?;
            for slot in bytes.chunks_exact(SLOT as usize) {
                let key = KeyNumber(number);
                number += 1;
                if slot.iter().all(|b| *b == 0) {
                    continue;
                }
                let whole = crc32fast::hash(&slot[..124]).to_be_bytes() == slot[124..128];
                let owner = KeyOwner::from_bytes(&slot[1..34]);
                let keys = &slot[34..34 + NONCE + KEY + TAG];
                match (recorded.get(&key), whole, slot[0], owner) {
                    // Given to an owner, and the slot says so.
                    (_, true, TAG_ASSIGNED, Some(owner)) => state.take(key, owner),
                    // Given by a durable commit, the slot's rewrite cut short by a crash.
                    (Some(owner), _, _, _) => {
                        rewrites.push((key, slot_of(TAG_ASSIGNED, Some(*owner), keys)));
                        state.take(key, *owner);
                    }
                    // Made ahead and never given (or given by a commit that did not last).
                    (None, true, TAG_POOL, _) | (None, false, _, _) => {
                        let slot = slot_of(TAG_POOL, None, keys);
                        if !whole {
                            rewrites.push((key, slot));
                        }
                        match unwrap(&wrapping, key, &slot) {
                            Some(plain) => state.pool.push((key, slot, plain)),
                            None => return Err(damaged(format!("data key {} is damaged", key.0))),
                        }
                    }
                    _ => return Err(damaged(format!("data key {} is damaged", key.0))),
                }
            }
        }
        for (key, slot) in &rewrites {
            file.write_all_at(slot, SLOT * (key.0 + 1)).map_err(io)?;
        }
        // Handed out lowest number first.
        state.pool.reverse();
        file.sync_all().map_err(io)?;
        Ok(DataKeys {
            path: path.to_owned(),
            file,
            wrapping,
            state: Mutex::new(state),
        })
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> DataKeysError + '_ {
        move |source| DataKeysError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The owner's newest key, if it has one.
    pub fn current(&self, owner: KeyOwner) -> Option<KeyNumber> {
        self.state().current.get(&owner).copied()
    }

    /// Every key the owner has, newest last.
    pub fn keys_of(&self, owner: KeyOwner) -> Vec<KeyNumber> {
        let state = self.state();
        let mut keys = state.older.get(&owner).cloned().unwrap_or_default();
        keys.extend(state.current.get(&owner));
        keys
    }

    /// The owner's newest key, given from the pool if it has none (see [`DataKeys::new_key`]).
    pub fn current_or_new(&self, owner: KeyOwner) -> Result<KeyNumber, DataKeysError> {
        if let Some(key) = self.current(owner) {
            return Ok(key);
        }
        self.new_key(owner)
    }

    /// A new key for `owner`, which becomes its current one: one made ahead (the pool is
    /// refilled, [`POOL`] keys made and synced at once, when it is empty), its slot rewritten
    /// to name the owner. That rewrite is not synced here: the store records the assignment
    /// with the commit that uses the key ([`DataKeys::unsynced_assignments`]); an attachment syncs
    /// it ([`DataKeys::sync`]).
    pub fn new_key(&self, owner: KeyOwner) -> Result<KeyNumber, DataKeysError> {
        let mut state = self.state();
        if state.pool.is_empty() {
            self.refill(&mut state)?;
        }
        let (key, slot, plain) = state.pool.pop().ok_or_else(|| DataKeysError::Damaged {
            path: self.path.clone(),
            detail: "no key made ahead".to_owned(),
        })?;
        let slot = slot_of(TAG_ASSIGNED, Some(owner), &slot[34..34 + NONCE + KEY + TAG]);
        self.file
            .write_all_at(&slot, SLOT * (key.0 + 1))
            .map_err(self.io())?;
        state.unsynced = true;
        state.take(key, owner);
        state.assigned.push((key, owner));
        state.assigned_changes += 1;
        state.cache(key, Arc::new(Aes256Gcm::new((&plain).into())));
        Ok(key)
    }

    /// Makes [`POOL`] keys ahead: written, synced, then counted in the header, synced.
    fn refill(&self, state: &mut State) -> Result<(), DataKeysError> {
        let first = state.slots;
        let mut bytes = Vec::with_capacity((POOL * SLOT) as usize);
        let mut made = Vec::with_capacity(POOL as usize);
        for n in 0..POOL {
            let key = KeyNumber(first + n);
            let mut plain = [0u8; KEY];
            rand_core::OsRng.fill_bytes(&mut plain);
            let mut nonce = [0u8; NONCE];
            rand_core::OsRng.fill_bytes(&mut nonce);
            let wrapped = self
                .wrapping
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &plain,
                        aad: &key.0.to_be_bytes(),
                    },
                )
                .map_err(|_| DataKeysError::Tampered { key: key.0 })?;
            let slot = slot_of(TAG_POOL, None, &[nonce.as_slice(), &wrapped].concat());
            bytes.extend_from_slice(&slot);
            made.push((key, slot, plain));
        }
        self.file
            .write_all_at(&bytes, SLOT * (first + 1))
            .map_err(self.io())?;
        self.file.sync_data().map_err(self.io())?;
        let slots = first + POOL;
        self.file
            .write_all_at(&slots.to_be_bytes(), 16)
            .map_err(self.io())?;
        self.file.sync_data().map_err(self.io())?;
        state.slots = slots;
        state.unsynced = false;
        state.assigned.clear();
        state.assigned_changes += 1;
        // Handed out lowest number first.
        made.reverse();
        state.pool.extend(made);
        Ok(())
    }

    /// The keys given to owners since the file was last synced: the store records them with
    /// each commit until then, so a crash that cuts a slot's rewrite short loses no
    /// assignment ([`DataKeys::open_recorded`]). At most a pool's worth: a refill syncs.
    pub fn unsynced_assignments(&self) -> (u64, Vec<(KeyNumber, KeyOwner)>) {
        let state = self.state();
        (state.assigned_changes, state.assigned.clone())
    }

    /// Makes every slot written so far durable (for what does not go through a commit: an
    /// attachment's key).
    pub fn sync(&self) -> Result<(), DataKeysError> {
        let mut state = self.state();
        if state.unsynced {
            self.file.sync_data().map_err(self.io())?;
            state.unsynced = false;
            state.assigned.clear();
            state.assigned_changes += 1;
        }
        Ok(())
    }

    /// Destroys keys for good: their slots are overwritten with zeros and synced. Whatever
    /// was sealed under them is unreadable from then on.
    pub fn destroy(&self, keys: &[KeyNumber]) -> Result<(), DataKeysError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut state = self.state();
        let zeros = [0u8; SLOT as usize];
        for key in keys {
            let Some(owner) = state.owners.remove(key) else {
                continue;
            };
            if key.0 < state.slots {
                self.file
                    .write_all_at(&zeros, SLOT * (key.0 + 1))
                    .map_err(self.io())?;
            }
            state.cache.remove(key);
            if state.current.get(&owner) == Some(key) {
                state.current.remove(&owner);
                // An older key still held becomes the current one again.
                if let Some(older) = state.older.get_mut(&owner) {
                    if let Some(previous) = older.pop() {
                        state.current.insert(owner, previous);
                    }
                }
            } else if let Some(older) = state.older.get_mut(&owner) {
                older.retain(|k| k != key);
            }
            if state.older.get(&owner).is_some_and(Vec::is_empty) {
                state.older.remove(&owner);
            }
        }
        self.file.sync_data().map_err(self.io())?;
        state.unsynced = false;
        state.assigned.clear();
        state.assigned_changes += 1;
        Ok(())
    }

    /// Whose a held key is.
    pub fn owner_of(&self, key: KeyNumber) -> Option<KeyOwner> {
        self.state().owners.get(&key).copied()
    }

    /// Whether a key is held (given to an owner and not destroyed).
    pub fn holds(&self, key: KeyNumber) -> bool {
        self.state().owners.contains_key(&key)
    }

    /// The number of keys held.
    pub fn len(&self) -> usize {
        self.state().owners.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A key, ready to seal and open with; `None` if it was destroyed.
    fn key(&self, key: KeyNumber) -> Result<Option<Arc<Aes256Gcm>>, DataKeysError> {
        {
            let state = self.state();
            if let Some(cipher) = state.cache.get(&key) {
                return Ok(Some(Arc::clone(cipher)));
            }
            if !state.owners.contains_key(&key) {
                return Ok(None);
            }
        }
        let mut slot = [0u8; SLOT as usize];
        self.file
            .read_exact_at(&mut slot, SLOT * (key.0 + 1))
            .map_err(self.io())?;
        let plain = unwrap(&self.wrapping, key, &slot).ok_or_else(|| DataKeysError::Damaged {
            path: self.path.clone(),
            detail: format!("data key {} does not unwrap", key.0),
        })?;
        let cipher = Arc::new(Aes256Gcm::new((&plain).into()));
        self.state().cache(key, Arc::clone(&cipher));
        Ok(Some(cipher))
    }

    /// Seals `plain` under `key`, bound to `aad` (what it belongs to: opening it anywhere
    /// else fails).
    pub fn seal(&self, key: KeyNumber, aad: &[u8], plain: &[u8]) -> Result<Sealed, DataKeysError> {
        let cipher = self
            .key(key)?
            .ok_or(DataKeysError::Tampered { key: key.0 })?;
        let mut nonce = [0u8; NONCE];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| DataKeysError::Tampered { key: key.0 })?;
        Ok(Sealed {
            key,
            nonce,
            ciphertext: ByteBuf(ciphertext),
        })
    }

    /// Opens what [`DataKeys::seal`] sealed with the same `aad`: `None` if its key was
    /// destroyed (erased), an error if the bytes were changed.
    pub fn open_sealed(
        &self,
        sealed: &Sealed,
        aad: &[u8],
    ) -> Result<Option<Vec<u8>>, DataKeysError> {
        let Some(cipher) = self.key(sealed.key)? else {
            return Ok(None);
        };
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext.0,
                    aad,
                },
            )
            .map(Some)
            .map_err(|_| DataKeysError::Tampered { key: sealed.key.0 })
    }

    /// A data key as a cipher, for what is sealed in parts (attachments): `None` if it was
    /// destroyed.
    pub(crate) fn cipher(&self, key: KeyNumber) -> Result<Option<Arc<Aes256Gcm>>, DataKeysError> {
        self.key(key)
    }

    /// Copies the file to `to` (a backup: taken between commits, so what it holds is what the
    /// copied store uses).
    pub fn copy_to(&self, to: &Path) -> Result<(), DataKeysError> {
        let _state = self.state();
        self.file.sync_data().map_err(self.io())?;
        std::fs::copy(&self.path, to).map_err(self.io())?;
        File::open(to)
            .and_then(|file| file.sync_all())
            .map_err(self.io())
    }
}

/// A slot's key, unwrapped (bound to the slot's number); `None` if it does not unwrap.
fn unwrap(wrapping: &Aes256Gcm, key: KeyNumber, slot: &[u8]) -> Option<[u8; KEY]> {
    let plain = wrapping
        .decrypt(
            Nonce::from_slice(slot.get(34..34 + NONCE)?),
            Payload {
                msg: slot.get(34 + NONCE..34 + NONCE + KEY + TAG)?,
                aad: &key.0.to_be_bytes(),
            },
        )
        .ok()?;
    plain.try_into().ok()
}

/// Reads and checks the header: the file's magic and format, and that `wrapping` opens its
/// check value. Answers the count of durable slots it records.
fn check_header(path: &Path, file: &File, wrapping: &Aes256Gcm) -> Result<u64, DataKeysError> {
    let damaged = |detail: String| DataKeysError::Damaged {
        path: path.to_owned(),
        detail,
    };
    let mut header = [0u8; SLOT as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|_| damaged("no header".to_owned()))?;
    if &header[..8] != MAGIC {
        return Err(damaged("not a data keys file".to_owned()));
    }
    let format = u32::from_be_bytes(header[8..12].try_into().unwrap_or_default());
    if format != FORMAT {
        return Err(damaged(format!(
            "format {format}, this build reads {FORMAT}"
        )));
    }
    let check = wrapping.decrypt(Nonce::from_slice(&header[24..36]), &header[36..68]);
    if check.as_deref() != Ok(&CHECK_PLAINTEXT[..]) {
        return Err(DataKeysError::WrongStorageKey {
            path: path.to_owned(),
        });
    }
    Ok(u64::from_be_bytes(
        header[16..24].try_into().unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(n: u8) -> KeyOwner {
        KeyOwner::Thread(ThreadId::from_bytes([n; 32]))
    }

    #[test]
    fn every_kind_of_owner_reads_back_from_its_bytes() {
        let org = OrgId(threadline_protocol::SecretKey::from_seed([9; 32]).public());
        for owner in [
            thread(1),
            KeyOwner::Contact(ContactId::from_bytes([2; 16])),
            KeyOwner::Blob(BlobHash::from_bytes([3; 32])),
            KeyOwner::Org(org),
        ] {
            assert_eq!(KeyOwner::from_bytes(&owner.to_bytes()), Some(owner));
        }
        assert_eq!(KeyOwner::from_bytes(&[5; 33]), None, "an unknown kind");
    }

    #[test]
    fn sealed_bytes_open_with_their_key_and_aad_and_not_once_it_is_destroyed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data-keys");
        let storage = StorageKey::generate();
        let keys = DataKeys::open(&path, &storage).expect("opens");
        let key = keys.current_or_new(thread(1)).expect("made");
        assert_eq!(keys.current_or_new(thread(1)).expect("same"), key);
        keys.sync().expect("synced");
        let sealed = keys.seal(key, b"event 1", b"hello maria").expect("sealed");
        assert!(!sealed.ciphertext.0.windows(5).any(|w| w == b"maria"));
        assert_eq!(
            keys.open_sealed(&sealed, b"event 1").expect("opens"),
            Some(b"hello maria".to_vec())
        );
        assert!(matches!(
            keys.open_sealed(&sealed, b"event 2"),
            Err(DataKeysError::Tampered { .. })
        ));
        drop(keys);
        let keys = DataKeys::open(&path, &storage).expect("reopens");
        assert_eq!(keys.current(thread(1)), Some(key));
        assert_eq!(
            keys.open_sealed(&sealed, b"event 1").expect("opens"),
            Some(b"hello maria".to_vec())
        );
        keys.destroy(&[key]).expect("destroyed");
        assert_eq!(keys.open_sealed(&sealed, b"event 1").expect("reads"), None);
        drop(keys);
        let keys = DataKeys::open(&path, &storage).expect("reopens");
        assert_eq!(keys.current(thread(1)), None);
        assert_eq!(keys.open_sealed(&sealed, b"event 1").expect("reads"), None);
        let bytes = std::fs::read(&path).expect("reads");
        let at = (SLOT * (key.0 + 1)) as usize;
        assert!(
            bytes[at..at + SLOT as usize].iter().all(|b| *b == 0),
            "the slot is zeros"
        );
        // A new key for the same owner has a new number.
        let again = keys.new_key(thread(1)).expect("made");
        assert_ne!(again, key);
    }

    #[test]
    fn a_wrong_storage_key_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data-keys");
        let keys = DataKeys::open(&path, &StorageKey::generate()).expect("opens");
        keys.new_key(thread(1)).expect("made");
        keys.sync().expect("synced");
        drop(keys);
        let before = std::fs::read(&path).expect("reads");
        let err = DataKeys::open(&path, &StorageKey::generate()).expect_err("refused");
        assert!(
            matches!(err, DataKeysError::WrongStorageKey { .. }),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).expect("reads"), before);
    }

    /// Keys are made ahead and synced; giving one to an owner is not synced, and a crash
    /// that cuts the slot's rewrite short is finished from the store's record of it, or, with
    /// no record (the commit that used it did not last), the key goes back to the pool.
    /// Bytes past the header's count are cut off; a key that does not unwrap is refused.
    #[test]
    fn assignments_survive_a_torn_rewrite_through_the_record_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data-keys");
        let storage = StorageKey::generate();
        let keys = DataKeys::open(&path, &storage).expect("opens");
        let given = keys.new_key(thread(1)).expect("made");
        let plain = b"a message".to_vec();
        let sealed = keys.seal(given, b"aad", &plain).expect("seals");
        assert_eq!(keys.unsynced_assignments().1, vec![(given, thread(1))]);
        keys.sync().expect("synced");
        assert!(keys.unsynced_assignments().1.is_empty());
        drop(keys);
        let bytes = std::fs::read(&path).expect("reads");
        assert_eq!(bytes.len() as u64, SLOT * (POOL + 1), "made ahead at once");
        // The rewrite torn: the slot half as it was made ahead.
        let at = (SLOT * (given.0 + 1)) as usize;
        let mut torn = bytes.clone();
        torn[at] = TAG_POOL;
        torn[at + 1..at + 34].fill(0);
        std::fs::write(&path, &torn).expect("writes");
        let keys =
            DataKeys::open_recorded(&path, &storage, &[(given, thread(1))]).expect("reopens");
        assert_eq!(keys.current(thread(1)), Some(given));
        assert_eq!(
            keys.open_sealed(&sealed, b"aad").expect("opens"),
            Some(plain.clone())
        );
        drop(keys);
        assert_eq!(
            std::fs::read(&path).expect("reads"),
            bytes,
            "finished on disk"
        );
        // Torn, with no record: back to the pool, and given again (to someone else).
        std::fs::write(&path, &torn).expect("writes");
        let keys = DataKeys::open(&path, &storage).expect("reopens");
        assert_eq!(keys.current(thread(1)), None);
        assert_eq!(keys.new_key(thread(2)).expect("made"), given);
        drop(keys);
        // Bytes past the count (a refill never synced) are cut off.
        let mut longer = std::fs::read(&path).expect("reads");
        longer.extend_from_slice(&[7u8; SLOT as usize]);
        std::fs::write(&path, &longer).expect("writes");
        let keys = DataKeys::open(&path, &storage).expect("reopens");
        assert_eq!(keys.current(thread(2)), Some(given));
        drop(keys);
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            SLOT * (POOL + 1)
        );
        // A wrapped key changed on disk: refused, naming it.
        let mut damaged = std::fs::read(&path).expect("reads");
        damaged[at + 60] ^= 1;
        std::fs::write(&path, damaged).expect("writes");
        let err = DataKeys::open(&path, &storage).expect_err("refused");
        assert!(matches!(err, DataKeysError::Damaged { .. }), "{err}");
    }

    #[test]
    fn a_re_keyed_owner_seals_under_its_new_key_and_keeps_the_old_until_destroyed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = DataKeys::open(&dir.path().join("k"), &StorageKey::generate()).expect("opens");
        let old = keys.new_key(thread(1)).expect("made");
        let new = keys.new_key(thread(1)).expect("made");
        assert_eq!(keys.current(thread(1)), Some(new));
        assert_eq!(keys.keys_of(thread(1)), vec![old, new]);
        keys.destroy(&[old]).expect("destroyed");
        assert_eq!(keys.keys_of(thread(1)), vec![new]);
        keys.destroy(&[new]).expect("destroyed");
        assert!(keys.keys_of(thread(1)).is_empty());
        assert!(keys.is_empty());
    }
}
