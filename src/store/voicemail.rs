//! Voicemail: the one owner of the voicemail folder and of its rows in the call log. The
//! [`Folder`] names messages (`<CallSid>-<ms>.wav` for a recording on the box, `<RecordingSid>.wav`
//! for one downloaded from Twilio), writes them whole (never half a message under its real name),
//! reads them back (only files inside it), keeps within its size (`calls.voicemail_folder_mb`: the
//! oldest heard messages make room, never an unheard one), and is made to agree with the log after a
//! stop at any moment; the rows note, transcribe and forget messages.

use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};
use crate::twilio::media::{CallSid, RecordingSid};

/// The voicemail folder, `<data_dir>/voicemail`: everyone who writes, serves or plays a message
/// asks it. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    dir: PathBuf,
    /// The most the folder may hold, in bytes.
    limit: u64,
}

/// A 16 kHz, 16-bit mono WAV: bytes per second of a message recorded on the box.
pub const RECORDING_BYTES_PER_SECOND: u64 = 32_000;

impl Folder {
    /// The folder, unbounded until [`Folder::limited_to`] says otherwise.
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join("voicemail"), limit: u64::MAX }
    }

    /// The folder as the configuration bounds it (`calls.voicemail_folder_mb`).
    pub fn limited_to(self, bytes: u64) -> Self {
        Self { limit: bytes, ..self }
    }

    /// The room a recording of `length` needs (its WAV header included).
    pub fn room_for_recording(length: std::time::Duration) -> u64 {
        44 + (length.as_secs_f64() * RECORDING_BYTES_PER_SECOND as f64).ceil() as u64
    }

    /// Bytes held by the folder's files now (whole messages, writes under way and files of calls
    /// not in the log alike). Blocking.
    pub fn used(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes a message recorded on the box for `call_sid` (16 kHz audio), whole; returns its file.
    /// Blocking: call it off the async runtime.
    pub fn write_recording(&self, call_sid: &str, audio: &[i16]) -> std::io::Result<PathBuf> {
        let path = self.dir.join(format!("{call_sid}-{}.wav", super::now_ms()));
        self.write_whole(&path, &crate::audio::wav::encode(16_000, audio))?;
        Ok(path)
    }

    /// Where a recording downloaded from Twilio is kept.
    pub fn download_path(&self, recording_sid: &RecordingSid) -> PathBuf {
        self.dir.join(format!("{}.wav", recording_sid.as_str()))
    }

    /// Writes a downloaded recording (a WAV as Twilio sent it) whole at [`Folder::download_path`].
    /// Blocking: call it off the async runtime.
    pub fn write_download(&self, recording_sid: &RecordingSid, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.download_path(recording_sid);
        self.write_whole(&path, bytes)?;
        Ok(path)
    }

    /// Writes `bytes` so that `path` is either absent or complete, even if the process is killed or
    /// the card fills: to `<path>.part`, synced, then renamed. On failure the partial file goes.
    fn write_whole(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let part = partial_name(path);
        let written = std::fs::File::create(&part).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        let result = written.and_then(|()| std::fs::rename(&part, path));
        if result.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        result
    }

    /// The file a call's row names, only if it lies inside the folder (a row never makes the box
    /// read or serve a file elsewhere).
    pub fn file(&self, named: &str) -> Option<PathBuf> {
        let path = PathBuf::from(named);
        let inside = path.canonicalize().ok().zip(self.dir.canonicalize().ok()).is_some_and(|(f, d)| f.starts_with(d));
        inside.then_some(path)
    }

    /// A message as 16 kHz audio. Blocking: call it off the async runtime.
    pub fn read(&self, path: &Path) -> Result<Vec<i16>, crate::audio::wav::WavError> {
        crate::audio::wav::read_at(path, 16_000)
    }
}

/// The name a message is written under before it is complete.
fn partial_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    name.into()
}

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

/// What [`Store::make_room`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    /// The folder now has room for what was asked.
    pub fits: bool,
    /// Heard messages removed to make it.
    pub removed: u32,
    /// Bytes the folder holds now.
    pub used: u64,
}

impl Store {
    /// Makes room for `need` more bytes in the folder, within its limit: the oldest messages already
    /// heard go first (their calls stay in the log, shown without a message); a message not yet heard
    /// is never removed to make room. Run on the call log's thread, so no other change to the rows
    /// comes in between.
    pub async fn make_room(&self, folder: &Folder, need: u64) -> Result<Room, StoreError> {
        let folder = folder.clone();
        let (room, cleared) = self
            .run(move |c| {
                let mut used = folder.used();
                let mut cleared = Vec::new();
                if used.saturating_add(need) > folder.limit {
                    let heard: Vec<(String, String)> = c
                        .prepare(
                            "SELECT call_sid, voicemail FROM calls WHERE voicemail IS NOT NULL AND waiting = 0 \
                             ORDER BY created_at, id",
                        )?
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<_, _>>()?;
                    for (sid, named) in heard {
                        if used.saturating_add(need) <= folder.limit {
                            break;
                        }
                        let Some(file) = folder.file(&named) else { continue };
                        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                        // The file first, as the page does: a row never names a file that is gone
                        // for good while the file is still there.
                        if std::fs::remove_file(&file).is_ok() {
                            c.execute(
                                "UPDATE calls SET voicemail = NULL, voicemail_transcript = NULL WHERE call_sid = ?1",
                                [&sid],
                            )?;
                            used = used.saturating_sub(size);
                            cleared.push(sid);
                        }
                    }
                }
                let room =
                    Room { fits: used.saturating_add(need) <= folder.limit, removed: cleared.len() as u32, used };
                Ok((room, cleared))
            })
            .await?;
        for sid in cleared {
            self.changed(&CallSid::trusted(sid));
        }
        Ok(room)
    }

    /// Notes the caller's recorded message on the call.
    pub async fn voicemail_saved(&self, sid: &CallSid, path: &Path) -> Result<(), StoreError> {
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
    pub async fn reconcile_voicemail(&self, folder: &Folder) -> Result<VoicemailCheck, StoreError> {
        let dir = folder.path().to_owned();
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
    pub async fn voicemail_removed(&self, sid: &CallSid) -> Result<Option<String>, StoreError> {
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

    /// Stores the free-form transcript of the call's message.
    pub async fn voicemail_transcribed(&self, sid: &CallSid, text: &str) -> Result<(), StoreError> {
        let (sid, text) = (sid.to_owned(), text.to_owned());
        self.run(move |c| {
            c.execute("UPDATE calls SET voicemail_transcript = ?2 WHERE call_sid = ?1", params![sid, text])
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_voicemail_folder_and_the_log_are_made_to_agree_after_a_kill() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let folder = Folder::new(dir.path());
        let vm = folder.path().to_owned();
        std::fs::create_dir_all(&vm).expect("folder");
        let sids = [
            "CA00000000000000000000000000000001",
            "CA00000000000000000000000000000002",
            "CA00000000000000000000000000000003",
        ];
        for sid in sids {
            store
                .call_started(&CallSid::trusted(sid.into()), "inbound", "+15551234567", "+15557654321")
                .await
                .expect("start");
        }
        // Killed after the file was renamed into place, before the row: the message is attached.
        let whole = folder.write_recording(sids[0], &[1, 2, 3]).expect("write");
        // Removed from the page (the file first), killed before the row: the row forgets it.
        let gone = vm.join(format!("{}-2000.wav", sids[1]));
        store.voicemail_saved(&CallSid::trusted(sids[1].into()), &gone).await.expect("saved");
        // Killed in the middle of writing: the partial file goes.
        std::fs::write(partial_name(&vm.join(format!("{}-3000.wav", sids[2]))), b"RIFF").expect("part");
        // A message of a call the log does not know: kept.
        let stranger = vm.join("CA0000000000000000000000000000ffff-4000.wav");
        std::fs::write(&stranger, b"RIFF").expect("stranger");
        // And one that is as it should be.
        let fine = folder
            .write_download(&RecordingSid::trusted("RE0000000000000000000000000000005".into()), b"RIFF")
            .expect("write");
        store.voicemail_saved(&CallSid::trusted(sids[2].into()), &fine).await.expect("saved");

        let check = store.reconcile_voicemail(&folder).await.expect("reconcile");
        assert_eq!(check, VoicemailCheck { files_attached: 1, rows_cleared: 1, partial_removed: 1, files_unknown: 1 });
        let row = |sid: &'static str| {
            let store = store.clone();
            async move { store.call(&CallSid::trusted(sid.into())).await.expect("store").expect("row") }
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
            store.reconcile_voicemail(&folder).await.expect("again"),
            VoicemailCheck { files_unknown: 1, ..Default::default() }
        );
    }

    #[tokio::test]
    async fn room_is_made_from_the_oldest_heard_messages_and_never_from_an_unheard_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        // Room for three 1,000-byte messages and a little over.
        let folder = Folder::new(dir.path()).limited_to(3_500);
        let sid = |i: u32| CallSid::trusted(format!("CA{i:032}"));
        let mut files = Vec::new();
        for i in 1..=3 {
            store.call_started(&sid(i), "inbound", "+15551234567", "+15557654321").await.expect("start");
            let file = folder.write_download(&RecordingSid::trusted(format!("RE{i:032}")), &[0; 1_000]).expect("write");
            store.voicemail_saved(&sid(i), &file).await.expect("saved");
            files.push(file);
        }
        assert_eq!(store.make_room(&folder, 400).await.expect("room"), Room { fits: true, removed: 0, used: 3_000 });
        // All unheard: nothing may go, and there is no room for another.
        assert_eq!(store.make_room(&folder, 1_000).await.expect("room"), Room { fits: false, removed: 0, used: 3_000 });
        assert!(files.iter().all(|f| f.exists()));
        // The second and third heard: the second (the older) goes, the third stays, the first
        // (unheard, though oldest) stays.
        store.mark_heard(vec![sid(3), sid(2)]).await.expect("heard");
        assert_eq!(store.make_room(&folder, 1_000).await.expect("room"), Room { fits: true, removed: 1, used: 2_000 });
        assert!(files[0].exists() && !files[1].exists() && files[2].exists());
        let row = store.call(&sid(2)).await.expect("store").expect("row");
        assert_eq!(row.voicemail, None, "the row no longer names the removed file");
        // More than the folder can ever hold: the heard one goes too, and still no room.
        assert_eq!(store.make_room(&folder, 3_000).await.expect("room"), Room { fits: false, removed: 1, used: 1_000 });
        assert!(files[0].exists(), "an unheard message is never removed to make room");
    }

    #[test]
    fn the_folder_reads_back_only_its_own_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = Folder::new(dir.path());
        let path = folder.write_recording("CA00000000000000000000000000000001", &[7, 8, 9]).expect("write");
        assert_eq!(folder.read(&path).expect("read"), vec![7, 8, 9]);
        assert_eq!(folder.file(&path.display().to_string()), Some(path.clone()));
        let outside = dir.path().join("elsewhere.wav");
        std::fs::write(&outside, b"RIFF").expect("write");
        assert_eq!(folder.file(&outside.display().to_string()), None);
        let sneaky = folder.path().join("../elsewhere.wav");
        assert_eq!(folder.file(&sneaky.display().to_string()), None);
    }
}
