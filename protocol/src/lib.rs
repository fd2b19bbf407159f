//! Threadline's signed common protocol.
//!
//! Threadline nodes keep a business's conversations with its customers. Every fact is an
//! **event**, signed by whoever introduced it: a bridge (a customer's message arriving from
//! email, WhatsApp, the web chat), a node (an agent's reply, housekeeping), or an agent's own
//! key. Events form two kinds of logs, each a DAG of signed events:
//!
//! - a **thread**: one conversation with one contact, shared by its member orgs;
//! - an org's **directory**: its contacts, their handles, attributes and consent, and the
//!   certificates and revocations of its keys.
//!
//! Any two replicas holding the same set of events compute the same linear order and the same
//! derived state, whatever order the events arrived in. Events carry a signed header and
//! erasable content; erasing content (GDPR) keeps the header, so the DAG stays verifiable.
//!
//! This crate is pure: no I/O, no clock (callers pass `now`), no randomness unless the caller
//! passes a generator. docs/PROTOCOL.md specifies the bytes; `tests/vectors/` fixes them.
//!
//! # Layout
//! - [`codec`]: the one canonical encoding (bincode 2.0.1, fixed configuration, strict decode).
//! - [`digest`]: domain separation for signatures and hashes.
//! - [`key`], [`id`], [`channel`], [`name`], [`time`]: keys, ids, handles, short strings, time.
//! - [`cert`]: certificates (NodeCert, BridgeCert, AgentCert are [`cert::CertRole`]s).
//! - [`event`]: headers, kinds, content, signing and verification (also in batches).
//! - [`dag`]: the DAG of one log and its linear order.
//! - [`auth`]: the auth rules.
//! - [`thread`], [`directory`]: the two kinds of log with their derived state.
//! - [`sync`]: the messages nodes exchange to replicate.
//! - [`limits`]: every size limit.

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod auth;
pub mod cert;
pub mod channel;
pub mod codec;
pub mod dag;
pub mod digest;
pub mod directory;
pub mod event;
pub mod id;
pub mod key;
pub mod limits;
pub mod name;
pub mod sync;
pub mod thread;
pub mod time;
mod verify;

pub use auth::{AuthError, Certificates};
pub use cert::{CertRole, Certificate, CertificateBody};
pub use channel::{ChannelKind, ChannelSet, Handle};
pub use dag::{Dag, DagError, Inserted};
pub use directory::{Directory, DirectoryState};
pub use event::{Content, Draft, Event, EventKind, Scope, ScopeId, VerifiedEvent};
pub use id::{AgentId, ContactId, EventId, StateHash, ThreadId};
pub use key::{NodeId, OrgId, PublicKey, SecretKey, Signature};
pub use thread::{IngestError, Thread, ThreadState};
pub use time::Timestamp;
