//! A VOSK model loaded once and shared by every recognizer: its grammar (the phrases it can
//! hear), and the set of free-form recognizers second passes and recordings borrow.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::heard::{SttError, FRAME_16K};
use super::Recognition;
use crate::speech::models;

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
    single_threaded_blas();
    let started = Instant::now();
    let path_text = path.to_str().ok_or_else(|| SttError::ModelLoad { path: path.to_path_buf() })?;
    let mut model = vosk::Model::new(path_text).ok_or_else(|| SttError::ModelLoad { path: path.to_path_buf() })?;
    let unknown_word = ["[unk]", "<UNK>"].into_iter().find(|w| model.find_word(w).is_some());
    Ok(LoadedModel { model, took: started.elapsed(), unknown_word })
}

/// The phrases whose every word the model knows (a grammar silently loses the others' unknown words,
/// which would make them match what was never said). Says once what it leaves out.
pub(super) fn hearable(loaded: &mut LoadedModel, phrases: Vec<String>) -> Vec<String> {
    let (known, unknown): (Vec<String>, Vec<String>) =
        phrases.into_iter().partition(|p| p.split_whitespace().all(|w| loaded.model.find_word(w).is_some()));
    if !unknown.is_empty() {
        tracing::warn!(
            "the speech model does not know every word of {} phrase(s), left out of the grammar (free-form still hears them): {unknown:?}",
            unknown.len()
        );
    }
    if loaded.unknown_word.is_none() && !known.is_empty() {
        tracing::warn!(
            "the speech model has no unknown-word token: in grammar mode, speech outside the grammar is placed on the nearest phrase"
        );
    }
    known
}

/// What every worker shares: the model and how to recognise.
pub(super) struct Shared {
    pub(super) model: Arc<vosk::Model>,
    pub(super) recognition: Recognition,
    /// The grammar as the recognizers use it (with the model's unknown-word token).
    pub(super) grammar: Option<Arc<Vec<String>>>,
    /// The phrases transcripts are placed on.
    pub(super) phrases: Arc<Vec<String>>,
    pub(super) unknown_word: Option<&'static str>,
    /// Free-form recognizers for grammar-first's second pass and voicemail transcripts, handed from
    /// worker to worker: second passes are rare, and a free-form recognizer is slow on its first
    /// utterances (it fills a cache of the decoding graph as it goes), so a few warm ones serve
    /// every call instead of each call's worker keeping a cold one of its own.
    pub(super) free: Mutex<Vec<vosk::Recognizer>>,
    /// A shared free-form recognizer was given back.
    pub(super) free_returned: std::sync::Condvar,
}

/// How long a second pass waits for a warm free-form recognizer before making a cold one: a warm
/// one decodes an utterance in well under a second, a cold one takes seconds on its first.
pub(super) const WARM_FREE_PATIENCE: Duration = Duration::from_millis(1500);

impl Shared {
    /// Decodes `audio` free-form on a recognizer from the shared set (waiting a little for one to
    /// come back, then making a new one) and gives it back: the whole transcript, including what
    /// VOSK's endpointer closed on the way.
    pub(super) fn decode_free(&self, audio: &[i16]) -> Option<String> {
        let set = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let (mut set, _) = self
            .free_returned
            .wait_timeout_while(set, WARM_FREE_PATIENCE, |set| set.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        let taken = set.pop();
        drop(set);
        let mut rec = match taken {
            Some(rec) => rec,
            None => vosk::Recognizer::new(&self.model, 16000.0)?,
        };
        let mut text = String::new();
        for chunk in audio.chunks(FRAME_16K * 10) {
            if let Ok(vosk::DecodingState::Finalized) = rec.accept_waveform(chunk) {
                text = join(&text, &text_of(rec.result()));
            }
        }
        let text = join(&text, &text_of(rec.final_result()));
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
        self.free_returned.notify_one();
        Some(text)
    }

    /// A free-form recognizer for the shared set, warmed on `audio` first.
    pub(super) fn warm_free(&self, audio: &[i16]) -> bool {
        let Some(mut rec) = vosk::Recognizer::new(&self.model, 16000.0) else { return false };
        warm(&mut rec, audio);
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(rec);
        true
    }
}

pub(super) fn text_of(result: vosk::CompleteResult<'_>) -> String {
    result.single().map(|r| r.text.to_owned()).unwrap_or_default()
}

/// Decodes `audio` once and forgets it: a new free-form recognizer is slow on its first utterances
/// (its decoding graph fills a cache as it goes).
pub(super) fn warm(rec: &mut vosk::Recognizer, audio: &[i16]) {
    for chunk in audio.chunks(FRAME_16K) {
        let _ = rec.accept_waveform(chunk);
    }
    let _ = rec.final_result();
}

pub(super) fn join(a: &str, b: &str) -> String {
    [a, b].iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Makes the BLAS inside libvosk compute on the calling thread only. The box runs one recognizer
/// per call on threads of its own; OpenBLAS's own thread pool on top of that only contends with
/// them: measured with twenty calls ending a turn together, the recognizers' lag behind real time
/// went from up to ~150 ms to up to ~65 ms and the box's CPU per call fell by a fifth.
/// (`OPENBLAS_NUM_THREADS` would have to be set before the library loads, which is before `main`.)
pub(super) fn single_threaded_blas() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: looks up a symbol of the libraries this process already loaded; the function, when
        // libvosk's OpenBLAS exports it, takes one int and is safe to call before any BLAS work.
        let set: Option<libloading::os::unix::Symbol<unsafe extern "C" fn(libc::c_int)>> =
            unsafe { libloading::os::unix::Library::this().get(b"goto_set_num_threads\0").ok() };
        match set {
            // SAFETY: as above; 1 is a valid thread count.
            Some(set) => unsafe { set(1) },
            None => tracing::debug!("libvosk's BLAS has no goto_set_num_threads: its thread count is left alone"),
        }
    });
}
