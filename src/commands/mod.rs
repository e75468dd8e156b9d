//! The bodies of `voca`'s subcommands other than `run` (which is `app::run`): one module each.
//! `main.rs` parses the command line and dispatches here.

pub mod calls;
pub mod models;
pub mod phone;
pub mod simulate;
pub mod transcribe;
pub mod voices;

use std::process::ExitCode;

use crate::config::Config;

/// `voca check`: one line per check; fails if a required check fails.
/// `voca check --config-only`: reached only when the configuration loaded (`main` exits 2 with
/// the offending key otherwise), so it says so and where it came from.
pub fn config_valid(config: &Config) -> ExitCode {
    println!("configuration is valid ({})", config.source);
    ExitCode::SUCCESS
}

pub async fn check(config: &Config) -> ExitCode {
    println!("VOCA Box self-check ({} {})", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
    let report = crate::check::run(config, |outcome| println!("{outcome}")).await;
    println!("{}", report.summary());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
