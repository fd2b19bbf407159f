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
//! | slot *n* (128 bytes at 128 × (*n* + 1)) | 1 ‖ owner kind u8 ‖ owner id (32) ‖ nonce (12) ‖ wrapped key (48) ‖ zeros ‖ CRC-32 of the 124 bytes before u32; a destroyed slot is all zeros |
//!
//! A slot's number is the key's number ([`KeyNumber`]), which what is sealed names. Slots are
//! only ever appended, never reused, so a number names one key for ever. A new key is synced
//! before anything sealed under it is durable, and counted: an attachment's syncs the file,
//! then the header's count of durable slots, before the attachment is written; a commit's
//! syncs the file beside the event log's append, and the store records the count with the
//! commit (one sync less on the way of every new conversation). At open, slots past the
//! greater count were never synced, so nothing durable uses them, and they are cut off.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::RngCore as _;
use serde::{Deserialize, Serialize};
use threadline_protocol::{codec::ByteBuf, id::BlobHash, ContactId, ThreadId};

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
}

impl KeyOwner {
    fn to_bytes(self) -> [u8; 33] {
        let (kind, id) = match self {
            KeyOwner::Thread(thread) => (1, *thread.as_bytes()),
            KeyOwner::Contact(contact) => {
                let mut id = [0u8; 32];
                id[..16].copy_from_slice(contact.as_bytes());
                (2, id)
            }
            KeyOwner::Blob(blob) => (3, *blob.as_bytes()),
        };
        let mut bytes = [0u8; 33];
        bytes[0] = kind;
        bytes[1..].copy_from_slice(&id);
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let id: [u8; 32] = bytes.get(1..33)?.try_into().ok()?;
        match bytes.first()? {
            1 => Some(KeyOwner::Thread(ThreadId::from_bytes(id))),
            2 => Some(KeyOwner::Contact(ContactId::from_bytes(
                id.get(..16)?.try_into().ok()?,
            ))),
            3 => Some(KeyOwner::Blob(BlobHash::from_bytes(id))),
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
    /// Held while syncing (not the state: key lookups go on meanwhile).
    syncing: Mutex<()>,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("path", &self.path)
            .field("held", &self.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// Slots written (destroyed ones included): the next key's number.
    slots: u64,
    /// Slots known durable.
    durable: u64,
    /// Slots the header counts as durable.
    counted: u64,
    /// Each owner's newest key.
    current: HashMap<KeyOwner, KeyNumber>,
    /// Each owner's older keys still held (between a re-key and its retirement).
    older: HashMap<KeyOwner, Vec<KeyNumber>>,
    /// Each live key's owner (for the AAD of its slot).
    owners: HashMap<KeyNumber, KeyOwner>,
    /// Unwrapped keys.
    cache: HashMap<KeyNumber, Arc<Aes256Gcm>>,
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

    /// [`DataKeys::open_with`] with no durable count known from elsewhere.
    pub fn open(path: &Path, storage: &StorageKey) -> Result<DataKeys, DataKeysError> {
        Self::open_with(path, storage, 0)
    }

    /// Opens `path` with `storage` (creating it when missing): refused with
    /// [`DataKeysError::WrongStorageKey`] if the key is not the file's. The keys durable are
    /// those the header counts, or `durable_at_least` where the store recorded more with a
    /// commit ([`DataKeys::sync_slots`]); slots past them are cut off.
    pub fn open_with(
        path: &Path,
        storage: &StorageKey,
        durable_at_least: u64,
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
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
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
        let durable = counted.max(durable_at_least);
        let written = len / SLOT - 1;
        if written < durable {
            return Err(damaged(format!(
                "{durable} keys were made durable, the file holds {written}"
            )));
        }
        if len != SLOT * (durable + 1) {
            // Written and never synced: nothing durable was sealed under them.
            file.set_len(SLOT * (durable + 1)).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        if counted != durable {
            file.write_all_at(&durable.to_be_bytes(), 16).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let mut state = State {
            slots: durable,
            durable,
            counted: durable,
            ..State::default()
        };
        let mut chunk = vec![0u8; (SLOT as usize) * 8192];
        let mut number = 0u64;
        while number < durable {
            let n = (durable - number).min(8192);
            let bytes = &mut chunk[..(n * SLOT) as usize];
            file.read_exact_at(bytes, SLOT * (number + 1)).map_err(io)?;
            for slot in bytes.chunks_exact(SLOT as usize) {
                let key = KeyNumber(number);
                number += 1;
                if slot.iter().all(|b| *b == 0) {
                    continue;
                }
                let crc = crc32fast::hash(&slot[..124]);
                let owner = KeyOwner::from_bytes(&slot[1..34]);
                match (slot[0], owner) {
                    (1, Some(owner)) if crc.to_be_bytes() == slot[124..128] => {
                        state.owners.insert(key, owner);
                        if let Some(previous) = state.current.insert(owner, key) {
                            state.older.entry(owner).or_default().push(previous);
                        }
                    }
                    _ => return Err(damaged(format!("data key {} is damaged", key.0))),
                }
            }
        }
        Ok(DataKeys {
            path: path.to_owned(),
            file,
            wrapping,
            state: Mutex::new(state),
            syncing: Mutex::new(()),
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

    /// The owner's newest key, made (not yet durable: see [`DataKeys::sync`]) if it has none.
    pub fn current_or_new(&self, owner: KeyOwner) -> Result<KeyNumber, DataKeysError> {
        if let Some(key) = self.current(owner) {
            return Ok(key);
        }
        self.new_key(owner)
    }

    /// A new key for `owner`, which becomes its current one (not yet durable: see
    /// [`DataKeys::sync`]).
    pub fn new_key(&self, owner: KeyOwner) -> Result<KeyNumber, DataKeysError> {
        let mut state = self.state();
        let key = KeyNumber(state.slots);
        let mut plain = [0u8; KEY];
        rand_core::OsRng.fill_bytes(&mut plain);
        let mut nonce = [0u8; NONCE];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let mut slot = [0u8; SLOT as usize];
        slot[0] = 1;
        slot[1..34].copy_from_slice(&owner.to_bytes());
        slot[34..46].copy_from_slice(&nonce);
        let wrapped = self
            .wrapping
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &slot_aad(key, owner),
                },
            )
            .map_err(|_| DataKeysError::Tampered { key: key.0 })?;
        slot[46..46 + KEY + TAG].copy_from_slice(&wrapped);
        let crc = crc32fast::hash(&slot[..124]);
        slot[124..].copy_from_slice(&crc.to_be_bytes());
        self.file
            .write_all_at(&slot, SLOT * (key.0 + 1))
            .map_err(self.io())?;
        state.slots += 1;
        state.owners.insert(key, owner);
        if let Some(previous) = state.current.insert(owner, key) {
            state.older.entry(owner).or_default().push(previous);
        }
        if state.cache.len() >= CACHE_KEYS {
            state.cache.clear();
        }
        state
            .cache
            .insert(key, Arc::new(Aes256Gcm::new((&plain).into())));
        Ok(key)
    }

    /// Whether keys were made since the last [`DataKeys::sync`].
    pub fn unsynced(&self) -> bool {
        let state = self.state();
        state.durable != state.slots
    }

    /// Makes the keys made so far durable without counting them in the header (one sync):
    /// for a store's commit, which records the count it answers with the commit, and gives it
    /// back at open ([`DataKeys::open_with`]). Then the keys count as durable here too.
    pub fn sync_slots(&self) -> Result<u64, DataKeysError> {
        let _syncing = self.syncing.lock().unwrap_or_else(PoisonError::into_inner);
        let slots = self.state().slots;
        self.file.sync_data().map_err(self.io())?;
        let mut state = self.state();
        state.durable = state.durable.max(slots);
        Ok(slots)
    }

    /// Makes every key made so far durable (nothing when there is none new): synced, then
    /// counted in the header, synced.
    pub fn sync(&self) -> Result<(), DataKeysError> {
        // One sync at a time; readers of keys are not held up by it.
        let _syncing = self.syncing.lock().unwrap_or_else(PoisonError::into_inner);
        let slots = {
            let state = self.state();
            // Counted in the header, not just synced: a key a commit synced is durable only
            // once that commit is, which an attachment must not wait for.
            if state.counted == state.slots {
                return Ok(());
            }
            state.slots
        };
        self.file.sync_data().map_err(self.io())?;
        self.file
            .write_all_at(&slots.to_be_bytes(), 16)
            .map_err(self.io())?;
        self.file.sync_data().map_err(self.io())?;
        let mut state = self.state();
        state.durable = state.durable.max(slots);
        state.counted = state.counted.max(slots);
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
        self.file.sync_data().map_err(self.io())
    }

    /// Whose a held key is.
    pub fn owner_of(&self, key: KeyNumber) -> Option<KeyOwner> {
        self.state().owners.get(&key).copied()
    }

    /// Whether a key is held (not destroyed).
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
        let owner = {
            let state = self.state();
            if let Some(cipher) = state.cache.get(&key) {
                return Ok(Some(Arc::clone(cipher)));
            }
            match state.owners.get(&key) {
                Some(owner) => *owner,
                None => return Ok(None),
            }
        };
        let mut slot = [0u8; SLOT as usize];
        self.file
            .read_exact_at(&mut slot, SLOT * (key.0 + 1))
            .map_err(self.io())?;
        let plain = self
            .wrapping
            .decrypt(
                Nonce::from_slice(&slot[34..46]),
                Payload {
                    msg: &slot[46..46 + KEY + TAG],
                    aad: &slot_aad(key, owner),
                },
            )
            .map_err(|_| DataKeysError::Damaged {
                path: self.path.clone(),
                detail: format!("data key {} does not unwrap", key.0),
            })?;
        let plain: [u8; KEY] = plain.try_into().map_err(|_| DataKeysError::Damaged {
            path: self.path.clone(),
            detail: format!("data key {} is not {KEY} bytes", key.0),
        })?;
        let cipher = Arc::new(Aes256Gcm::new((&plain).into()));
        let mut state = self.state();
        if state.cache.len() >= CACHE_KEYS {
            state.cache.clear();
        }
        state.cache.insert(key, Arc::clone(&cipher));
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
        std::fs::copy(&self.path, to).map_err(self.io())?;
        File::open(to)
            .and_then(|file| file.sync_all())
            .map_err(self.io())
    }
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

/// What a slot's wrapped key is bound to: its number and its owner.
fn slot_aad(key: KeyNumber, owner: KeyOwner) -> [u8; 41] {
    let mut aad = [0u8; 41];
    aad[..8].copy_from_slice(&key.0.to_be_bytes());
    aad[8..].copy_from_slice(&owner.to_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(n: u8) -> KeyOwner {
        KeyOwner::Thread(ThreadId::from_bytes([n; 32]))
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
        assert!(
            bytes[SLOT as usize..].iter().all(|b| *b == 0),
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

    #[test]
    fn keys_never_synced_are_cut_off_and_a_damaged_slot_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data-keys");
        let storage = StorageKey::generate();
        let keys = DataKeys::open(&path, &storage).expect("opens");
        let durable = keys.new_key(thread(1)).expect("made");
        keys.sync().expect("synced");
        let unsynced = keys.new_key(thread(2)).expect("made");
        drop(keys);
        let keys = DataKeys::open(&path, &storage).expect("reopens");
        assert!(keys.holds(durable));
        assert!(!keys.holds(unsynced));
        assert_eq!(keys.current(thread(2)), None);
        drop(keys);
        // Synced for a commit, which records the count: kept when the store gives it back,
        // and counted in the header from then on.
        let keys = DataKeys::open(&path, &storage).expect("reopens");
        let committed = keys.new_key(thread(3)).expect("made");
        let count = keys.sync_slots().expect("synced");
        drop(keys);
        let keys = DataKeys::open_with(&path, &storage, count).expect("reopens");
        assert!(keys.holds(committed));
        drop(keys);
        assert!(DataKeys::open(&path, &storage)
            .expect("reopens")
            .holds(committed));
        let mut bytes = std::fs::read(&path).expect("reads");
        bytes[SLOT as usize + 60] ^= 1;
        std::fs::write(&path, bytes).expect("writes");
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
