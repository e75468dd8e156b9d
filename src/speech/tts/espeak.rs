//! espeak-ng, in-process: libespeak-ng is loaded at run time, so a box without it still starts and
//! says exactly what to install. It speaks, and it turns text into the phonemes Piper voices read.
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
/// `espeak_TextToPhonemes` phoneme mode: IPA as UTF-8.
const PHONEMES_IPA: c_int = 0x02;

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

/// One clause of text in IPA, as espeak-ng phonemizes it, and the punctuation that ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    pub phonemes: String,
    /// `.` `?` `!` `,` `:` `;`, or none (the text just stopped).
    pub terminator: Option<char>,
    /// The clause ends a sentence (`.` `?` `!`, or the end of the text).
    pub ends_sentence: bool,
}

impl Engine {
    /// The text in IPA, clause by clause (for Piper voices). Text is read as plain text: markup-like
    /// characters are words or nothing, never instructions; numbers, times and dates become words.
    pub fn phonemes(&mut self, text: &str) -> Result<Vec<Clause>, TtsError> {
        let text = CString::new(text).map_err(|_| TtsError::Nul)?;
        let bytes = text.as_bytes();
        let base = text.as_ptr() as usize;
        let mut clauses = Vec::new();
        // SAFETY: espeak_TextToPhonemes as speak_lib.h declares it: it reads the NUL-terminated text
        // at `*ptr`, advances `ptr` past the clause it converted (NULL at the end) and returns its
        // own buffer, valid until the next call, which is copied at once.
        unsafe {
            let to_phonemes: Symbol<unsafe extern "C" fn(*mut *const c_void, c_int, c_int) -> *const c_char> =
                self.symbol(b"espeak_TextToPhonemes\0")?;
            let mut ptr: *const c_void = text.as_ptr().cast();
            while !ptr.is_null() {
                let start = (ptr as usize - base).min(bytes.len());
                let phonemes = to_phonemes(&mut ptr, CHARS_UTF8 as c_int, PHONEMES_IPA);
                let end = if ptr.is_null() { bytes.len() } else { (ptr as usize - base).min(bytes.len()) };
                let phonemes = if phonemes.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(phonemes).to_string_lossy().into_owned()
                };
                let read = String::from_utf8_lossy(&bytes[start..end]);
                let terminator = terminator(&read, !ptr.is_null());
                clauses.push(Clause {
                    phonemes: without_language_switches(&phonemes),
                    terminator,
                    ends_sentence: ptr.is_null() || matches!(terminator, Some('.' | '?' | '!')),
                });
                if end == start {
                    break;
                }
            }
        }
        Ok(clauses)
    }
}

/// The punctuation that ended a clause, from the text espeak-ng read for it (which runs one
/// character into the next clause unless it is the last).
fn terminator(read: &str, more: bool) -> Option<char> {
    let mut body = read.chars();
    if more {
        body.next_back();
    }
    match body.as_str().trim_end().chars().next_back()? {
        c @ ('.' | '?' | '!' | ',' | ':' | ';') => Some(c),
        '。' | '…' => Some('.'),
        '？' => Some('?'),
        '！' => Some('!'),
        '，' | '、' => Some(','),
        _ => None,
    }
}

/// espeak-ng marks words it read in another language with `(en)` … `(fr)`: not phonemes.
fn without_language_switches(phonemes: &str) -> String {
    let mut out = String::with_capacity(phonemes.len());
    let mut inside = false;
    for c in phonemes.chars() {
        match c {
            '(' => inside = true,
            ')' if inside => inside = false,
            _ if !inside => out.push(c),
            _ => {}
        }
    }
    out
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
