//! The end-of-turn model, measured (not a test: it reports). `make bench` runs it.
//! - one decision's cost: the features and the inference apart, thread CPU time, median of 20, and
//!   the instructions the decision retires (`perf stat` when it is installed), to estimate a Pi's;
//! - premature turn ends on sentences with a pause in the middle (Piper's English voice without its
//!   random noise, so every run hears the same samples: the first words rendered alone, 600-900 ms of quiet, then the rest), with the model at a 200 ms pause and
//!   with the 500 ms hangover;
//! - how much quiet ends a finished question's turn, with each.

#[path = "../tests/common/joe.rs"]
mod joe;

use std::path::{Path, PathBuf};
use std::time::Duration;

use voca::audio::vad::{VadConfig, VadEvent};
use voca::speech::listen::Listener;
use voca::speech::onnx::find_runtime;
use voca::speech::stt::{Stt, SttOptions};
use voca::speech::turn::features::{last_window, log_mel, to_float};
use voca::speech::turn::{TurnModel, TurnPolicy, TurnState, Turns, FILE_NAME};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn model_file() -> PathBuf {
    root().join("models").join(FILE_NAME)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Turn ends (ms of quiet when each came) for `audio` through a call's listener; the model's
/// answers are waited for at each pause, so the decisions, not their speed, are counted.
fn turn_ends(audio: &[i16], turns: Option<&Turns>) -> Vec<u64> {
    let stt = Stt::start(SttOptions {
        model: PathBuf::from("/nonexistent"),
        recognition: voca::config::Recognition::Free,
        phrases: Vec::new(),
        warm: 0,
        warm_up: Vec::new(),
        download: None,
    });
    let mut listener = Listener::new(stt, VadConfig::default(), Duration::from_secs(30));
    if let Some(turns) = turns {
        let policy =
            TurnPolicy { turns: turns.clone(), pause: Duration::from_millis(200), max_wait: Duration::from_secs(2) };
        listener = listener.with_turns(policy);
    }
    let (mut ends, mut last_loud) = (Vec::new(), 0);
    for (i, chunk) in audio.chunks_exact(320).enumerate() {
        if chunk.iter().any(|s| s.unsigned_abs() > 1000) {
            last_loud = i;
        }
        if listener.hear(chunk.try_into().expect("frame")) == Some(VadEvent::End) {
            ends.push((i - last_loud) as u64 * 20);
        }
        while listener.deciding() {
            let _ = listener.poll();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    ends
}

fn main() {
    let library = find_runtime(None);
    let question = joe::say("What time is it?");

    // One decision's cost.
    let mut model = TurnModel::load(&model_file(), &library).expect("the model (make turn-model)");
    let mut audio = to_float(&question);
    audio.extend(std::iter::repeat_n(0.0, 3_200));
    let (mut features_ms, mut inference_ms) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let t0 = thread_cpu();
        let features = log_mel(&last_window(&audio));
        let t1 = thread_cpu();
        model.probability(features).expect("decision");
        let t2 = thread_cpu();
        features_ms.push((t1 - t0).as_secs_f64() * 1e3);
        inference_ms.push((t2 - t1).as_secs_f64() * 1e3);
    }
    let (f, i) = (median(features_ms), median(inference_ms));
    println!("end-of-turn decision (release, one thread, median of 20, thread CPU time):");
    println!("  features {f:.1} ms + inference {i:.1} ms = {:.1} ms", f + i);
    instructions();

    // Premature ends and the quiet that ends a finished question.
    let turns = Turns::start(&model_file(), &library, None);
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while turns.state() == TurnState::Loading && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let quiet = |s: f32| vec![0i16; (s * 16_000.0) as usize];
    let mut finished = quiet(0.5);
    finished.extend(&question);
    finished.extend(quiet(1.5));
    println!("a finished question (\"What time is it?\"): turn ends after");
    println!(
        "  {:?} ms of quiet with the model, {:?} ms with the hangover",
        turn_ends(&finished, Some(&turns)),
        turn_ends(&finished, None)
    );
    let set = [
        ("I would like to", "talk to my daughter.", 0.8),
        ("I want to talk to", "my son, please.", 0.7),
        ("Um, I would like to", "call the doctor.", 0.9),
        ("Call", "my daughter.", 0.6),
        ("What is the", "weather like tomorrow?", 0.7),
        ("My name is", "Anna.", 0.8),
        ("Could you tell me", "what time it is?", 0.9),
        ("Please remind me to", "take my medicine.", 0.6),
        ("Tell me the", "date today.", 0.7),
        ("I need", "to call my son.", 0.8),
    ];
    let (mut model_cut, mut hangover_cut) = (0, 0);
    println!("sentences with a pause in the middle: premature turn ends, model / hangover");
    for (first, rest, gap) in set {
        let mut audio = quiet(0.5);
        audio.extend(joe::say(first));
        audio.extend(quiet(gap));
        audio.extend(joe::say(rest));
        audio.extend(quiet(2.5));
        let m = turn_ends(&audio, Some(&turns)).len().saturating_sub(1);
        let h = turn_ends(&audio, None).len().saturating_sub(1);
        println!("  {:<45} {m} / {h}", format!("{first} ... {rest} ({gap} s)"));
        model_cut += m;
        hangover_cut += h;
    }
    println!("  total: {model_cut} with the model, {hangover_cut} with the 500 ms hangover ({} sentences)", set.len());
}

/// Instructions retired by one decision (features and inference), counted by callgrind (the
/// machine's own counters are not exposed to this VM): `voca models probe-turn` making three
/// decisions minus making one, halved.
fn instructions() {
    let library = find_runtime(None);
    let model = model_file();
    let count = |decisions: &str| -> Option<f64> {
        let dir = tempfile::tempdir().ok()?;
        let out = std::process::Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(env!("CARGO_BIN_EXE_voca"))
            .args(["--config", "/dev/null", "models", "probe-turn"])
            .arg(&model)
            .arg("--onnxruntime")
            .arg(&library)
            .args(["--decisions", decisions])
            .current_dir(dir.path())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        let refs = text.lines().find_map(|l| l.split_once("I   refs:").map(|(_, n)| n.trim().replace(',', "")))?;
        refs.parse().ok()
    };
    match (count("1"), count("3")) {
        (Some(one), Some(three)) => println!(
            "  instructions: {:.2} G per decision (callgrind; loading the model and starting: {:.2} G)",
            (three - one) / 2e9,
            (one - (three - one) / 2.0) / 1e9
        ),
        _ => println!("  instructions: valgrind is not installed here (make bench installs it), not measured"),
    }
}
