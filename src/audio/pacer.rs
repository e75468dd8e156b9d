//! Outbound pacing: frame k of a reply leaves at `start + k * frame - lead`, computed from one
//! monotonic start instant (so it never drifts), with a small lead so the far end never starves.
//! After a stall longer than the lead it starts a new timeline instead of bursting to catch up.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Pacer {
    frame: Duration,
    lead: Duration,
    start: Option<Instant>,
    sent: u32,
}

impl Pacer {
    pub fn new(frame: Duration, lead: Duration) -> Self {
        Self { frame, lead, start: None, sent: 0 }
    }

    /// The Media Streams pacer: 20 ms frames, 60 ms in flight at most ahead of real time.
    pub fn media() -> Self {
        Self::new(Duration::from_millis(20), Duration::from_millis(40))
    }

    /// When the next frame should leave; `now` when nothing is playing.
    pub fn next_due(&self, now: Instant) -> Instant {
        match self.start {
            None => now,
            Some(start) => start + (self.frame * self.sent).saturating_sub(self.lead),
        }
    }

    /// Records that a frame left at `now`.
    pub fn sent(&mut self, now: Instant) {
        let late = self.start.is_some() && now > self.next_due(now) + self.lead;
        if self.start.is_none() || late {
            self.start = Some(now);
            self.sent = 0;
        }
        self.sent += 1;
    }

    /// Nothing left to play (or the far end was cleared): the next frame starts a new timeline.
    pub fn idle(&mut self) {
        self.start = None;
        self.sent = 0;
    }

    pub fn is_playing(&self) -> bool {
        self.start.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_reply_starts_with_its_lead_then_keeps_exact_time() {
        let t0 = Instant::now();
        let mut p = Pacer::media();
        let mut now = t0;
        let mut times = Vec::new();
        for _ in 0..3000 {
            now = now.max(p.next_due(now));
            times.push(now - t0);
            p.sent(now);
        }
        assert_eq!(&times[..4], &[Duration::ZERO, Duration::ZERO, Duration::ZERO, 20 * MS]);
        // One minute in: still exactly on the 20 ms grid, no drift.
        assert_eq!(times[2999], 2999 * 20 * MS - 40 * MS);
    }

    #[test]
    fn a_stall_does_not_cause_a_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::media();
        let mut now = t0;
        for _ in 0..10 {
            now = now.max(p.next_due(now));
            p.sent(now);
        }
        now += 500 * MS; // the task was not scheduled for half a second
        let mut at_once = 0;
        while p.next_due(now) <= now {
            p.sent(now);
            at_once += 1;
        }
        assert!(at_once <= 3, "{at_once} frames at once after a stall");
    }

    #[test]
    fn idle_starts_a_new_timeline() {
        let t0 = Instant::now();
        let mut p = Pacer::media();
        p.sent(t0);
        assert!(p.is_playing());
        p.idle();
        assert!(!p.is_playing());
        let later = t0 + 10 * MS;
        assert_eq!(p.next_due(later), later);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Sends frames as the call task does: wait for the due time, wake up `jitter` late.
        fn run(jitter_ms: &[u64]) -> Vec<Duration> {
            let t0 = Instant::now();
            let mut p = Pacer::media();
            let mut now = t0;
            let mut times = Vec::new();
            for &j in jitter_ms {
                now = now.max(p.next_due(now)) + Duration::from_millis(j);
                times.push(now - t0);
                p.sent(now);
                assert!(p.next_due(now) <= now + 20 * MS, "the pacer never waits more than a frame");
            }
            times
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// Scheduling noise up to a frame: every frame leaves within its own delay (plus at most
            /// the 40 ms lead, while earlier frames' delays are absorbed) of its place on the one
            /// 20 ms grid, however long the reply: delays never add up (no drift).
            #[test]
            fn noise_never_accumulates(jitter in prop::collection::vec(0u64..=20, 1..3000)) {
                let times = run(&jitter);
                let grid0 = times[0];
                for (k, (t, j)) in times.iter().zip(&jitter).enumerate().skip(1) {
                    let grid = grid0 + (20 * MS * k as u32).saturating_sub(40 * MS);
                    let own = Duration::from_millis(*j);
                    prop_assert!(*t >= grid + own && *t <= grid + own + 40 * MS, "frame {} at {:?}, grid {:?}", k, t, grid);
                }
            }

            /// Any stalls (up to 300 ms): the far end never gets more than the lead ahead of real
            /// time; in any stretch, at most its length in frames plus the 60 ms lead leave.
            #[test]
            fn stalls_never_cause_bursts(jitter in prop::collection::vec(prop_oneof![0u64..=20, 0u64..=300], 1..400)) {
                let times = run(&jitter);
                for i in 0..times.len() {
                    for j in i + 1..times.len() {
                        let span = (times[j] - times[i]).as_millis() as usize;
                        prop_assert!(j - i <= span / 20 + 3, "frames {}..{} in {} ms", i, j, span);
                    }
                }
            }
        }
    }
}
