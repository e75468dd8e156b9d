//! `voca run`: comes up on loopback, answers /healthz, and shuts down in order on SIGTERM and SIGINT.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::voca;

struct Running {
    child: Child,
    addr: String,
    log: Vec<String>,
    lines: std::sync::mpsc::Receiver<String>,
}

/// Kills the box if a test fails before it stopped it.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `voca run` on a free port and waits for its "listening on" line.
fn start(dir: &std::path::Path) -> Running {
    start_with(dir, "")
}

fn start_with(dir: &std::path::Path, extra_config: &str) -> Running {
    let config = format!("[http]\nlisten = \"127.0.0.1:0\"\n[device]\ndata_dir = \"data\"\n{extra_config}");
    std::fs::write(dir.join("voca.toml"), config).expect("write config");
    let mut child = voca(dir)
        .args(["--config", "voca.toml", "run"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn voca run");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut running = Running { child, addr: String::new(), log: Vec::new(), lines };
    while running.addr.is_empty() {
        let line = running
            .lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no listening line in:\n{}", running.log.join("\n")));
        if let Some(rest) = line.split("listening on http://").nth(1) {
            running.addr = rest.split_whitespace().next().expect("address").to_owned();
        }
        running.log.push(line);
    }
    running
}

fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

fn stop_with(signal: i32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut running = start(dir.path());
    // The box listens a moment before its network state is known (no tunnel: offline).
    let deadline = Instant::now() + Duration::from_secs(15);
    let health = loop {
        let health = get(&running.addr, "/healthz");
        if health.contains("\"state\":\"offline\"") || Instant::now() > deadline {
            break health;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"state\":\"offline\"") && health.contains("\"status\":\"ok\""), "{health}");

    // An idle keep-alive client must not hold the shutdown up past the deadline.
    let _idle = TcpStream::connect(&running.addr).expect("connect");

    let pid = running.child.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = running.child.try_wait().expect("wait") {
            break status;
        }
        assert!(sent.elapsed() < Duration::from_secs(15), "voca did not exit after the signal");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The reader thread may not have passed on the last lines yet: take them until it sees EOF.
    while let Ok(line) = running.lines.recv_timeout(Duration::from_secs(10)) {
        running.log.push(line);
    }
    let log = running.log.join("\n");
    assert!(status.success(), "exit {status:?}:\n{log}");
    let name = if signal == libc::SIGTERM { "SIGTERM" } else { "SIGINT" };
    let received = log.find(&format!("{name} received")).unwrap_or_else(|| panic!("no {name} line:\n{log}"));
    // The speech model loader is a thread of its own that may still report after this line.
    assert!(log[received..].lines().any(|l| l.ends_with("stopped")), "stopped after the signal:\n{log}");
}

#[test]
fn sigterm_stops_the_box_in_order() {
    stop_with(libc::SIGTERM);
}

#[test]
fn sigint_stops_the_box_in_order() {
    stop_with(libc::SIGINT);
}

#[test]
fn a_board_that_cannot_be_opened_leaves_a_box_that_answers_and_shows_the_fault() {
    // This machine has no GPIO: the real Pi board cannot open.
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start_with(dir.path(), "board = \"pi-generic\"\n");
    let health = get(&running.addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("the board \\\"pi-generic\\\" could not be opened"), "{health}");
    assert!(running.log.iter().any(|l| l.contains("without its LEDs and buttons")), "{:?}", running.log);
}

#[test]
fn a_damaged_call_log_is_kept_aside_and_the_box_starts_with_a_new_one_showing_the_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    std::fs::write(dir.path().join("data/voca.db"), "not a database".repeat(512)).expect("write");
    let running = start(dir.path());
    let health = get(&running.addr, "/healthz");
    assert!(health.contains("the call log was damaged: kept as data/voca.db.damaged-"), "{health}");
    assert!(
        running.log.iter().any(|l| l.contains("is damaged") && l.contains("a new one started")),
        "{:?}",
        running.log
    );
    let kept: Vec<_> = std::fs::read_dir(dir.path().join("data"))
        .expect("data")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("voca.db.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged file is kept");
    assert_eq!(std::fs::read_to_string(kept[0].path()).expect("read"), "not a database".repeat(512));
}

#[test]
fn a_busy_listen_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("voca.toml"), format!("[http]\nlisten = \"{addr}\"\n")).expect("write config");
    let out = voca(dir.path()).args(["--config", "voca.toml", "run"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {addr}")) && stderr.contains("`http.listen`"), "{stderr}");
}

/// A box that answers with tones (no speech model), for calls from `voca simulate-call`.
fn start_tones_box(dir: &std::path::Path) -> Running {
    let twilio = format!(
        "[twilio]\naccount_sid = \"{}\"\nauth_token = \"{}\"\nphone_number = \"{}\"\napi_base = \"http://127.0.0.1:9\"\n",
        common::ACCOUNT_SID,
        common::AUTH_TOKEN,
        common::NUMBER
    );
    start_with(dir, &format!("[calls]\nanswer = \"tones\"\n{twilio}"))
}

/// One call from `voca simulate-call` (a second of tone, key 5): its JSON result, the call checked
/// to have gone through (webhook, media both ways, the key press answered).
fn simulate_call(dir: &std::path::Path, running: &Running) -> serde_json::Value {
    let audio = dir.join("caller.wav");
    let tone: Vec<i16> = (0..8000).map(|i| ((i as f32 * 0.2).sin() * 6000.0) as i16).collect();
    voca::audio::wav::write(&audio, 8000, &tone).expect("write wav");
    let out = voca(dir)
        .args(["--config", "voca.toml", "simulate-call", "--url", &format!("http://{}", running.addr)])
        .args([
            "--audio",
            "caller.wav",
            "--dtmf",
            "5@1.2",
            "--linger",
            "1",
            "--save",
            "heard.wav",
            "--from",
            "+15550001234",
        ])
        .output()
        .expect("simulate-call");
    let (stdout, stderr) = common::text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let result: serde_json::Value = serde_json::from_str(&stdout).expect("JSON result");
    assert_eq!(result["webhook_status"], 200);
    assert!(result["frames_received"].as_u64().unwrap_or(0) > 30, "{result}");
    let turns = result["turns"].as_array().expect("turns");
    assert!(turns.iter().any(|t| t["kind"] == "dtmf" && t["latency_ms"].is_u64()), "{result}");
    result
}

/// `voca calls --json` against the box's data folder.
fn call_log(dir: &std::path::Path) -> serde_json::Value {
    let out = voca(dir).args(["--config", "voca.toml", "calls", "--json"]).output().expect("calls");
    let (stdout, stderr) = common::text(&out);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_str(&stdout).expect("JSON list")
}

#[test]
fn a_full_data_folder_does_not_stop_calls_and_the_call_log_resumes_once_there_is_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _card = common::Tmpfs::mount(&dir.path().join("data"), "2m");
    let mut running = start_tones_box(dir.path());
    let filler = common::fill(&dir.path().join("data"));
    // The card is full: the call still goes through, and the log says why it is not written down.
    simulate_call(dir.path(), &running);
    let deadline = Instant::now() + Duration::from_secs(30);
    let named = |l: &String| l.contains("call log") && l.contains("data/voca.db") && l.contains("full");
    while !running.log.iter().any(named) {
        match running.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => running.log.push(line),
            Err(_) => panic!("no call-log error naming the file and the full disk in:\n{}", running.log.join("\n")),
        }
    }
    assert!(get(&running.addr, "/healthz").starts_with("HTTP/1.1 200"), "the box still answers");
    // Room again: the next call is logged.
    std::fs::remove_file(filler).expect("free the space");
    let result = simulate_call(dir.path(), &running);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !call_log(dir.path()).as_array().expect("list").iter().any(|c| c["call_sid"] == result["call_sid"]) {
        assert!(Instant::now() < deadline, "the call after the space was freed is not in the log");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn simulate_call_talks_to_a_running_box_and_calls_lists_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start_tones_box(dir.path());
    let result = simulate_call(dir.path(), &running);
    let heard = voca::audio::wav::read(&dir.path().join("heard.wav")).expect("saved audio");
    assert!(heard.seconds() > 0.6, "{} s saved", heard.seconds());

    let calls = call_log(dir.path());
    assert_eq!(calls[0]["call_sid"], result["call_sid"]);
    assert_eq!(calls[0]["outcome"], "completed");
    assert_eq!(calls[0]["from_number"], "+*******1234", "numbers are masked");
    drop(running);
}
