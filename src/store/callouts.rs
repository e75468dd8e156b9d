//! The durable call-out queue: a call-out recorded before it is placed, claimed once, retried or
//! given up, and never placed twice across restarts.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{now_ms, Store, StoreError};
use crate::twilio::media::CallSid;

/// A call-out the box was asked to place (now, or queued until the phone network is back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallOutRow {
    pub id: i64,
    pub contact: String,
    pub number: String,
    pub emergency: bool,
    pub created_at: i64,
    pub deadline: i64,
    pub attempts: i64,
    /// `pending`, `placing`, `placed`, `failed`, `expired`, or `uncertain` (the box stopped or the
    /// network failed after the request may have reached Twilio: never sent again).
    pub state: String,
    pub call_sid: Option<CallSid>,
    pub last_error: Option<String>,
}

/// How a placing attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Placed {
        call_sid: CallSid,
    },
    /// Nothing reached Twilio: try again at `next_try`.
    Retry {
        next_try: i64,
        error: String,
    },
    Failed {
        error: String,
    },
    Uncertain {
        error: String,
    },
}

const SELECT_CALLOUT: &str = "SELECT id, contact, number, emergency, created_at, deadline, attempts, state, call_sid,
    last_error FROM callouts";

fn callout_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CallOutRow> {
    Ok(CallOutRow {
        id: row.get(0)?,
        contact: row.get(1)?,
        number: row.get(2)?,
        emergency: row.get(3)?,
        created_at: row.get(4)?,
        deadline: row.get(5)?,
        attempts: row.get(6)?,
        state: row.get(7)?,
        call_sid: row.get(8)?,
        last_error: row.get(9)?,
    })
}

impl Store {
    /// Records a call-out to place; returns its id.
    pub async fn queue_callout(
        &self,
        contact: &str,
        number: &str,
        emergency: bool,
        deadline: i64,
    ) -> Result<i64, StoreError> {
        let (contact, number) = (contact.to_owned(), number.to_owned());
        self.run(move |c| {
            let now = now_ms();
            c.execute(
                "INSERT INTO callouts (contact, number, emergency, created_at, deadline, next_try)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?4)",
                params![contact, number, emergency, now, deadline],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// Takes the next call-out that is due (emergencies first) and marks it `placing`, so no other
    /// attempt (nor a restart) can place it again. Call-outs past their deadline become `expired`.
    pub async fn claim_due_callout(&self, now: i64) -> Result<Option<CallOutRow>, StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute("UPDATE callouts SET state = 'expired' WHERE state = 'pending' AND deadline < ?1", [now])?;
            let row = tx
                .query_row(
                    &format!(
                        "{SELECT_CALLOUT} WHERE state = 'pending' AND next_try <= ?1
                         ORDER BY emergency DESC, created_at LIMIT 1"
                    ),
                    [now],
                    callout_row,
                )
                .optional()?;
            if let Some(row) = &row {
                tx.execute("UPDATE callouts SET state = 'placing', attempts = attempts + 1 WHERE id = ?1", [row.id])?;
            }
            tx.commit()?;
            Ok(row.map(|mut r| {
                r.state = "placing".into();
                r.attempts += 1;
                r
            }))
        })
        .await
    }

    /// Records how an attempt to place call-out `id` ended.
    pub async fn callout_attempted(&self, id: i64, attempt: Attempt) -> Result<(), StoreError> {
        self.run(move |c| {
            match attempt {
                Attempt::Placed { call_sid } => c.execute(
                    "UPDATE callouts SET state = 'placed', call_sid = ?2, last_error = NULL WHERE id = ?1",
                    params![id, call_sid],
                ),
                Attempt::Retry { next_try, error } => c.execute(
                    "UPDATE callouts SET state = 'pending', next_try = ?2, last_error = ?3 WHERE id = ?1",
                    params![id, next_try, error],
                ),
                Attempt::Failed { error } => {
                    c.execute("UPDATE callouts SET state = 'failed', last_error = ?2 WHERE id = ?1", params![id, error])
                }
                Attempt::Uncertain { error } => c.execute(
                    "UPDATE callouts SET state = 'uncertain', last_error = ?2 WHERE id = ?1",
                    params![id, error],
                ),
            }
            .map(drop)
        })
        .await
    }

    /// The earliest time a pending call-out is due, if any.
    pub async fn next_callout_due(&self) -> Result<Option<i64>, StoreError> {
        self.run(|c| c.query_row("SELECT MIN(next_try) FROM callouts WHERE state = 'pending'", [], |r| r.get(0))).await
    }

    /// One call-out, if the queue has it.
    pub async fn callout(&self, id: i64) -> Result<Option<CallOutRow>, StoreError> {
        self.run(move |c| c.query_row(&format!("{SELECT_CALLOUT} WHERE id = ?1"), [id], callout_row).optional()).await
    }

    /// Every call-out, oldest first.
    pub async fn callouts(&self) -> Result<Vec<CallOutRow>, StoreError> {
        self.run(|c| {
            let mut stmt = c.prepare_cached(&format!("{SELECT_CALLOUT} ORDER BY id"))?;
            let rows = stmt.query_map([], callout_row)?;
            rows.collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_out_is_claimed_once_and_a_restart_never_places_it_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let far = now_ms() + 60_000;
        {
            let store = Store::open(dir.path()).expect("open");
            let normal = store.queue_callout("Alice", "+15557654321", false, far).await.expect("queue");
            let urgent = store.queue_callout("Bob", "+15559876543", true, far).await.expect("queue");
            let stale = store.queue_callout("Carol", "+15550001111", false, now_ms() - 1).await.expect("queue");
            let first = store.claim_due_callout(now_ms()).await.expect("claim").expect("due");
            assert_eq!(first.id, urgent, "emergencies first");
            let second = store.claim_due_callout(now_ms()).await.expect("claim").expect("due");
            assert_eq!((second.id, second.attempts), (normal, 1));
            assert!(store.claim_due_callout(now_ms()).await.expect("claim").is_none(), "nothing is claimed twice");
            store
                .callout_attempted(normal, Attempt::Retry { next_try: now_ms() + 30_000, error: "offline".into() })
                .await
                .expect("retry");
            assert!(store.claim_due_callout(now_ms()).await.expect("claim").is_none(), "not due yet");
            let rows = store.callouts().await.expect("rows");
            assert_eq!(rows.iter().find(|r| r.id == stale).map(|r| r.state.as_str()), Some("expired"));
            // The box dies while Bob's call is being placed.
        }
        let store = Store::open(dir.path()).expect("reopen");
        let rows = store.callouts().await.expect("rows");
        let states: Vec<&str> = rows.iter().map(|r| r.state.as_str()).collect();
        assert_eq!(states, ["pending", "uncertain", "expired"]);
        assert!(store.claim_due_callout(now_ms() + 40_000).await.expect("claim").is_some_and(|r| r.contact == "Alice"));
        assert!(store.claim_due_callout(now_ms() + 40_000).await.expect("claim").is_none(), "Bob is never re-placed");
    }
}
