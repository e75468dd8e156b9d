//! The call log's file: opened and checked (a damaged file is kept aside and a new log started),
//! and its schema brought up to date by numbered migrations.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

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

/// Why a database file could not be opened: damaged (not a database, or failing SQLite's check),
/// or anything else (permissions, a full disk), which moving the file aside would not cure.
pub(super) enum OpenFailure {
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
pub(super) fn open_checked(path: &Path) -> Result<Connection, OpenFailure> {
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
pub(super) fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
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

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
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
    use crate::store::Store;
    use crate::twilio::media::CallSid;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    fn sid(s: &str) -> CallSid {
        CallSid::parse(s).expect("a call SID")
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
        store.call_started(&sid(SID), "inbound", "+15551234567", "+15557654321").await.expect("the new log works");
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
                let sid = sid(&format!("CA{i:032}"));
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
}
