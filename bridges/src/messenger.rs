//! The Messenger bridge, which also serves Instagram messaging (the same webhook and Send API
//! shape), under way for issue 15. So far: [`webhook`], a delivery read into typed events. Its
//! signature is checked first, with [`crate::webhook::AppSecret`]; the Send API, the windows
//! and the hand-off codes follow.

pub mod webhook;
