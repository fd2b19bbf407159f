//! End-to-end tests: they run the real `threadline` binary.

mod browser;
mod cli;
mod email;
mod federation;
mod hostile;
mod node;
mod store;
mod webchat;
