//! Calls Twilio handled while the box was away, and the missed-call sync's cursor.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};
use crate::twilio::media::CallSid;

/// A call Twilio handled while the box was away, as the sync imports it.
#[derive(Debug, Clone)]
pub struct ImportedCall {
    pub call_sid: CallSid,
    pub from: String,
    pub to: String,
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: String,
}

impl Store {
    /// Adds a call Twilio handled while the box was away; returns false if the log already has it.
    pub async fn import_call(&self, call: ImportedCall) -> Result<bool, StoreError> {
        self.run(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO calls (call_sid, direction, from_number, to_number, created_at, answered_at,
                   ended_at, duration_ms, outcome, reason, waiting)
                 VALUES (?1, 'inbound', ?2, ?3, ?4, NULL, ?4 + ?5, ?5, ?6, 'handled by Twilio while the box was offline', 1)",
                params![call.call_sid, call.from, call.to, call.started_at, call.duration_ms, call.outcome],
            )
        })
        .await
        .map(|n| n > 0)
    }

    pub async fn sync_value(&self, key: &'static str) -> Result<Option<String>, StoreError> {
        self.run(move |c| c.query_row("SELECT value FROM sync_state WHERE key = ?1", [key], |r| r.get(0)).optional())
            .await
    }

    pub async fn set_sync_value(&self, key: &'static str, value: String) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO sync_state (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                params![key, value],
            )
        })
        .await
        .map(drop)
    }
}
