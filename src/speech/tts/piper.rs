//! Piper neural voices (VITS models in ONNX): phonemes from espeak-ng, phoneme ids from the voice's
//! own map, audio from ONNX Runtime, which is loaded at run time from `libonnxruntime.so` (so a box
//! without it still starts, speaks with espeak-ng and says what is missing).
//!
//! Matches the `piper-tts` package: ids are `^ _ (phoneme _)* $`, one inference per sentence (or
//! clause), each peak-normalised, then scaled to 16 bits by 32767 and truncated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use unicode_normalization::UnicodeNormalization;

use super::espeak::Clause;

#[derive(Debug, Error)]
pub enum PiperError {
    #[error(
        "ONNX Runtime is not available ({reason}): install libonnxruntime.so (the voca package carries it; \
         from a checkout, `make deps` puts it in .deps/onnxruntime/), or set `speech.onnxruntime` to its path"
    )]
    Runtime { reason: String },
    #[error("Piper voice {path}: {reason}: install one with `voca voices install` or `voca voices fetch NAME`")]
    Voice { path: PathBuf, reason: String },
    #[error("Piper voice config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("Piper synthesis failed: {0}")]
    Synthesis(String),
}

/// The parts of a voice's `.onnx.json` the box reads.
#[derive(Debug, Clone, Deserialize)]
pub struct VoiceConfig {
    pub audio: AudioConfig,
    pub espeak: EspeakConfig,
    #[serde(default)]
    pub inference: InferenceConfig,
    #[serde(default = "espeak_type")]
    pub phoneme_type: String,
    pub phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    pub num_speakers: u32,
    #[serde(default)]
    pub language: Option<LanguageConfig>,
}

fn espeak_type() -> String {
    "espeak".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct AudioConfig {
    pub sample_rate: u32,
    #[serde(default)]
    pub quality: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EspeakConfig {
    pub voice: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct InferenceConfig {
    #[serde(default = "noise_scale")]
    pub noise_scale: f32,
    #[serde(default = "length_scale")]
    pub length_scale: f32,
    #[serde(default = "noise_w")]
    pub noise_w: f32,
}

fn noise_scale() -> f32 {
    0.667
}
fn length_scale() -> f32 {
    1.0
}
fn noise_w() -> f32 {
    0.8
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self { noise_scale: noise_scale(), length_scale: length_scale(), noise_w: noise_w() }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LanguageConfig {
    /// `en_US`, `de_DE`, …
    pub code: String,
}

impl VoiceConfig {
    /// Reads `FILE.onnx.json`.
    pub fn read(path: &Path) -> Result<Self, PiperError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PiperError::Config { path: path.into(), reason: e.to_string() })?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| PiperError::Config { path: path.into(), reason: format!("not a Piper voice config: {e}") })?;
        if config.phoneme_type != "espeak" {
            return Err(PiperError::Config {
                path: path.into(),
                reason: format!("phoneme type \"{}\" is not supported: expected \"espeak\"", config.phoneme_type),
            });
        }
        for symbol in ["^", "$", "_"] {
            if !config.phoneme_id_map.contains_key(symbol) {
                return Err(PiperError::Config {
                    path: path.into(),
                    reason: format!("its phoneme map lacks \"{symbol}\""),
                });
            }
        }
        if !(8000..=48000).contains(&config.audio.sample_rate) {
            return Err(PiperError::Config {
                path: path.into(),
                reason: format!("sample rate {} is out of range: expected 8000 to 48000", config.audio.sample_rate),
            });
        }
        Ok(config)
    }

    /// The language part of the voice's code (`en` for `en_US`), if it says.
    pub fn language(&self) -> Option<&str> {
        self.language.as_ref().map(|l| l.code.split(['_', '-']).next().unwrap_or(&l.code))
    }
}

/// The phoneme ids of one sentence (or clause) as Piper reads them.
pub fn phoneme_ids(map: &HashMap<String, Vec<i64>>, clauses: &[Clause]) -> Vec<i64> {
    let pad = map.get("_").map_or(&[][..], Vec::as_slice);
    let mut ids = Vec::with_capacity(64);
    ids.extend(map.get("^").into_iter().flatten());
    ids.extend(pad);
    let mut symbol = String::with_capacity(4);
    for phoneme in clauses_text(clauses).nfd() {
        symbol.clear();
        symbol.push(phoneme);
        // piper-tts skips (and warns about) symbols its map lacks; so does the box.
        if let Some(id) = map.get(&symbol) {
            ids.extend(id);
            ids.extend(pad);
        }
    }
    ids.extend(map.get("$").into_iter().flatten());
    ids
}

/// A sentence's clauses as one phoneme string: each clause's punctuation kept, a space after a
/// comma, colon or semicolon (as piper-tts does).
fn clauses_text(clauses: &[Clause]) -> String {
    let mut text = String::new();
    for clause in clauses {
        text.push_str(&clause.phonemes);
        if let Some(t) = clause.terminator {
            text.push(t);
            if matches!(t, ',' | ':' | ';') {
                text.push(' ');
            }
        }
    }
    text
}

/// Tries `onnx` with ONNX Runtime from `library` in a child process (`voca voices probe`) before the
/// box loads them itself: a library that crashes as it loads (a wrong build for the board, a
/// broken download) then costs a fallback to espeak-ng, not the box (see [`onnx::probe`]).
pub fn probe(onnx: &Path, library: &Path, memo: Option<&Path>) -> Result<(), PiperError> {
    let memo = memo.map(|dir| dir.join("piper-probe.ok"));
    let probed = crate::speech::onnx::probe(&["voices", "probe"], onnx, library, &[json_of(onnx)], memo.as_deref());
    probed.map_err(|failure| match failure {
        crate::speech::onnx::ProbeFailure::Runtime(reason) => PiperError::Runtime { reason },
        crate::speech::onnx::ProbeFailure::Model(reason) => {
            PiperError::Voice { path: onnx.into(), reason: format!("a trial load failed: {reason}") }
        }
    })
}

/// What `voca voices probe` does in its own process: loads the voice and speaks a few ids.
pub fn probe_here(onnx: &Path, library: &Path) -> Result<usize, PiperError> {
    let mut voice = Voice::load(onnx, library, 1)?;
    let map = &voice.config.phoneme_id_map;
    let ids: Vec<i64> = ["^", "_", "a", "_", "$"].iter().filter_map(|s| map.get(*s)).flatten().copied().collect();
    Ok(voice.synthesize(&ids)?.len())
}

/// One Piper voice, loaded.
pub struct Voice {
    session: ort::session::Session,
    pub config: VoiceConfig,
    pub name: String,
    scales: [f32; 3],
}

impl std::fmt::Debug for Voice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Voice").field("name", &self.name).field("rate", &self.config.audio.sample_rate).finish()
    }
}

impl Voice {
    /// Loads `onnx` (its config beside it, `FILE.onnx.json`) with ONNX Runtime from `library`,
    /// running inference on `threads` threads.
    pub fn load(onnx: &Path, library: &Path, threads: usize) -> Result<Self, PiperError> {
        if !onnx.is_file() {
            return Err(PiperError::Voice { path: onnx.into(), reason: "not found".into() });
        }
        let config = VoiceConfig::read(&json_of(onnx))?;
        let environment = crate::speech::onnx::runtime(library).map_err(|reason| PiperError::Runtime { reason })?;
        let voice_error = |e: ort::Error| PiperError::Voice { path: onnx.into(), reason: e.to_string() };
        let session = ort::session::Session::builder(environment)
            .map_err(voice_error)?
            .with_intra_threads(threads.max(1))
            .map_err(|e| voice_error(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| voice_error(e.into()))?
            .commit_from_file(onnx)
            .map_err(voice_error)?;
        let i = config.inference;
        let name = onnx.file_name().and_then(|n| n.to_str()).unwrap_or("voice").trim_end_matches(".onnx").to_owned();
        Ok(Self { session, scales: [i.noise_scale, i.length_scale, i.noise_w], config, name })
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.audio.sample_rate
    }

    pub fn ids(&self, clauses: &[Clause]) -> Vec<i64> {
        phoneme_ids(&self.config.phoneme_id_map, clauses)
    }

    /// Speaks phoneme ids into 16-bit samples at [`Voice::sample_rate`] (the voice's own scales).
    pub fn synthesize(&mut self, ids: &[i64]) -> Result<Vec<i16>, PiperError> {
        let scales = self.scales;
        self.synthesize_with(ids, scales)
    }

    /// Like [`Voice::synthesize`] with `[noise, length, noise_w]` scales of the caller's choosing.
    pub fn synthesize_with(&mut self, ids: &[i64], scales: [f32; 3]) -> Result<Vec<i16>, PiperError> {
        use ort::value::Tensor;
        let fail = |e: ort::Error| PiperError::Synthesis(e.to_string());
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let input = Tensor::from_array(([1usize, ids.len()], ids.to_vec())).map_err(fail)?;
        let lengths = Tensor::from_array(([1usize], vec![ids.len() as i64])).map_err(fail)?;
        let scales = Tensor::from_array(([3usize], scales.to_vec())).map_err(fail)?;
        let outputs = if self.config.num_speakers > 1 {
            let sid = Tensor::from_array(([1usize], vec![0i64])).map_err(fail)?;
            self.session
                .run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales, "sid" => sid])
                .map_err(fail)?
        } else {
            self.session
                .run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales])
                .map_err(fail)?
        };
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(fail)?;
        Ok(to_pcm(audio))
    }
}

/// `FILE.onnx` -> `FILE.onnx.json`.
pub fn json_of(onnx: &Path) -> PathBuf {
    let mut name = onnx.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// Peak-normalised, then to 16 bits as piper-tts does (scale by 32767, clip, truncate).
fn to_pcm(audio: &[f32]) -> Vec<i16> {
    const MAX: f32 = 32767.0;
    let peak = audio.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    if peak < 1e-8 {
        return vec![0; audio.len()];
    }
    audio.iter().map(|s| ((s / peak).clamp(-1.0, 1.0) * MAX).clamp(-MAX, MAX) as i16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> HashMap<String, Vec<i64>> {
        [
            ("_", 0),
            ("^", 1),
            ("$", 2),
            (" ", 3),
            (",", 8),
            (".", 10),
            ("a", 14),
            ("ɪ", 74),
            ("ˈ", 120),
            ("\u{303}", 141),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), vec![v]))
        .collect()
    }

    #[test]
    fn ids_are_framed_padded_and_punctuated_like_piper() {
        let clauses = [
            Clause { phonemes: "ˈa".into(), terminator: Some(','), ends_sentence: false },
            Clause { phonemes: "ɪ?".into(), terminator: Some('.'), ends_sentence: true },
        ];
        // ^ _ ˈ _ a _ , _ ' ' _ ɪ _ . _ $   ("?" is not in this map: skipped)
        assert_eq!(phoneme_ids(&map(), &clauses), [1, 0, 120, 0, 14, 0, 8, 0, 3, 0, 74, 0, 10, 0, 2]);
        // Composed characters are decomposed: ã is a + combining tilde.
        let nasal = [Clause { phonemes: "ã".into(), terminator: None, ends_sentence: true }];
        assert_eq!(phoneme_ids(&map(), &nasal), [1, 0, 14, 0, 141, 0, 2]);
    }

    #[test]
    fn audio_is_peak_normalised_and_truncated() {
        assert_eq!(to_pcm(&[0.5, -0.25, 0.0]), [32767, -16383, 0]);
        assert_eq!(to_pcm(&[0.0, 0.0]), [0, 0]);
    }

    #[test]
    fn a_bad_voice_config_is_named_with_what_is_expected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let json = dir.path().join("v.onnx.json");
        std::fs::write(&json, "{\"audio\":{\"sample_rate\":22050}}").expect("write");
        let e = VoiceConfig::read(&json).expect_err("no espeak section");
        assert!(e.to_string().contains("v.onnx.json") && e.to_string().contains("espeak"), "{e}");
        std::fs::write(
            &json,
            "{\"audio\":{\"sample_rate\":22050},\"espeak\":{\"voice\":\"en-us\"},\"phoneme_type\":\"text\",\"phoneme_id_map\":{}}",
        )
        .expect("write");
        let e = VoiceConfig::read(&json).expect_err("text phonemes");
        assert!(e.to_string().contains("expected \"espeak\""), "{e}");
    }
}
