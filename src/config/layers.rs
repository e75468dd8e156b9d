//! The layers a configuration is built from and how they merge: built-in defaults < one TOML file
//! < the page's settings < environment variables (`VOCA_<SECTION>_<KEY>` and Twilio's own names),
//! each value remembered with where it came from, for messages that name the key and its origin.

use std::collections::{BTreeMap, HashMap};

use toml::{Table, Value};

use super::error::ConfigError;

/// The configuration the box runs with when it has no file: `make run` uses it.
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// Twilio's own variable names, accepted beside the `VOCA_<SECTION>_<KEY>` form.
pub(super) const ENV_ALIASES: &[(&str, &str)] = &[
    ("TWILIO_ACCOUNT_SID", "twilio.account_sid"),
    ("TWILIO_AUTH_TOKEN", "twilio.auth_token"),
    ("TWILIO_PHONE_NUMBER", "twilio.phone_number"),
    ("NGROK_AUTHTOKEN", "tunnel.authtoken"),
];

/// `VOCA_*` variables that are not configuration keys.
pub(super) const ENV_NOT_KEYS: &[&str] = &["VOCA_CONFIG"];

/// Which source set each key, so an error can say "from TWILIO_PHONE_NUMBER" or "from /etc/…".
pub(super) struct Origins {
    default: String,
    pub(super) by_key: BTreeMap<String, String>,
}

impl Origins {
    pub(super) fn new(default: &str) -> Self {
        Self { default: default.into(), by_key: BTreeMap::new() }
    }

    /// The origin of `key` or of the nearest enclosing key that has one.
    pub(super) fn of(&self, key: &str) -> String {
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
pub(super) fn merge(base: &mut Table, overlay: Table) {
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
pub(super) fn apply_env(
    table: &mut Table,
    env: &HashMap<String, String>,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
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

pub(super) fn typed_env_value(default: Option<&Value>, raw: &str) -> Result<Value, String> {
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

pub(super) fn section_names(table: &Table) -> String {
    let names: Vec<String> = table.iter().filter(|(_, v)| v.is_table()).map(|(k, _)| k.to_uppercase()).collect();
    names.join(", ")
}

pub(super) fn unknown_key(key: &str, defaults: &Table, origins: &Origins) -> ConfigError {
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
pub(super) fn toml_path(key: &str) -> String {
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
