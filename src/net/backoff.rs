//! The box's one retry policy: pauses from a first one, doubling up to a most, each scaled by a
//! random factor in [0.5, 1.5) so that many boxes (or many call-outs) do not retry in step. The
//! tunnel, the MQTT link, Twilio's REST API and the call-out queue all wait with it.

use std::time::Duration;

/// Pauses between attempts: from `first`, doubling up to `max`, each jittered.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { first, max: max.max(first), next: first }
    }

    /// The same pause every time (jittered): a queue retried at a steady pace.
    pub fn steady(every: Duration) -> Self {
        Self::new(every, every)
    }

    /// The pause before the next attempt; the one after it is twice as long, up to the most.
    pub fn pause(&mut self) -> Duration {
        let pause = jittered(self.next);
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// Back to the first pause (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// `base` scaled by a random factor in [0.5, 1.5).
fn jittered(base: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::getrandom(&mut b);
    base.mul_f64(0.5 + f64::from(u16::from_le_bytes(b)) / 65536.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_most_with_jitter_and_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let within = |d: Duration, base: u64| {
            let base = Duration::from_secs(base);
            d >= base / 2 && d < base * 3 / 2
        };
        for base in [1, 2, 4, 4, 4] {
            let pause = b.pause();
            assert!(within(pause, base), "{pause:?} within half and one and a half of {base} s");
        }
        b.reset();
        assert!(within(b.pause(), 1));
        let mut steady = Backoff::steady(Duration::from_secs(2));
        assert!((0..5).all(|_| within(steady.pause(), 2)));
    }
}
