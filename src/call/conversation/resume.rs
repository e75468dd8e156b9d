//! What the caller has not heard yet of what the box says, kept so that a cough, a "mhm" or a door
//! over it does not throw it away.
//!
//! Every marked piece the box plays (the greeting, each sentence of a reply, a prompt) is kept
//! ([`Unheard`]) until Twilio's mark says it was played. When a sound from the caller cuts the box
//! off, it works out where they stopped hearing it: the audio sent, less what Twilio may still have
//! buffered, less the time the VAD took to notice the sound, then back to the quiet between two
//! words before that point (the start of the piece if there is none). The rest is [`Held`], with
//! the synthesis of the reply still rendering. If the sound held no words (its transcript is empty or
//! only a backchannel), the rest is played from there; if it held words, it is dropped as before.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::assistant::Action;
use crate::call::responder::{Outbox, FRAME_16K};
use crate::speech::prompts::Language;
use crate::speech::stt::Pass;
use crate::speech::tts::Speech;

/// What Twilio may still hold unplayed when a `clear` arrives: the pacer's lead (40 ms) and the
/// frame in flight.
const IN_FLIGHT: usize = 16 * 60;
/// A sound over the box that lasts longer than this is someone talking, not a cough or a "mhm":
/// what it cut is not picked up again, whatever the recognizer makes of it.
pub(super) const LONGEST_FALSE_ALARM: Duration = Duration::from_secs(2);
/// The quiet between two words: 40 ms below a tenth of the piece's loudness.
const GAP: usize = 16 * 40;
const STEP: usize = 16 * 10;

/// One marked piece of audio as it was queued (padded to whole frames, as the outbox pads it).
#[derive(Debug)]
struct Piece {
    label: String,
    audio: Vec<i16>,
}

/// The pieces queued for the caller and not yet heard, oldest first.
#[derive(Debug, Default)]
pub(super) struct Unheard {
    pieces: VecDeque<Piece>,
}

impl Unheard {
    /// Queues `samples` followed by the mark `label`, and keeps them until the mark comes back.
    pub fn play(&mut self, out: &mut Outbox, samples: &[i16], label: &str) {
        out.play(samples, label);
        let mut audio = samples.to_vec();
        audio.resize(samples.len().div_ceil(FRAME_16K) * FRAME_16K, 0);
        self.pieces.push_back(Piece { label: label.to_owned(), audio });
    }

    /// Twilio played the piece `label` (and so everything before it).
    pub fn played(&mut self, label: &str) {
        if let Some(i) = self.pieces.iter().position(|p| p.label == label) {
            self.pieces.drain(..=i);
        }
    }

    /// The box stopped what it was saying for good (a key press, voicemail, a real interruption).
    pub fn forget(&mut self) {
        self.pieces.clear();
    }

    /// The caller's sound cut the box off: what they have not heard, from the quiet before the word
    /// they stopped hearing. `out` as it is before its `clear`; `noticed_after`: how long the sound
    /// had gone on when the box noticed it. `None` when they had heard it all.
    pub fn cut(&mut self, out: &Outbox, noticed_after: Duration) -> Option<Held> {
        let queued: usize = self.pieces.iter().map(|p| p.audio.len()).sum();
        let sent = queued - out.audio.len().min(queued);
        let late = (noticed_after.as_millis() as usize) * 16;
        let mut heard = sent.saturating_sub(IN_FLIGHT + late);
        while self.pieces.front().is_some_and(|p| heard >= p.audio.len()) {
            heard -= self.pieces.pop_front().map_or(0, |p| p.audio.len());
        }
        let first = self.pieces.front()?;
        let from = word_start(&first.audio, heard);
        Some(Held {
            pieces: std::mem::take(&mut self.pieces),
            from,
            skipped: from,
            speech: None,
            sound: Duration::ZERO,
            ended: None,
        })
    }
}

/// Where to pick `audio` up again so the caller hears whole words: the middle of the last quiet
/// gap at or before `at`, else its start.
fn word_start(audio: &[i16], at: usize) -> usize {
    let rms = |s: &[i16]| (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt();
    let quiet = rms(audio) / 10.0;
    let mut end = at.min(audio.len());
    while end >= GAP {
        if rms(&audio[end - GAP..end]) <= quiet {
            return end - GAP / 2;
        }
        end -= STEP;
    }
    0
}

/// What a sound over the box cut off, waiting to learn whether the sound held words.
pub(super) struct Held {
    pieces: VecDeque<Piece>,
    /// The first piece is picked up here.
    from: usize,
    /// Samples of the first piece the caller had heard (for the log).
    skipped: usize,
    /// The reply still rendering when it was cut, and what to do once it has all been played.
    pub speech: Option<(Speech, Action)>,
    /// How long the sound has been heard since the box noticed it.
    pub sound: Duration,
    /// When the sound that cut it ended.
    pub ended: Option<Instant>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held").field("pieces", &self.pieces.len()).field("from", &self.from).finish_non_exhaustive()
    }
}

impl Held {
    /// A sentence of the cut reply rendered meanwhile.
    pub fn add(&mut self, audio: Vec<i16>, label: String) {
        self.pieces.push_back(Piece { label, audio });
    }

    /// A mark echoed after the cut says the caller heard that piece after all.
    pub fn played(&mut self, label: &str) {
        if let Some(i) = self.pieces.iter().position(|p| p.label == label) {
            self.pieces.drain(..=i);
            self.from = 0;
            self.skipped = 0;
        }
    }

    /// Seconds of the first piece the caller had heard (and will not hear again).
    pub fn heard_seconds(&self) -> f64 {
        self.skipped as f64 / 16_000.0
    }

    /// Plays the rest again (through `unheard`, so a second cough is handled like the first) and
    /// hands back the reply still rendering.
    pub fn resume(mut self, unheard: &mut Unheard, out: &mut Outbox) -> Option<(Speech, Action)> {
        let from = self.from;
        for (i, piece) in self.pieces.drain(..).enumerate() {
            let start = if i == 0 { from.min(piece.audio.len()) } else { 0 };
            unheard.play(out, &piece.audio[start..], &piece.label);
        }
        self.speech.take()
    }

    /// Drops it: the sound was someone talking. Its synthesis stops.
    pub fn drop_reply(mut self) {
        if let Some((speech, _)) = self.speech.take() {
            speech.cancel();
        }
    }
}

/// A sound this short whose transcript is a single word the box has no use for is taken for noise:
/// a small model hears a syllable in a cough or a door.
const SHORT_SOUND: Duration = Duration::from_millis(600);

/// Whether the sound over the box, `sound` long, heard as `text`, was someone talking: words
/// besides backchannels ("mhm", "uh-huh") and, for a short sound, more than one word, a phrase the
/// box knows, a word of its phrases or a stop word ("stop", "wait").
pub(super) fn held_words(text: &str, pass: Pass, sound: Duration, language: &Language) -> bool {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '.' | '!' | '?'))
        .filter(|w| !w.is_empty() && *w != "[unk]")
        .filter(|w| !language.backchannels.iter().any(|b| b.eq_ignore_ascii_case(w)))
        .collect();
    let [word] = words[..] else { return !words.is_empty() };
    if pass == Pass::Phrase || sound >= SHORT_SOUND {
        return true;
    }
    let l = language;
    [l.stop_words, l.menu_phrases, l.time_words, l.date_words, l.repeat_words, l.who_words, l.voicemail_words]
        .iter()
        .chain([l.goodbye_words, l.call_words].iter())
        .flat_map(|list| list.iter())
        .any(|phrase| {
            phrase.split(' ').any(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).eq_ignore_ascii_case(word))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 ms words (loud) with 100 ms gaps (silent).
    fn words(n: usize) -> Vec<i16> {
        (0..n).flat_map(|_| std::iter::repeat_n(4000i16, 1600).chain(std::iter::repeat_n(0, 1600))).collect()
    }

    /// What the outbox still holds after the session sent `sent` samples.
    fn after_sending(out: &mut Outbox, sent: usize) {
        out.audio.drain(..sent);
    }

    #[test]
    fn a_cut_keeps_what_was_not_heard_from_the_quiet_before_the_word_it_cut() {
        let (mut out, mut unheard) = (Outbox::default(), Unheard::default());
        unheard.play(&mut out, &words(10), "reply-1.1");
        unheard.play(&mut out, &words(5), "reply-1.2");
        // 1.0 s sent; the sound began 100 ms before the box noticed it, Twilio held 60 ms: the
        // caller stopped hearing at 840 ms, inside the word that began at 800 ms.
        after_sending(&mut out, 16_000);
        let held = unheard.cut(&out, Duration::from_millis(100)).expect("something was not heard");
        // Picked up in the quiet before that word (700-800 ms), not at the start of the sentence.
        let from = held.from;
        assert!((16 * 700..16 * 800).contains(&from), "from {from}");
        let mut fresh = Outbox::default();
        let mut again = Unheard::default();
        assert!(held.resume(&mut again, &mut fresh).is_none());
        // The rest of the first sentence (in whole frames), then all of the second.
        assert_eq!(fresh.audio.len(), (32_000 - from).div_ceil(FRAME_16K) * FRAME_16K + 16_000);
        let labels: Vec<_> = fresh.marks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["reply-1.1", "reply-1.2"]);
    }

    #[test]
    fn pieces_already_heard_are_not_played_again() {
        let (mut out, mut unheard) = (Outbox::default(), Unheard::default());
        unheard.play(&mut out, &words(2), "greeting");
        unheard.play(&mut out, &words(2), "reply-1.1");
        after_sending(&mut out, 16 * 400);
        unheard.played("greeting");
        after_sending(&mut out, 16 * 300);
        let held = unheard.cut(&out, Duration::from_millis(200)).expect("the reply was cut");
        let (mut fresh, mut again) = (Outbox::default(), Unheard::default());
        held.resume(&mut again, &mut fresh);
        assert_eq!(fresh.marks.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(), ["reply-1.1"]);
        assert_eq!(fresh.audio.len(), 16 * 400, "from the start of the reply: nothing of it was heard");
    }

    #[test]
    fn nothing_is_held_when_it_had_all_been_heard() {
        let (mut out, mut unheard) = (Outbox::default(), Unheard::default());
        unheard.play(&mut out, &words(1), "reprompt");
        after_sending(&mut out, 16 * 200);
        unheard.played("reprompt");
        assert!(unheard.cut(&out, Duration::ZERO).is_none());
    }

    #[test]
    fn without_a_gap_the_piece_starts_again() {
        let loud = vec![4000i16; 16_000];
        assert_eq!(word_start(&loud, 12_000), 0);
        assert_eq!(word_start(&words(3), 0), 0);
    }

    #[test]
    fn backchannels_noise_and_a_stray_syllable_are_not_words() {
        use crate::speech::prompts::{ENGLISH, KOREAN};
        let (short, long) = (Duration::from_millis(400), Duration::from_millis(900));
        let talking = |text: &str, pass, sound| held_words(text, pass, sound, &ENGLISH);
        assert!(!talking("", Pass::Free, short));
        assert!(!talking("[unk]", Pass::Free, long));
        assert!(!talking("Mhm. uh-huh", Pass::Free, long));
        // A syllable the small model heard in a cough.
        assert!(!talking("nah", Pass::Free, short));
        assert!(!held_words("냐", Pass::Free, short, &KOREAN));
        // Words: a stop word, a word of the box's phrases, two words, a longer sound, a phrase.
        assert!(talking("stop", Pass::Free, short));
        assert!(held_words("잠깐", Pass::Free, short, &KOREAN));
        assert!(talking("goodbye", Pass::Free, short));
        assert!(talking("yeah call", Pass::Free, short));
        assert!(talking("nah", Pass::Free, long));
        assert!(held_words("지금 몇 시 예요", Pass::Phrase, short, &KOREAN));
    }
}
