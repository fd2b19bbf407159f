//! Threadline bridges: the bridge SDK and the built-in bridges (web chat, email, Matrix, XMPP,
//! WhatsApp, Messenger, Slack, Telegram, SMS).
//!
//! **Architecture Invariant:** bridges know nothing about sled, libp2p or node internals. They
//! depend on [`threadline_protocol`] only: a bridge turns an external app's message into an
//! inbound event signed with its own certified key, and answers deliveries with signed
//! receipts.
//!
//! The crate is empty until the bridge SDK lands with the web chat; it is in the workspace now
//! so that the dependency rule above is enforced from the start.

#![warn(missing_docs)]

pub use threadline_protocol as protocol;
