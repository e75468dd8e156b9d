//! Why a configuration was refused: each error names the key, where its value came from and what
//! is expected.

use std::path::PathBuf;

use thiserror::Error;

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
