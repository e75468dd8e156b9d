//! The call log's calls and turns: a call from webhook to end, what was said, what waits to be
//! heard, the usage figures, and the records moved when the wall clock steps.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{now_ms, Store, StoreError, Written};
use crate::twilio::media::CallSid;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Completed,
    Busy,
    Rejected,
    Failed,
    NoAnswer,
    Canceled,
    /// The box stopped (or died) while the call was in progress.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Busy => "busy",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::NoAnswer => "no-answer",
            Outcome::Canceled => "canceled",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// A terminal Twilio `CallStatus`, as an outcome.
    pub fn from_call_status(status: &str) -> Option<Self> {
        Some(match status {
            "completed" => Outcome::Completed,
            "busy" => Outcome::Busy,
            "failed" => Outcome::Failed,
            "no-answer" => Outcome::NoAnswer,
            "canceled" => Outcome::Canceled,
            _ => return None,
        })
    }
}

/// One row of the call log. Numbers are stored whole (the box needs them to call back); anything
/// that logs a record masks them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    pub call_sid: CallSid,
    pub direction: String,
    pub from_number: String,
    pub to_number: String,
    pub created_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    /// The recorded message, if the caller left one.
    pub voicemail: Option<String>,
    /// What the caller said in the message (free-form recognition, made after the call).
    pub voicemail_transcript: Option<String>,
    /// A missed call or voicemail nobody has heard yet (lights the missed-call LED).
    pub waiting: bool,
}

/// One day of the usage chart (the box's local date).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Day {
    pub date: String,
    pub answered: u32,
    pub missed: u32,
    pub voicemail: u32,
    pub outgoing: u32,
    /// Minutes on the phone that day, all calls, rounded up per call.
    pub minutes: u32,
}

const SELECT: &str = "SELECT call_sid, direction, from_number, to_number, created_at, answered_at, ended_at,
    duration_ms, outcome, reason, voicemail, waiting, voicemail_transcript FROM calls";

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<CallRecord> {
    Ok(CallRecord {
        call_sid: row.get(0)?,
        direction: row.get(1)?,
        from_number: row.get(2)?,
        to_number: row.get(3)?,
        created_at: row.get(4)?,
        answered_at: row.get(5)?,
        ended_at: row.get(6)?,
        duration_ms: row.get(7)?,
        outcome: row.get(8)?,
        reason: row.get(9)?,
        voicemail: row.get(10)?,
        waiting: row.get(11)?,
        voicemail_transcript: row.get(12)?,
    })
}

impl Store {
    /// A call reached the webhook. A retried webhook (same SID) changes nothing.
    pub async fn call_started(&self, sid: &CallSid, direction: &str, from: &str, to: &str) -> Result<(), StoreError> {
        let told = sid.to_owned();
        let (sid, direction, from, to) = (sid.to_owned(), direction.to_owned(), from.to_owned(), to.to_owned());
        let done = self
            .run(move |c| {
                c.execute(
                    "INSERT OR IGNORE INTO calls (call_sid, direction, from_number, to_number, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![sid, direction, from, to, now_ms()],
                )
            })
            .await
            .map(drop);
        self.changed(&told);
        done
    }

    pub async fn call_answered(&self, sid: &CallSid) -> Result<(), StoreError> {
        let sid = sid.to_owned();
        self.run(move |c| {
            c.execute(
                "UPDATE calls SET answered_at = ?2 WHERE call_sid = ?1 AND answered_at IS NULL",
                params![sid, now_ms()],
            )
        })
        .await
        .map(drop)
    }

    /// Finalises a call. The first ending wins (the stream and the status callback both report it);
    /// returns whether this one did.
    pub async fn call_ended(&self, sid: &CallSid, outcome: Outcome, reason: Option<&str>) -> Result<bool, StoreError> {
        let told = sid.to_owned();
        let (sid, reason) = (sid.to_owned(), reason.map(str::to_owned));
        let ended = self
            .run(move |c| {
                let now = now_ms();
                c.execute(
                    "UPDATE calls SET outcome = ?2, reason = ?3, ended_at = ?4,
                   duration_ms = CASE WHEN answered_at IS NULL THEN 0 ELSE ?4 - answered_at END
                 WHERE call_sid = ?1 AND outcome IS NULL",
                    params![sid, outcome.as_str(), reason, now],
                )
            })
            .await
            .map(|n| n > 0);
        if matches!(ended, Ok(true)) {
            self.changed(&told);
        }
        ended
    }

    pub async fn call(&self, sid: &CallSid) -> Result<Option<CallRecord>, StoreError> {
        let sid = sid.to_owned();
        self.run(move |c| c.query_row(&format!("{SELECT} WHERE call_sid = ?1"), [sid], record).optional()).await
    }

    /// One turn of a conversation: `speaker` is `caller` or `box`; `seq` orders a call's turns.
    pub async fn add_turn(&self, sid: &CallSid, seq: u32, speaker: &'static str, text: &str) -> Result<(), StoreError> {
        let written = Written::Turn { call_sid: sid.to_owned(), speaker: speaker.to_owned(), text: text.to_owned() };
        let (sid, text) = (sid.to_owned(), text.to_owned());
        self.run(move |c| {
            c.execute(
                "INSERT INTO turns (call_sid, seq, at, speaker, text) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![sid, seq, now_ms(), speaker, text],
            )
        })
        .await?;
        self.tell(written);
        Ok(())
    }

    /// The conversation of a call, in order: (speaker, text).
    pub async fn turns(&self, sid: &CallSid) -> Result<Vec<(String, String)>, StoreError> {
        let sid = sid.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare_cached("SELECT speaker, text FROM turns WHERE call_sid = ?1 ORDER BY seq")?;
            let rows = stmt.query_map([sid], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// Settles the wall clock (see [`crate::clock::settle`]): after a step, this run's records and
    /// the pending call-outs move with it.
    pub async fn settle_clock(&self) {
        crate::clock::settle(|step| self.follow_step(step)).await;
    }

    /// Follows the wall clock's steps until `shutdown`.
    pub async fn follow_clock(self, shutdown: tokio_util::sync::CancellationToken) {
        crate::clock::follow_steps(|step| self.clone().follow_owned(step), shutdown).await;
    }

    async fn follow_step(&self, step: crate::clock::Step) -> Result<usize, String> {
        self.clock_stepped(step.jump, step.since, step.before).await.map_err(|e| e.to_string())
    }

    async fn follow_owned(self, step: crate::clock::Step) -> Result<usize, String> {
        self.follow_step(step).await
    }

    /// The wall clock stepped by `jump` ms: the times recorded in `[since, before)` (this run, by
    /// the old clock) move with it, and so do the deadlines and next tries of call-outs still to
    /// be placed that were asked for before it. Returns how many rows moved.
    pub async fn clock_stepped(&self, jump: i64, since: i64, before: i64) -> Result<usize, StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut moved = tx.execute(
                "UPDATE calls SET created_at = created_at + ?1,
                   answered_at = CASE WHEN answered_at < ?3 THEN answered_at + ?1 ELSE answered_at END,
                   ended_at = CASE WHEN ended_at < ?3 THEN ended_at + ?1 ELSE ended_at END
                 WHERE created_at >= ?2 AND created_at < ?3",
                params![jump, since, before],
            )?;
            moved +=
                tx.execute("UPDATE turns SET at = at + ?1 WHERE at >= ?2 AND at < ?3", params![jump, since, before])?;
            moved += tx.execute(
                "UPDATE callouts SET deadline = deadline + ?1, next_try = next_try + ?1,
                   created_at = CASE WHEN created_at >= ?2 THEN created_at + ?1 ELSE created_at END
                 WHERE state IN ('pending', 'placing') AND created_at < ?3",
                params![jump, since, before],
            )?;
            tx.commit()?;
            Ok(moved)
        })
        .await
    }

    /// Calls ever logged, by direction (`inbound`/`outbound`) and outcome (`in-progress` while
    /// open): counters that survive restarts, for `/metrics`.
    pub async fn call_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.run(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT CASE WHEN direction LIKE 'outbound%' THEN 'outbound' ELSE 'inbound' END,
                        COALESCE(outcome, 'in-progress'), COUNT(*)
                 FROM calls GROUP BY 1, 2 ORDER BY 1, 2",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))?;
            rows.collect()
        })
        .await
    }

    /// Calls per day and minutes on the phone over the last `days` days (local dates, today last).
    pub async fn usage(&self, days: u32) -> Result<Vec<Day>, StoreError> {
        use chrono::{Local, TimeZone};
        let today = Local::now().date_naive();
        let first = today - chrono::Days::new(u64::from(days.max(1) - 1));
        let since = Local
            .from_local_datetime(&first.and_hms_opt(0, 0, 0).expect("midnight exists"))
            .earliest()
            .map_or(0, |t| t.timestamp_millis());
        /// created_at, direction, answered_at, duration_ms, has a voicemail
        type Row = (i64, String, Option<i64>, Option<i64>, bool);
        let rows: Vec<Row> = self
            .run(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT created_at, direction, answered_at, duration_ms, voicemail IS NOT NULL
                     FROM calls WHERE created_at >= ?1",
                )?;
                let rows = stmt.query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
                rows.collect()
            })
            .await?;
        let mut out: Vec<Day> = (0..days.max(1))
            .map(|i| Day { date: (first + chrono::Days::new(u64::from(i))).to_string(), ..Day::default() })
            .collect();
        for (created, direction, answered, duration, voicemail) in rows {
            let Some(date) = Local.timestamp_millis_opt(created).single().map(|t| t.date_naive()) else { continue };
            let Some(day) = out.get_mut((date - first).num_days() as usize) else { continue };
            match (direction.starts_with("outbound"), voicemail, answered.is_some()) {
                (true, _, _) => day.outgoing += 1,
                (false, true, _) => day.voicemail += 1,
                (false, false, true) => day.answered += 1,
                (false, false, false) => day.missed += 1,
            }
            day.minutes += ((duration.unwrap_or(0).max(0) + 59_999) / 60_000) as u32;
        }
        Ok(out)
    }

    /// Marks a call as waiting to be heard (missed, or a message was left).
    pub async fn mark_waiting(&self, sid: &CallSid) -> Result<(), StoreError> {
        let sid = sid.to_owned();
        self.run(move |c| c.execute("UPDATE calls SET waiting = 1 WHERE call_sid = ?1", [sid])).await.map(drop)
    }

    /// Missed calls and voicemails not yet heard, oldest first.
    pub async fn waiting_calls(&self) -> Result<Vec<CallRecord>, StoreError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&format!("{SELECT} WHERE waiting = 1 ORDER BY created_at, id"))?;
            let rows = stmt.query_map([], record)?;
            rows.collect()
        })
        .await
    }

    /// How many missed calls and voicemails wait to be heard.
    pub async fn waiting_count(&self) -> Result<u32, StoreError> {
        self.run(|c| c.query_row("SELECT COUNT(*) FROM calls WHERE waiting = 1", [], |r| r.get(0))).await
    }

    pub async fn mark_heard(&self, sids: Vec<CallSid>) -> Result<(), StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            for sid in &sids {
                tx.execute("UPDATE calls SET waiting = 0 WHERE call_sid = ?1", [sid])?;
            }
            tx.commit()
        })
        .await
    }

    /// The most recent calls, newest first.
    pub async fn recent_calls(&self, limit: usize) -> Result<Vec<CallRecord>, StoreError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(&format!("{SELECT} ORDER BY created_at DESC, id DESC LIMIT ?1"))?;
            let rows = stmt.query_map([limit as i64], record)?;
            rows.collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::media::CallSid;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    fn sid(s: &str) -> CallSid {
        CallSid::parse(s).expect("a call SID")
    }

    #[tokio::test]
    async fn a_call_is_logged_from_webhook_to_end_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.call_started(&sid(SID), "inbound", "+15551234567", "+15557654321").await.expect("start");
        store.call_started(&sid(SID), "inbound", "+15551234567", "+15557654321").await.expect("retried webhook");
        store.call_answered(&sid(SID)).await.expect("answer");
        assert!(store.call_ended(&sid(SID), Outcome::Completed, None).await.expect("end"));
        assert!(
            !store.call_ended(&sid(SID), Outcome::Failed, Some("late")).await.expect("second end"),
            "first ending wins"
        );
        let calls = store.recent_calls(10).await.expect("list");
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].outcome.as_deref(), Some("completed"));
        assert!(calls[0].answered_at.is_some() && calls[0].duration_ms.is_some());
    }

    #[tokio::test]
    async fn calls_open_when_the_process_died_are_interrupted_at_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            store.call_started(&sid(SID), "inbound", "+15551234567", "+15557654321").await.expect("start");
            // Dropped without ending the call: the process "died".
        }
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.interrupted_at_start, 1);
        let call = store.call(&sid(SID)).await.expect("get").expect("row kept");
        assert_eq!(call.outcome.as_deref(), Some("interrupted"));
        let again = Store::open(dir.path()).expect("reopen again");
        assert_eq!(again.interrupted_at_start, 0, "nothing is lost or re-marked");
    }
}
