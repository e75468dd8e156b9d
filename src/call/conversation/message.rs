//! Leaving a message: room made in the folder (or the caller told it is full), the beep, the
//! recording, the file written whole and noted on the call, and its transcript made off the call by a
//! worker of the recognizer pool.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::{AssistantCall, Mode};
use crate::call::responder::{tones, Outbox};
use crate::speech::stt::Stt;
use crate::store::{Folder, Store};
use crate::twilio::media::CallSid;

/// The message's free-form transcript, stored with it: after the call, off its hot path (waits for
/// the model if the box has only just started).
pub(super) async fn transcribe_message(stt: Stt, store: Store, sid: CallSid, audio: Arc<Vec<i16>>) {
    if tokio::time::timeout(Duration::from_secs(120), stt.loaded()).await.is_err() {
        warn!(call = %sid, "voicemail not transcribed: the speech model is still loading");
        return;
    }
    let text = stt.transcribe_free(audio).await;
    let Some(text) = text else {
        warn!(call = %sid, "voicemail not transcribed: no speech model");
        return;
    };
    info!(call = %sid, words = text.split_whitespace().count(), "voicemail transcribed");
    if let Err(e) = store.voicemail_transcribed(&sid, &text).await {
        warn!(call = %sid, "voicemail transcript not saved: {e}");
    }
}

/// A short beep before recording.
pub(super) fn beep() -> Vec<i16> {
    tones(&[1000.0], 0.25, 9000.0)
}

impl AssistantCall {
    /// Makes room for the longest message a caller may leave, off the call; recording starts once
    /// there is room ([`AssistantCall::voicemail_opened`]).
    pub(super) fn start_voicemail(&mut self) {
        self.drop_held();
        let (store, folder, waker) = (self.kit.store.clone(), self.kit.voicemail.clone(), self.waker.clone());
        let need = Folder::room_for_recording(self.kit.voicemail_max);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let room = match store.make_room(&folder, need).await {
                Ok(room) => {
                    if room.removed > 0 {
                        info!(
                            removed = room.removed,
                            "voicemail folder at its limit: the oldest heard messages removed"
                        );
                    }
                    if !room.fits {
                        warn!(
                            used_mb = room.used / 1_000_000,
                            "voicemail folder full of messages not yet heard (calls.voicemail_folder_mb): \
                             the caller was told no message can be taken; listen to or delete messages"
                        );
                    }
                    room.fits
                }
                Err(e) => {
                    // Taking the message is worth more than knowing the folder's size.
                    warn!("cannot make room in the voicemail folder: {e}");
                    true
                }
            };
            let _ = tx.send(room);
            waker.notify_one();
        });
        self.mode = Mode::Opening(rx);
    }

    /// The folder has room (the beep, then the recording) or is full of unheard messages (the caller
    /// is told, and the box hangs up).
    pub(super) fn voicemail_opened(&mut self, room: bool, out: &mut Outbox) {
        if !room {
            self.mode = Mode::Closing;
            self.unheard.play(out, &self.kit.prompts.voicemail_full, "voicemail-full");
            out.hang_up("the voicemail folder is full");
            return;
        }
        self.unheard.play(out, &self.kit.prompts.voicemail_intro, "voicemail-intro");
        self.unheard.play(out, &beep(), "beep");
        let limit = (self.kit.voicemail_max.as_secs_f64() * 16_000.0) as usize;
        self.mode = Mode::Recording(Vec::with_capacity(limit.min(16000 * 60)));
        info!("recording a voicemail");
    }

    pub(super) fn finish_voicemail(&mut self, out: &mut Outbox) {
        out.clear();
        self.unheard.forget();
        match self.save_voicemail() {
            Some(saved) => self.mode = Mode::Saving(saved),
            None => self.voicemail_written(true, out), // nothing was said: nothing lost
        }
    }

    /// The caller hears whether their message was stored, then the box hangs up.
    pub(super) fn voicemail_written(&mut self, saved: bool, out: &mut Outbox) {
        self.mode = Mode::Closing;
        if saved {
            self.unheard.play(out, &self.kit.prompts.voicemail_saved, "voicemail-saved");
            out.hang_up("voicemail saved");
        } else {
            self.unheard.play(out, &self.kit.prompts.voicemail_not_saved, "voicemail-not-saved");
            out.hang_up("the voicemail could not be saved");
        }
    }

    /// Writes the message being recorded (then notes it in the call log and transcribes it, off the
    /// call); `None` if there was nothing to save, else whether the file was written (whole or not at
    /// all: a full card or a kill must not leave a broken message behind; see
    /// [`crate::store::Store::reconcile_voicemail`] for a kill between the file and its row).
    pub(super) fn save_voicemail(&mut self) -> Option<oneshot::Receiver<bool>> {
        let Mode::Recording(audio) = std::mem::replace(&mut self.mode, Mode::Closing) else { return None };
        if audio.is_empty() {
            return None;
        }
        let folder = self.kit.voicemail.clone();
        let (store, sid, stt, waker) =
            (self.kit.store.clone(), self.sid.clone(), self.kit.stt.clone(), self.waker.clone());
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let audio = Arc::new(audio);
            let written = {
                let (folder, sid, audio) = (folder.clone(), sid.clone(), audio.clone());
                tokio::task::spawn_blocking(move || folder.write_recording(sid.as_str(), &audio)).await
            };
            let written = match written {
                Ok(Ok(path)) => Ok(path),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send(written.is_ok());
            waker.notify_one();
            let path = match written {
                Ok(path) => path,
                Err(why) => {
                    error!(call = %sid, "voicemail not saved in {}: {why}", folder.path().display());
                    return;
                }
            };
            info!(call = %sid, path = %path.display(), "voicemail saved");
            if let Err(e) = store.voicemail_saved(&sid, &path).await {
                warn!(call = %sid, "voicemail not noted in the call log: {e}");
            }
            transcribe_message(stt, store, sid, audio).await;
        });
        Some(rx)
    }
}
