//! The page's settings layer: saved whole, refused by key, locked by the environment, applied live.

use std::collections::HashMap;

use super::*;

fn open(dir: &Path, env: &[(&str, &str)]) -> Settings {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    let mut config = Config::load(None, &env).expect("defaults");
    config.device.data_dir = dir.to_path_buf();
    let file = dir.join("voca.toml");
    std::fs::write(&file, format!("[device]\ndata_dir = \"{}\"\n", dir.display())).expect("write");
    Settings::open(Config::load(Some(&file), &env).expect("file"))
}

fn changes(json: serde_json::Value) -> serde_json::Map<String, Json> {
    json.as_object().expect("object").clone()
}

#[test]
fn a_change_is_validated_stored_and_kept_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = open(dir.path(), &[]);
    let saved = settings
        .update(&changes(serde_json::json!({
            "calls.answer": "ring",
            "contacts": [{"name": "Alice", "number": "+15551234567", "button": 1, "emergency": true}],
        })))
        .expect("valid");
    assert_eq!(saved.changed, ["calls.answer", "contacts"]);
    assert!(!saved.restart, "both apply live");
    assert_eq!(settings.live().get().calls.answer, crate::config::AnswerMode::Ring);

    let again = open(dir.path(), &[]);
    assert_eq!(again.live().get().contacts[0].name, "Alice");
    let field = again.fields().into_iter().find(|f| f.key == "calls.answer").expect("field");
    assert_eq!((field.value, field.from_page), (Json::from("ring"), true));
}

#[test]
fn a_bad_value_names_the_field_and_nothing_stored_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = open(dir.path(), &[]);
    settings.update(&changes(serde_json::json!({"calls.answer": "voicemail"}))).expect("valid");
    let before = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("stored");
    let cases = [
        (serde_json::json!({"calls.answer": "sing"}), "calls.answer", "assistant"),
        (serde_json::json!({"contacts": [{"name": "A", "number": "12"}]}), "contacts[0].number", "E.164"),
        (serde_json::json!({"http.listen": "0.0.0.0:1"}), "http.listen", "cannot be set"),
        (serde_json::json!({"calls.rate_limit_per_hour": "lots"}), "calls.rate_limit_per_hour", "expected u32"),
    ];
    for (change, field, expected) in cases {
        let e = settings.update(&changes(change)).expect_err(field);
        assert_eq!(e.field().as_deref(), Some(field), "{e}");
        assert!(e.to_string().contains(expected), "{field}: {e}");
    }
    assert_eq!(std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("stored"), before);
    assert_eq!(settings.live().get().calls.answer, crate::config::AnswerMode::Voicemail);
}

#[test]
fn environment_keys_are_locked_and_secrets_write_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = open(dir.path(), &[("VOCA_CALLS_ANSWER", "intercom")]);
    let e = settings.update(&changes(serde_json::json!({"calls.answer": "ring"}))).expect_err("locked");
    assert!(e.to_string().contains("VOCA_CALLS_ANSWER"), "{e}");
    let saved = settings
        .update(&changes(serde_json::json!({"twilio.auth_token": "s3cret-token", "tunnel.domain": "box.example"})))
        .expect("valid");
    assert!(saved.restart, "credentials apply by restart");
    let fields = settings.fields();
    let token = fields.iter().find(|f| f.key == "twilio.auth_token").expect("field");
    assert_eq!(token.value, Json::Bool(true));
    assert!(!serde_json::to_string(&fields).expect("json").contains("s3cret-token"));
    let answer = fields.iter().find(|f| f.key == "calls.answer").expect("field");
    assert_eq!(answer.locked.as_deref(), Some("set by the environment variable VOCA_CALLS_ANSWER"));
}

#[test]
fn null_returns_a_key_to_the_file_or_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = open(dir.path(), &[]);
    settings.update(&changes(serde_json::json!({"calls.do_not_disturb": true}))).expect("valid");
    assert!(settings.live().get().calls.do_not_disturb);
    let saved = settings.update(&changes(serde_json::json!({"calls.do_not_disturb": null}))).expect("valid");
    assert_eq!(saved.changed, ["calls.do_not_disturb"]);
    assert!(!settings.live().get().calls.do_not_disturb);
}
