//! The end-of-turn model, measured (not a test: it reports). `make bench` runs it.
//! - one decision's cost: the features and the inference apart, thread CPU time, median of 20, and
//!   the instructions the decision retires (`perf stat` when it is installed), to estimate a Pi's;
//! - premature turn ends on sentences with a pause in the middle, with the model at a 200 ms pause
//!   and with the 500 ms hangover: whole sentences (Piper's English voice without its random noise,
//!   so every run hears the same samples, and espeak-ng's Korean) cut where their first words end,
//!   600-900 ms of quiet inserted; and, harder, the first words rendered alone, then the rest;
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
    let english = [
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
    let korean = [
        ("우리 딸한테", "전화해 주세요.", 0.8),
        ("내일 날씨가", "어떨까요?", 0.7),
        ("약 먹으라고", "알려 주세요.", 0.9),
        ("병원에", "전화하고 싶어요.", 0.6),
        ("오늘이", "며칠 이에요?", 0.7),
        ("제 이름은", "김민수 입니다.", 0.8),
        ("아들한테 메시지를", "남기고 싶어요.", 0.9),
        ("지금", "몇 시 예요?", 0.6),
    ];
    let (mut model_cut, mut hangover_cut, mut sentences) = (0, 0, 0);
    println!("sentences with a pause in the middle: premature turn ends, model / hangover");
    let count = |label: &str, audio: &[i16]| {
        let m = turn_ends(audio, Some(&turns)).len().saturating_sub(1);
        let h = turn_ends(audio, None).len().saturating_sub(1);
        println!("  {label:<58} {m} / {h}");
        (m, h)
    };
    // The set: each whole sentence rendered once and cut where the first words end.
    for (voice, set) in [("Piper, English", &english[..]), ("espeak-ng, Korean", &korean[..])] {
        println!(" {voice}, whole sentences cut after the first words:");
        for &(first, rest, gap) in set {
            let render = |text: &str| if voice.starts_with("Piper") { joe::say(text) } else { espeak_ko(text) };
            let whole = render(&format!("{first} {rest}"));
            let at = word_gap(&whole, trimmed_len(&render(first)));
            let mut audio = quiet(0.5);
            audio.extend(&whole[..at]);
            audio.extend(quiet(gap));
            audio.extend(&whole[at..]);
            audio.extend(quiet(2.5));
            let (m, h) = count(&format!("{first} ... {rest} ({gap} s)"), &audio);
            model_cut += m;
            hangover_cut += h;
            sentences += 1;
        }
    }
    println!("  total: {model_cut} with the model, {hangover_cut} with the 500 ms hangover ({sentences} sentences)");
    // Harder: the first words rendered alone end with the falling pitch of a finished sentence.
    let (mut alone_model, mut alone_hangover) = (0, 0);
    println!(" Piper, English, the first words rendered alone (a finished sentence's pitch), then the rest:");
    for (first, rest, gap) in english {
        let mut audio = quiet(0.5);
        audio.extend(joe::say(first));
        audio.extend(quiet(gap));
        audio.extend(joe::say(rest));
        audio.extend(quiet(2.5));
        let (m, h) = count(&format!("{first} ... {rest} ({gap} s)"), &audio);
        alone_model += m;
        alone_hangover += h;
    }
    println!(
        "  total: {alone_model} with the model, {alone_hangover} with the 500 ms hangover ({} sentences)",
        english.len()
    );
}

/// espeak-ng's Korean voice at 16 kHz (the voice the box's Korean tests speak with).
fn espeak_ko(text: &str) -> Vec<i16> {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("ko.wav");
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "ko", "-s", "175", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng (make test installs it)");
    assert!(status.success(), "espeak-ng failed");
    voca::audio::wav::read_at(&wav, 16_000).expect("espeak-ng's WAV")
}

/// Samples up to the last loud one (a rendering's trailing quiet left out).
fn trimmed_len(audio: &[i16]) -> usize {
    audio.iter().rposition(|s| s.unsigned_abs() > 500).map_or(0, |i| i + 1)
}

/// The quietest 20 ms of `audio` within 25% of `near` (where the first words, rendered alone, end):
/// the boundary between two words of the whole sentence.
fn word_gap(audio: &[i16], near: usize) -> usize {
    let (lo, hi) = (near * 3 / 4, (near * 5 / 4).min(audio.len().saturating_sub(320)));
    let energy = |at: usize| audio[at..at + 320].iter().map(|&s| i64::from(s).pow(2)).sum::<i64>();
    (lo..=hi).step_by(80).min_by_key(|&at| energy(at)).map_or(near, |at| at + 160)
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
