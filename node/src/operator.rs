//! What an operator's commands on customers' records do: `threadline contact show|export`,
//! `erase contact`, `retention` and `audit`. Each runs with an ingest pipeline, the same code
//! either way: the running node's own (the command reaches it through
//! [`crate::admin_requests`]) or one over a stopped node's store.
//! Each answers the text the command prints.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use threadline_protocol::{channel::Handle, ContactId, Timestamp};

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::ingest::{DirectoryAction, Ingest, IngestError};
use crate::store::audit::{Actor, AuditAction, AuditRecord};

/// A command on customers' records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordCommand {
    /// `threadline contact show <contact>`: the common record as JSON.
    ShowContact {
        /// A contact id or a handle.
        contact: String,
    },
    /// `threadline contact export <contact> --to <dir>`: the signed export.
    ExportContact {
        /// A contact id or a handle.
        contact: String,
        /// The folder to write (absolute: the node's working folder is not the command's).
        to: PathBuf,
    },
    /// `threadline erase contact <contact>`.
    EraseContact {
        /// A contact id or a handle.
        contact: String,
    },
    /// `threadline retention [--apply]`.
    Retention {
        /// Erase what the policy names, not only list it.
        apply: bool,
    },
    /// `threadline audit [--contact <contact>]`.
    Audit {
        /// Only this contact's entries.
        contact: Option<String>,
    },
}

/// Why a record command failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Neither a contact id nor a handle.
    #[error("`{0}` is neither a contact id nor a handle")]
    NotAContact(String),
    /// No contact has the handle.
    #[error("no contact has the handle {0}")]
    NoContactWith(Handle),
    /// The pipeline refused or failed.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Reading the contact's record failed.
    #[error("{0}")]
    Record(String),
    /// Writing the export failed.
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    /// config.toml could not be read.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Carries out `command` with `ingest` (the node of `data_dir`). Answers what to print.
pub async fn carry_out(
    ingest: &Ingest,
    data_dir: &DataDir,
    command: &RecordCommand,
    now: Timestamp,
) -> Result<String, OperatorError> {
    match command {
        RecordCommand::ShowContact { contact } => {
            let id = contact_id(ingest, contact)?;
            let record = record_json(ingest, id)?;
            let text = serde_json::to_string_pretty(&record)
                .map_err(|err| OperatorError::Record(err.to_string()))?;
            audit(ingest, AuditAction::Viewed, id, now).await?;
            Ok(text)
        }
        RecordCommand::ExportContact { contact, to } => {
            let id = contact_id(ingest, contact)?;
            let record = record_json(ingest, id)?;
            let (files, missing) = record_files(ingest, &record)?;
            let identity = ingest.identity();
            let org_key = data_dir
                .load_org_key()
                .map_err(|err| OperatorError::Record(err.to_string()))?;
            // The org key signs where it is kept on this node; else this node's key, with the
            // org's certificate for it.
            let signer = match &org_key {
                Some(key) => crate::export::Signer::Org(key),
                None => crate::export::Signer::Node {
                    key: &identity.node_key,
                    certificate: &identity.node_cert,
                },
            };
            let manifest =
                crate::export::write(to, identity.org, id, &record, &files, signer, now)?;
            audit(ingest, AuditAction::Exported, id, now).await?;
            let mut text: Vec<String> = missing;
            text.push(format!(
                "exported contact {id} to {}: {} files, signed by the {}; check it with `threadline verify-export {}`",
                to.display(),
                manifest.files.len(),
                if org_key.is_some() { "org key" } else { "node key (certified by the org)" },
                to.display()
            ));
            Ok(text.join("\n"))
        }
        RecordCommand::EraseContact { contact } => {
            let id = contact_id(ingest, contact)?;
            let events = ingest.change_directory(DirectoryAction::Erase(id)).await?;
            audit(ingest, AuditAction::Erased, id, now).await?;
            Ok(format!(
                "erased contact {id}: {} erasure events signed; its data keys are destroyed, so what was stored of it can no longer be read here or from a copy of the data folder, and every node does the same as the erasure reaches it; signed headers stay",
                events.len()
            ))
        }
        RecordCommand::Retention { apply } => {
            let policy = Config::load(&data_dir.config_path(), None)?.retention;
            if !policy.is_set() {
                return Ok(format!(
                    "no retention policy: everything is kept ([retention] in {})",
                    data_dir.config_path().display()
                ));
            }
            let plan = crate::retention::plan(ingest, &policy, now)?;
            let verb = if *apply { "erasing" } else { "would erase" };
            let mut text = vec![format!("retention: {verb}")];
            text.extend(plan.lines().into_iter().map(|line| format!("  {line}")));
            if *apply && !plan.is_empty() {
                let applied = crate::retention::apply(ingest, &plan, now).await?;
                ingest.store().flush_async().await?;
                text.push(format!(
                    "erased: {} contacts, {} erasure events signed (every node of the org applies them)",
                    applied.contacts, applied.events
                ));
            } else if !apply && !plan.is_empty() {
                text.push(
                    "nothing was erased: run `threadline retention --apply` to erase it".to_owned(),
                );
            }
            Ok(text.join("\n"))
        }
        RecordCommand::Audit { contact } => {
            let contact = contact
                .as_deref()
                .map(|text| contact_id(ingest, text))
                .transpose()?;
            let trail = ingest.store().audit_trail(contact)?;
            if trail.is_empty() {
                return Ok("nothing in the audit trail".to_owned());
            }
            Ok(trail
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"))
        }
    }
}

/// A contact named by its id or by one of its handles.
pub fn contact_id(ingest: &Ingest, text: &str) -> Result<ContactId, OperatorError> {
    if let Ok(id) = text.parse::<ContactId>() {
        return Ok(id);
    }
    let handle: Handle = text
        .parse()
        .map_err(|_| OperatorError::NotAContact(text.to_owned()))?;
    let directory = ingest
        .directory()
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    directory
        .state()
        .resolve(&handle)
        .ok_or(OperatorError::NoContactWith(handle))
}

fn record_json(ingest: &Ingest, id: ContactId) -> Result<serde_json::Value, OperatorError> {
    let record = crate::api::contact_record(ingest, id)
        .map_err(|err| OperatorError::Record(err.message().to_owned()))?;
    serde_json::to_value(&record).map_err(|err| OperatorError::Record(err.to_string()))
}

/// Notes in the audit trail that the operator did `action` to the contact's record.
async fn audit(
    ingest: &Ingest,
    action: AuditAction,
    contact: ContactId,
    now: Timestamp,
) -> Result<(), OperatorError> {
    ingest.store().record_audit(&AuditRecord {
        at: now,
        actor: Actor::Operator,
        action,
        contact,
    })?;
    ingest.store().flush_async().await?;
    Ok(())
}

/// A file of an export: its name in the export and its bytes.
type ExportFile = (String, Vec<u8>);

/// The files a contact record's timeline refers to, named `<blob hash prefix>-<file name>`
/// (the JSON names each by its blob hash), read from the store; and a line for each file not
/// on this node yet.
fn record_files(
    ingest: &Ingest,
    record: &serde_json::Value,
) -> Result<(Vec<ExportFile>, Vec<String>), OperatorError> {
    let mut files = Vec::new();
    let mut missing = Vec::new();
    let events = record["timeline"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let listed = events
        .iter()
        .flat_map(|e| e["attachments"].as_array().into_iter().flatten());
    for file in listed {
        let (Some(hash), Some(name)) = (file["blob"].as_str(), file["name"].as_str()) else {
            continue;
        };
        let blob: threadline_protocol::id::BlobHash = hash
            .parse()
            .map_err(|err| OperatorError::Record(format!("file {hash}: {err}")))?;
        let prefix = hash.get(..12).unwrap_or(hash);
        match ingest
            .store()
            .blobs()
            .read(&blob)
            .map_err(|err| OperatorError::Record(format!("file {hash}: {err}")))?
        {
            Some(bytes) => files.push((
                format!("{prefix}-{}", crate::export::safe_file_name(name)),
                bytes,
            )),
            None => missing.push(format!(
                "{name} ({hash}) is not on this node yet: export it where it is, or wait until it is fetched"
            )),
        }
    }
    Ok((files, missing))
}
