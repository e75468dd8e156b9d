//! The box's persistent state in SQLite (WAL), owned by one thread and reached through an async
//! handle: the call log. Dropping the last handle stops and joins the thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    "ALTER TABLE calls ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE callouts (
        id INTEGER PRIMARY KEY,
        contact TEXT NOT NULL,
        number TEXT NOT NULL,
        emergency INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        deadline INTEGER NOT NULL,
        next_try INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        call_sid TEXT,
        last_error TEXT
    );
    CREATE INDEX callouts_due ON callouts(state, next_try);
    CREATE TABLE sync_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    "ALTER TABLE calls ADD COLUMN voicemail_transcript TEXT;",
];

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
    pub call_sid: Option<String>,
    pub last_error: Option<String>,
}

/// How a placing attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Placed {
        call_sid: String,
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

/// A call Twilio handled while the box was away, as the sync imports it.
#[derive(Debug, Clone)]
pub struct ImportedCall {
    pub call_sid: String,
    pub from: String,
    pub to: String,
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: String,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("cannot create the data folder {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("the database {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot move the damaged database {path} aside: {source}")]
    MoveAside { path: PathBuf, source: std::io::Error },
    #[error("database {path}: {source}")]
    Sql { path: PathBuf, source: rusqlite::Error },
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
    /// What the caller said in the message (free-form recognition, made after the call).
    pub voicemail_transcript: Option<String>,
    /// A missed call or voicemail nobody has heard yet (lights the missed-call LED).
    pub waiting: bool,
}

/// Something the call log just stored, as the LAN page shows it live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Written {
    /// One turn of a conversation (`speaker`: `caller` or `box`).
    Turn { call_sid: String, speaker: String, text: String },
    /// A call's row changed (started, answered, ended, a voicemail saved or removed).
    Call { call_sid: String },
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

pub use crate::clock::now_ms;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

struct Owner {
    /// The database file, for error messages.
    path: PathBuf,
    /// What was just written, for whoever shows it live (the LAN page).
    feed: tokio::sync::broadcast::Sender<Written>,
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
/// What [`Store::reconcile_voicemail`] found and put right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VoicemailCheck {
    /// Whole messages whose row had not been updated: attached to their call.
    pub files_attached: u32,
    /// Rows that named a file no longer there: the message is forgotten.
    pub rows_cleared: u32,
    /// Writes cut short (`*.part`): removed.
    pub partial_removed: u32,
    /// Messages of calls not in the log: kept, not attached.
    pub files_unknown: u32,
}

#[derive(Clone)]
pub struct Store {
    owner: Arc<Owner>,
    /// Calls the previous run left in progress, now marked interrupted.
    pub interrupted_at_start: usize,
    /// The database file was damaged at start: where it was moved (kept, never deleted) before a
    /// new one was started.
    pub damaged_moved_to: Option<PathBuf>,
}

/// Why a database file could not be opened: damaged (not a database, or failing SQLite's check),
/// or anything else (permissions, a full disk), which moving the file aside would not cure.
enum OpenFailure {
    Damaged(String),
    Other(rusqlite::Error),
}

impl From<rusqlite::Error> for OpenFailure {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                Self::Damaged(e.to_string())
            }
            _ => Self::Other(e),
        }
    }
}

/// Opens the database (WAL, `synchronous = NORMAL`: a power cut may lose the last transactions but
/// never corrupts the file), checks it (`PRAGMA quick_check`, milliseconds for a call log) and
/// brings its schema up to date.
fn open_checked(path: &Path) -> Result<Connection, OpenFailure> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        return Err(OpenFailure::Damaged(check.lines().next().unwrap_or_default().to_owned()));
    }
    migrate(&mut conn)?;
    Ok(conn)
}

/// Renames `path` (and its -wal and -shm files) to `<name>.damaged-<UTC time>`; returns the new name.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let aside = PathBuf::from(format!("{}.damaged-{stamp}", path.display()));
    for suffix in ["-wal", "-shm", ""] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{}{suffix}", aside.display()))?;
        }
    }
    Ok(aside)
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
        let open_err = |source| StoreError::Open { path: path.clone(), source };
        let (mut conn, damaged) = match open_checked(&path) {
            Ok(conn) => (conn, None),
            Err(OpenFailure::Other(source)) => return Err(open_err(source)),
            // A damaged file is kept for whoever can rescue it; the box starts a new log.
            Err(OpenFailure::Damaged(why)) => {
                let aside = move_aside(&path).map_err(|source| StoreError::MoveAside { path: path.clone(), source })?;
                tracing::error!(
                    "the call log {} is damaged ({why}): kept as {}, a new one started",
                    path.display(),
                    aside.display()
                );
                match open_checked(&path) {
                    Ok(conn) => (conn, Some(aside)),
                    Err(OpenFailure::Other(source)) => return Err(open_err(source)),
                    Err(OpenFailure::Damaged(why)) => {
                        let reason = format!("a new one is damaged too ({why}): is the storage failing?");
                        return Err(StoreError::Damaged { path, reason });
                    }
                }
            }
        };
        let interrupted = conn
            .execute(
                "UPDATE calls SET outcome = 'interrupted', reason = 'the box stopped during the call', ended_at = ?1
                 WHERE outcome IS NULL",
                [now_ms()],
            )
            .map_err(open_err)?;
        let uncertain = conn
            .execute(
                "UPDATE callouts SET state = 'uncertain', last_error = 'the box stopped while placing it'
                 WHERE state = 'placing'",
                [],
            )
            .map_err(open_err)?;
        if uncertain > 0 {
            tracing::warn!("{uncertain} call-out(s) were being placed when the box stopped: not placed again");
        }

        let (tx, mut rx) = mpsc::channel::<Job>(256);
        let thread = std::thread::Builder::new()
            .name("voca-store".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job(&mut conn);
                }
            })
            .map_err(|source| StoreError::Dir { path: path.clone(), source })?;
        Ok(Self {
            owner: Arc::new(Owner {
                path,
                feed: tokio::sync::broadcast::channel(256).0,
                tx: Some(tx),
                thread: Some(thread),
            }),
            interrupted_at_start: interrupted,
            damaged_moved_to: damaged,
        })
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
        let done = result.await.map_err(|_| StoreError::Stopped)?;
        done.map_err(|source| StoreError::Sql { path: self.owner.path.clone(), source })
    }

    /// What the call log stores from now on, as it is stored.
    pub fn feed(&self) -> tokio::sync::broadcast::Receiver<Written> {
        self.owner.feed.subscribe()
    }

    fn tell(&self, written: Written) {
        let _ = self.owner.feed.send(written);
    }

    fn changed(&self, sid: &str) {
        self.tell(Written::Call { call_sid: sid.to_owned() });
    }

    /// Answers once the database thread has taken a job: it is not stuck (the watchdog asks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|_| Ok(())).await
    }

    /// A call reached the webhook. A retried webhook (same SID) changes nothing.
    pub async fn call_started(&self, sid: &str, direction: &str, from: &str, to: &str) -> Result<(), StoreError> {
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

    pub async fn call(&self, sid: &str) -> Result<Option<CallRecord>, StoreError> {
        let sid = sid.to_owned();
        self.run(move |c| c.query_row(&format!("{SELECT} WHERE call_sid = ?1"), [sid], record).optional()).await
    }

    /// One turn of a conversation: `speaker` is `caller` or `box`; `seq` orders a call's turns.
    pub async fn add_turn(&self, sid: &str, seq: u32, speaker: &'static str, text: &str) -> Result<(), StoreError> {
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
        let told = sid.to_owned();
        let (sid, path) = (sid.to_owned(), path.display().to_string());
        self.run(move |c| {
            c.execute("UPDATE calls SET voicemail = ?2, waiting = 1 WHERE call_sid = ?1", params![sid, path])
        })
        .await?;
        self.changed(&told);
        Ok(())
    }

    /// Makes the voicemail folder and the call log agree after a stop at any moment (run at start):
    /// a message written whole but killed before its row was updated is attached to its call (the
    /// file is named `<CallSid>-<ms>.wav`); a row whose file is gone (removed from the page, killed
    /// before the row) forgets it; a write cut short (`*.part`) is removed. Files of calls not in
    /// the log are left alone (never deleted) and counted.
    pub async fn reconcile_voicemail(&self, dir: &Path) -> Result<VoicemailCheck, StoreError> {
        let dir = dir.to_owned();
        let check = self
            .run(move |c| {
                let mut check = VoicemailCheck::default();
                let files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
                    Err(_) => Vec::new(), // no folder yet: no messages
                };
                let tx = c.transaction()?;
                for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "part")) {
                    if std::fs::remove_file(path).is_ok() {
                        check.partial_removed += 1;
                    }
                }
                let rows: Vec<(String, String)> = tx
                    .prepare("SELECT call_sid, voicemail FROM calls WHERE voicemail IS NOT NULL")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                for (sid, file) in &rows {
                    if !Path::new(file).exists() {
                        tx.execute(
                            "UPDATE calls SET voicemail = NULL, voicemail_transcript = NULL, waiting = 0 WHERE call_sid = ?1",
                            [sid],
                        )?;
                        check.rows_cleared += 1;
                    }
                }
                // By file name: the folder may have been named differently (relative, absolute) before.
                let named: std::collections::HashSet<&std::ffi::OsStr> =
                    rows.iter().filter_map(|(_, f)| Path::new(f).file_name()).collect();
                for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "wav")) {
                    if path.file_name().is_some_and(|n| named.contains(n)) {
                        continue;
                    }
                    let shown = path.display().to_string();
                    let sid = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.split('-').next()).unwrap_or("");
                    let attached = tx.execute(
                        "UPDATE calls SET voicemail = ?2, waiting = 1 WHERE call_sid = ?1 AND voicemail IS NULL",
                        params![sid, shown],
                    )?;
                    if attached == 1 {
                        check.files_attached += 1;
                    } else {
                        check.files_unknown += 1;
                    }
                }
                tx.commit()?;
                Ok(check)
            })
            .await?;
        Ok(check)
    }

    /// Forgets the call's message (its file is the caller's to remove first); the call stays in the
    /// log. Returns the file the row named, if any.
    pub async fn voicemail_removed(&self, sid: &str) -> Result<Option<String>, StoreError> {
        let told = sid.to_owned();
        let sid = sid.to_owned();
        let removed = self
            .run(move |c| {
                let tx = c.transaction()?;
                let file: Option<String> = tx
                    .query_row("SELECT voicemail FROM calls WHERE call_sid = ?1", [&sid], |r| r.get(0))
                    .optional()?
                    .flatten();
                tx.execute(
                    "UPDATE calls SET voicemail = NULL, voicemail_transcript = NULL, waiting = 0 WHERE call_sid = ?1",
                    [&sid],
                )?;
                tx.commit()?;
                Ok(file)
            })
            .await?;
        self.changed(&told);
        Ok(removed)
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

    /// Stores the free-form transcript of the call's message.
    pub async fn voicemail_transcribed(&self, sid: &str, text: &str) -> Result<(), StoreError> {
        let (sid, text) = (sid.to_owned(), text.to_owned());
        self.run(move |c| {
            c.execute("UPDATE calls SET voicemail_transcript = ?2 WHERE call_sid = ?1", params![sid, text])
        })
        .await
        .map(drop)
    }

    /// Marks a call as waiting to be heard (missed, or a message was left).
    pub async fn mark_waiting(&self, sid: &str) -> Result<(), StoreError> {
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

    pub async fn mark_heard(&self, sids: Vec<String>) -> Result<(), StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            for sid in &sids {
                tx.execute("UPDATE calls SET waiting = 0 WHERE call_sid = ?1", [sid])?;
            }
            tx.commit()
        })
        .await
    }

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

    /// Every call-out, oldest first.
    pub async fn callouts(&self) -> Result<Vec<CallOutRow>, StoreError> {
        self.run(|c| {
            let mut stmt = c.prepare_cached(&format!("{SELECT_CALLOUT} ORDER BY id"))?;
            let rows = stmt.query_map([], callout_row)?;
            rows.collect()
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

const SELECT: &str = "SELECT call_sid, direction, from_number, to_number, created_at, answered_at, ended_at,
    duration_ms, outcome, reason, voicemail, waiting, voicemail_transcript FROM calls";

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
    async fn the_voicemail_folder_and_the_log_are_made_to_agree_after_a_kill() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let vm = dir.path().join("voicemail");
        std::fs::create_dir_all(&vm).expect("folder");
        let sids = [
            "CA00000000000000000000000000000001",
            "CA00000000000000000000000000000002",
            "CA00000000000000000000000000000003",
        ];
        for sid in sids {
            store.call_started(sid, "inbound", "+15551234567", "+15557654321").await.expect("start");
        }
        // Killed after the file was renamed into place, before the row: the message is attached.
        let whole = vm.join(format!("{}-1000.wav", sids[0]));
        crate::audio::wav::write_whole(&whole, 16000, &[1, 2, 3]).expect("write");
        // Removed from the page (the file first), killed before the row: the row forgets it.
        let gone = vm.join(format!("{}-2000.wav", sids[1]));
        store.voicemail_saved(sids[1], &gone).await.expect("saved");
        // Killed in the middle of writing: the partial file goes.
        std::fs::write(crate::audio::wav::partial_name(&vm.join(format!("{}-3000.wav", sids[2]))), b"RIFF")
            .expect("part");
        // A message of a call the log does not know: kept.
        let stranger = vm.join("CA0000000000000000000000000000ffff-4000.wav");
        std::fs::write(&stranger, b"RIFF").expect("stranger");
        // And one that is as it should be.
        let fine = vm.join(format!("{}-5000.wav", sids[2]));
        crate::audio::wav::write_whole(&fine, 16000, &[4, 5]).expect("write");
        store.voicemail_saved(sids[2], &fine).await.expect("saved");

        let check = store.reconcile_voicemail(&vm).await.expect("reconcile");
        assert_eq!(check, VoicemailCheck { files_attached: 1, rows_cleared: 1, partial_removed: 1, files_unknown: 1 });
        let row = |sid: &'static str| {
            let store = store.clone();
            async move { store.call(sid).await.expect("store").expect("row") }
        };
        assert_eq!(row(sids[0]).await.voicemail, Some(whole.display().to_string()));
        assert!(row(sids[0]).await.waiting, "an attached message waits to be heard");
        assert_eq!(row(sids[1]).await.voicemail, None);
        assert_eq!(row(sids[2]).await.voicemail, Some(fine.display().to_string()));
        assert!(stranger.exists(), "never deleted");
        let names: Vec<String> =
            std::fs::read_dir(&vm).expect("list").flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
        assert!(names.iter().all(|n| !n.ends_with(".part")), "{names:?}");
        assert_eq!(
            store.reconcile_voicemail(&vm).await.expect("again"),
            VoicemailCheck { files_unknown: 1, ..Default::default() }
        );
    }

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

    /// The files in `dir` whose names start with `prefix`.
    fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
            .collect();
        found.sort();
        found
    }

    #[tokio::test]
    async fn a_file_that_is_no_database_is_kept_aside_and_a_new_log_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = b"this was never a database, but it may be someone's file".repeat(100);
        std::fs::write(dir.path().join("voca.db"), &garbage).expect("write");
        let store = Store::open(dir.path()).expect("the box starts anyway");
        let aside = store.damaged_moved_to.clone().expect("the damage is reported");
        assert!(aside.file_name().expect("name").to_string_lossy().starts_with("voca.db.damaged-"), "{aside:?}");
        assert_eq!(std::fs::read(&aside).expect("kept"), garbage, "kept byte for byte");
        store.call_started(SID, "inbound", "+15551234567", "+15557654321").await.expect("the new log works");
        assert_eq!(store.recent_calls(10).await.expect("list").len(), 1);
        drop(store);
        let again = Store::open(dir.path()).expect("reopen");
        assert_eq!(again.damaged_moved_to, None, "the new log is sound");
        assert_eq!(again.recent_calls(10).await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn a_database_with_damaged_pages_is_kept_aside_and_a_new_log_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            for i in 0..200 {
                let sid = format!("CA{i:032}");
                store.call_started(&sid, "inbound", "+15551234567", "+15557654321").await.expect("start");
                store.add_turn(&sid, 1, "caller", &"words ".repeat(40)).await.expect("turn");
            }
        }
        // Scribble over pages in the middle of the file (a card that failed mid-write).
        let path = dir.path().join("voca.db");
        let mut bytes = std::fs::read(&path).expect("read");
        assert!(bytes.len() > 8 * 4096, "a file of several pages: {}", bytes.len());
        bytes[4096..4 * 4096].fill(0xA5);
        std::fs::write(&path, &bytes).expect("write");
        let store = Store::open(dir.path()).expect("the box starts anyway");
        let aside = store.damaged_moved_to.clone().expect("quick_check finds the damage");
        assert_eq!(std::fs::read(&aside).expect("kept"), bytes);
        assert_eq!(files_starting(dir.path(), "voca.db.damaged-").len(), 1, "only the database file was there");
        assert!(store.recent_calls(10).await.expect("list").is_empty(), "a new, empty log");
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

    #[tokio::test]
    async fn an_unwritable_data_dir_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let e = Store::open(&file.join("sub")).expect_err("not a dir");
        assert!(e.to_string().contains("sub"), "{e}");
    }
}
