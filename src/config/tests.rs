//! The configuration's tests: layers, validation, origins in messages, secrets never shown.

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

    let e =
        load_str("[[contacts]]\nname = \"Alice\"\nnumber = \"+15551234567\"\nbuton = 1\n", &[]).expect_err("unknown");
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
        ("[calls]\nvoicemail_folder_mb = 0\n", &[], "calls.voicemail_folder_mb", "at least 1 (MB)"),
        ("[speech]\nturn_pause = \"10ms\"\n", &[], "speech.turn_pause", "60ms to 2s"),
        ("[speech]\nturn_max_wait = \"100ms\"\n", &[], "speech.turn_max_wait", "longer than speech.turn_pause"),
        ("[speech]\nend_of_turn = \"magic\"\n", &[], "speech.end_of_turn", "model"),
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
