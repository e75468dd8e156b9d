//! Logging: `tracing` to stderr; RUST_LOG or `--log-level` choose what shows; under systemd
//! (journald adds its own timestamps) lines are plain, without time or colour; colour only on a terminal.

pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. `level` (from `--log-level`) wins over RUST_LOG; with neither (or
/// an unreadable RUST_LOG), the box logs at `info`. Both take `LEVEL` or `TARGET=LEVEL` items separated
/// by commas, e.g. `voca=debug,info` (`tracing`'s `Targets` syntax: no regex engine in the binary).
pub fn init(level: Option<&str>) -> Result<(), String> {
    let filter: Targets = match level {
        Some(level) => level.parse().map_err(|e| {
            format!("invalid --log-level \"{level}\": {e} (expected LEVEL or TARGET=LEVEL items, e.g. voca=debug,info)")
        })?,
        None => std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO)),
    };
    // Colour only for a person at a terminal: a log file or the journal gets plain text; journald
    // adds its own time.
    let journald = under_journald();
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal() && !journald);
    let result = if journald {
        fmt.without_time().finish().with(filter).try_init()
    } else {
        fmt.finish().with(filter).try_init()
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

/// systemd sets JOURNAL_STREAM for services whose stderr goes to the journal.
fn under_journald() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Lets one log line through per period and counts the rest, so a condition that repeats (a
/// recognizer falling behind on every call) writes one line with a count, not thousands.
#[derive(Debug)]
pub struct Throttle {
    every: std::time::Duration,
    /// When the last line went out, and how many were held back since.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    pub const fn new(every: std::time::Duration) -> Self {
        Self { every, state: std::sync::Mutex::new((None, 0)) }
    }

    /// `Some(n)` when this occurrence should be logged (`n` were held back since the last line),
    /// `None` when it is held back.
    pub fn check(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                state.0 = Some(now);
                Some(std::mem::take(&mut state.1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_line_through_per_period_and_counts_the_rest() {
        let throttle = Throttle::new(std::time::Duration::from_secs(3600));
        assert_eq!(throttle.check(), Some(0));
        assert_eq!((0..5).filter_map(|_| throttle.check()).count(), 0);
        let throttle = Throttle::new(std::time::Duration::ZERO);
        assert_eq!(throttle.check(), Some(0));
        assert_eq!(throttle.check(), Some(0), "a zero period lets every line through");
    }
}
