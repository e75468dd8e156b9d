//! Calls: the registry of active calls, one session per Media Stream, and what the box says.

pub mod conversation;
pub mod intercom;
pub mod registry;
pub mod responder;
pub mod session;
