//! `voca`: the VOCA Box binary. Parses the command line, loads the configuration, sets up logging
//! and hands over to the library (`app::run`, `commands::*`). Only this file exits the process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use voca::commands::{self, models::ModelsCommand, simulate::SimulateArgs, voices::VoicesCommand};
use voca::config::Config;

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
    Check {
        /// Only load and validate the configuration (file, environment, .env): no network, devices
        /// or model. Exits 2 with the offending key named if it is invalid.
        #[arg(long)]
        config_only: bool,
    },
    /// Manage VOSK speech models.
    Models {
        #[command(subcommand)]
        action: ModelsCommand,
    },
    /// Manage Piper voices.
    Voices {
        #[command(subcommand)]
        action: VoicesCommand,
    },
    /// Place a call through Twilio; when answered, the box's webhook takes it.
    Call {
        /// The number to call, E.164 (e.g. +15551234567).
        number: String,
    },
    /// Hang up a call through Twilio.
    Hangup {
        /// The call's SID (CA…).
        call_sid: String,
    },
    /// List recent calls from the box's call log (numbers masked).
    Calls {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the speech recognizer over a WAV (16-bit PCM, any rate, mono or stereo) as a call would,
    /// at full speed: prints one transcript per utterance.
    Transcribe {
        /// The recording.
        audio: PathBuf,
    },
    /// Act as Twilio against a running box: signed webhook, TwiML, Media Stream with caller audio;
    /// prints what happened (turn latencies included) as JSON.
    SimulateCall(SimulateArgs),
    /// Set the LAN page's password (typed, or one line on standard input), or --clear it so the
    /// page asks for the first set-up again (which needs a press of the box's button).
    WebPassword {
        /// Remove the password instead of setting one.
        #[arg(long)]
        clear: bool,
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
    // The settings saved from the LAN page are layered in (`run` does it itself, per restart).
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(config) if matches!(cli.command, Command::Run) => config,
        Ok(config) => config.with_settings(),
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
            Command::Check { config_only: true } => Ok(commands::config_valid(&config)),
            Command::Check { config_only: false } => Ok(commands::check(&config).await),
            Command::Models { action } => commands::models::run(&config, action).await,
            Command::Voices { action } => commands::voices::run(&config, action).await,
            Command::Call { number } => commands::phone::call(&config, &number).await,
            Command::Hangup { call_sid } => commands::phone::hang_up(&config, &call_sid).await,
            Command::Calls { limit, json } => commands::calls::list(&config, limit, json).await,
            Command::SimulateCall(args) => commands::simulate::run(&config, args).await,
            Command::Transcribe { audio } => commands::transcribe::run(&config, &audio).await,
            Command::WebPassword { clear } => commands::web_password(&config, clear),
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
