//! Calls on the box's own speaker and microphone.
//!
//! [`IntercomCall`] bridges a call to the box: the far end's audio goes to the speaker through a
//! small jitter buffer, the microphone's frames go to the caller as they are captured (at most three
//! frames queued, so no delay builds up), and an [`EchoGate`] keeps the far end from hearing itself.
//! [`RingCall`] rings the box first (`calls.answer = "ring"`): a button press turns it into an
//! intercom call; after `calls.ring_timeout` voicemail or the assistant takes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::appliance::Appliance;
use crate::audio::device::Frame;
use crate::call::responder::{Frame16k, Outbox, Purpose, Responder, FRAME_16K};
use crate::twilio::media::CallSid;

/// Microphone audio queued for the caller beyond this is dropped (oldest first).
const MAX_QUEUED: usize = 3 * FRAME_16K;

fn rms(frame: &[i16]) -> f32 {
    (frame.iter().map(|&s| f32::from(s).powi(2)).sum::<f32>() / frame.len().max(1) as f32).sqrt()
}

/// A simple echo suppressor: while the far end talks, microphone audio that is quieter than what
/// the speaker plays (its echo) is attenuated by 24 dB; louder audio (someone at the box talking
/// over the far end) passes.
#[derive(Debug, Default)]
pub struct EchoGate {
    /// The far end's recent level, held for a while after it stops (the room's echo tail).
    far_level: f32,
    far_until: Option<Instant>,
}

impl EchoGate {
    const FAR_ACTIVE: f32 = 150.0;
    const HOLD: Duration = Duration::from_millis(150);
    const ATTENUATION: f32 = 1.0 / 16.0;

    /// A frame of the far end's audio, about to be played.
    pub fn far_end(&mut self, frame: &[i16], now: Instant) {
        let level = rms(frame);
        if level > Self::FAR_ACTIVE {
            self.far_level = if self.far_until.is_some_and(|t| now < t) { self.far_level.max(level) } else { level };
            self.far_until = Some(now + Self::HOLD);
        }
    }

    /// A microphone frame, gated in place. Returns whether it was attenuated.
    pub fn near_end(&mut self, frame: &mut [i16], now: Instant) -> bool {
        let far_active = self.far_until.is_some_and(|t| now < t);
        if far_active && rms(frame) < 0.5 * self.far_level {
            for s in frame.iter_mut() {
                *s = (f32::from(*s) * Self::ATTENUATION) as i16;
            }
            return true;
        }
        false
    }
}

/// A call bridged to the box's speaker and microphone.
pub struct IntercomCall {
    appliance: Appliance,
    sid: CallSid,
    purpose: Purpose,
    mic: Option<mpsc::Receiver<Box<Frame>>>,
    gate: EchoGate,
}

impl std::fmt::Debug for IntercomCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntercomCall").finish_non_exhaustive()
    }
}

impl IntercomCall {
    pub fn new(appliance: Appliance, sid: &CallSid, purpose: Purpose) -> Self {
        Self { appliance, sid: sid.clone(), purpose, mic: None, gate: EchoGate::default() }
    }
}

impl Responder for IntercomCall {
    fn start(&mut self, _out: &mut Outbox, waker: Arc<Notify>) {
        let callout = match self.purpose {
            Purpose::CallOut(id) => Some(id),
            Purpose::Incoming => None,
        };
        self.appliance.connected(&self.sid, callout);
        self.mic = Some(self.appliance.mic().listen(Some(waker)));
    }

    fn hear(&mut self, frame: &Frame16k, _out: &mut Outbox) {
        self.gate.far_end(frame, Instant::now());
        self.appliance.speaker().push_frame(frame);
    }

    fn dtmf(&mut self, _digit: char, _out: &mut Outbox) {}

    fn poll(&mut self, out: &mut Outbox) {
        let Some(mic) = self.mic.as_mut() else { return };
        while let Ok(mut frame) = mic.try_recv() {
            self.gate.near_end(&mut frame[..], Instant::now());
            out.append(&frame[..]);
        }
        out.trim_to(MAX_QUEUED);
    }

    fn end(&mut self) {
        self.mic = None;
        self.appliance.disconnected(&self.sid);
    }
}

/// What answers a call nobody picked up on the box.
pub type Fallback = Box<dyn FnOnce() -> Box<dyn Responder> + Send>;

enum RingState {
    Ringing { answered: oneshot::Receiver<()>, until: Instant, fallback: Fallback },
    Handed(Box<dyn Responder>),
    Done,
}

/// Rings the box; the caller hears ringback meanwhile.
pub struct RingCall {
    appliance: Appliance,
    sid: CallSid,
    timeout: Duration,
    state: RingState,
    waker: Option<Arc<Notify>>,
    ringback: Vec<i16>,
}

impl std::fmt::Debug for RingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingCall").finish_non_exhaustive()
    }
}

impl RingCall {
    pub fn new(appliance: Appliance, sid: &CallSid, timeout: Duration, fallback: Fallback) -> Self {
        let (_, answered) = oneshot::channel();
        Self {
            appliance,
            sid: sid.clone(),
            timeout,
            state: RingState::Ringing { answered, until: Instant::now(), fallback },
            waker: None,
            ringback: ringback(),
        }
    }

    fn hand_to(&mut self, mut next: Box<dyn Responder>, out: &mut Outbox) {
        out.clear();
        if let Some(waker) = self.waker.clone() {
            next.start(out, waker);
        }
        self.state = RingState::Handed(next);
    }
}

/// North American ringback (440 + 480 Hz, 2 s on, 4 s off), 16 kHz.
fn ringback() -> Vec<i16> {
    let on = 2 * 16000;
    (0..6 * 16000)
        .map(|i| {
            if i >= on {
                return 0;
            }
            let t = i as f32 / 16000.0;
            let s = (2.0 * std::f32::consts::PI * 440.0 * t).sin() + (2.0 * std::f32::consts::PI * 480.0 * t).sin();
            (3000.0 * s) as i16
        })
        .collect()
}

impl Responder for RingCall {
    fn start(&mut self, out: &mut Outbox, waker: Arc<Notify>) {
        self.waker = Some(waker);
        if !self.appliance.can_ring() {
            // The box is busy with another call: this one goes straight to voicemail or the assistant.
            tracing::info!(call = %self.sid, "the box is busy: handing the call over without ringing");
            if let RingState::Ringing { fallback, .. } = std::mem::replace(&mut self.state, RingState::Done) {
                self.hand_to(fallback(), out);
            }
            return;
        }
        let answered = self.appliance.ring(&self.sid);
        if let RingState::Ringing { answered: slot, until, .. } = &mut self.state {
            *slot = answered;
            *until = Instant::now() + self.timeout;
        }
        out.play(&self.ringback, "ringback");
    }

    fn hear(&mut self, frame: &Frame16k, out: &mut Outbox) {
        if let RingState::Handed(inner) = &mut self.state {
            inner.hear(frame, out);
        }
    }

    fn dtmf(&mut self, digit: char, out: &mut Outbox) {
        if let RingState::Handed(inner) = &mut self.state {
            inner.dtmf(digit, out);
        }
    }

    fn poll(&mut self, out: &mut Outbox) {
        if let RingState::Ringing { answered, until, .. } = &mut self.state {
            let answered = answered.try_recv().is_ok();
            let timed_out = Instant::now() >= *until;
            if answered || timed_out {
                let RingState::Ringing { fallback, .. } = std::mem::replace(&mut self.state, RingState::Done) else {
                    unreachable!("checked above")
                };
                let next: Box<dyn Responder> = if answered {
                    Box::new(IntercomCall::new(self.appliance.clone(), &self.sid, Purpose::Incoming))
                } else {
                    tracing::info!(call = %self.sid, "nobody answered on the box: handing the call over");
                    self.appliance.ring_over(&self.sid);
                    fallback()
                };
                self.hand_to(next, out);
            } else if !out.is_playing() {
                out.play(&self.ringback, "ringback");
            }
        }
        if let RingState::Handed(inner) = &mut self.state {
            inner.poll(out);
        }
    }

    fn mark(&mut self, label: &str, played: bool) {
        if let RingState::Handed(inner) = &mut self.state {
            inner.mark(label, played);
        }
    }

    fn end(&mut self) {
        match &mut self.state {
            RingState::Ringing { .. } => self.appliance.ring_over(&self.sid),
            RingState::Handed(inner) => inner.end(),
            RingState::Done => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(amplitude: f32, freq: f32) -> Vec<i16> {
        (0..320).map(|i| (amplitude * (2.0 * std::f32::consts::PI * freq * i as f32 / 16000.0).sin()) as i16).collect()
    }

    #[test]
    fn echo_is_suppressed_but_talking_over_the_far_end_is_not() {
        let mut gate = EchoGate::default();
        let now = Instant::now();
        let far = tone(8000.0, 300.0);
        gate.far_end(&far, now);
        // The speaker's echo reaches the microphone much quieter: attenuated.
        let mut echo = tone(1500.0, 300.0);
        assert!(gate.near_end(&mut echo, now));
        assert!(rms(&echo) < 100.0, "{}", rms(&echo));
        // Someone at the box talks louder than the echo would be: passes untouched.
        let mut voice = tone(9000.0, 500.0);
        let before = voice.clone();
        assert!(!gate.near_end(&mut voice, now));
        assert_eq!(voice, before);
        // Once the far end has been quiet for the hold time, nothing is gated.
        let mut late = tone(1500.0, 300.0);
        assert!(!gate.near_end(&mut late, now + Duration::from_millis(400)));
    }
}
