//! Voice activity detection on the 16 kHz stream: an energy detector with an adaptive noise floor,
//! a minimum speech length (so a click is not a caller) and a hangover (so a pause between words is
//! not the end of a turn). It decides when a caller has finished speaking, well before VOSK would.

use std::time::Duration;

/// 20 ms frames.
const FRAME: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
pub struct VadConfig {
    /// Quiet this long after speech ends the turn.
    pub hangover: Duration,
    /// Speech shorter than this is ignored.
    pub min_speech: Duration,
    /// RMS below this is never speech (16-bit scale).
    pub floor: f32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self { hangover: Duration::from_millis(500), min_speech: Duration::from_millis(200), floor: 300.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech has lasted `min_speech`: someone is talking.
    Onset,
    /// The speech that began at the last onset has ended (`hangover` of quiet).
    End,
}

#[derive(Debug, Clone)]
pub struct Vad {
    config: VadConfig,
    noise: f32,
    voiced: u32,
    quiet: u32,
    talking: bool,
}

fn frames(d: Duration) -> u32 {
    (d.as_millis() / FRAME.as_millis()).max(1) as u32
}

impl Vad {
    pub fn new(config: VadConfig) -> Self {
        Self { config, noise: 100.0, voiced: 0, quiet: 0, talking: false }
    }

    pub fn config(&self) -> VadConfig {
        self.config
    }

    pub fn is_talking(&self) -> bool {
        self.talking
    }

    /// Quiet this long ends the speech in progress from now on (the end-of-turn model keeps a turn
    /// open longer, or hands it back to the hangover).
    pub fn set_hangover(&mut self, hangover: Duration) {
        self.config.hangover = hangover;
    }

    /// The speech in progress has ended, decided elsewhere (the end-of-turn model): the next voiced
    /// frames start a new one.
    pub fn end_speech(&mut self) {
        self.talking = false;
        self.voiced = 0;
    }

    /// How long the speech in progress has been quiet (zero on a voiced frame, or when no one talks).
    pub fn quiet(&self) -> Duration {
        if self.talking {
            FRAME * self.quiet
        } else {
            Duration::ZERO
        }
    }

    /// Feeds one 20 ms frame.
    pub fn push(&mut self, frame: &[i16]) -> Option<VadEvent> {
        let energy = frame.iter().map(|&s| f32::from(s) * f32::from(s)).sum::<f32>() / frame.len().max(1) as f32;
        let rms = energy.sqrt();
        let voiced = rms > self.config.floor.max(self.noise * 3.0);
        if !voiced {
            // The noise floor follows quiet frames slowly, so a noisy line does not count as speech.
            self.noise = 0.95 * self.noise + 0.05 * rms.max(1.0);
        }
        if voiced {
            self.voiced += 1;
            self.quiet = 0;
            if !self.talking && self.voiced >= frames(self.config.min_speech) {
                self.talking = true;
                return Some(VadEvent::Onset);
            }
        } else {
            self.quiet += 1;
            if self.talking && self.quiet >= frames(self.config.hangover) {
                self.talking = false;
                self.voiced = 0;
                return Some(VadEvent::End);
            }
            if !self.talking && self.quiet >= frames(self.config.hangover) {
                self.voiced = 0;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(vad: &mut Vad, level: i16, n: usize) -> Vec<(usize, VadEvent)> {
        let tone: Vec<i16> = (0..320).map(|i| if i % 2 == 0 { level } else { -level }).collect();
        (0..n).filter_map(|i| vad.push(&tone).map(|e| (i, e))).collect()
    }

    #[test]
    fn speech_then_hangover_makes_one_turn() {
        let mut vad = Vad::new(VadConfig::default());
        assert!(run(&mut vad, 0, 25).is_empty());
        assert_eq!(run(&mut vad, 5000, 50), [(9, VadEvent::Onset)], "onset after 200 ms of speech");
        assert!(run(&mut vad, 0, 10).is_empty(), "a 200 ms pause is not the end");
        assert!(run(&mut vad, 5000, 10).is_empty(), "still the same turn");
        assert_eq!(run(&mut vad, 0, 30), [(24, VadEvent::End)], "end after 500 ms of quiet");
    }

    #[test]
    fn clicks_and_line_noise_are_not_speech() {
        let mut vad = Vad::new(VadConfig::default());
        assert!(run(&mut vad, 5000, 3).is_empty(), "60 ms click");
        assert!(run(&mut vad, 0, 30).is_empty());
        // A noisy line (below the fixed floor) raises the adaptive floor to about 3x its level...
        let mut vad = Vad::new(VadConfig::default());
        assert!(run(&mut vad, 250, 200).is_empty());
        // ...so what would be speech on a quiet line is not speech here; a real voice still is.
        assert!(run(&mut vad, 600, 50).is_empty(), "600 is under 3 x the learned noise");
        assert_eq!(run(&mut vad, 3000, 20), [(9, VadEvent::Onset)]);
    }
}
