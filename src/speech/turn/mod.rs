//! The end-of-turn model's engine: one owner thread holds the model (like the recognizers and the
//! voice) and answers one decision at a time for every call: "has the speaker finished?", from the
//! last 8 s of their speech. A call asks at a short pause and goes on listening meanwhile; when the
//! model is missing, cannot load or is busy, the call's listener ends turns after the hangover as
//! before (see [`crate::speech::listen`]).

pub mod features;
pub mod install;
pub mod model;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};
use tracing::{info, warn};

pub use model::{TurnModel, TurnModelError, FILE_NAME};

/// Above this the model says "finished" (as its reference does).
pub const FINISHED: f32 = 0.5;
/// Decisions waiting for the thread at most: a call that finds the queue full ends that pause's
/// turn by the hangover instead of waiting behind others.
const QUEUE: usize = 32;

/// What the model said about one pause.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The probability that the speaker has finished.
    pub probability: f32,
    /// Thread CPU time the decision took (features and inference).
    pub cpu: Duration,
    /// Wall time from the question to the answer (queueing included).
    pub took: Duration,
}

impl Decision {
    pub fn finished(&self) -> bool {
        self.probability > FINISHED
    }
}

/// Whether the model serves, for `/healthz`, `voca check` and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnState {
    Loading,
    Ready {
        path: PathBuf,
    },
    /// Not used: why (not installed, cannot load, switched off), and that the hangover ends turns.
    Off(String),
}

impl TurnState {
    /// One word for `/healthz`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Ready { .. } => "ready",
            Self::Off(_) => "hangover",
        }
    }
}

struct Job {
    audio: Vec<i16>,
    asked: Instant,
    reply: oneshot::Sender<Result<Decision, String>>,
    waker: Option<Arc<Notify>>,
}

/// How a caller's listener uses the engine: asks at a `pause` of this length whether the caller has
/// finished, and ends a turn the model keeps open after `max_wait` of quiet.
#[derive(Debug, Clone)]
pub struct TurnPolicy {
    pub turns: Turns,
    pub pause: Duration,
    pub max_wait: Duration,
}

/// A handle on the engine; cheap to clone.
#[derive(Clone)]
pub struct Turns {
    jobs: Option<SyncSender<Job>>,
    state: Arc<Mutex<TurnState>>,
}

impl std::fmt::Debug for Turns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turns").field("state", &self.state()).finish()
    }
}

/// A decision asked for and not yet answered.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<Decision, String>>);

impl Pending {
    /// The answer, once there is one: `Some(Err)` when the model failed on it.
    pub fn try_take(&mut self) -> Option<Result<Decision, String>> {
        match self.0.try_recv() {
            Ok(answer) => Some(answer),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err("the end-of-turn engine stopped".into())),
        }
    }

    /// Waits for the answer (tools and tests; never on the async runtime).
    pub fn wait(self) -> Result<Decision, String> {
        self.0.blocking_recv().unwrap_or_else(|_| Err("the end-of-turn engine stopped".into()))
    }
}

impl Turns {
    /// No model: every turn ends by the hangover, for `why`.
    pub fn off(why: impl Into<String>) -> Self {
        Self { jobs: None, state: Arc::new(Mutex::new(TurnState::Off(why.into()))) }
    }

    /// Starts the owner thread, which loads `path` with ONNX Runtime from `library` (tried first in a
    /// child process, remembered in `memo`: see [`crate::speech::onnx::probe`]) and then answers
    /// decisions. A model that is missing or cannot load leaves the engine [`TurnState::Off`] with the
    /// reason, logged once.
    pub fn start(path: &Path, library: &Path, memo: Option<PathBuf>) -> Self {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let state = Arc::new(Mutex::new(TurnState::Loading));
        let (path, library, shared) = (path.to_path_buf(), library.to_path_buf(), state.clone());
        let spawned = std::thread::Builder::new().name("turn-model".into()).spawn(move || {
            let set = |s: TurnState| *shared.lock().unwrap_or_else(|p| p.into_inner()) = s;
            let mut model = match probe(&path, &library, memo.as_deref()).and_then(|()| TurnModel::load(&path, &library)) {
                Ok(model) => {
                    info!(model = %path.display(), "end-of-turn model ready: turns end when it says the caller has finished");
                    set(TurnState::Ready { path: path.clone() });
                    model
                }
                Err(e) => {
                    warn!("{e}; turns end after speech.endpoint_hangover of quiet instead");
                    set(TurnState::Off(e.to_string()));
                    return;
                }
            };
            for job in rx {
                if job.reply.is_closed() {
                    // The caller spoke again, or the hangover ended the turn first: nobody waits.
                    continue;
                }
                let started = cpu_time();
                let window = features::last_window(&features::to_float(&job.audio));
                let answer = model
                    .probability(features::log_mel(&window))
                    .map(|probability| Decision {
                        probability,
                        cpu: cpu_time().saturating_sub(started),
                        took: job.asked.elapsed(),
                    })
                    .map_err(|e| e.to_string());
                let _ = job.reply.send(answer);
                if let Some(waker) = job.waker {
                    waker.notify_one();
                }
            }
        });
        match spawned {
            Ok(_) => Self { jobs: Some(tx), state },
            Err(e) => Self::off(format!("cannot start the end-of-turn thread: {e}")),
        }
    }

    /// An engine that takes questions and never answers them (a model deciding for many calls at
    /// once, taken to the limit): for the listener's tests.
    #[cfg(test)]
    pub(crate) fn stalled() -> Self {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        std::mem::forget(rx);
        let state = Arc::new(Mutex::new(TurnState::Ready { path: PathBuf::from("stalled.onnx") }));
        Self { jobs: Some(tx), state }
    }

    pub fn state(&self) -> TurnState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.state(), TurnState::Ready { .. })
    }

    /// Asks whether the speaker of `audio` (16 kHz, the utterance so far; the last 8 s count) has
    /// finished; `waker` is woken when the answer is in. `None` when the model does not serve or
    /// its queue is full: the caller's turn then ends by the hangover.
    pub fn ask(&self, audio: Vec<i16>, waker: Option<Arc<Notify>>) -> Option<Pending> {
        if !self.is_ready() {
            return None;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job { audio, asked: Instant::now(), reply, waker };
        match self.jobs.as_ref()?.try_send(job) {
            Ok(()) => Some(Pending(answer)),
            Err(TrySendError::Full(_)) => {
                crate::telemetry::metrics::TURN_DECISIONS_SKIPPED.inc();
                None
            }
            Err(TrySendError::Disconnected(_)) => None,
        }
    }
}

/// Tries the model in a child process (`voca models probe-turn`) before this process loads ONNX
/// Runtime for it.
pub fn probe(path: &Path, library: &Path, memo: Option<&Path>) -> Result<(), TurnModelError> {
    if !path.is_file() {
        return Err(TurnModelError::Missing { path: path.into() });
    }
    crate::speech::onnx::probe(&["models", "probe-turn"], path, library, &[], memo).map_err(|failure| match failure {
        crate::speech::onnx::ProbeFailure::Runtime(reason) => TurnModelError::Runtime { reason },
        crate::speech::onnx::ProbeFailure::Model(reason) => TurnModelError::Invalid { path: path.into(), reason },
    })
}

/// What `voca models probe-turn` does in its own process: loads the model and decides on silence
/// (`decisions` times, features included).
pub fn probe_here(path: &Path, library: &Path, decisions: u32) -> Result<f32, TurnModelError> {
    let mut model = TurnModel::load(path, library)?;
    let mut probability = 0.0;
    for _ in 0..decisions.max(1) {
        probability = model.probability(features::log_mel(&vec![0.0; features::WINDOW]))?;
    }
    Ok(probability)
}

/// This thread's CPU time so far.
fn cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID needs nothing else.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if ok {
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    } else {
        Duration::ZERO
    }
}
