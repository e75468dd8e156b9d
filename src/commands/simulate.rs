//! `voca simulate-call`: act as Twilio against a running box and report what happened as JSON.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::twilio::simulator::{self, SimCall};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The box's base URL. Default: `twilio.public_url`, else http://<http.listen>.
    #[arg(long)]
    pub url: Option<String>,
    /// Caller audio: a 16-bit PCM WAV at any rate, mono or stereo (mixed down, sent at 8 kHz).
    #[arg(long)]
    pub audio: Option<PathBuf>,
    /// Playback speed of the caller audio: 1 is real time, 0 as fast as possible.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Key presses as DIGIT@SECONDS, comma-separated, e.g. "5@1.5,#@4".
    #[arg(long, default_value = "")]
    pub dtmf: String,
    /// The caller hangs up this many seconds after the stream starts.
    #[arg(long)]
    pub hang_up_after: Option<f64>,
    /// Seconds to stay on the line after the audio ends (unless the box hangs up first).
    #[arg(long, default_value_t = 3.0)]
    pub linger: f64,
    /// Caller number.
    #[arg(long, default_value = "+15550100001")]
    pub from: String,
    /// Save what the box said to this WAV (8 kHz).
    #[arg(long)]
    pub save: Option<PathBuf>,
}

pub async fn run(config: &Config, args: SimulateArgs) -> anyhow::Result<ExitCode> {
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
        call.audio = crate::audio::wav::read_at(path, 8000)?;
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
        crate::audio::wav::write(path, 8000, &result.received)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(if result.webhook_status == 200 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
