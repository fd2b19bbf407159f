//! The Threadline node: the daemon behind the `threadline` binary.
//!
//! The node is the only crate that does I/O: it keeps an org's keys and data on disk, and (in
//! later work) runs the store, the ingest pipeline, replication and the APIs. Everything it
//! signs or verifies goes through [`threadline_protocol`].
//!
//! # Layout
//! - [`server`]: `run`, the node's services over one data folder.
//! - [`ingest`]: the one ingest pipeline (verify, authorise, store, index, fan out) and its
//!   writer thread.
//! - [`store`]: the sled store: trees, keys, records, atomic write sets, group-commit flush.
//! - [`api`]: the HTTP API (agents and bridges), one file per resource.
//! - [`http`]: the HTTP server under it: header read timeout and connection caps.
//! - [`limits`]: the node's own limits on requests, threads, contacts and callers.
//! - [`admin`]: `init`, agents, bridges and tokens on a stopped node.
//! - [`config`]: `config.toml`, environment and flags.
//! - [`data_dir`]: the data folder: its layout, creating it, loading the identity.
//! - [`identity`]: the node's keys and their libp2p identity (PeerId).
//! - [`clock`]: the only place that reads the system time.

pub mod admin;
pub mod admin_requests;
pub mod api;
pub mod assignment;
pub mod automation;
pub mod bridge_host;
pub mod business_hours;
pub mod clock;
pub mod config;
pub mod consent;
pub mod contact_evidence;
pub mod contact_name;
pub mod contact_search;
pub mod conversation;
pub mod csat;
pub mod data_dir;
pub mod email_verification;
pub mod export;
pub mod http;
pub mod identity;
pub mod ingest;
pub mod limits;
pub mod matrix;
pub mod message_search;
pub mod meta;
pub mod operator;
pub mod outbound_webhooks;
pub mod presence;
pub mod replication;
pub mod replication_status;
pub mod reply_route;
pub mod reports;
pub mod retention;
pub mod server;
pub mod sla;
pub mod slack;
pub mod sms;
pub mod standalone;
pub mod store;
pub mod telegram;
pub mod thread_facts;
pub mod thread_index;
pub mod xmpp;

pub use data_dir::{DataDir, InitError, LoadError};
pub use identity::Identity;
