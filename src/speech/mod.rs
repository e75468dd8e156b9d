//! Speech on the box: VOSK models (catalogue, download, install, load), recognition (the listening
//! loop and the recognizer pool), speech synthesis (Piper voices, espeak-ng) and the voices on the box,
//! the end-of-turn model, and the ONNX Runtime the neural engines share.

pub mod grammar;
pub mod listen;
pub mod models;
pub mod onnx;
pub mod prompts;
pub mod stt;
pub mod tts;
pub mod turn;
pub mod voices;
