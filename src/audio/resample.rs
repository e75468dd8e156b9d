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

/// Converts a whole buffer between any two rates. For prompts and recordings, off the per-frame path.
/// 8 <-> 16 kHz go through the phone path's own converters, so a recording is heard as a call hears it.
pub fn convert(input: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    if (from, to) == (8000, 16000) {
        let mut out = vec![0; input.len() * 2];
        Upsampler::default().process(input, &mut out);
        return out;
    }
    if (from, to) == (16000, 8000) {
        let mut out = vec![0; input.len() / 2 + 1];
        let n = Downsampler::default().process(input, &mut out);
        out.truncate(n);
        return out;
    }
    let mut converter = Converter::new(from, to);
    let mut out = converter.push(input);
    out.extend(converter.finish());
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Streaming conversion between any two rates (e.g. espeak-ng's 22 050 Hz to the box's 16 kHz):
/// windowed-sinc interpolation with 16 zero crossings and a cut-off 5 % below the lower Nyquist,
/// precomputed as a polyphase table, so each output sample is one short dot product. Audio pushed in
/// pieces comes out exactly as if it had been pushed in one, and `finish` returns the tail, giving
/// `floor(total_in * to / from)` samples in all.
#[derive(Debug, Clone)]
pub struct Converter {
    /// Output samples advance the input position by `down / up` input samples.
    up: u64,
    down: u64,
    /// Phases actually tabulated (`up`, or fewer for rates with a huge least common multiple).
    phases: u64,
    taps: usize,
    /// `phases` rows of `taps` coefficients, oldest input first.
    table: Vec<f32>,
    /// Input not yet fully used, starting `taps / 2 - 1` samples before the next output's centre
    /// at the start (zeros stand in for the samples before the stream).
    pending: Vec<f32>,
    /// Next output's position in `pending`, in units of `1 / up` input samples.
    position: u64,
    total_in: u64,
    total_out: u64,
}

impl Converter {
    const ZEROS: f64 = 16.0;
    const MAX_PHASES: u64 = 4096;

    pub fn new(from: u32, to: u32) -> Self {
        assert!(from > 0 && to > 0, "sample rates must be positive");
        let g = gcd(u64::from(from), u64::from(to));
        let (up, down) = (u64::from(to) / g, u64::from(from) / g);
        let ratio = f64::from(from) / f64::from(to);
        let cutoff = 0.95 * (1.0f64).min(1.0 / ratio);
        let reach = (Self::ZEROS / cutoff).ceil() as usize;
        let taps = 2 * reach;
        let phases = up.min(Self::MAX_PHASES);
        let mut table = Vec::with_capacity(phases as usize * taps);
        for p in 0..phases {
            let frac = p as f64 / phases as f64;
            for j in 0..taps {
                // Tap j reads input sample centre - reach + 1 + j; d is the output's distance from it.
                let d = frac + (reach as f64 - 1.0 - j as f64);
                let arg = std::f64::consts::PI * cutoff * d;
                let sinc = if arg.abs() < 1e-9 { 1.0 } else { arg.sin() / arg };
                let w = d / reach as f64;
                let window = if w.abs() >= 1.0 { 0.0 } else { 0.5 * (1.0 + (std::f64::consts::PI * w).cos()) };
                table.push((cutoff * sinc * window) as f32);
            }
        }
        Self {
            up,
            down,
            phases,
            taps,
            table,
            pending: vec![0.0; reach - 1],
            position: (reach as u64 - 1) * up,
            total_in: 0,
            total_out: 0,
        }
    }

    /// Converts the next piece of the stream; returns what can be computed so far.
    pub fn push(&mut self, input: &[i16]) -> Vec<i16> {
        self.total_in += input.len() as u64;
        self.pending.extend(input.iter().map(|&x| f32::from(x)));
        self.produce(u64::MAX)
    }

    /// The stream has ended: the remaining samples, with silence after the end.
    pub fn finish(&mut self) -> Vec<i16> {
        let due = self.total_in * self.up / self.down;
        self.pending.extend(std::iter::repeat_n(0.0, self.taps));
        let out = self.produce(due.saturating_sub(self.total_out));
        self.pending.clear();
        out
    }

    fn produce(&mut self, limit: u64) -> Vec<i16> {
        let reach = self.taps / 2;
        let mut out = Vec::with_capacity((self.pending.len() as u64 * self.up / self.down) as usize + 1);
        while (out.len() as u64) < limit {
            let centre = (self.position / self.up) as usize;
            if centre + reach >= self.pending.len() {
                break;
            }
            let phase = (self.position % self.up) * self.phases / self.up;
            let row = &self.table[phase as usize * self.taps..][..self.taps];
            out.push(to_i16(dot(&self.pending[centre + 1 - reach..=centre + reach], row)));
            self.position += self.down;
        }
        self.total_out += out.len() as u64;
        // Drop input no later output reaches.
        let centre = (self.position / self.up) as usize;
        let used = (centre + 1).saturating_sub(reach).min(self.pending.len());
        self.pending.drain(..used);
        self.position -= used as u64 * self.up;
        out
    }
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
    fn conversion_in_pieces_equals_one_piece() {
        let input = sine(700.0, 22050.0, 11025, 9000.0);
        let whole = convert(&input, 22050, 16000);
        for piece in [1, 7, 441, 1000] {
            let mut converter = Converter::new(22050, 16000);
            let mut pieces: Vec<i16> = input.chunks(piece).flat_map(|c| converter.push(c)).collect();
            pieces.extend(converter.finish());
            assert_eq!(pieces, whole, "pieces of {piece}");
        }
        assert_eq!(whole.len(), 8000);
        assert_eq!(convert(&input, 22050, 48000).len(), 24000);
        assert_eq!(convert(&input[..100], 22050, 8000).len(), 36);
    }

    #[test]
    fn conversion_delays_nothing() {
        // An impulse comes out where it went in, scaled to the new rate.
        let mut click = vec![0i16; 2205];
        click[1000] = 20000;
        let out = convert(&click, 22050, 16000);
        let peak = out.iter().enumerate().max_by_key(|(_, s)| s.unsigned_abs()).map(|(i, _)| i);
        assert_eq!(peak, Some(726), "1000 * 16000 / 22050 = 725.6");
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

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Splits `input` at the given cut points (taken modulo its length).
        fn pieces(input: &[i16], cuts: &[usize]) -> Vec<Vec<i16>> {
            let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            at.sort_unstable();
            let mut out = Vec::new();
            let mut start = 0;
            for cut in at.into_iter().chain([input.len()]) {
                out.push(input[start..cut].to_vec());
                start = cut;
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Audio pushed in any pieces comes out exactly as if pushed in one.
            #[test]
            fn the_converter_does_not_care_how_audio_is_cut(
                input in proptest::collection::vec(any::<i16>(), 0..3000),
                cuts in proptest::collection::vec(any::<usize>(), 0..8),
                rates in proptest::sample::select(vec![(8000, 16000), (16000, 8000), (22050, 16000), (48000, 16000), (16000, 44100)]),
            ) {
                let (from, to) = rates;
                let mut whole = Converter::new(from, to);
                let mut expected = whole.push(&input);
                expected.extend(whole.finish());
                let mut cut = Converter::new(from, to);
                let mut got = Vec::new();
                for piece in pieces(&input, &cuts) {
                    got.extend(cut.push(&piece));
                }
                got.extend(cut.finish());
                prop_assert_eq!(got.len() as u64, input.len() as u64 * u64::from(to) / u64::from(from));
                prop_assert_eq!(got, expected);
            }

            /// The phone path's 8 <-> 16 kHz filters keep their state across frames of any size.
            #[test]
            fn the_phone_filters_do_not_care_how_audio_is_cut(
                input in proptest::collection::vec(any::<i16>(), 0..2000),
                cuts in proptest::collection::vec(any::<usize>(), 0..8),
            ) {
                let mut up_whole = Upsampler::default();
                let mut expected_up = vec![0i16; 2 * input.len()];
                up_whole.process(&input, &mut expected_up);
                let mut down_whole = Downsampler::default();
                let mut expected_down = vec![0i16; input.len() / 2 + 1];
                let n = down_whole.process(&input, &mut expected_down);
                expected_down.truncate(n);

                let (mut up, mut down) = (Upsampler::default(), Downsampler::default());
                let (mut got_up, mut got_down): (Vec<i16>, Vec<i16>) = (Vec::new(), Vec::new());
                for piece in pieces(&input, &cuts) {
                    let mut out = vec![0i16; 2 * piece.len()];
                    up.process(&piece, &mut out);
                    got_up.extend(out);
                    let mut out = vec![0i16; piece.len() / 2 + 1];
                    let n = down.process(&piece, &mut out);
                    got_down.extend(&out[..n]);
                }
                prop_assert_eq!(got_up, expected_up);
                prop_assert_eq!(got_down, expected_down);
            }
        }
    }
}
