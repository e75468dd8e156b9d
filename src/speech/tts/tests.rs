//! The TTS thread with real espeak-ng: prompts, streaming by clause, the cache, fallbacks.

use super::espeak::Engine;
use super::*;
use std::sync::Mutex;

/// The engine is process-global: tests that open it take turns.
static TURN: Mutex<()> = Mutex::new(());

#[test]
fn speaks_a_phrase_into_plausible_audio() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let mut engine = Engine::open("en-us", 165, 50).expect("espeak-ng is installed by make test");
    assert!(engine.version().starts_with('1'), "version {}", engine.version());
    let rate = engine.sample_rate() as usize;
    let short = engine.synthesize("Hello.").expect("synth");
    let long = engine.synthesize("Hello, you have reached the kitchen box. How can I help you today?").expect("synth");
    let seconds = long.len() as f64 / rate as f64;
    assert!((2.0..8.0).contains(&seconds), "{seconds} s for a 13-word sentence at 165 wpm");
    assert!(long.len() > 3 * short.len());
    let peak = long.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!(peak > 1000, "audio must not be silent (peak {peak})");
    assert!(matches!(Engine::open("en-us", 165, 50), Err(TtsError::Busy)), "only one engine at a time");
}

#[test]
fn text_splits_into_sentences() {
    assert_eq!(sentences("Hello there. How are you? Fine!"), ["Hello there.", "How are you?", "Fine!"]);
    assert_eq!(sentences("It is 3.5 degrees"), ["It is 3.5 degrees"]);
    assert_eq!(sentences("안녕하세요. 지금 몇 시 예요?"), ["안녕하세요.", "지금 몇 시 예요?"]);
    assert!(sentences("  ").is_empty());
}

#[test]
fn the_tts_thread_streams_sentences_and_stops_when_cancelled() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(tts_streams_and_cancels());
}

async fn tts_streams_and_cancels() {
    let tts = Tts::start(&TtsOptions::espeak("en-us", 165, 50)).expect("espeak-ng");
    let mut speech = tts.speak("First sentence here. Second sentence follows. And a third one.");
    let first = speech.chunks.recv().await.expect("first chunk");
    assert!(first.len() > BOX_RATE as usize / 2, "about a second at 16 kHz: {}", first.len());
    let second = speech.chunks.recv().await.expect("second chunk");
    assert!(!second.is_empty());
    speech.cancel();
    let mut rest = 0;
    while speech.chunks.recv().await.is_some() {
        rest += 1;
    }
    assert!(rest <= 1, "at most the sentence in progress arrives after cancel");
    let prompt = tts.render("One moment please.").await;
    assert!(prompt.len() > BOX_RATE as usize / 2);
}

#[test]
fn a_reply_nobody_hears_yet_goes_before_the_rest_of_a_long_one() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let tts = Tts::start(&TtsOptions::espeak("en-us", 300, 50)).expect("espeak-ng");
        // Forty sentences take far longer to render than queueing the second reply does.
        let long_text = "This is one sentence. ".repeat(40);
        let mut long = tts.speak(&long_text);
        let mut short = tts.speak("Hello there.");
        let mut long_chunks = 0;
        let mut order = Vec::new();
        loop {
            tokio::select! {
                chunk = long.chunks.recv() => match chunk {
                    Some(_) => { long_chunks += 1; order.push("long"); }
                    None => break,
                },
                chunk = short.chunks.recv(), if !order.contains(&"short") => {
                    if chunk.is_some() { order.push("short"); }
                }
            }
        }
        assert_eq!(long_chunks, 40, "the long reply is whole");
        let short_at = order.iter().position(|o| *o == "short").expect("the short reply came");
        assert!(short_at < 10, "the short reply waited for {short_at} sentences of the long one");
    });
}

#[test]
fn an_unknown_voice_is_named() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let e = Engine::open("xx-nonexistent", 165, 50).expect_err("no such voice");
    assert!(e.to_string().contains("xx-nonexistent"), "{e}");
    let reopened = Engine::open("en-us", 165, 50);
    assert!(reopened.is_ok(), "a failed open releases the engine: {reopened:?}");
}
