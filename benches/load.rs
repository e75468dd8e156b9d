//! Load: how many concurrent simulated calls one core holds while every call's outbound audio keeps
//! its 20 ms rhythm (p99 gap between frames <= 25 ms). The box runs on a single-threaded runtime
//! (one core); the simulated callers run on another thread. Not a test: it reports figures.
//!
//! `make bench` runs it; `VOCA_LOAD_STEPS=10,20,40` picks the call counts to try.

use std::time::{Duration, Instant};

use voca::config::Config;
use voca::twilio::simulator::{self, SimCall};

const TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // Criterion-style filters are passed by `cargo bench`; this harness has none.
    let steps: Vec<usize> = std::env::var("VOCA_LOAD_STEPS")
        .unwrap_or_else(|_| "10,25,50,100,150,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let greeting = dir.path().join("greeting.wav");
    let speech: Vec<i16> = (0..8000 * 4).map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16).collect();
    voca::audio::wav::write(&greeting, 8000, &speech).expect("write greeting");
    let config_path = dir.path().join("voca.toml");
    std::fs::write(
        &config_path,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[device]\ndata_dir = \"{}\"\n[twilio]\nauth_token = \"{TOKEN}\"\napi_base = \"http://127.0.0.1:9\"\n\
             [calls]\nanswer = \"tones\"\nmax_concurrent = 1000\nrate_limit_per_hour = 0\ngreeting_wav = \"{}\"\n",
            dir.path().join("data").display(),
            greeting.display()
        ),
    )
    .expect("write config");
    let config = Config::load(Some(&config_path), &Default::default()).expect("config");

    // The box: one thread.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let running = voca::app::start(config).await.expect("box starts");
            addr_tx.send(running.addr).expect("send addr");
            std::future::pending::<()>().await;
        });
    });
    let base = format!("http://{}", addr_rx.recv().expect("box address"));
    let callers = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    // How fast the webhook answers (TwiML with a fresh token, call logged), one request at a time.
    let http = reqwest::Client::new();
    let url = format!("{base}/twilio/voice");
    let mut answer_ms: Vec<f64> = callers.block_on(async {
        let mut times = Vec::new();
        for _ in 0..300 {
            let params = vec![
                ("CallSid".to_owned(), simulator::random_sid("CA")),
                ("From".to_owned(), "+15550100001".to_owned()),
                ("To".to_owned(), "+15550100002".to_owned()),
            ];
            let t = Instant::now();
            let (status, _) =
                simulator::post_webhook(&http, &url, &Some(TOKEN.into()), &params).await.expect("webhook");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200);
        }
        times
    });
    answer_ms.sort_by(f64::total_cmp);
    println!(
        "webhook answer time over {} requests: p50 {:.2} ms, p99 {:.2} ms",
        answer_ms.len(),
        percentile(&answer_ms, 0.5),
        percentile(&answer_ms, 0.99)
    );

    println!("calls  p50 gap ms  p99 gap ms  max gap ms  frames/call  completed");
    let mut held = 0;
    for n in steps {
        let started = Instant::now();
        let results = callers.block_on(async {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let mut call = SimCall::new(&base, Some(TOKEN));
                    call.hang_up_after = Some(Duration::from_millis(4500));
                    tokio::spawn(async move { simulator::run(&call).await })
                })
                .collect();
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await.expect("task"));
            }
            results
        });
        let ok: Vec<_> = results.into_iter().filter_map(Result::ok).filter(|r| r.rejected.is_none()).collect();
        // Skip each call's first frames: the pacer sends its 60 ms lead at once by design.
        let mut gaps: Vec<f64> = ok.iter().flat_map(|r| r.frame_gaps_ms.iter().skip(3).copied()).collect();
        gaps.sort_by(f64::total_cmp);
        let frames = ok.iter().map(|r| r.frames_received).sum::<usize>() / ok.len().max(1);
        let p99 = percentile(&gaps, 0.99);
        println!(
            "{n:>5}  {:>10.1}  {:>10.1}  {:>10.1}  {frames:>11}  {}/{n}  ({:.1} s)",
            percentile(&gaps, 0.5),
            p99,
            gaps.last().copied().unwrap_or(0.0),
            ok.len(),
            started.elapsed().as_secs_f64()
        );
        if p99 <= 25.0 && ok.len() == n {
            held = n;
        } else {
            break;
        }
    }
    println!("one core held {held} concurrent calls with p99 outbound frame gap <= 25 ms");
}
