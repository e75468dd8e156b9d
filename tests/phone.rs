//! The phone path end to end: the real app on 127.0.0.1:0, calls placed by the simulator acting as
//! Twilio (signed webhooks, TwiML, Media Streams over a real WebSocket), the call log in real SQLite.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ACCOUNT_SID, AUTH_TOKEN};
use voca::app::{self, Running};
use voca::config::Config;
use voca::twilio::simulator::{self, SimCall, SimResult};

struct TestBox {
    running: Option<Running>,
    base: String,
    _dir: tempfile::TempDir,
}

impl TestBox {
    async fn start(config_toml: &str) -> Self {
        Self::start_with(config_toml, &[]).await
    }

    async fn start_with(config_toml: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("voca.toml");
        std::fs::write(&path, config_toml).expect("write config");
        let mut vars: HashMap<String, String> = [
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
            ("TWILIO_PHONE_NUMBER", common::NUMBER),
            ("VOCA_HTTP_LISTEN", "127.0.0.1:0"),
            // The phone path itself: a chime, keys echoed as tones (the assistant has its own tests).
            ("VOCA_CALLS_ANSWER", "tones"),
        ]
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
        vars.insert("VOCA_DEVICE_DATA_DIR".into(), dir.path().join("data").display().to_string());
        // No REST client unless a test gives an API base: hang-ups must not leave loopback.
        vars.insert("VOCA_TWILIO_API_BASE".into(), "http://127.0.0.1:9".into());
        vars.extend(env.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        let config = Config::load(Some(&path), &vars).unwrap_or_else(|e| panic!("{e}"));
        let running = app::start(config).await.expect("box starts");
        let base = format!("http://{}", running.addr);
        Self { running: Some(running), base, _dir: dir }
    }

    fn box_(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    fn call(&self) -> SimCall {
        let mut call = SimCall::new(&self.base, Some(AUTH_TOKEN));
        call.linger = Duration::from_millis(600);
        call
    }

    async fn outcome(&self, sid: &str) -> (Option<String>, Option<String>) {
        // The session finalises the call log just after it closes the socket.
        for _ in 0..1500 {
            if let Some(record) = self.box_().store.call(&common::call_sid(sid)).await.expect("store") {
                if record.outcome.is_some() {
                    return (record.outcome, record.reason);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("call {sid} was never finalised in the call log");
    }

    /// Waits (generously) until every call has left the registry: a session leaves it just after it
    /// writes the call's outcome, so the outcome alone does not prove the place is free yet.
    async fn all_calls_ended(&self) {
        for _ in 0..1500 {
            if self.box_().registry.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} calls still in the registry after 30 s", self.box_().registry.len());
    }

    async fn stop(mut self) {
        self.running.take().expect("running").stop().await.expect("stops");
    }
}

/// `seconds` of a 300 Hz tone at 8 kHz: "caller speech" as far as levels go.
fn voice(seconds: f32) -> Vec<i16> {
    (0..(seconds * 8000.0) as usize)
        .map(|i| (8000.0 * (i as f32 * 300.0 * std::f32::consts::TAU / 8000.0).sin()) as i16)
        .collect()
}

fn loud(result: &SimResult) -> usize {
    result.received.iter().filter(|s| s.unsigned_abs() > 1000).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_greeted_hears_dtmf_and_is_logged() {
    let b = TestBox::start("").await;
    let mut call = b.call();
    call.audio = voice(1.0);
    call.dtmf = vec![(Duration::from_millis(1100), '5')];
    let r = simulator::run(&call).await.expect("call runs");
    assert_eq!(r.webhook_status, 200);
    assert!(r.rejected.is_none() && r.close_code.is_none());
    assert!(r.marks_echoed.contains(&"greeting".to_owned()), "greeting played in full: {:?}", r.marks_echoed);
    assert!(r.marks_echoed.contains(&"dtmf-5".to_owned()), "{:?}", r.marks_echoed);
    // 0.7 s chime + 0.2 s tone, sent as 20 ms frames.
    assert!((44..=60).contains(&r.frames_received), "{} frames", r.frames_received);
    assert!(loud(&r) > 5000, "the box's audio is not silent");
    let dtmf_turn = r.turns.iter().find(|t| t.kind == "dtmf").expect("dtmf turn");
    assert!(dtmf_turn.latency_ms.is_some(), "the tone answered the key: {:?}", r.turns);
    assert_eq!(b.outcome(&r.call_sid).await, (Some("completed".into()), Some("caller hung up".into())));
    b.all_calls_ended().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_or_unsigned_webhooks_get_403_and_change_nothing() {
    let b = TestBox::start("").await;
    for token in [Some("00000000000000000000000000000000"), None] {
        let call = SimCall::new(&b.base, token);
        let r = simulator::run(&call).await.expect("request runs");
        assert_eq!(r.webhook_status, 403);
        assert!(b.box_().store.call(&common::call_sid(&r.call_sid)).await.expect("store").is_none(), "no call log row");
    }
    // A valid signature over different parameters is still a tampered request.
    let http = reqwest::Client::new();
    let url = format!("{}/twilio/voice", b.base);
    let params =
        vec![("CallSid".to_owned(), simulator::random_sid("CA")), ("From".to_owned(), "+15550000001".to_owned())];
    let signature = voca::twilio::signature::sign(AUTH_TOKEN, &url, &params);
    let mut tampered = params.clone();
    tampered[1].1 = "+15550000002".into();
    let status =
        http.post(&url).form(&tampered).header("X-Twilio-Signature", signature).send().await.expect("post").status();
    assert_eq!(status.as_u16(), 403);
    assert!(b.box_().registry.is_empty(), "a refused webhook holds no place");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_with_missing_reused_or_foreign_tokens_are_refused() {
    // Calls whose stream was refused keep their slot until their token expires: room for all of them.
    let b = TestBox::start("[calls]\nmax_concurrent = 10\n").await;
    let mut missing = b.call();
    missing.token = Some(None);
    let r = simulator::run(&missing).await.expect("runs");
    assert_eq!(r.close_code, Some(1008), "missing token");
    assert_eq!(r.frames_received, 0, "nothing was played to an unauthenticated stream");

    let http = reqwest::Client::new();
    let other_sid = simulator::random_sid("CA");
    let params: Vec<(String, String)> = vec![
        ("CallSid".into(), other_sid),
        ("From".into(), "+15550000009".into()),
        ("To".into(), common::NUMBER.into()),
    ];
    let (status, body) =
        simulator::post_webhook(&http, &format!("{}/twilio/voice", b.base), &Some(AUTH_TOKEN.into()), &params)
            .await
            .expect("post");
    assert_eq!(status, 200);
    let foreign_token = simulator::parse_twiml(&body).expect("twiml").parameters[0].1.clone();
    let mut foreign = b.call();
    foreign.token = Some(Some(foreign_token));
    assert_eq!(simulator::run(&foreign).await.expect("runs").close_code, Some(1008), "token of another call");

    let first = simulator::run(&b.call()).await.expect("runs");
    assert!(first.close_code.is_none());
    let mut reused = b.call();
    reused.call_sid = first.call_sid.clone();
    reused.token = Some(first.token_issued.clone());
    // The call has ended: its webhook gets no stream at all (a used token would be refused too;
    // the registry's tests cover tokens being single-use).
    let r = simulator::run(&reused).await.expect("runs");
    assert!(r.rejected.is_some() && r.frames_received == 0, "a used token of an ended call: {r:?}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_hangs_up_mid_reply_ends_the_call_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let greeting = dir.path().join("long.wav");
    let samples: Vec<i16> = voice(3.0);
    voca::audio::wav::write(&greeting, 8000, &samples).expect("write wav");
    let b = TestBox::start(&format!("[calls]\ngreeting_wav = \"{}\"\n", greeting.display())).await;
    let mut call = b.call();
    call.hang_up_after = Some(Duration::from_millis(600));
    let r = simulator::run(&call).await.expect("runs");
    assert!(r.frames_received > 10 && r.frames_received < 60, "{} frames before the hang-up", r.frames_received);
    assert!(!r.marks_echoed.contains(&"greeting".to_owned()), "the greeting was not finished");
    assert_eq!(b.outcome(&r.call_sid).await.0.as_deref(), Some("completed"));
    b.stop().await;
}

/// Records the REST requests the box makes.
async fn rest_stub() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: String| {
        let log = log.clone();
        async move {
            log.lock().expect("lock").push((uri.path().to_owned(), body));
            axum::Json(serde_json::json!({"sid": "CA00000000000000000000000000000000", "status": "completed"}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_hangs_up_at_the_maximum_duration() {
    let (api, seen) = rest_stub().await;
    let b = TestBox::start_with("[calls]\nmax_duration = \"1s\"\n", &[("VOCA_TWILIO_API_BASE", &api)]).await;
    let mut call = b.call();
    call.linger = Duration::from_secs(10);
    let started = std::time::Instant::now();
    let r = simulator::run(&call).await.expect("runs");
    assert!(r.closed_by_box, "the box closed the stream");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(b.outcome(&r.call_sid).await.1.as_deref(), Some("maximum call duration reached"));
    let expected = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{}.json", r.call_sid);
    for _ in 0..100 {
        if seen.lock().expect("lock").iter().any(|(path, body)| *path == expected && body == "Status=completed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.lock().expect("lock").iter().any(|(path, _)| *path == expected), "hang-up request: {:?}", seen.lock());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_above_the_limit_are_busy_and_blocked_callers_rejected() {
    let b = TestBox::start("[calls]\nmax_concurrent = 1\nblock = [\"+15550000666\"]\n").await;
    let mut first = b.call();
    first.hang_up_after = Some(Duration::from_millis(1500));
    let first = tokio::spawn(async move { simulator::run(&first).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = simulator::run(&b.call()).await.expect("runs");
    assert_eq!(busy.rejected.as_deref(), Some("busy"));
    assert_eq!(b.outcome(&busy.call_sid).await.0.as_deref(), Some("busy"));
    let first = first.await.expect("task").expect("first call");
    assert!(first.rejected.is_none() && first.frames_received > 0, "the call in progress was not disturbed");

    let mut blocked = b.call();
    blocked.from = "+15550000666".into();
    let blocked = simulator::run(&blocked).await.expect("runs");
    assert_eq!(blocked.rejected.as_deref(), Some("rejected"));
    assert_eq!(b.outcome(&blocked.call_sid).await, (Some("rejected".into()), Some("caller not allowed".into())));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_survived_and_the_call_goes_on() {
    let b = TestBox::start("").await;
    let mut call = b.call();
    let sid = "MZ0123456789abcdef0123456789abcdef";
    call.extra_messages = vec![
        "not json at all".into(),
        r#"{"no_event": true}"#.into(),
        format!(r#"{{"event":"media","streamSid":"{sid}","media":{{"payload":"@@not base64@@"}}}}"#),
        format!(r#"{{"event":"media","streamSid":"{sid}","media":{{"payload":"{}"}}}}"#, "A".repeat(20000)),
        format!(r#"{{"event":"dtmf","streamSid":"{sid}","dtmf":{{"digit":""}}}}"#),
        r#"{"event":"hologram","streamSid":"x"}"#.into(),
    ];
    call.audio = voice(0.5);
    call.linger = Duration::from_millis(1500);
    call.dtmf = vec![(Duration::from_millis(900), '7')];
    let r = simulator::run(&call).await.expect("runs");
    assert!(r.close_code.is_none() && !r.closed_by_box, "the box kept the call");
    assert!(r.marks_echoed.contains(&"dtmf-7".to_owned()), "later events still work: {:?}", r.marks_echoed);
    assert_eq!(b.outcome(&r.call_sid).await.0.as_deref(), Some("completed"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressing_hash_makes_the_box_hang_up() {
    let b = TestBox::start("").await;
    let mut call = b.call();
    call.linger = Duration::from_secs(10);
    call.dtmf = vec![(Duration::from_millis(300), '#')];
    let r = simulator::run(&call).await.expect("runs");
    assert!(r.closed_by_box);
    assert!(r.clears >= 1, "the greeting was cut");
    assert_eq!(b.outcome(&r.call_sid).await.1.as_deref(), Some("box hung up: caller pressed #"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_calls_at_once_each_get_their_own_conversation() {
    let b = TestBox::start("[calls]\nmax_concurrent = 25\nrate_limit_per_hour = 0\n").await;
    let calls: Vec<SimCall> = (0..20)
        .map(|i| {
            let mut call = b.call();
            call.audio = voice(1.0);
            let digit = char::from(b'0' + (i % 10) as u8);
            call.dtmf = vec![(Duration::from_millis(1000), digit)];
            // Time for the key's tone to play and its mark to come back, however busy the machine.
            call.linger = Duration::from_secs(5);
            call
        })
        .collect();
    let tasks: Vec<_> = calls.iter().cloned().map(|c| tokio::spawn(async move { simulator::run(&c).await })).collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let r = task.await.expect("task").expect("call");
        let digit = char::from(b'0' + (i % 10) as u8);
        assert!(r.rejected.is_none(), "call {i} rejected");
        assert!(r.marks_echoed.contains(&format!("dtmf-{digit}")), "call {i}: {:?}", r.marks_echoed);
        assert_eq!(b.outcome(&r.call_sid).await.0.as_deref(), Some("completed"), "call {i}");
    }
    b.all_calls_ended().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_callback_finalises_a_call_whose_stream_never_came() {
    let b = TestBox::start("").await;
    let http = reqwest::Client::new();
    let sid = simulator::random_sid("CA");
    let token = Some(AUTH_TOKEN.to_owned());
    let voice_params = vec![("CallSid".to_owned(), sid.clone()), ("From".to_owned(), "+15550000001".to_owned())];
    let (status, _) =
        simulator::post_webhook(&http, &format!("{}/twilio/voice", b.base), &token, &voice_params).await.expect("post");
    assert_eq!(status, 200);
    assert_eq!(b.box_().registry.len(), 1);
    let status_params = vec![("CallSid".to_owned(), sid.clone()), ("CallStatus".to_owned(), "no-answer".to_owned())];
    let url = format!("{}/twilio/status", b.base);
    assert_eq!(simulator::post_webhook(&http, &url, &None, &status_params).await.expect("post").0, 403, "unsigned");
    assert_eq!(simulator::post_webhook(&http, &url, &token, &status_params).await.expect("post").0, 204);
    assert_eq!(b.outcome(&sid).await.0.as_deref(), Some("no-answer"));
    b.all_calls_ended().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_box_marks_calls_in_progress_interrupted() {
    let b = TestBox::start("").await;
    let mut call = b.call();
    call.linger = Duration::from_secs(10);
    let task = tokio::spawn(async move { simulator::run(&call).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let store = b.box_().store.clone();
    b.stop().await;
    let r = task.await.expect("task").expect("call");
    assert!(r.closed_by_box);
    let record = store.call(&common::call_sid(&r.call_sid)).await.expect("store").expect("row");
    assert_eq!(record.outcome.as_deref(), Some("interrupted"));
}
