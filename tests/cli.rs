//! The command line: help, version, and bad configuration (one clear message naming the key, exit 2).

mod common;

use common::{text, voca};

#[test]
fn help_explains_every_command_and_version_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = voca(dir.path()).arg("--help").output().expect("run voca");
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    for needle in ["run", "check", "models", "--config", "--log-level", "TWILIO_ACCOUNT_SID"] {
        assert!(stdout.contains(needle), "--help lacks {needle}:\n{stdout}");
    }
    let out = voca(dir.path()).args(["models", "--help"]).output().expect("run voca");
    let (stdout, _) = text(&out);
    assert!(stdout.contains("fetch") && stdout.contains("install") && stdout.contains("list"), "{stdout}");
    let out = voca(dir.path()).arg("--version").output().expect("run voca");
    assert_eq!(text(&out).0.trim(), format!("voca {}", env!("CARGO_PKG_VERSION")));
}

/// Runs `voca check` with `config` as the file and `env` set; expects exit 2 and a message that
/// contains every one of `needles`, on one line.
fn rejects(config: Option<&str>, env: &[(&str, &str)], needles: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = voca(dir.path());
    if let Some(config) = config {
        std::fs::write(dir.path().join("voca.toml"), config).expect("write config");
        cmd.args(["--config", "voca.toml"]);
    } else {
        cmd.args(["--config", "missing.toml"]);
    }
    let out = cmd.arg("check").envs(env.iter().copied()).output().expect("run voca");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.is_empty(), "no checklist for a bad config: {stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one message: {stderr}");
    for needle in needles {
        assert!(lines[0].contains(needle), "message lacks {needle}: {stderr}");
    }
}

#[test]
fn a_missing_config_file_is_named() {
    rejects(None, &[], &["missing.toml", "not found"]);
}

#[test]
fn an_unknown_key_is_named() {
    rejects(Some("[calls]\nmax_concurent = 3\n"), &[], &["`calls.max_concurent`", "max_concurrent"]);
}

#[test]
fn a_malformed_number_is_named_with_its_origin() {
    rejects(
        Some(""),
        &[("TWILIO_PHONE_NUMBER", "555-1234")],
        &["`twilio.phone_number`", "TWILIO_PHONE_NUMBER", "E.164"],
    );
    rejects(
        Some("[[contacts]]\nname = \"Alice\"\nnumber = \"0044 20 7946\"\n"),
        &[],
        &["`contacts[0].number`", "voca.toml", "E.164"],
    );
}

#[test]
fn a_bad_duration_is_named() {
    rejects(Some("[calls]\nsilence_timeout = \"20\"\n"), &[], &["`calls.silence_timeout`", "\"20s\""]);
}

#[test]
fn a_mode_without_its_token_names_the_missing_key() {
    let creds = [
        ("TWILIO_ACCOUNT_SID", common::ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", common::AUTH_TOKEN),
        ("TWILIO_PHONE_NUMBER", common::NUMBER),
    ];
    rejects(Some("[tunnel]\nprovider = \"ngrok\"\n"), &creds, &["`tunnel.authtoken`", "NGROK_AUTHTOKEN"]);
    rejects(Some("[tunnel]\nprovider = \"external\"\n"), &[], &["`twilio.account_sid`", "TWILIO_ACCOUNT_SID"]);
}

#[test]
fn secrets_never_appear_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = voca(dir.path())
        .args(["check"])
        .env("TWILIO_AUTH_TOKEN", "sekrit-value-1234")
        .env("TWILIO_ACCOUNT_SID", "not-a-sid")
        .output()
        .expect("run voca");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("`twilio.account_sid`"), "{stderr}");
    assert!(!stdout.contains("sekrit") && !stderr.contains("sekrit"));
}

#[test]
fn a_dotenv_file_is_read_in_the_working_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(".env"), "TWILIO_PHONE_NUMBER=12345\n").expect("write .env");
    let out = voca(dir.path()).args(["--config", "/dev/null", "check"]).output().expect("run voca");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`twilio.phone_number`") && stderr.contains("TWILIO_PHONE_NUMBER"), "{stderr}");
}
