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

/// `voca web-password`: sets the LAN page's password from a line typed (not echoed) or piped in;
/// `--clear` removes it. A running box takes either at its next request; sessions under the old
/// password end.
pub fn web_password(config: &Config, clear: bool) -> anyhow::Result<ExitCode> {
    use std::io::{BufRead, IsTerminal};
    let data_dir = &config.device.data_dir;
    if clear {
        let removed = crate::web::auth::clear_password(data_dir)
            .map_err(|e| anyhow::anyhow!("cannot remove the password file in {}: {e}", data_dir.display()))?;
        println!(
            "{}: the page now asks for the first set-up (press the box's button when it says so)",
            if removed { "password removed" } else { "no password was set" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let stdin = std::io::stdin();
    let typed = stdin.is_terminal();
    if typed {
        eprint!("new password for the box's page (8 or more characters): ");
    }
    let echo = typed.then(EchoOff::new).flatten();
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    drop(echo);
    if typed {
        eprintln!();
    }
    crate::web::auth::store_password(data_dir, line.trim_end_matches(['\n', '\r']))?;
    println!("password set in {}", data_dir.join(crate::web::auth::PASSWORD_FILE).display());
    Ok(ExitCode::SUCCESS)
}

/// Turns the terminal's echo off while a password is typed; on again when dropped.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<Self> {
        // SAFETY: tcgetattr/tcsetattr on standard input with a termios we own.
        unsafe {
            let mut term: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut term) != 0 {
                return None;
            }
            let saved = term;
            term.c_lflag &= !libc::ECHO;
            (libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &term) == 0).then_some(Self(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
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
