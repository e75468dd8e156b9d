//! Piper's English voice (`en_US-joe-medium`, installed by `make test-voice`) speaking the same
//! samples every time: the box's own phonemes and voice, synthesised without the voice's random
//! noise (noise and duration noise 0), at 16 kHz. Real speech for tests whose outcome must not
//! depend on the draw (the end-of-turn model judges prosody).

use std::path::Path;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};

use voca::speech::tts::espeak::Engine;
use voca::speech::tts::piper::Voice;

type Request = (String, Sender<Vec<i16>>);

/// espeak-ng is process-global and stays on the thread that opened it: one thread speaks for the
/// whole test binary.
fn speaker() -> &'static Mutex<Sender<Request>> {
    static SPEAKER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();
    SPEAKER.get_or_init(|| {
        let (tx, rx) = channel::<Request>();
        std::thread::spawn(move || {
            let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("voices/en_US-joe-medium.onnx");
            let library = voca::speech::onnx::find_runtime(None);
            let mut engine = Engine::open("en-us", 165, 50).expect("espeak-ng");
            let mut voice = Voice::load(&onnx, &library, 1).expect("the joe voice (make test-voice)");
            for (text, reply) in rx {
                let _ = reply.send(render(&mut engine, &mut voice, &text));
            }
        });
        Mutex::new(tx)
    })
}

fn render(engine: &mut Engine, voice: &mut Voice, text: &str) -> Vec<i16> {
    let mut audio = Vec::new();
    let mut sentence = Vec::new();
    let mut flush = |sentence: &mut Vec<_>, audio: &mut Vec<i16>| {
        if sentence.iter().any(|c: &voca::speech::tts::espeak::Clause| !c.phonemes.is_empty()) {
            audio.extend(voice.synthesize_with(&voice.ids(sentence), [0.0, 1.0, 0.0]).expect("synthesis"));
        }
        sentence.clear();
    };
    for clause in engine.phonemes(text).expect("phonemes") {
        let ends = clause.ends_sentence;
        sentence.push(clause);
        if ends {
            flush(&mut sentence, &mut audio);
        }
    }
    flush(&mut sentence, &mut audio);
    let mut audio = voca::audio::resample::convert(&audio, voice.sample_rate(), 16_000);
    let end = audio.iter().rposition(|s| s.unsigned_abs() > 1000).map_or(0, |i| i + 1);
    audio.truncate(end);
    audio
}

/// `text` in joe's voice, 16 kHz, without the quiet it trails.
pub fn say(text: &str) -> Vec<i16> {
    let (tx, rx) = channel();
    speaker().lock().unwrap_or_else(|p| p.into_inner()).send((text.to_owned(), tx)).expect("the speaker thread");
    rx.recv().expect("the speaker thread answers")
}
