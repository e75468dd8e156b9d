//! The box's persistent state in SQLite (WAL), owned by one thread and reached through an async
//! handle: the call log. Dropping the last handle stops and joins the thread. Each table's job is
//! a file of its own: [`calls`] (calls, turns, what waits to be heard), [`voicemail`] (message
//! rows), [`callouts`] (the call-out queue), [`sync`] (calls imported after an outage); [`schema`]
//! opens, checks and migrates the file; [`owner`] is the thread that owns it and the handle to it.

mod callouts;
mod calls;
mod owner;
mod schema;
mod sync;
mod voicemail;

pub use crate::clock::now_ms;
pub use callouts::{Attempt, CallOutRow};
pub use calls::{CallRecord, Day, Outcome};
pub use owner::{Store, StoreError, Written};
pub use sync::ImportedCall;
pub use voicemail::{Folder, Room, VoicemailCheck};
