//! Calls: the registry of active calls, one session per Media Stream, and what the box says.

pub mod callout;
pub mod conversation;
pub mod registry;
pub mod responder;
pub mod session;
pub mod sync;
pub mod webhook;
