//! Text to speech: a Piper neural voice (ONNX Runtime) or espeak-ng, on one owner thread, with
//! espeak-ng as the fallback when the Piper voice or ONNX Runtime is missing (the box says which, and
//! how to install it). Replies stream sentence by sentence, and a Piper reply's first sentence clause
//! by clause, so the caller hears the start while the rest renders. Fixed prompts are rendered once
//! per voice and kept on disk ([`cache`]).
//!
//! espeak-ng keeps global state and must stay on the thread that opened it; Piper needs it there
//! too (for phonemes), so both live on the one `voca-tts` thread.

pub mod cache;
pub mod espeak;
pub mod piper;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

pub use espeak::{Clause, Engine, TtsError};

pub use crate::config::TtsKind;

/// What the TTS thread speaks with.
#[derive(Debug, Clone)]
pub struct TtsOptions {
    pub kind: TtsKind,
    /// A Piper voice (a name under `voices_dir`, or a path to its `.onnx`), or an espeak-ng voice.
    pub voice: String,
    pub voices_dir: PathBuf,
    /// `libonnxruntime.so`; `None`: looked for where the package and `make deps` put it.
    pub onnxruntime: Option<PathBuf>,
    /// The assistant's language (`en`): a Piper voice must speak it, and espeak-ng falls back to it.
    pub language: String,
    /// espeak-ng's words per minute and pitch (Piper voices keep their own pace).
    pub rate: u32,
    pub pitch: u32,
    /// Where rendered prompts are kept; `None`: not kept.
    pub prompt_cache: Option<PathBuf>,
    /// Try the Piper voice in a child process before loading it (see [`piper::probe`]).
    pub probe: bool,
}

impl TtsOptions {
    pub fn new(config: &crate::config::Config) -> Self {
        let s = &config.speech;
        Self {
            kind: s.tts,
            voice: s.voice.clone(),
            voices_dir: s.voices_dir.clone(),
            onnxruntime: s.onnxruntime.clone(),
            language: s.language.clone(),
            rate: s.rate,
            pitch: s.pitch,
            prompt_cache: Some(config.device.data_dir.join("prompts")),
            probe: true,
        }
    }

    /// espeak-ng with `voice`, nothing else (tools, tests).
    pub fn espeak(voice: &str, rate: u32, pitch: u32) -> Self {
        Self {
            kind: TtsKind::Espeak,
            voice: voice.into(),
            voices_dir: PathBuf::new(),
            onnxruntime: None,
            language: voice.split('-').next().unwrap_or(voice).into(),
            rate,
            pitch,
            prompt_cache: None,
            probe: false,
        }
    }

    /// The Piper voice's `.onnx`.
    pub fn piper_voice_path(&self) -> PathBuf {
        let as_path = Path::new(&self.voice);
        if self.voice.contains('/') || self.voice.ends_with(".onnx") {
            as_path.to_path_buf()
        } else {
            self.voices_dir.join(format!("{}.onnx", self.voice))
        }
    }

    /// The espeak-ng voice for `language` when a Piper voice does not say one.
    fn espeak_voice(&self) -> String {
        match (self.kind, self.language.as_str()) {
            (TtsKind::Espeak, _) => self.voice.clone(),
            (TtsKind::Piper, "en") => "en-us".into(),
            (TtsKind::Piper, other) => other.into(),
        }
    }
}

/// The voice the box speaks with, and why: for the log, `/healthz` and `voca check`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VoiceStatus {
    /// `piper` or `espeak`.
    pub engine: &'static str,
    pub voice: String,
    /// Why the configured Piper voice is not speaking, and how to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    pub espeak_version: String,
}

/// Splits text into sentences, so the first can be spoken while the rest is synthesised.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end_mark = matches!(c, '.' | '!' | '?' | '。' | '？' | '！');
        let at_break = chars.peek().is_none_or(|(_, next)| next.is_whitespace());
        if end_mark && at_break {
            let end = i + c.len_utf8();
            let sentence = text[start..end].trim();
            if !sentence.is_empty() {
                out.push(sentence);
            }
            start = end;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// The rate everything inside the box speaks at (the audio floor's): the phone path and the
/// speaker convert from it.
pub use crate::audio::BOX_RATE;

/// `samples` from 5 ms before the first sample louder than a whisper.
fn trim_leading_silence(samples: &[i16]) -> &[i16] {
    let first = samples.iter().position(|s| s.unsigned_abs() > 300).unwrap_or(samples.len());
    &samples[first.saturating_sub(110)..]
}

enum Job {
    Speak {
        text: String,
        chunks: tokio::sync::mpsc::Sender<Vec<i16>>,
        cancel: Arc<AtomicBool>,
        waker: Option<Arc<tokio::sync::Notify>>,
        /// Said on the box's own speaker (an announcement), not to a caller: callers go first.
        aside: bool,
    },
}

/// The engines on the TTS thread.
enum Synth {
    Espeak(Engine),
    /// espeak-ng turns text into phonemes, the voice speaks them.
    Piper(Engine, Box<piper::Voice>),
}

impl Synth {
    /// Opens the configured engine, or espeak-ng with the reason the Piper voice could not.
    fn open(options: &TtsOptions) -> Result<(Self, VoiceStatus), TtsError> {
        let mut fallback = None;
        if options.kind == TtsKind::Piper {
            match load_piper(options) {
                Ok(voice) => {
                    let engine = Engine::open(&voice.config.espeak.voice, options.rate, options.pitch)?;
                    let status = VoiceStatus {
                        engine: "piper",
                        voice: voice.name.clone(),
                        fallback: None,
                        espeak_version: engine.version().into(),
                    };
                    return Ok((Self::Piper(engine, Box::new(voice)), status));
                }
                Err(reason) => fallback = Some(reason),
            }
        }
        let voice = options.espeak_voice();
        let engine = Engine::open(&voice, options.rate, options.pitch)?;
        let status = VoiceStatus { engine: "espeak", voice, fallback, espeak_version: engine.version().into() };
        Ok((Self::Espeak(engine), status))
    }

    /// What `text` is rendered in, in order: sentences (espeak-ng); for Piper the first sentence's
    /// clauses, then sentences (see [`piper_units`]).
    fn units(&mut self, text: &str) -> VecDeque<Unit> {
        match self {
            Self::Espeak(_) => sentences(text).into_iter().map(|s| Unit::Text(s.to_owned())).collect(),
            Self::Piper(engine, voice) => match engine.phonemes(text) {
                Ok(clauses) => piper_units(&clauses).into_iter().map(|u| Unit::Ids(voice.ids(u))).collect(),
                Err(e) => {
                    tracing::warn!("speech synthesis failed: {e}");
                    VecDeque::new()
                }
            },
        }
    }

    /// One unit as 16 kHz audio; `first`: the reply's first (espeak-ng's lead-in silence is cut, so
    /// the caller hears the answer sooner).
    fn render(&mut self, unit: &Unit, first: bool, cancel: &Arc<AtomicBool>) -> Option<Vec<i16>> {
        let rendered = match (self, unit) {
            (Self::Espeak(engine), Unit::Text(sentence)) => match engine.synthesize_cancellable(sentence, cancel) {
                Ok(samples) => {
                    let samples = if first { trim_leading_silence(&samples) } else { &samples[..] };
                    Ok(crate::audio::resample::convert(samples, engine.sample_rate(), BOX_RATE))
                }
                Err(e) => Err(e.to_string()),
            },
            (Self::Piper(_, voice), Unit::Ids(ids)) => match voice.synthesize(ids) {
                Ok(samples) => Ok(crate::audio::resample::convert(&samples, voice.sample_rate(), BOX_RATE)),
                Err(e) => Err(e.to_string()),
            },
            _ => return None,
        };
        rendered.map_err(|e| tracing::warn!("speech synthesis failed: {e}")).ok()
    }
}

/// A piece of a reply rendered in one go.
enum Unit {
    Text(String),
    Ids(Vec<i64>),
}

/// A reply being rendered.
struct Reply {
    units: VecDeque<Unit>,
    chunks: tokio::sync::mpsc::Sender<Vec<i16>>,
    cancel: Arc<AtomicBool>,
    waker: Option<Arc<tokio::sync::Notify>>,
    started: bool,
    aside: bool,
}

impl Reply {
    /// Renders its next unit and hands it over; false once the reply is done (or not wanted).
    fn step(&mut self, synth: &mut Synth) -> bool {
        let Some(unit) = self.units.pop_front() else { return false };
        if self.cancel.load(Ordering::Relaxed) {
            return false;
        }
        let Some(audio) = synth.render(&unit, !self.started, &self.cancel) else { return false };
        self.started = true;
        if self.cancel.load(Ordering::Relaxed) || self.chunks.blocking_send(audio).is_err() {
            return false;
        }
        if let Some(w) = &self.waker {
            w.notify_one();
        }
        !self.units.is_empty()
    }
}

/// The TTS thread's loop. Replies in progress take turns unit by unit, and one nobody hears yet
/// goes first: twenty calls answering at once each start within a unit of each other, and a long
/// reply never holds another call's answer back.
fn serve(synth: &mut Synth, queue: std::sync::mpsc::Receiver<Job>) {
    let mut replies: VecDeque<Reply> = VecDeque::new();
    loop {
        let next = if replies.is_empty() { queue.recv().ok() } else { queue.try_recv().ok() };
        if let Some(Job::Speak { text, chunks, cancel, waker, aside }) = next {
            let units = synth.units(&text);
            replies.push_back(Reply { units, chunks, cancel, waker, started: false, aside });
            continue;
        }
        if replies.is_empty() {
            return; // every handle is gone
        }
        // A caller's reply that has not started goes first (a caller waits on it), then any other
        // that has not started, then the rest in turn.
        let at = replies
            .iter()
            .position(|r| !r.started && !r.aside)
            .or_else(|| replies.iter().position(|r| !r.started))
            .unwrap_or(0);
        let mut reply = replies.remove(at).expect("an index from the queue");
        if reply.step(synth) {
            replies.push_back(reply);
        }
    }
}

/// The Piper voice `options` name, or why it cannot speak (with what to do).
fn load_piper(options: &TtsOptions) -> Result<piper::Voice, String> {
    if cfg!(target_arch = "arm") {
        // Boards that need a 32-bit OS (Pi 3, Zero 2) are too slow for a medium voice, and the one
        // armv7 ONNX Runtime on the registries could not be tried here (under qemu-user ONNX Runtime
        // crashes as it loads on both ARM targets).
        return Err("Piper voices are not supported on 32-bit ARM builds of the box: use the 64-bit \
                    (arm64) build for a neural voice"
            .into());
    }
    let onnx = options.piper_voice_path();
    let config = piper::VoiceConfig::read(&piper::json_of(&onnx)).map_err(|e| {
        if onnx.is_file() {
            e.to_string()
        } else {
            piper::PiperError::Voice { path: onnx.clone(), reason: "not found".into() }.to_string()
        }
    })?;
    if let Some(language) = config.language() {
        if language != options.language {
            return Err(format!(
                "the Piper voice {} speaks \"{language}\" but the assistant speaks \"{}\" (`speech.language`): \
                 choose a voice in that language",
                onnx.display(),
                options.language
            ));
        }
    }
    let library = crate::speech::onnx::find_runtime(options.onnxruntime.as_deref());
    if options.probe {
        piper::probe(&onnx, &library, options.prompt_cache.as_deref()).map_err(|e| e.to_string())?;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    piper::Voice::load(&onnx, &library, threads).map_err(|e| e.to_string())
}

/// What a Piper reply is rendered in: its first sentence clause by clause (so the caller hears the
/// start soonest), then whole sentences (as piper-tts renders them).
fn piper_units(clauses: &[Clause]) -> Vec<&[Clause]> {
    let mut units = Vec::new();
    let mut start = 0;
    let mut first_sentence = true;
    for (i, clause) in clauses.iter().enumerate() {
        if first_sentence || clause.ends_sentence {
            units.push(&clauses[start..=i]);
            start = i + 1;
        }
        if clause.ends_sentence {
            first_sentence = false;
        }
    }
    if start < clauses.len() {
        units.push(&clauses[start..]);
    }
    units.retain(|u| u.iter().any(|c| !c.phonemes.trim().is_empty()));
    units
}

/// Speech being synthesised: sentence-sized chunks of 16 kHz audio arrive on `chunks` as each is
/// ready. Dropping it (or `cancel`) stops the synthesis.
#[derive(Debug)]
pub struct Speech {
    pub chunks: tokio::sync::mpsc::Receiver<Vec<i16>>,
    cancel: Arc<AtomicBool>,
}

impl Speech {
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl Drop for Speech {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The TTS owner thread: the only place espeak-ng and the Piper voice run. Dropping the handle
/// stops and joins it.
pub struct Tts {
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub voice: VoiceStatus,
    cache: Option<cache::PromptCache>,
}

impl std::fmt::Debug for Tts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tts").field("voice", &self.voice).finish()
    }
}

impl Tts {
    /// Opens the engine on a thread of its own (a Piper voice that cannot load falls back to
    /// espeak-ng, logged with the reason); fails only if espeak-ng itself cannot speak.
    pub fn start(options: &TtsOptions) -> Result<Self, TtsError> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(64);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_options = options.clone();
        let thread = std::thread::Builder::new()
            .name("voca-tts".into())
            .spawn(move || {
                let mut synth = match Synth::open(&thread_options) {
                    Ok((synth, status)) => {
                        let _ = ready_tx.send(Ok(status));
                        synth
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                serve(&mut synth, queue);
            })
            .map_err(|e| TtsError::Library { reason: format!("cannot start the TTS thread: {e}") })?;
        let voice = ready_rx.recv().map_err(|_| TtsError::Init)??;
        if let Some(reason) = &voice.fallback {
            tracing::warn!("speaking with espeak-ng ({}): {reason}", voice.voice);
        }
        let cache = options.prompt_cache.as_ref().map(|dir| cache::PromptCache::new(dir, &voice, options));
        Ok(Self { jobs: Some(jobs), thread: Some(thread), voice, cache })
    }

    /// Starts speaking `text`. Never blocks: a full queue drops the request (and says so).
    pub fn speak(&self, text: &str) -> Speech {
        self.speak_waking(text, None)
    }

    /// Like `speak`, waking `waker` as each sentence is ready.
    pub fn speak_waking(&self, text: &str, waker: Option<Arc<tokio::sync::Notify>>) -> Speech {
        self.queue(text, waker, false)
    }

    /// Renders `text` for the box's own speaker: after any caller's reply that waits.
    pub async fn render_aside(&self, text: &str) -> Vec<i16> {
        let mut speech = self.queue(text, None, true);
        let mut all = Vec::new();
        while let Some(chunk) = speech.chunks.recv().await {
            all.extend(chunk);
        }
        all
    }

    fn queue(&self, text: &str, waker: Option<Arc<tokio::sync::Notify>>, aside: bool) -> Speech {
        let (tx, chunks) = tokio::sync::mpsc::channel(16);
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job::Speak { text: text.to_owned(), chunks: tx, cancel: cancel.clone(), waker, aside };
        if let Some(jobs) = &self.jobs {
            if jobs.try_send(job).is_err() {
                tracing::warn!("the TTS queue is full: a reply was dropped");
            }
        }
        Speech { chunks, cancel }
    }

    /// Renders `text` completely.
    pub async fn render(&self, text: &str) -> Vec<i16> {
        let mut speech = self.speak(text);
        let mut all = Vec::new();
        while let Some(chunk) = speech.chunks.recv().await {
            all.extend(chunk);
        }
        all
    }

    /// Renders a fixed prompt: from the prompt cache when this voice has said it before, else
    /// rendered now and kept there.
    pub async fn prompt(&self, text: &str) -> Vec<i16> {
        if let Some(audio) = self.cache.as_ref().and_then(|c| c.get(text)) {
            return audio;
        }
        let audio = self.render(text).await;
        if let Some(cache) = &self.cache {
            cache.put(text, &audio);
        }
        audio
    }
}

impl Drop for Tts {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
