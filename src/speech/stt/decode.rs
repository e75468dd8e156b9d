//! What one worker thread runs: the recognizers for the configured mode, grammar first with a
//! free-form second pass, fed from an ear.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ear::{Ear, Item};
use super::{Heard, Pass, Recognition, Shared, FRAME_16K, SLOW_DOWN_US};

/// The recognizers one worker runs, for the configured [`Recognition`].
/// Partials are looked at every 200 ms.
const PARTIAL_EVERY: u32 = 10;
/// Audio kept per utterance: a longer one is decoded free-form only from its first minute, and is
/// not settled at pauses.
const UTTERANCE_MAX: usize = 16000 * 60;

pub(super) struct Recognizers {
    /// The closed grammar's recognizer and its phrases.
    grammar: Option<(vosk::Recognizer, Arc<Vec<String>>)>,
    free: Option<vosk::Recognizer>,
    unknown_word: Option<&'static str>,
    /// The utterance's audio so far (its first minute): for a free-form second pass, and to decode
    /// again when speech goes on after a pause the live recognizer settled on.
    utterance: Vec<i16>,
    /// Text VOSK finalised on its own inside the utterance (its endpointer), kept until the end.
    said: String,
    /// The transcript the live recognizer settled on at a pause (see [`Recognizers::settle`]).
    settled: Option<String>,
    frames: u32,
    last_partial: String,
}

pub(super) fn text_of(result: vosk::CompleteResult<'_>) -> String {
    result.single().map(|r| r.text.to_owned()).unwrap_or_default()
}

pub(super) fn join(a: &str, b: &str) -> String {
    [a, b].iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

impl Recognizers {
    pub(super) fn new(shared: &Shared) -> Option<Self> {
        let grammar = match (&shared.grammar, shared.recognition) {
            (Some(phrases), Recognition::Grammar | Recognition::GrammarFirst) => {
                Some((vosk::Recognizer::new_with_grammar(&shared.model, 16000.0, phrases)?, shared.phrases.clone()))
            }
            _ => None,
        };
        let free = match (shared.recognition, &grammar) {
            (Recognition::Grammar, Some(_)) => None,
            _ => Some(vosk::Recognizer::new(&shared.model, 16000.0)?),
        };
        Some(Self {
            grammar,
            free,
            unknown_word: shared.unknown_word,
            utterance: Vec::with_capacity(16000 * 10),
            said: String::new(),
            settled: None,
            frames: 0,
            last_partial: String::new(),
        })
    }

    /// The recognizer that hears every frame as it comes.
    fn live(&mut self) -> &mut vosk::Recognizer {
        match (&mut self.grammar, &mut self.free) {
            (Some((g, _)), _) => g,
            (None, Some(f)) => f,
            (None, None) => unreachable!("a worker has at least one recognizer"),
        }
    }

    /// Feeds a frame; returns a new partial transcript every 200 ms when it changed.
    fn accept(&mut self, frame: &[i16]) -> Option<String> {
        if self.settled.take().is_some() {
            // Speech went on after the pause: decode the utterance again from its start, so the
            // result is the one an unbroken decode gives (a phrase split at a pause is misheard).
            self.said.clear();
            let audio = std::mem::take(&mut self.utterance);
            for chunk in audio.chunks(FRAME_16K * 10) {
                self.decode(chunk);
            }
            self.utterance = audio;
        }
        if self.utterance.len() < UTTERANCE_MAX {
            self.utterance.extend_from_slice(frame);
        }
        self.decode(frame);
        self.frames += 1;
        if !self.frames.is_multiple_of(PARTIAL_EVERY) {
            return None;
        }
        let live = self.live().partial_result().partial.to_owned();
        let partial = join(&self.said, &live);
        if partial.is_empty() || partial == self.last_partial {
            return None;
        }
        self.last_partial.clone_from(&partial);
        Some(partial)
    }

    /// The speaker paused: finalises what the live recognizer has heard so far, so the end of the
    /// utterance (a moment later, usually) costs nothing. If speech goes on instead, the utterance
    /// is decoded again from its start (see `accept`).
    fn settle(&mut self) {
        if self.utterance.len() < UTTERANCE_MAX {
            self.settled = Some(text_of(self.live().final_result()));
        }
    }

    /// The live recognizer hears `audio`.
    fn decode(&mut self, audio: &[i16]) {
        let rec = self.live();
        if let Ok(vosk::DecodingState::Finalized) = rec.accept_waveform(audio) {
            // VOSK's own endpointer closed a segment inside the utterance: keep its words.
            let text = text_of(rec.result());
            self.said = join(&self.said, &text);
        }
    }

    /// The utterance is over: its transcript.
    fn finish(&mut self) -> (String, Pass) {
        let tail = match self.settled.take() {
            Some(text) => text,
            None => text_of(self.live().final_result()),
        };
        let heard = join(&std::mem::take(&mut self.said), &tail);
        self.frames = 0;
        self.last_partial.clear();
        let audio = std::mem::take(&mut self.utterance);
        let Some((_, phrases)) = &self.grammar else { return (heard, Pass::Free) };
        let unknown = self.unknown_word.is_some_and(|u| heard.split(' ').any(|w| w == u));
        let placed = crate::assistant::pick_phrase(&heard, phrases).map(str::to_owned);
        tracing::debug!(grammar = %heard, placed = ?placed, "grammar pass");
        let result = match (placed, &mut self.free) {
            (Some(phrase), _) if !unknown => (phrase, Pass::Phrase),
            (_, Some(free)) if !audio.is_empty() => {
                for chunk in audio.chunks(FRAME_16K * 10) {
                    if let Ok(vosk::DecodingState::Finalized) = free.accept_waveform(chunk) {
                        self.said = join(&self.said, &text_of(free.result()));
                    }
                }
                let text = join(&std::mem::take(&mut self.said), &text_of(free.final_result()));
                (text, Pass::Free)
            }
            (Some(phrase), _) => (phrase, Pass::Phrase),
            (None, _) => {
                let known: Vec<&str> = heard.split(' ').filter(|w| Some(*w) != self.unknown_word).collect();
                (known.join(" "), Pass::Phrase)
            }
        };
        self.utterance = audio;
        self.utterance.clear();
        result
    }

    /// Forgets the utterance in progress.
    fn discard(&mut self) {
        let _ = self.live().final_result();
        self.said.clear();
        self.settled = None;
        self.utterance.clear();
        self.frames = 0;
        self.last_partial.clear();
    }

    /// Decodes `audio` once and forgets it: pays a new recognizer's slow first utterance (its
    /// decoding graph fills a cache as it goes) before it serves anyone.
    pub(super) fn warm(&mut self, audio: &[i16]) {
        for rec in self.grammar.iter_mut().map(|(g, _)| g).chain(self.free.iter_mut()) {
            for chunk in audio.chunks(FRAME_16K) {
                let _ = rec.accept_waveform(chunk);
            }
            let _ = rec.final_result();
        }
    }

    /// Serves one ear until it is detached.
    pub(super) fn serve(&mut self, ear: &Ear) {
        while let Some(item) = ear.next_item() {
            match item {
                Item::Audio(frame) => {
                    let slow = SLOW_DOWN_US.load(std::sync::atomic::Ordering::Relaxed);
                    if slow > 0 {
                        std::thread::sleep(Duration::from_micros(slow));
                    }
                    if let Some(partial) = self.accept(&frame) {
                        ear.answer(Heard::Partial(partial));
                    }
                }
                Item::Settle => self.settle(),
                Item::End(at) => {
                    let started = Instant::now();
                    let lag = started.saturating_duration_since(at);
                    let (text, pass) = self.finish();
                    ear.answer(Heard::Final { text, pass, decode: started.elapsed(), lag });
                }
                Item::Missed => {
                    self.discard();
                    ear.answer(Heard::Missed);
                }
            }
        }
        // As after warm-up: a final result, so the next ear starts from a clean state.
        self.discard();
    }
}
