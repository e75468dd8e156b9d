//! The config file and the environment overlay: loaded, or refused with a message naming the key.
//! The first line is `VAR=value` (an environment variable), the rest the file.
#![no_main]
use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, file) = text.split_once('\n').unwrap_or(("", &text));
    let mut env = HashMap::new();
    if let Some((k, v)) = first.split_once('=') {
        env.insert(k.to_owned(), v.to_owned());
    }
    let path = dir().path().join("voca.toml");
    std::fs::write(&path, file.as_bytes()).expect("write");
    match voca::config::Config::load(Some(&path), &env) {
        Ok(config) => {
            // Secrets never show in Debug output (a long token cannot appear by chance).
            let token = config.twilio.auth_token.expose();
            if token.len() >= 12 {
                assert!(!format!("{config:?}").contains(token), "the auth token shows in Debug");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
