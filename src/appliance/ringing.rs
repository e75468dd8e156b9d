//! Ringing the box for an incoming call (`calls.answer = "ring"`): the ring LED and tone until a
//! press answers or the ring times out.

use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::Appliance;
use crate::events::Activity;
use crate::twilio::media::CallSid;

/// A friendly two-note ring, 1.2 s of sound then 1.8 s of quiet, at 16 kHz.
pub fn ring_tone() -> Vec<i16> {
    let note = |freq: f32, ms: usize| -> Vec<i16> {
        let n = 16 * ms;
        (0..n)
            .map(|i| {
                let fade = ((i.min(n - i) as f32) / 160.0).min(1.0);
                (6000.0 * fade * (2.0 * std::f32::consts::PI * freq * i as f32 / 16000.0).sin()) as i16
            })
            .collect()
    };
    let mut tone = Vec::new();
    for _ in 0..2 {
        tone.extend(note(880.0, 300));
        tone.extend(note(660.0, 300));
    }
    tone.extend(std::iter::repeat_n(0, 16 * 1800));
    tone
}

impl Appliance {
    /// Whether a new call can ring the box (nothing else is on its speaker or ringing).
    pub fn can_ring(&self) -> bool {
        let local = self.local();
        local.ringing.is_none() && local.in_call.is_none() && local.talking.is_none()
    }

    /// An incoming call rings the box: ring tone on the speaker, ringing LED. The receiver fires when
    /// someone presses a button to answer.
    pub fn ring(&self, sid: &CallSid) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.local().ringing = Some((sid.clone(), tx));
        self.inner.bus.set_activity(Activity::Ringing);
        info!(call = %sid, "ringing the box");
        let this = self.clone();
        let sid = sid.clone();
        tokio::spawn(async move {
            let tone = ring_tone();
            while this.local().ringing.as_ref().is_some_and(|(s, _)| *s == sid) {
                if !this.inner.speaker.is_playing() {
                    this.inner.speaker.play(&tone);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        rx
    }

    /// The ringing stopped without an answer (timeout, or the caller hung up): a missed call.
    pub fn ring_over(&self, sid: &CallSid) {
        let mut local = self.local();
        if local.ringing.as_ref().is_some_and(|(s, _)| s == sid) {
            local.ringing = None;
            drop(local);
            self.inner.speaker.stop_playing();
            self.inner.bus.end_activity(Activity::Ringing);
            let (store, sid) = (self.inner.store.clone(), sid.clone());
            tokio::spawn(async move {
                if let Err(e) = store.mark_waiting(&sid).await {
                    warn!(call = %sid, "missed call not noted: {e}");
                }
            });
        }
    }
}
