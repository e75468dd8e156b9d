//! Speech on the box: VOSK models (catalogue, download, install, load), recognition (the listening
//! loop and the recognizer pool), speech synthesis (Piper voices, espeak-ng) and the voices on the box.

pub mod grammar;
pub mod listen;
pub mod models;
pub mod prompts;
pub mod stt;
pub mod tts;
pub mod voices;
