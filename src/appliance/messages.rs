//! Missed calls and voicemails played on the box's speaker, oldest first, then marked heard.

use tracing::warn;

use super::Appliance;
use crate::events::Activity;
use crate::store::Folder;
use crate::twilio::media::CallSid;

/// A voicemail file as 16 kHz audio (read and converted off the runtime); `None` if it cannot be.
pub(super) async fn load_message(folder: &Folder, path: String, call_sid: CallSid) -> Option<Vec<i16>> {
    let Some(file) = folder.file(&path) else {
        warn!(call = %call_sid, "voicemail {path} is no longer in the voicemail folder: not played");
        return None;
    };
    let folder = folder.clone();
    tokio::task::spawn_blocking(move || match folder.read(&file) {
        Ok(audio) => Some(audio),
        Err(e) => {
            warn!(call = %call_sid, "voicemail {path} cannot be played: {e}");
            None
        }
    })
    .await
    .ok()
    .flatten()
}

impl Appliance {
    /// Plays missed calls and voicemails, oldest first, then marks them heard.
    pub async fn play_messages(&self) {
        let waiting = match self.inner.store.waiting_calls().await {
            Ok(waiting) => waiting,
            Err(e) => {
                warn!("messages: {e}");
                return;
            }
        };
        let language = self.inner.language;
        if waiting.is_empty() {
            self.say(language.no_messages).await;
            return;
        }
        for call in &waiting {
            let digits: Vec<char> = call.from_number.chars().filter(char::is_ascii_digit).collect();
            let last4: String = digits[digits.len().saturating_sub(4)..].iter().collect();
            let message = match call.voicemail.clone() {
                Some(path) => load_message(&self.inner.voicemail, path, call.call_sid.clone()).await,
                None => None,
            };
            match message {
                Some(audio) => {
                    self.say(&language.message_from.replace("{last4}", &last4)).await;
                    self.inner.bus.set_activity(Activity::Speaking);
                    self.play_and_wait(&audio).await;
                    self.inner.bus.end_activity(Activity::Speaking);
                }
                None => self.say(&language.missed_from.replace("{last4}", &last4)).await,
            }
        }
        let sids = waiting.into_iter().map(|c| c.call_sid).collect();
        if let Err(e) = self.inner.store.mark_heard(sids).await {
            warn!("messages not marked heard: {e}");
        }
        self.inner.bus.set_waiting(0);
    }
}
