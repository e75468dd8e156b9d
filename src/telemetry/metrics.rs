//! The box's counters and histograms for `/metrics`: lock-free statics that the parts bump where
//! things happen (a turn answered, a barge-in, audio decoded, a tunnel reconnect, a Twilio API
//! error, an audio device fault). the LAN page's `/metrics` route renders them with the figures it reads
//! at scrape time (calls from the call log, active calls, model state, tunnel state).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of [`Histogram`] buckets, `+Inf` implied.
pub const LATENCY_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0];

/// Durations in fixed buckets (cumulative when rendered), their sum and count.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len()],
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let seconds = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound, then the sum (seconds) and the count.
    pub fn read(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut running = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                running += n.load(Ordering::Relaxed);
                (*bound, running)
            })
            .collect();
        (buckets, self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6, self.count.load(Ordering::Relaxed))
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// From the end of the caller's turn (transcript ready) to the first audio of the reply.
pub static TURN_LATENCY: Histogram = Histogram::new();
/// How far recognition was behind the caller when a turn ended.
pub static RECOGNIZER_LAG: Histogram = Histogram::new();
/// Replies cut because the caller spoke over them (or pressed a key).
pub static BARGE_INS: Counter = Counter::new();
/// Replies picked up again after a sound without words (a cough, a "mhm") cut them.
pub static REPLIES_RESUMED: Counter = Counter::new();
/// End-of-turn decisions: the model said finished / not yet; pauses that found its queue full
/// (ended by the hangover instead).
pub static TURN_DECISIONS_FINISHED: Counter = Counter::new();
pub static TURN_DECISIONS_NOT_YET: Counter = Counter::new();
pub static TURN_DECISIONS_SKIPPED: Counter = Counter::new();
/// Pauses the model had not answered when the hangover would have ended the turn (it did).
pub static TURN_DECISIONS_LATE: Counter = Counter::new();
/// Turns ended at a pause because what the caller said was a whole phrase the box knows.
pub static TURN_ENDED_BY_PHRASE: Counter = Counter::new();
/// Caller audio decoded by the recognizers, and the time they took (microseconds each).
pub static DECODED_AUDIO_MICROS: Counter = Counter::new();
pub static DECODING_MICROS: Counter = Counter::new();
/// Tunnel sessions lost and opened again.
pub static TUNNEL_RECONNECTS: Counter = Counter::new();
/// Twilio API requests that failed: refused (4xx), failed at Twilio (5xx), or never answered.
pub static TWILIO_ERRORS_4XX: Counter = Counter::new();
pub static TWILIO_ERRORS_5XX: Counter = Counter::new();
pub static TWILIO_ERRORS_TRANSPORT: Counter = Counter::new();
/// An audio device went wrong (missing, unplugged, failing).
pub static AUDIO_FAULTS: Counter = Counter::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_cumulatively() {
        let h = Histogram::new();
        for ms in [50, 300, 300, 20_000] {
            h.observe(Duration::from_millis(ms));
        }
        let (buckets, sum, count) = h.read();
        assert_eq!(buckets[0], (0.1, 1));
        assert_eq!(buckets[2], (0.5, 3));
        assert_eq!(buckets.last().copied(), Some((10.0, 3)), "20 s is only in +Inf");
        assert_eq!(count, 4);
        assert!((sum - 20.65).abs() < 1e-9);
    }
}
