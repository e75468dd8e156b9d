//! Offline-first behaviour against a Twilio stand-in on loopback that can go down and come back:
//! the connectivity monitor, the durable call-out queue (placed once after reconnecting, never again
//! after a restart) and the missed-call sync (idempotent across restarts).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{ACCOUNT_SID, AUTH_TOKEN, NUMBER};
use voca::config::{Config, Contact};
use voca::events::DeviceState;

const PUBLIC: &str = "https://box.example.net";

#[derive(Default)]
struct Twilio {
    calls_placed: Vec<String>,
    calls_listed: Vec<serde_json::Value>,
    recordings: HashMap<String, Vec<&'static str>>,
    downloads: usize,
    probes: usize,
    /// Every request is answered with this status (an outage on Twilio's side).
    fail_all: Option<u16>,
    /// Only `POST /Calls.json` is answered with this status.
    fail_calls: Option<u16>,
    /// Requests answered with an error.
    failed: usize,
}

fn twilio_error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).expect("status");
    let body = serde_json::json!({"code": 20000 + status.as_u16(), "message": status.canonical_reason(), "status": status.as_u16()});
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response.headers_mut().insert("Retry-After", axum::http::HeaderValue::from_static("1"));
    }
    response
}

type Shared = Arc<Mutex<Twilio>>;

async fn api(State(state): State<Shared>, method: Method, uri: Uri, body: String) -> Response {
    let mut s = state.lock().expect("lock");
    let path = uri.path().trim_start_matches(&format!("/2010-04-01/Accounts/{ACCOUNT_SID}"));
    let json = |v: serde_json::Value| axum::Json(v).into_response();
    let failing = s.fail_all.or(s.fail_calls.filter(|_| method == Method::POST && path == "/Calls.json"));
    if let Some(status) = failing {
        s.failed += 1;
        return twilio_error(status);
    }
    match (method.as_str(), path) {
        ("GET", ".json") => {
            s.probes += 1;
            json(serde_json::json!({"sid": ACCOUNT_SID, "status": "active"}))
        }
        ("GET", "/IncomingPhoneNumbers.json") => json(serde_json::json!({"incoming_phone_numbers": [{
            "sid": "PN0123456789abcdef0123456789abcdef", "phone_number": NUMBER,
            "voice_url": format!("{PUBLIC}/twilio/voice"), "status_callback": format!("{PUBLIC}/twilio/status")}]})),
        ("POST", "/Calls.json") => {
            s.calls_placed.push(body);
            let sid = format!("CA{:032x}", s.calls_placed.len());
            (StatusCode::CREATED, axum::Json(serde_json::json!({"sid": sid, "status": "queued"}))).into_response()
        }
        ("GET", "/Calls.json") => json(serde_json::json!({"calls": s.calls_listed, "next_page_uri": null})),
        ("GET", p) if p.ends_with("/Recordings.json") => {
            let call = p.trim_start_matches("/Calls/").trim_end_matches("/Recordings.json");
            let list: Vec<_> = s
                .recordings
                .get(call)
                .into_iter()
                .flatten()
                .map(|re| serde_json::json!({"sid": re, "call_sid": call, "duration": "4"}))
                .collect();
            json(serde_json::json!({"recordings": list}))
        }
        ("GET", p) if p.starts_with("/Recordings/RE") && p.ends_with(".wav") => {
            s.downloads += 1;
            let mut wav = b"RIFF".to_vec();
            wav.extend_from_slice(&[0; 40]);
            wav.into_response()
        }
        _ => (StatusCode::NOT_FOUND, format!("no route {method} {path}")).into_response(),
    }
}

/// The stand-in, on a fixed port so it can be stopped and started again at the same address.
struct Stub {
    port: u16,
    state: Shared,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Stub {
    fn new() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        Self { port, state: Arc::default(), server: None }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn up(&mut self) {
        let app = axum::Router::new().fallback(api).with_state(self.state.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.expect("rebind");
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    async fn down(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }
}

fn config(dir: &std::path::Path, api: &str) -> Config {
    config_with(dir, api, PUBLIC, "127.0.0.1:0")
}

/// A box listening on `listen` whose public URL is `public` (its own LAN address lets the
/// simulator's signed calls in).
fn config_with(dir: &std::path::Path, api: &str, public: &str, listen: &str) -> Config {
    let path = dir.join("voca.toml");
    std::fs::write(
        &path,
        format!(
            "[device]\ndata_dir = \"{}\"\n[http]\nlisten = \"{listen}\"\n\
             [twilio]\naccount_sid = \"{ACCOUNT_SID}\"\nauth_token = \"{AUTH_TOKEN}\"\nphone_number = \"{NUMBER}\"\n\
             api_base = \"{api}\"\npublic_url = \"{public}\"\n\
             [tunnel]\nprovider = \"external\"\nprobe_interval = \"200ms\"\n\
             [calls]\nanswer = \"tones\"\nretry_every = \"300ms\"\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    Config::load(Some(&path), &HashMap::new()).expect("config loads")
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn wait_for_state(running: &voca::app::Running, state: DeviceState) {
    let mut watch = running.state.watch();
    tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|s| s.state == state))
        .await
        .unwrap_or_else(|_| panic!("the box never became {state:?}"))
        .expect("bus");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_out_asked_for_offline_is_placed_once_after_reconnecting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stub = Stub::new();
    stub.up().await;
    let running = voca::app::start(config(dir.path(), &stub.base())).await.expect("box starts");
    wait_for_state(&running, DeviceState::Ready).await;

    // The network goes away: the monitor notices, and a call-out is queued, not lost.
    stub.down().await;
    wait_for_state(&running, DeviceState::Offline).await;
    let alice = Contact {
        name: "Alice".into(),
        number: "+15557654321".parse().expect("e164"),
        button: Some(1),
        emergency: false,
    };
    let mut updates = running.callout.updates();
    let id = running.callout.request(&alice, false).await.expect("queued");
    let update = tokio::time::timeout(Duration::from_secs(5), updates.recv()).await.expect("update").expect("open");
    assert_eq!(update, voca::call::callout::Update::Queued { id });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let rows = running.store.callouts().await.expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "pending", "{rows:?}");

    // It comes back: the box is online again and places the call exactly once.
    stub.up().await;
    wait_for_state(&running, DeviceState::Ready).await;
    let state = stub.state.clone();
    wait_until("the call is placed", || state.lock().expect("lock").calls_placed.len() == 1).await;
    let body = state.lock().expect("lock").calls_placed[0].clone();
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    assert_eq!(form["To"], "+15557654321");
    assert_eq!(form["From"], NUMBER);
    assert_eq!(form["Url"], format!("{PUBLIC}/twilio/voice?callout={id}"));
    placed_in_log(&running, id).await;
    let row = running.store.callouts().await.expect("rows").remove(0);
    assert_eq!((row.state.as_str(), row.call_sid.is_some()), ("placed", true), "{row:?}");
    running.stop().await.expect("stop");

    // A restart does not place it again.
    let running = voca::app::start(config(dir.path(), &stub.base())).await.expect("restart");
    wait_for_state(&running, DeviceState::Ready).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(stub.state.lock().expect("lock").calls_placed.len(), 1, "placed once, ever");
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_missed_while_offline_are_merged_once_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stub = Stub::new();
    let now = chrono::Utc::now();
    let when = |mins: i64| (now - chrono::Duration::minutes(mins)).to_rfc2822();
    {
        let mut s = stub.state.lock().expect("lock");
        let call = |sid: &str, status: &str, start: String| {
            serde_json::json!({"sid": sid, "status": status, "direction": "inbound", "from": "+15550001111",
                "to": NUMBER, "start_time": start, "duration": "12"})
        };
        s.calls_listed = vec![
            call("CA00000000000000000000000000000001", "completed", when(30)),
            call("CA00000000000000000000000000000002", "no-answer", when(20)),
            call("CA00000000000000000000000000000003", "in-progress", when(1)),
        ];
        s.recordings.insert("CA00000000000000000000000000000001".into(), vec!["RE00000000000000000000000000000001"]);
    }
    stub.up().await;
    for run in 0..2 {
        let running = voca::app::start(config(dir.path(), &stub.base())).await.expect("box starts");
        wait_for_state(&running, DeviceState::Ready).await;
        let mut watch = running.state.watch();
        tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|s| s.waiting == 2))
            .await
            .unwrap_or_else(|_| panic!("run {run}: two calls wait to be heard: {:?}", running.state.snapshot()))
            .expect("bus");
        let waiting = running.store.waiting_calls().await.expect("waiting");
        let sids: Vec<&str> = waiting.iter().map(|c| c.call_sid.as_str()).collect();
        assert_eq!(sids, ["CA00000000000000000000000000000001", "CA00000000000000000000000000000002"], "run {run}");
        let voicemail = waiting[0].voicemail.clone().expect("the recording is the voicemail");
        assert!(std::path::Path::new(&voicemail).is_file(), "{voicemail}");
        assert_eq!(waiting[1].outcome.as_deref(), Some("no-answer"));
        assert!(waiting[1].voicemail.is_none());
        assert_eq!(running.store.recent_calls(10).await.expect("calls").len(), 2, "run {run}: nothing twice");
        running.stop().await.expect("stop");
    }
    assert_eq!(stub.state.lock().expect("lock").downloads, 1, "a recording is downloaded once");
}

async fn wait_long(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A box whose public URL is its own LAN address, so the simulator's signed calls come in.
async fn lan_box(dir: &std::path::Path, api: &str) -> (voca::app::Running, String) {
    let port = common::debian::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let running =
        voca::app::start(config_with(dir, api, &base, &format!("127.0.0.1:{port}"))).await.expect("box starts");
    (running, base)
}

fn alice() -> Contact {
    Contact { name: "Alice".into(), number: "+15557654321".parse().expect("e164"), button: Some(1), emergency: false }
}

async fn callout_state(running: &voca::app::Running, id: i64) -> String {
    running.store.callouts().await.expect("rows").into_iter().find(|r| r.id == id).expect("row").state
}

/// Twilio has the request before the box has its answer: wait for the box to note it placed.
async fn placed_in_log(running: &voca::app::Running, id: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = callout_state(running, id).await;
        if state == "placed" {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "call-out {id} is {state}, not placed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A call from the simulator over the LAN: answered with a media stream and audio from the box.
async fn an_incoming_call_is_answered(base: &str) {
    let mut call = voca::twilio::simulator::SimCall::new(base, Some(AUTH_TOKEN));
    call.hang_up_after = Some(Duration::from_millis(800));
    let r = voca::twilio::simulator::run(&call).await.expect("call");
    assert_eq!((r.webhook_status, r.rejected.as_deref()), (200, None), "{r:?}");
    assert!(r.frames_received > 0, "the box talked: {r:?}");
}

/// Twilio's API answers 503, then 429, for a long stretch (hundreds of probes compressed into
/// seconds): the box says it is offline, keeps answering calls, holds the call-outs asked for
/// meanwhile (never sending them into the outage), and places each exactly once when Twilio is
/// back. A 429 on placing itself is retried until Twilio takes the call, and it is sent once then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_holds_call_outs_and_the_box_recovers_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stub = Stub::new();
    stub.up().await;
    let (running, base) = lan_box(dir.path(), &stub.base()).await;
    wait_for_state(&running, DeviceState::Ready).await;
    let state = stub.state.clone();
    let placed = || state.lock().expect("lock").calls_placed.len();
    let failed = || state.lock().expect("lock").failed;

    for status in [503u16, 429] {
        state.lock().expect("lock").fail_all = Some(status);
        wait_for_state(&running, DeviceState::Offline).await;
        let id = running.callout.request(&alice(), false).await.expect("queued");
        let (placed_before, failed_before) = (placed(), failed());
        // The outage goes on: many probes fail.
        wait_long(&format!("Twilio answered {status} many times"), 60, || failed() >= failed_before + 20).await;
        an_incoming_call_is_answered(&base).await;
        assert_eq!(callout_state(&running, id).await, "pending", "held during the {status} outage");
        assert_eq!(placed(), placed_before);
        assert!(!running.state.snapshot().network.api_reachable);

        state.lock().expect("lock").fail_all = None;
        wait_for_state(&running, DeviceState::Ready).await;
        wait_long("the held call-out is placed", 30, || placed() == placed_before + 1).await;
        placed_in_log(&running, id).await;
    }

    // Twilio answers its probe but turns call placements away with 429 for a while.
    state.lock().expect("lock").fail_calls = Some(429);
    let failed_before = failed();
    let id = running.callout.request(&alice(), false).await.expect("queued");
    wait_long("placements were turned away again after a first attempt", 60, || failed() >= failed_before + 6).await;
    let retried = callout_state(&running, id).await;
    assert!(["pending", "placing"].contains(&retried.as_str()), "a 429 is retried, not given up on: {retried}");
    let placed_before = placed();
    state.lock().expect("lock").fail_calls = None;
    wait_long("Twilio takes the call", 60, || placed() == placed_before + 1).await;
    placed_in_log(&running, id).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(placed(), placed_before + 1, "sent once when Twilio took it");
    running.stop().await.expect("stop");
}

/// The API's host name does not resolve (no DNS): the error names the host and says why, the box is
/// offline but answers calls, and a call-out waits instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_api_host_is_named_and_calls_still_come_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `.invalid` never resolves (RFC 6761).
    let api = "http://api.voca-test.invalid";
    let (running, base) = lan_box(dir.path(), api).await;
    wait_for_state(&running, DeviceState::Offline).await;
    let probe = common::rest_client(api).probe().await.expect_err("no DNS for .invalid");
    let message = probe.to_string();
    assert!(message.contains("cannot look up api.voca-test.invalid"), "{message}");
    let id = running.callout.request(&alice(), false).await.expect("queued");
    an_incoming_call_is_answered(&base).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(callout_state(&running, id).await, "pending");
    running.stop().await.expect("stop");
}

/// The tunnel drops in the middle of a call (its connections end without a word): the call ends
/// cleanly and is logged, its place is freed, and the box takes the next call. (Re-pointing the
/// number at the tunnel's new URL after it reconnects: `tests/number.rs` and the tunnel's unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_lost_mid_call_ends_the_call_cleanly_and_the_next_call_works() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stub = Stub::new();
    stub.up().await;
    let (running, base) = lan_box(dir.path(), &stub.base()).await;
    let sid = voca::twilio::simulator::random_sid("CA");
    let params = vec![
        ("CallSid".to_owned(), sid.clone()),
        ("From".to_owned(), "+15550004444".to_owned()),
        ("To".to_owned(), NUMBER.to_owned()),
    ];
    let http = reqwest::Client::new();
    let (status, twiml) = voca::twilio::simulator::post_webhook(
        &http,
        &format!("{base}/twilio/voice"),
        &Some(AUTH_TOKEN.into()),
        &params,
    )
    .await
    .expect("webhook");
    assert_eq!(status, 200);
    let answer = voca::twilio::simulator::parse_twiml(&twiml).expect("twiml");
    let token = answer.parameters.iter().find(|(n, _)| n == "token").map(|(_, v)| v.clone()).expect("token");

    // The Media Stream comes through the tunnel: a connection handed to the box's tunnel server.
    let (twilio_side, box_side) = tokio::io::duplex(64 * 1024);
    running.tunnel.serve_io(box_side, "tunnel".into());
    let url = answer.stream_url.expect("stream url");
    let (ws, _) = tokio_tungstenite::client_async(url, twilio_side).await.expect("stream through the tunnel");
    let (mut tx, mut rx) = ws.split();
    let start = voca::twilio::simulator::start_message(
        &sid,
        &voca::twilio::simulator::random_sid("MZ"),
        [("token".to_owned(), token.into())].into_iter().collect(),
    );
    tx.send(Message::text(start)).await.expect("start");
    let mut frames = 0;
    while frames < 10 {
        let m = tokio::time::timeout(Duration::from_secs(10), rx.next()).await.expect("the box talks");
        if m.expect("open").expect("frame").to_text().is_ok_and(|t| t.contains("\"media\"")) {
            frames += 1;
        }
    }
    assert_eq!(running.registry.len(), 1);

    // The tunnel goes: the connection just ends, no close frame, no `stop`.
    drop((tx, rx));
    wait_long("the call's place is freed", 30, || running.registry.is_empty()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let record = loop {
        let record = running.store.call(&common::call_sid(&sid)).await.expect("store").expect("logged");
        if record.outcome.is_some() || std::time::Instant::now() > deadline {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(record.outcome.as_deref(), Some("completed"), "{record:?}");
    assert_eq!(record.reason.as_deref(), Some("the media stream closed without a stop"), "{record:?}");
    an_incoming_call_is_answered(&base).await;
    running.stop().await.expect("stop");
}
