//! Speech recognition with VOSK: loading a model once, checked before libvosk ever sees the path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// What a recognizer worker reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// Words so far in the current utterance (drives barge-in).
    Partial(String),
    /// The utterance's transcript, and how long decoding the tail took after `finish`.
    Final { text: String, decode: Duration },
}

// Frames travel by value through a bounded channel whose slots are allocated once: no allocation
// per frame, at the price of every slot being frame-sized.
#[allow(clippy::large_enum_variant)]
enum Command {
    Audio([i16; FRAME_16K]),
    Finish,
    /// A new call starts using this worker: forget the last one (`generation` tags its events).
    Reset(u64),
    /// Wake this when an event is ready (the call's session), instead of waiting to be polled.
    Waker(Arc<tokio::sync::Notify>),
}

const FRAME_16K: usize = 320;
/// Partials are looked at every 200 ms.
const PARTIAL_EVERY: u32 = 10;

/// A recognizer on its own thread, fed through a bounded channel. Dropping it stops and joins the
/// thread (a recognizer must not outlive the process's teardown of libvosk).
struct Worker {
    commands: Option<std::sync::mpsc::SyncSender<Command>>,
    events: std::sync::mpsc::Receiver<(u64, Heard)>,
    generation: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn text_of(result: vosk::CompleteResult<'_>) -> String {
    result.single().map(|r| r.text.to_owned()).unwrap_or_default()
}

impl Worker {
    fn send(&self, command: Command) -> Option<()> {
        self.commands.as_ref()?.send(command).ok()
    }

    /// Sends without waiting; returns false if the queue was full (the command is dropped).
    fn try_send(&self, command: Command) -> bool {
        match &self.commands {
            Some(tx) => !matches!(tx.try_send(command), Err(std::sync::mpsc::TrySendError::Full(_))),
            None => true,
        }
    }

    fn spawn(model: Arc<vosk::Model>, grammar: Option<Arc<Vec<String>>>, warm_up: Arc<Vec<i16>>) -> Option<Self> {
        let (commands, queue) = std::sync::mpsc::sync_channel::<Command>(256);
        let (events_tx, events) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("voca-stt".into())
            .spawn(move || {
                let recognizer = match &grammar {
                    Some(phrases) => vosk::Recognizer::new_with_grammar(&model, 16000.0, phrases),
                    None => vosk::Recognizer::new(&model, 16000.0),
                };
                let Some(mut rec) = recognizer else {
                    let _ = ready_tx.send(false);
                    return;
                };
                // A fresh recognizer is slow on its first utterance (its decoding graph fills a cache
                // as it goes): pay that here, not on a call. Ending with a final result (not reset)
                // makes the next audio start a fresh feature pipeline, so nothing of the warm-up
                // audio (speaker adaptation) carries into a call; the graph cache stays warm.
                for chunk in warm_up.chunks(FRAME_16K) {
                    let _ = rec.accept_waveform(chunk);
                }
                let _ = rec.final_result();
                let _ = ready_tx.send(true);
                let (mut generation, mut frames, mut last_partial) = (0u64, 0u32, String::new());
                let mut waker: Option<Arc<tokio::sync::Notify>> = None;
                let emit = |generation: u64, heard: Heard, waker: &Option<Arc<tokio::sync::Notify>>| {
                    let _ = events_tx.send((generation, heard));
                    if let Some(w) = waker {
                        w.notify_one();
                    }
                };
                for command in queue {
                    match command {
                        Command::Audio(frame) => {
                            let _ = rec.accept_waveform(&frame);
                            frames += 1;
                            if frames % PARTIAL_EVERY == 0 {
                                let partial = rec.partial_result().partial.to_owned();
                                if !partial.is_empty() && partial != last_partial {
                                    last_partial.clone_from(&partial);
                                    emit(generation, Heard::Partial(partial), &waker);
                                }
                            }
                        }
                        Command::Finish => {
                            let started = Instant::now();
                            let text = text_of(rec.final_result());
                            last_partial.clear();
                            emit(generation, Heard::Final { text, decode: started.elapsed() }, &waker);
                        }
                        Command::Waker(w) => waker = Some(w),
                        Command::Reset(g) => {
                            // As after warm-up: a final result, so the call starts from a clean state.
                            let _ = rec.final_result();
                            generation = g;
                            waker = None;
                            frames = 0;
                            last_partial.clear();
                        }
                    }
                }
            })
            .ok()?;
        let worker = Self { commands: Some(commands), events, generation: 0, thread: Some(thread) };
        ready_rx.recv().ok().filter(|ok| *ok)?;
        Some(worker)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    Loading,
    Ready,
    Failed(String),
}

struct PoolInner {
    model: Option<Arc<vosk::Model>>,
    /// The grammar as the workers use it (with the model's unknown-word token).
    grammar: Option<Arc<Vec<String>>>,
    state: ModelState,
    idle: Vec<Worker>,
    next_generation: u64,
}

/// Speech recognition for the whole box: the model, loaded once in the background, and a pool of
/// pre-warmed recognizer workers that calls lease and give back.
#[derive(Clone)]
pub struct Stt {
    inner: Arc<std::sync::Mutex<PoolInner>>,
    grammar: Option<Arc<Vec<String>>>,
    warm_up: Arc<Vec<i16>>,
}

impl std::fmt::Debug for Stt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stt").field("state", &self.state()).finish()
    }
}

impl Stt {
    /// Starts loading the model at `path` on a thread of its own, then warms `warm` recognizers.
    /// `grammar`: restrict recognition to these phrases (plus `[unk]`); `warm_up`: 16 kHz audio
    /// each new recognizer decodes once before it serves a call.
    pub fn start(path: PathBuf, warm: usize, grammar: Option<Vec<String>>, warm_up: Vec<i16>) -> Self {
        let stt = Self {
            inner: Arc::new(std::sync::Mutex::new(PoolInner {
                model: None,
                grammar: None,
                state: ModelState::Loading,
                idle: Vec::new(),
                next_generation: 1,
            })),
            grammar: grammar.map(Arc::new),
            warm_up: Arc::new(warm_up),
        };
        let loader = stt.clone();
        let spawned = std::thread::Builder::new().name("voca-stt-load".into()).spawn(move || {
            match load_model(&path) {
                Ok(loaded) => {
                    tracing::info!("speech model {} loaded in {:.1} s", path.display(), loaded.took.as_secs_f64());
                    let model = Arc::new(loaded.model);
                    // Out-of-grammar speech is better heard as "unknown" than forced onto a phrase.
                    let grammar = loader.grammar.as_ref().map(|g| {
                        let mut g = g.to_vec();
                        g.extend(loaded.unknown_word.map(str::to_owned));
                        Arc::new(g)
                    });
                    let workers: Vec<Worker> = (0..warm)
                        .filter_map(|_| Worker::spawn(model.clone(), grammar.clone(), loader.warm_up.clone()))
                        .collect();
                    let mut inner = loader.lock();
                    inner.grammar = grammar;
                    inner.idle.extend(workers);
                    inner.model = Some(model);
                    inner.state = ModelState::Ready;
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

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> ModelState {
        self.lock().state.clone()
    }

    /// Waits (polling; for start-up and tests) until the model is ready or failed.
    pub async fn ready(&self) -> ModelState {
        loop {
            let state = self.state();
            if state != ModelState::Loading {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A recognizer for one call: a warm one if any is idle, else a new one (warmed first, so this
    /// blocks for about a second: call it off the async runtime). `None` until the model is loaded.
    pub fn lease(&self) -> Option<Lease> {
        let (worker, model, grammar, generation) = {
            let mut inner = self.lock();
            let model = inner.model.clone()?;
            let generation = inner.next_generation;
            inner.next_generation += 1;
            (inner.idle.pop(), model, inner.grammar.clone(), generation)
        };
        let mut worker = match worker {
            Some(w) => w,
            None => Worker::spawn(model, grammar, self.warm_up.clone())?,
        };
        worker.generation = generation;
        worker.send(Command::Reset(generation))?;
        Some(Lease { worker: Some(worker), pool: self.clone() })
    }

    /// A warm lease if one is idle right now; never blocks.
    pub fn try_lease(&self) -> Option<Lease> {
        let (mut worker, generation) = {
            let mut inner = self.lock();
            let worker = inner.idle.pop()?;
            let generation = inner.next_generation;
            inner.next_generation += 1;
            (worker, generation)
        };
        worker.generation = generation;
        // An idle worker's queue is empty: this cannot wait.
        if !worker.try_send(Command::Reset(generation)) {
            return None;
        }
        Some(Lease { worker: Some(worker), pool: self.clone() })
    }

    pub fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    /// The audio every new recognizer decodes once before serving (a warm recognizer decodes a
    /// little differently from a cold one, so a reference recognizer must be warmed alike).
    pub fn warm_up_audio(&self) -> Arc<Vec<i16>> {
        self.warm_up.clone()
    }
}

/// One call's recognizer. Dropping it gives the worker back to the pool.
pub struct Lease {
    worker: Option<Worker>,
    pool: Stt,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

impl Lease {
    fn worker(&self) -> &Worker {
        self.worker.as_ref().expect("present until drop")
    }

    /// Feeds 20 ms of 16 kHz audio. Never blocks: if the worker is 5 s behind, the frame is dropped.
    pub fn feed(&self, frame: &[i16; FRAME_16K]) {
        if !self.worker().try_send(Command::Audio(*frame)) {
            tracing::warn!("the recognizer is falling behind: a frame was dropped");
        }
    }

    /// Wakes `waker` whenever a result is ready, so the call reacts at once instead of at its next poll.
    pub fn wake(&self, waker: Arc<tokio::sync::Notify>) {
        let _ = self.worker().try_send(Command::Waker(waker));
    }

    /// Feeds a frame, waiting for room: for recordings, which must lose nothing (never on a call).
    pub fn feed_blocking(&self, frame: &[i16; FRAME_16K]) {
        let _ = self.worker().send(Command::Audio(*frame));
    }

    /// The utterance is over: its final transcript will arrive as [`Heard::Final`].
    pub fn finish(&self) {
        if !self.worker().try_send(Command::Finish) {
            tracing::warn!("the recognizer queue is full: an utterance end was dropped");
        }
    }

    /// The next result, if any, without waiting.
    pub fn poll(&self) -> Option<Heard> {
        let worker = self.worker();
        loop {
            match worker.events.try_recv() {
                Ok((g, heard)) if g == worker.generation => return Some(heard),
                Ok(_) => continue, // left over from the call before
                Err(_) => return None,
            }
        }
    }

    /// Waits for the next result (tests and benchmarks).
    pub fn wait(&self, timeout: Duration) -> Option<Heard> {
        let worker = self.worker();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match worker.events.recv_timeout(left) {
                Ok((g, heard)) if g == worker.generation => return Some(heard),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
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
}
