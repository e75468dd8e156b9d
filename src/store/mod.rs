//! The box's persistent state in SQLite (WAL), owned by one thread and reached through an async
//! handle: the call log. Dropping the last handle stops and joins the thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        call_sid TEXT NOT NULL UNIQUE,
        direction TEXT NOT NULL,
        from_number TEXT NOT NULL,
        to_number TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        answered_at INTEGER,
        ended_at INTEGER,
        duration_ms INTEGER,
        outcome TEXT,
        reason TEXT
    );
    CREATE INDEX calls_created ON calls(created_at);",
    "CREATE TABLE turns (
        id INTEGER PRIMARY KEY,
        call_sid TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        speaker TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX turns_call ON turns(call_sid);
    ALTER TABLE calls ADD COLUMN voicemail TEXT;",
];

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot create the data folder {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the database thread has stopped")]
    Stopped,
}

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
    pub call_sid: String,
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
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

struct Owner {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The async handle to the database thread. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    owner: Arc<Owner>,
    /// Calls the previous run left in progress, now marked interrupted.
    pub interrupted_at_start: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) `data_dir/voca.db`, migrates it, marks calls the last run left
    /// open as interrupted, and starts the owner thread.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Dir { path: data_dir.to_path_buf(), source })?;
        let path = data_dir.join("voca.db");
        let mut conn = Connection::open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        let open_err = |source| StoreError::Open { path: path.clone(), source };
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
        migrate(&mut conn).map_err(open_err)?;
        let interrupted = conn
            .execute(
                "UPDATE calls SET outcome = 'interrupted', reason = 'the box stopped during the call', ended_at = ?1
                 WHERE outcome IS NULL",
                [now_ms()],
            )
            .map_err(open_err)?;

        let (tx, mut rx) = mpsc::channel::<Job>(256);
        let thread = std::thread::Builder::new()
            .name("voca-store".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job(&mut conn);
                }
            })
            .map_err(|source| StoreError::Dir { path: path.clone(), source })?;
        Ok(Self { owner: Arc::new(Owner { tx: Some(tx), thread: Some(thread) }), interrupted_at_start: interrupted })
    }

    async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        let tx = self.owner.tx.as_ref().ok_or(StoreError::Stopped)?;
        tx.send(job).await.map_err(|_| StoreError::Stopped)?;
        Ok(result.await.map_err(|_| StoreError::Stopped)??)
    }

    /// A call reached the webhook. A retried webhook (same SID) changes nothing.
    pub async fn call_started(&self, sid: &str, direction: &str, from: &str, to: &str) -> Result<(), StoreError> {
        let (sid, direction, from, to) = (sid.to_owned(), direction.to_owned(), from.to_owned(), to.to_owned());
        self.run(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO calls (call_sid, direction, from_number, to_number, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![sid, direction, from, to, now_ms()],
            )
        })
        .await
        .map(drop)
    }

    pub async fn call_answered(&self, sid: &str) -> Result<(), StoreError> {
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
    pub async fn call_ended(&self, sid: &str, outcome: Outcome, reason: Option<&str>) -> Result<bool, StoreError> {
        let (sid, reason) = (sid.to_owned(), reason.map(str::to_owned));
        self.run(move |c| {
            let now = now_ms();
            c.execute(
                "UPDATE calls SET outcome = ?2, reason = ?3, ended_at = ?4,
                   duration_ms = CASE WHEN answered_at IS NULL THEN 0 ELSE ?4 - answered_at END
                 WHERE call_sid = ?1 AND outcome IS NULL",
                params![sid, outcome.as_str(), reason, now],
            )
        })
        .await
        .map(|n| n > 0)
    }

    pub async fn call(&self, sid: &str) -> Result<Option<CallRecord>, StoreError> {
        let sid = sid.to_owned();
        self.run(move |c| c.query_row(&format!("{SELECT} WHERE call_sid = ?1"), [sid], record).optional()).await
    }

    /// One turn of a conversation: `speaker` is `caller` or `box`; `seq` orders a call's turns.
    pub async fn add_turn(&self, sid: &str, seq: u32, speaker: &'static str, text: &str) -> Result<(), StoreError> {
        let (sid, text) = (sid.to_owned(), text.to_owned());
        self.run(move |c| {
            c.execute(
                "INSERT INTO turns (call_sid, seq, at, speaker, text) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![sid, seq, now_ms(), speaker, text],
            )
        })
        .await
        .map(drop)
    }

    /// The conversation of a call, in order: (speaker, text).
    pub async fn turns(&self, sid: &str) -> Result<Vec<(String, String)>, StoreError> {
        let sid = sid.to_owned();
        self.run(move |c| {
            let mut stmt = c.prepare_cached("SELECT speaker, text FROM turns WHERE call_sid = ?1 ORDER BY seq")?;
            let rows = stmt.query_map([sid], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// Notes the caller's recorded message on the call.
    pub async fn voicemail_saved(&self, sid: &str, path: &Path) -> Result<(), StoreError> {
        let (sid, path) = (sid.to_owned(), path.display().to_string());
        self.run(move |c| c.execute("UPDATE calls SET voicemail = ?2 WHERE call_sid = ?1", params![sid, path]))
            .await
            .map(drop)
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

const SELECT: &str = "SELECT call_sid, direction, from_number, to_number, created_at, answered_at, ended_at,
    duration_ms, outcome, reason, voicemail FROM calls";

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
    })
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tx = conn.transaction()?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn a_call_is_logged_from_webhook_to_end_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store.call_started(SID, "inbound", "+15551234567", "+15557654321").await.expect("start");
        store.call_started(SID, "inbound", "+15551234567", "+15557654321").await.expect("retried webhook");
        store.call_answered(SID).await.expect("answer");
        assert!(store.call_ended(SID, Outcome::Completed, None).await.expect("end"));
        assert!(!store.call_ended(SID, Outcome::Failed, Some("late")).await.expect("second end"), "first ending wins");
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
            store.call_started(SID, "inbound", "+15551234567", "+15557654321").await.expect("start");
            // Dropped without ending the call: the process "died".
        }
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.interrupted_at_start, 1);
        let call = store.call(SID).await.expect("get").expect("row kept");
        assert_eq!(call.outcome.as_deref(), Some("interrupted"));
        let again = Store::open(dir.path()).expect("reopen again");
        assert_eq!(again.interrupted_at_start, 0, "nothing is lost or re-marked");
    }

    #[tokio::test]
    async fn an_unwritable_data_dir_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let e = Store::open(&file.join("sub")).expect_err("not a dir");
        assert!(e.to_string().contains("sub"), "{e}");
    }
}
