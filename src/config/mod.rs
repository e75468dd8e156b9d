//! Typed configuration: built-in defaults, then one TOML file, then environment variables.
//!
//! Every key the box knows is in `config/defaults.toml`; a file or variable naming any other key is
//! rejected by name. Values are typed (durations, E.164 numbers, URLs) and every error says which
//! key, where it came from and what is expected. Secrets are [`Secret`]s: never printed.

mod error;
mod layers;
mod sections;
pub mod settings;
#[cfg(test)]
mod tests;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

pub use sections::{
    hostname, slug, AnswerMode, AssistantConfig, CallsConfig, Contact, DeviceConfig, HttpConfig, Intent, LlmConfig,
    MqttConfig, SpeechConfig, TunnelConfig, TunnelProvider, TwilioConfig, Unanswered, WebConfig, PACKAGED_MODELS,
};
pub use types::{mask_phone, AccountSid, Duration, EndOfTurn, Recognition, Secret, TtsKind, E164};

pub use error::ConfigError;
pub use layers::DEFAULTS;
use layers::{apply_env, merge, unknown_key, Origins};

/// Where a box keeps its configuration; used when `--config` is not given and the file exists.
pub const SYSTEM_PATH: &str = "/etc/voca/voca.toml";

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
        let (pause, wait) = (self.speech.turn_pause.0, self.speech.turn_max_wait.0);
        if !(std::time::Duration::from_millis(60)..=std::time::Duration::from_secs(2)).contains(&pause) {
            return Err(invalid("speech.turn_pause".into(), "expected 60ms to 2s".into()));
        }
        if wait <= pause || wait > std::time::Duration::from_secs(10) {
            return Err(invalid(
                "speech.turn_max_wait".into(),
                "expected longer than speech.turn_pause, at most 10s".into(),
            ));
        }
        if self.calls.voicemail_folder_mb == 0 {
            return Err(invalid("calls.voicemail_folder_mb".into(), "expected at least 1 (MB)".into()));
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
