//! Speech recognition with VOSK: the model (loaded once, in the background), a pool of recognizer
//! workers (each on its own thread), and one [`Ear`] per listener: the queue that carries a call's
//! utterances to whichever worker serves it and its transcripts back.
//!
//! Nothing is dropped silently. Audio waits in the ear while no worker is free (the model loading,
//! every worker busy) and while a worker falls behind real time; utterance ends are never dropped.
//! Only past the ear's bound is audio let go, oldest first, and the utterance it belonged to comes
//! back as [`Heard::Missed`] so the caller can be asked to say it again.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::models;

#[derive(Debug, Error)]
pub enum SttError {
    #[error(
        "no VOSK model at {path}: install one with `voca models fetch NAME` or point `speech.model` at a model folder"
    )]
    ModelMissing { path: PathBuf },
    #[error(
        "libvosk could not load the model at {path}: the folder is incomplete or not a VOSK model; fetch it again"
    )]
    ModelLoad { path: PathBuf },
}

/// A loaded model and how long loading took.
pub struct LoadedModel {
    pub model: vosk::Model,
    pub took: Duration,
    /// The model's unknown-word token (`[unk]` in most models, `<UNK>` in some), for grammars.
    pub unknown_word: Option<&'static str>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel").field("took", &self.took).finish_non_exhaustive()
    }
}

/// Loads the model at `path`. Blocking and slow (seconds, hundreds of MB): call it from a thread of
/// its own, never from an async task.
pub fn load_model(path: &Path) -> Result<LoadedModel, SttError> {
    if !models::is_model_dir(path) {
        return Err(SttError::ModelMissing { path: path.to_path_buf() });
    }
    // Kaldi's per-step LOG lines are noise on a box; warnings and errors still show.
    vosk::set_log_level(vosk::LogLevel::Warn);
    let started = Instant::now();
    let path_text = path.to_str().ok_or_else(|| SttError::ModelLoad { path: path.to_path_buf() })?;
    let mut model = vosk::Model::new(path_text).ok_or_else(|| SttError::ModelLoad { path: path.to_path_buf() })?;
    let unknown_word = ["[unk]", "<UNK>"].into_iter().find(|w| model.find_word(w).is_some());
    Ok(LoadedModel { model, took: started.elapsed(), unknown_word })
}

/// How the box recognises speech (`speech.recognition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recognition {
    /// The assistant's own phrases first (a closed grammar: exact and cheap); an utterance the
    /// grammar cannot place is decoded again, free-form, so words outside it are still caught.
    GrammarFirst,
    /// Only the assistant's phrases.
    Grammar,
    /// Free-form only (the model's whole vocabulary, on every frame).
    Free,
}

/// Which decoder produced a transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The closed grammar placed it on one of the assistant's phrases.
    Phrase,
    /// Free-form decoding.
    Free,
}

/// What a listener hears back from its recognizer.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// Words so far in the current utterance (drives barge-in).
    Partial(String),
    /// An utterance's transcript. `decode`: how long decoding the tail took once it ended; `lag`:
    /// how long its end waited in the queue for the recognizer (0 when it keeps up).
    Final { text: String, pass: Pass, decode: Duration, lag: Duration },
    /// Audio of this utterance was let go (the queue was past its bound): ask the caller again.
    Missed,
}

/// For tests: extra microseconds every frame costs the recognizer (0: none), to make the real
/// recognizer slower than real time.
#[doc(hidden)]
pub static SLOW_DOWN_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

const FRAME_16K: usize = 320;
/// Partials are looked at every 200 ms.
const PARTIAL_EVERY: u32 = 10;
/// A grammar-first utterance longer than this is decoded free-form only from its first minute.
const SECOND_PASS_MAX: usize = 16000 * 60;

enum Item {
    Audio([i16; FRAME_16K]),
    /// The utterance is over; when it was said to be.
    End(Instant),
    /// The utterance lost audio to the bound: answer it with [`Heard::Missed`].
    Missed,
}

struct Queue {
    items: VecDeque<Item>,
    /// Audio frames among `items`.
    audio: usize,
    /// At most this many audio frames wait.
    bound: usize,
    /// The utterance still being spoken has lost audio (its end becomes `Missed`).
    open_lost: bool,
    /// Frames let go since the last [`Ear::take_dropped`].
    dropped: u64,
    results: VecDeque<Heard>,
    waker: Option<Arc<tokio::sync::Notify>>,
    /// No worker may take more from this ear (its lease ended).
    detached: bool,
}

/// One listener's recognition queue: 20 ms frames and utterance ends in, transcripts out. The
/// listener owns it from its first frame; a worker serves it once leased ([`Stt::lease`]).
pub struct Ear {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl std::fmt::Debug for Ear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.lock();
        f.debug_struct("Ear").field("queued_frames", &q.audio).field("bound", &q.bound).finish()
    }
}

impl Ear {
    /// An ear that keeps at most `bound` of audio waiting.
    pub fn new(bound: Duration) -> Arc<Self> {
        let frames = (bound.as_millis() / 20).max(1) as usize;
        Arc::new(Self {
            queue: Mutex::new(Queue {
                // Room for the bound and a few markers, allocated once.
                items: VecDeque::with_capacity(frames.min(16_384) + 16),
                audio: 0,
                bound: frames,
                open_lost: false,
                dropped: 0,
                results: VecDeque::new(),
                waker: None,
                detached: false,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues 20 ms of 16 kHz audio. Never blocks: past the bound the oldest frame is let go.
    pub fn push(&self, frame: &[i16; FRAME_16K]) {
        let mut q = self.lock();
        if q.audio >= q.bound {
            q.drop_oldest();
        }
        q.audio += 1;
        q.items.push_back(Item::Audio(*frame));
        drop(q);
        self.changed.notify_one();
    }

    /// The utterance is over: its transcript (or `Missed`) will follow. Never dropped.
    pub fn end_utterance(&self) {
        let mut q = self.lock();
        let item = if std::mem::take(&mut q.open_lost) { Item::Missed } else { Item::End(Instant::now()) };
        q.items.push_back(item);
        drop(q);
        self.changed.notify_one();
    }

    /// Wakes `waker` whenever a result is ready.
    pub fn set_waker(&self, waker: Arc<tokio::sync::Notify>) {
        self.lock().waker = Some(waker);
    }

    /// The next result, if any, without waiting.
    pub fn poll(&self) -> Option<Heard> {
        self.lock().results.pop_front()
    }

    /// Waits for the next result (recordings, tests, benchmarks; never on the async runtime).
    pub fn wait(&self, timeout: Duration) -> Option<Heard> {
        let deadline = Instant::now() + timeout;
        let mut q = self.lock();
        loop {
            if let Some(heard) = q.results.pop_front() {
                return Some(heard);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            q = self.changed.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// How much audio waits for the recognizer.
    pub fn backlog(&self) -> Duration {
        Duration::from_millis(self.lock().audio as u64 * 20)
    }

    /// Frames let go to the bound since the last call.
    pub fn take_dropped(&self) -> u64 {
        std::mem::take(&mut self.lock().dropped)
    }

    fn answer(&self, heard: Heard) {
        let waker = {
            let mut q = self.lock();
            q.results.push_back(heard);
            q.waker.clone()
        };
        self.changed.notify_all();
        if let Some(w) = waker {
            w.notify_one();
        }
    }

    /// The next item for the worker; `None` once the ear is detached.
    fn next_item(&self) -> Option<Item> {
        let mut q = self.lock();
        loop {
            if q.detached {
                return None;
            }
            if let Some(item) = q.items.pop_front() {
                if matches!(item, Item::Audio(_)) {
                    q.audio -= 1;
                }
                return Some(item);
            }
            q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn detach(&self) {
        self.lock().detached = true;
        self.changed.notify_all();
    }
}

impl Queue {
    /// Lets the oldest waiting frame go and marks its utterance as missed.
    fn drop_oldest(&mut self) {
        let Some(at) = self.items.iter().position(|i| matches!(i, Item::Audio(_))) else { return };
        self.items.remove(at);
        self.audio -= 1;
        self.dropped += 1;
        match self.items.iter_mut().skip(at).find(|i| !matches!(i, Item::Audio(_))) {
            Some(end @ Item::End(_)) => *end = Item::Missed,
            Some(_) => {}
            None => self.open_lost = true,
        }
    }
}

/// The recognizers one worker runs, for the configured [`Recognition`].
struct Recognizers {
    /// The closed grammar's recognizer and its phrases.
    grammar: Option<(vosk::Recognizer, Arc<Vec<String>>)>,
    free: Option<vosk::Recognizer>,
    unknown_word: Option<&'static str>,
    /// Grammar-first: the utterance's audio, for a free-form second pass.
    utterance: Vec<i16>,
    /// Text VOSK finalised on its own inside the utterance (its endpointer), kept until the end.
    said: String,
    frames: u32,
    last_partial: String,
}

fn text_of(result: vosk::CompleteResult<'_>) -> String {
    result.single().map(|r| r.text.to_owned()).unwrap_or_default()
}

fn join(a: &str, b: &str) -> String {
    [a, b].iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

impl Recognizers {
    fn new(shared: &Shared) -> Option<Self> {
        let grammar = match (&shared.grammar, shared.recognition) {
            (Some(phrases), Recognition::Grammar | Recognition::GrammarFirst) => {
                Some((vosk::Recognizer::new_with_grammar(&shared.model, 16000.0, phrases)?, shared.phrases.clone()))
            }
            _ => None,
        };
        let free = match (shared.recognition, &grammar) {
            (Recognition::Grammar, Some(_)) => None,
            _ => Some(vosk::Recognizer::new(&shared.model, 16000.0)?),
        };
        let second_pass = grammar.is_some() && free.is_some();
        Some(Self {
            grammar,
            free,
            unknown_word: shared.unknown_word,
            utterance: Vec::with_capacity(if second_pass { 16000 * 10 } else { 0 }),
            said: String::new(),
            frames: 0,
            last_partial: String::new(),
        })
    }

    /// The recognizer that hears every frame as it comes.
    fn live(&mut self) -> &mut vosk::Recognizer {
        match (&mut self.grammar, &mut self.free) {
            (Some((g, _)), _) => g,
            (None, Some(f)) => f,
            (None, None) => unreachable!("a worker has at least one recognizer"),
        }
    }

    fn second_pass(&self) -> bool {
        self.grammar.is_some() && self.free.is_some()
    }

    /// Feeds a frame; returns a new partial transcript every 200 ms when it changed.
    fn accept(&mut self, frame: &[i16]) -> Option<String> {
        if self.second_pass() && self.utterance.len() < SECOND_PASS_MAX {
            self.utterance.extend_from_slice(frame);
        }
        let rec = self.live();
        if let Ok(vosk::DecodingState::Finalized) = rec.accept_waveform(frame) {
            // VOSK's own endpointer closed a segment inside the utterance: keep its words.
            let text = text_of(rec.result());
            self.said = join(&self.said, &text);
        }
        self.frames += 1;
        if self.frames % PARTIAL_EVERY != 0 {
            return None;
        }
        let live = self.live().partial_result().partial.to_owned();
        let partial = join(&self.said, &live);
        if partial.is_empty() || partial == self.last_partial {
            return None;
        }
        self.last_partial.clone_from(&partial);
        Some(partial)
    }

    /// The utterance is over: its transcript.
    fn finish(&mut self) -> (String, Pass) {
        let tail = text_of(self.live().final_result());
        let heard = join(&std::mem::take(&mut self.said), &tail);
        self.frames = 0;
        self.last_partial.clear();
        let audio = std::mem::take(&mut self.utterance);
        let Some((_, phrases)) = &self.grammar else { return (heard, Pass::Free) };
        let unknown = self.unknown_word.is_some_and(|u| heard.split(' ').any(|w| w == u));
        let placed = crate::assistant::pick_phrase(&heard, phrases).map(str::to_owned);
        tracing::debug!(grammar = %heard, placed = ?placed, "grammar pass");
        let result = match (placed, &mut self.free) {
            (Some(phrase), _) if !unknown => (phrase, Pass::Phrase),
            (_, Some(free)) if !audio.is_empty() => {
                for chunk in audio.chunks(FRAME_16K * 10) {
                    if let Ok(vosk::DecodingState::Finalized) = free.accept_waveform(chunk) {
                        self.said = join(&self.said, &text_of(free.result()));
                    }
                }
                let text = join(&std::mem::take(&mut self.said), &text_of(free.final_result()));
                (text, Pass::Free)
            }
            (Some(phrase), _) => (phrase, Pass::Phrase),
            (None, _) => {
                let known: Vec<&str> = heard.split(' ').filter(|w| Some(*w) != self.unknown_word).collect();
                (known.join(" "), Pass::Phrase)
            }
        };
        self.utterance = audio;
        self.utterance.clear();
        result
    }

    /// Forgets the utterance in progress.
    fn discard(&mut self) {
        let _ = self.live().final_result();
        self.said.clear();
        self.utterance.clear();
        self.frames = 0;
        self.last_partial.clear();
    }

    /// Decodes `audio` once and forgets it: pays a new recognizer's slow first utterance (its
    /// decoding graph fills a cache as it goes) before it serves anyone.
    fn warm(&mut self, audio: &[i16]) {
        for rec in self.grammar.iter_mut().map(|(g, _)| g).chain(self.free.iter_mut()) {
            for chunk in audio.chunks(FRAME_16K) {
                let _ = rec.accept_waveform(chunk);
            }
            let _ = rec.final_result();
        }
    }

    /// Serves one ear until it is detached.
    fn serve(&mut self, ear: &Ear) {
        while let Some(item) = ear.next_item() {
            match item {
                Item::Audio(frame) => {
                    let slow = SLOW_DOWN_US.load(std::sync::atomic::Ordering::Relaxed);
                    if slow > 0 {
                        std::thread::sleep(Duration::from_micros(slow));
                    }
                    if let Some(partial) = self.accept(&frame) {
                        ear.answer(Heard::Partial(partial));
                    }
                }
                Item::End(at) => {
                    let started = Instant::now();
                    let lag = started.saturating_duration_since(at);
                    let (text, pass) = self.finish();
                    ear.answer(Heard::Final { text, pass, decode: started.elapsed(), lag });
                }
                Item::Missed => {
                    self.discard();
                    ear.answer(Heard::Missed);
                }
            }
        }
        // As after warm-up: a final result, so the next ear starts from a clean state.
        self.discard();
    }
}

/// What every worker shares: the model and how to recognise.
struct Shared {
    model: Arc<vosk::Model>,
    recognition: Recognition,
    /// The grammar as the recognizers use it (with the model's unknown-word token).
    grammar: Option<Arc<Vec<String>>>,
    /// The phrases transcripts are placed on.
    phrases: Arc<Vec<String>>,
    unknown_word: Option<&'static str>,
}

/// A recognizer thread, waiting for ears to serve. Dropping it stops and joins the thread (a
/// recognizer must not outlive the process's teardown of libvosk).
struct Worker {
    ears: Option<std::sync::mpsc::Sender<Arc<Ear>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.ears.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Worker {
    /// Starts a worker; with `warm_up`, it decodes that audio first and this waits until it has.
    fn spawn(shared: Arc<Shared>, warm_up: Option<Arc<Vec<i16>>>) -> Option<Self> {
        let (ears, incoming) = std::sync::mpsc::channel::<Arc<Ear>>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let warming = warm_up.is_some();
        let thread = std::thread::Builder::new()
            .name("voca-stt".into())
            .spawn(move || {
                let Some(mut recognizers) = Recognizers::new(&shared) else {
                    tracing::error!("libvosk could not make a recognizer from the loaded model");
                    let _ = ready_tx.send(false);
                    return;
                };
                if let Some(audio) = &warm_up {
                    recognizers.warm(audio);
                }
                let _ = ready_tx.send(true);
                for ear in incoming {
                    recognizers.serve(&ear);
                }
            })
            .ok()?;
        let worker = Self { ears: Some(ears), thread: Some(thread) };
        if warming {
            ready_rx.recv().ok().filter(|ok| *ok)?;
        }
        Some(worker)
    }

    fn serve(&self, ear: Arc<Ear>) -> bool {
        self.ears.as_ref().is_some_and(|tx| tx.send(ear).is_ok())
    }
}

/// Where the speech model is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    Loading,
    /// Loaded: calls are served (by cold recognizers if no warm one is idle) while the pool warms.
    Warming,
    Ready,
    Failed(String),
}

impl ModelState {
    /// A call can be given a recognizer.
    pub fn can_hear(&self) -> bool {
        matches!(self, Self::Warming | Self::Ready)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Warming => "warming",
            Self::Ready => "ready",
            Self::Failed(_) => "failed",
        }
    }
}

struct PoolInner {
    shared: Option<Arc<Shared>>,
    state: ModelState,
    idle: Vec<Worker>,
}

/// How the pool is to be built.
#[derive(Debug, Clone)]
pub struct SttOptions {
    pub model: PathBuf,
    pub recognition: Recognition,
    /// The assistant's phrases (the closed grammar).
    pub phrases: Vec<String>,
    /// Workers warmed in the background once the model is loaded.
    pub warm: usize,
    /// 16 kHz audio each warmed recognizer decodes once before it serves.
    pub warm_up: Vec<i16>,
}

impl SttOptions {
    /// As `config` says, with the assistant's phrases as the grammar.
    pub fn new(config: &crate::config::Config, assistant: &crate::assistant::Assistant, warm: usize, warm_up: Vec<i16>) -> Self {
        Self {
            model: config.speech.model_path(),
            recognition: config.speech.recognition,
            phrases: assistant.grammar(),
            warm,
            warm_up,
        }
    }
}

/// Speech recognition for the whole box: the model, loaded once in the background, and a pool of
/// recognizer workers that listeners lease and give back.
#[derive(Clone)]
pub struct Stt {
    inner: Arc<Mutex<PoolInner>>,
    warm_up: Arc<Vec<i16>>,
}

impl std::fmt::Debug for Stt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stt").field("state", &self.state()).finish()
    }
}

impl Stt {
    /// Starts loading the model on a thread of its own; once loaded, calls are served at once and
    /// `warm` workers are warmed in the background.
    pub fn start(options: SttOptions) -> Self {
        let stt = Self {
            inner: Arc::new(Mutex::new(PoolInner { shared: None, state: ModelState::Loading, idle: Vec::new() })),
            warm_up: Arc::new(options.warm_up.clone()),
        };
        let loader = stt.clone();
        let spawned = std::thread::Builder::new().name("voca-stt-load".into()).spawn(move || {
            let path = options.model.clone();
            match load_model(&path) {
                Ok(loaded) => {
                    tracing::info!("speech model {} loaded in {:.1} s", path.display(), loaded.took.as_secs_f64());
                    // Out-of-grammar speech is better heard as "unknown" than forced onto a phrase.
                    let grammar = (options.recognition != Recognition::Free && !options.phrases.is_empty()).then(|| {
                        let mut g = options.phrases.clone();
                        g.extend(loaded.unknown_word.map(str::to_owned));
                        Arc::new(g)
                    });
                    let shared = Arc::new(Shared {
                        model: Arc::new(loaded.model),
                        recognition: options.recognition,
                        grammar,
                        phrases: Arc::new(options.phrases),
                        unknown_word: loaded.unknown_word,
                    });
                    {
                        let mut inner = loader.lock();
                        inner.shared = Some(shared.clone());
                        inner.state = if options.warm == 0 { ModelState::Ready } else { ModelState::Warming };
                    }
                    let started = Instant::now();
                    for _ in 0..options.warm {
                        match Worker::spawn(shared.clone(), Some(loader.warm_up.clone())) {
                            Some(worker) => loader.lock().idle.push(worker),
                            None => break,
                        }
                    }
                    tracing::info!(
                        "{} recognizer(s) warmed in {:.1} s",
                        options.warm,
                        started.elapsed().as_secs_f64()
                    );
                    loader.lock().state = ModelState::Ready;
                }
                Err(e) => {
                    tracing::error!("{e}");
                    loader.lock().state = ModelState::Failed(e.to_string());
                }
            }
        });
        if let Err(e) = spawned {
            stt.lock().state = ModelState::Failed(format!("cannot start the model loader: {e}"));
        }
        stt
    }

    fn lock(&self) -> MutexGuard<'_, PoolInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> ModelState {
        self.lock().state.clone()
    }

    /// Waits (polling; for start-up and tests) until the model is loaded (or failed).
    pub async fn loaded(&self) -> ModelState {
        loop {
            let state = self.state();
            if state != ModelState::Loading {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (polling; for start-up and tests) until the pool is warm (or the model failed).
    pub async fn ready(&self) -> ModelState {
        loop {
            let state = self.state();
            if !matches!(state, ModelState::Loading | ModelState::Warming) {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A worker for `ear`: a warm one if any is idle, else a new cold one (which starts at once
    /// and is slower only on its first utterance). Never blocks; `None` until the model is loaded.
    pub fn lease(&self, ear: Arc<Ear>) -> Option<Lease> {
        let (worker, shared) = {
            let mut inner = self.lock();
            let shared = inner.shared.clone()?;
            (inner.idle.pop(), shared)
        };
        let worker = match worker {
            Some(w) => w,
            None => Worker::spawn(shared, None)?,
        };
        if !worker.serve(ear.clone()) {
            return None;
        }
        Some(Lease { worker: Some(worker), ear, pool: self.clone() })
    }

    pub fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    /// The audio every warmed recognizer decodes once before serving (a warm recognizer decodes a
    /// little differently from a cold one, so a reference recognizer must be warmed alike).
    pub fn warm_up_audio(&self) -> Arc<Vec<i16>> {
        self.warm_up.clone()
    }

    /// A free-form transcript of a whole recording (voicemail), on a recognizer of its own: blocking,
    /// call it off the async runtime. `None` if the model is not loaded.
    pub fn transcribe_free(&self, audio: &[i16]) -> Option<String> {
        let model = self.lock().shared.as_ref()?.model.clone();
        let mut rec = vosk::Recognizer::new(&model, 16000.0)?;
        let mut text = String::new();
        for chunk in audio.chunks(FRAME_16K * 10) {
            if let Ok(vosk::DecodingState::Finalized) = rec.accept_waveform(chunk) {
                text = join(&text, &text_of(rec.result()));
            }
        }
        Some(join(&text, &text_of(rec.final_result())))
    }
}

/// A worker serving one ear. Dropping it detaches the ear and gives the worker back to the pool.
pub struct Lease {
    worker: Option<Worker>,
    ear: Arc<Ear>,
    pool: Stt,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("ear", &self.ear).finish_non_exhaustive()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.ear.detach();
        if let Some(worker) = self.worker.take() {
            self.pool.lock().idle.push(worker);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_is_reported_without_calling_libvosk() {
        let e = load_model(Path::new("/nonexistent/model")).expect_err("missing");
        assert!(e.to_string().contains("voca models fetch"), "{e}");
    }

    #[test]
    fn a_folder_that_only_looks_like_a_model_fails_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["am/final.mdl", "conf/model.conf"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, b"not a model").expect("write");
        }
        let e = load_model(dir.path()).expect_err("garbage model");
        assert!(matches!(e, SttError::ModelLoad { .. }), "{e}");
    }

    #[test]
    fn the_test_model_loads_with_the_real_libvosk() {
        let path = models::test_model_path();
        let loaded = load_model(&path).unwrap_or_else(|e| panic!("{e} (make test installs it)"));
        let recognizer = vosk::Recognizer::new(&loaded.model, 16000.0);
        assert!(recognizer.is_some(), "a recognizer can be made from the loaded model");
    }

    fn frame(level: i16) -> [i16; FRAME_16K] {
        [level; FRAME_16K]
    }

    fn items(ear: &Ear) -> Vec<&'static str> {
        ear.lock()
            .items
            .iter()
            .map(|i| match i {
                Item::Audio(_) => "a",
                Item::End(_) => "end",
                Item::Missed => "missed",
            })
            .collect()
    }

    #[test]
    fn an_ear_keeps_every_end_and_marks_only_the_utterance_that_lost_audio() {
        let ear = Ear::new(Duration::from_millis(80)); // four frames
        for _ in 0..2 {
            ear.push(&frame(1));
        }
        ear.end_utterance();
        for _ in 0..2 {
            ear.push(&frame(2));
        }
        ear.end_utterance();
        assert_eq!(items(&ear), ["a", "a", "end", "a", "a", "end"]);
        // Past the bound the oldest audio goes, and its utterance will be answered "missed".
        ear.push(&frame(3));
        assert_eq!(items(&ear), ["a", "missed", "a", "a", "end", "a"]);
        assert_eq!(ear.take_dropped(), 1);
        // The utterance still being spoken loses audio: its end is queued as missed.
        for _ in 0..4 {
            ear.push(&frame(4));
        }
        assert_eq!(items(&ear), ["missed", "missed", "a", "a", "a", "a"]);
        ear.end_utterance();
        assert_eq!(items(&ear).last(), Some(&"missed"));
        assert_eq!(ear.backlog(), Duration::from_millis(80));
        // The next utterance starts clean.
        ear.push(&frame(5));
        ear.end_utterance();
        assert_eq!(items(&ear).last(), Some(&"end"));
    }
}
