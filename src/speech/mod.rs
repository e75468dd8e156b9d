//! Speech on the box: VOSK models (catalogue, download, install, load), recognition (the listening
//! loop and the recognizer pool) and the espeak-ng engine.

pub mod listen;
pub mod models;
pub mod prompts;
pub mod stt;
pub mod tts;
