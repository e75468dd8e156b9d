//! `voca simulate-call`: plays Twilio against a running box. It posts a signed voice webhook, reads
//! the TwiML, opens the Media Stream, sends `connected`/`start`, streams caller audio as 20 ms mu-law
//! frames (in real time or faster), sends DTMF, echoes marks when their audio would have been played
//! (at once after a `clear`, as Twilio does), records what the box sent, and measures each turn's
//! latency: from the end of the caller's speech (or a key press) to the first reply audio.

use std::collections::VecDeque;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use quick_xml::events::Event;
use serde::Serialize;
use serde_json::json;
use thiserror::Error;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::signature;
use crate::audio::g711;

#[derive(Debug, Error)]
pub enum SimError {
    #[error("webhook request to {url} failed: {reason}")]
    Webhook { url: String, reason: String },
    #[error("the box's TwiML has neither <Connect><Stream> nor <Reject>: {0}")]
    TwiML(String),
    #[error("cannot open the media stream {url}: {reason}")]
    Stream { url: String, reason: String },
}

/// What the simulated caller does.
#[derive(Debug, Clone)]
pub struct SimCall {
    /// The box's base URL, e.g. `http://127.0.0.1:8080` (also the URL signatures are made for).
    pub base: String,
    /// Signs requests with this auth token; `None` sends no signature.
    pub auth_token: Option<String>,
    pub call_sid: String,
    pub from: String,
    pub to: String,
    /// Caller audio, 8 kHz.
    pub audio: Vec<i16>,
    /// 1.0 sends audio in real time, 4.0 four times faster, 0 as fast as possible.
    pub speed: f64,
    /// Key presses, at offsets from the start of the stream.
    pub dtmf: Vec<(Duration, char)>,
    /// The caller hangs up (sends `stop`) this long after the stream starts; else once the audio
    /// has been sent and `linger` has passed, unless the box hangs up first.
    pub hang_up_after: Option<Duration>,
    pub linger: Duration,
    /// Replaces the stream token from the TwiML (for tests of refused streams); `Some(None)` sends none.
    pub token: Option<Option<String>>,
    /// Messages sent right after `start`, as they are (for tests of malformed frames).
    pub extra_messages: Vec<String>,
    /// The voice webhook's path and query: `/twilio/voice`, or the `Url` a call-out gave Twilio.
    pub voice_path: String,
    /// `inbound`, or `outbound-api` for a call the box placed.
    pub direction: String,
    /// More webhook parameters (e.g. `AnsweredBy` from answering-machine detection).
    pub extra_params: Vec<(String, String)>,
    /// `customParameters` sent in `start` beyond the TwiML's `<Parameter>`s: what a stranger
    /// holding a token might add (tests of what the stream may not decide).
    pub extra_custom: Vec<(String, String)>,
}

impl SimCall {
    pub fn new(base: &str, auth_token: Option<&str>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            auth_token: auth_token.map(str::to_owned),
            call_sid: random_sid("CA"),
            from: "+15550100001".into(),
            to: "+15550100002".into(),
            audio: Vec::new(),
            speed: 1.0,
            dtmf: Vec::new(),
            hang_up_after: None,
            linger: Duration::from_secs(2),
            token: None,
            extra_messages: Vec::new(),
            voice_path: "/twilio/voice".into(),
            direction: "inbound".into(),
            extra_params: Vec::new(),
            extra_custom: Vec::new(),
        }
    }
}

/// One caller turn: when it ended, and how long until the box's first reply audio.
#[derive(Debug, Clone, Serialize)]
pub struct Turn {
    pub kind: &'static str,
    pub ended_ms: u64,
    pub first_reply_ms: Option<u64>,
    pub latency_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SimResult {
    pub call_sid: String,
    pub webhook_status: u16,
    /// `<Reject reason>` if the box refused the call.
    pub rejected: Option<String>,
    /// The WebSocket close code the box sent, if any (1008: the token was refused).
    pub close_code: Option<u16>,
    pub closed_by_box: bool,
    /// The stream token the box issued (for tests of reused tokens).
    #[serde(skip)]
    pub token_issued: Option<String>,
    pub frames_received: usize,
    pub marks_echoed: Vec<String>,
    pub clears: usize,
    /// For each `clear` the box sent: ms from the onset of the caller's speech before it.
    pub barge_in_ms: Vec<u64>,
    /// For each `clear`: voiced media frames the box still sent after it while the caller went on
    /// talking (the reply it cut should stop at once).
    pub frames_after_clear: Vec<usize>,
    /// For each `clear`: how much the box had said by then (samples of `received`).
    pub received_at_clear: Vec<usize>,
    pub turns: Vec<Turn>,
    /// Gaps between consecutive media frames from the box while it was talking, in ms.
    #[serde(skip)]
    pub frame_gaps_ms: Vec<f64>,
    /// What the box said, 8 kHz.
    #[serde(skip)]
    pub received: Vec<i16>,
}

pub fn random_sid(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("the OS random source works");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

fn sign(token: &Option<String>, url: &str, params: &[(String, String)]) -> Option<String> {
    token.as_ref().map(|t| signature::sign(t, url, params))
}

/// Posts a form to the box the way Twilio does. Returns the status and body.
pub async fn post_webhook(
    http: &reqwest::Client,
    url: &str,
    auth_token: &Option<String>,
    params: &[(String, String)],
) -> Result<(u16, String), SimError> {
    let fail = |e: reqwest::Error| SimError::Webhook { url: url.to_owned(), reason: e.to_string() };
    let mut request = http.post(url).form(params);
    if let Some(signature) = sign(auth_token, url, params) {
        request = request.header("X-Twilio-Signature", signature);
    }
    let response = request.send().await.map_err(fail)?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.map_err(fail)?))
}

/// The parts of the box's TwiML the simulator acts on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub stream_url: Option<String>,
    pub parameters: Vec<(String, String)>,
    pub reject: Option<String>,
}

pub fn parse_twiml(xml: &str) -> Result<Answer, SimError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut answer = Answer::default();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                let attr = |name: &[u8]| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == name)
                        .and_then(|a| a.unescape_value().ok())
                        .map(|v| v.into_owned())
                };
                match e.name().as_ref() {
                    b"Stream" => answer.stream_url = attr(b"url"),
                    b"Parameter" => {
                        if let (Some(n), Some(v)) = (attr(b"name"), attr(b"value")) {
                            answer.parameters.push((n, v));
                        }
                    }
                    b"Reject" => answer.reject = Some(attr(b"reason").unwrap_or_else(|| "rejected".into())),
                    _ => {}
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(SimError::TwiML(format!("{e}: {xml}"))),
        }
    }
    if answer.stream_url.is_none() && answer.reject.is_none() {
        return Err(SimError::TwiML(xml.to_owned()));
    }
    Ok(answer)
}

/// Which 20 ms frames are speech: RMS over 300, the same level the box's VAD calls voiced.
fn voiced_frames(audio: &[i16]) -> Vec<bool> {
    audio
        .chunks(g711::FRAME_8K)
        .map(|f| {
            let energy = f.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / f.len().max(1) as f64;
            energy.sqrt() > 300.0
        })
        .collect()
}

/// Where caller speech starts: the first voiced 20 ms frame after 300 ms of quiet (or the start).
pub fn speech_starts(audio: &[i16]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut quiet = 15;
    for (i, voiced) in voiced_frames(audio).into_iter().enumerate() {
        if voiced {
            if quiet >= 15 {
                starts.push(i);
            }
            quiet = 0;
        } else {
            quiet += 1;
        }
    }
    starts
}

/// A cough as a caller's line carries it (8 kHz): 350 ms of rough noise that dies away, no words in
/// it; the same samples every time.
pub fn cough() -> Vec<i16> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut smooth = 0.0f32;
    (0..2800)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let white = (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            smooth = 0.6 * smooth + 0.4 * white;
            let t = i as f32 / 8000.0;
            let envelope = (t / 0.01).min(1.0) * (-t / 0.12).exp();
            (smooth * 30_000.0 * envelope) as i16
        })
        .collect()
}

/// Where caller speech ends: the end of each run of voiced 20 ms frames followed by 300 ms of quiet.
pub fn speech_ends(audio: &[i16]) -> Vec<usize> {
    let voiced = voiced_frames(audio);
    let mut ends = Vec::new();
    let mut quiet = usize::MAX;
    for (i, v) in voiced.iter().enumerate() {
        if *v {
            quiet = 0;
        } else if quiet != usize::MAX {
            quiet += 1;
            if quiet == 15 {
                ends.push(i + 1 - 15);
                quiet = usize::MAX;
            }
        }
    }
    if quiet != usize::MAX {
        ends.push(voiced.len() - quiet);
    }
    ends
}

/// Twilio's `start` message for a stream of `call_sid`, carrying the TwiML's `<Parameter>`s.
pub fn start_message(
    call_sid: &str,
    stream_sid: &str,
    parameters: serde_json::Map<String, serde_json::Value>,
) -> String {
    json!({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": {
        "accountSid": "AC00000000000000000000000000000000", "streamSid": stream_sid, "callSid": call_sid,
        "tracks": ["inbound"], "customParameters": parameters,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
    .to_string()
}

/// Runs one simulated call to its end.
pub async fn run(call: &SimCall) -> Result<SimResult, SimError> {
    let http = reqwest::Client::new();
    let url = format!("{}{}", call.base, call.voice_path);
    let mut params: Vec<(String, String)> = [
        ("CallSid", call.call_sid.as_str()),
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("From", call.from.as_str()),
        ("To", call.to.as_str()),
        ("CallStatus", "ringing"),
        ("Direction", call.direction.as_str()),
        ("ApiVersion", "2010-04-01"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    params.extend(call.extra_params.iter().cloned());
    let (status, body) = post_webhook(&http, &url, &call.auth_token, &params).await?;
    let mut result = SimResult { call_sid: call.call_sid.clone(), webhook_status: status, ..SimResult::default() };
    if status != 200 {
        return Ok(result);
    }
    let answer = parse_twiml(&body)?;
    if let Some(reason) = answer.reject {
        result.rejected = Some(reason);
        return Ok(result);
    }
    let stream_url = answer.stream_url.expect("parse_twiml checked it");
    let mut request = stream_url
        .as_str()
        .into_client_request()
        .map_err(|e| SimError::Stream { url: stream_url.clone(), reason: e.to_string() })?;
    if let Some(sig) = sign(&call.auth_token, &stream_url, &[]) {
        request.headers_mut().insert("X-Twilio-Signature", sig.parse().expect("base64 is a valid header value"));
    }
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .map_err(|e| SimError::Stream { url: stream_url.clone(), reason: e.to_string() })?;
    let (mut tx, mut rx) = ws.split();
    let stream_sid = random_sid("MZ");
    result.token_issued = answer.parameters.iter().find(|(n, _)| n == "token").map(|(_, v)| v.clone());
    let token = match &call.token {
        Some(t) => t.clone(),
        None => answer.parameters.iter().find(|(n, _)| n == "token").map(|(_, v)| v.clone()),
    };
    // Twilio passes every <Parameter> of the TwiML on in `customParameters`.
    let mut custom: serde_json::Map<String, serde_json::Value> =
        answer.parameters.iter().filter(|(n, _)| n != "token").map(|(n, v)| (n.clone(), v.clone().into())).collect();
    if let Some(t) = token {
        custom.insert("token".into(), t.into());
    }
    custom.extend(call.extra_custom.iter().map(|(n, v)| (n.clone(), v.clone().into())));
    let send_err =
        |e: tokio_tungstenite::tungstenite::Error| SimError::Stream { url: stream_url.clone(), reason: e.to_string() };
    tx.send(Message::text(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string()))
        .await
        .map_err(send_err)?;
    tx.send(Message::text(start_message(&call.call_sid, &stream_sid, custom))).await.map_err(send_err)?;
    for extra in &call.extra_messages {
        tx.send(Message::text(extra.clone())).await.map_err(send_err)?;
    }

    let began = Instant::now();
    let frame = Duration::from_millis(20);
    let frame_interval = if call.speed > 0.0 { frame.div_f64(call.speed) } else { Duration::ZERO };
    let total_frames = call.audio.len().div_ceil(g711::FRAME_8K);
    let speech_end_frames = speech_ends(&call.audio);
    let speech_start_frames = speech_starts(&call.audio);
    let mut last_onset: Option<Instant> = None;
    let mut pending_turns: VecDeque<(&'static str, Instant)> = VecDeque::new();
    let mut after_clear = false;
    let mut dtmf: VecDeque<(Duration, char)> = call.dtmf.iter().copied().collect();
    let end_at = call.hang_up_after.map(|d| began + d);
    let mut audio_done_at: Option<Instant> = None;
    let mut seq = 2u64;
    let mut sent_frames = 0usize;
    let mut next_frame = began;
    // Twilio's playback: audio plays in real time from when it arrives; marks come back when the
    // audio before them has played.
    let mut played_until = began;
    let mut marks: VecDeque<(Instant, String)> = VecDeque::new();
    let mut last_media: Option<Instant> = None;
    let mut payload = vec![0u8; g711::FRAME_8K];
    let mut hang_up = false;

    loop {
        let now = Instant::now();
        let linger_over = audio_done_at.is_some_and(|t| now >= t + call.linger) && call.hang_up_after.is_none();
        if hang_up || end_at.is_some_and(|t| now >= t) || linger_over {
            let stop = json!({"event": "stop", "sequenceNumber": seq.to_string(), "streamSid": stream_sid,
                "stop": {"accountSid": "AC00000000000000000000000000000000", "callSid": call.call_sid}});
            let _ = tx.send(Message::text(stop.to_string())).await;
            let _ = tx.close().await;
            break;
        }
        let next_mark = marks.front().map(|(t, _)| *t);
        let next_dtmf = dtmf.front().map(|(d, _)| began + *d);
        let wake = [Some(next_frame), next_mark, next_dtmf, end_at, audio_done_at.map(|t| t + call.linger)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + frame);
        tokio::select! {
            message = rx.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    let now = Instant::now();
                    match value["event"].as_str() {
                        Some("media") => {
                            let bytes = STANDARD.decode(value["media"]["payload"].as_str().unwrap_or("")).unwrap_or_default();
                            let voiced = bytes.iter().any(|&b| g711::decode(b).unsigned_abs() > 300);
                            result.received.extend(bytes.iter().map(|&b| g711::decode(b)));
                            result.frames_received += 1;
                            if let Some(last) = last_media.replace(now) {
                                result.frame_gaps_ms.push(now.duration_since(last).as_secs_f64() * 1000.0);
                            }
                            played_until = played_until.max(now) + Duration::from_micros(125 * bytes.len() as u64);
                            if voiced && after_clear {
                                if let Some(n) = result.frames_after_clear.last_mut() {
                                    *n += 1;
                                }
                            }
                            if voiced {
                                while let Some((kind, ended)) = pending_turns.pop_front() {
                                    result.turns.push(Turn {
                                        kind,
                                        ended_ms: ended.duration_since(began).as_millis() as u64,
                                        first_reply_ms: Some(now.duration_since(began).as_millis() as u64),
                                        latency_ms: Some(now.duration_since(ended).as_millis() as u64),
                                    });
                                }
                            }
                        }
                        Some("mark") => marks.push_back((played_until.max(now), value["mark"]["name"].as_str().unwrap_or("").to_owned())),
                        Some("clear") => {
                            result.clears += 1;
                            result.frames_after_clear.push(0);
                            result.received_at_clear.push(result.received.len());
                            after_clear = true;
                            if let Some(onset) = last_onset.take() {
                                result.barge_in_ms.push(now.duration_since(onset).as_millis() as u64);
                            }
                            played_until = now;
                            last_media = None;
                            for (t, _) in &mut marks {
                                *t = now;
                            }
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    result.closed_by_box = true;
                    result.close_code = frame.map(|f| u16::from(f.code));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    result.closed_by_box = true;
                    break;
                }
            },
            () = sleep_until(wake) => {
                let now = Instant::now();
                while marks.front().is_some_and(|(t, _)| *t <= now) {
                    let (_, name) = marks.pop_front().expect("front exists");
                    let echo = json!({"event": "mark", "sequenceNumber": seq.to_string(), "streamSid": stream_sid, "mark": {"name": name}});
                    seq += 1;
                    if tx.send(Message::text(echo.to_string())).await.is_err() { break; }
                    result.marks_echoed.push(name);
                }
                if let Some(&(_, digit)) = dtmf.front().filter(|(d, _)| began + *d <= now) {
                    dtmf.pop_front();
                    let msg = json!({"event": "dtmf", "sequenceNumber": seq.to_string(), "streamSid": stream_sid, "dtmf": {"track": "inbound_track", "digit": digit.to_string()}});
                    seq += 1;
                    if tx.send(Message::text(msg.to_string())).await.is_err() { hang_up = true; }
                    pending_turns.push_back(("dtmf", now));
                }
                if next_frame <= now {
                    // Caller audio, then silence (Twilio keeps streaming while the line is open).
                    let start = sent_frames * g711::FRAME_8K;
                    for (i, byte) in payload.iter_mut().enumerate() {
                        *byte = g711::encode(call.audio.get(start + i).copied().unwrap_or(0));
                    }
                    let msg = json!({"event": "media", "sequenceNumber": seq.to_string(), "streamSid": stream_sid,
                        "media": {"track": "inbound", "chunk": (sent_frames + 1).to_string(),
                        "timestamp": (sent_frames * 20).to_string(), "payload": STANDARD.encode(&payload)}});
                    seq += 1;
                    if tx.send(Message::text(msg.to_string())).await.is_err() { hang_up = true; }
                    sent_frames += 1;
                    if speech_start_frames.contains(&(sent_frames - 1)) {
                        last_onset = Some(now);
                    }
                    if speech_end_frames.contains(&sent_frames) {
                        after_clear = false;
                        pending_turns.push_back(("speech", now));
                    }
                    if sent_frames >= total_frames && audio_done_at.is_none() {
                        audio_done_at = Some(now);
                    }
                    next_frame = match (frame_interval.is_zero(), sent_frames < total_frames) {
                        (true, true) => now,
                        (true, false) => now + frame,
                        // From the start instant, so the caller's clock does not drift either.
                        (false, _) => began + frame_interval * sent_frames as u32,
                    };
                }
            }
        }
    }
    result.turns.extend(pending_turns.into_iter().map(|(kind, ended)| Turn {
        kind,
        ended_ms: ended.duration_since(began).as_millis() as u64,
        first_reply_ms: None,
        latency_ms: None,
    }));
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_boxes_twiml() {
        let xml = crate::twilio::twiml::connect_stream("wss://x/twilio/media", &[("token", "t&1")]);
        let a = parse_twiml(&xml).expect("parse");
        assert_eq!(a.stream_url.as_deref(), Some("wss://x/twilio/media"));
        assert_eq!(a.parameters, [("token".to_owned(), "t&1".to_owned())]);
        let r = parse_twiml(&crate::twilio::twiml::reject(crate::twilio::twiml::Reject::Busy)).expect("parse");
        assert_eq!(r.reject.as_deref(), Some("busy"));
        assert!(parse_twiml("<Response><Say>hi</Say></Response>").is_err());
    }

    #[test]
    fn finds_where_speech_ends() {
        let mut audio = vec![0i16; 160 * 10];
        audio.extend(vec![5000i16; 160 * 20]);
        audio.extend(vec![0i16; 160 * 30]);
        audio.extend(vec![5000i16; 160 * 5]);
        assert_eq!(speech_ends(&audio), vec![30, 65]);
        assert_eq!(speech_starts(&audio), vec![10, 60]);
    }
}
