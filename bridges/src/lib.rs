//! Threadline bridges: the bridge SDK and the built-in bridges (web chat first; email, Matrix,
//! XMPP, WhatsApp, Messenger, Slack, Telegram and SMS follow the same shape).
//!
//! **Architecture Invariant:** bridges know nothing about sled, libp2p or node internals. They
//! depend on [`threadline_protocol`] and this crate's [`sdk`] only: a bridge turns an external
//! app's message into an inbound event signed with its own certified key, and answers
//! deliveries with signed receipts. The node hosts built-in bridges by giving them a
//! [`sdk::NodeLink`]; a standalone bridge gets one that speaks the node's bridge API.
//!
//! docs/BRIDGES.md explains how to write and run a bridge, with the web chat as the example.

#![warn(missing_docs)]

pub mod email;
pub mod graph;
pub mod http_link;
pub mod instagram;
pub mod matrix;
pub mod messenger;
pub mod rate;
pub mod sdk;
pub mod slack;
pub mod sms;
pub mod telegram;
pub mod webchat;
pub mod webhook;
pub mod whatsapp;
pub mod window;
pub mod xmpp;

pub use threadline_protocol as protocol;
