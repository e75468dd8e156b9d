//! What the box says on a call. A session feeds its [`Responder`] the caller's audio (16 kHz, 20 ms
//! frames), DTMF digits and mark echoes, and plays whatever it queues in the [`Outbox`].
//!
//! [`ToneResponder`] is the simple one the phone path ships with: a greeting (WAV or chime), each
//! DTMF digit echoed as its tone, `#` to hang up.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::twilio::media::CallSid;

/// 20 ms at 16 kHz.
pub const FRAME_16K: usize = 320;
pub type Frame16k = [i16; FRAME_16K];

/// Audio and signals a responder queues for the caller.
#[derive(Debug, Default)]
pub struct Outbox {
    /// 16 kHz samples waiting for the pacer.
    pub(crate) audio: VecDeque<i16>,
    /// Marks to send once the audio before them has been sent: (samples still ahead of it, name).
    pub(crate) marks: VecDeque<(usize, String)>,
    pub(crate) clear: bool,
    pub(crate) hangup: Option<String>,
}

impl Outbox {
    /// Queues `samples` (16 kHz) followed by a mark called `label`, which comes back once the caller
    /// has heard all of it (or was cut off).
    pub fn play(&mut self, samples: &[i16], label: &str) {
        self.audio.extend(samples);
        // Whole frames only: the last one is padded with silence so the mark lines up with it.
        let pad = (FRAME_16K - self.audio.len() % FRAME_16K) % FRAME_16K;
        self.audio.extend(std::iter::repeat_n(0, pad));
        let ahead_of_earlier: usize = self.marks.iter().map(|(n, _)| n).sum();
        self.marks.push_back((self.audio.len() - ahead_of_earlier, label.to_owned()));
    }

    /// Barge-in: drops everything not yet sent and tells the far end to drop what it buffered.
    pub fn clear(&mut self) {
        self.audio.clear();
        self.marks.clear();
        self.clear = true;
    }

    /// Ends the call once the queued audio has been sent.
    pub fn hang_up(&mut self, reason: &str) {
        self.hangup = Some(reason.to_owned());
    }

    pub fn is_playing(&self) -> bool {
        !self.audio.is_empty()
    }

    /// Queues live audio (intercom) with no mark.
    pub fn append(&mut self, samples: &[i16]) {
        self.audio.extend(samples);
    }

    /// Live audio only: drops the oldest queued samples beyond `keep`, so delay cannot build up.
    /// Does nothing while marked audio is queued.
    pub fn trim_to(&mut self, keep: usize) {
        if self.marks.is_empty() && self.audio.len() > keep {
            let excess = self.audio.len() - keep;
            self.audio.drain(..excess);
        }
    }
}

/// Why a call's stream exists, as the box decided when Twilio's webhook asked: a call-out only
/// when the box's own queue placed that very call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Someone called the box's number.
    Incoming,
    /// The box placed this call (call-out id).
    CallOut(i64),
}

/// The conversation side of a call. Methods run on the session's task: they must return quickly and
/// hand slow work (recognition, synthesis) to their own threads, collecting results in `poll`.
pub trait Responder: Send {
    /// The stream is open. `waker`: notify it when a result is ready, to be polled at once.
    fn start(&mut self, out: &mut Outbox, waker: Arc<tokio::sync::Notify>);
    /// 20 ms of the caller's audio.
    fn hear(&mut self, frame: &Frame16k, out: &mut Outbox);
    /// The caller pressed a key.
    fn dtmf(&mut self, digit: char, out: &mut Outbox);
    /// Called when the responder's waker is notified (a result is ready elsewhere), and at least
    /// every 50 ms.
    fn poll(&mut self, _out: &mut Outbox) {}
    /// Twilio echoed a mark: `played` is false when it was cut by a `clear` (barge-in).
    fn mark(&mut self, _label: &str, _played: bool) {}
    /// The call is over, however it ended (save what must be saved).
    fn end(&mut self) {}
}

/// Makes a fresh responder for each call, given the call's SID.
pub type ResponderFactory = Arc<dyn Fn(&CallSid, Purpose) -> Box<dyn Responder> + Send + Sync>;

/// The low and high frequencies of a DTMF key.
pub fn dtmf_frequencies(digit: char) -> Option<(f32, f32)> {
    let rows = [697.0, 770.0, 852.0, 941.0];
    let cols = [1209.0, 1336.0, 1477.0, 1633.0];
    let keys = ["123A", "456B", "789C", "*0#D"];
    keys.iter().enumerate().find_map(|(r, row)| row.find(digit.to_ascii_uppercase()).map(|c| (rows[r], cols[c])))
}

/// A sum of sines at 16 kHz with 5 ms fades, `seconds` long.
pub fn tones(freqs: &[f32], seconds: f32, amplitude: f32) -> Vec<i16> {
    let n = (seconds * 16000.0) as usize;
    let fade = 80.0;
    (0..n)
        .map(|i| {
            let t = i as f32 / 16000.0;
            let env = (i as f32 / fade).min((n - i) as f32 / fade).min(1.0);
            let s: f32 =
                freqs.iter().map(|f| (2.0 * std::f32::consts::PI * f * t).sin()).sum::<f32>() / freqs.len() as f32;
            (s * amplitude * env) as i16
        })
        .collect()
}

/// Greets, echoes DTMF as tones, hangs up on `#`.
#[derive(Debug, Clone)]
pub struct ToneResponder {
    greeting: Arc<Vec<i16>>,
}

impl ToneResponder {
    /// `greeting`: 16 kHz samples; `None` for a two-note chime.
    pub fn new(greeting: Option<Arc<Vec<i16>>>) -> Self {
        Self { greeting: greeting.unwrap_or_else(|| Arc::new(chime())) }
    }
}

/// Two rising notes (0.7 s at 16 kHz): the greeting of the line test, and the speaker test.
pub fn chime() -> Vec<i16> {
    let mut chime = tones(&[660.0], 0.3, 8000.0);
    chime.extend(tones(&[880.0], 0.4, 8000.0));
    chime
}

impl Responder for ToneResponder {
    fn start(&mut self, out: &mut Outbox, _waker: Arc<tokio::sync::Notify>) {
        out.play(&self.greeting, "greeting");
    }

    fn hear(&mut self, _frame: &Frame16k, _out: &mut Outbox) {}

    fn dtmf(&mut self, digit: char, out: &mut Outbox) {
        if digit == '#' {
            out.clear();
            out.hang_up("caller pressed #");
            return;
        }
        if let Some((low, high)) = dtmf_frequencies(digit) {
            out.clear();
            out.play(&tones(&[low, high], 0.2, 10000.0), &format!("dtmf-{digit}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_sit_after_their_audio_in_whole_frames() {
        let mut out = Outbox::default();
        out.play(&[1; 500], "a");
        out.play(&[2; 320], "b");
        assert_eq!(out.audio.len(), 640 + 320);
        assert_eq!(out.marks, [(640, "a".to_owned()), (320, "b".to_owned())]);
        out.clear();
        assert!(!out.is_playing() && out.marks.is_empty() && out.clear);
    }

    #[test]
    fn dtmf_keys_have_their_two_tones() {
        assert_eq!(dtmf_frequencies('5'), Some((770.0, 1336.0)));
        assert_eq!(dtmf_frequencies('#'), Some((941.0, 1477.0)));
        assert_eq!(dtmf_frequencies('x'), None);
        let mut r = ToneResponder::new(None);
        let mut out = Outbox::default();
        r.start(&mut out, Arc::default());
        r.dtmf('5', &mut out);
        assert!(out.clear, "a key press interrupts the greeting");
        assert_eq!(out.marks.back().map(|m| m.1.as_str()), Some("dtmf-5"));
        r.dtmf('#', &mut out);
        assert_eq!(out.hangup.as_deref(), Some("caller pressed #"));
    }
}
