//! Logging: `tracing` to stderr; RUST_LOG or `--log-level` choose what shows; under systemd
//! (journald adds its own timestamps) lines are plain, without time or colour.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` (from `--log-level`) wins over RUST_LOG; with neither,
/// the box logs at `info`.
pub fn init(level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| format!("invalid --log-level \"{level}\": {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let result = if under_journald() { builder.without_time().with_ansi(false).try_init() } else { builder.try_init() };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

/// systemd sets JOURNAL_STREAM for services whose stderr goes to the journal.
fn under_journald() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}
