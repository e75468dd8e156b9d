//! Speech recognition with VOSK: the model (loaded once, in the background), a pool of recognizer
//! workers (each on its own thread), and one [`Ear`] per listener: the queue that carries a call's
//! utterances to whichever worker serves it and its transcripts back.
//!
//! Nothing is dropped silently. Audio waits in the ear while no worker is free (the model loading,
//! every worker busy) and while a worker falls behind real time; utterance ends are never dropped.
//! Only past the ear's bound is audio let go, oldest first, and the utterance it belonged to comes
//! back as [`Heard::Missed`] so the caller can be asked to say it again.

mod decode;
mod ear;
mod heard;
mod model;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::models;
pub use decode::SLOW_DOWN_US;
pub use ear::Ear;
pub use heard::{Heard, Pass, SttError};
use model::{hearable, Shared};
pub use model::{load_model, LoadedModel};
use worker::Worker;

pub use crate::config::Recognition;

/// Where the speech model is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    /// Not installed: the box downloads it (calls are answered meanwhile, without recognition).
    Downloading,
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
            Self::Downloading => "downloading",
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
    /// The thread that loads the model and warms the pool, until [`Stt::shutdown`] joins it.
    loader: Option<std::thread::JoinHandle<()>>,
    /// Shutting down: warm no more workers.
    stopping: bool,
    /// The ears leased workers serve, to see whether any worker is stuck.
    served: Vec<std::sync::Weak<Ear>>,
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
    /// Where to download the model from if it is not installed (`speech.download`).
    pub download: Option<models::Source>,
}

impl SttOptions {
    /// As `config` says, with `phrases` (the assistant's) as the grammar.
    pub fn new(config: &crate::config::Config, phrases: Vec<String>, warm: usize, warm_up: Vec<i16>) -> Self {
        Self {
            model: crate::speech::models::model_path(&config.speech),
            recognition: config.speech.recognition,
            phrases,
            warm,
            warm_up,
            download: Self::source(&config.speech),
        }
    }

    /// Where `speech` says its model comes from: `model_url`, else the catalogue's entry for the
    /// model's name; nothing if downloads are off or the model is a path of the user's.
    fn source(speech: &crate::config::SpeechConfig) -> Option<models::Source> {
        if !speech.download {
            return None;
        }
        match (&speech.model_url, &speech.model_sha256) {
            (Some(url), Some(sha256)) => Some(models::Source { url: url.to_string(), sha256: sha256.clone() }),
            _ => models::Source::for_name(&speech.model).ok(),
        }
    }
}

/// Speech recognition for the whole box: the model, loaded once in the background, and a pool of
/// recognizer workers that listeners lease and give back.
#[derive(Clone)]
pub struct Stt {
    inner: Arc<Mutex<PoolInner>>,
    warm_up: Arc<Vec<i16>>,
    /// The model's download, while the box fetches it.
    progress: Arc<models::Progress>,
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
            inner: Arc::new(Mutex::new(PoolInner {
                shared: None,
                state: ModelState::Loading,
                idle: Vec::new(),
                loader: None,
                stopping: false,
                served: Vec::new(),
            })),
            warm_up: Arc::new(options.warm_up.clone()),
            progress: Arc::default(),
        };
        let loader = stt.clone();
        let spawned = std::thread::Builder::new().name("voca-stt-load".into()).spawn(move || {
            let path = options.model.clone();
            if let (false, Some(source)) = (models::is_model_dir(&path), &options.download) {
                if !loader.download(&path, source) {
                    return;
                }
                loader.lock().state = ModelState::Loading;
            }
            match load_model(&path) {
                Ok(loaded) => {
                    tracing::info!("speech model {} loaded in {:.1} s", path.display(), loaded.took.as_secs_f64());
                    let mut loaded = loaded;
                    let phrases = hearable(&mut loaded, options.phrases);
                    // Out-of-grammar speech is better heard as "unknown" than forced onto a phrase.
                    let grammar = (options.recognition != Recognition::Free && !phrases.is_empty()).then(|| {
                        let mut g = phrases.clone();
                        g.extend(loaded.unknown_word.map(str::to_owned));
                        Arc::new(g)
                    });
                    let shared = Arc::new(Shared {
                        model: Arc::new(loaded.model),
                        recognition: options.recognition,
                        grammar,
                        phrases: Arc::new(phrases),
                        unknown_word: loaded.unknown_word,
                        free: Mutex::new(Vec::new()),
                        free_returned: std::sync::Condvar::new(),
                    });
                    {
                        let mut inner = loader.lock();
                        inner.shared = Some(shared.clone());
                        inner.state = if options.warm == 0 { ModelState::Ready } else { ModelState::Warming };
                    }
                    let started = Instant::now();
                    for _ in 0..options.warm {
                        if loader.lock().stopping {
                            return;
                        }
                        match Worker::spawn(shared.clone(), Some(loader.warm_up.clone())) {
                            Some(worker) => loader.lock().idle.push(worker),
                            None => break,
                        }
                    }
                    if options.recognition == Recognition::GrammarFirst {
                        for _ in 0..options.warm {
                            if loader.lock().stopping || !shared.warm_free(&loader.warm_up) {
                                break;
                            }
                        }
                    }
                    tracing::info!("{} recognizer(s) warmed in {:.1} s", options.warm, started.elapsed().as_secs_f64());
                    loader.lock().state = ModelState::Ready;
                }
                Err(e) => {
                    tracing::error!("{e}");
                    loader.lock().state = ModelState::Failed(e.to_string());
                }
            }
        });
        match spawned {
            Ok(thread) => stt.lock().loader = Some(thread),
            Err(e) => stt.lock().state = ModelState::Failed(format!("cannot start the model loader: {e}")),
        }
        stt
    }

    /// Stops warming, then joins the loader and every idle worker's thread, so no recognizer is
    /// inside libvosk when the process tears it down. Blocking (at most one warm-up, seconds): call
    /// it off the async runtime, after the calls have ended.
    pub fn shutdown(&self) {
        let (loader, idle) = {
            let mut inner = self.lock();
            inner.stopping = true;
            (inner.loader.take(), std::mem::take(&mut inner.idle))
        };
        if let Some(thread) = loader {
            let _ = thread.join();
        }
        drop(idle);
        // Workers the loader added while it was being joined.
        drop(std::mem::take(&mut self.lock().idle));
    }

    /// Downloads the missing model into place (on the loader thread), retrying from 10 s doubling to
    /// 10 minutes while it fails (no network yet, a server down). False if the box stopped first.
    fn download(&self, path: &Path, source: &models::Source) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return true };
        self.lock().state = ModelState::Downloading;
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!("cannot download the speech model: {e}");
                return true;
            }
        };
        let stopped = || async {
            while !self.lock().stopping {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let mut pause = Duration::from_secs(10);
        loop {
            tracing::info!("speech model {name} is not installed: downloading it from {}", source.url);
            let fetched = runtime.block_on(async {
                tokio::select! {
                    fetched = models::fetch_reporting(name, source, dir, Some(&self.progress)) => Some(fetched),
                    () = stopped() => None,
                }
            });
            match fetched {
                None => return false,
                Some(Ok(installed)) => {
                    tracing::info!("speech model {name} installed ({} MB)", installed.bytes / 1_000_000);
                    return true;
                }
                Some(Err(e)) => {
                    tracing::warn!("{e}; trying again in {} s (calls are answered meanwhile)", pause.as_secs())
                }
            }
            let resume = runtime.block_on(async {
                tokio::select! {
                    () = tokio::time::sleep(pause) => true,
                    () = stopped() => false,
                }
            });
            if !resume {
                return false;
            }
            pause = (pause * 2).min(Duration::from_secs(600));
        }
    }

    /// How far the model's download has come, in percent, while the box downloads it.
    pub fn download_percent(&self) -> Option<u64> {
        (self.state() == ModelState::Downloading).then(|| self.progress.percent().unwrap_or(0))
    }

    /// Mirrors the model's download onto the state bus (the status LED double-blinks meanwhile),
    /// looking once a second, until the model is loaded or `stop`.
    pub async fn publish_download(self, bus: crate::events::StateBus, stop: tokio_util::sync::CancellationToken) {
        loop {
            let percent = self.download_percent().map(|p| p.min(100) as u8);
            bus.update(|s| s.model_download = percent);
            if self.state().can_hear() || stop.is_cancelled() {
                return;
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
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
        {
            let mut inner = self.lock();
            inner.served.retain(|e| e.strong_count() > 0);
            inner.served.push(Arc::downgrade(&ear));
        }
        Some(Lease { worker: Some(worker), ear, pool: self.clone() })
    }

    /// The longest any worker has been busy with a single item (a 20 ms frame takes milliseconds, a
    /// final result at most seconds): the watchdog's sign of a recognizer stuck inside libvosk.
    pub fn longest_busy(&self) -> Duration {
        let ears: Vec<Arc<Ear>> = self.lock().served.iter().filter_map(std::sync::Weak::upgrade).collect();
        ears.iter().filter_map(|ear| ear.busy_for()).max().unwrap_or_default()
    }

    pub fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    /// A free-form transcript of a whole recording (voicemail), decoded by a worker of the pool
    /// like any call's speech (so the watchdog sees it if libvosk hangs). `None` if the model is
    /// not loaded.
    pub async fn transcribe_free(&self, audio: Arc<Vec<i16>>) -> Option<String> {
        let ear = Ear::new(Duration::from_millis(20));
        let waker = Arc::new(tokio::sync::Notify::new());
        ear.set_waker(waker.clone());
        let _lease = self.lease(ear.clone())?;
        ear.recording(audio);
        loop {
            if let Some(Heard::Final { text, .. }) = ear.poll() {
                return Some(text);
            }
            waker.notified().await;
        }
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

    #[tokio::test]
    async fn a_recording_is_transcribed_by_a_worker_of_the_pool() {
        let stt = Stt::start(SttOptions {
            model: models::test_model_path(),
            recognition: Recognition::Free,
            phrases: Vec::new(),
            warm: 0,
            warm_up: Vec::new(),
            download: None,
        });
        assert_eq!(stt.ready().await, ModelState::Ready);
        assert_eq!(stt.idle(), 0, "no worker before the first job");
        let text = stt.transcribe_free(Arc::new(vec![0i16; 16_000])).await;
        assert_eq!(text.as_deref().map(str::trim), Some(""), "a second of silence says nothing");
        assert_eq!(stt.idle(), 1, "the worker that decoded it went back to the pool");
        stt.shutdown();
        let none = Stt::start(SttOptions {
            model: "/nonexistent/model".into(),
            recognition: Recognition::Free,
            phrases: Vec::new(),
            warm: 0,
            warm_up: Vec::new(),
            download: None,
        });
        none.ready().await;
        assert_eq!(none.transcribe_free(Arc::new(vec![0i16; 160])).await, None, "no model: no transcript");
    }
}
