//! Turning a button's debounced edges into presses: `Down`/`Up` at once, then `Long` (held at least
//! `long`), `Double` (a second short press within `double_gap`) or `Short` (no second press came).
//! Pure logic over timestamps, shared by the GPIO and simulated panels.

use std::time::{Duration, Instant};

use super::Press;

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub long: Duration,
    pub double_gap: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self { long: Duration::from_millis(800), double_gap: Duration::from_millis(350) }
    }
}

#[derive(Debug, Default)]
pub struct Detector {
    timing: Timing,
    down_at: Option<Instant>,
    /// A short press ended at this time; it becomes `Short` unless a second one follows.
    pending_short: Option<Instant>,
}

impl Detector {
    pub fn new(timing: Timing) -> Self {
        Self { timing, ..Self::default() }
    }

    /// A debounced edge: `pressed` is the new level.
    pub fn edge(&mut self, pressed: bool, at: Instant) -> Vec<Press> {
        let mut out = Vec::new();
        match (pressed, self.down_at) {
            (true, None) => {
                self.down_at = Some(at);
                out.push(Press::Down);
            }
            (false, Some(down)) => {
                self.down_at = None;
                out.push(Press::Up);
                if at.duration_since(down) >= self.timing.long {
                    if self.pending_short.take().is_some() {
                        out.push(Press::Short);
                    }
                    out.push(Press::Long);
                } else if self.pending_short.take().is_some() {
                    out.push(Press::Double);
                } else {
                    self.pending_short = Some(at);
                }
            }
            // Repeated levels (bounces the debounce let through) change nothing.
            _ => {}
        }
        out
    }

    /// Time passes: a short press with no second one after `double_gap` is a `Short`.
    pub fn tick(&mut self, at: Instant) -> Option<Press> {
        let pending = self.pending_short?;
        if self.down_at.is_none() && at.duration_since(pending) >= self.timing.double_gap {
            self.pending_short = None;
            return Some(Press::Short);
        }
        None
    }

    /// When `tick` next has something to say.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending_short.map(|t| t + self.timing.double_gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn short_long_and_double_presses_are_told_apart() {
        let t0 = Instant::now();
        let mut d = Detector::default();
        assert_eq!(d.edge(true, t0), [Press::Down]);
        assert_eq!(d.edge(false, ms(t0, 120)), [Press::Up]);
        assert_eq!(d.tick(ms(t0, 300)), None, "a second press may still come");
        assert_eq!(d.tick(ms(t0, 480)), Some(Press::Short));
        assert_eq!(d.tick(ms(t0, 900)), None, "reported once");

        assert_eq!(d.edge(true, ms(t0, 1000)), [Press::Down]);
        assert_eq!(d.edge(true, ms(t0, 1010)), [], "a bounce");
        assert_eq!(d.edge(false, ms(t0, 2000)), [Press::Up, Press::Long]);

        assert_eq!(d.edge(true, ms(t0, 3000)), [Press::Down]);
        assert_eq!(d.edge(false, ms(t0, 3100)), [Press::Up]);
        assert_eq!(d.edge(true, ms(t0, 3250)), [Press::Down]);
        assert_eq!(d.tick(ms(t0, 3500)), None, "held: not a short press yet");
        assert_eq!(d.edge(false, ms(t0, 3350)), [Press::Up, Press::Double]);
        assert_eq!(d.tick(ms(t0, 4000)), None);
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn a_short_press_then_a_long_one_reports_both() {
        let t0 = Instant::now();
        let mut d = Detector::default();
        d.edge(true, t0);
        d.edge(false, ms(t0, 100));
        d.edge(true, ms(t0, 200));
        assert_eq!(d.edge(false, ms(t0, 1200)), [Press::Up, Press::Short, Press::Long]);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// However a person presses (levels repeated by bounces, any timing), every press ends
            /// as exactly one Short or Long, or half of a Double; Down and Up always pair.
            #[test]
            fn every_press_is_told_once(edges in proptest::collection::vec((any::<bool>(), 0u64..1500), 0..40)) {
                let mut detector = Detector::new(Timing::default());
                let start = Instant::now();
                let mut t = start;
                let mut presses = Vec::new();
                for (level, gap) in edges {
                    t += Duration::from_millis(gap);
                    presses.extend(detector.tick(t));
                    presses.extend(detector.edge(level, t));
                }
                t += Duration::from_millis(10);
                presses.extend(detector.edge(false, t));
                presses.extend(detector.tick(t + Duration::from_secs(10)));
                let count = |p: Press| presses.iter().filter(|x| **x == p).count();
                prop_assert_eq!(count(Press::Down), count(Press::Up));
                prop_assert_eq!(count(Press::Short) + count(Press::Long) + 2 * count(Press::Double), count(Press::Up), "{:?}", presses);
                prop_assert!(detector.deadline().is_none(), "nothing left pending");
            }
        }
    }
}
