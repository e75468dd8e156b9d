//! Text to speech with espeak-ng, in-process: libespeak-ng is loaded at run time, so a box without it
//! still starts and says exactly what to install.
//!
//! espeak-ng keeps global state, so at most one [`Engine`] exists in the process at a time, and it
//! must stay on the thread that opened it (it is `!Send`): the engine's owner thread.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_short, c_uint, c_void, CStr, CString};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use libloading::{Library, Symbol};
use thiserror::Error;

/// The library's soname on Debian and Raspberry Pi OS (package libespeak-ng1).
const LIBRARY: &str = "libespeak-ng.so.1";

// Values from espeak-ng's speak_lib.h.
const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const INITIALIZE_DONT_EXIT: c_int = 0x8000;
const POS_CHARACTER: c_int = 1;
const CHARS_UTF8: c_uint = 1;
const PARAM_RATE: c_int = 1;
const PARAM_PITCH: c_int = 3;
const EE_OK: c_int = 0;

type SynthCallback = unsafe extern "C" fn(*mut c_short, c_int, *mut c_void) -> c_int;

#[derive(Debug, Error)]
pub enum TtsError {
    #[error("cannot load {LIBRARY} ({reason}): install espeak-ng (apt-get install espeak-ng libespeak-ng1)")]
    Library { reason: String },
    #[error("espeak-ng failed to initialise: is its data (package espeak-ng-data) installed?")]
    Init,
    #[error("espeak-ng has no voice \"{voice}\" (`speech.voice`): list them with `espeak-ng --voices`")]
    Voice { voice: String },
    #[error("espeak-ng rejected {what} (error {code})")]
    Call { what: &'static str, code: i32 },
    #[error("the espeak-ng engine is already open in this process: use its owner thread")]
    Busy,
    #[error("text to speak contains a NUL byte")]
    Nul,
}

static OPEN: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Samples of the synthesis running on this thread; the synchronous callback appends here.
    static SAMPLES: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
    /// Set while a cancellable synthesis runs: the callback stops espeak-ng once it is raised.
    static CANCEL: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

unsafe extern "C" fn collect_samples(wav: *mut c_short, count: c_int, _events: *mut c_void) -> c_int {
    if !wav.is_null() && count > 0 {
        // SAFETY: espeak-ng passes `count` valid samples at `wav` for the duration of this call.
        let chunk = unsafe { std::slice::from_raw_parts(wav, count as usize) };
        SAMPLES.with(|s| s.borrow_mut().extend_from_slice(chunk));
    }
    // Non-zero tells espeak-ng to stop.
    CANCEL.with(|c| c.borrow().as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed))) as c_int
}

/// The espeak-ng engine, set to one voice, rate and pitch.
pub struct Engine {
    lib: Library,
    sample_rate: u32,
    version: String,
    /// espeak-ng's state belongs to this thread.
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("version", &self.version).field("sample_rate", &self.sample_rate).finish()
    }
}

impl Engine {
    /// Loads libespeak-ng and selects `voice` at `rate` words per minute and `pitch` (0-99).
    pub fn open(voice: &str, rate: u32, pitch: u32) -> Result<Self, TtsError> {
        if OPEN.swap(true, Ordering::AcqRel) {
            return Err(TtsError::Busy);
        }
        match Self::open_inner(voice, rate, pitch) {
            Ok(engine) => Ok(engine),
            Err(e) => {
                OPEN.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    fn open_inner(voice: &str, rate: u32, pitch: u32) -> Result<Self, TtsError> {
        // SAFETY: loading a system library whose initialisers have no preconditions.
        let lib = unsafe { Library::new(LIBRARY) }.map_err(|e| TtsError::Library { reason: e.to_string() })?;
        let mut engine = Self { lib, sample_rate: 0, version: String::new(), _not_send: PhantomData };
        // SAFETY: each symbol is looked up with the signature speak_lib.h declares for it.
        unsafe {
            let init: Symbol<unsafe extern "C" fn(c_int, c_int, *const c_char, c_int) -> c_int> =
                engine.symbol(b"espeak_Initialize\0")?;
            let rate_hz = init(AUDIO_OUTPUT_SYNCHRONOUS, 0, std::ptr::null(), INITIALIZE_DONT_EXIT);
            if rate_hz <= 0 {
                return Err(TtsError::Init);
            }
            engine.sample_rate = rate_hz as u32;
            let info: Symbol<unsafe extern "C" fn(*mut *const c_char) -> *const c_char> =
                engine.symbol(b"espeak_Info\0")?;
            let version = info(std::ptr::null_mut());
            if !version.is_null() {
                engine.version = CStr::from_ptr(version).to_string_lossy().into_owned();
            }
            let set_callback: Symbol<unsafe extern "C" fn(SynthCallback)> =
                engine.symbol(b"espeak_SetSynthCallback\0")?;
            set_callback(collect_samples);
            let set_voice: Symbol<unsafe extern "C" fn(*const c_char) -> c_int> =
                engine.symbol(b"espeak_SetVoiceByName\0")?;
            let name = CString::new(voice).map_err(|_| TtsError::Voice { voice: voice.into() })?;
            if set_voice(name.as_ptr()) != EE_OK {
                return Err(TtsError::Voice { voice: voice.into() });
            }
            let set_param: Symbol<unsafe extern "C" fn(c_int, c_int, c_int) -> c_int> =
                engine.symbol(b"espeak_SetParameter\0")?;
            for (what, param, value) in [("the rate", PARAM_RATE, rate), ("the pitch", PARAM_PITCH, pitch)] {
                let code = set_param(param, value as c_int, 0);
                if code != EE_OK {
                    return Err(TtsError::Call { what, code });
                }
            }
        }
        Ok(engine)
    }

    /// # Safety
    /// `T` must be the function type the library exports under `name`.
    unsafe fn symbol<T>(&self, name: &[u8]) -> Result<Symbol<'_, T>, TtsError> {
        // SAFETY: forwarded to the caller.
        unsafe { self.lib.get(name) }.map_err(|e| TtsError::Library { reason: e.to_string() })
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Like [`Engine::synthesize`], but stops early (returning what was made) once `cancel` is raised.
    pub fn synthesize_cancellable(&mut self, text: &str, cancel: &Arc<AtomicBool>) -> Result<Vec<i16>, TtsError> {
        CANCEL.with(|c| *c.borrow_mut() = Some(cancel.clone()));
        let result = self.synthesize(text);
        CANCEL.with(|c| *c.borrow_mut() = None);
        result
    }

    /// Speaks `text` into 16-bit mono samples at [`Engine::sample_rate`].
    pub fn synthesize(&mut self, text: &str) -> Result<Vec<i16>, TtsError> {
        let text = CString::new(text).map_err(|_| TtsError::Nul)?;
        SAMPLES.with(|s| s.borrow_mut().clear());
        // SAFETY: espeak_Synth as declared in speak_lib.h; in synchronous mode it returns only after
        // the callback has seen every sample, and `text` outlives the call.
        let code = unsafe {
            let synth: Symbol<
                unsafe extern "C" fn(
                    *const c_void,
                    usize,
                    c_uint,
                    c_int,
                    c_uint,
                    c_uint,
                    *mut c_uint,
                    *mut c_void,
                ) -> c_int,
            > = self.symbol(b"espeak_Synth\0")?;
            let bytes = text.as_bytes_with_nul();
            synth(
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                POS_CHARACTER,
                0,
                CHARS_UTF8,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if code != EE_OK {
            return Err(TtsError::Call { what: "the text", code });
        }
        Ok(SAMPLES.with(|s| std::mem::take(&mut *s.borrow_mut())))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: espeak_Terminate takes no arguments and ends the state espeak_Initialize made.
        unsafe {
            if let Ok(terminate) = self.symbol::<unsafe extern "C" fn() -> c_int>(b"espeak_Terminate\0") {
                terminate();
            }
        }
        OPEN.store(false, Ordering::Release);
    }
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

/// `samples` from 5 ms before the first sample louder than a whisper.
fn trim_leading_silence(samples: &[i16]) -> &[i16] {
    let first = samples.iter().position(|s| s.unsigned_abs() > 300).unwrap_or(samples.len());
    &samples[first.saturating_sub(110)..]
}

/// The rate everything inside the box speaks at; the phone path and the speaker convert from it.
pub const BOX_RATE: u32 = 16_000;

enum Job {
    Speak {
        text: String,
        chunks: tokio::sync::mpsc::Sender<Vec<i16>>,
        cancel: Arc<AtomicBool>,
        waker: Option<Arc<tokio::sync::Notify>>,
    },
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

/// The TTS owner thread: the only place espeak-ng runs. Dropping the handle stops and joins it.
pub struct Tts {
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub version: String,
}

impl std::fmt::Debug for Tts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tts").field("version", &self.version).finish()
    }
}

impl Tts {
    /// Opens espeak-ng on a thread of its own; fails (with the engine's reason) if it cannot.
    pub fn start(voice: &str, rate: u32, pitch: u32) -> Result<Self, TtsError> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(64);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let voice = voice.to_owned();
        let thread = std::thread::Builder::new()
            .name("voca-tts".into())
            .spawn(move || {
                let mut engine = match Engine::open(&voice, rate, pitch) {
                    Ok(engine) => {
                        let _ = ready_tx.send(Ok(engine.version().to_owned()));
                        engine
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for job in queue {
                    let Job::Speak { text, chunks, cancel, waker } = job;
                    for (i, sentence) in sentences(&text).iter().enumerate() {
                        if cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        match engine.synthesize_cancellable(sentence, &cancel) {
                            Ok(samples) => {
                                // espeak-ng starts with a little silence: skip it on a reply's first
                                // sentence so the caller hears the answer sooner.
                                let samples = if i == 0 { trim_leading_silence(&samples) } else { &samples[..] };
                                let audio = crate::audio::resample::convert(samples, engine.sample_rate(), BOX_RATE);
                                if cancel.load(Ordering::Relaxed) || chunks.blocking_send(audio).is_err() {
                                    break;
                                }
                                if let Some(w) = &waker {
                                    w.notify_one();
                                }
                            }
                            Err(e) => {
                                tracing::warn!("speech synthesis failed: {e}");
                                break;
                            }
                        }
                    }
                }
            })
            .map_err(|e| TtsError::Library { reason: format!("cannot start the TTS thread: {e}") })?;
        let version = ready_rx.recv().map_err(|_| TtsError::Init)??;
        Ok(Self { jobs: Some(jobs), thread: Some(thread), version })
    }

    /// Starts speaking `text`. Never blocks: a full queue drops the request (and says so).
    pub fn speak(&self, text: &str) -> Speech {
        self.speak_waking(text, None)
    }

    /// Like `speak`, waking `waker` as each sentence is ready.
    pub fn speak_waking(&self, text: &str, waker: Option<Arc<tokio::sync::Notify>>) -> Speech {
        let (tx, chunks) = tokio::sync::mpsc::channel(16);
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job::Speak { text: text.to_owned(), chunks: tx, cancel: cancel.clone(), waker };
        if let Some(jobs) = &self.jobs {
            if jobs.try_send(job).is_err() {
                tracing::warn!("the TTS queue is full: a reply was dropped");
            }
        }
        Speech { chunks, cancel }
    }

    /// Renders `text` completely (fixed prompts, rendered once at start-up).
    pub async fn render(&self, text: &str) -> Vec<i16> {
        let mut speech = self.speak(text);
        let mut all = Vec::new();
        while let Some(chunk) = speech.chunks.recv().await {
            all.extend(chunk);
        }
        all
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
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The engine is process-global: tests that open it take turns.
    static TURN: Mutex<()> = Mutex::new(());

    #[test]
    fn speaks_a_phrase_into_plausible_audio() {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let mut engine = Engine::open("en-us", 165, 50).expect("espeak-ng is installed by make test");
        assert!(engine.version().starts_with('1'), "version {}", engine.version());
        let rate = engine.sample_rate() as usize;
        let short = engine.synthesize("Hello.").expect("synth");
        let long =
            engine.synthesize("Hello, you have reached the kitchen box. How can I help you today?").expect("synth");
        let seconds = long.len() as f64 / rate as f64;
        assert!((2.0..8.0).contains(&seconds), "{seconds} s for a 13-word sentence at 165 wpm");
        assert!(long.len() > 3 * short.len());
        let peak = long.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!(peak > 1000, "audio must not be silent (peak {peak})");
        assert!(matches!(Engine::open("en-us", 165, 50), Err(TtsError::Busy)), "only one engine at a time");
    }

    #[test]
    fn text_splits_into_sentences() {
        assert_eq!(sentences("Hello there. How are you? Fine!"), ["Hello there.", "How are you?", "Fine!"]);
        assert_eq!(sentences("It is 3.5 degrees"), ["It is 3.5 degrees"]);
        assert_eq!(sentences("안녕하세요. 지금 몇 시 예요?"), ["안녕하세요.", "지금 몇 시 예요?"]);
        assert!(sentences("  ").is_empty());
    }

    #[test]
    fn the_tts_thread_streams_sentences_and_stops_when_cancelled() {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        runtime.block_on(tts_streams_and_cancels());
    }

    async fn tts_streams_and_cancels() {
        let tts = Tts::start("en-us", 165, 50).expect("espeak-ng");
        let mut speech = tts.speak("First sentence here. Second sentence follows. And a third one.");
        let first = speech.chunks.recv().await.expect("first chunk");
        assert!(first.len() > BOX_RATE as usize / 2, "about a second at 16 kHz: {}", first.len());
        let second = speech.chunks.recv().await.expect("second chunk");
        assert!(!second.is_empty());
        speech.cancel();
        let mut rest = 0;
        while speech.chunks.recv().await.is_some() {
            rest += 1;
        }
        assert!(rest <= 1, "at most the sentence in progress arrives after cancel");
        let prompt = tts.render("One moment please.").await;
        assert!(prompt.len() > BOX_RATE as usize / 2);
    }

    #[test]
    fn an_unknown_voice_is_named() {
        let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let e = Engine::open("xx-nonexistent", 165, 50).expect_err("no such voice");
        assert!(e.to_string().contains("xx-nonexistent"), "{e}");
        let reopened = Engine::open("en-us", 165, 50);
        assert!(reopened.is_ok(), "a failed open releases the engine: {reopened:?}");
    }
}
