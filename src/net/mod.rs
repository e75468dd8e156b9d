//! The network plumbing every face shares: [`server`], the HTTP/WebSocket server loop (limits,
//! graceful shutdown with the grace its owner passes in, the peer of each request), and
//! [`backoff`], the one retry policy (doubling pauses with jitter).

pub mod backoff;
pub mod server;

pub use backoff::Backoff;
pub use server::{finish, serve, Peer, Server};
