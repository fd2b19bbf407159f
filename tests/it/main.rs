//! End-to-end tests: they run the real `threadline` binary.

mod at_rest;
mod bridge_scope;
mod browser;
mod chaos;
mod cli;
mod email;
mod federation;
mod hostile;
mod limits;
mod matrix;
mod meta;
mod node;
mod slack;
mod sms;
mod store;
mod telegram;
mod webchat;
mod xmpp;
