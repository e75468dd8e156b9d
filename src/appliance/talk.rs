//! Push-to-talk on the box: hold the talk button, speak, and the assistant answers on the speaker.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::Appliance;
use crate::assistant::{Action, Conversation};
use crate::audio::vad::VadConfig;
use crate::events::Activity;
use crate::speech::listen::Listener;
use crate::speech::stt::{Heard, Stt};

/// Holding the talk button for less than this is a tap, not speech.
pub(super) const MIN_TALK: Duration = Duration::from_millis(300);
/// Runs a recording through a recognizer (off the runtime) and returns the final text. Right after
/// start-up it first waits for the model (at most 30 s).
pub(super) async fn recognise(stt: &Stt, audio: Vec<i16>) -> String {
    if tokio::time::timeout(Duration::from_secs(30), stt.loaded()).await.is_err() {
        warn!("push-to-talk: the speech model is still loading");
        return String::new();
    }
    let stt = stt.clone();
    tokio::task::spawn_blocking(move || {
        // The whole press is one utterance; the listener holds all of it.
        let seconds = Duration::from_millis(audio.len() as u64 / 16 + 1000);
        let mut listener = Listener::new(stt, VadConfig::default(), seconds);
        if !listener.try_lease() {
            warn!("push-to-talk: no recognizer (the speech model failed to load)");
            return String::new();
        }
        listener.utterance(&audio);
        loop {
            match listener.wait(Duration::from_secs(30) + seconds) {
                Some(Heard::Final { text, .. }) => return text,
                Some(Heard::Tentative { .. }) => {}
                Some(Heard::Missed) | None => return String::new(),
            }
        }
    })
    .await
    .unwrap_or_default()
}

impl Appliance {
    /// Talk button down: record until it comes up.
    pub(super) fn start_talking(&self) {
        if self.inner.speech.is_none() {
            warn!("push-to-talk needs speech (espeak-ng and a model)");
            return;
        }
        let mut local = self.local();
        if local.talking.is_some() || local.in_call.is_some() || local.ringing.is_some() {
            return;
        }
        let mut frames = self.inner.mic.listen(None);
        let (stop_tx, mut stop) = oneshot::channel();
        let recording = tokio::spawn(async move {
            let mut audio = Vec::with_capacity(16000 * 10);
            loop {
                tokio::select! {
                    frame = frames.recv() => match frame {
                        Some(frame) => audio.extend_from_slice(&frame[..]),
                        None => break,
                    },
                    _ = &mut stop => break,
                }
            }
            audio
        });
        local.talking = Some((Instant::now(), stop_tx, recording));
        drop(local);
        self.inner.speaker.stop_playing();
        self.inner.bus.set_activity(Activity::Listening);
    }

    /// Talk button up: recognise what was said, answer it on the speaker (or place the call).
    pub(super) async fn stop_talking(&self) {
        let Some((started, stop, recording)) = self.local().talking.take() else { return };
        let _ = stop.send(());
        let audio = recording.await.unwrap_or_default();
        self.inner.bus.end_activity(Activity::Listening);
        if started.elapsed() < MIN_TALK {
            return;
        }
        let Some(speech) = self.inner.speech.clone() else { return };
        let heard = recognise(&speech.stt, audio).await;
        info!(heard = %heard, "push-to-talk");
        self.answer_heard(&heard).await;
    }

    /// Answers what the person at the box said, on the speaker; "call Alice" places the call.
    pub async fn answer_heard(&self, heard: &str) {
        let Some(speech) = self.inner.speech.clone() else { return };
        let reply = if heard.trim().is_empty() {
            speech.assistant.fallback()
        } else {
            speech.assistant.understand(heard, &Conversation::default()).unwrap_or_else(|| speech.assistant.fallback())
        };
        self.say(&reply.text).await;
        if let Action::Call(name) = &reply.action {
            match self.contacts().into_iter().find(|c| &c.name == name) {
                Some(contact) => {
                    self.call_contact(&contact, false).await;
                }
                None => self.say(self.inner.language.no_contact).await,
            }
        }
    }
}
