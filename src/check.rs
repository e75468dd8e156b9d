//! `voca check`: a doctor-style self-test. One line per check (✓ passed, ✗ failed, ! warning), a
//! hint under every failure and warning, and a failing exit status when a required check fails.

use std::fmt;
use std::net::TcpListener;

use crate::audio::device::{self, Role};
use crate::config::{Config, TunnelProvider};
use crate::speech::tts::TtsOptions;
use crate::speech::{models, stt, tts};
use crate::twilio::rest::{RestClient, RestError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub hint: Option<String>,
}

impl Outcome {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, status: Status::Pass, detail: detail.into(), hint: None }
    }

    fn warn(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { name, status: Status::Warn, detail: detail.into(), hint: Some(hint.into()) }
    }

    fn fail(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Self { name, status: Status::Fail, detail: detail.into(), hint: Some(hint.into()) }
    }

    /// A failure where the box can do without the part: a warning instead.
    fn soften(mut self, optional: bool) -> Self {
        if optional && self.status == Status::Fail {
            self.status = Status::Warn;
        }
        self
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.status {
            Status::Pass => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
        };
        write!(f, "{mark} {:<8} {}", self.name, self.detail)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n    hint: {hint}")?;
        }
        Ok(())
    }
}

/// The whole checklist.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.status != Status::Fail)
    }

    pub fn summary(&self) -> String {
        let count = |s| self.outcomes.iter().filter(|o| o.status == s).count();
        let (failed, warned) = (count(Status::Fail), count(Status::Warn));
        if failed == 0 {
            format!("all required checks passed ({warned} warning{})", if warned == 1 { "" } else { "s" })
        } else {
            format!("{failed} required check{} failed, {warned} warning{}", plural(failed), plural(warned))
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Runs every check, printing each line through `print` as soon as it is known.
pub async fn run(config: &Config, mut print: impl FnMut(&Outcome)) -> Report {
    let mut outcomes = Vec::new();
    let mut record = |o: Outcome| {
        print(&o);
        outcomes.push(o);
    };

    record(config_check(config));
    for o in twilio_checks(config).await {
        record(o);
    }
    let speech = config.speech.clone();
    let voice = TtsOptions::new(config);
    let blocking =
        tokio::task::spawn_blocking(move || (model_check(&speech), tts_check(&voice), turn_check(&speech))).await;
    match blocking {
        Ok((model, tts, turn)) => {
            record(model);
            record(tts);
            record(turn);
        }
        Err(e) => record(Outcome::fail(
            "speech",
            format!("the speech checks crashed: {e}"),
            "run with --log-level debug and report it",
        )),
    }
    let device = config.device.clone();
    let audio = tokio::task::spawn_blocking(move || {
        [Role::Capture, Role::Playback].map(|role| {
            let name = match role {
                Role::Capture => &device.capture,
                Role::Playback => &device.playback,
            };
            audio_check(name, role, device.sample_rate).soften(device.is_simulated())
        })
    })
    .await;
    match audio {
        Ok(results) => results.into_iter().for_each(&mut record),
        Err(e) => record(Outcome::fail(
            "audio",
            format!("the audio check crashed: {e}"),
            "run with --log-level debug and report it",
        )),
    }
    record(panel_check(config));
    record(listen_check(config));
    Report { outcomes }
}

fn config_check(config: &Config) -> Outcome {
    let mode = format!(
        "{}; answer mode {:?}, tunnel {:?}, board {}",
        config.source, config.calls.answer, config.tunnel.provider, config.device.board
    )
    .to_lowercase();
    if config.twilio.has_credentials() || config.tunnel.provider != TunnelProvider::None {
        Outcome::pass("config", format!("valid: {mode}"))
    } else {
        Outcome::warn(
            "config",
            format!("valid, local only: {mode}"),
            "no Twilio account set, so the box cannot take or place phone calls: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_PHONE_NUMBER",
        )
    }
}

/// The checks the running box can make of itself (the LAN page's "run the self-check"): as
/// `voca check`, but the audio devices, the panel and the listener are the box's own, in use, so
/// they are reported from what the box knows of them (`faults`, the state bus's) instead of
/// being opened again.
pub async fn run_in_box(config: &Config, faults: Option<&str>) -> Report {
    let mut outcomes = vec![config_check(config)];
    outcomes.extend(twilio_checks(config).await);
    let speech = config.speech.clone();
    let voice = TtsOptions::new(config);
    match tokio::task::spawn_blocking(move || (model_check(&speech), tts_check(&voice), turn_check(&speech))).await {
        Ok((model, tts, turn)) => outcomes.extend([model, tts, turn]),
        Err(e) => outcomes.push(Outcome::fail("speech", format!("the speech checks crashed: {e}"), "report it")),
    }
    outcomes.push(match faults {
        None => Outcome::pass("devices", "the speaker, microphone and panel are open and working"),
        Some(fault) => {
            Outcome::fail("devices", fault.to_owned(), "see the hint in the fault; `voca check` on the box says more")
        }
    });
    Report { outcomes }
}

/// The Twilio account and number checks alone (the page's "test" button).
pub async fn twilio_checks(config: &Config) -> Vec<Outcome> {
    let twilio = &config.twilio;
    let client = match RestClient::new(twilio) {
        Ok(client) => client,
        Err(_) => {
            return vec![Outcome::warn(
                "twilio",
                "skipped: no credentials configured",
                "set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to use the phone network",
            )]
        }
    };
    let account = match client.account().await {
        Ok(account) => {
            let name = account.friendly_name.unwrap_or_default();
            let status = account.status.unwrap_or_else(|| "unknown".into());
            let active = status == "active";
            let detail = format!("credentials accepted by {} for \"{name}\" (status {status})", twilio.api_base);
            if active {
                Outcome::pass("twilio", detail)
            } else {
                Outcome::fail("twilio", detail, "the account is not active: open the Twilio console to reactivate it")
            }
        }
        Err(e @ RestError::Unauthorized { .. }) => {
            Outcome::fail("twilio", e.to_string(), "copy the Account SID and Auth Token again from the Twilio console")
        }
        Err(e) => Outcome::fail("twilio", e.to_string(), "check the network and `twilio.api_base`"),
    };
    let credentials_ok = account.status == Status::Pass;
    let mut out = vec![account];
    let Some(number) = &twilio.phone_number else {
        out.push(Outcome::fail(
            "number",
            "no phone number configured",
            "set TWILIO_PHONE_NUMBER to the box's Twilio number",
        ));
        return out;
    };
    if !credentials_ok {
        out.push(Outcome::fail(
            "number",
            format!("{number} not checked: the account check failed"),
            "fix the credentials first",
        ));
        return out;
    }
    out.push(match client.find_number(number).await {
        Ok(Some(found)) => match &twilio.public_url {
            Some(base) if !crate::twilio::number::points_at(&found, base) => Outcome::warn(
                "number",
                format!(
                    "{number} belongs to the account but its calls go to {}",
                    found.voice_url.as_deref().unwrap_or("nowhere")
                ),
                format!("`voca run` with tunnel.provider = \"external\" points it at {base}"),
            ),
            Some(_) => {
                Outcome::pass("number", format!("{number} belongs to the account and its calls come to this box"))
            }
            None => Outcome::pass("number", format!("{number} belongs to the account ({})", found.sid)),
        },
        Ok(None) => Outcome::fail(
            "number",
            format!("{number} is not a number of this account"),
            "check TWILIO_PHONE_NUMBER, or buy/port the number into this account",
        ),
        Err(e) => Outcome::fail("number", e.to_string(), "check the network and `twilio.api_base`"),
    });
    out
}

fn model_check(speech: &crate::config::SpeechConfig) -> Outcome {
    let path = crate::speech::models::model_path(speech);
    match stt::load_model(&path) {
        Ok(loaded) => Outcome::pass(
            "model",
            format!(
                "{} loads ({:.1} s, {})",
                path.display(),
                loaded.took.as_secs_f64(),
                mb(models::size_on_disk(&path))
            ),
        ),
        Err(e) => {
            let hint = match models::catalog_entry(&speech.model) {
                Some(entry) => format!("run `voca models fetch {}`", entry.name),
                None => {
                    "install a model with `voca models fetch` or `voca models install`, or fix `speech.model`".into()
                }
            };
            Outcome::fail("model", e.to_string(), hint)
        }
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// The end-of-turn model: loaded and asked once (a second copy beside the box's own is fine: ONNX
/// Runtime sessions are independent).
fn turn_check(speech: &crate::config::SpeechConfig) -> Outcome {
    use crate::speech::turn::{self, features, TurnModel};
    if speech.end_of_turn == crate::config::EndOfTurn::Hangover {
        return Outcome::pass(
            "turn",
            format!(
                "turns end after {} of quiet (speech.end_of_turn = \"hangover\")",
                speech.endpoint_hangover.0.as_millis().to_string() + " ms"
            ),
        );
    }
    let path = turn::install::model_path(&speech.models_dir);
    let library = crate::speech::onnx::find_runtime(speech.onnxruntime.as_deref());
    let hint = "install it with `make turn-model`, or `voca models install-turn pipecat_ai-1.14.0-py3-none-any.whl`";
    match turn::probe(&path, &library, None).and_then(|()| TurnModel::load(&path, &library)) {
        Ok(mut model) => {
            let started = std::time::Instant::now();
            match model.probability(features::log_mel(&vec![0.0; features::WINDOW])) {
                Ok(_) => Outcome::pass(
                    "turn",
                    format!(
                        "end-of-turn model {}: asked at a {} ms pause, one decision took {} ms",
                        path.display(),
                        speech.turn_pause.0.as_millis(),
                        started.elapsed().as_millis()
                    ),
                ),
                Err(e) => Outcome::warn("turn", format!("{e}: turns end after the hangover"), hint),
            }
        }
        Err(e) => Outcome::warn("turn", format!("{e}"), hint),
    }
}

fn tts_check(options: &TtsOptions) -> Outcome {
    let mut options = options.clone();
    options.prompt_cache = None;
    let spoken = tts::Tts::start(&options).map(|tts| {
        let runtime = tokio::runtime::Builder::new_current_thread().build();
        let samples = runtime.map(|rt| rt.block_on(tts.render("This is the voice of your box."))).unwrap_or_default();
        (tts.voice.clone(), samples.len() as f64 / f64::from(tts::BOX_RATE))
    });
    match spoken {
        Ok((voice, seconds)) if seconds > 0.2 => {
            let what = match voice.engine {
                "piper" => format!("Piper voice \"{}\"", voice.voice),
                _ => format!("espeak-ng {}, voice \"{}\"", voice.espeak_version, voice.voice),
            };
            let detail = format!("{what}: {seconds:.1} s of audio for a test phrase");
            match voice.fallback {
                Some(why) => Outcome::warn("tts", format!("{detail}, not the configured Piper voice"), why),
                None => Outcome::pass("tts", detail),
            }
        }
        Ok((voice, _)) => Outcome::fail(
            "tts",
            format!("{} voice \"{}\" produced no audio for a test phrase", voice.engine, voice.voice),
            "reinstall espeak-ng-data (and the Piper voice)",
        ),
        Err(e) => Outcome::fail("tts", e.to_string(), "apt-get install espeak-ng, and check `speech.voice`"),
    }
}

fn audio_check(name: &str, role: Role, rate: u32) -> Outcome {
    let label = match role {
        Role::Capture => "mic",
        Role::Playback => "speaker",
    };
    match device::open(name, role, rate) {
        Ok((_pcm, got)) => Outcome::pass(
            label,
            format!(
                "{role} device \"{name}\": {} Hz, {} frame periods, {} frame buffer",
                got.rate, got.period_frames, got.buffer_frames
            ),
        ),
        Err(e) => Outcome::fail(label, e.to_string(), format!("plug the device in or set `{}`", role.config_key())),
    }
}

fn panel_check(config: &Config) -> Outcome {
    if config.device.is_simulated() {
        return Outcome::pass("panel", "simulated board (no GPIO needed)");
    }
    let profile = match crate::panel::board::Profile::load(&config.device.board) {
        Ok(profile) => profile,
        Err(e) => {
            return Outcome::fail(
                "panel",
                format!("{e:#}"),
                "use a shipped profile (pi-generic, respeaker-2mic), a profile file, or \"sim\"",
            )
        }
    };
    match rppal::gpio::Gpio::new() {
        Ok(_) => {
            Outcome::pass("panel", format!("GPIO available for board \"{}\" ({})", profile.name, profile.description))
        }
        Err(e) => Outcome::fail(
            "panel",
            format!("GPIO unavailable for board \"{}\": {e}", config.device.board),
            "run on a Raspberry Pi as a user in the gpio group, or set `device.board = \"sim\"`",
        ),
    }
}

fn listen_check(config: &Config) -> Outcome {
    let addr = config.http.listen;
    match TcpListener::bind(addr) {
        Ok(_) => Outcome::pass("http", format!("{addr} is free")),
        Err(e) => Outcome::fail(
            "http",
            format!("cannot listen on {addr}: {e}"),
            "stop whatever uses it (another voca?) or set `http.listen`",
        ),
    }
}
