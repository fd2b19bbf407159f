//! Signed exports of a contact (the right of access and portability): a folder with the
//! contact's whole record as JSON and the files of its conversations, and a manifest of every
//! file's SHA-256 signed by the org, which anyone verifies with `threadline verify-export`
//! (docs/OPERATIONS.md, "Exports").
//!
//! ```text
//! <export>/
//!   record.json      the contact's common record (as `threadline contact show` prints it)
//!   files/           the files of its messages, `<blob hash prefix>-<file name>`
//!   manifest.json    {"format", "org", "contact", "created_at", "files": [{"path", "size", "sha256"}]}
//!   signature.json   {"signer", "certificate", "signature"}: ed25519 over
//!                    `threadline/export/v1 ‖ 0x00 ‖ the bytes of manifest.json`
//! ```
//!
//! The signer is the org key, or, where the org key is kept offline, a node key of the org
//! with the org's certificate for it (`certificate`, hex of its canonical encoding). A
//! manifest lists every file of the folder but itself and the signature, sorted by path;
//! verification refuses a changed byte, a missing file, an unlisted one and a signature of
//! any other org.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use threadline_protocol::{
    cert::CertRole, codec, digest::Domain, Certificate, ContactId, OrgId, PublicKey, SecretKey,
    Signature, Timestamp,
};

/// The format this build writes and reads.
pub const FORMAT: &str = "threadline-export/1";
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The signature's file name.
pub const SIGNATURE: &str = "signature.json";

/// What an export lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// The org whose record it is (its key, hex).
    pub org: String,
    /// The contact.
    pub contact: String,
    /// When it was made (ms since the epoch).
    pub created_at: u64,
    /// Every file, sorted by path.
    pub files: Vec<ManifestFile>,
}

/// A file of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Its path in the folder, `/`-separated.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// The signature over the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// The signing key, hex.
    pub signer: String,
    /// The org's certificate for a node key that signed, hex; `None` when the org key signed.
    pub certificate: Option<String>,
    /// The ed25519 signature, hex.
    pub signature: String,
}

/// Who signs an export.
#[derive(Debug, Clone, Copy)]
pub enum Signer<'a> {
    /// The org key.
    Org(&'a SecretKey),
    /// A node key of the org, with the org's certificate for it.
    Node {
        /// The node key.
        key: &'a SecretKey,
        /// Its certificate.
        certificate: &'a Certificate,
    },
}

/// What a verified export is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Its manifest.
    pub manifest: Manifest,
    /// The key that signed it (the org's, or a node's the org certified).
    pub signer: PublicKey,
    /// Whether the org key itself signed.
    pub by_org_key: bool,
}

/// An export could not be written or does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The folder to write to is not empty.
    #[error("{} is not empty: an export goes into a new folder", .0.display())]
    NotEmpty(PathBuf),
    /// The manifest or signature is not what this format says.
    #[error("not a {FORMAT} export: {0}")]
    Malformed(String),
    /// The signature does not verify.
    #[error("the signature does not verify: the manifest was changed, or another key signed it")]
    BadSignature,
    /// The signer is not the org's key nor a node key the org certified.
    #[error("the signer is not of org {org}: {detail}")]
    ForeignSigner {
        /// The org the manifest names.
        org: String,
        /// Why.
        detail: String,
    },
    /// A listed file differs from the manifest or is missing.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A file is in the folder and not in the manifest.
    #[error("{0}: in the folder but not in the manifest")]
    Unlisted(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A file name from a customer's message made safe as one name in a folder: no separators,
/// no control characters, not hidden.
pub fn safe_file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.');
    if safe.is_empty() {
        "file".to_owned()
    } else {
        safe.to_owned()
    }
}

/// Writes an export of `contact` into `dir` (created; it must not exist or be empty): its
/// `record`, its `files` (name, bytes), the manifest, signed by `signer`. Answers the
/// manifest.
pub fn write(
    dir: &Path,
    org: OrgId,
    contact: ContactId,
    record: &serde_json::Value,
    files: &[(String, Vec<u8>)],
    signer: Signer<'_>,
    now: Timestamp,
) -> Result<Manifest, ExportError> {
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(ExportError::NotEmpty(dir.to_owned()));
    }
    std::fs::create_dir_all(dir.join("files")).map_err(io(dir))?;
    let mut listed = Vec::new();
    let mut put = |path: String, bytes: &[u8]| -> Result<(), ExportError> {
        let target = dir.join(&path);
        std::fs::write(&target, bytes).map_err(io(&target))?;
        listed.push(ManifestFile {
            path,
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        });
        Ok(())
    };
    let record =
        serde_json::to_vec_pretty(record).map_err(|err| ExportError::Malformed(err.to_string()))?;
    put("record.json".to_owned(), &record)?;
    for (name, bytes) in files {
        put(format!("files/{}", safe_file_name(name)), bytes)?;
    }
    listed.sort_by(|a, b| a.path.cmp(&b.path));
    listed.dedup_by(|a, b| a.path == b.path);
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        org: org.to_string(),
        contact: contact.to_string(),
        created_at: now.as_millis(),
        files: listed,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|err| ExportError::Malformed(err.to_string()))?;
    let (key, certificate) = match signer {
        Signer::Org(key) => (key, None),
        Signer::Node { key, certificate } => (
            key,
            Some(hex::encode(
                codec::encode(certificate)
                    .map_err(|err| ExportError::Malformed(err.to_string()))?,
            )),
        ),
    };
    let signature = SignatureFile {
        signer: key.public().to_string(),
        certificate,
        signature: hex::encode(key.sign(Domain::ExportManifest, &manifest_bytes).as_bytes()),
    };
    let path = dir.join(MANIFEST);
    std::fs::write(&path, &manifest_bytes).map_err(io(&path))?;
    let path = dir.join(SIGNATURE);
    let signature = serde_json::to_vec_pretty(&signature)
        .map_err(|err| ExportError::Malformed(err.to_string()))?;
    std::fs::write(&path, signature).map_err(io(&path))?;
    Ok(manifest)
}

/// A manifest path as a path under the folder: relative, plain names only.
fn listed_path(dir: &Path, path: &str) -> Result<PathBuf, ExportError> {
    let relative = Path::new(path);
    let plain = !path.is_empty()
        && relative
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
    if !plain || path.contains('\\') {
        return Err(ExportError::Malformed(format!(
            "the manifest names {path:?}, which is not a file of the folder"
        )));
    }
    Ok(dir.join(relative))
}

/// Verifies the export in `dir`: the signature over the manifest (by the org key, or a node
/// key with the org's certificate, valid when the export was made), then every listed file's
/// size and SHA-256, and that the folder holds no other file.
pub fn verify(dir: &Path) -> Result<Verified, ExportError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(io(&path))
    };
    let manifest_bytes = read(MANIFEST)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|err| ExportError::Malformed(format!("{MANIFEST}: {err}")))?;
    let signature: SignatureFile = serde_json::from_slice(&read(SIGNATURE)?)
        .map_err(|err| ExportError::Malformed(format!("{SIGNATURE}: {err}")))?;
    if manifest.format != FORMAT {
        return Err(ExportError::Malformed(format!(
            "format {:?}, this build reads {FORMAT}",
            manifest.format
        )));
    }
    let org: OrgId = manifest
        .org
        .parse()
        .map_err(|err| ExportError::Malformed(format!("org: {err}")))?;
    let signer: PublicKey = signature
        .signer
        .parse()
        .map_err(|err| ExportError::Malformed(format!("signer: {err}")))?;
    let bytes: [u8; 64] = hex::decode(&signature.signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| ExportError::Malformed("the signature is not 64 bytes of hex".to_owned()))?;
    signer
        .verify(
            Domain::ExportManifest,
            &manifest_bytes,
            &Signature::from_bytes(bytes),
        )
        .map_err(|_| ExportError::BadSignature)?;
    let foreign = |detail: String| ExportError::ForeignSigner {
        org: manifest.org.clone(),
        detail,
    };
    let by_org_key = match &signature.certificate {
        None if signer == org.0 => true,
        None => return Err(foreign("the org key did not sign it".to_owned())),
        Some(certificate) => {
            let certificate: Certificate = hex::decode(certificate)
                .ok()
                .and_then(|bytes| codec::decode(&bytes, codec::MAX_MESSAGE_BYTES).ok())
                .ok_or_else(|| {
                    ExportError::Malformed("the certificate does not decode".to_owned())
                })?;
            certificate
                .verify()
                .map_err(|err| foreign(format!("its certificate: {err}")))?;
            let body = &certificate.body;
            let made = Timestamp::from_millis(manifest.created_at);
            if body.org != org
                || body.subject != signer
                || body.role != CertRole::Node
                || made < body.not_before
                || made > body.not_after
            {
                return Err(foreign(
                    "its certificate is not the org's for this node key when the export was made"
                        .to_owned(),
                ));
            }
            false
        }
    };
    let mut listed = std::collections::BTreeSet::new();
    for file in &manifest.files {
        let path = listed_path(dir, &file.path)?;
        let bytes = std::fs::read(&path).map_err(|err| ExportError::File {
            path: file.path.clone(),
            detail: format!("cannot be read: {err}"),
        })?;
        if bytes.len() as u64 != file.size || sha256_hex(&bytes) != file.sha256 {
            return Err(ExportError::File {
                path: file.path.clone(),
                detail: "its bytes are not those the manifest lists".to_owned(),
            });
        }
        listed.insert(path);
    }
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).map_err(io(&folder))? {
            let path = entry.map_err(io(&folder))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if !listed.contains(&path)
                && path != dir.join(MANIFEST)
                && path != dir.join(SIGNATURE)
            {
                let shown = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                return Err(ExportError::Unlisted(shown));
            }
        }
    }
    Ok(Verified {
        manifest,
        signer,
        by_org_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use threadline_protocol::cert::CertificateBody;

    fn export(dir: &Path, signer: Signer<'_>, org: OrgId) -> Manifest {
        write(
            dir,
            org,
            ContactId::from_bytes([3; 16]),
            &serde_json::json!({"handles": ["email:ann@example.com"]}),
            &[("invoice.pdf".to_owned(), b"%PDF invoice".to_vec())],
            signer,
            Timestamp::from_millis(1_700_000_000_000),
        )
        .expect("writes")
    }

    #[test]
    fn an_export_verifies_and_any_change_fails() {
        let org_key = SecretKey::from_seed([1; 32]);
        let org = OrgId(org_key.public());
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("export");
        let manifest = export(&dir, Signer::Org(&org_key), org);
        assert_eq!(
            manifest
                .files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>(),
            ["files/invoice.pdf", "record.json"]
        );
        let verified = verify(&dir).expect("verifies");
        assert!(verified.by_org_key);
        assert_eq!(verified.manifest, manifest);

        // One byte of a file.
        let file = dir.join("files/invoice.pdf");
        let original = std::fs::read(&file).expect("reads");
        let mut changed = original.clone();
        changed[0] ^= 1;
        std::fs::write(&file, &changed).expect("writes");
        assert!(matches!(verify(&dir), Err(ExportError::File { .. })));
        // Removed.
        std::fs::remove_file(&file).expect("removes");
        assert!(matches!(verify(&dir), Err(ExportError::File { .. })));
        std::fs::write(&file, &original).expect("back");
        verify(&dir).expect("verifies again");
        // Added.
        std::fs::write(dir.join("files/extra.txt"), b"x").expect("writes");
        assert!(matches!(verify(&dir), Err(ExportError::Unlisted(_))));
        std::fs::remove_file(dir.join("files/extra.txt")).expect("removes");
        // One byte of the manifest.
        let manifest_path = dir.join(MANIFEST);
        let bytes = std::fs::read(&manifest_path).expect("reads");
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        std::fs::write(
            &manifest_path,
            text.replace("1700000000000", "1700000000001"),
        )
        .expect("writes");
        assert!(matches!(verify(&dir), Err(ExportError::BadSignature)));
        std::fs::write(&manifest_path, &bytes).expect("back");
        verify(&dir).expect("verifies again");
    }

    #[test]
    fn a_foreign_signature_fails_and_a_certified_node_key_passes() {
        let org_key = SecretKey::from_seed([1; 32]);
        let org = OrgId(org_key.public());
        let stranger = SecretKey::from_seed([2; 32]);
        let tmp = tempfile::tempdir().expect("tempdir");
        // Another key signs a manifest naming this org.
        let forged = tmp.path().join("forged");
        export(&forged, Signer::Org(&stranger), org);
        assert!(matches!(
            verify(&forged),
            Err(ExportError::ForeignSigner { .. })
        ));

        // A node key with the org's certificate.
        let node_key = SecretKey::from_seed([4; 32]);
        let certificate = Certificate::issue(
            &org_key,
            CertificateBody::new(
                org,
                node_key.public(),
                CertRole::Node,
                Timestamp::from_millis(1_600_000_000_000),
                Timestamp::from_millis(1_800_000_000_000),
            ),
        )
        .expect("certifies");
        let by_node = tmp.path().join("node");
        export(
            &by_node,
            Signer::Node {
                key: &node_key,
                certificate: &certificate,
            },
            org,
        );
        let verified = verify(&by_node).expect("verifies");
        assert!(!verified.by_org_key);
        assert_eq!(verified.signer, node_key.public());

        // A stranger's key with that certificate (not its own): refused.
        let stolen = tmp.path().join("stolen");
        export(
            &stolen,
            Signer::Node {
                key: &stranger,
                certificate: &certificate,
            },
            org,
        );
        assert!(matches!(
            verify(&stolen),
            Err(ExportError::ForeignSigner { .. })
        ));
    }

    #[test]
    fn a_manifest_naming_a_path_outside_the_folder_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(listed_path(tmp.path(), "../secret").is_err());
        assert!(listed_path(tmp.path(), "/etc/passwd").is_err());
        assert!(listed_path(tmp.path(), "files/a.pdf").is_ok());
    }
}
