//! What one worker thread runs: the recognizers for the configured mode, grammar first with a
//! free-form second pass, fed from an ear.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ear::{Ear, Item};
use super::heard::{Heard, Pass, FRAME_16K};
use super::model::{join, text_of, warm, Shared};
use super::Recognition;

/// For tests: extra microseconds every frame costs the recognizer (0: none), to make the real
/// recognizer slower than real time.
#[doc(hidden)]
pub static SLOW_DOWN_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Audio kept per utterance: a longer one is decoded free-form only from its first minute, and is
/// not settled at pauses.
const UTTERANCE_MAX: usize = 16000 * 60;

/// The recognizers one worker runs, for the configured [`Recognition`]. No partial results are
/// asked for: the VAD already tells when the caller talks over the box, and partials cost a fifth of
/// a grammar recognizer's time.
pub(super) struct Recognizers {
    shared: Arc<Shared>,
    /// The closed grammar's recognizer and its phrases.
    grammar: Option<(vosk::Recognizer, Arc<Vec<String>>)>,
    /// The free-form recognizer that hears every frame (`free` recognition only; grammar-first's
    /// second pass borrows one of the shared set).
    free: Option<vosk::Recognizer>,
    unknown_word: Option<&'static str>,
    /// The utterance's audio so far (its first minute): for a free-form second pass, and to decode
    /// again when speech goes on after a pause the live recognizer settled on.
    utterance: Vec<i16>,
    /// Text VOSK finalised on its own inside the utterance (its endpointer), kept until the end.
    said: String,
    /// The transcript the live recognizer settled on at a pause (see [`Recognizers::settle`]).
    settled: Option<String>,
}

impl Recognizers {
    pub(super) fn new(shared: Arc<Shared>) -> Option<Self> {
        let grammar = match Self::grammar_recognizer(&shared) {
            Some(made) => Some(made?),
            None => None,
        };
        let free = match grammar {
            Some(_) => None,
            None => Some(vosk::Recognizer::new(&shared.model, 16000.0)?),
        };
        Some(Self {
            unknown_word: shared.unknown_word,
            shared,
            grammar,
            free,
            utterance: Vec::with_capacity(16000 * 10),
            said: String::new(),
            settled: None,
        })
    }

    /// A new recognizer for the closed grammar (about a millisecond to make, and as quick on its first
    /// utterance as on later ones), if the configured recognition uses one.
    fn grammar_recognizer(shared: &Shared) -> Option<Option<(vosk::Recognizer, Arc<Vec<String>>)>> {
        let phrases = shared.grammar.as_ref().filter(|_| shared.recognition != Recognition::Free)?;
        Some(vosk::Recognizer::new_with_grammar(&shared.model, 16000.0, phrases).map(|r| (r, shared.phrases.clone())))
    }

    /// The recognizer that hears every frame as it comes.
    fn live(&mut self) -> &mut vosk::Recognizer {
        match (&mut self.grammar, &mut self.free) {
            (Some((g, _)), _) => g,
            (None, Some(f)) => f,
            (None, None) => unreachable!("a worker has at least one recognizer"),
        }
    }

    /// Feeds a frame.
    fn accept(&mut self, frame: &[i16]) {
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
    }

    /// The speaker paused: finalises what the live recognizer has heard so far, so the end of the
    /// utterance (a moment later, usually) costs nothing. If speech goes on instead, the utterance
    /// is decoded again from its start (see `accept`). Returns the transcript the utterance would
    /// have if it ended here, when that needs no further decoding (no free-form second pass), so
    /// the reply can be prepared while the hangover runs.
    fn settle(&mut self) -> Option<(String, bool)> {
        if self.utterance.len() >= UTTERANCE_MAX {
            return None;
        }
        let text = text_of(self.live().final_result());
        let heard = join(&self.said, &text);
        self.settled = Some(text);
        // Exact: one of the box's phrases word for word. A phrase placed from half its words ("지금
        // 몇" at a pause) is prepared, but is no evidence of an end.
        let exact = |text: &str| self.shared.phrases.iter().any(|p| *p == crate::speech::grammar::normalize(text));
        match self.place(&heard) {
            None => Some((heard.clone(), exact(&heard))),
            Some((placed, unknown)) => placed.filter(|_| !unknown).map(|p| (p, exact(&heard))),
        }
    }

    /// Where the grammar's transcript lands: the phrase it is placed on (if any), and whether it
    /// holds the model's unknown-word token (speech outside the grammar). `None` without a grammar.
    fn place(&self, heard: &str) -> Option<(Option<String>, bool)> {
        let (_, phrases) = self.grammar.as_ref()?;
        let unknown = self.unknown_word.is_some_and(|u| heard.split(' ').any(|w| w == u));
        Some((crate::speech::grammar::pick_phrase(heard, phrases).map(str::to_owned), unknown))
    }

    /// The live recognizer hears `audio`.
    fn decode(&mut self, audio: &[i16]) {
        let rec = self.live();
        let started = std::time::Instant::now();
        let state = rec.accept_waveform(audio);
        crate::telemetry::metrics::DECODING_MICROS.add(started.elapsed().as_micros() as u64);
        crate::telemetry::metrics::DECODED_AUDIO_MICROS.add(audio.len() as u64 * 1_000_000 / 16_000);
        if let Ok(vosk::DecodingState::Finalized) = state {
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
        let audio = std::mem::take(&mut self.utterance);
        let Some((placed, unknown)) = self.place(&heard) else { return (heard, Pass::Free) };
        tracing::debug!(grammar = %heard, placed = ?placed, "grammar pass");
        let second_pass = self.shared.recognition == Recognition::GrammarFirst && !audio.is_empty();
        let result = match placed {
            Some(phrase) if !unknown => (phrase, Pass::Phrase),
            placed => match (second_pass.then(|| self.shared.decode_free(&audio)).flatten(), placed) {
                (Some(text), _) => (text, Pass::Free),
                (None, Some(phrase)) => (phrase, Pass::Phrase),
                (None, None) => {
                    let known: Vec<&str> = heard.split(' ').filter(|w| Some(*w) != self.unknown_word).collect();
                    (known.join(" "), Pass::Phrase)
                }
            },
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
    }

    /// Pays a free-form live recognizer's slow first utterance before it serves anyone (a grammar
    /// recognizer needs no warming, and each caller gets a new one anyway).
    pub(super) fn warm(&mut self, audio: &[i16]) {
        if let Some(free) = &mut self.free {
            warm(free, audio);
        }
    }

    /// Serves one ear until it is detached. Each listener (a caller) gets a grammar recognizer of its
    /// own: VOSK adapts to the voice it hears across utterances, and one caller's voice must not
    /// colour how the next is heard.
    pub(super) fn serve(&mut self, ear: &Ear) {
        if let Some(Some(fresh)) = Self::grammar_recognizer(&self.shared) {
            self.grammar = Some(fresh);
        }
        while let Some(item) = ear.next_item() {
            match item {
                Item::Audio(frame) => {
                    let slow = SLOW_DOWN_US.load(std::sync::atomic::Ordering::Relaxed);
                    if slow > 0 {
                        std::thread::sleep(Duration::from_micros(slow));
                    }
                    self.accept(&frame);
                }
                Item::Settle => {
                    if let Some((text, exact)) = self.settle().filter(|(t, _)| !t.trim().is_empty()) {
                        ear.answer(Heard::Tentative { text, exact });
                    }
                }
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
                Item::Recording(audio) => {
                    let started = Instant::now();
                    let text = self.shared.decode_free(&audio).unwrap_or_default();
                    let decode = started.elapsed();
                    ear.answer(Heard::Final { text, pass: Pass::Free, decode, lag: Duration::ZERO });
                }
            }
        }
        // As after warm-up: a final result, so the next ear starts from a clean state.
        self.discard();
    }
}
