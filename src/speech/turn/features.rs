//! Whisper-style log-mel features of the last 8 s of a caller's speech: what the end-of-turn model
//! reads. 80 mel bands (Slaney scale and area normalisation) over 800 frames of a 400-sample periodic
//! Hann window every 160 samples, the log clamped to 8 decades below its peak and scaled to about
//! [-1, 1]: the computation of `transformers.WhisperFeatureExtractor` as Smart Turn v3 calls it
//! (tested against the Python reference shipped with the model, `tests/turn.rs`).

use std::sync::{Arc, OnceLock};

use realfft::{RealFftPlanner, RealToComplex};

/// 16 kHz samples the model looks at: the last 8 seconds.
pub const WINDOW: usize = 16_000 * 8;
pub const MELS: usize = 80;
pub const FRAMES: usize = 800;
const N_FFT: usize = 400;
const HOP: usize = 160;
const BINS: usize = N_FFT / 2 + 1;
const MEL_FLOOR: f64 = 1e-10;

/// The features, `MELS` rows of `FRAMES` values (row-major, as the model's `[1, 80, 800]` input).
pub type Features = Vec<f32>;

/// The fixed parts: the window, the mel filter bank (each frequency bin's few non-zero weights:
/// `(band, weight)`) and the FFT plan.
struct Tables {
    window: Vec<f64>,
    mel: Vec<Vec<(usize, f64)>>,
    fft: Arc<dyn RealToComplex<f64>>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| Tables {
        window: (0..N_FFT).map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos()).collect(),
        mel: mel_filters()
            .iter()
            .map(|row| row.iter().enumerate().filter(|(_, w)| **w > 0.0).map(|(m, w)| (m, *w)).collect())
            .collect(),
        fft: RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT),
    })
}

fn hertz_to_mel(f: f64) -> f64 {
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = 15.0;
    if f >= MIN_LOG_HZ {
        MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() * (27.0 / 6.4f64.ln())
    } else {
        3.0 * f / 200.0
    }
}

fn mel_to_hertz(m: f64) -> f64 {
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = 15.0;
    if m >= MIN_LOG_MEL {
        MIN_LOG_HZ * ((6.4f64.ln() / 27.0) * (m - MIN_LOG_MEL)).exp()
    } else {
        200.0 * m / 3.0
    }
}

/// Triangular filters evenly spaced on the Slaney mel scale from 0 to 8 kHz, each scaled to unit
/// area.
fn mel_filters() -> Vec<[f64; MELS]> {
    let (low, high) = (hertz_to_mel(0.0), hertz_to_mel(8_000.0));
    let edges: Vec<f64> =
        (0..MELS + 2).map(|i| mel_to_hertz(low + (high - low) * i as f64 / (MELS + 1) as f64)).collect();
    (0..BINS)
        .map(|bin| {
            let f = 8_000.0 * bin as f64 / (BINS - 1) as f64;
            let mut row = [0.0; MELS];
            for (m, value) in row.iter_mut().enumerate() {
                let down = (f - edges[m]) / (edges[m + 1] - edges[m]);
                let up = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1]);
                let area = 2.0 / (edges[m + 2] - edges[m]);
                *value = down.min(up).max(0.0) * area;
            }
            row
        })
        .collect()
}

/// The last [`WINDOW`] samples of `audio` (16 kHz), zeros before them when it is shorter, as the
/// model's reference prepares them; NaN or infinite samples (never from a phone line, but a float
/// source could) count as silence.
pub fn last_window(audio: &[f32]) -> Vec<f32> {
    let tail = &audio[audio.len().saturating_sub(WINDOW)..];
    let mut out = vec![0.0; WINDOW - tail.len()];
    out.extend(tail.iter().map(|s| if s.is_finite() { *s } else { 0.0 }));
    out
}

/// 16-bit samples as the model's floats (divided by 32768).
pub fn to_float(audio: &[i16]) -> Vec<f32> {
    audio.iter().map(|&s| f32::from(s) / 32_768.0).collect()
}

/// The log-mel features of exactly [`WINDOW`] samples (see [`last_window`]).
pub fn log_mel(window: &[f32]) -> Features {
    assert_eq!(window.len(), WINDOW, "log_mel takes the model's 8 s window");
    let t = tables();
    // Zero mean, unit variance (in f32 as the reference does, on the padded window).
    let mean = (window.iter().map(|&s| f64::from(s)).sum::<f64>() / WINDOW as f64) as f32;
    let var = (window.iter().map(|&s| f64::from(s - mean).powi(2)).sum::<f64>() / WINDOW as f64) as f32;
    let scale = 1.0 / (var + 1e-7).sqrt();
    let x: Vec<f64> = window.iter().map(|&s| f64::from((s - mean) * scale)).collect();
    // Centred frames over a reflection of the edges (`np.pad(mode="reflect")`).
    let pad = N_FFT / 2;
    let at = |i: isize| -> f64 {
        let n = WINDOW as isize;
        let j = if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        };
        x[j as usize]
    };
    let mut frame = t.fft.make_input_vec();
    let mut spectrum = t.fft.make_output_vec();
    let mut scratch = t.fft.make_scratch_vec();
    let mut mel = vec![0f64; MELS * FRAMES];
    let mut power = [0f64; BINS];
    // The reference computes one frame more and drops it.
    for f in 0..FRAMES {
        let start = (f * HOP) as isize - pad as isize;
        for (k, v) in frame.iter_mut().enumerate() {
            *v = at(start + k as isize) * t.window[k];
        }
        t.fft.process_with_scratch(&mut frame, &mut spectrum, &mut scratch).expect("sizes from the plan");
        for (p, c) in power.iter_mut().zip(&spectrum) {
            *p = c.norm_sqr();
        }
        let mut bands = [0f64; MELS];
        for (p, row) in power.iter().zip(&t.mel) {
            for &(band, w) in row {
                bands[band] += p * w;
            }
        }
        for (m, b) in bands.iter().enumerate() {
            mel[m * FRAMES + f] = b.max(MEL_FLOOR).log10();
        }
    }
    let peak = mel.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    mel.iter().map(|&v| ((v.max(peak - 8.0) + 4.0) / 4.0) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_bank_is_slaney_normalised_triangles() {
        let bank = mel_filters();
        assert_eq!(bank.len(), BINS);
        // Every band has some weight, and none is negative.
        for m in 0..MELS {
            let total: f64 = bank.iter().map(|row| row[m]).sum();
            assert!(total > 0.0, "band {m} is empty");
        }
        assert!(bank.iter().flatten().all(|w| *w >= 0.0));
        // Below 1 kHz the scale is linear: 3 mels per 200 Hz.
        assert!((hertz_to_mel(500.0) - 7.5).abs() < 1e-12);
        assert!((mel_to_hertz(hertz_to_mel(3_000.0)) - 3_000.0).abs() < 1e-9);
    }

    #[test]
    fn short_audio_is_padded_before_and_long_audio_keeps_its_end() {
        let short = last_window(&[0.5; 10]);
        assert_eq!(short.len(), WINDOW);
        assert!(short[..WINDOW - 10].iter().all(|s| *s == 0.0) && short[WINDOW - 10..].iter().all(|s| *s == 0.5));
        let mut long = vec![0.25; WINDOW + 5];
        long[0] = 1.0;
        assert!(last_window(&long).iter().all(|s| *s == 0.25), "the oldest samples go");
        assert!(last_window(&[f32::NAN, f32::INFINITY]).iter().all(|s| *s == 0.0), "NaNs are silence");
    }

    #[test]
    fn silence_and_a_tone_give_finite_features_in_range() {
        let silent = log_mel(&vec![0.0; WINDOW]);
        assert_eq!(silent.len(), MELS * FRAMES);
        assert!(silent.iter().all(|v| v.is_finite()));
        let tone: Vec<f32> =
            (0..WINDOW).map(|i| (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 16_000.0).sin()).collect();
        let features = log_mel(&tone);
        assert!(features.iter().all(|v| v.is_finite()));
        // The log is clamped to 8 decades below its peak: a spread of at most 2 once scaled.
        let (low, high) = features.iter().fold((f32::MAX, f32::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
        assert!(high - low <= 2.0 + 1e-5, "{low} .. {high}");
        // The band holding 440 Hz is the loudest in a middle frame.
        let frame = FRAMES / 2;
        let loudest = (0..MELS).max_by(|a, b| features[a * FRAMES + frame].total_cmp(&features[b * FRAMES + frame]));
        let band = loudest.expect("bands");
        assert!((8..=14).contains(&band), "440 Hz lands in mel band {band}");
    }
}
