//! End-to-end tests: they run the real `threadline` binary.

mod browser;
mod cli;
mod node;
mod store;
mod webchat;
