//! The Threadline node: the daemon behind the `threadline` binary.
//!
//! The node is the only crate that does I/O: it keeps an org's keys and data on disk, and (in
//! later work) runs the store, the ingest pipeline, replication and the APIs. Everything it
//! signs or verifies goes through [`threadline_protocol`].
//!
//! # Layout
//! - [`data_dir`]: the data folder: its layout, creating it (`threadline init`), loading it.
//! - [`identity`]: the node's keys and their libp2p identity (PeerId).

pub mod data_dir;
pub mod identity;

pub use data_dir::{DataDir, InitError, LoadError};
pub use identity::Identity;
