//! Attachment bytes, stored as content-addressed files: `attachments/ab/abcd…` (the blob's
//! SHA-256 in hex, under its first byte), beside the sled store.
//!
//! A blob is written to `attachments/tmp/`, synced, and renamed into place, so a file under its
//! hash is always whole. Which events refer to a blob is in the store's `blob_refs` tree; a
//! blob no event refers to any more (its events were erased) is deleted, and one that was
//! uploaded but never used is swept after [`UNUSED_BLOB_GRACE`].

use std::fs;
use std::io::{self, Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use threadline_protocol::id::BlobHash;

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
    pub fn open(dir: &Path) -> Result<Self, BlobError> {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_error("create", &tmp))?;
        for entry in fs::read_dir(&tmp).map_err(io_error("list", &tmp))? {
            let path = entry.map_err(io_error("list", &tmp))?.path();
            fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
        Ok(BlobStore {
            dir: dir.to_owned(),
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
        let shard = path.parent().unwrap_or(&self.dir).to_owned();
        fs::create_dir_all(&shard).map_err(io_error("create", &shard))?;
        let tmp = self.dir.join("tmp").join(format!(
            "{blob}.{}.{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let written = fs::File::create(&tmp)
            .and_then(|mut file| {
                file.write_all(bytes)?;
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

    /// A blob's size, if it is stored.
    pub fn size(&self, blob: &BlobHash) -> Result<Option<u64>, BlobError> {
        let path = self.path(blob);
        match fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_error("stat", &path)(err)),
        }
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

    /// A blob's bytes, if it is stored; [`BlobError::HashMismatch`] if the file no longer
    /// holds them (damaged bytes are never served).
    pub fn read(&self, blob: &BlobHash) -> Result<Option<Vec<u8>>, BlobError> {
        let path = self.path(blob);
        match fs::read(&path) {
            Ok(bytes) => {
                let found = BlobHash::of(&bytes);
                if found != *blob {
                    return Err(BlobError::HashMismatch {
                        expected: *blob,
                        found,
                    });
                }
                Ok(Some(bytes))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_error("read", &path)(err)),
        }
    }

    /// At most `max` bytes of a blob from `offset`, with the blob's size; `None` if it is not
    /// stored.
    pub fn read_range(
        &self,
        blob: &BlobHash,
        offset: u64,
        max: usize,
    ) -> Result<Option<(u64, Vec<u8>)>, BlobError> {
        let path = self.path(blob);
        let mut file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_error("open", &path)(err)),
        };
        let size = file.metadata().map_err(io_error("stat", &path))?.len();
        let mut bytes = Vec::new();
        if offset < size {
            file.seek(io::SeekFrom::Start(offset))
                .map_err(io_error("seek", &path))?;
            file.take(max as u64)
                .read_to_end(&mut bytes)
                .map_err(io_error("read", &path))?;
        }
        Ok(Some((size, bytes)))
    }

    /// Deletes a blob (nothing if it is not there).
    pub fn remove(&self, blob: &BlobHash) -> Result<(), BlobError> {
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

    #[test]
    fn a_damaged_blob_file_is_never_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobStore::open(dir.path()).expect("opens");
        let blob = blobs.put(b"the invoice").expect("stores");
        let path = blobs.path(&blob);
        let mut bytes = fs::read(&path).expect("reads");
        bytes[0] ^= 1;
        fs::write(&path, bytes).expect("writes");
        assert!(matches!(
            blobs.read(&blob),
            Err(BlobError::HashMismatch { expected, .. }) if expected == blob
        ));
    }

    #[test]
    fn a_blob_is_stored_under_its_hash_and_read_back_whole_or_in_parts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobStore::open(dir.path()).expect("opens");
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
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobStore::open(dir.path()).expect("opens");
        let claimed = BlobHash::of(b"the real attachment");
        let err = blobs
            .put_checked(&claimed, b"something else")
            .expect_err("refused");
        assert!(matches!(err, BlobError::HashMismatch { .. }), "{err}");
        assert_eq!(blobs.size(&claimed).expect("stat"), None);
        assert!(blobs.list().expect("lists").is_empty());
    }
}
