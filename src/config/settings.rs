//! What the LAN page may change, kept in `device.data_dir/settings.toml` and layered between the
//! config file and the environment (the config file is never rewritten). A change is validated as
//! the whole configuration it makes before it is stored; the running box gets it through [`Live`],
//! at once where a part can take it live (contacts, answer mode, lists, greeting, do-not-disturb),
//! by restarting the box's engine where it cannot (credentials, tunnel, speech).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value as Json;
use thiserror::Error;
use tokio::sync::watch;
use toml::{Table, Value};

use crate::config::{Config, ConfigError};

/// The file under `device.data_dir`.
pub const FILE_NAME: &str = "settings.toml";

/// How a key's new value reaches the running box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// The parts that use it read it at their next use.
    Live,
    /// The box's engine restarts (once no call is in progress).
    Restart,
}

/// A key the page may set.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub apply: Apply,
    /// Write-only: the page learns only whether it is set.
    pub secret: bool,
}

const fn key(name: &'static str, apply: Apply, secret: bool) -> Key {
    Key { name, apply, secret }
}

/// Every key the page may set. Anything else (the listen address, the data folder, the board) stays
/// in the config file: a wrong value there could lock the page out of the box.
pub const KEYS: &[Key] = &[
    key("device.name", Apply::Live, false),
    key("twilio.account_sid", Apply::Restart, false),
    key("twilio.auth_token", Apply::Restart, true),
    key("twilio.phone_number", Apply::Restart, false),
    key("twilio.public_url", Apply::Restart, false),
    key("tunnel.provider", Apply::Restart, false),
    key("tunnel.authtoken", Apply::Restart, true),
    key("tunnel.domain", Apply::Restart, false),
    key("calls.answer", Apply::Live, false),
    key("calls.do_not_disturb", Apply::Live, false),
    key("calls.unanswered", Apply::Live, false),
    key("calls.ring_timeout", Apply::Live, false),
    key("calls.allow", Apply::Live, false),
    key("calls.block", Apply::Live, false),
    key("calls.rate_limit_per_hour", Apply::Live, false),
    key("assistant.greeting", Apply::Live, false),
    key("speech.language", Apply::Restart, false),
    key("speech.model", Apply::Restart, false),
    key("speech.download", Apply::Restart, false),
    key("speech.tts", Apply::Restart, false),
    key("speech.voice", Apply::Restart, false),
    key("mqtt.url", Apply::Restart, false),
    key("mqtt.username", Apply::Restart, false),
    key("mqtt.password", Apply::Restart, true),
    key("mqtt.discovery_prefix", Apply::Restart, false),
    key("mqtt.base_topic", Apply::Restart, false),
    key("contacts", Apply::Live, false),
];

fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Why a change was refused. Each names the field and says what is expected.
#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("`{0}` cannot be set from the page: expected one of {list}", list = KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", "))]
    Unknown(String),
    #[error("`{key}` is set by the environment variable {var}, which wins over the page: change or remove it there")]
    Locked { key: String, var: String },
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot store the settings in {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl SettingsError {
    /// The field the error is about, for the page to point at.
    pub fn field(&self) -> Option<String> {
        match self {
            Self::Unknown(key) | Self::Locked { key, .. } | Self::Invalid { key, .. } => Some(key.clone()),
            Self::Config(ConfigError::Invalid { key, .. } | ConfigError::Missing { key, .. }) => Some(key.clone()),
            Self::Config(ConfigError::UnknownKey { key, .. }) => Some(key.clone()),
            _ => None,
        }
    }
}

/// `device.data_dir/settings.toml`: read whole, written whole (a temporary file, synced, renamed
/// over the old one, so a power cut leaves the old settings or the new ones, never half of each).
#[derive(Debug, Clone)]
pub struct SettingsFile {
    path: PathBuf,
}

impl SettingsFile {
    pub fn new(data_dir: &Path) -> Self {
        Self { path: data_dir.join(FILE_NAME) }
    }

    /// How errors name this layer.
    pub fn origin(&self) -> String {
        format!("the settings saved from the LAN page ({})", self.path.display())
    }

    pub fn read(&self) -> Result<Option<Table>, String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{} is not valid TOML: {}", self.path.display(), e.message())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    pub fn write(&self, table: &Table) -> Result<(), SettingsError> {
        let err = |source| SettingsError::Write { path: self.path.clone(), source };
        let text = format!(
            "# Saved by the box's LAN page. Layered over the config file; environment variables win.\n\
             # Edit with the box stopped, or use the page.\n{}",
            toml::to_string(table).map_err(|e| err(std::io::Error::other(e)))?
        );
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let temporary = self.path.with_extension("toml.new");
        let written = (|| {
            let mut file = std::fs::File::create(&temporary)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                // Secrets live here: the owner only.
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.map_err(err)
    }
}

/// One key as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    pub key: &'static str,
    /// The value in effect; for secrets, only whether one is set.
    pub value: Json,
    pub secret: bool,
    pub apply: Apply,
    /// Why the page cannot change it (an environment variable sets it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked: Option<String>,
    /// Saved from the page (not the config file's or the default).
    pub from_page: bool,
}

/// The running configuration, shared: parts that take changes live read it at their next use.
#[derive(Debug, Clone)]
pub struct Live {
    tx: Arc<watch::Sender<Arc<Config>>>,
}

impl Live {
    pub fn new(config: Config) -> Self {
        Self { tx: Arc::new(watch::Sender::new(Arc::new(config))) }
    }

    pub fn get(&self) -> Arc<Config> {
        self.tx.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<Arc<Config>> {
        self.tx.subscribe()
    }

    fn set(&self, config: Config) {
        self.tx.send_replace(Arc::new(config));
    }
}

/// What a saved change did.
#[derive(Debug, Clone, Serialize)]
pub struct Saved {
    /// The keys whose value changed.
    pub changed: Vec<String>,
    /// The box's engine restarts to apply some of them.
    pub restart: bool,
}

/// The page's settings: the stored layer, the live configuration, and a flag for a restart.
#[derive(Debug, Clone)]
pub struct Settings {
    file: SettingsFile,
    live: Live,
    /// Serialises changes: each reads, validates and writes the whole layer.
    stored: Arc<Mutex<Table>>,
    writing: Arc<Mutex<()>>,
    restart: Arc<watch::Sender<u64>>,
}

impl Settings {
    /// `config` is the file and environment's configuration (what `Config::load` gave); the stored
    /// layer is read from its data folder and applied when it is valid.
    pub fn open(config: Config) -> Self {
        let file = SettingsFile::new(&config.device.data_dir);
        let stored = file.read().ok().flatten().unwrap_or_default();
        let running = config.with_settings();
        // What could not be applied is not the layer to build on either (the file stays as it is
        // until the page saves a change).
        let stored = if running.settings_error.is_some() { Table::new() } else { stored };
        Self {
            file,
            live: Live::new(running),
            stored: Arc::new(Mutex::new(stored)),
            writing: Arc::default(),
            restart: Arc::new(watch::Sender::new(0)),
        }
    }

    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Changes to a key that applies by restart bump this counter.
    pub fn restarts(&self) -> watch::Receiver<u64> {
        self.restart.subscribe()
    }

    fn stored(&self) -> std::sync::MutexGuard<'_, Table> {
        self.stored.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every settable key with its value in effect, whether it is locked, and how it applies.
    pub fn fields(&self) -> Vec<Field> {
        let config = self.live.get();
        let effective = effective_table(&config);
        let stored = self.stored().clone();
        KEYS.iter()
            .map(|k| {
                let value = lookup(&effective, k.name).cloned().unwrap_or(Value::String(String::new()));
                let value = if k.secret {
                    Json::Bool(value.as_str().is_some_and(|s| !s.is_empty()))
                } else {
                    toml_to_json(&value)
                };
                Field {
                    key: k.name,
                    value,
                    secret: k.secret,
                    apply: k.apply,
                    locked: config.locked.get(k.name).map(|var| format!("set by the environment variable {var}")),
                    from_page: lookup(&stored, k.name).is_some(),
                }
            })
            .collect()
    }

    /// The configuration `changes` would make, without storing anything (the page's "test").
    pub fn preview(&self, changes: &serde_json::Map<String, Json>) -> Result<Config, SettingsError> {
        let (next, current) = self.layer_with(changes)?;
        Ok(current.with_overrides(&next, &self.file.origin())?)
    }

    fn layer_with(&self, changes: &serde_json::Map<String, Json>) -> Result<(Table, Arc<Config>), SettingsError> {
        let current = self.live.get();
        let mut next = self.stored().clone();
        for (name, value) in changes {
            let key = find(name).ok_or_else(|| SettingsError::Unknown(name.clone()))?;
            if let Some(var) = current.locked.get(key.name) {
                return Err(SettingsError::Locked { key: key.name.into(), var: var.clone() });
            }
            match value {
                Json::Null => remove(&mut next, key.name),
                value => {
                    let value =
                        json_to_toml(value).map_err(|message| SettingsError::Invalid { key: name.clone(), message })?;
                    insert(&mut next, key.name, value);
                }
            }
        }
        Ok((next, current))
    }

    /// Applies `changes` (`{"calls.answer": "ring", "contacts": [...]}`): each key must be one
    /// of [`KEYS`] and not locked; `null` removes the page's value (the file's or the default's
    /// returns). The whole configuration is validated before anything is stored.
    pub fn update(&self, changes: &serde_json::Map<String, Json>) -> Result<Saved, SettingsError> {
        // One change at a time: each builds on the layer the previous one stored.
        let _one = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, current) = self.layer_with(changes)?;
        let mut stored = self.stored();
        let config = current.with_overrides(&next, &self.file.origin())?;
        let (before, after) = (effective_table(&current), effective_table(&config));
        let changed: Vec<String> = KEYS
            .iter()
            .filter(|k| lookup(&before, k.name) != lookup(&after, k.name))
            .map(|k| k.name.to_owned())
            .collect();
        let restart = changed.iter().any(|name| find(name).is_some_and(|k| k.apply == Apply::Restart));
        if next != *stored {
            self.file.write(&next)?;
            *stored = next;
        }
        if !changed.is_empty() {
            tracing::info!(keys = %changed.join(", "), restart, "settings changed from the LAN page");
            self.live.set(config);
        }
        if restart {
            self.restart.send_modify(|n| *n += 1);
        }
        Ok(Saved { changed, restart })
    }

    /// The contacts in effect.
    pub fn contacts(&self) -> Vec<crate::config::Contact> {
        self.live.get().contacts.clone()
    }
}

/// The configuration as a TOML table, secrets included (they never leave this module unmasked).
fn effective_table(config: &Config) -> Table {
    let mut table = Table::new();
    let c = config;
    let s = |v: &str| Value::String(v.to_owned());
    let opt = |v: Option<String>| Value::String(v.unwrap_or_default());
    let list = |v: &[crate::config::E164]| Value::Array(v.iter().map(|n| s(n.as_str())).collect());
    let lower = |v: &dyn std::fmt::Debug| s(&format!("{v:?}").to_lowercase());
    let duration = |d: crate::config::Duration| s(&humantime::format_duration(d.0).to_string());
    let entries: Vec<(&str, Value)> = vec![
        ("device.name", s(&c.device.name)),
        ("twilio.account_sid", opt(c.twilio.account_sid.as_ref().map(|a| a.as_str().to_owned()))),
        ("twilio.auth_token", s(c.twilio.auth_token.expose())),
        ("twilio.phone_number", opt(c.twilio.phone_number.as_ref().map(|n| n.as_str().to_owned()))),
        ("twilio.public_url", opt(c.twilio.public_url.as_ref().map(|u| u.as_str().trim_end_matches('/').to_owned()))),
        ("tunnel.provider", lower(&c.tunnel.provider)),
        ("tunnel.authtoken", s(c.tunnel.authtoken.expose())),
        ("tunnel.domain", s(&c.tunnel.domain)),
        ("calls.answer", lower(&c.calls.answer)),
        ("calls.do_not_disturb", Value::Boolean(c.calls.do_not_disturb)),
        ("calls.unanswered", lower(&c.calls.unanswered)),
        ("calls.ring_timeout", duration(c.calls.ring_timeout)),
        ("calls.allow", list(&c.calls.allow)),
        ("calls.block", list(&c.calls.block)),
        ("calls.rate_limit_per_hour", Value::Integer(c.calls.rate_limit_per_hour.into())),
        ("assistant.greeting", s(&c.assistant.greeting)),
        ("speech.language", s(&c.speech.language)),
        ("speech.model", s(&c.speech.model)),
        ("speech.download", Value::Boolean(c.speech.download)),
        ("speech.tts", lower(&c.speech.tts)),
        ("speech.voice", s(&c.speech.voice)),
        ("mqtt.url", opt(c.mqtt.url.as_ref().map(|u| u.as_str().trim_end_matches('/').to_owned()))),
        ("mqtt.username", s(&c.mqtt.username)),
        ("mqtt.password", s(c.mqtt.password.expose())),
        ("mqtt.discovery_prefix", s(&c.mqtt.discovery_prefix)),
        ("mqtt.base_topic", s(&c.mqtt.base_topic)),
        (
            "contacts",
            Value::Array(
                c.contacts
                    .iter()
                    .map(|contact| {
                        let mut t = Table::new();
                        t.insert("name".into(), s(&contact.name));
                        t.insert("number".into(), s(contact.number.as_str()));
                        if let Some(button) = contact.button {
                            t.insert("button".into(), Value::Integer(button.into()));
                        }
                        t.insert("emergency".into(), Value::Boolean(contact.emergency));
                        Value::Table(t)
                    })
                    .collect(),
            ),
        ),
    ];
    for (name, value) in entries {
        insert(&mut table, name, value);
    }
    table
}

fn lookup<'a>(table: &'a Table, name: &str) -> Option<&'a Value> {
    match name.split_once('.') {
        Some((section, key)) => table.get(section)?.as_table()?.get(key),
        None => table.get(name),
    }
}

fn insert(table: &mut Table, name: &str, value: Value) {
    match name.split_once('.') {
        Some((section, key)) => {
            let section = table.entry(section).or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(section) = section {
                section.insert(key.to_owned(), value);
            }
        }
        None => {
            table.insert(name.to_owned(), value);
        }
    }
}

fn remove(table: &mut Table, name: &str) {
    match name.split_once('.') {
        Some((section, key)) => {
            if let Some(Value::Table(t)) = table.get_mut(section) {
                t.remove(key);
                if t.is_empty() {
                    table.remove(section);
                }
            }
        }
        None => {
            table.remove(name);
        }
    }
}

fn json_to_toml(value: &Json) -> Result<Value, String> {
    Ok(match value {
        Json::Null => return Err("null is only allowed for a whole key (it removes the page's value)".into()),
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().ok_or("expected a number")?),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(json_to_toml).collect::<Result<_, _>>()?),
        Json::Object(map) => {
            let mut t = Table::new();
            for (k, v) in map {
                // An absent optional field (a contact without a button) comes as null.
                if !v.is_null() {
                    t.insert(k.clone(), json_to_toml(v)?);
                }
            }
            Value::Table(t)
        }
    })
}

fn toml_to_json(value: &Value) -> Json {
    match value {
        Value::String(s) => Json::String(s.clone()),
        Value::Integer(i) => Json::from(*i),
        Value::Float(f) => Json::from(*f),
        Value::Boolean(b) => Json::Bool(*b),
        Value::Datetime(d) => Json::String(d.to_string()),
        Value::Array(items) => Json::Array(items.iter().map(toml_to_json).collect()),
        Value::Table(t) => Json::Object(
            t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect::<BTreeMap<_, _>>().into_iter().collect(),
        ),
    }
}

#[cfg(test)]
mod tests;
