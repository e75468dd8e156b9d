//! Speech on the box: VOSK models (catalogue, download, install, load) and the espeak-ng engine.

pub mod models;
pub mod prompts;
pub mod stt;
pub mod tts;
