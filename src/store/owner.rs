//! The database's owner thread and the async handle everyone else holds: jobs go to the thread
//! through a bounded channel, results come back; the live feed of what was written; the errors.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;
use serde::Serialize;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use super::schema::{move_aside, open_checked, OpenFailure};

use crate::twilio::media::CallSid;

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
    #[error("no call log at {path} yet: the box writes it when it first runs (check `device.data_dir`)")]
    NoLog { path: PathBuf },
}

/// A call SID goes into the log as its text and comes back as the SID the box stored.
impl rusqlite::types::ToSql for CallSid {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl rusqlite::types::FromSql for CallSid {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        value.as_str().map(|s| CallSid::trusted(s.to_owned()))
    }
}

/// Something the call log just stored, as the LAN page shows it live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Written {
    /// One turn of a conversation (`speaker`: `caller` or `box`).
    Turn { call_sid: CallSid, speaker: String, text: String },
    /// A call's row changed (started, answered, ended, a voicemail saved or removed).
    Call { call_sid: CallSid },
}

use crate::clock::now_ms;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

struct Owner {
    /// The database file, for error messages.
    path: PathBuf,
    /// What was just written, for whoever shows it live (the LAN page).
    feed: tokio::sync::broadcast::Sender<Written>,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Owner {
    /// Starts the thread that owns `conn`.
    fn start(mut conn: Connection, path: PathBuf) -> Result<Self, StoreError> {
        let (tx, mut rx) = mpsc::channel::<Job>(256);
        let thread = std::thread::Builder::new()
            .name("voca-store".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    job(&mut conn);
                }
            })
            .map_err(|source| StoreError::Dir { path: path.clone(), source })?;
        Ok(Self { path, feed: tokio::sync::broadcast::channel(256).0, tx: Some(tx), thread: Some(thread) })
    }
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
    /// The database file was damaged at start: where it was moved (kept, never deleted) before a
    /// new one was started.
    pub damaged_moved_to: Option<PathBuf>,
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
        let (conn, damaged) = match open_checked(&path) {
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

        let owner = Owner::start(conn, path)?;
        Ok(Self { owner: Arc::new(owner), interrupted_at_start: interrupted, damaged_moved_to: damaged })
    }

    /// Opens `data_dir/voca.db` to read only, for `voca calls` while the box may be running: no
    /// file or folder is created, nothing is migrated, and no call or call-out is touched (a box
    /// start marks what the last run left open; a reader must not).
    pub fn open_read_only(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("voca.db");
        if !path.is_file() {
            return Err(StoreError::NoLog { path });
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags)
            .and_then(|c| c.busy_timeout(std::time::Duration::from_secs(5)).map(|()| c))
            .map_err(|source| StoreError::Open { path: path.clone(), source })?;
        let owner = Owner::start(conn, path)?;
        Ok(Self { owner: Arc::new(owner), interrupted_at_start: 0, damaged_moved_to: None })
    }

    pub(super) async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
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

    pub(super) fn tell(&self, written: Written) {
        let _ = self.owner.feed.send(written);
    }

    pub(super) fn changed(&self, sid: &CallSid) {
        self.tell(Written::Call { call_sid: sid.to_owned() });
    }

    /// Answers once the database thread has taken a job: it is not stuck (the watchdog asks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|_| Ok(())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unwritable_data_dir_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let e = Store::open(&file.join("sub")).expect_err("not a dir");
        assert!(e.to_string().contains("sub"), "{e}");
    }
}
