//! Killed at any moment, nothing lost: the box is killed with SIGKILL 100 times at random moments
//! while calls are live, call-outs are asked for (the call button, Twilio played by Prism behind a
//! recording proxy) and the missed-call sync runs. After each restart the call log must pass
//! SQLite's integrity check; at the end every call that reached the box is in the log exactly once
//! (the ones live at a kill `interrupted`), no call-out was ever sent to Twilio twice, and the
//! voicemail files (half the runs take messages) and their rows agree.
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL`: a committed transaction survives the
//! process being killed (the WAL is in the OS's cache); only a power cut may lose the last ones,
//! and never corrupts the file. `FULL` would sync on every call event, wearing an SD card for no
//! gain against kill -9.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::rig::Rig;
use common::{Spawned, AUTH_TOKEN};
use voca::twilio::simulator::{self, SimCall};

const RUNS: usize = 100;

fn start(dir: &std::path::Path) -> Spawned {
    let log = std::fs::File::options().create(true).append(true).open(dir.join("box.log")).expect("log");
    common::voca(dir)
        .args(["--config", "voca.toml", "run"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Spawned)
        .expect("voca runs")
}

fn wait_healthy(port: u16, child: &mut Spawned) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::debian::healthz(port).is_none() {
        assert!(child.try_wait().expect("wait").is_none(), "the box exited at start");
        assert!(Instant::now() < deadline, "the box did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small deterministic generator: the same moments on every run of the test.
struct Moments(u64);

impl Moments {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_a_hundred_times_the_box_loses_nothing_and_never_calls_twice() {
    let rig = Rig::new(&[]).await;
    let data = rig.dir.path().join("data");
    // Half the runs answer with tones, half take a voicemail (its file and its row must agree).
    let configure = |answer: &str| {
        std::fs::write(
        rig.dir.path().join("voca.toml"),
        format!(
            "[device]\ncapture = \"null\"\nplayback = \"null\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [twilio]\naccount_sid = \"{sid}\"\nauth_token = \"{token}\"\nphone_number = \"{number}\"\napi_base = \"{api}\"\npublic_url = \"{base}\"\n\
             [tunnel]\nprovider = \"external\"\nprobe_interval = \"1s\"\n[calls]\nanswer = \"{answer}\"\nmax_concurrent = 4\nrate_limit_per_hour = 0\n\
             [[contacts]]\nname = \"Alice\"\nnumber = \"+15557654321\"\nbutton = 1\n",
            data = data.display(),
            port = rig.port,
            sid = common::ACCOUNT_SID,
            token = AUTH_TOKEN,
            number = common::NUMBER,
            api = rig.api,
            base = rig.base,
        ),
    )
    .expect("config")
    };
    let http = reqwest::Client::new();
    let mut moments = Moments(0x5eed_cafe_f00d_d00d);
    let mut reached: BTreeSet<String> = BTreeSet::new();
    let mut presses = 0usize;
    for run in 0..RUNS {
        configure(if moments.next(2) == 0 { "tones" } else { "voicemail" });
        let mut child = start(rig.dir.path());
        wait_healthy(rig.port, &mut child);
        // Calls arrive and talk; the call button asks for a call-out; then, at a random moment, kill -9.
        let mut callers = Vec::new();
        for _ in 0..2 {
            // Some calls end before the kill, some are cut by it.
            let mut call = SimCall::new(&rig.base, Some(AUTH_TOKEN));
            call.audio = vec![0i16; 8 * (200 + moments.next(2000) as usize)];
            call.linger = Duration::from_millis(100);
            let sid = call.call_sid.clone();
            callers.push((sid, tokio::spawn(async move { simulator::run(&call).await })));
        }
        if moments.next(2) == 0 {
            let pressed = http
                .post(format!("{}/sim/buttons/call", rig.base))
                .json(&serde_json::json!({ "press": "short" }))
                .send()
                .await;
            presses += usize::from(pressed.is_ok_and(|r| r.status().is_success()));
        }
        tokio::time::sleep(Duration::from_millis(moments.next(2000))).await;
        child.kill().expect("kill -9");
        child.wait().expect("reaped");
        for (sid, caller) in callers {
            // A call whose webhook the box answered was logged before the answer went out.
            if let Ok(Ok(result)) = caller.await {
                if result.webhook_status == 200 {
                    reached.insert(sid);
                }
            }
        }
        // Reopened as the box reopens it: SQLite's own check must pass every time.
        let db = rusqlite::Connection::open(data.join("voca.db")).expect("open");
        let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
        assert_eq!(check, "ok", "after kill {run}");
    }

    // One last, clean run: it marks the calls left open and places what is still queued.
    configure("tones");
    let mut child = start(rig.dir.path());
    wait_healthy(rig.port, &mut child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let db = rusqlite::Connection::open(data.join("voca.db")).expect("open");
    loop {
        let pending: i64 = db
            .query_row("SELECT COUNT(*) FROM callouts WHERE state IN ('pending', 'placing')", [], |r| r.get(0))
            .expect("count");
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} call-out(s) never placed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.terminate();
    child.wait().expect("stops");

    let rows: BTreeMap<String, Option<String>> = db
        .prepare("SELECT call_sid, outcome FROM calls")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    for sid in &reached {
        let outcome = rows.get(sid).unwrap_or_else(|| panic!("call {sid} reached the box but is not in the log"));
        assert!(outcome.is_some(), "call {sid} is still open after a clean run");
    }
    // Voicemail: every message the log names is on the card, whole; every message on the card is
    // named by its call's row.
    let named: BTreeSet<String> = db
        .prepare("SELECT voicemail FROM calls WHERE voicemail IS NOT NULL")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    let on_card: BTreeSet<String> = std::fs::read_dir(data.join("voicemail"))
        .map(|d| d.flatten().map(|e| e.path().display().to_string()).collect())
        .unwrap_or_default();
    assert_eq!(named, on_card, "voicemail rows and files agree");
    for file in &on_card {
        voca::audio::wav::read(std::path::Path::new(file)).unwrap_or_else(|e| panic!("{file} is not whole: {e}"));
    }
    let interrupted = rows.values().filter(|o| o.as_deref() == Some("interrupted")).count();
    let completed = rows.values().filter(|o| o.as_deref() == Some("completed")).count();
    // Call-outs: never sent twice; every one that was placed, sent once.
    let sent = rig.log.lock().expect("log").clone();
    let mut per_callout: BTreeMap<i64, usize> = BTreeMap::new();
    for s in sent.iter().filter(|s| s.method == "POST" && s.path.ends_with("/Calls.json")) {
        let id =
            s.body.split("callout%3D").nth(1).and_then(|r| r.split(['&', '%']).next()).and_then(|n| n.parse().ok());
        *per_callout.entry(id.expect("the Url names the call-out")).or_default() += 1;
    }
    let states: BTreeMap<i64, String> = db
        .prepare("SELECT id, state FROM callouts")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    for (id, n) in &per_callout {
        assert_eq!(*n, 1, "call-out {id} was sent to Twilio {n} times");
    }
    for (id, state) in &states {
        let n = per_callout.get(id).copied().unwrap_or(0);
        match state.as_str() {
            "placed" => assert_eq!(n, 1, "call-out {id} is placed but was sent {n} times"),
            // Killed while the request was in flight: it may or may not have reached Twilio, and it
            // is not sent again (placing a call is not idempotent).
            "uncertain" => assert!(n <= 1),
            other => panic!("call-out {id} ended {other}"),
        }
    }
    let figures = format!(
        "kills: {RUNS}; calls that reached the box: {}; call log rows: {}; completed: {completed}; interrupted: {interrupted}; \
         button presses: {presses}; voicemails: {} (files and rows agree, every file whole); call-outs: {} ({} placed once, {} uncertain); integrity checks: {RUNS}, all ok\n",
        reached.len(),
        rows.len(),
        on_card.len(),
        states.len(),
        states.values().filter(|s| *s == "placed").count(),
        states.values().filter(|s| *s == "uncertain").count(),
    );
    std::fs::write(common::repo().join("target/killed-figures.txt"), &figures).expect("figures");
    println!("{figures}");
}
