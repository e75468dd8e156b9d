//! The box itself, driven through the sim panel's HTTP routes with real ALSA devices backed by files
//! (capture reads `mic.raw`, playback writes `speaker.raw`, 16 kHz mono) and Twilio's API played by
//! Prism (behind a recording proxy, so the test sees what the box sent and that Prism accepted it).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use common::rig::{wait_ready, Rig, Sent};
use common::{AUTH_TOKEN, NUMBER};
use voca::config::Config;
use voca::twilio::simulator::{self, SimCall};

const RATE: f64 = 16000.0;

fn tone(freq: f64, rate: f64, seconds: f64, amplitude: f64) -> Vec<i16> {
    (0..(seconds * rate) as usize)
        .map(|n| (amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / rate).sin()) as i16)
        .collect()
}

/// Power of `freq` in `x` relative to the total (Goertzel), 0-1.
fn share(x: &[i16], freq: f64, rate: f64) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    let total: f64 = x.iter().map(|&v| f64::from(v).powi(2)).sum();
    if total == 0.0 {
        0.0
    } else {
        2.0 * power / (x.len() as f64 * total)
    }
}

/// Whether some 200 ms window of `x` is mostly `freq`.
fn contains_tone(x: &[i16], freq: f64, rate: f64) -> bool {
    let window = (rate * 0.2) as usize;
    x.chunks(window).any(|w| w.len() == window && share(w, freq, rate) > 0.5)
}

/// The call LED's patterns, in order, without repeats.
fn call_led(seen: &[serde_json::Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for leds in seen {
        let p = leds["call"].as_str().unwrap_or("?").to_owned();
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    out
}

fn is_subsequence(wanted: &[&str], seen: &[String]) -> bool {
    let mut it = seen.iter();
    wanted.iter().all(|w| it.any(|s| s == w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_button_places_a_call_that_plays_through_the_box_both_ways() {
    // The microphone hears a 600 Hz tone; the far end says 1 kHz.
    let rig = Rig::new(&tone(600.0, RATE, 30.0, 8000.0)).await;
    let running = voca::app::start(rig.config("[calls]\nanswer = \"tones\"\n")).await.expect("box starts");
    wait_ready(&running).await;
    let (leds, watcher) = rig.watch_leds().await;

    rig.press("call", "short").await;
    let sent = rig.wait_for_request(|s| s.method == "POST" && s.path.ends_with("/Calls.json")).await;
    assert_eq!(sent.status, 201, "Prism found the request valid against Twilio's spec: {}", sent.answer);
    let form: HashMap<String, String> = url::form_urlencoded::parse(sent.body.as_bytes()).into_owned().collect();
    assert_eq!((form["To"].as_str(), form["From"].as_str()), ("+15557654321", NUMBER));
    let voice_path = form["Url"].strip_prefix(&rig.base).expect("the box's own URL").to_owned();
    assert!(voice_path.starts_with("/twilio/voice?callout="), "{voice_path}");
    let call_sid =
        serde_json::from_str::<serde_json::Value>(&sent.answer).expect("json")["sid"].as_str().expect("sid").to_owned();

    // Twilio connects the call: the simulator plays the far end, answering the box's URL.
    let mut call = SimCall::new(&rig.base, Some(AUTH_TOKEN));
    call.call_sid = call_sid;
    call.voice_path = voice_path;
    call.direction = "outbound-api".into();
    call.audio = tone(1000.0, 8000.0, 6.0, 6000.0);
    call.linger = Duration::from_secs(1);
    let sim = tokio::spawn(async move { simulator::run(&call).await });
    // After a while, a press on the box hangs up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    rig.press("call", "short").await;
    let result = sim.await.expect("task").expect("call ran");
    tokio::time::sleep(Duration::from_millis(500)).await;
    watcher.abort();

    assert!(result.closed_by_box, "the press hung up");
    assert!(contains_tone(&result.received, 600.0, 8000.0), "the microphone's tone reached the far end");
    assert!(contains_tone(&rig.speaker(), 1000.0, RATE), "the far end's tone played on the speaker");
    let sequence = call_led(&leds.lock().expect("leds"));
    assert!(is_subsequence(&["off", "slow_blink", "solid", "off"], &sequence), "call LED: {sequence:?}");
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ringing_call_is_answered_with_a_button() {
    let rig = Rig::new(&tone(600.0, RATE, 30.0, 8000.0)).await;
    let running =
        voca::app::start(rig.config("[calls]\nanswer = \"ring\"\nring_timeout = \"20s\"\n")).await.expect("box starts");
    let (leds, watcher) = rig.watch_leds().await;
    let mut call = SimCall::new(&rig.base, Some(AUTH_TOKEN));
    call.audio = [vec![0; 8000 * 2], tone(1000.0, 8000.0, 3.0, 6000.0)].concat();
    call.linger = Duration::from_secs(1);
    let sim = tokio::spawn(async move { simulator::run(&call).await });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    rig.press("talk", "short").await;
    let result = sim.await.expect("task").expect("call ran");
    tokio::time::sleep(Duration::from_millis(300)).await;
    watcher.abort();

    assert!(
        contains_tone(&result.received, 440.0, 8000.0) || contains_tone(&result.received, 480.0, 8000.0),
        "ringback first"
    );
    assert!(contains_tone(&result.received, 600.0, 8000.0), "then the box's microphone");
    let speaker = rig.speaker();
    assert!(contains_tone(&speaker, 880.0, RATE) || contains_tone(&speaker, 660.0, RATE), "the box rang");
    assert!(contains_tone(&speaker, 1000.0, RATE), "then played the caller");
    let sequence = call_led(&leds.lock().expect("leds"));
    assert!(is_subsequence(&["fast_blink", "solid", "off"], &sequence), "call LED: {sequence:?}");
    running.stop().await.expect("stop");
    // Stopping closed the speaker: nothing more is written to it.
    let closed = rig.speaker().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.speaker().len(), closed, "the speaker thread has ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intercom_call_works_with_48_khz_devices() {
    // USB sound cards usually run at 48 kHz: the box converts both ways.
    let rig = Rig::new(&tone(600.0, 48000.0, 30.0, 8000.0)).await;
    let mut config = rig.config("[calls]\nanswer = \"intercom\"\n");
    config.device.sample_rate = 48000;
    let running = voca::app::start(config).await.expect("box starts");
    let mut call = SimCall::new(&rig.base, Some(AUTH_TOKEN));
    call.audio = tone(1000.0, 8000.0, 3.0, 6000.0);
    call.linger = Duration::from_secs(1);
    let result = simulator::run(&call).await.expect("call");
    assert!(contains_tone(&result.received, 600.0, 8000.0), "the 48 kHz microphone reached the caller");
    assert!(contains_tone(&rig.speaker(), 1000.0, 48000.0), "the caller played on the 48 kHz speaker");
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_press_calls_for_help_skipping_an_answering_machine() {
    let rig = Rig::new(&tone(600.0, RATE, 30.0, 8000.0)).await;
    let running = voca::app::start(rig.config("[calls]\nanswer = \"tones\"\n")).await.expect("box starts");
    wait_ready(&running).await;
    rig.press("call", "long").await;
    let calls =
        |to: &'static str| move |s: &Sent| s.method == "POST" && s.path.ends_with("/Calls.json") && s.body.contains(to);
    let first = rig.wait_for_request(calls("%2B15557654321")).await;
    assert_eq!(first.status, 201, "valid for Twilio's spec: {}", first.answer);
    let form: HashMap<String, String> = url::form_urlencoded::parse(first.body.as_bytes()).into_owned().collect();
    assert_eq!(form.get("MachineDetection").map(String::as_str), Some("Enable"), "voicemail is detected and skipped");

    // Alice's voicemail picks up: the box hangs up on it and calls Bob.
    let voice_path = form["Url"].strip_prefix(&rig.base).expect("box URL").to_owned();
    // Twilio asks about the very call it answered the box with (the box checks it placed it).
    let call_sid = serde_json::from_str::<serde_json::Value>(&first.answer).expect("json")["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let params: Vec<(String, String)> = [
        ("CallSid", call_sid.as_str()),
        ("From", NUMBER),
        ("To", "+15557654321"),
        ("Direction", "outbound-api"),
        ("AnsweredBy", "machine_start"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let url = format!("{}{voice_path}", rig.base);
    let http = reqwest::Client::new();
    let (status, twiml) =
        simulator::post_webhook(&http, &url, &Some(AUTH_TOKEN.into()), &params).await.expect("webhook");
    assert_eq!(status, 200);
    assert!(twiml.contains("<Hangup/>") && !twiml.contains("<Stream"), "{twiml}");
    let second = rig.wait_for_request(calls("%2B15559876543")).await;
    assert_eq!(second.status, 201, "{}", second.answer);
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_speaker_is_shown_and_picked_up_when_it_appears_while_calls_go_on() {
    // The speaker is a USB device that is not plugged in: ALSA does not know it yet.
    let rig = Rig::new(&vec![0; 16000 * 30]).await;
    let mut config = rig.config("[calls]\nanswer = \"tones\"\n");
    config.device.playback = "voca_usb_speaker".into();
    let running = voca::app::start(config).await.expect("box starts");
    let mut watch = running.state.watch();
    tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|s| s.fault.is_some()))
        .await
        .expect("the missing speaker is reported")
        .expect("bus");
    let fault = running.state.snapshot().fault.expect("fault");
    assert!(fault.contains("voca_usb_speaker"), "the fault names the device: {fault}");
    let (leds, watcher) = rig.watch_leds().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(leds.lock().expect("leds").last().expect("leds")["status"], "fast_blink");

    // Phone calls keep working meanwhile.
    let mut call = SimCall::new(&rig.base, Some(AUTH_TOKEN));
    call.audio = vec![0; 8000];
    call.dtmf = vec![(Duration::from_millis(300), '#')];
    let result = simulator::run(&call).await.expect("call");
    assert!(result.frames_received > 10 && result.closed_by_box, "{result:?}");

    // It is plugged in: ALSA's configuration gains the device (libasound rereads a changed
    // configuration on the next open), the box picks it up and the status LED recovers.
    let conf = rig.dir.path().join("asound.conf");
    let mut text = std::fs::read_to_string(&conf).expect("asound.conf");
    text.push_str(&format!(
        "pcm.voca_usb_speaker {{ type file slave.pcm \"null\" file \"{}\" format \"raw\" }}\n",
        rig.dir.path().join("usb-speaker.raw").display()
    ));
    std::fs::write(&conf, text).expect("plug in");
    tokio::time::timeout(Duration::from_secs(15), watch.wait_for(|s| s.fault.is_none()))
        .await
        .expect("the speaker is picked up again")
        .expect("bus");
    tokio::time::sleep(Duration::from_millis(200)).await;
    watcher.abort();
    assert_ne!(leds.lock().expect("leds").last().expect("leds")["status"], "fast_blink");
    let written = std::fs::metadata(rig.dir.path().join("usb-speaker.raw")).map_or(0, |m| m.len());
    assert!(written > 0, "the speaker thread writes to the new device");
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saying_call_alice_to_the_box_places_the_call() {
    let rig = Rig::new(&vec![0; 16000 * 30]).await;
    let extra = "[calls]\nanswer = \"assistant\"\n";
    let mut config = rig.config(extra);
    config.speech.language = "en".into();
    config.speech.voice = "en-us".into();
    config.speech.recognition = voca::speech::stt::Recognition::Free;
    let running = voca::app::start(config).await.expect("box starts");
    wait_ready(&running).await;
    let before = rig.speaker().len();
    // (It then follows the call until it connects or fails: not waited for here.)
    let appliance = running.appliance.clone();
    tokio::spawn(async move { appliance.answer_heard("please call alice").await });
    let sent = rig.wait_for_request(|s| s.method == "POST" && s.path.ends_with("/Calls.json")).await;
    assert_eq!(sent.status, 201, "{}", sent.answer);
    assert!(sent.body.contains("To=%2B15557654321"), "{}", sent.body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let said = &rig.speaker()[before..];
    assert!(said.chunks(1600).filter(|w| rms(w) > 500.0).count() >= 5, "\"Calling Alice\" on the speaker");
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_out_pressed_while_offline_is_queued_and_said_so() {
    let rig = Rig::new(&vec![0; 16000 * 30]).await;
    let running =
        voca::app::start(rig.config("[calls]\nanswer = \"assistant\"\n").tap_offline()).await.expect("starts");
    let (leds, watcher) = rig.watch_leds().await;
    let before = rig.speaker().len();
    rig.press("call", "short").await;
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = running.store.callouts().await.expect("queue");
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rows.len(), 1, "queued in the database");
    assert_eq!((rows[0].contact.as_str(), rows[0].state.as_str()), ("Alice", "pending"));
    let mut watch = running.state.watch();
    tokio::time::timeout(Duration::from_secs(20), watch.wait_for(|s| s.activity == voca::events::Activity::Speaking))
        .await
        .expect("the box says it will keep trying")
        .expect("bus");
    tokio::time::timeout(Duration::from_secs(30), watch.wait_for(|s| s.activity == voca::events::Activity::Idle))
        .await
        .expect("and finishes")
        .expect("bus");
    watcher.abort();
    let said = &rig.speaker()[before..];
    assert!(said.chunks(1600).filter(|w| rms(w) > 500.0).count() >= 10, "a spoken explanation on the speaker");
    assert!(rig.log.lock().expect("log").iter().all(|s| !s.path.ends_with("/Calls.json")), "nothing placed offline");
    let seen = leds.lock().expect("leds").clone();
    assert!(seen.iter().all(|l| l["status"] == "slow_blink"), "offline throughout: {seen:?}");
    running.stop().await.expect("stop");
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_ring_goes_to_voicemail_which_the_box_then_plays() {
    let rig = Rig::new(&vec![0; 16000 * 30]).await;
    let config = rig.config("[calls]\nanswer = \"ring\"\nring_timeout = \"1s\"\nunanswered = \"voicemail\"\n");
    let running = voca::app::start(config).await.expect("box starts");
    let (leds, watcher) = rig.watch_leds().await;
    // The caller waits through the ringing and the prompt, then leaves a 2 s message (a 700 Hz tone).
    let mut call = SimCall::new(&rig.base, Some(AUTH_TOKEN));
    call.audio = [vec![0; 8000 * 9], tone(700.0, 8000.0, 2.0, 6000.0)].concat();
    call.linger = Duration::from_millis(500);
    let result = simulator::run(&call).await.expect("call ran");
    assert!(contains_tone(&result.received, 440.0, 8000.0), "ringback while the box rang");

    let mut watch = running.state.watch();
    tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|s| s.waiting == 1))
        .await
        .expect("a message waits")
        .expect("bus");
    // The missed call waits at once; its message once the recording is written.
    let mut waiting = running.store.waiting_calls().await.expect("store");
    for _ in 0..100 {
        if waiting.first().is_some_and(|c| c.voicemail.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waiting = running.store.waiting_calls().await.expect("store");
    }
    assert_eq!(waiting.len(), 1, "one missed call: {waiting:?}");
    let path = PathBuf::from(waiting[0].voicemail.clone().expect("voicemail saved"));
    let recorded = voca::audio::wav::read(&path).expect("wav");
    assert!(contains_tone(&recorded.samples, 700.0, f64::from(recorded.rate)), "the message is the caller's audio");
    let lit = || leds.lock().expect("leds").last().is_some_and(|l| l["missed"] == "solid");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !lit() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lit(), "the missed-call LED is lit");

    // A press plays it on the speaker and the LED goes out.
    let before = rig.speaker().len();
    rig.press("talk", "short").await;
    tokio::time::timeout(Duration::from_secs(20), watch.wait_for(|s| s.waiting == 0))
        .await
        .expect("heard")
        .expect("bus");
    // The speaker thread writes what it was given within a period or two: wait for the tone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let played = loop {
        let played = rig.speaker()[before.min(rig.speaker().len())..].to_vec();
        if contains_tone(&played, 700.0, RATE) || std::time::Instant::now() > deadline {
            break played;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(contains_tone(&played, 700.0, RATE), "the voicemail played on the speaker");
    let off = || leds.lock().expect("leds").last().is_some_and(|l| l["missed"] == "off");
    while !off() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();
    let seen = leds.lock().expect("leds").clone();
    let missed: Vec<String> = seen.iter().map(|l| l["missed"].as_str().unwrap_or("?").to_owned()).collect();
    assert!(is_subsequence(&["off", "solid", "off"], &missed), "{missed:?}");
    assert!(is_subsequence(&["fast_blink", "off"], &call_led(&seen)), "rang, then stopped: {:?}", call_led(&seen));
    running.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_talk_answers_on_the_speaker_offline() {
    let question = common::say("지금 몇 시 예요", 16000);
    let held = Duration::from_secs_f64(question.len() as f64 / RATE + 0.8);
    let rig = Rig::new(&[question, vec![0; 16000 * 30]].concat()).await;
    // No tunnel and no network: push-to-talk is entirely local.
    let running =
        voca::app::start(rig.config("[calls]\nanswer = \"assistant\"\n").tap_offline()).await.expect("box starts");
    let stt = running.speech.clone().expect("speech");
    assert_eq!(stt.ready().await, voca::speech::stt::ModelState::Ready);
    let (leds, watcher) = rig.watch_leds().await;
    let before = rig.speaker().len();
    rig.press("talk", "down").await;
    tokio::time::sleep(held).await;
    rig.press("talk", "up").await;
    let mut watch = running.state.watch();
    tokio::time::timeout(Duration::from_secs(20), watch.wait_for(|s| s.activity == voca::events::Activity::Speaking))
        .await
        .expect("the box answers")
        .expect("bus");
    tokio::time::timeout(Duration::from_secs(20), watch.wait_for(|s| s.activity == voca::events::Activity::Idle))
        .await
        .expect("and finishes")
        .expect("bus");
    watcher.abort();
    let reply = &rig.speaker()[before..];
    let loud = reply.chunks(1600).filter(|w| rms(w) > 500.0).count();
    assert!(loud >= 5, "a spoken reply (at least 0.5 s of speech) on the speaker, got {loud} loud 100 ms windows");
    assert!(is_subsequence(&["off", "pulse", "off"], &call_led(&leds.lock().expect("leds"))));
    running.stop().await.expect("stop");
}

trait Offline {
    fn tap_offline(self) -> Self;
}

impl Offline for Config {
    /// LAN only: no tunnel, nothing reaches Twilio.
    fn tap_offline(mut self) -> Self {
        self.tunnel.provider = voca::config::TunnelProvider::None;
        self
    }
}
