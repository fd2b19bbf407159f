//! Attachment bytes, stored as content-addressed files: `attachments/ab/abcd…` (the blob's
//! SHA-256 in hex, under its first byte), beside the sled store.
//!
//! A blob is written to `attachments/tmp/`, synced, and renamed into place, so a file under its
//! hash is always whole. Its bytes are sealed under a data key of its own
//! ([`KeyOwner::Blob`]), in parts, so that a range reads only the parts it needs:
//!
//! | what | layout (integers big-endian) |
//! | --- | --- |
//! | header (28 bytes) | `TLBLOB01` ‖ data key u64 ‖ size u64 ‖ nonce prefix (4) |
//! | part *i* | the *i*-th [`PART`] bytes sealed (AES-256-GCM: nonce = prefix ‖ *i* u64, AAD = the blob's hash ‖ *i* u64 ‖ 1 for the last part, else 0), with its 16-byte tag |
//!
//! Every file gets a key of its own, so a nonce (its part's number) is never used twice under
//! one key.
//!
//! Deleting a blob destroys its key first, so a copy of the file (or its blocks on the disk)
//! reads as nothing. Which events refer to a blob is in the store's `blob_refs` tree; a
//! blob no event refers to any more (its events were erased) is deleted, and one that was
//! uploaded but never used is swept after [`UNUSED_BLOB_GRACE`].

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aes_gcm::aead::{Aead as _, Payload};
use aes_gcm::Nonce;
use rand_core::RngCore as _;
use threadline_protocol::id::BlobHash;

use super::data_keys::{DataKeys, DataKeysError, KeyNumber, KeyOwner};

const MAGIC: &[u8; 8] = b"TLBLOB01";
const HEADER: u64 = 28;
/// The bytes of a blob sealed together (a range reads whole parts).
pub const PART: u64 = 64 * 1024;
const TAG: u64 = 16;

/// How long a blob no event refers to is kept: long enough for a bridge to upload it and
/// then submit the message that uses it.
pub const UNUSED_BLOB_GRACE: Duration = Duration::from_secs(60 * 60);

/// A blob store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// A file operation failed.
    #[error("attachment store: {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The bytes do not hash to the blob's hash.
    #[error("the bytes of attachment {expected} hash to {found}")]
    HashMismatch {
        /// The hash asked for.
        expected: BlobHash,
        /// The bytes' hash.
        found: BlobHash,
    },
    /// Sealing or opening the bytes failed (a file changed on disk, a key not held).
    #[error("attachment {blob}: {source}")]
    Sealing {
        /// The blob.
        blob: BlobHash,
        /// What failed.
        source: DataKeysError,
    },
    /// Over the protocol's limit.
    #[error("an attachment of {size} bytes; at most {max}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

/// The directory of blob files.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    keys: Arc<DataKeys>,
}

/// A blob file's header.
#[derive(Debug, Clone, Copy)]
struct Header {
    key: KeyNumber,
    size: u64,
    prefix: [u8; 4],
}

impl Header {
    fn read(file: &fs::File) -> io::Result<Option<Header>> {
        let mut bytes = [0u8; HEADER as usize];
        match file.read_exact_at(&mut bytes, 0) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(err) => return Err(err),
        }
        if &bytes[..8] != MAGIC {
            return Ok(None);
        }
        let number = |range: std::ops::Range<usize>| {
            bytes
                .get(range)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or_default()
        };
        let mut prefix = [0u8; 4];
        prefix.copy_from_slice(&bytes[24..28]);
        Ok(Some(Header {
            key: KeyNumber(number(8..16)),
            size: number(16..24),
            prefix,
        }))
    }

    fn parts(&self) -> u64 {
        self.size.div_ceil(PART).max(1)
    }
}

/// Part `index`'s nonce and AAD.
fn part_nonce_and_aad(
    blob: &BlobHash,
    prefix: &[u8; 4],
    index: u64,
    last: bool,
) -> ([u8; 12], [u8; 41]) {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(prefix);
    nonce[4..].copy_from_slice(&index.to_be_bytes());
    let mut aad = [0u8; 41];
    aad[..32].copy_from_slice(blob.as_bytes());
    aad[32..40].copy_from_slice(&index.to_be_bytes());
    aad[40] = u8::from(last);
    (nonce, aad)
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BlobError + 'a {
    move |source| BlobError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

impl BlobStore {
    /// Opens (or creates) the blob directory `dir`, and removes what interrupted writes left
    /// in its `tmp/`.
    pub fn open(dir: &Path, keys: Arc<DataKeys>) -> Result<Self, BlobError> {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_error("create", &tmp))?;
        for entry in fs::read_dir(&tmp).map_err(io_error("list", &tmp))? {
            let path = entry.map_err(io_error("list", &tmp))?.path();
            fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
        Ok(BlobStore {
            dir: dir.to_owned(),
            keys,
        })
    }

    /// Where a blob's file is.
    pub fn path(&self, blob: &BlobHash) -> PathBuf {
        let hex = blob.to_string();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Stores `bytes` durably under their hash and returns it. Storing a blob that is there
    /// already only marks it as recently used.
    pub fn put(&self, bytes: &[u8]) -> Result<BlobHash, BlobError> {
        let max = threadline_protocol::limits::MAX_BLOB_BYTES;
        let size = bytes.len() as u64;
        if size > max {
            return Err(BlobError::TooLarge { size, max });
        }
        let blob = BlobHash::of(bytes);
        let path = self.path(&blob);
        if self.size(&blob)? == Some(size) {
            // Fresh again, so the sweep of unused blobs does not take it before its event comes.
            let touched = fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|file| file.set_modified(SystemTime::now()));
            touched.map_err(io_error("touch", &path))?;
            return Ok(blob);
        }
        let sealing = |source| BlobError::Sealing { blob, source };
        let owner = KeyOwner::Blob(blob);
        // A key of its own for every file written, so no nonce is ever used twice under one
        // (older ones, of a file this one replaces, go with the blob: `remove`).
        let key = self.keys.new_key(owner).map_err(sealing)?;
        // The key is durable before the file that needs it.
        self.keys.sync().map_err(sealing)?;
        let sealed = self.seal(&blob, key, bytes)?;
        let shard = path.parent().unwrap_or(&self.dir).to_owned();
        fs::create_dir_all(&shard).map_err(io_error("create", &shard))?;
        let tmp = self.dir.join("tmp").join(format!(
            "{blob}.{}.{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let written = fs::File::create(&tmp)
            .and_then(|mut file| {
                file.write_all(&sealed)?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, &path))
            .and_then(|()| fs::File::open(&shard)?.sync_all());
        if let Err(err) = written {
            let _ = fs::remove_file(&tmp);
            return Err(BlobError::Io {
                action: "write",
                path,
                source: err,
            });
        }
        Ok(blob)
    }

    /// `bytes` as a blob file sealed under `key`: header, then parts.
    fn seal(&self, blob: &BlobHash, key: KeyNumber, bytes: &[u8]) -> Result<Vec<u8>, BlobError> {
        let sealing = |source| BlobError::Sealing {
            blob: *blob,
            source,
        };
        let cipher = self
            .keys
            .cipher(key)
            .map_err(sealing)?
            .ok_or(sealing(DataKeysError::Tampered { key: key.0 }))?;
        let mut prefix = [0u8; 4];
        rand_core::OsRng.fill_bytes(&mut prefix);
        let header = Header {
            key,
            size: bytes.len() as u64,
            prefix,
        };
        let mut out = Vec::with_capacity(bytes.len() + 64 + (header.parts() * TAG) as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&key.0.to_be_bytes());
        out.extend_from_slice(&header.size.to_be_bytes());
        out.extend_from_slice(&prefix);
        let parts = header.parts();
        for index in 0..parts {
            let from = (index * PART) as usize;
            let to = (from + PART as usize).min(bytes.len());
            let (nonce, aad) = part_nonce_and_aad(blob, &prefix, index, index + 1 == parts);
            let part = cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &bytes[from..to],
                        aad: &aad,
                    },
                )
                .map_err(|_| sealing(DataKeysError::Tampered { key: key.0 }))?;
            out.extend_from_slice(&part);
        }
        Ok(out)
    }

    /// Stores bytes that must hash to `blob` (a blob fetched from a peer).
    pub fn put_checked(&self, blob: &BlobHash, bytes: &[u8]) -> Result<(), BlobError> {
        let found = BlobHash::of(bytes);
        if found != *blob {
            return Err(BlobError::HashMismatch {
                expected: *blob,
                found,
            });
        }
        self.put(bytes).map(drop)
    }

    /// The file of a readable blob and its header: `None` when there is no file, or its key
    /// was destroyed (the blob was erased).
    fn open_file(&self, blob: &BlobHash) -> Result<Option<(fs::File, Header)>, BlobError> {
        let path = self.path(blob);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_error("open", &path)(err)),
        };
        let Some(header) = Header::read(&file).map_err(io_error("read", &path))? else {
            return Err(BlobError::Sealing {
                blob: *blob,
                source: DataKeysError::Damaged {
                    path,
                    detail: "not a sealed attachment".to_owned(),
                },
            });
        };
        if !self.keys.holds(header.key) {
            return Ok(None);
        }
        Ok(Some((file, header)))
    }

    /// A blob's size, if it is stored.
    pub fn size(&self, blob: &BlobHash) -> Result<Option<u64>, BlobError> {
        Ok(self.open_file(blob)?.map(|(_, header)| header.size))
    }

    /// When a blob was last stored (or stored again), if it is.
    pub fn modified(&self, blob: &BlobHash) -> Result<Option<SystemTime>, BlobError> {
        let path = self.path(blob);
        match fs::metadata(&path).and_then(|meta| meta.modified()) {
            Ok(modified) => Ok(Some(modified)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_error("stat", &path)(err)),
        }
    }

    /// A blob's bytes, if it is stored; [`BlobError::Sealing`] (a part that does not open) or
    /// [`BlobError::HashMismatch`] if the file no longer holds them (damaged bytes are never
    /// served).
    pub fn read(&self, blob: &BlobHash) -> Result<Option<Vec<u8>>, BlobError> {
        let Some((file, header)) = self.open_file(blob)? else {
            return Ok(None);
        };
        let bytes = self.read_parts(blob, &file, &header, 0, header.parts())?;
        let found = BlobHash::of(&bytes);
        if found != *blob || bytes.len() as u64 != header.size {
            return Err(BlobError::HashMismatch {
                expected: *blob,
                found,
            });
        }
        Ok(Some(bytes))
    }

    /// Parts `from..to` of a blob, opened.
    fn read_parts(
        &self,
        blob: &BlobHash,
        file: &fs::File,
        header: &Header,
        from: u64,
        to: u64,
    ) -> Result<Vec<u8>, BlobError> {
        let path = self.path(blob);
        let damaged = |detail: String| BlobError::Sealing {
            blob: *blob,
            source: DataKeysError::Damaged {
                path: path.clone(),
                detail,
            },
        };
        let Some(cipher) = self
            .keys
            .cipher(header.key)
            .map_err(|source| BlobError::Sealing {
                blob: *blob,
                source,
            })?
        else {
            return Ok(Vec::new());
        };
        let parts = header.parts();
        let mut out = Vec::new();
        for index in from..to.min(parts) {
            let plain_len = if index + 1 == parts {
                header.size - index * PART
            } else {
                PART
            };
            let mut part = vec![0u8; (plain_len + TAG) as usize];
            file.read_exact_at(&mut part, HEADER + index * (PART + TAG))
                .map_err(|err| damaged(format!("part {index}: {err}")))?;
            let (nonce, aad) = part_nonce_and_aad(blob, &header.prefix, index, index + 1 == parts);
            let plain = cipher
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &part,
                        aad: &aad,
                    },
                )
                .map_err(|_| damaged(format!("part {index} does not open")))?;
            out.extend_from_slice(&plain);
        }
        Ok(out)
    }

    /// At most `max` bytes of a blob from `offset`, with the blob's size; `None` if it is not
    /// stored.
    pub fn read_range(
        &self,
        blob: &BlobHash,
        offset: u64,
        max: usize,
    ) -> Result<Option<(u64, Vec<u8>)>, BlobError> {
        let Some((file, header)) = self.open_file(blob)? else {
            return Ok(None);
        };
        if offset >= header.size || max == 0 {
            return Ok(Some((header.size, Vec::new())));
        }
        let end = header.size.min(offset.saturating_add(max as u64));
        let first = offset / PART;
        let last = (end - 1) / PART;
        let bytes = self.read_parts(blob, &file, &header, first, last + 1)?;
        let start = (offset - first * PART) as usize;
        let len = (end - offset) as usize;
        Ok(Some((
            header.size,
            bytes.get(start..start + len).unwrap_or_default().to_vec(),
        )))
    }

    /// Deletes a blob (nothing if it is not there): its key first, so the bytes are
    /// unreadable even where the file's blocks outlive it.
    pub fn remove(&self, blob: &BlobHash) -> Result<(), BlobError> {
        let keys = self.keys.keys_of(KeyOwner::Blob(*blob));
        self.keys
            .destroy(&keys)
            .map_err(|source| BlobError::Sealing {
                blob: *blob,
                source,
            })?;
        let path = self.path(blob);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_error("remove", &path)(err)),
        }
    }

    /// Every stored blob with when it was last written or stored again.
    pub fn list(&self) -> Result<Vec<(BlobHash, SystemTime)>, BlobError> {
        let mut blobs = Vec::new();
        for shard in fs::read_dir(&self.dir).map_err(io_error("list", &self.dir))? {
            let shard = shard.map_err(io_error("list", &self.dir))?.path();
            if !shard.is_dir() || shard.ends_with("tmp") {
                continue;
            }
            for entry in fs::read_dir(&shard).map_err(io_error("list", &shard))? {
                let entry = entry.map_err(io_error("list", &shard))?;
                let Some(blob) = entry
                    .file_name()
                    .to_str()
                    .and_then(|name| name.parse::<BlobHash>().ok())
                else {
                    continue;
                };
                match entry.metadata().and_then(|meta| meta.modified()) {
                    Ok(modified) => blobs.push((blob, modified)),
                    // Deleted since it was listed.
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(io_error("stat", &entry.path())(err)),
                }
            }
        }
        Ok(blobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::data_keys::StorageKey;

    fn blob_store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys =
            DataKeys::open(&dir.path().join("data-keys"), &StorageKey::generate()).expect("keys");
        let blobs =
            BlobStore::open(&dir.path().join("attachments"), Arc::new(keys)).expect("opens");
        (dir, blobs)
    }

    #[test]
    fn a_damaged_blob_file_is_never_read_back() {
        let (_dir, blobs) = blob_store();
        let blob = blobs.put(b"the invoice").expect("stores");
        let path = blobs.path(&blob);
        let original = fs::read(&path).expect("reads");
        for at in [0, HEADER as usize + 3, original.len() - 1] {
            let mut bytes = original.clone();
            bytes[at] ^= 1;
            fs::write(&path, bytes).expect("writes");
            assert!(
                matches!(blobs.read(&blob), Err(BlobError::Sealing { blob: b, .. }) if b == blob),
                "byte {at} changed"
            );
        }
    }

    #[test]
    fn a_blob_file_holds_no_plaintext_and_a_copy_reads_as_nothing_once_it_is_removed() {
        let (_dir, blobs) = blob_store();
        let bytes: Vec<u8> = b"maria's passport scan "
            .iter()
            .copied()
            .cycle()
            .take(3 * PART as usize + 100)
            .collect();
        let blob = blobs.put(&bytes).expect("stores");
        let file = fs::read(blobs.path(&blob)).expect("reads");
        assert!(!file.windows(8).any(|w| w == b"passport"), "sealed");
        assert_eq!(blobs.read(&blob).expect("reads"), Some(bytes.clone()));
        // Ranges across parts.
        let (size, part) = blobs
            .read_range(&blob, PART - 5, PART as usize + 10)
            .expect("reads")
            .expect("there");
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(part, bytes[(PART - 5) as usize..(2 * PART + 5) as usize]);
        blobs.remove(&blob).expect("removes");
        // The file put back (a copy kept elsewhere, its blocks recovered): its key is gone.
        fs::create_dir_all(blobs.path(&blob).parent().expect("shard")).expect("shard");
        fs::write(blobs.path(&blob), &file).expect("writes");
        assert_eq!(blobs.read(&blob).expect("reads"), None);
        assert_eq!(blobs.size(&blob).expect("stat"), None);
    }

    #[test]
    fn a_blob_is_stored_under_its_hash_and_read_back_whole_or_in_parts() {
        let (_dir, blobs) = blob_store();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let blob = blobs.put(&bytes).expect("stores");
        assert_eq!(blob, BlobHash::of(&bytes));
        assert_eq!(blobs.put(&bytes).expect("again"), blob, "idempotent");
        assert_eq!(blobs.read(&blob).expect("reads"), Some(bytes.clone()));
        assert_eq!(blobs.size(&blob).expect("stat"), Some(3000));
        let (size, part) = blobs
            .read_range(&blob, 1000, 1500)
            .expect("reads")
            .expect("there");
        assert_eq!((size, part.as_slice()), (3000, &bytes[1000..2500]));
        let (_, past_end) = blobs
            .read_range(&blob, 5000, 10)
            .expect("reads")
            .expect("there");
        assert!(past_end.is_empty());
        assert_eq!(
            blobs
                .list()
                .expect("lists")
                .into_iter()
                .map(|(b, _)| b)
                .collect::<Vec<_>>(),
            vec![blob]
        );
        blobs.remove(&blob).expect("removes");
        assert_eq!(blobs.read(&blob).expect("reads"), None);
        assert!(blobs.read_range(&blob, 0, 10).expect("reads").is_none());
    }

    #[test]
    fn bytes_that_do_not_match_the_hash_are_refused_and_nothing_is_stored() {
        let (_dir, blobs) = blob_store();
        let claimed = BlobHash::of(b"the real attachment");
        let err = blobs
            .put_checked(&claimed, b"something else")
            .expect_err("refused");
        assert!(matches!(err, BlobError::HashMismatch { .. }), "{err}");
        assert_eq!(blobs.size(&claimed).expect("stat"), None);
        assert!(blobs.list().expect("lists").is_empty());
    }
}
