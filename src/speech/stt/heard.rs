//! What the recognizer pool and its listeners say to each other: what was heard, by which pass,
//! the frame size, and why the model could not be had.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// 20 ms of 16 kHz audio: what a listener hands its ear at a time.
pub(super) const FRAME_16K: usize = 320;

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
    /// The speaker paused and this is what the utterance says if the pause is its end (it may not
    /// be: a `Final` follows either way). Lets the reply be prepared during the hangover.
    /// `exact`: it is, word for word, one of the phrases the box knows (strong evidence the speaker
    /// has finished).
    Tentative { text: String, exact: bool },
    /// An utterance's transcript. `decode`: how long decoding the tail took once it ended; `lag`:
    /// how long its end waited in the queue for the recognizer (0 when it keeps up).
    Final { text: String, pass: Pass, decode: Duration, lag: Duration },
    /// Audio of this utterance was let go (the queue was past its bound): ask the caller again.
    Missed,
}
