//! Listening: voice activity detection from the first frame, the utterances it finds queued on the
//! listener's [`Ear`] (model or not), and a recognizer leased as soon as there is one. Calls,
//! push-to-talk and `voca transcribe` all listen through this one loop.
//!
//! Only speech reaches the recognizer: a short pre-roll before each onset, the utterance, and its
//! hangover. Silence between turns (most of a call) costs no decoding at all.
//!
//! A turn ends after the hangover of quiet, or, with an end-of-turn model ([`TurnPolicy`]), as soon
//! as the model says the speaker has finished: it is asked at a short pause (while the recognizer
//! settles and the reply is prepared), again at each later pause, and a turn it keeps open ends
//! after `max_wait` of quiet. A pause the model cannot answer (busy, failing), or not before the
//! hangover would have ended the turn, falls back to the hangover: the model never makes a turn end
//! later than it would without it, unless it said "not yet".

use std::sync::Arc;
use std::time::Duration;

use heapless::Deque;
use thiserror::Error;

use super::stt::{Ear, Heard, Lease, Stt};
use super::turn::{features, Pending, TurnPolicy};
use crate::audio::vad::{Vad, VadConfig, VadEvent};

const FRAME_16K: usize = 320;
const FRAME: Duration = Duration::from_millis(20);
/// Frames kept from before an onset (the onset fires `min_speech` into the speech): 400 ms.
const PREROLL: usize = 20;
/// The recognizer finalises this long before the hangover would end the utterance (but never
/// before half of it: 250 ms into the default 500 ms), and the reply to what it settled on is
/// rendered meanwhile: twenty calls ending a turn together then find their answers ready.
const SETTLE_AHEAD: Duration = Duration::from_millis(300);

/// Where the recognizer settles within a `hangover` (see [`SETTLE_AHEAD`]).
fn settle_point(hangover: Duration) -> Duration {
    hangover.saturating_sub(SETTLE_AHEAD).max(hangover / 2)
}

/// One line per ten seconds for the whole box when the model fails on decisions.
static TURN_FAILED: crate::telemetry::Throttle = crate::telemetry::Throttle::new(Duration::from_secs(10));

/// One listener: a call, the push-to-talk button, a recording.
pub struct Listener {
    stt: Stt,
    vad: Vad,
    ear: Arc<Ear>,
    lease: Option<Lease>,
    preroll: Deque<[i16; FRAME_16K], PREROLL>,
    /// Quiet this long inside speech settles the recognizer.
    settle_after: Duration,
    /// The quiet frames since the recognizer settled: handed over if the speech goes on, let go
    /// if the hangover ends it.
    held: Option<Vec<[i16; FRAME_16K]>>,
    /// Utterances handed to the ear whose result has not come back yet.
    pending: usize,
    /// Quiet that ends a turn without the model (`speech.endpoint_hangover`).
    hangover: Duration,
    /// The end-of-turn model, when the box has one.
    turns: Option<TurnPolicy>,
    /// This utterance's turn is the model's to end (it served at its onset).
    by_model: bool,
    /// The utterance so far (its last 8 s), for the model.
    spoken: std::collections::VecDeque<i16>,
    /// The model's answer about the current pause, awaited.
    deciding: Option<Pending>,
    /// The model ended the turn since the last frame: [`Listener::hear`] reports it.
    ended: bool,
    waker: Option<Arc<tokio::sync::Notify>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("ear", &self.ear).field("pending", &self.pending).finish_non_exhaustive()
    }
}

impl Listener {
    /// A listener that keeps at most `backlog` of speech waiting for a recognizer. It has none
    /// until [`Listener::try_lease`] gets one.
    pub fn new(stt: Stt, vad: VadConfig, backlog: Duration) -> Self {
        let settle_after = settle_point(vad.hangover);
        Self {
            hangover: vad.hangover,
            stt,
            vad: Vad::new(vad),
            ear: Ear::new(backlog),
            lease: None,
            preroll: Deque::new(),
            settle_after,
            held: None,
            pending: 0,
            turns: None,
            by_model: false,
            spoken: std::collections::VecDeque::new(),
            deciding: None,
            ended: false,
            waker: None,
        }
    }

    /// Lets the end-of-turn model end this listener's turns (see the module's notes).
    pub fn with_turns(mut self, policy: TurnPolicy) -> Self {
        self.turns = Some(policy);
        self
    }

    /// Wakes `waker` whenever a result is ready.
    pub fn set_waker(&mut self, waker: Arc<tokio::sync::Notify>) {
        self.ear.set_waker(waker.clone());
        self.waker = Some(waker);
    }

    /// Leases a recognizer if there is none yet and the model is loaded; true once one serves.
    pub fn try_lease(&mut self) -> bool {
        if self.lease.is_none() {
            self.lease = self.stt.lease(self.ear.clone());
        }
        self.lease.is_some()
    }

    pub fn has_recognizer(&self) -> bool {
        self.lease.is_some()
    }

    pub fn is_talking(&self) -> bool {
        self.vad.is_talking()
    }

    /// The end-of-turn model is deciding about the current pause.
    pub fn deciding(&self) -> bool {
        self.deciding.is_some()
    }

    /// Utterances heard whose transcript has not come back yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// How much speech waits for the recognizer.
    pub fn backlog(&self) -> Duration {
        self.ear.backlog()
    }

    /// Frames let go to the bound since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.ear.take_dropped()
    }

    /// Hears 20 ms of 16 kHz audio: runs the VAD and queues speech for the recognizer.
    pub fn hear(&mut self, frame: &[i16; FRAME_16K]) -> Option<VadEvent> {
        self.decide();
        // The model ended the turn since the last frame: said now, whatever this frame starts.
        let ended = std::mem::take(&mut self.ended).then_some(VadEvent::End);
        let event = self.vad.push(frame);
        match event {
            Some(VadEvent::Onset) => {
                self.spoken.clear();
                while let Some(before) = self.preroll.pop_front() {
                    self.ear.push(&before);
                    self.spoken.extend(before);
                }
                self.ear.push(frame);
                self.spoken.extend(frame);
                self.choose_turn_end();
            }
            Some(VadEvent::End) => {
                // Held quiet is let go: the recognizer settled before it.
                if self.held.take().is_none() {
                    self.ear.push(frame);
                }
                self.ear.end_utterance();
                self.pending += 1;
                self.deciding = None;
                self.spoken.clear();
            }
            None if self.vad.is_talking() => self.speech(frame),
            None => self.keep_before_onset(frame),
        }
        ended.or(event)
    }

    fn keep_before_onset(&mut self, frame: &[i16; FRAME_16K]) {
        if self.preroll.is_full() {
            self.preroll.pop_front();
        }
        let _ = self.preroll.push_back(*frame);
    }

    /// At an onset: the model ends this turn if it serves now, else the hangover does.
    fn choose_turn_end(&mut self) {
        let hangover = self.hangover;
        self.by_model = self.turns.as_ref().is_some_and(|t| t.turns.is_ready());
        match (&self.turns, self.by_model) {
            (Some(policy), true) => {
                self.vad.set_hangover(policy.max_wait);
                self.settle_after = policy.pause;
            }
            _ => {
                self.vad.set_hangover(hangover);
                self.settle_after = settle_point(hangover);
            }
        }
    }

    /// The utterance in progress ends after the hangover at the latest: the model may still end it
    /// sooner, but its "not yet" keeps it open no longer (a sound over the box's reply, whose
    /// transcript decides whether the reply is picked up again: see `call::conversation::resume`).
    pub fn end_by_hangover_at_the_latest(&mut self) {
        self.vad.set_hangover(self.hangover);
    }

    /// What the caller said up to this pause lands exactly on a phrase the box knows (one of the
    /// grammar's): strong evidence they have finished, so with the model the turn ends now, without
    /// waiting for its answer. (With the hangover alone nothing changes.)
    pub fn heard_a_whole_phrase(&mut self) {
        let quiet = self.vad.quiet();
        if self.by_model && self.end_turn_now() {
            crate::telemetry::metrics::TURN_ENDED_BY_PHRASE.inc();
            tracing::debug!(quiet_ms = quiet.as_millis() as u64, "end of turn: a whole phrase");
        }
    }

    /// Ends the turn at the pause in progress (reported by the next [`Listener::hear`]); nothing if
    /// the caller has spoken again since. Whether it did.
    fn end_turn_now(&mut self) -> bool {
        let pausing = self.vad.is_talking() && self.held.is_some();
        if pausing {
            self.held = None;
            self.deciding = None;
            self.ear.end_utterance();
            self.pending += 1;
            self.vad.end_speech();
            self.spoken.clear();
            self.ended = true;
        }
        pausing
    }

    /// The model's answer about the current pause, if it has come: finished ends the turn now
    /// (reported by the next [`Listener::hear`]); not yet keeps listening; a failure hands this
    /// turn back to the hangover.
    fn decide(&mut self) {
        let Some(answer) = self.deciding.as_mut().and_then(Pending::try_take) else { return };
        self.deciding = None;
        use crate::telemetry::metrics as m;
        match answer {
            Ok(decision) if decision.finished() => {
                m::TURN_DECISIONS_FINISHED.inc();
                tracing::debug!(
                    probability = decision.probability,
                    cpu_ms = decision.cpu.as_millis() as u64,
                    took_ms = decision.took.as_millis() as u64,
                    quiet_ms = self.vad.quiet().as_millis() as u64,
                    "end of turn: the caller has finished"
                );
                let _ = self.end_turn_now();
            }
            Ok(decision) => {
                m::TURN_DECISIONS_NOT_YET.inc();
                tracing::debug!(probability = decision.probability, "end of turn: not yet, listening on");
            }
            Err(e) => {
                if let Some(more) = TURN_FAILED.check() {
                    tracing::warn!("end-of-turn model: {e}; this turn ends by the hangover ({more} more since)");
                }
                self.by_model = false;
                self.vad.set_hangover(self.hangover);
            }
        }
    }

    /// Asks the model about the pause that has just begun; when it cannot answer, the hangover ends
    /// this turn.
    fn ask_model(&mut self) {
        let Some(policy) = self.turns.as_ref().filter(|_| self.by_model) else { return };
        let audio: Vec<i16> = self.spoken.iter().copied().collect();
        self.deciding = policy.turns.ask(audio, self.waker.clone());
        if self.deciding.is_none() {
            self.by_model = false;
            self.vad.set_hangover(self.hangover);
        }
    }

    /// A frame inside speech: to the ear, unless the speaker has paused long enough to settle (and,
    /// with the model, to be asked whether they have finished).
    fn speech(&mut self, frame: &[i16; FRAME_16K]) {
        if self.spoken.len() + FRAME_16K > features::WINDOW {
            self.spoken.drain(..FRAME_16K);
        }
        self.spoken.extend(frame);
        let quiet = self.vad.quiet();
        match &mut self.held {
            Some(held) if quiet.is_zero() => {
                // The pause was not the end: the recognizer gets the quiet it missed, then this;
                // the model's answer about that pause no longer matters.
                for f in held.drain(..) {
                    self.ear.push(&f);
                }
                self.held = None;
                self.deciding = None;
                self.ear.push(frame);
            }
            Some(held) => {
                held.push(*frame);
                if self.deciding.is_some() && quiet + FRAME >= self.hangover {
                    // The model has not answered by the time the hangover would end the turn (it is
                    // deciding for many calls at once): the hangover ends it, as without the model.
                    crate::telemetry::metrics::TURN_DECISIONS_LATE.inc();
                    self.deciding = None;
                    self.by_model = false;
                    self.vad.set_hangover(self.hangover);
                }
            }
            None if quiet >= self.settle_after => {
                self.ear.push(frame);
                self.ear.settle();
                self.held = Some(Vec::with_capacity(16));
                self.ask_model();
            }
            None => self.ear.push(frame),
        }
    }

    /// Ends the utterance in progress, if any (the recording ended mid-speech).
    pub fn flush(&mut self) {
        self.held = None;
        self.deciding = None;
        self.spoken.clear();
        if self.vad.is_talking() {
            self.vad = Vad::new(self.vad.config());
            self.ear.end_utterance();
            self.pending += 1;
        }
    }

    /// Queues a whole recording as one utterance (push-to-talk: the button marks its ends).
    pub fn utterance(&mut self, audio: &[i16]) {
        let mut frame = [0i16; FRAME_16K];
        for chunk in audio.chunks(FRAME_16K) {
            frame.fill(0);
            frame[..chunk.len()].copy_from_slice(chunk);
            self.ear.push(&frame);
        }
        self.ear.end_utterance();
        self.pending += 1;
    }

    /// The next result, if any, without waiting (and the model's answer, if it has come).
    pub fn poll(&mut self) -> Option<Heard> {
        self.decide();
        let heard = self.ear.poll()?;
        if matches!(heard, Heard::Final { .. } | Heard::Missed) {
            self.pending = self.pending.saturating_sub(1);
        }
        Some(heard)
    }

    /// Waits for the next result (recordings; never on the async runtime).
    pub fn wait(&mut self, timeout: Duration) -> Option<Heard> {
        let heard = self.ear.wait(timeout)?;
        if matches!(heard, Heard::Final { .. } | Heard::Missed) {
            self.pending = self.pending.saturating_sub(1);
        }
        Some(heard)
    }
}

#[derive(Debug, Error)]
pub enum TranscribeError {
    #[error("the speech model is not available: {0}")]
    Model(String),
    #[error("the recognizer stopped answering after {heard} of {utterances} utterance(s)")]
    Stalled { heard: usize, utterances: usize },
}

/// Runs a recording (16 kHz) through the box's listening loop at full speed, losing nothing (the
/// ear holds the whole recording): one transcript per utterance, in order. Blocking: call it off
/// the async runtime, once the model is loaded.
pub fn transcribe(stt: &Stt, vad: VadConfig, audio: &[i16]) -> Result<Vec<String>, TranscribeError> {
    let whole = Duration::from_millis(audio.len() as u64 / 16 + 1000);
    let mut listener = Listener::new(stt.clone(), vad, whole);
    if !listener.try_lease() {
        return Err(TranscribeError::Model(stt.state().as_str().into()));
    }
    let mut frame = [0i16; FRAME_16K];
    for chunk in audio.chunks(FRAME_16K) {
        frame.fill(0);
        frame[..chunk.len()].copy_from_slice(chunk);
        listener.hear(&frame);
    }
    listener.flush();
    let utterances = listener.pending();
    // Generous: a slow recognizer still gets a minute plus twice the recording.
    let patience = Duration::from_secs(60) + whole * 2;
    let mut texts = Vec::with_capacity(utterances);
    while listener.pending() > 0 {
        match listener.wait(patience) {
            Some(Heard::Final { text, .. }) => texts.push(text),
            Some(Heard::Missed) => texts.push(String::new()),
            Some(Heard::Tentative { .. }) => {}
            None => return Err(TranscribeError::Stalled { heard: texts.len(), utterances }),
        }
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::speech::stt::{Recognition, SttOptions};

    fn no_model() -> Stt {
        Stt::start(SttOptions {
            model: "/nonexistent/model".into(),
            recognition: Recognition::GrammarFirst,
            phrases: Vec::new(),
            warm: 0,
            warm_up: Vec::new(),
            download: None,
        })
    }

    /// Quiet frames the recognizer hears before it settles: 13 (260 ms) with the default hangover.
    fn settle_frames(listener: &Listener) -> u64 {
        (listener.settle_after.as_millis() as u64).div_ceil(20)
    }

    fn frames(listener: &mut Listener, level: i16, n: usize) -> Vec<VadEvent> {
        let tone: [i16; FRAME_16K] = std::array::from_fn(|i| if i % 2 == 0 { level } else { -level });
        (0..n).filter_map(|_| listener.hear(&tone)).collect()
    }

    #[test]
    fn only_speech_is_kept_with_its_preroll_and_every_end_is_counted() {
        let mut listener = Listener::new(no_model(), VadConfig::default(), Duration::from_secs(30));
        assert!(frames(&mut listener, 0, 200).is_empty());
        assert_eq!(listener.backlog(), Duration::ZERO, "four seconds of silence cost nothing");
        // 1 s of speech: onset after 200 ms, then 500 ms of hangover ends it.
        assert_eq!(frames(&mut listener, 5000, 50), [VadEvent::Onset]);
        assert_eq!(frames(&mut listener, 0, 40), [VadEvent::End]);
        assert_eq!(listener.pending(), 1);
        // The speech, its pre-roll (400 ms) and the hangover up to the pause that settles the
        // recognizer (260 ms) wait; the rest of the hangover is quiet it does not need.
        assert_eq!(
            listener.backlog(),
            Duration::from_millis(20 * (50 + PREROLL as u64 - 9 + settle_frames(&listener)))
        );
        // A recording that stops mid-word still ends its utterance.
        assert_eq!(frames(&mut listener, 5000, 20), [VadEvent::Onset]);
        listener.flush();
        assert_eq!(listener.pending(), 2);
        assert!(!listener.is_talking());
        assert!(!listener.try_lease(), "no model: no recognizer, and nothing lost meanwhile");
    }

    /// A listener whose end-of-turn model takes every question and never answers.
    fn waiting_on_a_stalled_model() -> Listener {
        let policy = TurnPolicy {
            turns: crate::speech::turn::Turns::stalled(),
            pause: Duration::from_millis(200),
            max_wait: Duration::from_secs(2),
        };
        Listener::new(no_model(), VadConfig::default(), Duration::from_secs(30)).with_turns(policy)
    }

    #[test]
    fn a_model_that_has_not_answered_when_the_hangover_ends_leaves_the_turn_to_the_hangover() {
        let mut listener = waiting_on_a_stalled_model();
        assert_eq!(frames(&mut listener, 5000, 50), [VadEvent::Onset]);
        // Asked at 200 ms of quiet; no answer: the turn ends as the 500 ms hangover would end it
        // (its 25th quiet frame), not after the model's 2 s.
        assert!(frames(&mut listener, 0, 10).is_empty());
        assert!(listener.deciding(), "the model was asked at the pause");
        let ended = (11..=100).find(|_| frames(&mut listener, 0, 1) == [VadEvent::End]);
        assert_eq!(ended, Some(25), "quiet frames (20 ms) when the turn ended");
        assert!(!listener.deciding());
    }

    #[test]
    fn a_whole_phrase_heard_at_a_pause_ends_the_turn_without_waiting_for_the_model() {
        let mut listener = waiting_on_a_stalled_model();
        assert_eq!(frames(&mut listener, 5000, 50), [VadEvent::Onset]);
        // Before the pause the evidence changes nothing; at the pause it ends the turn at once.
        listener.heard_a_whole_phrase();
        assert!(frames(&mut listener, 0, 10).is_empty());
        assert!(listener.deciding());
        listener.heard_a_whole_phrase();
        assert_eq!(frames(&mut listener, 0, 1), [VadEvent::End]);
        assert_eq!(listener.pending(), 1);
        // The hangover alone (no model) is not changed by it.
        let mut plain = Listener::new(no_model(), VadConfig::default(), Duration::from_secs(30));
        assert_eq!(frames(&mut plain, 5000, 50), [VadEvent::Onset]);
        assert!(frames(&mut plain, 0, 11).is_empty());
        plain.heard_a_whole_phrase();
        assert!(frames(&mut plain, 0, 10).is_empty(), "the hangover still runs");
    }

    #[test]
    fn a_pause_inside_speech_settles_the_recognizer_and_loses_nothing_when_speech_goes_on() {
        let mut listener = Listener::new(no_model(), VadConfig::default(), Duration::from_secs(30));
        assert_eq!(frames(&mut listener, 5000, 50), [VadEvent::Onset]);
        let before = listener.backlog();
        // 400 ms of quiet: settled after 260 ms, the rest held back.
        assert!(frames(&mut listener, 0, 20).is_empty());
        assert_eq!(listener.backlog(), before + Duration::from_millis(20 * settle_frames(&listener)));
        // Speech goes on: the held quiet and the new speech reach the recognizer.
        assert!(frames(&mut listener, 5000, 10).is_empty());
        assert_eq!(listener.backlog(), before + Duration::from_millis(400 + 200));
        assert_eq!(frames(&mut listener, 0, 25), [VadEvent::End]);
        assert_eq!(listener.pending(), 1, "one utterance, however many pauses");
    }
}
