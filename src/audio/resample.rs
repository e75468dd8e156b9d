//! 8 kHz <-> 16 kHz resampling for the phone path: a 48-tap windowed-sinc low-pass (cut-off 3.8 kHz),
//! run as a two-phase polyphase filter. Each resampler keeps its filter history across calls, so a
//! stream cut into 20 ms frames comes out exactly as if it had been processed in one piece.

use std::sync::LazyLock;

const TAPS: usize = 48;
const HALF: usize = TAPS / 2;

/// The prototype low-pass at 16 kHz, unity gain at DC.
static LOW_PASS: LazyLock<[f32; TAPS]> = LazyLock::new(|| {
    let cutoff = 3800.0 / 16000.0;
    let centre = (TAPS - 1) as f64 / 2.0;
    let mut h = [0f64; TAPS];
    for (n, tap) in h.iter_mut().enumerate() {
        let x = n as f64 - centre;
        let sinc = if x == 0.0 {
            2.0 * cutoff
        } else {
            (2.0 * std::f64::consts::PI * cutoff * x).sin() / (std::f64::consts::PI * x)
        };
        let phase = 2.0 * std::f64::consts::PI * n as f64 / (TAPS - 1) as f64;
        let blackman = 0.42 - 0.5 * phase.cos() + 0.08 * (2.0 * phase).cos();
        *tap = sinc * blackman;
    }
    let sum: f64 = h.iter().sum();
    h.map(|t| (t / sum) as f32)
});

/// A history of the last `N` samples, stored twice so the window is always one contiguous slice.
#[derive(Debug, Clone)]
struct History<const N: usize, const N2: usize> {
    buf: [f32; N2],
    head: usize,
}

impl<const N: usize, const N2: usize> History<N, N2> {
    fn new() -> Self {
        Self { buf: [0.0; N2], head: 0 }
    }

    #[inline]
    fn push(&mut self, x: f32) {
        self.buf[self.head] = x;
        self.buf[self.head + N] = x;
        self.head = (self.head + 1) % N;
    }

    /// Oldest to newest.
    #[inline]
    fn window(&self) -> &[f32] {
        &self.buf[self.head..self.head + N]
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[inline]
fn to_i16(x: f32) -> i16 {
    x.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16
}

/// 8 kHz -> 16 kHz.
#[derive(Debug, Clone)]
pub struct Upsampler {
    history: History<HALF, TAPS>,
    /// The two phase filters, reversed to line up with the history window (oldest first), gain 2.
    phases: [[f32; HALF]; 2],
}

impl Default for Upsampler {
    fn default() -> Self {
        let h = &*LOW_PASS;
        let mut phases = [[0f32; HALF]; 2];
        for (p, phase) in phases.iter_mut().enumerate() {
            for (i, c) in phase.iter_mut().enumerate() {
                *c = 2.0 * h[2 * (HALF - 1 - i) + p];
            }
        }
        Self { history: History::new(), phases }
    }
}

impl Upsampler {
    /// Writes `2 * input.len()` samples to `output` (which must be at least that long).
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) {
        assert!(output.len() >= 2 * input.len(), "upsampler output too short");
        for (x, out) in input.iter().zip(output.chunks_exact_mut(2)) {
            self.history.push(f32::from(*x));
            let w = self.history.window();
            out[0] = to_i16(dot(w, &self.phases[0]));
            out[1] = to_i16(dot(w, &self.phases[1]));
        }
    }
}

/// 16 kHz -> 8 kHz. An odd-length input is fine: the parity carries over to the next call.
#[derive(Debug, Clone)]
pub struct Downsampler {
    history: History<TAPS, { 2 * TAPS }>,
    reversed: [f32; TAPS],
    odd: bool,
}

impl Default for Downsampler {
    fn default() -> Self {
        let mut reversed = *LOW_PASS;
        reversed.reverse();
        Self { history: History::new(), reversed, odd: false }
    }
}

impl Downsampler {
    /// Writes one sample per two inputs to `output`; returns how many were written.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> usize {
        let mut written = 0;
        for x in input {
            self.history.push(f32::from(*x));
            self.odd = !self.odd;
            if !self.odd {
                output[written] = to_i16(dot(self.history.window(), &self.reversed));
                written += 1;
            }
        }
        written
    }
}

/// Converts a whole buffer between any two rates (windowed-sinc interpolation, 16 zero crossings,
/// cut-off below the lower Nyquist). For prompts and synthesised speech, off the per-frame path.
pub fn convert(input: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    const ZEROS: i64 = 16;
    let ratio = f64::from(from) / f64::from(to);
    // Below the lower of the two Nyquist frequencies, with 5 % room for the window's transition.
    let cutoff = 0.95 * (1.0f64).min(1.0 / ratio);
    let out_len = (input.len() as f64 / ratio).floor() as usize;
    let reach = (ZEROS as f64 / cutoff).ceil() as i64;
    (0..out_len)
        .map(|m| {
            let t = m as f64 * ratio;
            let centre = t.floor() as i64;
            let mut acc = 0.0;
            for k in (centre - reach + 1)..=(centre + reach) {
                let Some(&x) = usize::try_from(k).ok().and_then(|k| input.get(k)) else { continue };
                let d = t - k as f64;
                let arg = std::f64::consts::PI * cutoff * d;
                let sinc = if arg.abs() < 1e-9 { 1.0 } else { arg.sin() / arg };
                let w = d / (reach as f64);
                let window = if w.abs() >= 1.0 { 0.0 } else { 0.5 * (1.0 + (std::f64::consts::PI * w).cos()) };
                acc += f64::from(x) * cutoff * sinc * window;
            }
            acc.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: f64, len: usize, amplitude: f64) -> Vec<i16> {
        (0..len).map(|n| (amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / rate).sin()) as i16).collect()
    }

    /// RMS of the second half (past the filter's start-up).
    fn rms(x: &[i16]) -> f64 {
        let tail = &x[x.len() / 2..];
        (tail.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / tail.len() as f64).sqrt()
    }

    #[test]
    fn upsampling_keeps_speech_band_tones() {
        for freq in [300.0, 1000.0, 3000.0] {
            let input = sine(freq, 8000.0, 1600, 10000.0);
            let mut out = vec![0; 3200];
            Upsampler::default().process(&input, &mut out);
            let ratio = rms(&out) / rms(&input);
            assert!((0.95..1.05).contains(&ratio), "{freq} Hz: gain {ratio}");
        }
    }

    #[test]
    fn downsampling_keeps_speech_and_removes_what_would_alias() {
        let mut out = vec![0; 1600];
        let kept = sine(1000.0, 16000.0, 3200, 10000.0);
        Downsampler::default().process(&kept, &mut out);
        let ratio = rms(&out) / rms(&kept);
        assert!((0.95..1.05).contains(&ratio), "1 kHz gain {ratio}");
        let alias = sine(6000.0, 16000.0, 3200, 10000.0);
        Downsampler::default().process(&alias, &mut out);
        let db = 20.0 * (rms(&out).max(0.5) / rms(&alias)).log10();
        assert!(db < -50.0, "6 kHz must be suppressed, got {db:.1} dB");
    }

    #[test]
    fn frame_by_frame_equals_one_piece() {
        let input = sine(440.0, 8000.0, 1600, 12000.0);
        let mut whole = vec![0; 3200];
        Upsampler::default().process(&input, &mut whole);
        let mut framed = vec![0; 3200];
        let mut up = Upsampler::default();
        for (i, chunk) in input.chunks(160).enumerate() {
            up.process(chunk, &mut framed[i * 320..(i + 1) * 320]);
        }
        assert_eq!(whole, framed);

        let mut whole8 = vec![0; 1600];
        Downsampler::default().process(&whole, &mut whole8);
        let mut framed8 = vec![0; 1600];
        let mut down = Downsampler::default();
        let mut at = 0;
        for chunk in whole.chunks(333) {
            at += down.process(chunk, &mut framed8[at..]);
        }
        assert_eq!(at, 1600);
        assert_eq!(whole8, framed8, "odd chunk sizes carry their parity");
    }

    #[test]
    fn any_rate_conversion_keeps_tones_and_length() {
        let input = sine(1000.0, 22050.0, 22050, 10000.0);
        let out = convert(&input, 22050, 16000);
        assert_eq!(out.len(), 16000);
        let ratio = rms(&out) / rms(&input);
        assert!((0.95..1.05).contains(&ratio), "gain {ratio}");
        // 9 kHz fits at 22.05 kHz but not at 16 kHz: it must not fold back into the band.
        let high = sine(9000.0, 22050.0, 22050, 10000.0);
        let folded = convert(&high, 22050, 16000);
        assert!(rms(&folded) < 0.05 * rms(&high), "aliasing {}", rms(&folded));
    }

    #[test]
    fn full_scale_input_does_not_wrap() {
        let square: Vec<i16> = (0..800).map(|n| if (n / 20) % 2 == 0 { i16::MAX } else { i16::MIN }).collect();
        let mut out = vec![0; 1600];
        Upsampler::default().process(&square, &mut out);
        // Overshoot (Gibbs) must clamp, never wrap to the opposite sign.
        for pair in out.windows(2) {
            assert!((i32::from(pair[0]) - i32::from(pair[1])).abs() < 40000, "{pair:?}");
        }
    }
}
