//! Integration tests of the protocol crate: golden vectors, the auth rules and decode errors,
//! and convergence properties.

mod auth_rule_vectors;
mod auth_rules;
mod auth_vectors;
mod convergence;
mod decoding;
mod fixtures;
mod state_vectors;
mod vectors;
