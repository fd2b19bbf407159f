//! The WhatsApp Cloud API bridge (issue 15, under way). So far: [`webhook`], the `messages`
//! webhook read into typed events. Its delivery's signature is checked first, with
//! [`crate::webhook::AppSecret`]; the send side, the media lookup and the hand-off codes
//! follow.

pub mod webhook;
