//! The LAN page's settings bodies as they land: stored only when the whole configuration they make
//! is valid; what is stored always loads again.
#![no_main]
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Object(changes)) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("voca.toml");
    std::fs::write(&file, format!("[device]\ndata_dir = \"{}\"\n", dir.path().display())).expect("write");
    let config = voca::config::Config::load(Some(&file), &HashMap::new()).expect("valid");
    let settings = voca::config::settings::Settings::open(config.clone());
    if settings.update(&changes).is_ok() {
        let again = voca::config::Config::load(Some(&file), &HashMap::new()).expect("valid").with_settings();
        assert!(again.settings_error.is_none(), "stored settings do not load: {:?}", again.settings_error);
    }
});
